package rill.bench.kstreams;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.streams.processor.TimestampExtractor;

/**
 * Event time from the decoded value ({@code view_time} / {@code click_time}, seconds) rather
 * than the message timestamp (which the suite sets to the same instant). Kafka Streams hands the
 * extractor the record after deserialization, so this costs no second parse.
 */
public final class EventTime implements TimestampExtractor {
    @Override
    public long extract(ConsumerRecord<Object, Object> record, long partitionTime) {
        Object v = record.value();
        if (v instanceof Json.View view) return Math.round(view.viewTime * 1000.0);
        if (v instanceof Json.Click click) return Math.round(click.clickTime * 1000.0);
        return record.timestamp();
    }
}

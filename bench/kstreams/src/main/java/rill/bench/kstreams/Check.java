package rill.bench.kstreams;

import com.fasterxml.jackson.databind.JsonNode;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * Summarises a topic an earlier run wrote, for checking by hand:
 *
 * <pre>
 * java -cp rill-bench-kstreams.jar rill.bench.kstreams.Check --bootstrap HOST:PORT --topic T [--long] [--print N]
 * </pre>
 *
 * Reads the topic to its end (read_committed) and prints the record count, distinct keys and,
 * for JSON values, the sum of {@code count}, the {@code delay_ms} histogram and the windows
 * seen; with {@code --long} (a count changelog) the sum of the last value per key.
 */
public final class Check {
    private Check() {}

    public static void main(String[] argv) throws Exception {
        String bootstrap = null;
        String topic = null;
        boolean longs = false;
        int print = 0;
        for (int i = 0; i < argv.length; i++) {
            switch (argv[i]) {
                case "--bootstrap" -> bootstrap = argv[++i];
                case "--topic" -> topic = argv[++i];
                case "--long" -> longs = true;
                case "--print" -> print = Integer.parseInt(argv[++i]);
                default -> throw new IllegalArgumentException("unknown flag " + argv[i]);
            }
        }
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        try (KafkaConsumer<byte[], byte[]> c =
                     new KafkaConsumer<>(p, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
            List<TopicPartition> tps = new ArrayList<>();
            for (PartitionInfo pi : c.partitionsFor(topic, Duration.ofSeconds(30))) {
                tps.add(new TopicPartition(topic, pi.partition()));
            }
            c.assign(tps);
            c.seekToBeginning(tps);
            Map<TopicPartition, Long> end = c.endOffsets(tps);
            long records = 0;
            Map<String, Long> last = new HashMap<>();
            long countSum = 0;
            TreeMap<Long, Long> delays = new TreeMap<>();
            TreeMap<String, Long> windows = new TreeMap<>();
            long minTs = Long.MAX_VALUE, maxTs = Long.MIN_VALUE;
            while (true) {
                boolean more = false;
                for (TopicPartition tp : tps) if (c.position(tp) < end.get(tp)) more = true;
                if (!more) break;
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(500))) {
                    records++;
                    minTs = Math.min(minTs, r.timestamp());
                    maxTs = Math.max(maxTs, r.timestamp());
                    String key = r.key() == null ? "" : new String(r.key(), StandardCharsets.UTF_8);
                    if (records <= print) {
                        System.out.println("  " + r.partition() + "@" + r.offset() + " ts=" + r.timestamp() + " key="
                                + key + " value=" + (longs ? r.value() == null ? "null" : ByteBuffer.wrap(r.value()).getLong()
                                : new String(r.value(), StandardCharsets.UTF_8)));
                    }
                    if (longs) {
                        last.put(key, r.value() == null ? 0L : ByteBuffer.wrap(r.value()).getLong());
                        continue;
                    }
                    last.put(key, 0L);
                    JsonNode v = Json.MAPPER.readTree(r.value());
                    if (v.has("count")) {
                        countSum += v.get("count").asLong();
                        windows.merge(v.get("start").asLong() + "-" + v.get("end").asLong(), 1L, Long::sum);
                    }
                    if (v.has("delay_ms")) delays.merge(v.get("delay_ms").asLong(), 1L, Long::sum);
                }
            }
            System.out.println("topic " + topic + ": " + records + " records, " + last.size() + " distinct keys"
                    + (records > 0 ? ", timestamps " + minTs + ".." + maxTs : ""));
            if (longs) {
                long sum = 0;
                for (long v : last.values()) sum += v;
                System.out.println("sum of the last count per key: " + sum);
            }
            if (!windows.isEmpty()) System.out.println("sum of counts: " + countSum + "; records per window: " + windows);
            if (!delays.isEmpty()) System.out.println("delay_ms histogram: " + delays);
        }
    }
}

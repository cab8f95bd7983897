package rill.bench.kstreams;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * Test data per BASELINES.md, for trying the baseline by hand (the suite writes its own):
 * {@code bench-views} and {@code bench-clicks}, created with P partitions and
 * {@code retention.ms=-1} when missing (the fixed start time may lie beyond the broker's default
 * 7-day retention, which would delete the data within minutes).
 *
 * <pre>
 * java -cp rill-bench-kstreams.jar rill.bench.kstreams.Gen --bootstrap HOST:PORT --events N
 *      [--partitions 8] [--keys 100000] [--start-ms 1764000000000]
 * </pre>
 *
 * View {@code i}: {@code view_time} = start + i ms, {@code user_id = "u{i % 1000}"}, URL
 * {@code "/health/{i % 100}"} when {@code i % 10 == 9}, else {@code "/p/{i % keys}"}; key = URL,
 * message timestamp = {@code view_time}. One click per even view (so never a health URL), same
 * URL and user, 2 s later. Keys are partitioned by the Java client's default (murmur2).
 */
public final class Gen {
    private Gen() {}

    public static void main(String[] argv) throws Exception {
        String bootstrap = null;
        long events = 0;
        int partitions = 8;
        long keys = 100_000;
        long startMs = 1_764_000_000_000L;
        for (int i = 0; i + 1 < argv.length; i += 2) {
            switch (argv[i]) {
                case "--bootstrap" -> bootstrap = argv[i + 1];
                case "--events" -> events = Long.parseLong(argv[i + 1]);
                case "--partitions" -> partitions = Integer.parseInt(argv[i + 1]);
                case "--keys" -> keys = Long.parseLong(argv[i + 1]);
                case "--start-ms" -> startMs = Long.parseLong(argv[i + 1]);
                default -> throw new IllegalArgumentException("unknown flag " + argv[i]);
            }
        }
        if (bootstrap == null || events <= 0) throw new IllegalArgumentException("--bootstrap and --events are required");

        Properties ap = new Properties();
        ap.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(ap)) {
            Set<String> existing = admin.listTopics().names().get(60, TimeUnit.SECONDS);
            List<NewTopic> create = new ArrayList<>();
            for (String t : List.of(Main.VIEWS, Main.CLICKS)) {
                if (!existing.contains(t)) {
                    // No time retention: the events carry fixed (possibly old) timestamps.
                    create.add(new NewTopic(t, Optional.of(partitions), Optional.empty())
                            .configs(Map.of("retention.ms", "-1")));
                }
            }
            if (!create.isEmpty()) admin.createTopics(create).all().get(60, TimeUnit.SECONDS);
        }

        Properties pp = new Properties();
        pp.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        pp.put(ProducerConfig.LINGER_MS_CONFIG, 5);
        pp.put(ProducerConfig.BATCH_SIZE_CONFIG, 256 * 1024);
        pp.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, "lz4");
        pp.put(ProducerConfig.ACKS_CONFIG, "all");
        pp.put(ProducerConfig.BUFFER_MEMORY_CONFIG, 64L * 1024 * 1024);
        AtomicLong acked = new AtomicLong();
        AtomicReference<Exception> error = new AtomicReference<>();
        long t0 = System.nanoTime();
        try (KafkaProducer<byte[], byte[]> producer =
                     new KafkaProducer<>(pp, new ByteArraySerializer(), new ByteArraySerializer())) {
            // Clicks lag their views by 2 s; send each when its time comes, so both topics are
            // written in event-time order.
            for (long i = 0; i < events; i++) {
                long viewMs = startMs + i;
                String url = i % 10 == 9 ? "/health/" + (i % 100) : "/p/" + (i % keys);
                String user = "u" + (i % 1000);
                send(producer, Main.VIEWS, viewMs, url,
                        "{\"user_id\": \"" + user + "\", \"url\": \"" + url + "\", \"view_time\": " + seconds(viewMs) + "}",
                        acked, error);
                long j = i - 2000; // the view whose click is due now
                if (j >= 0 && j % 2 == 0) sendClick(producer, startMs, keys, j, acked, error);
            }
            for (long j = Math.max(0, events - 2000); j < events; j++) {
                if (j % 2 == 0) sendClick(producer, startMs, keys, j, acked, error);
            }
            producer.flush();
        }
        if (error.get() != null) throw error.get();
        System.err.printf("wrote %d records (%d views, %d clicks) in %.1f s%n", acked.get(), events,
                (events + 1) / 2, (System.nanoTime() - t0) / 1e9);
    }

    private static void sendClick(KafkaProducer<byte[], byte[]> producer, long startMs, long keys, long j,
                                  AtomicLong acked, AtomicReference<Exception> error) {
        long clickMs = startMs + j + 2000;
        String url = "/p/" + (j % keys);
        String user = "u" + (j % 1000);
        send(producer, Main.CLICKS, clickMs, url,
                "{\"user_id\": \"" + user + "\", \"url\": \"" + url + "\", \"click_time\": " + seconds(clickMs) + "}",
                acked, error);
    }

    private static void send(KafkaProducer<byte[], byte[]> producer, String topic, long ts, String key, String value,
                             AtomicLong acked, AtomicReference<Exception> error) {
        producer.send(new ProducerRecord<>(topic, null, ts, key.getBytes(StandardCharsets.UTF_8),
                value.getBytes(StandardCharsets.UTF_8)), (md, e) -> {
            if (e != null) error.compareAndSet(null, e);
            else acked.incrementAndGet();
        });
    }

    /** ms -> "1764000000.123". */
    private static String seconds(long ms) {
        long frac = ms % 1000;
        return (ms / 1000) + "." + (frac < 10 ? "00" : frac < 100 ? "0" : "") + frac;
    }
}

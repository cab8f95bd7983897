package rill.bench.kstreams;

import java.io.IOException;
import java.nio.file.FileVisitResult;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.SimpleFileVisitor;
import java.nio.file.attribute.BasicFileAttributes;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.JoinWindows;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.StreamJoined;
import org.apache.kafka.streams.kstream.Suppressed;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.WindowStore;

/**
 * The Kafka Streams baseline of the rill benchmark suite; the contract (scenarios, data, command
 * line, output) is bench/BASELINES.md.
 *
 * <pre>
 * java -jar rill-bench-kstreams.jar --scenario NAME --bootstrap HOST:PORT --events N
 *      --partitions P --prefix PREFIX [--state-dir DIR] [--threads T] [--rate R]
 * </pre>
 *
 * Counts {@code bench-views} records as they enter the topology (a {@code peek} on the source
 * stream, after JSON decoding); once N have entered it closes the KafkaStreams instance
 * (commit, close) and prints one JSON line on stdout. Progress goes to stderr every second.
 */
public final class Main {
    static final String VIEWS = "bench-views";
    static final String CLICKS = "bench-clicks";
    static final List<String> SCENARIOS =
            List.of("stateless", "keyed-count", "tumbling-count", "eos-keyed-count", "join");

    private Main() {}

    static final class Args {
        String scenario;
        String bootstrap;
        long events = -1;
        int partitions = 8;
        String prefix;
        String stateDir;
        int threads = 1;

        static Args parse(String[] argv) {
            Args a = new Args();
            for (int i = 0; i < argv.length; i++) {
                String flag = argv[i];
                String value;
                int eq = flag.indexOf('=');
                if (flag.startsWith("--") && eq > 0) {
                    value = flag.substring(eq + 1);
                    flag = flag.substring(0, eq);
                } else {
                    if (i + 1 >= argv.length) throw new IllegalArgumentException(flag + " needs a value");
                    value = argv[++i];
                }
                switch (flag) {
                    case "--scenario" -> a.scenario = value;
                    case "--bootstrap" -> a.bootstrap = value;
                    case "--events" -> a.events = Long.parseLong(value);
                    case "--partitions" -> a.partitions = Integer.parseInt(value);
                    case "--prefix" -> a.prefix = value;
                    case "--state-dir" -> a.stateDir = value;
                    case "--threads" -> a.threads = Integer.parseInt(value);
                    // Latency runs: the program consumes records as they come; nothing to do.
                    case "--rate", "--keys" -> { }
                    default -> throw new IllegalArgumentException("unknown flag " + flag);
                }
            }
            if (a.scenario == null) throw new IllegalArgumentException("--scenario is required");
            if (a.bootstrap == null) throw new IllegalArgumentException("--bootstrap is required");
            if (a.events <= 0) throw new IllegalArgumentException("--events N (N > 0) is required");
            if (a.prefix == null || a.prefix.isEmpty()) throw new IllegalArgumentException("--prefix is required");
            if (a.partitions <= 0) throw new IllegalArgumentException("--partitions must be > 0");
            if (a.threads <= 0) throw new IllegalArgumentException("--threads must be > 0");
            return a;
        }
    }

    /** Counts views entering the topology; remembers the times of the first and the N-th. */
    static final class Counter {
        final long target;
        final AtomicLong count = new AtomicLong();
        final AtomicLong firstMs = new AtomicLong(-1);
        final AtomicLong firstNanos = new AtomicLong();
        volatile long lastMs = -1;
        volatile long lastNanos;
        final CountDownLatch done = new CountDownLatch(1);

        Counter(long target) {
            this.target = target;
        }

        void record() {
            long n = count.incrementAndGet();
            if (n == 1) {
                firstNanos.set(System.nanoTime());
                firstMs.set(System.currentTimeMillis());
            }
            if (n == target) {
                lastNanos = System.nanoTime();
                lastMs = System.currentTimeMillis();
                done.countDown();
            }
        }
    }

    public static void main(String[] argv) throws Exception {
        Args args;
        try {
            args = Args.parse(argv);
        } catch (IllegalArgumentException e) {
            System.err.println("error: " + e.getMessage());
            System.err.println("usage: --scenario NAME --bootstrap HOST:PORT --events N --partitions P"
                    + " --prefix PREFIX [--state-dir DIR] [--threads T] [--rate R]");
            System.exit(2);
            return;
        }
        if (!SCENARIOS.contains(args.scenario)) {
            System.err.println("error: unknown scenario " + args.scenario + "; expected one of " + SCENARIOS);
            System.exit(2);
            return;
        }
        System.exit(run(args));
    }

    static int run(Args args) throws Exception {
        String out = args.prefix + "-out";
        boolean hasOutput = !args.scenario.endsWith("keyed-count");
        List<String> inputs = args.scenario.equals("join") ? List.of(VIEWS, CLICKS) : List.of(VIEWS);
        prepareTopics(args, inputs, hasOutput ? out : null);

        Counter counter = new Counter(args.events);
        Topology topology = topology(args.scenario, out, counter);

        Path stateDir;
        boolean ownStateDir = args.stateDir == null;
        if (ownStateDir) {
            stateDir = Files.createTempDirectory("rill-kstreams-");
        } else {
            stateDir = Path.of(args.stateDir);
            Files.createDirectories(stateDir);
        }
        Properties props = config(args, stateDir);

        KafkaStreams streams = new KafkaStreams(topology, props);
        AtomicReference<Throwable> failure = new AtomicReference<>();
        CountDownLatch stopped = new CountDownLatch(1);
        streams.setUncaughtExceptionHandler(e -> {
            failure.compareAndSet(null, e);
            return StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        streams.setStateListener((now, before) -> {
            if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING
                    || now == KafkaStreams.State.PENDING_ERROR) {
                stopped.countDown();
            }
        });

        Thread progress = new Thread(() -> progress(args, counter), "progress");
        progress.setDaemon(true);
        long startNanos = System.nanoTime();
        streams.start();
        progress.start();

        while (!counter.done.await(100, TimeUnit.MILLISECONDS)) {
            if (stopped.getCount() == 0) {
                Throwable t = failure.get();
                System.err.println("error: Kafka Streams stopped after " + counter.count.get()
                        + " events" + (t == null ? "" : ": " + t));
                if (t != null) t.printStackTrace(System.err);
                streams.close(Duration.ofSeconds(30));
                if (ownStateDir) deleteTree(stateDir);
                return 1;
            }
        }
        long closeStart = System.nanoTime();
        boolean closed = streams.close(Duration.ofSeconds(120));
        double closeS = (System.nanoTime() - closeStart) / 1e9;
        if (!closed) System.err.println("warning: Kafka Streams did not close within 120 s");
        long processed = counter.count.get();
        if (ownStateDir) deleteTree(stateDir);

        double seconds = (counter.lastNanos - counter.firstNanos.get()) / 1e9;
        double rate = seconds > 0 ? args.events / seconds : 0;
        System.err.printf(Locale.ROOT,
                "kafka-streams %s: %d events in %.3f s (%.0f/s); start-up %.3f s, close %.3f s,"
                        + " %d records entered before close%n",
                args.scenario, args.events, seconds, rate,
                (counter.firstNanos.get() - startNanos) / 1e9, closeS, processed);
        Map<String, Object> result = new LinkedHashMap<>();
        result.put("scenario", args.scenario);
        result.put("system", "kafka-streams");
        result.put("events", args.events);
        result.put("first_record_ms", counter.firstMs.get());
        result.put("last_record_ms", counter.lastMs);
        result.put("seconds", seconds);
        result.put("events_per_s", Math.round(rate * 10.0) / 10.0);
        System.out.println(new String(Json.encode(result), java.nio.charset.StandardCharsets.UTF_8));
        System.out.flush();
        return closed ? 0 : 1;
    }

    static Topology topology(String scenario, String out, Counter counter) {
        Serde<String> str = Serdes.String();
        Serde<Json.View> viewSerde = Json.serde(Json.View.class);
        Serde<Json.Click> clickSerde = Json.serde(Json.Click.class);
        EventTime eventTime = new EventTime();

        StreamsBuilder builder = new StreamsBuilder();
        KStream<String, Json.View> views = builder
                .stream(VIEWS, Consumed.with(str, viewSerde).withTimestampExtractor(eventTime)
                        .withName("views"))
                .peek((k, v) -> counter.record());

        switch (scenario) {
            case "stateless" -> views
                    .filter((url, v) -> v.url == null || !v.url.startsWith("/health"))
                    .mapValues(Json::encode)
                    .to(out, Produced.with(str, Serdes.ByteArray()));
            case "keyed-count", "eos-keyed-count" -> views
                    // The key is the URL already: no repartition topic.
                    .groupByKey(Grouped.with(str, viewSerde))
                    .count(Materialized.<String, Long, KeyValueStore<Bytes, byte[]>>as("counts")
                            .withKeySerde(str).withValueSerde(Serdes.Long()));
            case "tumbling-count" -> views
                    .groupByKey(Grouped.with(str, viewSerde))
                    .windowedBy(TimeWindows.ofSizeWithNoGrace(Duration.ofSeconds(60)))
                    .count(Materialized.<String, Long, WindowStore<Bytes, byte[]>>as("window-counts")
                            .withKeySerde(str).withValueSerde(Serdes.Long()))
                    // Each window once, when stream time passes its end (grace 0).
                    .suppress(Suppressed.untilWindowCloses(Suppressed.BufferConfig.unbounded())
                            .withName("window-close"))
                    .toStream()
                    .map((w, count) -> KeyValue.pair(w.key(), new Json.WindowCount(
                            w.key(), w.window().start(), w.window().end(), count)))
                    .to(out, Produced.with(str, Json.serde(Json.WindowCount.class)));
            case "join" -> {
                KStream<String, Json.Click> clicks = builder.stream(CLICKS,
                        Consumed.with(str, clickSerde).withTimestampExtractor(eventTime)
                                .withName("clicks"));
                views.join(clicks,
                                (v, c) -> new Json.Joined(v.userId, v.url,
                                        Math.round((c.clickTime - v.viewTime) * 1000.0)),
                                JoinWindows.ofTimeDifferenceWithNoGrace(Duration.ofSeconds(5)),
                                StreamJoined.with(str, viewSerde, clickSerde).withStoreName("join"))
                        .to(out, Produced.with(str, Json.serde(Json.Joined.class)));
            }
            default -> throw new IllegalArgumentException(scenario);
        }
        return builder.build();
    }

    static Properties config(Args args, Path stateDir) {
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, args.prefix);
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args.bootstrap);
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, args.threads);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 100);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG,
                args.scenario.startsWith("eos-") ? StreamsConfig.EXACTLY_ONCE_V2 : StreamsConfig.AT_LEAST_ONCE);
        // Internal topics: replication factor of the broker's default (1 on the test broker).
        p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, -1);
        // Consumer (BASELINES.md: the same queue limits as librdkafka's).
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.FETCH_MAX_BYTES_CONFIG), 64 * 1024 * 1024);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.MAX_PARTITION_FETCH_BYTES_CONFIG), 1024 * 1024);
        // Producer.
        p.put(StreamsConfig.producerPrefix(ProducerConfig.BUFFER_MEMORY_CONFIG), 64L * 1024 * 1024);
        p.put(StreamsConfig.producerPrefix(ProducerConfig.LINGER_MS_CONFIG), 5);
        p.put(StreamsConfig.producerPrefix(ProducerConfig.COMPRESSION_TYPE_CONFIG), "lz4");
        p.put(StreamsConfig.producerPrefix(ProducerConfig.ACKS_CONFIG), "all");
        p.put(StreamsConfig.producerPrefix(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG), true);
        return p;
    }

    /**
     * Waits (up to 120 s) for the input topics, which the suite creates (for latency runs it may
     * start this program first), and creates the output topic with P partitions.
     */
    static void prepareTopics(Args args, List<String> inputs, String output) throws Exception {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args.bootstrap);
        try (Admin admin = Admin.create(p)) {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
            while (true) {
                java.util.Set<String> names = admin.listTopics().names().get(60, TimeUnit.SECONDS);
                List<String> missing = inputs.stream().filter(t -> !names.contains(t)).toList();
                if (missing.isEmpty()) break;
                if (System.nanoTime() > deadline) throw new IllegalStateException("input topics missing: " + missing);
                System.err.println("waiting for input topics " + missing);
                Thread.sleep(500);
            }
            if (output == null) return;
            try {
                // Output records carry the input's timestamps, which may be older than the
                // broker's time retention: keep them, so the suite can read the output.
                admin.createTopics(List.of(new NewTopic(output, java.util.Optional.of(args.partitions),
                        java.util.Optional.empty()).configs(Map.of("retention.ms", "-1"))))
                        .all().get(60, TimeUnit.SECONDS);
            } catch (ExecutionException e) {
                if (!(e.getCause() instanceof TopicExistsException)) throw e;
            }
        }
    }

    static void progress(Args args, Counter counter) {
        long lastCount = 0;
        long lastNanos = System.nanoTime();
        while (true) {
            try {
                Thread.sleep(1000);
            } catch (InterruptedException e) {
                return;
            }
            long n = counter.count.get();
            long now = System.nanoTime();
            double recent = (n - lastCount) / ((now - lastNanos) / 1e9);
            long first = counter.firstNanos.get();
            double avg = n > 0 && now > first ? n / ((now - first) / 1e9) : 0;
            System.err.printf(Locale.ROOT, "kafka-streams %s: %d/%d events (%.0f/s, last second %.0f/s)%n",
                    args.scenario, n, args.events, avg, recent);
            lastCount = n;
            lastNanos = now;
        }
    }

    static void deleteTree(Path root) {
        try {
            if (!Files.exists(root)) return;
            Files.walkFileTree(root, new SimpleFileVisitor<>() {
                @Override
                public FileVisitResult visitFile(Path file, BasicFileAttributes attrs) throws IOException {
                    Files.delete(file);
                    return FileVisitResult.CONTINUE;
                }

                @Override
                public FileVisitResult postVisitDirectory(Path dir, IOException e) throws IOException {
                    Files.delete(dir);
                    return FileVisitResult.CONTINUE;
                }
            });
        } catch (IOException e) {
            System.err.println("warning: cannot delete " + root + ": " + e);
        }
    }
}

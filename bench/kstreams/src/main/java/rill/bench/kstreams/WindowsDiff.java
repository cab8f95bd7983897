package rill.bench.kstreams;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.FileVisitResult;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.SimpleFileVisitor;
import java.nio.file.attribute.BasicFileAttributes;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import org.apache.kafka.common.Metric;
import org.apache.kafka.common.MetricName;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.TestInputTopic;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.TopologyTestDriver;
import org.apache.kafka.streams.kstream.Aggregator;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.EmitStrategy;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Initializer;
import org.apache.kafka.streams.kstream.KGroupedStream;
import org.apache.kafka.streams.kstream.KTable;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.SessionWindows;
import org.apache.kafka.streams.kstream.SlidingWindows;
import org.apache.kafka.streams.kstream.Suppressed;
import org.apache.kafka.streams.kstream.Suppressed.BufferConfig;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.kstream.Windowed;
import org.apache.kafka.streams.state.SessionStore;
import org.apache.kafka.streams.state.WindowStore;

/**
 * Kafka Streams' windows on a file of records, for rill's differential test
 * (tests/window_differential.rs): no broker, a {@link TopologyTestDriver} per window definition.
 *
 * <pre>
 * java -cp rill-bench-kstreams.jar rill.bench.kstreams.WindowsDiff INPUT WINDOW...
 *
 *   INPUT   JSON lines {"key": "/p3", "time": 1700000000123} (event time, ms), in arrival order
 *   WINDOW  tumbling:SIZE:GRACE | hopping:SIZE:ADVANCE:GRACE | sliding:DIFFERENCE:GRACE
 *           | session:GAP:GRACE   (Kafka Streams' parameters, ms)
 * </pre>
 *
 * For every WINDOW, in order, the records go through {@code groupByKey().windowedBy(..)}, a count
 * and the final results (see {@link #windowed}) on one partition, and stdout gets one line per
 * window emitted, in emission order:
 * {@code {"window": WINDOW, "key": .., "start": .., "end": .., "count": ..}}, with {@code end} in
 * rill's convention (exclusive for tumbling, hopping and sliding windows: Kafka Streams' inclusive
 * sliding end plus 1; a session's last event time), then one line
 * {@code {"window": WINDOW, "late": .., "dropped": ..}}: {@code late} counts the records added to
 * no window, {@code dropped} is the task metric {@code dropped-records-total}. They differ: for
 * time and sliding windows the metric counts each window a record was too late for, so a record
 * may count several times, or count while it was added to other windows.
 */
public final class WindowsDiff {
    static final String INPUT = "input";

    private WindowsDiff() {}

    record Input(String key, long time) {}

    public static void main(String[] argv) throws Exception {
        if (argv.length < 2) {
            System.err.println("usage: WindowsDiff INPUT WINDOW... (see the class comment)");
            System.exit(2);
        }
        List<Input> records = read(Path.of(argv[0]));
        PrintStream out = new PrintStream(System.out, false, StandardCharsets.UTF_8);
        for (int i = 1; i < argv.length; i++) {
            run(argv[i], records, out);
        }
        out.flush();
    }

    static List<Input> read(Path file) throws IOException {
        List<Input> records = new ArrayList<>();
        try (BufferedReader lines = Files.newBufferedReader(file, StandardCharsets.UTF_8)) {
            String line;
            while ((line = lines.readLine()) != null) {
                if (line.isBlank()) continue;
                JsonNode node = Json.MAPPER.readTree(line);
                records.add(new Input(node.get("key").asText(), node.get("time").asLong()));
            }
        }
        return records;
    }

    /** Counts records like {@code count()} does, noting that the record was added to a window. */
    static final class Counting {
        boolean added;
        final Initializer<Long> zero = () -> 0L;
        final Aggregator<String, String, Long> add = (key, value, n) -> {
            added = true;
            return n + 1;
        };
    }

    static void run(String window, List<Input> records, PrintStream out) throws IOException {
        String[] spec = window.split(":");
        String kind = spec[0];
        Counting counting = new Counting();
        List<Map<String, Object>> emitted = new ArrayList<>();
        StreamsBuilder builder = new StreamsBuilder();
        KGroupedStream<String, String> grouped = builder
                .stream(INPUT, Consumed.with(Serdes.String(), Serdes.String()))
                .groupByKey(Grouped.with(Serdes.String(), Serdes.String()));
        KTable<Windowed<String>, Long> counts = windowed(kind, spec, grouped, counting);
        // A sliding window's end is inclusive in Kafka Streams: rill's exclusive end is one more.
        long endShift = kind.equals("sliding") ? 1 : 0;
        counts.toStream().foreach((key, count) -> {
            Map<String, Object> line = new LinkedHashMap<>();
            line.put("window", window);
            line.put("key", key.key());
            line.put("start", key.window().start());
            line.put("end", key.window().end() + endShift);
            line.put("count", count);
            emitted.add(line);
        });

        Path stateDir = stateDir();
        long late = 0;
        double dropped;
        try (TopologyTestDriver driver = new TopologyTestDriver(builder.build(), config(stateDir), Instant.EPOCH)) {
            TestInputTopic<String, String> input =
                    driver.createInputTopic(INPUT, new StringSerializer(), new StringSerializer());
            for (Input record : records) {
                counting.added = false;
                input.pipeInput(record.key(), "1", record.time());
                if (!counting.added) late++;
            }
            dropped = droppedRecords(driver.metrics());
        } finally {
            deleteTree(stateDir);
        }
        for (Map<String, Object> line : emitted) {
            out.println(new String(Json.encode(line), StandardCharsets.UTF_8));
        }
        Map<String, Object> summary = new LinkedHashMap<>();
        summary.put("window", window);
        summary.put("late", late);
        summary.put("dropped", (long) dropped);
        out.println(new String(Json.encode(summary), StandardCharsets.UTF_8));
    }

    /**
     * The windowed count of one WINDOW, each window emitted once, when stream time passes its
     * end plus grace: through {@code emitStrategy(onWindowClose())} for time and sliding windows,
     * through {@code suppress(untilWindowCloses(..))} for session windows (see there why).
     * {@code count()} is {@code aggregate(() -> 0L, (k, v, n) -> n + 1)} with a sum as session
     * merger; it is written out here so the program sees which records were added to a window.
     */
    static KTable<Windowed<String>, Long> windowed(
            String kind, String[] spec, KGroupedStream<String, String> grouped, Counting counting) {
        Materialized<String, Long, WindowStore<Bytes, byte[]>> stored =
                Materialized.with(Serdes.String(), Serdes.Long());
        EmitStrategy onClose = EmitStrategy.onWindowClose();
        switch (kind) {
            case "tumbling" -> {
                expect(spec, 3);
                TimeWindows windows = TimeWindows.ofSizeAndGrace(ms(spec[1]), ms(spec[2]));
                return grouped.windowedBy(windows).emitStrategy(onClose)
                        .aggregate(counting.zero, counting.add, stored);
            }
            case "hopping" -> {
                expect(spec, 4);
                TimeWindows windows =
                        TimeWindows.ofSizeAndGrace(ms(spec[1]), ms(spec[3])).advanceBy(ms(spec[2]));
                return grouped.windowedBy(windows).emitStrategy(onClose)
                        .aggregate(counting.zero, counting.add, stored);
            }
            case "sliding" -> {
                expect(spec, 3);
                SlidingWindows windows = SlidingWindows.ofTimeDifferenceAndGrace(ms(spec[1]), ms(spec[2]));
                return grouped.windowedBy(windows).emitStrategy(onClose)
                        .aggregate(counting.zero, counting.add, stored);
            }
            case "session" -> {
                expect(spec, 3);
                // Not onWindowClose: in Kafka Streams 4.1.1 its time-ordered session store drops
                // a segment (60 s or more of session ends) as soon as a put moves stream time
                // past it plus retention, which happens before that record's final results are
                // fetched: the sessions ending just before a segment boundary are never emitted.
                // suppress() keeps them in its buffer instead; the aggregation is the same.
                SessionWindows windows = SessionWindows.ofInactivityGapAndGrace(ms(spec[1]), ms(spec[2]));
                return grouped.windowedBy(windows)
                        .aggregate(counting.zero, counting.add, (key, a, b) -> a + b,
                                Materialized.<String, Long, SessionStore<Bytes, byte[]>>with(
                                        Serdes.String(), Serdes.Long()).withCachingDisabled())
                        .suppress(Suppressed.untilWindowCloses(BufferConfig.unbounded()));
            }
            default -> throw new IllegalArgumentException(
                    "unknown window kind " + kind + "; expected tumbling, hopping, sliding or session");
        }
    }

    static void expect(String[] spec, int parts) {
        if (spec.length != parts) {
            throw new IllegalArgumentException(
                    "window " + String.join(":", spec) + " needs " + (parts - 1) + " parameters");
        }
    }

    static Duration ms(String value) {
        return Duration.ofMillis(Long.parseLong(value));
    }

    /**
     * A fresh state directory, in memory (/dev/shm) where there is one: the test driver commits
     * after every record, and each commit flushes the RocksDB stores, which on a disk takes
     * twice as long.
     */
    static Path stateDir() throws IOException {
        Path shm = Path.of("/dev/shm");
        if (Files.isDirectory(shm) && Files.isWritable(shm)) {
            return Files.createTempDirectory(shm, "rill-windows-diff-");
        }
        return Files.createTempDirectory("rill-windows-diff-");
    }

    static Properties config(Path stateDir) {
        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, "rill-windows-diff");
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, "unused:9092");
        props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
        // onWindowClose emits at most once per second of wall-clock time by default; the test
        // driver's wall clock stands still, so emit on every record that moves stream time.
        props.put(StreamsConfig.InternalConfig.EMIT_INTERVAL_MS_KSTREAMS_WINDOWED_AGGREGATION, 0L);
        return props;
    }

    /** The task metric dropped-records-total (records or, per window, parts of records skipped). */
    static double droppedRecords(Map<MetricName, ? extends Metric> metrics) {
        double total = 0;
        for (Map.Entry<MetricName, ? extends Metric> e : metrics.entrySet()) {
            if (e.getKey().name().equals("dropped-records-total")
                    && e.getKey().group().equals("stream-task-metrics")) {
                total += ((Number) e.getValue().metricValue()).doubleValue();
            }
        }
        return total;
    }

    static void deleteTree(Path root) throws IOException {
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
    }
}

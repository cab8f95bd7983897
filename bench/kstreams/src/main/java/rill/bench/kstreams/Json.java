package rill.bench.kstreams;

import com.fasterxml.jackson.annotation.JsonProperty;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.ObjectReader;
import com.fasterxml.jackson.databind.ObjectWriter;
import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.databind.JsonSerializer;
import com.fasterxml.jackson.databind.SerializerProvider;
import com.fasterxml.jackson.databind.annotation.JsonSerialize;
import java.io.IOException;
import java.math.BigDecimal;
import org.apache.kafka.common.errors.SerializationException;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;

/** The records of the benchmark (BASELINES.md) and their JSON serdes (Jackson databind). */
final class Json {
    private Json() {}

    static final ObjectMapper MAPPER =
            new ObjectMapper().configure(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES, false);

    /** {@code bench-views}: {"user_id": "u123", "url": "/p/4567", "view_time": 1764000000.123}. */
    public static final class View {
        @JsonProperty("user_id") public String userId;
        @JsonProperty("url") public String url;
        /** Seconds since the epoch. */
        @JsonProperty("view_time") @JsonSerialize(using = PlainDouble.class) public double viewTime;
    }

    /** {@code bench-clicks}: {"user_id": "u123", "url": "/p/4567", "click_time": 1764000001.5}. */
    public static final class Click {
        @JsonProperty("user_id") public String userId;
        @JsonProperty("url") public String url;
        /** Seconds since the epoch. */
        @JsonProperty("click_time") @JsonSerialize(using = PlainDouble.class) public double clickTime;
    }

    /** Output of {@code join}. */
    public static final class Joined {
        @JsonProperty("view_user") public String viewUser;
        @JsonProperty("url") public String url;
        @JsonProperty("delay_ms") public long delayMs;

        Joined(String viewUser, String url, long delayMs) {
            this.viewUser = viewUser;
            this.url = url;
            this.delayMs = delayMs;
        }
    }

    /** Output of {@code tumbling-count}: one closed window (start inclusive, end exclusive, ms). */
    public static final class WindowCount {
        @JsonProperty("url") public String url;
        @JsonProperty("start") public long start;
        @JsonProperty("end") public long end;
        @JsonProperty("count") public long count;

        WindowCount(String url, long start, long end, long count) {
            this.url = url;
            this.start = start;
            this.end = end;
            this.count = count;
        }
    }

    /** Writes 1764000000.123 rather than Jackson's 1.764000000123E9 (both valid JSON). */
    public static final class PlainDouble extends JsonSerializer<Double> {
        @Override
        public void serialize(Double value, JsonGenerator gen, SerializerProvider provider) throws IOException {
            double d = value;
            if (Double.isFinite(d)) gen.writeNumber(BigDecimal.valueOf(d).toPlainString());
            else gen.writeNumber(d);
        }
    }

    static <T> Serde<T> serde(Class<T> type) {
        ObjectReader reader = MAPPER.readerFor(type);
        ObjectWriter writer = MAPPER.writerFor(type);
        Serializer<T> ser = (topic, value) -> {
            if (value == null) return null;
            try {
                return writer.writeValueAsBytes(value);
            } catch (IOException e) {
                throw new SerializationException("cannot encode " + type.getSimpleName(), e);
            }
        };
        Deserializer<T> de = (topic, bytes) -> {
            if (bytes == null) return null;
            try {
                return reader.readValue(bytes);
            } catch (IOException e) {
                throw new SerializationException("cannot decode " + type.getSimpleName(), e);
            }
        };
        return Serdes.serdeFrom(ser, de);
    }

    static byte[] encode(Object value) {
        try {
            return MAPPER.writeValueAsBytes(value);
        } catch (IOException e) {
            throw new SerializationException("cannot encode", e);
        }
    }
}

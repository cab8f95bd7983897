//! Codecs turn records into bytes and back. JSON is the default; postcard is the compact binary
//! codec; raw passes bytes (or UTF-8 text) through untouched.

use std::borrow::Cow;

use serde::{Serialize, de::DeserializeOwned};

use crate::base::error::CodecError;

/// How a topic's record values are written on the wire.
///
/// ```
/// use rill_runtime::Codec;
/// let bytes = Codec::Json.encode(&vec![1, 2, 3]).unwrap();
/// assert_eq!(bytes, b"[1,2,3]");
/// let back: Vec<i32> = Codec::Json.decode(&bytes).unwrap();
/// assert_eq!(back, vec![1, 2, 3]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Codec {
    /// `serde_json`: readable, what Faust and most Kafka tools expect.
    #[default]
    Json,
    /// `postcard`: compact binary (varints, no field names); both sides must share the type.
    Postcard,
    /// The bytes as they are: for `Vec<u8>` and `String` records only.
    Raw,
    /// Avro in the Confluent wire format, governed by a schema registry
    /// (`#[record(codec = "avro")]`): needs the topic, whose binding holds the schema id, so
    /// it goes through [`crate::encode_for`] and [`crate::decode_from`].
    Avro,
    /// JSON in the Confluent wire format, its JSON Schema in a schema registry
    /// (`#[record(codec = "json_schema")]`); through the topic like [`Codec::Avro`].
    JsonSchema,
    /// Protocol Buffers in the Confluent wire format (message indexes after the id), for a
    /// `prost::Message` struct with its `.proto` (`#[record(codec = "protobuf", schema =
    /// "x.proto")]`); through the topic like [`Codec::Avro`].
    Protobuf,
}

impl Codec {
    /// The codec's name as used in `#[record(codec = "...")]`.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Json => "json",
            Codec::Postcard => "postcard",
            Codec::Raw => "raw",
            Codec::Avro => "avro",
            Codec::JsonSchema => "json_schema",
            Codec::Protobuf => "protobuf",
        }
    }

    /// Parses a codec name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "json" => Some(Codec::Json),
            "postcard" => Some(Codec::Postcard),
            "raw" => Some(Codec::Raw),
            "avro" => Some(Codec::Avro),
            "json_schema" => Some(Codec::JsonSchema),
            "protobuf" => Some(Codec::Protobuf),
            _ => None,
        }
    }

    /// Encodes a serde value. `Raw` only works through the `Vec<u8>`/`String` record impls.
    pub fn encode<T: Serialize>(self, value: &T) -> Result<Vec<u8>, CodecError> {
        match self {
            Codec::Json => Ok(serde_json::to_vec(value)?),
            Codec::Postcard => Ok(postcard::to_stdvec(value)?),
            Codec::Raw => Err(raw_unsupported::<T>()),
            Codec::Avro | Codec::JsonSchema | Codec::Protobuf => Err(registry_unsupported::<T>()),
        }
    }

    /// Appends a serde value's encoding to `out` (on an error, `out` may hold part of it).
    pub fn encode_into<T: Serialize>(self, value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        match self {
            Codec::Json => Ok(serde_json::to_writer(out, value)?),
            Codec::Postcard => {
                *out = postcard::to_extend(value, std::mem::take(out))?;
                Ok(())
            }
            Codec::Raw => Err(raw_unsupported::<T>()),
            Codec::Avro | Codec::JsonSchema | Codec::Protobuf => Err(registry_unsupported::<T>()),
        }
    }

    /// Decodes a serde value.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, CodecError> {
        match self {
            Codec::Json => Ok(serde_json::from_slice(bytes)?),
            Codec::Postcard => Ok(postcard::from_bytes(bytes)?),
            Codec::Raw => Err(raw_unsupported::<T>()),
            Codec::Avro | Codec::JsonSchema | Codec::Protobuf => Err(registry_unsupported::<T>()),
        }
    }

    /// A schema-registry codec (the record is framed with its topic's schema id).
    pub fn is_registry(self) -> bool {
        matches!(self, Codec::Avro | Codec::JsonSchema | Codec::Protobuf)
    }
}

/// Scratch capacity kept between uses.
const SCRATCH_KEEP: usize = 1 << 20;

/// Runs `f` with this thread's encoding buffer, empty; a fresh one when it is in use (an
/// encoding inside an encoding).
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            if buf.capacity() > SCRATCH_KEEP {
                // One large record does not pin its buffer for the thread's life.
                *buf = Vec::new();
            }
            f(&mut buf)
        }
        Err(_) => f(&mut Vec::new()),
    })
}

fn raw_unsupported<T>() -> CodecError {
    CodecError::Unsupported {
        codec: "raw",
        ty: std::any::type_name::<T>(),
        hint: "the raw codec carries `Vec<u8>` or `String` records; use `json` or `postcard` for structs",
    }
}

fn registry_unsupported<T>() -> CodecError {
    CodecError::Unsupported {
        codec: "avro, json_schema or protobuf",
        ty: std::any::type_name::<T>(),
        hint: "a schema-registry record carries its schema: mark it `#[record(codec = \"avro\")]` (or \"json_schema\"), and encode or decode it for a topic (`rill::encode_for`, `rill::decode_from`)",
    }
}

/// Turns a record key into the bytes Kafka partitions on. The encodings match the Java client's
/// serializers (`StringSerializer`, `IntegerSerializer`, `LongSerializer`: UTF-8 and big-endian),
/// so a key lands in the same partition whether rill, a Java producer or Kafka Streams wrote it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be used as a record key",
    note = "keys are strings, integers or bytes; implement `rill::KeyBytes` for other types"
)]
pub trait KeyBytes {
    /// The key's wire bytes.
    fn key_bytes(&self) -> Vec<u8>;

    /// The key's wire bytes, borrowed when the value holds them as they are (strings, byte
    /// vectors): a send then copies them once, into librdkafka.
    fn key_cow(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.key_bytes())
    }

    /// The key's wire bytes, taking the key: no copy when it holds them as they are (a
    /// join buffers the bytes of every record's key).
    fn into_key_bytes(self) -> Vec<u8>
    where
        Self: Sized,
    {
        self.key_bytes()
    }
}

impl KeyBytes for String {
    fn key_bytes(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
    fn key_cow(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.as_bytes())
    }
    fn into_key_bytes(self) -> Vec<u8> {
        self.into_bytes()
    }
}
impl KeyBytes for str {
    fn key_bytes(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
    fn key_cow(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.as_bytes())
    }
}
impl KeyBytes for Vec<u8> {
    fn key_bytes(&self) -> Vec<u8> {
        self.clone()
    }
    fn key_cow(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self)
    }
    fn into_key_bytes(self) -> Vec<u8> {
        self
    }
}
impl<T: KeyBytes + ?Sized> KeyBytes for &T {
    fn key_bytes(&self) -> Vec<u8> {
        (**self).key_bytes()
    }
    fn key_cow(&self) -> Cow<'_, [u8]> {
        (**self).key_cow()
    }
}
macro_rules! int_key {
    ($($t:ty),*) => {$(
        impl KeyBytes for $t {
            fn key_bytes(&self) -> Vec<u8> {
                self.to_be_bytes().to_vec()
            }
        }
    )*};
}
int_key!(i16, i32, i64, u16, u32, u64);

/// A field that can carry a record's event time, converted to milliseconds since the epoch.
/// Floats are seconds (Faust's convention); integers are milliseconds (Kafka's convention).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a record timestamp",
    note = "use `f64` seconds, `i64`/`u64` milliseconds since the epoch, or `std::time::SystemTime`"
)]
pub trait EventTime {
    /// Milliseconds since the Unix epoch.
    fn timestamp_millis(&self) -> i64;
}

impl EventTime for f64 {
    fn timestamp_millis(&self) -> i64 {
        (*self * 1000.0).round() as i64
    }
}
impl EventTime for f32 {
    fn timestamp_millis(&self) -> i64 {
        (f64::from(*self) * 1000.0).round() as i64
    }
}
impl EventTime for i64 {
    fn timestamp_millis(&self) -> i64 {
        *self
    }
}
impl EventTime for u64 {
    fn timestamp_millis(&self) -> i64 {
        i64::try_from(*self).unwrap_or(i64::MAX)
    }
}
impl EventTime for std::time::SystemTime {
    fn timestamp_millis(&self) -> i64 {
        match self.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
        }
    }
}
impl<T: EventTime> EventTime for Option<T> {
    fn timestamp_millis(&self) -> i64 {
        self.as_ref().map_or(0, EventTime::timestamp_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct View {
        url: String,
        n: u32,
    }

    #[test]
    fn json_and_postcard_round_trip() {
        let v = View {
            url: "/a".into(),
            n: 7,
        };
        for codec in [Codec::Json, Codec::Postcard] {
            let bytes = codec.encode(&v).unwrap();
            assert_eq!(codec.decode::<View>(&bytes).unwrap(), v);
        }
        assert!(Codec::Postcard.encode(&v).unwrap().len() < Codec::Json.encode(&v).unwrap().len());
    }

    #[test]
    fn encoding_into_a_buffer_appends_what_encode_returns() {
        let v = View {
            url: "/a".into(),
            n: 7,
        };
        for codec in [Codec::Json, Codec::Postcard] {
            let mut out = b"prefix".to_vec();
            codec.encode_into(&v, &mut out).unwrap();
            assert_eq!(out[..6], *b"prefix");
            assert_eq!(out[6..], codec.encode(&v).unwrap()[..]);
        }
        // The record impls of raw types append their bytes; `encode` goes through them.
        let mut out = Vec::new();
        crate::Record::encode_into(&"héllo".to_owned(), Codec::Raw, &mut out).unwrap();
        crate::Record::encode_into(&vec![1u8, 2], Codec::Raw, &mut out).unwrap();
        assert_eq!(out, [b"h\xc3\xa9llo".as_slice(), &[1, 2]].concat());
        assert_eq!(
            crate::Record::encode(&vec![3u8], Codec::Raw).unwrap(),
            vec![3]
        );
        assert!(crate::Record::encode_into(&v_record(), Codec::Raw, &mut out).is_err());
    }

    fn v_record() -> serde_json::Value {
        serde_json::json!({"url": "/a"})
    }

    #[test]
    fn raw_refuses_structs() {
        let err = Codec::Raw
            .encode(&View {
                url: "x".into(),
                n: 1,
            })
            .unwrap_err();
        assert!(err.to_string().contains("raw"), "{err}");
    }

    #[test]
    fn bad_json_is_an_error_not_a_panic() {
        assert!(Codec::Json.decode::<View>(b"{\"url\": 3}").is_err());
        assert!(Codec::Json.decode::<View>(b"").is_err());
    }

    #[test]
    fn keys_match_java_serializers() {
        assert_eq!(42i32.key_bytes(), vec![0, 0, 0, 42]);
        assert_eq!(1i64.key_bytes(), vec![0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!("ab".key_bytes(), b"ab".to_vec());
        // Taking the key gives the same bytes.
        assert_eq!(42i32.into_key_bytes(), 42i32.key_bytes());
        assert_eq!("ab".to_owned().into_key_bytes(), b"ab".to_vec());
        assert_eq!(vec![1u8, 2].into_key_bytes(), vec![1u8, 2]);
    }

    #[test]
    fn event_time_units() {
        assert_eq!(1.5f64.timestamp_millis(), 1500);
        assert_eq!(1500i64.timestamp_millis(), 1500);
    }
}

//! The `Record` trait: what `#[record]` implements, and what any hand-written type can implement
//! to travel through a topic.

use std::borrow::Cow;

use serde::{Serialize, de::DeserializeOwned};

use crate::base::codec::Codec;
use crate::base::error::CodecError;
use crate::base::schema::RecordSchema;

/// A value that travels through a topic.
///
/// `#[record]` implements it for a struct; everything it generates can be written by hand:
///
/// ```
/// use rill_runtime::{Codec, Record};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Click { url: String, at_ms: i64 }
///
/// impl Record for Click {
///     fn key(&self) -> Option<Vec<u8>> { Some(self.url.as_bytes().to_vec()) }
///     fn event_time(&self) -> Option<i64> { Some(self.at_ms) }
/// }
///
/// let c = Click { url: "/a".into(), at_ms: 5 };
/// let bytes = c.encode(Click::CODEC).unwrap();
/// assert_eq!(Click::decode(&bytes, Codec::Json).unwrap().at_ms, 5);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a rill record",
    note = "mark the struct with `#[record]` (or implement `rill::Record` by hand)"
)]
pub trait Record: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The codec used when the topic does not choose one.
    const CODEC: Codec = Codec::Json;

    /// The message key: the `#[record(key)]` field's bytes, or `None` (spread over partitions).
    fn key(&self) -> Option<Vec<u8>> {
        None
    }

    /// The message key like [`Record::key`], borrowed when the key field holds its bytes (a
    /// `String` or `Vec<u8>` key: no copy per send). `#[record(key)]` generates it.
    fn key_ref(&self) -> Option<Cow<'_, [u8]>> {
        self.key().map(Cow::Owned)
    }

    /// Event time in milliseconds since the epoch, from the `#[record(timestamp)]` field.
    fn event_time(&self) -> Option<i64> {
        None
    }

    /// Encodes the record (through [`Record::encode_into`], into a reused buffer: the result
    /// is allocated once, at its size, instead of grown from empty).
    fn encode(&self, codec: Codec) -> Result<Vec<u8>, CodecError> {
        crate::base::codec::with_scratch(|buf| {
            self.encode_into(codec, buf)?;
            Ok(buf.as_slice().to_vec())
        })
    }

    /// Appends the record's encoding to `out`: what sends use (a sink on Kafka encodes into a
    /// reused buffer). A record type with its own encoding overrides this method, not `encode`.
    fn encode_into(&self, codec: Codec, out: &mut Vec<u8>) -> Result<(), CodecError> {
        codec.encode_into(self, out)
    }

    /// Decodes a record.
    fn decode(bytes: &[u8], codec: Codec) -> Result<Self, CodecError> {
        codec.decode(bytes)
    }

    /// The record's schema for the schema-registry codecs: `#[record(codec = "avro")]` and
    /// `"json_schema"` derive it from the struct (or read `schema = "file"`).
    fn registry_schema() -> Option<&'static RecordSchema> {
        None
    }

    /// The registry key of the record's `#[record(key)]` field, when its topics carry keys in
    /// the Confluent wire format (`#[record(key_codec = "avro")]` or `"json_schema"`).
    fn key_schema() -> Option<crate::base::registry_keys::KeySchema> {
        None
    }

    /// The record as a Protocol Buffers message (`#[record(codec = "protobuf")]` generates
    /// it from the struct's `prost::Message` impl).
    #[doc(hidden)]
    fn encode_message(&self, _out: &mut Vec<u8>) -> Result<(), CodecError> {
        Err(not_a_message::<Self>())
    }

    /// The record from a Protocol Buffers message.
    #[doc(hidden)]
    fn decode_message(_bytes: &[u8]) -> Result<Self, CodecError> {
        Err(not_a_message::<Self>())
    }
}

fn not_a_message<T>() -> CodecError {
    CodecError::Unsupported {
        codec: "protobuf",
        ty: std::any::type_name::<T>(),
        hint: "a Protocol Buffers record is a `prost::Message` marked `#[record(codec = \"protobuf\", schema = \"x.proto\")]`",
    }
}

/// Appends `value`'s encoding as a record of `topic`: the registry codecs frame it with the
/// id of the topic's schema; the others are [`Record::encode_into`].
pub fn encode_for<V: Record>(
    topic: &str,
    codec: Codec,
    value: &V,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    match (codec, V::registry_schema()) {
        (Codec::Avro, Some(schema)) => crate::base::schema::encode_avro(topic, schema, value, out),
        (Codec::JsonSchema, Some(_)) => crate::base::schema::encode_json(topic, value, out),
        (Codec::Protobuf, Some(schema)) => {
            crate::base::schema::frame_message(topic, schema, out)?;
            value.encode_message(out)
        }
        _ => value.encode_into(codec, out),
    }
}

/// [`encode_for`] into a vector of its own.
pub fn encode_vec_for<V: Record>(
    topic: &str,
    codec: Codec,
    value: &V,
) -> Result<Vec<u8>, CodecError> {
    crate::base::codec::with_scratch(|buf| {
        encode_for(topic, codec, value, buf)?;
        Ok(buf.as_slice().to_vec())
    })
}

/// Decodes a record of `topic`: the registry codecs read the writer's schema by the frame's
/// id and resolve it to the value type's; the others are [`Record::decode`].
pub fn decode_from<V: Record>(topic: &str, bytes: &[u8], codec: Codec) -> Result<V, CodecError> {
    match (codec, V::registry_schema()) {
        (Codec::Avro, Some(schema)) => crate::base::schema::decode_avro(topic, schema, bytes),
        (Codec::JsonSchema, Some(_)) => crate::base::schema::decode_json(topic, bytes),
        (Codec::Protobuf, Some(schema)) => {
            V::decode_message(crate::base::schema::unframe_message(topic, schema, bytes)?)
        }
        _ => V::decode(bytes, codec),
    }
}

impl Record for Vec<u8> {
    const CODEC: Codec = Codec::Raw;

    fn encode_into(&self, codec: Codec, out: &mut Vec<u8>) -> Result<(), CodecError> {
        match codec {
            Codec::Raw => {
                out.extend_from_slice(self);
                Ok(())
            }
            other => other.encode_into(self, out),
        }
    }

    fn decode(bytes: &[u8], codec: Codec) -> Result<Self, CodecError> {
        match codec {
            Codec::Raw => Ok(bytes.to_vec()),
            other => other.decode(bytes),
        }
    }
}

impl Record for String {
    const CODEC: Codec = Codec::Raw;

    fn encode_into(&self, codec: Codec, out: &mut Vec<u8>) -> Result<(), CodecError> {
        match codec {
            Codec::Raw => {
                out.extend_from_slice(self.as_bytes());
                Ok(())
            }
            other => other.encode_into(self, out),
        }
    }

    fn decode(bytes: &[u8], codec: Codec) -> Result<Self, CodecError> {
        match codec {
            Codec::Raw => Ok(String::from_utf8(bytes.to_vec())?),
            other => other.decode(bytes),
        }
    }
}

impl Record for serde_json::Value {}

/// A typed accessor for one field of a record, generated by `#[record]` as an associated
/// constant (`PageView::url`). It carries the field's name, so re-keying a stream by it can
/// name its repartition topic after the field.
///
/// ```
/// use rill_runtime::Field;
/// struct View { url: String }
/// const URL: Field<View, String> = { fn get(v: &View) -> &String { &v.url } Field::new("url", get) };
/// assert_eq!(URL.name(), "url");
/// assert_eq!(URL.get(&View { url: "/a".into() }), "/a");
/// ```
pub struct Field<R, T> {
    name: &'static str,
    get: fn(&R) -> &T,
}

impl<R, T> Field<R, T> {
    /// Builds an accessor (the macro does this).
    pub const fn new(name: &'static str, get: fn(&R) -> &T) -> Self {
        Field { name, get }
    }

    /// The field's name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// Reads the field.
    pub fn get<'r>(&self, record: &'r R) -> &'r T {
        (self.get)(record)
    }
}

impl<R, T> Clone for Field<R, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<R, T> Copy for Field<R, T> {}

impl<R, T> std::fmt::Debug for Field<R, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Field({})", self.name)
    }
}

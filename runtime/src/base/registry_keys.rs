//! Record keys in the Confluent wire format (`#[record(codec = "avro", key_codec = "avro")]`):
//! a key schema of a primitive type (`"string"`, `"int"`, `"long"`, `"bytes"` in Avro;
//! `{"type": "string"}` or `{"type": "integer"}` in JSON Schema), registered under
//! `<topic>-key`, and the key's payload in that format after the frame.
//!
//! Inside rill a key is always its plain bytes, as Java's serializers write them
//! ([`KeyBytes`]: UTF-8 text, big-endian integers, raw bytes); only on a topic whose record
//! declares a registry key is it framed, when sent, and unframed when a table reads it
//! (`base/schema.rs`: `frame_key`, `plain_key`). Partitions of such a topic follow the framed
//! bytes (Kafka's producers partition on the bytes they send), so rill places a plain key by
//! its framed form there too (`wire_key`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use crate::base::codec::KeyBytes;
use crate::base::error::CodecError;
use crate::base::schema::{RecordSchema, SchemaType, WriterSchemas};
use crate::base::wire;

/// The primitive type of a registry key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// Text (`String`): Avro `string`, JSON Schema `string`.
    String,
    /// A 32-bit integer (`i32`): Avro `int`, JSON Schema `integer`.
    Int,
    /// A 64-bit integer (`i64`): Avro `long`, JSON Schema `integer`.
    Long,
    /// Bytes (`Vec<u8>`): Avro `bytes` (JSON Schema has no bytes).
    Bytes,
}

impl KeyKind {
    /// The plain key `plain` as the JSON value a table key deserialises from (`None` for
    /// bytes, which stay bytes, and for plain bytes of the wrong size).
    pub(crate) fn json_of(self, plain: &[u8]) -> Option<serde_json::Value> {
        match self {
            KeyKind::String => Some(String::from_utf8_lossy(plain).into_owned().into()),
            KeyKind::Int | KeyKind::Long => integer(self, plain).ok().map(Into::into),
            KeyKind::Bytes => None,
        }
    }

    fn avro_name(self) -> &'static str {
        match self {
            KeyKind::String => "string",
            KeyKind::Int => "int",
            KeyKind::Long => "long",
            KeyKind::Bytes => "bytes",
        }
    }
}

/// A key type that can be a registry key: `#[record(key_codec = "avro")]` needs its key field
/// to be one.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a schema-registry key",
    note = "registry keys are `String`, `i32`, `i64` or `Vec<u8>` (Avro's primitive types); keep other keys plain (no `key_codec`)"
)]
pub trait RegistryKey: KeyBytes {
    /// Its primitive type.
    const KIND: KeyKind;
}

impl RegistryKey for String {
    const KIND: KeyKind = KeyKind::String;
}
impl RegistryKey for i32 {
    const KIND: KeyKind = KeyKind::Int;
}
impl RegistryKey for i64 {
    const KIND: KeyKind = KeyKind::Long;
}
impl RegistryKey for Vec<u8> {
    const KIND: KeyKind = KeyKind::Bytes;
}

/// The JSON Schema of text keys, as registered.
pub const JSON_STRING: &str =
    r#"{"$schema":"http://json-schema.org/draft-07/schema#","type":"string"}"#;
/// The JSON Schema of integer keys, as registered.
pub const JSON_INTEGER: &str =
    r#"{"$schema":"http://json-schema.org/draft-07/schema#","type":"integer"}"#;

/// A record's registry key: its format and primitive type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeySchema {
    /// Avro or JSON Schema (Protobuf keys are messages, which rill's keys are not).
    pub schema_type: SchemaType,
    /// The key field's type.
    pub kind: KeyKind,
}

impl KeySchema {
    /// A key of `kind` written as `schema_type`.
    pub const fn new(schema_type: SchemaType, kind: KeyKind) -> Self {
        KeySchema { schema_type, kind }
    }

    /// The key's schema as registered, built once per format and type.
    pub fn record_schema(self) -> &'static RecordSchema {
        use std::collections::HashMap;
        use std::sync::{Mutex, OnceLock};
        static SCHEMAS: OnceLock<Mutex<HashMap<KeySchema, &'static RecordSchema>>> =
            OnceLock::new();
        let mut schemas = SCHEMAS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        schemas.entry(self).or_insert_with(|| {
            let name = self.kind.avro_name();
            let schema = match (self.schema_type, self.kind) {
                // With `$schema`: registries tell JSON Schema from other JSON by it.
                (SchemaType::Json, KeyKind::String) => RecordSchema::json(name, JSON_STRING),
                (SchemaType::Json, _) => RecordSchema::json(name, JSON_INTEGER),
                _ => RecordSchema::avro(name, format!("\"{name}\"")),
            };
            Box::leak(Box::new(schema))
        })
    }

    /// Checks the format can carry the type: JSON has no bytes, Protobuf no primitive keys.
    pub fn check(self) -> Result<(), CodecError> {
        match (self.schema_type, self.kind) {
            (SchemaType::Json, KeyKind::Bytes) => Err(CodecError::Key(
                "a `Vec<u8>` key has no JSON Schema form; use key_codec = \"avro\"".to_owned(),
            )),
            (SchemaType::Protobuf, _) => Err(CodecError::Key(
                "Protobuf keys are messages, not primitive types; use key_codec = \"avro\" or \"json_schema\"".to_owned(),
            )),
            _ => Ok(()),
        }
    }

    /// Appends the payload of the plain key `plain` (after the frame, which the caller writes).
    pub(crate) fn encode(self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
        match (self.schema_type, self.kind) {
            (SchemaType::Json, KeyKind::String) => {
                serde_json::to_writer(out, std::str::from_utf8(plain).map_err(not_text)?)?;
            }
            (SchemaType::Json, kind) => serde_json::to_writer(out, &integer(kind, plain)?)?,
            (_, KeyKind::String | KeyKind::Bytes) => {
                wire::write_zigzag(plain.len() as i64, out);
                out.extend_from_slice(plain);
            }
            (_, kind) => wire::write_zigzag(integer(kind, plain)?, out),
        }
        Ok(())
    }

    /// The plain key of a payload written with `writer` (this schema's, or another id's
    /// primitive type), resolved into this key's type as Avro resolves: an `int` is read
    /// into a `long`, `string` and `bytes` into each other.
    pub(crate) fn decode(self, writer: Writer, payload: &[u8]) -> Result<Vec<u8>, CodecError> {
        let value = match writer {
            Writer::Avro(kind) => read_avro(kind, payload)?,
            Writer::Json => read_json(payload)?,
        };
        match (value, self.kind) {
            (KeyValue::Text(bytes), KeyKind::String) => {
                std::str::from_utf8(&bytes).map_err(not_text)?;
                Ok(bytes)
            }
            (KeyValue::Text(bytes), KeyKind::Bytes) => Ok(bytes),
            (KeyValue::Integer(n, _), KeyKind::Long) => Ok(n.to_be_bytes().to_vec()),
            (KeyValue::Integer(n, fits), KeyKind::Int) if fits => i32::try_from(n)
                .map(|n| n.to_be_bytes().to_vec())
                .map_err(|_| CodecError::Key(format!("{n} does not fit the `i32` key"))),
            (value, kind) => Err(CodecError::Key(format!(
                "a key written as {} cannot be read as {}",
                value.describe(),
                kind.avro_name()
            ))),
        }
    }
}

/// How the key of a frame was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Writer {
    /// Avro, of this primitive type.
    Avro(KeyKind),
    /// JSON (its value says which type).
    Json,
}

/// A key as written, before it is read into the key's type.
enum KeyValue {
    Text(Vec<u8>),
    /// An integer, and whether an `int` may hold it (Avro's `long` never resolves to `int`).
    Integer(i64, bool),
}

impl KeyValue {
    fn describe(&self) -> &'static str {
        match self {
            KeyValue::Text(_) => "text or bytes",
            KeyValue::Integer(_, true) => "an int",
            KeyValue::Integer(_, false) => "a long",
        }
    }
}

/// The Avro primitive type of a writer schema, if it is one a key can be.
pub(crate) fn avro_kind(schema: &crate::base::avro::Schema) -> Option<KeyKind> {
    use crate::base::avro::Schema;
    match schema {
        Schema::String => Some(KeyKind::String),
        Schema::Int => Some(KeyKind::Int),
        Schema::Long => Some(KeyKind::Long),
        Schema::Bytes => Some(KeyKind::Bytes),
        _ => None,
    }
}

fn read_avro(kind: KeyKind, payload: &[u8]) -> Result<KeyValue, CodecError> {
    let truncated = |_| CodecError::Key(format!("a truncated Avro {} key", kind.avro_name()));
    let (n, rest) = wire::read_zigzag(payload).map_err(truncated)?;
    let value = match kind {
        KeyKind::String | KeyKind::Bytes => {
            let len = usize::try_from(n)
                .ok()
                .filter(|&len| len == rest.len())
                .ok_or_else(|| {
                    CodecError::Key(format!(
                        "an Avro {} key of length {n} in {} bytes",
                        kind.avro_name(),
                        rest.len()
                    ))
                })?;
            return Ok(KeyValue::Text(rest[..len].to_vec()));
        }
        KeyKind::Int => KeyValue::Integer(n, true),
        KeyKind::Long => KeyValue::Integer(n, false),
    };
    if !rest.is_empty() {
        return Err(CodecError::Key(format!(
            "{} bytes after the Avro {} key",
            rest.len(),
            kind.avro_name()
        )));
    }
    Ok(value)
}

fn read_json(payload: &[u8]) -> Result<KeyValue, CodecError> {
    match serde_json::from_slice::<serde_json::Value>(payload)? {
        serde_json::Value::String(text) => Ok(KeyValue::Text(text.into_bytes())),
        serde_json::Value::Number(n) if n.is_i64() => {
            Ok(KeyValue::Integer(n.as_i64().unwrap_or_default(), true))
        }
        other => Err(CodecError::Key(format!(
            "a JSON key {other} is neither text nor an integer"
        ))),
    }
}

/// The integer of a plain `int` (4 bytes) or `long` (8 bytes) key.
fn integer(kind: KeyKind, plain: &[u8]) -> Result<i64, CodecError> {
    match (kind, plain.len()) {
        (KeyKind::Int, 4) => Ok(i64::from(i32::from_be_bytes(
            plain.try_into().unwrap_or_default(),
        ))),
        (KeyKind::Long, 8) => Ok(i64::from_be_bytes(plain.try_into().unwrap_or_default())),
        _ => Err(CodecError::Key(format!(
            "{} bytes are not a plain {} key ({} bytes, big-endian)",
            plain.len(),
            kind.avro_name(),
            if kind == KeyKind::Int { 4 } else { 8 }
        ))),
    }
}

fn not_text(e: std::str::Utf8Error) -> CodecError {
    CodecError::Key(format!("a string key that is not UTF-8 ({e})"))
}

/// A topic's registry key (`#[record(key_codec = "avro")]`) bound to `<topic>-key`.
pub(crate) struct KeyBinding {
    /// The key's format and type.
    pub(crate) schema: KeySchema,
    /// The id keys are written with (`None`: the topic is only read).
    pub(crate) id: Option<u32>,
    /// Writer schemas of the ids keys carry.
    pub(crate) writers: Arc<dyn WriterSchemas>,
}

fn key_bindings() -> &'static RwLock<HashMap<String, Arc<KeyBinding>>> {
    static BINDINGS: OnceLock<RwLock<HashMap<String, Arc<KeyBinding>>>> = OnceLock::new();
    BINDINGS.get_or_init(Default::default)
}

/// Whether any topic's keys are registry-coded: until one is, key lookups cost one load.
static KEYS_BOUND: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Binds `topic`'s keys (replacing an earlier binding, as [`bind`] does).
pub(crate) fn bind_key(topic: &str, binding: KeyBinding) {
    KEYS_BOUND.store(true, std::sync::atomic::Ordering::Release);
    key_bindings()
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(topic.to_owned(), Arc::new(binding));
}

/// `topic`'s key binding, if its keys are registry-coded.
pub(crate) fn key_binding(topic: &str) -> Option<Arc<KeyBinding>> {
    if !KEYS_BOUND.load(std::sync::atomic::Ordering::Acquire) {
        return None;
    }
    key_bindings()
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(topic)
        .cloned()
}

/// The key `topic` carries for the plain key `plain`: framed with the topic's key id when its
/// keys are registry-coded, else `plain` itself.
pub(crate) fn frame_key<'k>(
    topic: &str,
    plain: Cow<'k, [u8]>,
) -> Result<Cow<'k, [u8]>, CodecError> {
    let Some(binding) = key_binding(topic) else {
        return Ok(plain);
    };
    let id = binding.id.ok_or_else(|| {
        CodecError::Key(format!(
            "topic `{topic}`'s key schema is not registered (the worker only reads the topic); declare the topic as a sink or with `App::topic`"
        ))
    })?;
    let mut out = Vec::with_capacity(plain.len() + 6);
    wire::frame_into(id, &mut out);
    binding.schema.encode(&plain, &mut out)?;
    Ok(Cow::Owned(out))
}

/// The plain key of a key read from `topic`: unframed and read into the key's type when the
/// topic's keys are registry-coded (the frame's id, if not the topic's own, is asked of the
/// registry once), else the bytes as they are.
pub(crate) fn plain_key<'k>(topic: &str, key: &'k [u8]) -> Result<Cow<'k, [u8]>, CodecError> {
    let Some(binding) = key_binding(topic) else {
        return Ok(Cow::Borrowed(key));
    };
    let (id, payload) = wire::unframe(key)?;
    let writer = if binding.id == Some(id) {
        match binding.schema.schema_type {
            SchemaType::Json => Writer::Json,
            _ => Writer::Avro(binding.schema.kind),
        }
    } else {
        match binding.writers.schema_type(id)? {
            SchemaType::Json => Writer::Json,
            SchemaType::Avro => {
                let schema = binding.writers.avro(id)?;
                Writer::Avro(avro_kind(schema).ok_or_else(|| {
                    CodecError::Key(format!(
                        "schema id {id} of the key is not a primitive type ({})",
                        schema.canonical_form()
                    ))
                })?)
            }
            SchemaType::Protobuf => {
                return Err(CodecError::SchemaKind {
                    id,
                    found: "PROTOBUF",
                    expected: binding.schema.schema_type.as_str(),
                });
            }
        }
    };
    binding.schema.decode(writer, payload).map(Cow::Owned)
}

/// The bytes that place the plain key `plain` among `topic`'s partitions: its framed form when
/// the topic's keys are registry-coded (what a producer partitions on), else `plain`. A key the
/// key schema cannot carry is placed by its plain bytes (its send fails anyway).
pub(crate) fn wire_key<'k>(topic: &str, plain: &'k [u8]) -> Cow<'k, [u8]> {
    frame_key(topic, Cow::Borrowed(plain)).unwrap_or(Cow::Borrowed(plain))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(schema: KeySchema, plain: &[u8]) -> Vec<u8> {
        let mut payload = Vec::new();
        schema.encode(plain, &mut payload).unwrap();
        let writer = match schema.schema_type {
            SchemaType::Json => Writer::Json,
            _ => Writer::Avro(schema.kind),
        };
        assert_eq!(schema.decode(writer, &payload).unwrap(), plain);
        payload
    }

    #[test]
    fn keys_are_written_as_avro_and_json_write_them() {
        let avro = |kind| KeySchema::new(SchemaType::Avro, kind);
        let json = |kind| KeySchema::new(SchemaType::Json, kind);
        // Avro: a zigzag length then the text; integers zigzag varints.
        assert_eq!(round_trip(avro(KeyKind::String), b"u1"), [4, b'u', b'1']);
        assert_eq!(round_trip(avro(KeyKind::Long), &(-3i64).to_be_bytes()), [5]);
        assert_eq!(
            round_trip(avro(KeyKind::Int), &300i32.to_be_bytes()),
            [0xd8, 4]
        );
        assert_eq!(round_trip(avro(KeyKind::Bytes), &[0, 255]), [4, 0, 255]);
        assert_eq!(round_trip(json(KeyKind::String), b"u\"1"), br#""u\"1""#);
        assert_eq!(round_trip(json(KeyKind::Long), &7i64.to_be_bytes()), b"7");
        assert!(json(KeyKind::Bytes).check().is_err());
        assert_eq!(avro(KeyKind::Int).record_schema().text, "\"int\"");
        assert!(avro(KeyKind::Int).record_schema().parsed().is_ok());
    }

    #[test]
    fn other_writers_resolve_as_avro_does_and_bad_keys_are_named() {
        let long = KeySchema::new(SchemaType::Avro, KeyKind::Long);
        let int = KeySchema::new(SchemaType::Avro, KeyKind::Int);
        // An int writer is read into a long, not a long writer into an int.
        assert_eq!(
            long.decode(Writer::Avro(KeyKind::Int), &[5]).unwrap(),
            (-3i64).to_be_bytes()
        );
        let err = int.decode(Writer::Avro(KeyKind::Long), &[5]).unwrap_err();
        assert!(err.to_string().contains("a long"), "{err}");
        let text = KeySchema::new(SchemaType::Avro, KeyKind::String);
        assert_eq!(
            text.decode(Writer::Avro(KeyKind::Bytes), &[2, b'a'])
                .unwrap(),
            b"a"
        );
        assert!(
            text.decode(Writer::Avro(KeyKind::String), &[6, b'a'])
                .is_err()
        );
        assert!(
            text.decode(Writer::Avro(KeyKind::String), &[2, 0xff])
                .is_err()
        );
        assert!(long.encode(b"abc", &mut Vec::new()).is_err());
        assert_eq!(
            long.decode(Writer::Json, b"42").unwrap(),
            42i64.to_be_bytes()
        );
    }
}

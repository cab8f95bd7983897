//! Topics whose records are governed by a schema registry (`#[record(codec = "avro")]`): a
//! record type's own schema ([`RecordSchema`]), the binding of a topic to its registry subject
//! ([`Binding`]), and encoding and decoding in the Confluent wire format through it.
//!
//! Bindings are process-wide, by topic: the worker binds every registry-coded topic it declares
//! at start (registering or looking up the writer schema, `io/registry.rs`), so a send or a
//! read finds its topic's binding without a call to the registry. Writer schemas of other ids
//! come through the binding's [`WriterSchemas`] (cached per id; the registry is asked once per
//! id per process).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::base::avro::{self, Schema};
use crate::base::error::CodecError;
use crate::base::wire;

/// How a schema is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchemaType {
    /// Avro (the registry's default).
    Avro,
    /// Protocol Buffers.
    Protobuf,
    /// JSON Schema.
    Json,
}

impl SchemaType {
    /// The registry's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaType::Avro => "AVRO",
            SchemaType::Protobuf => "PROTOBUF",
            SchemaType::Json => "JSON",
        }
    }

    /// From the registry's `schemaType` (absent: Avro).
    pub fn parse(name: Option<&str>) -> SchemaType {
        match name {
            Some("PROTOBUF") => SchemaType::Protobuf,
            Some("JSON") => SchemaType::Json,
            _ => SchemaType::Avro,
        }
    }
}

/// How a topic's subject is named (Confluent's `subject.name.strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubjectStrategy {
    /// `<topic>-value` (the default): one record type per topic.
    #[default]
    Topic,
    /// `<record full name>`: a record type shared by topics, evolving once.
    Record,
    /// `<topic>-<record full name>`: several record types in one topic.
    TopicRecord,
}

impl SubjectStrategy {
    /// Parses `topic`, `record` or `topic-record`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "topic" => Some(SubjectStrategy::Topic),
            "record" => Some(SubjectStrategy::Record),
            "topic-record" => Some(SubjectStrategy::TopicRecord),
            _ => None,
        }
    }

    /// The subject of `topic`'s values of the record named `record`.
    pub fn subject(self, topic: &str, record: &str) -> String {
        match self {
            SubjectStrategy::Topic => format!("{topic}-value"),
            SubjectStrategy::Record => record.to_owned(),
            SubjectStrategy::TopicRecord => format!("{topic}-{record}"),
        }
    }
}

/// A record type's schema: derived from the struct (`#[record(codec = "avro")]`) or read from
/// a file (`schema = "schemas/pageview.avsc"`). Parsed once; a schema that does not parse is
/// reported when the worker starts, naming the type.
pub struct RecordSchema {
    /// How it is written.
    pub schema_type: SchemaType,
    /// The Rust type it belongs to.
    pub rust_type: &'static str,
    /// The schema text, as registered.
    pub text: String,
    parsed: Result<Schema, String>,
    /// The schema's record is named like the Rust type: apache-avro deserialises such a type
    /// straight from the bytes (it checks the names), others go through its `Value`.
    direct: bool,
    writer: OnceLock<Result<avro::Writer, String>>,
    reader: OnceLock<Result<avro::Reader, String>>,
    /// A Protocol Buffers record: the path of its message in the `.proto` (top-level
    /// messages only: `[index]`); `None` when no top-level message is named like the type.
    message_index: Option<i32>,
}

impl RecordSchema {
    /// An Avro schema of `rust_type` from its JSON text.
    pub fn avro(rust_type: &'static str, text: impl Into<String>) -> Self {
        let text = text.into();
        let parsed = avro::parse(&text).map_err(|e| e.to_string());
        let short = rust_type.rsplit("::").next().unwrap_or_default();
        let direct = matches!(&parsed, Ok(Schema::Record(r)) if r.name.name() == short);
        RecordSchema {
            schema_type: SchemaType::Avro,
            rust_type,
            text,
            parsed,
            direct,
            writer: OnceLock::new(),
            reader: OnceLock::new(),
            message_index: Some(0),
        }
    }

    /// A Protocol Buffers record `rust_type` described by the `.proto` text `text`: its
    /// message is the top-level one named like the type (none is an error at start).
    pub fn protobuf(rust_type: &'static str, text: impl Into<String>) -> Self {
        let text = text.into();
        let short = rust_type.rsplit("::").next().unwrap_or_default();
        let index = proto_messages(&text)
            .iter()
            .position(|m| m == short)
            .and_then(|i| i32::try_from(i).ok());
        RecordSchema {
            schema_type: SchemaType::Protobuf,
            parsed: Err("a .proto is not an Avro schema".to_owned()),
            message_index: index,
            ..RecordSchema::avro(rust_type, text)
        }
    }

    /// The writer of this schema, built at first use.
    fn writer(&'static self) -> Result<&'static avro::Writer, CodecError> {
        let schema = self.parsed()?;
        self.writer
            .get_or_init(|| avro::Writer::new(schema).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| CodecError::Avro(e.clone()))
    }

    /// The reader of records written with this very schema, built at first use.
    fn own_reader(&'static self) -> Result<&'static avro::Reader, CodecError> {
        let schema = self.parsed()?;
        self.reader
            .get_or_init(|| avro::Reader::new(schema, None, self.direct).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| CodecError::Avro(e.clone()))
    }

    /// A JSON Schema of `rust_type` from its text.
    pub fn json(rust_type: &'static str, text: impl Into<String>) -> Self {
        RecordSchema {
            schema_type: SchemaType::Json,
            parsed: Err("a JSON Schema is not an Avro schema".to_owned()),
            ..RecordSchema::avro(rust_type, text)
        }
    }

    /// A JSON Schema of `rust_type` built from its Avro schema (what `#[record(codec =
    /// "json_schema")]` derives: the same field types, as JSON carries them).
    pub fn json_of_avro(rust_type: &'static str, avro: &str) -> Self {
        let text = serde_json::from_str(avro)
            .map(|a| json_schema_of_avro(&a).to_string())
            .unwrap_or_else(|_| avro.to_owned());
        RecordSchema::json(rust_type, text)
    }

    /// Checks the schema parses (Avro) or is JSON (JSON Schema), naming the type if not.
    pub fn check(&self) -> Result<(), CodecError> {
        match self.schema_type {
            SchemaType::Avro => self.parsed().map(|_| ()),
            SchemaType::Protobuf if self.message_index.is_none() => {
                Err(CodecError::Protobuf(format!(
                    "the .proto of `{}` has no top-level message named like it (it has {:?}); name the struct after its message",
                    self.rust_type,
                    proto_messages(&self.text)
                )))
            }
            SchemaType::Protobuf => Ok(()),
            SchemaType::Json => serde_json::from_str::<serde_json::Value>(&self.text)
                .map(|_| ())
                .map_err(|e| {
                    CodecError::Avro(format!(
                        "the schema of `{}` is not JSON: {e}",
                        self.rust_type
                    ))
                }),
        }
    }

    /// The parsed schema, or why it does not parse.
    pub fn parsed(&self) -> Result<&Schema, CodecError> {
        self.parsed.as_ref().map_err(|e| {
            CodecError::Avro(format!(
                "the schema of `{}` does not parse: {e}",
                self.rust_type
            ))
        })
    }

    /// The record's full name, what the record naming strategies use: Avro's
    /// `namespace.Name`, a JSON Schema's `title` (as Confluent's serializer takes it).
    pub fn full_name(&self) -> String {
        let short = || {
            self.rust_type
                .rsplit("::")
                .next()
                .unwrap_or_default()
                .to_owned()
        };
        match (&self.parsed, self.schema_type) {
            (Ok(Schema::Record(record)), _) => record.name.fullname(None),
            (_, SchemaType::Json) => serde_json::from_str::<serde_json::Value>(&self.text)
                .ok()
                .and_then(|v| v["title"].as_str().map(str::to_owned))
                .unwrap_or_else(short),
            (_, SchemaType::Protobuf) => {
                let message = self
                    .message_index
                    .and_then(|i| {
                        proto_messages(&self.text)
                            .into_iter()
                            .nth(usize::try_from(i).ok()?)
                    })
                    .unwrap_or_else(short);
                match proto_package(&self.text) {
                    Some(package) => format!("{package}.{message}"),
                    None => message,
                }
            }
            _ => short(),
        }
    }
}

/// Writer schemas by id: the registry, cached. A miss blocks the caller until the registry
/// answers (it is retried while the registry is unreachable); an id the registry does not
/// know is [`CodecError::UnknownSchema`].
pub trait WriterSchemas: Send + Sync {
    /// The Avro schema with global id `id` (kept for the process's life: one per schema id
    /// met).
    fn avro(&self, id: u32) -> Result<&'static Schema, CodecError>;

    /// How the schema with global id `id` is written.
    fn schema_type(&self, id: u32) -> Result<SchemaType, CodecError>;
}

/// The reader of records written with `writer` into `reader`'s type, built once per pair and
/// kept (one per schema version met and record type): the type's own reader when the writer's
/// schema is the type's under another id (a repartition topic's records, another subject's).
fn resolving_reader(
    writer: &'static Schema,
    record: &'static RecordSchema,
) -> Result<&'static avro::Reader, CodecError> {
    let reader = record.parsed()?;
    type Readers = RwLock<HashMap<(usize, usize), &'static avro::Reader>>;
    static READERS: OnceLock<Readers> = OnceLock::new();
    let readers = READERS.get_or_init(Default::default);
    let key = (
        std::ptr::from_ref(writer) as usize,
        std::ptr::from_ref(reader) as usize,
    );
    if let Some(found) = readers.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(found);
    }
    let built: &'static avro::Reader = if writer.canonical_form() == reader.canonical_form() {
        record.own_reader()?
    } else {
        Box::leak(Box::new(avro::Reader::new(writer, Some(reader), false)?))
    };
    Ok(*readers
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_insert(built))
}

/// A topic bound to its registry subject.
pub struct Binding {
    /// The subject the topic's values are registered under.
    pub subject: String,
    /// The id records are written with (`None`: the topic is only read).
    pub id: Option<u32>,
    /// Writer schemas of the ids records carry.
    pub writers: Arc<dyn WriterSchemas>,
}

fn bindings() -> &'static RwLock<HashMap<String, Arc<Binding>>> {
    static BINDINGS: OnceLock<RwLock<HashMap<String, Arc<Binding>>>> = OnceLock::new();
    BINDINGS.get_or_init(Default::default)
}

/// The writer schemas of the latest binding: what a topic read without a binding of its own
/// (a global table's) resolves ids with.
fn default_writers() -> &'static RwLock<Option<Arc<dyn WriterSchemas>>> {
    static DEFAULT: RwLock<Option<Arc<dyn WriterSchemas>>> = RwLock::new(None);
    &DEFAULT
}

/// Binds `topic` (replacing an earlier binding: a restarted worker may register anew).
pub(crate) fn bind(topic: &str, binding: Binding) {
    *default_writers().write().unwrap_or_else(|p| p.into_inner()) = Some(binding.writers.clone());
    bindings()
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(topic.to_owned(), Arc::new(binding));
}

/// `topic`'s binding, if it has one.
pub fn binding(topic: &str) -> Option<Arc<Binding>> {
    bindings()
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(topic)
        .cloned()
}

fn unbound(topic: &str) -> CodecError {
    CodecError::Unbound {
        topic: topic.to_owned(),
    }
}

/// The id `topic`'s records are written with.
fn write_id(topic: &str) -> Result<u32, CodecError> {
    binding(topic)
        .and_then(|b| b.id)
        .ok_or_else(|| unbound(topic))
}

/// Who wrote a record of a topic, by its frame's id.
enum WrittenWith {
    /// The topic's own schema (its binding's id).
    Own,
    /// Another schema: these resolve the id.
    Other(Arc<dyn WriterSchemas>),
}

/// Whether `id` is `topic`'s own schema; otherwise the topic's writer schemas (a topic read
/// without a binding of its own, a global table's, uses the latest binding's).
fn written_with(topic: &str, id: u32) -> Result<WrittenWith, CodecError> {
    match binding(topic) {
        Some(binding) if binding.id == Some(id) => Ok(WrittenWith::Own),
        Some(binding) => Ok(WrittenWith::Other(binding.writers.clone())),
        None => default_writers()
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .map(WrittenWith::Other)
            .ok_or_else(|| unbound(topic)),
    }
}

/// Checks a record of `topic` framed with `id` was written with a schema of `kind` (the
/// formats whose payload does not depend on the writer's schema).
fn expect_kind(topic: &str, id: u32, kind: SchemaType) -> Result<(), CodecError> {
    if let WrittenWith::Other(writers) = written_with(topic, id)? {
        let found = writers.schema_type(id)?;
        if found != kind {
            return Err(CodecError::SchemaKind {
                id,
                found: found.as_str(),
                expected: kind.as_str(),
            });
        }
    }
    Ok(())
}

/// Appends `value` framed for `topic`: the schema id of the topic's binding, then the Avro
/// binary of `value` under `schema` (the value type's own).
pub fn encode_avro<T: Serialize>(
    topic: &str,
    schema: &'static RecordSchema,
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    wire::frame_into(write_id(topic)?, out);
    schema.writer()?.write(value, out)
}

/// The top-level message names of a `.proto`, in order (nested messages are inside braces).
fn proto_messages(text: &str) -> Vec<String> {
    let mut depth = 0usize;
    let mut names = Vec::new();
    let mut words = proto_tokens(text).into_iter().peekable();
    while let Some(word) = words.next() {
        match word.as_str() {
            "{" => depth += 1,
            "}" => depth = depth.saturating_sub(1),
            "message" if depth == 0 => {
                if let Some(name) = words.peek() {
                    names.push(name.clone());
                }
            }
            _ => {}
        }
    }
    names
}

/// The `package` of a `.proto`, if it declares one (at the top level).
fn proto_package(text: &str) -> Option<String> {
    let mut depth = 0usize;
    let mut tokens = proto_tokens(text).into_iter();
    while let Some(token) = tokens.next() {
        match token.as_str() {
            "{" => depth += 1,
            "}" => depth = depth.saturating_sub(1),
            "package" if depth == 0 => return tokens.next().filter(|p| p != "="),
            _ => {}
        }
    }
    None
}

/// A `.proto`'s words and braces, comments (`//` and `/* */`) dropped.
fn proto_tokens(text: &str) -> Vec<String> {
    let mut uncommented = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("/*") {
        uncommented.push_str(&rest[..at]);
        rest = rest[at + 2..]
            .find("*/")
            .map_or("", |end| &rest[at + 2 + end + 2..]);
    }
    uncommented.push_str(rest);
    let uncommented: String = uncommented
        .lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    uncommented
        .replace('{', " { ")
        .replace('}', " } ")
        .replace(';', " ; ")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Appends the frame of a Protocol Buffers record of `topic`: the id of the topic's binding
/// and the message indexes of `schema`'s message; the message goes after it.
pub fn frame_message(
    topic: &str,
    schema: &RecordSchema,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    wire::frame_into(write_id(topic)?, out);
    wire::write_message_indexes(&[schema.message_index.unwrap_or(0)], out);
    Ok(())
}

/// The message of a framed Protocol Buffers record of `topic`: the frame's id must be a
/// Protocol Buffers schema the registry knows (asked once per id). Protocol Buffers evolves
/// by itself: fields the struct lacks are skipped, fields the writer lacked take their
/// defaults.
pub fn unframe_message<'b>(
    topic: &str,
    schema: &RecordSchema,
    bytes: &'b [u8],
) -> Result<&'b [u8], CodecError> {
    let (id, rest) = wire::unframe(bytes)?;
    let (indexes, message) = wire::read_message_indexes(rest)?;
    if let WrittenWith::Own = written_with(topic, id)? {
        // The topic's own file: the indexes must name the type's message.
        let own = [schema.message_index.unwrap_or(0)];
        if indexes != own {
            return Err(CodecError::Protobuf(format!(
                "the frame names message {indexes:?} of schema id {id}, not {own:?} (`{}`)",
                schema.rust_type
            )));
        }
        return Ok(message);
    }
    expect_kind(topic, id, SchemaType::Protobuf)?;
    Ok(message)
}

/// Appends `value` framed for `topic` as JSON (the JSON Schema codec).
pub fn encode_json<T: Serialize>(
    topic: &str,
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    wire::frame_into(write_id(topic)?, out);
    Ok(serde_json::to_writer(out, value)?)
}

/// Decodes a framed JSON record of `topic` into `T`. The frame's id must be a JSON Schema
/// the registry knows (asked once per id); the JSON is read into `T` by serde (fields `T`
/// lacks are skipped, `Option` fields may be absent), not validated against the schema.
pub fn decode_json<T: DeserializeOwned>(topic: &str, bytes: &[u8]) -> Result<T, CodecError> {
    let (id, payload) = wire::unframe(bytes)?;
    expect_kind(topic, id, SchemaType::Json)?;
    Ok(serde_json::from_slice(payload)?)
}

/// A JSON Schema (draft 7) for the values an Avro schema describes, as serde writes them in
/// JSON: records are objects with their fields required (unions with null optional), longs
/// and ints integers, floats and doubles numbers, arrays and maps arrays and objects.
pub fn json_schema_of_avro(avro: &serde_json::Value) -> serde_json::Value {
    let mut top = json_type(avro);
    if let Some(object) = top.as_object_mut() {
        object.insert(
            "$schema".into(),
            "http://json-schema.org/draft-07/schema#".into(),
        );
    }
    top
}

fn json_type(avro: &serde_json::Value) -> serde_json::Value {
    use serde_json::{Value, json};
    match avro {
        Value::String(name) => match name.as_str() {
            "null" => json!({"type": "null"}),
            "boolean" => json!({"type": "boolean"}),
            "int" | "long" => json!({"type": "integer"}),
            "float" | "double" => json!({"type": "number"}),
            "string" => json!({"type": "string"}),
            "bytes" => json!({"type": "array", "items": {"type": "integer"}}),
            // A named type defined earlier in the schema.
            _ => json!({}),
        },
        Value::Array(branches) => {
            json!({"oneOf": branches.iter().map(json_type).collect::<Vec<_>>()})
        }
        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
            Some("record") => json_object(o),
            Some("array") => json!({"type": "array", "items": json_type(&o["items"])}),
            Some("map") => {
                json!({"type": "object", "additionalProperties": json_type(&o["values"])})
            }
            Some(_) => json_type(&o["type"]),
            None => json!({}),
        },
        _ => json!({}),
    }
}

/// An Avro record as a JSON object: its fields required unless a union with null.
fn json_object(record: &serde_json::Map<String, serde_json::Value>) -> serde_json::Value {
    use serde_json::Value;
    let mut properties = serde_json::Map::new();
    let mut required = Vec::new();
    for field in record
        .get("fields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = field["name"].as_str().unwrap_or_default().to_owned();
        let optional = field["type"]
            .as_array()
            .is_some_and(|b| b.iter().any(|t| t == "null"));
        if !optional {
            required.push(Value::String(name.clone()));
        }
        properties.insert(name, json_type(&field["type"]));
    }
    serde_json::json!({
        "title": record.get("name").cloned().unwrap_or(Value::Null),
        "type": "object",
        "properties": properties,
        "required": required,
        // Closed, as Confluent's Java serializer derives them: under a closed model, adding
        // an optional field is a BACKWARD-compatible change; under an open one it is not.
        "additionalProperties": false,
    })
}

/// Decodes a framed Avro record of `topic` into `T`, whose schema is `reader`: the writer's
/// schema comes by the frame's id, and Avro's resolution fills what the two differ in.
pub fn decode_avro<T: DeserializeOwned>(
    topic: &str,
    reader: &'static RecordSchema,
    bytes: &[u8],
) -> Result<T, CodecError> {
    let (id, payload) = wire::unframe(bytes)?;
    let writers = match written_with(topic, id)? {
        WrittenWith::Own => return reader.own_reader()?.read(payload),
        WrittenWith::Other(writers) => writers,
    };
    let writer = writers.avro(id)?;
    resolving_reader(writer, reader)?.read(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_follow_the_naming_strategies() {
        assert_eq!(
            SubjectStrategy::Topic.subject("views", "a.View"),
            "views-value"
        );
        assert_eq!(SubjectStrategy::Record.subject("views", "a.View"), "a.View");
        assert_eq!(
            SubjectStrategy::TopicRecord.subject("views", "a.View"),
            "views-a.View"
        );
        assert_eq!(
            SubjectStrategy::from_name("topic-record"),
            Some(SubjectStrategy::TopicRecord)
        );
        assert_eq!(SubjectStrategy::from_name("topics"), None);
    }

    #[test]
    fn a_record_schema_knows_its_full_name_and_reports_a_bad_schema() {
        let good = RecordSchema::avro(
            "x::View",
            r#"{"type":"record","name":"View","namespace":"shop","fields":[{"name":"url","type":"string"}]}"#,
        );
        assert_eq!(good.full_name(), "shop.View");
        let bad = RecordSchema::avro("x::Broken", r#"{"type":"record"}"#);
        let err = bad.parsed().unwrap_err().to_string();
        assert!(err.contains("x::Broken"), "{err}");
    }

    #[test]
    fn a_json_schema_follows_the_avro_schema_of_the_struct() {
        let avro = serde_json::json!({"type": "record", "name": "View", "namespace": "shop", "fields": [
            {"name": "url", "type": "string"},
            {"name": "n", "type": "long"},
            {"name": "ref", "type": ["null", "string"], "default": null},
            {"name": "tags", "type": {"type": "array", "items": "string"}},
        ]});
        let json = json_schema_of_avro(&avro);
        assert_eq!(json["title"], "View");
        assert_eq!(json["type"], "object");
        assert_eq!(json["properties"]["n"]["type"], "integer");
        assert_eq!(json["properties"]["tags"]["items"]["type"], "string");
        assert_eq!(json["required"], serde_json::json!(["url", "n", "tags"]));
        let schema = RecordSchema::json_of_avro("x::View", &avro.to_string());
        assert_eq!(schema.full_name(), "View");
        schema.check().unwrap();
    }

    #[test]
    fn a_proto_names_its_messages_and_package() {
        let proto = "syntax = \"proto3\";\npackage shop.v1; // the shop\n/* message Draft { } */\nmessage Order {\n  string id = 1;\n  message Line { string sku = 1; }\n  repeated Line lines = 2;\n}\nmessage Refund { string id = 1; }\n";
        assert_eq!(proto_messages(proto), ["Order", "Refund"]);
        assert_eq!(proto_package(proto).as_deref(), Some("shop.v1"));
        let refund = RecordSchema::protobuf("x::Refund", proto);
        assert_eq!(refund.message_index, Some(1));
        assert_eq!(refund.full_name(), "shop.v1.Refund");
        refund.check().unwrap();
        let err = RecordSchema::protobuf("x::Shipment", proto)
            .check()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Order") && err.contains("x::Shipment"),
            "{err}"
        );
    }

    #[test]
    fn an_unbound_topic_is_an_error_naming_it() {
        let schema: &'static RecordSchema = Box::leak(Box::new(RecordSchema::avro(
            "x::N",
            r#"{"type":"record","name":"N","fields":[]}"#,
        )));
        let err = encode_avro("never-bound", schema, &(), &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("never-bound"), "{err}");
    }
}

//! Avro binary encoding of serde records against a schema, and decoding with schema resolution
//! (a record written with an older or newer schema read into the current one: fields the reader
//! lacks are skipped, fields the writer lacks take the reader's defaults), through the Apache
//! project's `apache-avro` crate. The schema-registry codecs frame these bytes
//! ([`crate::base::wire`]).

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use apache_avro::Schema;

use crate::base::error::CodecError;

fn avro(e: impl std::fmt::Display) -> CodecError {
    CodecError::Avro(e.to_string())
}

/// Caps what one decoded value may allocate at `bytes` (a record's payload can be no longer
/// than `Config::max_record_bytes`, so a length prefix beyond it is corrupt): apache-avro would
/// otherwise allocate up to 512 MiB for a string whose prefix says so. The first call in a
/// process sets it.
pub fn limit_allocations(bytes: usize) {
    apache_avro::util::max_allocation_bytes(bytes);
}

/// Parses an Avro schema (JSON text).
pub fn parse(schema: &str) -> Result<Schema, CodecError> {
    Schema::parse_str(schema).map_err(avro)
}

/// The schema in its canonical form (what a registry compares and stores).
pub fn canonical(schema: &Schema) -> String {
    schema.canonical_form()
}

/// `value` as Avro binary under `schema` (no container header, no frame).
pub fn encode<T: Serialize>(schema: &Schema, value: &T) -> Result<Vec<u8>, CodecError> {
    apache_avro::writer::datum::GenericDatumWriter::builder(schema)
        .build()
        .map_err(avro)?
        .write_ser_to_vec(value)
        .map_err(avro)
}

/// A writer of one schema, built once (resolving the schema's names is most of the cost of
/// building one per record).
pub struct Writer(apache_avro::writer::datum::GenericDatumWriter<'static>);

/// A reader from one writer schema into one reader schema, built once.
pub struct Reader {
    datum: apache_avro::reader::datum::GenericDatumReader<'static>,
    /// Reader and writer are the same schema, whose record is named like the Rust type:
    /// serde reads the bytes directly (apache-avro 0.22 resolves only through its `Value`).
    direct: bool,
}

impl Writer {
    /// A writer of `schema`.
    pub fn new(schema: &'static Schema) -> Result<Self, CodecError> {
        apache_avro::writer::datum::GenericDatumWriter::builder(schema)
            .build()
            .map(Writer)
            .map_err(avro)
    }

    /// Appends `value`'s Avro binary to `out` (on an error, `out` may hold part of it).
    pub fn write<T: Serialize>(&self, value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        self.0.write_ser(out, value).map(|_| ()).map_err(avro)
    }
}

impl Reader {
    /// A reader of records written with `writer` into `reader` (`None`: the writer's own);
    /// `direct` when serde may read the bytes straight (see [`Reader`]).
    pub fn new(
        writer: &'static Schema,
        reader: Option<&'static Schema>,
        direct: bool,
    ) -> Result<Self, CodecError> {
        let datum = apache_avro::reader::datum::GenericDatumReader::builder(writer)
            .maybe_reader_schema(reader)
            .build()
            .map_err(avro)?;
        Ok(Reader {
            datum,
            direct: direct && reader.is_none(),
        })
    }

    /// Decodes one record's Avro binary.
    pub fn read<T: DeserializeOwned>(&self, mut bytes: &[u8]) -> Result<T, CodecError> {
        if self.direct {
            return self.datum.read_deser(&mut bytes).map_err(avro);
        }
        let value = self.datum.read_value(&mut bytes).map_err(avro)?;
        apache_avro::from_value(&value).map_err(avro)
    }
}

/// Decodes Avro binary written with `writer` into `T`, whose schema is `reader` (the same
/// schema, or one the writer's resolves to under Avro's rules).
pub fn decode<T: DeserializeOwned>(
    writer: &Schema,
    reader: &Schema,
    mut bytes: &[u8],
) -> Result<T, CodecError> {
    let datum = apache_avro::reader::datum::GenericDatumReader::builder(writer)
        .reader_schema(reader)
        .build()
        .map_err(avro)?;
    // Through a `Value`: apache-avro 0.22's direct deserialisation does not resolve schemas.
    let value = datum.read_value(&mut bytes).map_err(avro)?;
    apache_avro::from_value(&value).map_err(avro)
}

/// A Rust type's Avro schema: `#[derive(AvroSchema)]` on a struct (a record named after it, in
/// the namespace of its module path), and these impls: `bool` (boolean), `i8`..`i32`, `u8`,
/// `u16` (int), `i64`, `u32` (long), `f32` (float), `f64` (double), `String`, `char`
/// (string), `Option<T>` (a union with null, default null), `Vec<T>` (array), `HashMap` and
/// `BTreeMap` with `String` keys (map), `()` (null). The schema matches how serde writes the
/// value, which is what [`encode`] writes. `u64` and `usize` have none: they do not fit Avro's
/// long (apache-avro writes them as an 8-byte fixed no other language reads as a number).
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no Avro schema",
    note = "Avro types: boolean (bool), int (i8, i16, i32, u8, u16), long (i64, u32), float (f32), double (f64), string (String, char), Option, Vec, maps with String keys, and structs with `#[derive(AvroSchema)]`; use i64 for u64 and usize"
)]
pub trait AvroSchema {
    /// The type's schema as JSON. A record already in `named` (by full name) is referred to
    /// by its name: Avro defines each name once per schema.
    fn avro_type(named: &mut std::collections::HashSet<String>) -> serde_json::Value;

    /// The schema's JSON text.
    fn avro_schema_json() -> String {
        Self::avro_type(&mut std::collections::HashSet::new()).to_string()
    }

    /// The schema, parsed (and so checked).
    fn avro_schema() -> Result<Schema, CodecError> {
        parse(&Self::avro_schema_json())
    }
}

macro_rules! primitive {
    ($avro:literal: $($t:ty),*) => {$(
        impl AvroSchema for $t {
            fn avro_type(_: &mut std::collections::HashSet<String>) -> serde_json::Value {
                serde_json::Value::String($avro.to_owned())
            }
        }
    )*};
}

primitive!("boolean": bool);
primitive!("int": i8, i16, i32, u8, u16);
primitive!("long": i64, u32);
primitive!("float": f32);
primitive!("double": f64);
primitive!("string": String, char);
primitive!("null": ());

impl<T: AvroSchema> AvroSchema for Option<T> {
    fn avro_type(named: &mut std::collections::HashSet<String>) -> serde_json::Value {
        serde_json::json!(["null", T::avro_type(named)])
    }
}

impl<T: AvroSchema> AvroSchema for Vec<T> {
    fn avro_type(named: &mut std::collections::HashSet<String>) -> serde_json::Value {
        serde_json::json!({ "type": "array", "items": T::avro_type(named) })
    }
}

impl<T: AvroSchema, S> AvroSchema for std::collections::HashMap<String, T, S> {
    fn avro_type(named: &mut std::collections::HashSet<String>) -> serde_json::Value {
        serde_json::json!({ "type": "map", "values": T::avro_type(named) })
    }
}

impl<T: AvroSchema> AvroSchema for std::collections::BTreeMap<String, T> {
    fn avro_type(named: &mut std::collections::HashSet<String>) -> serde_json::Value {
        serde_json::json!({ "type": "map", "values": T::avro_type(named) })
    }
}

/// The record schema `#[derive(AvroSchema)]` generates: `name` in the namespace of
/// `module_path` (`::` become `.`), or its name when `named` has it already.
#[doc(hidden)]
pub fn record_type(
    named: &mut std::collections::HashSet<String>,
    module_path: &str,
    name: &str,
    fields: impl FnOnce(&mut std::collections::HashSet<String>) -> Vec<serde_json::Value>,
) -> serde_json::Value {
    let namespace = module_path.replace("::", ".");
    let full = format!("{namespace}.{name}");
    if !named.insert(full.clone()) {
        return serde_json::Value::String(full);
    }
    serde_json::json!({
        "type": "record",
        "name": name,
        "namespace": namespace,
        "fields": fields(named),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct V1 {
        id: i64,
        name: String,
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct V2 {
        id: i64,
        name: String,
        tier: String,
    }

    const V1_SCHEMA: &str = r#"{"type":"record","name":"Customer","fields":[
        {"name":"id","type":"long"},{"name":"name","type":"string"}]}"#;
    const V2_SCHEMA: &str = r#"{"type":"record","name":"Customer","fields":[
        {"name":"id","type":"long"},{"name":"name","type":"string"},
        {"name":"tier","type":"string","default":"basic"}]}"#;

    #[test]
    fn primitive_and_container_types_map_to_avro() {
        let mut named = std::collections::HashSet::new();
        assert_eq!(u32::avro_type(&mut named), "long");
        assert_eq!(
            Option::<Vec<String>>::avro_type(&mut named),
            serde_json::json!(["null", { "type": "array", "items": "string" }])
        );
        let map = std::collections::HashMap::<String, f64>::avro_type(&mut named);
        assert_eq!(
            map,
            serde_json::json!({ "type": "map", "values": "double" })
        );
        let first = record_type(&mut named, "app::model", "Point", |_| vec![]);
        assert_eq!(first["namespace"], "app.model");
        assert_eq!(
            record_type(&mut named, "app::model", "Point", |_| vec![]),
            "app.model.Point",
            "a name is defined once, then referred to"
        );
    }

    #[test]
    fn records_round_trip_and_resolve_between_older_and_newer_schemas() {
        let (v1, v2) = (parse(V1_SCHEMA).unwrap(), parse(V2_SCHEMA).unwrap());
        let old = V1 {
            id: 7,
            name: "Ann".into(),
        };
        let bytes = encode(&v1, &old).unwrap();
        assert_eq!(
            bytes,
            [14, 6, b'A', b'n', b'n'],
            "zigzag long, then a length-prefixed string"
        );
        assert_eq!(decode::<V1>(&v1, &v1, &bytes).unwrap(), old);
        // Backward: a new reader fills the field the old writer lacked with its default.
        let upgraded: V2 = decode(&v1, &v2, &bytes).unwrap();
        assert_eq!(upgraded.tier, "basic");
        // Forward: an old reader skips the field it does not know.
        let new = V2 {
            id: 8,
            name: "Bob".into(),
            tier: "gold".into(),
        };
        let newer = encode(&v2, &new).unwrap();
        let read: V1 = decode(&v2, &v1, &newer).unwrap();
        assert_eq!(
            read,
            V1 {
                id: 8,
                name: "Bob".into()
            }
        );
        // A value that does not fit its schema is an error, not a panic.
        assert!(encode(&v1, &serde_json::json!({ "id": "seven" })).is_err());
        assert!(decode::<V1>(&v1, &v1, &bytes[..2]).is_err());
    }
}

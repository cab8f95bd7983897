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

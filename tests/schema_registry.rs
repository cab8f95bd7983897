//! The schema-registry groundwork against a real registry (Apicurio Registry, started by
//! `scripts/test.sh`): the client registers, looks up by id and checks compatibility; Avro
//! records framed in the Confluent wire format by rill are read by Confluent's own Python
//! deserializer and the other way round; a record written with an older schema is read into a
//! newer struct; an unreachable registry is an error naming the setting; `#[derive(AvroSchema)]`
//! gives a struct's schema, which the registry accepts and Confluent's client reads.

mod common;

use std::time::Duration;

use common::registry::{crosscheck, registry_url};
use rill::AvroSchema;
use rill::schema_registry::{SchemaRegistry, SchemaType, avro, frame, unframe};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct CustomerV1 {
    id: i64,
    name: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct CustomerV2 {
    id: i64,
    name: String,
    tier: String,
}

const V1: &str = r#"{"type":"record","name":"Customer","namespace":"rill.test","fields":[{"name":"id","type":"long"},{"name":"name","type":"string"}]}"#;
const V2: &str = r#"{"type":"record","name":"Customer","namespace":"rill.test","fields":[{"name":"id","type":"long"},{"name":"name","type":"string"},{"name":"tier","type":"string","default":"basic"}]}"#;
/// Not backward compatible with V1: a new field without a default.
const V2_REQUIRED: &str = r#"{"type":"record","name":"Customer","namespace":"rill.test","fields":[{"name":"id","type":"long"},{"name":"name","type":"string"},{"name":"tier","type":"string"}]}"#;

#[tokio::test]
async fn the_client_registers_looks_up_by_id_and_applies_the_compatibility_rule() -> rill::Result<()>
{
    let Some(url) = registry_url() else {
        return Ok(());
    };
    let subject = format!("sr_{}-value", common::run_id());
    let registry = SchemaRegistry::new(&url)?;
    let id = registry.register(&subject, SchemaType::Avro, V1).await?;
    assert_eq!(
        registry.register(&subject, SchemaType::Avro, V1).await?,
        id,
        "registering the same schema again gives its id"
    );
    // A fresh client (empty cache) gets the schema back by id.
    let fetched = SchemaRegistry::new(&url)?.schema_by_id(id).await?;
    let same = avro::parse(&fetched.schema).expect("avro");
    assert_eq!(
        same.canonical_form(),
        avro::parse(V1).expect("avro").canonical_form()
    );
    assert_eq!(fetched.schema_type, SchemaType::Avro);
    registry.set_compatibility(&subject, "BACKWARD").await?;
    assert!(
        registry
            .is_compatible(&subject, SchemaType::Avro, V2)
            .await?
    );
    assert!(
        !registry
            .is_compatible(&subject, SchemaType::Avro, V2_REQUIRED)
            .await?
    );
    let refused = registry
        .register(&subject, SchemaType::Avro, V2_REQUIRED)
        .await
        .expect_err("an incompatible schema is refused")
        .to_string();
    assert!(
        refused.contains(&subject) && refused.contains("incompatible"),
        "{refused}"
    );
    let v2 = registry.register(&subject, SchemaType::Avro, V2).await?;
    let (version, latest) = registry.latest(&subject).await?;
    assert_eq!((version, latest.id), (2, v2));
    let missing = registry
        .schema_by_id(999_999)
        .await
        .expect_err("no such id");
    assert!(missing.to_string().contains("999999"), "{missing}");
    Ok(())
}

#[tokio::test]
async fn framed_avro_records_cross_check_with_confluents_client_both_ways() -> rill::Result<()> {
    let Some(url) = registry_url() else {
        return Ok(());
    };
    let topic = format!("sr_x_{}", common::run_id());
    let registry = SchemaRegistry::new(&url)?;
    let schema = avro::parse(V1).expect("avro");
    // rill writes, Confluent's deserializer reads.
    let id = registry
        .register(&format!("{topic}-value"), SchemaType::Avro, V1)
        .await?;
    let ann = CustomerV1 {
        id: 7,
        name: "Ann".into(),
    };
    let ours = frame(id, &avro::encode(&schema, &ann).expect("encode"));
    let read: serde_json::Value =
        serde_json::from_str(&crosscheck(&url, &["decode", &topic, &hex(&ours)])).expect("json");
    assert_eq!(read["id"], id);
    assert_eq!(read["value"], serde_json::json!({ "id": 7, "name": "Ann" }));
    // Confluent's serializer writes, rill reads (the writer schema looked up by its id).
    let theirs = unhex(&crosscheck(
        &url,
        &["encode", &topic, V1, r#"{"id": 8, "name": "Bob"}"#],
    ));
    let (their_id, payload) = unframe(&theirs).expect("framed");
    assert_eq!(their_id, id, "the same schema under the same subject");
    let writer = avro::parse(&registry.schema_by_id(their_id).await?.schema).expect("avro");
    let bob: CustomerV1 = avro::decode(&writer, &schema, payload).expect("decode");
    assert_eq!(
        bob,
        CustomerV1 {
            id: 8,
            name: "Bob".into()
        }
    );
    Ok(())
}

#[tokio::test]
async fn a_record_written_with_an_older_schema_reads_into_the_newer_struct() -> rill::Result<()> {
    let Some(url) = registry_url() else {
        return Ok(());
    };
    let topic = format!("sr_ev_{}", common::run_id());
    // An older producer (Confluent's client) wrote V1 records.
    let old = unhex(&crosscheck(
        &url,
        &["encode", &topic, V1, r#"{"id": 1, "name": "Old"}"#],
    ));
    let (id, payload) = unframe(&old).expect("framed");
    let registry = SchemaRegistry::new(&url)?;
    let writer = avro::parse(&registry.schema_by_id(id).await?.schema).expect("avro");
    let reader = avro::parse(V2).expect("avro");
    let upgraded: CustomerV2 = avro::decode(&writer, &reader, payload).expect("resolved");
    assert_eq!(
        upgraded.tier, "basic",
        "the reader's default fills the new field"
    );
    // And a newer record read by an older reader drops the field it does not know.
    let newer = frame(
        id,
        &avro::encode(
            &reader,
            &CustomerV2 {
                id: 2,
                name: "New".into(),
                tier: "gold".into(),
            },
        )
        .expect("encode"),
    );
    let (_, payload) = unframe(&newer).expect("framed");
    let old_reader: CustomerV1 = avro::decode(&reader, &writer, payload).expect("resolved");
    assert_eq!(old_reader.name, "New");
    Ok(())
}

#[tokio::test]
async fn an_unreachable_registry_is_retried_then_named_with_the_setting() {
    // A port nothing listens on.
    let registry = SchemaRegistry::new("http://127.0.0.1:9")
        .expect("url")
        .with_backoff(Duration::from_millis(5));
    let err = registry
        .schema_by_id(1)
        .await
        .expect_err("unreachable")
        .to_string();
    assert!(
        err.contains("RILL_SCHEMA_REGISTRY_URL") && err.contains("attempts"),
        "{err}"
    );
}

/// A place, used twice in `Order`: defined once, then referred to by name.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, AvroSchema)]
struct Place {
    city: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, AvroSchema)]
struct Order {
    id: i64,
    #[serde(rename = "customer_name")]
    customer: String,
    note: Option<String>,
    lines: Vec<u16>,
    grams: u32,
    from: Place,
    to: Place,
    #[serde(skip)]
    local_only: bool,
}

#[test]
fn derived_schemas_follow_serde_and_define_each_record_once() {
    let schema: serde_json::Value = serde_json::from_str(&Order::avro_schema_json()).expect("json");
    assert_eq!(
        schema,
        serde_json::json!({
            "type": "record", "name": "Order", "namespace": "schema_registry",
            "fields": [
                { "name": "id", "type": "long" },
                { "name": "customer_name", "type": "string" },
                { "name": "note", "type": ["null", "string"], "default": null },
                { "name": "lines", "type": { "type": "array", "items": "int" } },
                { "name": "grams", "type": "long" },
                { "name": "from", "type": { "type": "record", "name": "Place",
                  "namespace": "schema_registry", "fields": [{ "name": "city", "type": "string" }] } },
                { "name": "to", "type": "schema_registry.Place" },
            ]
        })
    );
    let parsed = Order::avro_schema().expect("a valid Avro schema");
    let order = Order {
        id: 5,
        customer: "Ann".into(),
        note: None,
        lines: vec![1, 2],
        grams: u32::MAX,
        from: Place {
            city: "Oslo".into(),
        },
        to: Place {
            city: "Rome".into(),
        },
        local_only: false,
    };
    let back: Order = avro::decode(
        &parsed,
        &parsed,
        &avro::encode(&parsed, &order).expect("encode"),
    )
    .expect("decode");
    assert_eq!(back, order);
}

#[tokio::test]
async fn a_derived_schema_is_registered_and_read_by_confluents_client() -> rill::Result<()> {
    let Some(url) = registry_url() else {
        return Ok(());
    };
    let topic = format!("sr_dv_{}", common::run_id());
    let json = Order::avro_schema_json();
    let id = SchemaRegistry::new(&url)?
        .register(&format!("{topic}-value"), SchemaType::Avro, &json)
        .await?;
    let order = Order {
        id: 9,
        customer: "Bob".into(),
        note: Some("fragile".into()),
        lines: vec![3],
        grams: 250,
        from: Place {
            city: "Lima".into(),
        },
        to: Place {
            city: "Quito".into(),
        },
        local_only: true,
    };
    let schema = Order::avro_schema().expect("schema");
    let framed = frame(id, &avro::encode(&schema, &order).expect("encode"));
    let read: serde_json::Value =
        serde_json::from_str(&crosscheck(&url, &["decode", &topic, &hex(&framed)])).expect("json");
    assert_eq!(read["value"]["customer_name"], "Bob");
    assert_eq!(read["value"]["note"], "fragile");
    assert_eq!(read["value"]["to"]["city"], "Quito");
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

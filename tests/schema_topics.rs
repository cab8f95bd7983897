//! Avro records on topics (`#[record(codec = "avro")]`) against a real registry (Apicurio
//! Registry, started by `scripts/test.sh`), on the embedded log and on the broker: records
//! written by Confluent's Python serializer are read by an agent, and what the agent writes is
//! read by Confluent's deserializer; records written with an older or newer schema are read
//! into the current struct under each compatibility rule, and a schema the rule refuses stops
//! the worker naming the subject, the rule and the field; a poison frame (not framed, an
//! unknown id, a payload that does not decode) is dead-lettered with its original bytes; a
//! registry outage mid-stream holds the records until the registry is back (none lost, none
//! dead-lettered).

mod common;

use std::time::Duration;

use common::registry::{Relay, View, Visit, crosscheck, registry_url, schema_of, visits};
use rill::prelude::*;
use rill::schema_registry::{SchemaRegistry, SchemaType, SubjectStrategy, avro, frame};
use rill::{AgentSpec, TopicSpec};

const HERE: &str = "tests/schema_topics.rs";

#[record(codec = "avro", schema = "tests/schemas/customer_v1.avsc")]
#[derive(Debug, Clone, PartialEq)]
struct CustomerV1 {
    id: i64,
    name: String,
}

#[record(codec = "avro", schema = "tests/schemas/customer_v2.avsc")]
#[derive(Debug, Clone, PartialEq)]
struct CustomerV2 {
    id: i64,
    name: String,
    tier: String,
}

#[record(codec = "avro", schema = "tests/schemas/customer_v3.avsc")]
#[derive(Debug, Clone, PartialEq)]
struct CustomerV3 {
    id: i64,
    name: String,
    tier: String,
}

#[record(codec = "json_schema")]
#[derive(Debug, Clone, PartialEq)]
struct Order {
    #[record(key)]
    id: String,
    amount: f64,
    note: Option<String>,
}

#[record(codec = "json_schema")]
#[derive(Debug, Clone, PartialEq)]
struct OrderSeen {
    id: String,
    cents: i64,
}

/// A record whose producer's schema references `geo.Address`, registered under a subject of
/// its own (Confluent's schema references).
#[record(codec = "avro", schema = "tests/schemas/resident.avsc")]
#[derive(Debug, Clone, PartialEq)]
struct Resident {
    name: String,
    home: Address,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Address {
    city: String,
    zip: i32,
}

/// `Order` as it was before `note`, and as it would be with a required field more.
#[record(codec = "json_schema")]
#[derive(Debug, Clone, PartialEq)]
struct OrderV1 {
    id: String,
    amount: f64,
}

#[record(codec = "json_schema")]
#[derive(Debug, Clone, PartialEq)]
struct OrderRush {
    id: String,
    amount: f64,
    rush: bool,
}

#[record(codec = "protobuf", schema = "tests/schemas/shipments.proto")]
#[derive(Clone, PartialEq, prost::Message)]
struct Shipment {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(int64, tag = "2")]
    weight_grams: i64,
    #[prost(string, repeated, tag = "3")]
    items: Vec<String>,
}

#[record(codec = "protobuf", schema = "tests/schemas/shipments.proto")]
#[derive(Clone, PartialEq, prost::Message)]
struct ShipmentSeen {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(int64, tag = "2")]
    items: i64,
    #[prost(string, tag = "3")]
    heaviest: String,
}

/// Counts views per URL through `group_by` (a repartition topic carrying the framed records),
/// writing a visit with the count so far.
fn views_per_url(input: &str, output: &str) -> AgentSpec {
    AgentSpec::new("per_url", HERE)
        .source(TopicSpec::of::<View>(input, HERE))
        .sink(TopicSpec::of::<Visit>(output, HERE))
        .table("sr_url_counts")
        .run(|mut ctx| async move {
            let mut views = ctx.stream::<View>()?.group_by(View::url);
            let counts: Table<String, i64> = ctx.table("sr_url_counts")?;
            let out = ctx.sink::<Visit>()?;
            while let Some(v) = views.next().await {
                let seen = counts.update(v.url.clone(), |n| n + 1)?;
                let visit = Visit {
                    user: v.user.clone(),
                    url: v.url.clone(),
                    seen,
                };
                out.send(&visit).await?;
            }
            Ok(())
        })
}

/// Reads `R` from `input`, writes each as its `Debug` text to `output`.
fn describe<R: Record + std::fmt::Debug>(input: &str, output: &str) -> AgentSpec {
    AgentSpec::new("describe", HERE)
        .source(TopicSpec::of::<R>(input, HERE))
        .sink(TopicSpec::of::<String>(output, HERE))
        .run(|mut ctx| async move {
            let mut records = ctx.stream::<R>()?;
            let out = ctx.sink::<String>()?;
            while let Some(r) = records.next().await {
                out.send(&format!("{r:?}")).await?;
            }
            Ok(())
        })
}

/// Starts app `app_id` running `agent` on the embedded log, with the registry at `url`; its
/// data directory lives as long as the returned guard.
async fn start(
    url: &str,
    app_id: &str,
    agent: AgentSpec,
) -> rill::Result<(TestApp, tempfile::TempDir)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = App::new(app_id)
        .schema_registry(url)
        .agents([agent])
        .test_in(dir.path())
        .await?;
    Ok((app, dir))
}

fn hex_decode(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `value` framed with the id of `schema` under `subject` (registered there).
async fn framed<T: serde::Serialize>(
    registry: &SchemaRegistry,
    subject: &str,
    schema: &str,
    value: &T,
) -> rill::Result<Vec<u8>> {
    let id = registry.register(subject, SchemaType::Avro, schema).await?;
    let parsed = avro::parse(schema).expect("schema");
    Ok(frame(id, &avro::encode(&parsed, value).expect("encode")))
}

#[tokio::test]
async fn an_avro_topic_without_a_registry_is_an_error_naming_the_setting() {
    let err = App::new("sr_none")
        .agents([visits("sr_none_in", "sr_none_out")])
        .test()
        .await
        .err()
        .expect("no registry, no start")
        .to_string();
    for needed in ["RILL_SCHEMA_REGISTRY_URL", "App::schema_registry", "View"] {
        assert!(err.contains(needed), "`{needed}` missing from: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_streams_regroup_through_a_repartition_topic() -> rill::Result<()> {
    let Some(url) = registry_url() else {
        return Ok(());
    };
    let run = common::run_id();
    let (input, output) = (format!("sr_regroup_{run}"), format!("sr_regroup_out_{run}"));
    let (app, _dir) = start(
        &url,
        &format!("sr_regroup_{run}"),
        views_per_url(&input, &output),
    )
    .await?;
    for i in 0..30 {
        let view = View {
            user: format!("u{i}"),
            url: format!("/p{}", i % 3),
            at: i,
        };
        app.producer().send_to(&input, &view).await?;
    }
    app.producer().flush().await?;
    let seen: Vec<Visit> = app.expect(&output, 30).await?;
    let mut last: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    for v in &seen {
        let n = last.entry(v.url.clone()).or_default();
        *n = (*n).max(v.seen);
    }
    assert_eq!(last.values().copied().collect::<Vec<_>>(), [10, 10, 10]);
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluents_client_writes_what_an_agent_reads_and_reads_what_it_writes() -> rill::Result<()>
{
    let Some(url) = registry_url() else {
        return Ok(());
    };
    let run = common::run_id();
    let (input, output) = (format!("sr_views_{run}"), format!("sr_visits_{run}"));
    let (app, _dir) = start(&url, &format!("sr_rt_{run}"), visits(&input, &output)).await?;
    for i in 0..3 {
        let view = serde_json::json!({"user": format!("u{i}"), "url": "/a", "at": i});
        let hex = crosscheck(
            &url,
            &["encode", &input, schema_of::<View>(), &view.to_string()],
        );
        let key = format!("u{i}");
        app.send_bytes(&input, Some(key.as_bytes()), &hex_decode(&hex))
            .await?;
    }
    let mut seen: Vec<Visit> = app.expect(&output, 3).await?;
    seen.sort_by_key(|v| v.seen);
    assert_eq!(
        seen,
        (0..3)
            .map(|i| Visit {
                user: format!("u{i}"),
                url: "/a".into(),
                seen: i
            })
            .collect::<Vec<_>>()
    );
    // The agent's records, read by Confluent's deserializer: framed with the id of `Visit`'s
    // schema under `<output>-value`.
    let registry = SchemaRegistry::new(&url)?;
    let id = registry
        .lookup(
            &format!("{output}-value"),
            SchemaType::Avro,
            schema_of::<Visit>(),
        )
        .await?
        .expect("the sink's schema was registered at start");
    for record in app.records(&output)? {
        let bytes = record.value.as_deref().expect("a value");
        let read: serde_json::Value =
            serde_json::from_str(&crosscheck(&url, &["decode", &output, &hex_encode(bytes)]))
                .expect("json");
        assert_eq!(read["id"], id);
        let user = read["value"]["user"].as_str().expect("user").to_owned();
        assert_eq!(read["value"]["url"], "/a");
        assert_eq!(read["value"]["seen"], user[1..].parse::<i64>().expect("n"));
    }
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subjects_follow_the_record_and_topic_record_naming_strategies() -> rill::Result<()> {
    let Some(url) = registry_url() else {
        return Ok(());
    };
    let registry = SchemaRegistry::new(&url)?;
    let run = common::run_id();
    let full_name = |schema: &str| {
        let v: serde_json::Value = serde_json::from_str(schema).expect("json");
        format!(
            "{}.{}",
            v["namespace"].as_str().expect("namespace"),
            v["name"].as_str().expect("name")
        )
    };
    let visit = full_name(schema_of::<Visit>());
    for (strategy, subject) in [
        (SubjectStrategy::Record, visit.clone()),
        (
            SubjectStrategy::TopicRecord,
            format!("sr_strategy_out_{run}-{visit}"),
        ),
    ] {
        let (input, output) = (
            format!("sr_strategy_in_{run}"),
            format!("sr_strategy_out_{run}"),
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let app = App::new(&format!("sr_strategy_{run}"))
            .schema_registry(&url)
            .configure(move |c| {
                if let Some(r) = c.schema_registry.as_mut() {
                    r.subject_strategy = strategy;
                }
            })
            .agents([visits(&input, &output)])
            .test_in(dir.path())
            .await?;
        let id = registry
            .lookup(&subject, SchemaType::Avro, schema_of::<Visit>())
            .await?;
        assert!(
            id.is_some(),
            "{strategy:?}: nothing registered under {subject}"
        );
        app.stop().await?;
    }
    Ok(())
}

/// The id of `View`'s Avro schema, registered under `subject`: a frame of another format.
async fn an_avro_id(url: &str, subject: &str) -> rill::Result<u32> {
    SchemaRegistry::new(url)?
        .register(subject, SchemaType::Avro, schema_of::<View>())
        .await
}

/// The reasons (`rill.error`) of the first `n` dead letters in `dlq`, once there are `n`.
async fn dead_letter_reasons(app: &TestApp, dlq: &str, n: usize) -> rill::Result<Vec<String>> {
    app.wait_until("the poison is dead-lettered", |app| {
        app.count(dlq).unwrap_or(0) >= n
    })
    .await?;
    Ok(app
        .records(dlq)?
        .iter()
        .map(|r| {
            String::from_utf8_lossy(r.headers.get("rill.error").unwrap_or_default()).into_owned()
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_only_read_adds_no_version_to_its_subject() -> rill::Result<()> {
    let Some(url) = registry_url() else {
        return Ok(());
    };
    let run = common::run_id();
    let (input, output) = (
        format!("sr_readonly_{run}"),
        format!("sr_readonly_out_{run}"),
    );
    let (app, _dir) = start(
        &url,
        &format!("sr_readonly_{run}"),
        describe::<CustomerV2>(&input, &output),
    )
    .await?;
    let registry = SchemaRegistry::new(&url)?;
    let subject = format!("{input}-value");
    let found = registry
        .lookup(&subject, SchemaType::Avro, schema_of::<CustomerV2>())
        .await?;
    assert_eq!(found, None, "a reader registered under {subject}");
    app.stop().await
}

/// Registers `existing` and then `new` under `subject` with compatibility `rule` (which must
/// accept `new`); the ids.
async fn evolve(
    registry: &SchemaRegistry,
    subject: &str,
    rule: &str,
    existing: &str,
    new: &str,
) -> rill::Result<(u32, u32)> {
    let old = registry
        .register(subject, SchemaType::Avro, existing)
        .await?;
    registry.set_compatibility(subject, rule).await?;
    assert!(
        registry
            .is_compatible(subject, SchemaType::Avro, new)
            .await?,
        "{rule} accepts the evolution"
    );
    let new = registry.register(subject, SchemaType::Avro, new).await?;
    Ok((old, new))
}

/// Starts an app reading `R` from a fresh topic, feeds it `records` and returns what it saw.
async fn read_as<R: Record + std::fmt::Debug>(
    url: &str,
    topic: &str,
    records: Vec<Vec<u8>>,
) -> rill::Result<Vec<String>> {
    let output = format!("{topic}_seen");
    let (app, _dir) = start(url, &format!("{topic}_app"), describe::<R>(topic, &output)).await?;
    let n = records.len();
    for bytes in records {
        app.send_bytes(topic, Some(b"k"), &bytes).await?;
    }
    let seen = app.expect::<String>(&output, n).await;
    let dead: Vec<String> = app
        .records(&format!("{topic}_app-describe-dlq"))
        .unwrap_or_default()
        .iter()
        .filter_map(|r| {
            r.headers
                .get("rill.error")
                .map(|e| String::from_utf8_lossy(e).into_owned())
        })
        .collect();
    assert!(dead.is_empty(), "dead-lettered: {dead:?}");
    let seen = seen?;
    app.stop().await?;
    Ok(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_older_and_newer_schemas_are_read_under_each_compatibility_rule()
-> rill::Result<()> {
    let Some(url) = registry_url() else {
        return Ok(());
    };
    let registry = SchemaRegistry::new(&url)?;
    let run = common::run_id();
    let (v1, v2, v3) = (
        schema_of::<CustomerV1>(),
        schema_of::<CustomerV2>(),
        schema_of::<CustomerV3>(),
    );
    let ann = CustomerV1 {
        id: 1,
        name: "ann".into(),
    };
    let bob = CustomerV3 {
        id: 2,
        name: "bob".into(),
        tier: "gold".into(),
    };

    // BACKWARD: consumers upgrade first. A V2 reader (a new field with a default) reads
    // records written with V1; the default fills the field.
    let topic = format!("sr_back_{run}");
    evolve(&registry, &format!("{topic}-value"), "BACKWARD", v1, v2).await?;
    let old = framed(&registry, &format!("{topic}-value"), v1, &ann).await?;
    assert_eq!(
        read_as::<CustomerV2>(&url, &topic, vec![old]).await?,
        [r#"CustomerV2 { id: 1, name: "ann", tier: "basic" }"#]
    );

    // FORWARD: producers upgrade first. Records written with V3 (a new field, no default:
    // forward compatible only) are read by a V1 reader, which skips the field.
    let topic = format!("sr_fwd_{run}");
    evolve(&registry, &format!("{topic}-value"), "FORWARD", v1, v3).await?;
    let newer = framed(&registry, &format!("{topic}-value"), v3, &bob).await?;
    assert_eq!(
        read_as::<CustomerV1>(&url, &topic, vec![newer]).await?,
        [r#"CustomerV1 { id: 2, name: "bob" }"#]
    );

    // FULL: either side first. V1 records into V2, and V2 records into V1.
    let topic = format!("sr_full_{run}");
    let subject = format!("{topic}-value");
    evolve(&registry, &subject, "FULL", v1, v2).await?;
    let old = framed(&registry, &subject, v1, &ann).await?;
    let bob2 = CustomerV2 {
        id: 2,
        name: "bob".into(),
        tier: "gold".into(),
    };
    let newer = framed(&registry, &subject, v2, &bob2).await?;
    assert_eq!(
        read_as::<CustomerV2>(&url, &topic, vec![old.clone(), newer.clone()]).await?,
        [
            r#"CustomerV2 { id: 1, name: "ann", tier: "basic" }"#,
            r#"CustomerV2 { id: 2, name: "bob", tier: "gold" }"#
        ]
    );
    let topic2 = format!("sr_full2_{run}");
    assert_eq!(
        read_as::<CustomerV1>(&url, &topic2, vec![old, newer]).await?,
        [
            r#"CustomerV1 { id: 1, name: "ann" }"#,
            r#"CustomerV1 { id: 2, name: "bob" }"#
        ]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_schema_the_rule_refuses_stops_the_start_naming_subject_rule_and_field()
-> rill::Result<()> {
    let Some(url) = registry_url() else {
        return Ok(());
    };
    let registry = SchemaRegistry::new(&url)?;
    let run = common::run_id();
    let output = format!("sr_refused_{run}");
    let subject = format!("{output}-value");
    registry
        .register(&subject, SchemaType::Avro, schema_of::<CustomerV1>())
        .await?;
    registry.set_compatibility(&subject, "BACKWARD").await?;
    let writer = AgentSpec::new("writer", HERE)
        .source(TopicSpec::of::<String>(
            &format!("sr_refused_in_{run}"),
            HERE,
        ))
        .sink(TopicSpec::of::<CustomerV3>(&output, HERE))
        .run(|_ctx| async move { Ok(()) });
    let dir = tempfile::tempdir().expect("tempdir");
    let err = App::new(&format!("sr_refused_{run}"))
        .schema_registry(&url)
        .agents([writer])
        .test_in(dir.path())
        .await
        .err()
        .expect("the start fails")
        .to_string();
    for needed in [subject.as_str(), "BACKWARD", "tier", "CustomerV3"] {
        assert!(err.contains(needed), "`{needed}` missing from: {err}");
    }
    // With auto-registration off, a sink schema not registered stops the start too.
    let other = format!("sr_unregistered_{run}");
    let writer = AgentSpec::new("writer", HERE)
        .source(TopicSpec::of::<String>(&format!("sr_unreg_in_{run}"), HERE))
        .sink(TopicSpec::of::<CustomerV1>(&other, HERE))
        .run(|_ctx| async move { Ok(()) });
    let dir = tempfile::tempdir().expect("tempdir");
    let err = App::new(&format!("sr_unreg_{run}"))
        .schema_registry(&url)
        .configure(|c| {
            if let Some(r) = c.schema_registry.as_mut() {
                r.auto_register = false;
            }
        })
        .agents([writer])
        .test_in(dir.path())
        .await
        .err()
        .expect("the start fails")
        .to_string();
    assert!(
        err.contains(&format!("{other}-value")) && err.contains("not registered"),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_whose_schema_references_another_subject_are_read() -> rill::Result<()> {
    let Some(url) = registry_url() else {
        return Ok(());
    };
    let topic = format!("sr_refs_{}", common::run_id());
    let address = r#"{"type":"record","name":"Address","namespace":"geo","fields":[{"name":"city","type":"string"},{"name":"zip","type":"int"}]}"#;
    let resident = r#"{"type":"record","name":"Resident","namespace":"crm","fields":[{"name":"name","type":"string"},{"name":"home","type":"geo.Address"}]}"#;
    let records = crosscheck(
        &url,
        &[
            "encode-referencing",
            &topic,
            &format!("{topic}-geo.Address"),
            address,
            "geo.Address",
            resident,
            r#"{"name": "Ann", "home": {"city": "Utrecht", "zip": 3511}}"#,
            r#"{"name": "Bo", "home": {"city": "Lyon", "zip": 69001}}"#,
        ],
    );
    let records: Vec<Vec<u8>> = records.lines().map(hex_decode).collect();
    // The writer schema as the registry holds it names Address only; rill writes it out.
    let id = u32::from_be_bytes(records[0][1..5].try_into().expect("an id"));
    let registry = SchemaRegistry::new(&url)?;
    let found = registry.schema_by_id(id).await?;
    assert!(found.schema.contains("\"city\""), "{}", found.schema);
    let seen = read_as::<Resident>(&url, &topic, records).await?;
    assert_eq!(seen.len(), 2);
    assert!(seen[0].contains("Ann") && seen[0].contains("Utrecht") && seen[0].contains("3511"));
    assert!(seen[1].contains("Bo") && seen[1].contains("Lyon") && seen[1].contains("69001"));
    Ok(())
}

/// Replies to each Avro view it is asked with twice its `at`.
fn doubles(input: &str) -> AgentSpec {
    AgentSpec::new("doubles", HERE)
        .source(TopicSpec::of::<View>(input, HERE))
        .run(|mut ctx| async move {
            let mut views = ctx.stream::<View>()?.requests();
            while let Some(view) = views.next().await {
                view.reply(&(view.at * 2)).await?;
            }
            Ok(())
        })
}

/// `ask`s the agent reading an Avro topic (which the worker only reads, so its schema is not
/// registered at start): the ask binds the topic for writing first, as a producer's first send
/// does, then gets the reply.
async fn ask_an_avro_agent(url: &str) -> rill::Result<()> {
    let input = format!("sr_ask_{}", common::run_id());
    let (app, _dir) = start(url, &format!("{input}_app"), doubles(&input)).await?;
    let registry = SchemaRegistry::new(url)?;
    let subject = format!("{input}-value");
    assert!(
        registry.latest(&subject).await.is_err(),
        "registered at start"
    );
    let view = View {
        user: "u1".into(),
        url: "/a".into(),
        at: 21,
    };
    let doubled: i64 = app
        .requests()
        .ask(&input, &view)
        .timeout(Duration::from_secs(30))
        .await?;
    assert_eq!(doubled, 42);
    let (_, latest) = registry.latest(&subject).await?;
    let json = |text: &str| serde_json::from_str::<serde_json::Value>(text).expect("json");
    assert_eq!(json(&latest.schema), json(schema_of::<View>()));
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_binds_an_avro_topic_it_only_reads_on_a_multi_threaded_runtime() -> rill::Result<()> {
    match registry_url() {
        Some(url) => ask_an_avro_agent(&url).await,
        None => Ok(()),
    }
}

#[tokio::test]
async fn ask_binds_an_avro_topic_it_only_reads_on_a_current_thread_runtime() -> rill::Result<()> {
    match registry_url() {
        Some(url) => ask_an_avro_agent(&url).await,
        None => Ok(()),
    }
}

/// A start with `R` as the sink of `output`: the error, if the start fails.
async fn start_error_writing<R: Record>(url: &str, output: &str) -> Option<String> {
    let writer = AgentSpec::new("writer", HERE)
        .source(TopicSpec::of::<String>(&format!("{output}_in"), HERE))
        .sink(TopicSpec::of::<R>(output, HERE))
        .run(|_ctx| async move { Ok(()) });
    match start(url, &format!("{output}_app"), writer).await {
        Ok((app, _dir)) => {
            app.stop().await.expect("stops");
            None
        }
        Err(e) => Some(e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derived_json_schemas_are_closed_so_an_option_field_evolves_under_backward()
-> rill::Result<()> {
    let Some(url) = registry_url() else {
        return Ok(());
    };
    let registry = SchemaRegistry::new(&url)?;
    let output = format!("sr_json_evolve_{}", common::run_id());
    let subject = format!("{output}-value");
    let v1: serde_json::Value = serde_json::from_str(schema_of::<OrderV1>()).expect("json");
    assert_eq!(v1["additionalProperties"], false, "{v1}");
    registry
        .register(&subject, SchemaType::Json, schema_of::<OrderV1>())
        .await?;
    registry.set_compatibility(&subject, "BACKWARD").await?;
    // A new `Option` field: accepted, and the start registers it.
    assert_eq!(start_error_writing::<Order>(&url, &output).await, None);
    let (version, latest) = registry.latest(&subject).await?;
    let parse = |text: &str| serde_json::from_str::<serde_json::Value>(text).expect("json");
    assert_eq!(version, 2);
    assert_eq!(parse(&latest.schema), parse(schema_of::<Order>()));
    // A new required field: refused, with advice for JSON Schema.
    let err = start_error_writing::<OrderRush>(&url, &output)
        .await
        .expect("the start fails");
    for needed in [
        subject.as_str(),
        "BACKWARD",
        "OrderRush",
        "closed JSON Schemas",
    ] {
        assert!(err.contains(needed), "`{needed}` missing from: {err}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_frames_are_dead_lettered_with_their_bytes_and_the_reason() -> rill::Result<()> {
    let Some(url) = registry_url() else {
        return Ok(());
    };
    let run = common::run_id();
    let (input, output) = (format!("sr_poison_{run}"), format!("sr_poison_out_{run}"));
    let app_id = format!("sr_poison_{run}");
    let (app, _dir) = start(&url, &app_id, visits(&input, &output)).await?;
    let registry = SchemaRegistry::new(&url)?;
    let subject = format!("{input}-value");
    let good = View {
        user: "u".into(),
        url: "/ok".into(),
        at: 7,
    };
    let valid = framed(&registry, &subject, schema_of::<View>(), &good).await?;
    let poison: Vec<(Vec<u8>, &str)> = vec![
        (br#"{"user":"u"}"#.to_vec(), "magic byte"),
        (frame(2_000_000_000, &valid[5..]), "unknown"),
        (valid[..6].to_vec(), "avro"),
    ];
    for (bytes, _) in &poison {
        app.send_bytes(&input, Some(b"u"), bytes).await?;
    }
    app.send_bytes(&input, Some(b"u"), &valid).await?;
    let seen: Vec<Visit> = app.expect(&output, 1).await?;
    assert_eq!(seen[0].url, "/ok");
    let dlq = format!("{app_id}-visits-dlq");
    app.wait_until("the poison is dead-lettered", |app| {
        app.count(&dlq).unwrap_or(0) >= poison.len()
    })
    .await?;
    let dead = app.records(&dlq)?;
    assert_eq!(dead.len(), poison.len());
    for (record, (bytes, reason)) in dead.iter().zip(&poison) {
        assert_eq!(
            record.value.as_deref(),
            Some(bytes.as_slice()),
            "original bytes"
        );
        let error = record
            .headers
            .get("rill.error")
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        assert!(error.contains(reason), "`{reason}` missing from: {error}");
    }
    app.stop().await
}

/// `View` with a field added (default ""): a schema the worker has not met.
#[derive(serde::Serialize)]
struct ViewPlus {
    user: String,
    url: String,
    at: i64,
    referrer: String,
}

fn view_plus_schema() -> String {
    let mut schema: serde_json::Value = serde_json::from_str(schema_of::<View>()).expect("json");
    schema["fields"]
        .as_array_mut()
        .expect("fields")
        .push(serde_json::json!({"name": "referrer", "type": "string", "default": ""}));
    schema.to_string()
}

/// Five views of users `u0`..`u4` on `/later`, framed with a newer version of `View`'s schema
/// (a field more), registered under `input`'s subject: `(key, framed value)`.
async fn later_views(url: &str, input: &str) -> rill::Result<Vec<(Option<String>, Vec<u8>)>> {
    let registry = SchemaRegistry::new(url)?;
    let (subject, plus) = (format!("{input}-value"), view_plus_schema());
    let mut records = Vec::new();
    for i in 0..5 {
        let view = ViewPlus {
            user: format!("u{i}"),
            url: "/later".into(),
            at: i,
            referrer: "ad".into(),
        };
        let bytes = framed(&registry, &subject, &plus, &view).await?;
        records.push((Some(view.user), bytes));
    }
    Ok(records)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_mid_stream_holds_records_and_loses_none() -> rill::Result<()> {
    let Some(url) = registry_url() else {
        return Ok(());
    };
    let relay = Relay::to(&url);
    let run = common::run_id();
    let (input, output) = (format!("sr_outage_{run}"), format!("sr_outage_out_{run}"));
    let app_id = format!("sr_outage_{run}");
    let (app, _dir) = start(relay.url(), &app_id, visits(&input, &output)).await?;
    // Records of a schema version the worker has not met: each needs the registry once.
    let views = later_views(&url, &input).await?;
    relay.set_up(false);
    for (user, bytes) in &views {
        app.send_bytes(&input, user.as_deref().map(str::as_bytes), bytes)
            .await?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let dlq = format!("{app_id}-visits-dlq");
    assert_eq!(app.count(&output)?, 0, "held while the registry is away");
    assert_eq!(app.count(&dlq).unwrap_or(0), 0, "nothing dead-lettered");
    relay.set_up(true);
    let seen: Vec<Visit> = app.expect(&output, 5).await?;
    assert_eq!(seen.len(), 5);
    assert!(seen.iter().all(|v| v.url == "/later"));
    assert_eq!(app.count(&dlq).unwrap_or(0), 0, "nothing dead-lettered");
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopping_during_an_outage_does_not_wait_for_the_registry() -> rill::Result<()> {
    let Some(url) = registry_url() else {
        return Ok(());
    };
    let relay = Relay::to(&url);
    let run = common::run_id();
    let input = format!("sr_stop_{run}");
    let (app, _dir) = start(
        relay.url(),
        &format!("sr_stop_{run}"),
        visits(&input, &format!("sr_stop_out_{run}")),
    )
    .await?;
    let registry = SchemaRegistry::new(&url)?;
    relay.set_up(false);
    let view = ViewPlus {
        user: "u".into(),
        url: "/held".into(),
        at: 1,
        referrer: "ad".into(),
    };
    let bytes = framed(
        &registry,
        &format!("{input}-value"),
        &view_plus_schema(),
        &view,
    )
    .await?;
    app.send_bytes(&input, Some(b"u"), &bytes).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The held record gives up when the worker stops (one attempt's retries at most).
    tokio::time::timeout(Duration::from_secs(40), app.stop())
        .await
        .expect("the worker stops while the registry is away")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_broker_avro_round_trips_and_a_poison_frame_is_dead_lettered() -> rill::Result<()> {
    let (Some(url), Some(bootstrap)) = (registry_url(), common::kafka_bootstrap()) else {
        return Ok(());
    };
    let run = common::run_id();
    let (input, output) = (format!("srk_views_{run}"), format!("srk_visits_{run}"));
    let app_id = format!("srk_{run}");
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = common::kafka_app(&app_id, &bootstrap, dir.path())
        .schema_registry(&url)
        .agents([visits(&input, &output)])
        .start()
        .await?;
    common::wait_ready(&worker, Duration::from_secs(60)).await;
    // The input's schema is registered after the worker started: its id is met mid-stream.
    let views: Vec<String> = (0..20)
        .map(|i| {
            serde_json::json!({"user": format!("u{}", i % 4), "url": format!("/p{i}"), "at": i})
                .to_string()
        })
        .collect();
    let mut args = vec!["encode", &input, schema_of::<View>()];
    args.extend(views.iter().map(String::as_str));
    let mut records: Vec<(Option<String>, Vec<u8>)> = crosscheck(&url, &args)
        .lines()
        .enumerate()
        .map(|(i, hex)| (Some(format!("u{}", i % 4)), hex_decode(hex)))
        .collect();
    assert_eq!(records.len(), 20);
    records.insert(7, (Some("u3".into()), b"not framed".to_vec()));
    tokio::task::block_in_place(|| {
        common::kafka::produce_bytes(&common::producer(&bootstrap), &input, &records);
    });
    let out = common::read_topic(
        &bootstrap,
        &output,
        Duration::from_secs(60),
        Duration::from_secs(1),
        |got| got.len() >= 20,
    );
    assert_eq!(out.len(), 20, "each view once");
    let mut pages: Vec<i64> = Vec::new();
    for record in &out {
        let hex = hex_encode(record.value.as_deref().expect("a value"));
        let read: serde_json::Value =
            serde_json::from_str(&crosscheck(&url, &["decode", &output, &hex])).expect("json");
        pages.push(read["value"]["seen"].as_i64().expect("seen"));
    }
    pages.sort_unstable();
    assert_eq!(pages, (0..20).collect::<Vec<_>>());
    let dead = common::read_topic(
        &bootstrap,
        &format!("{app_id}-visits-dlq"),
        Duration::from_secs(30),
        Duration::from_secs(1),
        |got| !got.is_empty(),
    );
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].value.as_deref(), Some(b"not framed".as_slice()));
    assert!(
        dead[0]
            .header("rill.error")
            .unwrap_or_default()
            .contains("magic byte"),
        "{:?}",
        dead[0].header("rill.error")
    );
    worker.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_broker_a_registry_outage_holds_newer_records_until_they_resolve() -> rill::Result<()>
{
    let (Some(url), Some(bootstrap)) = (registry_url(), common::kafka_bootstrap()) else {
        return Ok(());
    };
    let relay = Relay::to(&url);
    let run = common::run_id();
    let (input, output) = (format!("srk_out_in_{run}"), format!("srk_out_out_{run}"));
    let app_id = format!("srk_outage_{run}");
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = common::kafka_app(&app_id, &bootstrap, dir.path())
        .schema_registry(relay.url())
        .agents([visits(&input, &output)])
        .start()
        .await?;
    common::wait_ready(&worker, Duration::from_secs(60)).await;
    // Records of a newer version of the schema (a field more), met while the registry is
    // away: each waits for its writer schema, then resolves into `View`.
    let records = later_views(&url, &input).await?;
    relay.set_up(false);
    tokio::task::block_in_place(|| {
        common::kafka::produce_bytes(&common::producer(&bootstrap), &input, &records);
    });
    let read = |topic: &str, wait: Duration| {
        common::read_topic(&bootstrap, topic, wait, Duration::from_secs(1), |got| {
            got.len() >= 5
        })
    };
    assert!(
        read(&output, Duration::from_secs(4)).is_empty(),
        "held while the registry is away"
    );
    relay.set_up(true);
    let out = read(&output, Duration::from_secs(60));
    assert_eq!(
        out.len(),
        5,
        "each record once, none lost (or dead-lettered)"
    );
    let mut users = Vec::new();
    for record in &out {
        let hex = hex_encode(record.value.as_deref().expect("a value"));
        let read: serde_json::Value =
            serde_json::from_str(&crosscheck(&url, &["decode", &output, &hex])).expect("json");
        assert_eq!(read["value"]["url"], "/later", "{read}");
        users.push(read["value"]["user"].as_str().expect("user").to_owned());
    }
    users.sort();
    assert_eq!(users, ["u0", "u1", "u2", "u3", "u4"]);
    worker.shutdown().await
}

#[test]
fn the_avro_pageviews_example_counts_avro_views_and_prints_its_schemas() {
    let Some(url) = registry_url() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    let mut worker = common::spawn_example_quiet(
        "avro_pageviews",
        &["--data-dir", data, "--no-web"],
        &[
            ("SYNTHETIC_VIEWS", "6"),
            ("RILL_LOG", "warn"),
            ("RILL_SCHEMA_REGISTRY_URL", &url),
        ],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let totals = loop {
        let totals: std::collections::BTreeMap<String, i64> =
            common::table_of("avro_pageviews", data, "url_totals_table");
        if totals.values().sum::<i64>() >= 6 {
            break totals;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the example counted {totals:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let expected: std::collections::BTreeMap<String, i64> =
        [("/", 2), ("/docs", 2), ("/pricing", 2)]
            .into_iter()
            .map(|(u, n)| (u.to_owned(), n))
            .collect();
    assert_eq!(totals, expected);
    common::signal(&worker, "TERM");
    assert!(
        common::exited_within(&mut worker, Duration::from_secs(30)).is_some_and(|s| s.success()),
        "the worker stops cleanly"
    );
    let out = common::command("avro_pageviews")
        .args(["--data-dir", data, "schema"])
        .env("RILL_SCHEMA_REGISTRY_URL", &url)
        .env("RILL_LOG", "warn")
        .output()
        .expect("schema command");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needed in [
        "subject pageviews_avro-value",
        "subject url_totals-value",
        "\"referrer\"",
    ] {
        assert!(text.contains(needed), "`{needed}` missing from: {text}");
    }
}

/// Reads orders, writes each amount in cents.
fn orders(input: &str, output: &str) -> AgentSpec {
    AgentSpec::new("orders", HERE)
        .source(TopicSpec::of::<Order>(input, HERE))
        .sink(TopicSpec::of::<OrderSeen>(output, HERE))
        .run(|mut ctx| async move {
            let mut orders = ctx.stream::<Order>()?;
            let out = ctx.sink::<OrderSeen>()?;
            while let Some(o) = orders.next().await {
                let seen = OrderSeen {
                    id: o.id.clone(),
                    cents: (o.amount * 100.0).round() as i64,
                };
                out.send(&seen).await?;
            }
            Ok(())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_schema_records_cross_check_with_confluents_client_and_poison_is_dead_lettered()
-> rill::Result<()> {
    let Some(url) = registry_url() else {
        return Ok(());
    };
    let run = common::run_id();
    let (input, output) = (format!("sr_orders_{run}"), format!("sr_orders_seen_{run}"));
    let app_id = format!("sr_json_{run}");
    let agent = orders(&input, &output);
    let (app, _dir) = start(&url, &app_id, agent).await?;
    let schema = schema_of::<Order>();
    // An Avro id in a JSON topic, and JSON without a frame: both poison.
    let avro_id = an_avro_id(&url, &format!("{input}-avro")).await?;
    let mut sent = Vec::new();
    for (i, order) in [
        serde_json::json!({"id": "o1", "amount": 12.5, "note": "gift"}),
        serde_json::json!({"id": "o2", "amount": 3.0, "note": null}),
    ]
    .iter()
    .enumerate()
    {
        let hex = crosscheck(&url, &["encode-json", &input, schema, &order.to_string()]);
        sent.push(hex_decode(&hex));
        if i == 0 {
            sent.push(frame(avro_id, b"{}"));
            sent.push(br#"{"id":"o9","amount":1.0}"#.to_vec());
        }
    }
    for bytes in &sent {
        app.send_bytes(&input, Some(b"o"), bytes).await?;
    }
    let seen: Vec<OrderSeen> = app.expect(&output, 2).await?;
    assert_eq!(
        seen,
        [
            OrderSeen {
                id: "o1".into(),
                cents: 1250
            },
            OrderSeen {
                id: "o2".into(),
                cents: 300
            }
        ]
    );
    for record in app.records(&output)? {
        let hex = hex_encode(record.value.as_deref().expect("a value"));
        let read: serde_json::Value =
            serde_json::from_str(&crosscheck(&url, &["decode-json", &output, &hex])).expect("json");
        assert!(read["value"]["cents"].as_i64().is_some(), "{read}");
    }
    let reasons = dead_letter_reasons(&app, &format!("{app_id}-orders-dlq"), 2).await?;
    assert!(reasons[0].contains("AVRO schema, not JSON"), "{reasons:?}");
    assert!(reasons[1].contains("magic byte"), "{reasons:?}");
    app.stop().await
}

/// Reads shipments, writes what it saw of each (the second message of their `.proto`).
fn shipments(input: &str, output: &str) -> AgentSpec {
    AgentSpec::new("ships", HERE)
        .source(TopicSpec::of::<Shipment>(input, HERE))
        .sink(TopicSpec::of::<ShipmentSeen>(output, HERE))
        .run(|mut ctx| async move {
            let mut shipments = ctx.stream::<Shipment>()?;
            let out = ctx.sink::<ShipmentSeen>()?;
            while let Some(s) = shipments.next().await {
                let seen = ShipmentSeen {
                    id: s.id.clone(),
                    items: i64::try_from(s.items.len()).unwrap_or(i64::MAX),
                    heaviest: s.items.first().cloned().unwrap_or_default(),
                };
                out.send(&seen).await?;
            }
            Ok(())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_records_cross_check_with_confluents_client_and_poison_is_dead_lettered()
-> rill::Result<()> {
    let Some(url) = registry_url() else {
        return Ok(());
    };
    let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemas/shipments.proto");
    let run = common::run_id();
    let (input, output) = (format!("sr_ships_{run}"), format!("sr_ships_seen_{run}"));
    let app_id = format!("sr_proto_{run}");
    let agent = shipments(&input, &output);
    let (app, _dir) = start(&url, &app_id, agent).await?;
    let avro_id = an_avro_id(&url, &format!("{input}-avro")).await?;
    let shipments = [
        serde_json::json!({"id": "s1", "weight_grams": "1200", "items": ["anvil", "rope"]}),
        serde_json::json!({"id": "s2", "weight_grams": "5", "items": []}),
    ];
    for (i, shipment) in shipments.iter().enumerate() {
        let hex = crosscheck(
            &url,
            &[
                "encode-proto",
                &input,
                proto,
                "Shipment",
                &shipment.to_string(),
            ],
        );
        app.send_bytes(&input, Some(b"s"), &hex_decode(&hex))
            .await?;
        if i == 0 {
            // An Avro id in a Protobuf topic, and bytes without a frame: both poison.
            app.send_bytes(&input, Some(b"s"), &frame(avro_id, &[0, 8, 1]))
                .await?;
            app.send_bytes(&input, Some(b"s"), b"\x08\x01").await?;
        }
    }
    let seen: Vec<ShipmentSeen> = app.expect(&output, 2).await?;
    assert_eq!(
        seen,
        [
            ShipmentSeen {
                id: "s1".into(),
                items: 2,
                heaviest: "anvil".into()
            },
            ShipmentSeen {
                id: "s2".into(),
                items: 0,
                heaviest: String::new()
            }
        ]
    );
    // The second message of the file: message indexes [1], read by Confluent's deserializer.
    for record in app.records(&output)? {
        let bytes = record.value.as_deref().expect("a value");
        assert_eq!(
            bytes[5], 2,
            "message indexes [1]: count 1 and index 1, zigzag"
        );
        let read: serde_json::Value = serde_json::from_str(&crosscheck(
            &url,
            &[
                "decode-proto",
                &output,
                proto,
                "ShipmentSeen",
                &hex_encode(bytes),
            ],
        ))
        .expect("json");
        assert!(read["value"]["id"].as_str().is_some(), "{read}");
    }
    let reasons = dead_letter_reasons(&app, &format!("{app_id}-ships-dlq"), 2).await?;
    assert!(
        reasons[0].contains("AVRO schema, not PROTOBUF"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("magic byte"), "{reasons:?}");
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_broker_json_schema_and_protobuf_records_round_trip_with_confluents_client()
-> rill::Result<()> {
    let (Some(url), Some(bootstrap)) = (registry_url(), common::kafka_bootstrap()) else {
        return Ok(());
    };
    let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemas/shipments.proto");
    let run = common::run_id();
    let (orders_in, orders_out) = (format!("srk_orders_{run}"), format!("srk_seen_{run}"));
    let (ships_in, ships_out) = (format!("srk_ships_{run}"), format!("srk_shipped_{run}"));
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = common::kafka_app(&format!("srk_formats_{run}"), &bootstrap, dir.path())
        .schema_registry(&url)
        .agents([
            orders(&orders_in, &orders_out),
            shipments(&ships_in, &ships_out),
        ])
        .start()
        .await?;
    common::wait_ready(&worker, Duration::from_secs(60)).await;
    let order = serde_json::json!({"id": "o1", "amount": 12.5, "note": "gift"}).to_string();
    let order = crosscheck(
        &url,
        &["encode-json", &orders_in, schema_of::<Order>(), &order],
    );
    let ship = serde_json::json!({"id": "s1", "weight_grams": "9", "items": ["rope"]}).to_string();
    let ship = crosscheck(&url, &["encode-proto", &ships_in, proto, "Shipment", &ship]);
    tokio::task::block_in_place(|| {
        let producer = common::producer(&bootstrap);
        common::kafka::produce_bytes(
            &producer,
            &orders_in,
            &[(Some("o1".into()), hex_decode(&order))],
        );
        common::kafka::produce_bytes(
            &producer,
            &ships_in,
            &[(Some("s1".into()), hex_decode(&ship))],
        );
    });
    let read = |topic: &str| {
        common::read_topic(
            &bootstrap,
            topic,
            Duration::from_secs(60),
            Duration::from_secs(1),
            |got| !got.is_empty(),
        )
    };
    let seen = read(&orders_out);
    assert_eq!(seen.len(), 1);
    let hex = hex_encode(seen[0].value.as_deref().expect("a value"));
    let seen: serde_json::Value =
        serde_json::from_str(&crosscheck(&url, &["decode-json", &orders_out, &hex])).expect("json");
    assert_eq!(
        seen["value"],
        serde_json::json!({"id": "o1", "cents": 1250})
    );
    let shipped = read(&ships_out);
    assert_eq!(shipped.len(), 1);
    let hex = hex_encode(shipped[0].value.as_deref().expect("a value"));
    let shipped: serde_json::Value = serde_json::from_str(&crosscheck(
        &url,
        &["decode-proto", &ships_out, proto, "ShipmentSeen", &hex],
    ))
    .expect("json");
    assert_eq!(shipped["value"]["id"], "s1", "{shipped}");
    assert_eq!(shipped["value"]["heaviest"], "rope", "{shipped}");
    worker.shutdown().await
}

//! Record keys in the Confluent wire format (`#[record(key_codec = "avro")]`, `"json_schema"`)
//! against the real registry of `scripts/test.sh`: keys written by Confluent's Python
//! serializer place records in partitions by their framed bytes, and rill's tables find them
//! there (a table keyed by the key, updated in the record's partition; a table built from a
//! topic, looked up by the plain key); keys rill writes are read by Confluent's deserializer;
//! a key of a table's topic that is not framed is dead-lettered with the reason. On the
//! embedded log and on the broker, four partitions each.

mod common;

use std::time::Duration;

use common::registry::{crosscheck, registry_url, schema_of};
use rill::prelude::*;
use rill::{AgentSpec, TopicSpec};

const HERE: &str = "tests/schema_keys.rs";

#[record(codec = "avro", key_codec = "avro")]
#[derive(Debug, Clone, PartialEq)]
struct Click {
    #[record(key)]
    user: String,
    page: String,
}

#[record(codec = "avro", key_codec = "avro")]
#[derive(Debug, Clone, PartialEq)]
struct UserClicks {
    #[record(key)]
    user: String,
    clicks: i64,
}

#[record(codec = "json_schema", key_codec = "json_schema")]
#[derive(Debug, Clone, PartialEq, Default)]
struct Account {
    #[record(key)]
    id: i64,
    owner: String,
}

#[record(codec = "json_schema", key_codec = "json_schema")]
#[derive(Debug, Clone, PartialEq)]
struct Payment {
    #[record(key)]
    account: i64,
    cents: i64,
}

#[record(codec = "json_schema", key_codec = "json_schema")]
#[derive(Debug, Clone, PartialEq)]
struct Charged {
    #[record(key)]
    account: i64,
    owner: String,
    cents: i64,
}

/// Counts clicks per user in a table (updated in the record's partition), writing the count so
/// far keyed by the user.
fn clicks(input: &str, output: &str) -> AgentSpec {
    AgentSpec::new("clicks", HERE)
        .source(TopicSpec::of::<Click>(input, HERE))
        .sink(TopicSpec::of::<UserClicks>(output, HERE))
        .table("key_counts")
        .run(|mut ctx| async move {
            let mut clicks = ctx.stream::<Click>()?;
            let counts: Table<String, i64> = ctx.table("key_counts")?;
            let out = ctx.sink::<UserClicks>()?;
            while let Some(c) = clicks.next().await {
                let n = counts.update(c.user.clone(), |n| n + 1)?;
                let user = c.user.clone();
                out.send(&UserClicks { user, clicks: n }).await?;
            }
            Ok(())
        })
}

/// Charges payments to the accounts of a table built from `accounts`, looked up by key.
fn charges(payments: &str, accounts: &str, output: &str) -> AgentSpec {
    let accounts_topic = accounts.to_owned();
    AgentSpec::new("charges", HERE)
        .source(TopicSpec::of::<Payment>(payments, HERE))
        .table_of::<Account>(accounts)
        .sink(TopicSpec::of::<Charged>(output, HERE))
        .run(move |mut ctx| {
            let accounts_topic = accounts_topic.clone();
            async move {
                let accounts: Table<i64, Account> = ctx.table_of(&accounts_topic)?;
                let mut payments = ctx.stream::<Payment>()?;
                let out = ctx.sink::<Charged>()?;
                while let Some(p) = payments.next().await {
                    let owner = accounts.get(&p.account)?.map(|a| a.owner);
                    let owner = owner.unwrap_or_else(|| "unknown".to_owned());
                    let (account, cents) = (p.account, p.cents);
                    out.send(&Charged {
                        account,
                        owner,
                        cents,
                    })
                    .await?;
                }
                Ok(())
            }
        })
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `(key, value)` pairs framed by Confluent's Python client: keys as `format` writes
/// `key_schema`, values as `value_command` writes `value_schema`.
fn python_records(
    url: &str,
    topic: &str,
    (format, key_schema, keys): (&str, &str, &[String]),
    (value_command, value_schema, values): (&str, &str, &[String]),
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut args = vec!["encode-key", format, topic, key_schema];
    args.extend(keys.iter().map(String::as_str));
    let keys: Vec<Vec<u8>> = crosscheck(url, &args).lines().map(unhex).collect();
    let values: Vec<Vec<u8>> = values
        .iter()
        .map(|v| unhex(crosscheck(url, &[value_command, topic, value_schema, v]).trim()))
        .collect();
    assert_eq!(keys.len(), values.len());
    keys.into_iter().zip(values).collect()
}

/// Twelve clicks of four users, framed by Python: keys Avro strings.
fn python_clicks(url: &str, topic: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let users: Vec<String> = (0..12).map(|i| format!("\"user-{}\"", i % 4)).collect();
    let clicks: Vec<String> = (0..12)
        .map(|i| serde_json::json!({"user": format!("user-{}", i % 4), "page": format!("/p{i}")}))
        .map(|v| v.to_string())
        .collect();
    let mut args = vec!["encode", topic, schema_of::<Click>()];
    args.extend(clicks.iter().map(String::as_str));
    let values: Vec<Vec<u8>> = crosscheck(url, &args).lines().map(unhex).collect();
    let mut key_args = vec!["encode-key", "avro", topic, "\"string\""];
    key_args.extend(users.iter().map(String::as_str));
    let keys: Vec<Vec<u8>> = crosscheck(url, &key_args).lines().map(unhex).collect();
    keys.into_iter().zip(values).collect()
}

/// The user and count of each written `UserClicks`, its key read by Confluent's deserializer
/// (and checked to be the value's user).
fn read_user_clicks(url: &str, topic: &str, records: &[(Vec<u8>, Vec<u8>)]) -> Vec<(String, i64)> {
    let mut out: Vec<(String, i64)> = records
        .iter()
        .map(|(key, value)| {
            let key: serde_json::Value =
                serde_json::from_str(&crosscheck(url, &["decode-key", "avro", topic, &hex(key)]))
                    .expect("json");
            let value: serde_json::Value =
                serde_json::from_str(&crosscheck(url, &["decode", topic, &hex(value)]))
                    .expect("json");
            assert_eq!(key["value"], value["value"]["user"], "{key} {value}");
            let user = key["value"].as_str().expect("a string key").to_owned();
            (user, value["value"]["clicks"].as_i64().expect("clicks"))
        })
        .collect();
    out.sort();
    out
}

fn expected_counts() -> Vec<(String, i64)> {
    let mut expected: Vec<(String, i64)> = (0..4)
        .flat_map(|u| (1..=3).map(move |n| (format!("user-{u}"), n)))
        .collect();
    expected.sort();
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_keys_from_confluents_client_place_table_keys_and_rill_writes_keys_it_reads()
-> rill::Result<()> {
    let Some(url) = registry_url() else {
        return Ok(());
    };
    let run = common::run_id();
    let (input, output) = (format!("kc_clicks_{run}"), format!("kc_counts_{run}"));
    let dir = tempfile::tempdir().expect("tempdir");
    let app = App::new(&format!("kc_{run}"))
        .schema_registry(&url)
        .partitions(4)
        .agents([clicks(&input, &output)])
        .test_in(dir.path())
        .await?;
    for (key, value) in python_clicks(&url, &input) {
        app.send_bytes(&input, Some(&key), &value).await?;
    }
    app.expect::<UserClicks>(&output, 12).await?;
    let written: Vec<(Vec<u8>, Vec<u8>)> = app
        .records(&output)?
        .into_iter()
        .map(|r| {
            (
                r.key.expect("a key").to_vec(),
                r.value.expect("a value").to_vec(),
            )
        })
        .collect();
    assert_eq!(read_user_clicks(&url, &output, &written), expected_counts());
    // The table holds the plain keys.
    let mut table: Vec<(String, i64)> = app.table("key_counts")?;
    table.sort();
    let users: Vec<(String, i64)> = (0..4).map(|u| (format!("user-{u}"), 3)).collect();
    assert_eq!(table, users);
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_schema_integer_keys_feed_a_table_found_by_the_plain_key_and_poison_keys_are_dead_lettered()
-> rill::Result<()> {
    let Some(url) = registry_url() else {
        return Ok(());
    };
    let run = common::run_id();
    let (payments, accounts) = (format!("kj_pay_{run}"), format!("kj_acct_{run}"));
    let output = format!("kj_charged_{run}");
    let app_id = format!("kj_{run}");
    let dir = tempfile::tempdir().expect("tempdir");
    let app = App::new(&app_id)
        .schema_registry(&url)
        .partitions(4)
        .agents([charges(&payments, &accounts, &output)])
        .test_in(dir.path())
        .await?;
    let integer = rill::schema_registry::JSON_INTEGER;
    let ids: Vec<String> = (1..=4).map(|i| (i * 1000).to_string()).collect();
    let owners: Vec<String> = (1..=4)
        .map(|i| serde_json::json!({"id": i * 1000, "owner": format!("owner-{i}")}).to_string())
        .collect();
    let account_schema = schema_of::<Account>();
    let mut records = python_records(
        &url,
        &accounts,
        ("json", integer, &ids),
        ("encode-json", account_schema, &owners),
    );
    // A key without a frame: the table cannot read it.
    records.push((b"5000".to_vec(), records[0].1.clone()));
    for (key, value) in &records {
        app.send_bytes(&accounts, Some(key), value).await?;
    }
    app.wait_until("the accounts are in their table", |app| {
        app.table::<i64, Account>(&accounts)
            .is_ok_and(|t| t.len() == 4)
    })
    .await?;
    let amounts: Vec<String> = (1..=4)
        .map(|i| serde_json::json!({"account": i * 1000, "cents": i}).to_string())
        .collect();
    let paid = python_records(
        &url,
        &payments,
        ("json", integer, &ids),
        ("encode-json", schema_of::<Payment>(), &amounts),
    );
    for (key, value) in &paid {
        app.send_bytes(&payments, Some(key), value).await?;
    }
    let mut charged = app.expect::<Charged>(&output, 4).await?;
    charged.sort_by_key(|c| c.account);
    let owners: Vec<(i64, String)> = charged
        .iter()
        .map(|c| (c.account, c.owner.clone()))
        .collect();
    let expected: Vec<(i64, String)> = (1..=4).map(|i| (i * 1000, format!("owner-{i}"))).collect();
    assert_eq!(owners, expected, "every payment found its account");
    for record in app.records(&output)? {
        let key = hex(record.key.as_deref().expect("a key"));
        let read: serde_json::Value =
            serde_json::from_str(&crosscheck(&url, &["decode-key", "json", &output, &key]))
                .expect("json");
        assert!(
            read["value"].as_i64().is_some_and(|k| k % 1000 == 0),
            "{read}"
        );
    }
    let dead = app.records(&format!("{app_id}-charges-dlq"))?;
    assert_eq!(dead.len(), 1, "the unframed key");
    assert_eq!(dead[0].key.as_deref(), Some(b"5000".as_slice()));
    let reason = common::records::header(&dead[0], "rill.error");
    assert!(reason.contains("magic byte"), "{reason}");
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_broker_avro_keys_are_partitioned_as_a_java_producer_does_and_read_back()
-> rill::Result<()> {
    let (Some(url), Some(bootstrap)) = (registry_url(), common::kafka_bootstrap()) else {
        return Ok(());
    };
    let run = common::run_id();
    let (input, output) = (format!("kck_clicks_{run}"), format!("kck_counts_{run}"));
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = common::kafka_app(&format!("kck_{run}"), &bootstrap, dir.path())
        .schema_registry(&url)
        .partitions(4)
        .agents([clicks(&input, &output)])
        .start()
        .await?;
    common::wait_ready(&worker, Duration::from_secs(60)).await;
    let records = python_clicks(&url, &input);
    tokio::task::block_in_place(|| {
        // Partitioned by murmur2 over the framed key bytes, as Java's default partitioner does.
        let producer = common::producer(&bootstrap);
        for (key, value) in &records {
            let record: rdkafka::producer::BaseRecord<'_, [u8], [u8]> =
                rdkafka::producer::BaseRecord::to(&input)
                    .key(key.as_slice())
                    .payload(value.as_slice());
            common::kafka::enqueue(&producer, record);
        }
        rdkafka::producer::Producer::flush(&producer, Duration::from_secs(30)).expect("flush");
    });
    let out = common::read_topic(
        &bootstrap,
        &output,
        Duration::from_secs(60),
        Duration::from_secs(1),
        |got| got.len() >= 12,
    );
    let written: Vec<(Vec<u8>, Vec<u8>)> = out
        .into_iter()
        .map(|r| (r.key.expect("a key"), r.value.expect("a value")))
        .collect();
    assert_eq!(read_user_clicks(&url, &output, &written), expected_counts());
    worker.shutdown().await
}

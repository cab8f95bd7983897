//! What every Kafka client of a worker shares: librdkafka's logs routed into `tracing`
//! ([`LogContext`]), the base and producer configs built from rill's `Config`, rill's prefetch
//! bounds for consumers, and a record's headers in librdkafka's form. The other files of
//! `kafka` build on these; this one names none of them.

use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};

use crate::base::config::{Config, is_secret_property};
use crate::base::error::Error;
use crate::base::message::OutRecord;

/// How long metadata, admin and offset requests may take.
pub(super) const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Routes librdkafka's logs and errors into `tracing`.
#[derive(Clone, Default)]
pub(crate) struct LogContext;

impl ConsumerContext for LogContext {}

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", fac, "{message}");
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", fac, "{message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", %error, "{reason}");
    }
}

/// librdkafka's consumer-only properties (`C` in its CONFIGURATION.md, librdkafka 2.12; the
/// callbacks left out), sorted. A test checks the list against the linked librdkafka.
const CONSUMER_ONLY: &[&str] = &[
    "auto.commit.enable",
    "auto.commit.interval.ms",
    "auto.offset.reset",
    "check.crcs",
    "consume.callback.max.messages",
    "coordinator.query.interval.ms",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
    "fetch.error.backoff.ms",
    "fetch.max.bytes",
    "fetch.message.max.bytes",
    "fetch.min.bytes",
    "fetch.queue.backoff.ms",
    "fetch.wait.max.ms",
    "group.id",
    "group.instance.id",
    "group.protocol",
    "group.protocol.type",
    "group.remote.assignor",
    "heartbeat.interval.ms",
    "isolation.level",
    "max.partition.fetch.bytes",
    "max.poll.interval.ms",
    "offset.store.method",
    "offset.store.path",
    "offset.store.sync.interval.ms",
    "partition.assignment.strategy",
    "queued.max.messages.kbytes",
    "queued.min.messages",
    "session.timeout.ms",
];

/// librdkafka's producer-only properties (`P`), sorted, as [`CONSUMER_ONLY`].
const PRODUCER_ONLY: &[&str] = &[
    "acks",
    "batch.num.messages",
    "batch.size",
    "compression.codec",
    "compression.level",
    "compression.type",
    "delivery.report.only.error",
    "delivery.timeout.ms",
    "enable.gapless.guarantee",
    "enable.idempotence",
    "linger.ms",
    "message.send.max.retries",
    "message.timeout.ms",
    "partitioner",
    "produce.offset.report",
    "queue.buffering.backpressure.threshold",
    "queue.buffering.max.kbytes",
    "queue.buffering.max.messages",
    "queue.buffering.max.ms",
    "queuing.strategy",
    "request.required.acks",
    "request.timeout.ms",
    "retries",
    "sticky.partitioning.linger.ms",
    "transaction.timeout.ms",
    "transactional.id",
];

/// The clients a librdkafka property is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientKind {
    Consumer,
    Producer,
    Any,
}

fn client_kind(property: &str) -> ClientKind {
    if CONSUMER_ONLY.binary_search(&property).is_ok() {
        ClientKind::Consumer
    } else if PRODUCER_ONLY.binary_search(&property).is_ok() {
        ClientKind::Producer
    } else {
        ClientKind::Any
    }
}

/// Sets the user's properties (`-X`, `RILL_KAFKA_*`) meant for `kind` of client. rill has one
/// list of properties for all its clients, and librdkafka warns (`CONFWARN`) at every client
/// given a property of the other kind: a consumer's go to consumers only, a producer's to
/// producers only, the others (security, timeouts, `client.id`...) to every client.
fn set_users(client: &mut ClientConfig, config: &Config, kind: ClientKind) {
    for (k, v) in &config.kafka {
        if client_kind(k) == kind {
            client.set(k, v);
        }
    }
}

/// The config every client of the worker starts from (the admin client and the settings
/// probe use it as it is): the bootstrap servers, a `client.id` naming the app, and the
/// user's properties for any client.
pub(super) fn base_config(config: &Config, bootstrap: &str) -> ClientConfig {
    let mut base = ClientConfig::new();
    base.set("bootstrap.servers", bootstrap);
    base.set("client.id", format!("rill-{}", config.app_id));
    set_users(&mut base, config, ClientKind::Any);
    // rill creates every topic it uses before the first send or fetch, with the partitions
    // and settings it needs. A broker with `auto.create.topics.enable=true` (Kafka's
    // default) would otherwise create a topic on a producer's metadata request with its
    // own `num.partitions`, before rill's admin call (`Config::validate` refuses the
    // property from the user).
    base.set("allow.auto.create.topics", "false");
    base
}

/// The error of creating a client from `config`, with the values of secret properties
/// (`sasl.password`, `ssl.key.password`, `sasl.oauthbearer.*`...) masked: librdkafka quotes
/// an invalid value in its message.
pub(super) fn creation_error(
    config: &ClientConfig,
    context: impl Into<String>,
    e: KafkaError,
) -> Error {
    let e = match e {
        KafkaError::ClientCreation(message) => KafkaError::ClientCreation(redact(config, message)),
        other => other,
    };
    Error::kafka(context, e)
}

fn redact(config: &ClientConfig, mut text: String) -> String {
    // `config_map` masks a few keys itself: take the names from it, the values from `get`.
    for name in config.config_map().into_keys() {
        match config.get(name) {
            Some(value) if is_secret_property(name) && !value.is_empty() => {
                text = text.replace(value, "[redacted]");
            }
            _ => {}
        }
    }
    text
}

/// The config of the worker's producers (the transactional one starts from it too).
pub(super) fn producer_config(base: &ClientConfig, config: &Config) -> ClientConfig {
    let mut producer_config = base.clone();
    producer_config
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        // Deliveries wait out broker outages (librdkafka retries with backoff) instead of
        // failing after 5 minutes: a commit step waits, nothing is dropped.
        .set("message.timeout.ms", "0");
    // The user's properties win (`Config::validate` refused `enable.idempotence=false`).
    set_users(&mut producer_config, config, ClientKind::Producer);
    producer_config
}

/// The config every consumer of the worker starts from: `base` and the user's consumer
/// properties, set before rill's own consumer settings, which check for them.
pub(super) fn consumer_base(base: &ClientConfig, config: &Config) -> ClientConfig {
    let mut consumer = base.clone();
    set_users(&mut consumer, config, ClientKind::Consumer);
    consumer
}

/// rill's prefetch bounds for its consumers, where the user set none (`-X`, `RILL_KAFKA_*`).
///
/// librdkafka decompresses a whole fetch response into one op of a few hundred bytes per
/// message, and its byte limits count payloads only: with its defaults (50 MiB fetches,
/// 100,000 messages per partition) a worker reading a backlog of small records held ~140 MiB
/// of prefetched messages. One MiB fetches and 10,000 messages per partition bound that to a
/// few tens of MiB: at full speed the stateless benchmark went from ~150 MiB anonymous RSS to
/// ~50 MiB, and got faster (`bench/results`).
///
/// Once a partition's queue is full librdkafka waits `fetch.queue.backoff.ms` (1 s by
/// default) before it fetches for it again. rill waits 1 ms: the agent empties a queue of
/// 1,000 records in a few milliseconds, and with 5 ms a join reading a backlog written in
/// batches of ~9,600 records slept a third of its time in waits of 3-7 ms (189-196k events/s,
/// 256-262k with 1 ms and the same CPU; docs/decisions.md, "Bounded Kafka prefetch").
///
/// A consumer whose partitions are held in step (`aligned`: an agent over several topics,
/// `io/transport/align.rs`) prefetches less: holding a partition pauses it, and librdkafka
/// drops what it had prefetched for it, to be fetched again on resume. With 1,000 messages and
/// 128 KiB per partition fetch, the suite's join refetched far less and ran ~12% faster
/// (docs/decisions.md, "An agent's topics are read in step in event time").
pub(super) fn prefetch_defaults(config: &mut ClientConfig, aligned: bool) {
    // A fetch must hold the largest message the broker may return.
    let message_max: usize = config
        .get("message.max.bytes")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let fetch_max = (1usize << 20).max(message_max).to_string();
    let mut defaults = vec![
        ("fetch.max.bytes", fetch_max.as_str()),
        (
            "queued.min.messages",
            if aligned { "1000" } else { "10000" },
        ),
        ("fetch.queue.backoff.ms", "1"),
    ];
    if aligned {
        defaults.push(("max.partition.fetch.bytes", "131072"));
    }
    for (key, value) in defaults {
        if config.get(key).is_none() {
            config.set(key, value);
        }
    }
}

/// A record's headers as librdkafka's (none when it has none).
pub(super) fn owned_headers(r: &OutRecord) -> Option<OwnedHeaders> {
    (!r.headers.is_empty()).then(|| {
        r.headers.0.iter().fold(
            OwnedHeaders::new_with_capacity(r.headers.0.len()),
            |h, (k, v)| {
                h.insert(Header {
                    key: k,
                    value: v.as_deref(),
                })
            },
        )
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};

    use rdkafka::consumer::BaseConsumer;
    use rdkafka::producer::BaseProducer;

    use super::*;

    /// Keeps the warnings librdkafka logs.
    #[derive(Clone, Default)]
    struct Warnings(Arc<Mutex<Vec<String>>>);

    impl ClientContext for Warnings {
        fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
            if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
                let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
                seen.push(format!("{fac}: {message}"));
            }
        }
    }

    impl ConsumerContext for Warnings {}

    impl rdkafka::producer::ProducerContext for Warnings {
        type DeliveryOpaque = ();
        fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, (): ()) {}
    }

    #[test]
    fn each_client_gets_the_users_properties_of_its_kind_and_librdkafka_warns_of_none() {
        let mut config = Config::new("kinds");
        for kv in [
            "queued.max.messages.kbytes=65536",
            "session.timeout.ms=30000",
            "queue.buffering.max.kbytes=65536",
            "linger.ms=20",
            "socket.keepalive.enable=true",
        ] {
            config.set_kafka_property(kv).unwrap();
        }
        let base = base_config(&config, "127.0.0.1:9");
        let mut producer = producer_config(&base, &config);
        let mut consumer = consumer_base(&base, &config);
        consumer.set("group.id", "kinds");
        let has = |c: &ClientConfig, k: &str| c.get(k).is_some();
        for c in [&base, &producer, &consumer] {
            assert!(has(c, "socket.keepalive.enable"));
        }
        assert!(!has(&base, "linger.ms") && !has(&base, "session.timeout.ms"));
        assert_eq!(
            producer.get("linger.ms"),
            Some("20"),
            "the user's value wins"
        );
        assert!(!has(&producer, "queued.max.messages.kbytes"));
        assert!(has(&consumer, "queued.max.messages.kbytes") && !has(&consumer, "linger.ms"));

        let warnings = Warnings::default();
        producer.set_log_level(RDKafkaLogLevel::Warning);
        consumer.set_log_level(RDKafkaLogLevel::Warning);
        let p: BaseProducer<Warnings> = producer.create_with_context(warnings.clone()).unwrap();
        let c: BaseConsumer<Warnings> = consumer.create_with_context(warnings.clone()).unwrap();
        // librdkafka queues its logs, and a poll serves them.
        let _ = (
            p.poll(Duration::from_millis(100)),
            c.poll(Duration::from_millis(100)),
        );
        let seen = warnings.0.lock().unwrap().clone();
        assert!(seen.iter().all(|w| !w.contains("CONFWARN")), "{seen:?}");
    }

    #[test]
    #[allow(
        unsafe_code,
        reason = "librdkafka prints its table of properties to a C `FILE` only"
    )]
    fn the_lists_of_consumer_and_producer_properties_are_the_linked_librdkafkas() {
        use std::ffi::{CString, c_char, c_int, c_void};
        unsafe extern "C" {
            fn fopen(path: *const c_char, mode: *const c_char) -> *mut c_void;
            fn fclose(file: *mut c_void) -> c_int;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("properties.md");
        let c_path = CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a file opened for writing, handed to librdkafka, then closed once.
        unsafe {
            let file = fopen(c_path.as_ptr(), c"w".as_ptr());
            assert!(!file.is_null());
            rdkafka::bindings::rd_kafka_conf_properties_show(file.cast());
            fclose(file);
        }
        let table = std::fs::read_to_string(&path).unwrap();
        let (mut consumer, mut producer) = (BTreeSet::new(), BTreeSet::new());
        for row in table.lines() {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            // Callbacks (`rebalance_cb`...) cannot be set from a string.
            let Some(&[name, kind]) = cells.get(..2) else {
                continue;
            };
            match kind {
                _ if name.contains('_') => {}
                "C" => _ = consumer.insert(name.to_owned()),
                "P" => _ = producer.insert(name.to_owned()),
                _ => {}
            }
        }
        let set = |list: &[&str]| list.iter().map(|&s| s.to_owned()).collect::<BTreeSet<_>>();
        assert!(consumer.len() > 20 && producer.len() > 20, "{table}");
        assert_eq!(set(CONSUMER_ONLY), consumer);
        assert_eq!(set(PRODUCER_ONLY), producer);
        assert!(CONSUMER_ONLY.is_sorted() && PRODUCER_ONLY.is_sorted());
    }

    #[test]
    fn a_client_creation_error_does_not_repeat_a_secret() {
        let mut config = ClientConfig::new();
        config
            .set("sasl.password", "hunter2")
            .set("sasl.oauthbearer.config", "scope=x secret=abc")
            .set("sasl.username", "alice");
        let e = KafkaError::ClientCreation(
            "Invalid value \"hunter2\" near \"scope=x secret=abc\" for alice".into(),
        );
        let shown = creation_error(&config, "creating a producer", e).to_string();
        assert!(
            !shown.contains("hunter2") && !shown.contains("secret=abc"),
            "{shown}"
        );
        assert!(
            shown.contains("alice") && shown.contains("creating a producer"),
            "{shown}"
        );
    }

    #[test]
    fn an_aligned_consumer_prefetches_less_and_a_users_values_win() {
        let defaults = |base: &ClientConfig, aligned: bool| {
            let mut config = base.clone();
            prefetch_defaults(&mut config, aligned);
            [
                "queued.min.messages",
                "max.partition.fetch.bytes",
                "fetch.max.bytes",
                "fetch.queue.backoff.ms",
            ]
            .map(|k| config.get(k).map(str::to_owned))
        };
        let none = ClientConfig::new();
        let one_mib = Some("1048576".to_owned());
        let one_ms = Some("1".to_owned());
        assert_eq!(
            defaults(&none, false),
            [
                Some("10000".to_owned()),
                None,
                one_mib.clone(),
                one_ms.clone()
            ]
        );
        assert_eq!(
            defaults(&none, true),
            [
                Some("1000".to_owned()),
                Some("131072".to_owned()),
                one_mib,
                one_ms
            ]
        );
        let mut user = ClientConfig::new();
        user.set("queued.min.messages", "50")
            .set("max.partition.fetch.bytes", "4096")
            .set("fetch.queue.backoff.ms", "20");
        let users = defaults(&user, true);
        assert_eq!(
            [&users[..2], &users[3..]].concat(),
            [
                Some("50".to_owned()),
                Some("4096".to_owned()),
                Some("20".to_owned())
            ]
        );
    }
}

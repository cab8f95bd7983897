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

/// The config every client of the worker starts from: the bootstrap servers, a `client.id`
/// naming the app, and the user's properties (`-X`, `RILL_KAFKA_*`).
pub(super) fn base_config(config: &Config, bootstrap: &str) -> ClientConfig {
    let mut base = ClientConfig::new();
    base.set("bootstrap.servers", bootstrap);
    base.set("client.id", format!("rill-{}", config.app_id));
    for (k, v) in &config.kafka {
        base.set(k, v);
    }
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
    for (k, v) in &config.kafka {
        // The user's properties win (`Config::validate` refused `enable.idempotence=false`).
        producer_config.set(k, v);
    }
    producer_config
}

/// rill's prefetch bounds for its consumers, where the user set none (`-X`, `RILL_KAFKA_*`).
///
/// librdkafka decompresses a whole fetch response into one op of a few hundred bytes per
/// message, and its byte limits count payloads only: with its defaults (50 MiB fetches,
/// 100,000 messages per partition) a worker reading a backlog of small records held ~140 MiB
/// of prefetched messages. One MiB fetches and 10,000 messages per partition bound that to a
/// few tens of MiB, and a 5 ms queue backoff (librdkafka waits `fetch.queue.backoff.ms`,
/// 1 s by default, once a partition's queue is full) keeps fetching as soon as the agent has
/// taken records: at full speed the stateless benchmark went from ~150 MiB anonymous RSS to
/// ~50 MiB, and got faster (`bench/results`).
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
        ("fetch.queue.backoff.ms", "5"),
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
    use super::*;

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
            ]
            .map(|k| config.get(k).map(str::to_owned))
        };
        let none = ClientConfig::new();
        let one_mib = Some("1048576".to_owned());
        assert_eq!(
            defaults(&none, false),
            [Some("10000".to_owned()), None, one_mib.clone()]
        );
        assert_eq!(
            defaults(&none, true),
            [Some("1000".to_owned()), Some("131072".to_owned()), one_mib]
        );
        let mut user = ClientConfig::new();
        user.set("queued.min.messages", "50")
            .set("max.partition.fetch.bytes", "4096");
        assert_eq!(
            defaults(&user, true)[..2],
            [Some("50".to_owned()), Some("4096".to_owned())]
        );
    }
}

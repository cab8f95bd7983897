//! The `dlq` commands: list what agents dead-lettered, and replay dead letters to their source
//! topics once the cause is fixed. They read the dead-letter topics directly (Kafka or the
//! embedded log), so they work while workers run.

use std::io::Write;
use std::sync::Arc;

use crate::base::config::Config;
use crate::base::error::{Error, Result};
use crate::base::failure::{self, headers};
use crate::base::message::{Headers, OutRecord, RawRecord, now_millis};
use crate::base::spec::{Internal, TopicSpec};
use crate::io::transport::{Deliveries, Delivery, Log};
use crate::wiring::agent::AgentSpec;

/// Newest errors `dlq list` shows per agent.
const NEWEST: usize = 5;

/// Which dead letters to replay.
#[derive(Debug, Default, Clone)]
pub(crate) struct Selection {
    /// Only records that failed at or after this time (ms since the epoch).
    pub(crate) from: Option<i64>,
    /// Only records whose error message or value contains this text.
    pub(crate) filter: Option<String>,
}

/// Parses `--from`: milliseconds since the epoch, an age such as `30s`, `15m`, `2h`, `1d`, or
/// an RFC 3339 time (see `time::parse_instant`).
pub(crate) fn parse_from(text: &str) -> Result<i64> {
    crate::base::time::parse_instant(text).ok_or_else(|| {
        Error::config(
            "--from",
            format!(
                "`{}` is none of milliseconds since the epoch, an age like `30m`, `2h` or `1d`, or a time like `2026-12-01T08:00:00Z`",
                text.trim()
            ),
        )
    })
}

fn topic_of(spec: &AgentSpec, config: &Config) -> String {
    failure::dead_letter_topic(&config.app_id, spec.name(), spec.dead_letter.as_deref())
}

/// Every record of a topic, partition by partition.
async fn read_all(
    transport: &Arc<dyn Log>,
    config: &Config,
    topic: &str,
) -> Result<Vec<RawRecord>> {
    let spec = TopicSpec::internal(topic, Internal::DeadLetters, None, "dead letters");
    let partitions = transport
        .ensure_topics(std::slice::from_ref(&spec), config.partitions)
        .await?
        .get(topic)
        .copied()
        .unwrap_or(config.partitions);
    let reader = transport.clone();
    let name: Arc<str> = Arc::from(topic);
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for p in 0..partitions {
            let (low, high) = reader.watermarks(&name, p)?;
            reader.read_range(&name, p, low, high, &mut |batch| {
                out.extend(batch);
                Ok(())
            })?;
        }
        Ok(out)
    })
    .await
    .map_err(|e| Error::Shutdown(format!("reading {topic}: {e}")))?
}

fn text(r: &RawRecord, name: &str) -> String {
    r.headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

fn failed_at(r: &RawRecord) -> i64 {
    text(r, headers::FAILED_AT).parse().unwrap_or(0)
}

/// `dlq list`: per agent, how many records its dead-letter topic holds and the newest errors.
pub(crate) async fn list(
    agents: &[AgentSpec],
    config: &Config,
    transport: &Arc<dyn Log>,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let io = |e| Error::io("writing to stdout", e);
    for spec in agents {
        let topic = topic_of(spec, config);
        let mut records = read_all(transport, config, &topic).await?;
        writeln!(
            out,
            "{} → {topic}: {} dead letters",
            spec.name(),
            records.len()
        )
        .map_err(io)?;
        records.sort_by_key(|r| std::cmp::Reverse(failed_at(r)));
        for r in records.iter().take(NEWEST) {
            writeln!(
                out,
                "  {} {:<6} {}[{}]@{} attempts={} {}",
                failed_at(r),
                text(r, headers::ERROR_KIND),
                text(r, headers::SOURCE_TOPIC),
                text(r, headers::SOURCE_PARTITION),
                text(r, headers::SOURCE_OFFSET),
                text(r, headers::ATTEMPTS),
                text(r, headers::ERROR),
            )
            .map_err(io)?;
        }
    }
    Ok(())
}

/// The record to send back for a dead letter: its key, value and original headers, to the
/// topic and partition it was first read from.
fn replayed(r: &RawRecord) -> OutRecord {
    let (topic, partition, _) = failure::origin(r);
    OutRecord {
        topic: Arc::from(topic.as_str()),
        partition: Some(partition),
        key: r.key.as_deref().map(<[u8]>::to_vec),
        value: r.value.as_deref().map(<[u8]>::to_vec),
        timestamp: failure::original_timestamp(r).unwrap_or_else(now_millis),
        headers: Headers(
            r.headers
                .0
                .iter()
                .filter(|(name, _)| !name.starts_with("rill."))
                .cloned()
                .collect(),
        ),
    }
}

fn selected(r: &RawRecord, selection: &Selection) -> bool {
    if selection.from.is_some_and(|from| failed_at(r) < from) {
        return false;
    }
    match &selection.filter {
        None => true,
        Some(f) => {
            text(r, headers::ERROR).contains(f.as_str())
                || r.value
                    .as_deref()
                    .is_some_and(|v| String::from_utf8_lossy(v).contains(f.as_str()))
        }
    }
}

/// `dlq replay`: sends the selected dead letters of `agent` back to their source topics.
/// Dead letters stay in the dead-letter topic (a log); use `--from` to avoid replaying the
/// same ones twice.
pub(crate) async fn replay(
    spec: &AgentSpec,
    config: &Config,
    transport: &Arc<dyn Log>,
    selection: &Selection,
) -> Result<usize> {
    let topic = topic_of(spec, config);
    let records = read_all(transport, config, &topic).await?;
    let mut pending = Vec::new();
    let batch = Deliveries::new();
    for r in records.iter().filter(|r| selected(r, selection)) {
        pending.push(transport.enqueue(replayed(r), &batch).await?);
    }
    let n = pending.len();
    transport.deliver(Delivery::sends(pending)).await?;
    tracing::info!(agent = spec.name(), dead_letter_topic = %topic, replayed = n, "replayed dead letters to their source topics");
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::message::Bytes;

    fn dead(error: &str, failed_at: i64) -> RawRecord {
        RawRecord {
            topic: Arc::from("app-a-dlq"),
            partition: 0,
            offset: 0,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"{\"url\":\"/test\"}")),
            timestamp: Some(5),
            headers: Headers(vec![
                ("trace".into(), Some(b"t".to_vec())),
                (headers::ERROR.into(), Some(error.as_bytes().to_vec())),
                (
                    headers::FAILED_AT.into(),
                    Some(failed_at.to_string().into_bytes()),
                ),
                (headers::SOURCE_TOPIC.into(), Some(b"views".to_vec())),
                (headers::SOURCE_PARTITION.into(), Some(b"2".to_vec())),
                (headers::SOURCE_OFFSET.into(), Some(b"9".to_vec())),
            ]),
        }
    }

    #[test]
    fn replay_sends_the_original_record_back_where_it_came_from() {
        let out = replayed(&dead("boom", 100));
        assert_eq!(&*out.topic, "views");
        assert_eq!(out.partition, Some(2));
        assert_eq!(out.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(out.headers.0.len(), 1, "rill's headers are dropped");
    }

    #[test]
    fn selection_by_time_and_text() {
        let r = dead("timeout calling the bank", 1_000);
        assert!(selected(&r, &Selection::default()));
        assert!(selected(
            &r,
            &Selection {
                from: Some(1_000),
                filter: None
            }
        ));
        assert!(!selected(
            &r,
            &Selection {
                from: Some(1_001),
                filter: None
            }
        ));
        let by = |f: &str| Selection {
            from: None,
            filter: Some(f.into()),
        };
        assert!(selected(&r, &by("timeout")));
        assert!(selected(&r, &by("/test")), "matches the value too");
        assert!(!selected(&r, &by("parse")));
    }

    #[test]
    fn from_takes_epoch_millis_or_an_age() {
        assert_eq!(parse_from("1700000000000").unwrap(), 1_700_000_000_000);
        let hour_ago = parse_from("1h").unwrap();
        assert!((now_millis() - hour_ago - 3_600_000).abs() < 1_000);
        assert!(parse_from("yesterday").is_err());
    }
}

//! Records the tests send and read back: the orders of the failure tests (and malformed ones),
//! the window count the window tests' agents emit, URLs that cover every partition, event times
//! of now; sending many, and reading a topic's records in order and their headers; the
//! `page_totals` example's page views and the running totals it prints.

use std::time::{SystemTime, UNIX_EPOCH};

use rill::RawRecord;
use rill::prelude::*;

/// An order of the failure tests: its `url` says what becomes of it (see [`handle`]).
#[record]
#[derive(Debug, Clone)]
pub(crate) struct Order {
    pub(crate) id: u64,
    pub(crate) url: String,
}

/// What an agent of the failure tests sends for an order it handled.
#[record]
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Done {
    pub(crate) id: u64,
}

/// Handles an order as `url` says: "fail" returns `Err`, "panic" panics, anything else
/// succeeds and sends [`Done`].
pub(crate) async fn handle(order: &Order, out: &Sink<Done>) -> rill::Result<()> {
    if order.url.contains("fail") {
        return Err(rill::Error::user(format!(
            "cannot handle order {}",
            order.id
        )));
    }
    if order.url.contains("panic") {
        panic!("order {} blew up", order.id);
    }
    out.send(&Done { id: order.id }).await
}

/// The `max_record_bytes` the failure tests configure: a value above it fails before decoding.
pub(crate) const MAX_RECORD_BYTES: usize = 4096;

/// Six ways an [`Order`] can be malformed, by index: the value, and what is wrong with it.
pub(crate) fn malformed(i: u64) -> (Vec<u8>, &'static str) {
    match i % 6 {
        0 => (b"{not json".to_vec(), "bad json"),
        1 => (
            format!(r#"{{"id":"{i}","url":"/"}}"#).into_bytes(),
            "wrong type",
        ),
        2 => (format!(r#"{{"id":{i}}}"#).into_bytes(), "missing field"),
        3 => {
            let mut v = format!(r#"{{"id":{i},"url":""#).into_bytes();
            v.extend_from_slice(&[0xff, 0xfe]);
            v.extend_from_slice(b"\"}");
            (v, "invalid utf-8")
        }
        4 => (Vec::new(), "empty"),
        _ => {
            let v = format!(r#"{{"id":{i},"url":"/{}"}}"#, "x".repeat(5000)).into_bytes();
            assert!(v.len() > MAX_RECORD_BYTES);
            (v, "oversized")
        }
    }
}

/// A window result as a record (no timestamp field: it carries the event time of the record
/// being processed when it was sent).
#[record]
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Count {
    pub(crate) key: String,
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) value: u64,
}

impl From<WindowResult<String, u64>> for Count {
    fn from(w: WindowResult<String, u64>) -> Self {
        Count {
            key: w.key,
            start: w.start,
            end: w.end,
            value: w.value,
        }
    }
}

/// The count of `key`'s window `[start, end)`.
pub(crate) fn count(key: &str, start: i64, end: i64, value: u64) -> Count {
    Count {
        key: key.into(),
        start,
        end,
        value,
    }
}

/// `each` URLs (`{prefix}0`, `{prefix}1`, ...) whose keys fall in each of `partitions`
/// partitions, so that records of them move every partition's watermark.
pub(crate) fn covering_urls(prefix: &str, partitions: i32, each: usize) -> Vec<String> {
    let mut per_partition = vec![0; usize::try_from(partitions).expect("partitions")];
    let mut urls = Vec::new();
    for k in 0.. {
        let url = format!("{prefix}{k}");
        let p = rill::partitioner::partition_for_key(url.as_bytes(), partitions) as usize;
        if per_partition[p] < each {
            per_partition[p] += 1;
            urls.push(url);
        }
        if urls.len() == per_partition.len() * each {
            break;
        }
    }
    urls
}

/// Now, in ms since the epoch.
pub(crate) fn now_ms() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    i64::try_from(now).expect("ms")
}

/// Sends `values` to `topic` in order, then makes them visible.
pub(crate) async fn send_all<V: Record>(
    producer: &Producer,
    topic: &str,
    values: impl IntoIterator<Item = V>,
) -> rill::Result<()> {
    for value in values {
        producer.send_to(topic, &value).await?;
    }
    producer.flush().await
}

/// A header of a record read from the embedded log, as text (empty when it has none).
pub(crate) fn header(record: &RawRecord, name: &str) -> String {
    String::from_utf8_lossy(record.headers.get(name).unwrap_or_default()).into_owned()
}

/// Waits (as `TestApp::expect` does) until `topic` holds at least `n` records and returns them
/// decoded and sorted.
pub(crate) async fn sorted<V: Record + Ord>(
    app: &TestApp,
    topic: &str,
    n: usize,
) -> rill::Result<Vec<V>> {
    let mut got: Vec<V> = app.expect(topic, n).await?;
    got.sort();
    Ok(got)
}

/// Page views of the `page_totals` example, view `i` on URL `/page/<i % urls>`, keyed by URL.
pub(crate) fn page_views(
    range: std::ops::Range<usize>,
    urls: usize,
) -> Vec<(Option<String>, String)> {
    range
        .map(|i| {
            let url = format!("/page/{}", i % urls);
            let value = serde_json::json!({"user_id": format!("u{i}"), "url": url, "view_time": 1.7e9 + i as f64});
            (Some(url), value.to_string())
        })
        .collect()
}

/// The highest running total the `page_totals` example printed per URL.
pub(crate) fn printed_totals(lines: &[String]) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for line in lines {
        let parsed = line
            .strip_prefix("Running total for ")
            .and_then(|r| r.rsplit_once(": "))
            .and_then(|(url, n)| Some((url, n.parse::<u64>().ok()?)));
        if let Some((url, n)) = parsed {
            let e: &mut u64 = out.entry(url.to_owned()).or_default();
            *e = (*e).max(n);
        }
    }
    out
}

/// Checks running counts read back as `<key>=<count>` lines: `keys` keys, each with the
/// counts 1, 2, ... `each`, every one exactly once (nothing lost, nothing counted twice).
pub(crate) fn assert_counted_exactly(out: &[super::kafka::Consumed], keys: usize, each: u64) {
    if let Some(wrong) = miscounted(out, keys, each) {
        panic!("{wrong}");
    }
}

/// What [`assert_counted_exactly`] would fail on, if anything.
pub(crate) fn miscounted(out: &[super::kafka::Consumed], keys: usize, each: u64) -> Option<String> {
    let mut seen: std::collections::BTreeMap<&str, Vec<u64>> = Default::default();
    for (_, _, line) in out {
        let (key, n) = line.split_once('=').expect("key=count");
        seen.entry(key)
            .or_default()
            .push(n.parse().expect("a count"));
    }
    if seen.len() != keys {
        return Some(format!("{} keys counted, not {keys}", seen.len()));
    }
    let expected = (1..=each).collect::<Vec<u64>>();
    seen.into_iter().find_map(|(key, mut counts)| {
        counts.sort_unstable();
        (counts != expected).then(|| format!("the counts of {key}: {counts:?}, not 1..={each}"))
    })
}

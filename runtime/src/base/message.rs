//! The untyped record as the transports carry it, and the typed `Event` agents can ask for.

use std::sync::Arc;

use crate::base::codec::Codec;
use crate::base::error::{Error, Result};
use crate::base::record::Record;

/// Names of the headers rill's components add for each other (the ones users read on dead
/// letters are `failure::headers`).
pub(crate) mod header {
    /// The topic a repartitioned record was read from, when the agent reads several (a join's
    /// sides share one repartition topic).
    pub(crate) const TOPIC: &str = "rill.topic";
    /// Where the reply to a request goes (`Requests::ask`, `Request::reply`).
    pub(crate) const REPLY_TO: &str = "rill.reply_to";
    /// Which request a reply answers.
    pub(crate) const CORRELATION_ID: &str = "rill.correlation_id";
    /// On a reply: the agent refused the request, with this reason (`Request::fail`).
    pub(crate) const REPLY_ERROR: &str = "rill.reply_error";
}

pub use bytes::Bytes;

/// Message headers, in order, as Kafka carries them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, Option<Vec<u8>>)>);

impl Headers {
    /// The first header with this name.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Appends a header.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) {
        self.0.push((name.into(), Some(value.into())));
    }

    /// True when there are no headers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A record read from a topic partition: what the transports hand to the runtime.
#[derive(Debug, Clone)]
pub struct RawRecord {
    /// Topic name.
    pub topic: Arc<str>,
    /// Partition number.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
    /// Message key (a slice of the fetched batch's buffer: `Bytes` derefs to `[u8]`).
    pub key: Option<Bytes>,
    /// Message value (`None` for a tombstone).
    pub value: Option<Bytes>,
    /// Message timestamp, milliseconds since the epoch.
    pub timestamp: Option<i64>,
    /// Message headers.
    pub headers: Headers,
}

impl RawRecord {
    /// The record with its key and value in buffers of their own: one kept for long (parked
    /// for a retry) must not keep its whole fetched batch's buffer alive.
    pub(crate) fn detached(mut self) -> Self {
        self.key = self.key.map(|k| Bytes::copy_from_slice(&k));
        self.value = self.value.map(|v| Bytes::copy_from_slice(&v));
        self
    }
}

/// A record to be written: the transports assign partition (when `None`) and offset.
#[derive(Debug, Clone)]
pub struct OutRecord {
    /// Destination topic.
    pub topic: Arc<str>,
    /// Fixed partition, or `None` to partition by key (murmur2) or spread keyless records.
    pub partition: Option<i32>,
    /// Message key.
    pub key: Option<Vec<u8>>,
    /// Message value.
    pub value: Option<Vec<u8>>,
    /// Message timestamp (event time when the record has one), milliseconds since the epoch.
    pub timestamp: i64,
    /// Message headers.
    pub headers: Headers,
}

/// Metadata of the record an event came from.
#[derive(Debug, Clone)]
pub struct Metadata {
    /// Topic name.
    pub topic: Arc<str>,
    /// Partition number.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
    /// Message key bytes.
    pub key: Option<Vec<u8>>,
    /// Message timestamp, milliseconds since the epoch.
    pub timestamp: Option<i64>,
    /// Message headers.
    pub headers: Headers,
}

impl Metadata {
    pub(crate) fn of(raw: &RawRecord) -> Self {
        Metadata {
            topic: raw.topic.clone(),
            partition: raw.partition,
            offset: raw.offset,
            key: raw.key.as_deref().map(<[u8]>::to_vec),
            timestamp: raw.timestamp,
            headers: raw.headers.clone(),
        }
    }
}

/// A decoded record with its metadata, yielded by `Stream::events()` (Faust's `stream.events()`).
#[derive(Debug, Clone)]
pub struct Event<T> {
    /// The decoded value.
    pub value: T,
    /// Where it came from.
    pub meta: Metadata,
}

impl<T> std::ops::Deref for Event<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// Milliseconds since the epoch, now.
pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// An owned record of `value` (a `Sink` passes its topic's `Arc`: no allocation for the name),
/// stamped with [`out_timestamp`] (`current`: the event time of the record being processed).
pub(crate) fn encode_out<V: Record>(
    topic: impl AsRef<str> + Into<Arc<str>>,
    codec: Codec,
    key: Option<Vec<u8>>,
    value: &V,
    current: Option<i64>,
) -> Result<OutRecord> {
    let codec_error = |source| Error::Codec {
        topic: topic.as_ref().to_owned(),
        source,
    };
    let bytes =
        crate::base::record::encode_vec_for(topic.as_ref(), codec, value).map_err(codec_error)?;
    let key = match key {
        Some(plain) if codec.is_registry() => Some(
            crate::base::registry_keys::frame_key(topic.as_ref(), plain.into())
                .map_err(codec_error)?
                .into_owned(),
        ),
        key => key,
    };
    Ok(OutRecord {
        topic: topic.into(),
        partition: None,
        key,
        value: Some(bytes),
        timestamp: out_timestamp(value, current),
        headers: Headers::default(),
    })
}

/// A sent record's timestamp: the value's event time, else the event time of the record being
/// processed (`current`), else now.
pub(crate) fn out_timestamp<V: Record>(value: &V, current: Option<i64>) -> i64 {
    value.event_time().or(current).unwrap_or_else(now_millis)
}

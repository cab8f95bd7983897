//! Typed topics. A `Topic<K, V>` is declared once (usually as a `const`) and used to send from
//! agents; `TopicSpec` is its untyped description, which the App uses to create topics, check
//! that one name carries one type, and print the topology.

use std::marker::PhantomData;
use std::sync::Arc;

use crate::codec::{Codec, KeyBytes};
use crate::context;
use crate::error::{CodecError, Error, Result};
use crate::message::{Headers, OutRecord, now_millis};
use crate::record::Record;

/// A typed topic: keys of type `K`, values of type `V`.
///
/// ```
/// use rill_runtime::{Codec, Topic};
/// const PAGEVIEWS: Topic<String, serde_json::Value> = Topic::new("pageviews").with_partitions(4);
/// assert_eq!(PAGEVIEWS.name(), "pageviews");
/// assert_eq!(PAGEVIEWS.codec(), Codec::Json);
/// ```
pub struct Topic<K, V> {
    name: &'static str,
    partitions: Option<i32>,
    codec: Option<Codec>,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Topic<K, V> {
    /// Declares a topic.
    pub const fn new(name: &'static str) -> Self {
        Topic {
            name,
            partitions: None,
            codec: None,
            _types: PhantomData,
        }
    }

    /// Sets the partition count used when rill creates the topic.
    pub const fn with_partitions(mut self, partitions: i32) -> Self {
        self.partitions = Some(partitions);
        self
    }

    /// Overrides the value type's codec for this topic.
    pub const fn with_codec(mut self, codec: Codec) -> Self {
        self.codec = Some(codec);
        self
    }

    /// The topic's name.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

impl<K, V: Record> Topic<K, V> {
    /// The codec values are written with.
    pub fn codec(&self) -> Codec {
        self.codec.unwrap_or(V::CODEC)
    }

    /// The untyped description of this topic.
    pub fn spec(&self) -> TopicSpec {
        let mut spec = TopicSpec::of::<V>(self.name, "a `Topic` constant");
        spec.codec = self.codec();
        spec.partitions = self.partitions;
        spec
    }

    /// Sends a value, keyed by its `#[record(key)]` field (or unkeyed). Inside an agent the send
    /// joins the agent's commit: it is delivered before the source offset is committed.
    pub async fn send(&self, value: &V) -> Result<()> {
        let key = value.key_ref();
        self.send_with(key, value).await
    }

    /// Sends a value with an explicit key.
    pub async fn send_keyed(&self, key: &K, value: &V) -> Result<()>
    where
        K: KeyBytes,
    {
        self.send_with(Some(key.key_cow()), value).await
    }

    async fn send_with(&self, key: Option<std::borrow::Cow<'_, [u8]>>, value: &V) -> Result<()> {
        context::send_value("Topic::send", self.name, self.codec(), key, value, None).await
    }
}

impl<K, V> Clone for Topic<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K, V> Copy for Topic<K, V> {}

/// An owned record of `value` (a `Sink` passes its topic's `Arc`: no allocation for the name).
pub(crate) fn encode_out<V: Record>(
    topic: impl AsRef<str> + Into<Arc<str>>,
    codec: Codec,
    key: Option<Vec<u8>>,
    value: &V,
) -> Result<OutRecord> {
    let bytes = value.encode(codec).map_err(|source| Error::Codec {
        topic: topic.as_ref().to_owned(),
        source,
    })?;
    Ok(OutRecord {
        topic: topic.into(),
        partition: None,
        key,
        value: Some(bytes),
        timestamp: out_timestamp(value, crate::context::current_event_time()),
        headers: Headers::default(),
    })
}

/// A sent record's timestamp: the value's event time, else the event time of the record being
/// processed (`current`), else now.
pub(crate) fn out_timestamp<V: Record>(value: &V, current: Option<i64>) -> i64 {
    value.event_time().or(current).unwrap_or_else(now_millis)
}

/// The untyped description of a topic an agent reads or writes.
#[derive(Clone)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Rust type of the values (`std::any::type_name`).
    pub value_type: &'static str,
    /// Value codec.
    pub codec: Codec,
    /// Partition count wanted at creation (`None`: the App default).
    pub partitions: Option<i32>,
    /// Where it was declared (agent source location).
    pub declared_at: String,
    /// A compacted topic (table changelogs): Kafka keeps the last record per key; the embedded
    /// log exempts it from retention.
    pub compacted: bool,
    json_to_wire: fn(&[u8], Codec) -> Result<Vec<u8>, CodecError>,
}

impl TopicSpec {
    /// Describes a topic carrying `V`.
    pub fn of<V: Record>(name: &str, declared_at: &str) -> Self {
        TopicSpec {
            name: name.to_owned(),
            value_type: std::any::type_name::<V>(),
            codec: V::CODEC,
            partitions: None,
            declared_at: declared_at.to_owned(),
            compacted: false,
            json_to_wire: |json, codec| {
                let value: V = serde_json::from_slice(json)?;
                value.encode(codec)
            },
        }
    }

    /// Converts a JSON document into this topic's wire format, checking it against the type
    /// (used by the `send` command).
    pub fn json_to_wire(&self, json: &[u8]) -> Result<Vec<u8>> {
        (self.json_to_wire)(json, self.codec).map_err(|source| Error::Codec {
            topic: self.name.clone(),
            source,
        })
    }
}

impl std::fmt::Debug for TopicSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicSpec")
            .field("name", &self.name)
            .field("value_type", &self.value_type)
            .field("codec", &self.codec)
            .field("partitions", &self.partitions)
            .field("declared_at", &self.declared_at)
            .finish()
    }
}

/// Checks that every topic name carries one value type; errors name both declarations.
pub(crate) fn check_types<'a>(specs: impl IntoIterator<Item = &'a TopicSpec>) -> Result<()> {
    let mut seen: std::collections::HashMap<&str, &TopicSpec> = std::collections::HashMap::new();
    for spec in specs {
        match seen.get(spec.name.as_str()) {
            Some(first) if first.value_type != spec.value_type => {
                return Err(Error::TopicTypeConflict {
                    topic: spec.name.clone(),
                    first_type: first.value_type,
                    first_at: first.declared_at.clone(),
                    second_type: spec.value_type,
                    second_at: spec.declared_at.clone(),
                });
            }
            Some(_) => {}
            None => {
                seen.insert(&spec.name, spec);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicting_types_name_both_places() {
        let a = TopicSpec::of::<String>("t", "src/a.rs:1");
        let b = TopicSpec::of::<Vec<u8>>("t", "src/b.rs:2");
        let err = check_types([&a, &b]).unwrap_err().to_string();
        assert!(
            err.contains("src/a.rs:1") && err.contains("src/b.rs:2"),
            "{err}"
        );
        assert!(check_types([&a, &a.clone()]).is_ok());
    }

    #[test]
    fn json_to_wire_validates_against_the_type() {
        let spec = TopicSpec::of::<serde_json::Value>("t", "here");
        assert_eq!(
            spec.json_to_wire(br#"{"a":1}"#).unwrap(),
            br#"{"a":1}"#.to_vec()
        );
        assert!(spec.json_to_wire(b"{nope").is_err());
    }
}

//! Typed topics. A `Topic<K, V>` is declared once (usually as a `const`) and used to send from
//! agents; `TopicSpec` (defined with the other specs in the foundation) is its untyped
//! description, which the App uses to create topics, check that one name carries one type, and
//! print the topology.

use std::marker::PhantomData;

use crate::base::codec::{Codec, KeyBytes};
use crate::base::error::Result;
use crate::base::record::Record;
pub use crate::base::spec::TopicSpec;
use crate::instance::context;

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

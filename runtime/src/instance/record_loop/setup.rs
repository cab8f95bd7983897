//! What an agent instance asks of its worker while it runs: topics and tables made after start
//! (a window's changelog, a late-events topic) and re-keying through a repartition topic. The
//! worker's repartition pipeline (`wiring::pipeline`) implements it; the instance holds it as a
//! trait object, so that the layers below the wiring never name it.

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::base::config::Config;
use crate::base::error::{Error, Result};
use crate::base::message::RawRecord;
use crate::base::spec::TopicSpec;
use crate::instance::record_loop::RecordLoop;
use crate::instance::table::{ExpiredRanges, TableDef};
use crate::io::transport::Log;

/// Computes a record's new key (`None`: none, the producer picks a partition) and its event
/// time (when the record has one).
pub(crate) type KeyOf = Box<dyn Fn(&RawRecord) -> Result<(Option<Vec<u8>>, Option<i64>)> + Send>;

/// Where a re-keyed stream goes: `group_by`'s internal repartition topic
/// (`<app>-<agent>-<field>-repartition`, purged once read), or a topic the user names
/// (`Stream::through`, kept as the topic's retention says).
#[derive(Clone, Copy, Debug)]
pub(crate) enum RekeyTarget<'a> {
    /// `group_by(field)`.
    Field(&'a str),
    /// `through(topic)`.
    Topic(&'a str),
}

/// A re-keying that could not be set up: why, and the source stream's core, untouched.
pub(crate) type NotRekeyed = Box<(Error, RecordLoop)>;

/// See the module docs.
pub(crate) trait AgentSetup: Send + Sync {
    /// The worker's settings.
    fn config(&self) -> &Config;

    /// Partitions of the agent's (first) source topic.
    fn source_partitions(&self) -> i32;

    /// Where the instance's tables read their changelogs.
    fn changelogs(&self) -> Arc<dyn Log>;

    /// The table of a window (or join) named `name` of this agent, created with its changelog
    /// topic on first use and shared by the agent's instances. With `expiring` (tumbling and
    /// hopping windows, joins), the changelog is created time-retained, and when the topic has time
    /// retention the table's expired entries go without tombstones (`TableDef::expiring`).
    fn window_table<'a>(
        &'a self,
        name: &'a str,
        expiring: Option<Arc<dyn ExpiredRanges>>,
    ) -> BoxFuture<'a, Result<Arc<TableDef>>>;

    /// A window or join reads the repartitioned stream: its pumps carry watermarks from now on.
    fn mark_windowed(&self);

    /// Creates a topic the agent writes to after start (a late-events topic).
    fn ensure_topic(&self, spec: TopicSpec) -> BoxFuture<'_, Result<()>>;

    /// Turns `source` into a pump into `target` and returns the core of the instance's stream
    /// read back from it. `sides`: the topics a join reads, whose records are tagged with their
    /// topic.
    fn group_by(
        self: Arc<Self>,
        target: RekeyTarget<'_>,
        source: RecordLoop,
        key_of: KeyOf,
        sides: Vec<Arc<str>>,
    ) -> std::result::Result<RecordLoop, NotRekeyed>;
}

//! Agents: what `#[agent]` registers. An [`AgentSpec`] names the agent, its source topics, its
//! sink, its concurrency and consumer group, and holds the function the worker calls once per
//! instance with an [`AgentContext`]. Everything the macro generates can be written by hand:
//!
//! ```
//! use rill_runtime::{AgentSpec, TopicSpec};
//!
//! let spec = AgentSpec::new("echo", concat!(file!(), ":", line!()))
//!     .source(TopicSpec::of::<String>("lines", "here"))
//!     .concurrency(2)
//!     .run(|mut ctx| async move {
//!         let mut lines = ctx.stream::<String>()?;
//!         while let Some(line) = lines.next().await {
//!             tracing::info!(%line, "got a line");
//!         }
//!         Ok(())
//!     });
//! assert_eq!(spec.name(), "echo");
//! ```

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::base::error::{Error, Result};
use crate::base::record::Record;
use crate::base::spec::TopicSpec;
use crate::instance::record_loop::RecordLoop;
use crate::instance::table::joined::TableJoinSpec;
use crate::instance::table::{GlobalTable, Joined, Table, TableJoin, TableSpec};
use crate::ops::stream::{Sink, Stream};

pub(crate) type RunFn = Arc<dyn Fn(AgentContext) -> BoxFuture<'static, Result<()>> + Send + Sync>;

/// The description of an agent.
#[derive(Clone)]
pub struct AgentSpec {
    name: String,
    declared_at: String,
    pub(crate) sources: Vec<TopicSpec>,
    pub(crate) sink: Option<TopicSpec>,
    pub(crate) concurrency: usize,
    pub(crate) group: Option<String>,
    pub(crate) tables: Vec<TableSpec>,
    pub(crate) global_tables: Vec<String>,
    pub(crate) on_error: Option<crate::base::failure::OnError>,
    pub(crate) dead_letter: Option<String>,
    pub(crate) co_partitioned: bool,
    /// Tables built from topics (`table_of`), by topic (the table's name too).
    pub(crate) table_feeds: Vec<String>,
    /// Table-table joins (`table_join`) over tables built from topics.
    pub(crate) table_joins: Vec<TableJoinSpec>,
    pub(crate) offset_reset: Option<crate::base::config::OffsetReset>,
    pub(crate) run: Option<RunFn>,
}

impl AgentSpec {
    /// Starts describing an agent.
    pub fn new(name: &str, declared_at: &str) -> Self {
        AgentSpec {
            name: name.to_owned(),
            declared_at: declared_at.to_owned(),
            sources: Vec::new(),
            sink: None,
            concurrency: 1,
            group: None,
            tables: Vec::new(),
            global_tables: Vec::new(),
            on_error: None,
            dead_letter: None,
            co_partitioned: false,
            table_feeds: Vec::new(),
            table_joins: Vec::new(),
            offset_reset: None,
            run: None,
        }
    }

    /// What happens to a record that fails (`#[agent(on_error = "...")]`); the App-wide
    /// default (`Config::on_error`) applies otherwise. See [`crate::failure`].
    pub fn on_error(mut self, policy: crate::base::failure::OnError) -> Self {
        self.on_error = Some(policy);
        self
    }

    /// Where the agent's group starts on a partition it has no committed offset for
    /// (`#[agent(offset_reset = "latest")]`); the app's `offset_reset` applies otherwise.
    /// See [`crate::config::OffsetReset`].
    pub fn offset_reset(mut self, reset: crate::base::config::OffsetReset) -> Self {
        self.offset_reset = Some(reset);
        self
    }

    /// Names the dead-letter topic (`#[agent(dead_letter = "...")]`; default
    /// `<app>-<agent>-dlq`).
    pub fn dead_letter(mut self, topic: &str) -> Self {
        self.dead_letter = Some(topic.to_owned());
        self
    }

    /// Declares that the agent reads its sources together, a typed stream per topic joined or
    /// merged (`#[agent(topics(..))]` declares it): the worker refuses to start unless they
    /// have the same partition count. Without it an agent over several topics reads them as
    /// one stream (fan-in), whatever their partition counts (agents with tables excepted).
    pub fn co_partitioned(mut self) -> Self {
        self.co_partitioned = true;
        self
    }

    /// Adds a source topic.
    pub fn source(mut self, topic: TopicSpec) -> Self {
        self.sources.push(topic);
        self
    }

    /// Reads the in-memory channel `name` (Faust's `app.channel()`): records other agents,
    /// timers or tasks of this worker send to `name` come here without a broker, at most once
    /// (see `io/transport/channel.rs`). An agent reads one channel and no topic.
    pub fn channel<V: Record>(mut self, name: &str) -> Self {
        self.sources
            .push(TopicSpec::in_memory::<V>(name, &self.declared_at));
        self
    }

    /// Sets the sink topic.
    pub fn sink(mut self, topic: TopicSpec) -> Self {
        self.sink = Some(topic);
        self
    }

    /// Runs `n` instances, each owning a share of the partitions (order kept per partition).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Overrides the consumer group (default `<app>-<agent>`).
    pub fn group(mut self, group: &str) -> Self {
        self.group = Some(group.to_owned());
        self
    }

    /// Declares a table the agent keeps (`AgentContext::table` hands it out).
    pub fn table(mut self, name: &str) -> Self {
        self.tables.push(TableSpec {
            name: name.to_owned(),
        });
        self
    }

    /// Declares a table built from `topic` (Kafka Streams' KTable; `#[agent(tables(customers =
    /// table_of("customers")))]`): the agent also reads `topic`, whose records (keyed by the
    /// table's key, values of type `V`; no value deletes) update the table named after the
    /// topic instead of reaching the agent's stream. The topic must be co-partitioned with the
    /// agent's source (same partition count, keys partitioned alike), so each instance holds
    /// the table keys of its partitions. Call it after `source`; take the table with
    /// `AgentContext::table_of` before reading the stream.
    pub fn table_of<V: Record>(mut self, topic: &str) -> Self {
        self.tables.push(TableSpec {
            name: topic.to_owned(),
        });
        self.sources
            .push(TopicSpec::of::<V>(topic, &self.declared_at));
        self.co_partitioned = true;
        self.table_feeds.push(topic.to_owned());
        self
    }

    /// Declares the table `name` joining two tables built from topics (`table_of`; Kafka
    /// Streams' `KTable#join`/`leftJoin`/`outerJoin`): its value for a key is a
    /// [`Joined`](crate::table::Joined) of the `left` and `right` tables' values, updated in
    /// the same step as either side; a key the `kind` does not keep is removed. Take it with
    /// `AgentContext::table_join` (`#[agent(tables(profile = table_join("customers",
    /// "addresses", "left")))]`).
    pub fn table_join(mut self, name: &str, left: &str, right: &str, kind: TableJoin) -> Self {
        self.tables.push(TableSpec {
            name: name.to_owned(),
        });
        self.table_joins.push(TableJoinSpec {
            name: name.to_owned(),
            left: left.to_owned(),
            right: right.to_owned(),
            kind,
        });
        self
    }

    /// The topic table `name` of this agent is restored from: the topic a table built from a
    /// topic follows (its changelog, as Kafka Streams' source-topic optimisation), else
    /// `<app>-<table>-changelog`.
    pub fn changelog_of(&self, app_id: &str, name: &str) -> String {
        if self.table_feeds.iter().any(|t| t == name) {
            name.to_owned()
        } else {
            crate::instance::table::changelog_topic(app_id, name)
        }
    }

    /// Declares a global table over `topic` the agent reads (`AgentContext::global_table`).
    pub fn global_table(mut self, topic: &str) -> Self {
        self.global_tables.push(topic.to_owned());
        self
    }

    /// Tables the agent keeps.
    pub fn tables(&self) -> &[TableSpec] {
        &self.tables
    }

    /// Sets the function each instance runs.
    pub fn run<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(AgentContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.run = Some(Arc::new(move |ctx| Box::pin(f(ctx))));
        self
    }

    /// The agent's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the agent was declared (`file:line`).
    pub fn declared_at(&self) -> &str {
        &self.declared_at
    }

    /// Source topics.
    pub fn sources(&self) -> &[TopicSpec] {
        &self.sources
    }

    /// Sink topic.
    pub fn sink_topic(&self) -> Option<&TopicSpec> {
        self.sink.as_ref()
    }

    /// Number of instances.
    pub fn instances(&self) -> usize {
        self.concurrency
    }

    /// The consumer group under an app id.
    pub fn group_id(&self, app_id: &str) -> String {
        self.group
            .clone()
            .unwrap_or_else(|| format!("{app_id}-{}", self.name))
    }
}

impl std::fmt::Debug for AgentSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentSpec")
            .field("name", &self.name)
            .field("sources", &self.sources)
            .field("sink", &self.sink)
            .field("concurrency", &self.concurrency)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

/// What an agent function may return: `()` or `Result<(), E>`.
#[diagnostic::on_unimplemented(
    message = "an agent must return `rill::Result<()>` or `()`, not `{Self}`"
)]
pub trait AgentResult {
    /// Normalizes to rill's `Result`.
    fn into_result(self) -> Result<()>;
}

impl AgentResult for () {
    fn into_result(self) -> Result<()> {
        Ok(())
    }
}

impl<E: Into<Error>> AgentResult for std::result::Result<(), E> {
    fn into_result(self) -> Result<()> {
        self.map_err(Into::into)
    }
}

/// What one agent instance is given: its stream and its sink.
pub struct AgentContext {
    pub(crate) agent: String,
    pub(crate) instance: usize,
    pub(crate) core: Option<RecordLoop>,
    pub(crate) sources: Vec<TopicSpec>,
    pub(crate) sink: Option<TopicSpec>,
    pub(crate) shared: Arc<crate::instance::context::InstanceState>,
    pub(crate) globals: Vec<Arc<crate::instance::table::global::GlobalDef>>,
    pub(crate) policy: Arc<crate::base::failure::Policy>,
    pub(crate) requests: crate::wiring::asking::Requests,
    pub(crate) table_feeds: Vec<String>,
    /// Table-table joins (`table_join`) over tables built from topics.
    pub(crate) table_joins: Vec<TableJoinSpec>,
}

impl AgentContext {
    /// Sends requests to other agents and waits for their replies (`Requests::ask`).
    pub fn requests(&self) -> crate::wiring::asking::Requests {
        self.requests.clone()
    }

    /// The same context without its stream (for calling the agent function again).
    pub(crate) fn clone_parts(&self) -> AgentContext {
        AgentContext {
            agent: self.agent.clone(),
            instance: self.instance,
            core: None,
            sources: self.sources.clone(),
            sink: self.sink.clone(),
            shared: self.shared.clone(),
            globals: self.globals.clone(),
            policy: self.policy.clone(),
            requests: self.requests.clone(),
            table_feeds: self.table_feeds.clone(),
            table_joins: self.table_joins.clone(),
        }
    }

    /// The instance's typed stream; can be taken once per call of the agent function.
    pub fn stream<T: Record>(&mut self) -> Result<Stream<T>> {
        let core = self
            .core
            .take()
            .ok_or_else(|| Error::agent(&self.agent, "the stream was already taken"))?;
        let codec = self.sources.first().map_or(T::CODEC, |s| s.codec);
        Ok(Stream::new(core, codec))
    }

    /// The stream of one topic of an agent over several (`#[agent(topics(views = "pageviews",
    /// clicks = "clicks"))]`). The instance reads all its topics through one consumer, so these
    /// streams are read together: [`Stream::join`] (and `left_join`, `outer_join`) or
    /// [`Stream::either`]; one read alone stops the worker with an error.
    pub fn stream_of<T: Record>(&mut self, topic: &str) -> Result<Stream<T>> {
        let spec = self
            .sources
            .iter()
            .find(|s| s.name == topic)
            .ok_or_else(|| {
                Error::agent(
                    &self.agent,
                    format!("`{topic}` is not one of the agent's topics"),
                )
            })?;
        let codec = spec.codec;
        let core = match self.core.take() {
            Some(core) => core,
            // Another topic's stream holds the core: this one is joined to it.
            None => RecordLoop::husk(self.shared.clone(), self.policy.clone()),
        };
        let mut stream = Stream::new(core, codec);
        stream.topic = Some(std::sync::Arc::from(topic));
        Ok(stream)
    }

    /// The agent's sink.
    pub fn sink<T: Record>(&self) -> Result<Sink<T>> {
        let spec = self
            .sink
            .as_ref()
            .ok_or_else(|| Error::agent(&self.agent, "the agent has no `sink` topic"))?;
        Ok(Sink::new(&spec.name, spec.codec))
    }

    /// A table the agent declared (`tables(totals = "url_view_totals")`).
    pub fn table<K, V>(&self, name: &str) -> Result<Table<K, V>>
    where
        K: serde::Serialize + serde::de::DeserializeOwned + crate::base::codec::KeyBytes,
        V: serde::Serialize + serde::de::DeserializeOwned + Default + 'static,
    {
        let core = self
            .shared
            .tables()
            .into_iter()
            .find(|t| &*t.def.name == name)
            .ok_or_else(|| Error::agent(&self.agent, format!("no table `{name}`; declare it with `tables({name} = \"...\")` or `AgentSpec::table`")))?;
        Ok(Table::new(core, self.shared.position.clone()))
    }

    /// The table built from `topic` (`AgentSpec::table_of`): from now on the topic's records
    /// update it (a record that cannot be applied goes to the failure policy with the reason).
    pub fn table_of<K, V>(&self, topic: &str) -> Result<Table<K, V>>
    where
        K: serde::Serialize + serde::de::DeserializeOwned + crate::base::codec::KeyBytes + 'static,
        V: Record + Default + 'static,
    {
        if !self.table_feeds.iter().any(|t| t == topic) {
            return Err(Error::agent(
                &self.agent,
                format!(
                    "no table built from `{topic}`; declare it with `tables(name = table_of(\"{topic}\"))` or `AgentSpec::table_of`"
                ),
            ));
        }
        let table = self.table::<K, V>(topic)?;
        if self.shared.feed_of(topic).is_some() {
            // Fed already (an earlier call, or a table join over it, whose feed stays).
            return Ok(table);
        }
        let codec = self
            .sources
            .iter()
            .find(|s| s.name == topic)
            .map_or(V::CODEC, |s| s.codec);
        let writer = table.clone();
        let feed: crate::instance::context::TableFeed = Arc::new(move |raw| {
            let key_bytes = raw.key.as_deref().ok_or_else(|| {
                writer.error(format!(
                    "a record of `{}` without a key cannot update the table",
                    raw.topic
                ))
            })?;
            let key: K = table_key(&raw.topic, key_bytes, codec).map_err(|e| writer.error(e))?;
            match raw.value.as_deref() {
                None => writer.remove(&key).map(|_| ()),
                Some(bytes) => {
                    let value = crate::base::record::decode_from::<V>(&raw.topic, bytes, codec)
                        .map_err(|source| Error::Codec {
                            topic: raw.topic.to_string(),
                            source,
                        })?;
                    writer.insert(key, value)
                }
            }
        });
        self.shared.feed(topic, feed);
        let _ = table.def().decoder.set(source_decoder::<K, V>(codec));
        Ok(table)
    }

    /// The table-table join `name` (`AgentSpec::table_join`): from now on a record of either
    /// side's topic updates that side's table, then the key's [`Joined`] value (or removes it
    /// when the join's kind does not keep the key).
    pub fn table_join<K, L, R>(&self, name: &str) -> Result<Table<K, Joined<L, R>>>
    where
        K: serde::Serialize + serde::de::DeserializeOwned + crate::base::codec::KeyBytes + 'static,
        L: Record + Default + 'static,
        R: Record + Default + 'static,
    {
        let spec = self
            .table_joins
            .iter()
            .find(|j| j.name == name)
            .ok_or_else(|| Error::agent(&self.agent, format!("no table join `{name}`; declare it with `tables({name} = table_join(\"left\", \"right\", \"inner\"))` or `AgentSpec::table_join`")))?
            .clone();
        let left = self.table_of::<K, L>(&spec.left)?;
        let right = self.table_of::<K, R>(&spec.right)?;
        let joined = self.table::<K, Joined<L, R>>(name)?;
        if !self.shared.first_setup(&format!("table_join {name}")) {
            // Set up by an earlier call of the agent function: its feeds stay.
            return Ok(joined);
        }
        for side in [&spec.left, &spec.right] {
            let Some(fed) = self.shared.feed_of(side) else {
                continue;
            };
            let (left, right, out, kind) = (left.clone(), right.clone(), joined.clone(), spec.kind);
            let feed: crate::instance::context::TableFeed = Arc::new(move |raw| {
                fed(raw)?;
                let Some(key_bytes) = raw.key.as_deref() else {
                    return Ok(());
                };
                let key: K = table_key(&raw.topic, key_bytes, crate::base::codec::Codec::Avro)
                    .map_err(|e| out.error(e))?;
                let value = Joined {
                    left: left.get(&key)?,
                    right: right.get(&key)?,
                };
                if kind.keeps(value.left.is_some(), value.right.is_some()) {
                    out.insert(key, value)
                } else {
                    out.remove(&key).map(|_| ())
                }
            });
            self.shared.feed(side, feed);
        }
        Ok(joined)
    }

    /// A global table the agent declared (`global_tables(users = "user_profiles")`).
    pub fn global_table<K: crate::base::codec::KeyBytes, V: Record>(
        &self,
        topic: &str,
    ) -> Result<GlobalTable<K, V>> {
        let def = self
            .globals
            .iter()
            .find(|g| &*g.topic == topic)
            .ok_or_else(|| Error::agent(&self.agent, format!("no global table over `{topic}`; declare it with `global_tables(name = \"{topic}\")`")))?;
        Ok(GlobalTable::new(def.clone()))
    }

    /// Which instance this is (0-based, below the agent's concurrency).
    pub fn instance(&self) -> usize {
        self.instance
    }
}

/// An agent registered by `#[agent]` (collected with `inventory`, so users list agents once).
pub struct Registration {
    /// Builds the agent's description.
    pub build: fn() -> AgentSpec,
}

inventory::collect!(Registration);

/// Every agent registered in this binary, sorted by name.
pub fn registered_agents() -> Vec<AgentSpec> {
    let mut specs: Vec<AgentSpec> = inventory::iter::<Registration>
        .into_iter()
        .map(|r| (r.build)())
        .collect();
    specs.sort_by(|a, b| a.name.cmp(&b.name));
    specs
}

impl Drop for AgentContext {
    /// A stream never taken stays with the instance (see `Stream`'s `Drop`).
    fn drop(&mut self) {
        if let Some(core) = self.core.take() {
            core.park();
        }
    }
}

/// How recovery applies a record of a table's topic (the feed's decoding, to stored JSON).
fn source_decoder<K, V>(codec: crate::base::codec::Codec) -> crate::instance::table::SourceDecoder
where
    K: serde::Serialize + serde::de::DeserializeOwned + 'static,
    V: Record + 'static,
{
    Arc::new(move |raw| {
        let key: K = table_key(&raw.topic, raw.key.as_deref()?, codec).ok()?;
        let stored_key = serde_json::to_vec(&key).ok()?;
        let value = match raw.value.as_deref() {
            None => None,
            Some(bytes) => {
                let value: V = crate::base::record::decode_from(&raw.topic, bytes, codec).ok()?;
                Some(serde_json::to_vec(&value).ok()?)
            }
        };
        Some((stored_key, value))
    })
}

/// A table key from the key bytes of a record of `topic`, unframed first when the topic's
/// keys are registry-coded (only topics of a registry codec can be).
fn table_key<K: serde::de::DeserializeOwned>(
    topic: &str,
    bytes: &[u8],
    codec: crate::base::codec::Codec,
) -> std::result::Result<K, String> {
    let binding = match crate::base::registry_keys::key_binding(topic) {
        Some(binding) if codec.is_registry() => binding,
        _ => return key_from_bytes(bytes),
    };
    let plain = crate::base::registry_keys::plain_key(topic, bytes).map_err(|e| e.to_string())?;
    match binding.schema.kind.json_of(&plain) {
        // Integer keys are big-endian when plain: read by their value, not as text.
        Some(value) => serde_json::from_value(value)
            .map_err(|e| format!("the key is not a `{}` ({e})", std::any::type_name::<K>())),
        None => key_from_bytes(&plain),
    }
}

/// A table key from a topic's key bytes: JSON for keys that are not strings, else the bytes as
/// a string (how rill and Java producers write string keys).
fn key_from_bytes<K: serde::de::DeserializeOwned>(bytes: &[u8]) -> std::result::Result<K, String> {
    serde_json::from_slice(bytes).or_else(|_| {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| "a key that is neither JSON nor UTF-8 text".to_owned())?;
        serde_json::from_value(serde_json::Value::String(text.to_owned())).map_err(|e| {
            format!(
                "the key `{text}` is not a `{}` ({e})",
                std::any::type_name::<K>()
            )
        })
    })
}

//! The worker seen from outside: readiness, metrics, topology, status and table lookups, as
//! the web server serves them (`web::api::WebBackend`). Everything here is read when asked
//! for; agents only bump atomics (see `metrics`).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::base::health::Health;
use crate::base::message::now_millis;
use crate::base::metrics::{AgentStats, TimerStats};
use crate::instance::table::TableDef;
use crate::instance::table::global::GlobalDef;
use crate::io::transport::{GroupMember as Member, Leadership, Log, Router, Tp};
use crate::wiring::pipeline::AgentPipeline;
use crate::wiring::store_cell::StoreCell;
use crate::wiring::topology::Topology;
use crate::wiring::web::api::{AgentStatus, Status, TableAnswer, WebBackend};

/// A `rill_timer_*` counter: name, help, and how to read it.
type TimerCounter = (&'static str, &'static str, fn(&TimerStats) -> u64);

/// Reads per-topic counts of an agent.
type PerTopic = dyn Fn(&AgentStats) -> Vec<(Arc<str>, u64)>;

/// One agent as the observer sees it.
pub(crate) struct AgentView {
    pub(crate) name: Arc<str>,
    pub(crate) group: Arc<str>,
    pub(crate) stats: Arc<AgentStats>,
    pub(crate) router: Arc<Router>,
    pub(crate) pipeline: Arc<AgentPipeline>,
    pub(crate) tables: Vec<Arc<TableDef>>,
    /// Source topics (where the agent's table partitions come from).
    pub(crate) sources: Vec<String>,
}

/// Everything `/metrics`, `/status`, `/topology` and `/tables` read.
pub(crate) struct Observer {
    pub(crate) app: String,
    /// This worker's advertised web address, once bound.
    pub(crate) url: OnceLock<String>,
    pub(crate) health: Arc<Health>,
    pub(crate) transport: Arc<dyn Log>,
    pub(crate) store: Arc<StoreCell>,
    pub(crate) topology: Topology,
    pub(crate) agents: RwLock<Vec<AgentView>>,
    /// All agents started (until then the worker is not ready).
    pub(crate) started: std::sync::atomic::AtomicBool,
    /// User metrics (`App::metrics`) and rill's collector.
    pub(crate) registry: Mutex<Registry>,
    /// The worker's timers and their counters.
    timers: RwLock<Vec<(Arc<str>, Arc<TimerStats>)>>,
    /// The app's leader election, when a timer needs one.
    leadership: OnceLock<Arc<Leadership>>,
    /// The worker's global tables (`/tables/<topic>/<key>` reads them too).
    globals: OnceLock<Vec<Arc<GlobalDef>>>,
    /// Consumer-group members (web address, assignment) by group, with when they were read.
    members: Mutex<std::collections::HashMap<String, (std::time::Instant, Vec<Member>)>>,
}

impl AgentView {
    /// The routers of the agent's consumers: its source's, and its repartition topic's once
    /// `group_by` made one.
    fn routers(&self) -> Vec<Arc<Router>> {
        let mut routers = vec![self.router.clone()];
        if let (Some(r), _) = self.pipeline.runtime_parts() {
            routers.push(r.router);
        }
        routers
    }

    /// Where the agent's table partitions live: the consumer of the repartition topic once
    /// the agent re-keys (tables then follow it), else of the source. (router, group, topic)
    fn table_owner(&self) -> (Arc<Router>, Arc<str>, String) {
        match self.pipeline.runtime_parts().0 {
            Some(r) => (r.router, r.group, r.topic),
            None => (
                self.router.clone(),
                self.group.clone(),
                self.sources.first().cloned().unwrap_or_default(),
            ),
        }
    }
}

impl Observer {
    pub(crate) fn new(
        app: &str,
        health: Arc<Health>,
        transport: Arc<dyn Log>,
        store: Arc<StoreCell>,
        topology: Topology,
    ) -> Arc<Self> {
        Arc::new(Observer {
            app: app.to_owned(),
            url: OnceLock::new(),
            health,
            transport,
            store,
            topology,
            agents: RwLock::new(Vec::new()),
            started: std::sync::atomic::AtomicBool::new(false),
            registry: Mutex::new(Registry::default()),
            members: Mutex::new(std::collections::HashMap::new()),
            timers: RwLock::new(Vec::new()),
            leadership: OnceLock::new(),
            globals: OnceLock::new(),
        })
    }

    /// Counters for a timer the worker starts.
    pub(crate) fn add_timer(&self, name: &str) -> Arc<TimerStats> {
        let stats = Arc::new(TimerStats::default());
        self.timers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push((Arc::from(name), stats.clone()));
        stats
    }

    /// A timer's counters.
    pub(crate) fn timer(&self, name: &str) -> Option<Arc<TimerStats>> {
        let timers = self.timers.read().unwrap_or_else(|p| p.into_inner());
        timers
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, s)| s.clone())
    }

    /// The global tables, for table queries.
    pub(crate) fn set_globals(&self, globals: Vec<Arc<GlobalDef>>) {
        let _ = self.globals.set(globals);
    }

    /// A key of a global table (every worker holds all of it): its value as JSON, or as text
    /// when the topic's values are not JSON.
    fn global_table(&self, topic: &str, key: &str) -> TableAnswer {
        let Some(def) = self
            .globals
            .get()
            .and_then(|g| g.iter().find(|d| &*d.topic == topic))
        else {
            return TableAnswer::NoSuchTable;
        };
        match def.get_raw(key.as_bytes()) {
            Ok(Some(bytes)) => {
                TableAnswer::Found(serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
                }))
            }
            Ok(None) => TableAnswer::Missing,
            Err(e) => TableAnswer::Unavailable(e.to_string()),
        }
    }

    /// The election `rill_leader` reports.
    pub(crate) fn set_leadership(&self, leadership: Arc<Leadership>) {
        let _ = self.leadership.set(leadership);
    }

    /// Partition assignments and revocations an agent's consumers have seen so far;
    /// `None` for an agent the worker does not run.
    pub(crate) fn rebalances(&self, agent: &str) -> Option<Rebalances> {
        let agents = self.agents();
        let view = agents.iter().find(|a| &*a.name == agent)?;
        Some(Rebalances::of(&view.routers()))
    }

    /// The partitions an agent's consumers own now; `None` for an agent the worker does not
    /// run.
    pub(crate) fn assignment(&self, agent: &str) -> Option<Vec<(String, i32)>> {
        let agents = self.agents();
        let view = agents.iter().find(|a| &*a.name == agent)?;
        let mut owned: Vec<(String, i32)> = view
            .routers()
            .iter()
            .flat_map(|r| r.current_assignment())
            .map(|(t, p)| (t.to_string(), p))
            .collect();
        owned.sort();
        Some(owned)
    }

    /// A declared table of one of the worker's agents, and the partitions of it this worker
    /// owns now (sorted); `None` when no running agent declares it.
    pub(crate) fn table_location(&self, table: &str) -> Option<(Arc<TableDef>, Vec<i32>)> {
        let agents = self.agents();
        let (agent, def) = agents.iter().find_map(|a| {
            let def = a.tables.iter().find(|t| &*t.name == table)?;
            Some((a, def.clone()))
        })?;
        let (router, _, _) = agent.table_owner();
        Some((def, router.owned_partitions()))
    }

    /// Names of the tables the worker's agents declare (known before the agents start).
    pub(crate) fn table_names(&self) -> Vec<String> {
        use crate::wiring::topology::TableKind;
        self.topology
            .tables
            .iter()
            .filter(|t| t.kind == TableKind::Table)
            .map(|t| t.name.clone())
            .collect()
    }

    fn agents(&self) -> std::sync::RwLockReadGuard<'_, Vec<AgentView>> {
        self.agents.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Consumer lag per owned partition of an agent (its source group's, and its repartition
    /// group's), as the log tells it (`Log::lags`).
    fn lags(&self, agent: &AgentView) -> Vec<(Tp, i64)> {
        let mut lags = Vec::new();
        for (i, router) in agent.routers().iter().enumerate() {
            let group = match (i, agent.pipeline.runtime_parts().0) {
                (0, _) | (_, None) => agent.group.clone(),
                (_, Some(r)) => r.group,
            };
            lags.extend(self.transport.lags(&group, router));
        }
        lags.sort();
        lags
    }

    /// The web address of the group member owning `topic`/`partition`, from the group's
    /// membership (asked of the coordinator at most every 2 s per group; a blocking call);
    /// `None` when the group has no members elsewhere (the embedded log's live in this process).
    fn owner_of(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> crate::base::error::Result<Option<Option<String>>> {
        const FRESH: std::time::Duration = std::time::Duration::from_secs(2);
        let mut cache = self.members.lock().unwrap_or_else(|p| p.into_inner());
        let members = match cache.get(group) {
            Some((at, members)) if at.elapsed() < FRESH => members.clone(),
            _ => {
                let members = self.transport.group_members(group)?;
                cache.insert(
                    group.to_owned(),
                    (std::time::Instant::now(), members.clone()),
                );
                members
            }
        };
        if members.is_empty() {
            return Ok(None);
        }
        Ok(Some(members.into_iter().find_map(|(url, tps)| {
            tps.iter()
                .any(|(t, p)| t == topic && *p == partition)
                .then_some(url)
                .flatten()
        })))
    }

    /// Tables of an agent: declared ones and window tables built so far.
    fn tables_of(agent: &AgentView) -> Vec<Arc<TableDef>> {
        let mut all = agent.tables.clone();
        all.extend(agent.pipeline.runtime_parts().1);
        all
    }

    /// rill's metric families, in the order `/metrics` lists them.
    fn encode_rill(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let agents = self.agents();
        encode_throughput(&mut e, &agents)?;
        encode_outcomes(&mut e, &agents)?;
        encode_recovery(&mut e, &agents)?;
        encode_event_time_lag(&mut e, &agents)?;
        self.encode_consumer_lag(&mut e, &agents)?;
        encode_rebalances(&mut e, &agents)?;
        self.encode_table_sizes(&mut e, &agents)?;
        self.encode_transactions(&mut e)?;
        self.encode_timers(&mut e)?;
        self.encode_ready(&mut e)
    }

    /// `rill_timer_*` per timer, and `rill_leader` when the worker takes part in an election.
    fn encode_timers(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let timers = self.timers.read().unwrap_or_else(|p| p.into_inner());
        if !timers.is_empty() {
            let counters: [TimerCounter; 3] = [
                (
                    "rill_timer_runs",
                    "Timer runs started (retries included).",
                    |s| load(&s.runs),
                ),
                ("rill_timer_failures", "Timer runs that failed.", |s| {
                    load(&s.failures)
                }),
                (
                    "rill_timer_skipped",
                    "Scheduled times passed over: a run overran them, or this worker did not lead.",
                    |s| load(&s.skipped),
                ),
            ];
            for (name, help, get) in counters {
                let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
                for (timer, stats) in timers.iter() {
                    let labels = [("timer", &**timer)];
                    let mut m = family.encode_family(&labels)?;
                    m.encode_counter::<NoLabelSet, _, u64>(&get(stats), None)?;
                }
            }
            let mut family = e.encode_descriptor(
                "rill_timer_duration_seconds",
                "How long timer runs took.",
                None,
                MetricType::Histogram,
            )?;
            for (timer, stats) in timers.iter() {
                let (sum, count, buckets) = stats.duration.snapshot();
                let labels = [("timer", &**timer)];
                let mut m = family.encode_family(&labels)?;
                m.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
            }
        }
        if let Some(leadership) = self.leadership.get() {
            let mut family = e.encode_descriptor(
                "rill_leader",
                "1 while this worker leads the app (runs its leader-only timers).",
                None,
                MetricType::Gauge,
            )?;
            family.encode_gauge(&i64::from(leadership.is_leader()))?;
        }
        Ok(())
    }

    /// `rill_consumer_lag`: per owned partition of each agent (see `lags`).
    fn encode_consumer_lag(
        &self,
        e: &mut DescriptorEncoder,
        agents: &[AgentView],
    ) -> std::fmt::Result {
        let mut family = e.encode_descriptor(
            "rill_consumer_lag",
            "Records not yet consumed per owned partition",
            None,
            MetricType::Gauge,
        )?;
        for a in agents {
            for ((topic, partition), lag) in self.lags(a) {
                let partition = partition.to_string();
                let labels = [
                    ("agent", &*a.name),
                    ("topic", &*topic),
                    ("partition", partition.as_str()),
                ];
                family.encode_family(&labels)?.encode_gauge(&lag)?;
            }
        }
        Ok(())
    }

    /// `rill_table_keys` and `rill_table_bytes`: this worker's copy of every table, declared
    /// or window (none before the store is opened).
    fn encode_table_sizes(
        &self,
        e: &mut DescriptorEncoder,
        agents: &[AgentView],
    ) -> std::fmt::Result {
        let sizes: Vec<(Arc<str>, u64, u64)> = match self.store.get() {
            Some(store) => agents
                .iter()
                .flat_map(Self::tables_of)
                .filter_map(|t| {
                    let (keys, bytes) = store.size(&t.name).ok()?;
                    Some((t.name.clone(), keys, bytes))
                })
                .collect(),
            None => Vec::new(),
        };
        for (name, help, pick) in [
            (
                "rill_table_keys",
                "Keys in this worker's copy of a table",
                0usize,
            ),
            (
                "rill_table_bytes",
                "Bytes of LMDB pages this worker's copy of a table uses",
                1,
            ),
        ] {
            let mut family = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (table, keys, bytes) in &sizes {
                let v = i64::try_from(if pick == 0 { *keys } else { *bytes }).unwrap_or(i64::MAX);
                let labels = [("table", &**table)];
                family.encode_family(&labels)?.encode_gauge(&v)?;
            }
        }
        Ok(())
    }

    /// `rill_transactions`: only when the transport runs exactly-once transactions.
    fn encode_transactions(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let Some((committed, aborted)) = self.transport.transactions() else {
            return Ok(());
        };
        let mut family = e.encode_descriptor(
            "rill_transactions",
            "Exactly-once transactions of this worker, by outcome (aborted: nothing of it is visible)",
            None,
            MetricType::Counter,
        )?;
        for (outcome, n) in [("committed", committed), ("aborted", aborted)] {
            let labels = [("outcome", outcome)];
            family
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
        }
        Ok(())
    }

    /// `rill_ready`: `/ready` as a gauge.
    fn encode_ready(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let mut family = e.encode_descriptor(
            "rill_ready",
            "1 when connected to the broker with every table recovered",
            None,
            MetricType::Gauge,
        )?;
        let ready: i64 = i64::from(self.ready().is_ok());
        family.encode_gauge(&ready)
    }
}

/// Records in and out per topic, and how long processing and commits take.
fn encode_throughput(e: &mut DescriptorEncoder, agents: &[AgentView]) -> std::fmt::Result {
    per_topic(
        e,
        agents,
        "rill_records_in",
        "Records handed to the agent",
        &|s| s.topics_in.snapshot(),
    )?;
    per_topic(
        e,
        agents,
        "rill_records_out",
        "Records the agent sent",
        &|s| s.topics_out.snapshot(),
    )?;
    histogram(
        e,
        agents,
        "rill_processing_seconds",
        "Time from handing a record to the agent until it asks for the next",
        &|s| &s.processing,
    )?;
    histogram(
        e,
        agents,
        "rill_commit_seconds",
        "Duration of commit steps (outputs, changelogs, table state, offsets)",
        &|s| &s.commit_latency,
    )
}

/// What became of records: commits, failures and the policies applied, windows.
fn encode_outcomes(e: &mut DescriptorEncoder, agents: &[AgentView]) -> std::fmt::Result {
    counter(e, agents, "rill_commits", "Commit steps completed", &|s| {
        load(&s.commits)
    })?;
    counter(
        e,
        agents,
        "rill_dead_lettered",
        "Records sent to the dead-letter topic",
        &|s| load(&s.dead_lettered),
    )?;
    counter(
        e,
        agents,
        "rill_retried",
        "Retries, in place or through retry topics",
        &|s| load(&s.retried),
    )?;
    counter(e, agents, "rill_skipped", "Failed records skipped", &|s| {
        load(&s.skipped)
    })?;
    counter(
        e,
        agents,
        "rill_failures",
        "Times the agent function returned an error or panicked on a record",
        &|s| load(&s.failures),
    )?;
    counter(
        e,
        agents,
        "rill_decode_errors",
        "Records that could not be decoded",
        &|s| load(&s.decode_errors),
    )?;
    counter(
        e,
        agents,
        "rill_late_records",
        "Records that arrived after their window closed",
        &|s| load(&s.late_records),
    )?;
    counter(e, agents, "rill_windows_closed", "Windows closed", &|s| {
        load(&s.windows_closed)
    })
}

/// Table recovery: offsets covered, and offsets set out to cover.
fn encode_recovery(e: &mut DescriptorEncoder, agents: &[AgentView]) -> std::fmt::Result {
    counter(
        e,
        agents,
        "rill_recovery_records",
        "Changelog offsets covered while recovering tables",
        &|s| load(&s.restored),
    )?;
    counter(
        e,
        agents,
        "rill_recovery_target_records",
        "Changelog offsets table recoveries set out to cover (with rill_recovery_records_total: their progress)",
        &|s| load(&s.restore_total),
    )?;
    counter(
        e,
        agents,
        "rill_standby_records",
        "Changelog offsets covered keeping standby copies of other workers' table partitions warm",
        &|s| load(&s.standby_replayed),
    )
}

/// `rill_event_time_lag_seconds`: of the agents that have committed a record with an event time.
fn encode_event_time_lag(e: &mut DescriptorEncoder, agents: &[AgentView]) -> std::fmt::Result {
    let mut family = e.encode_descriptor(
        "rill_event_time_lag_seconds",
        "Wall clock minus the event time of the last record processed, at the last commit",
        None,
        MetricType::Gauge,
    )?;
    for a in agents {
        if a.stats.event_time_lag_set.load(Ordering::Relaxed) {
            let labels = [("agent", &*a.name)];
            let lag = a.stats.event_time_lag_ms.load(Ordering::Relaxed) as f64 / 1000.0;
            family.encode_family(&labels)?.encode_gauge(&lag)?;
        }
    }
    Ok(())
}

/// How an agent's consumers' assignments changed so far, summed over its consumer groups
/// (`rill_rebalances_total`, `rill_partitions_revoked_total`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rebalances {
    /// Assignments announced (a rebalance, a cooperative change, a rollback's re-read).
    pub assigned: u64,
    /// Revocations by the group.
    pub revoked: u64,
    /// Partitions those revocations took away: every owned one in an eager rebalance, only
    /// the moving ones in a cooperative one.
    pub partitions_revoked: u64,
}

impl Rebalances {
    fn of(routers: &[Arc<Router>]) -> Self {
        routers
            .iter()
            .fold(Rebalances::default(), |sum, r| Rebalances {
                assigned: sum.assigned + load(&r.assigned_count),
                revoked: sum.revoked + load(&r.revoked_count),
                partitions_revoked: sum.partitions_revoked + load(&r.revoked_partitions),
            })
    }
}

/// `rill_rebalances` (assignments and revocations) and `rill_partitions_revoked`, summed over
/// the agent's consumers.
fn encode_rebalances(e: &mut DescriptorEncoder, agents: &[AgentView]) -> std::fmt::Result {
    let sums: Vec<Rebalances> = agents
        .iter()
        .map(|a| Rebalances::of(&a.routers()))
        .collect();
    let mut family = e.encode_descriptor(
        "rill_rebalances",
        "Partition assignments and revocations",
        None,
        MetricType::Counter,
    )?;
    for (a, sum) in agents.iter().zip(&sums) {
        for (kind, n) in [("assigned", sum.assigned), ("revoked", sum.revoked)] {
            let labels = [("agent", &*a.name), ("kind", kind)];
            family
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
        }
    }
    let mut family = e.encode_descriptor(
        "rill_partitions_revoked",
        "Partitions taken away by rebalances (all owned ones when eager, the moving ones when cooperative)",
        None,
        MetricType::Counter,
    )?;
    for (a, sum) in agents.iter().zip(&sums) {
        family
            .encode_family(&[("agent", &*a.name)])?
            .encode_counter::<NoLabelSet, _, u64>(&sum.partitions_revoked, None)?;
    }
    Ok(())
}

/// In a windowed table (entries keyed `[key, window_start]`), the key's window that started
/// last at or before `at`, committed: `{"window_start": .., "value": ..}`.
fn window_at(def: &TableDef, partition: i32, key: &[u8], at: i64) -> TableAnswer {
    let mut prefix = b"[".to_vec();
    prefix.extend_from_slice(key);
    prefix.push(b',');
    let windows = match def.store.page(&def.name, partition, &prefix, None, 100_000) {
        Ok(w) => w,
        Err(e) => return TableAnswer::Unavailable(e.to_string()),
    };
    let start_of = |k: &[u8]| {
        serde_json::from_slice::<(serde_json::Value, i64)>(k)
            .ok()
            .map(|(_, start)| start)
    };
    let latest = windows
        .iter()
        .filter_map(|(k, v)| Some((start_of(k)?, v)))
        .filter(|(start, _)| *start <= at)
        .max_by_key(|(start, _)| *start);
    match latest {
        Some((start, v)) => match serde_json::from_slice::<serde_json::Value>(v) {
            Ok(value) => {
                TableAnswer::Found(serde_json::json!({ "window_start": start, "value": value }))
            }
            Err(e) => TableAnswer::Unavailable(format!("the stored value does not decode: {e}")),
        },
        None => TableAnswer::Missing,
    }
}

/// A counter family with one sample per agent.
fn counter(
    e: &mut DescriptorEncoder,
    agents: &[AgentView],
    name: &str,
    help: &str,
    get: &dyn Fn(&AgentStats) -> u64,
) -> std::fmt::Result {
    let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for a in agents {
        let labels = [("agent", &*a.name)];
        let mut m = family.encode_family(&labels)?;
        m.encode_counter::<NoLabelSet, _, u64>(&get(&a.stats), None)?;
    }
    Ok(())
}

/// A counter family with one sample per agent and topic.
fn per_topic(
    e: &mut DescriptorEncoder,
    agents: &[AgentView],
    name: &str,
    help: &str,
    get: &PerTopic,
) -> std::fmt::Result {
    let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for a in agents {
        for (topic, n) in get(&a.stats) {
            let labels = [("agent", &*a.name), ("topic", &*topic)];
            let mut m = family.encode_family(&labels)?;
            m.encode_counter::<NoLabelSet, _, u64>(&n, None)?;
        }
    }
    Ok(())
}

/// A histogram family with one histogram per agent.
fn histogram(
    e: &mut DescriptorEncoder,
    agents: &[AgentView],
    name: &str,
    help: &str,
    get: &dyn Fn(&AgentStats) -> &crate::base::metrics::Histogram,
) -> std::fmt::Result {
    let mut family = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for a in agents {
        let (sum, count, buckets) = get(&a.stats).snapshot();
        let labels = [("agent", &*a.name)];
        let mut m = family.encode_family(&labels)?;
        m.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
    }
    Ok(())
}

fn load(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// rill's own metrics as a `prometheus-client` collector on the app's registry.
#[derive(Debug)]
pub(crate) struct Collector(pub(crate) std::sync::Weak<Observer>);

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        match self.0.upgrade() {
            Some(o) => o.encode_rill(encoder),
            None => Ok(()),
        }
    }
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

impl WebBackend for Observer {
    fn ready(&self) -> Result<(), String> {
        if !self.health.is_ready() {
            return Err(format!(
                "not connected to the broker: {}",
                self.health.last_error().unwrap_or_default()
            ));
        }
        if !self.started.load(Ordering::Acquire) {
            return Err("starting".to_owned());
        }
        for a in self.agents().iter() {
            if a.router.assigned_count.load(Ordering::Relaxed) == 0 {
                return Err(format!(
                    "agent `{}` has no partition assignment yet",
                    a.name
                ));
            }
            let (done, total) = (
                a.stats.restored.load(Ordering::Relaxed),
                a.stats.restore_total.load(Ordering::Relaxed),
            );
            if done < total {
                return Err(format!(
                    "agent `{}` is recovering its tables ({done} of {total} changelog records)",
                    a.name
                ));
            }
        }
        Ok(())
    }

    fn metrics(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        out
    }

    fn topology(&self) -> Topology {
        let mut t = self.topology.clone();
        for a in self.agents().iter() {
            let (repartition, windows) = a.pipeline.runtime_parts();
            if let Some(r) = repartition {
                t.agent_repartitions(&a.name, &r.topic);
            }
            for w in windows {
                t.agent_window(&a.name, &w.name, &w.changelog);
            }
            for (topic, _) in a.stats.topics_out.snapshot() {
                t.agent_sends(&a.name, &topic);
            }
        }
        t
    }

    fn status(&self) -> Status {
        let ready = self.ready();
        let agents = self
            .agents()
            .iter()
            .map(|a| {
                let s = &a.stats;
                let partitions = a.router.owned_partitions();
                AgentStatus {
                    name: a.name.to_string(),
                    records_in: s.records_in.load(Ordering::Relaxed),
                    records_out: s.records_out.load(Ordering::Relaxed),
                    dead_lettered: s.dead_lettered.load(Ordering::Relaxed),
                    late_records: s.late_records.load(Ordering::Relaxed),
                    commits: s.commits.load(Ordering::Relaxed),
                    consumer_lag: self.lags(a).iter().map(|(_, l)| *l).sum(),
                    event_time_lag_seconds: s
                        .event_time_lag_set
                        .load(Ordering::Relaxed)
                        .then(|| s.event_time_lag_ms.load(Ordering::Relaxed) as f64 / 1000.0),
                    partitions,
                }
            })
            .collect();
        Status {
            app: self.app.clone(),
            url: self.url.get().cloned().unwrap_or_default(),
            ready: ready.is_ok(),
            reason: ready.err(),
            now_ms: now_millis(),
            agents,
        }
    }

    fn table(&self, table: &str, key: &str, at: Option<i64>) -> TableAnswer {
        let agents = self.agents();
        let found = agents.iter().find_map(|a| {
            a.tables
                .iter()
                .find(|t| &*t.name == table)
                .map(|t| (a, t.clone()))
        });
        let Some((agent, def)) = found else {
            return self.global_table(table, key);
        };
        let Some(parse) = def.key_parser.get() else {
            return TableAnswer::Unavailable(format!(
                "table `{table}` has not been opened by its agent yet"
            ));
        };
        let (partition, stored) = match parse(key) {
            Ok(k) => k,
            Err(e) => return TableAnswer::BadKey(e),
        };
        let (router, group, topic) = agent.table_owner();
        if router.owned_partitions().contains(&partition) {
            if let Some(at) = at {
                return window_at(&def, partition, &stored, at);
            }
            // The last committed value (at most one commit interval behind the agent).
            return match def.store.get(&def.name, partition, &stored) {
                Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
                    Ok(v) => TableAnswer::Found(v),
                    Err(e) => {
                        TableAnswer::Unavailable(format!("the stored value does not decode: {e}"))
                    }
                },
                Ok(None) => TableAnswer::Missing,
                Err(e) => TableAnswer::Unavailable(e.to_string()),
            };
        }
        match self.owner_of(&group, &topic, partition) {
            Ok(None) => TableAnswer::Unavailable(format!(
                "partition {partition} of table `{table}` is not assigned to this worker yet"
            )),
            Ok(Some(Some(url))) if Some(&url) != self.url.get() => TableAnswer::Elsewhere(url),
            Ok(_) => TableAnswer::Unavailable(format!(
                "no worker with a web server owns partition {partition} of `{topic}` right now (rebalancing?)"
            )),
            Err(e) => TableAnswer::Unavailable(e.to_string()),
        }
    }
}

//! Worker configuration: where the log lives (Kafka, the embedded LMDB log, or memory), where
//! state lives, how often to commit, and librdkafka properties passed through untouched.
//!
//! Precedence, lowest first: `App` builder calls, `RILL_*` environment variables, CLI flags.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::base::error::{Error, Result};

/// Which transport carries the topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broker {
    /// The embedded log, persisted in LMDB under the data dir (the default).
    Embedded,
    /// The embedded log kept in a temporary directory that is deleted on exit (`memory://`).
    Memory,
    /// Apache Kafka (`kafka://host:port[,host:port]`).
    Kafka {
        /// librdkafka's `bootstrap.servers`.
        bootstrap: String,
    },
}

impl Broker {
    /// Parses `kafka://h1:9092,h2:9092`, `memory://` or `embedded://`.
    ///
    /// ```
    /// use rill_runtime::Broker;
    /// assert_eq!(
    ///     Broker::parse("kafka://a:9092,b:9092").unwrap(),
    ///     Broker::Kafka { bootstrap: "a:9092,b:9092".into() }
    /// );
    /// assert!(Broker::parse("redis://x").is_err());
    /// ```
    pub fn parse(url: &str) -> Result<Self> {
        let url = url.trim();
        let fix = "expected `kafka://host:port[,host:port...]`, `memory://`, or `embedded://` (the default: the log in --data-dir)";
        if url.is_empty() || url == "embedded://" || url == "embedded" {
            return Ok(Broker::Embedded);
        }
        if url == "memory://" || url == "memory" {
            return Ok(Broker::Memory);
        }
        if let Some(rest) = url.strip_prefix("kafka://") {
            let hosts: Vec<&str> = rest
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .collect();
            if hosts.is_empty() {
                return Err(Error::config(
                    "broker",
                    format!("`{url}` names no host; {fix}"),
                ));
            }
            for host in &hosts {
                let port_ok = host
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
                if !port_ok {
                    return Err(Error::config(
                        "broker",
                        format!("`{host}` in `{url}` is not host:port; {fix}"),
                    ));
                }
            }
            return Ok(Broker::Kafka {
                bootstrap: hosts.join(","),
            });
        }
        Err(Error::config(
            "broker",
            format!("unsupported broker URL `{url}`; {fix}"),
        ))
    }
}

/// What a record's effects are guaranteed to be, after failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProcessingGuarantee {
    /// Every record's effects (outputs, table writes, dead letters) happen at least once: a
    /// crash may repeat those of the last commit interval. The default.
    #[default]
    AtLeastOnce,
    /// Every record's effects happen exactly once as seen by `read_committed` readers and by
    /// tables: on Kafka each commit step is one transaction holding the outputs, changelog
    /// records, dead letters and consumed offsets; local table state follows the committed
    /// transactions. On the embedded log outputs and offsets already commit in one LMDB
    /// transaction.
    ExactlyOnce,
}

/// Where an agent's consumer group starts on a partition it has no committed offset for, or
/// whose committed offset retention removed: Kafka's `auto.offset.reset`, Kafka Streams'
/// `auto.offset.reset` per source, Faust's `stream_wait_empty`-era `earliest` default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// From the oldest record the log still has (the default: nothing written before the
    /// first start is skipped).
    #[default]
    Earliest,
    /// From the end: only records written after the group first reads the partition.
    Latest,
}

impl OffsetReset {
    /// Parses `earliest` or `latest` (and librdkafka's synonyms `smallest`, `beginning`,
    /// `largest`, `end`).
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim() {
            "earliest" | "smallest" | "beginning" => Some(OffsetReset::Earliest),
            "latest" | "largest" | "end" => Some(OffsetReset::Latest),
            _ => None,
        }
    }

    /// The value of librdkafka's `auto.offset.reset`.
    pub fn as_str(self) -> &'static str {
        match self {
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
        }
    }
}

/// How an agent's consumer group on Kafka moves partitions between workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RebalanceProtocol {
    /// Only the partitions that move are revoked (librdkafka's `cooperative-sticky`; Kafka
    /// Streams' default since 2.6): workers whose partitions stay keep processing them. An
    /// agent reading several co-partitioned topics (a join) is assigned its first topic by the
    /// group, and partition n of the others with partition n of it.
    #[default]
    Cooperative,
    /// Every rebalance revokes every partition of the group first (`range`).
    Eager,
}

impl RebalanceProtocol {
    /// Parses `cooperative` or `eager`.
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim() {
            "cooperative" => Some(RebalanceProtocol::Cooperative),
            "eager" => Some(RebalanceProtocol::Eager),
            _ => None,
        }
    }
}

/// Settings of one worker.
#[derive(Clone)]
pub struct Config {
    /// The app's id: consumer groups, internal topics and the default data dir derive from it.
    pub app_id: String,
    /// The transport.
    pub broker: Broker,
    /// Directory for the embedded log and local state (default `./<app>-data`).
    pub data_dir: PathBuf,
    /// How often each agent instance commits (offsets, outputs; later table state).
    pub commit_interval: Duration,
    /// How often an instance that reads a backlog commits (`RILL_BACKLOG_COMMIT_INTERVAL_MS`;
    /// default 1 s, never shorter than `commit_interval`): one whose fetched batches come full,
    /// with records left to read. Fewer, larger steps while it catches up: a window or table
    /// key updated many times writes its state once per step, and join records that expire
    /// within a step are never written. Under exactly-once, steps stay at `commit_interval`.
    pub backlog_commit_interval: Duration,
    /// Partitions of topics rill creates (default 8).
    pub partitions: i32,
    /// Replication factor of topics rill creates on Kafka (default 1).
    pub replication: i32,
    /// librdkafka properties passed to every client (`security.protocol`, `sasl.*`, `ssl.*`...).
    pub kafka: BTreeMap<String, String>,
    /// Embedded log retention per partition in bytes (`None`: unbounded).
    pub retention_bytes: Option<u64>,
    /// Embedded log retention by record age (`None`: unbounded).
    pub retention: Option<Duration>,
    /// The embedded log compacts a partition of a compacted topic (table and window
    /// changelogs) when it has grown to twice its size after the last compaction and past this
    /// many bytes (`RILL_COMPACTION_BYTES`; default 16 MiB).
    pub compaction_bytes: u64,
    /// How long the embedded log keeps a tombstone (a deleted key) in a compacted topic, so a
    /// lagging reader still sees the delete (`RILL_TOMBSTONE_RETENTION_MS`; default 24 h, as
    /// Kafka's `delete.retention.ms`).
    pub tombstone_retention: Duration,
    /// LMDB map size of the embedded log.
    pub embedded_map_size: usize,
    /// Initial LMDB map size of the table store (`RILL_TABLE_MAP_SIZE`, bytes); it doubles
    /// when full, up to `table_map_max`.
    pub table_map_size: usize,
    /// Largest map size the table store grows to (`RILL_TABLE_MAP_MAX`, bytes).
    pub table_map_max: usize,
    /// How long shutdown waits for agents to finish their current record.
    pub shutdown_timeout: Duration,
    /// Threads of the tokio runtime `App::main` starts, which run the agents
    /// (`RILL_WORKER_THREADS`; default half the cores, at least 1). The other half is left to
    /// what runs beside them on threads of its own: the fetchers, librdkafka's I/O and
    /// delivery threads, LMDB commits. Kafka Streams' `num.stream.threads` defaults to 1; a
    /// worker with every core for agents measured ~10% more CPU per record on 2 cores (agent
    /// tasks stolen between runtime threads that compete with the fetcher).
    pub worker_threads: usize,
    /// How often the records of a `group_by` repartition topic that its consumer committed
    /// are deleted on Kafka (`RILL_REPARTITION_PURGE_INTERVAL_MS`; default 30 s, Kafka
    /// Streams' `repartition.purge.interval.ms`). Repartition topics have no time retention:
    /// their records carry old event times as timestamps.
    pub repartition_purge_interval: Duration,
    /// How long a partition may go without records before it stops holding back its agent's
    /// watermark (`RILL_IDLE_TIMEOUT_MS`; default 10 s). See `window` for the semantics.
    pub idle_timeout: Duration,
    /// How far ahead, in event time, an agent over several topics reads one of them while
    /// another is behind (`RILL_READ_AHEAD_MS`, `off` for no limit; default 30 s): a join over
    /// two backlogs then holds its window and this much, not the backlog read ahead (Kafka
    /// Streams keeps a task's topics in step alike). See `io/transport/align.rs`.
    pub read_ahead: Option<Duration>,
    /// The clock idle timeouts and windowed tables' `now()` read (virtual in tests).
    pub clock: crate::base::time::Clock,
    /// Failure policy of agents that do not choose one (`RILL_ON_ERROR`; default
    /// `dead_letter`). See `failure`.
    pub on_error: crate::base::failure::OnError,
    /// Record values larger than this are failures before decoding (`RILL_MAX_RECORD_BYTES`;
    /// default 1 MiB, Kafka's default message size limit).
    pub max_record_bytes: usize,
    /// Address the web server binds (`RILL_WEB_BIND`; default 127.0.0.1, this host only).
    pub web_bind: std::net::IpAddr,
    /// Port of the web server (`--web-port`, `RILL_WEB_PORT`; 0 picks a free one and logs
    /// it). `None` runs no web server: the default of `App::start` and tests; the `worker`
    /// command defaults to 6066, Faust's port.
    pub web_port: Option<u16>,
    /// Bearer token the web server requires (`RILL_WEB_TOKEN`); never logged or served.
    pub web_token: Option<String>,
    /// The web address other workers and clients use to reach this one
    /// (`RILL_WEB_ADVERTISE`, e.g. `http://worker-3:6066`; default: the bound address).
    pub web_advertise: Option<String>,
    /// This worker's stable identity in its consumer groups on Kafka (`--instance-id`,
    /// `RILL_INSTANCE_ID`; Kafka's `group.instance.id`, static membership). A worker restarted
    /// with the same id within `session.timeout.ms` (45 s by default) gets its partitions back
    /// without a rebalance, so a rolling deploy moves nothing. Unique per worker of an app.
    pub instance_id: Option<String>,
    /// How many other workers keep a warm copy of each table partition on Kafka
    /// (`RILL_STANDBY_REPLICAS`; default 0; Kafka Streams' `num.standby.replicas`): a worker
    /// taking a partition over then replays only the changelog's tail. See `wiring::standby`.
    pub standby_replicas: usize,
    /// How consumer groups on Kafka rebalance (`RILL_REBALANCE_PROTOCOL` = `cooperative`, the
    /// default, or `eager`). See [`RebalanceProtocol`].
    pub rebalance_protocol: RebalanceProtocol,
    /// Where agents without their own `offset_reset` start on a partition their group has
    /// no committed offset for (`RILL_OFFSET_RESET`, or `-X auto.offset.reset`; default
    /// earliest). See [`OffsetReset`].
    pub offset_reset: Option<OffsetReset>,
    /// At-least-once (the default) or exactly-once (`RILL_PROCESSING_GUARANTEE`). See
    /// [`ProcessingGuarantee`].
    pub processing_guarantee: ProcessingGuarantee,
    /// Per-record metrics: records per topic and the processing-time histogram (`RILL_METRICS`
    /// = `on`/`off`; default on). Off leaves the plain counters of `AgentStats`.
    pub metrics: bool,
    /// Tracing: where and how spans are exported (default: from the standard `OTEL_*`
    /// variables; no exporter runs when no endpoint is set).
    pub telemetry: crate::base::telemetry::TelemetryConfig,
    /// The schema registry of the registry codecs (`#[record(codec = "avro")]`); `None`
    /// until `App::schema_registry` or `RILL_SCHEMA_REGISTRY_URL` sets it.
    pub schema_registry: Option<RegistryConfig>,
}

/// Where the schema registry is and how rill uses it (Confluent's serializer settings).
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Its URL (`RILL_SCHEMA_REGISTRY_URL`; Confluent's `schema.registry.url`, Apicurio's
    /// `http://host:8080/apis/ccompat/v7`).
    pub url: String,
    /// HTTP basic authentication, `user:password` (`RILL_SCHEMA_REGISTRY_BASIC_AUTH`;
    /// Confluent's `basic.auth.user.info`, a Confluent Cloud API key and secret).
    pub basic_auth: Option<(String, String)>,
    /// A PEM file of the CA that signed the registry's certificate, for `https://` URLs
    /// signed by a private CA (`RILL_SCHEMA_REGISTRY_CA`); the system's roots otherwise.
    pub ca_file: Option<PathBuf>,
    /// How subjects are named (`RILL_SCHEMA_SUBJECT_STRATEGY` = `topic`, the default,
    /// `record` or `topic-record`).
    pub subject_strategy: crate::base::schema::SubjectStrategy,
    /// Register the schemas rill writes with when they are not yet (default true,
    /// `RILL_SCHEMA_AUTO_REGISTER`; Confluent's `auto.register.schemas`). Off, a sink's schema
    /// must already be registered under its subject (as by a CI step running `schema
    /// --register`), or the worker does not start.
    pub auto_register: bool,
}

impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("url", &self.url)
            .field("user", &self.basic_auth.as_ref().map(|(user, _)| user))
            .field("ca_file", &self.ca_file)
            .field("subject_strategy", &self.subject_strategy)
            .field("auto_register", &self.auto_register)
            .finish_non_exhaustive()
    }
}

impl RegistryConfig {
    /// The registry at `url`, subjects by topic, auto-registering.
    pub fn new(url: &str) -> Self {
        RegistryConfig {
            url: url.to_owned(),
            basic_auth: None,
            ca_file: None,
            subject_strategy: crate::base::schema::SubjectStrategy::Topic,
            auto_register: true,
        }
    }
}

/// librdkafka properties rill sets itself, and why a user's value is refused.
const RESERVED_KAFKA: &[(&str, &str)] = &[
    ("group.id", "a consumer group per agent, `<app>-<agent>`"),
    (
        "enable.auto.commit",
        "offsets are committed after what a record produced is durable",
    ),
    (
        "enable.auto.offset.store",
        "offsets are committed after what a record produced is durable",
    ),
    (
        "group.instance.id",
        "each agent's consumer of this worker gets it; set --instance-id or RILL_INSTANCE_ID",
    ),
    (
        "transactional.id",
        "under exactly-once each worker's producer gets its own, `<app>-<worker>`, so a restarted worker fences its predecessor; set RILL_PROCESSING_GUARANTEE=exactly_once",
    ),
    (
        "partition.assignment.strategy",
        "rill sets `cooperative-sticky` (agents reading several co-partitioned topics get partition n of each together); set RILL_REBALANCE_PROTOCOL=eager for eager `range` rebalancing",
    ),
    (
        "allow.auto.create.topics",
        "rill creates its topics with the partitions and settings it needs; a topic auto-created by the broker gets the broker's",
    ),
];

impl Config {
    /// Defaults for an app id.
    pub fn new(app_id: &str) -> Self {
        Config {
            app_id: app_id.to_owned(),
            broker: Broker::Embedded,
            data_dir: PathBuf::from(format!("{app_id}-data")),
            commit_interval: Duration::from_millis(100),
            backlog_commit_interval: Duration::from_secs(1),
            partitions: 8,
            replication: 1,
            kafka: BTreeMap::new(),
            retention_bytes: None,
            retention: Some(Duration::from_secs(7 * 24 * 3600)),
            compaction_bytes: 16 << 20,
            tombstone_retention: Duration::from_secs(24 * 3600),
            embedded_map_size: 8 << 30,
            table_map_size: 1 << 30,
            table_map_max: 1 << 40,
            shutdown_timeout: Duration::from_secs(30),
            worker_threads: default_worker_threads(),
            idle_timeout: Duration::from_secs(10),
            read_ahead: Some(Duration::from_secs(30)),
            repartition_purge_interval: Duration::from_secs(30),
            clock: crate::base::time::Clock::System,
            on_error: crate::base::failure::OnError::DeadLetter,
            max_record_bytes: 1 << 20,
            offset_reset: None,
            processing_guarantee: ProcessingGuarantee::AtLeastOnce,
            metrics: true,
            web_bind: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            web_port: None,
            web_token: None,
            web_advertise: None,
            instance_id: None,
            standby_replicas: 0,
            rebalance_protocol: RebalanceProtocol::Cooperative,
            telemetry: crate::base::telemetry::TelemetryConfig::default(),
            schema_registry: None,
        }
    }

    /// Applies `RILL_*` environment variables (the CLI applies its flags afterwards).
    pub fn apply_env(&mut self) -> Result<()> {
        self.apply_vars(std::env::vars())
    }

    pub(crate) fn apply_vars(
        &mut self,
        vars: impl Iterator<Item = (String, String)>,
    ) -> Result<()> {
        for (name, value) in vars {
            self.apply_var(&name, value)?;
        }
        Ok(())
    }

    /// Applies one variable; names rill does not know are ignored, except `RILL_KAFKA_*`,
    /// which become librdkafka properties.
    fn apply_var(&mut self, name: &str, value: String) -> Result<()> {
        match name {
            "RILL_BROKER" => self.broker = Broker::parse(&value).map_err(|e| rename(e, name))?,
            "RILL_DATA_DIR" => self.data_dir = PathBuf::from(value),
            "RILL_COMMIT_INTERVAL_MS" => self.commit_interval = parse_ms(name, &value, 1)?,
            "RILL_BACKLOG_COMMIT_INTERVAL_MS" => {
                self.backlog_commit_interval = parse_ms(name, &value, 1)?;
            }
            "RILL_IDLE_TIMEOUT_MS" => self.idle_timeout = parse_ms(name, &value, 1)?,
            "RILL_READ_AHEAD_MS" => {
                self.read_ahead = match value.as_str() {
                    "off" => None,
                    _ => Some(parse_ms(name, &value, 0)?),
                };
            }
            "RILL_ON_ERROR" => self.on_error = parse_on_error(name, &value)?,
            "RILL_MAX_RECORD_BYTES" => self.max_record_bytes = parse_num(name, &value, 1)?,
            "RILL_PROCESSING_GUARANTEE" => {
                self.processing_guarantee = parse_guarantee(name, &value)?;
            }
            "RILL_METRICS" => self.metrics = parse_on_off(name, &value)?,
            "RILL_OFFSET_RESET" => self.offset_reset = Some(parse_offset_reset(name, &value)?),
            "RILL_WEB_PORT" => self.web_port = Some(parse_num(name, &value, 0)?),
            "RILL_WEB_BIND" => self.web_bind = parse_ip(name, &value)?,
            // A token read from a secret file often ends with a newline.
            "RILL_WEB_TOKEN" if !value.trim().is_empty() => {
                self.web_token = Some(value.trim().to_owned());
            }
            "RILL_WEB_ADVERTISE" if !value.is_empty() => self.web_advertise = Some(value),
            "RILL_INSTANCE_ID" if !value.trim().is_empty() => {
                self.instance_id = Some(value.trim().to_owned());
            }
            "RILL_PARTITIONS" => self.partitions = parse_num(name, &value, 1)?,
            "RILL_STANDBY_REPLICAS" => self.standby_replicas = parse_num(name, &value, 0)?,
            "RILL_REBALANCE_PROTOCOL" => {
                self.rebalance_protocol = RebalanceProtocol::parse(&value).ok_or_else(|| {
                    Error::config(
                        name,
                        format!("`{}` is neither `cooperative` nor `eager`", value.trim()),
                    )
                })?;
            }
            "RILL_WORKER_THREADS" => self.worker_threads = parse_num(name, &value, 1)?,
            "RILL_TABLE_MAP_SIZE" => self.table_map_size = parse_num(name, &value, 1 << 20)?,
            "RILL_TABLE_MAP_MAX" => self.table_map_max = parse_num(name, &value, 1 << 20)?,
            "RILL_REPLICATION" => self.replication = parse_num(name, &value, 1)?,
            "RILL_COMPACTION_BYTES" => self.compaction_bytes = parse_num(name, &value, 1)?,
            "RILL_REPARTITION_PURGE_INTERVAL_MS" => {
                self.repartition_purge_interval = parse_ms(name, &value, 1)?;
            }
            "RILL_TOMBSTONE_RETENTION_MS" => self.tombstone_retention = parse_ms(name, &value, 0)?,
            "RILL_RETENTION_BYTES" => self.retention_bytes = Some(parse_num(name, &value, 1)?),
            "RILL_RETENTION_MS" => self.retention = Some(parse_ms(name, &value, 1)?),
            "RILL_SCHEMA_REGISTRY_URL" if !value.trim().is_empty() => {
                let old = self.schema_registry.take();
                self.schema_registry = Some(RegistryConfig {
                    url: value.trim().to_owned(),
                    ..old.unwrap_or_else(|| RegistryConfig::new(""))
                });
            }
            "RILL_SCHEMA_REGISTRY_BASIC_AUTH"
            | "RILL_SCHEMA_REGISTRY_CA"
            | "RILL_SCHEMA_SUBJECT_STRATEGY"
            | "RILL_SCHEMA_AUTO_REGISTER" => self.apply_registry_var(name, value)?,
            _ => {
                if let Some(prop) = name.strip_prefix("RILL_KAFKA_") {
                    self.kafka
                        .insert(prop.to_ascii_lowercase().replace('_', "."), value);
                }
            }
        }
        Ok(())
    }

    /// The registry settings besides its URL (which may come later in the environment: they
    /// wait in a config without one, and `validate` refuses them if none comes).
    fn apply_registry_var(&mut self, name: &str, value: String) -> Result<()> {
        let registry = self
            .schema_registry
            .get_or_insert_with(|| RegistryConfig::new(""));
        match name {
            "RILL_SCHEMA_REGISTRY_BASIC_AUTH" => {
                let (user, password) = value.trim().split_once(':').ok_or_else(|| {
                    Error::config(
                        name,
                        "is not `user:password` (for Confluent Cloud: `<api key>:<api secret>`)",
                    )
                })?;
                registry.basic_auth = Some((user.to_owned(), password.to_owned()));
            }
            "RILL_SCHEMA_REGISTRY_CA" => registry.ca_file = Some(PathBuf::from(value.trim())),
            "RILL_SCHEMA_SUBJECT_STRATEGY" => {
                registry.subject_strategy = crate::base::schema::SubjectStrategy::from_name(
                    value.trim(),
                )
                .ok_or_else(|| {
                    Error::config(
                        name,
                        format!(
                            "`{}` is none of `topic`, `record`, `topic-record`",
                            value.trim()
                        ),
                    )
                })?;
            }
            _ => registry.auto_register = parse_on_off(name, &value)?,
        }
        Ok(())
    }

    /// Adds a librdkafka property from `key=value` (the CLI's `-X`).
    pub fn set_kafka_property(&mut self, kv: &str) -> Result<()> {
        let (k, v) = kv.split_once('=').ok_or_else(|| {
            Error::config(
                "-X",
                format!("`{kv}` is not `property=value`, e.g. `-X security.protocol=SASL_SSL`"),
            )
        })?;
        self.kafka.insert(k.trim().to_owned(), v.trim().to_owned());
        Ok(())
    }

    /// The tokio runtime a worker runs in: `worker_threads` threads, timers and I/O enabled.
    /// `App::main` starts its worker in one; an app with its own `main` can too.
    pub fn runtime(&self) -> Result<tokio::runtime::Runtime> {
        self.check_worker_threads()?;
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.worker_threads)
            .enable_all()
            .thread_name("rill")
            .build()
            .map_err(|e| Error::io("starting the tokio runtime", e))
    }

    fn check_worker_threads(&self) -> Result<()> {
        if self.worker_threads == 0 {
            return Err(Error::config(
                "worker_threads (RILL_WORKER_THREADS)",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// Checks cross-field rules, naming the setting and the fix.
    pub fn validate(&self) -> Result<()> {
        self.check_worker_threads()?;
        if self.partitions < 1 {
            return Err(Error::config(
                "partitions (RILL_PARTITIONS)",
                "must be at least 1",
            ));
        }
        if self.commit_interval.is_zero() {
            return Err(Error::config(
                "commit_interval (RILL_COMMIT_INTERVAL_MS)",
                "must be above zero; 100 ms is a good start",
            ));
        }
        if let Some(token) = &self.web_token
            && (token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(Error::config(
                "web_token (RILL_WEB_TOKEN)",
                "must be non-empty, without spaces or control characters (it is sent as `Authorization: Bearer <token>`)",
            ));
        }
        if let Some(id) = &self.instance_id
            && (id.is_empty() || id.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(Error::config(
                "instance_id (--instance-id, RILL_INSTANCE_ID)",
                "must be non-empty, without spaces, and unique per worker (e.g. the pod name)",
            ));
        }
        self.check_kafka_properties()?;
        if let Some(registry) = &self.schema_registry
            && !(registry.url.starts_with("http://") || registry.url.starts_with("https://"))
        {
            return Err(Error::config(
                "schema_registry (RILL_SCHEMA_REGISTRY_URL)",
                if registry.url.is_empty() {
                    "registry settings are set but not its URL; set RILL_SCHEMA_REGISTRY_URL (e.g. http://127.0.0.1:8081) or `App::schema_registry`".to_owned()
                } else {
                    format!("`{}` is not an http:// or https:// URL", registry.url)
                },
            ));
        }
        self.default_offset_reset().map(|_| ())
    }

    /// Refuses the librdkafka properties rill sets itself, and values that would break what
    /// it promises, instead of replacing them silently.
    fn check_kafka_properties(&self) -> Result<()> {
        for (reserved, why) in RESERVED_KAFKA {
            if self.kafka.contains_key(*reserved) {
                return Err(Error::config(
                    format!("kafka property `{reserved}`"),
                    format!("rill manages it ({why}); remove it"),
                ));
            }
        }
        let refused = |prop: &str, bad: &str, why: &str| match self.kafka.get(prop) {
            Some(v) if v.trim() == bad => Err(Error::config(
                format!("kafka property `{prop}`"),
                format!("`{bad}` is refused: {why}; remove it"),
            )),
            _ => Ok(()),
        };
        refused(
            "enable.idempotence",
            "false",
            "rill's producers are idempotent, so a retried send is not written twice and exactly-once can rely on it",
        )?;
        refused(
            "statistics.interval.ms",
            "0",
            "rill reads each partition's fetch position from librdkafka's statistics to tell when an idle partition may stop holding back windows",
        )?;
        if self.processing_guarantee == ProcessingGuarantee::ExactlyOnce {
            refused(
                "isolation.level",
                "read_uncommitted",
                "under exactly-once agents read only committed transactions (`read_committed`)",
            )?;
        }
        Ok(())
    }

    /// The commit interval of an instance reading a backlog: `backlog_commit_interval`, never
    /// shorter than `commit_interval`; `commit_interval` under exactly-once, where every
    /// instance of a worker commits on the same ticks to share a transaction.
    pub(crate) fn backlog_interval(&self) -> Duration {
        if self.processing_guarantee == ProcessingGuarantee::ExactlyOnce {
            self.commit_interval
        } else {
            self.backlog_commit_interval.max(self.commit_interval)
        }
    }

    /// Where agents without their own `offset_reset` start: `RILL_OFFSET_RESET`
    /// ([`Config::offset_reset`]) or `-X auto.offset.reset`, which must agree when both are
    /// set; earliest when neither is.
    pub fn default_offset_reset(&self) -> Result<OffsetReset> {
        let prop = "kafka property `auto.offset.reset`";
        let from_kafka = match self.kafka.get("auto.offset.reset") {
            Some(v) => Some(OffsetReset::parse(v).ok_or_else(|| {
                Error::config(
                    prop,
                    format!(
                        "`{v}` is refused: rill starts a partition without a committed offset at `earliest` or `latest` (failing instead, librdkafka's `error`, is not supported)"
                    ),
                )
            })?),
            None => None,
        };
        match (self.offset_reset, from_kafka) {
            (Some(a), Some(b)) if a != b => Err(Error::config(
                prop,
                format!(
                    "`{}` contradicts offset_reset (RILL_OFFSET_RESET) `{}`; set one of them",
                    b.as_str(),
                    a.as_str()
                ),
            )),
            (a, b) => Ok(a.or(b).unwrap_or_default()),
        }
    }

    /// The librdkafka properties with secret values masked, for logs and status output.
    pub fn kafka_redacted(&self) -> BTreeMap<String, String> {
        self.kafka
            .iter()
            .map(|(k, v)| {
                let secret = is_secret_property(k);
                (
                    k.clone(),
                    if secret {
                        "[redacted]".to_owned()
                    } else {
                        v.clone()
                    },
                )
            })
            .collect()
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("app_id", &self.app_id)
            .field("broker", &self.broker)
            .field("data_dir", &self.data_dir)
            .field("commit_interval", &self.commit_interval)
            .field("backlog_commit_interval", &self.backlog_commit_interval)
            .field("partitions", &self.partitions)
            .field("worker_threads", &self.worker_threads)
            .field("replication", &self.replication)
            .field("kafka", &self.kafka_redacted())
            .field("web_bind", &self.web_bind)
            .field("web_port", &self.web_port)
            .field("web_token", &self.web_token.as_ref().map(|_| "[redacted]"))
            .field("schema_registry", &self.schema_registry)
            .finish_non_exhaustive()
    }
}

fn rename(err: Error, setting: &str) -> Error {
    match err {
        Error::Config { message, .. } => Error::config(setting, message),
        other => other,
    }
}

/// Half the cores this process may use, at least 1 (see `Config::worker_threads`).
fn default_worker_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// A duration in whole milliseconds, at least `min`.
fn parse_ms(name: &str, value: &str, min: u64) -> Result<Duration> {
    parse_num(name, value, min).map(Duration::from_millis)
}

fn parse_on_error(name: &str, value: &str) -> Result<crate::base::failure::OnError> {
    crate::base::failure::OnError::from_name(value).ok_or_else(|| {
        Error::config(
            name,
            format!(
                "`{value}` is not a policy; use dead_letter, retry, retry_topics, skip or stop"
            ),
        )
    })
}

fn parse_guarantee(name: &str, value: &str) -> Result<ProcessingGuarantee> {
    match value.trim() {
        "at_least_once" => Ok(ProcessingGuarantee::AtLeastOnce),
        "exactly_once" => Ok(ProcessingGuarantee::ExactlyOnce),
        other => Err(Error::config(
            name,
            format!("`{other}` is neither `at_least_once` nor `exactly_once`"),
        )),
    }
}

/// A librdkafka property whose value is a secret: never logged, served or put in an error.
pub(crate) fn is_secret_property(name: &str) -> bool {
    [
        "password",
        "secret",
        "token",
        "key.pem",
        "jaas",
        "credentials",
    ]
    .iter()
    .any(|s| name.contains(s))
        || name.starts_with("sasl.oauthbearer.")
}

fn parse_offset_reset(name: &str, value: &str) -> Result<OffsetReset> {
    OffsetReset::parse(value).ok_or_else(|| {
        Error::config(
            name,
            format!("`{}` is neither `earliest` nor `latest`", value.trim()),
        )
    })
}

fn parse_on_off(name: &str, value: &str) -> Result<bool> {
    match value.trim() {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        other => Err(Error::config(
            name,
            format!("`{other}` is neither `on` nor `off`"),
        )),
    }
}

fn parse_ip(name: &str, value: &str) -> Result<std::net::IpAddr> {
    value.trim().parse().map_err(|_| {
        Error::config(
            name,
            format!("`{value}` is not an IP address; use e.g. 127.0.0.1 or 0.0.0.0"),
        )
    })
}

fn parse_num<T>(name: &str, value: &str, min: T) -> Result<T>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    match value.trim().parse::<T>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(Error::config(
            name,
            format!("`{value}` is not a whole number of at least {min}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(v: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        v.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn env_vars_apply_and_pass_kafka_properties_through() {
        let mut c = Config::new("app");
        c.apply_vars(vars(&[
            ("RILL_BROKER", "kafka://k:9092"),
            ("RILL_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("RILL_KAFKA_SASL_PASSWORD", "hunter2"),
            ("RILL_PARTITIONS", "4"),
            ("RILL_BACKLOG_COMMIT_INTERVAL_MS", "2500"),
        ]))
        .unwrap();
        assert_eq!(c.backlog_commit_interval, Duration::from_millis(2500));
        assert_eq!(
            c.broker,
            Broker::Kafka {
                bootstrap: "k:9092".into()
            }
        );
        assert_eq!(c.kafka["security.protocol"], "SASL_SSL");
        assert_eq!(c.partitions, 4);
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn schema_registry_settings_come_from_the_environment_and_hide_the_password() {
        let mut c = Config::new("app");
        c.apply_vars(vars(&[
            ("RILL_SCHEMA_SUBJECT_STRATEGY", "topic-record"),
            ("RILL_SCHEMA_REGISTRY_BASIC_AUTH", "key:s3cret"),
            ("RILL_SCHEMA_AUTO_REGISTER", "off"),
            ("RILL_SCHEMA_REGISTRY_URL", "https://sr.example:8081"),
            ("RILL_SCHEMA_REGISTRY_CA", "/etc/ca.pem"),
        ]))
        .unwrap();
        c.validate().unwrap();
        let r = c.schema_registry.as_ref().unwrap();
        assert_eq!(r.url, "https://sr.example:8081");
        assert_eq!(r.basic_auth, Some(("key".into(), "s3cret".into())));
        assert_eq!(
            r.subject_strategy,
            crate::base::schema::SubjectStrategy::TopicRecord
        );
        assert!(!r.auto_register);
        assert_eq!(
            r.ca_file.as_deref(),
            Some(std::path::Path::new("/etc/ca.pem"))
        );
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("key"),
            "{shown}"
        );

        let mut c = Config::new("app");
        let err = c
            .apply_vars(vars(&[("RILL_SCHEMA_SUBJECT_STRATEGY", "by-topic")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("RILL_SCHEMA_SUBJECT_STRATEGY") && err.contains("topic-record"),
            "{err}"
        );
        // Settings without the URL.
        let mut c = Config::new("app");
        c.apply_vars(vars(&[("RILL_SCHEMA_AUTO_REGISTER", "on")]))
            .unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("RILL_SCHEMA_REGISTRY_URL"), "{err}");
    }

    #[test]
    fn bad_values_name_the_setting() {
        let mut c = Config::new("app");
        let err = c
            .apply_vars(vars(&[("RILL_PARTITIONS", "zero")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("RILL_PARTITIONS"), "{err}");
        let err = c
            .apply_vars(vars(&[("RILL_BROKER", "kafka://nohost")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("RILL_BROKER") && err.contains("host:port"),
            "{err}"
        );
        c.kafka.insert("group.id".into(), "x".into());
        assert!(c.validate().unwrap_err().to_string().contains("group.id"));
        c.kafka.clear();
        c.kafka
            .insert("allow.auto.create.topics".into(), "true".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("allow.auto.create.topics") && err.contains("creates its topics"),
            "{err}"
        );
    }

    #[test]
    fn worker_threads_default_to_half_the_cores_and_size_the_runtime() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut c = Config::new("app");
        assert_eq!(c.worker_threads, (cores / 2).max(1));
        c.apply_vars(vars(&[("RILL_WORKER_THREADS", "3")])).unwrap();
        assert_eq!(c.worker_threads, 3);
        let runtime = c.runtime().unwrap();
        assert_eq!(runtime.metrics().num_workers(), 3);
        let err = c
            .apply_vars(vars(&[("RILL_WORKER_THREADS", "0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("RILL_WORKER_THREADS"), "{err}");
        c.worker_threads = 0;
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("worker_threads (RILL_WORKER_THREADS)"),
            "{err}"
        );
        assert!(c.runtime().is_err());
    }

    #[test]
    fn offset_reset_comes_from_rill_offset_reset_or_auto_offset_reset_and_they_must_agree() {
        let mut c = Config::new("app");
        assert_eq!(c.default_offset_reset().unwrap(), OffsetReset::Earliest);
        c.set_kafka_property("auto.offset.reset=largest").unwrap();
        assert_eq!(c.default_offset_reset().unwrap(), OffsetReset::Latest);
        c.apply_vars(vars(&[("RILL_OFFSET_RESET", "latest")]))
            .unwrap();
        assert!(c.validate().is_ok());
        c.apply_vars(vars(&[("RILL_OFFSET_RESET", "earliest")]))
            .unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("auto.offset.reset") && err.contains("RILL_OFFSET_RESET"),
            "{err}"
        );
        c.set_kafka_property("auto.offset.reset=error").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("`error` is refused"), "{err}");
        let err = c
            .apply_vars(vars(&[("RILL_OFFSET_RESET", "newest")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("RILL_OFFSET_RESET") && err.contains("newest"),
            "{err}"
        );
    }

    #[test]
    fn the_rebalance_protocol_is_cooperative_unless_rill_rebalance_protocol_says_eager() {
        let mut c = Config::new("app");
        assert_eq!(c.rebalance_protocol, RebalanceProtocol::Cooperative);
        c.apply_vars(vars(&[("RILL_REBALANCE_PROTOCOL", "eager")]))
            .unwrap();
        assert_eq!(c.rebalance_protocol, RebalanceProtocol::Eager);
        let err = c
            .apply_vars(vars(&[("RILL_REBALANCE_PROTOCOL", "sticky")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("RILL_REBALANCE_PROTOCOL") && err.contains("sticky"),
            "{err}"
        );
    }

    #[test]
    fn properties_rill_owns_are_refused_with_the_reason_never_replaced() {
        let refused = |prop: &str, guarantee: ProcessingGuarantee| {
            let mut c = Config::new("app");
            c.processing_guarantee = guarantee;
            c.set_kafka_property(prop).unwrap();
            c.validate().map_err(|e| e.to_string())
        };
        let eos = ProcessingGuarantee::ExactlyOnce;
        let alo = ProcessingGuarantee::AtLeastOnce;
        for (prop, guarantee, why) in [
            ("partition.assignment.strategy=roundrobin", alo, "range"),
            ("transactional.id=mine", eos, "fences"),
            ("enable.idempotence=false", alo, "idempotent"),
            ("statistics.interval.ms=0", alo, "idle partition"),
            ("isolation.level=read_uncommitted", eos, "read_committed"),
        ] {
            let err = refused(prop, guarantee).unwrap_err();
            let name = prop.split('=').next().unwrap();
            assert!(err.contains(name) && err.contains(why), "{prop}: {err}");
        }
        for prop in [
            "enable.idempotence=true",
            "statistics.interval.ms=5000",
            "isolation.level=read_committed",
        ] {
            assert!(refused(prop, eos).is_ok(), "{prop}");
        }
        assert!(refused("isolation.level=read_uncommitted", alo).is_ok());
    }

    #[test]
    fn secret_properties_are_masked() {
        let mut c = Config::new("app");
        for kv in [
            "sasl.password=hunter2",
            "ssl.key.password=k3y",
            "sasl.oauthbearer.client.secret=s3cret",
            "sasl.oauthbearer.config=principal=me extension_x=y",
            "sasl.username=alice",
        ] {
            c.set_kafka_property(kv).unwrap();
        }
        let shown = c.kafka_redacted();
        assert_eq!(shown["sasl.username"], "alice");
        for k in [
            "sasl.password",
            "ssl.key.password",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.config",
        ] {
            assert_eq!(shown[k], "[redacted]", "{k}");
        }
        let debug = format!("{c:?}");
        for secret in ["hunter2", "k3y", "s3cret", "extension_x"] {
            assert!(!debug.contains(secret), "{debug}");
        }
    }
}

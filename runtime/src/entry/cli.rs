//! The command line every rill app gets from `App::main()` (clap): `worker` (the default),
//! `send`, `agents`, `graph`, `tables`, `dlq list|replay`, `reset`, and global `--broker`, `--data-dir`, `-X prop=value`, `--web-port`, `--no-web`, `--log`, each also
//! settable through a `RILL_*` environment variable.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::base::config::Broker;
use crate::base::error::{Error, Result};
use crate::base::message::{Headers, OutRecord, now_millis};
use crate::entry::app::{App, run_until_signal};
use crate::entry::reset::{self, ResetRequest, ResetTo};
use crate::io::store::TableStore;
use crate::io::transport;
use crate::wiring::agent::AgentSpec;

/// The web server's port when neither `--web-port` nor `RILL_WEB_PORT` says (Faust's).
const DEFAULT_WEB_PORT: u16 = 6066;

#[derive(Parser, Debug)]
#[command(about = "A rill stream-processing app", version)]
struct Cli {
    /// Broker: kafka://host:port[,host:port], memory://, or unset for the embedded log.
    #[arg(long, global = true, env = "RILL_BROKER")]
    broker: Option<String>,
    /// Directory of the embedded log and local state [default: ./<app>-data].
    #[arg(long, global = true, env = "RILL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// A librdkafka property, e.g. -X security.protocol=SASL_SSL (repeatable; env RILL_KAFKA_*).
    #[arg(
        short = 'X',
        long = "kafka-property",
        global = true,
        value_name = "PROP=VALUE"
    )]
    kafka: Vec<String>,
    /// Port of the web server (/health, /ready, /metrics, /tables, /topology, status page);
    /// 0 picks a free port [env RILL_WEB_PORT; default 6066 for `worker`].
    #[arg(long, global = true, value_name = "PORT")]
    web_port: Option<u16>,
    /// This worker's stable identity in its consumer groups (Kafka static membership): a
    /// restart with the same id rebalances nothing [env RILL_INSTANCE_ID].
    #[arg(long, global = true, value_name = "ID")]
    instance_id: Option<String>,
    /// Run the worker without the web server.
    #[arg(long, global = true)]
    no_web: bool,
    /// Log filter (tracing `EnvFilter` syntax).
    #[arg(long, global = true, env = "RILL_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the agents (the default).
    Worker,
    /// Send one JSON record to a topic (on Kafka, or into the embedded log in --data-dir).
    Send {
        /// Topic name.
        topic: String,
        /// The record as JSON; checked against the topic's record type when an agent declares it.
        value: String,
        /// Message key (UTF-8).
        #[arg(long)]
        key: Option<String>,
    },
    /// List agents with their topics, sinks, concurrency and consumer groups.
    Agents,
    /// Print the schemas of the app's schema-registry topics (`#[record(codec = "avro")]`,
    /// "protobuf", "json_schema") with their subjects, or register them (`--register`, e.g. from CI when workers run with
    /// RILL_SCHEMA_AUTO_REGISTER=off).
    Schema {
        /// Only this topic.
        topic: Option<String>,
        /// Register each schema under its subject (needs RILL_SCHEMA_REGISTRY_URL) and print
        /// its id.
        #[arg(long)]
        register: bool,
    },
    /// Print the topology (agents, topics, tables, internal topics) as a Graphviz DOT graph,
    /// e.g. `graph | dot -Tsvg > topology.svg`. Repartition topics and window tables appear
    /// once a worker has created them (see `/topology` of a running worker).
    Graph,
    /// List tables (partitions, keys, bytes, changelog lag), or print one table's entries as
    /// JSON lines read from the local LMDB copy (no broker needed; the worker may be running).
    Tables {
        /// Table to print.
        name: Option<String>,
        /// Only this key (JSON, or a plain string).
        #[arg(long)]
        key: Option<String>,
        /// Print entries as JSON lines `{"key": ..., "value": ...}` (the default for one table).
        #[arg(long)]
        json: bool,
    },
    /// Dead letters: list them, or replay them to their source topics after a fix.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Move agents' consumer groups on their source topics (all agents, or each --agent), and
    /// with --local-state remove their table and window state; refused while they run.
    Reset(ResetArgs),
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("to").required(true).multiple(false)))]
struct ResetArgs {
    /// An agent to reset (repeatable; default: every agent of the app).
    #[arg(long = "agent", value_name = "AGENT")]
    agents: Vec<String>,
    /// To the oldest record each partition still has.
    #[arg(long, group = "to")]
    to_earliest: bool,
    /// To the end: what was written so far is skipped.
    #[arg(long, group = "to")]
    to_latest: bool,
    /// To the first record at or after a time: RFC 3339 (`2026-12-01T08:00:00Z`), a date,
    /// ms since the epoch, or an age (`2h`, `1d`).
    #[arg(long, group = "to", value_name = "TIME")]
    to_datetime: Option<String>,
    /// By N records from the committed offset (negative: back).
    #[arg(long, group = "to", value_name = "N", allow_hyphen_values = true)]
    shift_by: Option<i64>,
    /// Also remove this host's copy of the agents' tables and window and join state (each is
    /// rebuilt from its changelog at the next start).
    #[arg(long)]
    local_state: bool,
    /// Print the old and new offsets only.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Subcommand, Debug)]
enum DlqCommand {
    /// Per agent: how many records its dead-letter topic holds, and the newest errors.
    List,
    /// Send an agent's dead letters back to the topics they were read from.
    Replay {
        /// The agent whose dead letters to replay.
        agent: String,
        /// Only those that failed since: ms since the epoch, or an age (`30m`, `2h`, `1d`).
        #[arg(long)]
        from: Option<String>,
        /// Only those whose error message or value contains this text.
        #[arg(long)]
        filter: Option<String>,
    },
}

impl App {
    /// Parses the command line and runs the command (`worker` by default). Defined with the
    /// commands, so that `app.rs` knows nothing of the command line.
    pub fn main(self) -> Result<()> {
        main(self)
    }
}

fn main(mut app: App) -> Result<()> {
    let cli = Cli::parse_from(std::env::args_os());
    // The runtime comes before the settings are resolved: it reads `RILL_WORKER_THREADS`
    // itself. A bad variable is reported below, when `run` applies them again.
    let mut sized = app.config.clone();
    let _ = sized.apply_env();
    let runtime = sized.runtime()?;
    // Logs, and for the worker span export when an OTLP endpoint is configured (its client
    // lives in the runtime). When the exporter cannot be set up, logs still go to stderr so
    // its error is seen.
    let telemetry = if matches!(cli.command, None | Some(Command::Worker)) {
        let _enter = runtime.enter();
        crate::base::telemetry::init(&app.config.telemetry, &app.config.app_id, &cli.log)
    } else {
        crate::base::telemetry::init_logs(&cli.log);
        Ok(None)
    };
    if telemetry.is_err() {
        crate::base::telemetry::init_logs(&cli.log);
    }
    let result = telemetry.and_then(|guard| {
        let result = run(&mut app, cli, &runtime);
        drop(guard);
        result
    });
    if let Err(e) = &result {
        tracing::error!("{e}");
    }
    result
}

fn run(app: &mut App, cli: Cli, runtime: &tokio::runtime::Runtime) -> Result<()> {
    let mut config = app.resolve(true)?;
    if let Some(url) = &cli.broker {
        config.broker = Broker::parse(url).map_err(|e| match e {
            Error::Config { message, .. } => Error::config("--broker (RILL_BROKER)", message),
            other => other,
        })?;
    }
    if let Some(dir) = cli.data_dir {
        config.data_dir = dir;
    }
    for kv in &cli.kafka {
        config.set_kafka_property(kv)?;
    }
    if let Some(port) = cli.web_port {
        config.web_port = Some(port);
    }
    if let Some(id) = cli.instance_id {
        config.instance_id = Some(id);
    }
    if cli.no_web {
        config.web_port = None;
    } else if config.web_port.is_none() {
        config.web_port = Some(DEFAULT_WEB_PORT);
    }
    config.validate()?;
    match cli.command.unwrap_or(Command::Worker) {
        Command::Worker => runtime.block_on(async {
            tracing::info!(app = %config.app_id, broker = ?config.broker, data_dir = %config.data_dir.display(), "starting worker");
            let app = std::mem::replace(app, App::new(&config.app_id));
            let worker = app.start_with(config).await?;
            run_until_signal(worker).await
        }),
        Command::Send { topic, value, key } => runtime.block_on(send(app, &config, &topic, &value, key)),
        Command::Agents => agents(app, &config),
        Command::Schema { topic, register } => {
            runtime.block_on(schema_command(app, &config, topic.as_deref(), register))
        }
        Command::Graph => {
            let topology = crate::wiring::topology::Topology::from_specs(
                &config.app_id,
                &app.agent_specs(),
                config.on_error,
            );
            let mut out = std::io::stdout().lock();
            out.write_all(crate::wiring::web::to_dot(&topology).as_bytes())
                .map_err(|e| Error::io("writing to stdout", e))
        }
        Command::Tables { name: None, .. } => runtime.block_on(list_tables(app, &config)),
        Command::Tables { name: Some(name), key, json: _ } => print_table(&config, &name, key.as_deref()),
        Command::Dlq { command } => runtime.block_on(dlq(app, &config, command)),
        Command::Reset(args) => reset_command(app, &config, args),
    }
}

fn reset_command(app: &App, config: &crate::base::config::Config, args: ResetArgs) -> Result<()> {
    // clap lets exactly one of them through.
    let to = match (
        args.to_earliest,
        args.to_latest,
        args.to_datetime,
        args.shift_by,
    ) {
        (true, ..) => ResetTo::Earliest,
        (_, true, ..) => ResetTo::Latest,
        (_, _, Some(text), _) => ResetTo::Datetime(parse_datetime(&text)?),
        (.., Some(n)) => ResetTo::ShiftBy(n),
        _ => {
            return Err(Error::config(
                "reset",
                "say where to: --to-earliest, --to-latest, --to-datetime or --shift-by",
            ));
        }
    };
    let request = ResetRequest {
        agents: args.agents,
        to,
        local_state: args.local_state,
        dry_run: args.dry_run,
    };
    let transport = transport::open(config)?;
    let mut out = std::io::stdout().lock();
    reset::run(&app.agent_specs(), config, &transport, &request, &mut out)
}

fn parse_datetime(text: &str) -> Result<i64> {
    crate::base::time::parse_instant(text).ok_or_else(|| {
        Error::config(
            "--to-datetime",
            format!(
                "`{}` is none of a time like `2026-12-01T08:00:00Z`, a date, milliseconds since the epoch, or an age like `2h`",
                text.trim()
            ),
        )
    })
}

/// Every topic the app declares: agents' sources and sinks, and `App::topic`s.
fn declared_topics(app: &App) -> Vec<crate::base::spec::TopicSpec> {
    app.agent_specs()
        .iter()
        .flat_map(|a| {
            a.sources
                .iter()
                .chain(a.sink.iter())
                .cloned()
                .collect::<Vec<_>>()
        })
        .chain(app.topics.iter().cloned())
        .collect()
}

async fn schema_command(
    app: &App,
    config: &crate::base::config::Config,
    topic: Option<&str>,
    register: bool,
) -> Result<()> {
    let topics: Vec<_> = declared_topics(app)
        .into_iter()
        .filter(|s| topic.is_none_or(|t| s.name == t))
        .collect();
    let found = crate::wiring::schemas::describe(config, &topics, register).await?;
    if found.is_empty() {
        return Err(Error::config(
            "schema",
            match topic {
                Some(t) => format!("the app declares no schema-registry topic `{t}`"),
                None => "the app declares no schema-registry topics (`#[record(codec = \"avro\")]`, \"protobuf\", \"json_schema\")".to_owned(),
            },
        ));
    }
    let mut out = std::io::stdout().lock();
    for (topic, subject, text, id) in found {
        let pretty = serde_json::from_str::<serde_json::Value>(&text)
            .and_then(|v| serde_json::to_string_pretty(&v))
            .unwrap_or(text);
        let id = id
            .map(|id| format!(" (registered, id {id})"))
            .unwrap_or_default();
        writeln!(out, "# topic {topic}, subject {subject}{id}\n{pretty}")
            .map_err(|e| Error::io("writing to stdout", e))?;
    }
    Ok(())
}

async fn send(
    app: &App,
    config: &crate::base::config::Config,
    topic: &str,
    value: &str,
    key: Option<String>,
) -> Result<()> {
    let spec = declared_topics(app).into_iter().find(|s| s.name == topic);
    if let Some(spec) = &spec {
        // A schema-registry topic's record is framed with its schema's id.
        crate::wiring::schemas::bind(config, std::iter::empty(), std::iter::once(spec)).await?;
    }
    let bytes = match &spec {
        Some(spec) => spec.json_to_wire(value.as_bytes())?,
        None => {
            serde_json::from_str::<serde_json::Value>(value).map_err(|e| Error::Codec {
                topic: topic.to_owned(),
                source: e.into(),
            })?;
            value.as_bytes().to_vec()
        }
    };
    let transport = transport::open(config)?;
    if let Some(spec) = &spec {
        transport
            .ensure_topics(std::slice::from_ref(spec), config.partitions)
            .await?;
    }
    let record = OutRecord {
        topic: Arc::from(topic),
        partition: None,
        key: key.map(String::into_bytes),
        value: Some(bytes),
        timestamp: now_millis(),
        headers: Headers::default(),
    };
    let batch = crate::io::transport::Deliveries::new();
    let pending = transport.enqueue(record, &batch).await?;
    transport
        .deliver(crate::io::transport::Delivery::sends(vec![pending]))
        .await?;
    tracing::info!(topic, "sent");
    Ok(())
}

async fn dlq(app: &App, config: &crate::base::config::Config, command: DlqCommand) -> Result<()> {
    let transport = transport::open(config)?;
    let specs = app.agent_specs();
    match command {
        DlqCommand::List => crate::wiring::dlq::list(&specs, config, &transport).await,
        DlqCommand::Replay {
            agent,
            from,
            filter,
        } => {
            let spec = specs.iter().find(|s| s.name() == agent).ok_or_else(|| {
                let names: Vec<&str> = specs.iter().map(AgentSpec::name).collect();
                Error::config(
                    "dlq replay <agent>",
                    format!("no agent `{agent}`; this app has: {}", names.join(", ")),
                )
            })?;
            let selection = crate::wiring::dlq::Selection {
                from: from
                    .as_deref()
                    .map(crate::wiring::dlq::parse_from)
                    .transpose()?,
                filter,
            };
            let n = crate::wiring::dlq::replay(spec, config, &transport, &selection).await?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "replayed {n} dead letters of `{agent}`")
                .map_err(|e| Error::io("writing to stdout", e))
        }
    }
}

fn agents(app: &App, config: &crate::base::config::Config) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let io = |e| Error::io("writing to stdout", e);
    writeln!(
        out,
        "{:<28} {:<28} {:<24} {:>11}  GROUP",
        "AGENT", "TOPICS", "SINK", "CONCURRENCY"
    )
    .map_err(io)?;
    for a in app.agent_specs() {
        let topics: Vec<&str> = a.sources().iter().map(|s| s.name.as_str()).collect();
        let sink = a.sink_topic().map_or("-", |s| s.name.as_str());
        writeln!(
            out,
            "{:<28} {:<28} {:<24} {:>11}  {}",
            a.name(),
            topics.join(","),
            sink,
            a.instances(),
            a.group_id(&config.app_id)
        )
        .map_err(io)?;
    }
    Ok(())
}

/// Every table of the app: its name, its agent and the topic it is restored from.
fn list_tables_names(app: &App, app_id: &str) -> Vec<(String, String, String)> {
    app.agent_specs()
        .iter()
        .flat_map(|a| {
            a.tables()
                .iter()
                .map(|t| {
                    let changelog = a.changelog_of(app_id, &t.name);
                    (t.name.clone(), a.name().to_owned(), changelog)
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

async fn list_tables(app: &App, config: &crate::base::config::Config) -> Result<()> {
    let store = TableStore::open(config, false)?;
    // The changelog lag needs the broker; without one it is shown as `?`.
    let transport = transport::open(config).ok();
    let mut out = std::io::stdout().lock();
    let io = |e| Error::io("writing to stdout", e);
    writeln!(
        out,
        "{:<28} {:<24} {:>10} {:>10} {:>12} {:>14}",
        "TABLE", "AGENT", "PARTITIONS", "KEYS", "BYTES", "CHANGELOG LAG"
    )
    .map_err(io)?;
    for (table, agent, changelog) in list_tables_names(app, &config.app_id) {
        let partitions = store.partitions(&table)?;
        let (mut keys, mut bytes, mut lag, mut lag_known) = (0u64, 0u64, 0i64, true);
        for &p in &partitions {
            let (k, b) = store.stats(&table, p)?;
            keys += k;
            bytes += b;
            let local = store.meta(&table, p)?.map_or(0, |m| m.changelog);
            match transport.as_ref().map(|t| t.watermarks(&changelog, p)) {
                Some(Ok((_, high))) => lag += (high - local).max(0),
                _ => lag_known = false,
            }
        }
        let lag = if lag_known {
            lag.to_string()
        } else {
            "?".to_owned()
        };
        writeln!(
            out,
            "{table:<28} {agent:<24} {:>10} {keys:>10} {bytes:>12} {lag:>14}",
            partitions.len()
        )
        .map_err(io)?;
    }
    Ok(())
}

fn print_table(config: &crate::base::config::Config, name: &str, key: Option<&str>) -> Result<()> {
    let store = TableStore::open(config, false)?;
    let wanted: Option<Vec<u8>> = key.map(|k| match serde_json::from_str::<serde_json::Value>(k) {
        Ok(v) => serde_json::to_vec(&v).unwrap_or_default(),
        Err(_) => serde_json::to_vec(k).unwrap_or_default(),
    });
    let mut out = std::io::stdout().lock();
    for p in store.partitions(name)? {
        for (k, v) in store.scan(name, p)? {
            if wanted.as_ref().is_some_and(|w| *w != k) {
                continue;
            }
            let key: serde_json::Value =
                serde_json::from_slice(&k).unwrap_or_else(|_| String::from_utf8_lossy(&k).into());
            let value: serde_json::Value =
                serde_json::from_slice(&v).unwrap_or_else(|_| String::from_utf8_lossy(&v).into());
            let line = serde_json::json!({ "key": key, "value": value });
            writeln!(out, "{line}").map_err(|e| Error::io("writing to stdout", e))?;
        }
    }
    Ok(())
}

//! The command line every rill app gets from `App::main()` (clap): `worker` (the default),
//! `send`, `agents`, and global `--broker`, `--data-dir`, `-X prop=value`, `--log`, each also
//! settable through a `RILL_*` environment variable.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::app::{App, run_until_signal};
use crate::config::Broker;
use crate::error::{Error, Result};
use crate::message::{Headers, OutRecord, now_millis};
use crate::worker::open_transport;

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
}

pub(crate) fn main(mut app: App) -> Result<()> {
    let cli = Cli::parse_from(std::env::args_os());
    init_logging(&cli.log);
    let result = run(&mut app, cli);
    if let Err(e) = &result {
        tracing::error!("{e}");
    }
    result
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .try_init();
}

fn run(app: &mut App, cli: Cli) -> Result<()> {
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
    config.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("rill")
        .build()
        .map_err(|e| Error::io("starting the tokio runtime", e))?;
    match cli.command.unwrap_or(Command::Worker) {
        Command::Worker => runtime.block_on(async {
            tracing::info!(app = %config.app_id, broker = ?config.broker, data_dir = %config.data_dir.display(), "starting worker");
            let app = std::mem::replace(app, App::new(&config.app_id));
            let worker = app.start_with(config).await?;
            run_until_signal(worker).await
        }),
        Command::Send { topic, value, key } => runtime.block_on(send(app, &config, &topic, &value, key)),
        Command::Agents => agents(app, &config),
    }
}

async fn send(
    app: &App,
    config: &crate::config::Config,
    topic: &str,
    value: &str,
    key: Option<String>,
) -> Result<()> {
    let spec = app
        .agent_specs()
        .iter()
        .flat_map(|a| {
            a.sources
                .iter()
                .chain(a.sink.iter())
                .cloned()
                .collect::<Vec<_>>()
        })
        .chain(app.topics.iter().cloned())
        .find(|s| s.name == topic);
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
    let transport = open_transport(config)?;
    if let Some(spec) = &spec {
        transport
            .ensure_topics(std::slice::from_ref(spec), config.partitions)
            .await?;
    }
    let producer = transport.producer();
    let record = OutRecord {
        topic: Arc::from(topic),
        partition: None,
        key: key.map(String::into_bytes),
        value: Some(bytes),
        timestamp: now_millis(),
        headers: Headers::default(),
    };
    let pending = producer.enqueue(record).await?;
    producer.deliver(vec![pending], "", &[]).await?;
    tracing::info!(topic, "sent");
    Ok(())
}

fn agents(app: &App, config: &crate::config::Config) -> Result<()> {
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

//! Helpers shared by integration tests: example binaries, Kafka clients that are not rill, and
//! the broker started by `scripts/test.sh`.
#![allow(dead_code, reason = "each test binary uses a subset")]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

/// Path of an up-to-date example binary (`cargo test --test x` does not rebuild examples).
pub(crate) fn example(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .to_path_buf();
    let path = dir.join("examples").join(name);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if !built.iter().any(|b| b == name) {
        built.push(name.to_owned());
        let status = Command::new(env!("CARGO"))
            .args(["build", "--example", name])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo build");
        assert!(status.success(), "building example {name}");
    }
    path
}

/// A command running an example, its web server on a free port (tests run several at once;
/// the default port is 6066).
pub(crate) fn command(name: &str) -> Command {
    let mut cmd = Command::new(example(name));
    cmd.env("RILL_WEB_PORT", "0");
    cmd
}

/// Runs an example binary with piped stdout (read it with [`lines`], or it fills up and blocks
/// the child) and stderr passed through.
pub(crate) fn spawn_example(name: &str, args: &[&str], envs: &[(&str, &str)]) -> Proc {
    spawn(name, args, envs, Stdio::piped())
}

/// Runs an example binary discarding its stdout.
pub(crate) fn spawn_example_quiet(name: &str, args: &[&str], envs: &[(&str, &str)]) -> Proc {
    spawn(name, args, envs, Stdio::null())
}

/// A child process that is killed when the test ends, passing or not.
pub(crate) struct Proc(pub(crate) Child);

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn spawn(name: &str, args: &[&str], envs: &[(&str, &str)], stdout: Stdio) -> Proc {
    let mut cmd = command(name);
    cmd.args(args)
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .env("RILL_LOG", "warn");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    Proc(cmd.spawn().expect("spawn example"))
}

/// Sends a signal to a child process.
pub(crate) fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Waits for a child to exit, killing it after `timeout`.
pub(crate) fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The broker of `scripts/test.sh`, or `None` (the test then says it was skipped) unless
/// `RILL_REQUIRE_KAFKA=1`, where a missing broker fails the test.
pub(crate) fn kafka_bootstrap() -> Option<String> {
    match std::env::var("RILL_TEST_KAFKA") {
        Ok(b) if !b.is_empty() => Some(b),
        _ => {
            assert!(
                std::env::var("RILL_REQUIRE_KAFKA").as_deref() != Ok("1"),
                "RILL_REQUIRE_KAFKA=1 but RILL_TEST_KAFKA is not set; run scripts/test.sh"
            );
            eprintln!("skipped: no Kafka broker (RILL_TEST_KAFKA); scripts/test.sh starts one");
            None
        }
    }
}

/// A plain rdkafka producer (not rill) with the Java client's partitioner.
pub(crate) fn producer(bootstrap: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .create()
        .expect("producer")
}

/// Produces JSON values with keys and waits for delivery.
pub(crate) fn produce(
    p: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    items: &[(Option<String>, String)],
) {
    for (key, value) in items {
        let mut rec: BaseRecord<'_, str, str> = BaseRecord::to(topic).payload(value);
        if let Some(k) = key {
            rec = rec.key(k);
        }
        let mut rec = rec;
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    rec = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    p.flush(Duration::from_secs(30)).expect("flush");
}

/// A consumed record: (partition, key, value).
pub(crate) type Consumed = (i32, Option<String>, String);

/// Reads a topic from the beginning with a plain rdkafka consumer until `n` records or timeout.
pub(crate) fn consume(bootstrap: &str, topic: &str, n: usize, timeout: Duration) -> Vec<Consumed> {
    consume_until(bootstrap, topic, timeout, |got| got.len() >= n)
}

/// Reads a topic from the beginning until `done` says so or timeout.
pub(crate) fn consume_until(
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
    done: impl Fn(&[Consumed]) -> bool,
) -> Vec<Consumed> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("checker-{topic}-{}", std::process::id()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while !done(&out) && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push((
                m.partition(),
                m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            ));
        }
    }
    out
}

/// Collects a child's stdout lines on a thread.
pub(crate) fn lines(child: &mut Child) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use std::io::BufRead;
    let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let stdout = child.stdout.take().expect("piped stdout");
    let sink = out.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            sink.lock().expect("lines").push(line);
        }
    });
    out
}

/// Waits until `check` holds for the collected lines.
pub(crate) fn wait_lines(
    lines: &std::sync::Mutex<Vec<String>>,
    timeout: Duration,
    check: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = lines.lock().expect("lines").clone();
        if check(&now) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "timed out; output so far: {now:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Kafka broker of this test alone (kafka/broker.sh on its own port), stopped on drop.
pub(crate) struct OwnBroker {
    port: u16,
    pub(crate) bootstrap: String,
}

impl OwnBroker {
    fn script(port: u16, command: &str, extra_props: &str) -> std::process::Output {
        Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/kafka/broker.sh"))
            .arg(command)
            .env("RILL_TEST_BROKER_PORT", port.to_string())
            .env("RILL_TEST_BROKER_EXTRA_PROPS", extra_props)
            .stderr(Stdio::inherit())
            .output()
            .expect("kafka/broker.sh")
    }

    /// Starts a fresh broker on `port` (and `port + 1` for its controller), of the profile
    /// `RILL_TEST_BROKER_PROFILE` names (see kafka/broker.sh).
    pub(crate) fn start(port: u16) -> OwnBroker {
        Self::start_with(port, "")
    }

    /// [`OwnBroker::start`] with extra `server.properties` lines.
    pub(crate) fn start_with(port: u16, extra_props: &str) -> OwnBroker {
        let _ = Self::script(port, "stop", "");
        let out = Self::script(port, "start", extra_props);
        assert!(out.status.success(), "starting a broker on port {port}");
        let line = String::from_utf8_lossy(&out.stdout);
        let bootstrap = line
            .trim()
            .trim_start_matches("KAFKA_BOOTSTRAP=")
            .to_owned();
        OwnBroker { port, bootstrap }
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = Self::script(self.port, "stop", "");
    }
}

fn admin(bootstrap: &str) -> rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client")
}

/// Creates a topic with a plain admin client, as a user (or the broker's auto-creation) would.
pub(crate) fn create_topic(bootstrap: &str, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
    let topic = configs.iter().fold(
        NewTopic::new(name, partitions, TopicReplication::Fixed(1)),
        |t, (k, v)| t.set(k, v),
    );
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = futures::executor::block_on(admin(bootstrap).create_topics([&topic], &options))
        .expect("create_topics");
    for result in results {
        result.unwrap_or_else(|(name, code)| panic!("creating `{name}`: {code}"));
    }
    wait_for_topic(bootstrap, name, partitions as usize);
}

/// A topic's configs, as the broker describes them.
pub(crate) fn topic_configs(
    bootstrap: &str,
    name: &str,
) -> std::collections::HashMap<String, String> {
    use rdkafka::admin::{AdminOptions, ResourceSpecifier};
    let resource = ResourceSpecifier::Topic(name);
    let described = futures::executor::block_on(
        admin(bootstrap).describe_configs([&resource], &AdminOptions::new()),
    )
    .expect("describe_configs");
    let resource = described
        .into_iter()
        .next()
        .expect("one resource")
        .expect("its configs");
    resource
        .entries
        .into_iter()
        .filter_map(|e| Some((e.name, e.value?)))
        .collect()
}

/// First and next offset of a partition.
pub(crate) fn watermarks(bootstrap: &str, topic: &str, partition: i32) -> (i64, i64) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("client");
    consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .expect("watermarks")
}

/// Partition count of a topic (`None`: no such topic).
pub(crate) fn partition_count(bootstrap: &str, topic: &str) -> Option<usize> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("client");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    md.topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
}

/// Waits until the worker has created `topic` with `partitions` partitions.
pub(crate) fn wait_for_topic(bootstrap: &str, topic: &str, partitions: usize) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .is_ok_and(|md| {
                md.topics()
                    .iter()
                    .any(|t| t.name() == topic && t.partitions().len() == partitions)
            });
        if found {
            return;
        }
        assert!(Instant::now() < deadline, "`{topic}` was not created");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sum of the end offsets of a topic's partitions.
pub(crate) fn end_offsets(bootstrap: &str, topic: &str, partitions: i32) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("client");
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .sum()
}

/// Runs an example binary with stdout piped and stderr written to `log`.
pub(crate) fn spawn_example_logged(
    name: &str,
    args: &[&str],
    envs: &[(&str, &str)],
    log: &std::path::Path,
) -> Proc {
    let mut cmd = command(name);
    let file = std::fs::File::create(log).expect("log file");
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(file)
        .env("RILL_LOG", "info");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    Proc(cmd.spawn().expect("spawn example"))
}

/// Sum of a group's committed offsets over a topic's partitions.
pub(crate) fn committed_total(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .expect("client");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    committed
        .elements()
        .iter()
        .map(|e| {
            if let Offset::Offset(o) = e.offset() {
                o
            } else {
                0
            }
        })
        .sum()
}

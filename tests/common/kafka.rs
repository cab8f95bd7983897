//! Apache Kafka in the tests: the broker of `scripts/test.sh` or one of a test's own, apps on
//! it, plain rdkafka clients (producers, consumers, an admin client) to feed input, read output
//! and inspect topics, groups and offsets from outside rill, and names of a run's own.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Headers as _, Message, ToBytes};
use rdkafka::producer::{
    BaseRecord, DefaultProducerContext, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use rill::App;

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

/// A suffix making this run's topics, groups and app ids its own, so a test can run again on
/// the same broker.
pub(crate) fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    format!("{}_{nanos}", std::process::id())
}

/// A Kafka broker of this test alone (kafka/broker.sh on its own port), which the test can
/// kill and start again on the same data; stopped on drop.
pub(crate) struct OwnBroker {
    port: u16,
    extra_props: String,
    secure: bool,
    pub(crate) bootstrap: String,
}

impl OwnBroker {
    /// Starts a fresh broker on `port` (and `port + 1` for its controller), of the profile
    /// `RILL_TEST_BROKER_PROFILE` names (see kafka/broker.sh).
    pub(crate) fn start(port: u16) -> OwnBroker {
        Self::start_with(port, "")
    }

    /// [`OwnBroker::start`] with extra `server.properties` lines.
    pub(crate) fn start_with(port: u16, extra_props: &str) -> OwnBroker {
        Self::launch(port, extra_props, false)
    }

    /// [`OwnBroker::start`] with TLS and SASL listeners too (`RILL_TEST_BROKER_SECURE=1` of
    /// kafka/broker.sh): [`OwnBroker::ssl`] (mutual TLS), [`OwnBroker::sasl_ssl`]
    /// (SCRAM-SHA-512, user `rill`, password `rill-secret`), certificates in
    /// [`OwnBroker::tls_file`]. `bootstrap` stays plaintext, for plain clients.
    pub(crate) fn start_secure(port: u16) -> OwnBroker {
        Self::launch(port, "", true)
    }

    /// The mutual-TLS listener's address.
    pub(crate) fn ssl(&self) -> String {
        format!("127.0.0.1:{}", self.port + 2)
    }

    /// The SASL_SSL listener's address.
    pub(crate) fn sasl_ssl(&self) -> String {
        format!("127.0.0.1:{}", self.port + 3)
    }

    /// A file broker.sh generated for the TLS listeners: `ca.pem`, `client.pem`,
    /// `client.key`, `other-ca.pem`.
    pub(crate) fn tls_file(&self, name: &str) -> String {
        format!("/tmp/rill-kafka-{}/tls/{name}", self.port)
    }

    fn launch(port: u16, extra_props: &str, secure: bool) -> OwnBroker {
        let mut broker = OwnBroker {
            port,
            extra_props: extra_props.to_owned(),
            secure,
            bootstrap: String::new(),
        };
        // A broker left over by an interrupted run, and its data.
        let _ = broker.script("stop");
        broker.bootstrap = broker.up();
        broker
    }

    /// SIGKILL; the data stays.
    pub(crate) fn kill(&self) {
        assert!(self.script("kill").status.success(), "killing the broker");
    }

    /// Starts it again on its data, at the same address.
    pub(crate) fn restart(&self) {
        assert_eq!(self.up(), self.bootstrap);
    }

    fn up(&self) -> String {
        let out = self.script("start");
        assert!(
            out.status.success(),
            "starting a broker on port {}",
            self.port
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .trim_start_matches("KAFKA_BOOTSTRAP=")
            .to_owned()
    }

    fn script(&self, command: &str) -> std::process::Output {
        Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/kafka/broker.sh"))
            .arg(command)
            .env("RILL_TEST_BROKER_PORT", self.port.to_string())
            .env("RILL_TEST_BROKER_EXTRA_PROPS", &self.extra_props)
            .env(
                "RILL_TEST_BROKER_SECURE",
                if self.secure { "1" } else { "0" },
            )
            .stderr(Stdio::inherit())
            .output()
            .expect("kafka/broker.sh")
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.script("stop");
    }
}

/// An app on the broker at `bootstrap`, keeping its local state under `data`.
pub(crate) fn kafka_app(app_id: &str, bootstrap: &str, data: &Path) -> App {
    App::new(app_id)
        .broker(&format!("kafka://{bootstrap}"))
        .data_dir(data)
}

/// A plain consumer with `settings`, subscribed to nothing: for metadata, watermarks, a group's
/// offsets, or partitions assigned by hand.
pub(crate) fn client(bootstrap: &str, settings: &[(&str, &str)]) -> BaseConsumer {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (k, v) in settings {
        config.set(*k, *v);
    }
    config.create().expect("kafka client")
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

/// Hands a record to a plain producer, waiting while its queue is full.
pub(crate) fn enqueue<C, K, P>(
    producer: &ThreadedProducer<C>,
    mut record: BaseRecord<'_, K, P, C::DeliveryOpaque>,
) where
    C: ProducerContext + 'static,
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((_, back)) => {
                record = back;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
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
        enqueue(p, rec);
    }
    p.flush(Duration::from_secs(30)).expect("flush");
}

/// Produces raw values (framed records, poison) with their keys, and flushes.
pub(crate) fn produce_bytes(
    p: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    items: &[(Option<String>, Vec<u8>)],
) {
    for (key, value) in items {
        let mut rec: BaseRecord<'_, str, [u8]> = BaseRecord::to(topic).payload(value.as_slice());
        if let Some(k) = key {
            rec = rec.key(k.as_str());
        }
        enqueue(p, rec);
    }
    p.flush(Duration::from_secs(30)).expect("flush");
}

/// A consumer of its own group reading `topic` for a check, committing nothing.
fn checker(bootstrap: &str, topic: &str, settings: &[(&str, &str)]) -> BaseConsumer {
    let group = format!("checker-{topic}-{}", std::process::id());
    let mut all = vec![
        ("group.id", group.as_str()),
        ("enable.auto.commit", "false"),
    ];
    all.extend_from_slice(settings);
    client(bootstrap, &all)
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
    let consumer = checker(bootstrap, topic, &[("auto.offset.reset", "earliest")]);
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

/// A record read back with a plain rdkafka consumer, as the broker has it.
#[derive(Debug, Clone)]
pub(crate) struct Read {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Option<Vec<u8>>,
    /// The message timestamp, ms.
    pub(crate) timestamp: Option<i64>,
    pub(crate) headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Read {
    /// A header's value as text.
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v.as_deref().unwrap_or_default()).into_owned())
    }

    /// The key as text.
    pub(crate) fn key_text(&self) -> Option<String> {
        self.key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
    }

    /// The value as text (empty for none).
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(self.value.as_deref().unwrap_or_default()).into_owned()
    }

    /// The value as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(self.value.as_deref().unwrap_or_default()).expect("json")
    }
}

impl From<&BorrowedMessage<'_>> for Read {
    fn from(m: &BorrowedMessage<'_>) -> Read {
        Read {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            timestamp: m.timestamp().to_millis(),
            headers: m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// `consumer` assigned every partition of `topic`, from the beginning.
fn from_the_beginning(consumer: BaseConsumer, bootstrap: &str, topic: &str) -> BaseConsumer {
    let partitions = partition_count(bootstrap, topic).unwrap_or(0);
    assert!(partitions > 0, "`{topic}` does not exist");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(
            topic,
            i32::try_from(p).expect("partition"),
            Offset::Beginning,
        )
        .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    consumer
}

/// Reads every partition of a topic from the beginning with a plain rdkafka consumer until
/// `done` holds (or `timeout`), then `settle` longer so that extra records show. Blocks in
/// place when called on a tokio runtime.
pub(crate) fn read_topic(
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
    settle: Duration,
    done: impl Fn(&[Read]) -> bool,
) -> Vec<Read> {
    tokio::task::block_in_place(|| {
        let consumer = from_the_beginning(checker(bootstrap, topic, &[]), bootstrap, topic);
        let mut out = Vec::new();
        let mut deadline = Instant::now() + timeout;
        let mut settling = false;
        // `done` may be costly: ask it a few times a second, not after every record.
        let mut checked: Option<Instant> = None;
        while Instant::now() < deadline {
            if !settling && checked.is_none_or(|t| t.elapsed() >= Duration::from_millis(200)) {
                checked = Some(Instant::now());
                if done(&out) {
                    settling = true;
                    deadline = Instant::now() + settle;
                }
            }
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                out.push(Read::from(&m));
            }
        }
        out
    })
}

/// Reads every partition of a topic from the beginning to its end as a reader of the
/// `isolation` level sees it (`read_committed`: up to the last stable offset). End offsets
/// count transaction markers, which are never delivered: a partition is done at its
/// end-of-partition event, or when nothing has come for a few seconds.
pub(crate) fn read_to_end(bootstrap: &str, topic: &str, isolation: &str) -> Vec<Read> {
    let settings = [
        ("enable.partition.eof", "true"),
        ("isolation.level", isolation),
    ];
    let consumer = from_the_beginning(checker(bootstrap, topic, &settings), bootstrap, topic);
    let partitions = consumer.assignment().expect("assignment").count();
    let mut out = Vec::new();
    let mut done = std::collections::HashSet::new();
    let mut last = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(90);
    while done.len() < partitions && last.elapsed() < Duration::from_secs(5) {
        assert!(Instant::now() < deadline, "reading {topic} took too long");
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last = Instant::now();
                out.push(Read::from(&m));
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                last = Instant::now();
                done.insert(p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
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
pub(crate) fn topic_configs(bootstrap: &str, name: &str) -> HashMap<String, String> {
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
    client(bootstrap, &[])
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .expect("watermarks")
}

/// Partition count of a topic (`None`: no such topic).
pub(crate) fn partition_count(bootstrap: &str, topic: &str) -> Option<usize> {
    let md = client(bootstrap, &[])
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    md.topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
}

/// Waits until the worker has created `topic` with `partitions` partitions.
pub(crate) fn wait_for_topic(bootstrap: &str, topic: &str, partitions: usize) {
    let consumer = client(bootstrap, &[]);
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
    let consumer = client(bootstrap, &[]);
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .sum()
}

/// A group's committed offset on each of a topic's partitions (0 where it has none), or the
/// error of a coordinator that cannot answer (yet).
pub(crate) fn committed_offsets(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> KafkaResult<Vec<i64>> {
    let consumer = client(bootstrap, &[("group.id", group)]);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok((0..partitions)
        .map(
            |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => 0,
            },
        )
        .collect())
}

/// Sum of a group's committed offsets over a topic's partitions.
pub(crate) fn committed_total(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> i64 {
    committed_offsets(bootstrap, group, topic, partitions)
        .expect("committed offsets")
        .iter()
        .sum()
}

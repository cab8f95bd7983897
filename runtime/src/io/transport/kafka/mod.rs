//! The Kafka transport, on rdkafka (librdkafka).
//!
//! Each agent has a consumer group (`<app>-<agent>` unless overridden) with one `BaseConsumer`
//! polled from its own thread (measured several times faster than `StreamConsumer` for small
//! messages), which hands batches to the agent's instances. Offsets are never auto-committed or
//! auto-stored: instances commit exactly the offsets of finished records, after everything those
//! records produced was acknowledged by the broker. Rebalances are cooperative by default
//! (`rebalance`: only moving partitions are revoked, co-partitioned topics move together), eager
//! with `range` on request: on revocation the consumer's thread waits in the rebalance callback
//! until every instance has committed what it finished. `leader` elects the worker that runs
//! leader-only timers.
//!
//! One idempotent producer per worker serves all agents (deliveries counted per batch, see
//! `produce`); partitioning is `murmur2_random`, the Java client's, so keys land where Java
//! producers and Kafka Streams put them.
//!
//! This file holds [`KafkaTransport`] and its [`Log`] impl, which hands each call to the file
//! of its concern. Those import one way, each naming only files further down this list:
//! `txn` (exactly-once transactions), `commit` (offset commits), `purge` (deleting consumed
//! repartition records), `fetch` (the consumer thread), `read` (ranges, committed offsets),
//! `admin` (topics, groups, watermarks), `produce` (the worker producer), `probe` (the
//! startup check that the broker accepts the user's security settings), `client` (what every
//! client shares).

mod admin;
mod client;
mod commit;
mod fetch;
mod fetch_queue;
mod leader;
mod probe;
pub(super) mod produce;
mod purge;
mod read;
mod rebalance;
mod txn;

use std::collections::HashMap;

use crate::base::spec::Internal;
use crate::io::transport::Leadership;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::Producer as _;

use super::{
    Committer, Deliveries, Delivery, GroupMember, Log, Outgoing, Pending, Router, TimeRetention, Tp,
};
use crate::base::config::{Config, OffsetReset, ProcessingGuarantee, RebalanceProtocol};
use crate::base::error::{Error, Result};
use crate::base::health::Health;
use crate::base::message::{OutRecord, RawRecord};
use crate::base::spec::TopicSpec;
use admin::Admin;
use commit::KafkaCommitter;
use fetch::FetchContext;
use futures::future::BoxFuture;

/// The Kafka side of a worker: its consumers' base config, the shared producer and an admin
/// client.
pub(crate) struct KafkaTransport {
    /// What every consumer of the worker starts from (`client::consumer_base`).
    consumers: ClientConfig,
    producer: produce::WorkerProducer,
    admin_client: Arc<AdminClient<DefaultClientContext>>,
    replication: i32,
    health: Arc<Health>,
    /// This worker's web address, advertised to the other workers of each consumer group in
    /// the consumers' `client.id` (`...;web=<url>`), so a table query reaching the wrong
    /// worker can name the right one.
    web_url: std::sync::OnceLock<String>,
    /// Exactly-once: the worker's transactional producer (agents' sends go through it).
    txn: Option<Arc<txn::Transactions>>,
    /// How the agents' consumers join their groups.
    membership: fetch::Membership,
}

impl KafkaTransport {
    /// Creates the worker's clients of the cluster at `bootstrap`: its producer, an admin
    /// client and, under exactly-once, its transactional producer (blocking: that one fences
    /// the worker's previous incarnation first).
    pub(crate) fn connect(config: &Config, bootstrap: &str) -> Result<Arc<Self>> {
        let base = client::base_config(config, bootstrap);
        probe::check_settings(&base, bootstrap)?;
        let producer_config = client::producer_config(&base, config);
        let producer: produce::WorkerProducer = producer_config
            .create_with_context(produce::DeliveryContext)
            .map_err(|e| {
                client::creation_error(
                    &producer_config,
                    format!("creating a producer for {bootstrap}"),
                    e,
                )
            })?;
        let admin: AdminClient<DefaultClientContext> = base
            .create()
            .map_err(|e| client::creation_error(&base, "creating an admin client", e))?;
        let txn = match config.processing_guarantee {
            ProcessingGuarantee::ExactlyOnce => {
                Some(txn::Transactions::for_worker(&producer_config, config)?)
            }
            ProcessingGuarantee::AtLeastOnce => None,
        };
        Ok(Arc::new(KafkaTransport {
            consumers: client::consumer_base(&base, config),
            producer,
            admin_client: Arc::new(admin),
            replication: config.replication,
            health: Arc::new(Health::default()),
            web_url: std::sync::OnceLock::new(),
            txn,
            membership: fetch::Membership {
                instance_id: config.instance_id.clone(),
                protocol: config.rebalance_protocol,
            },
        }))
    }

    /// Topics and groups on the brokers, through the admin client and the producer's
    /// connections.
    fn admin(&self) -> Admin<'_> {
        Admin {
            metadata: self.producer.client(),
            client: &self.admin_client,
            replication: self.replication,
        }
    }
}

impl Log for KafkaTransport {
    fn system(&self) -> &'static str {
        "kafka"
    }

    fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    fn advertise_web(&self, url: &str) -> bool {
        let _ = self.web_url.set(url.to_owned());
        true
    }

    fn ensure_topics<'a>(
        &'a self,
        specs: &'a [TopicSpec],
        default_partitions: i32,
    ) -> BoxFuture<'a, Result<HashMap<String, i32>>> {
        Box::pin(async move {
            self.admin()
                .ensure_topics_checked(specs, default_partitions)
                .await
        })
    }

    fn time_retention<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<TimeRetention>> {
        Box::pin(async move { Ok(self.admin().time_retention(topic).await) })
    }

    fn elect<'a>(&'a self, app_id: &'a str) -> BoxFuture<'a, Result<Leadership>> {
        Box::pin(async move {
            let name = crate::base::spec::leader_topic(app_id);
            let spec = TopicSpec::internal(&name, Internal::Leader, Some(1), "leader election");
            self.admin().ensure_topics_checked(&[spec], 1).await?;
            leader::elect(&self.consumers, &name, &name)
        })
    }

    fn partition_count(&self, topic: &str) -> Result<Option<i32>> {
        Ok(self
            .admin()
            .partition_counts(&[topic.to_owned()])?
            .remove(topic)
            .flatten())
    }

    fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64)> {
        self.admin().watermarks(topic, partition)
    }

    /// Reads `[from, until)` of a partition (a changelog) in batches, with its own consumer.
    fn read_range(
        &self,
        topic: &Arc<str>,
        partition: i32,
        from: i64,
        until: i64,
        f: &mut dyn FnMut(Vec<RawRecord>) -> Result<()>,
    ) -> Result<()> {
        read::read_partition_range(
            &self.consumers,
            &self.admin(),
            topic,
            partition,
            from..until,
            f,
        )
    }

    fn committed(&self, group: &str, topic: &str, partition: i32) -> Result<Option<i64>> {
        read::committed_offset(&self.consumers, group, topic, partition)
    }

    fn offset_for_time(&self, topic: &str, partition: i32, ms: i64) -> Result<i64> {
        read::offset_for_time(&self.consumers, &self.admin(), topic, partition, ms)
    }

    fn reset_offsets(&self, group: &str, offsets: &[(Tp, i64)]) -> Result<()> {
        read::commit_group_offsets(&self.consumers, group, offsets)
    }

    fn start_fetcher(
        &self,
        group: &str,
        topics: Vec<String>,
        reset: OffsetReset,
        router: Arc<Router>,
        stop: Arc<AtomicBool>,
    ) -> Result<(Arc<dyn Committer>, std::thread::JoinHandle<()>)> {
        let (start, committer) = self.fetch_start(group, &topics, reset, &router, &stop)?;
        let thread = fetch::spawn_poll_thread(start, router, stop)?;
        Ok((committer, thread))
    }

    fn lags(&self, _group: &str, router: &Router) -> Vec<(Tp, i64)> {
        router
            .lags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(tp, l)| (tp.clone(), *l))
            .collect()
    }

    fn group_members(&self, group: &str) -> Result<Vec<GroupMember>> {
        self.admin().group_members(group)
    }

    fn buffers(&self) -> bool {
        self.txn.is_some()
    }

    fn enqueue<'a>(
        &'a self,
        record: OutRecord,
        batch: &'a Arc<Deliveries>,
    ) -> BoxFuture<'a, Result<Pending>> {
        Box::pin(async move {
            if self.txn.is_some() {
                return Ok(Pending::Buffered(record));
            }
            // Waits while librdkafka's queue is full.
            produce::produce(&self.producer, &record, batch)
                .await
                .map_err(|e| Error::kafka(format!("producing to `{}`", record.topic), e))?;
            Ok(Pending::Enqueued(batch.clone()))
        })
    }

    fn try_enqueue(&self, record: &Outgoing<'_>, batch: &Arc<Deliveries>) -> Result<bool> {
        if self.txn.is_some() {
            return Ok(false);
        }
        produce::try_produce(&self.producer, record, batch)
            .map_err(|e| Error::kafka(format!("producing to `{}`", record.topic), e))
    }

    fn deliver<'a>(&'a self, delivery: Delivery<'a>) -> BoxFuture<'a, Result<HashMap<Tp, i64>>> {
        let Delivery {
            pending,
            offsets,
            committer,
            on_tick,
            ..
        } = delivery;
        Box::pin(async move {
            let committer = committer.and_then(|c| {
                let any: &dyn std::any::Any = c;
                any.downcast_ref::<KafkaCommitter>()
            });
            match &self.txn {
                Some(txn) => txn.commit_step(pending, offsets, committer, on_tick).await,
                None => produce::wait_for_deliveries(pending).await,
            }
        })
    }

    fn flush(&self, timeout: Duration) -> Result<()> {
        self.producer
            .flush(timeout)
            .map_err(|e| Error::kafka("flushing the producer", e))
    }

    fn transactions(&self) -> Option<(u64, u64)> {
        self.txn.as_ref().map(|txn| {
            (
                txn.committed.load(Ordering::Relaxed),
                txn.aborted.load(Ordering::Relaxed),
            )
        })
    }
}

impl KafkaTransport {
    /// What the fetcher thread of `group` starts from (its consumer, created with the agent's
    /// config: errors surface here, before the worker starts), and the group's committer.
    fn fetch_start(
        &self,
        group: &str,
        topics: &[String],
        reset: OffsetReset,
        router: &Arc<Router>,
        stop: &Arc<AtomicBool>,
    ) -> Result<(fetch::FetchStart, Arc<KafkaCommitter>)> {
        let read_committed = self.txn.is_some();
        // The fetcher's `Aligner` holds partitions in step when it reads several topics, and
        // one topic's once the agent hosts a window or join (`align::ReadMode`).
        let aligned = router.read_ahead.is_some() && topics.len() > 1;
        let config_for = |aligned| {
            fetch::consumer_config(
                &self.consumers,
                group,
                reset,
                read_committed,
                self.web_url.get().map(String::as_str),
                &self.membership,
                aligned,
            )
        };
        // Cooperative: the group assigns the first topic; the others follow it partition for
        // partition (see `rebalance`).
        let split = match self.membership.protocol {
            RebalanceProtocol::Cooperative => 1.min(topics.len()),
            RebalanceProtocol::Eager => topics.len(),
        };
        let (subscribed, partners) = topics.split_at(split);
        let context = || {
            FetchContext::new(
                router.clone(),
                self.health.clone(),
                read_committed,
                reset,
                partners.to_vec(),
            )
        };
        let first = context();
        let committer = KafkaCommitter::new(
            group,
            &first,
            stop.clone(),
            self.admin_client.clone(),
            read_committed,
        );
        let start = fetch::FetchStart {
            group: group.to_owned(),
            consumer: fetch::new_consumer(&config_for(aligned), first, group)?,
            in_step: (!aligned && router.read_ahead.is_some())
                .then(|| (config_for(true), context())),
            subscribed: subscribed.to_vec(),
            topics: topics.to_vec(),
            slot: committer.consumer_slot(),
        };
        Ok((start, committer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::transport::InstanceTx;
    use rdkafka::mocking::MockCluster;

    #[test]
    fn a_one_topic_agents_consumer_prefetches_for_how_its_function_reads() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("views", 2, 1).expect("topic");
        let bootstrap = cluster.bootstrap_servers();
        let transport =
            KafkaTransport::connect(&Config::new("app"), &bootstrap).expect("transport");
        for in_step in [true, false] {
            let (data, _data_rx) = tokio::sync::mpsc::channel(1);
            let (ctrl, _ctrl_rx) = tokio::sync::mpsc::unbounded_channel();
            let router = Router::new("a", vec![InstanceTx { data, ctrl }], Duration::from_secs(1))
                .aligned(Some(Duration::from_secs(30)))
                .decided_by_agent();
            let router = Arc::new(router);
            let stop = Arc::new(AtomicBool::new(false));
            let topics = ["views".to_owned()];
            let (mut start, _) = transport
                .fetch_start("group", &topics, OffsetReset::Earliest, &router, &stop)
                .expect("fetch start");
            let aligned = start.in_step.as_ref().map(|(config, _)| {
                [
                    config.get("queued.min.messages"),
                    config.get("max.partition.fetch.bytes"),
                ]
            });
            assert_eq!(aligned, Some([Some("1000"), Some("131072")]));
            // The agent function decides once the fetcher has started (it runs after it).
            let agent = {
                let router = router.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(100));
                    if in_step {
                        router.read_mode.read_in_step();
                    } else {
                        router.read_mode.reading();
                    }
                })
            };
            assert_eq!(start.choose_consumer(&router, &stop), in_step);
            agent.join().unwrap();
        }
        // An agent over two topics is aligned from the start: nothing to wait for.
        let (data, _data_rx) = tokio::sync::mpsc::channel(1);
        let (ctrl, _ctrl_rx) = tokio::sync::mpsc::unbounded_channel();
        let router = Router::new("b", vec![InstanceTx { data, ctrl }], Duration::from_secs(1))
            .aligned(Some(Duration::from_secs(30)))
            .decided_by_agent();
        let topics = ["views".to_owned(), "clicks".to_owned()];
        let stop = Arc::new(AtomicBool::new(false));
        let (start, _) = transport
            .fetch_start(
                "group",
                &topics,
                OffsetReset::Earliest,
                &Arc::new(router),
                &stop,
            )
            .expect("fetch start");
        assert!(start.in_step.is_none());
    }
}

//! Topics and groups on the brokers: creating the topics rill needs and checking the ones it
//! owns (partition counts, topic configs), partition counts and watermarks, and a consumer
//! group's members with their assignments (parsed from the classic consumer protocol).

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::admin::{
    AdminClient, AdminOptions, NewTopic, OwnedResourceSpecifier, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::{Client, DefaultClientContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::client::METADATA_TIMEOUT;
use super::produce::DeliveryContext;
use crate::base::error::{Error, Result};
use crate::base::spec::TopicSpec;
use crate::io::transport::{GroupMember, TimeRetention};

/// The worker's view of its brokers, borrowed from its `KafkaTransport` for a call.
pub(super) struct Admin<'a> {
    /// The worker producer's client: metadata, watermarks and group lists are asked over its
    /// connections.
    pub(super) metadata: &'a Client<DeliveryContext>,
    /// Creates topics and describes their configs.
    pub(super) client: &'a AdminClient<DefaultClientContext>,
    /// Replication factor of the topics rill creates.
    pub(super) replication: i32,
}

impl Admin<'_> {
    /// Partition count of each topic, or `None` when it does not exist.
    pub(super) fn partition_counts(
        &self,
        topics: &[String],
    ) -> Result<HashMap<String, Option<i32>>> {
        let mut out = HashMap::new();
        for topic in topics {
            let md = self
                .metadata
                .fetch_metadata(Some(topic), METADATA_TIMEOUT)
                .map_err(|e| {
                    Error::kafka(
                        format!("fetching metadata of `{topic}` (is the broker reachable?)"),
                        e,
                    )
                })?;
            let count = md
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
                .map(|t| t.partitions().len() as i32);
            out.insert(topic.clone(), count);
        }
        Ok(out)
    }

    /// Creates the topics that do not exist yet and checks the existing ones rill owns
    /// (`TopicSpec::check_existing`); returns every topic's partition count.
    pub(super) async fn ensure_topics_checked(
        &self,
        specs: &[TopicSpec],
        default_partitions: i32,
    ) -> Result<HashMap<String, i32>> {
        let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        let existing = self.partition_counts(&names)?;
        let mut seen = std::collections::HashSet::new();
        let missing: Vec<&TopicSpec> = specs
            .iter()
            .filter(|s| existing.get(&s.name).is_some_and(Option::is_none))
            .filter(|s| seen.insert(s.name.as_str()))
            .collect();
        let mut out: HashMap<String, i32> = existing
            .into_iter()
            .filter_map(|(k, v)| v.map(|n| (k, n)))
            .collect();
        if !missing.is_empty() {
            self.create_topics(&missing, default_partitions).await?;
            out.extend(self.wait_for_metadata(&missing).await?);
        }
        self.check_owned(specs, &out).await?;
        Ok(out)
    }

    /// Creates `missing` through the admin API (one created meanwhile by another worker is
    /// fine: it is checked like any existing topic).
    async fn create_topics(&self, missing: &[&TopicSpec], default_partitions: i32) -> Result<()> {
        let configs: Vec<Vec<(&str, &str)>> = missing.iter().map(|s| s.create_configs()).collect();
        let new_topics: Vec<NewTopic<'_>> = missing
            .iter()
            .zip(&configs)
            .map(|(s, configs)| {
                let partitions = s.partitions.unwrap_or(default_partitions);
                let replication = TopicReplication::Fixed(self.replication);
                configs.iter().fold(
                    NewTopic::new(&s.name, partitions, replication),
                    |t, (k, v)| t.set(k, v),
                )
            })
            .collect();
        let results = self
            .client
            .create_topics(
                &new_topics,
                &AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT)),
            )
            .await
            .map_err(|e| Error::kafka("creating topics", e))?;
        for result in results {
            match result {
                Ok(name) => tracing::info!(topic = %name, "created topic"),
                Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    tracing::debug!(topic = %name, "topic exists")
                }
                Err((name, code)) => {
                    return Err(Error::kafka(
                        format!(
                            "creating topic `{name}` (create it by hand, or grant rill CreateTopics)"
                        ),
                        KafkaError::AdminOp(code),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The partition counts of topics just created: metadata can lag creation briefly.
    async fn wait_for_metadata(&self, created: &[&TopicSpec]) -> Result<HashMap<String, i32>> {
        let names: Vec<String> = created.iter().map(|s| s.name.clone()).collect();
        for _ in 0..50 {
            let counts = self.partition_counts(&names)?;
            if counts.values().all(Option::is_some) {
                return Ok(counts
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|n| (k, n)))
                    .collect());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(Error::UnknownTopic(names.join(", ")))
    }

    /// Checks the topics rill owns among `specs` against what it needs of them: their
    /// partition counts and topic configs.
    async fn check_owned(&self, specs: &[TopicSpec], counts: &HashMap<String, i32>) -> Result<()> {
        let owned: Vec<&TopicSpec> = specs.iter().filter(|s| s.internal.is_some()).collect();
        if owned.is_empty() {
            return Ok(());
        }
        let configs = self
            .topic_configs(owned.iter().map(|s| s.name.as_str()))
            .await;
        for spec in owned {
            let Some(&partitions) = counts.get(&spec.name) else {
                return Err(Error::UnknownTopic(spec.name.clone()));
            };
            let configs = configs.as_ref().and_then(|c| c.get(&spec.name));
            spec.check_existing(partitions, configs)?;
        }
        Ok(())
    }

    /// The current topic configs of `topics`, or `None` (with a warning) when the broker does
    /// not describe them to rill (no `DescribeConfigs` permission): then only partition
    /// counts are checked.
    async fn topic_configs<'a>(
        &self,
        topics: impl Iterator<Item = &'a str>,
    ) -> Option<HashMap<String, HashMap<String, String>>> {
        let resources: Vec<ResourceSpecifier<'_>> = topics.map(ResourceSpecifier::Topic).collect();
        let options = AdminOptions::new().request_timeout(Some(METADATA_TIMEOUT));
        let described = match self.client.describe_configs(&resources, &options).await {
            Ok(described) => described,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the configs of rill's internal topics; checking their partition counts only");
                return None;
            }
        };
        let mut out = HashMap::new();
        for result in described {
            match result {
                Ok(resource) => {
                    let OwnedResourceSpecifier::Topic(name) = resource.specifier else {
                        continue;
                    };
                    let entries = resource
                        .entries
                        .into_iter()
                        .filter_map(|e| Some((e.name, e.value?)))
                        .collect();
                    out.insert(name, entries);
                }
                Err(code) => {
                    tracing::warn!(%code, "cannot read the configs of an internal topic; checking its partition count only");
                }
            }
        }
        Some(out)
    }

    /// `topic`'s time retention: its `retention.ms` when its `cleanup.policy` includes
    /// `delete` and the retention is finite.
    pub(super) async fn time_retention(&self, topic: &str) -> TimeRetention {
        let Some(configs) = self.topic_configs(std::iter::once(topic)).await else {
            return TimeRetention::Unknown;
        };
        let Some(configs) = configs.get(topic) else {
            return TimeRetention::Unknown;
        };
        let deletes = configs
            .get("cleanup.policy")
            .is_some_and(|policy| policy.split(',').any(|p| p.trim() == "delete"));
        let retention = configs.get("retention.ms").and_then(|ms| ms.parse().ok());
        match retention {
            Some(ms) if deletes && ms > 0 => TimeRetention::After(ms),
            _ => TimeRetention::Kept,
        }
    }

    /// First and next offset of a partition (blocking). A topic created a moment ago (a window's
    /// or join's changelog, created when the agent builds it) may have no leader yet: those
    /// answers are retried for up to 30 s.
    pub(super) fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64)> {
        use rdkafka::types::RDKafkaErrorCode as Code;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut backoff = Duration::from_millis(50);
        loop {
            match self
                .metadata
                .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
            {
                Ok(marks) => return Ok(marks),
                Err(e)
                    if matches!(
                        e.rdkafka_error_code(),
                        Some(
                            Code::NotLeaderForPartition
                                | Code::LeaderNotAvailable
                                | Code::UnknownTopicOrPartition
                                | Code::UnknownPartition
                        )
                    ) && std::time::Instant::now() < deadline =>
                {
                    tracing::debug!(topic, partition, error = %e, "no leader yet; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(e) => {
                    return Err(Error::kafka(
                        format!("reading the offsets of {topic}[{partition}]"),
                        e,
                    ));
                }
            }
        }
    }

    /// The members of a consumer group: each one's advertised web address (from its
    /// `client.id`; only `http://` and `https://` addresses are taken) and its assignment.
    /// Blocking.
    pub(super) fn group_members(&self, group: &str) -> Result<Vec<GroupMember>> {
        let groups = self
            .metadata
            .fetch_group_list(Some(group), Duration::from_secs(5))
            .map_err(|e| Error::kafka(format!("describing group `{group}`"), e))?;
        Ok(groups
            .groups()
            .iter()
            .flat_map(|g| g.members())
            .map(|m| {
                let url = m
                    .client_id()
                    .split_once(";web=")
                    .map(|(_, url)| url.to_owned())
                    .filter(|u| u.starts_with("http://") || u.starts_with("https://"));
                let tps = m
                    .assignment()
                    .and_then(parse_assignment)
                    .unwrap_or_default();
                (url, tps)
            })
            .collect())
    }
}

/// Topic-partitions of a classic consumer-protocol assignment (version, then per topic its
/// name and partitions; user data ignored).
fn parse_assignment(bytes: &[u8]) -> Option<Vec<(String, i32)>> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (b.get(..n)?, b.get(n..)?);
        *b = rest;
        Some(head)
    }
    let mut b = bytes;
    let int16 = |b: &mut &[u8]| take(b, 2).map(|x| i16::from_be_bytes([x[0], x[1]]));
    let int32 = |b: &mut &[u8]| take(b, 4).map(|x| i32::from_be_bytes([x[0], x[1], x[2], x[3]]));
    let _version = int16(&mut b)?;
    let topics = int32(&mut b)?;
    let mut out = Vec::new();
    for _ in 0..topics.max(0) {
        let len = usize::try_from(int16(&mut b)?).ok()?;
        let name = String::from_utf8(take(&mut b, len)?.to_vec()).ok()?;
        let n = int32(&mut b)?;
        for _ in 0..n.max(0) {
            out.push((name.clone(), int32(&mut b)?));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_a_consumer_protocol_assignment() {
        let mut b = vec![0, 1, 0, 0, 0, 1, 0, 5];
        b.extend_from_slice(b"views");
        b.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 7, 0, 0, 0, 0]);
        assert_eq!(
            super::parse_assignment(&b),
            Some(vec![("views".to_owned(), 3), ("views".to_owned(), 7)])
        );
        assert_eq!(super::parse_assignment(&b[..9]), None);
    }
}

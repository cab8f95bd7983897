//! The untyped descriptions of what an app declares: topics (`TopicSpec`, with the roles of the
//! topics rill owns, `Internal`) and tables (`TableSpec`). The App creates topics from them,
//! checks that one name carries one type, and draws the topology.

use crate::base::codec::Codec;
use crate::base::error::{CodecError, Error, Result};
use crate::base::record::Record;

/// A table an agent declared (`#[agent(tables(totals = "url_view_totals"))]`).
#[derive(Debug, Clone)]
pub struct TableSpec {
    /// Table name.
    pub name: String,
}

/// The untyped description of a topic an agent reads or writes.
#[derive(Clone)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Rust type of the values (`std::any::type_name`).
    pub value_type: &'static str,
    /// Value codec.
    pub codec: Codec,
    /// Partition count wanted at creation (`None`: the App default).
    pub partitions: Option<i32>,
    /// Where it was declared (agent source location).
    pub declared_at: String,
    /// A compacted topic (table changelogs): Kafka keeps the last record per key; the embedded
    /// log exempts it from retention.
    pub compacted: bool,
    /// Set for the topics rill owns (repartition, changelog, retry, dead-letter, late-event
    /// topics): created and checked with what rill needs of them.
    pub(crate) internal: Option<Internal>,
    /// An in-memory channel of the worker, not a topic of the log (`AgentSpec::channel`).
    pub(crate) channel: bool,
    /// The value type's registry schema (`#[record(codec = "avro")]`).
    pub(crate) schema: fn() -> Option<&'static crate::base::schema::RecordSchema>,
    /// The record's registry key (`#[record(key_codec = "avro")]`).
    pub(crate) key_schema: fn() -> Option<crate::base::registry_keys::KeySchema>,
    json_to_wire: JsonToWire,
}

/// Converts a JSON document into a topic's wire format (topic, JSON, codec).
type JsonToWire = fn(&str, &[u8], Codec) -> Result<Vec<u8>, CodecError>;

impl TopicSpec {
    /// Describes a topic carrying `V`.
    pub fn of<V: Record>(name: &str, declared_at: &str) -> Self {
        TopicSpec {
            name: name.to_owned(),
            value_type: std::any::type_name::<V>(),
            codec: V::CODEC,
            partitions: None,
            declared_at: declared_at.to_owned(),
            compacted: false,
            internal: None,
            channel: false,
            schema: V::registry_schema,
            key_schema: V::key_schema,
            json_to_wire: |topic, json, codec| {
                let value: V = serde_json::from_slice(json)?;
                crate::base::record::encode_vec_for(topic, codec, &value)
            },
        }
    }

    /// Describes the in-memory channel `name` carrying `V` (`AgentSpec::channel`,
    /// `#[agent(channel = "..")]`): kept in the worker, never created on the log.
    pub fn in_memory<V: Record>(name: &str, declared_at: &str) -> Self {
        TopicSpec {
            channel: true,
            ..TopicSpec::of::<V>(name, declared_at)
        }
    }

    /// A topic rill owns, of raw bytes; `partitions`: the count it must have (`None`: the App
    /// default at creation, and any count once it exists).
    pub(crate) fn internal(
        name: &str,
        role: Internal,
        partitions: Option<i32>,
        declared_at: &str,
    ) -> Self {
        let mut spec = TopicSpec::of::<Vec<u8>>(name, declared_at);
        spec.partitions = partitions;
        spec.compacted = matches!(role, Internal::Changelog | Internal::WindowChangelog);
        spec.internal = Some(role);
        spec
    }

    /// The topic configs to create it with (`cleanup.policy` and, for internal topics, what
    /// rill needs of them).
    pub(crate) fn create_configs(&self) -> Vec<(&'static str, &'static str)> {
        match self.internal {
            // Every role names its `cleanup.policy`.
            Some(role) => role.configs().to_vec(),
            None => vec![(
                "cleanup.policy",
                if self.compacted { "compact" } else { "delete" },
            )],
        }
    }

    /// Checks an existing topic rill owns against what rill needs: its partition count (when
    /// `partitions` is set) and the topic configs of [`Internal::required`] (when `configs`,
    /// the topic's current values, are known). User topics are not checked.
    pub(crate) fn check_existing(
        &self,
        partitions: i32,
        configs: Option<&std::collections::HashMap<String, String>>,
    ) -> Result<()> {
        let Some(role) = self.internal else {
            return Ok(());
        };
        if let Some(wanted) = self.partitions.filter(|w| *w != partitions) {
            return Err(Error::InternalTopic {
                topic: self.name.clone(),
                problem: format!(
                    "has {partitions} partitions, but rill needs {wanted} ({})",
                    role.why_partitions()
                ),
                fix: format!(
                    "it was created by someone else, probably by the broker (`auto.create.topics.enable`) or by hand. Stop every worker of the app, delete the topic (`kafka-topics.sh --bootstrap-server <broker> --delete --topic {}`) and start again: rill creates it as it needs it{}",
                    self.name,
                    role.loses()
                ),
            });
        }
        let Some(configs) = configs else {
            return Ok(());
        };
        for (key, wanted) in role.required() {
            let actual = configs.get(*key).map_or("(unset)", String::as_str);
            if actual != *wanted && !role.accepts(key, actual) {
                return Err(Error::InternalTopic {
                    topic: self.name.clone(),
                    problem: format!(
                        "has `{key}={actual}`, but rill needs `{key}={wanted}` ({})",
                        role.why_configs()
                    ),
                    fix: format!(
                        "change it (`kafka-configs.sh --bootstrap-server <broker> --alter --entity-type topics --entity-name {} --add-config {key}={}`), or stop every worker of the app, delete the topic and start again{}",
                        self.name,
                        // kafka-configs takes a list in brackets.
                        if wanted.contains(',') {
                            format!("[{wanted}]")
                        } else {
                            (*wanted).to_owned()
                        },
                        role.loses()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Converts a JSON document into this topic's wire format, checking it against the type
    /// (used by the `send` command).
    pub fn json_to_wire(&self, json: &[u8]) -> Result<Vec<u8>> {
        (self.json_to_wire)(&self.name, json, self.codec).map_err(|source| Error::Codec {
            topic: self.name.clone(),
            source,
        })
    }
}

impl std::fmt::Debug for TopicSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicSpec")
            .field("name", &self.name)
            .field("value_type", &self.value_type)
            .field("codec", &self.codec)
            .field("partitions", &self.partitions)
            .field("declared_at", &self.declared_at)
            .finish()
    }
}

/// The topics rill owns, by role. rill creates them before the first send or fetch (its clients
/// never let a broker auto-create a topic) and refuses to run on one that exists with other
/// partitions or settings than the role needs: a repartition topic auto-created with the
/// broker's `num.partitions` sends records to partitions no watermark reaches, and windows
/// would never close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Internal {
    /// `group_by`'s topic: the source's partitions; records carry their event time as
    /// timestamp, so time retention is off (`retention.ms=-1`) and rill deletes what its
    /// consumer committed instead (Kafka Streams does the same).
    Repartition,
    /// A table's or a sliding or session window's changelog: the source's partitions,
    /// compacted (no time retention).
    Changelog,
    /// The changelog of tumbling and hopping windows and of joins: the source's partitions,
    /// compacted and time-retained (`compact,delete`, a day), as Kafka Streams' windowed
    /// changelogs are. A closed window or expired join record writes no tombstone: its entry
    /// goes by age, and until then the stored watermark tells recovery it has expired
    /// (`ops/window/state.rs`, `ops/join/state.rs`). An existing topic that is only
    /// compacted is accepted: expired state then leaves tombstones, as before.
    WindowChangelog,
    /// A retry topic: the source's partitions (a retried record comes back to its instance).
    Retry,
    /// Dead letters and late events: any partition count, never compacted (records with one
    /// key must all stay). Their records are stamped with the time they were sent, the
    /// original timestamp kept in a header, so time retention counts from then.
    DeadLetters,
    /// A topic an agent's stream goes through (`Stream::through`): named by the user and kept
    /// as its retention says, but partitioned like the source, so the agent's tables and the
    /// records of a key stay together.
    Through,
    /// The app's reply topic (`<app>-__replies`): replies to requests, read by every worker
    /// from its end; any partition count, never compacted.
    Replies,
    /// The leader election's topic (`<app>-__leader`): one partition, whose consumer-group
    /// member leads; no record is ever written to it.
    Leader,
}

/// The topic (and consumer group) of an app's leader election.
pub(crate) fn leader_topic(app_id: &str) -> String {
    format!("{app_id}-__leader")
}

impl Internal {
    /// The `retention.ms` a window changelog is created with (a day, as Kafka Streams'
    /// `windowstore.changelog.additional.retention.ms`).
    pub(crate) const WINDOW_CHANGELOG_RETENTION_MS: i64 = 86_400_000;

    /// What the topic is created with.
    fn configs(self) -> &'static [(&'static str, &'static str)] {
        match self {
            // Kafka Streams' repartition topic settings: segments small enough for the purged
            // records' disk space to come back.
            Internal::Repartition => &[
                ("cleanup.policy", "delete"),
                ("retention.ms", "-1"),
                ("segment.bytes", "52428800"),
                ("segment.ms", "600000"),
            ],
            Internal::Changelog => &[("cleanup.policy", "compact")],
            // Segments of an hour, so that age and compaction reach a segment within the
            // hour rather than after the broker's 7-day roll.
            Internal::WindowChangelog => &[
                ("cleanup.policy", "compact,delete"),
                ("retention.ms", "86400000"),
                ("segment.ms", "3600000"),
            ],
            Internal::Retry
            | Internal::DeadLetters
            | Internal::Leader
            | Internal::Through
            | Internal::Replies => &[("cleanup.policy", "delete")],
        }
    }

    /// What an existing topic must have.
    fn required(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Internal::Repartition => &self.configs()[..2],
            Internal::WindowChangelog => &self.configs()[..1],
            _ => self.configs(),
        }
    }

    /// Whether an existing topic's `actual` value of `key`, though not what rill creates, does:
    /// a window changelog may be compacted only (closed windows then leave tombstones), and its
    /// policies may be listed in either order.
    fn accepts(self, key: &str, actual: &str) -> bool {
        self == Internal::WindowChangelog
            && key == "cleanup.policy"
            && matches!(
                actual,
                "compact" | "delete,compact" | "compact, delete" | "delete, compact"
            )
    }

    fn why_partitions(self) -> &'static str {
        match self {
            Internal::Repartition
            | Internal::Changelog
            | Internal::WindowChangelog
            | Internal::Retry
            | Internal::Through => {
                "as many as the agent's source topic: partition p of each holds the keys of source partition p"
            }
            Internal::DeadLetters | Internal::Replies => "",
            Internal::Leader => "one: the one worker it is assigned to leads",
        }
    }

    fn why_configs(self) -> &'static str {
        match self {
            Internal::Repartition => {
                "its records carry old event times as timestamps, which time retention would delete before they are read; rill deletes what it has consumed itself"
            }
            Internal::Changelog => {
                "a changelog keeps the last value of every key, whatever its age"
            }
            Internal::WindowChangelog => {
                "a window changelog keeps the last value of every open window"
            }
            Internal::Retry | Internal::DeadLetters | Internal::Through | Internal::Replies => {
                "compaction would keep only the last of the records with one key"
            }
            Internal::Leader => "it holds no records",
        }
    }

    /// What deleting the topic loses, for the fix.
    fn loses(self) -> &'static str {
        match self {
            Internal::Repartition | Internal::Retry | Internal::Through => {
                " (records in it that were not processed yet are lost; let the app drain it first if it can)"
            }
            Internal::Changelog | Internal::WindowChangelog => {
                " (the table or window state it backs starts empty: the local copy no longer matches the new changelog and is cleared)"
            }
            Internal::DeadLetters => " (its records are lost; copy them first if you need them)",
            Internal::Leader => " (it holds no records)",
            Internal::Replies => " (replies not read yet are lost: their requests time out)",
        }
    }
}

/// Checks that every topic name carries one value type; errors name both declarations.
pub(crate) fn check_types<'a>(specs: impl IntoIterator<Item = &'a TopicSpec>) -> Result<()> {
    let mut seen: std::collections::HashMap<&str, &TopicSpec> = std::collections::HashMap::new();
    for spec in specs {
        match seen.get(spec.name.as_str()) {
            Some(first) if first.value_type != spec.value_type => {
                return Err(Error::TopicTypeConflict {
                    topic: spec.name.clone(),
                    first_type: first.value_type,
                    first_at: first.declared_at.clone(),
                    second_type: spec.value_type,
                    second_at: spec.declared_at.clone(),
                });
            }
            Some(_) => {}
            None => {
                seen.insert(&spec.name, spec);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicting_types_name_both_places() {
        let a = TopicSpec::of::<String>("t", "src/a.rs:1");
        let b = TopicSpec::of::<Vec<u8>>("t", "src/b.rs:2");
        let err = check_types([&a, &b]).unwrap_err().to_string();
        assert!(
            err.contains("src/a.rs:1") && err.contains("src/b.rs:2"),
            "{err}"
        );
        assert!(check_types([&a, &a.clone()]).is_ok());
    }

    #[test]
    fn an_internal_topic_unlike_what_rill_needs_is_refused_with_both_values_and_the_fix() {
        let spec = TopicSpec::internal(
            "app-a-url-repartition",
            Internal::Repartition,
            Some(1),
            "here",
        );
        let err = spec.check_existing(4, None).unwrap_err().to_string();
        for part in [
            "`app-a-url-repartition`",
            "4 partitions",
            "needs 1",
            "auto.create.topics.enable",
            "--delete --topic app-a-url-repartition",
        ] {
            assert!(err.contains(part), "{part} missing: {err}");
        }
        let mut configs: std::collections::HashMap<String, String> =
            [("cleanup.policy", "delete"), ("retention.ms", "604800000")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        let err = spec
            .check_existing(1, Some(&configs))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`retention.ms=604800000`") && err.contains("`retention.ms=-1`"),
            "{err}"
        );
        assert!(err.contains("--add-config retention.ms=-1"), "{err}");
        configs.insert("retention.ms".into(), "-1".into());
        spec.check_existing(1, Some(&configs)).unwrap();
        // A changelog must be compacted; dead letters must not be, at any partition count.
        let changelog = TopicSpec::internal("c", Internal::Changelog, Some(1), "here");
        let err = changelog
            .check_existing(1, Some(&configs))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`cleanup.policy=compact`"), "{err}");
        let dead = TopicSpec::internal("d", Internal::DeadLetters, None, "here");
        dead.check_existing(7, Some(&configs)).unwrap();
        // Topics of the user are theirs: not checked.
        TopicSpec::of::<String>("views", "here")
            .check_existing(3, Some(&configs))
            .unwrap();
    }

    #[test]
    fn internal_topics_are_created_with_what_they_need() {
        let configs =
            TopicSpec::internal("r", Internal::Repartition, Some(2), "here").create_configs();
        assert!(configs.contains(&("retention.ms", "-1")), "{configs:?}");
        assert!(
            configs.contains(&("cleanup.policy", "delete")),
            "{configs:?}"
        );
        assert_eq!(
            configs
                .iter()
                .filter(|(k, _)| *k == "cleanup.policy")
                .count(),
            1
        );
        let configs =
            TopicSpec::internal("c", Internal::Changelog, Some(2), "here").create_configs();
        assert_eq!(configs, vec![("cleanup.policy", "compact")]);
        let windows = TopicSpec::internal("w", Internal::WindowChangelog, Some(2), "here");
        assert!(windows.compacted, "the embedded log compacts it");
        let configs = windows.create_configs();
        assert!(
            configs.contains(&("cleanup.policy", "compact,delete"))
                && configs.contains(&(
                    "retention.ms",
                    &*Internal::WINDOW_CHANGELOG_RETENTION_MS.to_string()
                )),
            "{configs:?}"
        );
    }

    #[test]
    fn a_window_changelog_may_be_compacted_only_but_not_deleted_only() {
        let spec = TopicSpec::internal("w", Internal::WindowChangelog, Some(1), "here");
        let with = |policy: &str| {
            let configs: std::collections::HashMap<String, String> = [
                ("cleanup.policy".to_owned(), policy.to_owned()),
                ("retention.ms".to_owned(), "3600000".to_owned()),
            ]
            .into();
            spec.check_existing(1, Some(&configs))
        };
        // What rill creates; what an earlier version created (closed windows then leave
        // tombstones); the same policies listed the other way round.
        for policy in ["compact,delete", "compact", "delete,compact"] {
            with(policy).unwrap();
        }
        let err = with("delete").unwrap_err().to_string();
        assert!(
            err.contains("`cleanup.policy=delete`")
                && err.contains("--add-config cleanup.policy=[compact,delete]"),
            "{err}"
        );
    }

    #[test]
    fn json_to_wire_validates_against_the_type() {
        let spec = TopicSpec::of::<serde_json::Value>("t", "here");
        assert_eq!(
            spec.json_to_wire(br#"{"a":1}"#).unwrap(),
            br#"{"a":1}"#.to_vec()
        );
        assert!(spec.json_to_wire(b"{nope").is_err());
    }
}

//! The topology of an app: its agents, the topics they read and write, their tables and the
//! internal topics rill adds (repartition, changelog, dead-letter and retry topics). Built from
//! the agent specs (what `#[agent]` declares) and, in a running worker, completed with what the
//! agents set up at run time (`group_by` repartition topics, window tables, topics they send
//! to). Served as JSON and drawn as DOT/SVG by the web server and the `graph` command.

use serde::Serialize;

use crate::base::failure::Policy;
use crate::wiring::agent::AgentSpec;

/// What a topic is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TopicKind {
    /// A topic of the app's own (sources, sinks, topics agents send to).
    User,
    /// Internal: a `group_by` repartition topic.
    Repartition,
    /// Internal: a table's or window's changelog.
    Changelog,
    /// Internal: an agent's dead letters.
    DeadLetter,
    /// Internal: a retry topic of `on_error = "retry_topics"`.
    Retry,
    /// A topic read whole into a global table.
    Global,
}

/// A topic of the topology.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicNode {
    /// Topic name.
    pub name: String,
    /// What it is for.
    pub kind: TopicKind,
}

/// What a table is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TableKind {
    /// A `Table` (partitioned like its agent's source).
    Table,
    /// The state of a window (`<agent>-<window>`).
    Window,
    /// A `GlobalTable` (every worker holds all of it).
    Global,
}

/// A table of the topology.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableNode {
    /// Table name.
    pub name: String,
    /// What it is.
    pub kind: TableKind,
    /// The agent that writes it (none for global tables).
    pub agent: Option<String>,
    /// Its changelog topic (for global tables: the topic it is read from).
    pub changelog: String,
}

/// An agent of the topology.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentNode {
    /// Agent name.
    pub name: String,
    /// Consumer group.
    pub group: String,
    /// Instances per worker.
    pub concurrency: usize,
    /// Topics it reads (retry topics included; repartition topics are in `repartition`).
    pub sources: Vec<String>,
    /// Topics it writes: its sink and any topic it was seen sending to.
    pub sinks: Vec<String>,
    /// Repartition topics of its `group_by` (written and read by the agent).
    pub repartition: Vec<String>,
    /// Its tables and window tables.
    pub tables: Vec<String>,
    /// Global tables it reads.
    pub global_tables: Vec<String>,
    /// Its dead-letter topic.
    pub dead_letter: String,
}

/// Agents, topics and tables of an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Topology {
    /// The app id.
    pub app: String,
    /// Agents, in declaration order.
    pub agents: Vec<AgentNode>,
    /// Every topic any agent or table touches, each once.
    pub topics: Vec<TopicNode>,
    /// Tables, window tables and global tables.
    pub tables: Vec<TableNode>,
}

impl Topology {
    /// What the specs declare (no run-time additions).
    pub fn from_specs(
        app_id: &str,
        specs: &[AgentSpec],
        on_error: crate::base::failure::OnError,
    ) -> Self {
        let mut t = Topology {
            app: app_id.to_owned(),
            agents: Vec::new(),
            topics: Vec::new(),
            tables: Vec::new(),
        };
        for spec in specs {
            let policy = Policy::new(
                spec.on_error.unwrap_or(on_error),
                app_id,
                spec.name(),
                spec.dead_letter.as_deref(),
                0,
            );
            let mut node = AgentNode {
                name: spec.name().to_owned(),
                group: spec.group_id(app_id),
                concurrency: spec.concurrency,
                sources: Vec::new(),
                sinks: Vec::new(),
                repartition: Vec::new(),
                tables: Vec::new(),
                global_tables: spec.global_tables.clone(),
                dead_letter: policy.dead_letter.to_string(),
            };
            for s in &spec.sources {
                node.sources.push(s.name.clone());
                t.topic(&s.name, TopicKind::User);
            }
            for r in &policy.retry_topics {
                node.sources.push(r.to_string());
                t.topic(r, TopicKind::Retry);
            }
            if let Some(sink) = &spec.sink {
                node.sinks.push(sink.name.clone());
                t.topic(&sink.name, TopicKind::User);
            }
            t.topic(&policy.dead_letter, TopicKind::DeadLetter);
            for table in &spec.tables {
                node.tables.push(table.name.clone());
                t.table(
                    &table.name,
                    TableKind::Table,
                    Some(spec.name()),
                    &spec.changelog_of(app_id, &table.name),
                );
            }
            for g in &spec.global_tables {
                t.table(g, TableKind::Global, None, g);
            }
            t.agents.push(node);
        }
        t
    }

    /// Adds a topic unless present (a user topic becomes whatever more specific kind is given).
    pub(crate) fn topic(&mut self, name: &str, kind: TopicKind) {
        match self.topics.iter_mut().find(|n| n.name == name) {
            Some(n) => {
                if n.kind == TopicKind::User {
                    n.kind = kind;
                }
            }
            None => self.topics.push(TopicNode {
                name: name.to_owned(),
                kind,
            }),
        }
    }

    /// Adds a table (and its changelog topic) unless present.
    pub(crate) fn table(
        &mut self,
        name: &str,
        kind: TableKind,
        agent: Option<&str>,
        changelog: &str,
    ) {
        self.topic(
            changelog,
            if kind == TableKind::Global {
                TopicKind::Global
            } else {
                TopicKind::Changelog
            },
        );
        if self.tables.iter().any(|t| t.name == name) {
            return;
        }
        self.tables.push(TableNode {
            name: name.to_owned(),
            kind,
            agent: agent.map(str::to_owned),
            changelog: changelog.to_owned(),
        });
    }

    /// Records that `agent` writes to `topic` (seen at run time).
    pub(crate) fn agent_sends(&mut self, agent: &str, topic: &str) {
        let known_internal = self
            .topics
            .iter()
            .any(|t| t.name == topic && t.kind != TopicKind::User);
        if known_internal {
            return;
        }
        self.topic(topic, TopicKind::User);
        if let Some(a) = self.agents.iter_mut().find(|a| a.name == agent)
            && !a.sinks.iter().any(|s| s == topic)
        {
            a.sinks.push(topic.to_owned());
        }
    }

    /// Records a `group_by` repartition topic of `agent`.
    pub(crate) fn agent_repartitions(&mut self, agent: &str, topic: &str) {
        self.topic(topic, TopicKind::Repartition);
        if let Some(a) = self.agents.iter_mut().find(|a| a.name == agent)
            && !a.repartition.iter().any(|s| s == topic)
        {
            a.repartition.push(topic.to_owned());
        }
    }

    /// Records a window table of `agent`.
    pub(crate) fn agent_window(&mut self, agent: &str, table: &str, changelog: &str) {
        self.table(table, TableKind::Window, Some(agent), changelog);
        if let Some(a) = self.agents.iter_mut().find(|a| a.name == agent)
            && !a.tables.iter().any(|s| s == table)
        {
            a.tables.push(table.to_owned());
        }
    }
}

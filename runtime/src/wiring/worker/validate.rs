//! Checks of an app's declarations before anything starts: one record type per topic name,
//! agent names unique, every agent with a source, and topics read together co-partitioned.

use std::collections::HashMap;

use crate::base::config::Config;
use crate::base::error::{Error, Result};
use crate::base::spec::{TopicSpec, check_types};
use crate::wiring::agent::AgentSpec;
use crate::wiring::timer::TimerSpec;

/// Checks the agents and topics an app declares; returns every topic they name.
pub(super) fn declarations(agents: &[AgentSpec], topics: &[TopicSpec]) -> Result<Vec<TopicSpec>> {
    let all_topics: Vec<TopicSpec> = agents
        .iter()
        .flat_map(|a| a.sources.iter().chain(a.sink.iter()))
        .chain(topics.iter())
        .cloned()
        .collect();
    check_types(&all_topics)?;
    let mut names = std::collections::HashSet::new();
    for a in agents {
        if !names.insert(a.name().to_owned()) {
            return Err(Error::config(
                format!("agent `{}`", a.name()),
                format!(
                    "two agents have this name (one at {}); rename one",
                    a.declared_at()
                ),
            ));
        }
        if a.sources.is_empty() {
            return Err(Error::config(
                format!("agent `{}`", a.name()),
                "has no source topic",
            ));
        }
    }
    Ok(all_topics)
}

/// Topics an agent reads together (joined, or with its tables) must be co-partitioned: records
/// of one key meet in one partition number.
pub(super) fn co_partitioned(
    config: &Config,
    agents: &[AgentSpec],
    partitions: &HashMap<String, i32>,
) -> Result<()> {
    for agent in agents
        .iter()
        .filter(|a| a.sources.len() > 1 && (a.co_partitioned || !a.tables.is_empty()))
    {
        let counts: Vec<(&str, i32)> = agent
            .sources
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    partitions
                        .get(&s.name)
                        .copied()
                        .unwrap_or(config.partitions),
                )
            })
            .collect();
        let source_partitions = counts[0].1;
        if let Some((topic, n)) = counts.iter().find(|(_, n)| *n != source_partitions) {
            return Err(Error::config(
                format!("agent `{}`", agent.name()),
                format!(
                    "its topics are read together (joined, or with its tables) and must be co-partitioned, but `{}` has {source_partitions} partitions and `{topic}` has {n}; give them the same partition count",
                    counts[0].0
                ),
            ));
        }
    }
    Ok(())
}

/// Checks the timers: valid schedules, a function each, names unique.
pub(super) fn timers(timers: &[TimerSpec]) -> Result<()> {
    let mut names = std::collections::HashSet::new();
    for t in timers {
        t.check()?;
        if !names.insert(t.name()) {
            return Err(Error::config(
                format!("timer `{}`", t.name()),
                "two timers have this name; rename one",
            ));
        }
    }
    Ok(())
}

//! The `reset` command, rill's `faust reset` and Kafka Streams' application reset tool: moves
//! agents' consumer groups on their source topics to the earliest or latest offset, to a time,
//! or by N records, and with `--local-state` removes the agents' local table, window and join
//! state, on Kafka and on the embedded log.
//!
//! It refuses while a group has live members (Kafka) or a worker runs on the data dir (the
//! embedded log): offsets committed under a running consumer would be overwritten by its next
//! commit. Old and new offsets are printed per partition; `--dry-run` prints them only.
//!
//! Decisions: a partition the group never committed to shifts from the log start; a time
//! with no record at or after it resolves to the end (as Kafka's tool does); retry and
//! repartition groups are left alone (their records are rill's own, pending work). Local
//! state is this host's copy: a table whose state is removed is rebuilt from its changelog
//! at the next start, so the two never disagree; moving a group with tables backwards
//! reprocesses into that state (Kafka Streams' tool deletes the changelogs, which here is a
//! separate, deliberate step: delete the `<app>-<table>-changelog` topics by hand).

use std::io::Write;
use std::sync::Arc;

use crate::base::config::{Broker, Config};
use crate::base::error::{Error, Result};
use crate::io::store::TableStore;
use crate::io::transport::{Log, Tp};
use crate::wiring::agent::AgentSpec;
use crate::wiring::worker::lock;

/// Where the groups move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResetTo {
    /// The oldest record each partition still has.
    Earliest,
    /// The end: what was written so far is skipped.
    Latest,
    /// The first record at or after this time (ms since the epoch).
    Datetime(i64),
    /// The committed offset moved by N (negative: back), within the partition's records.
    ShiftBy(i64),
}

/// What `reset` does.
#[derive(Debug, Clone)]
pub(crate) struct ResetRequest {
    /// Agents to reset (all when empty).
    pub(crate) agents: Vec<String>,
    pub(crate) to: ResetTo,
    pub(crate) local_state: bool,
    pub(crate) dry_run: bool,
}

/// One partition's move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Move {
    pub(crate) tp: Tp,
    pub(crate) old: Option<i64>,
    pub(crate) new: i64,
}

/// Runs `request` for the agents of `specs`, printing to `out`.
pub(crate) fn run(
    specs: &[AgentSpec],
    config: &Config,
    transport: &Arc<dyn Log>,
    request: &ResetRequest,
    out: &mut dyn Write,
) -> Result<()> {
    let chosen = choose(specs, &request.agents)?;
    // Held until the end: no worker starts on the embedded log while offsets move.
    let _lock = match config.broker {
        Broker::Embedded if !request.dry_run => Some(lock::try_exclusive(config)?),
        _ => None,
    };
    // Every group is checked before any moves: a refusal leaves all of them as they were.
    if !request.dry_run {
        for spec in &chosen {
            refuse_live_members(transport.as_ref(), &spec.group_id(&config.app_id))?;
        }
    }
    let io = |e| Error::io("writing to stdout", e);
    writeln!(
        out,
        "{:<32} {:<32} {:>9} {:>12} {:>12}",
        "GROUP", "TOPIC", "PARTITION", "OLD", "NEW"
    )
    .map_err(io)?;
    for spec in &chosen {
        let group = spec.group_id(&config.app_id);
        let moves = plan(transport.as_ref(), spec, &group, request.to)?;
        for m in &moves {
            let old = m.old.map_or("-".to_owned(), |o| o.to_string());
            writeln!(
                out,
                "{group:<32} {:<32} {:>9} {old:>12} {:>12}",
                m.tp.0, m.tp.1, m.new
            )
            .map_err(io)?;
        }
        if !request.dry_run && !moves.is_empty() {
            let offsets: Vec<(Tp, i64)> = moves.into_iter().map(|m| (m.tp, m.new)).collect();
            transport.reset_offsets(&group, &offsets)?;
        }
    }
    if request.local_state {
        remove_local_state(config, specs, &chosen, request.dry_run, out)?;
    }
    if request.dry_run {
        writeln!(out, "dry run: nothing was changed").map_err(io)?;
    }
    Ok(())
}

/// The agents named (all when none), or an error naming the unknown one and the known ones.
fn choose<'a>(specs: &'a [AgentSpec], names: &[String]) -> Result<Vec<&'a AgentSpec>> {
    if names.is_empty() {
        return Ok(specs.iter().collect());
    }
    names
        .iter()
        .map(|name| {
            specs.iter().find(|s| s.name() == name).ok_or_else(|| {
                let known: Vec<&str> = specs.iter().map(AgentSpec::name).collect();
                Error::config(
                    "--agent",
                    format!("no agent `{name}`; the app's agents are {known:?}"),
                )
            })
        })
        .collect()
}

/// An error when the group has members: their next commit would undo the reset.
fn refuse_live_members(transport: &dyn Log, group: &str) -> Result<()> {
    let members = transport.group_members(group)?;
    if members.is_empty() {
        return Ok(());
    }
    let who: Vec<String> = members
        .iter()
        .map(|(web, _)| web.clone().unwrap_or_else(|| "no web address".to_owned()))
        .collect();
    Err(Error::config(
        "reset",
        format!(
            "consumer group `{group}` has {} live member(s) ({}); stop its workers first",
            members.len(),
            who.join(", ")
        ),
    ))
}

/// The move of every partition of the agent's source topics.
fn plan(transport: &dyn Log, spec: &AgentSpec, group: &str, to: ResetTo) -> Result<Vec<Move>> {
    let mut moves = Vec::new();
    for source in &spec.sources {
        let topic = source.name.as_str();
        let Some(partitions) = transport.partition_count(topic)? else {
            tracing::warn!(topic, "topic does not exist: nothing to reset");
            continue;
        };
        for partition in 0..partitions {
            let old = transport.committed(group, topic, partition)?;
            let (low, end) = transport.watermarks(topic, partition)?;
            let new = match to {
                ResetTo::Earliest => low,
                ResetTo::Latest => end,
                ResetTo::Datetime(ms) => transport.offset_for_time(topic, partition, ms)?,
                ResetTo::ShiftBy(n) => old.unwrap_or(low).saturating_add(n),
            };
            moves.push(Move {
                tp: (Arc::from(topic), partition),
                old,
                new: new.clamp(low, end),
            });
        }
    }
    Ok(moves)
}

/// The agent a stored table belongs to: the one declaring it, else the one whose name,
/// followed by `-`, is its longest prefix (window and join state are `<agent>-<operator>`).
fn owner<'a>(all: &'a [AgentSpec], table: &str) -> Option<&'a str> {
    if let Some(spec) = all
        .iter()
        .find(|s| s.tables().iter().any(|t| t.name == table))
    {
        return Some(spec.name());
    }
    all.iter()
        .map(AgentSpec::name)
        .filter(|name| {
            table
                .strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('-'))
        })
        .max_by_key(|name| name.len())
}

/// Removes this host's copy of the agents' tables and window and join state (tables named
/// `<agent>-<operator>`); each is rebuilt from its changelog at the next start.
fn remove_local_state(
    config: &Config,
    all: &[AgentSpec],
    agents: &[&AgentSpec],
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let store = TableStore::open(config, false)?;
    let stored = store.tables()?;
    let io = |e| Error::io("writing to stdout", e);
    for spec in agents {
        let owned = stored.iter().filter(|t| owner(all, t) == Some(spec.name()));
        for table in owned {
            let partitions = store.partitions(table)?;
            if !dry_run {
                for &p in &partitions {
                    store.clear(table, p)?;
                }
            }
            writeln!(
                out,
                "local state of `{table}` ({} partitions){}",
                partitions.len(),
                if dry_run {
                    " would be removed"
                } else {
                    " removed"
                }
            )
            .map_err(io)?;
        }
    }
    Ok(())
}

//! Standby replicas (`Config::standby_replicas`, Kafka Streams' `num.standby.replicas`, Faust's
//! `table_standby_replicas`): a worker keeps warm LMDB copies of the table partitions of other
//! workers (declared tables, and window and join state once the instances built it),
//! following their changelogs, so that when it takes one over, recovery replays only the tail.
//! One standby per consumer group: the source group's, and after a `group_by` the repartition
//! group's (`pipeline::repartition_standby`), which follows the state that moved there.
//!
//! Which worker keeps which partition warm follows from the group's assignment alone, so every
//! worker decides the same without talking to the others: the standbys of partition `p` are the
//! owners of `p+1`, `p+2`, ... (wrapping around) other than `p`'s owner, the first
//! `standby_replicas` distinct ones (with the `range` assignor's contiguous blocks, the next
//! worker's block). A worker finds itself in the group's member list by its assignment, so
//! a worker owning no partition keeps none warm. On the embedded log (one process) there is
//! nothing to keep warm.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::base::error::{Error, Result};
use crate::instance::table::recovery::Recovery;
use crate::io::transport::{Log, Router};
use crate::wiring::registry::Registry;

/// How often a standby looks at the assignment and catches up with the changelogs.
const INTERVAL: Duration = Duration::from_secs(1);

/// What one agent's standby follows.
pub(crate) struct Standby {
    pub(crate) agent: Arc<str>,
    pub(crate) group: Arc<str>,
    /// The agent's first source topic: its partition numbers are the tables' partitions.
    pub(crate) topic: String,
    pub(crate) replicas: usize,
    pub(crate) recovery: Arc<Recovery>,
    pub(crate) router: Arc<Router>,
    pub(crate) log: Arc<dyn Log>,
}

/// Whether workers keep standby replicas: `standby_replicas` > 0 on Kafka (on the embedded
/// log one process owns every partition).
pub(crate) fn wanted(replicas: usize, log: &dyn Log) -> bool {
    replicas > 0 && log.system() == "kafka"
}

impl Standby {
    /// Starts the standby's thread, joined at shutdown with the worker's other threads.
    pub(crate) fn start(self, stop: Arc<AtomicBool>, registry: &Registry) -> Result<()> {
        let thread = self.spawn(stop)?;
        registry.hold_thread(thread);
        Ok(())
    }

    /// Runs on a thread of its own until `stop`.
    fn spawn(self, stop: Arc<AtomicBool>) -> Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name(format!("rill-standby-{}", self.agent))
            .spawn(move || {
                let mut following = BTreeSet::new();
                while !stop.load(Ordering::Acquire) {
                    if let Err(e) = self.round(&mut following) {
                        tracing::warn!(agent = %self.agent, error = %e, "standby replicas: retrying");
                    }
                    std::thread::sleep(INTERVAL);
                }
            })
            .map_err(|e| Error::io("spawning a standby thread", e))
    }

    /// One look at the assignment, and a catch-up of every partition to keep warm.
    fn round(&self, following: &mut BTreeSet<i32>) -> Result<()> {
        if self.recovery.followed().is_empty() {
            // No table yet (window state appears when the agent function builds its window).
            return Ok(());
        }
        let members: Vec<Vec<i32>> = self
            .log
            .group_members(&self.group)?
            .into_iter()
            .map(|(_, tps)| self.numbers(tps.iter().map(|(t, p)| (t.as_str(), *p))))
            .collect();
        let mine = self.owned();
        let wanted = standby_partitions(&members, &mine, self.replicas);
        if wanted != *following {
            tracing::info!(agent = %self.agent, partitions = ?wanted, "standby replicas: keeping these table partitions warm");
            *following = wanted;
        }
        for &p in following.iter() {
            self.recovery.warm(p, || !self.owned().contains(&p))?;
        }
        Ok(())
    }

    /// The partitions this worker's consumer owns now.
    fn owned(&self) -> Vec<i32> {
        let assignment = self.router.current_assignment();
        self.numbers(assignment.iter().map(|(t, p)| (&**t, *p)))
    }

    fn numbers<'a>(&self, tps: impl Iterator<Item = (&'a str, i32)>) -> Vec<i32> {
        let mut out: Vec<i32> = tps
            .filter(|(t, _)| *t == self.topic)
            .map(|(_, p)| p)
            .collect();
        out.sort_unstable();
        out
    }
}

/// The partitions the member owning `mine` keeps warm, given every member's partitions: those
/// `p` whose next `replicas` distinct other owners, walking `p+1, p+2, ...`, include it.
pub(crate) fn standby_partitions(
    members: &[Vec<i32>],
    mine: &[i32],
    replicas: usize,
) -> BTreeSet<i32> {
    let mut owner = std::collections::BTreeMap::new();
    for (m, parts) in members.iter().enumerate() {
        for &p in parts {
            owner.insert(p, m);
        }
    }
    let Some(me) = members
        .iter()
        .position(|m| !mine.is_empty() && m.as_slice() == mine)
    else {
        return BTreeSet::new();
    };
    if replicas == 0 {
        return BTreeSet::new();
    }
    let ring: Vec<(i32, usize)> = owner.into_iter().collect();
    let mut out = BTreeSet::new();
    for (i, &(p, o)) in ring.iter().enumerate() {
        let mut standbys: Vec<usize> = Vec::new();
        for step in 1..ring.len() {
            let next = ring[(i + step) % ring.len()].1;
            if next != o && !standbys.contains(&next) {
                standbys.push(next);
                if standbys.len() == replicas {
                    break;
                }
            }
        }
        if standbys.contains(&me) {
            out.insert(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[i32]) -> BTreeSet<i32> {
        v.iter().copied().collect()
    }

    #[test]
    fn each_partition_gets_the_next_owners_as_standbys() {
        let members = vec![vec![0, 1], vec![2, 3], vec![4, 5]];
        assert_eq!(standby_partitions(&members, &[2, 3], 1), set(&[0, 1]));
        assert_eq!(standby_partitions(&members, &[0, 1], 1), set(&[4, 5]));
        assert_eq!(standby_partitions(&members, &[0, 1], 2), set(&[2, 3, 4, 5]));
        // More replicas than other members: every other member's partitions.
        assert_eq!(standby_partitions(&members, &[4, 5], 5), set(&[0, 1, 2, 3]));
        assert_eq!(standby_partitions(&members, &[4, 5], 0), set(&[]));
    }

    #[test]
    fn alone_or_owning_nothing_keeps_nothing_warm() {
        assert_eq!(
            standby_partitions(&[vec![0, 1, 2]], &[0, 1, 2], 1),
            set(&[])
        );
        let members = vec![vec![0, 1], vec![]];
        assert_eq!(standby_partitions(&members, &[], 1), set(&[]));
        // Every partition has exactly `replicas` standbys, none its owner.
        let members = vec![vec![0, 1, 2], vec![3, 4], vec![5, 6, 7]];
        let mut counts = std::collections::HashMap::new();
        for m in &members {
            for p in standby_partitions(&members, m, 2) {
                assert!(!m.contains(&p));
                *counts.entry(p).or_insert(0) += 1;
            }
        }
        assert!((0..8).all(|p| counts.get(&p) == Some(&2)), "{counts:?}");
    }
}

//! State that expires by its changelog's age instead of by tombstones (tumbling and hopping
//! windows, joins; docs/decisions.md, "Closed windows and expired join records leave no
//! tombstone"): what an operator and each of its partitions keep for it. The operator's
//! stored clock says below which time everything has expired (`ExpiredRanges`): recovery and
//! standbys delete those entries after a replayed clock, and a commit step that writes the
//! clock deletes them from the local copy (`instance::table::commit_writes`), a range at a
//! time rather than key by key. This module keeps the rest: whether expired entries go
//! without tombstones, and when the live ones must be written again so that none ages out of
//! the changelog.

use std::sync::Arc;

use crate::base::message::now_millis;
use crate::instance::table::ExpiredRanges;

/// A time as stored first in window and join keys: sign-flipped big-endian, so that LMDB
/// orders keys by time numerically.
pub(crate) fn time_bytes(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

/// The time [`time_bytes`] stored.
pub(crate) fn time_from(bytes: &[u8]) -> Option<i64> {
    let b: [u8; 8] = bytes.try_into().ok()?;
    Some((u64::from_be_bytes(b) ^ (1 << 63)) as i64)
}

/// How recovery and standbys tell the expired entries of a time-retained changelog: from a
/// replayed clock entry (under `clock`) with an `expired_below`, every entry under one of
/// `tags` whose time (stored first, after the tag) is before it. Windows and joins store
/// their clocks and entries this way.
pub(crate) struct ExpiredBefore {
    clock: &'static [u8],
    tags: &'static [u8],
}

impl ExpiredBefore {
    pub(crate) fn shared(clock: &'static [u8], tags: &'static [u8]) -> Arc<dyn ExpiredRanges> {
        Arc::new(ExpiredBefore { clock, tags })
    }
}

impl ExpiredRanges for ExpiredBefore {
    fn clock_key(&self) -> &[u8] {
        self.clock
    }

    fn expired_by(&self, key: &[u8], value: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        /// The one field of a stored clock read here (the others are ignored).
        #[derive(serde::Deserialize)]
        struct Clock {
            #[serde(default)]
            expired_below: Option<i64>,
        }
        if key != self.clock {
            return Vec::new();
        }
        let Some(below) = serde_json::from_slice::<Clock>(value)
            .ok()
            .and_then(|c| c.expired_below)
        else {
            return Vec::new();
        };
        // Times sort numerically after their tag: `[tag]` is below every entry of it.
        self.tags
            .iter()
            .map(|&tag| (vec![tag], [&[tag][..], &time_bytes(below)].concat()))
            .collect()
    }
}

/// What an operator knows of its changelog's time retention (`Stateful::expire_by_age`).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ChangelogAge {
    /// The changelog's time retention (ms), when it may drop entries by age: live entries are
    /// written again every quarter of it.
    retention: Option<i64>,
    /// It does: expired entries go without tombstones.
    quiet: bool,
}

impl ChangelogAge {
    /// `changelog`: its retention, and whether it is known to drop entries by age.
    pub(crate) fn new(changelog: Option<(i64, bool)>) -> Self {
        ChangelogAge {
            retention: changelog.map(|(retention, _)| retention),
            quiet: changelog.is_some_and(|(_, by_age)| by_age),
        }
    }

    pub(crate) fn quiet(self) -> bool {
        self.quiet
    }

    /// The wall clock (changelog records are stamped with it), read only when the retention
    /// matters.
    pub(crate) fn now(self) -> i64 {
        self.retention.map_or(0, |_| now_millis())
    }

    /// Whether a partition must write all its live entries again at wall-clock `now`.
    pub(crate) fn refresh_due(self, aging: &Aging, now: i64) -> bool {
        self.retention
            .is_some_and(|r| now.saturating_sub(aging.refreshed) >= r / 4)
    }

    /// When the partition's live entries were last written again, for its stored clock
    /// (`None` without a retention).
    pub(crate) fn refreshed(self, aging: &Aging) -> Option<i64> {
        self.retention.map(|_| aging.refreshed)
    }
}

/// A partition's part: whether its expired entries go without tombstones, and when its live
/// ones were last written again.
#[derive(Debug)]
pub(crate) struct Aging {
    /// Expired entries go without tombstones (the operator's [`ChangelogAge::quiet`]): the
    /// commit step that writes the partition's clock deletes them from the local copy.
    pub(crate) quiet: bool,
    /// When (wall clock, ms) every live entry was last written again (`i64::MIN`: never).
    pub(crate) refreshed: i64,
}

impl Aging {
    /// A partition with no state yet (nothing of it to write again).
    pub(crate) fn new(quiet: bool) -> Self {
        Aging {
            quiet,
            refreshed: now_millis(),
        }
    }

    /// The rewrite time a loaded clock recorded (none: write everything again at once).
    pub(crate) fn loaded(&mut self, refreshed: Option<i64>) {
        self.refreshed = refreshed.unwrap_or(i64::MIN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_entries_are_written_again_every_quarter_of_the_retention_and_only_with_one() {
        let age = ChangelogAge::new(Some((400, true)));
        let mut aging = Aging::new(age.quiet());
        let now = aging.refreshed;
        assert!(!age.refresh_due(&aging, now + 99));
        assert!(age.refresh_due(&aging, now + 100));
        assert_eq!(age.refreshed(&aging), Some(now));
        aging.loaded(None);
        assert!(
            age.refresh_due(&aging, now),
            "a clock without the time: at once"
        );
        let kept = ChangelogAge::new(None);
        assert!(!kept.refresh_due(&aging, now) && kept.refreshed(&aging).is_none());
        assert_eq!(kept.now(), 0, "no clock read");
    }
}

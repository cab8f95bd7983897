//! Watermarks across `group_by`. A repartition partition receives records from every source
//! partition a pump reads, interleaved in the order the pump happened to read them: during a
//! backlog, chunks minutes apart in event time. Taking the largest event time seen on the
//! repartition partition as its watermark would then drop most of a backlog as late. So each
//! pump stamps the records it forwards with its own watermark (the smallest of its source
//! partitions' largest event times, skipping idle ones), and a window reading a repartition
//! topic takes, per partition, the smallest watermark of the pumps writing to it. When its
//! source has nothing more to read for the moment, a pump whose watermark moved also sends a
//! marker (no key, no value, the header) to every repartition partition, so a partition its
//! recent records did not go to learns the watermark too, in order with what came before.
//! Streams consume markers themselves; agents never see them.

use std::collections::HashMap;

/// Header carrying `<pump id>:<watermark ms>` on repartitioned records.
pub(crate) const HEADER: &str = "rill.watermark";

/// A pump's view of its source partitions.
pub(crate) struct SourceClock {
    id: u64,
    /// Per source topic (by index, for a join's two sides) and partition: largest event time,
    /// clock time of its last record. Topics are tracked apart: during a backlog one topic's
    /// partition may be read far ahead of the other's.
    /// (foldhash: looked up for every owned partition on every record; SipHash showed.)
    partitions: HashMap<(usize, i32), (i64, i64), foldhash::fast::RandomState>,
    topics: usize,
    /// Clock time of the first record. With two topics (a join), a topic-partition not heard
    /// from yet counts as quiet since then, so it is idle only an idle timeout later: its
    /// partition number being read to its end says little while the other topic's records
    /// arrive there. With one topic, a partition read to its end without a record is idle
    /// at once.
    started: Option<i64>,
    watermark: i64,
    idle_timeout: i64,
    /// The watermark last sent to every partition.
    broadcast: i64,
}

impl SourceClock {
    /// A clock over `topics` source topics (1 for `group_by`, 2 for a join).
    pub(crate) fn new(idle_timeout: i64, topics: usize) -> Self {
        SourceClock {
            id: rand::random(),
            partitions: HashMap::default(),
            topics: topics.max(1),
            started: None,
            watermark: i64::MIN,
            idle_timeout,
            broadcast: i64::MIN,
        }
    }

    /// The header value to send to every partition, when the watermark moved since the last.
    pub(crate) fn take_broadcast(&mut self) -> Option<String> {
        (self.watermark > self.broadcast).then(|| {
            self.broadcast = self.watermark;
            format!("{:x}:{}", self.id, self.watermark)
        })
    }

    /// True when the watermark moved since the last broadcast.
    pub(crate) fn unsent(&self) -> bool {
        self.watermark > self.broadcast
    }

    /// Records an event of `partition` of source topic number `topic` and returns the header
    /// value to stamp it with. `owned` are the pump's source partitions, `caught_up` those
    /// read to their end.
    pub(crate) fn observe(
        &mut self,
        topic: usize,
        partition: i32,
        time: i64,
        now: i64,
        owned: &[i32],
        caught_up: &std::collections::HashSet<i32>,
    ) -> String {
        let entry = self
            .partitions
            .entry((topic, partition))
            .or_insert((i64::MIN, now));
        entry.0 = entry.0.max(time);
        entry.1 = now;
        let started = *self.started.get_or_insert(now);
        let mut low: Option<i64> = None;
        for p in owned {
            for t in 0..self.topics {
                let (max, last) = self
                    .partitions
                    .get(&(t, *p))
                    .copied()
                    .unwrap_or((i64::MIN, if self.topics > 1 { started } else { i64::MIN }));
                let idle = caught_up.contains(p) && now.saturating_sub(last) >= self.idle_timeout;
                if !idle {
                    low = Some(low.map_or(max, |l: i64| l.min(max)));
                }
            }
        }
        let computed = low.unwrap_or_else(|| {
            self.partitions
                .values()
                .map(|(max, _)| *max)
                .max()
                .unwrap_or(i64::MIN)
        });
        self.watermark = self.watermark.max(computed);
        format!("{:x}:{}", self.id, self.watermark)
    }
}

/// True for a watermark marker (not a record).
pub(crate) fn is_marker(record: &crate::base::message::RawRecord) -> bool {
    record.value.is_none() && record.headers.get(HEADER).is_some()
}

/// Parses a [`HEADER`] value.
pub(crate) fn parse(value: &[u8]) -> Option<(u64, i64)> {
    let text = std::str::from_utf8(value).ok()?;
    let (id, wm) = text.split_once(':')?;
    Some((u64::from_str_radix(id, 16).ok()?, wm.parse().ok()?))
}

/// The pumps writing to one repartition partition: their latest watermarks, and when each
/// was last heard from.
#[derive(Debug, Default)]
pub(crate) struct Upstream {
    pumps: HashMap<u64, (i64, i64), foldhash::fast::RandomState>,
    /// After a restart: the slowest stored pump watermark, followed until a pump is heard
    /// (the pumps that wrote it are gone; new ones start from the committed offsets).
    restored: Option<i64>,
}

impl Upstream {
    /// A pump's watermark heard at clock time `now`; true when the partition's watermark may
    /// have moved (a pump not heard from before, a higher watermark, the first heard after a
    /// restart).
    pub(crate) fn heard(&mut self, pump: u64, watermark: i64, now: i64) -> bool {
        let mut moved = self.restored.take().is_some();
        match self.pumps.entry(pump) {
            std::collections::hash_map::Entry::Occupied(mut entry) => {
                let (wm, last) = entry.get_mut();
                moved |= watermark > *wm;
                *wm = (*wm).max(watermark);
                *last = now;
            }
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert((watermark, now));
                moved = true;
            }
        }
        moved
    }

    /// True when the partition follows pumps (heard from, or restored): its own largest event
    /// time is not its watermark then.
    pub(crate) fn follows(&self) -> bool {
        !self.pumps.is_empty() || self.restored.is_some()
    }

    /// The earliest clock time after `now` at which a pump still followed will have been quiet
    /// for `idle_timeout` (and stops counting).
    pub(crate) fn next_quiet(&self, now: i64, idle_timeout: i64) -> Option<i64> {
        self.pumps
            .values()
            .map(|(_, last)| last.saturating_add(idle_timeout))
            .filter(|at| *at > now)
            .min()
    }

    /// The pumps' watermarks, to store with the partition's clock.
    pub(crate) fn snapshot(&self) -> Vec<(u64, i64)> {
        if self.pumps.is_empty() {
            return self.restored.map(|wm| vec![(0, wm)]).unwrap_or_default();
        }
        self.pumps.iter().map(|(id, (wm, _))| (*id, *wm)).collect()
    }

    /// Restores stored watermarks (see `restored`).
    pub(crate) fn restore(&mut self, pumps: Vec<(u64, i64)>) {
        self.restored = pumps.iter().map(|(_, wm)| *wm).min();
    }

    /// The smallest watermark of the pumps heard from within `idle_timeout`; `None` when there
    /// are none (the partition is not fed by a pump, or they all went quiet).
    pub(crate) fn watermark(&mut self, now: i64, idle_timeout: i64) -> Option<i64> {
        if self.pumps.is_empty() {
            return self.restored;
        }
        self.pumps
            .retain(|_, (_, last)| now.saturating_sub(*last) < idle_timeout);
        self.pumps.values().map(|(wm, _)| *wm).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pump_stamps_the_slowest_of_its_partitions() {
        let mut clock = SourceClock::new(1_000, 1);
        let none = std::collections::HashSet::new();
        let stamp = |c: &mut SourceClock, p, t| {
            parse(c.observe(0, p, t, 0, &[0, 1], &none).as_bytes())
                .unwrap()
                .1
        };
        assert_eq!(
            stamp(&mut clock, 0, 100),
            i64::MIN,
            "partition 1 not heard from"
        );
        assert_eq!(stamp(&mut clock, 1, 40), 40);
        assert_eq!(stamp(&mut clock, 0, 300), 40);
        assert_eq!(stamp(&mut clock, 1, 250), 250);
        // Never goes back.
        assert_eq!(stamp(&mut clock, 1, 10), 250);
    }

    #[test]
    fn a_join_pump_holds_its_watermark_to_the_slower_topic() {
        let mut clock = SourceClock::new(1_000, 2);
        let none = std::collections::HashSet::new();
        let mut stamp = |topic, t| {
            parse(clock.observe(topic, 0, t, 0, &[0], &none).as_bytes())
                .unwrap()
                .1
        };
        // Views read far ahead of clicks on the same partition number.
        assert_eq!(stamp(0, 100), i64::MIN, "no click read yet");
        assert_eq!(stamp(0, 400), i64::MIN);
        assert_eq!(stamp(1, 101), 101);
        assert_eq!(stamp(1, 250), 250);
        assert_eq!(stamp(0, 410), 250);
    }

    #[test]
    fn a_partition_takes_the_slowest_pump_that_is_still_writing() {
        let mut up = Upstream::default();
        up.heard(1, 500, 0);
        up.heard(2, 200, 0);
        assert_eq!(up.watermark(10, 1_000), Some(200));
        up.heard(1, 900, 1_500);
        // Pump 2 quiet for the idle timeout: pump 1 alone.
        assert_eq!(up.watermark(1_500, 1_000), Some(900));
        assert_eq!(up.watermark(5_000, 1_000), None);
    }
}

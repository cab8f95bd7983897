//! Event-time alignment of an agent's reads across its topics: a partition is not read further
//! while the last record handed from it is more than the read-ahead ahead, in event time, of
//! the slowest partition still being read (Kafka Streams keeps a task's topics in step the same
//! way, handing out the record with the smallest timestamp among its partitions' heads). A join
//! over two backlogs then holds about `window + read-ahead` of records, not the backlog one
//! topic was read ahead of the other.
//!
//! The fetchers ask [`Aligner::hold`] after handing records out: the Kafka fetcher pauses such
//! a partition (resuming at the offset after its last record handed), the embedded log's skips
//! it. A partition read to its end holds no one back. One not read yet since the assignment
//! holds every other back until its first records come (Kafka may deliver a whole topic before
//! the first fetch of the other), for at most [`FIRST_RECORD_WAIT`] (Kafka Streams'
//! `max.task.idle.ms`). Otherwise the partition with the smallest head is never held, so
//! reading always goes on.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use super::Tp;

/// How long after an assignment a partition that has not delivered a record yet holds the
/// others back.
pub(crate) const FIRST_RECORD_WAIT: Duration = Duration::from_secs(10);

/// Whether one topic's partitions are read in step: an agent's windows and joins ask for it
/// (their watermark is the smallest over the instance's partitions); other readers never do.
///
/// It starts undecided for an agent, whose function builds its windows before it first asks
/// for a record: the Kafka fetcher of a one-topic agent waits for that (at most
/// [`DECISION_WAIT`]) before creating its consumer, so that a consumer holding partitions in
/// step gets the small prefetch such a consumer needs (`kafka::client::prefetch_defaults`).
pub(crate) struct ReadMode(AtomicU8);

const UNDECIDED: u8 = 0;
const INDEPENDENT: u8 = 1;
const IN_STEP: u8 = 2;

/// How long a one-topic agent's Kafka fetcher waits for its agent to decide (an agent
/// function that awaits something else first gets an independent reading's consumer, and
/// still reads in step once it asks to).
pub(crate) const DECISION_WAIT: Duration = Duration::from_secs(2);

impl ReadMode {
    /// Decided: independent partitions, until [`ReadMode::read_in_step`] is asked for.
    pub(crate) fn independent() -> Self {
        ReadMode(AtomicU8::new(INDEPENDENT))
    }

    /// Decided by the agent: at its first window or join, or its first read without one.
    pub(crate) fn undecided() -> Self {
        ReadMode(AtomicU8::new(UNDECIDED))
    }

    /// A window or join is hosted: read in step from now on.
    pub(crate) fn read_in_step(&self) {
        self.0.store(IN_STEP, Ordering::Relaxed);
    }

    /// The agent asks for records: without a window or join by now, it reads independently.
    pub(crate) fn reading(&self) {
        let _ =
            self.0
                .compare_exchange(UNDECIDED, INDEPENDENT, Ordering::Relaxed, Ordering::Relaxed);
    }

    pub(crate) fn is_in_step(&self) -> bool {
        self.0.load(Ordering::Relaxed) == IN_STEP
    }

    /// Waits (blocking the fetcher thread) until decided, `wait` has passed or `stop`;
    /// returns whether the partitions are to be read in step.
    pub(crate) fn decided_in_step(
        &self,
        wait: Duration,
        stop: &std::sync::atomic::AtomicBool,
    ) -> bool {
        let since = Instant::now();
        while self.0.load(Ordering::Relaxed) == UNDECIDED
            && since.elapsed() < wait
            && !stop.load(Ordering::Acquire)
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        self.is_in_step()
    }
}

/// Where each partition stands, and which are held.
pub(crate) struct Aligner {
    /// How far ahead (ms of event time) a partition may be read; `None`: no alignment.
    read_ahead: Option<i64>,
    /// Partitions of one topic are held in step only once this says so (`Router::read_mode`:
    /// the agent hosts a window or join); several topics always are.
    in_step: Option<Arc<ReadMode>>,
    /// Per partition: the timestamp and offset of the last record handed out.
    heads: HashMap<Tp, (i64, i64)>,
    /// The run of records of one partition being handed out (a fetch hands out runs of one
    /// partition): its largest timestamp and last offset, added to `heads` when the run ends
    /// or heads are read, so that a record costs no map lookup.
    run: Option<(Tp, i64, i64)>,
    held: HashSet<Tp>,
    /// The partitions of the assignment, and when it came.
    assigned: Vec<Tp>,
    since: Option<Instant>,
}

impl Aligner {
    /// Alignment by `read_ahead` for a fetch over `topics` topics; none without a read-ahead.
    /// One topic's partitions are independent (as Kafka Streams' tasks are) until `mode`
    /// says in step: a window's or join's watermark is the smallest over the instance's
    /// partitions, so one partition read minutes ahead of another keeps minutes of its windows
    /// open.
    pub(crate) fn new(read_ahead: Option<Duration>, topics: usize, mode: &Arc<ReadMode>) -> Self {
        let read_ahead = read_ahead.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Aligner {
            read_ahead,
            in_step: (topics < 2).then(|| mode.clone()),
            heads: HashMap::new(),
            run: None,
            held: HashSet::new(),
            assigned: Vec::new(),
            since: None,
        }
    }

    /// Whether partitions may be held (now).
    pub(crate) fn enabled(&self) -> bool {
        self.limit().is_some()
    }

    /// The read-ahead while alignment is on.
    fn limit(&self) -> Option<i64> {
        let on = self.in_step.as_ref().is_none_or(|m| m.is_in_step());
        self.read_ahead.filter(|_| on)
    }

    /// A new assignment (`assigned`) or a re-read: every partition starts afresh; returns the
    /// partitions held (the Kafka fetcher resumes those it still owns).
    pub(crate) fn reset(&mut self, assigned: &[Tp]) -> Vec<Tp> {
        self.heads.clear();
        self.run = None;
        self.assigned = assigned.to_vec();
        self.since = Some(Instant::now());
        self.held.drain().collect()
    }

    /// Notes a record of `tp` handed out.
    pub(crate) fn handed(&mut self, tp: &Tp, timestamp: Option<i64>, offset: i64) {
        if !self.enabled() {
            return;
        }
        let time = timestamp.unwrap_or(i64::MIN);
        match &mut self.run {
            Some((run, newest, last))
                if run.1 == tp.1 && (Arc::ptr_eq(&run.0, &tp.0) || run.0 == tp.0) =>
            {
                *newest = (*newest).max(time);
                *last = offset;
            }
            _ => {
                self.end_run();
                self.run = Some((tp.clone(), time, offset));
            }
        }
    }

    /// Adds the current run to the heads.
    fn end_run(&mut self) {
        if let Some((tp, time, offset)) = self.run.take() {
            match self.heads.get_mut(&tp) {
                Some(head) => *head = (head.0.max(time), offset),
                None => {
                    self.heads.insert(tp, (time, offset));
                }
            }
        }
    }

    /// The smallest head among the partitions other than `tp` that are still being read (not
    /// at their end); `i64::MIN` while one of them has not delivered its first record.
    fn floor(&self, tp: &Tp, at_end: &HashSet<Tp>) -> Option<i64> {
        let first_records_due = self.since.is_some_and(|t| t.elapsed() < FIRST_RECORD_WAIT)
            && self.assigned.iter().any(|other| {
                other != tp && !at_end.contains(other) && !self.heads.contains_key(other)
            });
        if first_records_due {
            return Some(i64::MIN);
        }
        self.heads
            .iter()
            .filter(|(other, _)| *other != tp && !at_end.contains(*other))
            .map(|(_, (time, _))| *time)
            .min()
    }

    fn is_ahead(&self, tp: &Tp, at_end: &HashSet<Tp>) -> bool {
        let (Some(read_ahead), Some((head, _))) = (self.limit(), self.heads.get(tp)) else {
            return false;
        };
        self.floor(tp, at_end)
            .is_some_and(|floor| *head > floor.saturating_add(read_ahead))
    }

    /// Partitions to hold from now on, with the offset to resume each at; they are held
    /// until [`Aligner::release`] lets them go.
    pub(crate) fn hold(&mut self, at_end: &HashSet<Tp>) -> Vec<(Tp, i64)> {
        if !self.enabled() {
            return Vec::new();
        }
        self.end_run();
        let ahead: Vec<(Tp, i64)> = self
            .heads
            .iter()
            .filter(|(tp, _)| !self.held.contains(*tp) && self.is_ahead(tp, at_end))
            .map(|(tp, (_, offset))| (tp.clone(), offset + 1))
            .collect();
        self.held.extend(ahead.iter().map(|(tp, _)| tp.clone()));
        ahead
    }

    /// Held partitions the others have caught up with (or that none holds back any more).
    pub(crate) fn release(&mut self, at_end: &HashSet<Tp>) -> Vec<Tp> {
        self.end_run();
        let free: Vec<Tp> = self
            .held
            .iter()
            .filter(|tp| !self.is_ahead(tp, at_end))
            .cloned()
            .collect();
        for tp in &free {
            self.held.remove(tp);
        }
        free
    }

    /// Whether `tp` is held now.
    pub(crate) fn is_held(&self, tp: &Tp) -> bool {
        self.held.contains(tp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    fn tp(topic: &str, p: i32) -> Tp {
        (std::sync::Arc::from(topic), p)
    }

    #[test]
    fn a_topic_read_ahead_is_held_until_the_other_catches_up() {
        let mut a = Aligner::new(
            Some(Duration::from_millis(100)),
            2,
            &Arc::new(ReadMode::independent()),
        );
        let (views, clicks) = (tp("views", 0), tp("clicks", 0));
        let none = HashSet::new();
        a.reset(&[views.clone(), clicks.clone()]);
        a.handed(&views, Some(1_000), 9);
        // Clicks have not delivered their first record: views wait for them.
        assert_eq!(a.hold(&none), vec![(views.clone(), 10)]);
        assert!(a.is_held(&views));
        a.handed(&clicks, Some(50), 3);
        assert!(a.release(&none).is_empty(), "views are 950 ms ahead");
        a.handed(&clicks, Some(850), 4);
        assert!(a.release(&none).is_empty(), "still 150 ms ahead");
        a.handed(&clicks, Some(900), 5);
        assert_eq!(a.release(&none), vec![views.clone()]);
        // Clicks at their end hold no one back.
        a.handed(&views, Some(5_000), 20);
        let ended: HashSet<Tp> = [clicks.clone()].into();
        assert!(a.hold(&ended).is_empty());
    }

    #[test]
    fn the_slowest_partition_is_never_held_and_one_topic_is_not_aligned() {
        let mut a = Aligner::new(Some(Duration::ZERO), 2, &Arc::new(ReadMode::independent()));
        let none = HashSet::new();
        a.reset(&[tp("t", 0), tp("t", 1), tp("t", 2)]);
        for (i, t) in [500, 100, 300].into_iter().enumerate() {
            a.handed(&tp("t", i as i32), Some(t), 0);
        }
        let held: HashSet<Tp> = a.hold(&none).into_iter().map(|(tp, _)| tp).collect();
        assert_eq!(held, [tp("t", 0), tp("t", 2)].into());
        assert!(!a.is_held(&tp("t", 1)));
        let in_step = Arc::new(ReadMode::undecided());
        let mut single = Aligner::new(Some(Duration::ZERO), 1, &in_step);
        single.handed(&tp("t", 0), Some(500), 0);
        single.handed(&tp("t", 1), Some(100), 0);
        assert!(!single.enabled() && single.hold(&none).is_empty());
        // A window or join hosted by the agent: one topic's partitions are read in step too.
        in_step.read_in_step();
        single.handed(&tp("t", 0), Some(500), 0);
        single.handed(&tp("t", 1), Some(100), 0);
        assert!(single.enabled());
        assert_eq!(single.hold(&none), vec![(tp("t", 0), 1)]);
        assert!(Aligner::new(None, 1, &in_step).hold(&none).is_empty());
    }

    #[test]
    fn an_agent_decides_at_its_first_window_or_its_first_read() {
        let stop = AtomicBool::new(false);
        let wait = Duration::from_secs(30);
        // A window built before the first read: in step, and a later read changes nothing.
        let windowed = ReadMode::undecided();
        windowed.read_in_step();
        windowed.reading();
        assert!(windowed.decided_in_step(wait, &stop));
        // The first read without a window: independent, until a window asks (it still may).
        let plain = ReadMode::undecided();
        plain.reading();
        assert!(!plain.decided_in_step(wait, &stop));
        plain.read_in_step();
        assert!(plain.is_in_step());
        // Decided on another thread while the fetcher waits.
        let mode = Arc::new(ReadMode::undecided());
        let agent = {
            let mode = mode.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                mode.read_in_step();
            })
        };
        assert!(mode.decided_in_step(wait, &stop));
        agent.join().unwrap();
        // Never decided: independent once the wait is over, or at once when stopping.
        let silent = ReadMode::undecided();
        assert!(!silent.decided_in_step(Duration::from_millis(20), &stop));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(!silent.decided_in_step(wait, &stop));
    }
}

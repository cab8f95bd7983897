//! Where the machine's CPU went during a latency run's measured period: the program's, the
//! suite's own (load generator and consumer), and the rest (the broker, mostly). The program,
//! the broker and the suite share the machine; a latency figure taken while they need every
//! core measures the machine's queueing, not only the program's, so each run says how busy
//! the machine was.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{TICKS_PER_S, now_ms, sample};

/// Cores busy on average over the measured period (`/proc/stat` and the processes' own
/// user + system time).
#[derive(Serialize, Clone, Copy, Debug, PartialEq)]
pub(crate) struct CpuShare {
    /// The machine's cores (`/proc/stat`'s, which `busy` counts over).
    pub cores: usize,
    /// Cores busy in all (every process and the kernel).
    pub busy: f64,
    /// The measured program's.
    pub program: f64,
    /// The suite's own process: the load generator and the consumer that times the outputs.
    pub suite: f64,
}

impl CpuShare {
    /// What neither the program nor the suite used: the broker, mostly.
    pub(crate) fn rest(&self) -> f64 {
        (self.busy - self.program - self.suite).max(0.0)
    }
}

/// The counters at one moment.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Mark {
    at: Instant,
    /// `/proc/stat`'s busy ticks over all its cores.
    busy_ticks: u64,
    cores: usize,
    program_ticks: u64,
    suite_ticks: u64,
}

fn mark(program: u32) -> Option<Mark> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    Some(Mark {
        at: Instant::now(),
        busy_ticks: busy_ticks(stat.lines().next()?)?,
        cores: stat
            .lines()
            .filter(|l| {
                l.strip_prefix("cpu")
                    .is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit()))
            })
            .count(),
        program_ticks: sample(program)?.cpu_ticks,
        suite_ticks: sample(std::process::id())?.cpu_ticks,
    })
}

/// The busy ticks of `/proc/stat`'s `cpu` line: user, nice, system, irq, softirq and steal
/// (not idle or iowait; guest time is counted in user already).
fn busy_ticks(cpu_line: &str) -> Option<u64> {
    let fields: Vec<u64> = cpu_line
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let field = |i: usize| fields.get(i).copied().unwrap_or(0);
    Some(field(0) + field(1) + field(2) + field(5) + field(6) + field(7))
}

fn between(a: Mark, b: Mark) -> Option<CpuShare> {
    let seconds = b.at.duration_since(a.at).as_secs_f64();
    if seconds <= 0.0 {
        return None;
    }
    let cores = |ticks: u64| ticks as f64 / TICKS_PER_S / seconds;
    Some(CpuShare {
        cores: b.cores,
        busy: cores(b.busy_ticks.checked_sub(a.busy_ticks)?),
        program: cores(b.program_ticks.checked_sub(a.program_ticks)?),
        suite: cores(b.suite_ticks.checked_sub(a.suite_ticks)?),
    })
}

/// Measures from `from` to `until` (wall-clock ms) on a thread of its own; `program` holds
/// the program's pid once it has started (0 before). `None` when a process or `/proc` could
/// not be read.
pub(crate) fn measure(
    program: Arc<AtomicU32>,
    from: i64,
    until: i64,
) -> std::thread::JoinHandle<Option<CpuShare>> {
    std::thread::spawn(move || {
        let sleep_until = |ms: i64| {
            let left = ms - now_ms();
            if left > 0 {
                std::thread::sleep(Duration::from_millis(left.unsigned_abs()));
            }
        };
        sleep_until(from);
        let pid = program.load(Ordering::Relaxed);
        let a = mark(pid)?;
        sleep_until(until);
        between(a, mark(pid)?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_ticks_leave_out_idle_and_iowait() {
        // user nice system idle iowait irq softirq steal guest guest_nice
        let line = "cpu  100 2 30 5000 40 5 6 7 0 0";
        assert_eq!(busy_ticks(line), Some(100 + 2 + 30 + 5 + 6 + 7));
        assert_eq!(
            busy_ticks("cpu0 1 2 3 4"),
            None,
            "per-core lines are not the sum"
        );
        assert_eq!(busy_ticks("cpu  1 x 3"), None);
    }

    #[test]
    fn shares_are_cores_over_the_period_and_the_rest_is_what_is_left() {
        let at = Instant::now();
        let a = Mark {
            at,
            busy_ticks: 1_000,
            cores: 2,
            program_ticks: 500,
            suite_ticks: 100,
        };
        let b = Mark {
            at: at + Duration::from_secs(10),
            busy_ticks: 1_000 + 1_900,
            cores: 2,
            program_ticks: 500 + 1_000,
            suite_ticks: 100 + 600,
        };
        let share = between(a, b).expect("a period");
        assert!((share.busy - 1.9).abs() < 1e-9);
        assert!((share.program - 1.0).abs() < 1e-9);
        assert!((share.suite - 0.6).abs() < 1e-9);
        assert!((share.rest() - 0.3).abs() < 1e-9);
        assert_eq!(share.cores, 2);
        assert_eq!(between(b, a), None, "counters never go back");
    }
}

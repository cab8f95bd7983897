//! When a latency run produced each view, for timing `keyed-count`'s changelog: a record
//! (URL, n) carries the count of the n-th view of that URL, and the URLs follow `view`'s
//! scheme, so the view it counts is found by arithmetic instead of a map the load generator
//! and the suite's consumer share under a lock (that map cost the generator a fifth of its
//! CPU at 250k views/s, on a machine it shares with the broker and the program measured).

use std::sync::atomic::{AtomicI64, Ordering};

/// Production times (ms since the epoch) of a latency run's views, by index.
pub(crate) struct ViewTimes {
    times: Vec<AtomicI64>,
    keys: u64,
}

impl ViewTimes {
    /// Room for `views` views of a run over `keys` URLs.
    pub(crate) fn new(views: u64, keys: u64) -> Self {
        let n = usize::try_from(views).unwrap_or(usize::MAX);
        Self {
            times: (0..n).map(|_| AtomicI64::new(0)).collect(),
            keys,
        }
    }

    /// View `i` was produced at `t`.
    pub(crate) fn produced(&self, i: u64, t: i64) {
        if let Some(slot) = usize::try_from(i).ok().and_then(|i| self.times.get(i)) {
            slot.store(t, Ordering::Relaxed);
        }
    }

    /// The views produced, as (index, time).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, i64)> + '_ {
        self.times.iter().enumerate().filter_map(|(i, t)| {
            let t = t.load(Ordering::Relaxed);
            (t > 0).then_some((i as u64, t))
        })
    }

    /// When the view that the count `n` of `url` counts was produced, if it was.
    pub(crate) fn of_count(&self, url: &str, n: u64) -> Option<i64> {
        let i = nth_view(url, n, self.keys)?;
        let t = self
            .times
            .get(usize::try_from(i).ok()?)?
            .load(Ordering::Relaxed);
        (t > 0).then_some(t)
    }
}

/// The index of the `n`-th view (from 1) that `view(i, keys)` gives `url`: every tenth view
/// (`i % 10 == 9`) is `/health/{i % 100}`, the others `/p/{i % keys}`.
pub(crate) fn nth_view(url: &str, n: u64, keys: u64) -> Option<u64> {
    let before = n.checked_sub(1)?;
    if let Some(h) = url.strip_prefix("/health/") {
        let h: u64 = h.parse().ok()?;
        return (h < 100 && h % 10 == 9).then(|| h + before * 100);
    }
    let k: u64 = url.strip_prefix("/p/")?.parse().ok()?;
    if k >= keys {
        return None;
    }
    // Views of `/p/k` are at i = k + j * keys for the j whose i is not a health view; which
    // j those are repeats every `period` steps of j.
    let period = 10 / gcd(keys, 10);
    let kept: Vec<u64> = (0..period).filter(|j| (k + j * keys) % 10 != 9).collect();
    let per_period = kept.len() as u64;
    if per_period == 0 {
        return None;
    }
    let j = before / per_period * period + kept[usize::try_from(before % per_period).ok()?];
    Some(k + j * keys)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Against counting `view`'s URLs one by one, for key counts that do and do not divide
    /// by ten.
    #[test]
    fn the_nth_view_of_a_url_is_the_one_view_gives_it() {
        for keys in [1, 3, 7, 10, 13, 25, 100, 250] {
            let mut seen: HashMap<String, u64> = HashMap::new();
            for i in 0..5_000 {
                let url = super::super::view(i, keys).url;
                let n = seen.entry(url.clone()).or_default();
                *n += 1;
                assert_eq!(nth_view(&url, *n, keys), Some(i), "keys {keys}, {url} #{n}");
            }
        }
        assert_eq!(nth_view("/p/5", 0, 10), None);
        assert_eq!(nth_view("/p/10", 1, 10), None);
        assert_eq!(nth_view("/health/3", 1, 10), None);
        assert_eq!(nth_view("/elsewhere", 1, 10), None);
    }

    #[test]
    fn a_count_of_a_view_not_yet_produced_has_no_time() {
        let times = ViewTimes::new(30, 10);
        times.produced(13, 1_000);
        assert_eq!(times.of_count("/p/3", 2), Some(1_000));
        assert_eq!(times.of_count("/p/3", 1), None);
        assert_eq!(times.of_count("/p/3", 9), None);
    }
}

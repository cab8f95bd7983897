//! The worker's clock. Event time comes from records; this clock only measures how long a
//! partition has been idle (so an idle partition stops holding windows open) and answers a
//! windowed table's `now()`. Tests swap it for a virtual clock they move by hand, so window
//! tests never sleep.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use tokio::sync::watch;

use crate::base::message::now_millis;

/// Wall-clock time for the worker, or a virtual clock a test advances.
#[derive(Clone, Default)]
pub enum Clock {
    /// The system clock.
    #[default]
    System,
    /// A clock that moves only when told to (the test harness's).
    Virtual(Arc<VirtualClock>),
}

/// A clock a test moves by hand, plus a watermark floor the test can raise.
pub struct VirtualClock {
    now: AtomicI64,
    floor: AtomicI64,
    changed: watch::Sender<u64>,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Clock::System => f.write_str("System"),
            Clock::Virtual(v) => write!(f, "Virtual({} ms)", v.now.load(Ordering::Relaxed)),
        }
    }
}

impl Clock {
    /// A virtual clock starting at the current wall-clock time.
    pub fn virtual_now() -> Self {
        Clock::Virtual(Arc::new(VirtualClock {
            now: AtomicI64::new(now_millis()),
            floor: AtomicI64::new(i64::MIN),
            changed: watch::channel(0).0,
        }))
    }

    /// Milliseconds since the epoch.
    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => now_millis(),
            Clock::Virtual(v) => v.now.load(Ordering::Acquire),
        }
    }

    /// The lowest watermark a test has forced (`i64::MIN` when none).
    pub(crate) fn watermark_floor(&self) -> i64 {
        match self {
            Clock::System => i64::MIN,
            Clock::Virtual(v) => v.floor.load(Ordering::Acquire),
        }
    }

    /// A receiver that changes whenever a virtual clock moves (`None` for the system clock).
    pub(crate) fn subscribe(&self) -> Option<watch::Receiver<u64>> {
        match self {
            Clock::System => None,
            Clock::Virtual(v) => Some(v.changed.subscribe()),
        }
    }
}

impl VirtualClock {
    /// Moves the clock forward.
    pub fn advance(&self, by: std::time::Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.now.fetch_add(ms, Ordering::AcqRel);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Raises every window's watermark to at least `ms` (event time, milliseconds).
    pub fn advance_watermark(&self, ms: i64) {
        self.floor.fetch_max(ms, Ordering::AcqRel);
        self.changed.send_modify(|n| *n += 1);
    }
}

/// Parses a moment given on the command line, as ms since the epoch: a number of ms, an age
/// back from now (`30s`, `15m`, `2h`, `1d`), or an RFC 3339 time (`2026-12-01T08:00:00Z`,
/// `2026-12-01T09:00:00.5+01:00`) or date (`2026-12-01`, midnight UTC).
pub(crate) fn parse_instant(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    parse_age(text)
        .map(|age| now_millis().saturating_sub(age))
        .or_else(|| parse_rfc3339(text))
}

fn parse_age(text: &str) -> Option<i64> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let unit: i64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.parse::<i64>().ok()?.checked_mul(unit)
}

fn parse_rfc3339(text: &str) -> Option<i64> {
    let num = |s: &str| -> Option<i64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
    };
    let (date, time) = match text.split_once(['T', 't', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (text, None),
    };
    let mut ymd = date.splitn(3, '-');
    let (y, m, d) = (num(ymd.next()?)?, num(ymd.next()?)?, num(ymd.next()?)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let day_ms = days_from_civil(y, m, d) * 86_400_000;
    let Some(time) = time else {
        return Some(day_ms);
    };
    let zone_at = time.find(['Z', 'z', '+', '-'])?;
    let (clock, zone) = time.split_at(zone_at);
    let offset_ms = match zone {
        "Z" | "z" => 0,
        _ => {
            let (h, m) = zone[1..].split_once(':')?;
            let minutes = num(h)? * 60 + num(m)?;
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            sign * minutes * 60_000
        }
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut parts = hms.splitn(3, ':');
    let (h, mi, s) = (
        num(parts.next()?)?,
        num(parts.next()?)?,
        num(parts.next()?)?,
    );
    if h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let millis = if frac.is_empty() {
        0
    } else {
        num(&format!("{frac:0<3}")[..3])?
    };
    Some(day_ms + ((h * 60 + mi) * 60 + s) * 1_000 + millis - offset_ms)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_parse_as_ms_ages_and_rfc3339() {
        assert_eq!(parse_instant("1700000000000"), Some(1_700_000_000_000));
        assert_eq!(parse_instant("1970-01-01"), Some(0));
        assert_eq!(
            parse_instant("2026-12-04T12:00:00Z"),
            Some(1_796_385_600_000)
        );
        assert_eq!(
            parse_instant("2026-12-04T13:00:00.250+01:00"),
            Some(1_796_385_600_250)
        );
        assert_eq!(
            parse_instant("2000-02-29T00:00:00-00:30"),
            Some(951_784_200_000)
        );
        let two_hours_ago = parse_instant("2h").unwrap();
        assert!((now_millis() - two_hours_ago - 7_200_000).abs() < 5_000);
        for bad in [
            "yesterday",
            "2026-13-01",
            "2026-12-04T25:00:00Z",
            "2026-12-04T12:00:00",
            "5x",
        ] {
            assert_eq!(parse_instant(bad), None, "{bad}");
        }
    }
}

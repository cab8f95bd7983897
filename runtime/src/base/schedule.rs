//! When timers run: a fixed interval, or a cron expression in a time zone. Pure: given the
//! time of the previous run and now (ms since the epoch), the next time to run.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};

use crate::base::error::{Error, Result};

/// When a timer runs.
#[derive(Clone)]
pub enum Schedule {
    /// Every `Duration`, the first time one interval after the worker starts (Faust's
    /// `@app.timer`, Kafka Streams' wall-clock punctuation). Runs keep to the grid
    /// `start + k·interval`: a run that takes longer than the interval skips the ticks it
    /// overran, it does not queue them.
    Every(Duration),
    /// At the times a cron expression matches, in a time zone (Faust's `@app.crontab`).
    Cron(Box<CronSchedule>),
}

/// A parsed cron expression and its time zone.
#[derive(Clone)]
pub struct CronSchedule {
    cron: Cron,
    zone: chrono_tz::Tz,
    text: String,
}

impl Schedule {
    /// Every `interval` (at least 1 ms).
    pub fn every(interval: Duration) -> Result<Schedule> {
        if interval < Duration::from_millis(1) {
            return Err(Error::config(
                "timer interval",
                "a timer's interval must be at least 1 ms",
            ));
        }
        Ok(Schedule::Every(interval))
    }

    /// A cron expression: five fields (`minute hour day-of-month month day-of-week`, e.g.
    /// `"0 20 * * *"` for 20:00 every day) or six with seconds first; in the IANA time zone
    /// `zone` (`"Europe/Paris"`, `"UTC"`), so a daily run stays at its local time across
    /// daylight saving changes.
    pub fn cron(expression: &str, zone: &str) -> Result<Schedule> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expression)
            .map_err(|e| {
                Error::config(
                    "crontab",
                    format!("`{expression}` is not a cron expression ({e}); five fields: minute hour day-of-month month day-of-week, e.g. \"0 20 * * *\""),
                )
            })?;
        let zone = chrono_tz::Tz::from_str(zone).map_err(|_| {
            Error::config(
                "crontab timezone",
                format!("`{zone}` is not an IANA time zone; e.g. \"UTC\" or \"Europe/Paris\""),
            )
        })?;
        Ok(Schedule::Cron(Box::new(CronSchedule {
            cron,
            zone,
            text: expression.to_owned(),
        })))
    }

    /// The first time after `now_ms` to run, for a timer that started at `start_ms` (ms since
    /// the epoch); `None` when the schedule never matches again.
    pub fn next_after(&self, start_ms: i64, now_ms: i64) -> Option<i64> {
        match self {
            Schedule::Every(interval) => {
                let step = i64::try_from(interval.as_millis())
                    .unwrap_or(i64::MAX)
                    .max(1);
                let ticks = (now_ms - start_ms).max(0) / step + 1;
                Some(start_ms.saturating_add(ticks.saturating_mul(step)))
            }
            Schedule::Cron(c) => {
                let now: DateTime<Utc> = Utc.timestamp_millis_opt(now_ms).single()?;
                let local = now.with_timezone(&c.zone);
                let next = c.cron.find_next_occurrence(&local, false).ok()?;
                Some(next.timestamp_millis())
            }
        }
    }
}

impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schedule::Every(d) => write!(f, "every {d:?}"),
            Schedule::Cron(c) => write!(f, "cron \"{}\" ({})", c.text, c.zone),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc_ms(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .expect("rfc3339")
            .timestamp_millis()
    }

    #[test]
    fn intervals_keep_to_their_grid_and_skip_overrun_ticks() {
        let every = Schedule::every(Duration::from_secs(10)).expect("valid");
        assert_eq!(every.next_after(0, 0), Some(10_000));
        assert_eq!(every.next_after(0, 9_999), Some(10_000));
        assert_eq!(every.next_after(0, 10_000), Some(20_000));
        // A run that ended at 35 s skips the 30 s tick.
        assert_eq!(every.next_after(0, 35_000), Some(40_000));
        assert!(Schedule::every(Duration::ZERO).is_err());
    }

    #[test]
    fn a_daily_cron_keeps_its_local_time_across_daylight_saving() {
        let nightly = Schedule::cron("0 20 * * *", "Europe/Paris").expect("valid");
        // Winter (UTC+1): 20:00 in Paris is 19:00 UTC; summer (UTC+2, from 29 March 2026): 18:00.
        let before = utc_ms("2026-03-28T12:00:00Z");
        let first = nightly.next_after(0, before).expect("next");
        assert_eq!(first, utc_ms("2026-03-28T19:00:00Z"));
        let second = nightly.next_after(0, first).expect("next");
        assert_eq!(second, utc_ms("2026-03-29T18:00:00Z"));
        let utc = Schedule::cron("30 6 * * 1-5", "UTC").expect("valid");
        // Friday 2026-12-04 07:00 UTC: next weekday 06:30 is Monday.
        let next = utc.next_after(0, utc_ms("2026-12-04T07:00:00Z"));
        assert_eq!(next, Some(utc_ms("2026-12-07T06:30:00Z")));
        let seconds = Schedule::cron("*/15 * * * * *", "UTC").expect("six fields");
        let at = utc_ms("2026-12-04T07:00:01Z");
        assert_eq!(
            seconds.next_after(0, at),
            Some(utc_ms("2026-12-04T07:00:15Z"))
        );
    }

    #[test]
    fn bad_expressions_and_zones_name_the_fix() {
        let err = Schedule::cron("0 25 * * *", "UTC")
            .expect_err("hour 25")
            .to_string();
        assert!(
            err.contains("`0 25 * * *`") && err.contains("minute hour"),
            "{err}"
        );
        let err = Schedule::cron("0 20 * * *", "Paris")
            .expect_err("no such zone")
            .to_string();
        assert!(
            err.contains("`Paris`") && err.contains("Europe/Paris"),
            "{err}"
        );
    }
}

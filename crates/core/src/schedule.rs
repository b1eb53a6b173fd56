//! When a schedule's slots fall due (issue: schedules): a cron pattern of
//! five fields evaluated in an IANA time zone, by the `croner` library
//! (POSIX/Vixie semantics; a slot in a spring-forward gap runs after the
//! jump, a slot in an autumn fold once). Pure: the scheduler passes "now"
//! from its (injectable) clock.
//!
//! The one decision: a schedule whose next slot is due starts **one** run
//! for the latest slot that is due — after downtime that is one late run,
//! not one per missed slot — and moves to the first slot after now.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use std::str::FromStr;

/// Longest cron pattern and time zone name accepted.
pub const MAX_PATTERN_LEN: usize = 120;
pub const MAX_TIMEZONE_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "cron `{pattern}` is not a five-field cron pattern (minute hour day-of-month month day-of-week): {reason}"
    )]
    Pattern { pattern: String, reason: String },
    #[error("time zone `{0}` is not an IANA time zone name (e.g. `Europe/Brussels`, `UTC`)")]
    TimeZone(String),
    #[error("cron `{0}` never falls due")]
    Never(String),
}

/// A parsed schedule: its pattern in its time zone.
#[derive(Debug, Clone)]
pub struct Slots {
    cron: Cron,
    tz: Tz,
    pattern: String,
}

impl Slots {
    /// Parses `pattern` (five fields; no seconds) in `timezone`.
    pub fn parse(pattern: &str, timezone: &str) -> Result<Slots, ScheduleError> {
        let shown = || pattern.chars().take(MAX_PATTERN_LEN).collect::<String>();
        let bad = |reason: String| ScheduleError::Pattern {
            pattern: shown(),
            reason,
        };
        if pattern.len() > MAX_PATTERN_LEN {
            return Err(bad(format!("longer than {MAX_PATTERN_LEN} characters")));
        }
        let fields = pattern.split_whitespace().count();
        if fields != 5 {
            return Err(bad(format!("{fields} fields, expected 5")));
        }
        let cron = Cron::from_str(pattern).map_err(|e| bad(e.to_string()))?;
        if timezone.len() > MAX_TIMEZONE_LEN {
            return Err(ScheduleError::TimeZone(
                timezone.chars().take(MAX_TIMEZONE_LEN).collect(),
            ));
        }
        let tz = Tz::from_str(timezone).map_err(|_| ScheduleError::TimeZone(timezone.to_owned()))?;
        let slots = Slots {
            cron,
            tz,
            pattern: pattern.to_owned(),
        };
        // A pattern like `0 0 31 2 *` (31 February) parses but never runs.
        if slots.next_after(0).is_none() {
            return Err(ScheduleError::Never(shown()));
        }
        Ok(slots)
    }

    fn at(&self, ms: i64) -> Option<DateTime<Tz>> {
        Utc.timestamp_millis_opt(ms)
            .single()
            .map(|t| t.with_timezone(&self.tz))
    }

    /// The first slot strictly after `ms` (epoch milliseconds).
    pub fn next_after(&self, ms: i64) -> Option<i64> {
        let t = self.at(ms)?;
        self.cron
            .find_next_occurrence(&t, false)
            .ok()
            .map(|t| t.timestamp_millis())
    }

    /// The latest slot at or before `ms`.
    pub fn latest_at_or_before(&self, ms: i64) -> Option<i64> {
        let t = self.at(ms)?;
        self.cron
            .find_previous_occurrence(&t, true)
            .ok()
            .map(|t| t.timestamp_millis())
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }
}

/// What a scheduler does with a schedule whose next slot is `next_due_at`, at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Nothing yet.
    NotDue,
    /// Start one run for `slot`; `missed` earlier slots passed unstarted
    /// (downtime) and are not run; the schedule moves to `next`.
    Start {
        slot: i64,
        missed: u64,
        next: Option<i64>,
    },
}

/// Most missed slots counted one by one (a minutely schedule down for a
/// year would otherwise walk half a million slots just to count them).
pub const MISSED_COUNT_LIMIT: u64 = 10_000;

/// The decision for a schedule at `now`. Pure.
pub fn due(slots: &Slots, next_due_at: i64, now: i64) -> Due {
    if next_due_at > now {
        return Due::NotDue;
    }
    // The latest slot due; never before the one the schedule was waiting for.
    let slot = slots
        .latest_at_or_before(now)
        .filter(|s| *s >= next_due_at)
        .unwrap_or(next_due_at);
    let mut missed = 0;
    let mut t = next_due_at;
    while t < slot && missed < MISSED_COUNT_LIMIT {
        missed += 1;
        match slots.next_after(t) {
            Some(n) => t = n,
            None => break,
        }
    }
    Due::Start {
        slot,
        missed,
        next: slots.next_after(now.max(slot)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn patterns_and_zones_are_checked() {
        assert!(Slots::parse("0 2 * * *", "Europe/Brussels").is_ok());
        for bad in [
            "",
            "* * * *",
            "0 0 2 * * *",
            "61 * * * *",
            "x y z w v",
            "0 0 31 2 *",
        ] {
            assert!(Slots::parse(bad, "UTC").is_err(), "{bad:?}");
        }
        let e = Slots::parse("0 2 * * *", "Mars/Olympus").unwrap_err();
        assert!(e.to_string().contains("Mars/Olympus"), "{e}");
        assert!(Slots::parse(&"1 ".repeat(100), "UTC").is_err());
    }

    #[test]
    fn slots_follow_local_time_across_dst() {
        // 02:30 daily in Brussels: 2027-03-28 has no 02:30 (spring forward).
        let s = Slots::parse("30 2 * * *", "Europe/Brussels").unwrap();
        let before = ms("2027-03-27T02:00:00+01:00");
        let first = s.next_after(before).unwrap();
        assert_eq!(first, ms("2027-03-27T02:30:00+01:00"));
        let gap = s.next_after(first).unwrap();
        // The slot of the missing hour runs once, after the jump, and the
        // next day is 02:30 summer time.
        assert!(gap > first && gap < ms("2027-03-29T00:00:00+02:00"), "{gap}");
        assert_eq!(s.next_after(gap).unwrap(), ms("2027-03-29T02:30:00+02:00"));
        // Autumn fold (2027-10-31, 02:30 happens twice): one slot that day.
        let a = s.next_after(ms("2027-10-30T12:00:00+02:00")).unwrap();
        let b = s.next_after(a).unwrap();
        assert!(b - a >= 23 * 3_600_000, "{a} {b}");
    }

    #[test]
    fn one_late_run_after_downtime() {
        let s = Slots::parse("0 * * * *", "UTC").unwrap();
        let waiting = ms("2027-01-01T10:00:00Z");
        assert_eq!(due(&s, waiting, waiting - 1), Due::NotDue);
        assert_eq!(
            due(&s, waiting, waiting),
            Due::Start {
                slot: waiting,
                missed: 0,
                next: Some(ms("2027-01-01T11:00:00Z"))
            }
        );
        // Down from 10:00 to 15:20: one run, for the 15:00 slot; 10–14 missed.
        assert_eq!(
            due(&s, waiting, ms("2027-01-01T15:20:00Z")),
            Due::Start {
                slot: ms("2027-01-01T15:00:00Z"),
                missed: 5,
                next: Some(ms("2027-01-01T16:00:00Z"))
            }
        );
    }
}

//! When MISP runs happen, and the durable run mark they leave behind.
//!
//! Two schedule forms: a plain interval, or iOCLink's "time of day in a time zone, every N days".
//! Both are pure functions of the last run's start and the current time, so they are tested with
//! chrono values (time zones, DST gaps and folds) rather than with a clock.
//!
//! The [`Mark`] is the checkpoint position of the MISP source: the start time of the last run whose
//! changes every sink acknowledged (`last_run_time`), the attribute-timestamp watermark the next
//! poll reads from, when the last full resync ran, and the oldest modification time iocsync ever
//! asked for (the floor a resync may re-add from).

use chrono::{DateTime, Days, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use std::time::Duration;

/// When runs start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Every `interval` after the previous run's start.
    Interval(Duration),
    /// iOCLink's form: at `at` (wall-clock time in `tz`) every `every_days` days.
    Daily {
        /// Time of day.
        at: NaiveTime,
        /// Days between runs (≥ 1).
        every_days: u32,
        /// The zone `at` is read in.
        tz: Tz,
    },
}

/// Parses `HH:MM` or `HH:MM:SS` (24-hour clock).
pub fn parse_time_of_day(s: &str) -> Option<NaiveTime> {
    let s = s.trim();
    NaiveTime::parse_from_str(s, "%H:%M:%S")
        .or_else(|_| NaiveTime::parse_from_str(s, "%H:%M"))
        .ok()
}

/// The instant a wall-clock time in `tz` designates. In a fold (the clock goes back) the first
/// occurrence; in a gap (the clock jumps forward) the time is read with the offset in force before
/// the jump, so `02:30` on a spring-forward night in Paris is `03:30` summer time — the run is late
/// by the jump, never skipped.
pub fn resolve_local(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        LocalResult::None => {
            // Gaps last at most a few hours; the offset in force a day earlier is the one before it.
            let before = local - chrono::Duration::hours(24);
            let offset = match tz.from_local_datetime(&before) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => {
                    t.naive_utc() - t.naive_local()
                }
                LocalResult::None => chrono::Duration::zero(),
            };
            (local + offset).and_utc()
        }
    }
}

impl Schedule {
    /// When the next run starts, given the start of the last successful run (`None`: never ran).
    /// A result at or before `now` means "due now" (a missed run is caught up once, not replayed).
    ///
    /// - `Interval`: never ran ⇒ now; else last + interval.
    /// - `Daily`: never ran ⇒ the next `at` from now (today's if not yet past); else `at` on the
    ///   local day of the last run plus `every_days` — the time of day stays anchored even when a
    ///   run was late.
    pub fn next_run(&self, last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DateTime<Utc> {
        match *self {
            Schedule::Interval(every) => match last {
                None => now,
                Some(last) => {
                    last + chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX)
                }
            },
            Schedule::Daily { at, every_days, tz } => match last {
                None => {
                    let today = now.with_timezone(&tz).date_naive();
                    let candidate = resolve_local(tz, today.and_time(at));
                    if candidate >= now {
                        candidate
                    } else {
                        resolve_local(tz, add_days(today, 1).and_time(at))
                    }
                }
                Some(last) => {
                    let day = last.with_timezone(&tz).date_naive();
                    resolve_local(tz, add_days(day, every_days).and_time(at))
                }
            },
        }
    }

    /// A one-line description for logs.
    pub fn describe(&self) -> String {
        match self {
            Schedule::Interval(d) => format!(
                "every {}",
                humantime_serde::re::humantime::format_duration(*d)
            ),
            Schedule::Daily { at, every_days, tz } => {
                let days = if *every_days == 1 {
                    "every day".to_string()
                } else {
                    format!("every {every_days} days")
                };
                format!("{days} at {} {}", at.format("%H:%M:%S"), tz.name())
            }
        }
    }
}

fn add_days(day: NaiveDate, n: u32) -> NaiveDate {
    day.checked_add_days(Days::new(u64::from(n)))
        .unwrap_or(NaiveDate::MAX)
}

/// The MISP source's checkpoint position:
/// `"<last_run>[;resync=<t>][;floor=<t>][;wm=<t>]"` (unix seconds).
///
/// `last_run` is the start of the last run every sink acknowledged (the schedule's reference).
/// `watermark` is how far that run's reading reached in attribute time: the newest timestamp it
/// read, never past its start. The next poll asks from one second before it (MISP timestamps are
/// whole seconds; the overlap is de-duplicated). The pipeline writes the position only after every
/// change of the run is applied, so a failed or interrupted run leaves the old mark and is polled
/// again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// Start of the last acknowledged run (server time, unix seconds).
    pub last_run: i64,
    /// The newest attribute timestamp read and applied, capped at the run's start; `None` in marks
    /// written before it existed, which then read from `last_run`.
    pub watermark: Option<i64>,
    /// Start of the last run that included a full resync.
    pub last_resync: Option<i64>,
    /// The `timestamp` the very first run asked from: nothing older was ever pushed.
    pub floor: Option<i64>,
}

impl Mark {
    /// Reads a position; `None` when it is not a MISP mark.
    pub fn parse(position: &str) -> Option<Mark> {
        let mut parts = position.trim().split(';');
        let last_run = parts.next()?.trim().parse().ok()?;
        let mut mark = Mark {
            last_run,
            watermark: None,
            last_resync: None,
            floor: None,
        };
        for part in parts {
            match part.trim().split_once('=') {
                Some(("resync", v)) => mark.last_resync = v.trim().parse().ok(),
                Some(("floor", v)) => mark.floor = v.trim().parse().ok(),
                Some(("wm", v)) => mark.watermark = v.trim().parse().ok(),
                // Unknown parts come from a newer iocsync: ignore them rather than lose the mark.
                _ => {}
            }
        }
        Some(mark)
    }

    /// The position string.
    pub fn encode(&self) -> String {
        let mut out = self.last_run.to_string();
        if let Some(r) = self.last_resync {
            out.push_str(&format!(";resync={r}"));
        }
        if let Some(f) = self.floor {
            out.push_str(&format!(";floor={f}"));
        }
        if let Some(w) = self.watermark {
            out.push_str(&format!(";wm={w}"));
        }
        out
    }

    /// The attribute time the next poll has read up to (old marks: their run start).
    pub fn read_up_to(&self) -> i64 {
        self.watermark.unwrap_or(self.last_run)
    }

    /// `last_run` as a time.
    pub fn last_run_time(&self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(self.last_run, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("rfc3339")
            .with_timezone(&Utc)
    }

    fn daily(at: &str, every_days: u32, tz: Tz) -> Schedule {
        Schedule::Daily {
            at: parse_time_of_day(at).expect("time"),
            every_days,
            tz,
        }
    }

    #[test]
    fn interval_runs_now_then_every_interval() {
        let s = Schedule::Interval(Duration::from_secs(900));
        let now = utc("2024-05-01T10:00:00Z");
        assert_eq!(s.next_run(None, now), now);
        assert_eq!(
            s.next_run(Some(utc("2024-05-01T09:50:00Z")), now),
            utc("2024-05-01T10:05:00Z")
        );
        // Overdue (the daemon was down): due at once.
        assert!(s.next_run(Some(utc("2024-04-30T00:00:00Z")), now) <= now);
    }

    #[test]
    fn daily_first_run_is_the_next_time_of_day() {
        let s = daily("02:00", 1, chrono_tz::UTC);
        assert_eq!(
            s.next_run(None, utc("2024-05-01T01:00:00Z")),
            utc("2024-05-01T02:00:00Z")
        );
        assert_eq!(
            s.next_run(None, utc("2024-05-01T02:00:01Z")),
            utc("2024-05-02T02:00:00Z")
        );
    }

    #[test]
    fn daily_follows_the_local_time_zone() {
        // 02:00 in Paris is 00:00 UTC in summer, 01:00 UTC in winter.
        let s = daily("02:00", 1, chrono_tz::Europe::Paris);
        assert_eq!(
            s.next_run(
                Some(utc("2024-07-01T00:00:00Z")),
                utc("2024-07-01T12:00:00Z")
            ),
            utc("2024-07-02T00:00:00Z")
        );
        assert_eq!(
            s.next_run(
                Some(utc("2024-01-10T01:00:00Z")),
                utc("2024-01-10T12:00:00Z")
            ),
            utc("2024-01-11T01:00:00Z")
        );
        // Far east of UTC: the local day differs from the UTC day.
        let s = daily("06:00", 1, chrono_tz::Asia::Tokyo);
        assert_eq!(
            s.next_run(
                Some(utc("2024-05-01T21:00:00Z")),
                utc("2024-05-01T21:00:01Z")
            ),
            utc("2024-05-02T21:00:00Z")
        );
    }

    #[test]
    fn every_n_days_keeps_the_time_of_day_after_a_late_run() {
        let s = daily("02:00", 3, chrono_tz::UTC);
        // The last run was caught up late in the afternoon: the next one is still at 02:00.
        assert_eq!(
            s.next_run(
                Some(utc("2024-05-01T15:42:00Z")),
                utc("2024-05-01T15:43:00Z")
            ),
            utc("2024-05-04T02:00:00Z")
        );
        // Missed several periods: due now, once.
        assert!(
            s.next_run(
                Some(utc("2024-04-01T02:00:00Z")),
                utc("2024-05-01T00:00:00Z")
            ) < utc("2024-05-01T00:00:00Z")
        );
    }

    #[test]
    fn dst_gap_runs_after_the_jump_and_fold_runs_once() {
        let paris = chrono_tz::Europe::Paris;
        // 2024-03-31: 02:00 → 03:00 in Paris; 02:30 does not exist. Read with the winter offset
        // (+01:00) it is 01:30 UTC = 03:30 summer time.
        let s = daily("02:30", 1, paris);
        assert_eq!(
            s.next_run(
                Some(utc("2024-03-30T01:30:00Z")),
                utc("2024-03-30T12:00:00Z")
            ),
            utc("2024-03-31T01:30:00Z")
        );
        // And the day after, back to 02:30 summer time = 00:30 UTC.
        assert_eq!(
            s.next_run(
                Some(utc("2024-03-31T01:30:00Z")),
                utc("2024-03-31T12:00:00Z")
            ),
            utc("2024-04-01T00:30:00Z")
        );
        // 2024-10-27: 03:00 → 02:00; 02:30 happens twice. The first (summer, +02:00) is taken.
        assert_eq!(
            s.next_run(
                Some(utc("2024-10-26T00:30:00Z")),
                utc("2024-10-26T12:00:00Z")
            ),
            utc("2024-10-27T00:30:00Z")
        );
        // New York's spring-forward night (2024-03-10, 02:00 → 03:00).
        let ny = chrono_tz::America::New_York;
        assert_eq!(
            resolve_local(
                ny,
                NaiveDate::from_ymd_opt(2024, 3, 10)
                    .and_then(|d| d.and_hms_opt(2, 15, 0))
                    .expect("date")
            ),
            utc("2024-03-10T07:15:00Z")
        );
    }

    #[test]
    fn time_of_day_forms() {
        assert_eq!(
            parse_time_of_day("7:05").map(|t| t.to_string()).as_deref(),
            Some("07:05:00")
        );
        assert_eq!(
            parse_time_of_day(" 23:59:30 ")
                .map(|t| t.to_string())
                .as_deref(),
            Some("23:59:30")
        );
        assert!(parse_time_of_day("24:00").is_none());
        assert!(parse_time_of_day("noon").is_none());
    }

    #[test]
    fn marks_round_trip_and_tolerate_plain_seconds() {
        let m = Mark {
            last_run: 1_700_000_000,
            watermark: Some(1_699_999_990),
            last_resync: Some(1_699_990_000),
            floor: Some(1_699_000_000),
        };
        assert_eq!(
            m.encode(),
            "1700000000;resync=1699990000;floor=1699000000;wm=1699999990"
        );
        assert_eq!(Mark::parse(&m.encode()), Some(m));
        assert_eq!(m.read_up_to(), 1_699_999_990);
        // A mark from before the watermark reads from its run's start.
        let old = Mark::parse("1700000000").expect("plain mark");
        assert_eq!(
            old,
            Mark {
                last_run: 1_700_000_000,
                watermark: None,
                last_resync: None,
                floor: None
            }
        );
        assert_eq!(old.read_up_to(), 1_700_000_000);
        assert_eq!(
            Mark::parse("1700000000;future=1").map(|m| m.last_run),
            Some(1_700_000_000)
        );
        assert_eq!(Mark::parse("stream.sse#123"), None);
        assert_eq!(Mark::parse(""), None);
    }
}

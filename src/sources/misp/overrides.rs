//! The MISP settings the web console stores in the state database over the `misp` config: the
//! schedule, per-feed push toggles, and a one-shot `last_run_time`. They live in the state's kv
//! table (no schema change) under [`SCHEDULE_KEY`], [`FEEDS_KEY`] and [`LAST_RUN_KEY`], and the
//! source reads them at every run start, so an edit takes effect from the next run.
//!
//! Precedence: a console value wins over config.yml and the environment for its key; dropping it
//! (the console's "use config" buttons) brings the config value back.

use super::config::MispConfig;
use super::schedule::{Mark, Schedule};
use crate::sources::SourceStore;
use crate::state::{State, StateError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tracing::warn;

/// kv key of the console's MISP schedule ([`ScheduleOverride`]).
pub const SCHEDULE_KEY: &str = "console.misp.schedule";
/// kv key of the console's feed toggles ([`FeedToggles`]).
pub const FEEDS_KEY: &str = "console.misp.feeds";
/// kv key of the console's `last_run_time` ([`LastRunOverride`]).
pub const LAST_RUN_KEY: &str = "console.misp.last_run_time";

/// Who changed a setting in the console, and when (RFC 3339).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// The console user.
    pub by: String,
    /// When.
    pub at: String,
}

impl Stamp {
    /// `user` now.
    pub fn now(user: &str) -> Stamp {
        Stamp {
            by: user.to_string(),
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }
}

/// A schedule as entered in the console: the same two forms as the config keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "form", rename_all = "snake_case")]
pub enum ScheduleSetting {
    /// `misp.interval` (a humantime duration such as `15m`).
    Interval {
        /// The duration as entered.
        every: String,
    },
    /// `misp.first_run_at` + `misp.repeat_days` + `misp.timezone`.
    Daily {
        /// `HH:MM` or `HH:MM:SS`.
        at: String,
        /// Days between runs.
        every_days: u32,
        /// IANA time zone.
        timezone: String,
    },
}

impl ScheduleSetting {
    /// `cfg` with this schedule in place of its own schedule keys.
    pub fn apply(&self, cfg: &MispConfig) -> Result<MispConfig, (&'static str, String)> {
        let mut out = cfg.clone();
        match self {
            ScheduleSetting::Interval { every } => {
                let d =
                    humantime_serde::re::humantime::parse_duration(every.trim()).map_err(|_| {
                        (
                            "misp.interval",
                            format!("`{every}` is not a duration (e.g. `15m`, `2h`, `1day`)"),
                        )
                    })?;
                out.interval = Some(d);
                out.first_run_at = None;
                out.repeat_days = None;
            }
            ScheduleSetting::Daily {
                at,
                every_days,
                timezone,
            } => {
                out.interval = None;
                out.first_run_at = Some(at.clone());
                out.repeat_days = Some(*every_days);
                out.timezone = timezone.clone();
            }
        }
        Ok(out)
    }

    /// The schedule, validated like the config keys; the error names the key and the problem.
    pub fn schedule(&self, cfg: &MispConfig) -> Result<Schedule, (&'static str, String)> {
        self.apply(cfg)?.schedule_checked()
    }
}

/// The console's schedule and who set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleOverride {
    /// The schedule.
    pub schedule: ScheduleSetting,
    /// Who set it, when.
    pub set: Stamp,
}

/// One feed's console toggle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedToggle {
    /// True: iocsync pushes the feed's attributes; false: holds them back.
    pub pushed: bool,
    /// Who set it, when.
    pub set: Stamp,
}

/// Console toggles by MISP feed id.
pub type FeedToggles = BTreeMap<String, FeedToggle>;

/// A `last_run_time` set in the console: the next run reads attributes changed since `at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRunOverride {
    /// Unix seconds.
    pub at: i64,
    /// Who set it, when.
    pub set: Stamp,
    /// Set once a run took it up: the position it replaced (`None`: there was none). Until a run
    /// with it is acknowledged the checkpoint still holds that position, so a restart meanwhile
    /// finds it again and takes the override up again instead of losing it.
    pub applied: Option<Applied>,
}

/// When a run took a [`LastRunOverride`] up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The position replaced.
    pub over: Option<String>,
    /// When (RFC 3339).
    pub at: String,
}

impl LastRunOverride {
    /// Whether a run starting from `mark` must take this up: never taken, or taken by a run whose
    /// position never became the checkpoint (the daemon restarted from the position it replaced).
    pub fn due(&self, mark: Option<&Mark>) -> bool {
        match &self.applied {
            None => true,
            Some(a) => a.over == mark.map(Mark::encode),
        }
    }

    /// The mark a run starting from `mark` reads from: from `at` on, keeping the resync's
    /// bookkeeping; the floor moves back when `at` is older (a resync may re-add from there).
    pub fn mark_over(&self, mark: Option<&Mark>, now: i64) -> Mark {
        Mark {
            last_run: self.at,
            watermark: Some(self.at),
            // Without a mark the run is a first one: its window is its own full view.
            last_resync: mark.map_or(Some(now), |m| m.last_resync),
            floor: Some(
                mark.and_then(|m| m.floor)
                    .map_or(self.at, |f| f.min(self.at)),
            ),
        }
    }
}

/// Everything the console set for MISP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// The schedule, when set in the console.
    pub schedule: Option<ScheduleOverride>,
    /// Feed toggles.
    pub feeds: FeedToggles,
    /// `last_run_time`, when set in the console.
    pub last_run: Option<LastRunOverride>,
}

/// A stored value that does not parse is logged and left out (the config value applies), never
/// fatal: it can only come from a newer or damaged iocsync.
fn parse<T: serde::de::DeserializeOwned>(key: &str, text: Option<String>) -> Option<T> {
    let text = text?;
    match serde_json::from_str(&text) {
        Ok(v) => Some(v),
        Err(e) => {
            warn!(key, error = %e, "console setting in the state is unreadable: the config value applies");
            None
        }
    }
}

impl Overrides {
    /// Reads them from `state`.
    pub fn read(state: &State) -> Result<Overrides, StateError> {
        Ok(Overrides {
            schedule: parse(SCHEDULE_KEY, state.kv_get(SCHEDULE_KEY)?),
            feeds: parse(FEEDS_KEY, state.kv_get(FEEDS_KEY)?).unwrap_or_default(),
            last_run: parse(LAST_RUN_KEY, state.kv_get(LAST_RUN_KEY)?),
        })
    }

    /// Reads them through the source's store.
    pub async fn load(store: &SourceStore) -> Result<Overrides, StateError> {
        Ok(Overrides {
            schedule: parse(SCHEDULE_KEY, store.get(SCHEDULE_KEY).await?),
            feeds: parse(FEEDS_KEY, store.get(FEEDS_KEY).await?).unwrap_or_default(),
            last_run: parse(LAST_RUN_KEY, store.get(LAST_RUN_KEY).await?),
        })
    }

    /// The feed toggles as id → pushed.
    pub fn pushed_by_id(&self) -> BTreeMap<String, bool> {
        self.feeds
            .iter()
            .map(|(id, t)| (id.clone(), t.pushed))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_validated_like_the_config_keys() {
        let cfg = MispConfig::default();
        let interval = |every: &str| ScheduleSetting::Interval {
            every: every.into(),
        };
        assert_eq!(
            interval("15m").schedule(&cfg),
            Ok(Schedule::Interval(std::time::Duration::from_secs(900)))
        );
        assert_eq!(
            interval("soon").schedule(&cfg).map_err(|e| e.0),
            Err("misp.interval")
        );
        assert_eq!(
            interval("0s").schedule(&cfg).map_err(|e| e.0),
            Err("misp.interval")
        );
        let daily = |at: &str, n: u32, tz: &str| ScheduleSetting::Daily {
            at: at.into(),
            every_days: n,
            timezone: tz.into(),
        };
        assert!(daily("02:30", 2, "Europe/Paris").schedule(&cfg).is_ok());
        assert_eq!(
            daily("25:00", 1, "UTC").schedule(&cfg).map_err(|e| e.0),
            Err("misp.first_run_at")
        );
        assert_eq!(
            daily("02:00", 0, "UTC").schedule(&cfg).map_err(|e| e.0),
            Err("misp.repeat_days")
        );
        assert_eq!(
            daily("02:00", 1, "Mars/Olympus")
                .schedule(&cfg)
                .map_err(|e| e.0),
            Err("misp.timezone")
        );
        // A console interval replaces a configured daily form (not "both set").
        let ioclink = MispConfig {
            first_run_at: Some("03:00".into()),
            repeat_days: Some(2),
            ..MispConfig::default()
        };
        assert!(interval("1h").schedule(&ioclink).is_ok());
    }

    #[test]
    fn a_last_run_time_is_taken_up_again_after_an_unacknowledged_run() {
        let old = Mark {
            last_run: 1_000,
            watermark: Some(990),
            last_resync: Some(500),
            floor: Some(400),
        };
        let mut o = LastRunOverride {
            at: 300,
            set: Stamp::now("admin"),
            applied: None,
        };
        assert!(o.due(Some(&old)));
        let new = o.mark_over(Some(&old), 2_000);
        assert_eq!(
            (new.read_up_to(), new.floor, new.last_resync),
            (300, Some(300), Some(500))
        );
        o.applied = Some(Applied {
            over: Some(old.encode()),
            at: String::new(),
        });
        // Restarted from the old checkpoint: again; from the run's own mark: done.
        assert!(o.due(Some(&old)));
        assert!(!o.due(Some(&new)));
        let first = LastRunOverride {
            applied: Some(Applied {
                over: None,
                at: String::new(),
            }),
            ..o
        };
        assert!(first.due(None));
        assert_eq!(first.mark_over(None, 2_000).last_resync, Some(2_000));
    }
}

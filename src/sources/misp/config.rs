//! The `misp` config section (env `MISP_<KEY>`): server access, the schedule (a plain interval or
//! iOCLink's time of day + every N days), the first run's look-back, the full-resync interval, and
//! the filters (types, tags, orgs, published, warninglists, to_ids, disabled feeds).
//!
//! Plain serde data with defaults; [`MispConfig::validate`] checks it without I/O and names the key
//! of every problem.

use super::mapping::SUPPORTED_TYPES;
use super::schedule::{parse_time_of_day, Schedule};
use crate::config::Section;
use crate::lenient::{lenient_opt_string, Scalar};
use crate::remote::{base_url_problem, is_placeholder};
use crate::secret::Secret;
use serde::{Deserialize, Deserializer, Serialize};
use std::time::Duration;

/// The `misp` section.
///
/// Every field serialises (the config loader discovers known keys by serialising `Default`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MispConfig {
    /// Server base URL, e.g. `https://misp.example.com` (trailing slashes are fine).
    pub url: Option<String>,
    /// The auth key of an API-enabled user (sent raw in `Authorization`).
    pub key: Option<Secret>,
    /// Verify the server's TLS certificate.
    pub ssl_verify: bool,
    /// PEM bundle of CA certificates to trust in addition to the bundled and system roots (an
    /// internal CA); unreadable or invalid is a config error.
    pub ssl_ca: Option<std::path::PathBuf>,
    /// Poll every this long (e.g. `15m`). Exclusive with `first_run_at` / `repeat_days`; when no
    /// schedule is set at all, iocsync polls every hour.
    #[serde(with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// iOCLink's schedule: the time of day of the runs (`HH:MM` or `HH:MM:SS`, in `timezone`).
    #[serde(deserialize_with = "lenient_opt_string")]
    pub first_run_at: Option<String>,
    /// iOCLink's schedule: run every this many days at `first_run_at` (default 1).
    pub repeat_days: Option<u32>,
    /// IANA time zone of `first_run_at` (e.g. `Europe/Paris`); default `UTC`.
    pub timezone: String,
    /// The first run (no saved `last_run_time`) asks for attributes changed this long ago or later.
    #[serde(with = "humantime_serde")]
    pub initial_lookback: Duration,
    /// How often a run also lists every matching attribute to remove what MISP no longer has (hard
    /// deletes, deleted events, filter changes); `0s` turns the resync off.
    #[serde(with = "humantime_serde")]
    pub resync_interval: Duration,
    /// Comma list of feed names or ids whose attributes are not pushed (`ignored_disabled_feed`).
    #[serde(deserialize_with = "lenient_list")]
    pub disabled_feeds: Option<String>,
    /// Comma list of MISP attribute types to request; default every type iocsync maps.
    #[serde(deserialize_with = "lenient_list")]
    pub types: Option<String>,
    /// Comma list of tags: only attributes carrying one of them (or whose event does).
    #[serde(deserialize_with = "lenient_list")]
    pub tags: Option<String>,
    /// Comma list of tags whose attributes are left out.
    #[serde(deserialize_with = "lenient_list")]
    pub exclude_tags: Option<String>,
    /// Comma list of creator organisations (names or ids) to keep.
    #[serde(deserialize_with = "lenient_list")]
    pub orgs: Option<String>,
    /// Only attributes of published events.
    pub published_only: bool,
    /// Ask MISP to leave out values on its enabled warninglists.
    pub enforce_warninglist: bool,
    /// Only attributes flagged `to_ids`; a flag turned off removes the IOC from the sinks.
    pub only_to_ids: bool,
    /// Attributes per `restSearch` page.
    pub page_size: usize,
    /// Timeout of one request (large pages take a while).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts per request on a transient failure (connection error, 429, 5xx) before the run fails.
    pub request_attempts: u32,
    /// After a failed run, the daemon tries again this much later (or at the next scheduled run if
    /// that is sooner); the failed run's window is polled again, nothing is lost.
    #[serde(with = "humantime_serde")]
    pub retry_interval: Duration,
}

impl Default for MispConfig {
    fn default() -> Self {
        MispConfig {
            url: None,
            key: None,
            ssl_verify: true,
            ssl_ca: None,
            interval: None,
            first_run_at: None,
            repeat_days: None,
            timezone: "UTC".into(),
            initial_lookback: Duration::from_secs(7 * 86_400),
            resync_interval: Duration::from_secs(86_400),
            disabled_feeds: None,
            types: None,
            tags: None,
            exclude_tags: None,
            orgs: None,
            published_only: false,
            enforce_warninglist: true,
            only_to_ids: true,
            page_size: 5_000,
            timeout: Duration::from_secs(120),
            request_attempts: 4,
            retry_interval: Duration::from_secs(300),
        }
    }
}

/// The schedule used when neither form is configured.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(3_600);

/// Splits a comma list, trimming and dropping empty items.
pub fn split_list(list: Option<&str>) -> Vec<String> {
    list.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

impl MispConfig {
    /// The TLS settings of the HTTP client (verification, extra CA bundle).
    pub fn tls(&self) -> crate::remote::TlsSettings<'_> {
        crate::remote::TlsSettings::new(
            "misp",
            ["misp.ssl_verify", "misp.ssl_ca"],
            self.ssl_verify,
            self.ssl_ca.as_deref(),
        )
    }

    /// The attribute types to request: `types`, or every supported type.
    pub fn type_list(&self) -> Vec<String> {
        let list = split_list(self.types.as_deref());
        if list.is_empty() {
            SUPPORTED_TYPES.iter().map(|t| t.to_string()).collect()
        } else {
            list
        }
    }

    /// `disabled_feeds` as a list.
    pub fn disabled_feed_list(&self) -> Vec<String> {
        split_list(self.disabled_feeds.as_deref())
    }

    /// The schedule, or the key and problem that make it invalid (the console validates its own
    /// schedule edits with this too).
    pub fn schedule_checked(&self) -> Result<Schedule, (&'static str, String)> {
        match (&self.interval, &self.first_run_at) {
            (Some(_), Some(_)) => Err((
                "misp.interval",
                "set either `misp.interval` or `misp.first_run_at` (with `misp.repeat_days`), \
                 not both"
                    .into(),
            )),
            (Some(_), None) if self.repeat_days.is_some() => Err((
                "misp.interval",
                "set either `misp.interval` or `misp.repeat_days` (with `misp.first_run_at`), \
                 not both"
                    .into(),
            )),
            (Some(d), None) if d.is_zero() => {
                Err(("misp.interval", "must be greater than zero".into()))
            }
            (Some(d), None) => Ok(Schedule::Interval(*d)),
            (None, Some(at)) => {
                let at = parse_time_of_day(at).ok_or_else(|| {
                    (
                        "misp.first_run_at",
                        format!("`{at}` is not a time of day (`HH:MM` or `HH:MM:SS`)"),
                    )
                })?;
                let every_days = self.repeat_days.unwrap_or(1);
                if every_days == 0 {
                    return Err(("misp.repeat_days", "must be at least 1".into()));
                }
                let tz = self.timezone.trim().parse::<chrono_tz::Tz>().map_err(|_| {
                    (
                        "misp.timezone",
                        format!(
                            "`{}` is not an IANA time zone (e.g. `UTC`, `Europe/Paris`)",
                            self.timezone
                        ),
                    )
                })?;
                Ok(Schedule::Daily { at, every_days, tz })
            }
            (None, None) if self.repeat_days.is_some() => Err((
                "misp.repeat_days",
                "needs `misp.first_run_at` (the time of day of the runs)".into(),
            )),
            (None, None) => Ok(Schedule::Interval(DEFAULT_INTERVAL)),
        }
    }

    /// Problems with this section, as `(key, message)`; empty when usable.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out: Vec<(&'static str, String)> = Vec::new();
        if let Some(problem) = base_url_problem(self.url.as_deref()) {
            out.push(("misp.url", problem));
        }
        match &self.key {
            None => out.push((
                "misp.key",
                "is required (the auth key of an API user)".into(),
            )),
            Some(k) if is_placeholder(k.expose()) => out.push((
                "misp.key",
                "is empty or still the `ChangeMe` placeholder".into(),
            )),
            Some(k) if k.expose().trim().chars().any(char::is_whitespace) => out.push((
                "misp.key",
                "must not contain spaces (MISP keys are sent raw, without `Bearer`)".into(),
            )),
            Some(_) => {}
        }
        if let Err(problem) = self.schedule_checked() {
            out.push(problem);
        }
        // The time zone is only used by the iOCLink form, but a typo should not wait for it.
        if self.timezone.trim().parse::<chrono_tz::Tz>().is_err()
            && !out.iter().any(|(k, _)| *k == "misp.timezone")
        {
            out.push((
                "misp.timezone",
                format!(
                    "`{}` is not an IANA time zone (e.g. `UTC`, `Europe/Paris`)",
                    self.timezone
                ),
            ));
        }
        let unknown: Vec<String> = split_list(self.types.as_deref())
            .into_iter()
            .filter(|t| !SUPPORTED_TYPES.contains(&t.as_str()))
            .collect();
        if !unknown.is_empty() {
            out.push((
                "misp.types",
                format!(
                    "iocsync maps no IOC from {}; supported types: {}",
                    unknown
                        .iter()
                        .map(|t| format!("`{t}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    SUPPORTED_TYPES.join(", ")
                ),
            ));
        }
        if self.page_size == 0 {
            out.push(("misp.page_size", "must be at least 1".into()));
        }
        if self.request_attempts == 0 {
            out.push(("misp.request_attempts", "must be at least 1".into()));
        }
        for (key, d) in [
            ("misp.timeout", self.timeout),
            ("misp.retry_interval", self.retry_interval),
        ] {
            if d.is_zero() {
                out.push((key, "must be greater than zero".into()));
            }
        }
        out.into_iter().map(|(k, m)| (k.to_string(), m)).collect()
    }
}

/// What a valid `misp` section establishes.
#[derive(Debug, Clone)]
pub struct MispFacts {
    /// The server base URL, trimmed, an http(s) URL without a query.
    pub url: String,
    /// The auth key, not blank, no placeholder, no spaces.
    pub key: Secret,
    /// When runs start.
    pub schedule: Schedule,
}

impl Section for MispConfig {
    type Facts = MispFacts;

    fn check(&self) -> Result<MispFacts, Vec<(String, String)>> {
        let problems = self.validate();
        match (&self.url, &self.key, self.schedule_checked()) {
            (Some(url), Some(key), Ok(schedule)) if problems.is_empty() => Ok(MispFacts {
                url: url.trim().to_string(),
                key: key.clone(),
                schedule,
            }),
            _ => Err(problems),
        }
    }
}

/// A comma list given as a string, a single number (`MISP_DISABLED_FEEDS=3`) or a YAML list.
#[derive(Deserialize)]
#[serde(untagged)]
enum ListValue {
    One(Scalar),
    Many(Vec<Scalar>),
}

fn lenient_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v: Option<ListValue> = Option::deserialize(d)?;
    let joined = match v {
        None => return Ok(None),
        Some(ListValue::One(s)) => s.into_string(),
        Some(ListValue::Many(items)) => items
            .into_iter()
            .map(Scalar::into_string)
            .collect::<Vec<_>>()
            .join(","),
    };
    Ok(Some(joined).filter(|s| !s.trim().is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> MispConfig {
        MispConfig {
            url: Some("https://misp.example.com/".into()),
            key: Some(Secret::new("abcdefghijklmnopqrstuvwxyz0123456789ABCD")),
            ..Default::default()
        }
    }

    fn keys(c: &MispConfig) -> Vec<String> {
        c.validate().into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = MispConfig::default();
        assert!(c.ssl_verify && c.enforce_warninglist && c.only_to_ids && !c.published_only);
        assert_eq!(c.initial_lookback, Duration::from_secs(7 * 86_400));
        assert_eq!(c.resync_interval, Duration::from_secs(86_400));
        assert_eq!(c.page_size, 5_000);
        assert_eq!(
            c.schedule_checked(),
            Ok(Schedule::Interval(DEFAULT_INTERVAL))
        );
        assert_eq!(c.type_list().len(), SUPPORTED_TYPES.len());
        assert!(good().validate().is_empty(), "{:?}", good().validate());
    }

    #[test]
    fn both_schedule_forms_name_the_keys() {
        let c = MispConfig {
            interval: Some(Duration::from_secs(900)),
            first_run_at: Some("02:00".into()),
            ..good()
        };
        let problems = c.validate();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].0, "misp.interval");
        assert!(problems[0].1.contains("misp.first_run_at"), "{problems:?}");
        let c = MispConfig {
            interval: Some(Duration::from_secs(900)),
            repeat_days: Some(2),
            ..good()
        };
        assert!(c.validate()[0].1.contains("misp.repeat_days"));
    }

    #[test]
    fn names_the_key_of_each_problem() {
        let c = MispConfig {
            url: Some("ftp://misp".into()),
            key: Some(Secret::new("ChangeMe")),
            first_run_at: Some("25:00".into()),
            timezone: "Mars/Olympus".into(),
            types: Some("ip-dst, email-src".into()),
            page_size: 0,
            ..Default::default()
        };
        assert_eq!(
            keys(&c),
            [
                "misp.url",
                "misp.key",
                "misp.first_run_at",
                "misp.timezone",
                "misp.types",
                "misp.page_size"
            ]
        );
        let c = MispConfig {
            repeat_days: Some(3),
            ..good()
        };
        assert_eq!(keys(&c), ["misp.repeat_days"]);
        let c = MispConfig {
            interval: Some(Duration::ZERO),
            ..good()
        };
        assert_eq!(keys(&c), ["misp.interval"]);
    }

    #[test]
    fn the_ioclink_form_builds_a_daily_schedule() {
        let c = MispConfig {
            first_run_at: Some("02:30".into()),
            repeat_days: Some(3),
            timezone: "Europe/Paris".into(),
            ..good()
        };
        match c.check().expect("valid").schedule {
            Schedule::Daily { at, every_days, tz } => {
                assert_eq!(at.to_string(), "02:30:00");
                assert_eq!(every_days, 3);
                assert_eq!(tz, chrono_tz::Europe::Paris);
            }
            other => panic!("expected a daily schedule, got {other:?}"),
        }
    }

    #[test]
    fn lists_accept_strings_numbers_and_sequences() {
        let c: MispConfig = serde_json::from_value(serde_json::json!({
            "disabled_feeds": 3,
            "tags": ["tlp:white", "osint"],
            "orgs": " CIRCL , ,12",
            "first_run_at": "0200",
        }))
        .expect("lenient lists");
        assert_eq!(c.disabled_feed_list(), ["3"]);
        assert_eq!(split_list(c.tags.as_deref()), ["tlp:white", "osint"]);
        assert_eq!(split_list(c.orgs.as_deref()), ["CIRCL", "12"]);
        assert!(serde_json::from_value::<MispConfig>(serde_json::json!({"nope": 1})).is_err());
    }

    #[test]
    fn serialises_every_key_and_hides_the_key() {
        let v = serde_json::to_value(good()).expect("json");
        assert_eq!(v["key"], "***");
        assert_eq!(v["initial_lookback"], "7days");
        for key in [
            "interval",
            "first_run_at",
            "repeat_days",
            "disabled_feeds",
            "types",
        ] {
            assert!(v.get(key).is_some(), "{key} must serialise");
        }
        let back: MispConfig =
            serde_json::from_value(serde_json::to_value(MispConfig::default()).expect("json"))
                .expect("round trip");
        assert_eq!(back, MispConfig::default());
    }
}

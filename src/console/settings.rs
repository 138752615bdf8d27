//! The settings page's facts: every effective setting, where its value came from (default,
//! config.yml, environment, or the console for the MISP keys it may edit), secrets masked as
//! `••••1234`; and the MISP part the console edits (schedule, feed toggles, `last_run_time`).

use crate::cli::misp::{build_report, FeedRow};
use crate::config::{env_name, Config, SECRET_KEYS};
use crate::sources::misp::overrides::{
    LastRunOverride, Overrides, ScheduleOverride, ScheduleSetting,
};
use crate::sources::misp::{Mark, MispClient, SOURCE_NAME};
use crate::state::{State, StateError};
use figment::providers::{Format, Yaml};
use figment::Figment;
use std::path::Path;

/// One effective setting.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SettingRow {
    /// `section.key`.
    pub key: String,
    /// Its environment variable, when it has one.
    pub env: Option<String>,
    /// The value as shown (secrets masked).
    pub value: String,
    /// `default`, `config.yml`, `env`, `console` or `state`.
    pub source: &'static str,
}

/// Everything `/settings` shows (and `/api/settings` returns).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SettingsView {
    /// Edits are possible here (the console of `iocsync run`), not in `iocsync console`.
    pub editable: bool,
    /// Every effective setting.
    pub rows: Vec<SettingRow>,
    /// The MISP settings the console edits; `None` when MISP is not configured.
    pub misp: Option<MispView>,
}

/// The editable MISP settings, as in force.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MispView {
    /// The schedule in words.
    pub schedule: String,
    /// The schedule's fields, for the form.
    pub schedule_form: ScheduleSetting,
    /// The console's schedule, when set (else the config's applies).
    pub schedule_override: Option<ScheduleOverride>,
    /// Why the console's schedule is not in force (the config changed under it since).
    pub schedule_problem: Option<String>,
    /// The checkpoint's `last_run_time` (RFC 3339), when a run was acknowledged.
    pub last_run_time: Option<String>,
    /// The console's `last_run_time`, when set.
    pub last_run_override: Option<LastRunOverride>,
    /// The MISP feeds with what iocsync does with each.
    pub feeds: Vec<FeedRow>,
    /// Why the feeds could not be listed.
    pub feeds_error: Option<String>,
}

/// How long the settings page waits for MISP's feed list.
const FEEDS_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The feeds of the configured MISP, or why they cannot be listed.
pub async fn misp_feeds(cfg: &Config) -> Result<Vec<crate::sources::misp::wire::Feed>, String> {
    // One attempt: a page waits for no retry backoff while MISP is down.
    let misp = crate::sources::misp::MispConfig {
        request_attempts: 1,
        timeout: FEEDS_WAIT,
        ..cfg.misp.clone()
    };
    let misp = crate::config::Valid::new(misp).map_err(|e| format!("misp: {e}"))?;
    let client = MispClient::new(&misp).map_err(|e| format!("misp: {e}"))?;
    match tokio::time::timeout(FEEDS_WAIT, client.feeds()).await {
        Ok(Ok(feeds)) => Ok(feeds),
        Ok(Err(e)) => Err(format!("cannot list the MISP feeds: {e}")),
        Err(_) => Err(format!(
            "cannot list the MISP feeds: no answer within {} s",
            FEEDS_WAIT.as_secs()
        )),
    }
}

/// `ScheduleSetting` of what `cfg` configures (the form's starting values).
fn form_of(cfg: &crate::sources::misp::MispConfig) -> ScheduleSetting {
    match (&cfg.interval, &cfg.first_run_at) {
        (None, Some(at)) => ScheduleSetting::Daily {
            at: at.clone(),
            every_days: cfg.repeat_days.unwrap_or(1),
            timezone: cfg.timezone.clone(),
        },
        (interval, _) => ScheduleSetting::Interval {
            every: humantime_serde::re::humantime::format_duration(
                interval.unwrap_or(crate::sources::misp::config::DEFAULT_INTERVAL),
            )
            .to_string(),
        },
    }
}

fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| unix.to_string())
}

/// The page's facts: `base` (the rows of the config), the console's MISP settings from `state`
/// over them, and `feeds` as listed by MISP.
pub fn view(
    cfg: &Config,
    base: &[SettingRow],
    state: Option<&State>,
    feeds: Result<Vec<crate::sources::misp::wire::Feed>, String>,
    editable: bool,
) -> Result<SettingsView, StateError> {
    let mut rows = base.to_vec();
    if cfg.misp.url.is_none() {
        return Ok(SettingsView {
            editable,
            rows,
            misp: None,
        });
    }
    let overrides = match state {
        Some(s) => Overrides::read(s)?,
        None => Overrides::default(),
    };
    let mut misp = cfg.misp.clone();
    let mut schedule_problem = None;
    if let Some(o) = &overrides.schedule {
        if let Err((key, message)) = o.schedule.schedule(&cfg.misp) {
            schedule_problem = Some(format!(
                "the console's schedule is not valid with this config ({key}: {message}): the config's applies"
            ));
        } else if let Ok(applied) = o.schedule.apply(&cfg.misp) {
            misp = applied;
            for r in rows.iter_mut().filter(|r| {
                [
                    "misp.interval",
                    "misp.first_run_at",
                    "misp.repeat_days",
                    "misp.timezone",
                ]
                .contains(&r.key.as_str())
            }) {
                let v = serde_json::to_value(&misp).unwrap_or_default();
                let field = r.key.trim_start_matches("misp.");
                r.value = show(v.get(field).unwrap_or(&serde_json::Value::Null));
                r.source = "console";
            }
        }
    }
    let mark = match state {
        Some(s) => s.checkpoint(SOURCE_NAME)?.as_deref().and_then(Mark::parse),
        None => None,
    };
    let pending = overrides.last_run.as_ref().filter(|o| o.due(mark.as_ref()));
    rows.push(SettingRow {
        key: "misp.last_run_time".into(),
        env: None,
        value: match (pending, &mark) {
            (Some(o), _) => format!("{} (from the next run)", rfc3339(o.at)),
            (None, Some(m)) => rfc3339(m.last_run),
            (None, None) => "—".into(),
        },
        source: if pending.is_some() {
            "console"
        } else {
            "state"
        },
    });
    let (feeds, feeds_error) = match feeds {
        Ok(feeds) => (build_report(feeds, &cfg.misp, state)?.feeds, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    Ok(SettingsView {
        editable,
        rows,
        misp: Some(MispView {
            schedule: match misp.schedule_checked() {
                Ok(schedule) => schedule.describe(),
                Err((key, message)) => format!("not valid ({key}: {message})"),
            },
            schedule_form: form_of(&misp),
            schedule_override: overrides.schedule,
            schedule_problem,
            last_run_time: mark.map(|m| rfc3339(m.last_run)),
            last_run_override: overrides.last_run,
            feeds,
            feeds_error,
        }),
    })
}

/// `••••` and the last four characters of a long secret; short secrets show nothing of themselves.
pub fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() >= 16 {
        let tail: String = chars[chars.len() - 4..].iter().collect();
        format!("••••{tail}")
    } else {
        "••••".to_string()
    }
}

fn secret_value(cfg: &Config, key: &str) -> Option<String> {
    let s = match key {
        "opencti.token" => cfg.opencti.token.as_ref(),
        "misp.key" => cfg.misp.key.as_ref(),
        "sentinelone_intel.api_key" => cfg.sentinelone_intel.api_key.as_ref(),
        "sekoia_intel.apikey" => cfg.sekoia_intel.apikey.as_ref(),
        "console.password" => cfg.console.password.as_ref(),
        "console.password_hash" => cfg.console.password_hash.as_ref(),
        _ => None,
    };
    s.map(|s| mask(s.expose()))
}

fn show(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "—".to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Every setting of `cfg`, in section order; `file` is the config file it was loaded from and
/// `env` the variable names present at load time.
pub fn effective(cfg: &Config, file: Option<&Path>, env: &[String]) -> Vec<SettingRow> {
    let yaml = file.map(|p| Figment::from(Yaml::file(p)));
    let mut rows = Vec::new();
    let Ok(serde_json::Value::Object(top)) = serde_json::to_value(cfg) else {
        return rows;
    };
    let mut push = |key: String, value: &serde_json::Value| {
        let env_var = env_name(&key);
        let from_env = env_var.as_ref().is_some_and(|n| {
            env.iter()
                .any(|e| e == n || e.strip_suffix("_FILE") == Some(n.as_str()))
        });
        let source = if from_env {
            "env"
        } else if yaml.as_ref().is_some_and(|y| y.find_value(&key).is_ok()) {
            "config.yml"
        } else {
            "default"
        };
        let value = if SECRET_KEYS.contains(&key.as_str()) {
            secret_value(cfg, &key).unwrap_or_default()
        } else {
            show(value)
        };
        rows.push(SettingRow {
            key,
            env: env_var,
            value,
            source,
        });
    };
    for (name, value) in top {
        match value {
            serde_json::Value::Object(section) => {
                for (k, v) in section {
                    push(format!("{name}.{k}"), &v);
                }
            }
            other => push(name, &other),
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_and_sources_named() {
        let env = vec![
            ("MISP_URL".to_string(), "https://misp.example".to_string()),
            (
                "MISP_KEY".to_string(),
                "misp-key-0123456789abcdef".to_string(),
            ),
        ];
        let cfg = Config::load(None, env.clone()).expect("load");
        let names: Vec<String> = env.into_iter().map(|(n, _)| n).collect();
        let rows = effective(&cfg, None, &names);
        let key = rows.iter().find(|r| r.key == "misp.key").expect("misp.key");
        assert_eq!(key.value, "••••cdef");
        assert_eq!(key.source, "env");
        let dir = rows
            .iter()
            .find(|r| r.key == "state.dir")
            .expect("state.dir");
        assert_eq!(dir.source, "default");
        assert!(rows.iter().all(|r| !r.value.contains("misp-key-0123")));
    }

    #[test]
    fn console_values_show_as_console_and_a_bad_one_leaves_the_config() {
        use crate::sources::misp::overrides::{Stamp, SCHEDULE_KEY};
        let dir = tempfile::tempdir().expect("tempdir");
        let state = State::open(dir.path()).expect("state");
        let env = vec![("MISP_URL".to_string(), "https://misp.example".to_string())];
        let cfg = Config::load(None, env).expect("load");
        let base = effective(&cfg, None, &["MISP_URL".into()]);
        let store = |every: &str| {
            let o = ScheduleOverride {
                schedule: ScheduleSetting::Interval {
                    every: every.into(),
                },
                set: Stamp::now("admin"),
            };
            state
                .kv_set(SCHEDULE_KEY, &serde_json::to_string(&o).expect("json"))
                .expect("kv");
        };
        store("20m");
        let v = view(&cfg, &base, Some(&state), Ok(Vec::new()), true).expect("view");
        let m = v.misp.expect("misp");
        assert_eq!(
            (m.schedule.as_str(), m.schedule_problem),
            ("every 20m", None)
        );
        let row = v
            .rows
            .iter()
            .find(|r| r.key == "misp.interval")
            .expect("row");
        assert_eq!((row.value.as_str(), row.source), ("20m", "console"));
        // Only a damaged or hand-edited state gets here: the config's schedule stays in force.
        store("soon");
        let v = view(&cfg, &base, Some(&state), Ok(Vec::new()), true).expect("view");
        let m = v.misp.expect("misp");
        assert_eq!(m.schedule, "every 1h");
        assert!(m
            .schedule_problem
            .is_some_and(|p| p.contains("misp.interval")));
    }
}

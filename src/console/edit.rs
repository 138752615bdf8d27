//! `/settings` and its edits: the page and its `/api/settings` twin, and the POSTs that store the
//! MISP schedule, a feed toggle or a `last_run_time` in the state database (the MISP source takes
//! them up from its next run). Each edit is validated like the config key it overrides, refused
//! with the page and a specific error (nothing stored), and logged with the user and old → new.

use super::gate::{ctx, html, Authed};
use super::server::Shared;
use super::settings::{self, misp_feeds, SettingsView};
use super::settings_page;
use crate::app::read_state;
use crate::sources::misp::overrides::{
    FeedToggle, FeedToggles, LastRunOverride, ScheduleOverride, ScheduleSetting, Stamp, FEEDS_KEY,
    LAST_RUN_KEY, SCHEDULE_KEY,
};
use crate::state::State;
use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use chrono::{DateTime, NaiveDateTime, Utc};
use tracing::{info, warn};

/// Why this console cannot edit.
pub(super) const READ_ONLY: &str =
    "This console was started with `iocsync console`: it reads the state only. \
     Edit these settings in the console of `iocsync run` (console.enabled).";

async fn gather(app: &Shared) -> Result<SettingsView, String> {
    let feeds = if app.cfg.misp.url.is_some() {
        misp_feeds(&app.cfg).await
    } else {
        Ok(Vec::new())
    };
    let app = app.clone();
    tokio::task::spawn_blocking(move || {
        let state = read_state(&app.cfg).map_err(|e| e.to_string())?;
        settings::view(
            &app.cfg,
            &app.settings,
            state.as_ref(),
            feeds,
            app.control.is_some(),
        )
        .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("state reader stopped: {e}"))?
}

/// The page, with `error` above the forms when an edit was refused.
async fn page(app: &Shared, s: &Authed, status: StatusCode, error: Option<&str>) -> Response {
    match gather(app).await {
        Ok(v) => (
            status,
            html(settings_page::settings(&ctx(app, &s.0), &v, error)),
        )
            .into_response(),
        Err(e) => {
            warn!(error = %e, "console: settings page failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                html(super::pages::message("Error", &e)),
            )
                .into_response()
        }
    }
}

pub(super) async fn settings_page(
    AxState(app): AxState<Shared>,
    axum::Extension(s): axum::Extension<Authed>,
) -> Response {
    page(&app, &s, StatusCode::OK, None).await
}

pub(super) async fn settings_api(AxState(app): AxState<Shared>) -> Response {
    match gather(&app).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

/// A refused edit: the page again with the reason, nothing stored.
async fn refuse(app: &Shared, s: &Authed, why: &str) -> Response {
    info!(user = %s.0.user, reason = %why, "console: settings edit refused");
    page(app, s, StatusCode::UNPROCESSABLE_ENTITY, Some(why)).await
}

/// Stores (`Some`) or drops (`None`) the console value of `key`; returns the old value.
async fn store(
    app: &Shared,
    key: &'static str,
    value: Option<String>,
) -> Result<Option<String>, String> {
    let dir = app.cfg.state.dir.clone();
    tokio::task::spawn_blocking(move || {
        let state = State::open(&dir)?;
        let old = state.kv_get(key)?;
        match &value {
            Some(v) => state.kv_set(key, v)?,
            None => state.kv_delete(key)?,
        }
        Ok::<_, crate::state::StateError>(old)
    })
    .await
    .map_err(|e| format!("state writer stopped: {e}"))?
    .map_err(|e| e.to_string())
}

/// The answer to any edit in a read-only console (`iocsync console`).
fn read_only(app: &Shared) -> Option<Response> {
    app.control.is_none().then(|| {
        (
            StatusCode::CONFLICT,
            html(super::pages::message("Read-only console", READ_ONLY)),
        )
            .into_response()
    })
}

/// Common end of an edit: stored, logged, the source told.
async fn save(
    app: &Shared,
    s: &Authed,
    key: &'static str,
    value: Option<String>,
    describe: impl Fn(Option<&str>) -> String,
) -> Response {
    let Some(control) = &app.control else {
        return read_only(app).unwrap_or_else(|| StatusCode::CONFLICT.into_response());
    };
    match store(app, key, value.clone()).await {
        Ok(old) => {
            info!(
                user = %s.0.user,
                setting = key,
                old = %describe(old.as_deref()),
                new = %describe(value.as_deref()),
                "console: setting changed; it applies from the next run"
            );
            control.settings_changed();
            Redirect::to("/settings").into_response()
        }
        Err(e) => {
            warn!(user = %s.0.user, setting = key, error = %e, "console: setting not stored");
            page(
                app,
                s,
                StatusCode::INTERNAL_SERVER_ERROR,
                Some(&format!("not stored: {e}")),
            )
            .await
        }
    }
}

/// The schedule form.
#[derive(serde::Deserialize)]
pub(super) struct ScheduleForm {
    #[serde(default)]
    action: String,
    #[serde(default)]
    form: String,
    #[serde(default)]
    interval: String,
    #[serde(default)]
    first_run_at: String,
    #[serde(default)]
    repeat_days: String,
    #[serde(default)]
    timezone: String,
}

fn schedule_of(f: &ScheduleForm) -> Result<ScheduleSetting, String> {
    match f.form.as_str() {
        "interval" => Ok(ScheduleSetting::Interval {
            every: f.interval.trim().to_string(),
        }),
        "daily" => {
            let days = f.repeat_days.trim();
            let every_days = if days.is_empty() {
                1
            } else {
                days.parse::<u32>().map_err(|_| {
                    format!("misp.repeat_days: `{days}` is not a whole number of days")
                })?
            };
            Ok(ScheduleSetting::Daily {
                at: f.first_run_at.trim().to_string(),
                every_days,
                timezone: f.timezone.trim().to_string(),
            })
        }
        other => Err(format!(
            "choose the schedule form: `interval` or `daily` (got `{other}`)"
        )),
    }
}

/// Describes a stored schedule for the log.
fn schedule_text(json: Option<&str>) -> String {
    match json.and_then(|j| serde_json::from_str::<ScheduleOverride>(j).ok()) {
        None => "config".into(),
        Some(o) => match o.schedule {
            ScheduleSetting::Interval { every } => format!("every {every}"),
            ScheduleSetting::Daily {
                at,
                every_days,
                timezone,
            } => format!("at {at} {timezone} every {every_days} day(s)"),
        },
    }
}

pub(super) async fn edit_schedule(
    AxState(app): AxState<Shared>,
    axum::Extension(s): axum::Extension<Authed>,
    Form(f): Form<ScheduleForm>,
) -> Response {
    if let Some(r) = read_only(&app) {
        return r;
    }
    if f.action == "reset" {
        return save(&app, &s, SCHEDULE_KEY, None, schedule_text).await;
    }
    let setting = match schedule_of(&f) {
        Ok(v) => v,
        Err(e) => return refuse(&app, &s, &e).await,
    };
    if let Err((key, message)) = setting.schedule(&app.cfg.misp) {
        return refuse(&app, &s, &format!("{key}: {message}")).await;
    }
    let value = ScheduleOverride {
        schedule: setting,
        set: Stamp::now(&s.0.user),
    };
    match serde_json::to_string(&value) {
        Ok(json) => save(&app, &s, SCHEDULE_KEY, Some(json), schedule_text).await,
        Err(e) => refuse(&app, &s, &e.to_string()).await,
    }
}

/// A feed toggle: `pushed` is `yes`, `no`, or `config` (drop the console's toggle).
#[derive(serde::Deserialize)]
pub(super) struct FeedForm {
    #[serde(default)]
    feed: String,
    #[serde(default)]
    pushed: String,
}

pub(super) async fn edit_feed(
    AxState(app): AxState<Shared>,
    axum::Extension(s): axum::Extension<Authed>,
    Form(f): Form<FeedForm>,
) -> Response {
    if let Some(r) = read_only(&app) {
        return r;
    }
    let pushed = match f.pushed.as_str() {
        "yes" => Some(true),
        "no" => Some(false),
        "config" => None,
        other => {
            return refuse(
                &app,
                &s,
                &format!("`pushed` must be yes, no or config (got `{other}`)"),
            )
            .await
        }
    };
    let id = f.feed.trim().to_string();
    // Only a feed this MISP lists can be toggled: a typo would otherwise hold back nothing.
    match misp_feeds(&app.cfg).await {
        Ok(feeds) if feeds.iter().any(|x| x.id == id) => {}
        Ok(_) => return refuse(&app, &s, &format!("this MISP has no feed with id `{id}`")).await,
        Err(e) => {
            return refuse(
                &app,
                &s,
                &format!("feed `{id}` not checked, nothing stored: {e}"),
            )
            .await
        }
    }
    let current = match read_toggles(&app).await {
        Ok(t) => t,
        Err(e) => return refuse(&app, &s, &e).await,
    };
    let mut toggles = current;
    match pushed {
        Some(p) => {
            toggles.insert(
                id.clone(),
                FeedToggle {
                    pushed: p,
                    set: Stamp::now(&s.0.user),
                },
            );
        }
        None => {
            toggles.remove(&id);
        }
    }
    let json = match serde_json::to_string(&toggles) {
        Ok(j) => j,
        Err(e) => return refuse(&app, &s, &e.to_string()).await,
    };
    let describe = move |json: Option<&str>| match json
        .and_then(|j| serde_json::from_str::<FeedToggles>(j).ok())
        .and_then(|t| t.get(&id).map(|t| t.pushed))
    {
        None => format!("feed {id}: config"),
        Some(true) => format!("feed {id}: pushed"),
        Some(false) => format!("feed {id}: disabled"),
    };
    save(&app, &s, FEEDS_KEY, Some(json), describe).await
}

async fn read_toggles(app: &Shared) -> Result<FeedToggles, String> {
    let dir = app.cfg.state.dir.clone();
    tokio::task::spawn_blocking(move || {
        let state = State::open(&dir).map_err(|e| e.to_string())?;
        crate::sources::misp::overrides::Overrides::read(&state)
            .map(|o| o.feeds)
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("state reader stopped: {e}"))?
}

/// The `last_run_time` form: `confirm` must be ticked.
#[derive(serde::Deserialize)]
pub(super) struct LastRunForm {
    #[serde(default)]
    action: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    confirm: String,
}

/// `2024-05-01T10:00` (the browser's datetime field), with seconds, with a space, RFC 3339, or
/// unix seconds; without an offset the time is UTC.
pub(super) fn parse_time(text: &str) -> Option<i64> {
    let t = text.trim();
    if let Ok(n) = t.parse::<i64>() {
        return Some(n);
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.timestamp());
    }
    [
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%d %H:%M:%S",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
    .map(|n| n.and_utc().timestamp())
}

pub(super) async fn edit_last_run(
    AxState(app): AxState<Shared>,
    axum::Extension(s): axum::Extension<Authed>,
    Form(f): Form<LastRunForm>,
) -> Response {
    if let Some(r) = read_only(&app) {
        return r;
    }
    let describe = |json: Option<&str>| match json
        .and_then(|j| serde_json::from_str::<LastRunOverride>(j).ok())
    {
        None => "the checkpoint's".to_string(),
        Some(o) => DateTime::from_timestamp(o.at, 0)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default(),
    };
    if f.action == "reset" {
        return save(&app, &s, LAST_RUN_KEY, None, describe).await;
    }
    let Some(at) = parse_time(&f.value) else {
        return refuse(
            &app,
            &s,
            &format!(
                "misp.last_run_time: `{}` is not a time (e.g. `2024-05-01T10:00`, UTC)",
                f.value
            ),
        )
        .await;
    };
    if at < 0 || at > Utc::now().timestamp() {
        return refuse(
            &app,
            &s,
            "misp.last_run_time: must be in the past (a future time would read nothing until then)",
        )
        .await;
    }
    if f.confirm != "yes" {
        return refuse(
            &app,
            &s,
            "misp.last_run_time: tick the confirmation: moving it re-reads (earlier) or skips (later) MISP attributes",
        )
        .await;
    }
    let value = LastRunOverride {
        at,
        set: Stamp::now(&s.0.user),
        applied: None,
    };
    match serde_json::to_string(&value) {
        Ok(json) => save(&app, &s, LAST_RUN_KEY, Some(json), describe).await,
        Err(e) => refuse(&app, &s, &e.to_string()).await,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn times_in_the_forms_people_type() {
        assert_eq!(parse_time("2024-05-01T10:00"), Some(1_714_557_600));
        assert_eq!(parse_time("2024-05-01 10:00:00"), Some(1_714_557_600));
        assert_eq!(parse_time("2024-05-01T12:00:00+02:00"), Some(1_714_557_600));
        assert_eq!(parse_time("1714557600"), Some(1_714_557_600));
        assert_eq!(parse_time("yesterday"), None);
    }
}

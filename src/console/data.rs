//! The facts behind the console's pages, gathered from the state database, the process metrics,
//! the daemon's [`Control`] and `iocsync check`; each is `Serialize` for the `/api/` twins.

use crate::control::{Control, ControlSnapshot};
use crate::pipeline::RunStats;
use crate::state::{RunRecord, State, StateError};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// The dashboard.
#[derive(Debug, Clone, Serialize)]
pub struct Dashboard {
    /// Entries live in the sinks now, over all sinks (what iocsync has sent and not withdrawn).
    pub live_total: i64,
    /// Live entries per sink.
    pub live_by_sink: Vec<(String, i64)>,
    /// Live entries by IOC type (all sinks).
    pub live_by_kind: Vec<(String, i64)>,
    /// IOCs created in the sinks over the recorded runs (the last 20).
    pub created_recorded_runs: u64,
    /// The last recorded run.
    pub last_run: Option<RunSummary>,
    /// SentinelOne API calls made by this process (`None`: no SentinelOne call counted here).
    pub s1_api_calls: Option<u64>,
    /// Seconds since this process started.
    pub uptime_secs: u64,
    /// Source checkpoints: source, position, when it was saved, seconds since.
    pub checkpoints: Vec<Checkpoint>,
    /// Intents outstanding.
    pub pending_intents: i64,
    /// Entries the sinks refused (dead letters).
    pub dead_letters: i64,
    /// The daemon's control state (`None` in `iocsync console` alone).
    pub control: Option<ControlSnapshot>,
    /// When the state's figures were counted (UTC); `None` while the first count is running, when
    /// every figure from the state is still to come.
    pub counted_at: Option<String>,
    /// How long that count took, in milliseconds.
    pub count_ms: Option<u64>,
    /// Seconds until the next count while the dashboard is looked at.
    pub recount_secs: Option<u64>,
}

impl Dashboard {
    /// Only what needs no state: uptime, the worker, API calls; nothing counted yet.
    pub fn live_only(uptime_secs: u64, control: Option<&Control>) -> Dashboard {
        Dashboard {
            live_total: 0,
            live_by_sink: Vec::new(),
            live_by_kind: Vec::new(),
            created_recorded_runs: 0,
            last_run: None,
            s1_api_calls: s1_api_calls(),
            uptime_secs,
            checkpoints: Vec::new(),
            pending_intents: 0,
            dead_letters: 0,
            control: control.map(Control::snapshot),
            counted_at: None,
            count_ms: None,
            recount_secs: None,
        }
    }
}

/// A source's saved position.
#[derive(Debug, Clone, Serialize)]
pub struct Checkpoint {
    /// Source name.
    pub source: String,
    /// OpenCTI event id / MISP last_run_time / file offset.
    pub position: String,
    /// When it was saved.
    pub saved: String,
    /// Seconds since it was saved.
    pub lag_secs: i64,
}

/// A run in the list.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Row id (`/runs/{id}`).
    pub id: i64,
    /// Source name.
    pub source: String,
    /// Start time, UTC.
    pub started: String,
    /// Seconds.
    pub duration_secs: f64,
    /// Events received.
    pub received: u64,
    /// Creates + updates + deletes over all sinks.
    pub pushed: u64,
    /// Creates over all sinks.
    pub created: u64,
    /// Pushed per sink and type: (sink, type, count).
    pub pushed_by: Vec<(String, String, u64)>,
    /// Skips by reason.
    pub skipped: Vec<(String, u64)>,
    /// Ignored because their MISP feed is disabled.
    pub ignored_disabled_feed: u64,
    /// Dead letters.
    pub dead_lettered: u64,
    /// Errors.
    pub errors: Vec<String>,
}

fn fmt_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

impl RunSummary {
    /// From a stored run.
    pub fn from_record(r: &RunRecord) -> RunSummary {
        let s: RunStats = serde_json::from_value(r.stats.clone()).unwrap_or_default();
        let mut pushed_by = Vec::new();
        let (mut pushed, mut created) = (0, 0);
        for (sink, k) in &s.sinks {
            let mut by: std::collections::BTreeMap<&str, u64> = Default::default();
            for m in [&k.created, &k.updated, &k.deleted] {
                for (kind, n) in m {
                    *by.entry(kind).or_default() += n;
                    pushed += n;
                }
            }
            created += k.created.values().sum::<u64>();
            pushed_by.extend(
                by.into_iter()
                    .map(|(t, n)| (sink.clone(), t.to_string(), n)),
            );
        }
        let ignored_disabled_feed = s
            .skipped
            .iter()
            .filter(|(k, _)| k.contains("feed"))
            .map(|(_, v)| *v)
            .sum();
        RunSummary {
            id: r.id,
            source: r.source.clone(),
            started: fmt_ms(r.started_ms),
            duration_secs: (r.ended_ms - r.started_ms) as f64 / 1000.0,
            received: s.received,
            pushed,
            created,
            pushed_by,
            skipped: s.skipped.into_iter().collect(),
            ignored_disabled_feed,
            dead_lettered: s.dead_lettered,
            errors: s.errors,
        }
    }
}

/// SentinelOne API calls counted in this process's metrics.
pub fn s1_api_calls() -> Option<u64> {
    let text = crate::metrics::global().render();
    let mut total = None;
    for line in text.lines() {
        if line.starts_with("iocsync_api_calls_total{") && line.contains("remote=\"sentinelone\"") {
            let n = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
            *total.get_or_insert(0) += n as u64;
        }
    }
    total
}

/// Gathers the dashboard (`state` `None`: no database yet).
pub fn dashboard(
    state: Option<&State>,
    uptime_secs: u64,
    control: Option<&Control>,
) -> Result<Dashboard, StateError> {
    let mut d = Dashboard::live_only(uptime_secs, control);
    let Some(state) = state else {
        return Ok(d);
    };
    let o = state.overview()?;
    d.live_by_sink = o
        .sinks
        .iter()
        .map(|(s, live, _, _)| (s.clone(), *live))
        .collect();
    d.live_total = o.sinks.iter().map(|(_, live, _, _)| live).sum();
    d.dead_letters = o.sinks.iter().map(|(_, _, _, rej)| rej).sum();
    d.pending_intents = o.pending_intents;
    let now = Utc::now().timestamp_millis();
    d.checkpoints = o
        .checkpoints
        .into_iter()
        .map(|(source, position, at)| Checkpoint {
            source,
            position,
            saved: fmt_ms(at),
            lag_secs: (now - at).max(0) / 1000,
        })
        .collect();
    d.live_by_kind = state.live_by_kind()?;
    let runs = state.runs()?;
    let summaries: Vec<RunSummary> = runs.iter().map(RunSummary::from_record).collect();
    d.created_recorded_runs = summaries.iter().map(|r| r.created).sum();
    d.last_run = summaries.into_iter().next();
    Ok(d)
}

/// One `check` line: a component, whether it passed, what `check` said, and when.
#[derive(Debug, Clone, Serialize)]
pub struct StatusRow {
    /// `source misp`, `sink sentinelone`, `state dir (...)`, `config`.
    pub component: String,
    /// ✓ (true) or ✗ (false); warnings (⚠) count as passed.
    pub ok: bool,
    /// `check`'s words after the component.
    pub detail: String,
    /// When this row was checked (UTC), by the full check or its own re-check.
    pub checked_at: String,
}

/// The status page: `check`'s rows and when they were taken.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// When the last full check ran.
    pub checked_at: String,
    /// One row per line of `check`.
    pub rows: Vec<StatusRow>,
}

/// Now, as the console shows times.
pub fn now_text() -> String {
    Utc::now().format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `check`'s output lines as rows, all stamped `at`.
fn rows_of(text: &str, at: &str) -> Vec<StatusRow> {
    text.lines()
        .filter_map(|line| {
            let (ok, rest) = if let Some(r) = line.strip_prefix("✓ ") {
                (true, r)
            } else if let Some(r) = line.strip_prefix("✗ ") {
                (false, r)
            } else if let Some(r) = line.strip_prefix("⚠ ") {
                (true, r)
            } else {
                return None;
            };
            let (component, detail) = rest.split_once(": ").unwrap_or((rest, ""));
            Some(StatusRow {
                component: component.to_string(),
                ok,
                detail: detail.to_string(),
                checked_at: at.to_string(),
            })
        })
        .collect()
}

/// Runs `iocsync check` (the same code and words) and turns its lines into rows.
pub async fn run_check(cfg: &crate::config::Config) -> Status {
    let mut out = Vec::new();
    let result = crate::app::check(cfg, &mut out).await;
    let at = now_text();
    let mut rows = rows_of(&String::from_utf8_lossy(&out), &at);
    if rows.is_empty() {
        if let Err(e) = result {
            // `check` stopped before probing (invalid configuration): show why.
            rows.push(StatusRow {
                component: "config".into(),
                ok: false,
                detail: e.to_string(),
                checked_at: at.clone(),
            });
        }
    }
    Status {
        checked_at: at,
        rows,
    }
}

/// Re-runs one component's probe of `iocsync check` (a label of
/// [`crate::app::check_components`]); its row (or rows: a TLS warning and a probe never share one).
pub async fn run_check_component(cfg: &crate::config::Config, component: &str) -> Vec<StatusRow> {
    let mut out = Vec::new();
    // The outcome is in the line; the summary error adds nothing to one row.
    let _ = crate::app::check_component(cfg, component, &mut out).await;
    rows_of(&String::from_utf8_lossy(&out), &now_text())
}

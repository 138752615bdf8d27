//! The Status page and its per-row re-check: the rows of `iocsync check` (kept from the last full
//! check, each with when it was checked), the worker's and the reconcile's rows read live, and
//! `POST /control/recheck` re-running one component's probe.

use super::data::{self, Status, StatusRow};
use super::gate::{ctx, html, Authed};
use super::pages;
use super::server::Shared;
use crate::config::Config;
use crate::control::Control;
use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use tracing::{info, warn};

/// The reconcile row's component name.
const RECONCILE: &str = "reconcile";

/// The last full check (running one when there is none: probes only read), with the live rows.
async fn status_data(app: &Shared) -> Status {
    let mut status = {
        let mut guard = app.status.lock().await;
        if guard.is_none() {
            *guard = Some(data::run_check(&app.cfg).await);
        }
        guard.clone().unwrap_or_else(|| Status {
            checked_at: String::new(),
            rows: Vec::new(),
        })
    };
    let now = data::now_text();
    if let Some(c) = &app.control {
        let snap = c.snapshot();
        status.rows.push(StatusRow {
            component: worker_label(c),
            ok: true,
            detail: if snap.paused {
                "paused (Resume on the Live page)".into()
            } else if snap.run_in_progress {
                "running a batch".into()
            } else {
                "running".into()
            },
            checked_at: now.clone(),
        });
    }
    status
        .rows
        .push(reconcile_row(app.control.is_some(), &app.cfg, now));
    status
}

fn worker_label(c: &Control) -> String {
    format!("worker {}", c.snapshot().source)
}

pub(super) async fn status_page(
    AxState(app): AxState<Shared>,
    axum::Extension(Authed(s)): axum::Extension<Authed>,
) -> Response {
    let st = status_data(&app).await;
    html(pages::status(&ctx(&app, &s), &st))
}

pub(super) async fn status_api(AxState(app): AxState<Shared>) -> Response {
    Json(status_data(&app).await).into_response()
}

/// The re-check form: which row.
#[derive(serde::Deserialize)]
pub(super) struct RecheckForm {
    #[serde(default)]
    component: String,
}

/// `POST /control/recheck`: re-runs the probe of one row (`component`, as the row names it), keeps
/// its answer and time, and goes back to /status. A component this configuration has no row for
/// is a 400.
pub(super) async fn recheck(
    AxState(app): AxState<Shared>,
    axum::Extension(Authed(s)): axum::Extension<Authed>,
    Form(form): Form<RecheckForm>,
) -> Response {
    let component = form.component.trim().to_string();
    let probed = match crate::app::check_components(&app.cfg) {
        Ok(labels) => labels,
        // `check` stops at an invalid configuration: its only row is "config".
        Err(_) => vec!["config".to_string()],
    };
    let live = component == RECONCILE
        || app
            .control
            .as_ref()
            .is_some_and(|c| worker_label(c) == component);
    if !live && !probed.contains(&component) {
        warn!(user = %s.user, component = %component, "console: re-check of an unknown component refused");
        return (
            StatusCode::BAD_REQUEST,
            html(pages::message(
                "Unknown component",
                &format!(
                    "There is no status row named “{component}”. Components: {}.",
                    probed.join(", ")
                ),
            )),
        )
            .into_response();
    }
    info!(user = %s.user, component = %component, "console: re-check requested");
    if component == "config" {
        let fresh = data::run_check(&app.cfg).await;
        *app.status.lock().await = Some(fresh);
    } else if !live {
        // Probe first, lock after: a slow remote must not hold up the Status page meanwhile.
        let rows = data::run_check_component(&app.cfg, &component).await;
        let mut guard = app.status.lock().await;
        if let Some(status) = guard.as_mut() {
            merge(status, &component, rows);
        } else {
            *guard = Some(data::run_check(&app.cfg).await);
        }
    }
    // The worker's and reconcile's rows are read afresh whenever the page renders.
    Redirect::to("/status").into_response()
}

/// Replaces the rows of `component` with `rows` (in place; appended when it had none).
fn merge(status: &mut Status, component: &str, rows: Vec<StatusRow>) {
    match status.rows.iter().position(|r| r.component == component) {
        Some(at) => {
            status.rows.retain(|r| r.component != component);
            let at = at.min(status.rows.len());
            status.rows.splice(at..at, rows);
        }
        None => status.rows.extend(rows),
    }
}

/// The Status page's reconcile row: the daemon's last scheduled reconcile, or how to get one.
fn reconcile_row(in_daemon: bool, cfg: &Config, now: String) -> StatusRow {
    let component = RECONCILE.to_string();
    match crate::reconcile::last() {
        Some(last) => StatusRow {
            component,
            ok: last.drift == 0,
            detail: format!(
                "{} (at {}){}",
                last.summary,
                last.at.format("%Y-%m-%d %H:%M:%S UTC"),
                if last.drift == 0 {
                    ""
                } else {
                    "; `iocsync reconcile --apply` repairs it"
                }
            ),
            checked_at: now,
        },
        None => StatusRow {
            component,
            ok: true,
            detail: match (in_daemon, cfg.pipeline.reconcile_interval) {
                (true, Some(every)) if !every.is_zero() => format!(
                    "scheduled every {}; no pass has finished yet",
                    humantime_serde::re::humantime::format_duration(every)
                ),
                (true, _) => {
                    "not scheduled (pipeline.reconcile_interval); run `iocsync reconcile`".into()
                }
                (false, _) => "shown by the daemon's console; here, run `iocsync reconcile`".into(),
            },
            checked_at: now,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(c: &str, d: &str) -> StatusRow {
        StatusRow {
            component: c.into(),
            ok: true,
            detail: d.into(),
            checked_at: String::new(),
        }
    }

    #[test]
    fn a_recheck_replaces_its_row_in_place() {
        let mut s = Status {
            checked_at: String::new(),
            rows: vec![row("source misp", "old"), row("sink jsonl", "old")],
        };
        merge(&mut s, "source misp", vec![row("source misp", "new")]);
        let got: Vec<_> = s
            .rows
            .iter()
            .map(|r| (r.component.as_str(), r.detail.as_str()))
            .collect();
        assert_eq!(got, [("source misp", "new"), ("sink jsonl", "old")]);
        merge(&mut s, "sentinelone", vec![row("sentinelone", "tls")]);
        assert_eq!(s.rows.len(), 3);
    }
}

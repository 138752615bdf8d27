//! The dashboard's figures, counted off the request path: a background task counts the state
//! (a scan: about a second at a million values) and publishes the result; requests serve the last
//! count with the cheap live facts (uptime, worker, API calls) put in fresh. The pause between
//! counts follows how long a count takes ([`pause_after`]), and while nobody looks at the
//! dashboard the task waits for a look instead of scanning. The pipeline is not involved: the
//! count reads its own read-only connection.

use super::data::{self, Dashboard};
use super::gate::{ctx, html, Authed};
use super::pages;
use super::server::{with_state, PageError, Shared};
use crate::control::Control;
use axum::extract::State as AxState;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Counts are at least this far apart.
const MIN_PAUSE: Duration = Duration::from_secs(5);
/// ... and at most this far while the dashboard is looked at.
const MAX_PAUSE: Duration = Duration::from_secs(300);
/// The pause is this many times the count's own duration: counting takes at most ~5 % of a core.
const PAUSE_FACTOR: u32 = 20;
/// How long a request made before the very first count has finished waits for it (then it shows
/// the figures as still being counted).
const FIRST_WAIT: Duration = Duration::from_millis(30);

/// The pause after a count that took `took`.
pub fn pause_after(took: Duration) -> Duration {
    took.saturating_mul(PAUSE_FACTOR)
        .clamp(MIN_PAUSE, MAX_PAUSE)
}

/// One count of the state.
#[derive(Debug, Clone)]
struct Counted {
    dashboard: Dashboard,
    took: Duration,
    pause: Duration,
}

/// The last count and the signal that someone looked.
pub(super) struct Feed {
    tx: watch::Sender<Option<Arc<Counted>>>,
    viewed: AtomicBool,
    wake: Notify,
}

impl Feed {
    pub(super) fn new() -> Feed {
        Feed {
            tx: watch::Sender::new(None),
            viewed: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    fn looked(&self) {
        self.viewed.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }
}

/// Starts the counting task; it ends with `stop`.
pub(super) fn spawn(app: Shared, stop: CancellationToken) {
    tokio::spawn(async move {
        loop {
            let started = Instant::now();
            let counted = with_state(&app, |s| data::dashboard(s, 0, None)).await;
            let took = started.elapsed();
            let pause = pause_after(took);
            match counted {
                Ok(mut dashboard) => {
                    dashboard.counted_at = Some(data::now_text());
                    dashboard.count_ms = Some(took.as_millis() as u64);
                    dashboard.recount_secs = Some(pause.as_secs());
                    app.dashboard.tx.send_replace(Some(Arc::new(Counted {
                        dashboard,
                        took,
                        pause,
                    })));
                }
                // The last good count stays on show; the page says when it was taken.
                Err(e) => warn!(error = %e.0, "console: counting the dashboard failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.cancelled() => return,
            }
            if !app.dashboard.viewed.swap(false, Ordering::Relaxed) {
                // Nobody looked since the last count: wait for a look rather than scan for no one.
                tokio::select! {
                    _ = app.dashboard.wake.notified() => {}
                    _ = stop.cancelled() => return,
                }
                app.dashboard.viewed.store(false, Ordering::Relaxed);
            }
        }
    });
}

/// The dashboard as of the last count, with the live facts of now. Never counts itself.
pub(super) async fn current(app: &Shared) -> Dashboard {
    app.dashboard.looked();
    let mut rx = app.dashboard.tx.subscribe();
    let last = rx.borrow().clone();
    let last = match last {
        Some(c) => Some(c),
        None => tokio::time::timeout(FIRST_WAIT, rx.wait_for(Option::is_some))
            .await
            .ok()
            .and_then(Result::ok)
            .and_then(|c| c.clone()),
    };
    let uptime = app.started.elapsed().as_secs();
    let control = app.control.as_ref();
    match last {
        Some(c) => {
            let mut d = c.dashboard.clone();
            d.uptime_secs = uptime;
            d.control = control.map(Control::snapshot);
            d.s1_api_calls = data::s1_api_calls();
            tracing::trace!(took = ?c.took, pause = ?c.pause, "dashboard served from the last count");
            d
        }
        // The first count is still running: the figures show as being counted.
        None => Dashboard::live_only(uptime, control),
    }
}

pub(super) async fn page(
    AxState(app): AxState<Shared>,
    axum::Extension(Authed(s)): axum::Extension<Authed>,
) -> Result<Response, PageError> {
    let d = current(&app).await;
    Ok(html(pages::dashboard(&ctx(&app, &s), &d)))
}

pub(super) async fn api(AxState(app): AxState<Shared>) -> Result<Response, PageError> {
    Ok(Json(current(&app).await).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_follows_the_count() {
        assert_eq!(pause_after(Duration::from_millis(2)), MIN_PAUSE);
        assert_eq!(
            pause_after(Duration::from_millis(900)),
            Duration::from_secs(18)
        );
        assert_eq!(pause_after(Duration::from_secs(60)), MAX_PAUSE);
    }
}

//! Operator control of a running daemon: pause and resume the pipeline, ask the source for a run
//! now, and a snapshot of that for the console.
//!
//! [`Control`] is shared (cheap clones) between whoever gives orders (the console) and whoever
//! obeys them: the pipeline watches the pause flag between batches, the MISP source wakes from its
//! schedule wait on a run request. Nothing here blocks; the orders are taken up at the next safe
//! point (a settled, checkpointed batch), so pausing never loses or repeats an event.

use crate::logring::LogRing;
use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};
use tokio::sync::{watch, Notify};

/// Why a source cannot run on demand: OpenCTI streams continuously.
const NOT_SUPPORTED_STREAM: &str =
    "the OpenCTI source reads a live stream continuously: there is no run to start; \
     Pause/Resume stop and continue it";
/// Why a source cannot run on demand: the file source reads its file once per invocation.
const NOT_SUPPORTED_FILE: &str = "the file source reads its file once per `iocsync run`: \
     start the command again to read it again";
/// Why a source cannot run on demand (any other source).
const NOT_SUPPORTED_OTHER: &str =
    "this source does not run on a schedule: there is no run to start";

/// Operator control of one running pipeline and its source (cheap to clone: an `Arc` inside).
#[derive(Clone, Debug)]
pub struct Control {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    source: &'static str,
    supports_run_now: bool,
    /// True while paused; the pipeline waits on it.
    paused: watch::Sender<bool>,
    /// Wakes the source's schedule wait (a permit is kept if it is not waiting yet).
    run_now: Notify,
    /// Wakes the source's schedule wait to re-read its settings (a console edit).
    settings: Notify,
    /// While a run is requested, read or applied (until the pipeline records it): the
    /// [`LogRing`] sequence number of its first log line.
    run: Mutex<Option<u64>>,
    /// When the source's next scheduled run is due.
    next_run: Mutex<Option<DateTime<Utc>>>,
}

/// The answer to [`Control::request_run`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunRequest {
    /// The source starts a run now (after the pause, if paused).
    Accepted,
    /// A run is already being read or applied; nothing more is started.
    AlreadyRunning,
    /// This source has no runs to start; the text says why, for the operator.
    NotSupported(&'static str),
}

/// What the console shows about the control of the running daemon.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ControlSnapshot {
    /// The source's name (`opencti`, `misp`, `file`).
    pub source: &'static str,
    /// True while the pipeline is paused (or will pause after the batch in flight).
    pub paused: bool,
    /// True when [`Control::request_run`] can start a run (MISP).
    pub supports_run_now: bool,
    /// True from a run request (or the start of a run) until the run is recorded.
    pub run_in_progress: bool,
    /// When the next scheduled run is due (MISP, between runs).
    pub next_run: Option<DateTime<Utc>>,
}

impl Control {
    /// A control for `source`; `supports_run_now` is true for a scheduled source (MISP).
    pub fn new(source: &'static str, supports_run_now: bool) -> Control {
        Control {
            inner: Arc::new(Inner {
                source,
                supports_run_now,
                paused: watch::Sender::new(false),
                run_now: Notify::new(),
                settings: Notify::new(),
                run: Mutex::new(None),
                next_run: Mutex::new(None),
            }),
        }
    }

    /// Pauses the pipeline: it finishes the batch in flight, writes its checkpoint and stops taking
    /// events (the bounded channel fills and the source waits).
    pub fn pause(&self) {
        self.inner
            .paused
            .send_if_modified(|p| !std::mem::replace(p, true));
    }

    /// Resumes a paused pipeline: it continues from where it stopped (nothing lost, nothing twice).
    pub fn resume(&self) {
        self.inner
            .paused
            .send_if_modified(|p| std::mem::replace(p, false));
    }

    /// True while paused.
    pub fn is_paused(&self) -> bool {
        *self.inner.paused.borrow()
    }

    /// Asks the source for a run now: MISP polls at once instead of waiting for its schedule.
    pub fn request_run(&self) -> RunRequest {
        if !self.inner.supports_run_now {
            return RunRequest::NotSupported(match self.inner.source {
                "opencti" => NOT_SUPPORTED_STREAM,
                "file" => NOT_SUPPORTED_FILE,
                _ => NOT_SUPPORTED_OTHER,
            });
        }
        {
            // The run counts as started from the request on, so a second request cannot queue a
            // second run.
            let mut run = self.run();
            if run.is_some() {
                return RunRequest::AlreadyRunning;
            }
            *run = Some(LogRing::global().next_seq());
        }
        tracing::info!(source = self.inner.source, "run requested by operator");
        self.inner.run_now.notify_one();
        RunRequest::Accepted
    }

    /// The current state, for display.
    pub fn snapshot(&self) -> ControlSnapshot {
        ControlSnapshot {
            source: self.inner.source,
            paused: self.is_paused(),
            supports_run_now: self.inner.supports_run_now,
            run_in_progress: self.run().is_some(),
            next_run: *self
                .inner
                .next_run
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        }
    }

    fn run(&self) -> std::sync::MutexGuard<'_, Option<u64>> {
        // Only an `Option<u64>` is behind it: a panic elsewhere cannot leave it half-written.
        self.inner.run.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The source's name.
    pub fn source(&self) -> &'static str {
        self.inner.source
    }

    /// Resolves once not paused (at once when not paused).
    pub async fn wait_resumed(&self) {
        let mut rx = self.inner.paused.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|paused| !paused).await;
    }

    /// Resolves once paused (at once when paused).
    pub async fn wait_paused(&self) {
        let mut rx = self.inner.paused.subscribe();
        let _ = rx.wait_for(|paused| *paused).await;
    }

    /// Resolves when the operator asks for a run ([`Control::request_run`] accepted); a request
    /// made while nobody waited is kept for the next wait.
    pub async fn run_requested(&self) {
        self.inner.run_now.notified().await;
    }

    /// Tells the source its settings in the state changed (the console saved an edit): a
    /// scheduled source recomputes its next run. A change made while nobody waited is kept.
    pub fn settings_changed(&self) {
        self.inner.settings.notify_one();
    }

    /// Resolves when [`Control::settings_changed`] was called.
    pub async fn settings_change(&self) {
        self.inner.settings.notified().await;
    }

    /// Marks a run as started (by the source when it begins reading, or by the pipeline at the
    /// run's first event, whichever is first) and returns the [`LogRing`] sequence number of the
    /// run's first log line.
    pub fn begin_run(&self) -> u64 {
        self.begin_run_from(LogRing::global().next_seq())
    }

    /// [`Control::begin_run`] for a run whose log started at line `first_seq` (the pipeline's first
    /// run starts with the invocation); when the run had begun already, its first line stays.
    pub fn begin_run_from(&self, first_seq: u64) -> u64 {
        *self.run().get_or_insert(first_seq)
    }

    /// Marks the run as over (recorded by the pipeline, or failed in the source).
    pub fn end_run(&self) {
        *self.run() = None;
    }

    /// Records when the next scheduled run is due (`None` while running or unscheduled).
    pub fn set_next_run(&self, at: Option<DateTime<Utc>>) {
        *self
            .inner
            .next_run
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_now_is_refused_with_a_reason_where_unsupported() {
        for source in ["opencti", "file"] {
            match Control::new(source, false).request_run() {
                RunRequest::NotSupported(why) => {
                    assert!(why.to_lowercase().contains(source), "{why}")
                }
                other => panic!("{source}: {other:?}"),
            }
        }
        let misp = Control::new("misp", true);
        assert_eq!(misp.request_run(), RunRequest::Accepted);
        // Until the run is over, another request starts nothing more.
        assert_eq!(misp.request_run(), RunRequest::AlreadyRunning);
        let first = misp.begin_run();
        assert_eq!(
            misp.begin_run_from(first + 100),
            first,
            "the run keeps its start"
        );
        assert_eq!(misp.request_run(), RunRequest::AlreadyRunning);
        assert!(misp.snapshot().run_in_progress);
        misp.end_run();
        assert!(!misp.snapshot().run_in_progress);
    }

    #[tokio::test]
    async fn pause_and_resume_are_seen_by_waiters_and_requests_are_kept() {
        let control = Control::new("misp", true);
        control.wait_resumed().await; // not paused: returns at once
        control.pause();
        control.pause();
        assert!(control.is_paused() && control.snapshot().paused);
        let waiter = tokio::spawn({
            let c = control.clone();
            async move { c.wait_resumed().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        control.resume();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken by resume")
            .expect("task");
        // A request made before anyone waits is kept for the next wait.
        assert_eq!(control.request_run(), RunRequest::Accepted);
        tokio::time::timeout(std::time::Duration::from_secs(5), control.run_requested())
            .await
            .expect("kept request");
        let at = Utc::now();
        control.set_next_run(Some(at));
        assert_eq!(control.snapshot().next_run, Some(at));
    }
}

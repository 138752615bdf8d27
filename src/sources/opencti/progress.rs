//! The stream's progress: the `--once` target from the `connected` message, lag to it, and when
//! the source has caught up.

use super::event::parse_stream_id;
use crate::metrics;
use std::time::Duration;
use tokio::time::Instant;
use tracing::info;

/// Progress, lag and the `--once` target.
pub(super) struct Tracker {
    /// The `connected` message's `lastEventId`, parsed.
    pub(super) target: Option<(u64, u64)>,
    pub(super) target_text: Option<String>,
    pub(super) interval: Duration,
    pub(super) last_log: Instant,
    pub(super) since_log: u64,
    pub(super) total: u64,
}

impl Tracker {
    pub(super) fn new(interval: Duration) -> Self {
        Tracker {
            target: None,
            target_text: None,
            interval,
            last_log: Instant::now(),
            since_log: 0,
            total: 0,
        }
    }

    pub(super) fn set_target(&mut self, last_event_id: Option<String>) {
        self.target = last_event_id.as_deref().and_then(parse_stream_id);
        self.target_text = last_event_id;
    }

    pub(super) fn emitted(&mut self, position: &str) {
        self.total += 1;
        self.since_log += 1;
        if let Some((ms, _)) = parse_stream_id(position) {
            let now = chrono::Utc::now().timestamp_millis().max(0) as u64;
            let lag = now.saturating_sub(ms) as f64 / 1000.0;
            metrics::global().set("iocsync_source_lag_seconds", &[], lag);
        }
        let elapsed = self.last_log.elapsed();
        if elapsed >= self.interval {
            let rate = self.since_log as f64 / elapsed.as_secs_f64().max(0.001);
            info!(events = self.total, rate = format!("{rate:.1}/s"), position = %position,
                stream_last_id = ?self.target_text, "stream progress");
            self.last_log = Instant::now();
            self.since_log = 0;
        }
    }

    /// Caught up: an emitted id reached the `connected` message's `lastEventId`; or, when the
    /// server gave no usable target, a heartbeat with nothing else queued. (A heartbeat alone is
    /// not enough when a target exists: the server also heartbeats during a slow recover replay.)
    pub(super) fn caught_up(&self, position: &str, heartbeat: bool, nothing_queued: bool) -> bool {
        match (parse_stream_id(position), self.target) {
            (Some(p), Some(t)) => p >= t,
            (_, None) => heartbeat && nothing_queued,
            (None, Some(_)) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caught_up_rules() {
        let mut t = Tracker::new(Duration::from_secs(10));
        assert!(t.caught_up("5-0", true, true), "no target: idle heartbeat");
        assert!(!t.caught_up("5-0", false, true));
        t.set_target(Some("10-2".into()));
        assert!(
            !t.caught_up("10-1", true, true),
            "heartbeat before the target"
        );
        assert!(t.caught_up("10-2", false, false));
        assert!(t.caught_up("11-0", true, false));
    }
}

//! Gathering source events into micro-batches.

use crate::model::{EventKind, SourceEvent};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Collects up to `max` events: waits for the first, then for more until `linger` has passed.
/// A `Reset` or `RunEnd` event closes the batch (events after it wait for the next batch). Returns
/// empty when the channel closed or on shutdown.
///
/// Events are taken in bulk (`recv_many`): one wake-up per burst instead of a hand-off per event.
pub(super) async fn collect(
    events: &mut mpsc::Receiver<SourceEvent>,
    pending: &mut VecDeque<SourceEvent>,
    max: usize,
    linger: Duration,
    shutdown: &CancellationToken,
) -> Vec<SourceEvent> {
    let closes = |e: &SourceEvent| matches!(e.kind, EventKind::Reset | EventKind::RunEnd);
    let mut batch = Vec::new();
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + linger;
    loop {
        while let Some(e) = pending.pop_front() {
            let done = closes(&e);
            batch.push(e);
            if done {
                return batch;
            }
            if batch.len() >= max {
                return batch;
            }
        }
        let want = max - batch.len();
        let got = if batch.is_empty() {
            tokio::select! {
                n = events.recv_many(&mut buf, want) => n,
                _ = shutdown.cancelled() => 0,
            }
        } else {
            tokio::select! {
                n = events.recv_many(&mut buf, want) => n,
                _ = tokio::time::sleep_until(deadline) => 0,
                _ = shutdown.cancelled() => 0,
            }
        };
        if got == 0 {
            return batch;
        }
        pending.extend(buf.drain(..));
    }
}

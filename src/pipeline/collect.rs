//! Gathering source events into micro-batches.

use crate::model::{EventKind, SourceEvent};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Collects up to `max` events: waits for the first, then for more until `linger` after collecting
/// began (so an event that ends a long idle spell is sent at once, and a steady stream is cut into
/// batches at least every `linger`).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Payload;

    fn event(position: &str, kind: EventKind) -> SourceEvent {
        SourceEvent {
            position: Some(position.into()),
            kind,
            payload: Payload::None,
        }
    }

    fn positions(batch: &[SourceEvent]) -> Vec<&str> {
        batch.iter().filter_map(|e| e.position.as_deref()).collect()
    }

    /// Events that come within `linger` of the start of collecting join the batch; later ones wait
    /// for the next; after a long wait, the first event is sent at once.
    #[tokio::test(start_paused = true)]
    async fn a_batch_lingers_for_stragglers_then_closes() {
        let (tx, mut rx) = mpsc::channel(16);
        let shutdown = CancellationToken::new();
        let sender = tokio::spawn(async move {
            tx.send(event("1", EventKind::Create)).await.expect("send");
            tokio::time::sleep(Duration::from_millis(400)).await;
            tx.send(event("2", EventKind::Create)).await.expect("send");
            tokio::time::sleep(Duration::from_millis(200)).await;
            tx.send(event("3", EventKind::Create)).await.expect("send");
            tokio::time::sleep(Duration::from_secs(60)).await;
            tx.send(event("4", EventKind::Create)).await.expect("send");
            tx
        });
        let mut pending = VecDeque::new();
        let linger = Duration::from_millis(500);
        let started = tokio::time::Instant::now();
        let first = collect(&mut rx, &mut pending, 100, linger, &shutdown).await;
        assert_eq!(positions(&first), ["1", "2"]);
        assert_eq!(started.elapsed(), linger);
        let second = collect(&mut rx, &mut pending, 100, linger, &shutdown).await;
        assert_eq!(positions(&second), ["3"]);
        let idle = tokio::time::Instant::now();
        let third = collect(&mut rx, &mut pending, 100, linger, &shutdown).await;
        assert_eq!(positions(&third), ["4"]);
        assert!(idle.elapsed() < Duration::from_secs(60), "sent as it came");
        drop(sender.await.expect("sender"));
        assert!(collect(&mut rx, &mut pending, 100, linger, &shutdown)
            .await
            .is_empty());
    }

    /// A full batch and a run-closing event end the batch at once; the rest stays pending.
    #[tokio::test(start_paused = true)]
    async fn max_and_closing_events_end_a_batch_without_waiting() {
        let (tx, mut rx) = mpsc::channel(16);
        let shutdown = CancellationToken::new();
        for (p, kind) in [
            ("1", EventKind::Create),
            ("2", EventKind::Create),
            ("3", EventKind::Create),
            ("4", EventKind::RunEnd),
            ("5", EventKind::Create),
        ] {
            tx.send(event(p, kind)).await.expect("send");
        }
        let mut pending = VecDeque::new();
        let linger = Duration::from_secs(3600);
        let started = tokio::time::Instant::now();
        let a = collect(&mut rx, &mut pending, 2, linger, &shutdown).await;
        let b = collect(&mut rx, &mut pending, 10, linger, &shutdown).await;
        assert_eq!(positions(&a), ["1", "2"]);
        assert_eq!(positions(&b), ["3", "4"]);
        assert_eq!(started.elapsed(), Duration::ZERO, "no lingering");
        shutdown.cancel();
        let c = collect(&mut rx, &mut pending, 10, linger, &shutdown).await;
        assert_eq!(
            positions(&c),
            ["5"],
            "what was taken is handed back, not dropped"
        );
    }
}

//! The daemon's recent log lines in memory, for the live console and the per-run logs.
//!
//! A `tracing` [`Layer`] ([`LogRingLayer`]) formats each event into a [`LogLine`] and appends it to
//! a bounded ring ([`LogRing::global`], the last [`GLOBAL_CAPACITY`] lines), numbering the lines in
//! order and broadcasting each to live subscribers. Appending takes a short lock and never waits for
//! a subscriber: a subscriber that falls behind misses lines (its receiver says how many) rather than
//! slowing logging down.

use chrono::{DateTime, Utc};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::broadcast;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// Lines kept by [`LogRing::global`].
pub const GLOBAL_CAPACITY: usize = 2_000;

/// Lines a live subscriber may lag behind before it misses some.
const BROADCAST_CAPACITY: usize = 1_024;

/// One log line.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LogLine {
    /// Position in the daemon's log since start (1, 2, …), gap-free.
    pub seq: u64,
    /// When it was logged.
    pub at: DateTime<Utc>,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
    pub level: &'static str,
    /// The module that logged it (`iocsync::pipeline`).
    pub target: String,
    /// The message, then its fields as `key=value`.
    pub message: String,
}

/// The level names a [`LogLine`] carries, for reading them back from storage.
pub fn level_name(level: &str) -> &'static str {
    match level {
        "ERROR" => "ERROR",
        "WARN" => "WARN",
        "INFO" => "INFO",
        "DEBUG" => "DEBUG",
        _ => "TRACE",
    }
}

/// A bounded ring of recent log lines with live subscribers.
#[derive(Debug)]
pub struct LogRing {
    capacity: usize,
    inner: Mutex<Ring>,
    live: broadcast::Sender<LogLine>,
}

#[derive(Debug)]
struct Ring {
    lines: VecDeque<LogLine>,
    /// The seq of the next line.
    next_seq: u64,
}

impl LogRing {
    /// An empty ring keeping the last `capacity` lines (at least one).
    pub fn new(capacity: usize) -> LogRing {
        let capacity = capacity.max(1);
        LogRing {
            capacity,
            inner: Mutex::new(Ring {
                lines: VecDeque::with_capacity(capacity),
                next_seq: 1,
            }),
            live: broadcast::channel(BROADCAST_CAPACITY).0,
        }
    }

    /// The daemon's ring: always exists ([`GLOBAL_CAPACITY`] lines); filled once `main` installs
    /// [`LogRingLayer`].
    pub fn global() -> &'static Arc<LogRing> {
        static GLOBAL: OnceLock<Arc<LogRing>> = OnceLock::new();
        GLOBAL.get_or_init(|| Arc::new(LogRing::new(GLOBAL_CAPACITY)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        // A panic elsewhere while holding the lock leaves the ring consistent (one push/pop).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a line, numbering it; returns its seq.
    pub fn push(
        &self,
        at: DateTime<Utc>,
        level: &'static str,
        target: String,
        message: String,
    ) -> u64 {
        let mut ring = self.lock();
        let seq = ring.next_seq;
        ring.next_seq += 1;
        let line = LogLine {
            seq,
            at,
            level,
            target,
            message,
        };
        if ring.lines.len() == self.capacity {
            ring.lines.pop_front();
        }
        if self.live.receiver_count() > 0 {
            // Sent under the lock so subscribers see lines in seq order; never waits.
            let _ = self.live.send(line.clone());
        }
        ring.lines.push_back(line);
        seq
    }

    /// The last `n` lines, oldest first.
    pub fn recent(&self, n: usize) -> Vec<LogLine> {
        let ring = self.lock();
        let skip = ring.lines.len().saturating_sub(n);
        ring.lines.iter().skip(skip).cloned().collect()
    }

    /// The lines numbered `first` or later still in the ring, at most the last `max`, oldest
    /// first.
    pub fn since(&self, first: u64, max: usize) -> Vec<LogLine> {
        let ring = self.lock();
        let from = ring.lines.partition_point(|l| l.seq < first);
        let from = from.max(ring.lines.len().saturating_sub(max));
        ring.lines.iter().skip(from).cloned().collect()
    }

    /// The seq the next line will get.
    pub fn next_seq(&self) -> u64 {
        self.lock().next_seq
    }

    /// Every line appended from now on. Lines already in the ring come from [`LogRing::recent`];
    /// subscribe first, then read `recent`, and drop received lines whose seq was already seen.
    pub fn subscribe(&self) -> broadcast::Receiver<LogLine> {
        self.live.subscribe()
    }

    /// The layer that feeds this ring from `tracing`.
    pub fn layer(self: &Arc<Self>) -> LogRingLayer {
        LogRingLayer {
            ring: Arc::clone(self),
        }
    }
}

/// The `tracing` layer that appends every event it sees to a [`LogRing`].
#[derive(Debug, Clone)]
pub struct LogRingLayer {
    ring: Arc<LogRing>,
}

/// The layer feeding [`LogRing::global`]; `main` adds it to the subscriber.
pub fn layer() -> LogRingLayer {
    LogRing::global().layer()
}

impl<S: Subscriber> Layer<S> for LogRingLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut visitor = LineVisitor {
            line: String::with_capacity(128),
        };
        event.record(&mut visitor);
        let level = match *meta.level() {
            Level::ERROR => "ERROR",
            Level::WARN => "WARN",
            Level::INFO => "INFO",
            Level::DEBUG => "DEBUG",
            Level::TRACE => "TRACE",
        };
        self.ring
            .push(Utc::now(), level, meta.target().to_string(), visitor.line);
    }
}

/// Writes an event's message, then its fields as `key=value`, into one line. The macros record the
/// message first; one recorded later is still put in front.
struct LineVisitor {
    line: String,
}

impl LineVisitor {
    fn message(&mut self, text: std::fmt::Arguments<'_>) {
        if self.line.is_empty() {
            let _ = self.line.write_fmt(text);
        } else {
            let fields = std::mem::take(&mut self.line);
            let _ = self.line.write_fmt(text);
            self.line.push(' ');
            self.line.push_str(&fields);
        }
    }

    fn sep(&mut self) {
        if !self.line.is_empty() {
            self.line.push(' ');
        }
    }
}

impl Visit for LineVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            return self.message(format_args!("{value}"));
        }
        self.sep();
        if value.is_empty() || value.contains(char::is_whitespace) {
            let _ = write!(self.line, "{}={value:?}", field.name());
        } else {
            let _ = write!(self.line, "{}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            return self.message(format_args!("{value:?}"));
        }
        self.sep();
        let _ = write!(self.line, "{}={value:?}", field.name());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    fn line(ring: &LogRing, text: &str) -> u64 {
        ring.push(Utc::now(), "INFO", "t".into(), text.into())
    }

    #[test]
    fn keeps_the_last_lines_in_order() {
        let ring = LogRing::new(3);
        for i in 1..=5 {
            assert_eq!(line(&ring, &format!("l{i}")), i);
        }
        let kept: Vec<_> = ring.recent(10).into_iter().map(|l| l.message).collect();
        assert_eq!(kept, ["l3", "l4", "l5"]);
        let last: Vec<_> = ring.recent(2).into_iter().map(|l| l.seq).collect();
        assert_eq!(last, [4, 5]);
        assert_eq!(ring.next_seq(), 6);
        let since: Vec<_> = ring.since(4, 10).into_iter().map(|l| l.seq).collect();
        assert_eq!(since, [4, 5]);
        let bounded: Vec<_> = ring.since(1, 1).into_iter().map(|l| l.seq).collect();
        assert_eq!(bounded, [5]);
    }

    #[tokio::test]
    async fn subscribers_receive_new_lines() {
        let ring = LogRing::new(10);
        line(&ring, "before");
        let mut rx = ring.subscribe();
        line(&ring, "after");
        let got = rx.recv().await.expect("line");
        assert_eq!((got.seq, got.message.as_str()), (2, "after"));
    }

    #[test]
    fn the_layer_formats_message_and_fields() {
        let ring = Arc::new(LogRing::new(10));
        let subscriber = tracing_subscriber::registry().with(ring.layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(count = 3, path = "a b", sink = "zeek", cause = %"boom", "skipping {}", "it");
            tracing::debug!(done = true);
        });
        let lines = ring.recent(10);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].level, "WARN");
        assert_eq!(lines[0].target, module_path!());
        assert_eq!(
            lines[0].message,
            "skipping it count=3 path=\"a b\" sink=zeek cause=boom"
        );
        assert_eq!(
            (lines[1].level, lines[1].message.as_str()),
            ("DEBUG", "done=true")
        );
        // A message recorded after the fields still comes first.
        let mut visitor = LineVisitor {
            line: String::from("a=1"),
        };
        visitor.message(format_args!("hello"));
        assert_eq!(visitor.line, "hello a=1");
    }
}

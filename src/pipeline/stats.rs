//! The statistics of a run: what `iocsync runs` stores and the run summary prints.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Counts for one sink in one run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SinkStats {
    /// Creates applied, by IOC type.
    pub created: BTreeMap<String, u64>,
    /// Deletes applied, by IOC type.
    pub deleted: BTreeMap<String, u64>,
    /// Updates applied, by IOC type.
    pub updated: BTreeMap<String, u64>,
    /// Changes rejected (dead-lettered).
    pub rejected: u64,
    /// Retried calls.
    pub retries: u64,
}

/// The statistics of one run: printed at its end, stored for `iocsync runs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunStats {
    /// Source name.
    pub source: String,
    /// RFC 3339 start.
    pub started: String,
    /// RFC 3339 end.
    pub ended: Option<String>,
    /// Duration in milliseconds.
    pub duration_ms: u64,
    /// Events carrying an object (or an unreadable one).
    pub received: u64,
    /// Events whose effects every sink acknowledged (including "nothing to do").
    pub applied: u64,
    /// Events skipped, by reason code.
    pub skipped: BTreeMap<String, u64>,
    /// Events with at least one change a sink rejected.
    pub dead_lettered: u64,
    /// Events whose changes are still outstanding (interrupted run).
    pub pending: u64,
    /// Per-sink counts.
    pub sinks: BTreeMap<String, SinkStats>,
    /// Heartbeats and other position-only events seen.
    pub heartbeats: u64,
    /// Errors that ended or disturbed the run.
    pub errors: Vec<String>,
    /// Source-specific counters (e.g. MISP's ignored by disabled feeds).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, u64>,
}

impl RunStats {
    pub(super) fn new(source: &str) -> Self {
        RunStats {
            source: source.to_string(),
            started: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ..RunStats::default()
        }
    }

    /// Total skipped.
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }

    /// The accounting identity every run must satisfy.
    pub fn balanced(&self) -> bool {
        self.received == self.applied + self.skipped_total() + self.dead_lettered + self.pending
    }

    /// A multi-line human summary.
    pub fn render(&self) -> String {
        let mut out = format!(
            "run summary ({}): received {} · applied {} · skipped {} · dead-lettered {} · pending {} · {:.1}s\n",
            self.source,
            self.received,
            self.applied,
            self.skipped_total(),
            self.dead_lettered,
            self.pending,
            self.duration_ms as f64 / 1000.0
        );
        if !self.skipped.is_empty() {
            let parts: Vec<String> = self
                .skipped
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            out.push_str(&format!("  skipped: {}\n", parts.join(", ")));
        }
        for (sink, s) in &self.sinks {
            let fmt = |m: &BTreeMap<String, u64>| {
                if m.is_empty() {
                    "0".to_string()
                } else {
                    let total: u64 = m.values().sum();
                    let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k} {v}")).collect();
                    format!("{total} ({})", parts.join(", "))
                }
            };
            out.push_str(&format!(
                "  {sink}: created {} · deleted {} · updated {} · rejected {} · retries {}\n",
                fmt(&s.created),
                fmt(&s.deleted),
                fmt(&s.updated),
                s.rejected,
                s.retries
            ));
        }
        for e in &self.errors {
            out.push_str(&format!("  error: {e}\n"));
        }
        out
    }
}

//! Process-wide counters, gauges and histograms, rendered in the Prometheus text format.
//!
//! A tiny registry rather than a metrics framework: label sets are bounded by construction (sink names,
//! op names, IOC kinds, skip codes, status classes — never indicator values), and every metric name is
//! declared once in [`METRICS`] with its help text.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

/// Declared metrics: name, type, help.
pub const METRICS: &[(&str, &str, &str)] = &[
    (
        "iocsync_build_info",
        "gauge",
        "Build information (value is always 1).",
    ),
    (
        "iocsync_uptime_seconds",
        "gauge",
        "Seconds since the process started.",
    ),
    (
        "iocsync_events_received_total",
        "counter",
        "Source events received, by event type.",
    ),
    (
        "iocsync_iocs_applied_total",
        "counter",
        "Changes applied to a sink, by sink, op and IOC type.",
    ),
    (
        "iocsync_skips_total",
        "counter",
        "Events or indicators skipped, by reason.",
    ),
    (
        "iocsync_dead_letters_total",
        "counter",
        "Changes a sink rejected permanently, by sink.",
    ),
    (
        "iocsync_api_calls_total",
        "counter",
        "Remote API calls, by remote, endpoint and status class.",
    ),
    (
        "iocsync_retries_total",
        "counter",
        "Sink batches retried, by sink and cause.",
    ),
    (
        "iocsync_batch_duration_seconds",
        "histogram",
        "Time to apply one batch to a sink, by sink.",
    ),
    (
        "iocsync_source_lag_seconds",
        "gauge",
        "Seconds between now and the time of the newest processed source event.",
    ),
    (
        "iocsync_last_checkpoint_timestamp_seconds",
        "gauge",
        "Unix time of the last checkpoint written.",
    ),
    (
        "iocsync_sink_live_iocs",
        "gauge",
        "IOCs iocsync holds live in a sink, by sink.",
    ),
    (
        "iocsync_sink_auth_failed",
        "gauge",
        "1 while a sink is refusing our credential, by sink.",
    ),
    (
        "iocsync_source_connected",
        "gauge",
        "1 while the source is connected (or caught up), else 0.",
    ),
    (
        "iocsync_paused",
        "gauge",
        "1 while an operator has paused the pipeline, else 0.",
    ),
    (
        "iocsync_reconcile_drift",
        "gauge",
        "Drift the last scheduled reconcile found, by sink and kind (missing, extra, stale).",
    ),
];

const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Inner {
    counters: BTreeMap<(&'static str, Labels), u64>,
    gauges: BTreeMap<(&'static str, Labels), f64>,
    histograms: BTreeMap<(&'static str, Labels), Histogram>,
}

/// The registry.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_string())).collect()
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        // A poisoned lock only means another thread panicked mid-update of a counter: keep counting.
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// Adds `by` to a counter.
    pub fn inc(&self, name: &'static str, pairs: &[(&'static str, &str)], by: u64) {
        self.with(|m| *m.counters.entry((name, labels(pairs))).or_default() += by);
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, pairs: &[(&'static str, &str)], value: f64) {
        self.with(|m| {
            m.gauges.insert((name, labels(pairs)), value);
        });
    }

    /// Records one observation (seconds) in a histogram.
    pub fn observe(&self, name: &'static str, pairs: &[(&'static str, &str)], value: f64) {
        self.with(|m| {
            let h = m.histograms.entry((name, labels(pairs))).or_default();
            for (i, bound) in BUCKETS.iter().enumerate() {
                if value <= *bound {
                    h.counts[i] += 1;
                }
            }
            h.sum += value;
            h.count += 1;
        });
    }

    /// Current value of a counter (tests and run summaries).
    pub fn counter(&self, name: &'static str, pairs: &[(&'static str, &str)]) -> u64 {
        self.with(|m| m.counters.get(&(name, labels(pairs))).copied().unwrap_or(0))
    }

    /// Current value of a gauge.
    pub fn gauge(&self, name: &'static str, pairs: &[(&'static str, &str)]) -> Option<f64> {
        self.with(|m| m.gauges.get(&(name, labels(pairs))).copied())
    }

    /// Renders every metric in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        self.with(|m| {
            let mut out = String::new();
            for (name, kind, help) in METRICS {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for ((n, l), v) in m.counters.iter().filter(|((n, _), _)| n == name) {
                    let _ = writeln!(out, "{n}{} {v}", fmt_labels(l, None));
                }
                for ((n, l), v) in m.gauges.iter().filter(|((n, _), _)| n == name) {
                    let _ = writeln!(out, "{n}{} {v}", fmt_labels(l, None));
                }
                for ((n, l), h) in m.histograms.iter().filter(|((n, _), _)| n == name) {
                    for (i, bound) in BUCKETS.iter().enumerate() {
                        let le = bound.to_string();
                        let _ = writeln!(
                            out,
                            "{n}_bucket{} {}",
                            fmt_labels(l, Some(&le)),
                            h.counts[i]
                        );
                    }
                    let _ = writeln!(out, "{n}_bucket{} {}", fmt_labels(l, Some("+Inf")), h.count);
                    let _ = writeln!(out, "{n}_sum{} {}", fmt_labels(l, None), h.sum);
                    let _ = writeln!(out, "{n}_count{} {}", fmt_labels(l, None), h.count);
                }
            }
            out
        })
    }
}

fn fmt_labels(l: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = l
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}=\"{}\"",
                v.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n")
            )
        })
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// The process-wide registry.
pub fn global() -> &'static Metrics {
    static GLOBAL: OnceLock<Metrics> = OnceLock::new();
    GLOBAL.get_or_init(Metrics::default)
}

/// Counts one remote API call. `status` 0 means the request did not complete.
pub fn api_call(remote: &str, endpoint: &str, status: u16) {
    let class = match status {
        0 => "error",
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        429 => "429",
        400..=499 => "4xx",
        _ => "5xx",
    };
    global().inc(
        "iocsync_api_calls_total",
        &[
            ("remote", remote),
            ("endpoint", endpoint),
            ("status", class),
        ],
        1,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_histograms() {
        let m = Metrics::default();
        m.inc("iocsync_skips_total", &[("reason", "compound")], 2);
        m.set("iocsync_source_connected", &[], 1.0);
        m.observe("iocsync_batch_duration_seconds", &[("sink", "jsonl")], 0.02);
        let text = m.render();
        assert!(text.contains("iocsync_skips_total{reason=\"compound\"} 2"));
        assert!(text.contains("iocsync_source_connected 1"));
        assert!(
            text.contains("iocsync_batch_duration_seconds_bucket{sink=\"jsonl\",le=\"0.025\"} 1")
        );
        assert!(text.contains("iocsync_batch_duration_seconds_count{sink=\"jsonl\"} 1"));
        assert_eq!(
            m.counter("iocsync_skips_total", &[("reason", "compound")]),
            2
        );
    }
}

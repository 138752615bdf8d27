//! The daemon's scheduled reconcile (`pipeline.reconcile_interval`): a dry run every interval,
//! published as `iocsync_reconcile_drift{sink,kind}`.

use super::*;
use crate::config::Config;
use tokio_util::sync::CancellationToken;

/// The daemon's periodic dry run (`pipeline.reconcile_interval`): sets
/// `iocsync_reconcile_drift{sink,kind}` after each pass. `None` when the interval is off.
pub fn spawn_schedule(
    cfg: &Config,
    shutdown: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let every = spawn_schedule_interval(cfg)?;
    let cfg = cfg.clone();
    Some(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let pass = tokio::select! {
                _ = shutdown.cancelled() => return,
                pass = dry_run(&cfg, &[]) => pass,
            };
            match pass {
                Ok(report) => publish(&report),
                Err(e) => tracing::warn!(cause = %e, "scheduled reconcile failed"),
            }
        }
    }))
}

/// The schedule's period; `None` when off (unset or 0).
fn spawn_schedule_interval(cfg: &Config) -> Option<std::time::Duration> {
    cfg.pipeline.reconcile_interval.filter(|d| !d.is_zero())
}

/// Sets the drift gauges from a report.
pub fn publish(report: &Report) {
    remember(report);
    let metrics = crate::metrics::global();
    for sink in report.sinks.iter().filter(|s| s.not_compared.is_none()) {
        let t = &sink.total;
        for (kind, n) in [
            ("missing", t.missing),
            ("extra", t.extra),
            ("stale", t.stale),
        ] {
            metrics.set(
                "iocsync_reconcile_drift",
                &[("sink", sink.sink.as_str()), ("kind", kind)],
                n as f64,
            );
        }
        if t.drift() > 0 {
            tracing::warn!(sink = %sink.sink, missing = t.missing, extra = t.extra, stale = t.stale,
                "reconcile found drift (iocsync reconcile --apply repairs it)");
        } else {
            tracing::info!(sink = %sink.sink, in_sync = t.in_sync, "reconcile: in sync");
        }
    }
}

/// What the last scheduled reconcile of this process found, for the console's Status page.
#[derive(Debug, Clone)]
pub struct LastReconcile {
    /// When it finished.
    pub at: chrono::DateTime<chrono::Utc>,
    /// Missing + extra + stale, over the compared sinks.
    pub drift: u64,
    /// Per compared sink: `sentinelone: in sync 1200` or `zeek: missing 3, extra 0, stale 0`.
    pub summary: String,
}

static LAST: std::sync::Mutex<Option<LastReconcile>> = std::sync::Mutex::new(None);

fn remember(report: &Report) {
    let compared: Vec<&SinkReport> = report
        .sinks
        .iter()
        .filter(|s| s.not_compared.is_none())
        .collect();
    let summary = compared
        .iter()
        .map(|s| {
            let t = &s.total;
            if t.drift() == 0 {
                format!("{}: in sync {}", s.sink, t.in_sync)
            } else {
                format!(
                    "{}: missing {}, extra {}, stale {}",
                    s.sink, t.missing, t.extra, t.stale
                )
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    let last = LastReconcile {
        at: chrono::Utc::now(),
        drift: compared.iter().map(|s| s.total.drift()).sum(),
        summary,
    };
    *LAST.lock().unwrap_or_else(|e| e.into_inner()) = Some(last);
}

/// The last scheduled reconcile's result in this process, if one ran.
pub fn last() -> Option<LastReconcile> {
    LAST.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_off_by_default_and_set_from_the_environment() {
        let cfg = Config::load(None, std::iter::empty::<(String, String)>()).expect("defaults");
        assert!(spawn_schedule_interval(&cfg).is_none());
        let cfg = Config::load(
            None,
            [(
                "IOCSYNC_PIPELINE_RECONCILE_INTERVAL".to_string(),
                "10m".to_string(),
            )],
        )
        .expect("config");
        assert_eq!(
            spawn_schedule_interval(&cfg),
            Some(std::time::Duration::from_secs(600))
        );
    }

    #[test]
    fn a_report_sets_the_drift_gauges_and_the_consoles_status_row() {
        let report = Report {
            mode: "dry-run",
            drift: true,
            sinks: vec![SinkReport {
                sink: "jsonl".into(),
                total: Counts {
                    missing: 3,
                    extra: 1,
                    ..Counts::default()
                },
                ..SinkReport::default()
            }],
        };
        publish(&report);
        let m = crate::metrics::global();
        let gauge = |kind| {
            m.gauge(
                "iocsync_reconcile_drift",
                &[("sink", "jsonl"), ("kind", kind)],
            )
        };
        assert_eq!(gauge("missing"), Some(3.0));
        assert_eq!(gauge("extra"), Some(1.0));
        assert_eq!(gauge("stale"), Some(0.0));
        assert!(report.render().contains("1 extra"));
        let last = last().expect("remembered for the console");
        assert_eq!(last.drift, 4);
        assert_eq!(last.summary, "jsonl: missing 3, extra 1, stale 0");
    }
}

//! `iocsync runs`: the history of the last 20 runs.

use crate::app::{self, AppError};
use crate::config::Config;
use std::io::Write;

/// `iocsync runs [--json]`: the last runs, newest first, as a table or as their JSON statistics.
pub fn run(cfg: &Config, json: bool, out: &mut impl Write) -> Result<(), AppError> {
    let runs = match app::read_state(cfg)? {
        Some(state) => state.runs()?,
        None => Vec::new(),
    };
    if json {
        let list: Vec<_> = runs.iter().map(|r| &r.stats).collect();
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&list).map_err(|e| AppError::Other(e.to_string()))?
        )
        .map_err(app::output_error)?;
        return Ok(());
    }
    if runs.is_empty() {
        writeln!(out, "no runs recorded yet").map_err(app::output_error)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<20} {:>8} {:>7} {:>9} {:>7} {:>6} {:>6}  skipped by reason",
        "started", "source", "secs", "received", "pushed", "dead", "errors"
    )
    .map_err(app::output_error)?;
    for r in runs {
        let s: crate::pipeline::RunStats =
            serde_json::from_value(r.stats.clone()).unwrap_or_default();
        let pushed: u64 = s
            .sinks
            .values()
            .map(|k| {
                k.created.values().sum::<u64>()
                    + k.deleted.values().sum::<u64>()
                    + k.updated.values().sum::<u64>()
            })
            .sum();
        let skipped: Vec<String> = s.skipped.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let started = chrono::DateTime::from_timestamp_millis(r.started_ms)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        writeln!(
            out,
            "{:<20} {:>8} {:>7.1} {:>9} {:>7} {:>6} {:>6}  {}",
            started,
            r.source,
            (r.ended_ms - r.started_ms) as f64 / 1000.0,
            s.received,
            pushed,
            s.dead_lettered,
            s.errors.len(),
            skipped.join(" ")
        )
        .map_err(app::output_error)?;
    }
    Ok(())
}

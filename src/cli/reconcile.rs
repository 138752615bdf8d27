//! `iocsync reconcile`: the per-sink drift report (text or JSON); the comparison and the repairs
//! are [`crate::reconcile`]'s.

use crate::app::{self, AppError};
use crate::config::Config;
use crate::reconcile::Options;
use std::io::Write;
use tokio_util::sync::CancellationToken;

/// Runs a reconcile and prints its report. True when a dry run found drift (exit code
/// [`crate::reconcile::EXIT_DRIFT`], so cron and CI can alert on it).
pub async fn run(
    cfg: &Config,
    opts: &Options,
    json: bool,
    shutdown: CancellationToken,
    out: &mut impl Write,
) -> Result<bool, AppError> {
    let report = crate::reconcile::run(cfg, opts, shutdown).await?;
    if json {
        let text =
            serde_json::to_string_pretty(&report).map_err(|e| AppError::Other(e.to_string()))?;
        writeln!(out, "{text}").map_err(app::output_error)?;
    } else {
        write!(out, "{}", report.render()).map_err(app::output_error)?;
    }
    out.flush().map_err(app::output_error)?;
    Ok(report.mode == "dry-run" && report.drift)
}

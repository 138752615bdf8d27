//! `iocsync state show|reset`: the durable state's checkpoints, counts and pending changes, and
//! clearing it (after a confirmation unless `--yes`).

use crate::app::{self, AppError};
use crate::config::Config;
use clap::Subcommand;
use std::io::{BufRead, Write};

/// `iocsync state …`.
#[derive(Debug, Clone, Subcommand)]
pub enum StateAction {
    /// Print checkpoints, counts and pending changes.
    Show {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Clear the checkpoint, id maps, intents and run history.
    Reset {
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

/// `iocsync state show|reset`. `confirm` is where the answer to reset's question is read.
pub fn run(
    cfg: &Config,
    action: StateAction,
    out: &mut impl Write,
    confirm: &mut impl BufRead,
) -> Result<(), AppError> {
    match action {
        StateAction::Show { json } => {
            let o = match app::read_state(cfg)? {
                Some(state) => state.overview()?,
                None => crate::state::Overview {
                    path: cfg
                        .state
                        .dir
                        .join(crate::state::DB_FILE)
                        .display()
                        .to_string(),
                    checkpoints: Vec::new(),
                    indicators: 0,
                    sinks: Vec::new(),
                    pending_intents: 0,
                },
            };
            if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&o).map_err(|e| AppError::Other(e.to_string()))?
                )
                .map_err(app::output_error)?;
                return Ok(());
            }
            writeln!(out, "state: {}", o.path).map_err(app::output_error)?;
            if o.checkpoints.is_empty() {
                writeln!(
                    out,
                    "checkpoint: none (the next run starts from the beginning)"
                )
                .map_err(app::output_error)?;
            }
            for (source, position, updated) in &o.checkpoints {
                let when = chrono::DateTime::from_timestamp_millis(*updated)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default();
                writeln!(out, "checkpoint {source}: {position} (written {when})")
                    .map_err(app::output_error)?;
            }
            writeln!(out, "indicators with IOCs: {}", o.indicators).map_err(app::output_error)?;
            for (sink, live, pending, rejected) in &o.sinks {
                writeln!(
                    out,
                    "sink {sink}: {live} live, {pending} pending, {rejected} rejected"
                )
                .map_err(app::output_error)?;
            }
            writeln!(out, "pending intents: {}", o.pending_intents).map_err(app::output_error)?;
            Ok(())
        }
        StateAction::Reset { yes } => {
            let state = app::open_state(cfg)?;
            if !yes {
                eprint!(
                    "clear the checkpoint, id maps and run history in {}? [y/N] ",
                    state.path().display()
                );
                let mut answer = String::new();
                confirm
                    .read_line(&mut answer)
                    .map_err(|e| AppError::Other(format!("failed to read the answer: {e}")))?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    writeln!(out, "state left as it was").map_err(app::output_error)?;
                    return Ok(());
                }
            }
            state.reset()?;
            writeln!(out, "state cleared: the next run starts from the beginning")
                .map_err(app::output_error)?;
            Ok(())
        }
    }
}

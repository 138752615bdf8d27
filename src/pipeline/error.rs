//! Why a pipeline run stops early.

use crate::sinks::SinkError;
use crate::state::StateError;
use std::path::PathBuf;

/// Why a pipeline run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The state database failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// A sink kept failing and this run has an end (file, `--once`): pending changes stay in the
    /// state and are settled at the next start.
    #[error("giving up on sink `{sink}` after {attempts} attempts: {error}")]
    SinkGaveUp {
        /// Sink name.
        sink: &'static str,
        /// Attempts made.
        attempts: usize,
        /// The last error.
        error: SinkError,
    },
    /// A sink refused our credential (exit code 3).
    #[error("{0}")]
    SinkAuth(SinkError),
    /// Shutdown was requested while changes were still outstanding; they stay pending.
    #[error("interrupted with changes still pending (they will be settled at the next start)")]
    Interrupted,
    /// The dead-letter file could not be written (the rejection stays pending rather than lost).
    #[error("failed to write dead letter to `{path}`: {source}")]
    DeadLetter {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A blocking task died.
    #[error("internal task failed: {0}")]
    Join(String),
}

impl PipelineError {
    /// True when the cause is a refused credential.
    pub fn is_auth(&self) -> bool {
        match self {
            PipelineError::SinkAuth(_) => true,
            PipelineError::SinkGaveUp { error, .. } => error.is_auth(),
            _ => false,
        }
    }
}

//! The `Sink` boundary: what every destination implements, and the outcome types it answers with
//! (the [`Change`]s it is given are data of [`crate::model`]).
//!
//! A sink speaks its vendor's API and nothing else: batching, retries, backoff, dead-lettering and
//! accounting belong to the pipeline.

pub mod batch;
pub mod jsonl;
pub mod sekoia;
pub mod sentinelone;
pub mod state_only;
pub mod zeek;

pub use crate::model::{Change, ChangeOp};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What became of one change; `apply` returns one per input change, in order.
#[derive(Debug)]
pub enum Outcome {
    /// Done. `remote_id` is the sink's id for a created entry, when it has one.
    Applied {
        /// The sink's id for the entry.
        remote_id: Option<String>,
    },
    /// Permanently refused by the sink (validation error): dead-letter it with the reason.
    Rejected {
        /// The sink's own words.
        reason: String,
    },
    /// Not done now, may succeed later (429, 5xx, timeout, auth failure).
    Retry {
        /// How long the sink asked us to wait (`Retry-After`), if it said.
        after: Option<Duration>,
        /// What went wrong.
        error: SinkError,
    },
}

/// What a sink says about a change left pending by a crash.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// The sink already reflects the change (found after a create, absent after a delete).
    Applied {
        /// The sink's id for the entry, when found.
        remote_id: Option<String>,
    },
    /// The change has not reached the sink: send it.
    NotApplied,
    /// The sink could not tell right now (its lookup failed transiently): ask again later, and
    /// do not send the change meanwhile.
    Unknown,
}

/// Errors a sink reports, keeping what the retry policy needs to tell them apart.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// 401: the credential was refused.
    #[error("{sink} rejected the credential at {endpoint} (HTTP {status}): {message}")]
    Auth {
        /// Sink name.
        sink: &'static str,
        /// The endpoint called.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// The remote's message.
        message: String,
    },
    /// 403 and similar: authenticated, not allowed.
    #[error("{sink} denied permission at {endpoint} (HTTP {status}): {message}")]
    Permission {
        /// Sink name.
        sink: &'static str,
        /// The endpoint called.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// The remote's message.
        message: String,
    },
    /// 429.
    #[error("{sink} rate-limited us at {endpoint}")]
    RateLimited {
        /// Sink name.
        sink: &'static str,
        /// The endpoint called.
        endpoint: String,
    },
    /// Any other unexpected HTTP status (5xx, unexpected 4xx).
    #[error("{sink} answered HTTP {status} at {endpoint}: {message}")]
    Http {
        /// Sink name.
        sink: &'static str,
        /// The endpoint called.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// The remote's message (truncated body).
        message: String,
    },
    /// The request did not complete (connect, reset, timeout, bad body).
    #[error("{sink} request to {endpoint} failed: {message}")]
    Transport {
        /// Sink name.
        sink: &'static str,
        /// The endpoint called.
        endpoint: String,
        /// What failed.
        message: String,
    },
    /// The change was not attempted because an earlier call of the same batch failed; re-sending
    /// it cannot duplicate anything.
    #[error("{sink}: not sent, an earlier call failed: {cause}")]
    NotSent {
        /// Sink name.
        sink: &'static str,
        /// The earlier failure.
        cause: String,
    },
    /// Local file I/O (JSONL, Zeek).
    #[error("{sink} failed to {action} `{path}`: {source}")]
    Io {
        /// Sink name.
        sink: &'static str,
        /// What we tried to do.
        action: &'static str,
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The sink's configuration cannot work (collection not found, bad scope…).
    #[error("{sink}: {message} (check `{key}`)")]
    Config {
        /// Sink name.
        sink: &'static str,
        /// The config key to fix.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl SinkError {
    /// A configuration error of `sink` naming the setting to fix.
    pub fn config(sink: &'static str, key: &'static str, message: impl Into<String>) -> Self {
        SinkError::Config {
            sink,
            key,
            message: message.into(),
        }
    }

    /// True for errors that mean the credential or its rights are wrong: retrying soon will not help.
    pub fn is_auth(&self) -> bool {
        matches!(self, SinkError::Auth { .. } | SinkError::Permission { .. })
    }

    /// True when the failed call may have been applied anyway (a 5xx after the work was done, a
    /// timeout or reset while the answer was on its way): ask `resolve` before sending it again.
    pub fn is_ambiguous(&self) -> bool {
        match self {
            SinkError::Http { status, .. } => *status >= 500,
            SinkError::Transport { .. } => true,
            _ => false,
        }
    }
}

/// Splits a batch into runs of consecutive changes that are all deletes or all creates/updates, in
/// order, so a sink can send one call per run and a create followed by a delete of the same IOC (or
/// the reverse) still ends as the source intended.
pub fn op_runs(batch: &[Change]) -> impl Iterator<Item = &[Change]> {
    batch.chunk_by(|a, b| (a.op == ChangeOp::Delete) == (b.op == ChangeOp::Delete))
}

/// A destination for IOCs.
#[async_trait]
pub trait Sink: Send + Sync {
    /// The sink's name as used in config (`IOCSYNC_SINKS`), state, metrics and logs.
    fn name(&self) -> &'static str;

    /// The most changes `apply` accepts in one call.
    fn max_batch(&self) -> usize;

    /// Whether `ChangeOp::Update` is meaningful for this sink; when false the pipeline never sends it.
    fn supports_update(&self) -> bool {
        false
    }

    /// Applies a batch; returns exactly one outcome per change, in order.
    async fn apply(&self, batch: &[Change]) -> Vec<Outcome>;

    /// Settles changes left pending by a crash or an ambiguous failure: for each, whether the sink
    /// already reflects it. A lookup that fails for one change answers `Unknown` for it; an error
    /// means nothing could be looked up (e.g. the credential was refused).
    async fn resolve(&self, pending: &[Change]) -> Result<Vec<Resolution>, SinkError>;

    /// Probes the sink for `iocsync check`: returns what was verified.
    async fn check(&self) -> Result<String, SinkError>;

    /// Told once before a run how many values the state records as live in this sink (a sink that
    /// watches a quota counts from there).
    fn seed_live_count(&self, _live: u64) {}

    /// Starts the background work the sink needs beside the pipeline (Zeek's periodic rewrite),
    /// until `shutdown`; `None` when it needs none.
    fn spawn_upkeep(
        self: Arc<Self>,
        _shutdown: CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        None
    }
}

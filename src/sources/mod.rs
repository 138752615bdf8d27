//! The `Source` boundary: a task that reads a remote (or a file) and sends `SourceEvent`s into a
//! bounded channel, resuming from a checkpoint the pipeline gives it.

pub mod file;
pub mod misp;
pub mod opencti;
pub mod sse;
pub mod store;

pub use store::SourceStore;

use crate::control::Control;
use crate::model::SourceEvent;
use async_trait::async_trait;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// How a source run ends.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The remote refused our credential or access; not worth retrying soon.
    #[error("{source_name}: authentication failed at {endpoint}: {message}")]
    Auth {
        /// Source name.
        source_name: &'static str,
        /// Endpoint.
        endpoint: String,
        /// What the remote said.
        message: String,
    },
    /// The configuration cannot work (unknown stream, bad path…).
    #[error("{source_name}: {message} (check `{key}`)")]
    Config {
        /// Source name.
        source_name: &'static str,
        /// The config key to fix.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Anything else (I/O, protocol).
    #[error("{source_name}: {message}")]
    Other {
        /// Source name.
        source_name: &'static str,
        /// What failed.
        message: String,
    },
}

/// What a source is given when it starts.
pub struct SourceContext {
    /// Where to resume: the last position whose effects every sink acknowledged (`None`: no state).
    pub start: Option<String>,
    /// Events go here; the channel is bounded, so a slow pipeline slows the source down.
    pub events: mpsc::Sender<SourceEvent>,
    /// The latest committed position, updated after every checkpoint (OpenCTI pings it).
    pub committed: watch::Receiver<Option<String>>,
    /// Cancelled on shutdown — and, for a source that ends by itself, once the pipeline has applied
    /// everything it sent (its last checkpoint is then in `committed`): stop reading and return.
    pub shutdown: CancellationToken,
    /// `run --once`: stop when caught up instead of waiting for more.
    pub once: bool,
    /// The source's durable notes and the held indicator ids, through the pipeline's state.
    pub store: SourceStore,
    /// Operator control: a scheduled source (MISP) also wakes on a run request.
    pub control: Control,
}

/// A producer of events.
#[async_trait]
pub trait Source: Send {
    /// The source's name (`opencti`, `misp`, `file`), used as the checkpoint key.
    fn name(&self) -> &'static str;

    /// Reads until the input ends (file, `--once` caught up), shutdown, or a fatal error.
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError>;

    /// Probes the source for `iocsync check`: returns what was verified.
    async fn check(&self) -> Result<String, SourceError>;
}

//! The OpenCTI live-stream source: registers as a STREAM connector over GraphQL, reads
//! `GET {url}/stream/{id}` as server-sent events and turns each message into a `SourceEvent`
//! whose position is the SSE id.
//!
//! - [`config`] — the `opencti` and `connector` sections (pycti's variable names).
//! - [`event`] — message → event decoding, shared with the file source (stream captures).
//! - [`graphql`] — `about`, `registerConnector`, `pingConnector`, `streamCollection`, and the
//!   connector state JSON.
//! - [`stream`] — one SSE connection, error classification, reconnect backoff.
//! - [`source`] — [`OpenCtiSource`]: the run loop (watchdog, reconnects, pings, remote reset,
//!   `--once`, progress and metrics).

pub mod config;
pub mod event;
pub mod graphql;
mod ping;
mod progress;
pub mod source;
pub mod stream;
pub mod valid;

pub use config::{ConnectorConfig, OpenCtiConfig, RecoverSetting};
pub use event::{decode_event, decode_event_value};
pub use source::OpenCtiSource;

use crate::sources::SourceError;

/// The source's name (checkpoint key, metrics label).
pub const SOURCE_NAME: &str = "opencti";

/// A failed call to the platform.
#[derive(Debug, thiserror::Error)]
pub enum OpenCtiError {
    /// The request did not complete (DNS, TCP, TLS, timeout).
    #[error("{endpoint}: {message}")]
    Transport {
        /// What was called.
        endpoint: String,
        /// Why it failed.
        message: String,
    },
    /// The platform answered with an HTTP error.
    #[error("{endpoint}: HTTP {status}: {body}")]
    Status {
        /// What was called.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// The (trimmed) body.
        body: String,
    },
    /// The token was rejected or lacks a capability.
    #[error("{endpoint}: {message}")]
    Auth {
        /// What was called.
        endpoint: String,
        /// What the platform said.
        message: String,
    },
    /// A GraphQL error other than authentication.
    #[error("{endpoint}: {message}")]
    Graphql {
        /// What was called.
        endpoint: String,
        /// The first error's message.
        message: String,
    },
    /// The answer was not what the API documents.
    #[error("{endpoint}: unreadable response: {message}")]
    Decode {
        /// What was called.
        endpoint: String,
        /// What was wrong.
        message: String,
    },
}

impl OpenCtiError {
    /// Worth retrying soon: the platform may be starting or briefly overloaded.
    pub fn is_transient(&self) -> bool {
        match self {
            OpenCtiError::Transport { .. } => true,
            OpenCtiError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// The source-level error (auth failures stay auth failures: exit code 3).
    pub fn into_source_error(self) -> SourceError {
        match self {
            OpenCtiError::Auth { endpoint, message } => SourceError::Auth {
                source_name: SOURCE_NAME,
                endpoint,
                message,
            },
            other => SourceError::Other {
                source_name: SOURCE_NAME,
                message: other.to_string(),
            },
        }
    }
}

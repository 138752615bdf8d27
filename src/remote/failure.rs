//! The pipeline-facing reading of a failed call, written once for every remote client. Each client
//! keeps its own error enum (its variants carry what only that remote says: SentinelOne's error
//! entries, Sekoia's collection-or-indicator 404), and says through [`RemoteFailure::class`] which
//! of a handful of classes a failure is; status, `Retry-After` and the [`SinkError`] follow from it.

use crate::sinks::SinkError;
use std::borrow::Cow;
use std::time::Duration;

/// What kind of failure a remote's error is, in the terms the pipeline acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureClass<'a> {
    /// 401: the credential was refused.
    Auth {
        /// Our explanation, then the remote's words.
        message: &'a str,
    },
    /// 403: the credential may not do this.
    Permission {
        /// Our explanation, then the remote's words.
        message: &'a str,
    },
    /// 429.
    RateLimited {
        /// `Retry-After`, when sent.
        retry_after: Option<Duration>,
    },
    /// An answer that points at a setting rather than at the data (a missing collection), or a
    /// call refused before it was made because the settings would make it harmful.
    Misconfigured {
        /// The HTTP status, 0 when no call was made.
        status: u16,
        /// The setting to fix.
        key: &'static str,
        /// What is wrong.
        message: Cow<'a, str>,
    },
    /// Any other HTTP status (a refused request content, 404 of one item, 5xx…).
    Status {
        /// The HTTP status.
        status: u16,
        /// The remote's words, summarised.
        message: Cow<'a, str>,
    },
    /// The request did not complete or its 2xx answer could not be read.
    Incomplete {
        /// What failed.
        message: &'a str,
    },
}

impl FailureClass<'_> {
    /// The HTTP status, 0 when the request did not complete.
    pub fn status(&self) -> u16 {
        match self {
            FailureClass::Auth { .. } => 401,
            FailureClass::Permission { .. } => 403,
            FailureClass::RateLimited { .. } => 429,
            FailureClass::Misconfigured { status, .. } | FailureClass::Status { status, .. } => {
                *status
            }
            FailureClass::Incomplete { .. } => 0,
        }
    }
}

/// A remote client's error: the call it names and its [`FailureClass`].
pub trait RemoteFailure {
    /// The remote's name in errors and metrics (`sentinelone`, `sekoia`).
    const REMOTE: &'static str;

    /// `METHOD url` of the call that failed, without a query string.
    fn endpoint(&self) -> &str;

    /// The class of this failure.
    fn class(&self) -> FailureClass<'_>;

    /// The HTTP status, 0 when the request did not complete.
    fn status(&self) -> u16 {
        self.class().status()
    }

    /// `Retry-After` of a 429.
    fn retry_after(&self) -> Option<Duration> {
        match self.class() {
            FailureClass::RateLimited { retry_after } => retry_after,
            _ => None,
        }
    }

    /// The pipeline-facing error (a new value each time: `SinkError` is not `Clone`).
    fn to_sink_error(&self) -> SinkError {
        let sink = Self::REMOTE;
        let endpoint = self.endpoint().to_string();
        match self.class() {
            FailureClass::Auth { message } => SinkError::Auth {
                sink,
                endpoint,
                status: 401,
                message: message.to_string(),
            },
            FailureClass::Permission { message } => SinkError::Permission {
                sink,
                endpoint,
                status: 403,
                message: message.to_string(),
            },
            FailureClass::RateLimited { .. } => SinkError::RateLimited { sink, endpoint },
            FailureClass::Misconfigured {
                status,
                key,
                message,
            } => SinkError::Config {
                sink,
                key,
                message: if status == 0 {
                    message.into_owned()
                } else {
                    format!("{message} [{endpoint}]")
                },
            },
            FailureClass::Status { status, message } => SinkError::Http {
                sink,
                endpoint,
                status,
                message: message.into_owned(),
            },
            FailureClass::Incomplete { message } => SinkError::Transport {
                sink,
                endpoint,
                message: message.to_string(),
            },
        }
    }
}

//! Errors of the Sekoia client: one variant per way a call can fail, keeping the HTTP status and
//! Sekoia's `{"message", "code"}` so the sink can tell item rejections, auth, a missing collection,
//! rate limits and outages apart; and the mapping to the pipeline's `SinkError`.

use crate::remote::{FailureClass, RemoteFailure};
use serde::Deserialize;
use std::time::Duration;

/// The sink name used in errors and metrics.
pub const SINK: &str = "sekoia";

/// The config keys errors point at.
pub const KEY_APIKEY: &str = "sekoia_intel.apikey";
/// See [`KEY_APIKEY`].
pub const KEY_COLLECTION: &str = "sekoia_intel.ioc_collection_uuid";
/// See [`KEY_APIKEY`].
pub const KEY_URL: &str = "sekoia_intel.url";

/// Sekoia's error body.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ApiError {
    /// Human message, e.g. `IOC Collection not found`.
    #[serde(default)]
    pub message: Option<String>,
    /// Machine code (a string in Sekoia's answers; numbers are accepted too).
    #[serde(default, deserialize_with = "code_as_text")]
    pub code: Option<String>,
}

fn code_as_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Null) | None => None,
        Some(other) => Some(other.to_string()),
    })
}

/// Sekoia's message (with its code), else the trimmed raw body, else `empty body`.
pub fn describe_body(body: &str) -> String {
    let parsed = serde_json::from_str::<ApiError>(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|e| e.message.as_deref())
        .map(str::trim)
        .filter(|m| !m.is_empty());
    match (message, parsed.as_ref().and_then(|e| e.code.as_deref())) {
        (Some(m), Some(c)) => format!("{} (code {c})", crate::remote::trim_body(m)),
        (Some(m), None) => crate::remote::trim_body(m),
        _ => {
            let b = crate::remote::trim_body(body);
            if b.is_empty() {
                "empty body".to_string()
            } else {
                b
            }
        }
    }
}

/// How a Sekoia call failed. `endpoint` is `METHOD url` without a query string.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SekoiaError {
    /// 401: the API key was refused.
    #[error("Sekoia.io rejected the API key at {endpoint} (HTTP 401): {message}")]
    Auth {
        /// The call.
        endpoint: String,
        /// Our explanation, then Sekoia's words.
        message: String,
    },
    /// 403: the key is valid but may not do this.
    #[error("Sekoia.io denied permission at {endpoint} (HTTP 403): {message}")]
    Permission {
        /// The call.
        endpoint: String,
        /// Our explanation, then Sekoia's words.
        message: String,
    },
    /// 404 on the collection itself (or on a URL that is not Sekoia's API).
    #[error("Sekoia.io answered HTTP 404 at {endpoint}: {message}")]
    CollectionNotFound {
        /// The call.
        endpoint: String,
        /// Our explanation, then Sekoia's words.
        message: String,
    },
    /// 404 on one indicator: it does not exist (or no longer) in the collection.
    #[error("Sekoia.io has no such indicator at {endpoint}: {message}")]
    IndicatorNotFound {
        /// The call.
        endpoint: String,
        /// Sekoia's words.
        message: String,
    },
    /// 429.
    #[error("Sekoia.io rate-limited {endpoint} (HTTP 429{})", retry_after.map(|d| format!(", retry after {}s", d.as_secs_f64())).unwrap_or_default())]
    RateLimited {
        /// The call.
        endpoint: String,
        /// `Retry-After`, when sent.
        retry_after: Option<Duration>,
    },
    /// 400 / 422: Sekoia refused the request's content (for an import: at least one item).
    #[error("Sekoia.io refused the request at {endpoint} (HTTP {status}): {message}")]
    Validation {
        /// The call.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// Sekoia's message (with code).
        message: String,
        /// The raw body, trimmed, for finding the offending items.
        body: String,
    },
    /// Any other status: 5xx, 413…
    #[error("Sekoia.io answered HTTP {status} at {endpoint}: {message}")]
    Http {
        /// The call.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// Summary of the body.
        message: String,
    },
    /// The request did not complete: connect error, reset, timeout.
    #[error("Sekoia.io request {endpoint} failed: {message}")]
    Transport {
        /// The call.
        endpoint: String,
        /// What failed.
        message: String,
    },
    /// A 2xx answer we could not read.
    #[error("Sekoia.io answered {endpoint} with a body we cannot read: {message}")]
    Decode {
        /// The call.
        endpoint: String,
        /// Parser message.
        message: String,
    },
}

impl RemoteFailure for SekoiaError {
    const REMOTE: &'static str = SINK;

    fn endpoint(&self) -> &str {
        match self {
            SekoiaError::Auth { endpoint, .. }
            | SekoiaError::Permission { endpoint, .. }
            | SekoiaError::CollectionNotFound { endpoint, .. }
            | SekoiaError::IndicatorNotFound { endpoint, .. }
            | SekoiaError::RateLimited { endpoint, .. }
            | SekoiaError::Validation { endpoint, .. }
            | SekoiaError::Http { endpoint, .. }
            | SekoiaError::Transport { endpoint, .. }
            | SekoiaError::Decode { endpoint, .. } => endpoint,
        }
    }

    fn class(&self) -> FailureClass<'_> {
        match self {
            SekoiaError::Auth { message, .. } => FailureClass::Auth { message },
            SekoiaError::Permission { message, .. } => FailureClass::Permission { message },
            SekoiaError::CollectionNotFound { message, .. } => FailureClass::Misconfigured {
                status: 404,
                key: KEY_COLLECTION,
                message: message.into(),
            },
            SekoiaError::RateLimited { retry_after, .. } => FailureClass::RateLimited {
                retry_after: *retry_after,
            },
            SekoiaError::IndicatorNotFound { message, .. } => FailureClass::Status {
                status: 404,
                message: message.into(),
            },
            SekoiaError::Validation {
                status, message, ..
            }
            | SekoiaError::Http {
                status, message, ..
            } => FailureClass::Status {
                status: *status,
                message: message.into(),
            },
            SekoiaError::Transport { message, .. } | SekoiaError::Decode { message, .. } => {
                FailureClass::Incomplete { message }
            }
        }
    }
}

/// Our explanation of a 401, with Sekoia's words appended.
pub fn auth_message(body: &str) -> String {
    format!(
        "the API key was refused (expired, revoked or mistyped? check `{KEY_APIKEY}`): {}",
        describe_body(body)
    )
}

/// Our explanation of a 403, with Sekoia's words appended.
pub fn permission_message(body: &str) -> String {
    format!(
        "the API key lacks the permission to manage IOC collections, or the collection belongs to \
         another community (check `{KEY_APIKEY}` and `{KEY_COLLECTION}`): {}",
        describe_body(body)
    )
}

/// Our explanation of a 404 on the collection, with Sekoia's words appended.
pub fn collection_message(collection: &str, body: &str) -> String {
    format!(
        "IOC collection `{collection}` not found: check `{KEY_COLLECTION}` (and that `{KEY_URL}` \
         is the Sekoia API of the collection's region): {}",
        describe_body(body)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::SinkError;

    #[test]
    fn reads_sekoia_error_bodies() {
        assert_eq!(
            describe_body(r#"{"message": "IOC Collection not found", "code": "T404"}"#),
            "IOC Collection not found (code T404)"
        );
        assert_eq!(
            describe_body(r#"{"message": "x", "code": 7}"#),
            "x (code 7)"
        );
        assert_eq!(describe_body("<html>oops</html>"), "<html>oops</html>");
        assert_eq!(describe_body(""), "empty body");
    }

    #[test]
    fn maps_to_pipeline_errors() {
        let e = SekoiaError::CollectionNotFound {
            endpoint: "GET x".into(),
            message: collection_message(
                "ioc-collection--1",
                r#"{"message":"IOC Collection not found"}"#,
            ),
        };
        assert_eq!(e.status(), 404);
        match e.to_sink_error() {
            SinkError::Config { key, message, .. } => {
                assert_eq!(key, KEY_COLLECTION);
                assert!(message.contains("ioc-collection--1"), "{message}");
            }
            other => panic!("expected Config, got {other:?}"),
        }
        let e = SekoiaError::RateLimited {
            endpoint: "POST x".into(),
            retry_after: Some(Duration::from_secs(2)),
        };
        assert_eq!(
            e.to_string(),
            "Sekoia.io rate-limited POST x (HTTP 429, retry after 2s)"
        );
        assert!(SekoiaError::Auth {
            endpoint: "GET x".into(),
            message: auth_message("")
        }
        .to_sink_error()
        .is_auth());
    }
}

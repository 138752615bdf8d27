//! Errors of the SentinelOne client: one variant per way a call can fail, keeping the HTTP status and
//! S1's own error entries so the sink can tell validation, auth, rate limits and outages apart.

use crate::remote::{FailureClass, RemoteFailure};
use serde::Deserialize;
use std::time::Duration;

/// The sink name used in errors and metrics.
pub const SINK: &str = "sentinelone";

/// The S1 error code for tokens scoped to several accounts ("doesn't support multi-scopes users").
pub const CODE_MULTI_SCOPE: i64 = 4_030_010;

/// One entry of S1's `{"errors": [...]}` body.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ApiError {
    /// Numeric code, e.g. 4000010 (validation), 4010010 (authentication).
    #[serde(default)]
    pub code: Option<i64>,
    /// Short title, e.g. "Validation Error".
    #[serde(default)]
    pub title: Option<String>,
    /// Free text; for validation errors a dict naming the offending items.
    #[serde(default)]
    pub detail: Option<String>,
}

impl ApiError {
    /// `code title: detail`, skipping what is absent.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        if let Some(code) = self.code {
            s.push_str(&code.to_string());
        }
        if let Some(title) = self.title.as_deref().filter(|t| !t.is_empty()) {
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str(title);
        }
        if let Some(detail) = self.detail.as_deref().filter(|d| !d.is_empty()) {
            if !s.is_empty() {
                s.push_str(": ");
            }
            s.push_str(&crate::remote::trim_body(detail));
        }
        s
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ApiError>,
}

/// Parses an error body; anything that is not S1's shape gives an empty list.
pub fn parse_errors(body: &str) -> Vec<ApiError> {
    serde_json::from_str::<ErrorBody>(body)
        .map(|b| b.errors)
        .unwrap_or_default()
}

/// Summarises the error entries, or the trimmed raw body when there are none.
pub fn describe_errors(errors: &[ApiError], body: &str) -> String {
    if errors.is_empty() {
        let b = crate::remote::trim_body(body);
        if b.is_empty() {
            "empty body".to_string()
        } else {
            b
        }
    } else {
        crate::remote::remote_text(
            &errors
                .iter()
                .map(ApiError::summary)
                .collect::<Vec<_>>()
                .join("; "),
        )
    }
}

/// How a SentinelOne call failed. `endpoint` is `METHOD url` without a query string.
#[derive(Debug, Clone, thiserror::Error)]
pub enum S1Error {
    /// 401: the token was refused (expired, revoked or mistyped).
    #[error("SentinelOne rejected the API token at {endpoint} (HTTP 401): {message}")]
    Auth {
        /// The call.
        endpoint: String,
        /// S1's words.
        message: String,
    },
    /// 403: the token is valid but may not do this here.
    #[error("SentinelOne denied permission at {endpoint} (HTTP 403): {message}")]
    Permission {
        /// The call.
        endpoint: String,
        /// S1's code, e.g. 4030010.
        code: Option<i64>,
        /// What is wrong, in our words then S1's.
        message: String,
    },
    /// 429.
    #[error("SentinelOne rate-limited {endpoint} (HTTP 429{})", retry_after.map(|d| format!(", retry after {}s", d.as_secs_f64())).unwrap_or_default())]
    RateLimited {
        /// The call.
        endpoint: String,
        /// `Retry-After`, when sent.
        retry_after: Option<Duration>,
    },
    /// 400 / 422: S1 refused the request's content (for a create: at least one item).
    #[error(
        "SentinelOne refused the request at {endpoint} (HTTP {status}): {}",
        describe_errors(errors, body)
    )]
    Validation {
        /// The call.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// S1's error entries.
        errors: Vec<ApiError>,
        /// The trimmed raw body (for when `errors` is empty).
        body: String,
    },
    /// Any other status: 5xx, 404 (wrong URL), 413…
    #[error("SentinelOne answered HTTP {status} at {endpoint}: {message}")]
    Http {
        /// The call.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// Summary of the body.
        message: String,
    },
    /// The request did not complete: connect error, reset, timeout.
    #[error("SentinelOne request {endpoint} failed: {message}")]
    Transport {
        /// The call.
        endpoint: String,
        /// What failed.
        message: String,
    },
    /// A call we refused to make because it could do harm (e.g. an unbounded delete).
    #[error("refused to call SentinelOne {endpoint}: {message}")]
    Unsafe {
        /// The call.
        endpoint: String,
        /// Why.
        message: String,
    },
    /// A 2xx answer we could not read.
    #[error("SentinelOne answered {endpoint} with a body we cannot read: {message}")]
    Decode {
        /// The call.
        endpoint: String,
        /// Parser message.
        message: String,
    },
}

impl RemoteFailure for S1Error {
    const REMOTE: &'static str = SINK;

    fn endpoint(&self) -> &str {
        match self {
            S1Error::Auth { endpoint, .. }
            | S1Error::Permission { endpoint, .. }
            | S1Error::RateLimited { endpoint, .. }
            | S1Error::Validation { endpoint, .. }
            | S1Error::Http { endpoint, .. }
            | S1Error::Transport { endpoint, .. }
            | S1Error::Decode { endpoint, .. }
            | S1Error::Unsafe { endpoint, .. } => endpoint,
        }
    }

    fn class(&self) -> FailureClass<'_> {
        match self {
            S1Error::Auth { message, .. } => FailureClass::Auth { message },
            S1Error::Permission { message, .. } => FailureClass::Permission { message },
            S1Error::RateLimited { retry_after, .. } => FailureClass::RateLimited {
                retry_after: *retry_after,
            },
            S1Error::Validation {
                status,
                errors,
                body,
                ..
            } => FailureClass::Status {
                status: *status,
                message: describe_errors(errors, body).into(),
            },
            S1Error::Http {
                status, message, ..
            } => FailureClass::Status {
                status: *status,
                message: message.into(),
            },
            S1Error::Unsafe { message, .. } => FailureClass::Misconfigured {
                status: 0,
                key: "sentinelone_intel",
                message: message.into(),
            },
            S1Error::Transport { message, .. } | S1Error::Decode { message, .. } => {
                FailureClass::Incomplete { message }
            }
        }
    }
}

/// Our explanation of a 401, with S1's entries appended.
pub fn auth_message(errors: &[ApiError]) -> String {
    let mut msg = "SentinelOne rejected the API token (expired, revoked or mistyped? check \
                   `sentinelone_intel.api_key`)"
        .to_string();
    if !errors.is_empty() {
        msg.push_str(": ");
        msg.push_str(&describe_errors(errors, ""));
    }
    msg
}

/// Our explanation of a 403: names the multi-scope case (code 4030010) explicitly.
pub fn permission_message(errors: &[ApiError], body: &str) -> String {
    let s1 = describe_errors(errors, body);
    if errors.iter().any(|e| e.code == Some(CODE_MULTI_SCOPE)) {
        format!(
            "the API token belongs to a user with several scopes, which this SentinelOne API \
             doesn't support (code {CODE_MULTI_SCOPE}, \"doesn't support multi-scopes users\"): \
             use a token of a user (or service user) with a single account or site scope [{s1}]"
        )
    } else {
        format!(
            "the API token lacks the permission for this call in the configured scope (Threat \
             Intelligence view for GET, manage for POST/DELETE; is the account/site/group id one \
             the token can see?) [{s1}]"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s1_error_bodies() {
        let body = r#"{"errors":[{"code":4010010,"title":"Authentication Failed","detail":null}]}"#;
        let errs = parse_errors(body);
        assert_eq!(errs[0].code, Some(4_010_010));
        assert_eq!(errs[0].summary(), "4010010 Authentication Failed");
        assert!(parse_errors("<html>").is_empty());
        assert_eq!(describe_errors(&[], ""), "empty body");
    }

    #[test]
    fn multi_scope_is_named() {
        let errs = vec![ApiError {
            code: Some(CODE_MULTI_SCOPE),
            title: Some("Forbidden".into()),
            detail: None,
        }];
        assert!(permission_message(&errs, "").contains("multi-scopes"));
        let e = S1Error::RateLimited {
            endpoint: "POST x".into(),
            retry_after: Some(Duration::from_secs(2)),
        };
        assert_eq!(
            e.to_string(),
            "SentinelOne rate-limited POST x (HTTP 429, retry after 2s)"
        );
        assert_eq!(e.status(), 429);
    }
}

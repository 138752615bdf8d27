//! What every HTTP client of a remote shares: user-supplied base URLs ([`join_url`],
//! [`base_url_problem`]), the reqwest client with TLS settings and timeouts ([`client`]), one exchange
//! with a remote — send, bounded body, metrics, `Retry-After` ([`exchange`]) —, the pipeline-facing
//! reading of a failed call ([`failure`]), one reconnect/retry backoff ([`backoff`]), and remote
//! text made safe for logs ([`text`]).

pub mod backoff;
pub mod client;
pub mod exchange;
pub mod failure;
pub mod text;

pub use backoff::Backoff;
pub use client::{build_client, client_builder, http_client, ClientError, TlsSettings};
pub use exchange::{
    exchange, json_request, read_body, retry_after, BodyError, CallFailure, Exchange, JsonApi,
    Refusal, MAX_RESPONSE_BYTES,
};
pub use failure::{FailureClass, RemoteFailure};
pub use text::{
    describe_transport_error, error_body, register_secret, remote_text, scrub, trim_body,
    MAX_REMOTE_TEXT,
};

/// Joins a user-supplied base URL and a path without ever doubling a slash: trailing slashes of the
/// base and leading slashes of the path are removed before joining with exactly one `/`.
pub fn join_url(base: &str, path: &str) -> String {
    let base = base.trim().trim_end_matches('/');
    let path = path.trim_start_matches('/');
    if path.is_empty() {
        base.to_string()
    } else {
        format!("{base}/{path}")
    }
}

/// True for the placeholders shipped in the connectors' sample compose files (`ChangeMe`…).
pub fn is_placeholder(value: &str) -> bool {
    let v = value.trim().to_ascii_lowercase();
    v.is_empty() || v == "changeme" || v == "changeme_or_empty"
}

/// What is wrong with a user-supplied base URL, if anything: missing, a placeholder, not http(s),
/// or carrying a query string.
pub fn base_url_problem(url: Option<&str>) -> Option<String> {
    match url.map(str::trim) {
        None | Some("") => Some("is required".into()),
        Some(u) if is_placeholder(u) => Some("is still the `ChangeMe` placeholder".into()),
        Some(u) => match url::Url::parse(u) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => parsed
                .query()
                .is_some()
                .then(|| "must not have a query string".into()),
            Ok(parsed) => Some(format!("must be http(s), not `{}`", parsed.scheme())),
            Err(e) => Some(format!("is not a URL: {e}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_never_doubles_slashes() {
        assert_eq!(
            join_url("https://x.io/", "/web/api"),
            "https://x.io/web/api"
        );
        assert_eq!(
            join_url("https://x.io//", "web/api"),
            "https://x.io/web/api"
        );
        assert_eq!(join_url("https://x.io", "web/api"), "https://x.io/web/api");
        assert_eq!(join_url(" https://x.io/ ", ""), "https://x.io");
    }
}

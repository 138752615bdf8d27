//! Helpers every HTTP client of a remote shares: URL joining that cannot produce `//`, the reqwest
//! client with TLS settings and timeouts, `Retry-After` parsing and error-body trimming.

use reqwest::header::HeaderMap;
use std::time::Duration;

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

/// Builds the HTTP client for one remote. TLS verification is on unless the user turned it off.
pub fn http_client(ssl_verify: bool, timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .user_agent(concat!("iocsync/", env!("CARGO_PKG_VERSION")))
        .danger_accept_invalid_certs(!ssl_verify)
        .connect_timeout(Duration::from_secs(10).min(timeout))
        .timeout(timeout)
        .build()
}

/// Reads `Retry-After` as delta-seconds (the form these APIs use); an HTTP-date is ignored.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let raw = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: f64 = raw.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

/// Shortens a response body for an error message (bodies can be whole HTML pages).
pub fn trim_body(body: &str) -> String {
    const MAX: usize = 300;
    let body = body.trim();
    if body.len() <= MAX {
        return body.to_string();
    }
    let mut end = MAX;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &body[..end])
}

/// Describes a reqwest error without the URL's query (which could carry a secret) for logs.
pub fn describe_transport_error(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "connection failed"
    } else if err.is_body() || err.is_decode() {
        "bad response body"
    } else {
        "request failed"
    };
    let mut msg = kind.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        msg.push_str(": ");
        msg.push_str(&cause.to_string());
        source = cause.source();
    }
    msg
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

    #[test]
    fn retry_after_seconds() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(reqwest::header::RETRY_AFTER, "3".parse().expect("header"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            "soon".parse().expect("header"),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn trims_long_bodies_on_char_boundaries() {
        let long = "é".repeat(400);
        let t = trim_body(&long);
        assert!(t.len() <= 304);
        assert!(t.ends_with('…'));
    }
}

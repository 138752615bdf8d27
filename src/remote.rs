//! Helpers every HTTP client of a remote shares: URL joining that cannot produce `//`, the reqwest
//! client with TLS settings and timeouts, `Retry-After` parsing and error-body trimming.

use reqwest::header::HeaderMap;
use std::path::{Path, PathBuf};
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

/// How one remote's TLS is set up, from its `<section>.ssl_verify` and `<section>.ssl_ca` keys.
#[derive(Debug, Clone, Copy)]
pub struct TlsSettings<'a> {
    /// The remote's name in log lines (`opencti`, `misp`, `sentinelone`, `sekoia`).
    pub remote: &'static str,
    /// Verify the certificate chain and the host name (the default).
    pub verify: bool,
    /// The `ssl_verify` key, named in the warning when verification is off.
    pub verify_key: &'static str,
    /// A PEM bundle of CA certificates trusted in addition to the bundled and system roots.
    pub ca: Option<&'a Path>,
    /// The `ssl_ca` key, named when the bundle is unusable.
    pub ca_key: &'static str,
}

impl<'a> TlsSettings<'a> {
    /// A remote's settings from its `[ssl_verify key, ssl_ca key]` and values; an empty CA path
    /// (`OPENCTI_SSL_CA=`) means none.
    pub fn new(
        remote: &'static str,
        [verify_key, ca_key]: [&'static str; 2],
        verify: bool,
        ca: Option<&'a Path>,
    ) -> Self {
        TlsSettings {
            remote,
            verify,
            verify_key,
            ca: ca.filter(|p| !p.as_os_str().is_empty()),
            ca_key,
        }
    }
}

/// Why the HTTP client of a remote could not be built. Every variant is a configuration problem.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The CA bundle file could not be read.
    #[error("cannot read the CA bundle `{}`: {source}", path.display())]
    CaUnreadable {
        /// The `ssl_ca` key.
        key: &'static str,
        /// The configured path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The CA bundle holds no usable PEM certificate.
    #[error("`{}` is not a usable PEM CA bundle: {message}", path.display())]
    CaInvalid {
        /// The `ssl_ca` key.
        key: &'static str,
        /// The configured path.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// reqwest refused the settings (TLS backend setup).
    #[error("cannot build the HTTP client: {message}")]
    Build {
        /// The key most likely at fault.
        key: &'static str,
        /// The builder's error.
        message: String,
    },
}

impl ClientError {
    /// The setting to fix.
    pub fn key(&self) -> &'static str {
        match self {
            ClientError::CaUnreadable { key, .. }
            | ClientError::CaInvalid { key, .. }
            | ClientError::Build { key, .. } => key,
        }
    }
}

/// Reads a PEM bundle of CA certificates. An empty or non-PEM file is an error rather than a
/// silent no-op: the user meant to trust something.
fn load_ca_bundle(
    path: &Path,
    key: &'static str,
) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let pem = std::fs::read(path).map_err(|source| ClientError::CaUnreadable {
        key,
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |message: String| ClientError::CaInvalid {
        key,
        path: path.to_path_buf(),
        message,
    };
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| invalid(e.to_string()))?;
    if certs.is_empty() {
        return Err(invalid(
            "no `-----BEGIN CERTIFICATE-----` block found".into(),
        ));
    }
    Ok(certs)
}

/// A client builder with our user agent and the remote's TLS settings: webpki's bundled roots,
/// the system's roots (which honour `SSL_CERT_FILE`/`SSL_CERT_DIR`) and the remote's own CA bundle.
/// Used directly only where a client needs other timeouts (the OpenCTI stream); everything else
/// calls [`http_client`], which also warns when verification is off.
pub fn client_builder(tls: &TlsSettings<'_>) -> Result<reqwest::ClientBuilder, ClientError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("iocsync/", env!("CARGO_PKG_VERSION")))
        .danger_accept_invalid_certs(!tls.verify);
    if let Some(path) = tls.ca {
        for cert in load_ca_bundle(path, tls.ca_key)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder)
}

/// Builds a configured client, mapping a builder failure: with a CA bundle set, the bundle is
/// the likely culprit (a PEM block whose content is not a certificate is only caught here).
pub fn build_client(
    builder: reqwest::ClientBuilder,
    tls: &TlsSettings<'_>,
) -> Result<reqwest::Client, ClientError> {
    builder.build().map_err(|e| {
        let message = describe_transport_error(&e);
        match tls.ca {
            Some(path) => ClientError::CaInvalid {
                key: tls.ca_key,
                path: path.to_path_buf(),
                message,
            },
            None => ClientError::Build {
                key: tls.verify_key,
                message,
            },
        }
    })
}

/// Builds the HTTP client for one remote. TLS verification is on unless the user turned it off;
/// when off, a warning names the key (once per client, i.e. at start).
pub fn http_client(
    tls: &TlsSettings<'_>,
    timeout: Duration,
) -> Result<reqwest::Client, ClientError> {
    let builder = client_builder(tls)?
        .connect_timeout(Duration::from_secs(10).min(timeout))
        .timeout(timeout);
    let client = build_client(builder, tls)?;
    if !tls.verify {
        warn_unverified(tls);
    }
    Ok(client)
}

/// The warning logged when a remote's certificate is not checked.
fn warn_unverified(tls: &TlsSettings<'_>) {
    let env = crate::config::env_name(tls.verify_key).unwrap_or_else(|| tls.verify_key.into());
    tracing::warn!(
        remote = tls.remote,
        "TLS verification is off for {} ({env}=false): neither its certificate nor its host \
         name is checked, so anyone on the path can read the credential",
        tls.remote
    );
}

/// Reads `Retry-After` as delta-seconds (the form these APIs use); an HTTP-date is ignored.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let raw = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: f64 = raw.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

/// Largest response body read from a remote. Bodies are read whole before they are parsed, so this
/// bounds the memory one answer can take; a real page of any of our APIs is far below it.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Longest remote text (error body, error message) carried into logs, `check` and dead letters.
pub const MAX_REMOTE_TEXT: usize = 2048;

/// Secrets shorter than this are not scrubbed: replacing every `abc` in a text would garble it
/// while hiding nothing a real token would need hiding.
const MIN_SECRET_LEN: usize = 4;

/// The credentials of the remotes this process talks to, registered when their clients are built.
/// Process-wide because remote text travels far (errors → logs, `check`, dead letters) and a server
/// may echo any remote's credential, not only its own.
static SECRETS: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

/// Registers a credential to remove from remote text (see [`scrub`]).
pub fn register_secret(value: &str) {
    let value = value.trim();
    if value.len() < MIN_SECRET_LEN {
        return;
    }
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|s| s == value) {
        secrets.push(value.to_string());
        // Longest first, so a token is removed whole before a shorter secret inside it.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// Removes every registered credential and every URL credential (`scheme://user:pass@` →
/// `scheme://***@`) from text that came from a remote.
pub fn scrub(text: &str) -> String {
    let mut out = scrub_url_credentials(text);
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    for secret in secrets.iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "***");
        }
    }
    out
}

/// `scheme://user:pass@host` → `scheme://***@host`, for every URL in the text.
fn scrub_url_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| c.is_whitespace() || "/?#\"'<>".contains(c))
            .unwrap_or(tail.len());
        match tail[..authority_end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// Cuts `text` to at most `max` bytes on a char boundary, marking the cut with `…`.
fn cap(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Remote text made fit for a log line, `check` or a dead letter: scrubbed (see [`scrub`]),
/// trimmed and capped at [`MAX_REMOTE_TEXT`].
pub fn remote_text(text: &str) -> String {
    cap(scrub(text.trim()).trim(), MAX_REMOTE_TEXT)
}

/// Shortens a response body for an error message (bodies can be whole HTML pages); scrubbed.
pub fn trim_body(body: &str) -> String {
    const MAX: usize = 300;
    cap(&remote_text(body), MAX)
}

/// A non-2xx body as text for parsing the remote's error entries: scrubbed whole (not capped, so
/// a long list of item errors still parses), so everything derived from it is free of secrets.
pub fn error_body(bytes: &[u8]) -> String {
    scrub(&String::from_utf8_lossy(bytes))
}

/// Why a response body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The connection failed mid-body.
    #[error("{0}")]
    Transport(String),
    /// The body is larger than [`MAX_RESPONSE_BYTES`]; reading stopped there.
    #[error("response body larger than the {limit}-byte limit (MAX_RESPONSE_BYTES), not read")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
}

/// Reads a response body, at most [`MAX_RESPONSE_BYTES`]: an announced larger `Content-Length`
/// fails at once, a longer stream fails as soon as it passes the limit.
pub async fn read_body(resp: reqwest::Response) -> Result<bytes::Bytes, BodyError> {
    read_body_limited(resp, MAX_RESPONSE_BYTES).await
}

async fn read_body_limited(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<bytes::Bytes, BodyError> {
    let too_large = BodyError::TooLarge { limit };
    let announced = resp.content_length().unwrap_or(0);
    if announced > limit as u64 {
        return Err(too_large);
    }
    // `announced` ≤ limit here; a lying server still cannot make us grow past the limit.
    let mut buf = bytes::BytesMut::with_capacity(announced as usize);
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| BodyError::Transport(describe_transport_error(&e)))?
    {
        if buf.len() + chunk.len() > limit {
            return Err(too_large);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
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
    let mut msg = remote_text(&msg);
    // rustls' wording; the fix is rarely the URL the `check` hint points at.
    if msg.contains("invalid peer certificate") {
        msg.push_str(" (TLS: the server's certificate is not trusted; a private CA goes in the remote's `*_SSL_CA` setting)");
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
    fn scrubs_registered_secrets_and_url_credentials() {
        register_secret("unit-secret-4f2a");
        register_secret("abc"); // too short to scrub
        let text = "Authorization: Bearer unit-secret-4f2a; see https://bob:pw%40x@host.example/p \
                    and http://plain.example/a@b and ftp://u@h abc";
        let clean = scrub(text);
        assert_eq!(
            clean,
            "Authorization: Bearer ***; see https://***@host.example/p \
                    and http://plain.example/a@b and ftp://***@h abc"
        );
    }

    #[test]
    fn remote_text_is_capped() {
        let long = "x".repeat(3 * MAX_REMOTE_TEXT);
        let t = remote_text(&long);
        assert!(t.len() <= MAX_REMOTE_TEXT + '…'.len_utf8());
        assert!(t.ends_with('…'));
    }

    /// A local server answering `/chunked` with 8 × 512 bytes (no length) and `/announced` with a
    /// 4 KiB body and its `Content-Length`.
    async fn body_server() -> String {
        use axum::routing::get;
        let app = axum::Router::new()
            .route(
                "/chunked",
                get(|| async {
                    let chunks = (0..8).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 512]));
                    axum::body::Body::from_stream(futures_util::stream::iter(chunks))
                }),
            )
            .route("/announced", get(|| async { vec![b'y'; 4096] }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        url
    }

    #[tokio::test]
    async fn bodies_are_read_up_to_the_limit_only() {
        let base = body_server().await;
        let http = reqwest::Client::new();
        for path in ["chunked", "announced"] {
            let get = || http.get(format!("{base}/{path}")).send();
            let resp = get().await.expect("response");
            let err = read_body_limited(resp, 1024).await.expect_err(path);
            assert!(matches!(err, BodyError::TooLarge { limit: 1024 }), "{err}");
            assert!(err.to_string().contains("1024-byte limit"), "{err}");
            let resp = get().await.expect("response");
            let body = read_body_limited(resp, 4096).await.expect(path);
            assert_eq!(body.len(), 4096);
        }
    }

    #[test]
    fn trims_long_bodies_on_char_boundaries() {
        let long = "é".repeat(400);
        let t = trim_body(&long);
        assert!(t.len() <= 304);
        assert!(t.ends_with('…'));
    }
}

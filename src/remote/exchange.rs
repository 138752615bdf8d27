//! One exchange with a remote: send the request, read the body (bounded), count the call in the
//! metrics and hand back status, `Retry-After` and body for the client to read in its remote's
//! terms. Every HTTP client (SentinelOne, Sekoia, MISP, OpenCTI's GraphQL) goes through here.

use reqwest::header::{HeaderMap, HeaderValue};
use std::time::Duration;

use super::text::{describe_transport_error, error_body};

/// Reads `Retry-After` as delta-seconds (the form these APIs use); an HTTP-date is ignored.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let raw = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: f64 = raw.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

/// Largest response body read from a remote. Bodies are read whole before they are parsed, so this
/// bounds the memory one answer can take; a real page of any of our APIs is far below it.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// What a remote answered to one request: its status, `Retry-After` and whole body.
#[derive(Debug)]
pub struct Exchange {
    /// The HTTP status.
    pub status: u16,
    /// `Retry-After`, when sent (and in seconds).
    pub retry_after: Option<Duration>,
    /// The answer's headers, for what a remote says there (MISP's `Date`, skipped elements).
    pub headers: HeaderMap,
    /// The body, at most [`MAX_RESPONSE_BYTES`].
    pub body: bytes::Bytes,
}

impl Exchange {
    /// A 2xx answer.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A request to a JSON API: the credential in `Authorization`, `Accept: application/json`, the
/// query and, when given, a JSON body.
pub fn json_request<Q: serde::Serialize + ?Sized, B: serde::Serialize + ?Sized>(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    auth: &reqwest::header::HeaderValue,
    query: &Q,
    body: Option<&B>,
) -> reqwest::RequestBuilder {
    let request = http
        .request(method, url)
        .header(reqwest::header::AUTHORIZATION, auth.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .query(query);
    match body {
        Some(body) => request.json(body),
        None => request,
    }
}

/// Sends `request` and reads its answer whole. The call is counted in `iocsync_api_calls_total` as
/// `remote` / `metric` with its status, or status 0 when it did not complete; the error is then a
/// description of what failed (connect, reset, timeout, a body cut short or too large), free of
/// URLs and secrets. `endpoint` (`METHOD url`) only names the call in the debug log.
pub async fn exchange(
    remote: &'static str,
    metric: &str,
    endpoint: &str,
    request: reqwest::RequestBuilder,
) -> Result<Exchange, String> {
    let resp = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            crate::metrics::api_call(remote, metric, 0);
            return Err(describe_transport_error(&e));
        }
    };
    let status = resp.status().as_u16();
    let retry_after = retry_after(resp.headers());
    let headers = resp.headers().clone();
    let body = match read_body(resp).await {
        Ok(b) => b,
        Err(e) => {
            // The status line arrived but the body did not (or too much of it): a failed call.
            crate::metrics::api_call(remote, metric, 0);
            return Err(e.to_string());
        }
    };
    crate::metrics::api_call(remote, metric, status);
    tracing::debug!(remote, endpoint, status, bytes = body.len(), "remote call");
    Ok(Exchange {
        status,
        retry_after,
        headers,
        body,
    })
}

/// The client and credential of one JSON API. Every call carries the credential in
/// `Authorization` and goes through [`exchange`]; a failure comes back as a [`CallFailure`] for the
/// client to read in its remote's terms.
pub struct JsonApi {
    remote: &'static str,
    http: reqwest::Client,
    auth: HeaderValue,
}

impl std::fmt::Debug for JsonApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The credential is deliberately absent.
        f.debug_struct("JsonApi")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

/// Why a call to a JSON API brought no 2xx body back.
#[derive(Debug)]
pub enum CallFailure {
    /// The request did not complete (connect, reset, timeout, a body cut short or too large).
    Transport {
        /// `METHOD url` of the call.
        endpoint: String,
        /// What failed, free of URLs and secrets.
        message: String,
    },
    /// The remote answered with another status.
    Refused(Refusal),
}

/// A non-2xx answer, for the remote's own reading of its status and body.
#[derive(Debug)]
pub struct Refusal {
    /// `METHOD url` of the call.
    pub endpoint: String,
    /// The HTTP status.
    pub status: u16,
    /// `Retry-After`, when sent (and in seconds).
    pub retry_after: Option<Duration>,
    /// The body as text, with registered secrets scrubbed ([`error_body`]).
    pub text: String,
}

impl JsonApi {
    /// The API of `remote` (its name in metrics and logs) through `http`, with `auth` as the
    /// `Authorization` header of every call.
    pub fn new(remote: &'static str, http: reqwest::Client, auth: HeaderValue) -> Self {
        JsonApi { remote, http, auth }
    }

    /// The API of the sink `remote` as its validated section describes it: `secret` is
    /// registered for scrubbing from every text iocsync writes, the HTTP client gets the
    /// section's TLS settings and timeout (failing only when its CA bundle cannot be used, as a
    /// configuration error naming the key).
    pub fn for_sink(
        remote: &'static str,
        tls: &super::TlsSettings<'_>,
        timeout: Duration,
        secret: &str,
        auth: HeaderValue,
    ) -> Result<Self, crate::sinks::SinkError> {
        super::text::register_secret(secret);
        let http = super::client::http_client(tls, timeout)
            .map_err(|e| crate::sinks::SinkError::config(remote, e.key(), e.to_string()))?;
        Ok(JsonApi::new(remote, http, auth))
    }

    /// One call to `url` with the query and, when given, a JSON body. Counted as `METHOD route`
    /// (the route names the endpoint without ids); errors name it `METHOD url`.
    pub async fn call<Q: serde::Serialize + ?Sized, B: serde::Serialize + ?Sized>(
        &self,
        method: reqwest::Method,
        url: &str,
        route: &str,
        query: &Q,
        body: Option<&B>,
    ) -> Result<bytes::Bytes, CallFailure> {
        let endpoint = format!("{method} {url}");
        let metric = format!("{method} {route}");
        let request = json_request(&self.http, method, url, &self.auth, query, body);
        let answer = match exchange(self.remote, &metric, &endpoint, request).await {
            Ok(answer) => answer,
            Err(message) => return Err(CallFailure::Transport { endpoint, message }),
        };
        if answer.is_success() {
            return Ok(answer.body);
        }
        Err(CallFailure::Refused(Refusal {
            endpoint,
            status: answer.status,
            retry_after: answer.retry_after,
            text: error_body(&answer.body),
        }))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

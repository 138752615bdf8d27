//! One SSE connection to `{url}/stream/{id}`: the request (headers, resume id, `recover`), what a
//! refused or ended connection means, and the reconnect delay policy. The body is decoded by
//! [`crate::sources::sse`], not here.

use super::SOURCE_NAME;
use crate::remote::{describe_transport_error, join_url};
use crate::secret::Secret;
use crate::sources::SourceError;
use futures_util::StreamExt;
use reqwest::header::{HeaderValue, ACCEPT, CACHE_CONTROL, CONTENT_TYPE};

/// How much of an error body is read for the log (the rest is not worth waiting for).
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Everything one connection needs.
#[derive(Debug, Clone)]
pub struct StreamRequest {
    /// Platform base URL.
    pub base_url: String,
    /// The live stream id.
    pub stream_id: String,
    /// Bearer token.
    pub token: Secret,
    /// Sent as `Last-Event-ID` (always set: the server only heartbeats once it has a position,
    /// and refuses `recover` without one).
    pub resume_from: String,
    /// `recover=<iso>` query parameter.
    pub recover: Option<String>,
    /// `listen-delete` header.
    pub listen_delete: bool,
    /// `no-dependencies` header.
    pub no_dependencies: bool,
    /// `with-inferences` header.
    pub with_inferences: bool,
}

impl StreamRequest {
    /// The stream URL without the query (safe to log).
    pub fn url(&self) -> String {
        join_url(&self.base_url, &format!("stream/{}", self.stream_id))
    }

    /// Sends the request and checks that the answer is an event stream; the caller reads the
    /// body. Our loop reconnects, so it can pick the resume id, log the cause and back off.
    pub async fn connect(&self, http: &reqwest::Client) -> Result<reqwest::Response, Disconnect> {
        let resume = HeaderValue::from_str(&self.resume_from).map_err(|_| Disconnect {
            cause: format!("resume id `{}` is not a valid header", self.resume_from),
            persistent: true,
            status: None,
        })?;
        let mut req = http
            .get(self.url())
            .bearer_auth(self.token.expose())
            .header(ACCEPT, HeaderValue::from_static("text/event-stream"))
            .header(CACHE_CONTROL, HeaderValue::from_static("no-cache"))
            .header("listen-delete", bool_header(self.listen_delete))
            .header("no-dependencies", bool_header(self.no_dependencies))
            .header("with-inferences", bool_header(self.with_inferences))
            .header("Last-Event-ID", resume);
        if let Some(date) = &self.recover {
            req = req.query(&[("recover", date)]);
        }
        let resp = req.send().await.map_err(|e| Disconnect {
            cause: describe_transport_error(&e),
            persistent: false,
            status: None,
        })?;
        let status = resp.status();
        if !status.is_success() {
            let body = read_error_body(resp).await;
            return Err(refused(status.as_u16(), &body));
        }
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if !content_type
            .to_ascii_lowercase()
            .starts_with("text/event-stream")
        {
            return Err(Disconnect {
                cause: format!(
                    "response is not an event stream (content type {content_type:?}): wrong URL \
                     or a proxy in the way"
                ),
                persistent: false,
                status: None,
            });
        }
        Ok(resp)
    }
}

/// The start of an error body, without waiting for more than [`ERROR_BODY_LIMIT`] bytes of it.
async fn read_error_body(resp: reqwest::Response) -> String {
    let mut body = Vec::new();
    let mut chunks = resp.bytes_stream();
    while let Some(Ok(chunk)) = chunks.next().await {
        let room = ERROR_BODY_LIMIT.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= ERROR_BODY_LIMIT {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

fn bool_header(v: bool) -> HeaderValue {
    HeaderValue::from_static(if v { "true" } else { "false" })
}

/// Why a connection failed or ended, and how soon to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// Human cause for the log.
    pub cause: String,
    /// Not transient (401/403/410): retry at the slow pace, and give up in `--once` mode.
    pub persistent: bool,
    /// The HTTP status, when the server answered with an error.
    pub status: Option<u16>,
}

/// Describes an error answer to the stream request; the token never appears (the URL carries no
/// query secret either).
pub fn refused(code: u16, body: &str) -> Disconnect {
    let what = match code {
        401 => {
            "the token was rejected, or this user may not read this stream (OpenCTI answers 401 \
             for unknown streams too)"
        }
        403 => "this user is not allowed to read the stream",
        404 => "no such stream on this platform",
        410 => "the live stream is stopped (start it in the OpenCTI UI)",
        500 => "the server failed to open the stream",
        _ => "unexpected status",
    };
    let status = reqwest::StatusCode::from_u16(code)
        .map(|s| s.to_string())
        .unwrap_or_else(|_| code.to_string());
    let mut cause = format!("HTTP {status}: {what}");
    let body = crate::remote::trim_body(body);
    if !body.is_empty() {
        cause.push_str(&format!(" ({body})"));
    }
    Disconnect {
        cause,
        persistent: matches!(code, 401 | 403 | 404 | 410),
        status: Some(code),
    }
}

/// How one connection ended.
pub(super) enum ConnectionEnd {
    /// Shutdown, `--once` caught up, or the pipeline is gone: the run is over.
    Finished,
    /// The operator reset the connector state.
    Reset,
    /// The connection failed or died.
    Lost {
        /// Why.
        why: Disconnect,
        /// It carried at least one id-bearing message (the backoff starts over).
        delivered: bool,
    },
}

impl ConnectionEnd {
    /// A connection lost for a reason worth retrying soon (no HTTP status involved).
    pub(super) fn transient(cause: String, delivered: bool) -> Self {
        ConnectionEnd::Lost {
            why: Disconnect {
                cause,
                persistent: false,
                status: None,
            },
            delivered,
        }
    }
}

pub(super) fn stream_error(req: &StreamRequest, why: &Disconnect) -> SourceError {
    match why.status {
        Some(401 | 403) => SourceError::Auth {
            source_name: SOURCE_NAME,
            endpoint: req.url(),
            message: why.cause.clone(),
        },
        Some(404 | 410) => SourceError::Config {
            source_name: SOURCE_NAME,
            key: "connector.live_stream_id",
            message: why.cause.clone(),
        },
        _ => SourceError::Other {
            source_name: SOURCE_NAME,
            message: format!("{}: {}", req.url(), why.cause),
        },
    }
}

/// `--once` stops retrying: a cron job gets an answer instead of hanging.
pub(super) fn gave_up(attempts: u32, last: &str) -> SourceError {
    SourceError::Other {
        source_name: SOURCE_NAME,
        message: format!(
            "gave up after {attempts} failed attempts in a row (`run --once`, \
             opencti.once_attempts): {last}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_has_no_double_slash() {
        let r = StreamRequest {
            base_url: "https://cti.example.com/".into(),
            stream_id: "abc".into(),
            token: Secret::new("t"),
            resume_from: "0-0".into(),
            recover: None,
            listen_delete: true,
            no_dependencies: true,
            with_inferences: false,
        };
        assert_eq!(r.url(), "https://cti.example.com/stream/abc");
    }
}

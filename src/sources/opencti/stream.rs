//! One SSE connection to `{url}/stream/{id}`: the request (headers, resume id, `recover`), what a
//! failed or ended connection means, and the reconnect delay policy.

use crate::remote::{describe_transport_error, join_url};
use crate::secret::Secret;
use rand::Rng;
use reqwest::header::{HeaderValue, CACHE_CONTROL};
use reqwest_eventsource::{retry, Error as SseError, EventSource};
use std::time::Duration;

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

    /// Opens the event source with the library's own retry disabled: our loop reconnects, so it
    /// can pick the resume id, log the cause and back off.
    pub fn open(&self, http: &reqwest::Client) -> Result<EventSource, String> {
        let mut req = http
            .get(self.url())
            .bearer_auth(self.token.expose())
            .header(CACHE_CONTROL, HeaderValue::from_static("no-cache"))
            .header("listen-delete", bool_header(self.listen_delete))
            .header("no-dependencies", bool_header(self.no_dependencies))
            .header("with-inferences", bool_header(self.with_inferences));
        let resume = HeaderValue::from_str(&self.resume_from)
            .map_err(|_| format!("resume id `{}` is not a valid header", self.resume_from))?;
        req = req.header("Last-Event-ID", resume);
        if let Some(date) = &self.recover {
            req = req.query(&[("recover", date)]);
        }
        let mut es = EventSource::new(req).map_err(|e| e.to_string())?;
        es.set_retry_policy(Box::new(retry::Never));
        Ok(es)
    }
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

/// Describes a stream error; the token never appears (errors carry no URL query either).
pub async fn classify(err: SseError) -> Disconnect {
    match err {
        SseError::InvalidStatusCode(status, resp) => {
            let body = resp.text().await.unwrap_or_default();
            let code = status.as_u16();
            let what = match code {
                401 => {
                    "the token was rejected, or this user may not read this stream (OpenCTI \
                        answers 401 for unknown streams too)"
                }
                403 => "this user is not allowed to read the stream",
                404 => "no such stream on this platform",
                410 => "the live stream is stopped (start it in the OpenCTI UI)",
                500 => "the server failed to open the stream",
                _ => "unexpected status",
            };
            let mut cause = format!("HTTP {status}: {what}");
            let body = crate::remote::trim_body(&body);
            if !body.is_empty() {
                cause.push_str(&format!(" ({body})"));
            }
            Disconnect {
                cause,
                persistent: matches!(code, 401 | 403 | 404 | 410),
                status: Some(code),
            }
        }
        SseError::InvalidContentType(ct, _) => Disconnect {
            cause: format!(
                "response is not an event stream (content type {:?}): wrong URL or a proxy in \
                 the way",
                ct
            ),
            persistent: false,
            status: None,
        },
        SseError::Transport(e) => Disconnect {
            cause: describe_transport_error(&e),
            persistent: false,
            status: None,
        },
        SseError::StreamEnded => Disconnect {
            cause: "the server closed the stream".into(),
            persistent: false,
            status: None,
        },
        SseError::Utf8(e) => Disconnect {
            cause: format!("stream is not UTF-8: {e}"),
            persistent: false,
            status: None,
        },
        SseError::Parser(e) => Disconnect {
            cause: format!("unparsable SSE framing: {e}"),
            persistent: false,
            status: None,
        },
        SseError::InvalidLastEventId(id) => Disconnect {
            cause: format!("invalid resume id `{id}`"),
            persistent: true,
            status: None,
        },
    }
}

/// Exponential reconnect delays with jitter, capped; persistent failures wait the cap.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// A policy between `min` and `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            failures: 0,
        }
    }

    /// Call when a connection delivered data: the next failure starts from `min` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// The delay before the next attempt after a failure.
    pub fn next_delay(&mut self, persistent: bool) -> Duration {
        let exp = self.failures.min(16);
        self.failures = self.failures.saturating_add(1);
        let base = if persistent {
            self.max
        } else {
            self.min.saturating_mul(1u32 << exp).min(self.max)
        };
        // Jitter in [50 %, 100 %] spreads reconnecting connectors; persistent errors stay slow
        // ([75 %, 100 %] of the cap) so a bad token never turns into a hot loop.
        let low = if persistent { 0.75 } else { 0.5 };
        let factor = rand::rng().random_range(low..=1.0);
        base.mul_f64(factor).max(self.min.mul_f64(0.5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(60));
        let d: Vec<Duration> = (0..8).map(|_| b.next_delay(false)).collect();
        assert!(d[0] >= Duration::from_secs(1) && d[0] <= Duration::from_secs(2));
        assert!(d[3] >= Duration::from_secs(8) && d[3] <= Duration::from_secs(16));
        assert!(d.iter().all(|x| *x <= Duration::from_secs(60)));
        assert!(d[7] >= Duration::from_secs(30));
        b.reset();
        assert!(b.next_delay(false) <= Duration::from_secs(2));
        assert!(b.next_delay(true) >= Duration::from_secs(45));
    }

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

//! The MISP REST client: `POST attributes/restSearch` (one page per call, with the page's
//! `X-Skipped-Elements-Count` when the server sends it), `GET feeds`, `GET servers/getVersion`;
//! raw-key auth, transient failures retried with backoff (honouring `Retry-After`), errors that keep
//! the endpoint and status.

use super::config::MispConfig;
use super::wire::{attributes_of, Feed};
use crate::config::Valid;
use crate::remote::{
    error_body, exchange, http_client, join_url, register_secret, remote_text, trim_body, Backoff,
};
use crate::secret::Secret;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::time::Duration;

/// A failed MISP call.
#[derive(Debug, thiserror::Error)]
pub enum MispError {
    /// The request did not complete (DNS, TCP, TLS, timeout).
    #[error("{endpoint}: {message}")]
    Transport {
        /// What was called.
        endpoint: String,
        /// Why it failed.
        message: String,
    },
    /// The server refused the key (401/403).
    #[error("{endpoint}: HTTP {status}: the key was refused: {message}")]
    Auth {
        /// What was called.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// What MISP said.
        message: String,
    },
    /// Any other HTTP error.
    #[error("{endpoint}: HTTP {status}: {body}")]
    Status {
        /// What was called.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// The (trimmed) body.
        body: String,
        /// `Retry-After`, when sent.
        retry_after: Option<Duration>,
    },
    /// The answer was not what the API documents.
    #[error("{endpoint}: unreadable response: {message}")]
    Decode {
        /// What was called.
        endpoint: String,
        /// What was wrong.
        message: String,
    },
    /// An internal failure around the client (a state task that died).
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// The HTTP client could not be built from the settings (CA bundle, TLS setup).
    #[error(transparent)]
    Setup(#[from] crate::remote::ClientError),
}

impl MispError {
    /// Worth retrying: the server may be restarting or briefly overloaded.
    pub fn is_transient(&self) -> bool {
        match self {
            MispError::Transport { .. } => true,
            MispError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            MispError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// What `servers/getVersion` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// MISP version (`2.4.190`).
    pub version: String,
    /// The server's clock (`Date` header), when sent: runs are timed on it, since attribute
    /// timestamps are the server's.
    pub now: Option<DateTime<Utc>>,
}

/// One `attributes/restSearch` page as answered.
#[derive(Debug, Clone, Default)]
pub struct SearchPage {
    /// The raw attribute objects, after the server's warninglist/allowlist filtering.
    pub attributes: Vec<Value>,
    /// `X-Skipped-Elements-Count`: rows of this page the server filtered out after the SQL
    /// `LIMIT`, when it says so. A page can be short, even empty, while more pages follow.
    pub skipped: Option<u64>,
}

/// What one successful call brought back besides its body.
struct Reply {
    body: Value,
    /// The `Date` header.
    date: Option<DateTime<Utc>>,
    /// The `X-Skipped-Elements-Count` header.
    skipped: Option<u64>,
}

/// A client of one MISP server.
#[derive(Clone)]
pub struct MispClient {
    http: reqwest::Client,
    base: String,
    key: Secret,
    attempts: u32,
    backoff_min: Duration,
}

/// First retry delay; doubles per attempt up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(15);

impl MispClient {
    /// A client for the validated section's server and key; fails only on the TLS setup (a CA
    /// bundle that cannot be read).
    pub fn new(cfg: &Valid<MispConfig>) -> Result<MispClient, MispError> {
        let http = http_client(&cfg.tls(), cfg.timeout)?;
        let facts = cfg.facts();
        register_secret(facts.key.expose());
        Ok(MispClient {
            http,
            base: facts.url.clone(),
            key: facts.key.clone(),
            attempts: cfg.request_attempts.max(1),
            backoff_min: BACKOFF_MIN,
        })
    }

    /// The base URL, without trailing slashes.
    pub fn base_url(&self) -> String {
        join_url(&self.base, "")
    }

    /// `GET servers/getVersion`: proves reachability and the key, and reads the server's clock.
    pub async fn version(&self) -> Result<ServerInfo, MispError> {
        let Reply { body, date, .. } = self
            .call("servers/getVersion", reqwest::Method::GET, None)
            .await?;
        let version = body
            .get("version")
            .and_then(Value::as_str)
            .ok_or_else(|| MispError::Decode {
                endpoint: "servers/getVersion".into(),
                message: format!("no `version` in {}", trim_body(&body.to_string())),
            })?
            .to_string();
        Ok(ServerInfo { version, now: date })
    }

    /// `GET feeds`: every feed configured on the server.
    pub async fn feeds(&self) -> Result<Vec<Feed>, MispError> {
        let body = self.call("feeds", reqwest::Method::GET, None).await?.body;
        let list = body.as_array().ok_or_else(|| MispError::Decode {
            endpoint: "feeds".into(),
            message: format!(
                "expected a JSON array, got {}",
                trim_body(&body.to_string())
            ),
        })?;
        Ok(list.iter().filter_map(Feed::from_value).collect())
    }

    /// One `attributes/restSearch` page.
    pub async fn search(&self, body: &Value) -> Result<SearchPage, MispError> {
        let endpoint = "attributes/restSearch";
        let Reply {
            body: answer,
            skipped,
            ..
        } = self
            .call(endpoint, reqwest::Method::POST, Some(body))
            .await?;
        match attributes_of(&answer) {
            Some(list) => Ok(SearchPage {
                attributes: list.to_vec(),
                skipped,
            }),
            None => Err(MispError::Decode {
                endpoint: endpoint.into(),
                message: format!(
                    "expected {{\"response\": {{\"Attribute\": [...]}}}}, got {}",
                    trim_body(&answer.to_string())
                ),
            }),
        }
    }

    /// One call with retries of transient failures.
    async fn call(
        &self,
        path: &'static str,
        method: reqwest::Method,
        body: Option<&Value>,
    ) -> Result<Reply, MispError> {
        let mut attempt = 1;
        loop {
            match self.call_once(path, method.clone(), body).await {
                Ok(answer) => return Ok(answer),
                Err(e) if e.is_transient() && attempt < self.attempts => {
                    let backoff = Backoff::new(self.backoff_min, BACKOFF_MAX)
                        .delay_of_attempt(attempt as usize);
                    let delay = e.retry_after().map_or(backoff, |a| a.max(backoff));
                    tracing::warn!(endpoint = path, attempt, delay_ms = delay.as_millis() as u64, error = %e, "MISP call failed; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn call_once(
        &self,
        path: &'static str,
        method: reqwest::Method,
        body: Option<&Value>,
    ) -> Result<Reply, MispError> {
        let mut req = self
            .http
            .request(method, join_url(&self.base, path))
            .header(reqwest::header::AUTHORIZATION, self.key.expose())
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            req = req.json(body);
        }
        let answer =
            exchange("misp", path, path, req)
                .await
                .map_err(|message| MispError::Transport {
                    endpoint: path.into(),
                    message,
                })?;
        let status = reqwest::StatusCode::from_u16(answer.status)
            .unwrap_or(reqwest::StatusCode::INTERNAL_SERVER_ERROR);
        let date = answer
            .headers
            .get(reqwest::header::DATE)
            .and_then(|d| d.to_str().ok())
            .and_then(|d| DateTime::parse_from_rfc2822(d).ok())
            .map(|d| d.with_timezone(&Utc));
        let skipped = answer
            .headers
            .get("x-skipped-elements-count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let (wait, bytes) = (answer.retry_after, answer.body);
        if !status.is_success() {
            return Err(Self::refusal(path, status, &error_body(&bytes), wait));
        }
        let value = serde_json::from_slice(&bytes).map_err(|e| MispError::Decode {
            endpoint: path.into(),
            message: format!("{e}: {}", trim_body(&String::from_utf8_lossy(&bytes))),
        })?;
        Ok(Reply {
            body: value,
            date,
            skipped,
        })
    }

    /// The error of a non-2xx answer; `text` is the scrubbed body.
    fn refusal(
        path: &'static str,
        status: reqwest::StatusCode,
        text: &str,
        wait: Option<Duration>,
    ) -> MispError {
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            // MISP explains itself in `message` (or `name`); fall back to the trimmed body.
            let message = serde_json::from_str::<Value>(text)
                .ok()
                .and_then(|v| {
                    v.get("message")
                        .or_else(|| v.get("name"))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .map(|m| remote_text(&m))
                .unwrap_or_else(|| trim_body(text));
            return MispError::Auth {
                endpoint: path.into(),
                status: status.as_u16(),
                message,
            };
        }
        MispError::Status {
            endpoint: path.into(),
            status: status.as_u16(),
            body: trim_body(text),
            retry_after: wait,
        }
    }
}

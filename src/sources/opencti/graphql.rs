//! The few GraphQL calls a stream connector makes (`about`, `registerConnector`, `pingConnector`,
//! `streamCollection`) and the connector state JSON pycti stores on the platform.

use super::OpenCtiError;
use crate::remote::{error_body, exchange, join_url, register_secret, remote_text, trim_body};
use crate::secret::Secret;
use serde::Deserialize;
use serde_json::{json, Value};

const ABOUT: &str = "query About { about { version } }";
const REGISTER: &str = "mutation RegisterConnector($input: RegisterConnectorInput) { \
     registerConnector(input: $input) { id connector_state connector_user_id } }";
const PING: &str = "mutation PingConnector($id: ID!, $state: String) { \
     pingConnector(id: $id, state: $state) { id connector_state } }";
const STREAM: &str = "query StreamCollection($id: String!) { \
     streamCollection(id: $id) { id name stream_live } }";

/// A live stream as the platform describes it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct StreamCollection {
    /// Its id.
    pub id: String,
    /// Its display name.
    #[serde(default)]
    pub name: Option<String>,
    /// False when an operator stopped it (the stream then answers 410).
    #[serde(default)]
    pub stream_live: bool,
}

/// What the registration sends.
#[derive(Debug, Clone)]
pub struct Registration {
    /// `connector.id`.
    pub id: String,
    /// `connector.name`.
    pub name: String,
    /// `connector.scope` as a list.
    pub scope: Vec<String>,
}

/// A client of `{url}/graphql` with the connector's bearer token.
#[derive(Clone)]
pub struct GraphqlClient {
    http: reqwest::Client,
    endpoint: String,
    token: Secret,
}

impl GraphqlClient {
    /// A client for the platform at `base_url`.
    pub fn new(http: reqwest::Client, base_url: &str, token: Secret) -> Self {
        register_secret(token.expose());
        GraphqlClient {
            http,
            endpoint: join_url(base_url, "graphql"),
            token,
        }
    }

    /// The platform version (`about { version }`); proves reachability and the token.
    pub async fn about_version(&self) -> Result<String, OpenCtiError> {
        let data = self.call("about", ABOUT, json!({})).await?;
        Ok(data
            .pointer("/about/version")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string())
    }

    /// Registers (or re-registers) the connector; returns the state the platform holds for it.
    pub async fn register(&self, reg: &Registration) -> Result<Option<String>, OpenCtiError> {
        let input = json!({
            "id": reg.id, "name": reg.name, "type": "STREAM", "scope": reg.scope,
            "auto": false, "only_contextual": false, "playbook_compatible": false,
        });
        let data = self
            .call("registerConnector", REGISTER, json!({ "input": input }))
            .await?;
        Ok(state_field(&data, "registerConnector"))
    }

    /// Pings with our state; returns the state the platform holds afterwards.
    pub async fn ping(&self, id: &str, state: &str) -> Result<Option<String>, OpenCtiError> {
        let data = self
            .call("pingConnector", PING, json!({ "id": id, "state": state }))
            .await?;
        Ok(state_field(&data, "pingConnector"))
    }

    /// Looks a live stream up; `None` when it does not exist (or is not visible to us).
    pub async fn stream_collection(
        &self,
        id: &str,
    ) -> Result<Option<StreamCollection>, OpenCtiError> {
        let data = self
            .call("streamCollection", STREAM, json!({ "id": id }))
            .await?;
        match data.get("streamCollection") {
            None | Some(Value::Null) => Ok(None),
            Some(v) => {
                serde_json::from_value(v.clone())
                    .map(Some)
                    .map_err(|e| OpenCtiError::Decode {
                        endpoint: "graphql streamCollection".into(),
                        message: e.to_string(),
                    })
            }
        }
    }

    /// One GraphQL request; maps HTTP and GraphQL errors, counts the call.
    async fn call(
        &self,
        operation: &'static str,
        query: &str,
        variables: Value,
    ) -> Result<Value, OpenCtiError> {
        let endpoint = format!("graphql {operation}");
        let request = self
            .http
            .post(&self.endpoint)
            .bearer_auth(self.token.expose())
            .json(&json!({ "query": query, "variables": variables }));
        let answer = exchange("opencti", operation, &endpoint, request)
            .await
            .map_err(|message| OpenCtiError::Transport {
                endpoint: endpoint.clone(),
                message,
            })?;
        let status = reqwest::StatusCode::from_u16(answer.status)
            .unwrap_or(reqwest::StatusCode::INTERNAL_SERVER_ERROR);
        let bytes = answer.body;
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(OpenCtiError::Auth {
                endpoint,
                message: format!("HTTP {status}: the token was rejected"),
            });
        }
        if !status.is_success() {
            return Err(OpenCtiError::Status {
                endpoint,
                status: status.as_u16(),
                body: trim_body(&error_body(&bytes)),
            });
        }
        let parsed: Value = serde_json::from_slice(&bytes).map_err(|e| OpenCtiError::Decode {
            endpoint: endpoint.clone(),
            message: format!("{e}: {}", trim_body(&String::from_utf8_lossy(&bytes))),
        })?;
        if let Some(errors) = parsed.get("errors").and_then(Value::as_array) {
            if let Some(first) = errors.first() {
                // The server's words, scrubbed and capped like any remote text.
                let message = remote_text(
                    first
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown GraphQL error"),
                );
                let code = first
                    .pointer("/extensions/code")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                // OpenCTI answers auth failures as HTTP 200 with one of these codes.
                match code {
                    "AUTH_REQUIRED" | "FORBIDDEN_ACCESS" | "UNAUTHENTICATED" | "AUTH_FAILURE" => {
                        return Err(OpenCtiError::Auth { endpoint, message });
                    }
                    "OTP_REQUIRED" | "OTP_REQUIRED_ACTIVATION" => {
                        return Err(OpenCtiError::Auth {
                            endpoint,
                            message: format!(
                                "{message} ({code}: this user must pass two-factor \
                                 authentication; give the connector the token of a user without \
                                 2FA enforcement, e.g. a service account)"
                            ),
                        });
                    }
                    _ => {}
                }
                return Err(OpenCtiError::Graphql {
                    endpoint,
                    message: if code.is_empty() {
                        message
                    } else {
                        format!("{message} ({code})")
                    },
                });
            }
        }
        match parsed.get("data") {
            Some(d @ Value::Object(_)) => Ok(d.clone()),
            _ => Err(OpenCtiError::Decode {
                endpoint,
                message: "response has no `data` object".into(),
            }),
        }
    }
}

fn state_field(data: &Value, field: &str) -> Option<String> {
    data.get(field)?
        .get("connector_state")?
        .as_str()
        .map(str::to_string)
}

/// How far a replay of the current state goes, as stored in the state JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoverUntil {
    /// An ISO date: `recover=<date>` on every connection (the server stops replaying once the
    /// position is past it, and resumes a replay interrupted by a disconnect).
    Date(String),
    /// No replay (`false`).
    Off,
}

/// pycti's connector state: `{"start_from": "<id>", "recover_until": "<iso>"|false}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorState {
    /// The resume id.
    pub start_from: Option<String>,
    /// The replay bound.
    pub recover_until: RecoverUntil,
}

impl ConnectorState {
    /// Reads the platform's state string. `None` when empty/null (never set, or reset by an
    /// operator). Older connectors wrote `connectorLastEventId` / `connectorStartTime`.
    pub fn parse(raw: Option<&str>) -> Option<Self> {
        let raw = raw?.trim();
        if raw.is_empty() || raw == "null" || raw == "{}" {
            return None;
        }
        let v: Value = serde_json::from_str(raw).ok()?;
        let obj = v.as_object()?;
        let text = |key: &str| -> Option<String> {
            match obj.get(key)? {
                Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        };
        let start_from = text("start_from").or_else(|| text("connectorLastEventId"));
        let recover_until = match obj.get("recover_until").or(obj.get("connectorStartTime")) {
            Some(Value::String(s))
                if !matches!(
                    s.trim().to_ascii_lowercase().as_str(),
                    "" | "no" | "none" | "false"
                ) =>
            {
                RecoverUntil::Date(s.clone())
            }
            _ => RecoverUntil::Off,
        };
        if start_from.is_none() && recover_until == RecoverUntil::Off {
            return None;
        }
        Some(ConnectorState {
            start_from,
            recover_until,
        })
    }

    /// The JSON string sent with `pingConnector`.
    pub fn to_json(&self) -> String {
        let recover = match &self.recover_until {
            RecoverUntil::Date(d) => Value::String(d.clone()),
            RecoverUntil::Off => Value::Bool(false),
        };
        json!({ "start_from": self.start_from, "recover_until": recover }).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_current_and_legacy_states() {
        let s = ConnectorState::parse(Some(
            r#"{"start_from":"12-0","recover_until":"2024-01-01T00:00:00Z"}"#,
        ))
        .expect("state");
        assert_eq!(s.start_from.as_deref(), Some("12-0"));
        assert_eq!(
            s.recover_until,
            RecoverUntil::Date("2024-01-01T00:00:00Z".into())
        );
        let legacy =
            ConnectorState::parse(Some(r#"{"connectorLastEventId":"9-1"}"#)).expect("legacy");
        assert_eq!(legacy.start_from.as_deref(), Some("9-1"));
        assert_eq!(legacy.recover_until, RecoverUntil::Off);
        for empty in [None, Some(""), Some("null"), Some("{}"), Some("not json")] {
            assert_eq!(ConnectorState::parse(empty), None, "{empty:?}");
        }
    }

    #[test]
    fn round_trips_through_json() {
        let s = ConnectorState {
            start_from: Some("5-0".into()),
            recover_until: RecoverUntil::Off,
        };
        assert_eq!(s.to_json(), r#"{"recover_until":false,"start_from":"5-0"}"#);
        assert_eq!(ConnectorState::parse(Some(&s.to_json())), Some(s));
    }
}

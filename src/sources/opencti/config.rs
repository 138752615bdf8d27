//! Configuration of the OpenCTI source: the `opencti` section (platform URL, token, stream tuning)
//! and the `connector` section (pycti's `CONNECTOR_*` names, so a user's env block carries over).
//!
//! Plain serde data with defaults; [`OpenCtiConfig::validate`] and [`ConnectorConfig::validate`]
//! check it without I/O. pycti variables that mean nothing here are accepted and ignored, so a
//! drop-in replacement of the Python SentinelOne/Sekoia stream connectors starts with the same env.

use crate::lenient::{lenient_bool, lenient_opt_bool, lenient_opt_string, words_off, words_on};
use crate::remote::{base_url_problem, is_placeholder};
use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The `opencti` section (env `OPENCTI_<KEY>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenCtiConfig {
    /// Platform base URL, e.g. `https://opencti.example.com` (a trailing `/` is tolerated).
    pub url: Option<String>,
    /// API token of the connector's user (Bearer).
    pub token: Option<Secret>,
    /// Verify the platform's TLS certificate.
    #[serde(deserialize_with = "lenient_bool")]
    pub ssl_verify: bool,
    /// PEM bundle of CA certificates to trust in addition to the bundled and system roots (an
    /// internal CA); unreadable or invalid is a config error.
    pub ssl_ca: Option<std::path::PathBuf>,
    /// pycti's `OPENCTI_JSON_LOGGING`: accepted; iocsync's own log format setting decides.
    #[serde(deserialize_with = "lenient_opt_bool")]
    pub json_logging: Option<bool>,
    /// No id-bearing message (event or heartbeat) for this long ⇒ the connection is dead.
    #[serde(with = "humantime_serde")]
    pub stream_timeout: Duration,
    /// First reconnect delay (doubled per failed attempt, with jitter).
    #[serde(with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Reconnect delay cap; also the delay after a 401/403/410, which are not transient.
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// Interval of `pingConnector` (keeps the connector "active" in the UI, carries the state).
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// Interval of the progress log line during a backfill.
    #[serde(with = "humantime_serde")]
    pub progress_interval: Duration,
    /// Timeout of one GraphQL request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// `run --once` gives up after this many consecutive failed attempts to reach the platform or
    /// its stream (a cron job must not hang on an unreachable OpenCTI); the daemon never gives up.
    pub once_attempts: u32,
    /// Largest stream event accepted, in bytes: a larger one is skipped as `malformed_event`
    /// (its position still advances) without being buffered whole.
    pub max_event_bytes: usize,
}

impl Default for OpenCtiConfig {
    fn default() -> Self {
        OpenCtiConfig {
            url: None,
            token: None,
            ssl_verify: true,
            ssl_ca: None,
            json_logging: None,
            stream_timeout: Duration::from_secs(45),
            reconnect_min: Duration::from_secs(2),
            reconnect_max: Duration::from_secs(60),
            ping_interval: Duration::from_secs(40),
            progress_interval: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            once_attempts: 8,
            max_event_bytes: crate::sources::sse::DEFAULT_MAX_EVENT_BYTES,
        }
    }
}

/// The `connector` section (env `CONNECTOR_<KEY>`), named after pycti's variables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectorConfig {
    /// Connector id registered in OpenCTI (a UUID). Keep it stable: a new id means a full replay.
    #[serde(deserialize_with = "lenient_opt_string")]
    pub id: Option<String>,
    /// Name shown in the OpenCTI UI (default `iocsync`).
    #[serde(deserialize_with = "lenient_opt_string")]
    pub name: Option<String>,
    /// Comma list sent as the connector scope (e.g. `sentinelone`).
    #[serde(deserialize_with = "lenient_opt_string")]
    pub scope: Option<String>,
    /// pycti's `CONNECTOR_TYPE`; must be `STREAM` when set.
    #[serde(rename = "type", deserialize_with = "lenient_opt_string")]
    pub connector_type: Option<String>,
    /// pycti's `CONNECTOR_LOG_LEVEL` (debug, info, warn, warning, error).
    #[serde(deserialize_with = "lenient_opt_string")]
    pub log_level: Option<String>,
    /// The live stream's id (`live` is the global stream, bypass users only).
    #[serde(deserialize_with = "lenient_opt_string")]
    pub live_stream_id: Option<String>,
    /// Receive delete events (objects deleted or leaving the stream's filter).
    #[serde(deserialize_with = "lenient_bool")]
    pub live_stream_listen_delete: bool,
    /// Ask the server not to send the dependencies of each object.
    #[serde(deserialize_with = "lenient_bool")]
    pub live_stream_no_dependencies: bool,
    /// Include inferred objects.
    #[serde(deserialize_with = "lenient_bool")]
    pub live_stream_with_inferences: bool,
    /// First run only: replay the current state of every matching object up to this date (default
    /// now); `no`/`false`/`none` disables the replay.
    #[serde(deserialize_with = "lenient_opt_string")]
    pub live_stream_recover_iso_date: Option<String>,
    /// First run only: start from this epoch time in milliseconds (→ stream id `<ms>-0`).
    #[serde(deserialize_with = "lenient_opt_string")]
    pub live_stream_start_timestamp: Option<String>,
    /// pycti's `CONNECTOR_CONFIDENCE_LEVEL`: accepted, unused.
    #[serde(deserialize_with = "lenient_opt_string")]
    pub confidence_level: Option<String>,
    /// Serve `/metrics` and `/healthz` (pycti's name).
    #[serde(deserialize_with = "lenient_bool")]
    pub expose_metrics: bool,
    /// Port of the metrics/health server.
    pub metrics_port: u16,
    /// pycti `CONNECTOR_AUTO`: accepted, ignored (sent as `auto: false`).
    #[serde(deserialize_with = "lenient_opt_string")]
    pub auto: Option<String>,
    /// pycti `CONNECTOR_AUTO_UPDATE`: accepted, ignored.
    #[serde(deserialize_with = "lenient_opt_string")]
    pub auto_update: Option<String>,
    /// pycti `CONNECTOR_ONLY_CONTEXTUAL`: accepted, ignored.
    #[serde(deserialize_with = "lenient_opt_string")]
    pub only_contextual: Option<String>,
    /// pycti `CONNECTOR_RUN_AND_TERMINATE`: accepted, ignored (use `iocsync run --once`).
    #[serde(deserialize_with = "lenient_opt_string")]
    pub run_and_terminate: Option<String>,
    /// pycti `CONNECTOR_QUEUE_THRESHOLD`: accepted, ignored.
    #[serde(deserialize_with = "lenient_opt_string")]
    pub queue_threshold: Option<String>,
    /// pycti `CONNECTOR_QUEUE_PROTOCOL`: accepted, ignored.
    #[serde(deserialize_with = "lenient_opt_string")]
    pub queue_protocol: Option<String>,
    /// pycti `CONNECTOR_DURATION_PERIOD`: accepted, ignored.
    #[serde(deserialize_with = "lenient_opt_string")]
    pub duration_period: Option<String>,
    /// pycti `CONNECTOR_UPDATE_EXISTING_DATA` (older connectors): accepted, ignored.
    #[serde(deserialize_with = "lenient_opt_string")]
    pub update_existing_data: Option<String>,
    /// pycti `CONNECTOR_VALIDATE_BEFORE_IMPORT`: accepted, ignored.
    #[serde(deserialize_with = "lenient_opt_string")]
    pub validate_before_import: Option<String>,
    /// pycti `CONNECTOR_ENRICHMENT_RESOLUTION`: accepted, ignored.
    #[serde(deserialize_with = "lenient_opt_string")]
    pub enrichment_resolution: Option<String>,
    /// pycti `CONNECTOR_METRICS_NAMESPACE`: accepted, ignored.
    #[serde(deserialize_with = "lenient_opt_string")]
    pub metrics_namespace: Option<String>,
    /// pycti `CONNECTOR_METRICS_SUBSYSTEM`: accepted, ignored.
    #[serde(deserialize_with = "lenient_opt_string")]
    pub metrics_subsystem: Option<String>,
    /// pycti `CONNECTOR_LISTEN_PROTOCOL`: accepted, ignored.
    #[serde(deserialize_with = "lenient_opt_string")]
    pub listen_protocol: Option<String>,
    /// pycti `CONNECTOR_LISTEN_PROTOCOL_API_PATH`: accepted, ignored.
    #[serde(deserialize_with = "lenient_opt_string")]
    pub listen_protocol_api_path: Option<String>,
    /// pycti `CONNECTOR_LISTEN_PROTOCOL_API_PORT`: accepted, ignored.
    #[serde(deserialize_with = "lenient_opt_string")]
    pub listen_protocol_api_port: Option<String>,
    /// pycti `CONNECTOR_LISTEN_PROTOCOL_API_SSL`: accepted, ignored.
    #[serde(deserialize_with = "lenient_opt_string")]
    pub listen_protocol_api_ssl: Option<String>,
    /// pycti `CONNECTOR_LISTEN_PROTOCOL_API_URI`: accepted, ignored.
    #[serde(deserialize_with = "lenient_opt_string")]
    pub listen_protocol_api_uri: Option<String>,
    /// pycti `CONNECTOR_SEND_TO_QUEUE`: accepted, ignored.
    #[serde(deserialize_with = "lenient_opt_string")]
    pub send_to_queue: Option<String>,
    /// pycti `CONNECTOR_SEND_TO_DIRECTORY`: accepted, ignored.
    #[serde(deserialize_with = "lenient_opt_string")]
    pub send_to_directory: Option<String>,
    /// pycti `CONNECTOR_SEND_TO_DIRECTORY_PATH`: accepted, ignored.
    #[serde(deserialize_with = "lenient_opt_string")]
    pub send_to_directory_path: Option<String>,
    /// pycti `CONNECTOR_SEND_TO_DIRECTORY_RETENTION`: accepted, ignored.
    #[serde(deserialize_with = "lenient_opt_string")]
    pub send_to_directory_retention: Option<String>,
}

impl Default for ConnectorConfig {
    fn default() -> Self {
        ConnectorConfig {
            id: None,
            name: None,
            scope: None,
            connector_type: None,
            log_level: None,
            live_stream_id: None,
            live_stream_listen_delete: true,
            live_stream_no_dependencies: true,
            live_stream_with_inferences: false,
            live_stream_recover_iso_date: None,
            live_stream_start_timestamp: None,
            confidence_level: None,
            expose_metrics: false,
            metrics_port: 9095,
            auto: None,
            auto_update: None,
            only_contextual: None,
            run_and_terminate: None,
            queue_threshold: None,
            queue_protocol: None,
            duration_period: None,
            update_existing_data: None,
            validate_before_import: None,
            enrichment_resolution: None,
            metrics_namespace: None,
            metrics_subsystem: None,
            listen_protocol: None,
            listen_protocol_api_path: None,
            listen_protocol_api_port: None,
            listen_protocol_api_ssl: None,
            listen_protocol_api_uri: None,
            send_to_queue: None,
            send_to_directory: None,
            send_to_directory_path: None,
            send_to_directory_retention: None,
        }
    }
}

/// What the first run (no checkpoint) asks the server to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoverSetting {
    /// `recover=<now>` computed when the run starts (pycti's default).
    Now,
    /// `recover=<this date>`.
    Until(String),
    /// No replay of the current state: only the stream's history from the start point.
    Disabled,
}

/// Parses the dates OpenCTI's `recover` accepts that we can check offline: RFC 3339, a naive
/// `YYYY-MM-DDTHH:MM:SS[.fff]` (taken as UTC) or a plain date.
pub(crate) fn parse_iso_date(v: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let v = v.trim();
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(v) {
        return Some(d.with_timezone(&chrono::Utc));
    }
    if let Ok(d) = chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(d.and_utc());
    }
    chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
}

/// Epoch milliseconds below this are taken for seconds (1e11 ms is March 1973).
const MIN_PLAUSIBLE_MS: u64 = 100_000_000_000;

impl OpenCtiConfig {
    /// The TLS settings of the HTTP client (verification, extra CA bundle).
    pub fn tls(&self) -> crate::remote::TlsSettings<'_> {
        crate::remote::TlsSettings::new(
            "opencti",
            ["opencti.ssl_verify", "opencti.ssl_ca"],
            self.ssl_verify,
            self.ssl_ca.as_deref(),
        )
    }

    /// Problems with this section, as `(key, message)`; empty when usable.
    pub fn validate(&self) -> Vec<(String, String)> {
        self.problems()
            .into_iter()
            .map(|(k, m)| (k.to_string(), m))
            .collect()
    }

    fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(problem) = base_url_problem(self.url.as_deref()) {
            out.push(("opencti.url", problem));
        }
        match &self.token {
            None => out.push(("opencti.token", "is required".to_string())),
            Some(t) if is_placeholder(t.expose()) => out.push((
                "opencti.token",
                "is empty or still the `ChangeMe` placeholder".to_string(),
            )),
            Some(_) => {}
        }
        let positive = [
            ("opencti.stream_timeout", self.stream_timeout),
            ("opencti.reconnect_min", self.reconnect_min),
            ("opencti.reconnect_max", self.reconnect_max),
            ("opencti.ping_interval", self.ping_interval),
            ("opencti.progress_interval", self.progress_interval),
            ("opencti.request_timeout", self.request_timeout),
        ];
        for (key, d) in positive {
            if d.is_zero() {
                out.push((key, "must be greater than zero".to_string()));
            }
        }
        if self.once_attempts == 0 {
            out.push(("opencti.once_attempts", "must be at least 1".to_string()));
        }
        if self.max_event_bytes < 1024 {
            out.push((
                "opencti.max_event_bytes",
                "must be at least 1024 (bytes)".to_string(),
            ));
        }
        if self.reconnect_min > self.reconnect_max {
            out.push((
                "opencti.reconnect_min",
                "must not exceed `opencti.reconnect_max`".to_string(),
            ));
        }
        out
    }
}

impl ConnectorConfig {
    /// Problems with this section, as `(key, message)`; empty when usable.
    pub fn validate(&self) -> Vec<(String, String)> {
        self.problems()
            .into_iter()
            .map(|(k, m)| (k.to_string(), m))
            .collect()
    }

    fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        match self.id.as_deref().map(str::trim) {
            None | Some("") => out.push((
                "connector.id",
                "is required (a UUIDv4, stable across restarts)".to_string(),
            )),
            Some(id) if uuid::Uuid::parse_str(id).is_err() => out.push((
                "connector.id",
                format!("`{id}` is not a UUID (generate one once, e.g. with `uuidgen`)"),
            )),
            Some(_) => {}
        }
        match self.live_stream_id.as_deref().map(str::trim) {
            None | Some("") => out.push(("connector.live_stream_id", "is required".to_string())),
            Some(s) if is_placeholder(s) => out.push((
                "connector.live_stream_id",
                "is still the `ChangeMe` placeholder: use the id of the live stream created in \
                 the OpenCTI UI (Data > Data sharing > Live streams)"
                    .to_string(),
            )),
            Some(s) if s.contains(['/', '?', '#', ' ']) => out.push((
                "connector.live_stream_id",
                format!("`{s}` is not a stream id (no `/`, `?`, `#` or spaces)"),
            )),
            Some(_) => {}
        }
        if let Some(t) = self.connector_type.as_deref() {
            if !t.trim().eq_ignore_ascii_case("stream") {
                out.push((
                    "connector.type",
                    format!("must be `STREAM` (iocsync is a stream connector), not `{t}`"),
                ));
            }
        }
        if let Some(level) = self.log_level.as_deref() {
            let ok = ["trace", "debug", "info", "warn", "warning", "error"];
            if !ok.contains(&level.trim().to_ascii_lowercase().as_str()) {
                out.push((
                    "connector.log_level",
                    format!("`{level}` is not one of debug, info, warn, error"),
                ));
            }
        }
        if let Some(ts) = self.live_stream_start_timestamp.as_deref() {
            match ts.trim().parse::<u64>() {
                Err(_) => out.push((
                    "connector.live_stream_start_timestamp",
                    format!("`{ts}` is not an epoch time in milliseconds"),
                )),
                Ok(ms) if ms < MIN_PLAUSIBLE_MS => out.push((
                    "connector.live_stream_start_timestamp",
                    format!("`{ts}` looks like seconds; it must be milliseconds (e.g. `{ms}000`)"),
                )),
                Ok(_) => {}
            }
        }
        if let Some(date) = self.live_stream_recover_iso_date.as_deref() {
            if !words_off(date) && !words_on(date) && parse_iso_date(date).is_none() {
                out.push((
                    "connector.live_stream_recover_iso_date",
                    format!("`{date}` is not an ISO 8601 date (or `no` to disable the replay)"),
                ));
            }
        }
        out
    }

    /// What the first run replays (see [`RecoverSetting`]); call after validation.
    pub fn recover_setting(&self) -> RecoverSetting {
        match self.live_stream_recover_iso_date.as_deref().map(str::trim) {
            None | Some("") => RecoverSetting::Now,
            Some(v) if words_off(v) => RecoverSetting::Disabled,
            Some(v) if words_on(v) => RecoverSetting::Now,
            Some(v) => RecoverSetting::Until(v.to_string()),
        }
    }

    /// The configured start id `<ms>-0` for a first run, if a valid start timestamp is set.
    pub fn start_id(&self) -> Option<String> {
        let ms: u64 = self
            .live_stream_start_timestamp
            .as_deref()?
            .trim()
            .parse()
            .ok()?;
        Some(format!("{ms}-0"))
    }

    /// The scope list sent at registration (the comma list, trimmed, empties dropped).
    pub fn scope_list(&self) -> Vec<String> {
        self.scope
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// pycti settings a user's env block may carry that mean nothing here.
pub(super) fn log_ignored(opencti: &OpenCtiConfig, c: &ConnectorConfig) {
    let ignored = [
        (
            "opencti.json_logging",
            opencti.json_logging.map(|b| b.to_string()),
        ),
        ("connector.confidence_level", c.confidence_level.clone()),
        ("connector.auto", c.auto.clone()),
        ("connector.auto_update", c.auto_update.clone()),
        ("connector.only_contextual", c.only_contextual.clone()),
        ("connector.run_and_terminate", c.run_and_terminate.clone()),
        ("connector.queue_threshold", c.queue_threshold.clone()),
        ("connector.queue_protocol", c.queue_protocol.clone()),
        ("connector.duration_period", c.duration_period.clone()),
        (
            "connector.update_existing_data",
            c.update_existing_data.clone(),
        ),
        (
            "connector.validate_before_import",
            c.validate_before_import.clone(),
        ),
        (
            "connector.enrichment_resolution",
            c.enrichment_resolution.clone(),
        ),
        ("connector.metrics_namespace", c.metrics_namespace.clone()),
        ("connector.metrics_subsystem", c.metrics_subsystem.clone()),
        ("connector.listen_protocol", c.listen_protocol.clone()),
        ("connector.send_to_queue", c.send_to_queue.clone()),
        ("connector.send_to_directory", c.send_to_directory.clone()),
    ];
    for (key, value) in ignored {
        if value.is_some() {
            tracing::debug!(key, "pycti setting accepted and ignored");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> (OpenCtiConfig, ConnectorConfig) {
        let o = OpenCtiConfig {
            url: Some("https://cti.example.com/".into()),
            token: Some(Secret::new("tok")),
            ..Default::default()
        };
        let c = ConnectorConfig {
            id: Some("5f1d9a4e-8d8b-4a6f-9b57-3b0d2c9a1e11".into()),
            live_stream_id: Some("f0e1d2c3-0000-4000-8000-000000000001".into()),
            ..Default::default()
        };
        (o, c)
    }

    fn keys(v: Vec<(String, String)>) -> Vec<String> {
        v.into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn defaults_match_pycti() {
        let c = ConnectorConfig::default();
        assert!(c.live_stream_listen_delete && c.live_stream_no_dependencies);
        assert!(!c.live_stream_with_inferences && !c.expose_metrics);
        assert_eq!(c.metrics_port, 9095);
        let o = OpenCtiConfig::default();
        assert!(o.ssl_verify);
        assert_eq!(o.stream_timeout, Duration::from_secs(45));
        assert_eq!(o.ping_interval, Duration::from_secs(40));
    }

    #[test]
    fn a_good_config_has_no_problems() {
        let (o, c) = good();
        assert!(o.validate().is_empty(), "{:?}", o.validate());
        assert!(c.validate().is_empty(), "{:?}", c.validate());
    }

    #[test]
    fn names_the_key_of_each_problem() {
        let o = OpenCtiConfig {
            url: Some("ftp://x".into()),
            token: Some(Secret::new("ChangeMe")),
            reconnect_min: Duration::from_secs(120),
            ..Default::default()
        };
        assert_eq!(
            keys(o.validate()),
            ["opencti.url", "opencti.token", "opencti.reconnect_min"]
        );
        let c = ConnectorConfig {
            id: Some("CHANGEME".into()),
            live_stream_id: Some("changeme".into()),
            connector_type: Some("EXTERNAL_IMPORT".into()),
            live_stream_start_timestamp: Some("1700000000".into()),
            live_stream_recover_iso_date: Some("yesterday".into()),
            ..Default::default()
        };
        let problems = c.validate();
        assert_eq!(
            keys(problems.clone()),
            [
                "connector.id",
                "connector.live_stream_id",
                "connector.type",
                "connector.live_stream_start_timestamp",
                "connector.live_stream_recover_iso_date"
            ]
        );
        assert!(problems[3].1.contains("1700000000000"), "{}", problems[3].1);
    }

    #[test]
    fn recover_and_start_settings() {
        let mut c = ConnectorConfig::default();
        assert_eq!(c.recover_setting(), RecoverSetting::Now);
        c.live_stream_recover_iso_date = Some("False".into());
        assert_eq!(c.recover_setting(), RecoverSetting::Disabled);
        c.live_stream_recover_iso_date = Some("2024-01-02T03:04:05Z".into());
        assert_eq!(
            c.recover_setting(),
            RecoverSetting::Until("2024-01-02T03:04:05Z".into())
        );
        c.live_stream_start_timestamp = Some("1700000000000".into());
        assert_eq!(c.start_id().as_deref(), Some("1700000000000-0"));
        c.scope = Some(" sentinelone, ,sekoia".into());
        assert_eq!(c.scope_list(), ["sentinelone", "sekoia"]);
    }

    #[test]
    fn accepts_typed_and_pycti_spelled_values() {
        let c: ConnectorConfig = serde_json::from_value(serde_json::json!({
            "live_stream_start_timestamp": 1700000000000u64,
            "live_stream_recover_iso_date": false,
            "live_stream_listen_delete": "False",
            "queue_threshold": 500.5,
            "run_and_terminate": "true",
            "type": "STREAM",
            "id": ""
        }))
        .expect("lenient values");
        assert_eq!(c.start_id().as_deref(), Some("1700000000000-0"));
        assert_eq!(c.recover_setting(), RecoverSetting::Disabled);
        assert!(!c.live_stream_listen_delete);
        assert_eq!(c.id, None);
        let bad = serde_json::from_value::<ConnectorConfig>(serde_json::json!({"nope": 1}));
        assert!(bad.is_err());
    }

    #[test]
    fn serialises_every_key_and_hides_the_token() {
        let (o, _) = good();
        let v = serde_json::to_value(&o).expect("json");
        assert_eq!(v["token"], "***");
        assert_eq!(v["stream_timeout"], "45s");
        let c = serde_json::to_value(ConnectorConfig::default()).expect("json");
        assert!(c.get("type").is_some() && c.get("queue_threshold").is_some());
        // What serialises must deserialise (the lead round-trips defaults for key discovery).
        let back: ConnectorConfig = serde_json::from_value(c).expect("round trip");
        assert_eq!(back, ConnectorConfig::default());
    }
}

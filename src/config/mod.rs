//! Configuration: defaults < `config.yml` < environment, with the env names OpenCTI connectors use.
//!
//! The OpenCTI/vendor env names (`SENTINELONE_INTEL_API_KEY` → `sentinelone_intel.api_key`) cannot be
//! split on `_`, so [`env_key`] maps known prefixes explicitly. Every value from the environment enters
//! figment as a string and is read with `extract_lossy`, so `"123"` stays a string where a string is
//! wanted and becomes a number where a number is. [`Config::validated`] does no I/O, reports every
//! problem with the key to fix, and hands the source and sinks their sections as [`Valid`] values
//! (what their constructors take, so they never check configuration themselves).

use crate::sinks::jsonl::JsonlConfig;
use crate::sinks::sekoia::SekoiaConfig;
use crate::sinks::sentinelone::SentinelOneConfig;
use crate::sinks::zeek::ZeekConfig;
use crate::sources::misp::MispConfig;
use crate::sources::opencti::{ConnectorConfig, OpenCtiConfig};
use figment::providers::{Format, Serialized, Yaml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod env;
mod kinds;
mod valid;

pub use env::{env_key, env_name, secret_file_key, SECRET_KEYS};
use env::{known_keys, read_secret_file, EnvProvider, HANDLED_ELSEWHERE};
pub use kinds::{SinkKind, SourceKind};
pub use valid::{Section, Valid, ValidSink, ValidSource, Validated};

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `opencti` | `misp` | `file`; inferred when only one is configured (`IOCSYNC_SOURCE`).
    pub source: Option<String>,
    /// Comma list of sink names to use (`IOCSYNC_SINKS`); default: every configured sink.
    pub sinks: Option<String>,
    /// OpenCTI platform access.
    pub opencti: OpenCtiConfig,
    /// OpenCTI connector identity and live-stream options (pycti's names).
    pub connector: ConnectorConfig,
    /// File source.
    pub file: FileConfig,
    /// MISP source (env `MISP_<KEY>`).
    pub misp: MispConfig,
    /// Durable state.
    pub state: StateConfig,
    /// SentinelOne sink.
    pub sentinelone_intel: SentinelOneConfig,
    /// Sekoia.io sink.
    pub sekoia_intel: SekoiaConfig,
    /// JSONL sink.
    pub jsonl: JsonlConfig,
    /// Zeek intel file sink.
    pub zeek: ZeekConfig,
    /// Batching, retries, dead letters, shutdown.
    pub pipeline: PipelineConfig,
    /// Logging.
    pub log: LogConfig,
    /// Metrics / health endpoint.
    pub http: HttpConfig,
    /// The web console (issue 15).
    pub console: crate::console::config::ConsoleConfig,
}

/// `file.*`: the file source.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// An OpenCTI stream capture (SSE text or NDJSON) or a STIX 2.1 bundle.
    pub path: Option<PathBuf>,
}

/// `state.*`: where durable state lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Directory of the SQLite state database (created if missing).
    pub dir: PathBuf,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            dir: PathBuf::from("./data"),
        }
    }
}

/// `pipeline.*`: batching, retries, dead letters, classification options.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Most source events planned and applied together.
    pub batch_events: usize,
    /// How long to wait for more events before applying a partial batch.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// First retry delay of a failed sink call (exponential with jitter from there).
    #[serde(with = "humantime_serde")]
    pub retry_min: Duration,
    /// Longest retry delay.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Attempts per batch before a run with an end (file, `--once`) gives up; the daemon keeps
    /// retrying every `retry_max` and never drops a change.
    pub retry_attempts: usize,
    /// Delay between retries while a sink refuses our credential.
    #[serde(with = "humantime_serde")]
    pub auth_retry_interval: Duration,
    /// Dead-letter file (JSONL); default `<state.dir>/dead-letters.jsonl`.
    pub dead_letter_path: Option<PathBuf>,
    /// How long a graceful shutdown may spend finishing in-flight batches.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Expand a pattern that is only an OR / IN of equalities on supported paths into several IOCs.
    pub expand_or: bool,
    /// Most members an expansion may name; a pattern with more is skipped as `too_many_members`.
    pub expand_max: usize,
    /// Push indicators whose `valid_until` has passed, and keep what they hold after it passes.
    /// Off: an expired indicator is skipped as `expired`, and a value is removed from the sinks
    /// when its last holder expires.
    pub keep_expired: bool,
    /// How often the state is searched for indicators that expired since the last look.
    #[serde(with = "humantime_serde")]
    pub expiry_interval: Duration,
    /// Events kept per indicator in the journal `iocsync explain` reads; 0 turns it off.
    pub journal_events: u32,
    /// Days a journal event is kept; 0 keeps them regardless of age.
    pub journal_days: u32,
    /// How often the daemon compares its sinks with the state (`iocsync reconcile`, dry run);
    /// unset or 0: never.
    #[serde(with = "humantime_serde")]
    pub reconcile_interval: Option<Duration>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            batch_events: 1000,
            linger: Duration::from_secs(1),
            retry_min: Duration::from_millis(500),
            retry_max: Duration::from_secs(60),
            retry_attempts: 8,
            auth_retry_interval: Duration::from_secs(300),
            dead_letter_path: None,
            shutdown_timeout: Duration::from_secs(5),
            expand_or: false,
            expand_max: crate::pattern::DEFAULT_EXPAND_MAX,
            keep_expired: false,
            expiry_interval: Duration::from_secs(60),
            journal_events: 20,
            journal_days: 90,
            reconcile_interval: None,
        }
    }
}

/// `log.*`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (default) or `json`.
    pub format: Option<String>,
    /// error, warn, info, debug (also `CONNECTOR_LOG_LEVEL`); default info.
    pub level: Option<String>,
}

/// `http.*`: the metrics / health endpoint (enabled by `connector.expose_metrics`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to bind; the port is `connector.metrics_port`. Loopback by default: the endpoint has
    /// no authentication, so reaching it from other hosts is an explicit choice (the Docker image
    /// sets `0.0.0.0`, where the port mapping decides who reaches it).
    pub bind: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            bind: "127.0.0.1".into(),
        }
    }
}

/// One configuration problem, naming the key to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `section.key` (the env name is derived for display).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match env_name(&self.key) {
            Some(env) => write!(f, "`{}` ({env}): {}", self.key, self.message),
            None => write!(f, "`{}`: {}", self.key, self.message),
        }
    }
}

/// Errors loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// One or more problems; each names its key.
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    fn single(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid(vec![Problem {
            key: key.into(),
            message: message.into(),
        }])
    }
}

impl Config {
    /// Loads defaults < `file` (if any) < `env`. Unknown `IOCSYNC_*` variables and unknown file keys
    /// are errors; other vendors' variables we do not know (pycti has many) are ignored with a debug log.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let known = known_keys();
        let mut vars = Vec::new();
        let mut problems = Vec::new();
        let env: Vec<(String, String)> = env.into_iter().collect();
        for (name, value) in &env {
            if HANDLED_ELSEWHERE.contains(&name.as_str()) {
                continue;
            }
            if let Some(key) = secret_file_key(name) {
                let base = &name[..name.len() - "_FILE".len()];
                if env.iter().any(|(n, _)| n == base) {
                    problems.push(Problem {
                        key,
                        message: format!("both {base} and {name} are set: keep one"),
                    });
                    continue;
                }
                match read_secret_file(value) {
                    Ok(secret) => vars.push((name.clone(), key, secret)),
                    Err(message) => problems.push(Problem {
                        key,
                        message: format!("{name}: {message}"),
                    }),
                }
                continue;
            }
            let (name, value) = (name.clone(), value.clone());
            match env_key(&name) {
                Some(key) if known.contains(&key) => vars.push((name, key, value)),
                Some(_) | None if name.starts_with("IOCSYNC_") => problems.push(Problem {
                    key: name.clone(),
                    message: "unknown environment variable".into(),
                }),
                Some(key) => {
                    tracing::debug!(env = %name, key, "ignoring environment variable iocsync does not use")
                }
                None => {}
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::single(
                    "--config",
                    format!("config file `{}` does not exist", path.display()),
                ));
            }
            figment = figment.merge(Yaml::file_exact(path));
        }
        figment = figment.merge(EnvProvider { vars });
        figment.extract_lossy::<Config>().map_err(|err| {
            ConfigError::Invalid(
                err.into_iter()
                    .map(|e| {
                        let key = if e.path.is_empty() {
                            "config".to_string()
                        } else {
                            e.path.join(".")
                        };
                        let origin = e
                            .metadata
                            .as_ref()
                            .map(|m| match &m.source {
                                Some(src) => format!(" (from {src})"),
                                None => format!(" (from {})", m.name),
                            })
                            .unwrap_or_default();
                        Problem {
                            key,
                            message: format!("{}{origin}", e.kind),
                        }
                    })
                    .collect(),
            )
        })
    }

    /// The source this configuration selects, or why it can't tell.
    pub fn source_kind(&self) -> Result<SourceKind, Problem> {
        let configured: Vec<SourceKind> = [
            (SourceKind::OpenCti, self.opencti.url.is_some()),
            (SourceKind::Misp, self.misp.url.is_some()),
            (SourceKind::File, self.file.path.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, on)| on.then_some(k))
        .collect();
        match self.source.as_deref().map(str::trim) {
            Some("opencti") => Ok(SourceKind::OpenCti),
            Some("misp") => Ok(SourceKind::Misp),
            Some("file") => Ok(SourceKind::File),
            Some(other) => Err(Problem {
                key: "source".into(),
                message: format!("unknown source `{other}` (expected opencti, misp or file)"),
            }),
            None => match configured.as_slice() {
                [one] => Ok(*one),
                [] => Err(Problem {
                    key: "source".into(),
                    message: "no source configured: set OPENCTI_URL (OpenCTI stream), MISP_URL (MISP) or IOCSYNC_FILE_PATH (file); `iocsync run --demo` runs the shipped sample".into(),
                }),
                many => Err(Problem {
                    key: "source".into(),
                    message: format!(
                        "several sources configured ({}): choose one with IOCSYNC_SOURCE",
                        many.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                }),
            },
        }
    }

    /// Whether the section of a sink is filled in.
    fn sink_configured(&self, kind: SinkKind) -> bool {
        match kind {
            SinkKind::SentinelOne => self.sentinelone_intel.is_configured(),
            SinkKind::Sekoia => self.sekoia_intel.is_configured(),
            SinkKind::Zeek => self.zeek.is_configured(),
            SinkKind::Jsonl => self.jsonl.is_configured(),
        }
    }

    /// A sink's section, validated (`None` with its problems recorded).
    fn valid_sink(&self, kind: SinkKind, problems: &mut Vec<Problem>) -> Option<ValidSink> {
        Some(match kind {
            SinkKind::SentinelOne => {
                ValidSink::SentinelOne(valid::section(&self.sentinelone_intel, problems)?)
            }
            SinkKind::Sekoia => ValidSink::Sekoia(valid::section(&self.sekoia_intel, problems)?),
            SinkKind::Zeek => ValidSink::Zeek(valid::section(&self.zeek, problems)?),
            SinkKind::Jsonl => ValidSink::Jsonl(valid::section(&self.jsonl, problems)?),
        })
    }

    /// The TLS settings of a sink that talks to a remote (`None` for the file sinks).
    pub fn sink_tls(&self, kind: SinkKind) -> Option<crate::remote::TlsSettings<'_>> {
        match kind {
            SinkKind::SentinelOne => Some(self.sentinelone_intel.tls()),
            SinkKind::Sekoia => Some(self.sekoia_intel.tls()),
            SinkKind::Zeek | SinkKind::Jsonl => None,
        }
    }

    /// The sink names this configuration selects.
    pub fn sink_names(&self) -> Result<Vec<&'static str>, Problem> {
        Ok(self.sink_kinds()?.into_iter().map(SinkKind::name).collect())
    }

    /// The sinks this configuration selects, in the order `IOCSYNC_SINKS` names them (else in
    /// [`SinkKind::ALL`]'s order).
    pub fn sink_kinds(&self) -> Result<Vec<SinkKind>, Problem> {
        let configured = |kind: SinkKind| self.sink_configured(kind);
        match self
            .sinks
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            Some(list) => {
                let mut names = Vec::new();
                for raw in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let Some(kind) = SinkKind::from_name(raw) else {
                        return Err(Problem {
                            key: "sinks".into(),
                            message: format!(
                                "unknown sink `{raw}` (expected one of {})",
                                SinkKind::ALL.map(SinkKind::name).join(", ")
                            ),
                        });
                    };
                    if !configured(kind) {
                        return Err(Problem {
                            key: "sinks".into(),
                            message: format!("sink `{raw}` is selected but not configured"),
                        });
                    }
                    if !names.contains(&kind) {
                        names.push(kind);
                    }
                }
                Ok(names)
            }
            None => {
                let names: Vec<SinkKind> = SinkKind::ALL
                    .into_iter()
                    .filter(|k| configured(*k))
                    .collect();
                if names.is_empty() {
                    Err(Problem {
                        key: "sinks".into(),
                        message: "no sink configured: set SENTINELONE_INTEL_URL, SEKOIA_INTEL_URL, IOCSYNC_ZEEK_INTEL_PATH or IOCSYNC_JSONL_PATH".into(),
                    })
                } else {
                    Ok(names)
                }
            }
        }
    }

    /// Checks everything that can be checked without I/O; returns every problem found.
    pub fn validate(&self) -> Vec<Problem> {
        match self.validated() {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid(problems)) => problems,
        }
    }

    /// Checks everything that can be checked without I/O, once: the source and the selected sinks
    /// as validated sections, or every problem found (each naming its key).
    pub fn validated(&self) -> Result<Validated, ConfigError> {
        let mut problems = Vec::new();
        let source = match self.source_kind() {
            Ok(SourceKind::OpenCti) => {
                let opencti = valid::section(&self.opencti, &mut problems);
                let connector = valid::section(&self.connector, &mut problems);
                opencti
                    .zip(connector)
                    .map(|(o, c)| ValidSource::OpenCti(o, c))
            }
            Ok(SourceKind::File) => match &self.file.path {
                Some(path) => Some(ValidSource::File(path.clone())),
                None => {
                    problems.push(Problem {
                        key: "file.path".into(),
                        message: "the file source needs a path".into(),
                    });
                    None
                }
            },
            Ok(SourceKind::Misp) => {
                valid::section(&self.misp, &mut problems).map(ValidSource::Misp)
            }
            Err(p) => {
                problems.push(p);
                None
            }
        };
        let mut sinks = Vec::new();
        match self.sink_kinds() {
            Ok(kinds) => {
                for kind in kinds {
                    sinks.extend(self.valid_sink(kind, &mut problems));
                }
            }
            Err(p) => problems.push(p),
        }
        let mut push = |list: Vec<(String, String)>| {
            problems.extend(
                list.into_iter()
                    .map(|(key, message)| Problem { key, message }),
            );
        };
        push(self.console.problems(self.console.enabled));
        let p = &self.pipeline;
        let mut own = Vec::new();
        if p.batch_events == 0 {
            own.push((
                "pipeline.batch_events".to_string(),
                "must be at least 1".to_string(),
            ));
        }
        if p.expand_max == 0 {
            own.push((
                "pipeline.expand_max".to_string(),
                "must be at least 1".to_string(),
            ));
        }
        if p.retry_min > p.retry_max {
            own.push((
                "pipeline.retry_min".into(),
                "must not exceed pipeline.retry_max".into(),
            ));
        }
        if let Some(f) = self.log.format.as_deref() {
            if f != "text" && f != "json" {
                own.push((
                    "log.format".into(),
                    format!("`{f}` is not `text` or `json`"),
                ));
            }
        }
        if let Some(level) = self.log_level() {
            if !["error", "warn", "warning", "info", "debug", "trace"].contains(&level.as_str()) {
                own.push((
                    "connector.log_level".into(),
                    format!("`{level}` is not one of error, warn, info, debug"),
                ));
            }
        }
        push(own);
        match source {
            Some(source) if problems.is_empty() => Ok(Validated { source, sinks }),
            _ => Err(ConfigError::Invalid(problems)),
        }
    }

    /// The effective log level: `log.level`, else `connector.log_level`.
    pub fn log_level(&self) -> Option<String> {
        self.log
            .level
            .clone()
            .or_else(|| self.connector.log_level.clone())
            .map(|l| l.trim().to_ascii_lowercase())
    }

    /// JSON logs requested (`log.format = json` or pycti's `OPENCTI_JSON_LOGGING=true`).
    pub fn json_logs(&self) -> bool {
        match self.log.format.as_deref() {
            Some(f) => f == "json",
            None => self.opencti.json_logging.unwrap_or(false),
        }
    }

    /// Where dead letters go.
    pub fn dead_letter_path(&self) -> PathBuf {
        self.pipeline
            .dead_letter_path
            .clone()
            .unwrap_or_else(|| self.state.dir.join("dead-letters.jsonl"))
    }
}

#[cfg(test)]
mod tests;

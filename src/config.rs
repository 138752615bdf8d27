//! Configuration: defaults < `config.yml` < environment, with the env names OpenCTI connectors use.
//!
//! The OpenCTI/vendor env names (`SENTINELONE_INTEL_API_KEY` → `sentinelone_intel.api_key`) cannot be
//! split on `_`, so [`env_key`] maps known prefixes explicitly. Every value from the environment enters
//! figment as a string and is read with `extract_lossy`, so `"123"` stays a string where a string is
//! wanted and becomes a number where a number is. [`Config::validate`] does no I/O and reports every
//! problem with the key to fix.

use crate::sinks::jsonl::JsonlConfig;
use crate::sinks::sekoia::SekoiaConfig;
use crate::sinks::sentinelone::SentinelOneConfig;
use crate::sinks::zeek::ZeekConfig;
use crate::sources::misp::MispConfig;
use crate::sources::opencti::{ConnectorConfig, OpenCtiConfig};
use figment::providers::{Format, Serialized, Yaml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Sections named after a remote system: env `SECTION_KEY` (upper case), longest prefix first.
const REMOTE_SECTIONS: &[(&str, &str)] = &[
    ("SENTINELONE_INTEL_", "sentinelone_intel"),
    ("SEKOIA_INTEL_", "sekoia_intel"),
    ("CONNECTOR_", "connector"),
    ("OPENCTI_", "opencti"),
    ("MISP_", "misp"),
];

/// iocsync's own sections: env `IOCSYNC_SECTION_KEY`.
const OWN_SECTIONS: &[&str] = &[
    "state", "file", "jsonl", "zeek", "pipeline", "log", "http", "console",
];

/// The keys that hold a secret ([`crate::secret::Secret`]). Each can also be read from a file named by
/// its variable with `_FILE` appended (`OPENCTI_TOKEN_FILE`): Docker and Kubernetes secrets, systemd
/// `LoadCredential=`.
pub const SECRET_KEYS: &[&str] = &[
    "opencti.token",
    "misp.key",
    "sentinelone_intel.api_key",
    "sekoia_intel.apikey",
    "console.password",
    "console.password_hash",
];

/// The secret key a `<NAME>_FILE` variable stands for (`OPENCTI_TOKEN_FILE` → `opencti.token`).
pub fn secret_file_key(name: &str) -> Option<String> {
    let base = name.strip_suffix("_FILE")?;
    env_key(base).filter(|k| SECRET_KEYS.contains(&k.as_str()))
}

/// A secret's file: its content without one trailing newline (what `echo` and editors add). The
/// message of an error never holds any of the content.
fn read_secret_file(path: &str) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
    let mut text = String::from_utf8(bytes).map_err(|_| format!("`{path}` is not UTF-8 text"))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

/// Env names read elsewhere (the CLI) that the config must not treat as unknown.
const HANDLED_ELSEWHERE: &[&str] = &["IOCSYNC_CONFIG", "IOCSYNC_LOG"];

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

/// The source a configuration selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// OpenCTI live stream.
    OpenCti,
    /// MISP polling.
    Misp,
    /// A capture or bundle file.
    File,
}

impl SourceKind {
    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::OpenCti => "opencti",
            SourceKind::Misp => "misp",
            SourceKind::File => "file",
        }
    }
}

impl SourceKind {
    /// The settings `check` names when the source is unreachable or refuses the credential:
    /// (address or path, credential).
    pub fn endpoint_keys(self) -> (&'static str, Option<&'static str>) {
        match self {
            SourceKind::OpenCti => ("opencti.url", Some("opencti.token")),
            SourceKind::Misp => ("misp.url", Some("misp.key")),
            SourceKind::File => ("file.path", None),
        }
    }

    /// The source kind of a config name.
    pub fn from_name(name: &str) -> Option<SourceKind> {
        [SourceKind::OpenCti, SourceKind::Misp, SourceKind::File]
            .into_iter()
            .find(|k| k.as_str() == name)
    }
}

/// The sinks of this build: the one list every place that handles "each sink" goes through, so
/// adding a sink is adding a variant and answering the compiler's questions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    /// SentinelOne Threat Intelligence IOCs (`sentinelone_intel`).
    SentinelOne,
    /// A Sekoia.io IOC collection (`sekoia_intel`).
    Sekoia,
    /// A Zeek Intelligence Framework file (`zeek`).
    Zeek,
    /// A JSONL file (`jsonl`).
    Jsonl,
}

impl SinkKind {
    /// Every sink, in the order they are documented.
    pub const ALL: [SinkKind; 4] = [
        SinkKind::SentinelOne,
        SinkKind::Sekoia,
        SinkKind::Zeek,
        SinkKind::Jsonl,
    ];

    /// The name in `IOCSYNC_SINKS`, logs, metrics and the state.
    pub fn name(self) -> &'static str {
        match self {
            SinkKind::SentinelOne => "sentinelone",
            SinkKind::Sekoia => "sekoia",
            SinkKind::Zeek => "zeek",
            SinkKind::Jsonl => "jsonl",
        }
    }

    /// The sink of a name.
    pub fn from_name(name: &str) -> Option<SinkKind> {
        SinkKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The settings `check` names when the sink is unreachable or refuses the credential:
    /// (address or path, credential).
    pub fn endpoint_keys(self) -> (&'static str, Option<&'static str>) {
        match self {
            SinkKind::SentinelOne => ("sentinelone_intel.url", Some("sentinelone_intel.api_key")),
            SinkKind::Sekoia => ("sekoia_intel.url", Some("sekoia_intel.apikey")),
            SinkKind::Zeek => ("zeek.intel_path", None),
            SinkKind::Jsonl => ("jsonl.path", None),
        }
    }
}

/// Maps an environment variable to its config key, `None` when it is not ours.
pub fn env_key(name: &str) -> Option<String> {
    if let Some(rest) = name.strip_prefix("IOCSYNC_") {
        if rest == "SOURCE" || rest == "SINKS" {
            return Some(rest.to_ascii_lowercase());
        }
        let lower = rest.to_ascii_lowercase();
        return OWN_SECTIONS.iter().find_map(|section| {
            lower
                .strip_prefix(section)
                .and_then(|k| k.strip_prefix('_'))
                .filter(|k| !k.is_empty())
                .map(|k| format!("{section}.{k}"))
        });
    }
    REMOTE_SECTIONS.iter().find_map(|(prefix, section)| {
        name.strip_prefix(prefix)
            .filter(|k| !k.is_empty())
            .map(|k| format!("{section}.{}", k.to_ascii_lowercase()))
    })
}

/// The environment variable for a config key (for messages).
pub fn env_name(key: &str) -> Option<String> {
    if key == "source" || key == "sinks" {
        return Some(format!("IOCSYNC_{}", key.to_ascii_uppercase()));
    }
    let (section, rest) = key.split_once('.')?;
    if let Some((prefix, _)) = REMOTE_SECTIONS.iter().find(|(_, s)| *s == section) {
        return Some(format!("{prefix}{}", rest.to_ascii_uppercase()));
    }
    OWN_SECTIONS.contains(&section).then(|| {
        format!(
            "IOCSYNC_{}_{}",
            section.to_ascii_uppercase(),
            rest.to_ascii_uppercase()
        )
    })
}

/// The keys `Config::default()` has, as `section.key` (and top-level names).
fn known_keys() -> std::collections::BTreeSet<String> {
    let mut keys = std::collections::BTreeSet::new();
    if let Ok(serde_json::Value::Object(top)) = serde_json::to_value(Config::default()) {
        for (name, value) in top {
            match value {
                serde_json::Value::Object(section) => {
                    for key in section.keys() {
                        keys.insert(format!("{name}.{key}"));
                    }
                }
                _ => {
                    keys.insert(name);
                }
            }
        }
    }
    keys
}

/// The environment as a figment provider: every value a string, keys mapped by [`env_key`].
struct EnvProvider {
    vars: Vec<(String, String, String)>,
}

impl Provider for EnvProvider {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable").interpolater(|_, keys| {
            let key = keys.join(".");
            env_name(&key).unwrap_or(key)
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (_, key, value) in &self.vars {
            let nested = figment::util::nest(key, Value::from(value.clone()));
            if let Value::Dict(_, d) = nested {
                dict = merge_dicts(dict, d);
            }
        }
        Ok(Profile::Default.collect(dict))
    }
}

fn merge_dicts(mut a: Dict, b: Dict) -> Dict {
    for (k, v) in b {
        match (a.remove(&k), v) {
            (Some(Value::Dict(t, da)), Value::Dict(_, db)) => {
                a.insert(k, Value::Dict(t, merge_dicts(da, db)));
            }
            (_, v) => {
                a.insert(k, v);
            }
        }
    }
    a
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

    /// The problems of a sink's section, as `(key, message)`.
    fn sink_problems(&self, kind: SinkKind) -> Vec<(String, String)> {
        match kind {
            SinkKind::SentinelOne => self.sentinelone_intel.validate(),
            SinkKind::Sekoia => self.sekoia_intel.validate(),
            SinkKind::Zeek => self.zeek.validate(),
            SinkKind::Jsonl => self.jsonl.validate(),
        }
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
        let mut problems = Vec::new();
        let mut push = |list: Vec<(String, String)>| {
            problems.extend(
                list.into_iter()
                    .map(|(key, message)| Problem { key, message }),
            );
        };
        match self.source_kind() {
            Ok(SourceKind::OpenCti) => {
                push(self.opencti.validate());
                push(self.connector.validate());
            }
            Ok(SourceKind::File) => {
                if self.file.path.is_none() {
                    push(vec![(
                        "file.path".into(),
                        "the file source needs a path".into(),
                    )]);
                }
            }
            Ok(SourceKind::Misp) => push(self.misp.validate()),
            Err(p) => push(vec![(p.key, p.message)]),
        }
        match self.sink_kinds() {
            Ok(kinds) => {
                for kind in kinds {
                    push(self.sink_problems(kind));
                }
            }
            Err(p) => push(vec![(p.key, p.message)]),
        }
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
        problems
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
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn maps_vendor_and_own_env_names() {
        assert_eq!(
            env_key("SENTINELONE_INTEL_API_KEY").as_deref(),
            Some("sentinelone_intel.api_key")
        );
        assert_eq!(
            env_key("SENTINELONE_INTEL_API_URL").as_deref(),
            Some("sentinelone_intel.api_url")
        );
        assert_eq!(
            env_key("CONNECTOR_LIVE_STREAM_ID").as_deref(),
            Some("connector.live_stream_id")
        );
        assert_eq!(
            env_key("IOCSYNC_PIPELINE_LINGER").as_deref(),
            Some("pipeline.linger")
        );
        assert_eq!(
            env_key("IOCSYNC_ZEEK_INTEL_PATH").as_deref(),
            Some("zeek.intel_path")
        );
        assert_eq!(env_key("IOCSYNC_SINKS").as_deref(), Some("sinks"));
        assert_eq!(env_key("IOCSYNC_BOGUS"), None);
        assert_eq!(env_key("PATH"), None);
        assert_eq!(
            env_name("pipeline.linger").as_deref(),
            Some("IOCSYNC_PIPELINE_LINGER")
        );
        assert_eq!(
            env_name("sentinelone_intel.batch_size").as_deref(),
            Some("SENTINELONE_INTEL_BATCH_SIZE")
        );
    }

    #[test]
    fn env_wins_and_strings_stay_strings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("config.yml");
        std::fs::write(
            &file,
            "pipeline:\n  batch_events: 10\n  linger: 3s\njsonl:\n  path: /tmp/a.jsonl\n",
        )
        .expect("write");
        let cfg = Config::load(
            Some(&file),
            env(&[
                ("IOCSYNC_PIPELINE_BATCH_EVENTS", "20"),
                ("SENTINELONE_INTEL_ACCOUNT_ID", "123456"),
                ("CONNECTOR_LIVE_STREAM_LISTEN_DELETE", "false"),
                ("CONNECTOR_TYPE", "STREAM"),
                ("OPENCTI_SOMETHING_NEW", "x"),
            ]),
        )
        .expect("load");
        assert_eq!(cfg.pipeline.batch_events, 20);
        assert_eq!(cfg.pipeline.linger, Duration::from_secs(3));
        assert_eq!(cfg.sentinelone_intel.account_id.as_deref(), Some("123456"));
        assert!(!cfg.connector.live_stream_listen_delete);
        assert_eq!(cfg.jsonl.path.as_deref(), Some(Path::new("/tmp/a.jsonl")));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let err =
            Config::load(None, env(&[("IOCSYNC_PIPELINE_LINGR", "1s")])).expect_err("unknown");
        assert!(err.to_string().contains("IOCSYNC_PIPELINE_LINGR"), "{err}");

        let err =
            Config::load(None, env(&[("IOCSYNC_PIPELINE_BATCH_EVENTS", "many")])).expect_err("bad");
        assert!(
            err.to_string().contains("IOCSYNC_PIPELINE_BATCH_EVENTS"),
            "{err}"
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("config.yml");
        std::fs::write(&file, "pipeline:\n  lingr: 1s\n").expect("write");
        let err = Config::load(Some(&file), env(&[])).expect_err("unknown file key");
        assert!(err.to_string().contains("lingr"), "{err}");
    }

    /// Every key of the configuration, as `section.key`, from a YAML document.
    fn yaml_keys(path: &Path) -> std::collections::BTreeSet<String> {
        let value: serde_json::Value = Figment::from(Yaml::file_exact(path))
            .extract()
            .expect("sample is YAML");
        let mut keys = std::collections::BTreeSet::new();
        for (name, v) in value.as_object().expect("a mapping") {
            match v.as_object() {
                Some(section) => keys.extend(section.keys().map(|k| format!("{name}.{k}"))),
                None => {
                    keys.insert(name.clone());
                }
            }
        }
        keys
    }

    #[test]
    fn the_sample_documents_every_key_with_its_default() {
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yml.sample");
        let loaded = Config::load(Some(&sample), env(&[])).expect("the sample loads");
        assert_eq!(
            serde_json::to_value(&loaded).expect("json"),
            serde_json::to_value(Config::default()).expect("json"),
            "a default in config.yml.sample differs from the code"
        );
        let documented = yaml_keys(&sample);
        let known = known_keys();
        let missing: Vec<_> = known.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "keys missing from config.yml.sample: {missing:?}"
        );
        let text = std::fs::read_to_string(&sample).expect("read sample");
        for key in &known {
            if let Some(env) = env_name(key) {
                assert!(
                    text.contains(&env),
                    "config.yml.sample does not name {env} for {key}"
                );
            }
        }
    }

    #[test]
    fn every_secret_can_come_from_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = |name: &str, content: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, content).expect("write");
            path.display().to_string()
        };
        let cfg = Config::load(
            None,
            vec![
                ("OPENCTI_TOKEN_FILE".into(), file("o", b"otok\n")),
                ("MISP_KEY_FILE".into(), file("m", b"mkey\r\n")),
                ("SENTINELONE_INTEL_API_KEY_FILE".into(), file("s", b"stok")),
                ("SEKOIA_INTEL_APIKEY_FILE".into(), file("k", b"ktok\n\n")),
            ],
        )
        .expect("load");
        let exposed =
            |s: &Option<crate::secret::Secret>| s.as_ref().map(|s| s.expose().to_string());
        assert_eq!(exposed(&cfg.opencti.token).as_deref(), Some("otok"));
        assert_eq!(exposed(&cfg.misp.key).as_deref(), Some("mkey"));
        assert_eq!(
            exposed(&cfg.sentinelone_intel.api_key).as_deref(),
            Some("stok")
        );
        assert_eq!(
            exposed(&cfg.sekoia_intel.apikey).as_deref(),
            Some("ktok\n"),
            "only one trailing newline is trimmed"
        );
        for key in SECRET_KEYS {
            let name = format!("{}_FILE", env_name(key).expect("env name"));
            assert_eq!(secret_file_key(&name).as_deref(), Some(*key));
        }
        assert_eq!(secret_file_key("CONNECTOR_ID_FILE"), None, "not a secret");
    }

    #[test]
    fn a_secret_file_conflict_or_read_failure_names_the_key_and_never_the_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, b"sup3r-s3cret\xff\n").expect("write");
        let path = path.display().to_string();
        let err = Config::load(
            None,
            env(&[("OPENCTI_TOKEN", "inline"), ("OPENCTI_TOKEN_FILE", &path)]),
        )
        .expect_err("both set");
        let text = err.to_string();
        assert!(
            text.contains("OPENCTI_TOKEN ") && text.contains("OPENCTI_TOKEN_FILE"),
            "{text}"
        );

        let missing = dir.path().join("absent").display().to_string();
        for (name, file) in [
            ("MISP_KEY_FILE", missing.as_str()),
            ("MISP_KEY_FILE", &path),
        ] {
            let err = Config::load(None, env(&[(name, file)])).expect_err("unreadable");
            let text = err.to_string();
            assert!(text.contains("misp.key") && text.contains(name), "{text}");
            assert!(!text.contains("sup3r"), "the content leaked: {text}");
        }
    }

    #[test]
    fn the_metrics_endpoint_binds_loopback_by_default() {
        let cfg = Config::load(None, env(&[])).expect("load");
        assert_eq!(cfg.http.bind, "127.0.0.1");
        let cfg = Config::load(None, env(&[("IOCSYNC_HTTP_BIND", "0.0.0.0")])).expect("load");
        assert_eq!(cfg.http.bind, "0.0.0.0");
    }

    #[test]
    fn source_and_sinks_selection() {
        let cfg = Config::load(None, env(&[])).expect("load");
        assert!(cfg.source_kind().is_err());
        let cfg = Config::load(
            None,
            env(&[
                ("IOCSYNC_FILE_PATH", "x.sse"),
                ("IOCSYNC_JSONL_PATH", "out.jsonl"),
            ]),
        )
        .expect("load");
        assert_eq!(cfg.source_kind(), Ok(SourceKind::File));
        assert_eq!(cfg.sink_names(), Ok(vec!["jsonl"]));
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
        let cfg = Config::load(
            None,
            env(&[("IOCSYNC_FILE_PATH", "x.sse"), ("IOCSYNC_SINKS", "zeek")]),
        )
        .expect("load");
        assert!(cfg.sink_names().is_err());
    }
}

//! Validated sections: a section that passed its checks once, at load, carrying what the checks
//! established (parsed URLs, ids, the credential as sent). Constructors of sources and sinks take a
//! [`Valid`] section, so they no longer check their configuration and fail only on I/O (a CA bundle,
//! a state file).

use super::{ConfigError, Problem, SinkKind, SourceKind};
use crate::sinks::jsonl::JsonlConfig;
use crate::sinks::sekoia::SekoiaConfig;
use crate::sinks::sentinelone::SentinelOneConfig;
use crate::sinks::zeek::ZeekConfig;
use crate::sources::misp::MispConfig;
use crate::sources::opencti::{ConnectorConfig, OpenCtiConfig};
use std::ops::Deref;
use std::path::PathBuf;

/// A config section with rules that can be checked without I/O.
pub trait Section: Clone {
    /// What passing the checks establishes, in the form a constructor uses it.
    type Facts: std::fmt::Debug + Clone;

    /// Checks the section: its facts, or every problem as `(config key, message)`.
    fn check(&self) -> Result<Self::Facts, Vec<(String, String)>>;

    /// Every problem of the section (empty when it is usable).
    fn problems(&self) -> Vec<(String, String)> {
        self.check().err().unwrap_or_default()
    }
}

/// A section that passed [`Section::check`]; only [`Valid::new`] makes one.
#[derive(Debug, Clone)]
pub struct Valid<T: Section + std::fmt::Debug> {
    raw: T,
    facts: T::Facts,
}

impl<T: Section + std::fmt::Debug> Valid<T> {
    /// Checks `raw`; the error names every problem's key, as `iocsync check` prints them.
    pub fn new(raw: T) -> Result<Self, ConfigError> {
        match raw.check() {
            Ok(facts) => Ok(Valid { raw, facts }),
            Err(problems) => Err(ConfigError::Invalid(
                problems
                    .into_iter()
                    .map(|(key, message)| Problem { key, message })
                    .collect(),
            )),
        }
    }

    /// What the checks established.
    pub fn facts(&self) -> &T::Facts {
        &self.facts
    }
}

impl<T: Section + std::fmt::Debug> Deref for Valid<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.raw
    }
}

/// The source of a valid configuration, its sections validated.
// One value per run, built at start: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum ValidSource {
    /// OpenCTI live stream: the `opencti` and `connector` sections.
    OpenCti(Valid<OpenCtiConfig>, Valid<ConnectorConfig>),
    /// MISP polling.
    Misp(Valid<MispConfig>),
    /// A capture or bundle file.
    File(PathBuf),
}

impl ValidSource {
    /// Which source this is.
    pub fn kind(&self) -> SourceKind {
        match self {
            ValidSource::OpenCti(..) => SourceKind::OpenCti,
            ValidSource::Misp(_) => SourceKind::Misp,
            ValidSource::File(_) => SourceKind::File,
        }
    }
}

/// A selected sink of a valid configuration, its section validated.
#[derive(Debug, Clone)]
pub enum ValidSink {
    /// SentinelOne.
    SentinelOne(Valid<SentinelOneConfig>),
    /// Sekoia.io.
    Sekoia(Valid<SekoiaConfig>),
    /// Zeek intel file.
    Zeek(Valid<ZeekConfig>),
    /// JSONL file.
    Jsonl(Valid<JsonlConfig>),
}

impl ValidSink {
    /// Which sink this is.
    pub fn kind(&self) -> SinkKind {
        match self {
            ValidSink::SentinelOne(_) => SinkKind::SentinelOne,
            ValidSink::Sekoia(_) => SinkKind::Sekoia,
            ValidSink::Zeek(_) => SinkKind::Zeek,
            ValidSink::Jsonl(_) => SinkKind::Jsonl,
        }
    }
}

/// A configuration that passed every check of [`Config::validated`](super::Config::validated): the
/// source and the selected sinks (in their order) as validated sections, what their constructors
/// take.
#[derive(Debug, Clone)]
pub struct Validated {
    /// The selected source.
    pub source: ValidSource,
    /// The selected sinks, in the order `IOCSYNC_SINKS` names them (else [`SinkKind::ALL`]'s).
    pub sinks: Vec<ValidSink>,
}

impl Validated {
    /// The Zeek sink's section, when Zeek is selected.
    pub fn zeek(&self) -> Option<&Valid<ZeekConfig>> {
        self.sinks.iter().find_map(|s| match s {
            ValidSink::Zeek(z) => Some(z),
            _ => None,
        })
    }
}

/// Validates `raw`: the section, or `None` with its problems recorded.
pub(super) fn section<T: Section + std::fmt::Debug>(
    raw: &T,
    problems: &mut Vec<Problem>,
) -> Option<Valid<T>> {
    match Valid::new(raw.clone()) {
        Ok(v) => Some(v),
        Err(ConfigError::Invalid(p)) => {
            problems.extend(p);
            None
        }
    }
}

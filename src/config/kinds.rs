//! The registry of components: every source and sink kind with its name, its section and the keys
//! `check` points at. Adding a sink is adding a variant here and a folder under `sinks/`.

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

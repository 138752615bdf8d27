//! The data that flows between the stages: what a source emits, what the classifier makes of it, and
//! the metadata that travels with every IOC to the sinks.

use crate::ioc::Ioc;
use crate::skip::SkipReason;
use serde::{Deserialize, Serialize};

/// One event read from a source.
#[derive(Debug, Clone)]
pub struct SourceEvent {
    /// Where to resume after this event once its effects are applied everywhere; opaque to the
    /// pipeline (an SSE id, a file byte offset, a MISP run time). `None` for events that cannot be
    /// resumed from on their own (the middle of a MISP run).
    pub position: Option<String>,
    /// What happened.
    pub kind: EventKind,
    /// What it happened to.
    pub payload: Payload,
}

/// The kind of a source event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A new object (also the `init` replay of a recovering stream).
    Create,
    /// A changed object (OpenCTI `update` and `merge`).
    Update,
    /// A removed object (or one that left the stream's filter).
    Delete,
    /// Keep-alive carrying a fresher position; no object.
    Heartbeat,
    /// An event we do not act on (unknown topic); its position still counts.
    Other,
    /// The remote side reset our state: forget the checkpoint and replay from the start.
    Reset,
    /// The end of one source run (a MISP poll, the end of a file): record the run in the history.
    RunEnd,
    /// An indicator's `valid_until` passed (made by the pipeline's expiry sweep, not by a source:
    /// no event arrives when an indicator expires). No position.
    Expiry,
}

/// The body of a source event.
#[derive(Debug, Clone)]
pub enum Payload {
    /// No object (heartbeats, markers).
    None,
    /// A STIX 2.1 object, to be classified.
    Stix(serde_json::Value),
    /// An OpenCTI merge: the surviving object, and the ids of the objects merged into it, which
    /// leave the platform without delete events of their own.
    StixMerge {
        /// The surviving object, to be classified.
        object: serde_json::Value,
        /// The ids of the objects merged into it.
        merged: Vec<String>,
    },
    /// An indicator a source has already classified itself (MISP attributes). Empty `iocs` with no
    /// `skip` means "this indicator no longer yields any IOC" (deleted, to_ids off…).
    Classified(Box<IndicatorState>),
    /// Something a source received but could not read; counted as a `malformed_event` skip.
    Malformed {
        /// What was wrong, for the log.
        reason: String,
    },
}

/// What an indicator currently asks the sinks to hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndicatorState {
    /// The source's stable id: the STIX `indicator--…` id or the MISP attribute uuid.
    pub id: String,
    /// The IOCs the indicator yields now; empty when revoked, deleted or unsupported.
    pub iocs: Vec<Ioc>,
    /// Why `iocs` is empty, when it is empty because of a skip (not a deletion).
    pub skip: Option<SkipReason>,
    /// Metadata sent along with each IOC.
    pub meta: IocMeta,
    /// The object's version time (STIX `modified`, MISP attribute timestamp) as RFC 3339. A state
    /// older than the one already applied is stale (a replay of history) and changes nothing.
    #[serde(default)]
    pub version: Option<String>,
}

impl IndicatorState {
    /// The state of an indicator that no longer yields anything (deleted, merged away).
    pub fn removed(id: &str) -> Self {
        IndicatorState {
            id: id.to_string(),
            iocs: Vec::new(),
            skip: None,
            meta: IocMeta::default(),
            version: None,
        }
    }
}

/// Metadata that travels with an IOC to the sinks; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IocMeta {
    /// Indicator name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Indicator description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The original pattern (or MISP type|value) for reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// RFC 3339 start of validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<String>,
    /// RFC 3339 end of validity; `None` is open-ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
    /// Score 0–100 (OpenCTI `x_opencti_score` / extension score).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<u8>,
    /// STIX confidence 0–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<u8>,
    /// Labels / tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Kill chain phase names (`kill_chain_name:phase_name`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kill_chain_phases: Vec<String>,
    /// The source platform's internal id (OpenCTI extension `id`), for links back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_internal_id: Option<String>,
    /// A URL back to the indicator in its source platform, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_url: Option<String>,
}

/// One change for one sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The durable intent id; unique across the state database.
    pub intent_id: i64,
    /// What to do.
    pub op: ChangeOp,
    /// The IOC concerned.
    pub ioc: Ioc,
    /// The source indicator the sink entry belongs to (S1 `externalId`).
    pub indicator_id: String,
    /// The id the sink gave the entry when it was created, if known (S1 uuid, Sekoia indicator id).
    pub remote_id: Option<String>,
    /// Metadata to send (creates and updates; on deletes, what was sent at create time).
    pub meta: IocMeta,
}

/// The operation a change asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeOp {
    /// Create the IOC in the sink.
    Create,
    /// Refresh its metadata (only for sinks whose `supports_update()` is true).
    Update,
    /// Remove (or revoke) it.
    Delete,
}

impl ChangeOp {
    /// Lower-case name for logs, metrics and the dead-letter file.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeOp::Create => "create",
            ChangeOp::Update => "update",
            ChangeOp::Delete => "delete",
        }
    }
}

/// An RFC 3339 time (STIX timestamps are RFC 3339 in UTC).
pub fn parse_time(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

//! The typed IOC: its kind, and the normalisation and validation rules of each kind.

use crate::skip::SkipReason;
use serde::{Deserialize, Serialize};

/// The kinds of IOC iocsync pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IocKind {
    Sha256,
    Sha1,
    Md5,
    Url,
    Domain,
    /// `hostname:value`; sinks treat it as a domain (SentinelOne `DNS`, Zeek `Intel::DOMAIN`).
    Hostname,
    Ipv4,
    Ipv6,
}

impl IocKind {
    /// Every kind, for metrics pre-registration and docs.
    pub const ALL: [IocKind; 8] = [
        IocKind::Sha256,
        IocKind::Sha1,
        IocKind::Md5,
        IocKind::Url,
        IocKind::Domain,
        IocKind::Hostname,
        IocKind::Ipv4,
        IocKind::Ipv6,
    ];

    /// The lower-case name used in JSON output, metrics and state.
    pub fn as_str(self) -> &'static str {
        match self {
            IocKind::Sha256 => "sha256",
            IocKind::Sha1 => "sha1",
            IocKind::Md5 => "md5",
            IocKind::Url => "url",
            IocKind::Domain => "domain",
            IocKind::Hostname => "hostname",
            IocKind::Ipv4 => "ipv4",
            IocKind::Ipv6 => "ipv6",
        }
    }

    /// Parses `as_str()` back.
    pub fn from_name(name: &str) -> Option<IocKind> {
        IocKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The kind under which a sink stores the value: a hostname and a domain of the same value are one
    /// entry in every sink, so reference counting and de-duplication use this.
    pub fn sink_kind(self) -> IocKind {
        match self {
            IocKind::Hostname => IocKind::Domain,
            other => other,
        }
    }
}

impl std::fmt::Display for IocKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One normalised, validated indicator value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ioc {
    /// What the value is.
    #[serde(rename = "type")]
    pub kind: IocKind,
    /// The normalised value (see [`Ioc::new`]).
    pub value: String,
}

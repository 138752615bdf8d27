//! Wire types of S1's IOC API: the item we create, the item S1 returns, list queries and delete
//! filters. Shared by the sink and the `iocsync s1` CLI.

use crate::ioc::IocKind;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// S1's IOC types (upper case on the wire). A domain is `DNS`: there is no `DOMAIN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum S1Type {
    /// Domain or host name.
    Dns,
    /// IPv4 address.
    Ipv4,
    /// IPv6 address.
    Ipv6,
    /// MD5 hash.
    Md5,
    /// SHA-1 hash.
    Sha1,
    /// SHA-256 hash.
    Sha256,
    /// URL.
    Url,
}

impl S1Type {
    /// Every type.
    pub const ALL: [S1Type; 7] = [
        S1Type::Dns,
        S1Type::Ipv4,
        S1Type::Ipv6,
        S1Type::Md5,
        S1Type::Sha1,
        S1Type::Sha256,
        S1Type::Url,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            S1Type::Dns => "DNS",
            S1Type::Ipv4 => "IPV4",
            S1Type::Ipv6 => "IPV6",
            S1Type::Md5 => "MD5",
            S1Type::Sha1 => "SHA1",
            S1Type::Sha256 => "SHA256",
            S1Type::Url => "URL",
        }
    }

    /// Parses a wire name, case-insensitively.
    pub fn from_name(name: &str) -> Option<S1Type> {
        S1Type::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(name.trim()))
    }

    /// The S1 type for one of our IOC kinds (domains and host names are both `DNS`).
    pub fn from_kind(kind: IocKind) -> S1Type {
        match kind {
            IocKind::Sha256 => S1Type::Sha256,
            IocKind::Sha1 => S1Type::Sha1,
            IocKind::Md5 => S1Type::Md5,
            IocKind::Url => S1Type::Url,
            IocKind::Domain | IocKind::Hostname => S1Type::Dns,
            IocKind::Ipv4 => S1Type::Ipv4,
            IocKind::Ipv6 => S1Type::Ipv6,
        }
    }

    /// S1's cap on `validUntil`, in days from now: 30 for IPs, 180 otherwise.
    pub fn max_valid_days(self) -> i64 {
        match self {
            S1Type::Ipv4 | S1Type::Ipv6 => 30,
            _ => 180,
        }
    }
}

impl std::fmt::Display for S1Type {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One IOC to create (`POST .../iocs`, `data[]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IocItem {
    /// The type.
    #[serde(rename = "type")]
    pub kind: S1Type,
    /// The value.
    pub value: String,
    /// Always `EQUALS`.
    pub method: String,
    /// Free text naming where the IOC comes from.
    pub source: String,
    /// The source's id for the indicator (how we find the IOC again).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// ISO-8601 UTC end of validity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
    /// Name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Creator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creator: Option<String>,
    /// Risk score 0–100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_risk_score: Option<u8>,
    /// Labels.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Reference URLs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reference: Vec<String>,
    /// Any other S1 field (severity, category, mitreTactic…), for the CLI.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl IocItem {
    /// An item with only the required fields.
    pub fn new(kind: S1Type, value: impl Into<String>, source: impl Into<String>) -> Self {
        IocItem {
            kind,
            value: value.into(),
            method: "EQUALS".to_string(),
            source: source.into(),
            external_id: None,
            valid_until: None,
            name: None,
            description: None,
            creator: None,
            original_risk_score: None,
            labels: Vec::new(),
            reference: Vec::new(),
            extra: Map::new(),
        }
    }
}

/// An IOC as S1 returns it (create response, list). Every field is optional: S1 adds fields over time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RemoteIoc {
    /// S1's id (32 hex chars).
    pub uuid: Option<String>,
    /// Wire type name (kept as text: S1 may know types we don't).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Value.
    pub value: Option<String>,
    /// Our indicator id.
    pub external_id: Option<String>,
    /// Source text.
    pub source: Option<String>,
    /// Name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// End of validity.
    pub valid_until: Option<String>,
    /// Risk score.
    pub original_risk_score: Option<i64>,
    /// Creation time.
    pub creation_time: Option<String>,
    /// Last update time.
    pub updated_at: Option<String>,
    /// Scope level (account/site/group).
    pub scope: Option<String>,
    /// Scope id.
    pub scope_id: Option<String>,
    /// Everything else S1 sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl RemoteIoc {
    /// True when this is the entry for (type, value, externalId); see [`CreatedIoc::matches`].
    pub fn matches(&self, kind: S1Type, value: &str, external_id: Option<&str>) -> bool {
        entry_matches(
            self.kind.as_deref(),
            self.value.as_deref(),
            self.external_id.as_deref(),
            (kind, value, external_id),
        )
    }
}

/// The fields of a create answer that say which entry was made. The sink reads only these: the
/// full [`RemoteIoc`] keeps every unknown field, which costs more to decode than the call itself.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CreatedIoc {
    /// S1's id.
    pub uuid: Option<String>,
    /// Wire type name.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Value.
    pub value: Option<String>,
    /// Our indicator id.
    pub external_id: Option<String>,
}

impl CreatedIoc {
    /// True when this is the entry for (type, value, externalId). Values compare case-insensitively
    /// for hashes and DNS (S1 may normalise case), exactly for URLs.
    pub fn matches(&self, kind: S1Type, value: &str, external_id: Option<&str>) -> bool {
        entry_matches(
            self.kind.as_deref(),
            self.value.as_deref(),
            self.external_id.as_deref(),
            (kind, value, external_id),
        )
    }
}

fn entry_matches(
    got_kind: Option<&str>,
    got_value: Option<&str>,
    got_external_id: Option<&str>,
    (kind, value, external_id): (S1Type, &str, Option<&str>),
) -> bool {
    let kind_ok = got_kind.is_none_or(|k| k.eq_ignore_ascii_case(kind.as_str()));
    let value_ok = got_value.is_some_and(|v| {
        if kind == S1Type::Url {
            v == value
        } else {
            v.eq_ignore_ascii_case(value)
        }
    });
    let ext_ok = external_id.is_none_or(|e| got_external_id == Some(e));
    kind_ok && value_ok && ext_ok
}

/// Filters of `GET .../iocs`; the client adds the scope. Unset fields are not sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListQuery {
    /// Page size (1–1000; default 1000).
    pub limit: Option<u32>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
    /// Exact value.
    pub value: Option<String>,
    /// Exact externalId.
    pub external_id: Option<String>,
    /// Type.
    pub kind: Option<S1Type>,
    /// Uuids (sent comma-separated).
    pub uuids: Vec<String>,
    /// Exact source.
    pub source: Option<String>,
    /// Substring of the name.
    pub name_contains: Option<String>,
    /// Substring of the creator.
    pub creator_contains: Option<String>,
    /// Substring of the description.
    pub description_contains: Option<String>,
    /// Sort field, e.g. `creationTime`.
    pub sort_by: Option<String>,
    /// `asc` or `desc`.
    pub sort_order: Option<String>,
    /// Any other parameter, e.g. `("updatedAt__gte", "2025-01-01T00:00:00Z")`.
    pub extra: Vec<(String, String)>,
}

impl ListQuery {
    /// The query pairs, without scope.
    pub fn pairs(&self) -> Vec<(String, String)> {
        let mut q: Vec<(String, String)> = Vec::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                q.push((k.to_string(), v));
            }
        };
        put(
            "limit",
            Some(self.limit.unwrap_or(1000).clamp(1, 1000).to_string()),
        );
        put("cursor", self.cursor.clone());
        put("value", self.value.clone());
        put("externalId", self.external_id.clone());
        put("type", self.kind.map(|k| k.as_str().to_string()));
        put(
            "uuids",
            (!self.uuids.is_empty()).then(|| self.uuids.join(",")),
        );
        put("source", self.source.clone());
        put("name__contains", self.name_contains.clone());
        put("creator__contains", self.creator_contains.clone());
        put("description__contains", self.description_contains.clone());
        put("sortBy", self.sort_by.clone());
        put("sortOrder", self.sort_order.clone());
        q.extend(self.extra.iter().cloned());
        q
    }
}

/// One page of a list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListPage {
    /// The IOCs.
    pub data: Vec<RemoteIoc>,
    /// Cursor of the next page; `None` at the end.
    pub next_cursor: Option<String>,
    /// Total matching, when S1 says.
    pub total_items: Option<u64>,
}

/// The result of paging through a list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListAll {
    /// Every IOC read.
    pub items: Vec<RemoteIoc>,
    /// Total matching, from the first page.
    pub total_items: Option<u64>,
    /// Stopped because `max` was reached while more pages remained.
    pub truncated: bool,
    /// Stopped because S1 handed back a cursor it had already given (the rest would repeat).
    pub repeated_cursor: bool,
}

/// How [`crate::sinks::sentinelone::SentinelOneClient::list_pages`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PagesEnd {
    /// The last page was read.
    Complete,
    /// The page callback asked to stop.
    Stopped,
    /// S1 handed back a cursor it had already given; the rest would repeat.
    RepeatedCursor,
}

/// What `DELETE .../iocs` removes (besides the scope, which the client adds). At least one selector
/// must be set: S1 would otherwise delete everything in scope.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeleteFilter {
    /// Uuids.
    pub uuids: Vec<String>,
    /// Exact value.
    pub value: Option<String>,
    /// Exact externalId.
    pub external_id: Option<String>,
    /// Other filter fields.
    pub extra: Map<String, Value>,
}

impl DeleteFilter {
    /// True when nothing selects items.
    pub fn is_unbounded(&self) -> bool {
        self.uuids.is_empty()
            && self.value.is_none()
            && self.external_id.is_none()
            && self.extra.is_empty()
    }
}

//! Wire types of Sekoia's IOC collection API: the item and the `default_fields` of a JSON import,
//! an indicator as Sekoia returns it (a STIX indicator with `revoked`; an import answer item is
//! only `{value, result}`), the `{"items", "total"}` page and the collection.

use crate::ioc::IocKind;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A STIX kill chain phase.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KillChainPhase {
    /// E.g. `mitre-attack`.
    pub kill_chain_name: String,
    /// E.g. `command-and-control`.
    pub phase_name: String,
}

impl KillChainPhase {
    /// Parses our `kill_chain_name:phase_name` form; `None` when either half is missing.
    pub fn parse(s: &str) -> Option<KillChainPhase> {
        let (chain, phase) = s.split_once(':')?;
        let (chain, phase) = (chain.trim(), phase.trim());
        (!chain.is_empty() && !phase.is_empty()).then(|| KillChainPhase {
            kill_chain_name: chain.to_string(),
            phase_name: phase.to_string(),
        })
    }
}

/// One entry of a JSON import's `indicators`: the documented schema allows only the value and the
/// start of validity per item. No type is sent: Sekoia detects it per value (as the text import's
/// `one_per_line` does), which is what lets one call carry mixed types.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImportItem {
    /// The IOC value.
    pub value: String,
    /// RFC 3339 start of validity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<String>,
}

/// A JSON import's `default_fields` (required by Sekoia's schema): one set for the whole call, so
/// creates are grouped by equal default fields. `x_ic_related_threat_refs` is not sent: iocsync
/// carries no threat references.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct DefaultFields {
    /// The source and our marker (≤ 500 characters).
    pub description: String,
    /// RFC 3339 end of validity, rounded up to a day.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
    /// Kill chain phases, sorted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kill_chain_phases: Vec<KillChainPhase>,
}

/// An indicator as Sekoia returns it. Every field is optional: Sekoia adds fields over time, and
/// where the value lives is not documented, so [`RemoteIndicator::values`] looks in every place.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RemoteIndicator {
    /// `indicator--<uuid>`.
    pub id: Option<String>,
    /// The value, when Sekoia sends it as a field.
    pub value: Option<String>,
    /// The STIX pattern, e.g. `[domain-name:value = 'evil.example']`.
    pub pattern: Option<String>,
    /// Sekoia's one-line display of the value.
    pub x_inthreat_short_display: Option<String>,
    /// The name (usually the value).
    pub name: Option<String>,
    /// The description (where our marker lives).
    pub description: Option<String>,
    /// True once revoked (revocation is a soft delete).
    pub revoked: bool,
    /// Start of validity.
    pub valid_from: Option<String>,
    /// End of validity.
    pub valid_until: Option<String>,
    /// Everything else Sekoia sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The literal compared in a single-comparison STIX pattern: the text between the quotes after `=`.
pub fn pattern_literal(pattern: &str) -> Option<String> {
    let (_, rhs) = pattern.split_once('=')?;
    let rhs = rhs.trim_start().strip_prefix('\'')?;
    let mut out = String::new();
    let mut chars = rhs.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '\'' => return Some(out),
            c => out.push(c),
        }
    }
    None
}

/// True when `remote` is `ours` for an IOC of this kind: exact for URLs (a path is case-sensitive),
/// ASCII case-insensitive otherwise (Sekoia may normalise the case of hashes and domains).
pub fn same_value(kind: IocKind, remote: &str, ours: &str) -> bool {
    let (remote, ours) = (remote.trim(), ours.trim());
    if kind == IocKind::Url {
        remote == ours
    } else {
        remote.eq_ignore_ascii_case(ours)
    }
}

impl RemoteIndicator {
    /// Every place the value may be: the `value` field, the pattern's literal, the short display.
    pub fn values(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let from_pattern = self.pattern.as_deref().and_then(pattern_literal);
        for v in [
            self.value.clone(),
            from_pattern,
            self.x_inthreat_short_display.clone(),
        ]
        .into_iter()
        .flatten()
        {
            if !out.contains(&v) {
                out.push(v);
            }
        }
        out
    }

    /// True when this indicator holds exactly `value` (not merely contains it, as `term` does).
    pub fn has_value(&self, kind: IocKind, value: &str) -> bool {
        self.values().iter().any(|v| same_value(kind, v, value))
    }

    /// True when its description carries `marker`.
    pub fn has_marker(&self, marker: &str) -> bool {
        self.description
            .as_deref()
            .is_some_and(|d| d.contains(marker))
    }
}

/// A page of indicators: `{"items": [...], "total": n}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct IndicatorPage {
    /// The indicators.
    pub items: Vec<RemoteIndicator>,
    /// How many match in all, when Sekoia says.
    pub total: Option<u64>,
}

/// An IOC collection, as far as `check` reads it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Collection {
    /// `ioc-collection--<uuid>`.
    pub id: Option<String>,
    /// Its name.
    pub name: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_come_from_any_field() {
        let r: RemoteIndicator = serde_json::from_value(serde_json::json!({
            "id": "indicator--1",
            "pattern": "[file:hashes.'SHA-256' = 'ABCDEF']",
            "x_inthreat_short_display": "abcdef",
            "revoked": false,
            "created_by_ref": "identity--x"
        }))
        .expect("indicator");
        assert_eq!(r.values(), ["ABCDEF", "abcdef"]);
        assert!(r.has_value(IocKind::Sha256, "abcdef"));
        assert!(!r.has_value(IocKind::Sha256, "abcde"));
        assert!(r.extra.contains_key("created_by_ref"));

        let url = RemoteIndicator {
            value: Some("http://e.example/A".into()),
            ..Default::default()
        };
        assert!(url.has_value(IocKind::Url, "http://e.example/A"));
        assert!(!url.has_value(IocKind::Url, "http://e.example/a"));
    }

    #[test]
    fn reads_pattern_literals() {
        assert_eq!(
            pattern_literal(r"[url:value = 'http://x/it\'s']").as_deref(),
            Some("http://x/it's")
        );
        assert_eq!(
            pattern_literal("[ipv4-addr:value = '1.2.3.4']").as_deref(),
            Some("1.2.3.4")
        );
        assert_eq!(pattern_literal("[x:value = 'unterminated"), None);
        assert_eq!(pattern_literal("no comparison"), None);
    }

    #[test]
    fn parses_kill_chain_phases() {
        assert_eq!(
            KillChainPhase::parse("mitre-attack:command-and-control"),
            Some(KillChainPhase {
                kill_chain_name: "mitre-attack".into(),
                phase_name: "command-and-control".into()
            })
        );
        assert_eq!(KillChainPhase::parse("no-colon"), None);
        assert_eq!(KillChainPhase::parse(":x"), None);
    }
}

//! Turns a pipeline `Change` into the S1 item to POST: type mapping, `validUntil` clamped to S1's
//! caps, score and source defaults, and length limits on free text.

use super::types::{IocItem, S1Type};
use crate::sinks::Change;
use chrono::{DateTime, Duration as Days, SecondsFormat, Utc};

/// Longest name we send, in characters. S1's own limit is unconfirmed; names are shown in one line.
pub const MAX_NAME_CHARS: usize = 255;
/// Longest description we send, in characters (S1's limit is unconfirmed; long STIX descriptions
/// with whole reports are common and useless in an IOC list).
pub const MAX_DESCRIPTION_CHARS: usize = 1_000;
/// Longest label, and most labels, we send.
const MAX_LABEL_CHARS: usize = 100;
const MAX_LABELS: usize = 50;

/// What the sink fills in when the indicator does not say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemDefaults {
    /// The `source` field.
    pub source: String,
    /// `originalRiskScore` when the indicator has no score.
    pub score: u8,
    /// Validity when the indicator has no `valid_until`; `None` lets S1 choose per type.
    pub valid_days: Option<u32>,
}

/// Cuts `s` to at most `max` characters, ending with `…` when cut.
pub fn truncate_chars(s: &str, max: usize) -> String {
    let s = s.trim();
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some(_) => {
            let keep: String = s.chars().take(max.saturating_sub(1)).collect();
            format!("{}…", keep.trim_end())
        }
    }
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The `validUntil` to send: the indicator's end of validity (or `now + default_days`) capped at S1's
/// maximum for the type, so S1 never silently shortens it differently from what we record. `None`
/// when neither is known: S1 then applies its per-type default.
///
/// A `valid_until` already in the past is sent as is: the IOC is expired, and S1 (not us) decides
/// whether to refuse it; the pipeline's planner is the place to skip expired indicators.
pub fn valid_until(
    kind: S1Type,
    indicator_valid_until: Option<&str>,
    default_days: Option<u32>,
    now: DateTime<Utc>,
) -> Option<String> {
    let cap = now + Days::days(kind.max_valid_days());
    let wanted = indicator_valid_until
        .and_then(|v| DateTime::parse_from_rfc3339(v.trim()).ok())
        .map(|t| t.with_timezone(&Utc))
        .or_else(|| default_days.map(|d| now + Days::days(i64::from(d))))?;
    Some(iso(wanted.min(cap)))
}

/// The item for a create or update change.
pub fn build_item(change: &Change, defaults: &ItemDefaults, now: DateTime<Utc>) -> IocItem {
    let kind = S1Type::from_kind(change.ioc.kind);
    let meta = &change.meta;
    let mut item = IocItem::new(kind, change.ioc.value.trim(), defaults.source.clone());
    item.external_id = Some(change.indicator_id.clone());
    item.valid_until = valid_until(kind, meta.valid_until.as_deref(), defaults.valid_days, now);
    let name = meta
        .name
        .as_deref()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or(&change.ioc.value);
    item.name = Some(truncate_chars(name, MAX_NAME_CHARS));
    item.description = meta
        .description
        .as_deref()
        .filter(|d| !d.trim().is_empty())
        .map(|d| truncate_chars(d, MAX_DESCRIPTION_CHARS));
    item.original_risk_score = Some(meta.score.unwrap_or(defaults.score).min(100));
    let mut labels: Vec<String> = Vec::new();
    for label in &meta.labels {
        let l = truncate_chars(label, MAX_LABEL_CHARS);
        if !l.is_empty() && !labels.contains(&l) && labels.len() < MAX_LABELS {
            labels.push(l);
        }
    }
    item.labels = labels;
    item.reference = meta.source_url.iter().cloned().collect();
    item
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ioc::{Ioc, IocKind};
    use crate::model::IocMeta;
    use crate::sinks::ChangeOp;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
            .single()
            .expect("date")
    }

    #[test]
    fn valid_until_is_clamped_per_type() {
        let far = Some("2030-01-01T00:00:00Z");
        assert_eq!(
            valid_until(S1Type::Ipv4, far, None, now()).as_deref(),
            Some("2025-01-31T00:00:00Z")
        );
        assert_eq!(
            valid_until(S1Type::Sha256, far, None, now()).as_deref(),
            Some("2025-06-30T00:00:00Z")
        );
        assert_eq!(
            valid_until(
                S1Type::Dns,
                Some("2025-01-05T10:00:00.123+02:00"),
                None,
                now()
            )
            .as_deref(),
            Some("2025-01-05T08:00:00Z")
        );
        assert_eq!(valid_until(S1Type::Url, None, None, now()), None);
        assert_eq!(
            valid_until(S1Type::Ipv6, Some("garbage"), Some(90), now()).as_deref(),
            Some("2025-01-31T00:00:00Z")
        );
        assert_eq!(
            valid_until(S1Type::Url, None, Some(7), now()).as_deref(),
            Some("2025-01-08T00:00:00Z")
        );
    }

    #[test]
    fn builds_items_with_defaults_and_limits() {
        let change = Change {
            intent_id: 1,
            op: ChangeOp::Create,
            ioc: Ioc {
                kind: IocKind::Hostname,
                value: "evil.example".into(),
            },
            indicator_id: "indicator--1".into(),
            remote_id: None,
            meta: IocMeta {
                description: Some("é".repeat(5000)),
                labels: vec!["a".into(), "a".into(), " ".into()],
                ..Default::default()
            },
        };
        let d = ItemDefaults {
            source: "OpenCTI".into(),
            score: 100,
            valid_days: None,
        };
        let item = build_item(&change, &d, now());
        assert_eq!(item.kind, S1Type::Dns);
        assert_eq!(item.name.as_deref(), Some("evil.example"));
        assert_eq!(item.original_risk_score, Some(100));
        assert_eq!(item.labels, ["a"]);
        let desc = item.description.expect("description");
        assert_eq!(desc.chars().count(), MAX_DESCRIPTION_CHARS);
        assert!(desc.ends_with('…'));
        assert_eq!(item.external_id.as_deref(), Some("indicator--1"));
    }
}

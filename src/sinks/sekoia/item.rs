//! Turns a pipeline `Change` into what Sekoia's JSON import takes: a per-item part (value and
//! `valid_from`, all the documented body schema allows per item) and the call-wide
//! `default_fields` (description with our marker, validity end rounded to the day, kill chain
//! phases). Creates whose default fields are equal share one import call.
//!
//! The marker is one constant per iocsync instance (`sekoia_intel.instance`) and collection: it says
//! "created by this iocsync", not which source indicator; iocsync's state already knows which
//! indicators hold a value, and `default_fields` has one description for the whole call anyway.

use super::types::{DefaultFields, ImportItem, KillChainPhase};
use crate::sinks::sentinelone::item::truncate_chars;
use crate::sinks::Change;
use chrono::{DateTime, Duration as Days, NaiveTime, SecondsFormat, Utc};

/// Sekoia's limit on an indicator description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 500;

/// What the sink fills in when the indicator does not say, and how it signs its indicators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemDefaults {
    /// The source platform's name, named in the description.
    pub source: String,
    /// Validity when the indicator has no `valid_until`; `None` lets Sekoia choose.
    pub valid_days: Option<u32>,
    /// Our marker, see [`marker`].
    pub marker: String,
}

/// The marker in the description of every indicator this iocsync creates: `[iocsync]`, or
/// `[iocsync:<instance>]` when `sekoia_intel.instance` names this process. A term search keeps
/// only indicators carrying it, so another source's indicator of the same value is never ours.
pub fn marker(instance: Option<&str>) -> String {
    match instance.map(str::trim).filter(|i| !i.is_empty()) {
        Some(i) => format!("[iocsync:{i}]"),
        None => "[iocsync]".to_string(),
    }
}

/// The per-indicator marker `[iocsync:<indicator id>]` earlier versions put in per-item
/// descriptions; still recognised as ours when revoking, so their indicators can be revoked.
pub fn legacy_marker(indicator_id: &str) -> String {
    format!("[iocsync:{}]", indicator_id.trim())
}

/// `<source> indicator synced by iocsync <marker>`, at most [`MAX_DESCRIPTION_CHARS`]: the head is
/// shortened, never the marker.
pub fn description(defaults: &ItemDefaults) -> String {
    let tail = &defaults.marker;
    let head = format!("{} indicator synced by iocsync", defaults.source.trim());
    let room = MAX_DESCRIPTION_CHARS.saturating_sub(tail.chars().count() + 1);
    if room < 2 {
        // A ~500-character instance name: Sekoia will refuse it, and say so.
        return tail.clone();
    }
    format!("{} {tail}", truncate_chars(&head, room))
}

fn parse_time(raw: Option<&str>) -> Option<DateTime<Utc>> {
    raw.and_then(|v| DateTime::parse_from_rfc3339(v.trim()).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The next UTC midnight at or after `t`. Validity ends are rounded so that the creates of one
/// batch share a few `default_fields` (one import call each) instead of one each; rounding up keeps
/// an indicator live at least as long as its source says.
pub fn round_up_to_day(t: DateTime<Utc>) -> DateTime<Utc> {
    let midnight = t.date_naive().and_time(NaiveTime::MIN).and_utc();
    if midnight == t {
        t
    } else {
        midnight + Days::days(1)
    }
}

/// The per-item part and the `default_fields` for a create change.
pub fn build_item(
    change: &Change,
    defaults: &ItemDefaults,
    now: DateTime<Utc>,
) -> (ImportItem, DefaultFields) {
    let meta = &change.meta;
    let valid_until = parse_time(meta.valid_until.as_deref())
        .or_else(|| defaults.valid_days.map(|d| now + Days::days(i64::from(d))))
        .map(round_up_to_day);
    let mut phases: Vec<KillChainPhase> = Vec::new();
    for p in meta
        .kill_chain_phases
        .iter()
        .filter_map(|p| KillChainPhase::parse(p))
    {
        if !phases.contains(&p) {
            phases.push(p);
        }
    }
    // Order does not matter to Sekoia; sorted, equal sets group together.
    phases.sort();
    (
        ImportItem {
            value: change.ioc.value.trim().to_string(),
            valid_from: parse_time(meta.valid_from.as_deref()).map(iso),
        },
        DefaultFields {
            description: description(defaults),
            valid_until: valid_until.map(iso),
            kill_chain_phases: phases,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ioc::{Ioc, IocKind};
    use crate::model::IocMeta;
    use crate::sinks::ChangeOp;
    use chrono::TimeZone;

    fn change(meta: IocMeta) -> Change {
        Change {
            intent_id: 1,
            op: ChangeOp::Create,
            ioc: Ioc {
                kind: IocKind::Domain,
                value: " evil.example".into(),
            },
            indicator_id: "indicator--11".into(),
            remote_id: None,
            meta,
        }
    }

    fn defaults() -> ItemDefaults {
        ItemDefaults {
            source: "OpenCTI".into(),
            valid_days: None,
            marker: marker(None),
        }
    }

    fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0)
            .single()
            .expect("date")
    }

    #[test]
    fn markers_name_the_instance_not_the_indicator() {
        assert_eq!(marker(None), "[iocsync]");
        assert_eq!(marker(Some("  ")), "[iocsync]");
        assert_eq!(marker(Some(" prod-eu ")), "[iocsync:prod-eu]");
        assert_eq!(legacy_marker("indicator--1 "), "[iocsync:indicator--1]");
        assert_eq!(
            description(&defaults()),
            "OpenCTI indicator synced by iocsync [iocsync]"
        );
    }

    #[test]
    fn long_heads_are_cut_but_the_marker_stays() {
        let mut d = defaults();
        d.source = "é".repeat(900);
        let text = description(&d);
        assert_eq!(text.chars().count(), MAX_DESCRIPTION_CHARS);
        assert!(text.ends_with("… [iocsync]"), "{text}");
        d.marker = marker(Some(&"x".repeat(600)));
        assert_eq!(description(&d), d.marker);
    }

    #[test]
    fn validity_ends_round_up_to_the_day() {
        assert_eq!(round_up_to_day(at(2025, 1, 1, 10, 5)), at(2025, 1, 2, 0, 0));
        assert_eq!(round_up_to_day(at(2025, 1, 2, 0, 0)), at(2025, 1, 2, 0, 0));
        assert_eq!(
            round_up_to_day(at(2025, 12, 31, 23, 59)),
            at(2026, 1, 1, 0, 0)
        );
    }

    #[test]
    fn builds_the_item_and_its_default_fields() {
        let now = at(2025, 1, 1, 0, 0);
        let c = change(IocMeta {
            valid_from: Some("2024-12-31T10:00:00.5+01:00".into()),
            valid_until: Some("garbage".into()),
            kill_chain_phases: vec![
                "mitre-attack:execution".into(),
                "mitre-attack:discovery".into(),
                "mitre-attack:execution".into(),
                "broken".into(),
            ],
            ..Default::default()
        });
        let mut d = defaults();
        d.valid_days = Some(10);
        let (item, fields) = build_item(&c, &d, at(2025, 1, 1, 7, 30));
        assert_eq!(item.value, "evil.example");
        assert_eq!(item.valid_from.as_deref(), Some("2024-12-31T09:00:00Z"));
        assert_eq!(fields.valid_until.as_deref(), Some("2025-01-12T00:00:00Z"));
        let phases: Vec<&str> = fields
            .kill_chain_phases
            .iter()
            .map(|p| p.phase_name.as_str())
            .collect();
        assert_eq!(phases, ["discovery", "execution"]);
        assert_eq!(fields.description, description(&d));

        // Two validity ends on the same day give equal default fields: one import call.
        let a = change(IocMeta {
            valid_until: Some("2025-03-01T08:00:00Z".into()),
            ..Default::default()
        });
        let b = change(IocMeta {
            valid_until: Some("2025-03-01T23:00:00+00:00".into()),
            ..Default::default()
        });
        assert_eq!(build_item(&a, &d, now).1, build_item(&b, &d, now).1);
        assert_eq!(
            build_item(&a, &d, now).1.valid_until.as_deref(),
            Some("2025-03-02T00:00:00Z")
        );
        let (item, fields) = build_item(&change(IocMeta::default()), &defaults(), now);
        assert_eq!((item.valid_from, fields.valid_until), (None, None));
    }
}

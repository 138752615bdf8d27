//! Turns a pipeline `Change` into the JSON-import item: validity, kill chain phases, and the
//! description — a link back to the source followed by our marker, which is how we later recognise
//! the indicators we created (and leave other sources' indicators of the same value alone).

use super::types::{ImportItem, KillChainPhase};
use crate::sinks::sentinelone::item::truncate_chars;
use crate::sinks::Change;
use chrono::{DateTime, Duration as Days, SecondsFormat, Utc};

/// Sekoia's limit on an indicator description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 500;

/// What the sink fills in when the indicator does not say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemDefaults {
    /// The source platform's name, for descriptions without a link.
    pub source: String,
    /// Link template with `{id}` / `{indicator_id}`, used when the indicator carries no URL.
    pub link_template: Option<String>,
    /// Validity when the indicator has no `valid_until`; `None` lets Sekoia choose.
    pub valid_days: Option<u32>,
}

/// The marker we put in every description: it names the source indicator, so a term search can tell
/// our indicator from another source's indicator of the same value.
pub fn marker(indicator_id: &str) -> String {
    format!("[iocsync:{}]", indicator_id.trim())
}

/// The link back to the source: the indicator's own URL, else the template filled with its ids.
pub fn source_link(change: &Change, template: Option<&str>) -> Option<String> {
    let meta = &change.meta;
    if let Some(url) = meta
        .source_url
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
    {
        return Some(url.to_string());
    }
    let template = template?.trim();
    let internal = meta
        .source_internal_id
        .as_deref()
        .map(str::trim)
        .filter(|i| !i.is_empty());
    if template.contains("{id}") && internal.is_none() {
        return None;
    }
    Some(
        template
            .replace("{id}", internal.unwrap_or_default())
            .replace("{indicator_id}", change.indicator_id.trim()),
    )
}

/// `<link or "<source> indicator <name>"> [iocsync:<indicator id>]`, at most
/// [`MAX_DESCRIPTION_CHARS`]: the head is shortened, never the marker.
pub fn description(change: &Change, defaults: &ItemDefaults) -> String {
    let tail = marker(&change.indicator_id);
    let head = source_link(change, defaults.link_template.as_deref()).unwrap_or_else(|| {
        let name = change
            .meta
            .name
            .as_deref()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or(&change.ioc.value);
        format!("{} indicator {}", defaults.source, name.trim())
    });
    let room = MAX_DESCRIPTION_CHARS.saturating_sub(tail.chars().count() + 1);
    if room < 2 {
        // An indicator id of ~500 characters: Sekoia will refuse it, and say so.
        return tail;
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

/// The item for a create change.
pub fn build_item(change: &Change, defaults: &ItemDefaults, now: DateTime<Utc>) -> ImportItem {
    let meta = &change.meta;
    let valid_until = parse_time(meta.valid_until.as_deref())
        .or_else(|| defaults.valid_days.map(|d| now + Days::days(i64::from(d))));
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
    ImportItem {
        value: change.ioc.value.trim().to_string(),
        valid_from: parse_time(meta.valid_from.as_deref()).map(iso),
        valid_until: valid_until.map(iso),
        kill_chain_phases: phases,
        description: description(change, defaults),
    }
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
                value: "evil.example".into(),
            },
            indicator_id: "indicator--11".into(),
            remote_id: None,
            meta,
        }
    }

    fn defaults(template: Option<&str>) -> ItemDefaults {
        ItemDefaults {
            source: "OpenCTI".into(),
            link_template: template.map(str::to_string),
            valid_days: None,
        }
    }

    #[test]
    fn description_links_back_and_carries_the_marker() {
        let tpl = Some("https://cti.example/dashboard/observations/indicators/{id}");
        let c = change(IocMeta {
            source_internal_id: Some("abc-123".into()),
            ..Default::default()
        });
        assert_eq!(
            description(&c, &defaults(tpl)),
            "https://cti.example/dashboard/observations/indicators/abc-123 [iocsync:indicator--11]"
        );
        let c = change(IocMeta {
            source_url: Some("https://misp.example/events/view/9".into()),
            source_internal_id: Some("abc-123".into()),
            ..Default::default()
        });
        assert!(description(&c, &defaults(tpl)).starts_with("https://misp.example/events/view/9 "));
        // No internal id: the template cannot be filled; fall back to a name.
        let c = change(IocMeta {
            name: Some("C2 domain".into()),
            ..Default::default()
        });
        assert_eq!(
            description(&c, &defaults(tpl)),
            "OpenCTI indicator C2 domain [iocsync:indicator--11]"
        );
        assert_eq!(
            description(&c, &defaults(Some("https://x/{indicator_id}"))),
            "https://x/indicator--11 [iocsync:indicator--11]"
        );
    }

    #[test]
    fn long_heads_are_cut_but_the_marker_stays() {
        let c = change(IocMeta {
            source_url: Some(format!("https://x/{}", "é".repeat(900))),
            ..Default::default()
        });
        let d = description(&c, &defaults(None));
        assert_eq!(d.chars().count(), MAX_DESCRIPTION_CHARS);
        assert!(d.ends_with("… [iocsync:indicator--11]"), "{d}");
        let mut c = change(IocMeta::default());
        c.indicator_id = "x".repeat(600);
        assert_eq!(description(&c, &defaults(None)), marker(&c.indicator_id));
    }

    #[test]
    fn builds_validity_and_phases() {
        let now = Utc
            .with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
            .single()
            .expect("date");
        let c = change(IocMeta {
            valid_from: Some("2024-12-31T10:00:00.5+01:00".into()),
            valid_until: Some("garbage".into()),
            kill_chain_phases: vec![
                "mitre-attack:execution".into(),
                "mitre-attack:execution".into(),
                "broken".into(),
            ],
            ..Default::default()
        });
        let mut d = defaults(None);
        d.valid_days = Some(10);
        let item = build_item(&c, &d, now);
        assert_eq!(item.valid_from.as_deref(), Some("2024-12-31T09:00:00Z"));
        assert_eq!(item.valid_until.as_deref(), Some("2025-01-11T00:00:00Z"));
        assert_eq!(item.kill_chain_phases.len(), 1);
        assert_eq!(item.value, "evil.example");
        let item = build_item(&change(IocMeta::default()), &defaults(None), now);
        assert_eq!((item.valid_from, item.valid_until), (None, None));
    }
}

//! The classifier: a STIX object from a source event → the indicator's desired IOCs and metadata, or a
//! named skip. Pure, no I/O, and the only place outside `pattern` that reads STIX.

use crate::model::{parse_time, EventKind, IndicatorState, IocMeta};
use crate::pattern;
use crate::skip::SkipReason;
use serde_json::Value;

/// The OpenCTI extension that carries score, internal id and main observable type.
pub const OPENCTI_EXTENSION: &str = "extension-definition--ea279b3e-5c71-4632-ac08-831c66a786ba";

/// Classification options.
#[derive(Debug, Clone, Copy)]
pub struct ClassifyOptions {
    /// Expand OR / IN of equalities into several IOCs.
    pub expand_or: bool,
    /// Most members an expansion may name (`pipeline.expand_max`); more is `too_many_members`.
    pub expand_max: usize,
    /// Indicators whose `valid_until` is at or before this time are skipped as `expired`; `None`
    /// keeps expired indicators (`pipeline.keep_expired`). A parameter, so classifying stays pure.
    pub expired_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Default for ClassifyOptions {
    fn default() -> Self {
        ClassifyOptions {
            expand_or: false,
            expand_max: pattern::DEFAULT_EXPAND_MAX,
            expired_at: None,
        }
    }
}

/// What the classifier makes of one object.
#[derive(Debug, Clone, PartialEq)]
pub enum Classified {
    /// An indicator: its IOC set replaces what we had for it (empty ⇒ remove everything it held).
    Indicator(Box<IndicatorState>),
    /// Not something that changes any indicator (non-indicator object, unreadable object).
    Skip {
        /// Why.
        reason: SkipReason,
        /// The object's id when it has one (for the log).
        id: Option<String>,
        /// Detail for the log.
        detail: String,
    },
}

/// The indicators an OpenCTI merge took away: the merged ids that are indicators, other than the
/// surviving `object` itself (whatever they held goes, unless the survivor holds it too).
pub fn merged_away<'a>(object: &Value, merged: &'a [String]) -> impl Iterator<Item = &'a str> {
    let target = object.get("id").and_then(Value::as_str).map(str::to_string);
    merged
        .iter()
        .map(String::as_str)
        .filter(move |id| id.starts_with("indicator--") && Some(*id) != target.as_deref())
}

/// Classifies the object of a create / update / delete event.
pub fn classify_object(kind: EventKind, object: &Value, opts: ClassifyOptions) -> Classified {
    let Some(obj) = object.as_object() else {
        return Classified::Skip {
            reason: SkipReason::MalformedEvent,
            id: None,
            detail: "event object is not a JSON object".into(),
        };
    };
    let id = obj.get("id").and_then(Value::as_str).map(str::to_string);
    let obj_type = obj.get("type").and_then(Value::as_str).unwrap_or("");
    if obj_type != "indicator" {
        return Classified::Skip {
            reason: SkipReason::NotIndicator,
            id,
            detail: format!("object type `{obj_type}`"),
        };
    }
    let Some(id) = id.filter(|s| !s.trim().is_empty()) else {
        return Classified::Skip {
            reason: SkipReason::MalformedEvent,
            id: None,
            detail: "indicator without an `id`".into(),
        };
    };
    let meta = meta_of(obj);
    let version = string_field(obj, "modified");
    let gone = |skip: Option<SkipReason>| {
        Classified::Indicator(Box::new(IndicatorState {
            id: id.clone(),
            iocs: Vec::new(),
            skip,
            meta: meta.clone(),
            version: version.clone(),
        }))
    };
    if kind == EventKind::Delete || obj.get("revoked").and_then(Value::as_bool) == Some(true) {
        return gone(None);
    }
    if let Some(now) = opts.expired_at {
        if meta
            .valid_until
            .as_deref()
            .and_then(parse_time)
            .is_some_and(|until| until <= now)
        {
            return gone(Some(SkipReason::Expired));
        }
    }
    let pattern_type = obj
        .get("pattern_type")
        .and_then(Value::as_str)
        .unwrap_or("stix");
    if !pattern_type.eq_ignore_ascii_case("stix") {
        return gone(Some(SkipReason::NotStix));
    }
    let Some(text) = obj.get("pattern").and_then(Value::as_str) else {
        return gone(Some(SkipReason::MissingPattern));
    };
    match pattern::extract_str_max(text, opts.expand_or.then_some(opts.expand_max)) {
        Ok(iocs) if !iocs.is_empty() => Classified::Indicator(Box::new(IndicatorState {
            id,
            iocs,
            skip: None,
            meta,
            version,
        })),
        Ok(_) => gone(Some(SkipReason::Compound)),
        Err(reason) => gone(Some(reason)),
    }
}

fn string_field(obj: &serde_json::Map<String, Value>, key: &str) -> Option<String> {
    obj.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn score_of(v: Option<&Value>) -> Option<u8> {
    let n = v?.as_f64()?;
    (0.0..=100.0).contains(&n).then_some(n.round() as u8)
}

/// Extracts the metadata sinks use.
pub fn meta_of(obj: &serde_json::Map<String, Value>) -> IocMeta {
    let ext = obj
        .get("extensions")
        .and_then(|e| e.get(OPENCTI_EXTENSION))
        .and_then(Value::as_object);
    let labels = obj
        .get("labels")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let kill_chain_phases = obj
        .get("kill_chain_phases")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| {
                    let chain = p.get("kill_chain_name")?.as_str()?;
                    let phase = p.get("phase_name")?.as_str()?;
                    Some(format!("{chain}:{phase}"))
                })
                .collect()
        })
        .unwrap_or_default();
    IocMeta {
        name: string_field(obj, "name"),
        description: string_field(obj, "description"),
        pattern: string_field(obj, "pattern"),
        valid_from: string_field(obj, "valid_from"),
        valid_until: string_field(obj, "valid_until"),
        score: score_of(ext.and_then(|e| e.get("score")))
            .or_else(|| score_of(obj.get("x_opencti_score"))),
        confidence: score_of(obj.get("confidence")),
        labels,
        kill_chain_phases,
        source_internal_id: ext
            .and_then(|e| e.get("id"))
            .and_then(Value::as_str)
            .map(str::to_string),
        source_url: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ioc::IocKind;
    use serde_json::json;

    fn indicator(pattern: &str) -> Value {
        json!({"id": "indicator--1", "type": "indicator", "pattern_type": "stix", "pattern": pattern,
               "name": "n", "valid_until": "2030-01-01T00:00:00Z", "labels": ["a"],
               "extensions": {OPENCTI_EXTENSION: {"id": "internal-1", "score": 73}}})
    }

    #[test]
    fn single_comparison_becomes_an_ioc_with_meta() {
        let c = classify_object(
            EventKind::Create,
            &indicator("[ipv4-addr:value = '1.2.3.4']"),
            ClassifyOptions::default(),
        );
        let Classified::Indicator(state) = c else {
            panic!("not an indicator: {c:?}")
        };
        assert_eq!(state.iocs.len(), 1);
        assert_eq!(state.iocs[0].kind, IocKind::Ipv4);
        assert_eq!(state.meta.score, Some(73));
        assert_eq!(state.meta.source_internal_id.as_deref(), Some("internal-1"));
        assert_eq!(state.meta.labels, vec!["a".to_string()]);
    }

    #[test]
    fn expired_indicators_are_skipped_unless_kept() {
        let obj = indicator("[ipv4-addr:value = '1.2.3.4']"); // valid until 2030
        let at = |t: &str| ClassifyOptions {
            expired_at: parse_time(t),
            ..ClassifyOptions::default()
        };
        for (opts, expired) in [
            (at("2029-12-31T23:59:59Z"), false),
            (at("2030-01-01T00:00:00Z"), true),
            (at("2031-06-01T00:00:00+02:00"), true),
            (ClassifyOptions::default(), false),
        ] {
            let Classified::Indicator(s) = classify_object(EventKind::Create, &obj, opts) else {
                panic!("indicator")
            };
            assert_eq!(s.skip == Some(SkipReason::Expired), expired, "{opts:?}");
            assert_eq!(s.iocs.is_empty(), expired);
        }
        // An unreadable `valid_until` is not a reason to drop an indicator.
        let mut odd = obj.clone();
        odd["valid_until"] = json!("someday");
        let Classified::Indicator(s) =
            classify_object(EventKind::Create, &odd, at("2031-01-01T00:00:00Z"))
        else {
            panic!("indicator")
        };
        assert_eq!(s.iocs.len(), 1);
    }

    #[test]
    fn deletes_revocations_and_skips() {
        let obj = indicator("[ipv4-addr:value = '1.2.3.4']");
        let Classified::Indicator(s) =
            classify_object(EventKind::Delete, &obj, ClassifyOptions::default())
        else {
            panic!("delete")
        };
        assert!(s.iocs.is_empty() && s.skip.is_none());
        let mut revoked = obj.clone();
        revoked["revoked"] = json!(true);
        let Classified::Indicator(s) =
            classify_object(EventKind::Update, &revoked, ClassifyOptions::default())
        else {
            panic!("revoked")
        };
        assert!(s.iocs.is_empty() && s.skip.is_none());
        let mut sigma = obj.clone();
        sigma["pattern_type"] = json!("sigma");
        let Classified::Indicator(s) =
            classify_object(EventKind::Create, &sigma, ClassifyOptions::default())
        else {
            panic!("sigma")
        };
        assert_eq!(s.skip, Some(SkipReason::NotStix));
        let identity = json!({"id": "identity--1", "type": "identity"});
        assert!(matches!(
            classify_object(EventKind::Create, &identity, ClassifyOptions::default()),
            Classified::Skip {
                reason: SkipReason::NotIndicator,
                ..
            }
        ));
        let no_id = json!({"type": "indicator", "pattern": "[ipv4-addr:value = '1.2.3.4']"});
        assert!(matches!(
            classify_object(EventKind::Create, &no_id, ClassifyOptions::default()),
            Classified::Skip {
                reason: SkipReason::MalformedEvent,
                ..
            }
        ));
        let compound = indicator("[ipv4-addr:value = '1.2.3.4'] AND [ipv4-addr:value = '1.2.3.5']");
        let Classified::Indicator(s) =
            classify_object(EventKind::Create, &compound, ClassifyOptions::default())
        else {
            panic!("compound")
        };
        assert_eq!(s.skip, Some(SkipReason::Compound));
    }

    #[test]
    fn expansion_honours_the_member_cap() {
        let obj = indicator("[ipv4-addr:value IN ('10.0.0.1', '10.0.0.2', '10.0.0.3')]");
        let with = |expand_max| ClassifyOptions {
            expand_or: true,
            expand_max,
            ..ClassifyOptions::default()
        };
        let Classified::Indicator(s) = classify_object(EventKind::Create, &obj, with(2)) else {
            panic!("indicator")
        };
        assert_eq!(s.skip, Some(SkipReason::TooManyMembers));
        assert!(s.iocs.is_empty());
        let Classified::Indicator(s) = classify_object(EventKind::Create, &obj, with(3)) else {
            panic!("indicator")
        };
        assert_eq!((s.skip, s.iocs.len()), (None, 3));
    }
}

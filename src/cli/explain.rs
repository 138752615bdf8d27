//! `iocsync explain <indicator id | IOC value>`: the life of an indicator (or of every indicator
//! that held a value) from the state's event journal — events, classification, changes planned per
//! sink and their outcomes — and, for each value, where it stands in every sink and, when it is in
//! none, why. Reads the state only.

use crate::ioc::Ioc;
use crate::pattern::{self, ComparisonKind, ObservationKind};
use crate::skip::SkipReason;
use crate::state::{JournalEvent, SinkValue, State, StateError};
use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// What `explain` found for its query.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// The query as given.
    pub query: String,
    /// `indicator` when the query named an indicator, `value` when it named an IOC value.
    pub query_kind: &'static str,
    /// The indicators concerned, each with its journaled life.
    pub indicators: Vec<IndicatorLife>,
    /// Each value concerned: who holds it, what each sink holds, and the one-line answer.
    pub values: Vec<ValueState>,
}

/// One indicator's journaled life.
#[derive(Debug, Clone, Serialize)]
pub struct IndicatorLife {
    /// The indicator id.
    pub id: String,
    /// The IOCs it desires now (`None`: the state never stored it).
    pub desires: Option<Vec<Ioc>>,
    /// Its journaled events, oldest first.
    pub events: Vec<ExplainedEvent>,
}

/// A journaled event with its classification in words.
#[derive(Debug, Clone, Serialize)]
pub struct ExplainedEvent {
    /// The journal record.
    #[serde(flatten)]
    pub event: JournalEvent,
    /// The skip's reason in words, when the event was skipped.
    pub skip_reason: Option<String>,
}

/// A value's state across the sinks.
#[derive(Debug, Clone, Serialize)]
pub struct ValueState {
    /// The value.
    pub value: String,
    /// Indicators holding it now: (IOC type, indicator id).
    pub holders: Vec<(String, String)>,
    /// What each sink holds for it.
    pub sinks: Vec<SinkValue>,
    /// The answer in one line: in which sinks it is, or why it is in none.
    pub verdict: String,
}

/// Explains an indicator id or an IOC value.
pub fn explain(state: &State, query: &str) -> Result<Explanation, StateError> {
    let query = query.trim();
    let by_id = !state.journal_of(query)?.is_empty() || state.desired_iocs(query)?.is_some();
    let (query_kind, ids) = if by_id {
        ("indicator", vec![query.to_string()])
    } else {
        ("value", state.indicators_with_value(&normalized(query))?)
    };
    let mut indicators = Vec::new();
    let mut values: BTreeSet<String> = BTreeSet::new();
    if !by_id {
        values.insert(normalized(query));
    }
    for id in ids {
        let events: Vec<ExplainedEvent> = state
            .journal_of(&id)?
            .into_iter()
            .map(|event| ExplainedEvent {
                skip_reason: event
                    .skip
                    .as_deref()
                    .map(|code| skip_reason_text(code, event.pattern.as_deref())),
                event,
            })
            .collect();
        let desires = state.desired_iocs(&id)?;
        if by_id {
            for e in &events {
                values.extend(e.event.iocs.iter().map(|i| i.value.clone()));
                values.extend(e.event.changes.iter().map(|c| c.value.clone()));
            }
            values.extend(desires.iter().flatten().map(|i| i.value.clone()));
        }
        indicators.push(IndicatorLife {
            id,
            desires,
            events,
        });
    }
    let mut value_states = Vec::new();
    for value in values {
        let holders = state.holders_of(&value)?;
        let sinks = state.sink_values(&value)?;
        let verdict = verdict(&value, &holders, &sinks, &indicators);
        value_states.push(ValueState {
            value,
            holders,
            sinks,
            verdict,
        });
    }
    Ok(Explanation {
        query: query.to_string(),
        query_kind,
        indicators,
        values: value_states,
    })
}

/// The value as the state stores it (lower-case hashes, canonical addresses) when it reads as an
/// IOC; otherwise as given.
fn normalized(query: &str) -> String {
    Ioc::detect(query)
        .map(|ioc| ioc.value)
        .unwrap_or_else(|_| query.to_string())
}

/// Why a value is, or is not, in the sinks.
fn verdict(
    value: &str,
    holders: &[(String, String)],
    sinks: &[SinkValue],
    lives: &[IndicatorLife],
) -> String {
    let mut parts = Vec::new();
    for s in sinks {
        let remote = s.remote_id.as_deref().unwrap_or("-");
        let intent = s.intent_id.map(|n| n.to_string()).unwrap_or("-".into());
        parts.push(match s.status.as_str() {
            "live" => format!("in {} (remote id {remote})", s.sink),
            "pending_create" => format!(
                "waiting to be created in {} (intent {intent}){}",
                s.sink,
                last_error(lives, value, &s.sink)
            ),
            "pending_update" => format!("in {}, an update waiting in intent {intent}", s.sink),
            "pending_delete" => format!("in {}, waiting to be deleted (intent {intent})", s.sink),
            "rejected" => format!(
                "refused by {}: {}",
                s.sink,
                refusal(lives, value, &s.sink).unwrap_or("(no message recorded)".into())
            ),
            other => format!("{} status {other}", s.sink),
        });
    }
    if !parts.is_empty() {
        return parts.join("; ");
    }
    // In no sink: the last event that mentions the value says why; one ignored as replayed
    // history changed nothing, so it speaks only when it is the last and held the value.
    let last = lives
        .iter()
        .flat_map(|l| l.events.iter())
        .filter(|e| mentions(&e.event, value))
        .max_by_key(|e| e.event.id);
    if let Some(e) = last.filter(|e| e.event.iocs.iter().any(|i| i.value == value)) {
        if let Some(applied) = &e.event.stale_of {
            return format!(
                "not in any sink: replayed history ignored as stale: {} held it in the version of {} {}, but the version applied ({applied}) is newer",
                e.event.indicator_id,
                e.event.version.as_deref().unwrap_or("-"),
                position_text(&e.event)
            );
        }
    }
    let last = lives
        .iter()
        .flat_map(|l| l.events.iter())
        .filter(|e| e.event.stale_of.is_none() && mentions(&e.event, value))
        .max_by_key(|e| e.event.id);
    let Some(e) = last else {
        return if lives.is_empty() {
            "never seen: no indicator in the state holds or held this value (or its journal was pruned)".into()
        } else {
            "in no sink; no journaled event of its indicators mentions it".into()
        };
    };
    let at = position_text(&e.event);
    if let (Some(code), Some(text)) = (&e.event.skip, &e.skip_reason) {
        let text = text.strip_prefix(&format!("{code}: ")).unwrap_or(text);
        return format!(
            "not in any sink: {} skipped with code {code} ({text}) {at}",
            e.event.indicator_id
        );
    }
    let rejected = e.event.changes.iter().find(|c| c.outcome == "rejected");
    if let Some(c) = rejected {
        return format!(
            "not in any sink: refused by {} with message {}",
            c.sink,
            c.error.as_deref().unwrap_or("-")
        );
    }
    match e.event.kind.as_str() {
        "delete" => format!("not in any sink: deleted {at} ({})", e.event.indicator_id),
        "merged" => format!(
            "not in any sink: {} was merged into {} {at}",
            e.event.indicator_id,
            e.event.merged_into.as_deref().unwrap_or("-")
        ),
        "expiry" => format!("not in any sink: {} expired", e.event.indicator_id),
        _ if !holders.is_empty() => "held by an indicator but in no sink".into(),
        kind => format!(
            "not in any sink: {} stopped holding it ({kind} {at}) and no other indicator holds it",
            e.event.indicator_id
        ),
    }
}

fn mentions(e: &JournalEvent, value: &str) -> bool {
    e.iocs.iter().any(|i| i.value == value)
        || e.changes.iter().any(|c| c.value == value)
        || e.pattern
            .as_deref()
            .is_some_and(|p| p.to_ascii_lowercase().contains(&value.to_ascii_lowercase()))
        || (e.iocs.is_empty() && e.skip.is_none())
}

fn position_text(e: &JournalEvent) -> String {
    match &e.position {
        Some(p) => format!("at position {p}"),
        None => format!("at {}", time_text(e.at_ms)),
    }
}

fn last_error(lives: &[IndicatorLife], value: &str, sink: &str) -> String {
    lives
        .iter()
        .flat_map(|l| l.events.iter())
        .flat_map(|e| e.event.changes.iter())
        .filter(|c| c.value == value && c.sink == sink && c.outcome == "pending")
        .max_by_key(|c| c.intent_id)
        .and_then(|c| {
            c.error
                .as_ref()
                .map(|err| format!(", {} failed attempts, last error: {err}", c.retries))
        })
        .unwrap_or_default()
}

fn refusal(lives: &[IndicatorLife], value: &str, sink: &str) -> Option<String> {
    lives
        .iter()
        .flat_map(|l| l.events.iter())
        .flat_map(|e| e.event.changes.iter())
        .filter(|c| c.value == value && c.sink == sink && c.outcome == "rejected")
        .max_by_key(|c| c.intent_id)
        .and_then(|c| c.error.clone())
}

/// A skip code in words; for a pattern, what in it made the classifier skip it.
pub fn skip_reason_text(code: &str, pattern: Option<&str>) -> String {
    let shape = pattern.and_then(pattern_shape);
    let Some(reason) = SkipReason::from_code(code) else {
        return code.to_string();
    };
    let general = match reason {
        SkipReason::Invalid => "not a valid STIX 2.1 pattern",
        SkipReason::Compound => "more than one comparison or observation",
        SkipReason::Qualified => {
            "the observation carries a qualifier (WITHIN, REPEATS, START/STOP)"
        }
        SkipReason::UnsupportedObject => "the object path is not one iocsync turns into an IOC",
        SkipReason::UnsupportedOperator => "an operator other than `=`",
        SkipReason::InvalidValue => "the value is not valid for its IOC type",
        SkipReason::CidrRange => "a CIDR range wider than one address (no sink accepts ranges)",
        SkipReason::EmptyFileHash => "the hash of the empty file (it would match every empty file)",
        SkipReason::NotStix => "the pattern type is not `stix`",
        SkipReason::NotIndicator => "not an indicator",
        SkipReason::MissingPattern => "the indicator has no pattern",
        SkipReason::MalformedEvent => "the event could not be read",
        SkipReason::UnsupportedType => "a MISP attribute type with no IOC equivalent",
        SkipReason::IgnoredDisabledFeed => "the attribute's MISP feed is disabled",
        SkipReason::NotToIds => "the MISP attribute's to_ids flag is off",
        SkipReason::Expired => "its valid_until has passed",
        SkipReason::TooManyMembers => {
            "the OR / IN expansion names more members than pipeline.expand_max"
        }
    };
    let detail = match (reason, pattern) {
        (SkipReason::Invalid, Some(p)) => pattern::report(p).error,
        (SkipReason::Compound | SkipReason::Qualified, _) => shape,
        _ => None,
    };
    match detail {
        Some(d) => format!("{code}: {d}"),
        None => format!("{code}: {general}"),
    }
}

/// The outermost shape of a pattern in words ("AND of 2 observations").
fn pattern_shape(text: &str) -> Option<String> {
    let parsed = pattern::parse(text).ok()?;
    let mut obs = &parsed.root;
    loop {
        match &obs.kind {
            ObservationKind::Group(inner) => obs = inner,
            ObservationKind::Compound { op, operands } => {
                return Some(format!(
                    "{} of {} observations",
                    op.as_str(),
                    operands.len()
                ))
            }
            ObservationKind::Qualified { qualifier, .. } => {
                return Some(format!("a {} qualifier", qualifier.kind.keyword()))
            }
            ObservationKind::Observation(cmp) => {
                let mut cmp = cmp;
                loop {
                    match &cmp.kind {
                        ComparisonKind::Group(inner) => cmp = inner,
                        ComparisonKind::Compound { op, operands } => {
                            return Some(format!(
                                "{} of {} comparisons in one observation",
                                op.as_str(),
                                operands.len()
                            ))
                        }
                        ComparisonKind::Test(t) => {
                            return matches!(t.test, pattern::Test::In { .. })
                                .then(|| "an IN set of values".to_string())
                        }
                    }
                }
            }
        }
    }
}

fn time_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

/// The explanation as text for a SOC engineer.
pub fn render_text(x: &Explanation) -> String {
    let mut out = String::new();
    if x.indicators.is_empty() {
        let _ = writeln!(out, "{}: never seen", x.query);
    }
    for life in &x.indicators {
        let _ = writeln!(out, "indicator {}", life.id);
        match &life.desires {
            None => {
                let _ = writeln!(out, "  not in the state (only its journal)");
            }
            Some(iocs) if iocs.is_empty() => {
                let _ = writeln!(out, "  holds no IOC now");
            }
            Some(iocs) => {
                let list: Vec<String> = iocs
                    .iter()
                    .map(|i| format!("{} {}", i.kind.as_str(), i.value))
                    .collect();
                let _ = writeln!(out, "  holds now: {}", list.join(", "));
            }
        }
        if life.events.is_empty() {
            let _ = writeln!(out, "  no journaled events (journal off or pruned)");
        }
        for e in &life.events {
            let ev = &e.event;
            let position = ev.position.as_deref().unwrap_or("-");
            let _ = writeln!(
                out,
                "  {} {} from {} at position {position}, modified {}",
                time_text(ev.at_ms),
                ev.kind,
                ev.source,
                ev.version.as_deref().unwrap_or("-")
            );
            if let Some(target) = &ev.merged_into {
                let _ = writeln!(out, "    merged into {target}");
            }
            if let Some(applied) = &ev.stale_of {
                let _ = writeln!(
                    out,
                    "    replayed history ignored as stale: the version applied ({applied}) is newer; nothing changed"
                );
            }
            match (&e.skip_reason, ev.iocs.is_empty()) {
                (Some(reason), _) => {
                    let _ = writeln!(out, "    skipped: {reason}");
                    if let Some(p) = &ev.pattern {
                        let _ = writeln!(out, "    pattern: {p}");
                    }
                }
                (None, true) => {
                    let _ = writeln!(out, "    yields no IOC (removed)");
                }
                (None, false) => {
                    let list: Vec<String> = ev
                        .iocs
                        .iter()
                        .map(|i| format!("{} {}", i.kind.as_str(), i.value))
                        .collect();
                    let _ = writeln!(out, "    IOCs: {}", list.join(", "));
                }
            }
            if ev.changes.is_empty() && e.skip_reason.is_none() && ev.stale_of.is_none() {
                let _ = writeln!(
                    out,
                    "    no sink change needed (the sinks already hold, or are getting, what it asks)"
                );
            }
            for c in &ev.changes {
                let outcome = match c.outcome.as_str() {
                    "cancelled" => {
                        "cancelled before it was sent (a later event of the same batch undid it)"
                    }
                    "pending" => "pending (not yet acknowledged by the sink)",
                    "rejected" => "refused by the sink (dead-lettered)",
                    other => other,
                };
                let mut line = format!(
                    "    {} {} {} {} (intent {}): {outcome}",
                    c.sink, c.op, c.kind, c.value, c.intent_id
                );
                if let Some(at) = c.at_ms {
                    let _ = write!(line, " at {}", time_text(at));
                }
                if let Some(r) = &c.remote_id {
                    let _ = write!(line, ", remote id {r}");
                }
                if c.retries > 0 {
                    let _ = write!(line, ", {} retries", c.retries);
                }
                if let Some(err) = &c.error {
                    let _ = write!(line, ", error: {err}");
                }
                let _ = writeln!(out, "{line}");
            }
        }
    }
    for v in &x.values {
        let _ = writeln!(out, "value {}", v.value);
        let others: Vec<&str> = v
            .holders
            .iter()
            .map(|(_, id)| id.as_str())
            .filter(|id| !(x.query_kind == "indicator" && *id == x.query))
            .collect();
        if x.query_kind == "indicator" {
            if !others.is_empty() {
                let _ = writeln!(out, "  also held by: {}", others.join(", "));
            }
        } else if !v.holders.is_empty() {
            let _ = writeln!(out, "  held by: {}", others.join(", "));
        }
        for s in &v.sinks {
            let _ = writeln!(
                out,
                "  {}: {} {} (remote id {}, created for {})",
                s.sink,
                s.status,
                s.kind,
                s.remote_id.as_deref().unwrap_or("-"),
                s.indicator_id
            );
        }
        let _ = writeln!(out, "  => {}", v.verdict);
    }
    out
}

/// `iocsync explain`: opens the state read-only and prints the explanation (JSON with `json`).
pub fn command(
    cfg: &crate::config::Config,
    query: &str,
    json: bool,
    out: &mut impl std::io::Write,
) -> Result<(), crate::app::AppError> {
    use crate::app::{output_error, read_state, AppError};
    let Some(state) = read_state(cfg)? else {
        return Err(AppError::Other(format!(
            "no state in `{}`: nothing has run yet",
            cfg.state.dir.display()
        )));
    };
    let x = explain(&state, query)?;
    if json {
        let text = serde_json::to_string_pretty(&x).map_err(|e| AppError::Other(e.to_string()))?;
        writeln!(out, "{text}").map_err(output_error)
    } else {
        out.write_all(render_text(&x).as_bytes())
            .map_err(output_error)
    }
}

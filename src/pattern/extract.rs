//! Turning a parsed pattern into IOCs: exactly one `=` comparison on a supported object path
//! (protocols.md §4 "Single-expression → IOC"), or, with expansion, an OR of such comparisons
//! and `IN` sets.

use super::ast::{
    CompareOp, ComparisonExpr, ComparisonKind, Literal, ObjectPath, ObservationExpr,
    ObservationKind, PathStep, Pattern, Test,
};
use super::semantic::HashAlgo;
use crate::ioc::{normalise, Ioc, IocKind};
use crate::skip::SkipReason;
use std::borrow::Cow;
use std::collections::HashSet;

/// The IOC kind an object path maps to, if it is one we push: `file:hashes.<MD5|SHA-1|SHA1|
/// SHA-256|SHA256>` (any quoting and letter case of the algorithm), and `value` of
/// `ipv4-addr`, `ipv6-addr`, `domain-name`, `hostname`, `url`.
pub fn supported_kind(path: &ObjectPath<'_>) -> Option<IocKind> {
    match (&*path.object_type, &*path.property, path.steps.as_slice()) {
        ("ipv4-addr", "value", []) => Some(IocKind::Ipv4),
        ("ipv6-addr", "value", []) => Some(IocKind::Ipv6),
        ("domain-name", "value", []) => Some(IocKind::Domain),
        ("hostname", "value", []) => Some(IocKind::Hostname),
        ("url", "value", []) => Some(IocKind::Url),
        ("file", "hashes", [PathStep::Key(algo)]) => match HashAlgo::from_key(algo)? {
            HashAlgo::Md5 => Some(IocKind::Md5),
            HashAlgo::Sha1 => Some(IocKind::Sha1),
            HashAlgo::Sha256 => Some(IocKind::Sha256),
            _ => None,
        },
        _ => None,
    }
}

/// Strips observation-level parentheses.
fn unwrap_observation<'p, 'a>(mut expr: &'p ObservationExpr<'a>) -> &'p ObservationExpr<'a> {
    while let ObservationKind::Group(inner) = &expr.kind {
        expr = inner;
    }
    expr
}

/// Strips comparison-level parentheses.
fn unwrap_comparison<'p, 'a>(mut expr: &'p ComparisonExpr<'a>) -> &'p ComparisonExpr<'a> {
    while let ComparisonKind::Group(inner) = &expr.kind {
        expr = inner;
    }
    expr
}

/// A literal as a value of `kind`: only strings can be.
fn literal_ioc(kind: IocKind, lit: &Literal<'_>) -> Result<Ioc, SkipReason> {
    literal_value(kind, lit).map(|value| Ioc {
        kind,
        value: value.into_owned(),
    })
}

/// A literal's normalised value as `kind` ([`normalise`]), borrowed from the literal when it
/// already is canonical.
fn literal_value<'p>(kind: IocKind, lit: &'p Literal<'_>) -> Result<Cow<'p, str>, SkipReason> {
    match lit.value.as_str() {
        Some(s) => normalise(kind, s),
        None => Err(SkipReason::InvalidValue),
    }
}

/// Classifies a pattern that should be a single IOC. Parentheses are transparent; otherwise the
/// outermost shape decides the reason: a qualifier → `qualified`, AND/OR/FOLLOWEDBY or an `IN`
/// → `compound`, another path → `unsupported_object`, another operator (incl. `NOT =`, `!=`,
/// `LIKE`, `EXISTS`) → `unsupported_operator`, a bad value → its reason from [`Ioc::new`].
pub fn extract_ioc(pattern: &Pattern<'_>) -> Result<Ioc, SkipReason> {
    extract_value(pattern).map(|(kind, value)| Ioc {
        kind,
        value: value.into_owned(),
    })
}

/// [`extract_ioc`] without building the [`Ioc`]: its kind and value, borrowed from the pattern
/// when the value is already canonical (what `iocsync parse` writes, without an allocation).
pub(crate) fn extract_value<'p>(
    pattern: &'p Pattern<'_>,
) -> Result<(IocKind, Cow<'p, str>), SkipReason> {
    let comparison = match &unwrap_observation(&pattern.root).kind {
        ObservationKind::Observation(cmp) => unwrap_comparison(cmp),
        ObservationKind::Qualified { .. } => return Err(SkipReason::Qualified),
        ObservationKind::Compound { .. } | ObservationKind::Group(_) => {
            return Err(SkipReason::Compound)
        }
    };
    let test = match &comparison.kind {
        ComparisonKind::Test(cmp) => &cmp.test,
        ComparisonKind::Compound { .. } | ComparisonKind::Group(_) => {
            return Err(SkipReason::Compound)
        }
    };
    let kind = supported_kind(test.path()).ok_or(SkipReason::UnsupportedObject)?;
    match test {
        Test::Compare {
            negated: false,
            op: CompareOp::Eq,
            value,
            ..
        } => literal_value(kind, value).map(|value| (kind, value)),
        Test::In { negated: false, .. } => Err(SkipReason::Compound),
        _ => Err(SkipReason::UnsupportedOperator),
    }
}

/// Collects the tests of a pattern made only of ORs (at both levels) and parentheses; `false`
/// when anything else (AND, FOLLOWEDBY, a qualifier) is present.
fn collect_or_observations<'p, 'a>(
    expr: &'p ObservationExpr<'a>,
    out: &mut Vec<&'p Test<'a>>,
) -> bool {
    match &expr.kind {
        ObservationKind::Observation(cmp) => collect_or_comparisons(cmp, out),
        ObservationKind::Group(inner) => collect_or_observations(inner, out),
        ObservationKind::Compound {
            op: super::ast::ObservationOp::Or,
            operands,
        } => operands.iter().all(|o| collect_or_observations(o, out)),
        ObservationKind::Compound { .. } | ObservationKind::Qualified { .. } => false,
    }
}

fn collect_or_comparisons<'p, 'a>(
    expr: &'p ComparisonExpr<'a>,
    out: &mut Vec<&'p Test<'a>>,
) -> bool {
    match &expr.kind {
        ComparisonKind::Test(cmp) => {
            out.push(&cmp.test);
            true
        }
        ComparisonKind::Group(inner) => collect_or_comparisons(inner, out),
        ComparisonKind::Compound {
            op: super::ast::BoolOp::Or,
            operands,
        } => operands.iter().all(|o| collect_or_comparisons(o, out)),
        ComparisonKind::Compound { .. } => false,
    }
}

/// The supported kind and the values of a test that expansion can take, if it can.
fn expandable<'p, 'a>(test: &'p Test<'a>) -> Option<(IocKind, &'p [Literal<'a>])> {
    let kind = supported_kind(test.path())?;
    match test {
        Test::Compare {
            negated: false,
            op: CompareOp::Eq,
            value,
            ..
        } => Some((kind, std::slice::from_ref(value))),
        Test::In {
            negated: false,
            set,
            ..
        } => Some((kind, set.as_slice())),
        _ => None,
    }
}

/// How many members an expansion may name by default (`pipeline.expand_max`): an indicator is one
/// analyst's statement, and past this it is more likely a dumped list than a campaign, and every
/// member costs a state row and a sink call per sink.
pub const DEFAULT_EXPAND_MAX: usize = 1000;

/// [`extract_iocs_max`] with [`DEFAULT_EXPAND_MAX`].
pub fn extract_iocs(pattern: &Pattern<'_>) -> Result<Vec<Ioc>, SkipReason> {
    extract_iocs_max(pattern, DEFAULT_EXPAND_MAX)
}

/// Like [`extract_ioc`], but a pattern that is only an OR of `=` comparisons on supported paths
/// (inside one observation or across observations) and/or `IN (…)` sets on supported paths
/// becomes every IOC it names, de-duplicated, in order of appearance.
///
/// More than `max` members (counted as written, before de-duplication, so the work done for a
/// pattern is bounded by `max` whatever it repeats) skips the pattern as `too_many_members`.
/// Within an expansion, empty-file hashes are dropped (they are never pushed); any other bad
/// member value skips the whole pattern with that member's reason, so a half-valid indicator is
/// visible rather than silently trimmed. An expansion with no value left is `empty_file_hash` if
/// that is why, `invalid_value` for an empty `IN ()`. Every other shape gets [`extract_ioc`]'s answer.
pub fn extract_iocs_max(pattern: &Pattern<'_>, max: usize) -> Result<Vec<Ioc>, SkipReason> {
    let mut tests = Vec::new();
    let or_only = collect_or_observations(&pattern.root, &mut tests);
    let members: Option<Vec<_>> = if or_only {
        tests.iter().map(|t| expandable(t)).collect()
    } else {
        None
    };
    let Some(members) = members else {
        return extract_ioc(pattern).map(|ioc| vec![ioc]);
    };
    let count: usize = members.iter().map(|(_, values)| values.len()).sum();
    if count > max {
        return Err(SkipReason::TooManyMembers);
    }
    let mut iocs: Vec<Ioc> = Vec::new();
    // A set beside the ordered list: `Vec::contains` made de-duplication quadratic.
    let mut seen: HashSet<Ioc> = HashSet::with_capacity(count);
    let mut dropped_empty = false;
    for (kind, values) in members {
        for lit in values {
            match literal_ioc(kind, lit) {
                Ok(ioc) => {
                    if seen.insert(ioc.clone()) {
                        iocs.push(ioc);
                    }
                }
                Err(SkipReason::EmptyFileHash) => dropped_empty = true,
                Err(reason) => return Err(reason),
            }
        }
    }
    if iocs.is_empty() {
        return Err(if dropped_empty {
            SkipReason::EmptyFileHash
        } else {
            SkipReason::InvalidValue
        });
    }
    Ok(iocs)
}

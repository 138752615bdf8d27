//! Runs the hand-written corpus `fixtures/patterns/corpus.tsv` (format in its header) through
//! `parse`, `extract_ioc` and `report`, and checks that every valid pattern's canonical print parses
//! back to the same tree.

use iocsync::pattern::{extract_ioc, parse, report};

const CORPUS: &str = include_str!("../fixtures/patterns/corpus.tsv");

/// One corpus line.
struct Case<'a> {
    line: usize,
    pattern: &'a str,
    valid: bool,
    outcome: &'a str,
}

fn cases() -> Vec<Case<'static>> {
    CORPUS
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(n, l)| {
            let mut cols = l.rsplitn(3, '\t');
            let outcome = cols.next().expect("outcome column");
            let valid = cols.next().expect("valid column");
            let pattern = cols.next().expect("pattern column");
            Case {
                line: n + 1,
                pattern,
                valid: match valid {
                    "true" => true,
                    "false" => false,
                    other => panic!("line {}: bad VALID column {other:?}", n + 1),
                },
                outcome,
            }
        })
        .collect()
}

#[test]
fn corpus_has_at_least_150_cases() {
    assert!(cases().len() >= 150, "only {} cases", cases().len());
}

#[test]
fn corpus_validity_and_outcome() {
    let mut failures = Vec::new();
    for case in cases() {
        let parsed = parse(case.pattern);
        if parsed.is_ok() != case.valid {
            failures.push(format!(
                "line {}: {:?}: expected valid={}, got {:?}",
                case.line, case.pattern, case.valid, parsed
            ));
            continue;
        }
        let outcome = match parsed.as_ref().map_err(|_| ()).map(extract_ioc) {
            Err(()) => "skip:invalid".to_owned(),
            Ok(Ok(ioc)) => format!("ioc:{}:{}", ioc.kind, ioc.value),
            Ok(Err(reason)) => format!("skip:{reason}"),
        };
        if outcome != case.outcome {
            failures.push(format!(
                "line {}: {:?}: expected {}, got {outcome}",
                case.line, case.pattern, case.outcome
            ));
        }
        // report() must say the same thing in its own shape.
        let r = report(case.pattern);
        let from_report = match (&r.ioc, r.skip) {
            (Some(ioc), None) => format!("ioc:{}:{}", ioc.kind, ioc.value),
            (None, Some(reason)) => format!("skip:{reason}"),
            other => format!("inconsistent report {other:?}"),
        };
        if from_report != case.outcome || r.valid != case.valid || r.error.is_some() == case.valid {
            failures.push(format!("line {}: report disagrees: {r:?}", case.line));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn corpus_round_trips_through_canonical_print() {
    for case in cases().iter().filter(|c| c.valid) {
        let ast = parse(case.pattern).expect("valid");
        let printed = ast.to_string();
        let again = parse(&printed)
            .unwrap_or_else(|e| panic!("line {}: {printed:?} does not parse: {e}", case.line));
        assert_eq!(again, ast, "line {}: {printed:?}", case.line);
        // Canonical means idempotent.
        assert_eq!(again.to_string(), printed, "line {}", case.line);
    }
}

//! Tests of the event journal: retention by count and age, and a disabled journal.

use super::*;
use crate::ioc::IocKind;
use crate::model::{ChangeOp, IocMeta};

fn state_of(id: &str, value: &str) -> IndicatorState {
    IndicatorState {
        id: id.into(),
        iocs: vec![Ioc {
            kind: IocKind::Domain,
            value: value.into(),
        }],
        skip: None,
        meta: IocMeta::default(),
        version: None,
    }
}

fn note(position: &str) -> EventNote {
    EventNote {
        position: Some(position.into()),
        kind: "update",
        merge_target: None,
    }
}

/// Writes `n` events for `id`, each with one planned change; all but the last settle.
fn write(state: &mut State, policy: &JournalPolicy, id: &str, n: usize) {
    let tx = state.tx().expect("tx");
    for i in 0..n {
        let s = state_of(id, &format!("d{i}.example"));
        let change = Change {
            intent_id: 0,
            op: ChangeOp::Create,
            ioc: s.iocs[0].clone(),
            indicator_id: id.into(),
            remote_id: None,
            meta: IocMeta::default(),
        };
        let change = tx.insert_intent("jsonl", change).expect("intent");
        tx.journal_event(
            policy,
            "file",
            &note(&format!("p{i}")),
            &s,
            std::iter::once(&change),
        )
        .expect("journal");
        if i + 1 < n && policy.enabled() {
            let applied = ChangeFate::Applied {
                remote_id: Some("r"),
            };
            tx.journal_outcome("jsonl", &change, applied, 1)
                .expect("outcome");
            tx.delete_intent(change.intent_id).expect("settled");
        }
    }
    tx.commit().expect("commit");
}

fn count(state: &State, table: &str) -> i64 {
    state
        .conn
        .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .expect("count")
}

#[test]
fn only_the_newest_events_of_an_indicator_are_kept_with_their_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut state = State::open(dir.path()).expect("open");
    let policy = JournalPolicy::new(3, 0);
    write(&mut state, &policy, "indicator--a", 5);
    write(&mut state, &policy, "indicator--b", 2);
    let a = state.journal_of("indicator--a").expect("read");
    let positions: Vec<_> = a.iter().filter_map(|e| e.position.as_deref()).collect();
    assert_eq!(positions, ["p2", "p3", "p4"]);
    let first = &a[0].changes[0];
    assert_eq!(
        (first.outcome.as_str(), first.value.as_str(), first.retries),
        ("applied", "d2.example", 1)
    );
    assert_eq!(first.remote_id.as_deref(), Some("r"));
    // The last one's intent is still outstanding: pending, read from the intent.
    let last = &a[2].changes[0];
    assert_eq!(
        (
            last.outcome.as_str(),
            last.value.as_str(),
            last.sink.as_str()
        ),
        ("pending", "d4.example", "jsonl")
    );
    assert_eq!(state.journal_of("indicator--b").expect("read").len(), 2);
    // The pruned events' changes went with them: a's p2 and p3 and b's first are left.
    assert_eq!(count(&state, "journal_event"), 5);
    assert_eq!(count(&state, "journal_change"), 3);
    // And so did their index keys: a's pruned d0 is found no more (b's d0 is), a kept one is.
    assert_eq!(
        state.indicators_with_value("d0.example").expect("lookup"),
        ["indicator--b"]
    );
    assert_eq!(
        state.indicators_with_value("D3.Example").expect("lookup"),
        ["indicator--a"]
    );
}

#[test]
fn a_stale_event_and_a_skipped_pattern_are_journaled_and_found_by_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut state = State::open(dir.path()).expect("open");
    let policy = JournalPolicy::new(20, 0);
    let tx = state.tx().expect("tx");
    let old = state_of("indicator--a", "old.example");
    tx.journal_stale_event(&policy, "file", &note("p9"), &old, "2025-02-01T00:00:00Z")
        .expect("stale");
    let skipped = IndicatorState {
        iocs: Vec::new(),
        skip: Some(crate::skip::SkipReason::CidrRange),
        meta: IocMeta {
            pattern: Some("[ipv4-addr:value = '10.0.0.0/8']".into()),
            ..IocMeta::default()
        },
        ..state_of("indicator--b", "unused")
    };
    tx.journal_event(&policy, "file", &note("p10"), &skipped, std::iter::empty())
        .expect("skipped");
    let mut two = state_of("indicator--c", "x.example");
    two.iocs.push(Ioc {
        kind: IocKind::Domain,
        value: "y.example".into(),
    });
    tx.journal_event(&policy, "file", &note("p11"), &two, std::iter::empty())
        .expect("two IOCs");
    tx.commit().expect("commit");
    // The first key is the event's own column, the second a row of the side table.
    assert_eq!(count(&state, "journal_value"), 1);
    for value in ["x.example", "y.example"] {
        assert_eq!(
            state.indicators_with_value(value).expect("lookup"),
            ["indicator--c"]
        );
    }
    let a = state.journal_of("indicator--a").expect("read");
    assert_eq!(a[0].stale_of.as_deref(), Some("2025-02-01T00:00:00Z"));
    assert_eq!(
        state.indicators_with_value("old.example").expect("lookup"),
        ["indicator--a"]
    );
    assert_eq!(
        state.indicators_with_value("10.0.0.0/8").expect("lookup"),
        ["indicator--b"]
    );
}

#[test]
fn events_older_than_the_age_limit_are_swept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut state = State::open(dir.path()).expect("open");
    let policy = JournalPolicy::new(20, 1);
    write(&mut state, &policy, "indicator--a", 3);
    // The first two are two days old.
    state
        .conn
        .execute(
            "UPDATE journal_event SET at = at - 2 * 86400000 WHERE id IN (SELECT id FROM journal_event ORDER BY id LIMIT 2)",
            [],
        )
        .expect("age");
    let tx = state.tx().expect("tx");
    tx.journal_sweep_if_due(&policy).expect("sweep");
    tx.commit().expect("commit");
    let left = state.journal_of("indicator--a").expect("read");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].position.as_deref(), Some("p2"));
    assert_eq!(
        count(&state, "journal_change"),
        0,
        "the two settled changes went"
    );
}

#[test]
fn a_journal_of_zero_events_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut state = State::open(dir.path()).expect("open");
    write(&mut state, &JournalPolicy::new(0, 90), "indicator--a", 3);
    assert_eq!(count(&state, "journal_event"), 0);
    assert_eq!(count(&state, "journal_change"), 0);
}

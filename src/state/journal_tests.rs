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
        let range = Some((change.intent_id, change.intent_id));
        tx.journal_event(policy, "file", &note(&format!("p{i}")), &s, range)
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

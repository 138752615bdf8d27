//! Tests of the planner: reference-counted values, replays and stale versions planning nothing,
//! supersession of unsent changes within a batch, the in-flight refusal, the pattern stored once.
use super::*;
use crate::state::State;

fn caps() -> Vec<SinkCaps> {
    vec![SinkCaps {
        name: "jsonl",
        supports_update: true,
    }]
}

fn indicator(id: &str, values: &[&str], version: &str, score: u8) -> IndicatorState {
    IndicatorState {
        id: id.into(),
        iocs: values
            .iter()
            .map(|v| Ioc {
                kind: IocKind::Domain,
                value: (*v).into(),
            })
            .collect(),
        skip: None,
        meta: IocMeta {
            score: Some(score),
            ..IocMeta::default()
        },
        version: Some(version.into()),
    }
}

/// Plans one state and pretends the sink applied everything.
fn plan_and_apply(state: &mut State, s: &IndicatorState) -> Vec<(ChangeOp, String)> {
    let tx = state.tx().expect("tx");
    let mut cancelled = Vec::new();
    let planned = match plan_indicator(&tx, &caps(), s, &InFlight::default(), &mut cancelled) {
        Err(PlanError::Stale { .. }) => Vec::new(),
        other => other.expect("plan"),
    };
    for p in &planned {
        let c = &p.change;
        match c.op {
            ChangeOp::Delete => tx.remove_sink_entry("jsonl", c.ioc.kind, &c.ioc.value),
            _ => tx.settle_entry(
                "jsonl",
                c.ioc.kind,
                &c.ioc.value,
                EntryStatus::Live,
                None,
                Some(&c.meta),
            ),
        }
        .expect("settle");
        tx.delete_intent(c.intent_id).expect("intent");
    }
    tx.commit().expect("commit");
    planned
        .into_iter()
        .map(|p| (p.change.op, p.change.ioc.value))
        .collect()
}

/// Plans `states` as a batch does (one transaction per chunk of `chunk` states, cancelled
/// intents dropped from the planned list at the end) and returns what the sinks would get.
fn plan_batch_like(state: &mut State, states: &[IndicatorState], chunk: usize) -> Vec<Change> {
    let mut planned = Vec::new();
    let mut cancelled = Vec::new();
    for part in states.chunks(chunk) {
        let tx = state.tx().expect("tx");
        for s in part {
            planned.extend(
                plan_indicator(&tx, &caps(), s, &InFlight::default(), &mut cancelled)
                    .expect("plan"),
            );
        }
        tx.commit().expect("commit");
    }
    planned
        .into_iter()
        .filter(|p| !cancelled.contains(&p.change.intent_id))
        .map(|p| p.change)
        .collect()
}

fn described(mut s: IndicatorState, description: &str) -> IndicatorState {
    s.meta.description = Some(description.into());
    s
}

#[test]
fn a_create_and_its_update_in_one_batch_send_the_newest_metadata_once() {
    for chunk in [2, 1] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut state = State::open(dir.path()).expect("state");
        let created = indicator("indicator--a", &["a.example"], "2025-01-01T00:00:00Z", 50);
        let updated = described(
            indicator("indicator--a", &["a.example"], "2025-01-02T00:00:00Z", 78),
            "newer",
        );
        let sent = plan_batch_like(&mut state, &[created, updated], chunk);
        assert_eq!(sent.len(), 1, "chunk {chunk}: {sent:?}");
        assert_eq!(sent[0].op, ChangeOp::Create);
        assert_eq!(sent[0].meta.score, Some(78));
        assert_eq!(sent[0].meta.description.as_deref(), Some("newer"));
        // The durable intent is the one sent.
        let tx = state.tx().expect("tx");
        let intent = tx
            .intent_for("jsonl", IocKind::Domain, "a.example")
            .expect("intent")
            .expect("pending");
        assert_eq!(intent.intent_id, sent[0].intent_id);
        assert_eq!(intent.meta.score, Some(78));
    }
}

#[test]
fn two_updates_in_one_batch_send_the_newest_metadata_once() {
    for chunk in [2, 1] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut state = State::open(dir.path()).expect("state");
        let a = indicator("indicator--a", &["a.example"], "2025-01-01T00:00:00Z", 50);
        plan_and_apply(&mut state, &a);
        let first = indicator("indicator--a", &["a.example"], "2025-01-02T00:00:00Z", 60);
        let second = described(
            indicator("indicator--a", &["a.example"], "2025-01-03T00:00:00Z", 78),
            "newer",
        );
        let sent = plan_batch_like(&mut state, &[first, second], chunk);
        assert_eq!(sent.len(), 1, "chunk {chunk}: {sent:?}");
        assert_eq!(sent[0].op, ChangeOp::Update);
        assert_eq!(sent[0].meta.score, Some(78));
        assert_eq!(sent[0].meta.description.as_deref(), Some("newer"));
    }
}

#[test]
fn values_are_reference_counted_and_replays_plan_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut state = State::open(dir.path()).expect("state");
    let t1 = "2025-01-01T00:00:00Z";
    let a = indicator("indicator--a", &["shared.example"], t1, 50);
    let b = indicator("indicator--b", &["shared.example", "b.example"], t1, 50);
    assert_eq!(
        plan_and_apply(&mut state, &a),
        [(ChangeOp::Create, "shared.example".into())]
    );
    assert_eq!(
        plan_and_apply(&mut state, &b),
        [(ChangeOp::Create, "b.example".into())]
    );
    // Replaying the same state plans nothing.
    assert!(plan_and_apply(&mut state, &a).is_empty());
    // A deletes: the shared value stays, B still holds it.
    let gone = IndicatorState {
        version: Some("2025-01-02T00:00:00Z".into()),
        ..IndicatorState::removed("indicator--a")
    };
    assert!(plan_and_apply(&mut state, &gone).is_empty());
    // An older version of A (replayed history) is stale: nothing is re-created.
    let tx = state.tx().expect("tx");
    assert!(matches!(
        plan_indicator(&tx, &caps(), &a, &InFlight::default(), &mut Vec::new()),
        Err(PlanError::Stale { .. })
    ));
    drop(tx);
    assert!(plan_and_apply(&mut state, &a).is_empty());
    // B's metadata changes on a value it created: an update; then B goes: both deleted.
    let b2 = indicator(
        "indicator--b",
        &["shared.example", "b.example"],
        "2025-01-03T00:00:00Z",
        90,
    );
    assert_eq!(
        plan_and_apply(&mut state, &b2),
        [(ChangeOp::Update, "b.example".into())]
    );
    let b_gone = IndicatorState::removed("indicator--b");
    let mut deleted = plan_and_apply(&mut state, &b_gone);
    deleted.sort();
    assert_eq!(
        deleted,
        [
            (ChangeOp::Delete, "b.example".to_string()),
            (ChangeOp::Delete, "shared.example".to_string())
        ]
    );
}

#[test]
fn a_change_not_yet_sent_is_cancelled_rather_than_undone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut state = State::open(dir.path()).expect("state");
    let tx = state.tx().expect("tx");
    let mut cancelled = Vec::new();
    let a = indicator("indicator--a", &["x.example"], "2025-01-01T00:00:00Z", 50);
    let created =
        plan_indicator(&tx, &caps(), &a, &InFlight::default(), &mut cancelled).expect("plan");
    assert_eq!(created.len(), 1);
    let gone = IndicatorState::removed("indicator--a");
    let deleted =
        plan_indicator(&tx, &caps(), &gone, &InFlight::default(), &mut cancelled).expect("plan");
    assert!(deleted.is_empty(), "{deleted:?}");
    assert_eq!(cancelled, [created[0].change.intent_id]);
    assert!(tx
        .sink_entry("jsonl", IocKind::Domain, "x.example")
        .expect("entry")
        .is_none());
}

#[test]
fn a_value_in_flight_stops_planning_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut state = State::open(dir.path()).expect("state");
    let tx = state.tx().expect("tx");
    let mut cancelled = Vec::new();
    let a = indicator("indicator--a", &["x.example"], "2025-01-01T00:00:00Z", 50);
    let created =
        plan_indicator(&tx, &caps(), &a, &InFlight::default(), &mut cancelled).expect("plan");
    let mut in_flight = InFlight::default();
    in_flight.insert(created[0].sink, &created[0].change);

    let gone = IndicatorState::removed("indicator--a");
    match plan_indicator(&tx, &caps(), &gone, &in_flight, &mut cancelled) {
        Err(PlanError::InFlight { sink, kind, value }) => {
            assert_eq!(
                (sink, kind, value.as_str()),
                ("jsonl", IocKind::Domain, "x.example")
            );
        }
        other => panic!("expected InFlight, got {other:?}"),
    }
    assert!(cancelled.is_empty(), "the change in flight was cancelled");
    let entry = tx
        .sink_entry("jsonl", IocKind::Domain, "x.example")
        .expect("entry")
        .expect("still there");
    assert_eq!(entry.status, EntryStatus::PendingCreate);

    // A value not in flight plans as usual beside it.
    let b = indicator("indicator--b", &["y.example"], "2025-01-01T00:00:00Z", 50);
    let planned = plan_indicator(&tx, &caps(), &b, &in_flight, &mut cancelled).expect("plan");
    assert_eq!(planned.len(), 1);
}

#[test]
fn the_pattern_is_stored_once_not_per_sink_entry_or_intent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut state = State::open(dir.path()).expect("state");
    let tx = state.tx().expect("tx");
    let pattern = "[domain-name:value IN ('a.example', 'b.example')]";
    let mut a = indicator(
        "indicator--a",
        &["a.example", "b.example"],
        "2025-01-01T00:00:00Z",
        50,
    );
    a.meta.pattern = Some(pattern.into());
    let two_sinks = [
        caps().remove(0),
        SinkCaps {
            name: "zeek",
            supports_update: false,
        },
    ];
    let mut cancelled = Vec::new();
    let planned =
        plan_indicator(&tx, &two_sinks, &a, &InFlight::default(), &mut cancelled).expect("plan");
    assert_eq!(planned.len(), 4);
    for p in &planned {
        assert_eq!(p.change.meta.pattern, None, "{:?}", p.change);
        assert_eq!(
            p.change.meta.score,
            Some(50),
            "the rest of the metadata stays"
        );
        let name = two_sinks[p.sink].name;
        let (kind, value) = (p.change.ioc.kind, p.change.ioc.value.as_str());
        let entry = tx
            .sink_entry(name, kind, value)
            .expect("entry")
            .expect("some");
        assert_eq!(entry.meta.pattern, None);
        let intent = tx
            .intent_for(name, kind, value)
            .expect("intent")
            .expect("some");
        assert_eq!(intent.meta.pattern, None);
    }
    let stored = tx.indicator("indicator--a").expect("row").expect("some");
    assert_eq!(stored.meta.pattern.as_deref(), Some(pattern));
}

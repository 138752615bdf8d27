//! The shared harness of the HTTP sink tests (tests/sentinelone_sink.rs, tests/sekoia_sink.rs): the
//! changes the pipeline would send, readers of outcomes, and a table of failure cases run against a
//! fake — each case names what the fake does, what is sent and what every outcome must be.
#![allow(dead_code)]

use iocsync::ioc::{Ioc, IocKind};
use iocsync::model::IocMeta;
use iocsync::sinks::{Change, ChangeOp, Outcome, Sink, SinkError};
use std::time::Duration;

/// A change as the pipeline sends it (intent 1, named after its value, the source's internal id
/// `internal-<indicator>`, no remote id).
pub fn change(op: ChangeOp, kind: IocKind, value: &str, indicator: &str) -> Change {
    Change {
        intent_id: 1,
        op,
        ioc: Ioc {
            kind,
            value: value.into(),
        },
        indicator_id: indicator.into(),
        remote_id: None,
        meta: IocMeta {
            name: Some(format!("name of {value}")),
            source_internal_id: Some(format!("internal-{indicator}")),
            ..Default::default()
        },
    }
}

/// A create.
pub fn create(kind: IocKind, value: &str, indicator: &str) -> Change {
    change(ChangeOp::Create, kind, value, indicator)
}

/// A delete, with the remote id the state holds (if any).
pub fn delete(kind: IocKind, value: &str, indicator: &str, remote_id: Option<&str>) -> Change {
    let mut c = change(ChangeOp::Delete, kind, value, indicator);
    c.remote_id = remote_id.map(str::to_string);
    c
}

/// The remote id of an `Applied` outcome; panics on any other outcome.
pub fn id_of(o: &Outcome) -> String {
    match o {
        Outcome::Applied {
            remote_id: Some(id),
        } => id.clone(),
        other => panic!("expected Applied with an id, got {other:?}"),
    }
}

/// Whether the outcome is `Applied`.
pub fn is_applied(o: &Outcome) -> bool {
    matches!(o, Outcome::Applied { .. })
}

/// The delay and error of a `Retry` outcome; panics on any other outcome.
pub fn retry_parts(o: &Outcome) -> (Option<Duration>, &SinkError) {
    match o {
        Outcome::Retry { after, error } => (*after, error),
        other => panic!("expected Retry, got {other:?}"),
    }
}

/// What one outcome must be.
#[derive(Clone, Copy)]
pub enum Expect {
    /// Applied.
    Applied,
    /// A retry after exactly this delay (`None`: the pipeline's backoff decides), with an error the
    /// predicate accepts.
    Retry(Option<Duration>, fn(&SinkError) -> bool),
}

/// One row of a failure table against the fake `F`.
pub struct Case<F> {
    /// Shown when the row fails.
    pub name: &'static str,
    /// What the fake does for this row (inject a failure, refuse the credential…).
    pub fake: fn(&F),
    /// The changes sent in one `apply`.
    pub input: Vec<Change>,
    /// One expectation per outcome; a single one applies to every outcome.
    pub expect: Vec<Expect>,
    /// Checks of the fake afterwards, and undoing what `fake` did.
    pub then: fn(&F),
}

/// No set-up or check.
pub fn nothing<F>(_: &F) {}

/// Runs every row in order on one sink (rows may rely on what earlier rows left behind).
pub async fn run_cases<F>(sink: &dyn Sink, fake: &F, cases: Vec<Case<F>>) {
    for case in cases {
        (case.fake)(fake);
        let out = sink.apply(&case.input).await;
        assert_eq!(
            out.len(),
            case.input.len(),
            "{}: one outcome per change",
            case.name
        );
        assert!(
            case.expect.len() == 1 || case.expect.len() == out.len(),
            "{}: one expectation, or one per outcome",
            case.name
        );
        for (i, o) in out.iter().enumerate() {
            let want = match case.expect.as_slice() {
                [one] => *one,
                many => many[i],
            };
            match want {
                Expect::Applied => assert!(is_applied(o), "{}: outcome {i}: {o:?}", case.name),
                Expect::Retry(after, error) => {
                    let (got_after, err) = retry_parts(o);
                    assert_eq!(got_after, after, "{}: outcome {i}: retry delay", case.name);
                    assert!(error(err), "{}: outcome {i}: {err}", case.name);
                }
            }
        }
        (case.then)(fake);
    }
}

/// Creates one value through `sink` and returns the remote id it was created with.
pub async fn created(sink: &dyn Sink, kind: IocKind, value: &str, indicator: &str) -> String {
    id_of(&sink.apply(&[create(kind, value, indicator)]).await[0])
}

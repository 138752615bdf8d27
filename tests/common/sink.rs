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
pub enum Expect {
    /// Applied.
    Applied,
    /// A retry after exactly this delay (`None`: the pipeline's backoff decides), with an error the
    /// predicate accepts.
    Retry(Option<Duration>, Box<dyn Fn(&SinkError) -> bool>),
}

impl Expect {
    /// A retry after `after` with an error `error` accepts.
    pub fn retry(after: Option<Duration>, error: impl Fn(&SinkError) -> bool + 'static) -> Self {
        Expect::Retry(after, Box::new(error))
    }
}

/// One row of a failure table against the fake `F`.
pub struct Case<F> {
    /// Shown when the row fails.
    name: String,
    /// What the fake does for this row (inject a failure, refuse the credential…).
    fake: Box<dyn Fn(&F)>,
    /// The changes sent in one `apply`.
    input: Vec<Change>,
    /// One expectation per outcome; a single one applies to every outcome.
    expect: Vec<Expect>,
    /// Checks of the fake afterwards, and undoing what `fake` did.
    then: Box<dyn Fn(&F)>,
}

impl<F> Case<F> {
    /// A row: `fake` sets the fake up, `input` is sent, `expect` judges the outcomes.
    pub fn new(
        name: impl Into<String>,
        fake: impl Fn(&F) + 'static,
        input: Vec<Change>,
        expect: Vec<Expect>,
    ) -> Self {
        Case {
            name: name.into(),
            fake: Box::new(fake),
            input,
            expect,
            then: Box::new(|_| {}),
        }
    }

    /// Checks of the fake after the row (and undoing its set-up).
    pub fn then(mut self, then: impl Fn(&F) + 'static) -> Self {
        self.then = Box::new(then);
        self
    }
}

/// No set-up.
pub fn nothing<F>(_: &F) {}

/// The failures every HTTP fake injects into its next request, for the rows both sinks share.
pub struct Faults<F> {
    /// The sink's name in its errors.
    pub sink: &'static str,
    /// 429, with `Retry-After` when given.
    pub rate_limit: fn(&F, Option<u64>),
    /// This HTTP status with the vendor's error body.
    pub status: fn(&F, u16),
    /// A broken connection.
    pub reset: fn(&F),
    /// An answer slower than the sink's timeout (the sink under test uses 300 ms).
    pub slow: fn(&F),
    /// What the fake's 5xx body puts in the error message (`""`: nothing checked).
    pub status_text: &'static str,
    /// What a reset puts in the error message.
    pub reset_text: &'static str,
    /// Whether the fake holds nothing (a refused batch created nothing).
    pub holds_nothing: fn(&F) -> bool,
}

/// A 429 with `Retry-After: 7` refuses every item of `batch`, and creates nothing.
pub fn rate_limited<F: 'static>(f: &Faults<F>, batch: Vec<Change>) -> Case<F> {
    let (inject, sink, empty) = (f.rate_limit, f.sink, f.holds_nothing);
    Case::new(
        "429 with Retry-After, every item of the batch",
        move |fake| inject(fake, Some(7)),
        batch,
        vec![Expect::retry(
            Some(Duration::from_secs(7)),
            move |e| matches!(e, SinkError::RateLimited { sink: s, .. } if *s == sink),
        )],
    )
    .then(move |fake| assert!(empty(fake), "a rate-limited batch created nothing"))
}

/// Once the limit is gone, the same batch goes through.
pub fn recovered<F: 'static>(batch: Vec<Change>) -> Case<F> {
    Case::new(
        "once the limit is gone, the same batch goes through",
        nothing,
        batch,
        vec![Expect::Applied],
    )
}

/// A 503, a reset connection and a timeout on `one`: each a retry without a delay of its own.
pub fn transport_failures<F: 'static>(f: &Faults<F>, one: fn() -> Vec<Change>) -> Vec<Case<F>> {
    let (status, reset, slow) = (f.status, f.reset, f.slow);
    let (status_text, reset_text) = (f.status_text, f.reset_text);
    vec![
        Case::new(
            "503",
            move |fake| status(fake, 503),
            one(),
            vec![Expect::retry(None, move |e| {
                matches!(e, SinkError::Http { status: 503, message, .. }
                    if message.contains(status_text))
            })],
        ),
        Case::new(
            "connection reset",
            reset,
            one(),
            vec![Expect::retry(
                None,
                move |e| matches!(e, SinkError::Transport { message, .. } if message.contains(reset_text)),
            )],
        ),
        Case::new(
            "timeout",
            slow,
            one(),
            vec![Expect::retry(
                None,
                |e| matches!(e, SinkError::Transport { message, .. } if message.contains("timed out")),
            )],
        ),
    ]
}

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
                [one] => one,
                many => &many[i],
            };
            match want {
                Expect::Applied => assert!(is_applied(o), "{}: outcome {i}: {o:?}", case.name),
                Expect::Retry(after, error) => {
                    let (got_after, err) = retry_parts(o);
                    assert_eq!(got_after, *after, "{}: outcome {i}: retry delay", case.name);
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

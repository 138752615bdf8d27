//! `iocsync explain <value>` on a large journal: writes `IOCSYNC_BENCH_N` (1,000,000) journaled
//! events through the planner's own call (`Tx::journal_event`, 1,000 per transaction; every tenth
//! indicator gets a second, update event and every fiftieth is skipped with its pattern kept),
//! prints the write cost per event, then looks up `IOCSYNC_BENCH_LOOKUPS` (200) values spread over
//! the journal with `State::indicators_with_value` and prints p50 / p99 / max.
//!
//! `cargo bench --bench journal_lookup`. `IOCSYNC_BENCH_LOOKUPS=0` writes only (for a profiler:
//! `valgrind --tool=callgrind` on the built binary with a small `IOCSYNC_BENCH_N`).

use iocsync::ioc::{Ioc, IocKind};
use iocsync::model::{Change, ChangeOp, IndicatorState, IocMeta};
use iocsync::skip::SkipReason;
use iocsync::state::{EventNote, JournalPolicy, State};
use std::time::{Duration, Instant};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ip(i: usize) -> String {
    format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)
}

fn event(i: usize, update: bool) -> (IndicatorState, EventNote) {
    let id = format!("indicator--00000000-0000-4000-8000-{i:012}");
    let skipped = i % 50 == 0;
    let value = ip(i);
    let state = IndicatorState {
        id,
        iocs: if skipped {
            Vec::new()
        } else {
            vec![Ioc {
                kind: IocKind::Ipv4,
                value: value.clone(),
            }]
        },
        skip: skipped.then_some(SkipReason::CidrRange),
        meta: IocMeta {
            pattern: Some(format!("[ipv4-addr:value = '{value}/28']")),
            ..IocMeta::default()
        },
        version: Some(if update {
            "2025-01-02T00:00:00.000Z".into()
        } else {
            "2025-01-01T00:00:00.000Z".into()
        }),
    };
    let note = EventNote {
        position: Some(format!("{}-0", 1_700_000_000_000u64 + i as u64)),
        kind: if update { "update" } else { "create" },
        merge_target: None,
    };
    (state, note)
}

fn main() {
    let n = env("IOCSYNC_BENCH_N", 1_000_000);
    let lookups = env("IOCSYNC_BENCH_LOOKUPS", 200);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut state = State::open(dir.path()).expect("state");
    let policy = JournalPolicy::new(20, 90);

    let started = Instant::now();
    let mut written = 0usize;
    let mut next = 0usize;
    let mut intent = 1i64;
    while next < n {
        let tx = state.tx().expect("tx");
        for i in next..(next + 1000).min(n) {
            let mut events = vec![event(i, false)];
            if i % 10 == 0 {
                events.push(event(i, true));
            }
            for (s, note) in events {
                // One change planned per event that yields an IOC (its intent id is what counts).
                let change = s.iocs.first().map(|ioc| Change {
                    intent_id: intent,
                    op: ChangeOp::Create,
                    ioc: ioc.clone(),
                    indicator_id: s.id.clone(),
                    remote_id: None,
                    meta: IocMeta::default(),
                });
                intent += 1;
                tx.journal_event(&policy, "file", &note, &s, change.iter())
                    .expect("journal");
                written += 1;
            }
        }
        tx.commit().expect("commit");
        next = (next + 1000).min(n);
    }
    let write = started.elapsed();
    println!(
        "wrote {written} journal events for {n} indicators in {:.1} s: {:.2} µs per event",
        write.as_secs_f64(),
        write.as_secs_f64() * 1e6 / written.max(1) as f64
    );
    let size = std::fs::metadata(dir.path().join(iocsync::state::DB_FILE))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "database file: {size} B ({:.0} B per event)",
        size as f64 / written.max(1) as f64
    );
    if lookups == 0 {
        return;
    }

    let mut times: Vec<Duration> = Vec::with_capacity(lookups);
    for k in 0..lookups {
        // Spread over the journal; every fifth a skipped indicator's pattern literal.
        let i = (k * 7919 * 101) % n;
        let query = if k % 5 == 0 {
            let j = i - i % 50;
            format!("{}/28", ip(j))
        } else {
            ip(i)
        };
        let t = Instant::now();
        let found = state.indicators_with_value(&query).expect("lookup");
        times.push(t.elapsed());
        assert!(!found.is_empty(), "{query} found nothing");
    }
    times.sort();
    let pick = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    println!(
        "{lookups} value lookups: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        pick(0.50).as_secs_f64() * 1e3,
        pick(0.99).as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3
    );
}

//! Criterion benchmark of what the live console's log ring costs the logging thread: one `info!`
//! line with four fields through the daemon's text formatter (to a discarding writer), without and
//! with [`iocsync::logring::LogRingLayer`], with and without a live subscriber.
// criterion's group macros define public functions without doc comments.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use iocsync::logring::LogRing;
use std::sync::Arc;
use tracing_subscriber::layer::SubscriberExt;

fn text_subscriber() -> tracing_subscriber::fmt::SubscriberBuilder<
    tracing_subscriber::fmt::format::DefaultFields,
    tracing_subscriber::fmt::format::Format,
    tracing_subscriber::EnvFilter,
    fn() -> std::io::Sink,
> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::sink as fn() -> std::io::Sink)
        .with_target(false)
        .with_ansi(false)
}

fn log_line(i: u64) {
    tracing::info!(
        sink = "sentinelone",
        attempt = i,
        delay_ms = 250,
        error = %"HTTP 503 Service Unavailable",
        "sink call failed; retrying"
    );
}

fn logging(c: &mut Criterion) {
    let mut group = c.benchmark_group("log_line");
    group.throughput(Throughput::Elements(1));
    group.bench_function("text_only", |b| {
        tracing::subscriber::with_default(text_subscriber().finish(), || {
            let mut i = 0;
            b.iter(|| {
                i += 1;
                log_line(i)
            })
        })
    });
    group.bench_function("text_and_ring", |b| {
        let ring = Arc::new(LogRing::new(2_000));
        let subscriber = text_subscriber().finish().with(ring.layer());
        tracing::subscriber::with_default(subscriber, || {
            let mut i = 0;
            b.iter(|| {
                i += 1;
                log_line(i)
            })
        })
    });
    group.bench_function("text_and_ring_with_subscriber", |b| {
        let ring = Arc::new(LogRing::new(2_000));
        // A subscriber that never reads: it lags, and the ring must not wait for it.
        let _rx = ring.subscribe();
        let subscriber = text_subscriber().finish().with(ring.layer());
        tracing::subscriber::with_default(subscriber, || {
            let mut i = 0;
            b.iter(|| {
                i += 1;
                log_line(i)
            })
        })
    });
    group.finish();
}

criterion_group!(benches, logging);
criterion_main!(benches);

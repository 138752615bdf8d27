//! End-to-end throughput into SentinelOne: a generated capture of single-IOC indicators through the
//! whole pipeline (file source → classify → plan → SQLite intents → S1 sink) into the in-process
//! SentinelOne fake, with S1 batch size 1 and 1,000. Prints indicators/s.
//!
//! `cargo bench --bench s1_throughput` (set `IOCSYNC_BENCH_N` to change the indicator count,
//! `IOCSYNC_BENCH_BATCH=1000` to measure one batch size only, e.g. under a profiler).

#[path = "../tests/fakes/sentinelone.rs"]
mod sentinelone_fake;

use iocsync::app::{run, RunOptions};
use iocsync::config::Config;
use std::io::Write;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn capture(n: usize, path: &std::path::Path) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for i in 0..n {
        let ip = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        let event = serde_json::json!({
            "id": format!("{}-0", 1_700_000_000_000u64 + i as u64),
            "event": "create",
            "data": {"version": "4", "type": "create", "data": {
                "id": format!("indicator--00000000-0000-4000-8000-{i:012}"),
                "type": "indicator", "spec_version": "2.1",
                "pattern_type": "stix", "pattern": format!("[ipv4-addr:value = '{ip}']"),
                "name": ip, "valid_until": "2030-01-01T00:00:00Z",
                "modified": "2025-01-01T00:00:00.000Z"
            }}
        });
        writeln!(out, "{event}")?;
    }
    out.flush()
}

async fn measure(n: usize, batch: usize) -> (Duration, u64) {
    let s1 = sentinelone_fake::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("stream.ndjson");
    capture(n, &input).expect("write capture");
    let env = vec![
        ("IOCSYNC_FILE_PATH".to_string(), input.display().to_string()),
        (
            "IOCSYNC_STATE_DIR".into(),
            dir.path().join("state").display().to_string(),
        ),
        ("SENTINELONE_INTEL_URL".into(), s1.url().to_string()),
        (
            "SENTINELONE_INTEL_API_KEY".into(),
            sentinelone_fake::TOKEN.to_string(),
        ),
        ("SENTINELONE_INTEL_ACCOUNT_ID".into(), "1234567890".into()),
        ("SENTINELONE_INTEL_BATCH_SIZE".into(), batch.to_string()),
        (
            "IOCSYNC_PIPELINE_BATCH_EVENTS".into(),
            batch.max(1000).to_string(),
        ),
        ("IOCSYNC_PIPELINE_LINGER".into(), "5ms".into()),
    ];
    let cfg = Config::load(None, env).expect("config");
    let started = Instant::now();
    let stats = run(&cfg, RunOptions::default(), CancellationToken::new())
        .await
        .expect("run");
    let elapsed = started.elapsed();
    let created: u64 = stats
        .sinks
        .values()
        .map(|s| s.created.values().sum::<u64>())
        .sum();
    assert_eq!(s1.iocs().len(), n, "every indicator landed once");
    (elapsed, created)
}

fn main() {
    // `IOCSYNC_LOG=debug` shows per-batch planning / applying times.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("IOCSYNC_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let n: usize = std::env::var("IOCSYNC_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let only: Option<usize> = std::env::var("IOCSYNC_BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok());
    // Batch size 1 is three orders of magnitude slower: measure it on fewer indicators.
    for (count, batch) in [(n / 10, 1usize), (n, 1000)] {
        if only.is_some_and(|b| b != batch) {
            continue;
        }
        let (elapsed, created) = runtime.block_on(measure(count, batch));
        println!(
            "s1 batch size {batch:>5}: {created} indicators in {:.2} s = {:.0} indicators/s",
            elapsed.as_secs_f64(),
            created as f64 / elapsed.as_secs_f64()
        );
    }
}

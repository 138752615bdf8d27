//! The repository's OpenCTI and SentinelOne fakes as a process of their own, for measuring
//! iocsync end to end over real sockets (`bench/e2e-out-of-process.sh`): serves a live stream
//! `stream-1` holding N single-IPv4 indicator creates and an S1 console, prints
//! `OPENCTI_URL=…` and `SENTINELONE_INTEL_URL=…`, and runs until its standard input closes.
//! The stream is written in 64 KiB body chunks (`FAKE_CHUNK_BYTES`; 0 = one frame a chunk).
//!
//! `cargo run --release --example fake_remotes -- 20000`

#[path = "../tests/fakes/opencti.rs"]
mod opencti_fake;
#[path = "../tests/fakes/sentinelone.rs"]
mod sentinelone_fake;

use std::io::Write;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// The token the fake OpenCTI accepts.
const OPENCTI_TOKEN: &str = "bench-opencti-token";

fn indicator(i: usize) -> serde_json::Value {
    let ip = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
    serde_json::json!({
        "id": format!("indicator--00000000-0000-4000-8000-{i:012}"),
        "type": "indicator", "spec_version": "2.1", "name": ip,
        "pattern_type": "stix", "pattern": format!("[ipv4-addr:value = '{ip}']"),
        "valid_from": "2025-01-01T00:00:00.000Z", "valid_until": "2030-01-01T00:00:00Z",
        "modified": "2025-01-01T00:00:00.000Z",
        "extensions": {"extension-definition--ea279b3e-5c71-4632-ac08-831c66a786ba":
            {"extension_type": "property-extension", "id": format!("internal-{i}"), "score": 50,
             "main_observable_type": "IPv4-Addr"}},
    })
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let opencti = opencti_fake::FakeOpenCti::start(OPENCTI_TOKEN).await;
    opencti.set_heartbeat(Duration::from_millis(500));
    // A busy server's socket delivers many frames per read, cut anywhere.
    let chunk: usize = std::env::var("FAKE_CHUNK_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64 * 1024);
    opencti.chunk_bytes(Some(chunk));
    for i in 0..n {
        opencti.push("create", indicator(i));
    }
    let s1 = sentinelone_fake::start().await;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "OPENCTI_URL={}", opencti.url);
    let _ = writeln!(out, "OPENCTI_TOKEN={OPENCTI_TOKEN}");
    let _ = writeln!(out, "SENTINELONE_INTEL_URL={}", s1.url());
    let _ = writeln!(out, "SENTINELONE_INTEL_API_KEY={}", sentinelone_fake::TOKEN);
    let _ = out.flush();
    drop(out);
    // Until the caller closes our standard input.
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    eprintln!("fake S1 holds {} IOCs", s1.iocs().len());
}

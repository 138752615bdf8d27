//! Benchmark of `iocsync reconcile` against the SentinelOne fake (`bench/reconcile.sh`): seeds the
//! fake with N IOCs written by iocsync and a state database recording them, plants a little drift
//! (10 IOCs deleted by hand, 10 added with iocsync's marker, 10 foreign), then runs the iocsync
//! binary given as the second argument (`reconcile --json`, a dry run) as a process of its own
//! under `/usr/bin/time` and prints its wall time, peak RSS and report totals. The fake lives in
//! this process, so its memory is not counted in iocsync's.
//!
//! `cargo run --release --example reconcile_bench -- 1000000 target/release/iocsync`

#[path = "../tests/fakes/sentinelone.rs"]
mod sentinelone_fake;

use iocsync::ioc::{Ioc, IocKind};
use iocsync::model::IocMeta;
use iocsync::state::{EntryStatus, SinkEntry, State};
use serde_json::json;

const ACCOUNT: &str = "1234567890";
const PLANTED: usize = 10;

fn indicator(i: usize) -> String {
    format!("indicator--00000000-0000-4000-8000-{i:012}")
}

fn value(i: usize) -> (IocKind, &'static str, String) {
    if i % 2 == 0 {
        let ip = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        (IocKind::Ipv4, "IPV4", ip)
    } else {
        (IocKind::Domain, "DNS", format!("host-{i}.bench.example"))
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let bin = args
        .next()
        .unwrap_or_else(|| "target/release/iocsync".into());
    let s1 = sentinelone_fake::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut state = State::open(&dir.path().join("state")).expect("state");
    let seeded = std::time::Instant::now();
    // Within S1's cap for every type, as the sink would have sent it.
    let valid_until = (chrono::Utc::now() + chrono::Duration::days(20))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let valid_until = valid_until.as_str();
    let mut uuids = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let tx = state.tx().expect("tx");
        for &i in chunk {
            let (kind, wire, v) = value(i);
            let uuid = s1.insert(
                json!({"type": wire, "value": v, "externalId": indicator(i), "source": "OpenCTI",
                       "name": v, "description": "bench", "validUntil": valid_until,
                       "originalRiskScore": 50, "method": "EQUALS"})
                .as_object()
                .cloned()
                .expect("object"),
                ACCOUNT,
            );
            if i < PLANTED {
                uuids.push(uuid.clone());
            }
            tx.put_sink_entry(
                "sentinelone",
                &SinkEntry {
                    ioc: Ioc { kind, value: v },
                    indicator_id: indicator(i),
                    remote_id: Some(uuid),
                    status: EntryStatus::Live,
                    meta: IocMeta {
                        name: None,
                        description: Some("bench".into()),
                        valid_until: Some(valid_until.into()),
                        ..IocMeta::default()
                    },
                },
            )
            .expect("put");
        }
        tx.commit().expect("commit");
    }
    for uuid in &uuids {
        s1.remove(uuid);
    }
    for i in 0..PLANTED {
        let planted = json!({"type": "DNS", "value": format!("planted-{i}.example"),
            "externalId": indicator(n + i), "source": "OpenCTI"});
        s1.insert(planted.as_object().cloned().expect("object"), ACCOUNT);
        let foreign = json!({"type": "DNS", "value": format!("foreign-{i}.example"),
            "source": "analyst"});
        s1.insert(foreign.as_object().cloned().expect("object"), ACCOUNT);
    }
    drop(state);
    eprintln!("seeded {n} IOCs in {:.1?}", seeded.elapsed());
    let time_file = dir.path().join("time");
    let out = tokio::process::Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%e %M")
        .arg("-o")
        .arg(&time_file)
        .arg(&bin)
        .arg("reconcile")
        .arg("--json")
        .env_clear()
        .env("IOCSYNC_SINKS", "sentinelone")
        .env("IOCSYNC_FILE_PATH", "/dev/null")
        .env("SENTINELONE_INTEL_URL", format!("{}/", s1.url()))
        .env(
            "SENTINELONE_INTEL_API_KEY",
            format!("ApiToken {}", sentinelone_fake::TOKEN),
        )
        .env("SENTINELONE_INTEL_ACCOUNT_ID", ACCOUNT)
        .env("IOCSYNC_STATE_DIR", dir.path().join("state"))
        .env("IOCSYNC_LOG", "warn")
        .output()
        .await
        .expect("run iocsync");
    let time = std::fs::read_to_string(&time_file).unwrap_or_default();
    // `time` writes "Command exited with non-zero status 4" first when iocsync exits 4.
    let mut parts = time.lines().last().unwrap_or("").split_whitespace();
    let secs = parts.next().unwrap_or("?");
    let rss_kb: u64 = parts.next().and_then(|k| k.parse().ok()).unwrap_or(0);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "no report: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    println!(
        "reconcile of {n} values: exit {:?}, {secs} s wall, peak RSS {:.1} MB",
        out.status.code(),
        rss_kb as f64 / 1024.0
    );
    println!("totals: {}", report["sinks"][0]["total"]);
}

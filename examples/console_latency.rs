//! Console latency with 1,000,000 values in the state: p50/p99 of the dashboard (`/api/dashboard`)
//! and of IOC searches (`/api/iocs`, by value prefix, type and indicator) over real HTTP. The
//! dashboard is measured cold (the first request after start, while the first count runs), across
//! background recounts (requests spread over more than one recount pause) and warm.
//! `cargo run --release --example console_latency` (figures in docs/benchmarks.md).

use iocsync::config::Config;
use iocsync::console::{start, ConsoleOptions};
use iocsync::state::State;
use std::time::{Duration, Instant};

const VALUES: usize = 1_000_000;
const REQUESTS: usize = 200;

/// The request path of the i-th request of a case.
type PathFn = Box<dyn Fn(usize) -> String>;

fn pct(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p).ceil() as usize)
        .saturating_sub(1)
        .min(v.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let state_dir = dir.path().join("state");
    let t = Instant::now();
    State::open(&state_dir)?.bulk_insert_live("sentinelone", VALUES)?;
    println!("state: {VALUES} values in {:.1?}", t.elapsed());
    let env: Vec<(String, String)> = [
        ("IOCSYNC_STATE_DIR", state_dir.display().to_string()),
        ("IOCSYNC_CONSOLE_LISTEN", "127.0.0.1:0".into()),
        ("IOCSYNC_CONSOLE_USER", "admin".into()),
        ("IOCSYNC_CONSOLE_PASSWORD", "bench-password".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let cfg = Config::load(None, env)?;
    let console = start(
        &cfg,
        ConsoleOptions {
            control: None,
            config_file: None,
            env_names: Vec::new(),
        },
    )
    .await?;
    let base = format!("http://{}", console.local_addr());
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let login = http
        .post(format!("{base}/login"))
        .form(&[("user", "admin"), ("password", "bench-password")])
        .send()
        .await?;
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .ok_or("no session cookie")?
        .to_string();
    let get = |path: String| {
        let (http, cookie, base) = (http.clone(), cookie.clone(), base.clone());
        async move {
            let t = Instant::now();
            let resp = http
                .get(format!("{base}{path}"))
                .header("cookie", &cookie)
                .send()
                .await?;
            let status = resp.status();
            let body = resp.bytes().await?;
            if !status.is_success() {
                return Err(format!("{path}: HTTP {status}").into());
            }
            Ok::<_, Box<dyn std::error::Error>>((t.elapsed(), body))
        }
    };
    // Cold: right after start the first count is still running; the request must not wait for it.
    let (first, body) = get("/api/dashboard".into()).await?;
    let counted = serde_json::from_slice::<serde_json::Value>(&body)?["counted_at"].is_string();
    println!("dashboard, first request     {first:>8.2?}  (figures counted yet: {counted})");
    // Not measured: until the first count is there.
    loop {
        let (_, body) = get("/api/dashboard".into()).await?;
        if serde_json::from_slice::<serde_json::Value>(&body)?["counted_at"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Across recounts: requests every 150 ms for 60 s, longer than the pause between counts, so
    // at least one count runs in the background meanwhile (each count seen is listed).
    let mut times = Vec::new();
    let mut counts = std::collections::BTreeSet::new();
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        let (took, body) = get("/api/dashboard".into()).await?;
        times.push(took);
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        if let Some(at) = v["counted_at"].as_str() {
            counts.insert(format!(
                "{at} ({} ms, pause {} s)",
                v["count_ms"], v["recount_secs"]
            ));
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    println!(
        "dashboard across recounts    p50 {:>8.2?}  p99 {:>8.2?}  max {:>8.2?}  ({} requests over 60 s)",
        pct(times.clone(), 0.50),
        pct(times.clone(), 0.99),
        pct(times.clone(), 1.0),
        times.len()
    );
    for c in &counts {
        println!("  count served: {c}");
    }
    let cases: Vec<(&str, PathFn)> = vec![
        (
            "dashboard, warm",
            Box::new(|_| "/api/dashboard".to_string()),
        ),
        (
            "search by value prefix",
            Box::new(|i| format!("/api/iocs?value=v{:06}", (i * 4_999) % 1_000_000)),
        ),
        (
            "search by type, page 100",
            Box::new(|_| "/api/iocs?kind=sha256&page=100".to_string()),
        ),
        (
            "every value, page 100",
            Box::new(|_| "/api/iocs?page=100".to_string()),
        ),
        (
            "search by indicator",
            Box::new(|i| format!("/api/iocs?indicator=indicator--{:08}", i * 1_111)),
        ),
    ];
    for (name, path) in cases {
        let mut times = Vec::with_capacity(REQUESTS);
        for i in 0..REQUESTS {
            let t = Instant::now();
            let resp = http
                .get(format!("{base}{}", path(i)))
                .header("cookie", &cookie)
                .send()
                .await?;
            let status = resp.status();
            let _ = resp.bytes().await?;
            times.push(t.elapsed());
            if !status.is_success() {
                return Err(format!("{name}: HTTP {status}").into());
            }
        }
        // The first request finds every cache cold (the dashboard's counts scan the state).
        let first = times[0];
        println!(
            "{name:<26} p50 {:>8.2?}  p99 {:>8.2?}  first {:>8.2?}  ({REQUESTS} requests)",
            pct(times.clone(), 0.50),
            pct(times, 0.99),
            first
        );
    }
    console.stop().await;
    Ok(())
}

//! The web console in a real browser (Debian's Chromium, headless, through chromedriver and
//! fantoccini): after a fixture run of the file source, log in, compare the dashboard with
//! `iocsync runs --json`, and screenshot every page (target/console-screenshots/, docs/console/).
//! Without chromedriver the test prints why it is skipped, unless IOCSYNC_BROWSER_TESTS=1.

mod common;

use common::*;
use fantoccini::{ClientBuilder, Locator};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "browser-test-password-77";

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn wait_port(port: u16) {
    let end = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn chromedriver() -> Option<PathBuf> {
    ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn env_for(cmd: &mut Command, dir: &Path) {
    cmd.env("IOCSYNC_FILE_PATH", fixture("opencti/stream.sse"))
        .env("IOCSYNC_STATE_DIR", dir.join("state"))
        .env("IOCSYNC_JSONL_PATH", dir.join("out/iocs.jsonl"))
        .env("IOCSYNC_PIPELINE_LINGER", "20ms");
}

fn stat_xpath(label: &str) -> String {
    format!("//div[@class='stat'][span[@class='label' and text()='{label}']]/span[@class='value']")
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_matches_runs_and_every_page_renders() {
    let Some(driver) = chromedriver() else {
        if std::env::var("IOCSYNC_BROWSER_TESTS").as_deref() == Ok("1") {
            panic!("IOCSYNC_BROWSER_TESTS=1 but chromedriver is not installed (apt-get install chromium chromium-driver)");
        }
        eprintln!("skipped: chromedriver not found (apt-get install chromium chromium-driver; IOCSYNC_BROWSER_TESTS=1 makes this a failure)");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut run = iocsync(dir.path());
    run.arg("run");
    env_for(&mut run, dir.path());
    run_ok(&mut run);
    let mut runs = iocsync(dir.path());
    runs.args(["runs", "--json"]);
    env_for(&mut runs, dir.path());
    let runs: Vec<serde_json::Value> =
        serde_json::from_slice(&run_ok(&mut runs).stdout).expect("runs --json");
    let last = &runs[0];
    let pushed: u64 = last["sinks"]
        .as_object()
        .expect("sinks")
        .values()
        .flat_map(|s| ["created", "updated", "deleted"].map(|k| s[k].clone()))
        .filter_map(|m| {
            m.as_object()
                .map(|m| m.values().filter_map(|v| v.as_u64()).sum::<u64>())
        })
        .sum();
    assert!(pushed > 100, "the fixture run pushed {pushed}");

    let port = free_port();
    let mut console = iocsync(dir.path());
    console
        .arg("console")
        .env("IOCSYNC_CONSOLE_LISTEN", format!("127.0.0.1:{port}"))
        .env("IOCSYNC_CONSOLE_USER", "admin")
        .env("IOCSYNC_CONSOLE_PASSWORD", PASSWORD)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    env_for(&mut console, dir.path());
    let _console = Kill(console.spawn().expect("iocsync console"));
    wait_port(port);

    let wd_port = free_port();
    let _driver = Kill(
        Command::new(driver)
            .arg(format!("--port={wd_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver"),
    );
    wait_port(wd_port);
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,800"]
        }),
    );
    // fantoccini's rustls finds both ring and aws-lc-rs in the build: pick one (the session is plain HTTP).
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let b = ClientBuilder::rustls()
        .expect("tls")
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{wd_port}"))
        .await
        .expect("webdriver session");
    let base = format!("http://127.0.0.1:{port}");
    b.goto(&format!("{base}/login")).await.expect("login page");
    b.find(Locator::Css("input[name=user]"))
        .await
        .expect("user")
        .send_keys("admin")
        .await
        .expect("type");
    b.find(Locator::Css("input[name=password]"))
        .await
        .expect("password")
        .send_keys(PASSWORD)
        .await
        .expect("type");
    b.find(Locator::Css("button[type=submit]"))
        .await
        .expect("button")
        .click()
        .await
        .expect("submit");
    let read = |label: &'static str| {
        let b = b.clone();
        async move {
            b.find(Locator::XPath(&stat_xpath(label)))
                .await
                .unwrap_or_else(|e| panic!("{label}: {e}"))
                .text()
                .await
                .expect("text")
        }
    };
    assert_eq!(
        read("Received, last run").await,
        last["received"].to_string()
    );
    assert_eq!(read("Pushed, last run").await, pushed.to_string());

    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/console");
    std::fs::create_dir_all(&shots).expect("dir");
    std::fs::create_dir_all(&docs).expect("dir");
    b.goto(&format!("{base}/runs")).await.expect("runs");
    let run_id = b
        .find(Locator::Css("table a"))
        .await
        .expect("a run link")
        .attr("href")
        .await
        .expect("href")
        .expect("href value");
    let pages = [
        ("dashboard", "/".to_string()),
        ("status", "/status".into()),
        ("live", "/live".into()),
        ("runs", "/runs".into()),
        ("run", run_id),
        ("iocs", "/iocs?kind=ipv4".into()),
        ("settings", "/settings".into()),
    ];
    for (name, path) in &pages {
        b.goto(&format!("{base}{path}")).await.expect("page");
        let h1 = b
            .find(Locator::Css("h1"))
            .await
            .expect("h1")
            .text()
            .await
            .expect("text");
        assert!(!h1.is_empty(), "{path} has a title");
        let png = b.screenshot().await.expect("screenshot");
        std::fs::write(shots.join(format!("{name}.png")), &png).expect("write");
        std::fs::write(docs.join(format!("{name}.png")), &png).expect("write");
    }
    b.set_window_size(390, 844).await.expect("phone size");
    b.goto(&format!("{base}/")).await.expect("dashboard");
    let png = b.screenshot().await.expect("screenshot");
    std::fs::write(shots.join("dashboard-phone.png"), &png).expect("write");
    std::fs::write(docs.join("dashboard-phone.png"), &png).expect("write");
    b.close().await.expect("close");
}

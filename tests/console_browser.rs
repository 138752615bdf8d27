//! The web console in a real browser (Debian's Chromium, headless, through chromedriver and
//! fantoccini): after a fixture run of the file source, log in, compare the dashboard with
//! `iocsync runs --json`, and screenshot every page (target/console-screenshots/, docs/console/).
//! Without chromedriver the test prints why it is skipped, unless IOCSYNC_BROWSER_TESTS=1.

mod common;
#[path = "fakes/sentinelone.rs"]
mod sentinelone_fake;

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

/// A headless Chromium session through chromedriver (the driver is killed with the guard).
async fn browser(driver: &Path) -> (Kill, fantoccini::Client) {
    let wd_port = free_port();
    let guard = Kill(
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
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let b = ClientBuilder::rustls()
        .expect("tls")
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{wd_port}"))
        .await
        .expect("webdriver session");
    (guard, b)
}

async fn text_of(b: &fantoccini::Client, css: &str) -> String {
    b.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .expect("text")
}

/// The text of `css` once it satisfies `ok` (a click's navigation may still be under way).
async fn text_when(b: &fantoccini::Client, css: &str, ok: impl Fn(&str) -> bool) -> String {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(e) = b.find(Locator::Css(css)).await {
            if let Ok(t) = e.text().await {
                if ok(&t) {
                    return t;
                }
            }
        }
        assert!(Instant::now() < end, "{css} never became as expected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn click(b: &fantoccini::Client, css: &str) {
    b.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .expect("click");
}

fn screenshot(name: &str, png: &[u8]) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for dir in [
        root.join("target/console-screenshots"),
        root.join("docs/console"),
    ] {
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn s1_view_pages_in_a_browser_and_a_status_row_is_rechecked() {
    let Some(driver) = chromedriver() else {
        if std::env::var("IOCSYNC_BROWSER_TESTS").as_deref() == Ok("1") {
            panic!("IOCSYNC_BROWSER_TESTS=1 but chromedriver is not installed (apt-get install chromium chromium-driver)");
        }
        eprintln!("skipped: chromedriver not found (apt-get install chromium chromium-driver; IOCSYNC_BROWSER_TESTS=1 makes this a failure)");
        return;
    };
    let fake = sentinelone_fake::start().await;
    for (kind, value) in [
        ("IPV4", "198.51.100.7"),
        ("DNS", "analyst-added.example"),
        ("URL", "http://manual.example/block"),
    ] {
        let mut ioc = serde_json::Map::new();
        ioc.insert("type".into(), kind.into());
        ioc.insert("value".into(), value.into());
        ioc.insert("source".into(), "SOC analyst".into());
        fake.insert(ioc, "1234");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let s1_env = |cmd: &mut Command| {
        env_for(cmd, dir.path());
        cmd.env("IOCSYNC_SINKS", "jsonl,sentinelone")
            .env("SENTINELONE_INTEL_URL", fake.url())
            .env("SENTINELONE_INTEL_API_KEY", sentinelone_fake::TOKEN)
            .env("SENTINELONE_INTEL_ACCOUNT_ID", "1234");
    };
    let mut run = iocsync(dir.path());
    run.arg("run");
    s1_env(&mut run);
    // The fake answers on this runtime: the blocking run goes to a thread of its own.
    tokio::task::spawn_blocking(move || run_ok(&mut run))
        .await
        .expect("run");
    assert!(fake.iocs().len() > 50, "the fixture run filled the fake");

    let port = free_port();
    let mut console = iocsync(dir.path());
    console
        .arg("console")
        .env("IOCSYNC_CONSOLE_LISTEN", format!("127.0.0.1:{port}"))
        .env("IOCSYNC_CONSOLE_USER", "admin")
        .env("IOCSYNC_CONSOLE_PASSWORD", PASSWORD)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    s1_env(&mut console);
    let _console = Kill(console.spawn().expect("iocsync console"));
    wait_port(port);
    let (_driver, b) = browser(&driver).await;
    let base = format!("http://127.0.0.1:{port}");
    b.goto(&format!("{base}/login")).await.expect("login page");
    for (field, value) in [("user", "admin"), ("password", PASSWORD)] {
        b.find(Locator::Css(&format!("input[name={field}]")))
            .await
            .expect("field")
            .send_keys(value)
            .await
            .expect("type");
    }
    click(&b, "button[type=submit]").await;
    b.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("section.stats"))
        .await
        .expect("logged in: the dashboard");

    b.goto(&format!("{base}/iocs")).await.expect("iocs");
    click(&b, "nav.tabs a[href='/iocs/s1']").await;
    text_when(&b, "h1", |t| t.contains("SentinelOne")).await;
    let foreign = b.find_all(Locator::Css("tr.foreign")).await.expect("rows");
    let managed = b.find_all(Locator::Css("tr.managed")).await.expect("rows");
    assert_eq!(foreign.len(), 3, "the analyst's entries are not iocsync's");
    assert!(!managed.is_empty(), "the run's entries are iocsync's");
    let held = text_of(&b, "tr.managed td:last-child").await;
    assert!(
        held.starts_with("indicator--"),
        "held by an indicator: {held}"
    );
    let png = b.screenshot().await.expect("screenshot");
    screenshot("iocs-s1", &png);
    // Paging by links alone.
    b.goto(&format!("{base}/iocs/s1?limit=10"))
        .await
        .expect("page");
    click(&b, "a[rel=next]").await;
    text_when(&b, "nav.pager span", |t| t.contains("Page 2")).await;
    assert_eq!(
        b.find_all(Locator::Css("tr.managed"))
            .await
            .expect("rows")
            .len(),
        10
    );
    click(&b, "a[rel=prev]").await;
    text_when(&b, "nav.pager span", |t| t.contains("Page 1")).await;
    assert_eq!(
        b.find_all(Locator::Css("tr.foreign"))
            .await
            .expect("rows")
            .len(),
        3
    );

    b.goto(&format!("{base}/status")).await.expect("status");
    b.wait()
        .at_most(Duration::from_secs(60))
        .for_element(Locator::Css("table.status td.when"))
        .await
        .unwrap_or_else(|e| panic!("status rows: {e}"));
    let before = text_of(&b, "table.status tbody tr:first-child td.when").await;
    assert!(!before.is_empty(), "every row says when it was checked");
    std::thread::sleep(Duration::from_millis(1_100));
    let component = text_of(&b, "table.status tbody tr:first-child td:nth-child(2)").await;
    click(&b, "table.status tbody tr:first-child button").await;
    let after = text_when(&b, "table.status tbody tr:first-child td.when", |t| {
        t > before.as_str()
    })
    .await;
    let url = b.current_url().await.expect("url");
    assert_eq!(url.path(), "/status", "back on the Status page");
    assert_eq!(
        text_of(&b, "table.status tbody tr:first-child td:nth-child(2)").await,
        component
    );
    assert!(after > before, "{component} re-checked: {before} → {after}");
    let png = b.screenshot().await.expect("screenshot");
    screenshot("status", &png);

    b.set_window_size(390, 844).await.expect("phone size");
    b.goto(&format!("{base}/iocs/s1?limit=10"))
        .await
        .expect("page");
    let png = b.screenshot().await.expect("screenshot");
    screenshot("iocs-s1-phone", &png);
    b.goto(&format!("{base}/status")).await.expect("status");
    let png = b.screenshot().await.expect("screenshot");
    screenshot("status-phone", &png);
    b.close().await.expect("close");
}

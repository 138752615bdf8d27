//! The web console in a real browser (Debian's Chromium, headless, through chromedriver and
//! fantoccini): after a fixture run of the file source, log in, compare the dashboard with
//! `iocsync runs --json`, and screenshot every page (target/console-screenshots/, docs/console/);
//! toggle a MISP feed in the console of `iocsync run` and see it in `iocsync misp feeds`; press
//! Stop and Resume during a file run and find every IOC in the JSONL sink once.
//! Without chromedriver the tests print why they are skipped, unless IOCSYNC_BROWSER_TESTS=1.

mod common;
#[path = "fakes/misp.rs"]
mod misp_fake;
#[path = "fakes/sentinelone.rs"]
mod sentinelone_fake;

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
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

/// One browser test at a time: two Chromiums on a small CI machine only slow each other down.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// chromedriver, or `None` after saying why the test is skipped (a failure with
/// IOCSYNC_BROWSER_TESTS=1).
fn driver_or_skip() -> Option<PathBuf> {
    let driver = chromedriver();
    if driver.is_none() {
        if std::env::var("IOCSYNC_BROWSER_TESTS").as_deref() == Ok("1") {
            panic!("IOCSYNC_BROWSER_TESTS=1 but chromedriver is not installed (apt-get install chromium chromium-driver)");
        }
        eprintln!("skipped: chromedriver not found (apt-get install chromium chromium-driver; IOCSYNC_BROWSER_TESTS=1 makes this a failure)");
    }
    driver
}

/// A headless Chromium session at 1280×800 (and the chromedriver serving it).
async fn browser(driver: &Path) -> (Client, Kill) {
    let wd_port = free_port();
    let kill = Kill(
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
    (b, kill)
}

async fn log_in(b: &Client, base: &str) {
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
    b.wait()
        .for_element(Locator::Css("form.logout"))
        .await
        .expect("logged in");
}

fn console_env(cmd: &mut Command, port: u16) {
    cmd.env("IOCSYNC_CONSOLE_LISTEN", format!("127.0.0.1:{port}"))
        .env("IOCSYNC_CONSOLE_USER", "admin")
        .env("IOCSYNC_CONSOLE_PASSWORD", PASSWORD)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
}

fn screenshots() -> (PathBuf, PathBuf) {
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/console");
    std::fs::create_dir_all(&shots).expect("dir");
    std::fs::create_dir_all(&docs).expect("dir");
    (shots, docs)
}

fn stat_xpath(label: &str) -> String {
    format!("//div[@class='stat'][span[@class='label' and text()='{label}']]/span[@class='value']")
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_matches_runs_and_every_page_renders() {
    let Some(driver) = driver_or_skip() else {
        return;
    };
    let _one_at_a_time = BROWSER.lock().await;
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
    console.arg("console");
    console_env(&mut console, port);
    env_for(&mut console, dir.path());
    let _console = Kill(console.spawn().expect("iocsync console"));
    wait_port(port);

    let (b, _driver) = browser(&driver).await;
    let base = format!("http://127.0.0.1:{port}");
    log_in(&b, &base).await;
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

    let (shots, docs) = screenshots();
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

fn misp_env(cmd: &mut Command, misp_url: &str, dir: &Path) {
    cmd.env("MISP_URL", format!("{misp_url}/"))
        .env("MISP_KEY", misp_fake::KEY)
        .env("MISP_INTERVAL", "1h")
        .env("IOCSYNC_STATE_DIR", dir.join("state"))
        .env("IOCSYNC_JSONL_PATH", dir.join("out/iocs.jsonl"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_feed_toggled_in_the_console_shows_in_misp_feeds() {
    let Some(driver) = driver_or_skip() else {
        return;
    };
    let _one_at_a_time = BROWSER.lock().await;
    let fake = misp_fake::FakeMisp::start().await;
    let one = fake.add_event("CIRCL import", 1, &[]);
    let two = fake.add_event("Botvrij import", 1, &[]);
    fake.add_feed(1, "CIRCL OSINT Feed", one, 0, 0);
    fake.add_feed(2, "The Botvrij.eu Data", two, 0, 0);
    fake.add_feed(3, "abuse.ch URLhaus", 0, 0, 0);
    fake.add_at(one, "ip-dst", "10.0.0.1", true, misp_fake::now() - 60);
    fake.add_at(two, "ip-dst", "10.0.0.2", true, misp_fake::now() - 60);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut daemon = iocsync(dir.path());
    daemon.arg("run").env("IOCSYNC_CONSOLE_ENABLED", "true");
    misp_env(&mut daemon, fake.url(), dir.path());
    console_env(&mut daemon, port);
    let _daemon = Kill(daemon.spawn().expect("iocsync run"));
    wait_port(port);

    let (b, _driver) = browser(&driver).await;
    let base = format!("http://127.0.0.1:{port}");
    log_in(&b, &base).await;
    b.goto(&format!("{base}/settings")).await.expect("settings");
    b.find(Locator::Css("tr[data-feed='2'] button[value='no']"))
        .await
        .expect("feed 2's Disable button")
        .click()
        .await
        .expect("click");
    // Only a console toggle has a "Use config" button: the page after the POST.
    b.wait()
        .for_element(Locator::Css("tr[data-feed='2'] button[value='config']"))
        .await
        .expect("feed 2 toggled in the console");
    let state = b
        .find(Locator::Css("tr[data-feed='2'] td.pushed"))
        .await
        .expect("cell")
        .text()
        .await
        .expect("text");
    assert_eq!(state, "disabled");

    let mut feeds = iocsync(dir.path());
    feeds.args(["misp", "feeds", "--json"]);
    misp_env(&mut feeds, fake.url(), dir.path());
    let out = output_within(feeds.into(), Duration::from_secs(60)).await;
    assert_success(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let row = |id: &str| {
        report["feeds"]
            .as_array()
            .expect("feeds")
            .iter()
            .find(|f| f["id"] == id)
            .cloned()
            .expect("feed row")
    };
    assert_eq!(row("2")["pushed_by_iocsync"], false);
    assert_eq!(row("2")["decided_by"], "console");
    assert!(row("2")["toggled_by"]
        .as_str()
        .is_some_and(|t| t.starts_with("admin at ")));
    assert_eq!(row("1")["pushed_by_iocsync"], true);
    assert_eq!(row("1")["decided_by"], "default");

    let (shots, docs) = screenshots();
    b.goto(&format!("{base}/settings")).await.expect("settings");
    let png = b.screenshot().await.expect("screenshot");
    std::fs::write(shots.join("settings.png"), &png).expect("write");
    std::fs::write(docs.join("settings.png"), &png).expect("write");
    b.set_window_size(390, 844).await.expect("phone size");
    b.goto(&format!("{base}/settings")).await.expect("settings");
    let png = b.screenshot().await.expect("screenshot");
    std::fs::write(shots.join("settings-phone.png"), &png).expect("write");
    b.close().await.expect("close");
}

/// An argon2id PHC string of [`PASSWORD`] with the smallest parameters: verified in microseconds.
fn cheap_hash() -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(8, 1, 1, None).expect("params");
    let salt = SaltString::from_b64("c29tZXNhbHRzb21lc2FsdA").expect("salt");
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(PASSWORD.as_bytes(), &salt)
        .expect("hash")
        .to_string()
}

fn jsonl_lines(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("out/iocs.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_and_resume_during_a_file_run_lose_and_repeat_nothing() {
    let Some(driver) = driver_or_skip() else {
        return;
    };
    let _one_at_a_time = BROWSER.lock().await;
    // The browser is up before the run starts, and the login is checked against a cheap hash:
    // the run (seconds) is then still early when Stop is pressed, however fast the machine.
    let (b, _driver) = browser(&driver).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut run = iocsync(dir.path());
    run.arg("run").env("IOCSYNC_CONSOLE_ENABLED", "true");
    env_for(&mut run, dir.path());
    // One event per batch, each committed on its own: the run lasts long enough to be stopped.
    run.env("IOCSYNC_PIPELINE_BATCH_EVENTS", "1")
        .env("IOCSYNC_PIPELINE_LINGER", "0s");
    console_env(&mut run, port);
    run.env_remove("IOCSYNC_CONSOLE_PASSWORD")
        .env("IOCSYNC_CONSOLE_PASSWORD_HASH", cheap_hash());
    let mut daemon = Kill(run.spawn().expect("iocsync run"));
    wait_port(port);

    let base = format!("http://127.0.0.1:{port}");
    log_in(&b, &base).await;
    b.goto(&format!("{base}/live")).await.expect("live");
    let end = Instant::now() + Duration::from_secs(60);
    while jsonl_lines(dir.path()) == 0 {
        assert!(Instant::now() < end, "no record written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.find(Locator::Css("form[action='/control/stop'] button"))
        .await
        .expect("Stop")
        .click()
        .await
        .expect("click");
    b.wait()
        .for_element(Locator::XPath("//p[contains(., 'Worker file: paused')]"))
        .await
        .expect("the page shows the worker paused");
    // The batch in flight settles; then nothing more is written while paused.
    let mut at_pause = jsonl_lines(dir.path());
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = jsonl_lines(dir.path());
        if now == at_pause {
            break;
        }
        at_pause = now;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(jsonl_lines(dir.path()), at_pause, "written while paused");
    assert!(
        daemon.0.try_wait().expect("status").is_none(),
        "the run ended before Stop: it was not stopped midway"
    );
    b.find(Locator::Css("form[action='/control/resume'] button"))
        .await
        .expect("Resume")
        .click()
        .await
        .expect("click");
    let end = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = daemon.0.try_wait().expect("status") {
            break status;
        }
        assert!(Instant::now() < end, "the resumed run did not end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "iocsync run: {status:?}");
    assert!(jsonl_lines(dir.path()) > at_pause, "resumed: more records");
    // `jsonl_live_set` also fails on a value created twice without a delete in between.
    assert_eq!(
        jsonl_live_set(&read_jsonl(&dir.path().join("out/iocs.jsonl"))),
        read_expected(&fixture("opencti/expected-live.tsv"))
    );
    let _ = b.close().await;
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
    let Some(driver) = driver_or_skip() else {
        return;
    };
    let _one_at_a_time = BROWSER.lock().await;
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
    console.arg("console");
    console_env(&mut console, port);
    s1_env(&mut console);
    let _console = Kill(console.spawn().expect("iocsync console"));
    wait_port(port);
    let (b, _driver) = browser(&driver).await;
    let base = format!("http://127.0.0.1:{port}");
    log_in(&b, &base).await;

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

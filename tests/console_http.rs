//! The web console over real HTTP (a listener on 127.0.0.1:0): login required everywhere, wrong
//! passwords, CSRF, the login rate limit, logout, and no secret in any response body.

#[path = "fakes/sentinelone.rs"]
mod sentinelone_fake;

use iocsync::config::Config;
use iocsync::console::{start, ConsoleHandle, ConsoleOptions};
use iocsync::control::Control;
use iocsync::state::State;
use reqwest::redirect::Policy;
use reqwest::StatusCode;

const PASSWORD: &str = "correct-horse-battery-staple-42";
const MISP_KEY: &str = "misp-secret-key-9f8e7d6c5b4a";
const S1_TOKEN: &str = "s1-secret-token-0a1b2c3d4e5f";

const PAGES: &[&str] = &[
    "/",
    "/status",
    "/live",
    "/runs",
    "/runs/1",
    "/iocs",
    "/iocs/s1",
    "/settings",
];
const APIS: &[&str] = &[
    "/api/dashboard",
    "/api/status",
    "/api/live",
    "/api/runs",
    "/api/runs/1",
    "/api/iocs",
    "/api/iocs/s1",
    "/api/settings",
    "/live/stream",
];
const POSTS: &[&str] = &[
    "/control/recheck",
    "/control/start",
    "/control/stop",
    "/control/resume",
    "/logout",
];

struct Console {
    handle: ConsoleHandle,
    control: Control,
    _dir: tempfile::TempDir,
}

impl Console {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.handle.local_addr())
    }
}

async fn console() -> Console {
    console_with(&[]).await
}

/// A console whose environment has `extra` on top of the defaults (a later pair wins).
async fn console_with(extra: &[(&str, &str)]) -> Console {
    let dir = tempfile::tempdir().expect("tempdir");
    let state_dir = dir.path().join("state");
    {
        let st = State::open(&state_dir).expect("state");
        st.bulk_insert_live("jsonl", 30).expect("insert");
        let stats = iocsync::pipeline::RunStats {
            source: "misp".into(),
            received: 7,
            ..Default::default()
        };
        st.record_run(
            "misp",
            1_000,
            2_000,
            &serde_json::to_value(stats).expect("json"),
        )
        .expect("run");
    }
    let env = vec![
        ("MISP_URL", "http://127.0.0.1:9/"),
        ("MISP_KEY", MISP_KEY),
        ("SENTINELONE_INTEL_URL", "http://127.0.0.1:9/"),
        ("SENTINELONE_INTEL_API_KEY", S1_TOKEN),
        ("SENTINELONE_INTEL_ACCOUNT_ID", "1234"),
        ("IOCSYNC_SINKS", "jsonl"),
        ("IOCSYNC_JSONL_PATH", "/dev/null"),
        ("IOCSYNC_CONSOLE_ENABLED", "true"),
        ("IOCSYNC_CONSOLE_LISTEN", "127.0.0.1:0"),
        ("IOCSYNC_CONSOLE_USER", "admin"),
        ("IOCSYNC_CONSOLE_PASSWORD", PASSWORD),
    ];
    let mut env: Vec<(String, String)> = env
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.push(("IOCSYNC_STATE_DIR".into(), state_dir.display().to_string()));
    for (k, v) in extra {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v.to_string()));
    }
    let cfg = Config::load(None, env.clone()).expect("config");
    let control = Control::new("misp", true);
    let handle = start(
        &cfg,
        ConsoleOptions {
            control: Some(control.clone()),
            config_file: None,
            env_names: env.into_iter().map(|(k, _)| k).collect(),
        },
    )
    .await
    .expect("console starts");
    Console {
        handle,
        control,
        _dir: dir,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client")
}

/// Logs in; returns the session cookie (`name=value`).
async fn login(
    c: &Console,
    http: &reqwest::Client,
    password: &str,
) -> (StatusCode, Option<String>) {
    let resp = http
        .post(c.url("/login"))
        .form(&[("user", "admin"), ("password", password)])
        .send()
        .await
        .expect("login");
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().to_string());
    (resp.status(), cookie)
}

async fn get(
    c: &Console,
    http: &reqwest::Client,
    path: &str,
    cookie: &str,
) -> (StatusCode, String) {
    let resp = http
        .get(c.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .expect("get");
    let status = resp.status();
    if path == "/live/stream" {
        return (status, String::new());
    }
    (status, resp.text().await.expect("body"))
}

fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("csrf field") + 19;
    page[at..]
        .split('"')
        .next()
        .expect("csrf value")
        .to_string()
}

#[tokio::test]
async fn every_route_needs_a_login() {
    let c = console().await;
    let http = client();
    for path in PAGES {
        let resp = http.get(c.url(path)).send().await.expect("get");
        assert_eq!(resp.status(), StatusCode::FOUND, "{path}");
        assert_eq!(resp.headers()["location"], "/login", "{path}");
    }
    for path in APIS {
        let resp = http.get(c.url(path)).send().await.expect("get");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    for path in POSTS {
        let resp = http.post(c.url(path)).send().await.expect("post");
        assert_eq!(resp.status(), StatusCode::FOUND, "{path}");
    }
    assert!(!c.control.is_paused());
    let login = http.get(c.url("/login")).send().await.expect("login page");
    assert_eq!(login.status(), StatusCode::OK);
    let h = login.headers();
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert!(h["content-security-policy"]
        .to_str()
        .expect("csp")
        .contains("script-src 'self'"));
}

#[tokio::test]
async fn wrong_password_gets_no_cookie_and_the_rate_limit_stops_guessing() {
    let c = console().await;
    let http = client();
    let (status, cookie) = login(&c, &http, "wrong").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(cookie.is_none(), "no session cookie for a wrong password");
    for _ in 0..4 {
        assert_eq!(login(&c, &http, "wrong").await.0, StatusCode::UNAUTHORIZED);
    }
    // Sixth attempt within the minute: refused before the password is even checked.
    let (status, cookie) = login(&c, &http, PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(cookie.is_none());
}

#[tokio::test]
async fn csrf_is_required_and_logout_invalidates() {
    let c = console().await;
    let http = client();
    let (status, cookie) = login(&c, &http, PASSWORD).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cookie = cookie.expect("session cookie");
    let (status, page) = get(&c, &http, "/live", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    let csrf = csrf_of(&page);
    assert_eq!(csrf.len(), 64);

    for form in [vec![], vec![("csrf", "0".repeat(64))]] {
        let resp = http
            .post(c.url("/control/stop"))
            .header("cookie", &cookie)
            .form(&form)
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert!(!c.control.is_paused(), "a refused POST changed nothing");
    }
    let resp = http
        .post(c.url("/control/stop"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(c.control.is_paused(), "Stop with the token pauses");
    let resp = http
        .post(c.url("/control/resume"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(!c.control.is_paused());

    let resp = http
        .post(c.url("/logout"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("logout");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let (status, _) = get(&c, &http, "/", &cookie).await;
    assert_eq!(
        status,
        StatusCode::FOUND,
        "the old cookie is dead after logout"
    );
    let (status, _) = get(&c, &http, "/api/dashboard", &cookie).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn pages_render_and_no_secret_is_ever_in_a_body() {
    let c = console().await;
    let http = client();
    let (_, cookie) = login(&c, &http, PASSWORD).await;
    let cookie = cookie.expect("cookie");
    let mut seen = 0;
    for path in PAGES.iter().chain(APIS) {
        let (status, body) = get(&c, &http, path, &cookie).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        for secret in [PASSWORD, MISP_KEY, S1_TOKEN] {
            assert!(!body.contains(secret), "{path} shows a secret");
        }
        seen += 1;
    }
    assert_eq!(seen, PAGES.len() + APIS.len());
    let (_, settings) = get(&c, &http, "/settings", &cookie).await;
    assert!(
        settings.contains("••••5b4a"),
        "the MISP key shows masked with its last characters"
    );
    assert!(settings.contains("misp.key"));
    let (_, dash) = get(&c, &http, "/api/dashboard", &cookie).await;
    let d: serde_json::Value = serde_json::from_str(&dash).expect("json");
    assert_eq!(d["live_total"], 30);
    assert_eq!(d["last_run"]["received"], 7);
    let (_, iocs) = get(&c, &http, "/api/iocs?kind=md5", &cookie).await;
    let v: serde_json::Value = serde_json::from_str(&iocs).expect("json");
    assert_eq!(v["rows"].as_array().map(Vec::len), Some(6));
    c.handle.stop().await;
}

/// The `href` of the link marked `rel="{rel}"`, unescaped.
fn link_rel(page: &str, rel: &str) -> Option<String> {
    let at = page.find(&format!("rel=\"{rel}\""))?;
    let start = page[..at].rfind("href=\"")? + 6;
    let href = page[start..].split('"').next()?;
    Some(href.replace("&amp;", "&"))
}

/// A console whose SentinelOne sink is `fake`, with the state's sentinelone entries for the
/// first three bulk values.
async fn console_s1(fake: &sentinelone_fake::FakeS1) -> Console {
    let c = console_with(&[
        ("IOCSYNC_SINKS", "jsonl,sentinelone"),
        ("SENTINELONE_INTEL_URL", fake.url()),
        ("SENTINELONE_INTEL_API_KEY", sentinelone_fake::TOKEN),
    ])
    .await;
    State::open(&c._dir.path().join("state"))
        .expect("state")
        .bulk_insert_live("sentinelone", 3)
        .expect("insert");
    c
}

fn s1_ioc(
    kind: &str,
    value: &str,
    external_id: Option<&str>,
) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("type".into(), kind.into());
    m.insert("value".into(), value.into());
    m.insert("source".into(), "test".into());
    if let Some(e) = external_id {
        m.insert("externalId".into(), e.into());
    }
    m
}

#[tokio::test]
async fn s1_view_pages_through_short_pages_and_marks_what_iocsync_manages() {
    let fake = sentinelone_fake::start().await;
    // Short pages: S1 may answer fewer entries than asked, and the view must page on regardless.
    fake.set_page_cap(2);
    let ours = fake.insert(
        s1_ioc(
            "IPV4",
            "v00000000.ipv4",
            Some("indicator--0b1c2d3e-0000-4000-8000-000000000001"),
        ),
        "1234",
    );
    fake.insert(
        s1_ioc(
            "DNS",
            "v00000001.domain",
            Some("indicator--0b1c2d3e-0000-4000-8000-000000000002"),
        ),
        "1234",
    );
    fake.insert(
        s1_ioc(
            "SHA256",
            &"a".repeat(64),
            Some("indicator--0b1c2d3e-0000-4000-8000-000000000003"),
        ),
        "1234",
    );
    fake.insert(s1_ioc("IPV4", "10.9.9.9", Some("ticket-1234")), "1234");
    for i in 0..3 {
        fake.insert(
            s1_ioc("URL", &format!("http://foreign{i}.example/x"), None),
            "1234",
        );
    }
    let c = console_s1(&fake).await;
    // The state records the first value under the uuid S1 gave it, the second under another.
    let db =
        rusqlite::Connection::open(c._dir.path().join("state").join("iocsync.db")).expect("db");
    db.execute(
        "UPDATE sink_ioc SET remote_id = ?1 WHERE sink = 'sentinelone' AND value = 'v00000000.ipv4'",
        [&ours],
    )
    .expect("update");
    drop(db);
    let http = client();
    let (_, cookie) = login(&c, &http, PASSWORD).await;
    let cookie = cookie.expect("cookie");

    let mut path = "/iocs/s1".to_string();
    let mut pages = Vec::new();
    let mut values = Vec::new();
    loop {
        let (status, page) = get(&c, &http, &path, &cookie).await;
        assert_eq!(status, StatusCode::OK, "{path}: {page}");
        let rows = page.matches("<tr class=\"managed\"").count()
            + page.matches("<tr class=\"foreign\"").count();
        assert!(
            (1..=2).contains(&rows),
            "{path}: {rows} rows on a short page"
        );
        for v in [
            "v00000000.ipv4",
            "v00000001.domain",
            "10.9.9.9",
            "foreign0.example",
            "foreign1.example",
            "foreign2.example",
            "aaaaaaaa",
        ] {
            if page.contains(v) {
                values.push(v);
            }
        }
        pages.push((path.clone(), page.clone()));
        match link_rel(&page, "next") {
            Some(next) => path = next,
            None => break,
        }
        assert!(pages.len() < 10, "the pager does not end");
    }
    assert_eq!(pages.len(), 4, "7 entries in pages of 2");
    values.sort();
    values.dedup();
    assert_eq!(values.len(), 7, "every entry shown once: {values:?}");
    // Previous from the third page is the second page again, without JavaScript.
    let prev = link_rel(&pages[2].1, "prev").expect("a previous link");
    let (_, again) = get(&c, &http, &prev, &cookie).await;
    assert!(again.contains("Page 2"));
    assert_eq!(
        again.matches("<tr class=").count(),
        pages[1].1.matches("<tr class=").count()
    );
    assert!(
        link_rel(&pages[0].1, "prev").is_none(),
        "no previous on the first page"
    );

    fake.set_page_cap(1000);
    let (status, json) = get(&c, &http, "/api/iocs/s1?limit=50", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v["outcome"], "page");
    let rows = v["rows"].as_array().expect("rows");
    let row = |value: &str| {
        rows.iter()
            .find(|r| r["value"].as_str().is_some_and(|x| x.starts_with(value)))
            .unwrap_or_else(|| panic!("{value} listed"))
            .clone()
    };
    let managed = row("v00000000.ipv4");
    assert_eq!(managed["managed"], true);
    assert_eq!(managed["state"]["holders"][0], "indicator--00000000");
    assert!(managed["verdict"]
        .as_str()
        .expect("verdict")
        .starts_with("managed by iocsync"));
    let second_copy = row("v00000001.domain");
    assert_eq!(second_copy["managed"], true);
    assert!(second_copy["verdict"]
        .as_str()
        .expect("verdict")
        .contains("another uuid"));
    let unknown = row("aaaa");
    assert_eq!(unknown["managed"], true);
    assert!(unknown["state"].is_null());
    assert!(unknown["verdict"]
        .as_str()
        .expect("verdict")
        .contains("not in this state"));
    for foreign in ["10.9.9.9", "http://foreign0"] {
        assert_eq!(row(foreign)["managed"], false, "{foreign}");
    }
    // The type filter reaches S1; a bad one is a 400 with the reason.
    let (_, json) = get(&c, &http, "/api/iocs/s1?kind=ipv4", &cookie).await;
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(
        v["rows"].as_array().map(Vec::len),
        Some(2),
        "two IPV4 entries: {v}"
    );
    assert!(fake
        .requests("GET")
        .iter()
        .any(|r| r.param("type").as_deref() == Some("IPV4")));
    let (status, page) = get(&c, &http, "/iocs/s1?kind=bogus", &cookie).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("unknown type"));
    // Bounded: a huge limit asks S1 for at most 200.
    let _ = get(&c, &http, "/api/iocs/s1?limit=100000", &cookie).await;
    assert!(fake.requests("GET").iter().all(|r| r
        .param("limit")
        .and_then(|l| l.parse::<u32>().ok())
        .is_some_and(|l| l <= 200)));
    c.handle.stop().await;
}

#[tokio::test]
async fn s1_view_says_why_when_s1_refuses_the_token_or_no_s1_sink_is_set() {
    let fake = sentinelone_fake::start().await;
    fake.set_token("another-token-entirely");
    let c = console_s1(&fake).await;
    let http = client();
    let (_, cookie) = login(&c, &http, PASSWORD).await;
    let cookie = cookie.expect("cookie");
    let (status, page) = get(&c, &http, "/iocs/s1", &cookie).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{page}");
    assert!(page.contains("SentinelOne could not be read"), "{page}");
    assert!(page.contains("HTTP 401"), "{page}");
    assert!(
        page.contains("SENTINELONE_INTEL_API_KEY"),
        "names the setting: {page}"
    );
    assert!(!page.contains(sentinelone_fake::TOKEN));
    let (status, json) = get(&c, &http, "/api/iocs/s1", &cookie).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v["outcome"], "failed");
    c.handle.stop().await;

    // Unreachable: a clear message too, never a 500.
    let c = console_with(&[("IOCSYNC_SINKS", "sentinelone")]).await;
    let (_, cookie) = login(&c, &http, PASSWORD).await;
    let (status, page) = get(&c, &http, "/iocs/s1", &cookie.expect("cookie")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{page}");
    assert!(page.contains("SentinelOne could not be read"), "{page}");
    assert!(page.contains("SENTINELONE_INTEL_URL"), "{page}");
    c.handle.stop().await;

    let c = console().await;
    let (_, cookie) = login(&c, &http, PASSWORD).await;
    let (status, page) = get(&c, &http, "/iocs/s1", &cookie.expect("cookie")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("No SentinelOne sink is configured"), "{page}");
    c.handle.stop().await;
}

#[tokio::test]
async fn recheck_reruns_one_row_and_needs_csrf_and_a_known_component() {
    let c = console().await;
    let http = client();
    let (_, cookie) = login(&c, &http, PASSWORD).await;
    let cookie = cookie.expect("cookie");
    let (_, page) = get(&c, &http, "/status", &cookie).await;
    assert!(page.contains("Checked at"));
    let csrf = csrf_of(&page);
    let (_, json) = get(&c, &http, "/api/status", &cookie).await;
    let before: serde_json::Value = serde_json::from_str(&json).expect("json");
    let full_at = before["checked_at"]
        .as_str()
        .expect("checked_at")
        .to_string();
    let state_row = "state dir (IOCSYNC_STATE_DIR)";
    let post = |form: Vec<(&'static str, String)>| {
        http.post(c.url("/control/recheck"))
            .header("cookie", &cookie)
            .form(&form)
            .send()
    };
    let resp = post(vec![("component", state_row.to_string())])
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN, "no CSRF token");
    let resp = post(vec![
        ("csrf", csrf.clone()),
        ("component", "sink nowhere".into()),
    ])
    .await
    .expect("post");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "unknown component");
    assert!(
        resp.text().await.expect("body").contains("source misp"),
        "names the components"
    );
    // Times are to the second: the re-check's must differ from the full check's.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let resp = post(vec![
        ("csrf", csrf.clone()),
        ("component", state_row.to_string()),
    ])
    .await
    .expect("post");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], "/status");
    let (_, json) = get(&c, &http, "/api/status", &cookie).await;
    let after: serde_json::Value = serde_json::from_str(&json).expect("json");
    let rows = after["rows"].as_array().expect("rows");
    let at = |component: &str| {
        rows.iter()
            .find(|r| r["component"] == component)
            .unwrap_or_else(|| panic!("{component} row"))["checked_at"]
            .as_str()
            .expect("checked_at")
            .to_string()
    };
    assert!(at(state_row) > full_at, "the row was checked again");
    assert_eq!(at("source misp"), full_at, "the other rows were not");
    assert_eq!(after["checked_at"], full_at);
    let row = rows
        .iter()
        .find(|r| r["component"] == state_row)
        .expect("row");
    assert_eq!(row["ok"], true, "{row}");
    assert!(row["detail"].as_str().expect("detail").contains("writable"));
    // The worker's row is live: accepted, nothing to probe.
    let resp = post(vec![("csrf", csrf), ("component", "worker misp".into())])
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    c.handle.stop().await;
}

//! The web console over real HTTP (a listener on 127.0.0.1:0): login required everywhere, wrong
//! passwords, CSRF, the login rate limit, logout, and no secret in any response body; the settings
//! edits (MISP schedule, feed toggles, `last_run_time`): login and CSRF, bad input refused with
//! nothing stored, a read-only console refusing them, and the MISP source (against the fake MISP)
//! honouring them at its next run.

mod common;
#[path = "fakes/misp.rs"]
mod misp_fake;

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
    "/settings/misp/schedule",
    "/settings/misp/feeds",
    "/settings/misp/last_run_time",
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

use iocsync::app::{self, RunOptions};
use iocsync::model::EventKind;
use iocsync::sources::misp::overrides::{FEEDS_KEY, LAST_RUN_KEY, SCHEDULE_KEY};
use iocsync::sources::misp::{MispSource, SOURCE_NAME};
use iocsync::sources::{Source, SourceContext, SourceStore};
use misp_fake::{now, FakeMisp, KEY};
use std::time::Duration;

/// A console (editable when `control` is given) over a state and a JSONL sink, with MISP at `fake`.
async fn misp_console(fake: &FakeMisp, control: Option<Control>) -> (Console, Config) {
    let dir = tempfile::tempdir().expect("tempdir");
    let state_dir = dir.path().join("state");
    State::open(&state_dir).expect("state");
    let env: Vec<(String, String)> = [
        ("MISP_URL", format!("{}/", fake.url())),
        ("MISP_KEY", KEY.to_string()),
        ("MISP_INTERVAL", "1h".into()),
        ("IOCSYNC_SINKS", "jsonl".into()),
        (
            "IOCSYNC_JSONL_PATH",
            dir.path().join("out/iocs.jsonl").display().to_string(),
        ),
        ("IOCSYNC_STATE_DIR", state_dir.display().to_string()),
        ("IOCSYNC_PIPELINE_LINGER", "10ms".into()),
        ("IOCSYNC_CONSOLE_LISTEN", "127.0.0.1:0".into()),
        ("IOCSYNC_CONSOLE_USER", "admin".into()),
        ("IOCSYNC_CONSOLE_PASSWORD", PASSWORD.into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let cfg = Config::load(None, env.clone()).expect("config");
    let handle = start(
        &cfg,
        ConsoleOptions {
            control: control.clone(),
            config_file: None,
            env_names: env.into_iter().map(|(k, _)| k).collect(),
        },
    )
    .await
    .expect("console starts");
    let console = Console {
        handle,
        control: control.unwrap_or_else(|| Control::new("misp", true)),
        _dir: dir,
    };
    (console, cfg)
}

async fn post(
    c: &Console,
    http: &reqwest::Client,
    path: &str,
    cookie: &str,
    form: &[(&str, &str)],
) -> (StatusCode, String) {
    let resp = http
        .post(c.url(path))
        .header("cookie", cookie)
        .form(form)
        .send()
        .await
        .expect("post");
    let status = resp.status();
    (status, resp.text().await.expect("body"))
}

/// Logged in: (cookie, CSRF token).
async fn session(c: &Console, http: &reqwest::Client) -> (String, String) {
    let (_, cookie) = login(c, http, PASSWORD).await;
    let cookie = cookie.expect("cookie");
    let (_, page) = get(c, http, "/settings", &cookie).await;
    (cookie.clone(), csrf_of(&page))
}

fn stored(cfg: &Config, key: &str) -> Option<String> {
    State::open(&cfg.state.dir)
        .expect("state")
        .kv_get(key)
        .expect("kv")
}

async fn run_once(cfg: &Config) -> iocsync::pipeline::RunStats {
    let mut cfg = cfg.clone();
    cfg.source = Some("misp".into());
    app::run(
        &cfg,
        RunOptions {
            once: true,
            control: None,
            state_only: false,
        },
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect("MISP run")
}

#[tokio::test]
async fn settings_edits_need_login_and_csrf_and_bad_input_stores_nothing() {
    let fake = FakeMisp::start().await;
    fake.add_feed(1, "Feed One", 0, 0, 0);
    let (c, cfg) = misp_console(&fake, Some(Control::new("misp", true))).await;
    let http = client();
    let (cookie, csrf) = session(&c, &http).await;
    let good = [
        ("action", "save"),
        ("form", "interval"),
        ("interval", "20m"),
    ];
    // No token, a wrong token: 403 and nothing stored.
    let (status, _) = post(&c, &http, "/settings/misp/schedule", &cookie, &good).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let wrong = "0".repeat(64);
    let mut with_wrong = good.to_vec();
    with_wrong.push(("csrf", &wrong));
    let (status, _) = post(&c, &http, "/settings/misp/schedule", &cookie, &with_wrong).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(stored(&cfg, SCHEDULE_KEY), None);

    let cases: &[(&str, Form, &str)] = &[
        (
            "/settings/misp/schedule",
            &[
                ("action", "save"),
                ("form", "interval"),
                ("interval", "soon"),
            ],
            "misp.interval: `soon` is not a duration",
        ),
        (
            "/settings/misp/schedule",
            &[("action", "save"), ("form", "interval"), ("interval", "0s")],
            "misp.interval: must be greater than zero",
        ),
        (
            "/settings/misp/schedule",
            &[
                ("action", "save"),
                ("form", "daily"),
                ("first_run_at", "25:00"),
                ("repeat_days", "1"),
                ("timezone", "UTC"),
            ],
            "misp.first_run_at",
        ),
        (
            "/settings/misp/schedule",
            &[
                ("action", "save"),
                ("form", "daily"),
                ("first_run_at", "02:00"),
                ("repeat_days", "0"),
                ("timezone", "UTC"),
            ],
            "misp.repeat_days: must be at least 1",
        ),
        (
            "/settings/misp/schedule",
            &[
                ("action", "save"),
                ("form", "daily"),
                ("first_run_at", "02:00"),
                ("repeat_days", "1"),
                ("timezone", "Mars/Olympus"),
            ],
            "misp.timezone",
        ),
        (
            "/settings/misp/feeds",
            &[("feed", "99"), ("pushed", "no")],
            "no feed with id `99`",
        ),
        (
            "/settings/misp/feeds",
            &[("feed", "1"), ("pushed", "maybe")],
            "must be yes, no or config",
        ),
        (
            "/settings/misp/last_run_time",
            &[("action", "save"), ("value", "2024-05-01T10:00")],
            "tick the confirmation",
        ),
        (
            "/settings/misp/last_run_time",
            &[
                ("action", "save"),
                ("value", "2999-01-01T00:00"),
                ("confirm", "yes"),
            ],
            "must be in the past",
        ),
        (
            "/settings/misp/last_run_time",
            &[
                ("action", "save"),
                ("value", "last week"),
                ("confirm", "yes"),
            ],
            "is not a time",
        ),
    ];
    for (path, form, expected) in cases {
        let mut form = form.to_vec();
        form.push(("csrf", &csrf));
        let (status, body) = post(&c, &http, path, &cookie, &form).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path} {form:?}");
        assert!(
            body.contains(&maud_escape(expected)),
            "{path} {form:?}: expected `{expected}` in the page"
        );
        assert!(body.contains("<h1>Settings</h1>"), "the page again");
    }
    for key in [SCHEDULE_KEY, FEEDS_KEY, LAST_RUN_KEY] {
        assert_eq!(stored(&cfg, key), None, "{key}: nothing stored");
    }

    // A valid edit is stored, shown with source "console", and in the JSON twin.
    let mut form = good.to_vec();
    form.push(("csrf", &csrf));
    let (status, _) = post(&c, &http, "/settings/misp/schedule", &cookie, &form).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(stored(&cfg, SCHEDULE_KEY).is_some_and(|v| v.contains("20m") && v.contains("admin")));
    let (_, api) = get(&c, &http, "/api/settings", &cookie).await;
    let v: serde_json::Value = serde_json::from_str(&api).expect("json");
    assert_eq!(v["editable"], true);
    assert_eq!(v["misp"]["schedule"], "every 20m");
    assert_eq!(v["misp"]["feeds"][0]["id"], "1");
    let row = v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["key"] == "misp.interval")
        .cloned()
        .expect("misp.interval row");
    assert_eq!(
        (row["value"].as_str(), row["source"].as_str()),
        (Some("20m"), Some("console"))
    );
    // Dropping the override brings the config back.
    let (status, _) = post(
        &c,
        &http,
        "/settings/misp/schedule",
        &cookie,
        &[("action", "reset"), ("csrf", &csrf)],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(stored(&cfg, SCHEDULE_KEY), None);
    let (_, api) = get(&c, &http, "/api/settings", &cookie).await;
    assert!(api.contains("\"schedule\":\"every 1h\""), "{api}");
}

/// A form's fields.
type Form<'a> = &'a [(&'a str, &'a str)];

/// maud escapes `'`, `"`, `<`, `>` and `&` in text.
fn maud_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[tokio::test]
async fn the_read_only_console_shows_settings_but_refuses_edits() {
    let fake = FakeMisp::start().await;
    fake.add_feed(1, "Feed One", 0, 0, 0);
    let (c, cfg) = misp_console(&fake, None).await;
    let http = client();
    let (cookie, csrf) = session(&c, &http).await;
    let (status, page) = get(&c, &http, "/settings", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("it reads the state only, so nothing can be edited here"));
    assert!(
        page.contains("<fieldset disabled>"),
        "the forms are disabled"
    );
    assert!(page.contains("Feed One"));
    let (status, body) = post(
        &c,
        &http,
        "/settings/misp/feeds",
        &cookie,
        &[("feed", "1"), ("pushed", "no"), ("csrf", &csrf)],
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body.contains("iocsync console"), "{body}");
    assert_eq!(stored(&cfg, FEEDS_KEY), None);
    let (_, api) = get(&c, &http, "/api/settings", &cookie).await;
    assert!(api.contains("\"editable\":false"), "{api}");
}

#[tokio::test]
async fn the_misp_source_honours_a_feed_toggle_and_a_last_run_time_set_in_the_console() {
    let fake = FakeMisp::start().await;
    let one = fake.add_event("One import", 1, &[]);
    let two = fake.add_event("Two import", 1, &[]);
    fake.add_feed(1, "Feed One", one, 0, 0);
    fake.add_feed(2, "Feed Two", two, 0, 0);
    fake.add_at(one, "ip-dst", "10.0.0.1", true, now() - 60);
    fake.add_at(two, "ip-dst", "10.0.0.2", true, now() - 60);
    // Older than the first run's look-back (7 days): only a moved last_run_time reads it.
    fake.add_at(one, "ip-dst", "10.0.0.3", true, now() - 10 * 86_400);
    let control = Control::new("misp", true);
    let (c, cfg) = misp_console(&fake, Some(control)).await;
    let http = client();
    let (cookie, csrf) = session(&c, &http).await;
    let (status, _) = post(
        &c,
        &http,
        "/settings/misp/feeds",
        &cookie,
        &[("feed", "2"), ("pushed", "no"), ("csrf", &csrf)],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);

    let stats = run_once(&cfg).await;
    let live =
        || common::jsonl_live_set(&common::read_jsonl(&cfg.jsonl.path.clone().expect("path")));
    let ip = |v: &str| ("ipv4".to_string(), v.to_string());
    assert_eq!(
        live(),
        [ip("10.0.0.1")].into(),
        "feed 2 held back by the console"
    );
    assert_eq!(
        stats.skipped.get("ignored_disabled_feed"),
        Some(&1),
        "{stats:?}"
    );
    // `iocsync misp feeds` shows the toggle and where it comes from.
    let mut out = Vec::new();
    iocsync::cli::misp::run(
        &cfg,
        iocsync::cli::misp::MispCommand::Feeds { json: true },
        &mut out,
    )
    .await
    .expect("misp feeds");
    let report: serde_json::Value = serde_json::from_slice(&out).expect("json");
    let two_row = &report["feeds"][1];
    assert_eq!(
        (
            two_row["id"].as_str(),
            two_row["pushed_by_iocsync"].as_bool(),
            two_row["decided_by"].as_str()
        ),
        (Some("2"), Some(false), Some("console"))
    );
    assert!(two_row["toggled_by"]
        .as_str()
        .is_some_and(|t| t.starts_with("admin at ")));
    assert_eq!(report["feeds"][0]["decided_by"], "default");
    // `iocsync check` (and so the Status page) counts the console's toggle too.
    let mut out = Vec::new();
    iocsync::app::check(&cfg, &mut out).await.expect("check");
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("1 of 2 feeds disabled (1 set in the console)"),
        "{text}"
    );

    // Feed 2 back on, and last_run_time eleven days back: the next run reads the old attribute
    // and feed 2's (changed since then too).
    let (status, _) = post(
        &c,
        &http,
        "/settings/misp/feeds",
        &cookie,
        &[("feed", "2"), ("pushed", "config"), ("csrf", &csrf)],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let at = now() - 11 * 86_400;
    let at_text = chrono::DateTime::from_timestamp(at, 0)
        .expect("time")
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    let (status, _) = post(
        &c,
        &http,
        "/settings/misp/last_run_time",
        &cookie,
        &[
            ("action", "save"),
            ("value", &at_text),
            ("confirm", "yes"),
            ("csrf", &csrf),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, page) = get(&c, &http, "/settings", &cookie).await;
    assert!(
        page.contains("applies at the next run"),
        "pending before the run"
    );
    fake.clear_journal();
    run_once(&cfg).await;
    assert_eq!(
        live(),
        [ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")].into()
    );
    let since = fake.searches()[0]["timestamp"].as_i64();
    assert_eq!(
        since,
        Some(at - 1),
        "read from the console's last_run_time (one second of overlap)"
    );
    // Taken up once: the run after reads from its own mark again.
    let taken = stored(&cfg, LAST_RUN_KEY).expect("kept with its fate");
    assert!(taken.contains("\"applied\":{"), "{taken}");
    fake.clear_journal();
    run_once(&cfg).await;
    assert!(fake.searches()[0]["timestamp"].as_i64() > Some(now() - 3_600));
    let mark = State::open(&cfg.state.dir)
        .expect("state")
        .checkpoint(SOURCE_NAME)
        .expect("checkpoint");
    assert!(mark.is_some());
    let (_, page) = get(&c, &http, "/settings", &cookie).await;
    assert!(page.contains("taken up by the run of"), "shown as done");
}

#[tokio::test]
async fn an_edited_schedule_wakes_the_waiting_misp_source() {
    let fake = FakeMisp::start().await;
    let e = fake.add_event("E", 1, &[]);
    fake.add_at(e, "ip-dst", "6.6.6.6", true, now() - 60);
    let control = Control::new("misp", true);
    let (c, cfg) = misp_console(&fake, Some(control.clone())).await;
    let misp = iocsync::config::Valid::new(cfg.misp.clone()).expect("valid misp section");
    let source = MispSource::new(&misp).expect("source");
    let state = State::open(&cfg.state.dir).expect("state");
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let (_committed, committed_rx) = tokio::sync::watch::channel(None);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let ctx = SourceContext {
        start: None,
        events: tx,
        committed: committed_rx,
        shutdown: shutdown.clone(),
        once: false,
        store: SourceStore::new(std::sync::Arc::new(std::sync::Mutex::new(state))),
        control: control.clone(),
    };
    let task = tokio::spawn(Box::new(source).run(ctx));
    // The config's interval (1h): the first run at once, the next one an hour later.
    tokio::time::timeout(Duration::from_secs(10), run_end(&mut rx))
        .await
        .expect("first run");
    let http = client();
    let (cookie, csrf) = session(&c, &http).await;
    let (status, _) = post(
        &c,
        &http,
        "/settings/misp/schedule",
        &cookie,
        &[
            ("action", "save"),
            ("form", "interval"),
            ("interval", "1s"),
            ("csrf", &csrf),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    // Woken by the edit, the source runs on the console's schedule: well before the hour.
    tokio::time::timeout(Duration::from_secs(20), run_end(&mut rx))
        .await
        .expect("a run on the edited schedule");
    // A daily schedule: the next run is its time of day, as the control shows.
    let (status, _) = post(
        &c,
        &http,
        "/settings/misp/schedule",
        &cookie,
        &[
            ("action", "save"),
            ("form", "daily"),
            ("first_run_at", "03:00"),
            ("repeat_days", "2"),
            ("timezone", "Asia/Tokyo"),
            ("csrf", &csrf),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        // Drain runs the 1s schedule may still have started.
        while rx.try_recv().is_ok() {}
        let next = control.snapshot().next_run;
        let tokyo = next.map(|t| {
            t.with_timezone(&chrono_tz::Asia::Tokyo)
                .format("%H:%M")
                .to_string()
        });
        if tokyo.as_deref() == Some("03:00") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "next run {next:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops");
}

/// Waits for the source's next `RunEnd`.
async fn run_end(rx: &mut tokio::sync::mpsc::Receiver<iocsync::model::SourceEvent>) {
    loop {
        let ev = rx.recv().await.expect("source running");
        if ev.kind == EventKind::RunEnd {
            return;
        }
    }
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

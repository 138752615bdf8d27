//! The web console over real HTTP (a listener on 127.0.0.1:0): login required everywhere, wrong
//! passwords, CSRF, the login rate limit, logout, and no secret in any response body.

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
    "/settings",
];
const APIS: &[&str] = &[
    "/api/dashboard",
    "/api/status",
    "/api/live",
    "/api/runs",
    "/api/runs/1",
    "/api/iocs",
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

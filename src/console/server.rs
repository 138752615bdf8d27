//! The console's HTTP server: its own listener, the login and CSRF middleware, security headers,
//! and one handler per route (pages, their `/api/` JSON twins, the `/control/` actions).

use super::auth::{self, Account, RateLimiter, Sessions};
use super::data::RunSummary;
use super::edit;
use super::gate::*;
use super::pages::{self};
use super::settings::{self, SettingRow};
use super::{dashboard, s1view, status};
use crate::app::{read_state, AppError};
use crate::config::{Config, ConfigError, Problem};
use crate::control::{Control, RunRequest};
use crate::logring::LogRing;
use crate::state::{IocSearch, State, StateError};
use axum::extract::{Path as UrlPath, Query, State as AxState};
use axum::http::{header, StatusCode};
use axum::middleware::{self};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub(super) const COOKIE: &str = "iocsync_console";
pub(super) const CSS: &str = include_str!("assets/console.css");
pub(super) const JS: &str = include_str!("assets/console.js");
/// Lines of the live log rendered into the page (the whole view without JavaScript).
pub(super) const LIVE_LINES: usize = 200;
pub(super) const MAX_FORM: usize = 64 * 1024;

/// How the console is served.
pub struct ConsoleOptions {
    /// The daemon's control; `None` for `iocsync console` (read-only: no control, no edits).
    pub control: Option<Control>,
    /// The config file the configuration came from (for the settings' sources).
    pub config_file: Option<PathBuf>,
    /// The environment variable names present when the configuration was loaded.
    pub env_names: Vec<String>,
}

pub(super) struct App {
    pub(super) cfg: Config,
    pub(super) account: Account,
    pub(super) sessions: Sessions,
    pub(super) limiter: RateLimiter,
    pub(super) control: Option<Control>,
    pub(super) started: Instant,
    pub(super) secure: bool,
    pub(super) settings: Vec<SettingRow>,
    pub(super) status: tokio::sync::Mutex<Option<super::data::Status>>,
    pub(super) dashboard: super::dashboard::Feed,
    /// The SentinelOne view's client, built at its first use (or why it cannot be).
    pub(super) s1_client:
        std::sync::OnceLock<Result<Arc<crate::sinks::sentinelone::SentinelOneClient>, String>>,
}

pub(super) type Shared = Arc<App>;

/// A running console; dropping it stops the server.
pub struct ConsoleHandle {
    addr: SocketAddr,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ConsoleHandle {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ConsoleHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub(super) fn config_error(problems: Vec<(String, String)>) -> AppError {
    AppError::Config(ConfigError::Invalid(
        problems
            .into_iter()
            .map(|(key, message)| Problem { key, message })
            .collect(),
    ))
}

/// Starts the console of `iocsync run` when `console.enabled` (else `None`).
pub async fn start_for_daemon(
    cfg: &Config,
    control: Control,
) -> Result<Option<ConsoleHandle>, AppError> {
    if !cfg.console.enabled {
        return Ok(None);
    }
    let opts = ConsoleOptions {
        control: Some(control),
        // What main's `config_path` resolves without `--config` (app::run is not told the flag).
        config_file: std::env::var_os("IOCSYNC_CONFIG")
            .map(PathBuf::from)
            .or_else(|| Some(PathBuf::from("config.yml")).filter(|p| p.exists())),
        env_names: std::env::vars().map(|(k, _)| k).collect(),
    };
    start(cfg, opts).await.map(Some)
}

/// Validates the console settings, binds `console.listen` and serves until the handle is dropped.
pub async fn start(cfg: &Config, opts: ConsoleOptions) -> Result<ConsoleHandle, AppError> {
    let problems = cfg.console.problems(true);
    if !problems.is_empty() {
        return Err(config_error(problems));
    }
    let user = cfg.console.user.clone().unwrap_or_default();
    let phc = match (&cfg.console.password_hash, &cfg.console.password) {
        (Some(h), _) if !h.is_blank() => h.expose().to_string(),
        (_, Some(p)) => {
            let p = p.clone();
            tokio::task::spawn_blocking(move || auth::hash_password(p.expose()))
                .await
                .map_err(|e| AppError::Other(format!("password hashing stopped: {e}")))?
                .map_err(|e| AppError::Other(e.to_string()))?
        }
        _ => return Err(config_error(cfg.console.problems(true))),
    };
    let listener = tokio::net::TcpListener::bind(&cfg.console.listen)
        .await
        .map_err(|e| {
            AppError::Other(format!(
                "console: cannot listen on {} (console.listen): {e}",
                cfg.console.listen
            ))
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| AppError::Other(format!("console: {e}")))?;
    let app = Arc::new(App {
        settings: settings::effective(cfg, opts.config_file.as_deref(), &opts.env_names),
        cfg: cfg.clone(),
        account: Account::new(user, phc),
        sessions: Sessions::new(cfg.console.idle_timeout),
        limiter: RateLimiter::default(),
        control: opts.control,
        started: Instant::now(),
        secure: cfg.console.secure(),
        status: tokio::sync::Mutex::new(None),
        dashboard: super::dashboard::Feed::new(),
        s1_client: std::sync::OnceLock::new(),
    });
    let stop = CancellationToken::new();
    super::dashboard::spawn(app.clone(), stop.clone());
    let router = router(app);
    let token = stop.clone();
    let task = tokio::spawn(async move {
        let served = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(token.cancelled_owned())
        .await;
        if let Err(e) = served {
            warn!(error = %e, "console server stopped");
        }
    });
    info!(%addr, "web console listening");
    Ok(ConsoleHandle {
        addr,
        stop,
        task: Some(task),
    })
}

fn router(app: Shared) -> Router {
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route(
            "/assets/console.css",
            get(|| async { asset("text/css", CSS) }),
        )
        .route(
            "/assets/console.js",
            get(|| async { asset("text/javascript", JS) }),
        )
        .route("/", get(dashboard::page))
        .route("/status", get(status::status_page))
        .route("/live", get(live_page))
        .route("/live/stream", get(live_stream))
        .route("/runs", get(runs_page))
        .route("/runs/{id}", get(run_page))
        .route("/iocs", get(iocs_page))
        .route("/iocs/s1", get(s1view::page))
        .route("/settings", get(edit::settings_page))
        .route("/settings/misp/schedule", post(edit::edit_schedule))
        .route("/settings/misp/feeds", post(edit::edit_feed))
        .route("/settings/misp/last_run_time", post(edit::edit_last_run))
        .route("/api/dashboard", get(dashboard::api))
        .route("/api/status", get(status::status_api))
        .route("/api/live", get(live_api))
        .route("/api/runs", get(runs_api))
        .route("/api/runs/{id}", get(run_api))
        .route("/api/iocs", get(iocs_api))
        .route("/api/iocs/s1", get(s1view::api))
        .route("/api/settings", get(edit::settings_api))
        .route("/control/recheck", post(status::recheck))
        .route("/control/start", post(control_start))
        .route("/control/stop", post(control_stop))
        .route("/control/resume", post(control_resume))
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .layer(middleware::from_fn(security_headers))
        .with_state(app)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// A failed page: the state could not be read.
pub(super) struct PageError(pub(super) String);

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        warn!(error = %self.0, "console: page failed");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            html(pages::message("Error", &self.0)),
        )
            .into_response()
    }
}

impl From<StateError> for PageError {
    fn from(e: StateError) -> Self {
        PageError(e.to_string())
    }
}

impl From<AppError> for PageError {
    fn from(e: AppError) -> Self {
        PageError(e.to_string())
    }
}

/// Runs `f` on a fresh read-only connection to the state (`None` before the first run).
pub(super) async fn with_state<T: Send + 'static>(
    app: &Shared,
    f: impl FnOnce(Option<&State>) -> Result<T, StateError> + Send + 'static,
) -> Result<T, PageError> {
    let app = app.clone();
    tokio::task::spawn_blocking(move || {
        let state = read_state(&app.cfg)?;
        f(state.as_ref()).map_err(PageError::from)
    })
    .await
    .map_err(|e| PageError(format!("state reader stopped: {e}")))?
}

async fn runs_data(app: &Shared) -> Result<Vec<RunSummary>, PageError> {
    with_state(app, |s| {
        Ok(match s {
            Some(s) => s.runs()?.iter().map(RunSummary::from_record).collect(),
            None => Vec::new(),
        })
    })
    .await
}

async fn runs_page(
    AxState(app): AxState<Shared>,
    axum::Extension(Authed(s)): axum::Extension<Authed>,
) -> Result<Response, PageError> {
    let runs = runs_data(&app).await?;
    Ok(html(pages::runs(&ctx(&app, &s), &runs)))
}

async fn runs_api(AxState(app): AxState<Shared>) -> Result<Response, PageError> {
    Ok(Json(runs_data(&app).await?).into_response())
}

type RunDetail = Option<(RunSummary, Vec<crate::logring::LogLine>)>;

async fn run_data(app: &Shared, id: i64) -> Result<RunDetail, PageError> {
    with_state(app, move |s| {
        let Some(s) = s else { return Ok(None) };
        let Some(rec) = s.runs()?.into_iter().find(|r| r.id == id) else {
            return Ok(None);
        };
        Ok(Some((RunSummary::from_record(&rec), s.run_log(id)?)))
    })
    .await
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        html(pages::message(
            "Not found",
            "No such run (the last 20 are kept).",
        )),
    )
        .into_response()
}

async fn run_page(
    AxState(app): AxState<Shared>,
    axum::Extension(Authed(s)): axum::Extension<Authed>,
    UrlPath(id): UrlPath<i64>,
) -> Result<Response, PageError> {
    Ok(match run_data(&app, id).await? {
        Some((r, lines)) => html(pages::run(&ctx(&app, &s), &r, &lines)),
        None => not_found(),
    })
}

async fn run_api(
    AxState(app): AxState<Shared>,
    UrlPath(id): UrlPath<i64>,
) -> Result<Response, PageError> {
    Ok(match run_data(&app, id).await? {
        Some((r, lines)) => Json(serde_json::json!({ "run": r, "log": lines })).into_response(),
        None => (StatusCode::NOT_FOUND, "no such run").into_response(),
    })
}

async fn iocs_data(
    app: &Shared,
    q: IocSearch,
) -> Result<(Vec<crate::state::IocRow>, bool), PageError> {
    with_state(app, move |s| {
        let Some(s) = s else {
            return Ok((Vec::new(), false));
        };
        let rows = s.search_iocs(&q)?;
        // A full page may have a next one; one look ahead would double the cost of every page.
        let has_next = rows.len() == crate::state::IOC_PAGE_SIZE as usize;
        Ok((rows, has_next))
    })
    .await
}

async fn iocs_page(
    AxState(app): AxState<Shared>,
    axum::Extension(Authed(s)): axum::Extension<Authed>,
    Query(q): Query<IocSearch>,
) -> Result<Response, PageError> {
    let (rows, next) = iocs_data(&app, q.clone()).await?;
    Ok(html(pages::iocs(&ctx(&app, &s), &q, &rows, next)))
}

async fn iocs_api(
    AxState(app): AxState<Shared>,
    Query(q): Query<IocSearch>,
) -> Result<Response, PageError> {
    let (rows, has_next) = iocs_data(&app, q).await?;
    Ok(Json(serde_json::json!({ "rows": rows, "has_next": has_next })).into_response())
}

async fn live_page(
    AxState(app): AxState<Shared>,
    axum::Extension(Authed(s)): axum::Extension<Authed>,
) -> Response {
    let lines = LogRing::global().recent(LIVE_LINES);
    let snap = app.control.as_ref().map(Control::snapshot);
    html(pages::live(&ctx(&app, &s), &lines, snap.as_ref()))
}

async fn live_api() -> Response {
    Json(LogRing::global().recent(LIVE_LINES)).into_response()
}

async fn live_stream() -> Response {
    let rx = LogRing::global().subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let ev = match rx.recv().await {
            Ok(line) => Event::default()
                .json_data(&line)
                .unwrap_or_else(|_| Event::default().comment("unencodable line")),
            // Too slow a reader: say how many lines it missed and go on with the newest.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                Event::default().event("lagged").data(n.to_string())
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok::<_, std::convert::Infallible>(ev), rx))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn control_of(app: &App) -> Result<&Control, Box<Response>> {
    app.control.as_ref().ok_or_else(|| {
        Box::new((
            StatusCode::CONFLICT,
            html(pages::message(
                "Read-only console",
                "This console (iocsync console) reads the state only; start and stop runs from the console of iocsync run.",
            )),
        )
            .into_response())
    })
}

async fn control_start(
    AxState(app): AxState<Shared>,
    axum::Extension(Authed(s)): axum::Extension<Authed>,
) -> Response {
    let c = match control_of(&app) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let answer = c.request_run();
    info!(user = %s.user, answer = ?answer, "console: start run now");
    match answer {
        RunRequest::NotSupported(why) => (
            StatusCode::CONFLICT,
            html(pages::message("Not supported", why)),
        )
            .into_response(),
        RunRequest::Accepted | RunRequest::AlreadyRunning => Redirect::to("/live").into_response(),
    }
}

async fn control_stop(
    AxState(app): AxState<Shared>,
    axum::Extension(Authed(s)): axum::Extension<Authed>,
) -> Response {
    match control_of(&app) {
        Ok(c) => {
            info!(user = %s.user, "console: stop (pause) the pipeline");
            c.pause();
            Redirect::to("/live").into_response()
        }
        Err(r) => *r,
    }
}

async fn control_resume(
    AxState(app): AxState<Shared>,
    axum::Extension(Authed(s)): axum::Extension<Authed>,
) -> Response {
    match control_of(&app) {
        Ok(c) => {
            info!(user = %s.user, "console: resume the pipeline");
            c.resume();
            Redirect::to("/live").into_response()
        }
        Err(r) => *r,
    }
}

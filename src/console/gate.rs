//! The console's gate: security headers on every answer, the login check in front of every route
//! but `/login` (302 for pages, 401 for the API and the stream), CSRF on every POST, and login,
//! logout with their rate limit.

use super::auth::{self, Session};
use super::pages::{self, Ctx};
use super::server::*;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use maud::Markup;
use std::net::SocketAddr;
use tracing::{info, warn};

pub(super) async fn security_headers(req: Request, next: Next) -> Response {
    let is_asset = req.uri().path().starts_with("/assets/");
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !is_asset {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

pub(super) fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// The logged-in session of a request, put there by [`guard`].
#[derive(Clone)]
pub(super) struct Authed(pub(super) Session);

/// Every route but /login and the assets needs a live session (pages: 302 to /login; the API and
/// the stream: 401); every POST needs the session's CSRF token (else 403, nothing done).
pub(super) async fn guard(AxState(app): AxState<Shared>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if path == "/login" || path.starts_with("/assets/") {
        return next.run(req).await;
    }
    let session = session_id(req.headers()).and_then(|id| app.sessions.get(&id));
    let Some(session) = session else {
        let wants_json = path.starts_with("/api/") || path == "/live/stream";
        return if wants_json {
            (StatusCode::UNAUTHORIZED, "login required").into_response()
        } else {
            Redirect::to("/login")
                .into_response()
                .with_status(StatusCode::FOUND)
        };
    };
    let mut req = req;
    if req.method() == Method::POST {
        let (parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM).await else {
            return (StatusCode::PAYLOAD_TOO_LARGE, "form too large").into_response();
        };
        let from_header = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let given = from_header.or_else(|| {
            url::form_urlencoded::parse(&bytes)
                .find(|(k, _)| k == "csrf")
                .map(|(_, v)| v.into_owned())
        });
        if !given.is_some_and(|g| auth::csrf_ok(&session, &g)) {
            warn!(user = %session.user, path = %path, "console: POST refused, CSRF token missing or wrong");
            return (StatusCode::FORBIDDEN, "CSRF token missing or wrong").into_response();
        }
        req = Request::from_parts(parts, Body::from(bytes));
    }
    req.extensions_mut().insert(Authed(session));
    next.run(req).await
}

pub(super) trait WithStatus {
    fn with_status(self, status: StatusCode) -> Response;
}

impl WithStatus for Response {
    fn with_status(mut self, status: StatusCode) -> Response {
        *self.status_mut() = status;
        self
    }
}

pub(super) fn ctx<'a>(app: &App, s: &'a Session) -> Ctx<'a> {
    Ctx {
        user: &s.user,
        csrf: &s.csrf,
        can_control: app.control.is_some(),
    }
}

pub(super) fn html(m: Markup) -> Response {
    Html(m.into_string()).into_response()
}

pub(super) async fn login_page() -> Response {
    html(pages::login(None))
}

/// The login form.
#[derive(serde::Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
}

pub(super) async fn login(
    AxState(app): AxState<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<LoginForm>,
) -> Response {
    let ip = peer.ip();
    if !app.limiter.allow(ip) {
        warn!(user = %form.user, %ip, "console login refused: too many attempts");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            html(pages::login(Some(
                "Too many login attempts: wait a minute.",
            ))),
        )
            .into_response();
    }
    let app2 = app.clone();
    let user = form.user.clone();
    let ok = tokio::task::spawn_blocking(move || app2.account.verify(&user, &form.password))
        .await
        .unwrap_or(false);
    if !ok {
        warn!(user = %form.user, %ip, "console login failed");
        return (
            StatusCode::UNAUTHORIZED,
            html(pages::login(Some("Wrong user or password."))),
        )
            .into_response();
    }
    info!(user = %app.account.user(), %ip, "console login");
    let id = app.sessions.create(app.account.user());
    let secure = if app.secure { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{secure}");
    let mut resp = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

pub(super) async fn logout(AxState(app): AxState<Shared>, headers: HeaderMap) -> Response {
    if let Some(id) = session_id(&headers) {
        app.sessions.remove(&id);
    }
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("iocsync_console=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    resp
}

//! An in-process fake of SentinelOne's Threat Intelligence IOC API (protocols.md §1), for tests:
//! `ApiToken` auth, scope filters, per-item validation with the whole-batch 400, uuids, cursor paging,
//! deletes, fault injection (429, 5xx, slow answers, connection resets, 403 multi-scope) and a journal
//! of every request. Deterministic: uuids come from a seeded counter, faults from counters.
//!
//! Used by several test binaries through `#[path = "fakes/sentinelone.rs"] mod sentinelone_fake;`.

#![allow(dead_code)]

// Each fake is a module of its own in the tests that include it, so a test using two fakes
// loads the shared plumbing twice.
#[allow(clippy::duplicate_mod)]
#[path = "server.rs"]
mod server;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::{DateTime, Duration as Days, SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The endpoint path the fake serves (anything else is a 404).
pub const IOCS_PATH: &str = "/web/api/v2.1/threat-intelligence/iocs";
/// The token a fresh fake accepts.
pub const TOKEN: &str = "s1-test-token-0123456789";

/// The seven types S1 accepts.
pub const TYPES: [&str; 7] = ["DNS", "IPV4", "IPV6", "MD5", "SHA1", "SHA256", "URL"];

/// How the whole-batch 400 writes its `detail` string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetailStyle {
    /// `{"errors": [{"value": "...", "type": "..."}]}`
    Json,
    /// `{'errors': [{'value': '...', 'type': '...'}]}` (Python repr of a dict)
    Python,
    /// A sentence that names no item.
    Unparseable,
}

/// A fault to inject instead of (or before) the normal answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// 429, with `Retry-After: <secs>` when given.
    RateLimit(Option<u64>),
    /// This status with an S1-shaped error body (use for 5xx).
    Status(u16),
    /// Wait this long, then answer normally.
    Slow(Duration),
    /// Apply the request normally, then wait this long before answering (a client killed meanwhile
    /// has had its change applied without seeing the acknowledgement).
    SlowAck(Duration),
    /// Break the connection instead of sending a body.
    Reset,
    /// 403 code 4030010 "doesn't support multi-scopes users".
    MultiScope,
}

/// One request as the fake received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// `GET`, `POST`, `DELETE`…
    pub method: String,
    /// The raw path (a doubled slash stays visible).
    pub path: String,
    /// The raw query string.
    pub query: Option<String>,
    /// The `Authorization` header.
    pub auth: Option<String>,
    /// The body as JSON (a non-JSON body is kept as a JSON string).
    pub body: Option<Value>,
}

/// A request as received (the body kept as bytes: copying every body as JSON on arrival cost the
/// throughput bench more than the fake's own work).
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    query: Option<String>,
    auth: Option<String>,
    body: Bytes,
}

impl Received {
    fn recorded(&self) -> Recorded {
        Recorded {
            method: self.method.clone(),
            path: self.path.clone(),
            query: self.query.clone(),
            auth: self.auth.clone(),
            body: parse_body(&self.body),
        }
    }
}

/// A body as JSON; a non-JSON body becomes a JSON string.
fn parse_body(body: &[u8]) -> Option<Value> {
    (!body.is_empty()).then(|| {
        serde_json::from_slice::<Value>(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
    })
}

impl Recorded {
    /// Decoded query pairs.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.query.as_deref().unwrap_or("").as_bytes())
            .into_owned()
            .collect()
    }

    /// One query parameter.
    pub fn param(&self, key: &str) -> Option<String> {
        self.query_pairs()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

#[derive(Debug, Clone)]
struct Stored {
    ioc: Map<String, Value>,
    accounts: Vec<String>,
    sites: Vec<String>,
    groups: Vec<String>,
}

#[derive(Debug)]
struct Inner {
    token: String,
    detail_style: DetailStyle,
    upsert: bool,
    visible_accounts: Option<Vec<String>>,
    visible_sites: Option<Vec<String>>,
    iocs: Vec<Stored>,
    /// Requests as received; bodies are parsed only when a test reads the journal.
    journal: Vec<Received>,
    next_failures: VecDeque<Failure>,
    every: Option<(u64, Failure)>,
    /// `every` picks positions pseudo-randomly instead of periodically.
    scattered: bool,
    requests: u64,
    seed: u64,
    counter: u64,
    repeat_cursor: bool,
    /// The last listing's total: (query without its cursor, store size, total).
    list_total: Option<(String, usize, usize)>,
    page_cap: usize,
    started: DateTime<Utc>,
}

type Shared = Arc<Mutex<Inner>>;

fn lock(s: &Shared) -> MutexGuard<'_, Inner> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running fake. Dropping it stops the server.
pub struct FakeS1 {
    url: String,
    state: Shared,
    _served: server::Served,
}

/// Starts a fake on 127.0.0.1 (random port) accepting [`TOKEN`], uuid seed 1.
pub async fn start() -> FakeS1 {
    start_seeded(1).await
}

/// Starts a fake whose uuids derive from `seed`.
pub async fn start_seeded(seed: u64) -> FakeS1 {
    let state: Shared = Arc::new(Mutex::new(Inner {
        token: TOKEN.to_string(),
        detail_style: DetailStyle::Json,
        upsert: false,
        visible_accounts: None,
        visible_sites: None,
        iocs: Vec::new(),
        journal: Vec::new(),
        next_failures: VecDeque::new(),
        every: None,
        scattered: false,
        requests: 0,
        seed,
        counter: 0,
        repeat_cursor: false,
        list_total: None,
        page_cap: 1000,
        started: Utc::now(),
    }));
    let app = Router::new().fallback(handle).with_state(state.clone());
    let served = server::serve(app, "fake S1").await;
    FakeS1 {
        url: served.url.clone(),
        state,
        _served: served,
    }
}

impl FakeS1 {
    /// The console base URL (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Changes the accepted token.
    pub fn set_token(&self, token: &str) {
        lock(&self.state).token = token.to_string();
    }

    /// Chooses how the 400 `detail` is written.
    pub fn set_detail_style(&self, style: DetailStyle) {
        lock(&self.state).detail_style = style;
    }

    /// When true, POSTing an existing (type, value) in the same scope updates it (same uuid);
    /// when false (the default) it creates a duplicate with a new uuid. S1's behaviour is unconfirmed.
    pub fn set_upsert(&self, upsert: bool) {
        lock(&self.state).upsert = upsert;
    }

    /// Restricts which account / site ids the token may use; others get 403.
    pub fn restrict_scopes(&self, accounts: &[&str], sites: &[&str]) {
        let mut s = lock(&self.state);
        s.visible_accounts = Some(accounts.iter().map(|a| a.to_string()).collect());
        s.visible_sites = Some(sites.iter().map(|a| a.to_string()).collect());
    }

    /// The next `n` requests fail this way.
    pub fn fail_next(&self, n: usize, failure: Failure) {
        let mut s = lock(&self.state);
        for _ in 0..n {
            s.next_failures.push_back(failure.clone());
        }
    }

    /// Every `k`-th request (counting all requests, 1-based) fails this way: a fraction of 1/k.
    pub fn fail_every(&self, k: u64, failure: Failure) {
        let mut s = lock(&self.state);
        s.every = (k > 0).then_some((k, failure));
        s.scattered = false;
    }

    /// About one request in `k` fails this way, at pseudo-random (reproducible) positions, so the
    /// faults cannot fall into step with a client's retry cycle as a strict period can.
    pub fn fail_scattered(&self, k: u64, failure: Failure) {
        let mut s = lock(&self.state);
        s.every = (k > 0).then_some((k, failure));
        s.scattered = true;
    }

    /// Removes every pending fault.
    pub fn clear_failures(&self) {
        let mut s = lock(&self.state);
        s.next_failures.clear();
        s.every = None;
    }

    /// When true, a list request that carries a cursor gets the same cursor back (a server bug).
    pub fn set_repeat_cursor(&self, repeat: bool) {
        lock(&self.state).repeat_cursor = repeat;
    }

    /// Caps the page size below the requested `limit`.
    pub fn set_page_cap(&self, cap: usize) {
        lock(&self.state).page_cap = cap.max(1);
    }

    /// Stored IOCs, as GET would return them, in creation order.
    pub fn iocs(&self) -> Vec<Value> {
        lock(&self.state)
            .iocs
            .iter()
            .map(|s| Value::Object(s.ioc.clone()))
            .collect()
    }

    /// Stores an IOC directly (as if created earlier, e.g. before iocsync) in an account; returns
    /// its uuid.
    pub fn insert(&self, mut ioc: Map<String, Value>, account: &str) -> String {
        let mut s = lock(&self.state);
        let uuid = s.next_uuid();
        let now = s.stamp();
        ioc.insert("uuid".into(), json!(uuid));
        ioc.entry("creationTime").or_insert(json!(now));
        ioc.entry("updatedAt").or_insert(json!(now));
        ioc.insert("scope".into(), json!("account"));
        ioc.insert("scopeId".into(), json!(account));
        s.iocs.push(Stored {
            ioc,
            accounts: vec![account.to_string()],
            sites: Vec::new(),
            groups: Vec::new(),
        });
        uuid
    }

    /// Removes a stored IOC by uuid, as a deletion in the console would; false when absent.
    pub fn remove(&self, uuid: &str) -> bool {
        let mut s = lock(&self.state);
        let before = s.iocs.len();
        s.iocs
            .retain(|st| st.ioc.get("uuid").and_then(Value::as_str) != Some(uuid));
        s.iocs.len() != before
    }

    /// Every request so far.
    pub fn journal(&self) -> Vec<Recorded> {
        lock(&self.state)
            .journal
            .iter()
            .map(Received::recorded)
            .collect()
    }

    /// Requests with this method.
    pub fn requests(&self, method: &str) -> Vec<Recorded> {
        self.journal()
            .into_iter()
            .filter(|r| r.method == method)
            .collect()
    }

    /// Forgets the journal.
    pub fn clear_journal(&self) {
        lock(&self.state).journal.clear();
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl Inner {
    fn next_uuid(&mut self) -> String {
        self.counter += 1;
        let a = splitmix(self.seed ^ self.counter.wrapping_mul(2));
        let b = splitmix(a ^ self.counter);
        format!("{a:016x}{b:016x}")
    }

    /// A strictly increasing timestamp, so "newest" is well defined.
    fn stamp(&mut self) -> String {
        self.counter += 1;
        let ms = i64::try_from(self.counter).unwrap_or(i64::MAX);
        (self.started + Days::milliseconds(ms)).to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

fn s1_error(status: u16, code: i64, title: &str, detail: Option<&str>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"errors": [{"code": code, "title": title, "detail": detail}]});
    (status, axum::Json(body)).into_response()
}

fn reset_response() -> Response {
    let stream = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "fake S1 reset the connection",
        ))
    });
    Response::new(Body::from_stream(stream))
}

async fn handle(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let json_body = parse_body(&body);
    let failure = {
        let mut s = lock(&state);
        s.journal.push(Received {
            method: method.to_string(),
            path: uri.path().to_string(),
            query: uri.query().map(str::to_string),
            auth: auth.clone(),
            body: body.clone(),
        });
        s.requests += 1;
        let n = s.requests;
        let scattered = s.scattered;
        s.next_failures.pop_front().or_else(|| match &s.every {
            Some((k, f)) if scattered && splitmix(n) % k == 0 => Some(f.clone()),
            Some((k, f)) if !scattered && n % k == 0 => Some(f.clone()),
            _ => None,
        })
    };
    match failure {
        Some(Failure::RateLimit(after)) => {
            let mut resp = s1_error(429, 4_290_010, "Too Many Requests", None);
            if let Some(secs) = after {
                resp.headers_mut().insert(
                    "retry-after",
                    secs.to_string().parse().expect("header value"),
                );
            }
            return resp;
        }
        Some(Failure::Status(status)) => {
            return s1_error(status, i64::from(status) * 10_000, "Server Error", None)
        }
        Some(Failure::Reset) => return reset_response(),
        Some(Failure::MultiScope) => {
            return s1_error(
                403,
                4_030_010,
                "Forbidden",
                Some("This endpoint doesn't support multi-scopes users"),
            )
        }
        Some(Failure::Slow(d)) => tokio::time::sleep(d).await,
        Some(Failure::SlowAck(_)) | None => {}
    }
    let ack_delay = match &failure {
        Some(Failure::SlowAck(d)) => Some(*d),
        _ => None,
    };

    if uri.path() != IOCS_PATH {
        return s1_error(404, 4_040_000, "Not Found", None);
    }
    let token_ok = auth
        .as_deref()
        .and_then(|a| a.split_once(' '))
        .is_some_and(|(scheme, tok)| {
            scheme.eq_ignore_ascii_case("apitoken") && tok == lock(&state).token
        });
    if !token_ok {
        return s1_error(401, 4_010_010, "Authentication Failed", None);
    }
    let response = {
        let mut s = lock(&state);
        match method {
            Method::GET => list(&mut s, uri.query().unwrap_or("")),
            Method::POST => create(&mut s, json_body),
            Method::DELETE => delete(&mut s, json_body),
            _ => s1_error(405, 4_050_000, "Method Not Allowed", None),
        }
    };
    if let Some(d) = ack_delay {
        tokio::time::sleep(d).await;
    }
    response
}

fn ids(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| match x {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect(),
        Some(Value::String(s)) => s.split(',').map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

/// 403 when a scope id is outside what the token may see.
fn scope_denied(s: &Inner, accounts: &[String], sites: &[String]) -> Option<Response> {
    let hidden = |visible: &Option<Vec<String>>, asked: &[String]| {
        visible
            .as_ref()
            .is_some_and(|v| asked.iter().any(|a| !v.contains(a)))
    };
    (hidden(&s.visible_accounts, accounts) || hidden(&s.visible_sites, sites)).then(|| {
        s1_error(
            403,
            4_030_000,
            "Insufficient permissions",
            Some("The user does not have access to the requested scope"),
        )
    })
}

fn in_scope(item: &Stored, accounts: &[String], sites: &[String], groups: &[String]) -> bool {
    let ok = |asked: &[String], has: &[String]| {
        asked.is_empty() || asked.iter().any(|a| has.contains(a))
    };
    ok(accounts, &item.accounts) && ok(sites, &item.sites) && ok(groups, &item.groups)
}

/// Scope ids of a write: accounts, sites, groups.
struct WriteScope(Vec<String>, Vec<String>, Vec<String>);

/// Reads the write scope; `Err` is the 400 / 403 to send.
fn write_scope(s: &Inner, body: &Option<Value>) -> Result<WriteScope, Box<Response>> {
    let filter = body
        .as_ref()
        .and_then(|b| b.get("filter"))
        .and_then(Value::as_object);
    let Some(filter) = filter else {
        return Err(Box::new(s1_error(
            400,
            4_000_040,
            "Validation Error",
            Some("filter: Missing data for required field."),
        )));
    };
    let (a, si, g) = (
        ids(filter.get("accountIds")),
        ids(filter.get("siteIds")),
        ids(filter.get("groupIds")),
    );
    let tenant = filter
        .get("tenant")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if a.is_empty() && si.is_empty() && g.is_empty() && !tenant {
        return Err(Box::new(s1_error(
            400,
            4_000_040,
            "Validation Error",
            Some("filter: One of accountIds, siteIds, groupIds or tenant is required"),
        )));
    }
    if let Some(resp) = scope_denied(s, &a, &si) {
        return Err(Box::new(resp));
    }
    Ok(WriteScope(a, si, g))
}

fn is_hex(v: &str, len: usize) -> bool {
    v.len() == len && v.bytes().all(|b| b.is_ascii_hexdigit())
}

const EMPTY_FILE_HASHES: [&str; 3] = [
    "d41d8cd98f00b204e9800998ecf8427e",
    "da39a3ee5e6b4b0d3255bfef95601890afd80709",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
];

fn valid_dns(v: &str) -> bool {
    v.len() <= 253
        && v.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// True when S1 would accept the item.
fn item_ok(item: &Value) -> bool {
    let Some(obj) = item.as_object() else {
        return false;
    };
    let text = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or("");
    let (kind, value) = (text("type"), text("value"));
    let value_ok = match kind {
        "MD5" => is_hex(value, 32),
        "SHA1" => is_hex(value, 40),
        "SHA256" => is_hex(value, 64),
        "IPV4" => value.parse::<std::net::Ipv4Addr>().is_ok(),
        "IPV6" => value.parse::<std::net::Ipv6Addr>().is_ok(),
        "DNS" => valid_dns(value),
        "URL" => !value.is_empty() && value.len() <= 2048 && !value.contains(char::is_whitespace),
        _ => false,
    };
    let score_ok = obj
        .get("originalRiskScore")
        .is_none_or(|s| s.as_u64().is_some_and(|n| n <= 100));
    let until_ok = obj.get("validUntil").is_none_or(|v| {
        v.as_str()
            .is_some_and(|t| DateTime::parse_from_rfc3339(t).is_ok())
    });
    value_ok
        && !EMPTY_FILE_HASHES.contains(&value.to_ascii_lowercase().as_str())
        && text("method") == "EQUALS"
        && !text("source").trim().is_empty()
        && score_ok
        && until_ok
}

fn py_str(s: &str) -> String {
    // Python's repr: single quotes unless the text has a single quote and no double quote.
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::from(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

fn detail_for(style: DetailStyle, bad: &[(String, String)]) -> String {
    match style {
        DetailStyle::Json => json!({
            "errors": bad.iter().map(|(v, t)| json!({"value": v, "type": t})).collect::<Vec<_>>()
        })
        .to_string(),
        DetailStyle::Python => {
            let entries: Vec<String> = bad
                .iter()
                .map(|(v, t)| format!("{{'value': {}, 'type': {}}}", py_str(v), py_str(t)))
                .collect();
            format!("{{'errors': [{}]}}", entries.join(", "))
        }
        DetailStyle::Unparseable => "One or more IOCs failed validation".to_string(),
    }
}

fn create(s: &mut Inner, body: Option<Value>) -> Response {
    let WriteScope(accounts, sites, groups) = match write_scope(s, &body) {
        Ok(scope) => scope,
        Err(resp) => return *resp,
    };
    let data = match body {
        Some(Value::Object(mut b)) => match b.remove("data") {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    if data.is_empty() {
        return s1_error(
            400,
            4_000_010,
            "Validation Error",
            Some("data: Missing data for required field."),
        );
    }
    let bad: Vec<(String, String)> = data
        .iter()
        .filter(|i| !item_ok(i))
        .map(|i| {
            let text = |k: &str| i.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            (text("value"), text("type"))
        })
        .collect();
    if !bad.is_empty() {
        let detail = detail_for(s.detail_style, &bad);
        return s1_error(400, 4_000_010, "Validation Error", Some(&detail));
    }
    let batch_id = s.next_uuid();
    // Indexes into the store: the answer is serialised from it, without copying every IOC.
    let mut out: Vec<usize> = Vec::new();
    for item in data {
        let Value::Object(mut ioc) = item else {
            continue;
        };
        let kind = ioc
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let cap_days = if kind.starts_with("IPV") { 30 } else { 180 };
        let default_days = match kind.as_str() {
            "IPV4" | "IPV6" => 14,
            "URL" | "DNS" => 90,
            _ => 180,
        };
        let now = Utc::now();
        let wanted = ioc
            .get("validUntil")
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(now + Days::days(default_days));
        let until = wanted.min(now + Days::days(cap_days));
        ioc.insert(
            "validUntil".into(),
            json!(until.to_rfc3339_opts(SecondsFormat::Secs, true)),
        );
        let stamp = s.stamp();
        ioc.insert("updatedAt".into(), json!(stamp));
        ioc.insert("uploadTime".into(), json!(stamp));
        let value = ioc.get("value").cloned();
        let existing = s.upsert.then(|| {
            s.iocs.iter().position(|st| {
                st.ioc.get("type").and_then(Value::as_str) == Some(kind.as_str())
                    && st.ioc.get("value") == value.as_ref()
                    && st.accounts == accounts
                    && st.sites == sites
                    && st.groups == groups
            })
        });
        if let Some(Some(pos)) = existing {
            let stored = &mut s.iocs[pos];
            for (k, v) in ioc {
                stored.ioc.insert(k, v);
            }
            out.push(pos);
            continue;
        }
        let (scope, scope_id) = if let Some(g) = groups.first() {
            ("group", g.clone())
        } else if let Some(site) = sites.first() {
            ("site", site.clone())
        } else if let Some(a) = accounts.first() {
            ("account", a.clone())
        } else {
            ("tenant", String::new())
        };
        ioc.insert("uuid".into(), json!(s.next_uuid()));
        ioc.insert("batchId".into(), json!(batch_id));
        ioc.insert("creationTime".into(), json!(stamp));
        ioc.insert("scope".into(), json!(scope));
        ioc.insert("scopeId".into(), json!(scope_id));
        out.push(s.iocs.len());
        s.iocs.push(Stored {
            ioc,
            accounts: accounts.clone(),
            sites: sites.clone(),
            groups: groups.clone(),
        });
    }
    #[derive(serde::Serialize)]
    struct Created<'a> {
        data: Vec<&'a serde_json::Map<String, Value>>,
    }
    let data = out.iter().map(|&i| &s.iocs[i].ioc).collect();
    axum::Json(Created { data }).into_response()
}

fn list(s: &mut Inner, query: &str) -> Response {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    if get("groupIds").is_some() {
        return s1_error(
            400,
            4_000_010,
            "Validation Error",
            Some("groupIds: Unknown field."),
        );
    }
    let split = |k: &str| {
        get(k)
            .map(|v| v.split(',').map(str::to_string).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let (accounts, sites, uuids) = (split("accountIds"), split("siteIds"), split("uuids"));
    if let Some(resp) = scope_denied(s, &accounts, &sites) {
        return resp;
    }
    let limit = match get("limit").map(|l| l.parse::<usize>()) {
        None => 1000,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        _ => {
            return s1_error(
                400,
                4_000_010,
                "Validation Error",
                Some("limit: Must be between 1 and 1000."),
            )
        }
    };
    let offset = match get("cursor") {
        None => 0,
        Some(c) => match c
            .strip_prefix("cur-")
            .and_then(|h| usize::from_str_radix(h, 16).ok())
        {
            Some(o) => o,
            None => {
                return s1_error(
                    400,
                    4_000_010,
                    "Validation Error",
                    Some("cursor: Invalid cursor."),
                )
            }
        },
    };
    let field = |st: &Stored, k: &str| {
        st.ioc
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    // Each parameter read once per request, not once per stored IOC: a listing of a million IOCs
    // pages a thousand times.
    let (value, external_id, kind, source) =
        (get("value"), get("externalId"), get("type"), get("source"));
    let needles: Vec<(&str, String)> = [
        ("name", "name__contains"),
        ("description", "description__contains"),
        ("creator", "creator__contains"),
    ]
    .into_iter()
    .filter_map(|(k, param)| get(param).map(|n| (k, n.to_lowercase())))
    .collect();
    let is = |st: &Stored, k: &str, want: &Option<String>| {
        want.as_deref()
            .is_none_or(|v| st.ioc.get(k).and_then(Value::as_str).unwrap_or("") == v)
    };
    let matches = |st: &Stored| {
        in_scope(st, &accounts, &sites, &[])
            && is(st, "value", &value)
            && is(st, "externalId", &external_id)
            && kind.as_deref().is_none_or(|v| {
                st.ioc
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .eq_ignore_ascii_case(v)
            })
            && is(st, "source", &source)
            && (uuids.is_empty() || uuids.contains(&field(st, "uuid")))
            && needles
                .iter()
                .all(|(k, n)| field(st, k).to_lowercase().contains(n.as_str()))
    };
    // The cursor is the position in the store to resume from, so a page costs its own length,
    // not the whole store again; the total is counted once per listing (and store size).
    let size = limit.min(s.page_cap);
    let mut page: Vec<Value> = Vec::with_capacity(size);
    let mut resume = None;
    for (at, st) in s.iocs.iter().enumerate().skip(offset) {
        if !matches(st) {
            continue;
        }
        if page.len() == size {
            resume = Some(at);
            break;
        }
        page.push(Value::Object(st.ioc.clone()));
    }
    let listing: String = pairs
        .iter()
        .filter(|(k, _)| k != "cursor")
        .map(|(k, v)| format!("{k}={v}&"))
        .collect();
    let total = match &s.list_total {
        Some((q, len, total)) if *q == listing && *len == s.iocs.len() => *total,
        _ => s.iocs.iter().filter(|st| matches(st)).count(),
    };
    let len = s.iocs.len();
    s.list_total = Some((listing, len, total));
    let next = resume.map(|at| match get("cursor") {
        Some(c) if s.repeat_cursor => c,
        _ => format!("cur-{at:x}"),
    });
    axum::Json(json!({
        "data": page,
        "pagination": {"nextCursor": next, "totalItems": total}
    }))
    .into_response()
}

fn delete(s: &mut Inner, body: Option<Value>) -> Response {
    let WriteScope(accounts, sites, groups) = match write_scope(s, &body) {
        Ok(scope) => scope,
        Err(resp) => return *resp,
    };
    let filter = body
        .as_ref()
        .and_then(|b| b.get("filter"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let uuids = ids(filter.get("uuids"));
    let values = ids(filter.get("value"));
    let external = ids(filter.get("externalId"));
    if uuids.is_empty() && values.is_empty() && external.is_empty() {
        // Real S1 might delete the whole scope here; the fake refuses so a test would notice.
        return s1_error(
            400,
            4_000_010,
            "Validation Error",
            Some("filter: a selector is required"),
        );
    }
    let field = |st: &Stored, k: &str| {
        st.ioc
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let before = s.iocs.len();
    s.iocs.retain(|st| {
        let selected = in_scope(st, &accounts, &sites, &groups)
            && (uuids.is_empty() || uuids.contains(&field(st, "uuid")))
            && (values.is_empty() || values.contains(&field(st, "value")))
            && (external.is_empty() || external.contains(&field(st, "externalId")));
        !selected
    });
    let affected = before - s.iocs.len();
    axum::Json(json!({"data": {"affected": affected}})).into_response()
}

//! An in-process fake of Sekoia.io's IOC collection API (protocols.md §2), for tests: both path
//! prefixes (`/v2/inthreat` and `/api/v2/inthreat`), Bearer auth, the collection lookup, the JSON
//! import, the text import (202, never used by the sink), the `term` search (substring, revoked items
//! included, `limit`/`offset` paging), the soft-revoke DELETE, fault injection (429, 5xx, slow
//! answers, resets) and a request journal. Deterministic: ids come from a seeded counter, faults from
//! counters.
//!
//! By default it does only what Sekoia documents, in the least convenient way the docs allow: the
//! import requires `default_fields` (one description / validity end / kill chain for the whole
//! call), reads nothing per item but `value` and `valid_from`, takes at most 100 items and answers
//! `{"items": [{"value", "result"}], "total"}` without indicator ids; a search answers pages shorter
//! than the `limit` asked for. [`FakeSekoia::set_rich`] switches on the richer, undocumented
//! behaviour (per-item fields honoured, full indicators with ids in the answer, full pages) for the
//! tests that need it.
//!
//! Used by test binaries through `#[path = "fakes/sekoia.rs"] mod sekoia_fake;`.
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

/// The key a fresh fake accepts.
pub const TOKEN: &str = "sekoia-test-key-0123456789abcdef";
/// The uuid of the one collection the fake holds.
pub const COLLECTION: &str = "6f1c2d3e-4a5b-4c6d-8e7f-901234567890";
/// The path prefix of the global API.
pub const PREFIX: &str = "/v2/inthreat";
/// The path prefix of regional consoles.
pub const REGIONAL_PREFIX: &str = "/api/v2/inthreat";
/// Most indicators per JSON import.
pub const MAX_IMPORT: usize = 100;
/// Longest description Sekoia accepts.
pub const MAX_DESCRIPTION: usize = 500;
/// Most items a search page holds by default, whatever `limit` asks (a short page is not the end).
pub const DEFAULT_PAGE_CAP: usize = 25;

/// The collection id with its prefix.
pub fn collection_id() -> String {
    format!("ioc-collection--{COLLECTION}")
}

/// A fault to inject instead of (or before) the normal answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// 429, with `Retry-After: <secs>` when given.
    RateLimit(Option<u64>),
    /// This status with a Sekoia-shaped error body (use for 5xx, 403…).
    Status(u16),
    /// Wait this long, then answer normally.
    Slow(Duration),
    /// Break the connection instead of sending a body.
    Reset,
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

impl Recorded {
    /// One decoded query parameter.
    pub fn param(&self, key: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_deref().unwrap_or("").as_bytes())
            .into_owned()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

#[derive(Debug, Clone)]
struct Stored {
    value: String,
    json: Map<String, Value>,
}

impl Stored {
    fn id(&self) -> &str {
        self.json.get("id").and_then(Value::as_str).unwrap_or("")
    }

    fn revoked(&self) -> bool {
        self.json
            .get("revoked")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

#[derive(Debug)]
struct Inner {
    token: String,
    name_offenders: bool,
    merge_existing: bool,
    deny_writes: bool,
    /// Honour per-item description / validity end / kill chain and answer full indicators with ids.
    rich: bool,
    /// Most items per search page, whatever the `limit`.
    page_cap: usize,
    items: Vec<Stored>,
    journal: Vec<Recorded>,
    next_failures: VecDeque<Failure>,
    every: Option<(u64, Failure)>,
    /// `every` picks positions pseudo-randomly instead of periodically.
    scattered: bool,
    requests: u64,
    seed: u64,
    counter: u64,
    tasks: u64,
}

type Shared = Arc<Mutex<Inner>>;

fn lock(s: &Shared) -> MutexGuard<'_, Inner> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running fake. Dropping it stops the server.
pub struct FakeSekoia {
    url: String,
    state: Shared,
    _served: server::Served,
}

/// Starts a fake on 127.0.0.1 (random port) accepting [`TOKEN`], id seed 1.
pub async fn start() -> FakeSekoia {
    start_seeded(1).await
}

/// Starts a fake whose indicator ids derive from `seed`.
pub async fn start_seeded(seed: u64) -> FakeSekoia {
    let state: Shared = Arc::new(Mutex::new(Inner {
        token: TOKEN.to_string(),
        name_offenders: true,
        merge_existing: false,
        deny_writes: false,
        rich: false,
        page_cap: DEFAULT_PAGE_CAP,
        items: Vec::new(),
        journal: Vec::new(),
        next_failures: VecDeque::new(),
        every: None,
        scattered: false,
        requests: 0,
        seed,
        counter: 0,
        tasks: 0,
    }));
    let app = Router::new().fallback(handle).with_state(state.clone());
    let served = server::serve(app, "fake Sekoia").await;
    FakeSekoia {
        url: served.url.clone(),
        state,
        _served: served,
    }
}

impl FakeSekoia {
    /// The server root (no trailing slash); the API is at `{url}/v2/inthreat` and
    /// `{url}/api/v2/inthreat`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Changes the accepted key.
    pub fn set_token(&self, token: &str) {
        lock(&self.state).token = token.to_string();
    }

    /// When true (the default), an import 400 names the bad values; when false it names none.
    pub fn set_name_offenders(&self, name: bool) {
        lock(&self.state).name_offenders = name;
    }

    /// When true, importing a value that a live indicator already holds returns that indicator
    /// instead of creating one (Sekoia's de-duplication behaviour is unconfirmed; the default creates).
    pub fn set_merge_existing(&self, merge: bool) {
        lock(&self.state).merge_existing = merge;
    }

    /// When true, the fake goes beyond Sekoia's documentation the way an earlier version of
    /// protocols.md described it: per-item `description`, `valid_until` and `kill_chain_phases` are
    /// honoured (over `default_fields`, which becomes optional), the import answers full indicators
    /// with their `id`, and search pages are as long as `limit` asks.
    pub fn set_rich(&self, rich: bool) {
        let mut s = lock(&self.state);
        s.rich = rich;
        s.page_cap = if rich { usize::MAX } else { DEFAULT_PAGE_CAP };
    }

    /// Most items per search page, whatever `limit` asks.
    pub fn set_page_cap(&self, cap: usize) {
        lock(&self.state).page_cap = cap.max(1);
    }

    /// When true, imports and revokes get 403 (a read-only key).
    pub fn deny_writes(&self, deny: bool) {
        lock(&self.state).deny_writes = deny;
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
        lock(&self.state).every = (k > 0).then_some((k, failure));
        lock(&self.state).scattered = false;
    }

    /// About one request in `k` fails this way, at pseudo-random (seeded, reproducible) positions:
    /// unlike [`FakeSekoia::fail_every`], the faults cannot fall into step with a client's retry
    /// cycle and hit the same call forever, which a real outage never does.
    pub fn fail_scattered(&self, k: u64, failure: Failure) {
        lock(&self.state).every = (k > 0).then_some((k, failure));
        lock(&self.state).scattered = true;
    }

    /// Removes every pending fault.
    pub fn clear_failures(&self) {
        let mut s = lock(&self.state);
        s.next_failures.clear();
        s.every = None;
    }

    /// Stored indicators, as the API returns them, in creation order.
    pub fn items(&self) -> Vec<Value> {
        lock(&self.state)
            .items
            .iter()
            .map(|s| Value::Object(s.json.clone()))
            .collect()
    }

    /// One stored indicator.
    pub fn item(&self, id: &str) -> Option<Value> {
        lock(&self.state)
            .items
            .iter()
            .find(|s| s.id() == id)
            .map(|s| Value::Object(s.json.clone()))
    }

    /// Ids of the live (non-revoked) indicators holding exactly `value`.
    pub fn live_ids(&self, value: &str) -> Vec<String> {
        lock(&self.state)
            .items
            .iter()
            .filter(|s| s.value == value && !s.revoked())
            .map(|s| s.id().to_string())
            .collect()
    }

    /// Stores an indicator directly (as if created earlier by someone); returns its id.
    pub fn insert(&self, value: &str, description: &str, revoked: bool) -> String {
        let mut s = lock(&self.state);
        let item = json!({"value": value, "description": description});
        let mut stored = s.new_item(value, item.as_object().expect("object"));
        stored.json.insert("revoked".into(), json!(revoked));
        let id = stored.id().to_string();
        s.items.push(stored);
        id
    }

    /// Revokes an indicator by hand, as an analyst would in Sekoia's console; false when no
    /// indicator has this id.
    pub fn revoke(&self, id: &str) -> bool {
        let mut s = lock(&self.state);
        match s.items.iter_mut().find(|st| st.id() == id) {
            Some(item) => {
                item.json.insert("revoked".into(), json!(true));
                true
            }
            None => false,
        }
    }

    /// Empties the collection, as a purge in Sekoia's console would (nothing left, not even
    /// revoked indicators).
    pub fn purge(&self) {
        lock(&self.state).items.clear();
    }

    /// Every request so far.
    pub fn journal(&self) -> Vec<Recorded> {
        lock(&self.state).journal.clone()
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

/// What the fake thinks a value is, as a STIX pattern; `None` when Sekoia would refuse it.
fn pattern_for(value: &str) -> Option<String> {
    let hex = |n: usize| value.len() == n && value.bytes().all(|b| b.is_ascii_hexdigit());
    let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
    let path = if value.parse::<std::net::Ipv4Addr>().is_ok() {
        "ipv4-addr:value".to_string()
    } else if value.parse::<std::net::Ipv6Addr>().is_ok() {
        "ipv6-addr:value".to_string()
    } else if hex(32) {
        "file:hashes.'MD5'".to_string()
    } else if hex(40) {
        "file:hashes.'SHA-1'".to_string()
    } else if hex(64) {
        "file:hashes.'SHA-256'".to_string()
    } else if value.contains("://") {
        if value.contains(char::is_whitespace) || value.len() > 2048 {
            return None;
        }
        "url:value".to_string()
    } else if value.contains('@') {
        "email-addr:value".to_string()
    } else if value.contains('.')
        && value.len() <= 253
        && value.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
    {
        "domain-name:value".to_string()
    } else {
        return None;
    };
    Some(format!("[{path} = '{quoted}']"))
}

fn parse_time(v: Option<&Value>) -> Result<Option<DateTime<Utc>>, ()> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| ()),
        Some(_) => Err(()),
    }
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The reason Sekoia would refuse the call-wide part of an import (`default_fields`), if any.
fn defaults_problem(fields: &Map<String, Value>) -> Option<&'static str> {
    if fields
        .get("description")
        .is_some_and(|d| !d.is_string() && !d.is_null())
    {
        return Some("description must be a string");
    }
    if fields
        .get("description")
        .and_then(Value::as_str)
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION)
    {
        return Some("description longer than 500 characters");
    }
    if parse_time(fields.get("valid_until")).is_err() {
        return Some("invalid date");
    }
    let phases_ok = match fields.get("kill_chain_phases") {
        None | Some(Value::Null) => true,
        Some(Value::Array(p)) => p.iter().all(|k| {
            k.get("kill_chain_name").and_then(Value::as_str).is_some()
                && k.get("phase_name").and_then(Value::as_str).is_some()
        }),
        Some(_) => false,
    };
    if !phases_ok {
        return Some("invalid kill_chain_phases");
    }
    match fields.get("x_ic_related_threat_refs") {
        None | Some(Value::Null) => None,
        Some(Value::Array(r)) if r.iter().all(Value::is_string) => None,
        Some(_) => Some("invalid x_ic_related_threat_refs"),
    }
}

/// The reason Sekoia would refuse this import item (its fields merged over the defaults), if any.
fn item_problem(item: &Map<String, Value>) -> Option<&'static str> {
    let value = item.get("value").and_then(Value::as_str).unwrap_or("");
    if pattern_for(value).is_none() {
        return Some("invalid value");
    }
    if let Some(p) = defaults_problem(item) {
        return Some(p);
    }
    let (Ok(from), Ok(until)) = (
        parse_time(item.get("valid_from")),
        parse_time(item.get("valid_until")),
    ) else {
        return Some("invalid date");
    };
    match (from, until) {
        (Some(f), Some(u)) if u <= f => Some("valid_until must be after valid_from"),
        _ => None,
    }
}

/// What one import item becomes: `default_fields`, then the item's own `value` and `valid_from`,
/// then (rich mode only) its own description, validity end and kill chain phases. Documented mode
/// drops every other per-item field, as Sekoia's body schema has no place for them.
fn merged_item(
    defaults: &Map<String, Value>,
    item: &Map<String, Value>,
    rich: bool,
) -> Map<String, Value> {
    let mut out = Map::new();
    for key in [
        "description",
        "valid_until",
        "kill_chain_phases",
        "x_ic_related_threat_refs",
    ] {
        if let Some(v) = item.get(key).filter(|_| rich).or_else(|| defaults.get(key)) {
            out.insert(key.into(), v.clone());
        }
    }
    for key in ["value", "valid_from"] {
        if let Some(v) = item.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    out
}

impl Inner {
    fn next_id(&mut self) -> String {
        self.counter += 1;
        let a = splitmix(self.seed ^ self.counter.wrapping_mul(2));
        let b = splitmix(a ^ self.counter);
        let h = format!("{a:016x}{b:016x}");
        format!(
            "indicator--{}-{}-4{}-a{}-{}",
            &h[..8],
            &h[8..12],
            &h[13..16],
            &h[17..20],
            &h[20..32]
        )
    }

    /// A new stored indicator from an (already validated) import item.
    fn new_item(&mut self, value: &str, item: &Map<String, Value>) -> Stored {
        let now = Utc::now();
        let valid_from = parse_time(item.get("valid_from"))
            .ok()
            .flatten()
            .unwrap_or(now);
        let mut json = Map::new();
        json.insert("id".into(), json!(self.next_id()));
        json.insert("type".into(), json!("indicator"));
        json.insert("spec_version".into(), json!("2.1"));
        json.insert(
            "pattern".into(),
            json!(pattern_for(value).unwrap_or_default()),
        );
        json.insert("pattern_type".into(), json!("stix"));
        json.insert("name".into(), json!(value));
        json.insert("x_inthreat_short_display".into(), json!(value));
        json.insert("created".into(), json!(iso(now)));
        json.insert("modified".into(), json!(iso(now)));
        json.insert("valid_from".into(), json!(iso(valid_from)));
        if let Ok(Some(until)) = parse_time(item.get("valid_until")) {
            json.insert("valid_until".into(), json!(iso(until)));
        }
        for key in [
            "description",
            "kill_chain_phases",
            "x_ic_related_threat_refs",
        ] {
            if let Some(v) = item.get(key).filter(|v| !v.is_null()) {
                json.insert(key.into(), v.clone());
            }
        }
        json.insert("revoked".into(), json!(false));
        Stored {
            value: value.to_string(),
            json,
        }
    }
}

fn error(status: u16, message: &str, code: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        axum::Json(json!({"message": message, "code": code})),
    )
        .into_response()
}

fn reset_response() -> Response {
    let stream = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "fake Sekoia reset the connection",
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
    let json_body = (!body.is_empty()).then(|| {
        serde_json::from_slice::<Value>(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
    });
    let failure = {
        let mut s = lock(&state);
        s.journal.push(Recorded {
            method: method.to_string(),
            path: uri.path().to_string(),
            query: uri.query().map(str::to_string),
            auth: auth.clone(),
            body: json_body.clone(),
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
            let mut resp = error(429, "Too many requests", "TOO_MANY_REQUESTS");
            if let Some(secs) = after {
                resp.headers_mut().insert(
                    "retry-after",
                    secs.to_string().parse().expect("header value"),
                );
            }
            return resp;
        }
        Some(Failure::Status(status)) => {
            return error(status, &format!("Injected failure {status}"), "INJECTED")
        }
        Some(Failure::Reset) => return reset_response(),
        Some(Failure::Slow(d)) => tokio::time::sleep(d).await,
        None => {}
    }

    let path = uri.path();
    let Some(rest) = path
        .strip_prefix(REGIONAL_PREFIX)
        .or_else(|| path.strip_prefix(PREFIX))
    else {
        return error(404, "Not Found", "NOT_FOUND");
    };
    // Strict routing: a doubled or trailing slash is an empty segment, hence a 404.
    let segments: Vec<&str> = rest.split('/').skip(1).collect();
    if !rest.starts_with('/') || segments.iter().any(|s| s.is_empty()) {
        return error(404, "Not Found", "NOT_FOUND");
    }
    let token_ok = auth
        .as_deref()
        .and_then(|a| a.split_once(' '))
        .is_some_and(|(scheme, tok)| {
            scheme.eq_ignore_ascii_case("bearer") && tok == lock(&state).token
        });
    if !token_ok {
        return error(401, "The API key is invalid or expired", "UNAUTHORIZED");
    }
    let mut s = lock(&state);
    let (collection, tail) = match segments.as_slice() {
        ["ioc-collections", c, tail @ ..] => (*c, tail),
        _ => return error(404, "Not Found", "NOT_FOUND"),
    };
    if collection != collection_id() {
        return error(404, "IOC Collection not found", "IOC_COLLECTION_NOT_FOUND");
    }
    let write = matches!(method, Method::POST | Method::DELETE);
    if write && s.deny_writes {
        return error(
            403,
            "Forbidden: the API key lacks the permission to manage IOC collections",
            "FORBIDDEN",
        );
    }
    match (method, tail) {
        (Method::GET, []) => axum::Json(json!({
            "id": collection_id(),
            "name": "iocsync tests",
            "description": "fake collection",
        }))
        .into_response(),
        (Method::POST, ["indicators"]) => import(&mut s, json_body),
        (Method::GET, ["indicators"]) => search(&s, uri.query().unwrap_or("")),
        (Method::POST, ["indicators", "text"]) => {
            s.tasks += 1;
            (
                StatusCode::ACCEPTED,
                axum::Json(json!({"task_id": format!("task-{}", s.tasks)})),
            )
                .into_response()
        }
        (Method::DELETE, ["indicators", id]) => revoke(&mut s, id),
        _ => error(405, "Method Not Allowed", "METHOD_NOT_ALLOWED"),
    }
}

fn import(s: &mut Inner, body: Option<Value>) -> Response {
    let items = body
        .as_ref()
        .and_then(|b| b.get("indicators"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if items.is_empty() || items.len() > MAX_IMPORT {
        return error(
            400,
            &format!("indicators: must contain between 1 and {MAX_IMPORT} items"),
            "INVALID_REQUEST",
        );
    }
    // Sekoia's schema: `required: ["indicators", "default_fields"]`.
    let defaults = match body.as_ref().and_then(|b| b.get("default_fields")) {
        Some(Value::Object(d)) => d.clone(),
        None if s.rich => Map::new(),
        _ => {
            return error(
                400,
                "default_fields: this field is required and must be an object",
                "INVALID_REQUEST",
            )
        }
    };
    if let Some(problem) = defaults_problem(&defaults) {
        return error(
            400,
            &format!("default_fields: {problem}"),
            "INVALID_REQUEST",
        );
    }
    let merged: Vec<Option<Map<String, Value>>> = items
        .iter()
        .map(|i| i.as_object().map(|i| merged_item(&defaults, i, s.rich)))
        .collect();
    let bad: Vec<String> = items
        .iter()
        .zip(&merged)
        .filter_map(|(raw, m)| {
            let problem = match m {
                Some(m) => item_problem(m)?,
                None => "not an object",
            };
            let v = raw.get("value").and_then(Value::as_str).unwrap_or("");
            Some(format!("'{v}' ({problem})"))
        })
        .collect();
    if !bad.is_empty() {
        let message = if s.name_offenders {
            format!("Invalid indicators: {}", bad.join(", "))
        } else {
            "Invalid indicators in the request".to_string()
        };
        return error(400, &message, "INVALID_INDICATORS");
    }
    let mut out = Vec::new();
    for item in merged.into_iter().flatten() {
        let value = item
            .get("value")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let existing = s
            .items
            .iter()
            .find(|st| s.merge_existing && st.value == value && !st.revoked())
            .map(|st| st.json.clone());
        let (json, result) = match existing {
            Some(json) => (json, "existing"),
            None => {
                let stored = s.new_item(&value, &item);
                let json = stored.json.clone();
                s.items.push(stored);
                (json, "created")
            }
        };
        if s.rich {
            out.push(Value::Object(json));
        } else {
            // The documented answer: no indicator id, so the caller must search for it.
            out.push(json!({"value": value, "result": result}));
        }
    }
    let total = out.len();
    axum::Json(json!({"items": out, "total": total})).into_response()
}

fn search(s: &Inner, query: &str) -> Response {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let number = |k: &str, default: usize| get(k).map_or(Ok(default), |v| v.parse::<usize>());
    let (Ok(limit), Ok(offset)) = (number("limit", 20), number("offset", 0)) else {
        return error(400, "limit and offset must be integers", "INVALID_REQUEST");
    };
    if limit == 0 || limit > 100 {
        return error(400, "limit: must be between 1 and 100", "INVALID_REQUEST");
    }
    // A text search: every indicator whose value contains the term, revoked ones included.
    let term = get("term").unwrap_or_default().to_lowercase();
    let matching: Vec<&Stored> = s
        .items
        .iter()
        .filter(|st| st.value.to_lowercase().contains(&term))
        .collect();
    // `limit` is an upper bound, not a promise: pages may come back shorter while more follow.
    let page: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(limit.min(s.page_cap))
        .map(|st| Value::Object(st.json.clone()))
        .collect();
    axum::Json(json!({"items": page, "total": matching.len()})).into_response()
}

fn revoke(s: &mut Inner, id: &str) -> Response {
    let Some(item) = s.items.iter_mut().find(|st| st.id() == id) else {
        return error(404, "Indicator not found", "INDICATOR_NOT_FOUND");
    };
    // Soft delete: the indicator stays, revoked, and is still found by searches.
    item.json.insert("revoked".into(), json!(true));
    item.json.insert("modified".into(), json!(iso(Utc::now())));
    StatusCode::NO_CONTENT.into_response()
}

/// Days between now and an RFC 3339 time (for validity assertions).
pub fn days_from_now(iso_time: &str) -> i64 {
    let t = DateTime::parse_from_rfc3339(iso_time).expect("RFC 3339 time");
    (t.with_timezone(&Utc) - Utc::now() + Days::hours(1)).num_days()
}

//! An in-process fake of the MISP REST API (protocols.md §5), for tests: `attributes/restSearch`
//! with the body filters iocsync sends (type, timestamp ≥, deleted, to_ids, tags with `!`
//! negation, org, published, enforceWarninglist, includeEventTags/Uuid, order, limit + page),
//! `GET /feeds`, `GET /servers/getVersion`, raw-key auth (403 "Authentication failed" otherwise),
//! numbers as strings like real MISP, old-style "0"/"1" booleans on demand, soft and hard deletes,
//! deleted events, fault injection (5xx, 429, connection resets, periodic or scattered), slow pages
//! and a journal of every request.
//!
//! Where the documentation leaves MISP's behaviour open, the fake picks the least convenient
//! reading (protocols.md §5 "Paging"):
//! - the warninglist is applied **after** `limit`/`page` cut the page, so a page can come back
//!   shorter than `limit` (even empty) while more pages follow;
//! - without `order` the rows come in modification order (timestamp, then id), as an unordered
//!   query through the timestamp index does: an attribute edited between two page reads moves to
//!   the end, so pages overlap and skip;
//! - `X-Result-Count` / `X-Skipped-Elements-Count` are only sent when a test asks for them;
//! - the fake has its own clock ([`MispHandle::set_clock`]): attribute timestamps and the `Date`
//!   header come from it, and an answer is dated when it is sent, after the query ran (a hook run
//!   between the two, [`MispHandle::during_page`], can edit attributes and move the clock, as
//!   edits racing a slow page do on a real server).
//!
//! Used by several test binaries through `#[path = "fakes/misp.rs"] mod misp_fake;`.

#![allow(dead_code)]

// Each fake is a module of its own in the tests that include it, so a test using two fakes
// loads the shared plumbing twice.
#[allow(clippy::duplicate_mod)]
#[path = "server.rs"]
mod server;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The key a fresh fake accepts.
pub const KEY: &str = "misp-fake-key-0123456789abcdefghijklmnop";

/// An injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// This status with MISP's error body (use for 5xx).
    Status(u16),
    /// 429, with `Retry-After: <secs>` when given.
    RateLimit(Option<u64>),
    /// Do the work (run the query and its hook), then break the connection instead of sending the
    /// body: the server did its part, the client never sees it.
    Reset,
}

/// Picks the `restSearch` bodies to fail, and the status they get.
pub type SearchFault = Box<dyn Fn(&Value) -> Option<u16> + Send>;

/// An edit run inside a `restSearch`, after the page was selected and before it is answered.
pub type PageHook = Box<dyn FnOnce(&MispHandle) + Send>;

/// One request as the fake received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// `GET`, `POST`.
    pub method: String,
    /// The raw path.
    pub path: String,
    /// The `Authorization` header.
    pub auth: Option<String>,
    /// The `Accept` header.
    pub accept: Option<String>,
    /// The JSON body.
    pub body: Option<Value>,
}

/// A MISP event.
#[derive(Debug, Clone)]
pub struct Event {
    /// Id.
    pub id: u64,
    /// Uuid.
    pub uuid: String,
    /// Title.
    pub info: String,
    /// Creator org id.
    pub orgc_id: u64,
    /// Published.
    pub published: bool,
    /// Event tags: (tag id, name).
    pub tags: Vec<(u64, String)>,
}

/// A MISP attribute.
#[derive(Debug, Clone)]
pub struct Attr {
    /// Id.
    pub id: u64,
    /// Event id.
    pub event_id: u64,
    /// Uuid.
    pub uuid: String,
    /// Type.
    pub kind: String,
    /// Value.
    pub value: String,
    /// IDS flag.
    pub to_ids: bool,
    /// Soft-deleted.
    pub deleted: bool,
    /// Unix seconds.
    pub timestamp: i64,
    /// Comment.
    pub comment: String,
    /// Attribute tags: (tag id, name).
    pub tags: Vec<(u64, String)>,
}

struct Inner {
    key: String,
    events: BTreeMap<u64, Event>,
    attrs: BTreeMap<u64, Attr>,
    orgs: BTreeMap<u64, String>,
    feeds: Vec<Value>,
    warninglist: BTreeSet<String>,
    journal: Vec<Recorded>,
    next_failures: VecDeque<u16>,
    failing_pages_from: Option<(u64, u16)>,
    /// Fails the `restSearch` bodies this picks (a status) — e.g. only the resync's listing.
    failing_searches: Option<SearchFault>,
    /// Every request whose pseudo-random draw (seeded by its number) hits 1 in `k` fails.
    scattered: Option<(u64, Vec<Failure>)>,
    requests: u64,
    page_delay: Duration,
    ignore_type_filter: bool,
    old_booleans: bool,
    count_headers: bool,
    /// Frozen clock (unix seconds); `None` follows the wall clock.
    clock: Option<i64>,
    /// One-shot edits keyed by page number, run by the first search of that page that is answered
    /// (or reset after the work was done).
    hooks: BTreeMap<u64, PageHook>,
    counter: u64,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("attrs", &self.attrs.len())
            .field("requests", &self.requests)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn now(&self) -> i64 {
        self.clock.unwrap_or_else(now)
    }
}

type Shared = Arc<Mutex<Inner>>;

fn lock(s: &Shared) -> MutexGuard<'_, Inner> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// Now, in unix seconds.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A running fake. Dropping it stops the server. Its data and knobs are those of its
/// [`MispHandle`] (reached through `Deref`).
pub struct FakeMisp {
    url: String,
    handle: MispHandle,
    _served: server::Served,
}

/// The fake's data and knobs; page hooks receive one to edit attributes mid-request.
#[derive(Clone)]
pub struct MispHandle {
    state: Shared,
}

impl std::ops::Deref for FakeMisp {
    type Target = MispHandle;
    fn deref(&self) -> &MispHandle {
        &self.handle
    }
}

impl FakeMisp {
    /// Starts a fake on 127.0.0.1 (random port) accepting [`KEY`].
    pub async fn start() -> FakeMisp {
        let state: Shared = Arc::new(Mutex::new(Inner {
            key: KEY.to_string(),
            events: BTreeMap::new(),
            attrs: BTreeMap::new(),
            orgs: BTreeMap::from([(1, "ORGNAME".to_string())]),
            feeds: Vec::new(),
            warninglist: BTreeSet::new(),
            journal: Vec::new(),
            next_failures: VecDeque::new(),
            failing_pages_from: None,
            failing_searches: None,
            scattered: None,
            requests: 0,
            page_delay: Duration::ZERO,
            ignore_type_filter: false,
            old_booleans: false,
            count_headers: false,
            clock: None,
            hooks: BTreeMap::new(),
            counter: 0,
        }));
        let app = Router::new().fallback(handle).with_state(state.clone());
        let served = server::serve(app, "fake MISP").await;
        FakeMisp {
            url: served.url.clone(),
            handle: MispHandle { state },
            _served: served,
        }
    }

    /// The base URL (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl MispHandle {
    /// Freezes the fake's clock at `t` (unix seconds): attribute changes and `Date` use it.
    pub fn set_clock(&self, t: i64) {
        lock(&self.state).clock = Some(t);
    }

    /// Moves the frozen clock forward (freezing it at the wall clock first if it was not).
    pub fn advance_clock(&self, secs: i64) {
        let mut s = lock(&self.state);
        let t = s.now();
        s.clock = Some(t + secs);
    }

    /// The fake's current time, unix seconds.
    pub fn clock(&self) -> i64 {
        lock(&self.state).now()
    }

    /// Runs `edit` inside the first `restSearch` for `page` that does the work: after its rows were
    /// selected, before the answer is dated and sent.
    pub fn during_page(&self, page: u64, edit: impl FnOnce(&MispHandle) + Send + 'static) {
        lock(&self.state).hooks.insert(page, Box::new(edit));
    }

    /// Whether every hook set with [`during_page`](Self::during_page) has run.
    pub fn hooks_done(&self) -> bool {
        lock(&self.state).hooks.is_empty()
    }

    /// Sends `X-Result-Count` (rows in the answer) and `X-Skipped-Elements-Count` (rows of the page
    /// the warninglist removed) with every `restSearch` answer.
    pub fn set_count_headers(&self, on: bool) {
        lock(&self.state).count_headers = on;
    }

    /// About one request in `k` (chosen pseudo-randomly from its number, so faults cannot fall in
    /// step with a client's retries) fails with one of `failures`, in turn; `None` stops it.
    pub fn fail_scattered(&self, faults: Option<(u64, &[Failure])>) {
        lock(&self.state).scattered = faults.map(|(k, f)| (k.max(1), f.to_vec()));
    }

    /// Fails the `restSearch` requests whose body `pick` answers a status for; `None` stops it.
    pub fn fail_searches(&self, pick: Option<SearchFault>) {
        lock(&self.state).failing_searches = pick;
    }

    /// Changes the accepted key.
    pub fn set_key(&self, key: &str) {
        lock(&self.state).key = key.to_string();
    }

    /// Names an organisation (for the `org` filter by name).
    pub fn add_org(&self, id: u64, name: &str) {
        lock(&self.state).orgs.insert(id, name.to_string());
    }

    /// Creates a published event; returns its id.
    pub fn add_event(&self, info: &str, orgc_id: u64, tags: &[(u64, &str)]) -> u64 {
        let mut s = lock(&self.state);
        s.counter += 1;
        let id = s.counter;
        let uuid = uuid_for("e", id);
        s.events.insert(
            id,
            Event {
                id,
                uuid,
                info: info.to_string(),
                orgc_id,
                published: true,
                tags: tags.iter().map(|(i, n)| (*i, n.to_string())).collect(),
            },
        );
        id
    }

    /// Publishes or unpublishes an event.
    pub fn set_published(&self, event_id: u64, published: bool) {
        if let Some(e) = lock(&self.state).events.get_mut(&event_id) {
            e.published = published;
        }
    }

    /// Replaces an event's tags (MISP does not bump attribute timestamps for this).
    pub fn set_event_tags(&self, event_id: u64, tags: &[(u64, &str)]) {
        if let Some(e) = lock(&self.state).events.get_mut(&event_id) {
            e.tags = tags.iter().map(|(i, n)| (*i, n.to_string())).collect();
        }
    }

    /// Adds an attribute modified now; returns its uuid.
    pub fn add(&self, event_id: u64, kind: &str, value: &str, to_ids: bool) -> String {
        let t = self.clock();
        self.add_at(event_id, kind, value, to_ids, t)
    }

    /// Adds an attribute with a given modification time; returns its uuid.
    pub fn add_at(
        &self,
        event_id: u64,
        kind: &str,
        value: &str,
        to_ids: bool,
        timestamp: i64,
    ) -> String {
        let mut s = lock(&self.state);
        s.counter += 1;
        let id = s.counter;
        let uuid = uuid_for("a", id);
        s.attrs.insert(
            id,
            Attr {
                id,
                event_id,
                uuid: uuid.clone(),
                kind: kind.to_string(),
                value: value.to_string(),
                to_ids,
                deleted: false,
                timestamp,
                comment: String::new(),
                tags: Vec::new(),
            },
        );
        uuid
    }

    /// Changes an attribute (and bumps its timestamp to now, as MISP does).
    pub fn modify(&self, uuid: &str, change: impl FnOnce(&mut Attr)) {
        let mut s = lock(&self.state);
        let t = s.now();
        if let Some(a) = s.attrs.values_mut().find(|a| a.uuid == uuid) {
            change(a);
            a.timestamp = a.timestamp.max(t);
        }
    }

    /// Soft-deletes an attribute; `hardened` also rewrites its value to "deleted".
    pub fn soft_delete(&self, uuid: &str, hardened: bool) {
        self.modify(uuid, |a| {
            a.deleted = true;
            if hardened {
                a.value = "deleted".into();
            }
        });
    }

    /// Removes an attribute for good (invisible to every later search).
    pub fn hard_delete(&self, uuid: &str) {
        lock(&self.state).attrs.retain(|_, a| a.uuid != uuid);
    }

    /// Deletes an event and its attributes.
    pub fn delete_event(&self, event_id: u64) {
        let mut s = lock(&self.state);
        s.events.remove(&event_id);
        s.attrs.retain(|_, a| a.event_id != event_id);
    }

    /// Adds a feed (`{"Feed": {...}}` is built from these fields, values as strings).
    pub fn add_feed(&self, id: u64, name: &str, event_id: u64, orgc_id: u64, tag_id: u64) {
        lock(&self.state).feeds.push(json!({"Feed": {
            "id": id.to_string(), "name": name, "provider": format!("{name} provider"),
            "url": format!("https://feeds.example/{id}"), "enabled": true,
            "source_format": "misp", "fixed_event": event_id != 0,
            "event_id": event_id.to_string(), "orgc_id": orgc_id.to_string(),
            "tag_id": tag_id.to_string(), "distribution": "3", "sharing_group_id": "0",
        }}));
    }

    /// Puts a value on the (single) enabled warninglist.
    pub fn add_warninglist_value(&self, value: &str) {
        lock(&self.state).warninglist.insert(value.to_string());
    }

    /// The next `n` requests answer this status.
    pub fn fail_next(&self, n: usize, status: u16) {
        let mut s = lock(&self.state);
        for _ in 0..n {
            s.next_failures.push_back(status);
        }
    }

    /// Every `restSearch` for page ≥ `page` answers `status` until cleared with `None`.
    pub fn fail_pages_from(&self, failure: Option<(u64, u16)>) {
        lock(&self.state).failing_pages_from = failure;
    }

    /// Each `restSearch` answer waits this long.
    pub fn set_page_delay(&self, delay: Duration) {
        lock(&self.state).page_delay = delay;
    }

    /// Like an old server: ignore the `type` filter.
    pub fn set_ignore_type_filter(&self, ignore: bool) {
        lock(&self.state).ignore_type_filter = ignore;
    }

    /// Like an old server: booleans as "0"/"1" strings.
    pub fn set_old_booleans(&self, old: bool) {
        lock(&self.state).old_booleans = old;
    }

    /// Every request so far.
    pub fn journal(&self) -> Vec<Recorded> {
        lock(&self.state).journal.clone()
    }

    /// The bodies of every `restSearch` so far.
    pub fn searches(&self) -> Vec<Value> {
        self.journal()
            .into_iter()
            .filter(|r| r.path == "/attributes/restSearch")
            .filter_map(|r| r.body)
            .collect()
    }

    /// Forgets the journal.
    pub fn clear_journal(&self) {
        lock(&self.state).journal.clear();
    }
}

/// A deterministic uuid per object.
fn uuid_for(prefix: &str, n: u64) -> String {
    let tag = if prefix == "e" { 0xe } else { 0xa };
    format!("{:08x}-0000-4000-8000-{:012x}", tag, n)
}

fn misp_error(status: StatusCode, name: &str, url: &str) -> Response {
    (
        status,
        [("content-type", "application/json")],
        json!({"name": name, "message": name, "url": url}).to_string(),
    )
        .into_response()
}

async fn handle(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = answer(&state, method, uri, headers, body).await;
    // Dated when sent, on the fake's clock (hyper keeps a `Date` the handler set).
    dated(&state, response)
}

async fn answer(
    state: &Shared,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let parsed: Option<Value> = if body.is_empty() {
        None
    } else {
        Some(
            serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into())),
        )
    };
    let path = uri.path().to_string();
    let (delay, fault) = {
        let mut s = lock(state);
        s.journal.push(Recorded {
            method: method.to_string(),
            path: path.clone(),
            auth: header("authorization"),
            accept: header("accept"),
            body: parsed.clone(),
        });
        if header("authorization").as_deref() != Some(s.key.as_str()) {
            return misp_error(
                StatusCode::FORBIDDEN,
                "Authentication failed. Please make sure you pass the API key of an API enabled user along in the Authorization header.",
                &path,
            );
        }
        if let Some(status) = s.next_failures.pop_front() {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return misp_error(status, "An Internal Error Has Occurred.", &path);
        }
        s.requests += 1;
        let n = s.requests;
        let fault = match &s.scattered {
            Some((k, failures)) if !failures.is_empty() && splitmix(n) % k == 0 => {
                Some(failures[(splitmix(n ^ 0x5eed) % failures.len() as u64) as usize])
            }
            _ => None,
        };
        (s.page_delay, fault)
    };
    match fault {
        Some(Failure::Status(status)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return misp_error(status, "An Internal Error Has Occurred.", &path);
        }
        Some(Failure::RateLimit(after)) => {
            let mut resp = misp_error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests", &path);
            if let Some(secs) = after {
                if let Ok(v) = secs.to_string().parse() {
                    resp.headers_mut().insert("retry-after", v);
                }
            }
            return resp;
        }
        Some(Failure::Reset) | None => {}
    }
    let reset = fault == Some(Failure::Reset);
    let response = match (method.as_str(), path.as_str()) {
        ("GET", "/servers/getVersion") => json_response(json!({
            "version": "2.4.190", "pymisp_recommended_version": "2.4.190",
            "perm_sync": false, "perm_sighting": false, "perm_galaxy_editor": false,
            "request_encoding": ["gzip", "br"], "filter_sightings": true
        })),
        ("GET", "/feeds") | ("GET", "/feeds/index") => {
            json_response(Value::Array(lock(state).feeds.clone()))
        }
        ("POST", "/attributes/restSearch") => {
            let body = parsed.unwrap_or(json!({}));
            let page = int(body.get("page")).unwrap_or(1).max(1) as u64;
            {
                let s = lock(state);
                let status = match s.failing_pages_from {
                    Some((from, status)) if page >= from => Some(status),
                    _ => s.failing_searches.as_ref().and_then(|pick| pick(&body)),
                };
                if let Some(status) = status {
                    let status =
                        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    return misp_error(status, "An Internal Error Has Occurred.", &path);
                }
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let (rows, skipped) = search(&lock(state), &body);
            // The page is selected; edits racing its (slow) answer happen now.
            let hook = lock(state).hooks.remove(&page);
            if let Some(hook) = hook {
                hook(&MispHandle {
                    state: Arc::clone(state),
                })
            }
            let count_headers = lock(state).count_headers;
            let count = rows.len();
            let mut resp = json_response(json!({"response": {"Attribute": rows}}));
            if count_headers {
                let h = resp.headers_mut();
                if let Ok(v) = count.to_string().parse() {
                    h.insert("x-result-count", v);
                }
                if let Ok(v) = skipped.to_string().parse() {
                    h.insert("x-skipped-elements-count", v);
                }
            }
            resp
        }
        _ => misp_error(StatusCode::NOT_FOUND, "Not Found", &path),
    };
    if reset {
        return reset_response();
    }
    response
}

fn dated(state: &Shared, mut response: Response) -> Response {
    let t = lock(state).now();
    let date = chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
        .unwrap_or_default();
    if let Ok(v) = date.parse() {
        response.headers_mut().insert("date", v);
    }
    response
}

/// Headers sent, then the connection breaks before the body.
fn reset_response() -> Response {
    let stream = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "fake MISP reset the connection",
        ))
    });
    Response::new(axum::body::Body::from_stream(stream))
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn json_response(v: Value) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

fn strings(v: Option<&Value>) -> Option<Vec<String>> {
    match v? {
        Value::Array(a) => Some(
            a.iter()
                .map(|x| match x {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
        ),
        Value::String(s) => Some(vec![s.clone()]),
        Value::Number(n) => Some(vec![n.to_string()]),
        _ => None,
    }
}

/// The rows `order` names: `Attribute.id` / `id` or `Attribute.timestamp` / `timestamp`, `ASC`
/// (default) or `DESC`. Anything else, or no `order`, is MISP's unordered query: here the order
/// of the timestamp index (modification time, then id), the least convenient order for paging.
fn sort_rows(rows: &mut [&Attr], order: Option<&str>) {
    let words: Vec<String> = order
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_ascii_lowercase)
        .collect();
    let desc = words.get(1).is_some_and(|d| d == "desc");
    match words.first().map(String::as_str) {
        Some("attribute.id") | Some("id") => rows.sort_by_key(|a| a.id),
        Some("attribute.timestamp") | Some("timestamp") => {
            rows.sort_by_key(|a| (a.timestamp, a.id))
        }
        _ => {
            rows.sort_by_key(|a| (a.timestamp, a.id));
            return;
        }
    }
    if desc {
        rows.reverse();
    }
}

/// One page of the attributes a body selects, and how many rows of that page the warninglist
/// removed: like MISP, `limit`/`page` cut the SQL result first and the warninglist filters after.
fn search(s: &Inner, body: &Value) -> (Vec<Value>, usize) {
    let types = strings(body.get("type")).filter(|_| !s.ignore_type_filter);
    let since = int(body.get("timestamp"));
    let deleted: Vec<i64> = match body.get("deleted") {
        None => vec![0],
        Some(Value::Array(a)) => a.iter().filter_map(|v| int(Some(v))).collect(),
        Some(v) => int(Some(v)).map_or(vec![0], |d| vec![d]),
    };
    let to_ids = int(body.get("to_ids"));
    let tags = strings(body.get("tags")).unwrap_or_default();
    let (exclude, include): (Vec<String>, Vec<String>) =
        tags.into_iter().partition(|t| t.starts_with('!'));
    let exclude: Vec<String> = exclude.into_iter().map(|t| t[1..].to_string()).collect();
    let orgs = strings(body.get("org"));
    let published = int(body.get("published"));
    let warninglist = int(body.get("enforceWarninglist")) == Some(1);
    let event_tags = int(body.get("includeEventTags")) == Some(1);
    let event_uuid = int(body.get("includeEventUuid")) == Some(1);
    let limit = int(body.get("limit")).map(|l| l.max(1) as usize);
    let page = int(body.get("page")).unwrap_or(1).max(1) as usize;

    let mut selected: Vec<&Attr> = s
        .attrs
        .values()
        .filter(|a| {
            let Some(event) = s.events.get(&a.event_id) else {
                return false;
            };
            let all_tags: Vec<&str> = a
                .tags
                .iter()
                .chain(event.tags.iter())
                .map(|(_, n)| n.as_str())
                .collect();
            types.as_ref().is_none_or(|t| t.contains(&a.kind))
                && since.is_none_or(|t| a.timestamp >= t)
                && deleted.contains(&i64::from(a.deleted))
                && to_ids.is_none_or(|t| i64::from(a.to_ids) == t)
                && (include.is_empty() || include.iter().any(|t| all_tags.contains(&t.as_str())))
                && !exclude.iter().any(|t| all_tags.contains(&t.as_str()))
                && orgs.as_ref().is_none_or(|o| {
                    o.iter().any(|o| {
                        *o == event.orgc_id.to_string()
                            || s.orgs.get(&event.orgc_id).is_some_and(|n| n == o)
                    })
                })
                && published.is_none_or(|p| i64::from(event.published) == p)
        })
        .collect();
    sort_rows(&mut selected, body.get("order").and_then(Value::as_str));
    let page_rows: Vec<&Attr> = match limit {
        Some(l) => selected.into_iter().skip((page - 1) * l).take(l).collect(),
        None => selected,
    };
    let cut = page_rows.len();
    let kept: Vec<Value> = page_rows
        .into_iter()
        .filter(|a| !(warninglist && s.warninglist.contains(&a.value)))
        .map(|a| render(s, a, event_tags, event_uuid))
        .collect();
    let skipped = cut - kept.len();
    (kept, skipped)
}

/// An attribute the way MISP writes it: ids and timestamps as strings.
fn render(s: &Inner, a: &Attr, event_tags: bool, event_uuid: bool) -> Value {
    let event = &s.events[&a.event_id];
    let flag = |b: bool| {
        if s.old_booleans {
            json!(if b { "1" } else { "0" })
        } else {
            json!(b)
        }
    };
    let mut tags: Vec<Value> = a
        .tags
        .iter()
        .map(|(id, name)| json!({"id": id.to_string(), "name": name, "colour": "#ffffff", "exportable": true}))
        .collect();
    if event_tags {
        tags.extend(event.tags.iter().map(
            |(id, name)| json!({"id": id.to_string(), "name": name, "colour": "#000000", "inherited": 1}),
        ));
    }
    let mut v = json!({
        "id": a.id.to_string(), "event_id": a.event_id.to_string(), "object_id": "0",
        "object_relation": null, "category": "Network activity", "type": a.kind,
        "value": a.value, "to_ids": flag(a.to_ids), "uuid": a.uuid,
        "timestamp": a.timestamp.to_string(), "distribution": "5", "sharing_group_id": "0",
        "comment": a.comment, "deleted": flag(a.deleted), "disable_correlation": false,
        "first_seen": null, "last_seen": null,
        "Event": {"org_id": "1", "distribution": "0", "id": event.id.to_string(),
                  "info": event.info, "orgc_id": event.orgc_id.to_string(), "uuid": event.uuid},
    });
    if !tags.is_empty() {
        v["Tag"] = Value::Array(tags);
    }
    if event_uuid {
        v["event_uuid"] = json!(event.uuid);
    }
    v
}

//! An axum fake of the OpenCTI platform for black-box tests: the live stream as real SSE
//! (`GET /stream/{id}`) and the GraphQL calls a stream connector makes (`POST /graphql`), with
//! knobs for the failures a connector must survive and a journal of what it was sent.
//!
//! Behaviour follows OpenCTI's `sseMiddleware.js` and connector domain: `connected` first (no id),
//! heartbeats carrying the last processed id (none before a position is known), events strictly
//! after `Last-Event-ID`/`from`, `recover=<date>` replays the current state as `create` events
//! (and needs a start point, else 500), `listen-delete: false` omits deletes, 401 with an empty
//! body for a bad token or unknown stream, 410 for a stopped stream; a reset connector state
//! comes back empty from the next ping, which does not store the sent state.

#![allow(dead_code)]

// Each fake is a module of its own in the tests that include it, so a test using two fakes
// loads the shared plumbing twice.
#[allow(clippy::duplicate_mod)]
#[path = "server.rs"]
mod server;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// First id time used by [`FakeOpenCti::push`] (2023-11-14T22:13:20Z).
pub const BASE_MS: u64 = 1_700_000_000_000;

/// One stream event as the platform stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeEvent {
    /// `<ms>-<seq>`.
    pub id: String,
    /// `create`, `update`, `merge`, `delete` or anything else.
    pub topic: String,
    /// The `data:` text, sent as is.
    pub data: String,
    /// When set, the exact bytes sent on the wire instead of a frame built from the fields above
    /// (`id` then only orders it): malformed frames as a proxy or a buggy writer would send them.
    pub raw: Option<Bytes>,
}

/// One HTTP request received.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`/`POST`.
    pub method: String,
    /// The path.
    pub path: String,
    /// The raw query string.
    pub query: Option<String>,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A query parameter's (decoded) value.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let q = self.query.as_deref()?;
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// One GraphQL operation received.
#[derive(Debug, Clone)]
pub struct GqlCall {
    /// `about`, `registerConnector`, `pingConnector`, `streamCollection` or `unknown`.
    pub operation: String,
    /// The variables sent.
    pub variables: Value,
}

#[derive(Debug, Clone)]
struct Connector {
    name: String,
    scope: Value,
    state: String,
    reset_pending: bool,
}

#[derive(Debug, Clone)]
struct StreamDef {
    name: String,
    live: bool,
}

struct Data {
    token: String,
    events: Vec<FakeEvent>,
    streams: HashMap<String, StreamDef>,
    connectors: HashMap<String, Connector>,
    requests: Vec<Request>,
    gql: Vec<GqlCall>,
    heartbeat: Duration,
    drop_every: Option<usize>,
    /// Body chunks of exactly this many bytes, cutting frames anywhere (`None`: one frame a chunk).
    chunk_bytes: Option<usize>,
    stalled: bool,
    stall_next_after: Option<usize>,
    deny_stream: bool,
    /// Every GraphQL call fails with this `extensions.code` (OpenCTI's auth error family).
    graphql_auth_error: Option<String>,
    connections: u64,
    version: String,
}

struct Inner {
    data: Mutex<Data>,
    /// Wakes connection tasks when events or knobs change.
    changed: Notify,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The fake platform, listening on `127.0.0.1:<random port>`.
pub struct FakeOpenCti {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    inner: Arc<Inner>,
    _served: server::Served,
}

impl FakeOpenCti {
    /// Starts a fake accepting `token`, with one live stream `stream-1` and 1 s heartbeats.
    pub async fn start(token: &str) -> Self {
        let inner = Arc::new(Inner {
            data: Mutex::new(Data {
                token: token.to_string(),
                events: Vec::new(),
                streams: HashMap::from([(
                    "stream-1".to_string(),
                    StreamDef {
                        name: "IOC stream".into(),
                        live: true,
                    },
                )]),
                connectors: HashMap::new(),
                requests: Vec::new(),
                gql: Vec::new(),
                heartbeat: Duration::from_secs(1),
                drop_every: None,
                chunk_bytes: None,
                stalled: false,
                stall_next_after: None,
                deny_stream: false,
                graphql_auth_error: None,
                connections: 0,
                version: "6.4.5".into(),
            }),
            changed: Notify::new(),
        });
        let app = Router::new()
            .route("/stream/{id}", get(stream_handler))
            .route("/graphql", post(graphql_handler))
            .with_state(inner.clone());
        let served = server::serve(app, "fake OpenCTI").await;
        FakeOpenCti {
            url: served.url.clone(),
            inner,
            _served: served,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Data) -> R) -> R {
        let r = f(&mut self.inner.lock());
        self.inner.changed.notify_waiters();
        r
    }

    /// Adds (or replaces) a stream collection.
    pub fn add_stream(&self, id: &str, name: &str, live: bool) {
        self.with(|d| {
            d.streams.insert(
                id.into(),
                StreamDef {
                    name: name.into(),
                    live,
                },
            )
        });
    }

    /// Stops a stream: new connections get 410, open ones are closed.
    pub fn stop_stream(&self, id: &str) {
        self.with(|d| d.streams.get_mut(id).map(|s| s.live = false));
    }

    /// Starts a stopped stream again.
    pub fn start_stream(&self, id: &str) {
        self.with(|d| d.streams.get_mut(id).map(|s| s.live = true));
    }

    /// Heartbeat period of new and open connections.
    pub fn set_heartbeat(&self, every: Duration) {
        self.with(|d| d.heartbeat = every);
    }

    /// Close each connection after it sent `n` events (`None`: never).
    pub fn drop_every(&self, n: Option<usize>) {
        self.with(|d| d.drop_every = n);
    }

    /// Writes the stream in body chunks of exactly `n` bytes, as a busy server's socket delivers
    /// it: many frames per chunk and frames cut anywhere, even inside a UTF-8 sequence or a CRLF.
    /// The tail is sent when nothing more is queued; a dropped connection loses its unsent tail
    /// (the client sees a frame cut in the middle).
    pub fn chunk_bytes(&self, n: Option<usize>) {
        self.with(|d| d.chunk_bytes = n.filter(|n| *n > 0));
    }

    /// While set, every connection sends nothing at all (no events, no heartbeats).
    pub fn set_stalled(&self, stalled: bool) {
        self.with(|d| d.stalled = stalled);
    }

    /// The next connection sends `n` events, then goes silent forever (a half-dead proxy).
    pub fn stall_next_connection_after(&self, n: usize) {
        self.with(|d| d.stall_next_after = Some(n));
    }

    /// While set, stream requests get 401 (a user who may call GraphQL but not read the stream).
    pub fn deny_stream(&self, deny: bool) {
        self.with(|d| d.deny_stream = deny);
    }

    /// While set, every GraphQL call answers HTTP 200 with this error code, as OpenCTI does for a
    /// user whose session cannot be used (`AUTH_FAILURE`, `OTP_REQUIRED`, `OTP_REQUIRED_ACTIVATION`).
    pub fn graphql_auth_error(&self, code: Option<&str>) {
        self.with(|d| d.graphql_auth_error = code.map(str::to_string));
    }

    /// Appends an event with the next id (`BASE_MS + k`, seq 0); returns the id.
    pub fn push(&self, topic: &str, stix: Value) -> String {
        let data = envelope(topic, stix).to_string();
        self.with(|d| {
            let ms = d
                .events
                .last()
                .and_then(|e| parse_id(&e.id))
                .map_or(BASE_MS, |(ms, _)| ms.max(BASE_MS - 1) + 1);
            let id = format!("{ms}-0");
            d.events.push(FakeEvent {
                id: id.clone(),
                topic: topic.into(),
                data,
                raw: None,
            });
            id
        })
    }

    /// Appends an event with an explicit id and raw data text (malformed data, odd topics).
    pub fn push_raw(&self, id: &str, topic: &str, data: &str) {
        self.with(|d| {
            d.events.push(FakeEvent {
                id: id.into(),
                topic: topic.into(),
                data: data.into(),
                raw: None,
            })
        });
    }

    /// Replaces the events held (e.g. a capture with frames interleaved by a test).
    pub fn set_events(&self, events: Vec<FakeEvent>) {
        self.with(|d| d.events = events);
    }

    /// Appends every event of an SSE capture (`connected` and heartbeats are skipped).
    pub fn load_sse(&self, capture: &str) -> usize {
        let events = parse_sse(capture);
        let n = events.len();
        self.with(|d| d.events.extend(events));
        n
    }

    /// The events held.
    pub fn events(&self) -> Vec<FakeEvent> {
        self.inner.lock().events.clone()
    }

    /// Sets a connector's stored state (as if a previous run had pinged it).
    pub fn set_connector_state(&self, connector_id: &str, state: &str) {
        self.with(|d| {
            d.connectors
                .entry(connector_id.into())
                .or_insert_with(|| Connector {
                    name: "pre-existing".into(),
                    scope: json!([]),
                    state: String::new(),
                    reset_pending: false,
                })
                .state = state.into()
        });
    }

    /// The operator presses "reset state" in the UI.
    pub fn reset_connector_state(&self, connector_id: &str) {
        self.with(|d| {
            if let Some(c) = d.connectors.get_mut(connector_id) {
                c.state = String::new();
                c.reset_pending = true;
            }
        });
    }

    /// Deletes a connector, as from the UI (its state goes with it).
    pub fn delete_connector(&self, connector_id: &str) {
        self.with(|d| d.connectors.remove(connector_id));
    }

    /// A connector's stored state (`None`: not registered).
    pub fn connector_state(&self, connector_id: &str) -> Option<String> {
        self.inner
            .lock()
            .connectors
            .get(connector_id)
            .map(|c| c.state.clone())
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.inner.lock().requests.clone()
    }

    /// The stream requests, in order.
    pub fn stream_requests(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with("/stream"))
            .collect()
    }

    /// The `Last-Event-ID` of each stream request (`None` when absent).
    pub fn last_event_ids(&self) -> Vec<Option<String>> {
        self.stream_requests()
            .iter()
            .map(|r| r.header("last-event-id").map(str::to_string))
            .collect()
    }

    /// Every GraphQL operation received, in order.
    pub fn graphql_calls(&self) -> Vec<GqlCall> {
        self.inner.lock().gql.clone()
    }

    /// The `state` of each `pingConnector`, parsed.
    pub fn pinged_states(&self) -> Vec<Value> {
        self.graphql_calls()
            .into_iter()
            .filter(|c| c.operation == "pingConnector")
            .map(|c| {
                c.variables["state"]
                    .as_str()
                    .and_then(|s| serde_json::from_str(s).ok())
                    .unwrap_or(Value::Null)
            })
            .collect()
    }
}

/// The event envelope OpenCTI 6 sends for an object.
pub fn envelope(topic: &str, stix: Value) -> Value {
    json!({
        "version": "4", "type": topic, "scope": "external",
        "message": format!("{topic}s an object"),
        "origin": {"referer": "test"}, "data": stix,
    })
}

/// A STIX indicator for an IPv4 address `10.0.<n/256>.<n%256>`.
pub fn indicator(n: u32) -> Value {
    let ip = format!("10.0.{}.{}", n / 256, n % 256);
    json!({
        "id": format!("indicator--00000000-0000-4000-8000-{n:012}"),
        "spec_version": "2.1", "type": "indicator", "name": ip,
        "pattern": format!("[ipv4-addr:value = '{ip}']"), "pattern_type": "stix",
        "valid_from": "2024-04-09T06:58:40.664Z",
        "extensions": {"extension-definition--ea279b3e-5c71-4632-ac08-831c66a786ba":
            {"extension_type": "property-extension", "id": format!("internal-{n}"), "score": 50,
             "main_observable_type": "IPv4-Addr"}},
    })
}

/// Parses SSE text (LF or CRLF; `:` comments; multi-line data) into events with ids; `connected`
/// and `heartbeat` messages are dropped (the fake makes its own).
pub fn parse_sse(text: &str) -> Vec<FakeEvent> {
    let mut out = Vec::new();
    let (mut id, mut topic, mut data): (Option<String>, Option<String>, Vec<String>) =
        (None, None, Vec::new());
    let lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    for line in lines.chain(std::iter::once("")) {
        if line.is_empty() {
            let t = topic.take().unwrap_or_else(|| "message".into());
            if let Some(i) = id.take() {
                if !data.is_empty() && t != "connected" && t != "heartbeat" {
                    out.push(FakeEvent {
                        id: i,
                        topic: t,
                        data: data.join("\n"),
                        raw: None,
                    });
                }
            }
            data.clear();
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value).to_string();
        match field {
            "id" => id = Some(value),
            "event" => topic = Some(value),
            "data" => data.push(value),
            _ => {}
        }
    }
    out
}

/// `<ms>-<seq>` as numbers; `0` means the start.
pub fn parse_id(id: &str) -> Option<(u64, u64)> {
    if id.trim() == "0" {
        return Some((0, 0));
    }
    let (a, b) = id.trim().split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// A date parameter (`recover`) as an id, like the server: an id stays, a date becomes `<ms>-0`.
fn date_param_to_id(p: &str) -> Option<(u64, u64)> {
    parse_id(p).or_else(|| {
        chrono::DateTime::parse_from_rfc3339(p)
            .ok()
            .map(|d| (d.timestamp_millis().max(0) as u64, 0))
    })
}

fn record(inner: &Inner, method: &str, path: String, query: Option<String>, headers: &HeaderMap) {
    let headers = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                v.to_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    inner.lock().requests.push(Request {
        method: method.into(),
        path,
        query,
        headers,
    });
}

fn bearer_ok(d: &Data, headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == d.token)
}

fn param(headers: &HeaderMap, query: &Option<String>, name: &str) -> Option<String> {
    let from_query = query.as_deref().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    });
    from_query.or_else(|| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    })
}

fn status_only(status: StatusCode) -> Response {
    (status, Body::empty()).into_response()
}

/// What one connection replays before going live.
struct Plan {
    cursor: Option<(u64, u64)>,
    initial: Vec<FakeEvent>,
}

/// The `recover` replay: the latest version of each object touched in (from, recover], as
/// `create` events with origin `init`; objects whose last event is a delete are left out.
fn recover_plan(events: &[FakeEvent], from: (u64, u64), until: (u64, u64)) -> Plan {
    let mut latest: Vec<(String, FakeEvent)> = Vec::new();
    for e in events {
        let Some(id) = parse_id(&e.id) else { continue };
        if id <= from || id > until {
            continue;
        }
        let Ok(mut v) = serde_json::from_str::<Value>(&e.data) else {
            continue;
        };
        let key = v["data"]["id"].as_str().unwrap_or_default().to_string();
        latest.retain(|(k, _)| *k != key);
        if e.topic == "delete" {
            continue;
        }
        v["type"] = json!("create");
        v["origin"] = json!({"referer": "init"});
        latest.push((
            key,
            FakeEvent {
                id: e.id.clone(),
                topic: "create".into(),
                data: v.to_string(),
                raw: None,
            },
        ));
    }
    Plan {
        cursor: Some(until),
        initial: latest.into_iter().map(|(_, e)| e).collect(),
    }
}

async fn stream_handler(
    State(inner): State<Arc<Inner>>,
    Path(stream_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    record(
        &inner,
        "GET",
        format!("/stream/{stream_id}"),
        query.clone(),
        &headers,
    );
    let from = param(&headers, &query, "from").or_else(|| {
        headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    });
    let from = from.as_deref().and_then(parse_id);
    let recover = param(&headers, &query, "recover")
        .as_deref()
        .and_then(date_param_to_id);
    let listen_delete = param(&headers, &query, "listen-delete").as_deref() != Some("false");
    let (plan, stall_after, connection) = {
        let mut d = inner.lock();
        if !bearer_ok(&d, &headers) || d.deny_stream {
            return status_only(StatusCode::UNAUTHORIZED);
        }
        match d.streams.get(&stream_id) {
            None if stream_id != "live" => return status_only(StatusCode::UNAUTHORIZED),
            Some(s) if !s.live => return status_only(StatusCode::GONE),
            _ => {}
        }
        let plan = match (recover, from) {
            (Some(_), None) => return status_only(StatusCode::INTERNAL_SERVER_ERROR),
            (Some(until), Some(from)) if until > from => recover_plan(&d.events, from, until),
            _ => Plan {
                cursor: from,
                initial: Vec::new(),
            },
        };
        d.connections += 1;
        (plan, d.stall_next_after.take(), d.connections)
    };
    let (tx, mut rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(connection_task(
        inner.clone(),
        stream_id,
        tx,
        plan,
        listen_delete,
        stall_after,
        connection,
    ));
    let body = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|o| o.map(Ok::<Bytes, Infallible>))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream; charset=utf-8")
        .header("cache-control", "no-cache, no-transform")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| status_only(StatusCode::INTERNAL_SERVER_ERROR))
}

fn frame(id: Option<&str>, topic: &str, data: &str) -> Bytes {
    let mut s = String::new();
    if let Some(id) = id {
        s.push_str(&format!("id: {id}\n"));
    }
    s.push_str(&format!("event: {topic}\n"));
    for line in data.split('\n') {
        s.push_str(&format!("data: {line}\n"));
    }
    s.push('\n');
    Bytes::from(s)
}

/// The stream body: one chunk per frame, or fixed-size chunks cut anywhere.
struct ChunkedWriter<'a> {
    tx: &'a mpsc::Sender<Bytes>,
    buf: Vec<u8>,
    chunk: Option<usize>,
}

impl ChunkedWriter<'_> {
    /// False when the client is gone.
    async fn write(&mut self, frame: Bytes) -> bool {
        let Some(n) = self.chunk else {
            return self.tx.send(frame).await.is_ok();
        };
        self.buf.extend_from_slice(&frame);
        while self.buf.len() >= n {
            let rest = self.buf.split_off(n);
            let full = std::mem::replace(&mut self.buf, rest);
            if self.tx.send(Bytes::from(full)).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Sends the partial tail (nothing more is queued).
    async fn flush(&mut self) -> bool {
        if self.buf.is_empty() {
            return true;
        }
        let tail = std::mem::take(&mut self.buf);
        self.tx.send(Bytes::from(tail)).await.is_ok()
    }
}

fn id_text((ms, seq): (u64, u64)) -> String {
    format!("{ms}-{seq}")
}

async fn connection_task(
    inner: Arc<Inner>,
    stream_id: String,
    tx: mpsc::Sender<Bytes>,
    plan: Plan,
    listen_delete: bool,
    stall_after: Option<usize>,
    connection: u64,
) {
    let connected = {
        let d = inner.lock();
        json!({
            "lastEventId": d.events.last().map(|e| e.id.clone()),
            "firstEventId": d.events.first().map(|e| e.id.clone()),
            "streamSize": d.events.len(),
            "connectionId": format!("fake-connection-{connection}"),
        })
    };
    if tx
        .send(frame(None, "connected", &connected.to_string()))
        .await
        .is_err()
    {
        return;
    }
    let mut cursor = plan.cursor;
    let mut pending: std::collections::VecDeque<FakeEvent> = plan.initial.into();
    let mut sent = 0usize;
    let chunk_bytes = inner.lock().chunk_bytes;
    let mut out = ChunkedWriter {
        tx: &tx,
        buf: Vec::new(),
        chunk: chunk_bytes,
    };
    let mut next_beat = tokio::time::Instant::now() + inner.lock().heartbeat;
    loop {
        let (stalled, live, heartbeat, drop_every) = {
            let d = inner.lock();
            let live = stream_id == "live" || d.streams.get(&stream_id).is_some_and(|s| s.live);
            (d.stalled, live, d.heartbeat, d.drop_every)
        };
        if !live || tx.is_closed() {
            return;
        }
        let silent = stalled || stall_after.is_some_and(|n| sent >= n);
        if !silent {
            if pending.is_empty() {
                let d = inner.lock();
                // Compared with the position at the start of the scan: several events may share
                // an id (the server sends dependencies with the triggering event's id).
                let after = cursor;
                for e in &d.events {
                    let Some(id) = parse_id(&e.id) else { continue };
                    if after.is_some_and(|c| id <= c) {
                        continue;
                    }
                    // The server advances its position through events this client does not see.
                    cursor = Some(cursor.map_or(id, |c| c.max(id)));
                    if e.topic == "delete" && !listen_delete {
                        continue;
                    }
                    pending.push_back(e.clone());
                }
            }
            if let Some(e) = pending.pop_front() {
                if let Some(id) = parse_id(&e.id) {
                    cursor = Some(cursor.map_or(id, |c| c.max(id)));
                }
                let bytes = e
                    .raw
                    .clone()
                    .unwrap_or_else(|| frame(Some(&e.id), &e.topic, &e.data));
                if !out.write(bytes).await {
                    return;
                }
                sent += 1;
                if drop_every.is_some_and(|n| n > 0 && sent % n == 0) {
                    return;
                }
                if pending.is_empty() && !out.flush().await {
                    return;
                }
                continue;
            }
            if tokio::time::Instant::now() >= next_beat {
                next_beat = tokio::time::Instant::now() + heartbeat;
                // Like the server: no heartbeat before a position is known.
                if let Some(c) = cursor {
                    let date = chrono::DateTime::from_timestamp_millis(c.0 as i64)
                        .unwrap_or_default()
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                    let data = Value::String(date).to_string();
                    if !out
                        .write(frame(Some(&id_text(c)), "heartbeat", &data))
                        .await
                        || !out.flush().await
                    {
                        return;
                    }
                }
            }
        }
        let notified = inner.changed.notified();
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep_until(next_beat.min(tokio::time::Instant::now() + Duration::from_millis(50))) => {}
        }
    }
}

async fn graphql_handler(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    record(&inner, "POST", "/graphql".into(), None, &headers);
    let query = body["query"].as_str().unwrap_or_default();
    let vars = body.get("variables").cloned().unwrap_or(json!({}));
    let operation = [
        "registerConnector",
        "pingConnector",
        "streamCollection",
        "about",
    ]
    .into_iter()
    .find(|op| query.contains(op))
    .unwrap_or("unknown");
    let mut d = inner.lock();
    d.gql.push(GqlCall {
        operation: operation.into(),
        variables: vars.clone(),
    });
    if let Some(code) = d.graphql_auth_error.clone() {
        let message = match code.as_str() {
            "OTP_REQUIRED" => "You must validate your account with 2FA.",
            "OTP_REQUIRED_ACTIVATION" => "You need to activate 2FA.",
            _ => "Wrong name or password",
        };
        return Json(json!({"data": null, "errors": [{"message": message,
            "extensions": {"code": code}}]}))
        .into_response();
    }
    if !bearer_ok(&d, &headers) {
        return Json(
            json!({"data": null, "errors": [{"message": "You must be logged in to do this.",
            "extensions": {"code": "AUTH_REQUIRED"}}]}),
        )
        .into_response();
    }
    let data = match operation {
        "about" => json!({"about": {"version": d.version}}),
        "streamCollection" => {
            let id = vars["id"].as_str().unwrap_or_default();
            let found = d
                .streams
                .get(id)
                .map(|s| json!({"id": id, "name": s.name, "stream_live": s.live}));
            json!({ "streamCollection": found })
        }
        "registerConnector" => {
            let input = &vars["input"];
            let id = input["id"].as_str().unwrap_or_default().to_string();
            let c = d.connectors.entry(id.clone()).or_insert_with(|| Connector {
                name: String::new(),
                scope: json!([]),
                state: String::new(),
                reset_pending: false,
            });
            c.name = input["name"].as_str().unwrap_or_default().to_string();
            c.scope = input["scope"].clone();
            json!({"registerConnector": {"id": id, "connector_state": nullable(&c.state),
                "connector_user_id": "fake-user"}})
        }
        "pingConnector" => {
            let id = vars["id"].as_str().unwrap_or_default().to_string();
            let Some(c) = d.connectors.get_mut(&id) else {
                return Json(json!({"data": null, "errors": [{"message":
                    "No connector found with the specified ID",
                    "extensions": {"code": "FUNCTIONAL_ERROR"}}]}))
                .into_response();
            };
            if c.reset_pending {
                c.reset_pending = false;
            } else {
                c.state = vars["state"].as_str().unwrap_or_default().to_string();
            }
            json!({"pingConnector": {"id": id, "connector_state": nullable(&c.state)}})
        }
        _ => {
            return Json(json!({"data": null, "errors": [{"message": "unknown operation"}]}))
                .into_response()
        }
    };
    Json(json!({ "data": data })).into_response()
}

fn nullable(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::String(s.to_string())
    }
}

//! [`OpenCtiSource`]: registration, the reconnecting stream loop with its liveness watchdog, the
//! ping task that publishes our position and notices an operator's reset, and `--once`.
//!
//! Resume rule: a reconnect within a run resumes from the last id this source *emitted*, not from
//! the last checkpoint. Events emitted but not yet applied are then not re-sent by the server, yet
//! nothing is lost: they are already in the pipeline's channel. A restart resumes from the
//! checkpoint (`SourceContext.start`), and the pipeline is idempotent for the overlap.

use super::config::{ConnectorConfig, OpenCtiConfig, RecoverSetting};
use super::event::{decode_frame, parse_stream_id, ConnectedInfo, TOPIC_CONNECTED};
use super::graphql::{ConnectorState, GraphqlClient, RecoverUntil, Registration};
use super::stream::{Disconnect, StreamRequest};
use super::{OpenCtiError, SOURCE_NAME};
use crate::metrics;
use crate::model::{EventKind, Payload, SourceEvent};
use crate::remote::Backoff;
use crate::remote::{
    build_client, client_builder, describe_transport_error, http_client, ClientError,
};
use crate::secret::Secret;
use crate::sources::sse::{Frame, FrameData, SseDecoder};
use crate::sources::{Source, SourceContext, SourceError};
use async_trait::async_trait;
use futures_util::{FutureExt, StreamExt};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// Stream ids that are not stream collections: no `streamCollection` lookup (as pycti).
const UNLISTED_STREAMS: [&str; 2] = ["live", "raw"];

/// The validated settings the source runs with.
#[derive(Debug, Clone)]
struct Settings {
    url: String,
    token: Secret,
    stream_id: String,
    connector_id: String,
    name: String,
    scope: Vec<String>,
    listen_delete: bool,
    no_dependencies: bool,
    with_inferences: bool,
    recover: RecoverSetting,
    start_id: Option<String>,
    stream_timeout: Duration,
    reconnect_min: Duration,
    reconnect_max: Duration,
    ping_interval: Duration,
    progress_interval: Duration,
    request_timeout: Duration,
    max_event_bytes: usize,
    once_attempts: u32,
}

impl Settings {
    /// Where a run with no usable checkpoint starts: the configured start id or the beginning
    /// (`0-0`, as pycti), replaying the current state up to the recover date.
    fn fresh_start(&self) -> (String, RecoverUntil) {
        let start = self.start_id.clone().unwrap_or_else(|| "0-0".to_string());
        let recover = match &self.recover {
            RecoverSetting::Now => RecoverUntil::Date(
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            ),
            RecoverSetting::Until(d) => RecoverUntil::Date(d.clone()),
            RecoverSetting::Disabled => RecoverUntil::Off,
        };
        (start, recover)
    }
}

/// The OpenCTI live-stream source.
pub struct OpenCtiSource {
    s: Arc<Settings>,
    gql: GraphqlClient,
    sse_http: reqwest::Client,
}

impl OpenCtiSource {
    /// Validates the two sections and builds the HTTP clients (no I/O).
    pub fn new(opencti: &OpenCtiConfig, connector: &ConnectorConfig) -> Result<Self, SourceError> {
        let mut problems = opencti.problems();
        problems.extend(connector.problems());
        if let Some((key, message)) = problems.first().cloned() {
            let more = problems.len() - 1;
            let message = if more > 0 {
                format!("{message} (and {more} more problem(s); run `iocsync check`)")
            } else {
                message
            };
            return Err(SourceError::Config {
                source_name: SOURCE_NAME,
                key,
                message,
            });
        }
        let missing = |key: &'static str| SourceError::Config {
            source_name: SOURCE_NAME,
            key,
            message: "is required".into(),
        };
        let s = Settings {
            url: opencti.url.clone().ok_or_else(|| missing("opencti.url"))?,
            token: opencti
                .token
                .clone()
                .ok_or_else(|| missing("opencti.token"))?,
            stream_id: connector
                .live_stream_id
                .as_deref()
                .map(str::trim)
                .map(str::to_string)
                .ok_or_else(|| missing("connector.live_stream_id"))?,
            connector_id: connector
                .id
                .as_deref()
                .map(str::trim)
                .map(str::to_string)
                .ok_or_else(|| missing("connector.id"))?,
            name: connector
                .name
                .clone()
                .unwrap_or_else(|| "iocsync".to_string()),
            scope: connector.scope_list(),
            listen_delete: connector.live_stream_listen_delete,
            no_dependencies: connector.live_stream_no_dependencies,
            with_inferences: connector.live_stream_with_inferences,
            recover: connector.recover_setting(),
            start_id: connector.start_id(),
            stream_timeout: opencti.stream_timeout,
            reconnect_min: opencti.reconnect_min,
            reconnect_max: opencti.reconnect_max,
            ping_interval: opencti.ping_interval,
            progress_interval: opencti.progress_interval,
            request_timeout: opencti.request_timeout,
            max_event_bytes: opencti.max_event_bytes,
            once_attempts: opencti.once_attempts,
        };
        log_ignored(opencti, connector);
        let tls = opencti.tls();
        let build_err = |e: ClientError| SourceError::Config {
            source_name: SOURCE_NAME,
            key: e.key(),
            message: e.to_string(),
        };
        let gql_http = http_client(&tls, opencti.request_timeout).map_err(build_err)?;
        // No total timeout on the stream client: the connection lives for hours; the watchdog
        // decides when it is dead. Same TLS settings (CA bundle, verification) as GraphQL.
        let sse_builder = client_builder(&tls)
            .map_err(build_err)?
            .connect_timeout(Duration::from_secs(10).min(opencti.stream_timeout));
        let sse_http = build_client(sse_builder, &tls).map_err(build_err)?;
        let gql = GraphqlClient::new(gql_http, &s.url, s.token.clone());
        Ok(OpenCtiSource {
            s: Arc::new(s),
            gql,
            sse_http,
        })
    }

    /// `about`, the stream lookup and the registration; returns the platform's connector state.
    async fn handshake(&self) -> Result<Option<String>, HandshakeError> {
        let version = self.gql.about_version().await?;
        info!(version = %version, url = %self.s.url, "connected to OpenCTI");
        self.check_stream().await?;
        let reg = Registration {
            id: self.s.connector_id.clone(),
            name: self.s.name.clone(),
            scope: self.s.scope.clone(),
        };
        let state = self.gql.register(&reg).await?;
        info!(connector_id = %reg.id, name = %reg.name, "registered as a STREAM connector");
        Ok(state)
    }

    /// Fails with a config error naming `connector.live_stream_id` when the stream is unknown or
    /// stopped; returns a description of it.
    async fn check_stream(&self) -> Result<String, HandshakeError> {
        let id = &self.s.stream_id;
        if UNLISTED_STREAMS.contains(&id.as_str()) {
            return Ok(format!("stream `{id}` (not a collection, no lookup)"));
        }
        let config_error = |message: String| {
            HandshakeError::Fatal(SourceError::Config {
                source_name: SOURCE_NAME,
                key: "connector.live_stream_id",
                message,
            })
        };
        match self.gql.stream_collection(id).await? {
            None => Err(config_error(format!(
                "live stream `{id}` does not exist on {} (or this user cannot see it)",
                self.s.url
            ))),
            Some(c) if !c.stream_live => Err(config_error(format!(
                "live stream `{}` ({id}) is stopped: start it in the OpenCTI UI",
                c.name.as_deref().unwrap_or("?")
            ))),
            Some(c) => Ok(format!(
                "live stream `{}` ({id}) is live",
                c.name.as_deref().unwrap_or("?")
            )),
        }
    }

    /// Runs the handshake, retrying transient failures until shutdown (`Ok(None)`) — or, with
    /// `--once`, until `opencti.once_attempts` attempts failed.
    async fn prepare(
        &self,
        shutdown: &CancellationToken,
        once: bool,
    ) -> Result<Option<Option<String>>, SourceError> {
        let mut backoff = Backoff::new(self.s.reconnect_min, self.s.reconnect_max);
        let mut failures = 0u32;
        loop {
            let err = match self.handshake().await {
                Ok(state) => return Ok(Some(state)),
                Err(HandshakeError::Fatal(e)) => return Err(e),
                Err(HandshakeError::Transient(e)) => e,
            };
            failures += 1;
            if once && failures >= self.s.once_attempts {
                return Err(gave_up(failures, &err.to_string()));
            }
            let delay = backoff.next_delay(false);
            warn!(cause = %err, retry_in = ?delay, "OpenCTI is not reachable yet");
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    fn stream_request(&self, resume_from: &str, recover: &RecoverUntil) -> StreamRequest {
        StreamRequest {
            base_url: self.s.url.clone(),
            stream_id: self.s.stream_id.clone(),
            token: self.s.token.clone(),
            resume_from: resume_from.to_string(),
            recover: match recover {
                RecoverUntil::Date(d) => Some(d.clone()),
                RecoverUntil::Off => None,
            },
            listen_delete: self.s.listen_delete,
            no_dependencies: self.s.no_dependencies,
            with_inferences: self.s.with_inferences,
        }
    }

    /// Reconnects until shutdown, `--once` caught up, or a fatal error.
    async fn stream_loop(
        &self,
        ctx: &SourceContext,
        shared: &Arc<Mutex<PingShared>>,
        reset: &Notify,
    ) -> Result<(), SourceError> {
        let (mut resume, mut recover) = {
            let sh = lock(shared);
            (sh.base_start.clone(), sh.recover_until.clone())
        };
        let mut backoff = Backoff::new(self.s.reconnect_min, self.s.reconnect_max);
        let mut tracker = Tracker::new(self.s.progress_interval);
        let mut attempt: u64 = 0;
        // Attempts in a row that delivered nothing: `--once` gives up after `once_attempts`.
        let mut failures = 0u32;
        loop {
            attempt += 1;
            let req = self.stream_request(&resume, &recover);
            info!(attempt, url = %req.url(), resume_from = %resume, recover = ?req.recover,
                "connecting to the live stream");
            let end = self
                .read_connection(ctx, &req, reset, &mut resume, &mut tracker)
                .await;
            metrics::global().set("iocsync_source_connected", &[], 0.0);
            let lost = match end {
                ConnectionEnd::Finished => return Ok(()),
                ConnectionEnd::Reset => None,
                ConnectionEnd::Lost { why, delivered } => {
                    if delivered {
                        backoff.reset();
                        failures = 0;
                    }
                    failures += 1;
                    Some(why)
                }
            };
            if let Some(why) = lost {
                if why.persistent && ctx.once {
                    return Err(stream_error(&req, &why));
                }
                if ctx.once && failures >= self.s.once_attempts {
                    return Err(gave_up(failures, &format!("{}: {}", req.url(), why.cause)));
                }
                let delay = backoff.next_delay(why.persistent);
                if why.persistent {
                    error!(cause = %why.cause, retry_in = ?delay, resume_from = %resume,
                        "live stream refused");
                } else {
                    warn!(cause = %why.cause, retry_in = ?delay, resume_from = %resume,
                        "live stream connection lost");
                }
                tokio::select! {
                    biased;
                    _ = ctx.shutdown.cancelled() => return Ok(()),
                    _ = reset.notified() => {}
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
            // An operator reset the connector state: forget our position and replay.
            warn!("connector state was reset in OpenCTI: replaying the stream from the beginning");
            if !emit(ctx, reset_event()).await {
                return Ok(());
            }
            let sh = lock(shared);
            resume = sh.base_start.clone();
            recover = sh.recover_until.clone();
            tracker.target = None;
            backoff.reset();
        }
    }

    /// Reads one connection until it ends; `resume` follows every emitted position.
    async fn read_connection(
        &self,
        ctx: &SourceContext,
        req: &StreamRequest,
        reset: &Notify,
        resume: &mut String,
        tracker: &mut Tracker,
    ) -> ConnectionEnd {
        let timeout = self.s.stream_timeout;
        let connected = tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => return ConnectionEnd::Finished,
            _ = reset.notified() => return ConnectionEnd::Reset,
            r = tokio::time::timeout(timeout, req.connect(&self.sse_http)) => r,
        };
        let resp = match connected {
            Ok(Ok(resp)) => resp,
            Ok(Err(why)) => {
                metrics::api_call(SOURCE_NAME, "stream", why.status.unwrap_or(0));
                return ConnectionEnd::Lost {
                    why,
                    delivered: false,
                };
            }
            Err(_) => {
                metrics::api_call(SOURCE_NAME, "stream", 0);
                return ConnectionEnd::transient(
                    format!("no answer to the stream request within {timeout:?}"),
                    false,
                );
            }
        };
        metrics::api_call(SOURCE_NAME, "stream", 200);
        metrics::global().set("iocsync_source_connected", &[], 1.0);
        let mut body = resp.bytes_stream();
        let mut decoder = SseDecoder::new(self.s.max_event_bytes);
        let mut decoded: Vec<Frame> = Vec::new();
        let mut frames: VecDeque<Frame> = VecDeque::new();
        let mut deadline = Instant::now() + timeout;
        let mut delivered = false;
        // How the body ended, when a `--once` look-ahead saw it end before its frames were handled.
        let mut ended: Option<String> = None;
        loop {
            let Some(frame) = frames.pop_front() else {
                if let Some(why) = ended.take() {
                    return ConnectionEnd::transient(why, delivered);
                }
                let next = tokio::select! {
                    biased;
                    _ = ctx.shutdown.cancelled() => return ConnectionEnd::Finished,
                    _ = reset.notified() => return ConnectionEnd::Reset,
                    r = tokio::time::timeout_at(deadline, body.next()) => r,
                };
                let why = match next {
                    Ok(Some(Ok(chunk))) => {
                        // Bytes arriving prove the connection alive, even inside one large event.
                        deadline = Instant::now() + timeout;
                        decoder.feed(&chunk, &mut decoded);
                        frames.extend(decoded.drain(..));
                        continue;
                    }
                    Err(_) => format!("nothing received for {timeout:?} (watchdog)"),
                    // A frame cut by the disconnect is dropped: the server sends it again.
                    Ok(None) => "the server closed the stream".to_string(),
                    Ok(Some(Err(e))) => describe_transport_error(&e),
                };
                return ConnectionEnd::transient(why, delivered);
            };
            if frame.event == TOPIC_CONNECTED {
                let info = match &frame.data {
                    FrameData::Bytes(b) => ConnectedInfo::parse(b),
                    FrameData::Oversize { .. } => ConnectedInfo::default(),
                };
                info!(last_event_id = ?info.last_event_id, first_event_id = ?info.first_event_id,
                    stream_size = ?info.stream_size, connection_id = ?info.connection_id,
                    "live stream connected");
                tracker.set_target(info.last_event_id);
                continue;
            }
            let Some(ev) = decode_frame(&frame) else {
                continue;
            };
            if ev.position.is_none() {
                if let Some(id) = frame.id.as_deref().filter(|id| !id.trim().is_empty()) {
                    warn!(id = %id.escape_debug(), topic = %frame.event.escape_debug(),
                        "stream id is not of the form <digits>-<digits>: not used as a position");
                }
            }
            // Logged here once with its id; the pipeline counts it as `malformed_event`.
            if let Payload::Malformed { reason } = &ev.payload {
                warn!(position = ?ev.position, topic = %frame.event.escape_debug(), reason = %reason,
                    "malformed stream event");
            }
            let heartbeat = ev.kind == EventKind::Heartbeat;
            let position = ev.position.clone();
            if !emit(ctx, ev).await {
                return ConnectionEnd::Finished;
            }
            let Some(position) = position else { continue };
            // Measured after the send: a slow pipeline must not look like a dead server.
            deadline = Instant::now() + timeout;
            delivered = true;
            tracker.emitted(&position);
            *resume = position;
            if ctx.once {
                if frames.is_empty() {
                    match body.next().now_or_never() {
                        Some(Some(Ok(chunk))) => {
                            decoder.feed(&chunk, &mut decoded);
                            frames.extend(decoded.drain(..));
                        }
                        Some(None) => ended = Some("the server closed the stream".to_string()),
                        Some(Some(Err(e))) => ended = Some(describe_transport_error(&e)),
                        None => {}
                    }
                }
                if tracker.caught_up(resume, heartbeat, frames.is_empty()) {
                    info!(position = %resume, "caught up with the live stream (--once)");
                    return ConnectionEnd::Finished;
                }
            }
        }
    }
}

/// A handshake failure: worth retrying, or not.
enum HandshakeError {
    Transient(OpenCtiError),
    Fatal(SourceError),
}

impl From<OpenCtiError> for HandshakeError {
    fn from(e: OpenCtiError) -> Self {
        if e.is_transient() {
            HandshakeError::Transient(e)
        } else {
            HandshakeError::Fatal(e.into_source_error())
        }
    }
}

impl HandshakeError {
    fn into_source_error(self) -> SourceError {
        match self {
            HandshakeError::Transient(e) => e.into_source_error(),
            HandshakeError::Fatal(e) => e,
        }
    }
}

/// How one connection ended.
enum ConnectionEnd {
    /// Shutdown, `--once` caught up, or the pipeline is gone: the run is over.
    Finished,
    /// The operator reset the connector state.
    Reset,
    /// The connection failed or died.
    Lost {
        /// Why.
        why: Disconnect,
        /// It carried at least one id-bearing message (the backoff starts over).
        delivered: bool,
    },
}

impl ConnectionEnd {
    /// A connection lost for a reason worth retrying soon (no HTTP status involved).
    fn transient(cause: String, delivered: bool) -> Self {
        ConnectionEnd::Lost {
            why: Disconnect {
                cause,
                persistent: false,
                status: None,
            },
            delivered,
        }
    }
}

fn stream_error(req: &StreamRequest, why: &Disconnect) -> SourceError {
    match why.status {
        Some(401 | 403) => SourceError::Auth {
            source_name: SOURCE_NAME,
            endpoint: req.url(),
            message: why.cause.clone(),
        },
        Some(404 | 410) => SourceError::Config {
            source_name: SOURCE_NAME,
            key: "connector.live_stream_id",
            message: why.cause.clone(),
        },
        _ => SourceError::Other {
            source_name: SOURCE_NAME,
            message: format!("{}: {}", req.url(), why.cause),
        },
    }
}

/// `--once` stops retrying: a cron job gets an answer instead of hanging.
fn gave_up(attempts: u32, last: &str) -> SourceError {
    SourceError::Other {
        source_name: SOURCE_NAME,
        message: format!(
            "gave up after {attempts} failed attempts in a row (`run --once`, \
             opencti.once_attempts): {last}"
        ),
    }
}

fn reset_event() -> SourceEvent {
    SourceEvent {
        position: None,
        kind: EventKind::Reset,
        payload: Payload::None,
    }
}

/// Sends an event unless shutdown comes first; false when the run should end.
async fn emit(ctx: &SourceContext, ev: SourceEvent) -> bool {
    tokio::select! {
        biased;
        _ = ctx.shutdown.cancelled() => false,
        sent = ctx.events.send(ev) => {
            if sent.is_err() {
                debug!("the pipeline stopped receiving events");
            }
            sent.is_ok()
        }
    }
}

/// Progress, lag and the `--once` target.
struct Tracker {
    /// The `connected` message's `lastEventId`, parsed.
    target: Option<(u64, u64)>,
    target_text: Option<String>,
    interval: Duration,
    last_log: Instant,
    since_log: u64,
    total: u64,
}

impl Tracker {
    fn new(interval: Duration) -> Self {
        Tracker {
            target: None,
            target_text: None,
            interval,
            last_log: Instant::now(),
            since_log: 0,
            total: 0,
        }
    }

    fn set_target(&mut self, last_event_id: Option<String>) {
        self.target = last_event_id.as_deref().and_then(parse_stream_id);
        self.target_text = last_event_id;
    }

    fn emitted(&mut self, position: &str) {
        self.total += 1;
        self.since_log += 1;
        if let Some((ms, _)) = parse_stream_id(position) {
            let now = chrono::Utc::now().timestamp_millis().max(0) as u64;
            let lag = now.saturating_sub(ms) as f64 / 1000.0;
            metrics::global().set("iocsync_source_lag_seconds", &[], lag);
        }
        let elapsed = self.last_log.elapsed();
        if elapsed >= self.interval {
            let rate = self.since_log as f64 / elapsed.as_secs_f64().max(0.001);
            info!(events = self.total, rate = format!("{rate:.1}/s"), position = %position,
                stream_last_id = ?self.target_text, "stream progress");
            self.last_log = Instant::now();
            self.since_log = 0;
        }
    }

    /// Caught up: an emitted id reached the `connected` message's `lastEventId`; or, when the
    /// server gave no usable target, a heartbeat with nothing else queued. (A heartbeat alone is
    /// not enough when a target exists: the server also heartbeats during a slow recover replay.)
    fn caught_up(&self, position: &str, heartbeat: bool, nothing_queued: bool) -> bool {
        match (parse_stream_id(position), self.target) {
            (Some(p), Some(t)) => p >= t,
            (_, None) => heartbeat && nothing_queued,
            (None, Some(_)) => false,
        }
    }
}

/// What the ping task and the stream loop share.
struct PingShared {
    /// The start of the current replay (what we report until the pipeline commits something).
    base_start: String,
    recover_until: RecoverUntil,
    /// After a reset the pipeline's committed value is stale until it changes: ignore it.
    ignore_committed: Option<Option<String>>,
    /// The platform's state as last seen was empty: a further empty answer is not a new reset.
    platform_empty: bool,
}

impl PingShared {
    fn state(&mut self, committed: Option<String>) -> ConnectorState {
        if let Some(stale) = &self.ignore_committed {
            if *stale == committed {
                return self.own_state(None);
            }
            self.ignore_committed = None;
        }
        self.own_state(committed)
    }

    fn own_state(&self, committed: Option<String>) -> ConnectorState {
        ConnectorState {
            start_from: Some(committed.unwrap_or_else(|| self.base_start.clone())),
            recover_until: self.recover_until.clone(),
        }
    }

    fn restart(&mut self, fresh: (String, RecoverUntil), committed: Option<String>) {
        self.base_start = fresh.0;
        self.recover_until = fresh.1;
        self.ignore_committed = Some(committed);
    }
}

fn lock(m: &Mutex<PingShared>) -> std::sync::MutexGuard<'_, PingShared> {
    // A panic elsewhere while holding it leaves plain data behind: keep using it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One ping; true when it revealed a remote reset (then `shared` already holds the fresh start).
async fn ping_once(
    gql: &GraphqlClient,
    s: &Settings,
    committed: &watch::Receiver<Option<String>>,
    shared: &Mutex<PingShared>,
) -> Result<bool, OpenCtiError> {
    let current = committed.borrow().clone();
    let state = lock(shared).state(current.clone());
    let returned = gql.ping(&s.connector_id, &state.to_json()).await?;
    let remote = ConnectorState::parse(returned.as_deref());
    let mut sh = lock(shared);
    let was_empty = std::mem::replace(&mut sh.platform_empty, remote.is_none());
    if remote.is_none() && !was_empty {
        sh.restart(s.fresh_start(), current);
        return Ok(true);
    }
    if let Some(remote) = remote.filter(|r| *r != state) {
        debug!(sent = %state.to_json(), stored = %remote.to_json(), "platform holds another state");
    }
    Ok(false)
}

/// Pings now and every `ping_interval` until cancelled.
async fn ping_task(
    gql: GraphqlClient,
    s: Arc<Settings>,
    committed: watch::Receiver<Option<String>>,
    shared: Arc<Mutex<PingShared>>,
    reset: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut failing = false;
    loop {
        match ping_once(&gql, &s, &committed, &shared).await {
            Ok(true) => reset.notify_one(),
            Ok(false) => {
                if failing {
                    info!("OpenCTI ping back to normal");
                }
                failing = false;
            }
            Err(OpenCtiError::Graphql { message, .. })
                if message.contains("No connector found") =>
            {
                // Deleted in the UI while we run: register again (its state is gone, which is
                // not a reset of ours: the next ping stores our position again).
                warn!("the connector was deleted in OpenCTI: registering it again");
                let reg = Registration {
                    id: s.connector_id.clone(),
                    name: s.name.clone(),
                    scope: s.scope.clone(),
                };
                match gql.register(&reg).await {
                    Ok(_) => lock(&shared).platform_empty = true,
                    Err(e) => warn!(cause = %e, "re-registering the connector failed"),
                }
            }
            Err(e) => {
                failing = true;
                warn!(cause = %e, "OpenCTI ping failed");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(s.ping_interval) => {}
        }
    }
}

#[async_trait]
impl Source for OpenCtiSource {
    fn name(&self) -> &'static str {
        SOURCE_NAME
    }

    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        metrics::global().set("iocsync_source_connected", &[], 0.0);
        let Some(platform) = self.prepare(&ctx.shutdown, ctx.once).await? else {
            return Ok(());
        };
        let platform_state = ConnectorState::parse(platform.as_deref());
        let fresh = self.s.fresh_start();
        let mut reset_first = false;
        let (start, recover_until) = match (&ctx.start, &platform_state) {
            (Some(pos), Some(st)) => (pos.clone(), st.recover_until.clone()),
            (Some(pos), None) => {
                warn!(local = %pos, "the platform holds no state for this connector while a local \
                    checkpoint exists (reset in the UI, or a new connector.id): replaying from the \
                    beginning");
                reset_first = true;
                fresh
            }
            (None, st) => {
                if let Some(st) = st {
                    info!(platform = %st.to_json(), "no local checkpoint: ignoring the platform's \
                        state and starting a first run");
                }
                fresh
            }
        };
        if reset_first && !emit(&ctx, reset_event()).await {
            return Ok(());
        }
        let shared = Arc::new(Mutex::new(PingShared {
            base_start: start,
            recover_until,
            ignore_committed: reset_first.then(|| ctx.committed.borrow().clone()),
            platform_empty: platform_state.is_none(),
        }));
        let reset = Arc::new(Notify::new());
        let stop_pings = ctx.shutdown.child_token();
        let pinger = tokio::spawn(ping_task(
            self.gql.clone(),
            self.s.clone(),
            ctx.committed.clone(),
            shared.clone(),
            reset.clone(),
            stop_pings.clone(),
        ));
        let result = self.stream_loop(&ctx, &shared, &reset).await;
        // Closing the channel lets the pipeline apply what it holds and write its last checkpoint;
        // the run's owner cancels `shutdown` once it has, so the final ping below publishes it.
        let SourceContext {
            events,
            committed,
            shutdown,
            ..
        } = ctx;
        drop(events);
        if result.is_ok() {
            shutdown.cancelled().await;
        }
        stop_pings.cancel();
        if let Err(e) = pinger.await {
            warn!(cause = %e, "ping task failed");
        }
        // The final ping publishes the position reached (the pipeline's last checkpoint).
        let last = tokio::time::timeout(
            self.s.request_timeout,
            ping_once(&self.gql, &self.s, &committed, &shared),
        )
        .await;
        match last {
            Ok(Ok(_)) => debug!("final ping sent"),
            Ok(Err(e)) => warn!(cause = %e, "final OpenCTI ping failed"),
            Err(_) => warn!("final OpenCTI ping timed out"),
        }
        metrics::global().set("iocsync_source_connected", &[], 0.0);
        result
    }

    async fn check(&self) -> Result<String, SourceError> {
        let version = self
            .gql
            .about_version()
            .await
            .map_err(OpenCtiError::into_source_error)?;
        let stream = self
            .check_stream()
            .await
            .map_err(HandshakeError::into_source_error)?;
        Ok(format!(
            "OpenCTI {version} at {}: token accepted, {stream}",
            self.s.url
        ))
    }
}

/// pycti settings a user's env block may carry that mean nothing here.
fn log_ignored(opencti: &OpenCtiConfig, c: &ConnectorConfig) {
    let ignored = [
        (
            "opencti.json_logging",
            opencti.json_logging.map(|b| b.to_string()),
        ),
        ("connector.confidence_level", c.confidence_level.clone()),
        ("connector.auto", c.auto.clone()),
        ("connector.auto_update", c.auto_update.clone()),
        ("connector.only_contextual", c.only_contextual.clone()),
        ("connector.run_and_terminate", c.run_and_terminate.clone()),
        ("connector.queue_threshold", c.queue_threshold.clone()),
        ("connector.queue_protocol", c.queue_protocol.clone()),
        ("connector.duration_period", c.duration_period.clone()),
        (
            "connector.update_existing_data",
            c.update_existing_data.clone(),
        ),
        (
            "connector.validate_before_import",
            c.validate_before_import.clone(),
        ),
        (
            "connector.enrichment_resolution",
            c.enrichment_resolution.clone(),
        ),
        ("connector.metrics_namespace", c.metrics_namespace.clone()),
        ("connector.metrics_subsystem", c.metrics_subsystem.clone()),
        ("connector.listen_protocol", c.listen_protocol.clone()),
        ("connector.send_to_queue", c.send_to_queue.clone()),
        ("connector.send_to_directory", c.send_to_directory.clone()),
    ];
    for (key, value) in ignored {
        if value.is_some() {
            debug!(key, "pycti setting accepted and ignored");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caught_up_rules() {
        let mut t = Tracker::new(Duration::from_secs(10));
        assert!(t.caught_up("5-0", true, true), "no target: idle heartbeat");
        assert!(!t.caught_up("5-0", false, true));
        t.set_target(Some("10-2".into()));
        assert!(
            !t.caught_up("10-1", true, true),
            "heartbeat before the target"
        );
        assert!(t.caught_up("10-2", false, false));
        assert!(t.caught_up("11-0", true, false));
    }

    #[test]
    fn ping_state_ignores_a_stale_commit_after_reset() {
        let mut sh = PingShared {
            base_start: "7-0".into(),
            recover_until: RecoverUntil::Off,
            ignore_committed: None,
            platform_empty: false,
        };
        assert_eq!(
            sh.state(Some("9-9".into())).start_from.as_deref(),
            Some("9-9")
        );
        assert_eq!(sh.state(None).start_from.as_deref(), Some("7-0"));
        sh.restart(("0-0".into(), RecoverUntil::Off), Some("9-9".into()));
        assert_eq!(
            sh.state(Some("9-9".into())).start_from.as_deref(),
            Some("0-0")
        );
        assert_eq!(
            sh.state(Some("1-0".into())).start_from.as_deref(),
            Some("1-0")
        );
        assert_eq!(
            sh.state(Some("9-9".into())).start_from.as_deref(),
            Some("9-9")
        );
    }
}

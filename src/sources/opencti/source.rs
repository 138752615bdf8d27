//! [`OpenCtiSource`]: registration, the reconnecting stream loop with its liveness watchdog, the
//! ping task that publishes our position and notices an operator's reset, and `--once`.
//!
//! Resume rule: a reconnect within a run resumes from the last id this source *emitted*, not from
//! the last checkpoint. Events emitted but not yet applied are then not re-sent by the server, yet
//! nothing is lost: they are already in the pipeline's channel. A restart resumes from the
//! checkpoint (`SourceContext.start`), and the pipeline is idempotent for the overlap.

use super::config::{log_ignored, ConnectorConfig, OpenCtiConfig, RecoverSetting};
use super::event::{decode_frame, ConnectedInfo, TOPIC_CONNECTED};
use super::graphql::{ConnectorState, GraphqlClient, RecoverUntil, Registration};
use super::ping::{lock, ping_once, ping_task, PingShared};
use super::progress::Tracker;
use super::stream::{gave_up, stream_error, ConnectionEnd, StreamRequest};
use super::{OpenCtiError, SOURCE_NAME};
use crate::config::Valid;
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
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// Stream ids that are not stream collections: no `streamCollection` lookup (as pycti).
const UNLISTED_STREAMS: [&str; 2] = ["live", "raw"];

/// The validated settings the source runs with.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) url: String,
    pub(super) token: Secret,
    pub(super) stream_id: String,
    pub(super) connector_id: String,
    pub(super) name: String,
    pub(super) scope: Vec<String>,
    pub(super) listen_delete: bool,
    pub(super) no_dependencies: bool,
    pub(super) with_inferences: bool,
    pub(super) recover: RecoverSetting,
    pub(super) start_id: Option<String>,
    pub(super) stream_timeout: Duration,
    pub(super) reconnect_min: Duration,
    pub(super) reconnect_max: Duration,
    pub(super) ping_interval: Duration,
    pub(super) progress_interval: Duration,
    pub(super) request_timeout: Duration,
    pub(super) max_event_bytes: usize,
    pub(super) once_attempts: u32,
}

impl Settings {
    /// Where a run with no usable checkpoint starts: the configured start id or the beginning
    /// (`0-0`, as pycti), replaying the current state up to the recover date.
    pub(super) fn fresh_start(&self) -> (String, RecoverUntil) {
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
    /// Builds the HTTP clients from the validated sections; fails only on the TLS setup (a CA
    /// bundle that cannot be read).
    pub fn new(
        opencti: &Valid<OpenCtiConfig>,
        connector: &Valid<ConnectorConfig>,
    ) -> Result<Self, SourceError> {
        let s = Settings {
            url: opencti.facts().url.clone(),
            token: opencti.facts().token.clone(),
            stream_id: connector.facts().stream_id.clone(),
            connector_id: connector.facts().connector_id.clone(),
            name: connector
                .name
                .clone()
                .unwrap_or_else(|| "iocsync".to_string()),
            scope: connector.scope_list(),
            listen_delete: connector.live_stream_listen_delete,
            no_dependencies: connector.live_stream_no_dependencies,
            with_inferences: connector.live_stream_with_inferences,
            recover: connector.facts().recover.clone(),
            start_id: connector.facts().start_id.clone(),
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

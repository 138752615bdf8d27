//! [`MispSource`]: the scheduled poll loop. One run = one incremental `restSearch` from the last
//! acknowledged run's start (paged, boundary re-delivery dropped on uuid + timestamp), plus — every
//! `misp.resync_interval` — a full listing that removes from the sinks what MISP no longer has and
//! re-adds what an incremental poll missed. Every run ends with a `RunEnd` event whose position is
//! the run's [`Mark`]; the pipeline makes it the checkpoint only once every sink acknowledged the run.

use super::client::{MispClient, MispError};
use super::config::MispConfig;
use super::feeds::{FeedCounts, FeedIndex, FEED_COUNTS_KEY};
use super::mapping::{gate, map_attribute, Gate, MapOptions};
use super::schedule::{Mark, Schedule};
use super::wire::{text, Attribute};
use super::SOURCE_NAME;
use crate::metrics;
use crate::model::{EventKind, IndicatorState, IocMeta, Payload, SourceEvent};
use crate::sources::{Source, SourceContext, SourceError};
use crate::state::{State, StateError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{debug, error, info, warn};

/// The state kv key of the last run's boundary memo (see [`Memo`]).
const MEMO_KEY: &str = "misp.boundary";

/// Polls a MISP server on a schedule.
pub struct MispSource {
    cfg: MispConfig,
    client: MispClient,
    schedule: Schedule,
    state_dir: PathBuf,
    opts: MapOptions,
    disabled: Vec<String>,
    types: Vec<String>,
}

/// Why a run did not complete.
#[derive(Debug, thiserror::Error)]
enum RunError {
    /// A MISP call failed.
    #[error(transparent)]
    Misp(#[from] MispError),
    /// Our own state connection failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The server ignores `page`: paging would never end.
    #[error("attributes/restSearch: page {page} repeats page {previous} (the server ignores `page`); lower `misp.page_size` or upgrade MISP")]
    Paging {
        /// The repeated page.
        page: u64,
        /// The page it repeats.
        previous: u64,
    },
    /// Shutdown, or the pipeline stopped receiving.
    #[error("stopped")]
    Stopped,
}

impl RunError {
    fn into_source_error(self) -> SourceError {
        match self {
            RunError::Misp(MispError::Auth {
                endpoint, message, ..
            }) => SourceError::Auth {
                source_name: SOURCE_NAME,
                endpoint,
                message,
            },
            other => SourceError::Other {
                source_name: SOURCE_NAME,
                message: other.to_string(),
            },
        }
    }
}

/// The attributes a run sent whose timestamp is at or after the run's start: exactly those the next
/// poll (`timestamp >= start`) returns again. Stored after each run; used only when the checkpoint
/// shows that run was acknowledged, so nothing unapplied is ever dropped.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Memo {
    run_start: i64,
    seen: HashMap<String, i64>,
}

/// What one run leaves for the next, in this process.
struct Memory {
    mark: Option<Mark>,
    /// Local start time of the last run sent in this process (the schedule's reference; the mark
    /// has whole server seconds).
    started_local: Option<DateTime<Utc>>,
    memo: Memo,
    state: Option<Arc<Mutex<State>>>,
}

/// Counters of one run, for the log line.
#[derive(Debug, Default)]
struct Tally {
    received: u64,
    deduped: u64,
    removed_by_resync: u64,
    added_by_resync: u64,
}

impl MispSource {
    /// A source for `cfg` (validated) keeping its resync view and per-feed counts in the state
    /// database under `state_dir` (opened on the first run, not here: `iocsync check` builds sources).
    pub fn new(cfg: &MispConfig, state_dir: &Path) -> Result<MispSource, SourceError> {
        let client = MispClient::new(cfg).map_err(|e| SourceError::Other {
            source_name: SOURCE_NAME,
            message: e.to_string(),
        })?;
        let opts = MapOptions {
            only_to_ids: cfg.only_to_ids,
            expand_or: false,
            base_url: client.base_url(),
        };
        Ok(MispSource {
            schedule: cfg.schedule(),
            disabled: cfg.disabled_feed_list(),
            types: cfg.type_list(),
            cfg: cfg.clone(),
            client,
            state_dir: state_dir.to_path_buf(),
            opts,
        })
    }

    /// Expands `stix2-pattern` ORs of equalities into several IOCs (`pipeline.expand_or`).
    pub fn with_expand_or(mut self, expand: bool) -> Self {
        self.opts.expand_or = expand;
        self
    }

    /// The filters every `restSearch` carries.
    fn filters(&self) -> serde_json::Map<String, Value> {
        let mut body = serde_json::Map::new();
        body.insert("returnFormat".into(), json!("json"));
        body.insert("type".into(), json!(self.types));
        body.insert("includeEventUuid".into(), json!(1));
        // Event tags are needed for the tag rule of feed linking and make better labels.
        body.insert("includeEventTags".into(), json!(1));
        if self.cfg.enforce_warninglist {
            body.insert("enforceWarninglist".into(), json!(1));
        }
        let mut tags = super::config::split_list(self.cfg.tags.as_deref());
        tags.extend(
            super::config::split_list(self.cfg.exclude_tags.as_deref())
                .into_iter()
                .map(|t| format!("!{t}")),
        );
        if !tags.is_empty() {
            body.insert("tags".into(), json!(tags));
        }
        let orgs = super::config::split_list(self.cfg.orgs.as_deref());
        if !orgs.is_empty() {
            body.insert("org".into(), json!(orgs));
        }
        if self.cfg.published_only {
            body.insert("published".into(), json!(1));
        }
        body.insert("limit".into(), json!(self.cfg.page_size));
        body
    }

    /// The incremental poll: everything changed since `since`, soft deletions included, `to_ids`
    /// not filtered (a flag turned off must reach us to remove the IOC).
    fn incremental_body(&self, since: i64) -> serde_json::Map<String, Value> {
        let mut body = self.filters();
        body.insert("timestamp".into(), json!(since));
        body.insert("deleted".into(), json!([0, 1]));
        body
    }

    /// The resync listing: live attributes that can yield IOCs, changed since the floor.
    fn resync_body(&self, floor: Option<i64>) -> serde_json::Map<String, Value> {
        let mut body = self.filters();
        if let Some(floor) = floor {
            body.insert("timestamp".into(), json!(floor));
        }
        body.insert("deleted".into(), json!(0));
        if self.cfg.only_to_ids {
            body.insert("to_ids".into(), json!(1));
        }
        body
    }

    fn resync_due(&self, mark: Option<&Mark>, run_start: i64) -> bool {
        let every = self.cfg.resync_interval.as_secs() as i64;
        match mark {
            // The first run reads the whole look-back window: it is its own full view.
            None => false,
            Some(_) if every == 0 => false,
            Some(m) => m.last_resync.is_none_or(|r| run_start - r >= every),
        }
    }

    /// The feeds, resolved against `misp.disabled_feeds`. Without disabled feeds a failure only
    /// costs the per-feed counts; with some, the run cannot tell what to hold back and fails.
    async fn load_feeds(&self) -> Result<FeedIndex, RunError> {
        match self.client.feeds().await {
            Ok(feeds) => {
                let (index, unknown) = FeedIndex::new(feeds, &self.disabled);
                if !unknown.is_empty() {
                    warn!(feeds = %unknown.join(", "), "misp.disabled_feeds names feeds this MISP does not have (see `iocsync misp feeds`)");
                }
                Ok(index)
            }
            Err(e) if self.disabled.is_empty() => {
                warn!(error = %e, "cannot list MISP feeds: per-feed counts are not available for this run");
                Ok(FeedIndex::default())
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn state(&self, mem: &mut Memory) -> Result<Arc<Mutex<State>>, RunError> {
        if let Some(s) = &mem.state {
            return Ok(Arc::clone(s));
        }
        let dir = self.state_dir.clone();
        let state = tokio::task::spawn_blocking(move || State::open(&dir))
            .await
            .map_err(|e| RunError::Misp(MispError::Client(format!("state task failed: {e}"))))??;
        let state = Arc::new(Mutex::new(state));
        mem.state = Some(Arc::clone(&state));
        Ok(state)
    }

    /// One run, start to `RunEnd`.
    async fn poll(&self, ctx: &SourceContext, mem: &mut Memory) -> Result<(), RunError> {
        let local_now = Utc::now();
        let server = match self.client.version().await {
            Ok(s) => s,
            Err(e) => {
                metrics::global().set("iocsync_source_connected", &[], 0.0);
                return Err(e.into());
            }
        };
        metrics::global().set("iocsync_source_connected", &[], 1.0);
        // Attribute timestamps are the server's: time the run on its clock when it tells us.
        let run_start = server.now.unwrap_or(local_now).timestamp();
        let lookback = self.cfg.initial_lookback.as_secs() as i64;
        let since = mem
            .mark
            .map_or(run_start.saturating_sub(lookback), |m| m.last_run);
        let floor = match mem.mark {
            Some(m) => m.floor,
            None => Some(since),
        };
        let resync = self.resync_due(mem.mark.as_ref(), run_start);
        let state = self.state(mem).await?;
        // The memo of the previous run counts only if that run was acknowledged.
        let memo = if mem.memo.run_start == since {
            mem.memo.seen.clone()
        } else {
            HashMap::new()
        };
        info!(
            version = %server.version,
            since = %fmt_time(since),
            resync,
            "MISP run started"
        );
        let feeds = self.load_feeds().await?;
        let mut counts = FeedCounts {
            run_started: fmt_time(run_start),
            ..FeedCounts::default()
        };
        let mut tally = Tally::default();
        let mut sent: HashSet<String> = HashSet::new();
        let mut seen_now: HashMap<String, i64> = HashMap::new();

        let body = self.incremental_body(since);
        self.pages(ctx, body, |attr, read_at| {
            let attr = match attr {
                Ok(a) => a,
                Err(reason) => {
                    tally.received += 1;
                    return Some(SourceEvent {
                        position: None,
                        kind: EventKind::Other,
                        payload: Payload::Malformed { reason },
                    });
                }
            };
            if memo.get(&attr.uuid) == Some(&attr.timestamp) {
                tally.deduped += 1;
                return None;
            }
            tally.received += 1;
            let feed = feeds.link(&attr);
            let disabled = feed.is_some_and(|f| feeds.is_disabled(f));
            let state = map_attribute(&attr, disabled, &self.opts);
            counts.count(
                feed,
                state.skip == Some(crate::skip::SkipReason::IgnoredDisabledFeed),
            );
            // The next poll returns this version again when it changed at or after our start. An
            // attribute changed in the very second we read it may change again within that second
            // under the same timestamp: remember only versions strictly older than the read.
            if attr.timestamp >= run_start && attr.timestamp < read_at {
                seen_now.insert(attr.uuid.clone(), attr.timestamp);
            }
            if resync {
                sent.insert(attr.uuid.clone());
            }
            Some(classified(state))
        })
        .await?;

        if resync {
            self.resync(ctx, &state, &feeds, floor, &sent, &mut tally)
                .await?;
        }

        let mark = Mark {
            last_run: run_start,
            last_resync: if resync || mem.mark.is_none() {
                Some(run_start)
            } else {
                mem.mark.and_then(|m| m.last_resync)
            },
            floor,
        };
        emit(
            ctx,
            SourceEvent {
                position: Some(mark.encode()),
                kind: EventKind::RunEnd,
                payload: Payload::None,
            },
        )
        .await?;
        let memo = Memo {
            run_start,
            seen: seen_now,
        };
        self.save_run_notes(&state, &counts, &memo).await;
        info!(
            received = tally.received,
            deduplicated = tally.deduped,
            resync_removed = tally.removed_by_resync,
            resync_added = tally.added_by_resync,
            position = %mark.encode(),
            "MISP run read; its changes are being applied"
        );
        mem.mark = Some(mark);
        mem.started_local = Some(local_now);
        mem.memo = memo;
        Ok(())
    }

    /// Pages through `restSearch` with `body`, handing each attribute (with the second the page was
    /// read in, server time when known) to `handle` and sending what it returns. Stops after a page
    /// shorter than `limit`.
    async fn pages(
        &self,
        ctx: &SourceContext,
        mut body: serde_json::Map<String, Value>,
        mut handle: impl FnMut(Result<Attribute, String>, i64) -> Option<SourceEvent>,
    ) -> Result<(), RunError> {
        let limit = self.cfg.page_size.max(1);
        let mut previous_first: Option<String> = None;
        let mut page: u64 = 1;
        loop {
            body.insert("page".into(), json!(page));
            let request = Value::Object(body.clone());
            let (attrs, date) = tokio::select! {
                biased;
                _ = ctx.shutdown.cancelled() => return Err(RunError::Stopped),
                r = self.client.search(&request) => r?,
            };
            // Without a server clock, one second of margin for our own.
            let read_at = date.map_or_else(|| Utc::now().timestamp() - 1, |d| d.timestamp());
            let first = attrs.first().and_then(|a| text(a.get("uuid")));
            if page > 1 && first.is_some() && first == previous_first {
                return Err(RunError::Paging {
                    page,
                    previous: page - 1,
                });
            }
            debug!(page, count = attrs.len(), "restSearch page");
            let full = attrs.len() >= limit;
            for raw in &attrs {
                if let Some(event) = handle(Attribute::from_value(raw), read_at) {
                    emit(ctx, event).await?;
                }
            }
            if !full {
                return Ok(());
            }
            previous_first = first;
            page += 1;
        }
    }

    /// The full resync: lists every attribute MISP would have us hold, removes from the sinks the
    /// ones it no longer has (hard deletes, deleted events, filter changes, feeds disabled since),
    /// and sends the ones the sinks miss (within the floor; an incremental poll can miss an
    /// attribute when a hard delete shifts pages under it, or when only event tags changed).
    async fn resync(
        &self,
        ctx: &SourceContext,
        state: &Arc<Mutex<State>>,
        feeds: &FeedIndex,
        floor: Option<i64>,
        sent: &HashSet<String>,
        tally: &mut Tally,
    ) -> Result<(), RunError> {
        let state = Arc::clone(state);
        let held: Vec<String> = tokio::task::spawn_blocking(move || {
            let guard = state.lock().unwrap_or_else(|e| e.into_inner());
            guard.indicator_ids()
        })
        .await
        .map_err(|e| RunError::Misp(MispError::Client(format!("state task failed: {e}"))))??;
        // Only bare uuids are MISP attributes; `indicator--…` ids belong to another source.
        let held: HashMap<uuid::Uuid, String> = held
            .into_iter()
            .filter_map(|id| uuid::Uuid::parse_str(&id).ok().map(|u| (u, id)))
            .collect();
        let mut present: HashSet<uuid::Uuid> = HashSet::new();
        let mut added = 0u64;
        let body = self.resync_body(floor);
        self.pages(ctx, body, |attr, _| {
            let attr = attr.ok()?;
            let feed = feeds.link(&attr);
            let disabled = feed.is_some_and(|f| feeds.is_disabled(f));
            if gate(&attr, disabled, &self.opts) != Gate::Open {
                return None;
            }
            let state = map_attribute(&attr, disabled, &self.opts);
            if state.iocs.is_empty() {
                return None;
            }
            let key = uuid::Uuid::parse_str(&attr.uuid).ok();
            if let Some(u) = key {
                present.insert(u);
            }
            let missing = key.is_some_and(|u| !held.contains_key(&u));
            if floor.is_some() && missing && !sent.contains(&attr.uuid) {
                added += 1;
                return Some(classified(state));
            }
            None
        })
        .await?;
        let mut removed = 0u64;
        for (u, id) in &held {
            if present.contains(u) || sent.contains(id) {
                continue;
            }
            removed += 1;
            emit(
                ctx,
                classified(IndicatorState {
                    id: id.clone(),
                    iocs: Vec::new(),
                    skip: None,
                    meta: IocMeta::default(),
                    version: None,
                }),
            )
            .await?;
        }
        info!(
            held = held.len(),
            present = present.len(),
            removed,
            added,
            "MISP resync compared what the sinks hold with what MISP has"
        );
        tally.received += removed + added;
        tally.removed_by_resync = removed;
        tally.added_by_resync = added;
        Ok(())
    }

    /// Stores the per-feed counts and the boundary memo; a failure costs only those notes.
    async fn save_run_notes(&self, state: &Arc<Mutex<State>>, counts: &FeedCounts, memo: &Memo) {
        let state = Arc::clone(state);
        let counts = serde_json::to_string(counts).unwrap_or_default();
        let memo = serde_json::to_string(memo).unwrap_or_default();
        let result = tokio::task::spawn_blocking(move || {
            let guard = state.lock().unwrap_or_else(|e| e.into_inner());
            guard.kv_set(FEED_COUNTS_KEY, &counts)?;
            guard.kv_set(MEMO_KEY, &memo)
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "cannot store the run's feed counts"),
            Err(e) => warn!(error = %e, "cannot store the run's feed counts"),
        }
    }

    /// Reads the memo of the last run from the state (restarts and `--once` keep deduplicating).
    async fn load_memo(&self, mem: &mut Memory) {
        let Ok(state) = self.state(mem).await else {
            return;
        };
        let loaded = tokio::task::spawn_blocking(move || {
            let guard = state.lock().unwrap_or_else(|e| e.into_inner());
            guard.kv_get(MEMO_KEY)
        })
        .await;
        if let Ok(Ok(Some(text))) = loaded {
            if let Ok(memo) = serde_json::from_str::<Memo>(&text) {
                mem.memo = memo;
            }
        }
    }
}

fn classified(state: IndicatorState) -> SourceEvent {
    let kind = if state.iocs.is_empty() && state.skip.is_none() {
        EventKind::Delete
    } else {
        EventKind::Update
    };
    SourceEvent {
        position: None,
        kind,
        payload: Payload::Classified(Box::new(state)),
    }
}

fn fmt_time(unix: i64) -> String {
    DateTime::from_timestamp(unix, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| unix.to_string())
}

/// Sends an event unless shutdown comes first.
async fn emit(ctx: &SourceContext, ev: SourceEvent) -> Result<(), RunError> {
    tokio::select! {
        biased;
        _ = ctx.shutdown.cancelled() => Err(RunError::Stopped),
        sent = ctx.events.send(ev) => sent.map_err(|_| RunError::Stopped),
    }
}

/// Sleeps until `at` (wall clock, re-read every minute so a clock change or a suspend is noticed);
/// false on shutdown.
async fn sleep_until(at: DateTime<Utc>, ctx: &SourceContext) -> bool {
    loop {
        let left = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        if left.is_zero() {
            return true;
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return false,
            _ = tokio::time::sleep(left.min(Duration::from_secs(60))) => {}
        }
    }
}

#[async_trait]
impl Source for MispSource {
    fn name(&self) -> &'static str {
        SOURCE_NAME
    }

    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let mark = ctx.start.as_deref().and_then(Mark::parse);
        if let (Some(start), None) = (&ctx.start, &mark) {
            warn!(checkpoint = %start, "the checkpoint is not a MISP run mark: starting from the initial look-back");
        }
        let mut mem = Memory {
            mark,
            started_local: None,
            memo: Memo::default(),
            state: None,
        };
        self.load_memo(&mut mem).await;
        if ctx.once {
            return match self.poll(&ctx, &mut mem).await {
                Ok(()) | Err(RunError::Stopped) => Ok(()),
                Err(e) => Err(e.into_source_error()),
            };
        }
        info!(schedule = %self.schedule.describe(), "MISP source started");
        let mut retry_at: Option<DateTime<Utc>> = None;
        loop {
            let next = retry_at.unwrap_or_else(|| {
                let last = mem
                    .started_local
                    .or_else(|| mem.mark.and_then(|m| m.last_run_time()));
                self.schedule.next_run(last, Utc::now())
            });
            if next > Utc::now() {
                info!(at = %next.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "next MISP run");
            }
            if !sleep_until(next, &ctx).await {
                return Ok(());
            }
            match self.poll(&ctx, &mut mem).await {
                Ok(()) => retry_at = None,
                Err(RunError::Stopped) => return Ok(()),
                Err(e) => {
                    let wait = chrono::Duration::from_std(self.cfg.retry_interval)
                        .unwrap_or(chrono::Duration::minutes(5));
                    error!(error = %e, retry_in_s = wait.num_seconds(), "MISP run failed; it will be retried from the same last_run_time");
                    retry_at = Some(Utc::now() + wait);
                }
            }
        }
    }

    async fn check(&self) -> Result<String, SourceError> {
        let info = self
            .client
            .version()
            .await
            .map_err(|e| RunError::from(e).into_source_error())?;
        let mut what = format!(
            "MISP {} at {}: key accepted, schedule {}",
            info.version,
            self.client.base_url(),
            self.schedule.describe()
        );
        if !self.disabled.is_empty() {
            let feeds = self
                .client
                .feeds()
                .await
                .map_err(|e| RunError::from(e).into_source_error())?;
            let total = feeds.len();
            let (index, unknown) = FeedIndex::new(feeds, &self.disabled);
            if !unknown.is_empty() {
                return Err(SourceError::Config {
                    source_name: SOURCE_NAME,
                    key: "misp.disabled_feeds",
                    message: format!(
                        "no MISP feed is named or numbered {} (see `iocsync misp feeds`)",
                        unknown
                            .iter()
                            .map(|u| format!("`{u}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
            let disabled = index
                .feeds()
                .iter()
                .filter(|f| index.is_disabled(f))
                .count();
            what.push_str(&format!(", {disabled} of {total} feeds disabled"));
        }
        Ok(what)
    }
}

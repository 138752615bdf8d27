//! [`MispSource`]: the scheduled poll loop. One run = one incremental `restSearch` from one second
//! before the last acknowledged run's watermark (the newest attribute timestamp it read, never past
//! its start), paged in attribute-id order until an empty page, with the overlap's re-deliveries
//! dropped on uuid + timestamp + content; plus — every `misp.resync_interval` — a full listing
//! that removes from the sinks what MISP no longer has and re-adds what an incremental poll missed,
//! removing only once every page of the listing was read. Every run ends with a `RunEnd` event
//! whose position is the run's [`Mark`]; the pipeline makes it the checkpoint only once every sink
//! acknowledged the run.

use super::client::{MispClient, MispError};
use super::config::MispConfig;
use super::edits::{wait_until, Wake};
use super::feeds::{FeedCounts, FeedIndex};
use super::mapping::{map_attribute, MapOptions};
use super::overrides::Overrides;
use super::schedule::{Mark, Schedule};
use super::wire::{text, Attribute};
use super::SOURCE_NAME;
use crate::config::Valid;
use crate::metrics;
use crate::model::{EventKind, IndicatorState, Payload, SourceEvent};
use crate::sources::{Source, SourceContext, SourceError};
use crate::state::StateError;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use tracing::{debug, error, info, warn};

/// The state kv key of the last run's boundary memo (see [`Memo`]).
pub(super) const MEMO_KEY: &str = "misp.boundary";

/// How far before the watermark a poll asks from. MISP timestamps are whole seconds: an attribute
/// changed in the watermark's second after that second was read has the same timestamp, so the
/// window must include that second again (and the one before, for a server `Date` that runs a
/// second ahead of its attribute clock).
pub(super) const OVERLAP_SECS: i64 = 1;

/// The order every `restSearch` asks for. Without one the query is unordered: between two page
/// reads an edited attribute can move, and `limit`/`page` then overlap or skip.
pub(super) const ORDER: &str = "Attribute.id ASC";

/// Polls a MISP server on a schedule.
pub struct MispSource {
    pub(super) cfg: MispConfig,
    pub(super) client: MispClient,
    pub(super) schedule: Schedule,
    pub(super) opts: MapOptions,
    pub(super) disabled: Vec<String>,
    pub(super) types: Vec<String>,
    /// The console's edits as they stood when the source was built: what `check` reports (a run
    /// reads them afresh at its start).
    pub(super) console: Overrides,
}

/// Why a run did not complete.
#[derive(Debug, thiserror::Error)]
pub(super) enum RunError {
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

/// The attribute versions a run read whose timestamp is at or after the next poll's `since`:
/// exactly those the next poll returns again. A version is its timestamp plus a digest of the
/// attribute as answered, since two edits in the same second share a timestamp. Stored after each
/// run; used only by the poll that asks from `since`, i.e. when the checkpoint shows that run was
/// acknowledged, so nothing unapplied is ever dropped.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Memo {
    pub(super) since: i64,
    pub(super) seen: HashMap<String, Version>,
}

/// One attribute version: (timestamp, digest of its JSON).
type Version = (i64, u64);

/// FNV-1a over the attribute's JSON: stable across builds (the memo outlives the process), cheap,
/// and keys are sorted by serde_json, so the same answer always gives the same digest.
pub(super) fn digest(raw: &Value) -> u64 {
    raw.to_string()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

/// What one run leaves for the next, in this process.
pub(super) struct Memory {
    pub(super) mark: Option<Mark>,
    /// Local start time of the last run sent in this process (the schedule's reference; the mark
    /// has whole server seconds).
    pub(super) started_local: Option<DateTime<Utc>>,
    pub(super) memo: Memo,
}

/// Counters of one run, for the log line.
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub(super) received: u64,
    pub(super) deduped: u64,
    pub(super) removed_by_resync: u64,
    pub(super) added_by_resync: u64,
}

impl MispSource {
    /// A source for `cfg` (validated). Its per-feed counts and deduplication memo go to the state
    /// through the run's [`SourceStore`].
    pub fn new(cfg: &Valid<MispConfig>) -> Result<MispSource, SourceError> {
        let client = MispClient::new(cfg).map_err(|e| match e {
            MispError::Setup(e) => SourceError::Config {
                source_name: SOURCE_NAME,
                key: e.key(),
                message: e.to_string(),
            },
            e => SourceError::Other {
                source_name: SOURCE_NAME,
                message: e.to_string(),
            },
        })?;
        let opts = MapOptions {
            only_to_ids: cfg.only_to_ids,
            expand: None,
            base_url: client.base_url(),
        };
        Ok(MispSource {
            schedule: cfg.facts().schedule,
            disabled: cfg.disabled_feed_list(),
            types: cfg.type_list(),
            cfg: MispConfig::clone(cfg),
            client,
            opts,
            console: Overrides::default(),
        })
    }

    /// Expands `stix2-pattern` ORs of equalities into several IOCs (`pipeline.expand_or`), up to
    /// `max` members (`pipeline.expand_max`); `None`: no expansion.
    pub fn with_expansion(mut self, max: Option<usize>) -> Self {
        self.opts.expand = max;
        self
    }

    /// The filters every `restSearch` carries.
    pub(super) fn filters(&self) -> serde_json::Map<String, Value> {
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
        body.insert("order".into(), json!(ORDER));
        body.insert("limit".into(), json!(self.cfg.page_size));
        body
    }

    /// The incremental poll: everything changed since `since`, soft deletions included, `to_ids`
    /// not filtered (a flag turned off must reach us to remove the IOC).
    pub(super) fn incremental_body(&self, since: i64) -> serde_json::Map<String, Value> {
        let mut body = self.filters();
        body.insert("timestamp".into(), json!(since));
        body.insert("deleted".into(), json!([0, 1]));
        body
    }

    /// The feeds, resolved against `misp.disabled_feeds`. Without disabled feeds a failure only
    /// costs the per-feed counts; with some, the run cannot tell what to hold back and fails.
    /// The console's toggles (feed id → pushed) apply over the config.
    pub(super) async fn load_feeds(
        &self,
        toggles: &BTreeMap<String, bool>,
    ) -> Result<FeedIndex, RunError> {
        match self.client.feeds().await {
            Ok(feeds) => {
                let (index, unknown) = FeedIndex::new(feeds, &self.disabled);
                if !unknown.is_empty() {
                    warn!(feeds = %unknown.join(", "), "misp.disabled_feeds names feeds this MISP does not have (see `iocsync misp feeds`)");
                }
                let (index, gone) = index.with_toggles(toggles);
                if !gone.is_empty() {
                    warn!(feeds = %gone.join(", "), "the console toggled feeds this MISP no longer has");
                }
                Ok(index)
            }
            Err(e) if self.disabled.is_empty() && toggles.values().all(|pushed| *pushed) => {
                warn!(error = %e, "cannot list MISP feeds: per-feed counts are not available for this run");
                Ok(FeedIndex::default())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// One run, start to `RunEnd`.
    pub(super) async fn poll(&self, ctx: &SourceContext, mem: &mut Memory) -> Result<(), RunError> {
        let toggles = self.take_overrides(ctx, mem).await;
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
        // How far in attribute time the acknowledged reading reached, and the window from there.
        let (read_up_to, since) = match mem.mark {
            Some(m) => (m.read_up_to(), m.read_up_to().saturating_sub(OVERLAP_SECS)),
            None => {
                let start = run_start.saturating_sub(lookback);
                (start, start)
            }
        };
        let floor = match mem.mark {
            Some(m) => m.floor,
            None => Some(since),
        };
        let resync = self.resync_due(mem.mark.as_ref(), run_start);
        // The memo of the previous run counts only if that run was acknowledged.
        let memo = if mem.memo.since == since {
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
        let feeds = self.load_feeds(&toggles).await?;
        let mut counts = FeedCounts {
            run_started: fmt_time(run_start),
            ..FeedCounts::default()
        };
        let mut tally = Tally::default();
        let mut sent: HashSet<String> = HashSet::new();
        // Every version read in this run (pages can overlap when attributes join the window
        // between two page reads), and the newest timestamp among them.
        let mut read: HashMap<String, Version> = HashMap::new();
        let mut newest = read_up_to;

        let body = self.incremental_body(since);
        self.pages(ctx, body, |raw, attr| {
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
            let version = (attr.timestamp, digest(raw));
            newest = newest.max(attr.timestamp);
            if memo.get(&attr.uuid) == Some(&version) || read.get(&attr.uuid) == Some(&version) {
                read.insert(attr.uuid.clone(), version);
                tally.deduped += 1;
                return None;
            }
            read.insert(attr.uuid.clone(), version);
            tally.received += 1;
            let feed = feeds.link(&attr);
            let disabled = feed.is_some_and(|f| feeds.is_disabled(f));
            let state = map_attribute(&attr, disabled, &self.opts);
            counts.count(
                feed,
                state.skip == Some(crate::skip::SkipReason::IgnoredDisabledFeed),
            );
            if resync {
                sent.insert(attr.uuid.clone());
            }
            Some(classified(state))
        })
        .await?;

        // A listing that fails part-way proves nothing about what MISP lacks: it removes nothing,
        // and the resync stays due for the next run, whose incremental part goes on meanwhile.
        let resynced = resync
            && match self.resync(ctx, &feeds, floor, &sent, &mut tally).await {
                Ok(()) => true,
                Err(RunError::Stopped) => return Err(RunError::Stopped),
                Err(e) => {
                    warn!(error = %e, "MISP resync aborted: nothing removed; it is retried at the next run");
                    false
                }
            };

        // Everything changed before the run started was on some page read after that start, so the
        // reading reached at least min(newest read, start); past the start it cannot vouch for
        // attributes on pages read before they changed.
        let watermark = newest.min(run_start);
        let mark = Mark {
            last_run: run_start,
            watermark: Some(watermark),
            last_resync: if resynced || mem.mark.is_none() {
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
        let next_since = watermark.saturating_sub(OVERLAP_SECS);
        let memo = Memo {
            since: next_since,
            seen: read
                .into_iter()
                .filter(|(_, (ts, _))| *ts >= next_since)
                .collect(),
        };
        self.save_run_notes(&ctx.store, &counts, &memo).await;
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

    /// Pages through `restSearch` with `body`, handing each attribute (raw and read) to `handle`
    /// and sending what it returns. MISP filters warninglists and allowlists after the SQL `LIMIT`,
    /// so a short page does not mean the last one: paging ends at an empty page, unless the server
    /// says (`X-Skipped-Elements-Count`) that it emptied that page by filtering.
    pub(super) async fn pages(
        &self,
        ctx: &SourceContext,
        mut body: serde_json::Map<String, Value>,
        mut handle: impl FnMut(&Value, Result<Attribute, String>) -> Option<SourceEvent>,
    ) -> Result<(), RunError> {
        let limit = self.cfg.page_size.max(1);
        let mut previous: Vec<String> = Vec::new();
        let mut page: u64 = 1;
        loop {
            body.insert("page".into(), json!(page));
            let request = Value::Object(body.clone());
            let answer = tokio::select! {
                biased;
                _ = ctx.shutdown.cancelled() => return Err(RunError::Stopped),
                r = self.client.search(&request) => r?,
            };
            let uuids: Vec<String> = answer
                .attributes
                .iter()
                .filter_map(|a| text(a.get("uuid")))
                .collect();
            // A server that ignores `page` answers the same page for ever. (With one row per page
            // an attribute joining the window can legitimately repeat the previous row.)
            if page > 1 && limit > 1 && !uuids.is_empty() && uuids == previous {
                return Err(RunError::Paging {
                    page,
                    previous: page - 1,
                });
            }
            debug!(
                page,
                count = answer.attributes.len(),
                skipped = answer.skipped,
                "restSearch page"
            );
            for raw in &answer.attributes {
                if let Some(event) = handle(raw, Attribute::from_value(raw)) {
                    emit(ctx, event).await?;
                }
            }
            if answer.attributes.is_empty() && answer.skipped.unwrap_or(0) == 0 {
                return Ok(());
            }
            previous = uuids;
            page += 1;
        }
    }
}

pub(super) fn classified(state: IndicatorState) -> SourceEvent {
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

pub(super) fn fmt_time(unix: i64) -> String {
    DateTime::from_timestamp(unix, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| unix.to_string())
}

/// Sends an event unless shutdown comes first.
pub(super) async fn emit(ctx: &SourceContext, ev: SourceEvent) -> Result<(), RunError> {
    tokio::select! {
        biased;
        _ = ctx.shutdown.cancelled() => Err(RunError::Stopped),
        sent = ctx.events.send(ev) => sent.map_err(|_| RunError::Stopped),
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
        };
        self.load_memo(&ctx.store, &mut mem).await;
        if ctx.once {
            return match self.poll(&ctx, &mut mem).await {
                Ok(()) | Err(RunError::Stopped) => Ok(()),
                Err(e) => Err(e.into_source_error()),
            };
        }
        let mut schedule = self.current_schedule(&ctx).await;
        info!(schedule = %schedule.describe(), "MISP source started");
        let mut retry_at: Option<DateTime<Utc>> = None;
        loop {
            let latest = self.current_schedule(&ctx).await;
            if latest != schedule {
                info!(old = %schedule.describe(), new = %latest.describe(), "MISP schedule changed in the console");
                schedule = latest;
            }
            let next = retry_at.unwrap_or_else(|| {
                let last = mem
                    .started_local
                    .or_else(|| mem.mark.and_then(|m| m.last_run_time()));
                schedule.next_run(last, Utc::now())
            });
            if next > Utc::now() {
                info!(at = %next.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "next MISP run");
            }
            ctx.control.set_next_run(Some(next));
            match wait_until(next, &ctx).await {
                Wake::Due => {}
                Wake::SettingsChanged => continue,
                Wake::Shutdown => return Ok(()),
            }
            ctx.control.set_next_run(None);
            // The run's log starts here (the pipeline ends it once it recorded the run).
            ctx.control.begin_run();
            match self.poll(&ctx, &mut mem).await {
                Ok(()) => retry_at = None,
                Err(RunError::Stopped) => return Ok(()),
                Err(e) => {
                    ctx.control.end_run();
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
        let (schedule, schedule_from) = self.checked_schedule();
        let mut what = format!(
            "MISP {} at {}: key accepted, schedule {}{schedule_from}",
            info.version,
            self.client.base_url(),
            schedule.describe()
        );
        let toggles = self.console.pushed_by_id();
        if !self.disabled.is_empty() || !toggles.is_empty() {
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
            let (index, _gone) = index.with_toggles(&toggles);
            let disabled = index
                .feeds()
                .iter()
                .filter(|f| index.is_disabled(f))
                .count();
            what.push_str(&format!(", {disabled} of {total} feeds disabled"));
            if !toggles.is_empty() {
                what.push_str(&format!(" ({} set in the console)", toggles.len()));
            }
        }
        Ok(what)
    }
}

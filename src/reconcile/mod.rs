//! `iocsync reconcile`: proves that each sink holds what the state says it should, and repairs
//! the drift (values deleted by hand, entries added with iocsync's marker, stale ids or metadata).
//!
//! `compare.rs` is the vendor-free comparison (the desired set as a compact index of hashes, the
//! sink streamed past it); `s1.rs` reads SentinelOne, `sekoia.rs` a Sekoia collection (a search
//! per desired value), `files.rs` and `zeek.rs` the JSONL and Zeek files. Repairs are not sent from here: they are
//! written as intents, exactly as the planner writes them, and sent by
//! [`Pipeline::resolve_leftovers`], so batching, retries, dead letters and crash safety are the
//! pipeline's own. `--adopt` rebuilds a lost state's sink entries from what the sink holds.

pub mod compare;
pub mod files;
pub mod s1;
pub mod sekoia;
pub mod zeek;

use crate::app::{self, AppError};
use crate::config::{Config, SinkKind};
use crate::ioc::Ioc;
use crate::model::{Change, ChangeOp, IocMeta};
use crate::pipeline::{Pipeline, RunMode};
use crate::sinks::sentinelone::SentinelOneClient;
use crate::sinks::zeek::ZeekSink;
use crate::sinks::SinkError;
use crate::state::{EntryStatus, SinkEntry, State, StateError};
use compare::{stale, Comparison, Counts, Expectation, RemoteEntry, Verdict};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Exit code of a dry run that found drift.
pub const EXIT_DRIFT: i32 = 4;

/// Entries written to the state per transaction when adopting.
const ADOPT_CHUNK: usize = 1000;

/// What `iocsync reconcile` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only these sinks (names as in `IOCSYNC_SINKS`); empty: every configured sink.
    pub sinks: Vec<String>,
    /// Repair the drift found.
    pub apply: bool,
    /// Rebuild the state's sink entries from the sinks (state directory lost).
    pub adopt: bool,
}

/// Drifted entries a report names.
pub const SAMPLES: usize = 10;

/// One drifted entry of a sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// `extra`, `stale (…)`.
    pub drift: String,
    /// The IOC type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The value.
    pub value: String,
    /// The sink's id for it.
    pub remote_id: Option<String>,
}

impl Sample {
    fn of(verdict: Verdict, e: &RemoteEntry) -> Self {
        let drift = match verdict {
            Verdict::Stale(r) => {
                let mut why = Vec::new();
                for (bit, name) in [
                    (stale::INDICATOR, "indicator"),
                    (stale::REMOTE_ID, "remote id"),
                    (stale::DESCRIPTION, "description"),
                    (stale::VALIDITY, "validity"),
                ] {
                    if r & bit != 0 {
                        why.push(name);
                    }
                }
                format!("stale ({})", why.join(", "))
            }
            Verdict::Duplicate => "extra (second copy)".into(),
            _ => "extra".into(),
        };
        Sample {
            drift,
            kind: e.type_name.clone(),
            value: e.value.clone(),
            remote_id: e.remote_id.clone(),
        }
    }
}

/// What reconcile did to repair one sink.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Repairs {
    /// Creates written as intents (missing values).
    pub creates: u64,
    /// Deletes written as intents (extra values).
    pub deletes: u64,
    /// Updates written as intents (stale indicator, description or validity).
    pub updates: u64,
    /// Remote ids corrected in the state only (no sink call needed).
    pub ids_recorded: u64,
    /// Second copies of a desired value, left in place: deleting one through an intent would
    /// also forget the desired entry; `iocsync s1 delete --uuid` removes them.
    pub duplicates_left: u64,
    /// Stale entries of a sink without updates (left as they are).
    pub not_updatable: u64,
    /// Intents still pending for the sink after applying (retried at the next run).
    pub still_pending: u64,
}

/// The outcome for one sink.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SinkReport {
    /// Sink name.
    pub sink: String,
    /// Values the state desires in it.
    pub desired: u64,
    /// Counts per IOC type.
    pub types: BTreeMap<String, Counts>,
    /// Counts over all types.
    pub total: Counts,
    /// `--adopt`: entries taken into the state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adopted: Option<u64>,
    /// `--apply`: what was repaired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repaired: Option<Repairs>,
    /// A few of the drifted entries (at most [`SAMPLES`]), to look at first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<Sample>,
    /// Why the sink was not compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_compared: Option<String>,
}

/// The whole reconcile outcome.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// `dry-run`, `apply` or `adopt`.
    pub mode: &'static str,
    /// One per sink.
    pub sinks: Vec<SinkReport>,
    /// True when a sink's listing found missing, extra or stale entries.
    pub drift: bool,
}

impl Report {
    /// Human-readable lines.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for s in &self.sinks {
            if let Some(why) = &s.not_compared {
                let _ = writeln!(out, "sink {}: not compared: {why}", s.sink);
                continue;
            }
            let t = &s.total;
            let _ = writeln!(
                out,
                "sink {}: {} desired; {} in sync, {} missing, {} extra, {} stale, {} pending, {} not managed",
                s.sink, s.desired, t.in_sync, t.missing, t.extra, t.stale, t.pending, t.not_managed
            );
            for (kind, c) in &s.types {
                let _ = writeln!(
                    out,
                    "  {kind:<8} in_sync={} missing={} extra={} stale={} pending={} not_managed={}",
                    c.in_sync, c.missing, c.extra, c.stale, c.pending, c.not_managed
                );
            }
            for x in &s.samples {
                let _ = writeln!(out, "  {}: {} {}", x.drift, x.kind, x.value);
            }
            if let Some(n) = s.adopted {
                let _ = writeln!(out, "  adopted {n} entries into the state");
            }
            if let Some(r) = &s.repaired {
                let _ = writeln!(
                    out,
                    "  repaired: {} created, {} deleted, {} updated, {} remote ids recorded; {} duplicates left, {} not updatable, {} still pending",
                    r.creates, r.deletes, r.updates, r.ids_recorded, r.duplicates_left, r.not_updatable, r.still_pending
                );
            }
        }
        let _ = writeln!(
            out,
            "{}",
            match (self.mode, self.drift) {
                ("dry-run", true) => "drift found (nothing changed; --apply repairs it)",
                ("dry-run", false) => "in sync",
                ("apply", _) => "repairs sent through the pipeline",
                _ => "state rebuilt from the sinks",
            }
        );
        out
    }
}

/// How reconcile reads one sink.
enum Reader {
    SentinelOne(SentinelOneClient),
    Jsonl(std::path::PathBuf),
    /// The intel file and the `meta.source` that marks iocsync's rows.
    Zeek(std::path::PathBuf, String),
    /// The collection, iocsync's marker and the values the state desires (searched one by one).
    Sekoia(
        crate::sinks::sekoia::SekoiaClient,
        String,
        Vec<(crate::ioc::IocKind, String)>,
    ),
}

impl Reader {
    fn expectation(&self) -> &'static dyn Expectation {
        match self {
            Reader::SentinelOne(_) => &s1::S1Expectation,
            Reader::Jsonl(_) => &files::JsonlExpectation,
            Reader::Zeek(..) => &zeek::ZeekExpectation,
            Reader::Sekoia(..) => &sekoia::SekoiaExpectation,
        }
    }

    async fn stream(&self, on_entry: impl FnMut(RemoteEntry)) -> Result<(), SinkError> {
        match self {
            Reader::SentinelOne(client) => s1::stream(client, on_entry).await,
            Reader::Jsonl(path) => files::stream_jsonl(path, on_entry),
            Reader::Zeek(path, source) => zeek::stream_zeek(path, source, on_entry),
            Reader::Sekoia(client, marker, values) => {
                sekoia::stream(client, marker, values, on_entry).await
            }
        }
    }
}

/// The reader of a sink, or why there is none.
fn reader(cfg: &Config, kind: SinkKind) -> Result<Result<Reader, String>, AppError> {
    Ok(match kind {
        SinkKind::SentinelOne => Ok(Reader::SentinelOne(SentinelOneClient::new(
            &cfg.sentinelone_intel,
        )?)),
        SinkKind::Jsonl => match &cfg.jsonl.path {
            Some(path) => Ok(Reader::Jsonl(path.clone())),
            None => Err("jsonl.path is not set".into()),
        },
        SinkKind::Zeek => match &cfg.zeek.intel_path {
            Some(path) => Ok(Reader::Zeek(path.clone(), cfg.zeek.source_name.clone())),
            None => Err("zeek.intel_path is not set".into()),
        },
        SinkKind::Sekoia => {
            let mut values = Vec::new();
            if let Some(state) = app::read_state(cfg)? {
                state
                    .for_each_sink_entry(kind.name(), |e| values.push((e.ioc.kind, e.ioc.value)))
                    .map_err(state_error)?;
            }
            Ok(Reader::Sekoia(
                crate::sinks::sekoia::SekoiaClient::new(&cfg.sekoia_intel)?,
                crate::sinks::sekoia::item::marker(cfg.sekoia_intel.instance.as_deref()),
                values,
            ))
        }
    })
}

/// The configured sinks, narrowed to `names` when given.
fn selected(cfg: &Config, names: &[String]) -> Result<Vec<SinkKind>, AppError> {
    let configured = cfg
        .sink_kinds()
        .map_err(|p| AppError::Config(crate::config::ConfigError::Invalid(vec![p])))?;
    for name in names {
        if !configured.iter().any(|k| k.name() == name) {
            let known: Vec<&str> = configured.iter().map(|k| k.name()).collect();
            return Err(AppError::Other(format!(
                "--sink {name}: not a configured sink (configured: {})",
                known.join(", ")
            )));
        }
    }
    Ok(configured
        .into_iter()
        .filter(|k| names.is_empty() || names.iter().any(|n| n == k.name()))
        .collect())
}

fn state_error(e: StateError) -> AppError {
    AppError::from(e)
}

/// Compares one sink with the state; `keep` receives the entries a repair needs.
async fn compare_sink<'e>(
    mut cmp: Comparison<'e>,
    reader: &Reader,
    mut keep: impl FnMut(Verdict, RemoteEntry),
) -> Result<Comparison<'e>, AppError> {
    reader
        .stream(|entry| {
            let verdict = cmp.observe(&entry);
            if matches!(
                verdict,
                Verdict::Extra | Verdict::Duplicate | Verdict::Stale(_)
            ) {
                keep(verdict, entry);
            }
        })
        .await?;
    cmp.finish();
    Ok(cmp)
}

fn report_of(name: &str, cmp: &Comparison<'_>) -> SinkReport {
    SinkReport {
        sink: name.to_string(),
        desired: cmp.desired() as u64,
        types: cmp.counts.clone(),
        total: cmp.total(),
        ..SinkReport::default()
    }
}

/// The dry run: compares every selected sink, changes nothing.
pub async fn dry_run(cfg: &Config, names: &[String]) -> Result<Report, AppError> {
    let state = app::read_state(cfg)?;
    let mut report = Report {
        mode: "dry-run",
        ..Report::default()
    };
    for kind in selected(cfg, names)? {
        let reader = match reader(cfg, kind)? {
            Ok(r) => r,
            Err(why) => {
                tracing::warn!(sink = kind.name(), "{why}");
                report.sinks.push(SinkReport {
                    sink: kind.name().into(),
                    not_compared: Some(why),
                    ..SinkReport::default()
                });
                continue;
            }
        };
        let pending = match &state {
            Some(s) => s.intent_count(kind.name()).map_err(state_error)?,
            None => 0,
        };
        if pending > 0 {
            tracing::info!(
                sink = kind.name(),
                pending,
                "changes are pending in the state; the next run (or --apply) settles them first"
            );
        }
        let cmp = Comparison::load(state.as_ref(), kind.name(), reader.expectation())
            .map_err(state_error)?;
        let mut samples = Vec::new();
        let cmp = compare_sink(cmp, &reader, |v, e| {
            if samples.len() < SAMPLES {
                samples.push(Sample::of(v, &e));
            }
        })
        .await?;
        let mut sink = report_of(kind.name(), &cmp);
        sink.samples = samples;
        report.drift |= sink.total.drift() > 0;
        report.sinks.push(sink);
    }
    Ok(report)
}

/// `iocsync reconcile`: a dry run, `--apply` or `--adopt`.
pub async fn run(
    cfg: &Config,
    opts: &Options,
    shutdown: CancellationToken,
) -> Result<Report, AppError> {
    if opts.adopt {
        return adopt(cfg, &opts.sinks).await;
    }
    if !opts.apply {
        return dry_run(cfg, &opts.sinks).await;
    }
    apply(cfg, &opts.sinks, shutdown).await
}

/// `--apply`: settles what earlier runs left pending, compares, writes the repairs as intents and
/// has the pipeline send them.
async fn apply(
    cfg: &Config,
    names: &[String],
    shutdown: CancellationToken,
) -> Result<Report, AppError> {
    let source_kind = app::validated(cfg)?;
    let kinds = selected(cfg, names)?;
    let mut state = State::open(&cfg.state.dir)?;
    let mut sinks: Vec<Arc<dyn crate::sinks::Sink>> =
        app::build_sinks(cfg, source_kind, Some(&state))?
            .into_iter()
            .filter(|s| kinds.iter().any(|k| k.name() == s.name()))
            .collect();
    // The Zeek sink's `resolve` trusts its live set, not the intel file: reconcile keeps its own
    // handle to rewrite the file from the set after the repairs.
    let zeek_sink = match sinks.iter().position(|s| s.name() == "zeek") {
        Some(i) => {
            let z = Arc::new(ZeekSink::new(&cfg.zeek)?);
            crate::sinks::Sink::seed_live_count(&*z, state.live_count("zeek")?.max(0) as u64);
            sinks[i] = z.clone();
            Some(z)
        }
        None => None,
    };
    let updatable: Vec<(&'static str, bool)> = sinks
        .iter()
        .map(|s| (s.name(), s.supports_update()))
        .collect();
    let (committed, _) = tokio::sync::watch::channel(None);
    let mut pipeline = Pipeline::new(
        "reconcile",
        sinks,
        State::open(&cfg.state.dir)?,
        cfg.pipeline.clone(),
        cfg.dead_letter_path(),
        RunMode::Ends,
        committed,
    );
    // What a killed run left pending is settled first, so the comparison sees the settled sink.
    pipeline.resolve_leftovers(&shutdown).await?;
    let mut report = Report {
        mode: "apply",
        ..Report::default()
    };
    for kind in kinds {
        let name = kind.name();
        let reader = match reader(cfg, kind)? {
            Ok(r) => r,
            Err(why) => {
                tracing::warn!(sink = name, "{why}");
                report.sinks.push(SinkReport {
                    sink: name.into(),
                    not_compared: Some(why),
                    ..SinkReport::default()
                });
                continue;
            }
        };
        let mut found: Vec<(Verdict, RemoteEntry)> = Vec::new();
        let cmp =
            Comparison::load(Some(&state), name, reader.expectation()).map_err(state_error)?;
        let cmp = compare_sink(cmp, &reader, |v, e| found.push((v, e))).await?;
        let mut sink = report_of(name, &cmp);
        sink.samples = found
            .iter()
            .take(SAMPLES)
            .map(|(v, e)| Sample::of(*v, e))
            .collect();
        report.drift |= sink.total.drift() > 0;
        let supports_update = updatable.iter().any(|(n, update)| *n == name && *update);
        let repairs = write_intents(&mut state, name, &cmp, found, supports_update)?;
        sink.repaired = Some(repairs);
        report.sinks.push(sink);
    }
    // The repairs are intents now: the pipeline sends them like any crash leftover.
    pipeline.resolve_leftovers(&shutdown).await?;
    if let Some(z) = &zeek_sink {
        z.rewrite_now().await?;
    }
    for sink in &mut report.sinks {
        if let Some(r) = sink.repaired.as_mut() {
            r.still_pending = state.intent_count(&sink.sink).map_err(state_error)?.max(0) as u64;
        }
    }
    Ok(report)
}

/// Writes the repairs of one sink as intents (and marks the entries pending), in one transaction
/// per chunk of missing values so a purged sink of millions never holds them all in memory.
fn write_intents(
    state: &mut State,
    sink: &str,
    cmp: &Comparison<'_>,
    found: Vec<(Verdict, RemoteEntry)>,
    supports_update: bool,
) -> Result<Repairs, AppError> {
    let mut repairs = Repairs::default();
    // Missing values, a page of the state at a time.
    let mut after: Option<(String, String)> = None;
    loop {
        let page = state
            .sink_entries_page(sink, after.as_ref(), 5000)
            .map_err(state_error)?;
        let Some(last) = page.last() else { break };
        after = Some((
            last.ioc.kind.sink_kind().as_str().to_string(),
            last.ioc.value.clone(),
        ));
        let full = page.len() == 5000;
        let tx = state.tx().map_err(state_error)?;
        for mut entry in page.into_iter().filter(|e| cmp.is_missing(e)) {
            entry.status = EntryStatus::PendingCreate;
            entry.remote_id = None;
            tx.put_sink_entry(sink, &entry).map_err(state_error)?;
            tx.insert_intent(sink, change(ChangeOp::Create, &entry))
                .map_err(state_error)?;
            repairs.creates += 1;
        }
        tx.commit().map_err(state_error)?;
        if !full {
            break;
        }
    }
    let tx = state.tx().map_err(state_error)?;
    for (verdict, remote) in found {
        let Some(kind) = remote.kind else { continue };
        match verdict {
            Verdict::Duplicate => {
                tracing::warn!(sink, kind = kind.as_str(), value = %remote.value, remote_id = ?remote.remote_id,
                    "a second copy of a desired value is left in place");
                repairs.duplicates_left += 1;
            }
            Verdict::Extra if cmp.is_desired(kind, &remote.value) => {
                repairs.duplicates_left += 1;
            }
            Verdict::Extra => {
                let entry = SinkEntry {
                    ioc: Ioc {
                        kind,
                        value: remote.value.clone(),
                    },
                    indicator_id: remote.marker.clone().unwrap_or_default(),
                    remote_id: remote.remote_id.clone(),
                    status: EntryStatus::PendingDelete,
                    meta: IocMeta::default(),
                };
                tx.insert_intent(sink, change(ChangeOp::Delete, &entry))
                    .map_err(state_error)?;
                repairs.deletes += 1;
            }
            Verdict::Stale(reasons) => {
                let Some(mut entry) = tx
                    .sink_entry(sink, kind, &remote.value)
                    .map_err(state_error)?
                else {
                    continue;
                };
                let needs_update =
                    reasons & (stale::INDICATOR | stale::DESCRIPTION | stale::VALIDITY) != 0;
                if reasons & stale::REMOTE_ID != 0 && remote.remote_id.is_some() {
                    entry.remote_id = remote.remote_id.clone();
                    if !needs_update {
                        tx.put_sink_entry(sink, &entry).map_err(state_error)?;
                        repairs.ids_recorded += 1;
                    }
                }
                if needs_update {
                    if !supports_update {
                        repairs.not_updatable += 1;
                        continue;
                    }
                    entry.status = EntryStatus::PendingUpdate;
                    tx.put_sink_entry(sink, &entry).map_err(state_error)?;
                    tx.insert_intent(sink, change(ChangeOp::Update, &entry))
                        .map_err(state_error)?;
                    repairs.updates += 1;
                }
            }
            Verdict::InSync | Verdict::NotManaged | Verdict::Pending => {}
        }
    }
    tx.commit().map_err(state_error)?;
    Ok(repairs)
}

fn change(op: ChangeOp, entry: &SinkEntry) -> Change {
    Change {
        intent_id: 0,
        op,
        ioc: entry.ioc.clone(),
        indicator_id: entry.indicator_id.clone(),
        remote_id: entry.remote_id.clone(),
        meta: entry.meta.clone(),
    }
}

/// `--adopt`: takes every entry a sink holds with iocsync's marker into the state as live (with
/// its remote id), unless the state already records the value, so a replay from the source finds
/// them and creates nothing.
async fn adopt(cfg: &Config, names: &[String]) -> Result<Report, AppError> {
    let mut state = State::open(&cfg.state.dir)?;
    let mut report = Report {
        mode: "adopt",
        ..Report::default()
    };
    for kind in selected(cfg, names)? {
        let name = kind.name();
        let reader = match reader(cfg, kind)? {
            Ok(r) => r,
            Err(why) => {
                tracing::warn!(sink = name, "{why}");
                report.sinks.push(SinkReport {
                    sink: name.into(),
                    not_compared: Some(why),
                    ..SinkReport::default()
                });
                continue;
            }
        };
        if matches!(reader, Reader::Sekoia(..)) {
            report.sinks.push(SinkReport {
                sink: name.into(),
                not_compared: Some("--adopt needs a listing of the collection, which Sekoia's documented API does not have".into()),
                ..SinkReport::default()
            });
            continue;
        }
        let mut adopted = 0u64;
        let mut not_managed = 0u64;
        let mut buffer: Vec<RemoteEntry> = Vec::with_capacity(ADOPT_CHUNK);
        let mut failed: Option<StateError> = None;
        let mut flush = |state: &mut State, buffer: &mut Vec<RemoteEntry>| {
            if failed.is_some() || buffer.is_empty() {
                buffer.clear();
                return;
            }
            match adopt_chunk(state, name, buffer) {
                Ok(n) => adopted += n,
                Err(e) => failed = Some(e),
            }
            buffer.clear();
        };
        reader
            .stream(|entry| {
                if entry.kind.is_none() || entry.marker.is_none() {
                    not_managed += 1;
                    return;
                }
                buffer.push(entry);
                if buffer.len() >= ADOPT_CHUNK {
                    flush(&mut state, &mut buffer);
                }
            })
            .await?;
        flush(&mut state, &mut buffer);
        if let Some(e) = failed {
            return Err(e.into());
        }
        report.sinks.push(SinkReport {
            sink: name.into(),
            adopted: Some(adopted),
            total: Counts {
                not_managed,
                ..Counts::default()
            },
            ..SinkReport::default()
        });
    }
    Ok(report)
}

fn adopt_chunk(state: &mut State, sink: &str, chunk: &[RemoteEntry]) -> Result<u64, StateError> {
    let tx = state.tx()?;
    let mut adopted = 0;
    for remote in chunk {
        let (Some(kind), Some(marker)) = (remote.kind, remote.marker.as_ref()) else {
            continue;
        };
        if tx.sink_entry(sink, kind, &remote.value)?.is_some() {
            continue;
        }
        tx.put_sink_entry(
            sink,
            &SinkEntry {
                ioc: Ioc {
                    kind,
                    value: remote.value.clone(),
                },
                indicator_id: marker.clone(),
                remote_id: remote.remote_id.clone(),
                status: EntryStatus::Live,
                meta: IocMeta {
                    description: remote.description.clone(),
                    valid_until: remote.valid_until.clone(),
                    ..IocMeta::default()
                },
            },
        )?;
        adopted += 1;
    }
    tx.commit()?;
    Ok(adopted)
}

/// The daemon's periodic dry run (`pipeline.reconcile_interval`): sets
/// `iocsync_reconcile_drift{sink,kind}` after each pass. `None` when the interval is off.
pub fn spawn_schedule(
    cfg: &Config,
    shutdown: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let every = spawn_schedule_interval(cfg)?;
    let cfg = cfg.clone();
    Some(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let pass = tokio::select! {
                _ = shutdown.cancelled() => return,
                pass = dry_run(&cfg, &[]) => pass,
            };
            match pass {
                Ok(report) => publish(&report),
                Err(e) => tracing::warn!(cause = %e, "scheduled reconcile failed"),
            }
        }
    }))
}

/// The schedule's period; `None` when off (unset or 0).
fn spawn_schedule_interval(cfg: &Config) -> Option<std::time::Duration> {
    cfg.pipeline.reconcile_interval.filter(|d| !d.is_zero())
}

/// Sets the drift gauges from a report.
pub fn publish(report: &Report) {
    let metrics = crate::metrics::global();
    for sink in report.sinks.iter().filter(|s| s.not_compared.is_none()) {
        let t = &sink.total;
        for (kind, n) in [
            ("missing", t.missing),
            ("extra", t.extra),
            ("stale", t.stale),
        ] {
            metrics.set(
                "iocsync_reconcile_drift",
                &[("sink", sink.sink.as_str()), ("kind", kind)],
                n as f64,
            );
        }
        if t.drift() > 0 {
            tracing::warn!(sink = %sink.sink, missing = t.missing, extra = t.extra, stale = t.stale,
                "reconcile found drift (iocsync reconcile --apply repairs it)");
        } else {
            tracing::info!(sink = %sink.sink, in_sync = t.in_sync, "reconcile: in sync");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_off_by_default_and_set_from_the_environment() {
        let cfg = Config::load(None, std::iter::empty::<(String, String)>()).expect("defaults");
        assert!(spawn_schedule_interval(&cfg).is_none());
        let cfg = Config::load(
            None,
            [(
                "IOCSYNC_PIPELINE_RECONCILE_INTERVAL".to_string(),
                "10m".to_string(),
            )],
        )
        .expect("config");
        assert_eq!(
            spawn_schedule_interval(&cfg),
            Some(std::time::Duration::from_secs(600))
        );
    }

    #[test]
    fn a_report_sets_the_drift_gauges() {
        let report = Report {
            mode: "dry-run",
            drift: true,
            sinks: vec![SinkReport {
                sink: "jsonl".into(),
                total: Counts {
                    missing: 3,
                    extra: 1,
                    ..Counts::default()
                },
                ..SinkReport::default()
            }],
        };
        publish(&report);
        let m = crate::metrics::global();
        let gauge = |kind| {
            m.gauge(
                "iocsync_reconcile_drift",
                &[("sink", "jsonl"), ("kind", kind)],
            )
        };
        assert_eq!(gauge("missing"), Some(3.0));
        assert_eq!(gauge("extra"), Some(1.0));
        assert_eq!(gauge("stale"), Some(0.0));
        assert!(report.render().contains("1 extra"));
    }
}

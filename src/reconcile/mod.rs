//! `iocsync reconcile`: proves that each sink holds what the state says it should, and repairs
//! the drift (values deleted by hand, entries added with iocsync's marker, stale ids or metadata).
//!
//! `compare.rs` is the vendor-free comparison (the desired set as a compact index of hashes, the
//! sink streamed past it); `s1.rs` reads SentinelOne, `sekoia.rs` a Sekoia collection (a search
//! per desired value and per value the journal says was created there), `files.rs` and `zeek.rs`
//! the JSONL and Zeek files. Repairs are not sent from here: they are written as intents, exactly
//! as the planner writes them, and sent by [`Pipeline::resolve_leftovers`], so batching, retries,
//! dead letters and crash safety are the pipeline's own. `--adopt` rebuilds a lost state's sink
//! entries from what the sink holds, or (Sekoia, which cannot be listed) puts the sink in the
//! adopting mode of `adopting.rs`.

pub mod adopting;
pub mod compare;
pub mod files;
pub mod s1;
pub mod sekoia;
pub mod zeek;

mod adopt;
mod repair;
mod schedule;

use adopt::adopt;
use repair::apply;
pub use schedule::{last, publish, spawn_schedule, LastReconcile};

use crate::app::{self, AppError};
use crate::config::{Config, SinkKind};
use crate::sinks::sentinelone::SentinelOneClient;
use crate::sinks::SinkError;
use crate::state::StateError;
use compare::{stale, Comparison, Counts, Expectation, RemoteEntry, Verdict};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
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
    /// What else was done to the sink's part of the state (the adopting mode started or ended).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
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
            if let Some(note) = &s.note {
                let _ = writeln!(out, "  {note}");
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
    /// The collection, iocsync's marker and the values searched one by one: those the state
    /// desires, then those the journal says were created there and are desired no more.
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
            &crate::config::Valid::new(cfg.sentinelone_intel.clone())?,
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
                let mut searched = std::collections::HashSet::new();
                state
                    .for_each_sink_entry(kind.name(), |e| {
                        searched.insert(compare::key_hash(e.ioc.kind, &e.ioc.value));
                        values.push((e.ioc.kind, e.ioc.value))
                    })
                    .map_err(state_error)?;
                // Sekoia cannot be listed: an extra (ours, not desired) can only be where
                // iocsync created something, and the journal remembers where.
                for (kind, value) in state.values_created_in(kind.name()).map_err(state_error)? {
                    if searched.insert(compare::key_hash(kind, &value)) {
                        values.push((kind, value));
                    }
                }
            }
            Ok(Reader::Sekoia(
                crate::sinks::sekoia::SekoiaClient::new(&crate::config::Valid::new(
                    cfg.sekoia_intel.clone(),
                )?)?,
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

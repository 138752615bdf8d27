//! `reconcile --apply`: the drift repaired through the pipeline's intents — written first, then
//! sent and settled the way leftover intents are at start (crash-safe, rate-limit aware, resumable).

use super::*;
use crate::app::{self, AppError};
use crate::config::Config;
use crate::ioc::Ioc;
use crate::model::{Change, ChangeOp, IocMeta};
use crate::pipeline::{Pipeline, RunMode};
use crate::sinks::zeek::ZeekSink;
use crate::state::{EntryStatus, SinkEntry, State};
use compare::{stale, Comparison, RemoteEntry, Verdict};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// `--apply`: settles what earlier runs left pending, compares, writes the repairs as intents and
/// has the pipeline send them.
pub(super) async fn apply(
    cfg: &Config,
    names: &[String],
    shutdown: CancellationToken,
) -> Result<Report, AppError> {
    let valid = app::validated(cfg)?;
    let kinds = selected(cfg, names)?;
    let mut state = State::open(&cfg.state.dir)?;
    let mut sinks: Vec<Arc<dyn crate::sinks::Sink>> = app::build_sinks(&valid, Some(&state))?
        .into_iter()
        .filter(|s| kinds.iter().any(|k| k.name() == s.name()))
        .collect();
    // The Zeek sink's `resolve` trusts its live set, not the intel file: reconcile keeps its own
    // handle to rewrite the file from the set after the repairs.
    let zeek_sink = match (sinks.iter().position(|s| s.name() == "zeek"), valid.zeek()) {
        (Some(i), Some(zeek)) => {
            let z = Arc::new(ZeekSink::new(zeek)?);
            crate::sinks::Sink::seed_live_count(&*z, state.live_count("zeek")?.max(0) as u64);
            sinks[i] = z.clone();
            Some(z)
        }
        _ => None,
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
        // The state now matches the sink as far as it can be compared: creates need not search
        // before importing any more.
        if sink.not_compared.is_none() && super::adopting::end(&state, &sink.sink)? {
            sink.note = Some("adopting mode ended".into());
        }
    }
    Ok(report)
}

/// Writes the repairs of one sink as intents (and marks the entries pending), in one transaction
/// per chunk of missing values so a purged sink of millions never holds them all in memory.
pub(super) fn write_intents(
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

pub(super) fn change(op: ChangeOp, entry: &SinkEntry) -> Change {
    Change {
        intent_id: 0,
        op,
        ioc: entry.ioc.clone(),
        indicator_id: entry.indicator_id.clone(),
        remote_id: entry.remote_id.clone(),
        meta: entry.meta.clone(),
    }
}

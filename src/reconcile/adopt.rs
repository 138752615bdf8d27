//! `reconcile --adopt`: a lost state's sink part rebuilt from what each sink holds with iocsync's
//! marker, so a replay from the source does not create duplicates (for Sekoia, which cannot be
//! listed, the adopting mode of `adopting.rs` instead).

use super::*;
use crate::app::AppError;
use crate::config::Config;
use crate::ioc::Ioc;
use crate::model::IocMeta;
use crate::state::{EntryStatus, SinkEntry, State, StateError};
use compare::{Counts, RemoteEntry};

/// `--adopt`: takes every entry a sink holds with iocsync's marker into the state as live (with
/// its remote id), unless the state already records the value, so a replay from the source finds
/// them and creates nothing.
pub(super) async fn adopt(cfg: &Config, names: &[String]) -> Result<Report, AppError> {
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
            // No listing to adopt from: the replay's creates adopt, one term search each.
            super::adopting::start(&state, name)?;
            report.sinks.push(SinkReport {
                sink: name.into(),
                note: Some("adopting mode on: Sekoia cannot be listed, so each create of the next runs first searches the value and adopts a live indicator with iocsync's marker instead of importing it again; `reconcile --apply` ends the mode".into()),
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

pub(super) fn adopt_chunk(
    state: &mut State,
    sink: &str,
    chunk: &[RemoteEntry],
) -> Result<u64, StateError> {
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

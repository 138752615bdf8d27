//! `ZeekSink`: keeps the live set in a sidecar file and rewrites the intel file atomically from it.

use super::config::{expand_url_template, Removal, ZeekConfig};
use super::format::{header, push_row, Row};
use super::state::{LiveSet, Undo};
use crate::config::Valid;
use crate::sinks::jsonl::fs::{
    blocking, create_temp_beside, parent_dir, probe_writable, set_mode, sync_dir, Context,
    FileError,
};
use crate::sinks::jsonl::settle_in_order;
use crate::sinks::{Change, Outcome, Resolution, Sink, SinkError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const SINK: &str = "zeek";

/// What the blocking writer needs, shared with it.
#[derive(Debug)]
struct Settings {
    intel_path: PathBuf,
    state_path: PathBuf,
    removal: Removal,
    tombstone_retention: Duration,
    rewrite_interval: Duration,
    source_name: String,
    url_template: Option<String>,
    /// Permission bits of the intel file (`zeek.file_mode`).
    file_mode: u32,
}

/// The mutable part, behind one async mutex: batches, resolve and maintenance never interleave.
#[derive(Debug)]
struct Inner {
    /// Shared with the blocking writer during a write; mutated in place (`Arc::make_mut`) otherwise.
    live: Arc<LiveSet>,
    /// False until the intel file has been written from `live` by this process: after a crash it may
    /// lag behind the sidecar.
    synced: bool,
    /// When this process last wrote the files.
    last_write: Option<DateTime<Utc>>,
}

/// Writes the Zeek Intelligence Framework file.
#[derive(Debug)]
pub struct ZeekSink {
    settings: Arc<Settings>,
    inner: tokio::sync::Mutex<Inner>,
}

/// `<intel_path>.iocsync.json`.
fn state_path_for(intel_path: &Path) -> PathBuf {
    let mut name = OsString::from(intel_path.as_os_str());
    name.push(".iocsync.json");
    PathBuf::from(name)
}

impl ZeekSink {
    /// Builds the sink and loads the sidecar state (blocking, once at start-up). A missing sidecar is
    /// an empty set; an unreadable one is an error, since starting empty would forget what Zeek holds.
    pub fn new(config: &Valid<ZeekConfig>) -> Result<Self, SinkError> {
        let intel_path = config.facts().intel_path.clone();
        let state_path = state_path_for(&intel_path);
        let live = load_state(&state_path, &intel_path).map_err(|e| e.to_sink_error(SINK))?;
        let settings = Settings {
            intel_path,
            state_path,
            removal: config.removal,
            tombstone_retention: config.tombstone_retention,
            rewrite_interval: config.rewrite_interval,
            source_name: config.source_name.clone(),
            url_template: config.url_template.clone(),
            file_mode: config.file_mode.0,
        };
        Ok(ZeekSink {
            settings: Arc::new(settings),
            inner: tokio::sync::Mutex::new(Inner {
                live: Arc::new(live),
                synced: false,
                last_write: None,
            }),
        })
    }

    /// The intel file Zeek reads.
    pub fn intel_path(&self) -> &Path {
        &self.settings.intel_path
    }

    /// The sidecar state file.
    pub fn state_path(&self) -> &Path {
        &self.settings.state_path
    }

    /// How often [`ZeekSink::maintain`] should run: half the rewrite interval, so that in expire mode
    /// no two writes are ever more than `rewrite_interval` apart.
    pub fn maintenance_interval(&self) -> Duration {
        (self.settings.rewrite_interval / 2).max(Duration::from_secs(1))
    }

    /// Periodic upkeep: rewrites the intel file when it is due — not yet written by this process, a
    /// tombstone past its retention, or (expire mode) half the rewrite interval since the last write.
    /// Returns whether it wrote.
    pub async fn maintain(&self) -> Result<bool, SinkError> {
        self.maintain_at(Utc::now()).await
    }

    /// Runs [`ZeekSink::maintain`] now and every [`ZeekSink::maintenance_interval`] until `shutdown`
    /// is cancelled; failures are logged and retried on the next tick.
    pub fn spawn_maintenance(
        self: Arc<Self>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(self.maintenance_interval());
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                if let Err(err) = self.maintain().await {
                    tracing::warn!(sink = SINK, error = %err, "zeek intel file upkeep failed; will retry");
                }
            }
        })
    }

    /// Rewrites the intel file from the live set now, whatever it holds: the repair of an intel file
    /// truncated or edited by hand (`iocsync reconcile --apply`), since `resolve` trusts the set.
    pub async fn rewrite_now(&self) -> Result<(), SinkError> {
        let mut inner = self.inner.lock().await;
        self.commit(&mut inner, Undo::default(), Utc::now())
            .await
            .map_err(|e| e.to_sink_error(SINK))
    }

    async fn maintain_at(&self, now: DateTime<Utc>) -> Result<bool, SinkError> {
        let mut inner = self.inner.lock().await;
        let s = &self.settings;
        // A clock that went backwards counts as due: a missed refresh lets Zeek expire live items,
        // an extra one only costs a reread.
        let refresh_due = s.removal == Removal::Expire
            && inner.last_write.is_none_or(|at| {
                (now - at)
                    .to_std()
                    .map_or(true, |elapsed| elapsed >= s.rewrite_interval / 2)
            });
        let due = !inner.synced
            || refresh_due
            || inner
                .live
                .due_tombstones(s.removal, s.tombstone_retention, now)
                > 0;
        if !due {
            return Ok(false);
        }
        self.commit(&mut inner, Undo::default(), now)
            .await
            .map_err(|e| e.to_sink_error(SINK))?;
        Ok(true)
    }

    async fn apply_at(&self, batch: &[Change], now: DateTime<Utc>) -> Vec<Outcome> {
        if batch.is_empty() {
            return Vec::new();
        }
        let mut inner = self.inner.lock().await;
        let mut undo = Undo::default();
        let live = Arc::make_mut(&mut inner.live);
        for change in batch {
            live.apply(change, self.settings.removal, now, &mut undo);
        }
        match self.commit(&mut inner, undo, now).await {
            Ok(()) => batch
                .iter()
                .map(|_| Outcome::Applied { remote_id: None })
                .collect(),
            Err(err) => batch
                .iter()
                .map(|_| Outcome::Retry {
                    after: None,
                    error: err.to_sink_error(SINK),
                })
                .collect(),
        }
    }

    async fn resolve_at(
        &self,
        pending: &[Change],
        now: DateTime<Utc>,
    ) -> Result<Vec<Resolution>, SinkError> {
        let mut inner = self.inner.lock().await;
        if !inner.synced {
            // The intel file may lag behind the sidecar (killed between the two renames): bring it up
            // to date before reporting changes as applied.
            self.commit(&mut inner, Undo::default(), now)
                .await
                .map_err(|e| e.to_sink_error(SINK))?;
        }
        Ok(settle_in_order(pending, |change| {
            inner.live.reflects(change)
        }))
    }

    /// Prunes due tombstones, writes both files from the set, and keeps it once they are durable.
    /// On failure the set is rolled back with `undo` to what the files last held, so memory never
    /// claims more than the disk; the next write retries. (If the caller drops the future mid-write,
    /// the set keeps the batch: the next write carries it to disk, and re-sending it is idempotent.)
    async fn commit(
        &self,
        inner: &mut Inner,
        mut undo: Undo,
        now: DateTime<Utc>,
    ) -> Result<(), FileError> {
        let s = Arc::clone(&self.settings);
        Arc::make_mut(&mut inner.live).prune(s.removal, s.tombstone_retention, now, &mut undo);
        let snapshot = Arc::clone(&inner.live);
        let written = blocking(&self.settings.intel_path, move || persist(&s, &snapshot)).await;
        match written {
            Ok(()) => {
                let (live, tombstones) = inner.live.counts();
                tracing::debug!(sink = SINK, live, tombstones, "rewrote zeek intel file");
                inner.synced = true;
                inner.last_write = Some(now);
                Ok(())
            }
            Err(err) => {
                // The writer has dropped its snapshot by now, so this does not copy the set.
                undo.revert(Arc::make_mut(&mut inner.live));
                inner.synced = false;
                Err(err)
            }
        }
    }
}

#[async_trait]
impl Sink for ZeekSink {
    fn name(&self) -> &'static str {
        SINK
    }

    fn spawn_upkeep(
        self: Arc<Self>,
        shutdown: CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        Some(self.spawn_maintenance(shutdown))
    }

    fn max_batch(&self) -> usize {
        10_000
    }

    fn supports_update(&self) -> bool {
        true
    }

    async fn apply(&self, batch: &[Change]) -> Vec<Outcome> {
        self.apply_at(batch, Utc::now()).await
    }

    async fn resolve(&self, pending: &[Change]) -> Result<Vec<Resolution>, SinkError> {
        self.resolve_at(pending, Utc::now()).await
    }

    async fn check(&self) -> Result<String, SinkError> {
        let path = self.settings.intel_path.clone();
        blocking(&self.settings.intel_path, move || probe_writable(&path))
            .await
            .map_err(|e| e.to_sink_error(SINK))?;
        Ok(format!("writable `{}`", self.settings.intel_path.display()))
    }
}

/// Reads the sidecar; a missing one is an empty set.
fn load_state(state_path: &Path, intel_path: &Path) -> Result<LiveSet, FileError> {
    match std::fs::read(state_path) {
        Ok(bytes) => LiveSet::from_json(&bytes).map_err(|message| {
            FileError::new(
                "read state",
                state_path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, message),
            )
        }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            if intel_path.exists() {
                tracing::warn!(
                    sink = SINK,
                    intel = %intel_path.display(),
                    state = %state_path.display(),
                    "intel file exists without its state file; starting from an empty set, items only \
                     in the old file get no tombstone"
                );
            }
            Ok(LiveSet::default())
        }
        Err(err) => Err(FileError::new("read state", state_path, err)),
    }
}

/// Writes the sidecar, then the intel file, each atomically.
///
/// Order matters. The sidecar is the truth and the intel file is derived from it, so the sidecar is
/// made durable first (renamed and its directory synced) and only then is the intel file replaced. A
/// crash in between leaves the sidecar ahead of the intel file, never the other way round; on restart
/// nothing is trusted from memory: the sidecar is loaded, the sink starts "not synced", and `resolve`
/// (and the first upkeep) regenerates the intel file before reporting the batch as applied. The
/// opposite order could leave a row in Zeek's file that no state remembers — an item Zeek would keep
/// forever with no tombstone to remove it.
fn persist(s: &Settings, live: &LiveSet) -> Result<(), FileError> {
    let json = live
        .to_json()
        .map_err(|e| FileError::new("encode state for", &s.state_path, std::io::Error::other(e)))?;
    // The sidecar is iocsync's own; only the intel file is for Zeek to read.
    write_atomically(&s.state_path, &json, 0o600)?;
    write_atomically(&s.intel_path, render(s, live).as_bytes(), s.file_mode)
}

/// The intel file's text.
fn render(s: &Settings, live: &LiveSet) -> String {
    let tombstones = s.removal == Removal::Tombstone;
    let mut out = header(tombstones);
    // Zeek skips `#` lines other than `#fields`; this one is for people opening the file.
    out.push_str(
        "# written by iocsync from the .iocsync.json state file next to it; edits are lost\n",
    );
    for entry in live.entries() {
        let url = entry.source_url.clone().or_else(|| {
            let template = s.url_template.as_deref()?;
            expand_url_template(template, &entry.indicator_id, entry.internal_id.as_deref())
                .ok()
                .flatten()
        });
        push_row(
            &mut out,
            &Row {
                kind: entry.kind,
                value: &entry.value,
                source: &s.source_name,
                desc: entry.name.as_deref().unwrap_or(&entry.indicator_id),
                url: url.as_deref().unwrap_or(""),
                remove: tombstones.then_some(entry.removed_at.is_some()),
            },
        );
    }
    out
}

/// A new temp file in the same directory (random name, exclusive creation: see
/// [`create_temp_beside`]), write, fsync, rename over `path`, fsync the directory. The rename
/// replaces a symlink at `path` itself rather than writing through it. The file gets exactly `mode`.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    let dir = parent_dir(path);
    std::fs::create_dir_all(dir).ctx("create directory", dir)?;
    let (mut file, temp) = create_temp_beside(path, "iocsync-tmp")?;
    let result = set_mode(&file, mode)
        .and_then(|()| file.write_all(bytes))
        .and_then(|()| file.sync_all())
        .ctx("write", &temp)
        .and_then(|()| std::fs::rename(&temp, path).ctx("rename into", path));
    if result.is_err() {
        // Best effort: do not leave a half-written temp file behind.
        let _ = std::fs::remove_file(&temp);
    }
    result?;
    sync_dir(dir)
}

#[cfg(test)]
#[path = "sink_tests.rs"]
mod tests;

//! Durable state in one SQLite file (WAL): the source checkpoint, each indicator's desired IOCs, who
//! holds each value, what each sink holds, the intents written before every sink call, and the run
//! history. This module knows SQL and nothing about remotes; the planner drives it through [`Tx`].

use crate::ioc::{Ioc, IocKind};
use crate::model::IocMeta;
use crate::sinks::{Change, ChangeOp};
use rusqlite::{params, CachedStatement, Connection, OptionalExtension};
use std::cell::RefCell;
use std::path::{Path, PathBuf};

/// The database file name inside `state.dir`.
pub const DB_FILE: &str = "iocsync.db";

/// Bumped when the schema changes incompatibly.
const SCHEMA_VERSION: i64 = 1;

/// How long a statement waits for another connection's lock before failing.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// How many runs `iocsync runs` keeps.
pub const RUNS_KEPT: i64 = 20;

/// State errors carry the database path.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// SQLite failed.
    #[error("state database `{path}`: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The state directory could not be created.
    #[error("failed to create state directory `{path}`: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The state directory or database file could not be made private to the owner.
    #[error("failed to restrict `{path}` to its owner (mode {mode:04o}): {source}")]
    Mode {
        /// The directory or file.
        path: PathBuf,
        /// The mode wanted.
        mode: u32,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A stored JSON column did not parse (a corrupted or foreign database).
    #[error("state database `{path}`: corrupt {what}: {message}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// Which record.
        what: &'static str,
        /// The parse error.
        message: String,
    },
    /// The database was written by an incompatible iocsync.
    #[error("state database `{path}` has schema version {found}, this iocsync uses {expected}: run `iocsync state reset` or use another state.dir")]
    Schema {
        /// The database file.
        path: PathBuf,
        /// Version found.
        found: i64,
        /// Version expected.
        expected: i64,
    },
}

/// Status of a value in a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryStatus {
    /// Present in the sink.
    Live,
    /// A create intent is outstanding.
    PendingCreate,
    /// An update intent is outstanding (the entry is live).
    PendingUpdate,
    /// A delete intent is outstanding.
    PendingDelete,
    /// The sink refused it permanently (dead-lettered); nothing is live.
    Rejected,
}

impl EntryStatus {
    fn as_str(self) -> &'static str {
        match self {
            EntryStatus::Live => "live",
            EntryStatus::PendingCreate => "pending_create",
            EntryStatus::PendingUpdate => "pending_update",
            EntryStatus::PendingDelete => "pending_delete",
            EntryStatus::Rejected => "rejected",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "live" => EntryStatus::Live,
            "pending_create" => EntryStatus::PendingCreate,
            "pending_update" => EntryStatus::PendingUpdate,
            "pending_delete" => EntryStatus::PendingDelete,
            "rejected" => EntryStatus::Rejected,
            _ => return None,
        })
    }
}

/// What a sink holds (or is about to hold) for one value.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkEntry {
    /// The IOC as created (its kind may be `hostname` where the key is `domain`).
    pub ioc: Ioc,
    /// The indicator the entry was created for (S1 `externalId`).
    pub indicator_id: String,
    /// The sink's id for it.
    pub remote_id: Option<String>,
    /// Where it stands.
    pub status: EntryStatus,
    /// The metadata last sent.
    pub meta: IocMeta,
}

/// An indicator as the state remembers it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredIndicator {
    /// The IOCs it desires (empty once deleted or revoked).
    pub iocs: Vec<Ioc>,
    /// Its metadata.
    pub meta: IocMeta,
    /// The version time of the state applied last.
    pub version: Option<String>,
}

/// A stored run summary.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// Row id.
    pub id: i64,
    /// Source name.
    pub source: String,
    /// Unix ms.
    pub started_ms: i64,
    /// Unix ms.
    pub ended_ms: i64,
    /// The run statistics as JSON.
    pub stats: serde_json::Value,
}

/// An overview for `iocsync state show`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Overview {
    /// The database file.
    pub path: String,
    /// Checkpoint per source: (source, position, updated unix ms).
    pub checkpoints: Vec<(String, String, i64)>,
    /// Indicators with at least one IOC.
    pub indicators: i64,
    /// Per sink: (sink, live entries, pending entries, rejected entries).
    pub sinks: Vec<(String, i64, i64, i64)>,
    /// Intents outstanding.
    pub pending_intents: i64,
}

/// The state database.
pub struct State {
    conn: Connection,
    path: PathBuf,
}

/// The state directory 0700 and the database 0600, whatever the umask: the state holds the whole
/// live set, the sinks' ids and the dead letters. The database file is created here, empty, so that
/// SQLite (which gives its `-wal` and `-shm` files the database file's mode) never creates it wider;
/// `-wal` / `-shm` left by an older version are narrowed too.
#[cfg(unix)]
fn restrict_to_owner(dir: &Path, db: &Path) -> Result<(), StateError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let chmod = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
            StateError::Mode {
                path: path.to_path_buf(),
                mode,
                source,
            }
        })
    };
    chmod(dir, 0o700)?;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(db)
        .map_err(|source| StateError::Mode {
            path: db.to_path_buf(),
            mode: 0o600,
            source,
        })?;
    chmod(db, 0o600)?;
    for suffix in ["-wal", "-shm"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let side = PathBuf::from(name);
        if side.exists() {
            chmod(&side, 0o600)?;
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict_to_owner(_dir: &Path, _db: &Path) -> Result<(), StateError> {
    Ok(())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl State {
    /// Opens (creating if needed) the database in `dir`.
    pub fn open(dir: &Path) -> Result<State, StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(DB_FILE);
        restrict_to_owner(dir, &path)?;
        let conn = Connection::open(&path).map_err(|source| StateError::Sqlite {
            path: path.clone(),
            source,
        })?;
        // Before anything else: every statement below may have to wait for another connection
        // (the metrics endpoint's reader, the MISP source's own) instead of failing at once.
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|source| StateError::Sqlite {
                path: path.clone(),
                source,
            })?;
        let state = State { conn, path };
        state.init()?;
        Ok(state)
    }

    /// Opens an existing database read-only, without touching its schema (the metrics endpoint's
    /// connection: it must never take a write lock the pipeline would wait for). `None` while the
    /// database has no schema yet: a daemon that has just created the file is still initialising it.
    pub fn open_read_only(dir: &Path) -> Result<Option<State>, StateError> {
        let path = dir.join(DB_FILE);
        let err = |source| StateError::Sqlite {
            path: path.clone(),
            source,
        };
        let conn = Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        let state = State { conn, path };
        match state.schema_version()? {
            None => Ok(None),
            Some(found) if found != SCHEMA_VERSION => Err(StateError::Schema {
                path: state.path.clone(),
                found,
                expected: SCHEMA_VERSION,
            }),
            Some(_) => Ok(Some(state)),
        }
    }

    /// The schema version recorded in the database, `None` before the schema exists.
    fn schema_version(&self) -> Result<Option<i64>, StateError> {
        let has_meta: bool = self
            .conn
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta')",
                [],
                |r| r.get(0),
            )
            .map_err(self.err())?;
        if !has_meta {
            return Ok(None);
        }
        let found: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key='schema'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(self.err())?;
        Ok(found.map(|v| v.parse::<i64>().unwrap_or(-1)))
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StateError + '_ {
        |source| StateError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn init(&self) -> Result<(), StateError> {
        self.conn
            .execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")
            .map_err(self.err())?;
        // One transaction, so a reader opening the file meanwhile (`state show`, the metrics
        // endpoint) sees either no schema or all of it, never half.
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(self.err())?;
        let created = self.create_schema();
        let end = if created.is_ok() {
            "COMMIT"
        } else {
            "ROLLBACK"
        };
        self.conn.execute_batch(end).map_err(self.err())?;
        created
    }

    fn create_schema(&self) -> Result<(), StateError> {
        self.conn
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS checkpoint(source TEXT PRIMARY KEY, position TEXT NOT NULL, updated_at INTEGER NOT NULL);
                 CREATE TABLE IF NOT EXISTS indicator(id TEXT PRIMARY KEY, iocs TEXT NOT NULL, meta TEXT NOT NULL, version TEXT, updated_at INTEGER NOT NULL);
                 CREATE TABLE IF NOT EXISTS holder(kind TEXT NOT NULL, value TEXT NOT NULL, indicator_id TEXT NOT NULL, PRIMARY KEY(kind, value, indicator_id));
                 CREATE TABLE IF NOT EXISTS sink_ioc(sink TEXT NOT NULL, kind TEXT NOT NULL, value TEXT NOT NULL, ioc_kind TEXT NOT NULL, indicator_id TEXT NOT NULL, remote_id TEXT, status TEXT NOT NULL, meta TEXT NOT NULL, updated_at INTEGER NOT NULL, PRIMARY KEY(sink, kind, value));
                 CREATE TABLE IF NOT EXISTS intent(id INTEGER PRIMARY KEY AUTOINCREMENT, sink TEXT NOT NULL, kind TEXT NOT NULL, value TEXT NOT NULL, change TEXT NOT NULL, created_at INTEGER NOT NULL);
                 CREATE INDEX IF NOT EXISTS intent_by_key ON intent(sink, kind, value);
                 CREATE TABLE IF NOT EXISTS run(id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL, started INTEGER NOT NULL, ended INTEGER NOT NULL, stats TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS kv(key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at INTEGER NOT NULL);
                 CREATE TABLE IF NOT EXISTS listing_cache(name TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY(name, seq));
                 -- When each indicator that holds IOCs stops being valid (epoch ms): the expiry sweep.
                 CREATE TABLE IF NOT EXISTS expiry(indicator_id TEXT PRIMARY KEY, at INTEGER NOT NULL);
                 CREATE INDEX IF NOT EXISTS expiry_by_time ON expiry(at);
                 -- Nothing looks these up; they only cost a write per planned value (earlier databases have them).
                 DROP INDEX IF EXISTS holder_by_indicator;
                 DROP INDEX IF EXISTS sink_ioc_by_indicator;",
            )
            .map_err(self.err())?;
        match self.schema_version()? {
            None => {
                self.conn
                    .execute(
                        "INSERT OR REPLACE INTO meta(key, value) VALUES('schema', ?1)",
                        [SCHEMA_VERSION.to_string()],
                    )
                    .map_err(self.err())?;
            }
            Some(v) if v != SCHEMA_VERSION => {
                return Err(StateError::Schema {
                    path: self.path.clone(),
                    found: v,
                    expected: SCHEMA_VERSION,
                })
            }
            Some(_) => {}
        }
        self.backfill_expiry()
    }

    /// Databases written before the expiry table existed: fill it once from the stored metadata.
    fn backfill_expiry(&self) -> Result<(), StateError> {
        const DONE: &str = "expiry_index";
        let done: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key=?1", [DONE], |r| r.get(0))
            .optional()
            .map_err(self.err())?;
        if done.is_some() {
            return Ok(());
        }
        let rows: Vec<(String, String)> = {
            let mut st = self
                .conn
                .prepare("SELECT id, meta FROM indicator WHERE iocs <> '[]'")
                .map_err(self.err())?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(self.err())?;
            rows.collect::<Result<_, _>>().map_err(self.err())?
        };
        for (id, meta) in rows {
            let meta: IocMeta = parse_json(&self.path, "indicator meta", &meta)?;
            if let Some(at) = expiry_ms(&meta) {
                self.conn
                    .execute(
                        "INSERT OR REPLACE INTO expiry(indicator_id, at) VALUES(?1, ?2)",
                        params![id, at],
                    )
                    .map_err(self.err())?;
            }
        }
        self.conn
            .execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES(?1, '1')",
                [DONE],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Indicators that hold IOCs and whose validity ended at or before `now_ms`, soonest first,
    /// with what they hold (the expiry sweep turns them into removals).
    pub fn expired_indicators(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<(String, StoredIndicator)>, StateError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT e.indicator_id, i.iocs, i.meta, i.version FROM expiry e
                 JOIN indicator i ON i.id = e.indicator_id
                 WHERE e.at <= ?1 ORDER BY e.at LIMIT ?2",
            )
            .map_err(self.err())?;
        let rows = st
            .query_map(params![now_ms, limit as i64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            })
            .map_err(self.err())?;
        let mut out = Vec::new();
        for row in rows {
            let (id, iocs, meta, version) = row.map_err(self.err())?;
            out.push((
                id,
                StoredIndicator {
                    iocs: parse_json(&self.path, "indicator iocs", &iocs)?,
                    meta: parse_json(&self.path, "indicator meta", &meta)?,
                    version,
                },
            ));
        }
        Ok(out)
    }

    /// The database file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The checkpoint of a source.
    pub fn checkpoint(&self, source: &str) -> Result<Option<String>, StateError> {
        self.conn
            .query_row(
                "SELECT position FROM checkpoint WHERE source=?1",
                [source],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())
    }

    /// Moves a source's checkpoint.
    pub fn set_checkpoint(&self, source: &str, position: &str) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO checkpoint(source, position, updated_at) VALUES(?1, ?2, ?3)
                 ON CONFLICT(source) DO UPDATE SET position=excluded.position, updated_at=excluded.updated_at",
                params![source, position, now_ms()],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    /// Forgets a source's checkpoint (remote reset): the id maps stay, so a replay creates nothing twice.
    pub fn clear_checkpoint(&self, source: &str) -> Result<(), StateError> {
        self.conn
            .execute("DELETE FROM checkpoint WHERE source=?1", [source])
            .map(|_| ())
            .map_err(self.err())
    }

    /// A small key/value slot (MISP run bookkeeping, caches).
    pub fn kv_get(&self, key: &str) -> Result<Option<String>, StateError> {
        self.conn
            .query_row("SELECT value FROM kv WHERE key=?1", [key], |r| r.get(0))
            .optional()
            .map_err(self.err())
    }

    /// Sets a key/value slot.
    pub fn kv_set(&self, key: &str, value: &str) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO kv(key, value, updated_at) VALUES(?1, ?2, ?3)
                 ON CONFLICT(key) DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at",
                params![key, value, now_ms()],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    /// Replaces the cached listing `name` (e.g. the `iocsync s1 list` cache): `meta` describes it
    /// (when, from where), `rows` are its items, one opaque text each. One transaction: a reader
    /// sees the old listing or the new one, never a mix.
    pub fn cache_put(&mut self, name: &str, meta: &str, rows: &[String]) -> Result<(), StateError> {
        let path = self.path.clone();
        let err = |source| StateError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute("DELETE FROM listing_cache WHERE name=?1", [name])
            .map_err(err)?;
        {
            let mut stmt = tx
                .prepare("INSERT INTO listing_cache(name, seq, body) VALUES(?1, ?2, ?3)")
                .map_err(err)?;
            for (seq, row) in rows.iter().enumerate() {
                let seq = i64::try_from(seq).unwrap_or(i64::MAX);
                stmt.execute(params![name, seq, row]).map_err(err)?;
            }
        }
        tx.execute(
            "INSERT INTO kv(key, value, updated_at) VALUES(?1, ?2, ?3)
             ON CONFLICT(key) DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at",
            params![format!("listing_cache.{name}"), meta, now_ms()],
        )
        .map_err(err)?;
        tx.commit().map_err(err)
    }

    /// The cached listing `name`: its meta text and rows in the order stored; `None` when never
    /// stored.
    pub fn cache_get(&self, name: &str) -> Result<Option<(String, Vec<String>)>, StateError> {
        let Some(meta) = self.kv_get(&format!("listing_cache.{name}"))? else {
            return Ok(None);
        };
        let mut stmt = self
            .conn
            .prepare("SELECT body FROM listing_cache WHERE name=?1 ORDER BY seq")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([name], |r| r.get::<_, String>(0))
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        Ok(Some((meta, rows)))
    }

    /// Points a sink's entries held under remote id `old` to `new` (an IOC replaced by hand, e.g.
    /// `iocsync s1 update` on a console that does not upsert); returns how many entries moved.
    pub fn repoint_remote_id(&self, sink: &str, old: &str, new: &str) -> Result<usize, StateError> {
        self.conn
            .execute(
                "UPDATE sink_ioc SET remote_id=?3, updated_at=?4 WHERE sink=?1 AND remote_id=?2",
                params![sink, old, new, now_ms()],
            )
            .map_err(self.err())
    }

    /// Starts a transaction for planning or recording outcomes.
    pub fn tx(&mut self) -> Result<Tx<'_>, StateError> {
        let path = self.path.clone();
        // IMMEDIATE takes the write lock up front, waiting with the busy timeout: a deferred
        // transaction that reads first fails at once with SQLITE_BUSY when another connection (the
        // MISP source's own, on the same file) wrote in between.
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|source| StateError::Sqlite {
                path: path.clone(),
                source,
            })?;
        Ok(Tx {
            conn: &self.conn,
            statements: RefCell::new(Vec::new()),
            path,
            open: true,
        })
    }

    /// Every outstanding intent, per sink, oldest first (crash leftovers at start-up).
    pub fn pending_intents(&self) -> Result<Vec<(String, Change)>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, sink, change FROM intent ORDER BY id")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(self.err())?;
        let mut out = Vec::new();
        for row in rows {
            let (id, sink, json) = row.map_err(self.err())?;
            let mut change: Change = parse_json(&self.path, "intent", &json)?;
            change.intent_id = id;
            out.push((sink, change));
        }
        Ok(out)
    }

    /// Live entries of one sink (for counts and quota warnings).
    pub fn live_count(&self, sink: &str) -> Result<i64, StateError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM sink_ioc WHERE sink=?1 AND status IN ('live','pending_update','pending_delete')",
                [sink],
                |r| r.get(0),
            )
            .map_err(self.err())
    }

    /// Every live (kind, value) in a sink, sorted (tests, `state show --live`).
    pub fn live_values(&self, sink: &str) -> Result<Vec<(String, String)>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT kind, value FROM sink_ioc WHERE sink=?1 AND status IN ('live','pending_update') ORDER BY kind, value")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([sink], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }

    /// The ids of every indicator that currently holds at least one IOC, sorted (the MISP source's
    /// full resync compares them with what the server still has).
    pub fn indicator_ids(&self) -> Result<Vec<String>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id FROM indicator WHERE iocs != '[]' ORDER BY id")
            .map_err(self.err())?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }

    /// Stores a run summary and keeps the last [`RUNS_KEPT`].
    pub fn record_run(
        &self,
        source: &str,
        started_ms: i64,
        ended_ms: i64,
        stats: &serde_json::Value,
    ) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO run(source, started, ended, stats) VALUES(?1, ?2, ?3, ?4)",
                params![source, started_ms, ended_ms, stats.to_string()],
            )
            .map_err(self.err())?;
        self.conn
            .execute(
                "DELETE FROM run WHERE id NOT IN (SELECT id FROM run ORDER BY id DESC LIMIT ?1)",
                [RUNS_KEPT],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    /// The last runs, newest first.
    pub fn runs(&self) -> Result<Vec<RunRecord>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, source, started, ended, stats FROM run ORDER BY id DESC LIMIT ?1")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([RUNS_KEPT], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get::<_, String>(4)?,
                ))
            })
            .map_err(self.err())?;
        let mut out = Vec::new();
        for row in rows {
            let (id, source, started_ms, ended_ms, stats) = row.map_err(self.err())?;
            out.push(RunRecord {
                id,
                source,
                started_ms,
                ended_ms,
                stats: serde_json::from_str(&stats).unwrap_or(serde_json::Value::Null),
            });
        }
        Ok(out)
    }

    /// What `iocsync state show` prints.
    pub fn overview(&self) -> Result<Overview, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT source, position, updated_at FROM checkpoint ORDER BY source")
            .map_err(self.err())?;
        let checkpoints = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        let indicators = self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM indicator WHERE iocs != '[]'",
                [],
                |r| r.get(0),
            )
            .map_err(self.err())?;
        let mut stmt = self
            .conn
            .prepare(
                "SELECT sink,
                        SUM(status IN ('live','pending_update')),
                        SUM(status IN ('pending_create','pending_delete')),
                        SUM(status='rejected')
                 FROM sink_ioc GROUP BY sink ORDER BY sink",
            )
            .map_err(self.err())?;
        let sinks = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        let pending_intents = self
            .conn
            .query_row("SELECT COUNT(*) FROM intent", [], |r| r.get(0))
            .map_err(self.err())?;
        Ok(Overview {
            path: self.path.display().to_string(),
            checkpoints,
            indicators,
            sinks,
            pending_intents,
        })
    }

    /// Deletes everything: checkpoint, maps, intents, runs.
    pub fn reset(&self) -> Result<(), StateError> {
        self.conn
            .execute_batch(
                "DELETE FROM checkpoint; DELETE FROM indicator; DELETE FROM holder; DELETE FROM sink_ioc;
                 DELETE FROM intent; DELETE FROM run; DELETE FROM kv; DELETE FROM listing_cache; DELETE FROM expiry;",
            )
            .map_err(self.err())
    }
}

/// A state transaction with the typed operations the planner and the outcome recorder need. Rolled
/// back when dropped without [`Tx::commit`].
pub struct Tx<'a> {
    conn: &'a Connection,
    /// The statements this transaction has used, held until it ends: a planning transaction runs
    /// the same handful thousands of times, and taking each from the connection's cache every time
    /// (hashing its SQL twice) cost more than binding it.
    statements: RefCell<Vec<(usize, CachedStatement<'a>)>>,
    path: PathBuf,
    open: bool,
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
            // Nothing to report to: the caller already has the error that made it give up.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// When an indicator stops being valid, in epoch ms (`None`: open-ended or unreadable).
fn expiry_ms(meta: &IocMeta) -> Option<i64> {
    meta.valid_until
        .as_deref()
        .and_then(crate::classify::parse_time)
        .map(|t| t.timestamp_millis())
}

fn parse_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &'static str,
    s: &str,
) -> Result<T, StateError> {
    serde_json::from_str(s).map_err(|e| StateError::Corrupt {
        path: path.to_path_buf(),
        what,
        message: e.to_string(),
    })
}

impl<'a> Tx<'a> {
    /// Runs `f` on the prepared statement for `sql` (a literal: its address is the key).
    fn with_statement<R>(
        &self,
        sql: &'static str,
        f: impl FnOnce(&mut CachedStatement<'_>) -> rusqlite::Result<R>,
    ) -> Result<R, StateError> {
        let key = sql.as_ptr() as usize;
        let mut statements = self.statements.borrow_mut();
        let index = match statements.iter().position(|(k, _)| *k == key) {
            Some(index) => index,
            None => {
                let statement = self.conn.prepare_cached(sql).map_err(self.err())?;
                statements.push((key, statement));
                statements.len() - 1
            }
        };
        f(&mut statements[index].1).map_err(self.err())
    }

    /// Runs a statement (planning runs a handful per indicator).
    fn exec<P: rusqlite::Params>(&self, sql: &'static str, params: P) -> Result<usize, StateError> {
        self.with_statement(sql, |st| st.execute(params))
    }

    /// Queries at most one row.
    fn row<T, P: rusqlite::Params>(
        &self,
        sql: &'static str,
        params: P,
        f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>, StateError> {
        self.with_statement(sql, |st| st.query_row(params, f).optional())
    }
    fn err(&self) -> impl Fn(rusqlite::Error) -> StateError + use<'_, 'a> {
        |source| StateError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Commits (a failed commit is rolled back when the transaction drops).
    pub fn commit(mut self) -> Result<(), StateError> {
        self.statements.get_mut().clear();
        self.conn.execute_batch("COMMIT").map_err(self.err())?;
        self.open = false;
        Ok(())
    }

    /// What an indicator currently desires, if it was ever seen.
    pub fn indicator(&self, id: &str) -> Result<Option<StoredIndicator>, StateError> {
        let row: Option<(String, String, Option<String>)> = self.row(
            "SELECT iocs, meta, version FROM indicator WHERE id=?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        match row {
            None => Ok(None),
            Some((iocs, meta, version)) => Ok(Some(StoredIndicator {
                iocs: parse_json(&self.path, "indicator iocs", &iocs)?,
                meta: parse_json(&self.path, "indicator meta", &meta)?,
                version,
            })),
        }
    }

    /// Stores what an indicator desires. An indicator that desires nothing keeps its row (with its
    /// version) so that a replay of its older history is recognised as stale.
    pub fn put_indicator(
        &self,
        id: &str,
        iocs: &[Ioc],
        meta: &IocMeta,
        version: Option<&str>,
    ) -> Result<(), StateError> {
        let expires = if iocs.is_empty() {
            None
        } else {
            expiry_ms(meta)
        };
        let iocs = serde_json::to_string(iocs).unwrap_or_else(|_| "[]".into());
        let meta = serde_json::to_string(meta).unwrap_or_else(|_| "{}".into());
        self.exec(
                "INSERT INTO indicator(id, iocs, meta, version, updated_at) VALUES(?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(id) DO UPDATE SET iocs=excluded.iocs, meta=excluded.meta,
                   version=COALESCE(excluded.version, indicator.version), updated_at=excluded.updated_at",
                params![id, iocs, meta, version, now_ms()],
            )?;
        match expires {
            Some(at) => self.exec(
                "INSERT INTO expiry(indicator_id, at) VALUES(?1, ?2)
                 ON CONFLICT(indicator_id) DO UPDATE SET at=excluded.at",
                params![id, at],
            )?,
            None => self.exec("DELETE FROM expiry WHERE indicator_id=?1", [id])?,
        };
        Ok(())
    }

    /// Records that `indicator_id` holds (kind, value).
    pub fn add_holder(
        &self,
        kind: IocKind,
        value: &str,
        indicator_id: &str,
    ) -> Result<(), StateError> {
        self.exec(
            "INSERT OR IGNORE INTO holder(kind, value, indicator_id) VALUES(?1, ?2, ?3)",
            params![kind.as_str(), value, indicator_id],
        )
        .map(|_| ())
    }

    /// Records that `indicator_id` no longer holds (kind, value).
    pub fn remove_holder(
        &self,
        kind: IocKind,
        value: &str,
        indicator_id: &str,
    ) -> Result<(), StateError> {
        self.exec(
            "DELETE FROM holder WHERE kind=?1 AND value=?2 AND indicator_id=?3",
            params![kind.as_str(), value, indicator_id],
        )
        .map(|_| ())
    }

    /// Some indicator still holding (kind, value), if any.
    pub fn any_holder(&self, kind: IocKind, value: &str) -> Result<Option<String>, StateError> {
        self.row(
                "SELECT indicator_id FROM holder WHERE kind=?1 AND value=?2 ORDER BY indicator_id LIMIT 1",
                params![kind.as_str(), value],
                |r| r.get(0),
            )
    }

    /// A sink's entry for a value (keyed by the sink kind).
    pub fn sink_entry(
        &self,
        sink: &str,
        kind: IocKind,
        value: &str,
    ) -> Result<Option<SinkEntry>, StateError> {
        let row: Option<(String, String, Option<String>, String, String)> = self.row(
                "SELECT ioc_kind, indicator_id, remote_id, status, meta FROM sink_ioc WHERE sink=?1 AND kind=?2 AND value=?3",
                params![sink, kind.as_str(), value],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            ?;
        let Some((ioc_kind, indicator_id, remote_id, status, meta)) = row else {
            return Ok(None);
        };
        let corrupt = |what: &'static str, message: String| StateError::Corrupt {
            path: self.path.clone(),
            what,
            message,
        };
        Ok(Some(SinkEntry {
            ioc: Ioc {
                kind: IocKind::from_name(&ioc_kind)
                    .ok_or_else(|| corrupt("sink entry kind", ioc_kind.clone()))?,
                value: value.to_string(),
            },
            indicator_id,
            remote_id,
            status: EntryStatus::parse(&status)
                .ok_or_else(|| corrupt("sink entry status", status.clone()))?,
            meta: parse_json(&self.path, "sink entry meta", &meta)?,
        }))
    }

    /// Inserts or replaces a sink entry.
    pub fn put_sink_entry(&self, sink: &str, entry: &SinkEntry) -> Result<(), StateError> {
        let meta = serde_json::to_string(&entry.meta).unwrap_or_else(|_| "{}".into());
        self.exec(
                "INSERT INTO sink_ioc(sink, kind, value, ioc_kind, indicator_id, remote_id, status, meta, updated_at)
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT(sink, kind, value) DO UPDATE SET ioc_kind=excluded.ioc_kind, indicator_id=excluded.indicator_id,
                   remote_id=excluded.remote_id, status=excluded.status, meta=excluded.meta, updated_at=excluded.updated_at",
                params![
                    sink,
                    entry.ioc.kind.sink_kind().as_str(),
                    entry.ioc.value,
                    entry.ioc.kind.as_str(),
                    entry.indicator_id,
                    entry.remote_id,
                    entry.status.as_str(),
                    meta,
                    now_ms()
                ],
            )
            .map(|_| ())
    }

    /// Records a sink's answer for an entry without reading it back: the new status, the remote id
    /// when one came back, the metadata when an update was applied. No entry: nothing to do.
    pub fn settle_entry(
        &self,
        sink: &str,
        kind: IocKind,
        value: &str,
        status: EntryStatus,
        remote_id: Option<&str>,
        meta: Option<&IocMeta>,
    ) -> Result<(), StateError> {
        let meta = meta.map(|m| serde_json::to_string(m).unwrap_or_else(|_| "{}".into()));
        self.exec(
            "UPDATE sink_ioc SET status=?1, remote_id=COALESCE(?2, remote_id), meta=COALESCE(?3, meta),
               updated_at=?4 WHERE sink=?5 AND kind=?6 AND value=?7",
            params![status.as_str(), remote_id, meta, now_ms(), sink, kind.sink_kind().as_str(), value],
        )
        .map(|_| ())
    }

    /// Removes a sink entry.
    pub fn remove_sink_entry(
        &self,
        sink: &str,
        kind: IocKind,
        value: &str,
    ) -> Result<(), StateError> {
        self.exec(
            "DELETE FROM sink_ioc WHERE sink=?1 AND kind=?2 AND value=?3",
            params![sink, kind.sink_kind().as_str(), value],
        )
        .map(|_| ())
    }

    /// Writes an intent and returns the change with its id filled in.
    pub fn insert_intent(&self, sink: &str, mut change: Change) -> Result<Change, StateError> {
        // The row id is the intent id; the stored JSON carries 0 and readers fill it in.
        change.intent_id = 0;
        let json = serde_json::to_string(&change).unwrap_or_else(|_| "{}".into());
        self.exec(
            "INSERT INTO intent(sink, kind, value, change, created_at) VALUES(?1, ?2, ?3, ?4, ?5)",
            params![
                sink,
                change.ioc.kind.sink_kind().as_str(),
                change.ioc.value,
                json,
                now_ms()
            ],
        )?;
        change.intent_id = self.conn.last_insert_rowid();
        Ok(change)
    }

    /// Replaces an intent's change (e.g. newer metadata for a not-yet-sent update).
    pub fn rewrite_intent(&self, change: &Change) -> Result<(), StateError> {
        let json = serde_json::to_string(change).unwrap_or_else(|_| "{}".into());
        self.exec(
            "UPDATE intent SET change=?1 WHERE id=?2",
            params![json, change.intent_id],
        )
        .map(|_| ())
    }

    /// The outstanding intent of a sink for a value, if any.
    pub fn intent_for(
        &self,
        sink: &str,
        kind: IocKind,
        value: &str,
    ) -> Result<Option<Change>, StateError> {
        let row: Option<(i64, String)> = self.row(
            "SELECT id, change FROM intent WHERE sink=?1 AND kind=?2 AND value=?3 ORDER BY id DESC LIMIT 1",
            params![sink, kind.sink_kind().as_str(), value],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        row.map(|(id, json)| {
            parse_json::<Change>(&self.path, "intent", &json).map(|mut c| {
                c.intent_id = id;
                c
            })
        })
        .transpose()
    }

    /// Removes an intent (applied, rejected or cancelled).
    pub fn delete_intent(&self, intent_id: i64) -> Result<(), StateError> {
        self.exec("DELETE FROM intent WHERE id=?1", [intent_id])
            .map(|_| ())
    }

    /// Deletes settled intents: one statement per run of consecutive ids (a batch's intents are
    /// written in one go, so a sink's share is mostly one run) instead of one per intent.
    pub fn delete_intents(&self, mut intent_ids: Vec<i64>) -> Result<(), StateError> {
        intent_ids.sort_unstable();
        intent_ids.dedup();
        let mut rest = intent_ids.as_slice();
        while let Some(&first) = rest.first() {
            let run = rest
                .iter()
                .zip(first..)
                .take_while(|(id, expected)| **id == *expected)
                .count();
            let last = rest[run - 1];
            self.exec(
                "DELETE FROM intent WHERE id BETWEEN ?1 AND ?2",
                params![first, last],
            )?;
            rest = &rest[run..];
        }
        Ok(())
    }

    /// Moves a source's checkpoint inside this transaction.
    pub fn set_checkpoint(&self, source: &str, position: &str) -> Result<(), StateError> {
        self.exec(
                "INSERT INTO checkpoint(source, position, updated_at) VALUES(?1, ?2, ?3)
                 ON CONFLICT(source) DO UPDATE SET position=excluded.position, updated_at=excluded.updated_at",
                params![source, position, now_ms()],
            )
            .map(|_| ())
    }
}

/// A change of an op for an entry; used by the planner and tests.
pub fn change_for(op: ChangeOp, entry: &SinkEntry) -> Change {
    Change {
        intent_id: 0,
        op,
        ioc: entry.ioc.clone(),
        indicator_id: entry.indicator_id.clone(),
        remote_id: entry.remote_id.clone(),
        meta: entry.meta.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_sees_no_state_until_the_schema_is_committed() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The file a starting daemon has created but not yet initialised.
        std::fs::write(dir.path().join(DB_FILE), b"").expect("create empty db file");
        assert!(State::open_read_only(dir.path()).expect("open").is_none());

        let writer = State::open(dir.path()).expect("init");
        writer.set_checkpoint("file", "42").expect("checkpoint");
        let reader = State::open_read_only(dir.path())
            .expect("open")
            .expect("schema is there");
        assert_eq!(
            reader.checkpoint("file").expect("read").as_deref(),
            Some("42")
        );
    }

    #[test]
    fn a_reader_refuses_a_database_of_another_schema_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = State::open(dir.path()).expect("init");
        writer
            .conn
            .execute("UPDATE meta SET value='999' WHERE key='schema'", [])
            .expect("bump schema");
        match State::open_read_only(dir.path()) {
            Err(StateError::Schema { found: 999, .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a foreign schema was accepted"),
        }
        assert!(matches!(
            State::open(dir.path()),
            Err(StateError::Schema { found: 999, .. })
        ));
    }

    #[test]
    fn the_expiry_index_follows_what_indicators_hold_and_is_backfilled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut state = State::open(dir.path()).expect("init");
        let ioc = Ioc {
            kind: IocKind::Domain,
            value: "a.example".into(),
        };
        let until = |t: &str| IocMeta {
            valid_until: Some(t.to_string()),
            ..IocMeta::default()
        };
        let tx = state.tx().expect("tx");
        let put = |id: &str, iocs: &[Ioc], meta: &IocMeta| {
            tx.put_indicator(id, iocs, meta, None).expect("put");
        };
        put(
            "indicator--soon",
            std::slice::from_ref(&ioc),
            &until("2020-01-01T00:00:00Z"),
        );
        put(
            "indicator--later",
            std::slice::from_ref(&ioc),
            &until("2040-01-01T00:00:00Z"),
        );
        put(
            "indicator--open",
            std::slice::from_ref(&ioc),
            &IocMeta::default(),
        );
        put("indicator--empty", &[], &until("2020-01-01T00:00:00Z"));
        put(
            "indicator--gone",
            std::slice::from_ref(&ioc),
            &until("2019-01-01T00:00:00Z"),
        );
        put("indicator--gone", &[], &until("2019-01-01T00:00:00Z"));
        tx.commit().expect("commit");
        let now = parse_ms("2030-01-01T00:00:00Z");
        let ids = |s: &State| -> Vec<String> {
            s.expired_indicators(now, 10)
                .expect("query")
                .into_iter()
                .map(|(id, stored)| {
                    assert!(!stored.iocs.is_empty());
                    id
                })
                .collect()
        };
        assert_eq!(ids(&state), ["indicator--soon"]);

        // A database from before the table: emptied index, no marker; reopening rebuilds it.
        state
            .conn
            .execute_batch("DELETE FROM expiry; DELETE FROM meta WHERE key='expiry_index';")
            .expect("age the database");
        drop(state);
        let state = State::open(dir.path()).expect("reopen");
        assert_eq!(ids(&state), ["indicator--soon"]);
        assert_eq!(
            state
                .expired_indicators(parse_ms("2050-01-01T00:00:00Z"), 10)
                .expect("q")
                .len(),
            2
        );
    }

    fn parse_ms(t: &str) -> i64 {
        crate::classify::parse_time(t)
            .expect("time")
            .timestamp_millis()
    }

    #[test]
    fn settled_intents_are_deleted_by_runs_and_only_those() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut state = State::open(dir.path()).expect("init");
        let tx = state.tx().expect("tx");
        let ids: Vec<i64> = (0..8)
            .map(|i| {
                let change = Change {
                    intent_id: 0,
                    op: ChangeOp::Create,
                    ioc: Ioc {
                        kind: IocKind::Domain,
                        value: format!("d{i}.example"),
                    },
                    indicator_id: format!("indicator--{i}"),
                    remote_id: None,
                    meta: IocMeta::default(),
                };
                tx.insert_intent("jsonl", change).expect("intent").intent_id
            })
            .collect();
        // Two runs and a single id, given out of order.
        tx.delete_intents(vec![ids[6], ids[1], ids[0], ids[2], ids[4], ids[5]])
            .expect("delete");
        tx.commit().expect("commit");
        let left: Vec<i64> = state
            .pending_intents()
            .expect("pending")
            .iter()
            .map(|(_, c)| c.intent_id)
            .collect();
        assert_eq!(left, [ids[3], ids[7]]);
    }
}

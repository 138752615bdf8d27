//! Durable state in one SQLite file (WAL): the source checkpoint, each indicator's desired IOCs, who
//! holds each value, what each sink holds, the intents written before every sink call, and the run
//! history. This module knows SQL and nothing about remotes; the planner drives it through [`Tx`].
//!
//! `mod.rs` opens the database and answers the whole-state questions (checkpoints, counts, the
//! overview); `schema.rs` creates it; `tx.rs` is the transaction the planner and the outcome
//! recorder use; `expiry.rs` indexes validity ends; `history.rs` keeps the runs; `cache.rs` holds
//! the command line's cached listings.

use crate::ioc::Ioc;
use crate::model::Change;
use crate::model::IocMeta;
use rusqlite::{params, Connection, OptionalExtension};
use std::cell::RefCell;
use std::path::{Path, PathBuf};

/// The database file name inside `state.dir`.
pub const DB_FILE: &str = "iocsync.db";

/// The schema version this iocsync writes: 1 plus the number of migrations (`schema.rs`).
const SCHEMA_VERSION: i64 = 1 + schema::MIGRATIONS.len() as i64;

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
    /// The database was written by a newer iocsync: this one cannot know its tables.
    #[error("state database `{path}` has schema version {found}, written by a newer iocsync (this one knows up to {supported}): run that version, or use another state.dir; `iocsync state reset` would throw away the sinks' id map")]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// Version found.
        found: i64,
        /// The newest version this iocsync knows.
        supported: i64,
    },
    /// A read-only look at a database an older iocsync wrote and no daemon of this version has
    /// opened (and migrated) yet.
    #[error("state database `{path}` has schema version {found}, older than this iocsync's {expected}: it is migrated when `iocsync run` opens it")]
    OlderSchema {
        /// The database file.
        path: PathBuf,
        /// Version found.
        found: i64,
        /// Version this iocsync writes.
        expected: i64,
    },
    /// A record could not be serialised for storage (nothing was written).
    #[error("cannot encode {what} for the state database: {message}")]
    Encode {
        /// Which record.
        what: &'static str,
        /// The serialiser's message.
        message: String,
    },
    /// The blocking task that held the database failed (a panic in it).
    #[error("state database task failed: {0}")]
    Task(String),
}

/// Serialises a record for a JSON column; a failure is an error, never an empty document.
pub(crate) fn encode<T: serde::Serialize + ?Sized>(
    what: &'static str,
    value: &T,
) -> Result<String, StateError> {
    serde_json::to_string(value).map_err(|e| StateError::Encode {
        what,
        message: e.to_string(),
    })
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

mod cache;
mod console;
mod expiry;
mod history;
mod journal;
mod journal_values;
mod reconcile;
mod run_log;
mod schema;
mod tx;

pub use console::{HeldEntry, IocRow, IocSearch, PAGE_SIZE as IOC_PAGE_SIZE};
pub use journal::{ChangeFate, EventNote, JournalChange, JournalEvent, JournalPolicy, SinkValue};
use schema::restrict_to_owner;
pub use tx::Tx;

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
            Some(found) if found > SCHEMA_VERSION => Err(StateError::NewerSchema {
                path: state.path.clone(),
                found,
                supported: SCHEMA_VERSION,
            }),
            Some(found) if found < SCHEMA_VERSION => Err(StateError::OlderSchema {
                path: state.path.clone(),
                found,
                expected: SCHEMA_VERSION,
            }),
            Some(_) => Ok(Some(state)),
        }
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StateError + '_ {
        |source| StateError::Sqlite {
            path: self.path.clone(),
            source,
        }
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

    /// Removes a key/value slot (absent: nothing to do).
    pub fn kv_delete(&self, key: &str) -> Result<(), StateError> {
        self.conn
            .execute("DELETE FROM kv WHERE key=?1", [key])
            .map(|_| ())
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
                 DELETE FROM intent; DELETE FROM run; DELETE FROM kv; DELETE FROM listing_cache; DELETE FROM expiry;
                 DELETE FROM journal_value; DELETE FROM journal_event; DELETE FROM journal_change;",
            )
            .map_err(self.err())
    }
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
            Err(StateError::NewerSchema { found: 999, .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a foreign schema was accepted"),
        }
        assert!(matches!(
            State::open(dir.path()),
            Err(StateError::NewerSchema { found: 999, .. })
        ));
    }
}

//! Opening the database: file modes, the schema (created in one transaction) and its version.

use super::{State, StateError, SCHEMA_VERSION};
use rusqlite::OptionalExtension;
use std::path::{Path, PathBuf};

/// The state directory 0700 and the database 0600, whatever the umask: the state holds the whole
/// live set, the sinks' ids and the dead letters. The database file is created here, empty, so that
/// SQLite (which gives its `-wal` and `-shm` files the database file's mode) never creates it wider;
/// `-wal` / `-shm` left by an older version are narrowed too.
#[cfg(unix)]
pub(super) fn restrict_to_owner(dir: &Path, db: &Path) -> Result<(), StateError> {
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
pub(super) fn restrict_to_owner(_dir: &Path, _db: &Path) -> Result<(), StateError> {
    Ok(())
}

impl State {
    /// The schema version recorded in the database, `None` before the schema exists.
    pub(super) fn schema_version(&self) -> Result<Option<i64>, StateError> {
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

    pub(super) fn init(&self) -> Result<(), StateError> {
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
        let found = self.schema_version()?;
        if found.is_none() {
            self.create_version_1()?;
        }
        let mut version = found.unwrap_or(1);
        if version > SCHEMA_VERSION {
            return Err(StateError::NewerSchema {
                path: self.path.clone(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version < 1 {
            return Err(StateError::Corrupt {
                path: self.path.clone(),
                what: "schema version",
                message: format!("unknown version {version}"),
            });
        }
        while version < SCHEMA_VERSION {
            let (to, what, migrate) = MIGRATIONS[(version - 1) as usize];
            migrate(self)?;
            tracing::info!(path = %self.path.display(), from = version, to, what, "state database migrated");
            version = to;
        }
        // Nothing looks these up; they only cost a write per planned value (early databases of
        // version 1 have them).
        self.conn
            .execute_batch(
                "DROP INDEX IF EXISTS holder_by_indicator; DROP INDEX IF EXISTS sink_ioc_by_indicator;",
            )
            .map_err(self.err())?;
        self.conn
            .execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES('schema', ?1)",
                [SCHEMA_VERSION.to_string()],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// The tables of version 1, the schema before numbered migrations; [`MIGRATIONS`] take it on.
    fn create_version_1(&self) -> Result<(), StateError> {
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
                 INSERT OR REPLACE INTO meta(key, value) VALUES('schema', '1');",
            )
            .map_err(self.err())
    }

    /// Version 2: the expiry index, filled from what the indicators already hold.
    fn migrate_2_expiry(&self) -> Result<(), StateError> {
        self.conn
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS expiry(indicator_id TEXT PRIMARY KEY, at INTEGER NOT NULL);
                 CREATE INDEX IF NOT EXISTS expiry_by_time ON expiry(at);",
            )
            .map_err(self.err())?;
        self.backfill_expiry()
    }
}

impl State {
    /// Version 3: the log lines of each recorded run (the console's run pages).
    fn migrate_3_run_log(&self) -> Result<(), StateError> {
        self.conn
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS run_log(run_id INTEGER NOT NULL, seq INTEGER NOT NULL, at INTEGER NOT NULL, level TEXT NOT NULL, target TEXT NOT NULL, message TEXT NOT NULL, PRIMARY KEY(run_id, seq));",
            )
            .map_err(self.err())
    }
}

impl State {
    /// Version 4: the event journal (`iocsync explain`).
    fn migrate_4_journal(&self) -> Result<(), StateError> {
        self.conn
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS journal_event(id INTEGER PRIMARY KEY, indicator_id TEXT NOT NULL,
                   at INTEGER NOT NULL, source TEXT NOT NULL, position TEXT, kind TEXT NOT NULL, version TEXT,
                   iocs TEXT, skip TEXT, pattern TEXT, note TEXT, first_intent INTEGER, last_intent INTEGER);
                 CREATE INDEX IF NOT EXISTS journal_event_by_indicator ON journal_event(indicator_id, id);
                 CREATE TABLE IF NOT EXISTS journal_change(intent_id INTEGER PRIMARY KEY,
                   sink TEXT NOT NULL, op TEXT NOT NULL, kind TEXT NOT NULL, value TEXT NOT NULL,
                   outcome TEXT NOT NULL DEFAULT 'pending', at INTEGER, remote_id TEXT,
                   retries INTEGER NOT NULL DEFAULT 0, error TEXT);
                 CREATE TRIGGER IF NOT EXISTS journal_event_dropped AFTER DELETE ON journal_event
                   WHEN old.first_intent IS NOT NULL
                   BEGIN DELETE FROM journal_change WHERE intent_id BETWEEN old.first_intent AND old.last_intent; END;",
            )
            .map_err(self.err())
    }
}

/// The migrations, in order: entry `i` takes a database from version `i + 1` to the version it
/// names. Each runs inside the opening transaction, so a database is migrated whole or not at all.
type Migration = (i64, &'static str, fn(&State) -> Result<(), StateError>);

/// See [`Migration`]. [`SCHEMA_VERSION`] is the last version named here.
pub(super) const MIGRATIONS: [Migration; 7 - 1] = [
    (2, "expiry index", State::migrate_2_expiry),
    (3, "run log lines", State::migrate_3_run_log),
    (4, "event journal", State::migrate_4_journal),
    (
        5,
        "console search indexes",
        State::migrate_5_console_indexes,
    ),
    (
        6,
        "journal value index, stale events",
        State::migrate_6_journal_values,
    ),
    (
        7,
        "leaner console indexes",
        State::migrate_7_leaner_console_indexes,
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ioc::{Ioc, IocKind};
    use crate::model::{Change, ChangeOp, IocMeta};
    use crate::state::{EntryStatus, SinkEntry};

    /// A database of every earlier version opens, migrates and keeps the sinks' id map, the
    /// intents and the checkpoint.
    #[test]
    fn every_earlier_version_is_migrated_with_its_id_map_and_intents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ioc = Ioc {
            kind: IocKind::Domain,
            value: "a.example".into(),
        };
        let meta = IocMeta {
            valid_until: Some("2020-01-01T00:00:00Z".into()),
            ..IocMeta::default()
        };
        {
            let mut state = State::open(dir.path()).expect("create");
            state.set_checkpoint("opencti", "7-0").expect("checkpoint");
            let tx = state.tx().expect("tx");
            tx.put_indicator("indicator--1", std::slice::from_ref(&ioc), &meta, None)
                .expect("indicator");
            tx.put_sink_entry(
                "sentinelone",
                &SinkEntry {
                    ioc: ioc.clone(),
                    indicator_id: "indicator--1".into(),
                    remote_id: Some("s1-uuid-1".into()),
                    status: EntryStatus::Live,
                    meta: meta.clone(),
                },
            )
            .expect("entry");
            let change = Change {
                intent_id: 0,
                op: ChangeOp::Delete,
                ioc: ioc.clone(),
                indicator_id: "indicator--1".into(),
                remote_id: Some("s1-uuid-1".into()),
                meta: meta.clone(),
            };
            tx.insert_intent("sentinelone", change).expect("intent");
            tx.commit().expect("commit");
            // Back to version 1: the tables as they were before any migration.
            state
                .conn
                .execute_batch(
                    "DROP TABLE expiry; DROP TABLE run_log; DROP TABLE journal_change;
                     DROP TABLE journal_event; DROP TABLE journal_value; DROP INDEX IF EXISTS sink_ioc_by_value;
                     DROP INDEX IF EXISTS sink_ioc_by_status_kind; DROP INDEX sink_ioc_by_kind_value;
                     UPDATE meta SET value='1' WHERE key='schema';",
                )
                .expect("downgrade");
        }
        // A reader cannot migrate: it says so instead of misreading.
        assert!(matches!(
            State::open_read_only(dir.path()),
            Err(StateError::OlderSchema { found: 1, .. })
        ));
        let state = State::open(dir.path()).expect("migrate");
        assert_eq!(
            state.schema_version().expect("version"),
            Some(SCHEMA_VERSION)
        );
        // Every later version's tables and indexes are back.
        for (kind, name) in [
            ("table", "expiry"),
            ("table", "run_log"),
            ("table", "journal_event"),
            ("table", "journal_change"),
            ("table", "journal_value"),
            ("index", "journal_value_by_value"),
            ("index", "journal_event_by_value"),
            ("trigger", "journal_value_dropped"),
            ("index", "sink_ioc_by_kind_value"),
        ] {
            let found: bool = state
                .conn
                .query_row(
                    "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type=?1 AND name=?2)",
                    [kind, name],
                    |r| r.get(0),
                )
                .expect("sqlite_master");
            assert!(found, "{kind} {name} after migrating from version 1");
        }
        // Version 5's indexes that version 7 dropped are gone.
        for name in ["sink_ioc_by_value", "sink_ioc_by_status_kind"] {
            let found: bool = state
                .conn
                .query_row(
                    "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type='index' AND name=?1)",
                    [name],
                    |r| r.get(0),
                )
                .expect("sqlite_master");
            assert!(!found, "index {name} dropped by version 7");
        }
        assert_eq!(
            state.checkpoint("opencti").expect("read").as_deref(),
            Some("7-0")
        );
        let intents = state.pending_intents().expect("intents");
        assert_eq!(intents.len(), 1);
        assert_eq!(intents[0].1.remote_id.as_deref(), Some("s1-uuid-1"));
        let mut state = state;
        let tx = state.tx().expect("tx");
        let entry = tx
            .sink_entry("sentinelone", IocKind::Domain, "a.example")
            .expect("read")
            .expect("entry kept");
        assert_eq!(entry.remote_id.as_deref(), Some("s1-uuid-1"));
        drop(tx);
        let expired = state
            .expired_indicators(chrono::Utc::now().timestamp_millis(), 10)
            .expect("expiry");
        assert_eq!(expired.len(), 1, "the migration filled the expiry index");
        // Opening again changes nothing.
        drop(state);
        let again = State::open(dir.path()).expect("reopen");
        assert_eq!(
            again.schema_version().expect("version"),
            Some(SCHEMA_VERSION)
        );
    }
}

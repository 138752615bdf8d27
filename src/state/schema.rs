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
}

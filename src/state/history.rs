//! The run history behind `iocsync runs`: the last [`RUNS_KEPT`] run summaries.

use super::{RunRecord, State, StateError, RUNS_KEPT};
use rusqlite::params;

impl State {
    /// Stores a run summary, keeps the last [`RUNS_KEPT`], and returns the run's id.
    pub fn record_run(
        &self,
        source: &str,
        started_ms: i64,
        ended_ms: i64,
        stats: &serde_json::Value,
    ) -> Result<i64, StateError> {
        self.conn
            .execute(
                "INSERT INTO run(source, started, ended, stats) VALUES(?1, ?2, ?3, ?4)",
                params![source, started_ms, ended_ms, stats.to_string()],
            )
            .map_err(self.err())?;
        let id = self.conn.last_insert_rowid();
        self.conn
            .execute(
                "DELETE FROM run WHERE id NOT IN (SELECT id FROM run ORDER BY id DESC LIMIT ?1)",
                [RUNS_KEPT],
            )
            .map_err(self.err())?;
        Ok(id)
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
}

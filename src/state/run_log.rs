//! The log lines of each recorded run (the last [`crate::pipeline::RUN_LOG_LINES`] of it), kept as
//! long as the run is in the history.

use super::{State, StateError};
use crate::logring::{level_name, LogLine};
use rusqlite::params;

impl State {
    /// Stores the log lines of run `run_id` and drops those of runs no longer in the history.
    pub fn record_run_log(&self, run_id: i64, lines: &[LogLine]) -> Result<(), StateError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "INSERT OR REPLACE INTO run_log(run_id, seq, at, level, target, message)
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(self.err())?;
        for line in lines {
            stmt.execute(params![
                run_id,
                line.seq as i64,
                line.at.timestamp_micros(),
                line.level,
                line.target,
                line.message
            ])
            .map_err(self.err())?;
        }
        self.conn
            .execute(
                "DELETE FROM run_log WHERE run_id NOT IN (SELECT id FROM run)",
                [],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    /// The log lines stored with run `run_id`, oldest first (empty for an unknown run).
    pub fn run_log(&self, run_id: i64) -> Result<Vec<LogLine>, StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seq, at, level, target, message FROM run_log WHERE run_id = ?1 ORDER BY seq",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([run_id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })
            .map_err(self.err())?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, at, level, target, message) = row.map_err(self.err())?;
            out.push(LogLine {
                seq: seq.max(0) as u64,
                at: chrono::DateTime::from_timestamp_micros(at).unwrap_or_default(),
                level: level_name(&level),
                target,
                message,
            });
        }
        Ok(out)
    }
}

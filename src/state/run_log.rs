//! The log lines of each recorded run (the last [`crate::pipeline::RUN_LOG_LINES`] of it), kept as
//! long as the run is in the history.

use super::{State, StateError};
use crate::logring::{level_name, LogLine};
use rusqlite::params;

impl State {
    /// Stores the log lines of run `run_id` and drops those of runs no longer in the history.
    pub fn record_run_log(&self, run_id: i64, lines: &[LogLine]) -> Result<(), StateError> {
        // One transaction: a commit per line would be a sync to disk per line.
        let tx = self.conn.unchecked_transaction().map_err(self.err())?;
        let mut stmt = tx
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
        drop(stmt);
        tx.execute(
            "DELETE FROM run_log WHERE run_id NOT IN (SELECT id FROM run)",
            [],
        )
        .map_err(self.err())?;
        tx.commit().map_err(self.err())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::RUNS_KEPT;

    fn line(seq: u64, message: &str) -> LogLine {
        LogLine {
            seq,
            at: chrono::DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap_or_default(),
            level: "WARN",
            target: "iocsync::pipeline".into(),
            message: message.into(),
        }
    }

    #[test]
    fn run_logs_round_trip_and_leave_with_their_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = State::open(dir.path()).expect("state");
        let stats = serde_json::json!({});
        let first = state.record_run("file", 1, 2, &stats).expect("run");
        let lines = vec![line(7, "a b=1"), line(8, "run finished")];
        state.record_run_log(first, &lines).expect("log");
        assert_eq!(state.run_log(first).expect("read"), lines);
        // Once the run leaves the history, so does its log.
        for _ in 0..RUNS_KEPT {
            let id = state.record_run("file", 1, 2, &stats).expect("run");
            state.record_run_log(id, &[line(9, "x")]).expect("log");
        }
        assert!(state.runs().expect("runs").iter().all(|r| r.id != first));
        assert!(state.run_log(first).expect("read").is_empty());
        let rows: i64 = state
            .conn
            .query_row("SELECT COUNT(*) FROM run_log", [], |r| r.get(0))
            .expect("count");
        assert_eq!(rows, RUNS_KEPT);
    }
}

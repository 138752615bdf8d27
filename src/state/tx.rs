//! A state transaction: the typed reads and writes of planning and outcome recording.

use super::{
    expiry::expiry_ms, now_ms, parse_json, EntryStatus, SinkEntry, StateError, StoredIndicator,
};
use crate::ioc::{Ioc, IocKind};
use crate::model::{Change, IocMeta};
use rusqlite::{params, CachedStatement, Connection, OptionalExtension};
use std::cell::RefCell;
use std::path::PathBuf;

/// A state transaction with the typed operations the planner and the outcome recorder need. Rolled
/// back when dropped without [`Tx::commit`].
pub struct Tx<'a> {
    pub(super) conn: &'a Connection,
    /// The statements this transaction has used, held until it ends: a planning transaction runs
    /// the same handful thousands of times, and taking each from the connection's cache every time
    /// (hashing its SQL twice) cost more than binding it.
    pub(super) statements: RefCell<Vec<(usize, CachedStatement<'a>)>>,
    pub(super) path: PathBuf,
    pub(super) open: bool,
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
            // Nothing to report to: the caller already has the error that made it give up.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
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
    pub(super) fn exec<P: rusqlite::Params>(
        &self,
        sql: &'static str,
        params: P,
    ) -> Result<usize, StateError> {
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
        let iocs = super::encode("an indicator's IOCs", iocs)?;
        let meta = super::encode("an indicator's metadata", meta)?;
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
        let meta = super::encode("a sink entry's metadata", &entry.meta)?;
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
        let meta = meta
            .map(|m| super::encode("a sink entry's metadata", m))
            .transpose()?;
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
        let json = super::encode("an intent", &change)?;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ChangeOp;
    use crate::state::State;

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

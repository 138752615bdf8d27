//! One sink's part of the state, read page by page for `iocsync reconcile` (never the whole table
//! at once: a sink may hold millions of values).

use super::{parse_json, EntryStatus, SinkEntry, State, StateError};
use crate::ioc::{Ioc, IocKind};
use rusqlite::params;

impl State {
    /// Up to `limit` entries of `sink` after the (kind, value) key `after`, in key order.
    pub fn sink_entries_page(
        &self,
        sink: &str,
        after: Option<&(String, String)>,
        limit: usize,
    ) -> Result<Vec<SinkEntry>, StateError> {
        let (kind, value) = after
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .unwrap_or(("", ""));
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT ioc_kind, value, indicator_id, remote_id, status, meta FROM sink_ioc
                 WHERE sink=?1 AND (kind, value) > (?2, ?3) ORDER BY kind, value LIMIT ?4",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map(
                params![sink, kind, value, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                    ))
                },
            )
            .map_err(self.err())?;
        let mut out = Vec::with_capacity(limit.min(4096));
        for row in rows {
            let (ioc_kind, value, indicator_id, remote_id, status, meta) =
                row.map_err(self.err())?;
            let corrupt = |what: &'static str, message: String| StateError::Corrupt {
                path: self.path.clone(),
                what,
                message,
            };
            out.push(SinkEntry {
                ioc: Ioc {
                    kind: IocKind::from_name(&ioc_kind)
                        .ok_or_else(|| corrupt("sink entry kind", ioc_kind.clone()))?,
                    value,
                },
                indicator_id,
                remote_id,
                status: EntryStatus::parse(&status)
                    .ok_or_else(|| corrupt("sink entry status", status.clone()))?,
                meta: parse_json(&self.path, "sink entry meta", &meta)?,
            });
        }
        Ok(out)
    }

    /// Calls `f` for every entry of `sink`, in (kind, value) order, a page at a time.
    pub fn for_each_sink_entry(
        &self,
        sink: &str,
        mut f: impl FnMut(SinkEntry),
    ) -> Result<(), StateError> {
        const PAGE: usize = 5000;
        let mut after: Option<(String, String)> = None;
        loop {
            let page = self.sink_entries_page(sink, after.as_ref(), PAGE)?;
            let full = page.len() == PAGE;
            if let Some(last) = page.last() {
                after = Some((
                    last.ioc.kind.sink_kind().as_str().to_string(),
                    last.ioc.value.clone(),
                ));
            }
            page.into_iter().for_each(&mut f);
            if !full {
                return Ok(());
            }
        }
    }

    /// Removes a key/value slot; true when it was there.
    pub fn kv_remove(&self, key: &str) -> Result<bool, StateError> {
        self.conn
            .execute("DELETE FROM kv WHERE key=?1", [key])
            .map(|n| n > 0)
            .map_err(self.err())
    }

    /// How many intents are outstanding for `sink`.
    pub fn intent_count(&self, sink: &str) -> Result<i64, StateError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM intent WHERE sink=?1", [sink], |r| {
                r.get(0)
            })
            .map_err(self.err())
    }
}

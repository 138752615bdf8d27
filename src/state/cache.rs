//! Listings cached for the command line (`iocsync s1 list` offline), and re-pointing a sink's
//! entries when an IOC was replaced under a new remote id.

use super::{now_ms, State, StateError};
use rusqlite::params;

impl State {
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
}

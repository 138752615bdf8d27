//! The expiry index: when each indicator that holds IOCs stops being valid, so the pipeline can
//! remove what it held when it expires.

use super::{parse_json, State, StateError, StoredIndicator};
use crate::model::IocMeta;
use rusqlite::params;

/// When an indicator stops being valid, in epoch ms (`None`: open-ended or unreadable).
pub(super) fn expiry_ms(meta: &IocMeta) -> Option<i64> {
    meta.valid_until
        .as_deref()
        .and_then(crate::model::parse_time)
        .map(|t| t.timestamp_millis())
}

impl State {
    /// Fills the expiry index from the metadata the indicators hold (the migration to version 2).
    pub(super) fn backfill_expiry(&self) -> Result<(), StateError> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ioc::{Ioc, IocKind};

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

        // A database of version 1 (before the table): reopening migrates it and fills the index.
        state
            .conn
            .execute_batch("DROP TABLE expiry; UPDATE meta SET value='1' WHERE key='schema';")
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
        crate::model::parse_time(t)
            .expect("time")
            .timestamp_millis()
    }
}

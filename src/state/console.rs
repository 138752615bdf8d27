//! The web console's read queries: the IOC search over the sinks' id map, the live distribution
//! by IOC type, and the index they need (migrations `migrate_5_console_indexes`, then
//! `migrate_7_leaner_console_indexes`).

use super::{State, StateError};
use crate::ioc::IocKind;
use rusqlite::types::Value;

/// What to look for in `/iocs`; every given field narrows the result.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct IocSearch {
    /// Values starting with this.
    pub value: Option<String>,
    /// The IOC type (`ipv4`, `sha256`, ...).
    pub kind: Option<String>,
    /// Entries of the values this indicator holds now.
    pub indicator: Option<String>,
    /// Entries of this sink.
    pub sink: Option<String>,
    /// Page number, from 0.
    pub page: Option<u32>,
}

/// One value in one sink.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IocRow {
    /// Sink name.
    pub sink: String,
    /// IOC type.
    pub kind: String,
    /// The value.
    pub value: String,
    /// The indicator the entry was created for.
    pub indicator_id: String,
    /// Every indicator that holds the value.
    pub holders: Vec<String>,
    /// The sink's id.
    pub remote_id: Option<String>,
    /// live, pending_create, ... rejected.
    pub status: String,
}

/// What the state records for one value in one sink (the console's SentinelOne view).
#[derive(Debug, Clone, serde::Serialize)]
pub struct HeldEntry {
    /// The indicator the entry was created for.
    pub indicator_id: String,
    /// Every indicator that holds the value now (at most 20).
    pub holders: Vec<String>,
    /// The sink's id as recorded.
    pub remote_id: Option<String>,
    /// live, pending_create, ... rejected.
    pub status: String,
}

/// Rows per `/iocs` page.
pub const PAGE_SIZE: u32 = 50;

fn blank(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl State {
    /// Version 7: of version 5's indexes only (ioc_kind, value) stays. The other two cost a write
    /// for every planned value and every recorded outcome (+8 % instructions on the S1 benchmark)
    /// for searches that (ioc_kind, value) serves too, and for the dashboard's counts, which a
    /// background task makes.
    pub(super) fn migrate_7_leaner_console_indexes(&self) -> Result<(), StateError> {
        self.conn
            .execute_batch(
                "DROP INDEX IF EXISTS sink_ioc_by_value; DROP INDEX IF EXISTS sink_ioc_by_status_kind;",
            )
            .map_err(self.err())
    }

    /// Version 5: indexes for the console's IOC search and type distribution.
    pub(super) fn migrate_5_console_indexes(&self) -> Result<(), StateError> {
        self.conn
            .execute_batch(
                "CREATE INDEX IF NOT EXISTS sink_ioc_by_value ON sink_ioc(value);
                 CREATE INDEX IF NOT EXISTS sink_ioc_by_status_kind ON sink_ioc(status, ioc_kind);
                 CREATE INDEX IF NOT EXISTS sink_ioc_by_kind_value ON sink_ioc(ioc_kind, value);",
            )
            .map_err(self.err())
    }

    /// Live entries (all sinks) by IOC type, largest first.
    pub fn live_by_kind(&self) -> Result<Vec<(String, i64)>, StateError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT ioc_kind, COUNT(*) FROM sink_ioc WHERE status IN ('live','pending_update')
                 GROUP BY ioc_kind ORDER BY 2 DESC, 1",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        Ok(rows)
    }

    /// One page of entries matching `q`, ordered by value, each with its holders.
    pub fn search_iocs(&self, q: &IocSearch) -> Result<Vec<IocRow>, StateError> {
        // The one index of this search is (ioc_kind, value): each IOC type is read in value order
        // from it, at most as far as the page reaches, and the types are merged. An index on value
        // alone would serve a search without a type too, but costs a write for every planned value
        // (schema v7 dropped it; see docs/benchmarks.md).
        let kinds: Vec<String> = match blank(&q.kind) {
            Some(kind) => vec![kind.to_string()],
            None => IocKind::ALL
                .iter()
                .map(|k| k.as_str().to_string())
                .collect(),
        };
        let mut filter = String::new();
        let mut filter_args: Vec<Value> = Vec::new();
        // An indicator holds a handful of values: they come from its own row, and the index finds
        // their entries (the state keeps no index by indicator: it would cost a write for every
        // planned value).
        if let Some(indicator) = blank(&q.indicator) {
            let values: Vec<String> = self
                .desired_iocs(indicator)?
                .unwrap_or_default()
                .into_iter()
                .map(|ioc| ioc.value)
                .collect();
            if values.is_empty() {
                return Ok(Vec::new());
            }
            filter.push_str(" AND value IN (");
            filter.push_str(&vec!["?"; values.len()].join(", "));
            filter.push(')');
            filter_args.extend(values.into_iter().map(Value::Text));
        }
        if let Some(prefix) = blank(&q.value) {
            filter.push_str(" AND value >= ? AND value < ?");
            filter_args.push(Value::Text(prefix.to_string()));
            filter_args.push(Value::Text(format!("{prefix}\u{10FFFF}")));
        }
        if let Some(sink) = blank(&q.sink) {
            filter.push_str(" AND sink = ?");
            filter_args.push(Value::Text(sink.to_string()));
        }
        let offset = i64::from(q.page.unwrap_or(0)) * i64::from(PAGE_SIZE);
        let reach = offset + i64::from(PAGE_SIZE);
        let mut args: Vec<Value> = Vec::new();
        let members: Vec<String> = kinds
            .into_iter()
            .map(|kind| {
                args.push(Value::Text(kind));
                args.extend(filter_args.iter().cloned());
                args.push(Value::Integer(reach));
                format!(
                    "SELECT * FROM (SELECT sink, kind, value, indicator_id, remote_id, status
                     FROM sink_ioc WHERE ioc_kind = ?{filter} ORDER BY value, sink LIMIT ?)"
                )
            })
            .collect();
        let mut sql = members.join(" UNION ALL ");
        sql.push_str(" ORDER BY value, sink LIMIT ? OFFSET ?");
        args.push(Value::Integer(i64::from(PAGE_SIZE)));
        args.push(Value::Integer(offset));
        let mut stmt = self.conn.prepare(&sql).map_err(self.err())?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), |r| {
                Ok(IocRow {
                    sink: r.get(0)?,
                    kind: r.get(1)?,
                    value: r.get(2)?,
                    indicator_id: r.get(3)?,
                    holders: Vec::new(),
                    remote_id: r.get(4)?,
                    status: r.get(5)?,
                })
            })
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        let mut holders = self
            .conn
            .prepare_cached(
                "SELECT indicator_id FROM holder WHERE kind = ?1 AND value = ?2 LIMIT 20",
            )
            .map_err(self.err())?;
        let mut out = rows;
        for row in &mut out {
            row.holders = holders
                .query_map([&row.kind, &row.value], |r| r.get(0))
                .map_err(self.err())?
                .collect::<Result<Vec<String>, _>>()
                .map_err(self.err())?;
        }
        Ok(out)
    }

    /// The entry of (`kind`, `value`) in `sink` with its holders, by the primary keys (`kind` as
    /// the state keys it: `domain` for host names too).
    pub fn held_entry(
        &self,
        sink: &str,
        kind: &str,
        value: &str,
    ) -> Result<Option<HeldEntry>, StateError> {
        use rusqlite::OptionalExtension;
        let row = self
            .conn
            .prepare_cached(
                "SELECT indicator_id, remote_id, status FROM sink_ioc
                 WHERE sink = ?1 AND kind = ?2 AND value = ?3",
            )
            .map_err(self.err())?
            .query_row([sink, kind, value], |r| {
                Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
            .map_err(self.err())?;
        let Some((indicator_id, remote_id, status)) = row else {
            return Ok(None);
        };
        let holders = self
            .conn
            .prepare_cached(
                "SELECT indicator_id FROM holder WHERE kind = ?1 AND value = ?2 LIMIT 20",
            )
            .map_err(self.err())?
            .query_map([kind, value], |r| r.get(0))
            .map_err(self.err())?
            .collect::<Result<Vec<String>, _>>()
            .map_err(self.err())?;
        Ok(Some(HeldEntry {
            indicator_id,
            holders,
            remote_id,
            status,
        }))
    }

    /// Dead-lettered (rejected) entries over all sinks.
    pub fn rejected_count(&self) -> Result<i64, StateError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM sink_ioc WHERE status = 'rejected'",
                [],
                |r| r.get(0),
            )
            .map_err(self.err())
    }

    /// Test and benchmark support: inserts `n` live entries for `sink` directly (one transaction).
    #[doc(hidden)]
    pub fn bulk_insert_live(&self, sink: &str, n: usize) -> Result<(), StateError> {
        let kinds = ["ipv4", "domain", "sha256", "url", "md5"];
        self.conn.execute_batch("BEGIN").map_err(self.err())?;
        {
            let mut ins = self
                .conn
                .prepare("INSERT OR IGNORE INTO sink_ioc(sink, kind, value, ioc_kind, indicator_id, remote_id, status, meta, updated_at) VALUES(?1, ?2, ?3, ?2, ?4, ?5, 'live', '{}', 0)")
                .map_err(self.err())?;
            let mut hold = self
                .conn
                .prepare(
                    "INSERT OR IGNORE INTO holder(kind, value, indicator_id) VALUES(?1, ?2, ?3)",
                )
                .map_err(self.err())?;
            let mut desire = self
                .conn
                .prepare(
                    "INSERT OR REPLACE INTO indicator(id, iocs, meta, version, updated_at) VALUES(?1, ?2, '{}', NULL, 0)",
                )
                .map_err(self.err())?;
            let mut held: Vec<serde_json::Value> = Vec::new();
            for i in 0..n {
                let kind = kinds[i % kinds.len()];
                let value = format!("v{i:08}.{kind}");
                let ind = format!("indicator--{:08}", i / 3);
                ins.execute(rusqlite::params![sink, kind, value, ind, format!("r{i}")])
                    .map_err(self.err())?;
                hold.execute(rusqlite::params![kind, value, ind])
                    .map_err(self.err())?;
                held.push(serde_json::json!({ "type": kind, "value": value }));
                if i % 3 == 2 || i + 1 == n {
                    let iocs = super::encode("an indicator's IOCs", &held)?;
                    desire
                        .execute(rusqlite::params![ind, iocs])
                        .map_err(self.err())?;
                    held.clear();
                }
            }
        }
        self.conn.execute_batch("COMMIT").map_err(self.err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_by_prefix_kind_indicator_and_sink() {
        let dir = tempfile::tempdir().expect("tempdir");
        let st = State::open(dir.path()).expect("open");
        st.bulk_insert_live("jsonl", 100).expect("insert");
        let q = |value: Option<&str>, kind: Option<&str>, indicator: Option<&str>| IocSearch {
            value: value.map(String::from),
            kind: kind.map(String::from),
            indicator: indicator.map(String::from),
            ..IocSearch::default()
        };
        let rows = st
            .search_iocs(&q(Some("v0000001"), None, None))
            .expect("search");
        assert_eq!(rows.len(), 10);
        assert_eq!(rows[0].holders, vec!["indicator--00000003".to_string()]);
        let rows = st.search_iocs(&q(None, Some("md5"), None)).expect("search");
        assert_eq!(rows.len(), 20);
        let rows = st
            .search_iocs(&q(None, None, Some("indicator--00000000")))
            .expect("search");
        assert_eq!(rows.len(), 3);
        let by_kind = st.live_by_kind().expect("kinds");
        assert_eq!(by_kind.iter().map(|(_, n)| n).sum::<i64>(), 100);
        let page1 = IocSearch {
            page: Some(1),
            ..IocSearch::default()
        };
        assert_eq!(st.search_iocs(&page1).expect("p").len(), 50);
        let page2 = IocSearch {
            page: Some(2),
            ..IocSearch::default()
        };
        assert!(st.search_iocs(&page2).expect("p").is_empty());
        // The types are merged in value order across pages, each entry once.
        let mut all: Vec<String> = Vec::new();
        for page in 0..2 {
            let q = IocSearch {
                page: Some(page),
                ..IocSearch::default()
            };
            all.extend(st.search_iocs(&q).expect("p").into_iter().map(|r| r.value));
        }
        let mut sorted = all.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(all, sorted);
        assert_eq!(all.len(), 100);
    }
}

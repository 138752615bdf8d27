//! The journal's value index: which journaled events mention a value, so `iocsync explain <value>`
//! is a few index lookups instead of a scan of the journal. An event's keys are its IOCs, the
//! values of the changes planned with it (a value the indicator stopped holding) and, for a skipped
//! indicator, the literals its pattern compares with (the only place its value is), ASCII
//! lower-case (the search ignores case as the journal's `LIKE` scan did). The first key is a column
//! of the event itself (`value_key`, indexed): almost every event has one key, and this costs one
//! index entry in the insert the journal makes anyway. Further keys are rows of `journal_value`,
//! which go with their event (a trigger), by count or by age.
//!
//! Also the other by-value questions of `explain` (who holds a value, what each sink holds of
//! it) and reconcile's question to the journal: which values were ever created in a sink.

use super::{SinkValue, State, StateError, Tx};
use crate::ioc::{Ioc, IocKind};
use rusqlite::params;

impl State {
    /// Version 6: the value index of the journal (the events already journaled are indexed in
    /// `journal_value` by their IOCs and their patterns' literals) and the applied version a
    /// stale event lost to.
    pub(super) fn migrate_6_journal_values(&self) -> Result<(), StateError> {
        // Like every migration, safe to run on a database that already has part of it.
        for column in ["stale_of", "value_key"] {
            let exists: bool = self
                .conn
                .query_row(
                    "SELECT EXISTS(SELECT 1 FROM pragma_table_info('journal_event') WHERE name=?1)",
                    [column],
                    |r| r.get(0),
                )
                .map_err(self.err())?;
            if !exists {
                self.conn
                    .execute_batch(&format!(
                        "ALTER TABLE journal_event ADD COLUMN {column} TEXT;"
                    ))
                    .map_err(self.err())?;
            }
        }
        self.conn
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS journal_value(event_id INTEGER NOT NULL, value TEXT NOT NULL,
                   PRIMARY KEY(event_id, value)) WITHOUT ROWID;
                 CREATE INDEX IF NOT EXISTS journal_value_by_value ON journal_value(value);
                 CREATE TRIGGER IF NOT EXISTS journal_value_dropped AFTER DELETE ON journal_event
                   BEGIN DELETE FROM journal_value WHERE event_id=old.id; END;
                 CREATE INDEX IF NOT EXISTS journal_event_by_value ON journal_event(value_key)
                   WHERE value_key IS NOT NULL;
                 INSERT OR IGNORE INTO journal_value(event_id, value)
                   SELECT e.id, lower(json_extract(j.value, '$.value'))
                   FROM journal_event e, json_each(e.iocs) j WHERE e.iocs IS NOT NULL;",
            )
            .map_err(self.err())?;
        let mut stmt = self
            .conn
            .prepare("SELECT id, pattern FROM journal_event WHERE pattern IS NOT NULL")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        let mut insert = self
            .conn
            .prepare("INSERT OR IGNORE INTO journal_value(event_id, value) VALUES(?1, ?2)")
            .map_err(self.err())?;
        for (id, pattern) in rows {
            for key in pattern_keys(&pattern) {
                insert.execute(params![id, key]).map_err(self.err())?;
            }
        }
        Ok(())
    }

    /// Every indicator that ever carried `value` as far as the state knows: current holders, the
    /// sinks' entries, and the journaled events that mention it (IOCs, planned changes, skipped
    /// patterns). Index lookups only. Sorted.
    pub fn indicators_with_value(&self, value: &str) -> Result<Vec<String>, StateError> {
        // The holder key and the sinks' (ioc_kind, value) index start with the kind: naming every
        // kind keeps each an index lookup.
        let kinds = kinds_sql();
        let sql = format!(
            "SELECT indicator_id FROM holder WHERE kind IN ({kinds}) AND value=?1
             UNION SELECT indicator_id FROM sink_ioc WHERE ioc_kind IN ({kinds}) AND value=?1
             UNION SELECT indicator_id FROM journal_event WHERE value_key=?2
             UNION SELECT e.indicator_id FROM journal_value v JOIN journal_event e ON e.id=v.event_id
               WHERE v.value=?2
             ORDER BY 1",
        );
        let mut stmt = self.conn.prepare(&sql).map_err(self.err())?;
        let rows = stmt
            .query_map(params![value, value.to_ascii_lowercase()], |r| r.get(0))
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// The indicators currently holding (kind-insensitively) `value`.
    pub fn holders_of(&self, value: &str) -> Result<Vec<(String, String)>, StateError> {
        let sql = format!(
            "SELECT kind, indicator_id FROM holder WHERE kind IN ({}) AND value=?1
             ORDER BY kind, indicator_id",
            kinds_sql()
        );
        let mut stmt = self.conn.prepare(&sql).map_err(self.err())?;
        let rows = stmt
            .query_map([value], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// What every sink holds for `value`, with the outstanding intent if any.
    pub fn sink_values(&self, value: &str) -> Result<Vec<SinkValue>, StateError> {
        let sql = format!(
            "SELECT s.sink, s.ioc_kind, s.value, s.indicator_id, s.remote_id, s.status,
                    (SELECT MAX(i.id) FROM intent i WHERE i.sink=s.sink AND i.kind=s.kind AND i.value=s.value)
             FROM sink_ioc s WHERE s.ioc_kind IN ({}) AND s.value=?1 ORDER BY s.sink, s.kind",
            kinds_sql()
        );
        let mut stmt = self.conn.prepare(&sql).map_err(self.err())?;
        let rows = stmt
            .query_map([value], |r| {
                Ok(SinkValue {
                    sink: r.get(0)?,
                    kind: r.get(1)?,
                    value: r.get(2)?,
                    indicator_id: r.get(3)?,
                    remote_id: r.get(4)?,
                    status: r.get(5)?,
                    intent_id: r.get(6)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// The values the journal records as created in `sink` (applied), as (kind, value), sorted:
    /// what iocsync pushed there within the journal's retention, desired now or not.
    pub fn values_created_in(&self, sink: &str) -> Result<Vec<(IocKind, String)>, StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT DISTINCT kind, value FROM journal_change
                 WHERE sink=?1 AND op='create' AND outcome='applied' ORDER BY kind, value",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([sink], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(self.err())?;
        let mut out = Vec::new();
        for row in rows {
            let (kind, value) = row.map_err(self.err())?;
            match IocKind::from_name(&kind) {
                Some(kind) => out.push((kind, value)),
                None => tracing::warn!(
                    sink,
                    kind,
                    value,
                    "journal: a change of an unknown IOC type is skipped"
                ),
            }
        }
        Ok(out)
    }
}

impl Tx<'_> {
    /// Indexes the event just inserted under each of `values` beyond its `value_key` (already
    /// keys: see [`keys_of`]).
    pub(super) fn index_event_values(
        &self,
        event_id: i64,
        values: &[String],
    ) -> Result<(), StateError> {
        for key in values {
            self.exec(
                "INSERT OR IGNORE INTO journal_value(event_id, value) VALUES(?1, ?2)",
                params![event_id, key],
            )?;
        }
        Ok(())
    }
}

/// The index keys of an event: its IOCs, the values of its changes and, for a skipped
/// indicator, its pattern's literals; lower-cased, without repeats.
pub(super) fn keys_of<'v>(
    iocs: &'v [Ioc],
    change_values: impl Iterator<Item = &'v str>,
    skipped_pattern: Option<&str>,
) -> Vec<String> {
    let mut keys: Vec<String> = iocs
        .iter()
        .map(|i| i.value.as_str())
        .chain(change_values)
        .map(str::to_ascii_lowercase)
        .collect();
    if let Some(p) = skipped_pattern {
        keys.extend(pattern_keys(p));
    }
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The keys of a skipped pattern: each literal it compares with, as written and as iocsync would
/// normalise it (the form `explain` looks up).
fn pattern_keys(pattern: &str) -> Vec<String> {
    let mut keys = Vec::new();
    for literal in literals(pattern) {
        if let Ok(ioc) = Ioc::detect(&literal) {
            keys.push(ioc.value.to_ascii_lowercase());
        }
        keys.push(literal.to_ascii_lowercase());
    }
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The quoted string literals of a STIX pattern, unescaped, except those of an object path
/// (`hashes.'SHA-256'`): the values it compares with.
fn literals(pattern: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = pattern.chars();
    let mut previous: Option<char> = None;
    while let Some(c) = chars.next() {
        if c != '\'' {
            if !c.is_whitespace() {
                previous = Some(c);
            }
            continue;
        }
        let mut literal = String::new();
        while let Some(d) = chars.next() {
            match d {
                '\\' => literal.extend(chars.next()),
                '\'' => break,
                _ => literal.push(d),
            }
        }
        if previous != Some('.') && !literal.trim().is_empty() {
            out.push(literal.trim().to_string());
        }
        previous = Some('\'');
    }
    out
}

/// Every IOC type as an SQL list (`'sha256','sha1',…`): with it, a lookup by value alone goes
/// through an index whose key starts with the type.
fn kinds_sql() -> String {
    IocKind::ALL
        .iter()
        .map(|k| format!("'{}'", k.as_str()))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_literals_of_a_pattern_are_its_compared_values_not_its_paths() {
        assert_eq!(
            literals("[file:hashes.'SHA-256' = 'AB\\'c'] AND [ipv4-addr:value = '10.0.0.0/8']"),
            ["AB'c", "10.0.0.0/8"]
        );
        assert_eq!(
            literals("[domain-name:value IN ('a.example', 'b.example')]"),
            ["a.example", "b.example"]
        );
        let keys = pattern_keys("[file:hashes.MD5 = 'D41D8CD98F00B204E9800998ECF8427E']");
        assert_eq!(keys, ["d41d8cd98f00b204e9800998ecf8427e"]);
    }
}

//! Prints IOCs for `iocsync s1`: an 80-column table for people, JSON and CSV for scripts.
//!
//! JSON is an array of S1's IOC objects (every field S1 sent, absent fields left out); CSV has one
//! header row with S1's field names and RFC 4180 quoting. Both carry values verbatim. The table
//! replaces control characters (IOC names come from threat feeds and could carry terminal escapes).

use crate::sinks::sentinelone::RemoteIoc;
use serde_json::Value;
use std::io::{self, Write};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns that fit 80 characters: uuid, type, valid-until date, value.
    #[default]
    Table,
    /// A JSON array of S1's IOC objects.
    Json,
    /// CSV with a header row.
    Csv,
}

/// The table's total width.
pub const TABLE_WIDTH: usize = 80;
const UUID_W: usize = 32;
const TYPE_W: usize = 6;
const UNTIL_W: usize = 10;
const VALUE_W: usize = TABLE_WIDTH - UUID_W - TYPE_W - UNTIL_W - 3;

/// CSV columns, in S1's names.
pub const CSV_COLUMNS: [&str; 14] = [
    "uuid",
    "type",
    "value",
    "name",
    "description",
    "source",
    "externalId",
    "creator",
    "originalRiskScore",
    "validUntil",
    "creationTime",
    "updatedAt",
    "scope",
    "scopeId",
];

/// An IOC as a JSON object without null fields.
pub fn to_json(ioc: &RemoteIoc) -> Value {
    match serde_json::to_value(ioc) {
        Ok(Value::Object(mut m)) => {
            m.retain(|_, v| !v.is_null());
            Value::Object(m)
        }
        Ok(other) => other,
        Err(_) => Value::Null,
    }
}

/// Printable text for a table cell: control characters become `?`, cut to `width` with `…`.
fn cell(s: &str, width: usize) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if clean.chars().count() <= width {
        return clean;
    }
    let mut out: String = clean.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The table rows (header first), without the count line.
pub fn table_lines(items: &[RemoteIoc]) -> Vec<String> {
    let mut lines = vec![format!(
        "{:<UUID_W$} {:<TYPE_W$} {:<UNTIL_W$} {}",
        "UUID", "TYPE", "UNTIL", "VALUE"
    )];
    for ioc in items {
        let until = ioc
            .valid_until
            .as_deref()
            .map(|u| u.chars().take(UNTIL_W).collect::<String>())
            .unwrap_or_else(|| "-".into());
        let line = format!(
            "{:<UUID_W$} {:<TYPE_W$} {:<UNTIL_W$} {}",
            cell(ioc.uuid.as_deref().unwrap_or("-"), UUID_W),
            cell(ioc.kind.as_deref().unwrap_or("-"), TYPE_W),
            cell(&until, UNTIL_W),
            cell(ioc.value.as_deref().unwrap_or(""), VALUE_W),
        );
        lines.push(line.trim_end().to_string());
    }
    lines
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv_value(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Writes the IOCs in `format`. The table ends with a count line (`note` appended, e.g. S1's
/// total); JSON and CSV carry nothing but the data.
pub fn write(
    out: &mut dyn Write,
    format: Format,
    items: &[RemoteIoc],
    note: Option<&str>,
) -> io::Result<()> {
    match format {
        Format::Table => {
            if items.is_empty() {
                writeln!(out, "no IOCs match{}", note.unwrap_or(""))?;
                return Ok(());
            }
            for line in table_lines(items) {
                writeln!(out, "{line}")?;
            }
            let plural = if items.len() == 1 { "" } else { "s" };
            writeln!(out, "{} IOC{plural}{}", items.len(), note.unwrap_or(""))
        }
        Format::Json => {
            let list: Vec<Value> = items.iter().map(to_json).collect();
            let text = serde_json::to_string_pretty(&list).map_err(io::Error::other)?;
            writeln!(out, "{text}")
        }
        Format::Csv => {
            writeln!(out, "{}", CSV_COLUMNS.join(","))?;
            for ioc in items {
                let obj = to_json(ioc);
                let row: Vec<String> = CSV_COLUMNS
                    .iter()
                    .map(|c| csv_field(&csv_value(obj.get(*c))))
                    .collect();
                writeln!(out, "{}", row.join(","))?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RemoteIoc {
        RemoteIoc {
            uuid: Some("0123456789abcdef0123456789abcdef".into()),
            kind: Some("SHA256".into()),
            value: Some("ab".repeat(32)),
            name: Some("a, \"quoted\"\nname".into()),
            valid_until: Some("2030-01-02T03:04:05Z".into()),
            original_risk_score: Some(90),
            ..Default::default()
        }
    }

    #[test]
    fn table_fits_80_columns_and_strips_control_characters() {
        let mut evil = sample();
        evil.value = Some("x\u{1b}[31mred".into());
        let lines = table_lines(&[sample(), evil]);
        for l in &lines {
            assert!(l.chars().count() <= TABLE_WIDTH, "{l:?}");
        }
        assert!(lines[1].ends_with('…') && lines[1].contains("2030-01-02"));
        assert!(lines[2].contains("x?[31mred"));
    }

    #[test]
    fn csv_quotes_and_json_drops_nulls() {
        let mut buf = Vec::new();
        write(&mut buf, Format::Csv, &[sample()], None).expect("csv");
        let text = String::from_utf8(buf).expect("utf8");
        assert!(text.starts_with("uuid,type,value,name,"));
        assert!(text.contains("\"a, \"\"quoted\"\"\nname\""), "{text}");
        assert!(text.contains(",90,2030-01-02T03:04:05Z,"), "{text}");
        let json = to_json(&sample());
        assert!(json.get("description").is_none());
        assert_eq!(json["originalRiskScore"], 90);
    }
}

//! Reading the Zeek intel file for reconcile. The file is what Zeek reads, so it is compared, not
//! the sink's sidecar (which the file is generated from): a `#fields` header naming the columns,
//! then tab-separated rows with Zeek's escaping. A row is iocsync's when its `meta.source` is
//! `zeek.source_name`; a tombstone row (`meta.remove` = `T`) is not held. `meta.desc` carries the
//! indicator's name or id, so the indicator is not compared, and URLs are held as Zeek matches them.

use super::compare::{Expectation, RemoteEntry};
use crate::ioc::IocKind;
use crate::model::IocMeta;
use crate::sinks::zeek::{parse_field, zeek_url};
use crate::sinks::SinkError;
use std::borrow::Cow;
use std::io::BufRead;
use std::path::Path;

/// The Zeek sink writes no description or validity, and URLs in Zeek's form.
pub struct ZeekExpectation;

impl Expectation for ZeekExpectation {
    fn description(&self, _meta: &IocMeta) -> Option<String> {
        None
    }

    fn validity_matches(&self, _valid_until: Option<i64>, _entry: &RemoteEntry) -> bool {
        true
    }

    fn compares_indicator(&self) -> bool {
        false
    }

    fn held_value<'v>(&self, kind: IocKind, value: &'v str) -> Cow<'v, str> {
        match kind {
            IocKind::Url => Cow::Owned(zeek_url(value)),
            _ => Cow::Borrowed(value),
        }
    }
}

/// The state's kind of a row, from its `Intel::` type and value.
fn kind_of(intel_type: &str, value: &str) -> Option<IocKind> {
    match intel_type {
        "Intel::ADDR" => match value.parse::<std::net::IpAddr>().ok()? {
            std::net::IpAddr::V4(_) => Some(IocKind::Ipv4),
            std::net::IpAddr::V6(_) => Some(IocKind::Ipv6),
        },
        "Intel::DOMAIN" => Some(IocKind::Domain),
        "Intel::URL" => Some(IocKind::Url),
        "Intel::FILE_HASH" => match value.len() {
            32 => Some(IocKind::Md5),
            40 => Some(IocKind::Sha1),
            64 => Some(IocKind::Sha256),
            _ => None,
        },
        _ => None,
    }
}

/// Column positions from the `#fields` line.
struct Columns {
    indicator: usize,
    indicator_type: usize,
    source: usize,
    desc: Option<usize>,
    remove: Option<usize>,
}

impl Columns {
    fn parse(line: &str) -> Option<Columns> {
        let names: Vec<&str> = line.split('\t').skip(1).collect();
        let at = |name: &str| names.iter().position(|n| *n == name);
        Some(Columns {
            indicator: at("indicator")?,
            indicator_type: at("indicator_type")?,
            source: at("meta.source")?,
            desc: at("meta.desc"),
            remove: at("meta.remove"),
        })
    }
}

fn foreign(type_name: &str) -> RemoteEntry {
    RemoteEntry {
        kind: None,
        type_name: type_name.into(),
        value: String::new(),
        marker: None,
        remote_id: None,
        description: None,
        valid_until: None,
        written_at: None,
    }
}

/// Hands each row of the intel file to `on_entry`: iocsync's live rows with a marker, other
/// sources' rows and lines that are no row as not managed. A missing file holds nothing.
pub fn stream_zeek(
    path: &Path,
    source_name: &str,
    mut on_entry: impl FnMut(RemoteEntry),
) -> Result<(), SinkError> {
    let io = |action: &'static str, source: std::io::Error| SinkError::Io {
        sink: "zeek",
        action,
        path: path.display().to_string(),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("open", e)),
    };
    let mut columns: Option<Columns> = None;
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(|e| io("read", e))?;
        let line = line.trim_end_matches('\r');
        if line.starts_with("#fields\t") {
            columns = Columns::parse(line);
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split('\t').collect();
        let Some(c) = columns.as_ref() else {
            on_entry(foreign("line"));
            continue;
        };
        let (Some(value), Some(intel_type), Some(source)) = (
            cells.get(c.indicator),
            cells.get(c.indicator_type),
            cells.get(c.source),
        ) else {
            on_entry(foreign("line"));
            continue;
        };
        let removed = c.remove.and_then(|i| cells.get(i)) == Some(&"T");
        if removed {
            continue;
        }
        let value = parse_field(value);
        let kind = kind_of(intel_type, &value);
        let ours = parse_field(source) == source_name;
        on_entry(RemoteEntry {
            kind,
            type_name: intel_type.to_string(),
            marker: ours.then(|| {
                c.desc
                    .and_then(|i| cells.get(i))
                    .map(|d| parse_field(d))
                    .unwrap_or_default()
            }),
            value,
            remote_id: None,
            description: None,
            valid_until: None,
            written_at: None,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_read_back_with_their_marker_and_tombstones_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("intel.dat");
        std::fs::write(
            &path,
            "#fields\tindicator\tindicator_type\tmeta.source\tmeta.desc\tmeta.url\tmeta.remove\n\
             # a comment\n\
             10.0.0.1\tIntel::ADDR\tiocsync\tindicator--1\t-\tF\n\
             2001:db8::1\tIntel::ADDR\tiocsync\tC2\\x09box\t-\tF\n\
             gone.example\tIntel::DOMAIN\tiocsync\tindicator--2\t-\tT\n\
             evil.example/a\tIntel::URL\tanalyst\tby hand\t-\tF\n\
             not a row\n",
        )
        .expect("write");
        let mut got = Vec::new();
        stream_zeek(&path, "iocsync", |e| got.push(e)).expect("read");
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[0].kind, Some(IocKind::Ipv4));
        assert_eq!(got[0].marker.as_deref(), Some("indicator--1"));
        assert_eq!(got[1].kind, Some(IocKind::Ipv6));
        assert_eq!(got[1].marker.as_deref(), Some("C2\tbox"));
        assert_eq!(got[2].kind, Some(IocKind::Url));
        assert_eq!(got[2].marker, None);
        assert_eq!(got[3].kind, None);
        assert_eq!(
            ZeekExpectation.held_value(IocKind::Url, "https://evil.example:443/a#x"),
            "evil.example/a"
        );
        assert!(stream_zeek(&dir.path().join("none"), "iocsync", |_| {}).is_ok());
    }
}

//! Reading the JSONL sink's file for reconcile. The file is a log of `create` / `update` / `delete`
//! records (the format `sinks::jsonl` writes and the README documents): what it holds is the last
//! record of each value, unless that record is a delete. Lines that are not such a record are not
//! iocsync's (counted as not managed); a line torn by a crash at the end is no content at all.

use super::compare::{unix_seconds, Expectation, RemoteEntry};
use crate::ioc::IocKind;
use crate::model::{ChangeOp, IocMeta};
use crate::sinks::SinkError;
use serde::Deserialize;
use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;

/// The fields of a JSONL record reconcile compares.
#[derive(Deserialize)]
struct Record {
    op: ChangeOp,
    #[serde(rename = "type")]
    kind: IocKind,
    value: String,
    indicator_id: String,
    #[serde(default)]
    valid_until: Option<String>,
}

/// The JSONL sink writes `valid_until` as the indicator has it, and no description.
pub struct JsonlExpectation;

impl Expectation for JsonlExpectation {
    fn description(&self, _meta: &IocMeta) -> Option<String> {
        None
    }

    fn validity_matches(&self, valid_until: Option<i64>, entry: &RemoteEntry) -> bool {
        valid_until == unix_seconds(entry.valid_until.as_deref())
    }
}

/// Folds the file into what it holds and hands each held value to `on_entry`, then one
/// not-managed entry per foreign line. A missing file holds nothing.
pub fn stream_jsonl(path: &Path, mut on_entry: impl FnMut(RemoteEntry)) -> Result<(), SinkError> {
    let io = |action: &'static str, source: std::io::Error| SinkError::Io {
        sink: "jsonl",
        action,
        path: path.display().to_string(),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("open", e)),
    };
    let mut reader = std::io::BufReader::new(file);
    let mut held: HashMap<(IocKind, String), (String, Option<String>)> = HashMap::new();
    let mut foreign = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| io("read", e))?;
        if read == 0 || line.last() != Some(&b'\n') {
            break;
        }
        match serde_json::from_slice::<Record>(&line) {
            Ok(r) => {
                let key = (r.kind.sink_kind(), r.value);
                match r.op {
                    ChangeOp::Delete => {
                        held.remove(&key);
                    }
                    ChangeOp::Create | ChangeOp::Update => {
                        held.insert(key, (r.indicator_id, r.valid_until));
                    }
                }
            }
            Err(_) if line.iter().all(u8::is_ascii_whitespace) => {}
            Err(_) => foreign += 1,
        }
    }
    for ((kind, value), (indicator_id, valid_until)) in held {
        on_entry(RemoteEntry {
            kind: Some(kind),
            type_name: kind.as_str().to_string(),
            value,
            marker: Some(indicator_id),
            remote_id: None,
            description: None,
            valid_until,
            written_at: None,
        });
    }
    for _ in 0..foreign {
        on_entry(RemoteEntry {
            kind: None,
            type_name: "line".into(),
            value: String::new(),
            marker: None,
            remote_id: None,
            description: None,
            valid_until: None,
            written_at: None,
        });
    }
    Ok(())
}

//! The JSONL record: writing it, reading the file back, and deciding which pending changes it reflects.

use crate::ioc::IocKind;
use crate::sinks::{Change, ChangeOp, Resolution};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead};

/// How a value is identified in a sink: a hostname and a domain of the same value are one entry.
pub(crate) type Key = (IocKind, String);

/// The key of a change's IOC.
pub(crate) fn key_of(change: &Change) -> Key {
    (change.ioc.kind.sink_kind(), change.ioc.value.clone())
}

/// One line as written; field order is the documented order.
#[derive(Serialize)]
struct RecordOut<'a> {
    op: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    value: &'a str,
    indicator_id: &'a str,
    valid_until: Option<&'a str>,
    name: Option<&'a str>,
    score: Option<u8>,
}

/// How every line we write begins (the first field of [`RecordOut`]).
pub(crate) const RECORD_START: &[u8] = b"{\"op\":";

/// Whether `line` (without its newline) is one of our records.
pub(crate) fn is_record(line: &[u8]) -> bool {
    serde_json::from_slice::<Record>(line).is_ok()
}

/// Appends the record of `change`, newline included, to `out`.
pub(crate) fn write_record(out: &mut Vec<u8>, change: &Change) -> serde_json::Result<()> {
    let record = RecordOut {
        op: change.op.as_str(),
        kind: change.ioc.kind.as_str(),
        value: &change.ioc.value,
        indicator_id: &change.indicator_id,
        valid_until: change.meta.valid_until.as_deref(),
        name: change.meta.name.as_deref(),
        score: change.meta.score,
    };
    serde_json::to_writer(&mut *out, &record)?;
    out.push(b'\n');
    Ok(())
}

/// One line as read back; only what `resolve` compares.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Record {
    op: ChangeOp,
    #[serde(rename = "type")]
    kind: IocKind,
    value: String,
    indicator_id: String,
    #[serde(default)]
    valid_until: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    score: Option<u8>,
}

/// What a scan of the file found.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// The last complete record of each wanted key.
    pub last: HashMap<Key, Record>,
    /// Complete lines that are not a record (hand edits, garbage after a power loss).
    pub unreadable: u64,
    /// Bytes after the last newline: a line torn by a crash, not part of the file's content.
    pub torn_bytes: u64,
}

/// Streams `reader` line by line and keeps the last record of each key in `wanted`, so memory stays
/// bounded by the number of pending changes, not by the file size.
pub(crate) fn scan_last_records(
    mut reader: impl BufRead,
    wanted: &HashSet<Key>,
) -> io::Result<Scan> {
    let mut scan = Scan::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line)?;
        if read == 0 {
            return Ok(scan);
        }
        if line.last() != Some(&b'\n') {
            // A crash cut the last write short: it was never acknowledged, so it does not count.
            scan.torn_bytes = line.len() as u64;
            return Ok(scan);
        }
        match serde_json::from_slice::<Record>(&line) {
            Ok(record) => {
                let key = (record.kind.sink_kind(), record.value.clone());
                if wanted.contains(&key) {
                    scan.last.insert(key, record);
                }
            }
            Err(_) if line.iter().all(u8::is_ascii_whitespace) => {}
            Err(_) => scan.unreadable += 1,
        }
    }
}

/// Whether `last`, the file's last record for the change's key, is what applying `change` writes.
pub(crate) fn reflects(change: &Change, last: Option<&Record>) -> bool {
    match (change.op, last) {
        (ChangeOp::Create, Some(r)) => {
            matches!(r.op, ChangeOp::Create | ChangeOp::Update)
                && r.indicator_id == change.indicator_id
        }
        (ChangeOp::Delete, None) => true,
        (ChangeOp::Delete, Some(r)) => r.op == ChangeOp::Delete,
        (ChangeOp::Update, Some(r)) => {
            r.op == ChangeOp::Update
                && r.indicator_id == change.indicator_id
                && r.name == change.meta.name
                && r.score == change.meta.score
                && r.valid_until == change.meta.valid_until
        }
        (ChangeOp::Create | ChangeOp::Update, None) => false,
    }
}

/// Settles pending changes against what a sink holds now, in the order given (the order they were
/// planned and sent).
///
/// Per key, the latest pending change that `reflected` accepts is taken as the last one that reached
/// the sink: it and the earlier pending changes of that key are applied, the later ones are not; when
/// none is accepted, none is applied. With one pending change per key this is just `reflected`; with
/// several (a create and a delete of one value in the batch that was cut short) it keeps the state
/// database and the sink agreeing on the end result.
pub(crate) fn settle_in_order(
    pending: &[Change],
    reflected: impl Fn(&Change) -> bool,
) -> Vec<Resolution> {
    let mut latest: HashMap<Key, usize> = HashMap::new();
    for (index, change) in pending.iter().enumerate() {
        if reflected(change) {
            latest.insert(key_of(change), index);
        }
    }
    pending
        .iter()
        .enumerate()
        .map(|(index, change)| match latest.get(&key_of(change)) {
            Some(&last) if index <= last => Resolution::Applied { remote_id: None },
            _ => Resolution::NotApplied,
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ioc::Ioc;
    use crate::model::IocMeta;

    /// A change for tests.
    pub(crate) fn change(op: ChangeOp, kind: IocKind, value: &str, indicator: &str) -> Change {
        Change {
            intent_id: 1,
            op,
            ioc: Ioc {
                kind,
                value: value.to_owned(),
            },
            indicator_id: indicator.to_owned(),
            remote_id: None,
            meta: IocMeta {
                name: Some(format!("name of {value}")),
                score: Some(80),
                valid_until: Some("2030-01-01T00:00:00Z".to_owned()),
                ..IocMeta::default()
            },
        }
    }

    fn line(change: &Change) -> String {
        let mut out = Vec::new();
        write_record(&mut out, change).expect("serialise");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn record_has_the_documented_keys_in_order() {
        let c = change(ChangeOp::Create, IocKind::Sha256, "ab12", "indicator--1");
        assert_eq!(
            line(&c),
            "{\"op\":\"create\",\"type\":\"sha256\",\"value\":\"ab12\",\"indicator_id\":\"indicator--1\",\
             \"valid_until\":\"2030-01-01T00:00:00Z\",\"name\":\"name of ab12\",\"score\":80}\n"
        );
    }

    #[test]
    fn absent_metadata_is_null_and_hostname_keeps_its_type() {
        let mut c = change(
            ChangeOp::Delete,
            IocKind::Hostname,
            "a.example",
            "indicator--2",
        );
        c.meta = IocMeta::default();
        assert_eq!(
            line(&c),
            "{\"op\":\"delete\",\"type\":\"hostname\",\"value\":\"a.example\",\
             \"indicator_id\":\"indicator--2\",\"valid_until\":null,\"name\":null,\"score\":null}\n"
        );
        let u = change(ChangeOp::Update, IocKind::Ipv4, "10.0.0.1", "indicator--3");
        assert!(line(&u).starts_with("{\"op\":\"update\",\"type\":\"ipv4\","));
    }

    #[test]
    fn scan_keeps_the_last_record_per_sink_kind_and_ignores_a_torn_tail() {
        let create = change(
            ChangeOp::Create,
            IocKind::Domain,
            "a.example",
            "indicator--1",
        );
        let delete = change(
            ChangeOp::Delete,
            IocKind::Hostname,
            "a.example",
            "indicator--1",
        );
        let other = change(ChangeOp::Create, IocKind::Md5, "ff", "indicator--9");
        let torn_create = line(&create);
        let text = format!(
            "{}not json\n\n{}{}{}",
            line(&create),
            line(&other),
            line(&delete),
            &torn_create[..20]
        );
        let wanted = HashSet::from([(IocKind::Domain, "a.example".to_owned())]);
        let scan = scan_last_records(text.as_bytes(), &wanted).expect("scan");
        assert_eq!(scan.unreadable, 1);
        assert_eq!(scan.torn_bytes, 20);
        assert_eq!(scan.last.len(), 1, "only wanted keys are kept");
        let last = scan.last.get(&wanted.into_iter().next().expect("key"));
        assert_eq!(last.map(|r| r.op), Some(ChangeOp::Delete));
    }

    fn record(change: &Change) -> Record {
        serde_json::from_str(&line(change)).expect("parse")
    }

    #[test]
    fn reflects_follows_the_last_record() {
        let create = change(ChangeOp::Create, IocKind::Url, "http://x/", "indicator--1");
        let create_other = change(ChangeOp::Create, IocKind::Url, "http://x/", "indicator--2");
        let delete = change(ChangeOp::Delete, IocKind::Url, "http://x/", "indicator--1");
        let mut update = change(ChangeOp::Update, IocKind::Url, "http://x/", "indicator--1");
        update.meta.score = Some(10);

        assert!(reflects(&create, Some(&record(&create))));
        assert!(reflects(&create, Some(&record(&update))));
        assert!(!reflects(&create, Some(&record(&create_other))));
        assert!(!reflects(&create, Some(&record(&delete))));
        assert!(!reflects(&create, None));

        assert!(reflects(&delete, None));
        assert!(reflects(&delete, Some(&record(&delete))));
        assert!(!reflects(&delete, Some(&record(&create))));

        assert!(reflects(&update, Some(&record(&update))));
        assert!(!reflects(&update, Some(&record(&create))), "older score");
        assert!(!reflects(&update, None));
    }

    #[test]
    fn settle_applies_everything_up_to_the_latest_reflected_change() {
        let create = change(ChangeOp::Create, IocKind::Md5, "aa", "indicator--1");
        let delete = change(ChangeOp::Delete, IocKind::Md5, "aa", "indicator--1");
        let other = change(ChangeOp::Create, IocKind::Md5, "bb", "indicator--2");
        let pending = [create.clone(), delete.clone(), other.clone()];
        // The sink shows `aa` deleted and `bb` absent.
        let got = settle_in_order(&pending, |c| {
            c.ioc.value == "aa" && c.op == ChangeOp::Delete
        });
        assert_eq!(
            got,
            vec![
                Resolution::Applied { remote_id: None },
                Resolution::Applied { remote_id: None },
                Resolution::NotApplied,
            ]
        );
        // The sink shows `aa` created: the delete after it has not reached it.
        let got = settle_in_order(&pending[..2], |c| c.op == ChangeOp::Create);
        assert_eq!(
            got,
            vec![
                Resolution::Applied { remote_id: None },
                Resolution::NotApplied
            ]
        );
    }
}

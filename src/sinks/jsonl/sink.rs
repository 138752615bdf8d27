//! `JsonlSink`: appends records with one write and one fsync per batch; reads the file back on resolve.

use super::config::JsonlConfig;
use super::format::{
    is_record, key_of, reflects, scan_last_records, settle_in_order, write_record, Scan,
    RECORD_START,
};
use super::fs::{blocking, parent_dir, probe_writable, set_mode, sync_dir, Context, FileError};
use crate::config::Valid;
use crate::sinks::{Change, Outcome, Resolution, Sink, SinkError};
use async_trait::async_trait;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const SINK: &str = "jsonl";

/// Appends one JSON line per change to a local file.
#[derive(Debug)]
pub struct JsonlSink {
    path: Arc<PathBuf>,
    /// Permission bits the file is created with (`jsonl.file_mode`).
    file_mode: u32,
    /// Serialises appends: the tail repair and the write must not interleave with another batch.
    write_lock: tokio::sync::Mutex<()>,
}

impl JsonlSink {
    /// Builds the sink from a validated section. Touches no file, so it cannot fail.
    pub fn new(config: &Valid<JsonlConfig>) -> Self {
        JsonlSink {
            path: Arc::new(config.facts().path.clone()),
            file_mode: config.file_mode.0,
            write_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The file records go to.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl Sink for JsonlSink {
    fn name(&self) -> &'static str {
        SINK
    }

    fn max_batch(&self) -> usize {
        10_000
    }

    fn supports_update(&self) -> bool {
        true
    }

    async fn apply(&self, batch: &[Change]) -> Vec<Outcome> {
        let mut bytes = Vec::with_capacity(batch.len() * 192);
        let mut refused = vec![None; batch.len()];
        for (slot, change) in refused.iter_mut().zip(batch) {
            let before = bytes.len();
            if let Err(err) = write_record(&mut bytes, change) {
                bytes.truncate(before);
                *slot = Some(format!("cannot encode the record: {err}"));
            }
        }
        let written = if bytes.is_empty() {
            Ok(())
        } else {
            let _guard = self.write_lock.lock().await;
            let path = Arc::clone(&self.path);
            let mode = self.file_mode;
            blocking(&self.path, move || append(&path, &bytes, mode)).await
        };
        refused
            .into_iter()
            .map(|refusal| match (refusal, &written) {
                (Some(reason), _) => Outcome::Rejected { reason },
                (None, Ok(())) => Outcome::Applied { remote_id: None },
                (None, Err(err)) => Outcome::Retry {
                    after: None,
                    error: err.to_sink_error(SINK),
                },
            })
            .collect()
    }

    async fn resolve(&self, pending: &[Change]) -> Result<Vec<Resolution>, SinkError> {
        let wanted: HashSet<_> = pending.iter().map(key_of).collect();
        let path = Arc::clone(&self.path);
        let scan = blocking(&self.path, move || scan_file(&path, &wanted))
            .await
            .map_err(|err| err.to_sink_error(SINK))?;
        if scan.unreadable > 0 {
            tracing::warn!(
                path = %self.path.display(),
                lines = scan.unreadable,
                "jsonl file has lines that are not records; ignored them"
            );
        }
        if scan.torn_bytes > 0 {
            tracing::warn!(
                path = %self.path.display(),
                bytes = scan.torn_bytes,
                "jsonl file ends with a torn line; it will be cut before the next append"
            );
        }
        Ok(settle_in_order(pending, |change| {
            reflects(change, scan.last.get(&key_of(change)))
        }))
    }

    async fn check(&self) -> Result<String, SinkError> {
        let path = Arc::clone(&self.path);
        blocking(&self.path, move || probe_writable(&path))
            .await
            .map_err(|err| err.to_sink_error(SINK))?;
        Ok(format!("writable `{}`", self.path.display()))
    }
}

/// Reads the whole file, line by line; a missing file holds no record.
fn scan_file(
    path: &Path,
    wanted: &HashSet<(crate::ioc::IocKind, String)>,
) -> Result<Scan, FileError> {
    match File::open(path) {
        Ok(file) => scan_last_records(BufReader::new(file), wanted).ctx("read", path),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Scan::default()),
        Err(err) => Err(FileError::new("open", path, err)),
    }
}

/// Appends `bytes` after the last complete line and syncs them to disk.
///
/// On a failed write or sync the file is cut back to its previous length, so a retried batch is not
/// written twice. A file this creates (or finds empty) gets exactly `mode`; an existing file keeps
/// the mode someone gave it.
fn append(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    let dir = parent_dir(path);
    std::fs::create_dir_all(dir).ctx("create directory", dir)?;
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    let mut file = options.open(path).ctx("open", path)?;
    let len = file.metadata().ctx("stat", path)?.len();
    if len == 0 {
        // The umask narrowed the creation mode; the documented mode is the configured one.
        set_mode(&file, mode).ctx("set the mode of", path)?;
    }
    let start = repair_point(&mut file, len, path)?;
    if start < len {
        file.set_len(start).ctx("repair the last line of", path)?;
    }
    if start < len {
        tracing::warn!(
            path = %path.display(),
            bytes = len - start,
            "cut a torn last line left by an interrupted write"
        );
    }
    let written = file
        .seek(SeekFrom::Start(start))
        .and_then(|_| file.write_all(bytes))
        .ctx("append to", path)
        .and_then(|()| file.sync_data().ctx("sync", path));
    if let Err(err) = written {
        // Best effort: the error reported is the write's, not this one's.
        let _ = file.set_len(start);
        return Err(err);
    }
    if len == 0 {
        // A new file: make its directory entry durable too.
        sync_dir(dir)?;
    }
    Ok(())
}

/// How much of the file's end is read to find its last line: far more than any record we write, so
/// a last line longer than this is not ours.
const TAIL_WINDOW: u64 = 1 << 20;

/// Where the next append starts: after the last complete line, so a line torn by a crash is cut.
///
/// The path may name a file we did not write (a typo, or a symlink pointing at something else):
/// cutting or appending to that would destroy someone's data. So, before anything is cut or
/// appended, the file must look like ours: its last non-blank complete line parses as a record, and
/// a torn tail (or a file that is one torn line) starts the way a record does. Otherwise the append
/// is refused with an error naming the path, and the file is left as it is.
fn repair_point(file: &mut File, len: u64, path: &Path) -> Result<u64, FileError> {
    if len == 0 {
        return Ok(0);
    }
    let start = len.saturating_sub(TAIL_WINDOW);
    let mut tail = vec![0u8; (len - start) as usize];
    file.seek(SeekFrom::Start(start))
        .and_then(|_| file.read_exact(&mut tail))
        .ctx("read the end of", path)?;
    let refuse = |why: &str| {
        FileError::new(
            "append to",
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not an iocsync JSONL file ({why}); move it away or set jsonl.path to another file"),
            ),
        )
    };
    let (complete, torn) = match tail.iter().rposition(|&b| b == b'\n') {
        Some(pos) => tail.split_at(pos + 1),
        None if start > 0 => return Err(refuse("its last line is longer than any record")),
        None => tail.split_at(0),
    };
    let record_like = torn.starts_with(RECORD_START) || RECORD_START.starts_with(torn);
    if !record_like {
        return Err(refuse(
            "its unfinished last line is not the start of a record",
        ));
    }
    // The first line of the window may be cut at its start; it is only read when the window holds
    // the whole file.
    let mut lines: Vec<&[u8]> = complete.split(|&b| b == b'\n').collect();
    lines.pop(); // after the final newline
    if start > 0 && !lines.is_empty() {
        lines.remove(0);
    }
    match lines
        .iter()
        .rev()
        .find(|line| !line.iter().all(u8::is_ascii_whitespace))
    {
        Some(line) if !is_record(line) => Err(refuse("its last line is not an iocsync record")),
        None if start > 0 => Err(refuse("its last megabyte holds no record")),
        _ => Ok(start + complete.len() as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ioc::IocKind;
    use crate::sinks::jsonl::format::tests::change;
    use crate::sinks::ChangeOp;

    fn sink(dir: &tempfile::TempDir) -> JsonlSink {
        JsonlSink::new(
            &Valid::new(JsonlConfig {
                path: Some(dir.path().join("sub/out.jsonl")),
                ..JsonlConfig::default()
            })
            .expect("valid"),
        )
    }

    fn read(sink: &JsonlSink) -> String {
        std::fs::read_to_string(sink.path()).expect("read")
    }

    fn applied(outcomes: &[Outcome]) -> bool {
        outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Applied { remote_id: None }))
    }

    #[test]
    fn a_sink_requires_a_path() {
        let err = Valid::new(JsonlConfig::default()).expect_err("no path");
        assert!(err.to_string().contains("jsonl.path"), "{err}");
    }

    #[tokio::test]
    async fn apply_appends_one_line_per_change_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = sink(&dir);
        let a = change(ChangeOp::Create, IocKind::Sha1, "aa", "indicator--1");
        let b = change(
            ChangeOp::Create,
            IocKind::Domain,
            "b.example",
            "indicator--2",
        );
        let outcomes = sink.apply(&[a.clone(), b]).await;
        assert_eq!(outcomes.len(), 2);
        assert!(applied(&outcomes));
        let outcomes = sink
            .apply(&[change(
                ChangeOp::Delete,
                IocKind::Sha1,
                "aa",
                "indicator--1",
            )])
            .await;
        assert!(applied(&outcomes));
        let text = read(&sink);
        let ops: Vec<_> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
            .map(|v| {
                format!(
                    "{} {}",
                    v["op"].as_str().unwrap_or(""),
                    v["value"].as_str().unwrap_or("")
                )
            })
            .collect();
        assert_eq!(ops, ["create aa", "create b.example", "delete aa"]);
        assert!(text.ends_with('\n'));
        assert!(sink.apply(&[]).await.is_empty());
    }

    fn line(op: ChangeOp, value: &str) -> String {
        let mut out = Vec::new();
        write_record(&mut out, &change(op, IocKind::Md5, value, "indicator--1")).expect("encode");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn append_leaves_the_bytes_on_disk_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.jsonl");
        let (first, second) = (line(ChangeOp::Create, "aa"), line(ChangeOp::Delete, "aa"));
        std::fs::write(&path, format!("{first}{}", &second[..20])).expect("seed");
        append(&path, second.as_bytes(), 0o640).expect("append");
        // Reading through a fresh handle shows what reached the file, after sync_data.
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            format!("{first}{second}")
        );
    }

    #[test]
    fn a_file_that_is_one_torn_line_is_emptied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.jsonl");
        let record = line(ChangeOp::Create, "aa");
        for torn in [&record[..3], &record[..record.len() - 2]] {
            std::fs::write(&path, torn).expect("seed");
            append(&path, record.as_bytes(), 0o640).expect("append");
            assert_eq!(std::fs::read_to_string(&path).expect("read"), record);
        }
    }

    #[test]
    fn a_file_that_is_not_ours_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.jsonl");
        let record = line(ChangeOp::Create, "aa");
        for content in [
            // A config file without a final newline: its last line would have been cut.
            "root:x:0:0:root:/root:/bin/bash\nbin:x:1:1:bin:/bin:/sbin/nologin".to_owned(),
            // Complete lines that are not records: appended to, before.
            "[section]\nkey = value\n".to_owned(),
            // Our records, then someone else's line.
            format!("{record}not json\n"),
            // One long line with no newline at all: emptied, before.
            "x".repeat(150_000),
        ] {
            std::fs::write(&path, &content).expect("seed");
            let err = append(&path, record.as_bytes(), 0o640).expect_err("refused");
            let text = err.to_sink_error(SINK).to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains("not an iocsync JSONL file"), "{text}");
            assert_eq!(std::fs::read_to_string(&path).expect("read"), content);
        }
        // Blank lines after our records are fine.
        std::fs::write(&path, format!("{record}\n")).expect("seed");
        append(&path, record.as_bytes(), 0o640).expect("append");
    }

    #[tokio::test]
    async fn a_failed_append_is_a_retry_with_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The "file" is a directory: opening it for writing fails.
        let sink = JsonlSink::new(
            &Valid::new(JsonlConfig {
                path: Some(dir.path().to_path_buf()),
                ..JsonlConfig::default()
            })
            .expect("valid"),
        );
        let outcomes = sink
            .apply(&[change(ChangeOp::Create, IocKind::Md5, "aa", "indicator--1")])
            .await;
        match &outcomes[..] {
            [Outcome::Retry { after: None, error }] => {
                let text = error.to_string();
                assert!(text.contains(&dir.path().display().to_string()), "{text}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn resolve_after_a_crash_between_write_and_commit_prevents_a_duplicate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = sink(&dir);
        let create = change(ChangeOp::Create, IocKind::Ipv4, "10.0.0.1", "indicator--1");
        let never_sent = change(ChangeOp::Create, IocKind::Ipv4, "10.0.0.2", "indicator--2");
        assert!(applied(&sink.apply(std::slice::from_ref(&create)).await));
        // The process dies here; on restart both intents are pending.
        let restarted = self::sink(&dir);
        let got = restarted
            .resolve(&[create.clone(), never_sent.clone()])
            .await
            .expect("resolve");
        assert_eq!(
            got,
            vec![
                Resolution::Applied { remote_id: None },
                Resolution::NotApplied
            ]
        );
        // The pipeline then sends only what was not applied: one create line per value.
        assert!(applied(&restarted.apply(&[never_sent]).await));
        assert_eq!(read(&restarted).lines().count(), 2);
    }

    #[tokio::test]
    async fn resolve_decides_deletes_and_updates_from_the_last_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = sink(&dir);
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
        let mut update = change(
            ChangeOp::Update,
            IocKind::Domain,
            "a.example",
            "indicator--1",
        );
        update.meta.name = Some("renamed".to_owned());
        let delete_absent = change(ChangeOp::Delete, IocKind::Md5, "ff", "indicator--3");

        // Missing file: nothing is there.
        let got = sink
            .resolve(&[create.clone(), delete_absent.clone()])
            .await
            .expect("resolve");
        assert_eq!(
            got,
            vec![
                Resolution::NotApplied,
                Resolution::Applied { remote_id: None }
            ]
        );

        assert!(applied(&sink.apply(std::slice::from_ref(&create)).await));
        let got = sink
            .resolve(std::slice::from_ref(&update))
            .await
            .expect("resolve");
        assert_eq!(got, vec![Resolution::NotApplied]);
        let got = sink
            .resolve(std::slice::from_ref(&delete))
            .await
            .expect("resolve");
        assert_eq!(got, vec![Resolution::NotApplied]);

        assert!(applied(&sink.apply(std::slice::from_ref(&update)).await));
        let got = sink
            .resolve(&[update.clone(), create.clone()])
            .await
            .expect("resolve");
        assert_eq!(got, vec![Resolution::Applied { remote_id: None }; 2]);

        // A hostname delete settles the domain entry: same sink key.
        assert!(applied(&sink.apply(std::slice::from_ref(&delete)).await));
        let got = sink.resolve(&[delete, create]).await.expect("resolve");
        assert_eq!(
            got,
            vec![
                Resolution::Applied { remote_id: None },
                Resolution::NotApplied
            ]
        );
    }

    #[tokio::test]
    async fn a_torn_last_line_is_ignored_by_resolve_and_cut_by_the_next_append() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = sink(&dir);
        let first = change(ChangeOp::Create, IocKind::Sha256, "aa", "indicator--1");
        let torn = change(ChangeOp::Create, IocKind::Sha256, "bb", "indicator--2");
        assert!(applied(&sink.apply(std::slice::from_ref(&first)).await));
        // Simulate a kill in the middle of writing `torn`'s line.
        let mut line = Vec::new();
        write_record(&mut line, &torn).expect("encode");
        let mut file = OpenOptions::new()
            .append(true)
            .open(sink.path())
            .expect("open");
        file.write_all(&line[..line.len() - 1]).expect("write");
        drop(file);

        let got = sink
            .resolve(std::slice::from_ref(&torn))
            .await
            .expect("resolve");
        assert_eq!(got, vec![Resolution::NotApplied]);
        assert!(applied(&sink.apply(std::slice::from_ref(&torn)).await));
        let text = read(&sink);
        let values: Vec<_> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).expect("valid JSONL")["value"].clone()
            })
            .collect();
        assert_eq!(values, ["aa", "bb"]);
    }

    #[tokio::test]
    async fn check_reports_the_writable_path_without_writing_to_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = sink(&dir);
        let said = sink.check().await.expect("check");
        assert_eq!(said, format!("writable `{}`", sink.path().display()));
        assert!(!sink.path().exists());
    }
}

//! Blocking file helpers shared by the two local sinks (JSONL here, Zeek next door): errors that keep
//! the action and path, directory fsync, and running blocking I/O off the async runtime.

use crate::sinks::SinkError;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// A failed file operation, kept so one failure can become one [`SinkError`] per change of a batch.
#[derive(Debug)]
pub(crate) struct FileError {
    /// What we tried to do ("append to", "rename", …).
    pub action: &'static str,
    /// The file or directory concerned.
    pub path: PathBuf,
    /// The OS error.
    pub source: io::Error,
}

impl FileError {
    /// Wraps an OS error with its context.
    pub fn new(action: &'static str, path: &Path, source: io::Error) -> Self {
        FileError {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The sink error for one change; `io::Error` is not `Clone`, so each copy rebuilds it.
    pub fn to_sink_error(&self, sink: &'static str) -> SinkError {
        SinkError::Io {
            sink,
            action: self.action,
            path: self.path.display().to_string(),
            source: io::Error::new(self.source.kind(), self.source.to_string()),
        }
    }
}

/// Extension trait to attach context to `io::Result`s.
pub(crate) trait Context<T> {
    /// Attaches the action and path.
    fn ctx(self, action: &'static str, path: &Path) -> Result<T, FileError>;
}

impl<T> Context<T> for io::Result<T> {
    fn ctx(self, action: &'static str, path: &Path) -> Result<T, FileError> {
        self.map_err(|source| FileError::new(action, path, source))
    }
}

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Makes a directory's entries (a new file, a rename) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), FileError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx("sync directory", dir)
}

/// Checks that files can be created in the directory of `path` (creating the directory if needed)
/// and, when `path` exists, that it can be opened for writing. Leaves the file's content untouched.
pub(crate) fn probe_writable(path: &Path) -> Result<(), FileError> {
    let dir = parent_dir(path);
    std::fs::create_dir_all(dir).ctx("create directory", dir)?;
    if path.exists() {
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .ctx("open for writing", path)?;
    }
    let probe = dir.join(format!(".iocsync-probe-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe)
        .ctx("create a file in", dir)?;
    std::fs::remove_file(&probe).ctx("remove probe file", &probe)
}

/// Runs blocking file work on tokio's blocking pool.
pub(crate) async fn blocking<T, F>(path: &Path, work: F) -> Result<T, FileError>
where
    F: FnOnce() -> Result<T, FileError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(join) => Err(FileError::new(
            "run the file task for",
            path,
            io::Error::other(join.to_string()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_error_keeps_action_path_and_kind() {
        let err = FileError::new(
            "append to",
            Path::new("/x/y.jsonl"),
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        let sink_err = err.to_sink_error("jsonl");
        let text = sink_err.to_string();
        assert!(
            text.starts_with("jsonl failed to append to `/x/y.jsonl`"),
            "{text}"
        );
        match sink_err {
            SinkError::Io { source, .. } => {
                assert_eq!(source.kind(), io::ErrorKind::PermissionDenied)
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn probe_creates_the_directory_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a/b/out.jsonl");
        probe_writable(&path).expect("writable");
        let left: Vec<_> = std::fs::read_dir(dir.path().join("a/b"))
            .expect("dir")
            .collect();
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(parent_dir(Path::new("out.jsonl")), Path::new("."));
    }
}

//! Blocking file helpers shared by the two local sinks (JSONL here, Zeek next door): errors that keep
//! the action and path, directory fsync, and running blocking I/O off the async runtime.

use crate::sinks::SinkError;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
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

/// The permission bits of an output file (`zeek.file_mode`, `jsonl.file_mode`), written as an octal
/// string such as `"0640"` so YAML and the environment read it the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FileMode(pub u32);

impl FileMode {
    /// Owner read/write, group read: a reader such as Zeek gets in through the file's group.
    pub const DEFAULT: FileMode = FileMode(0o640);
}

impl TryFrom<String> for FileMode {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let digits = text.trim().trim_start_matches("0o");
        let mode = u32::from_str_radix(digits, 8)
            .map_err(|_| format!("`{text}` is not an octal file mode such as 0640"))?;
        if mode > 0o777 {
            return Err(format!("`{text}` has bits beyond 0777"));
        }
        // iocsync itself reads and rewrites the file.
        if mode & 0o600 != 0o600 {
            return Err(format!("`{text}` must let the owner read and write (0600)"));
        }
        Ok(FileMode(mode))
    }
}

impl From<FileMode> for String {
    fn from(mode: FileMode) -> String {
        format!("{:04o}", mode.0)
    }
}

/// Sets `file`'s permission bits to exactly `mode` (the umask only applies at creation). No-op off
/// unix.
pub(crate) fn set_mode(file: &File, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (file, mode);
        Ok(())
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

/// Creates `path` as a new file, never opening one that is already there: `O_CREAT|O_EXCL` (which
/// also refuses a symlink, dangling or not) plus `O_NOFOLLOW` on unix, mode 0600 until the caller
/// sets the final one. A file another user planted under the name is an `AlreadyExists` error.
pub(crate) fn create_exclusive(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW).mode(0o600);
    }
    options.open(path)
}

/// Creates a new file with an unpredictable name next to `path` (`.<name>.<random>.<suffix>`) with
/// [`create_exclusive`]; returns it and its path. A fixed temp name in a directory others can write
/// to (a shared Zeek directory) let a symlink planted under it redirect our write to its target.
pub(crate) fn create_temp_beside(path: &Path, suffix: &str) -> Result<(File, PathBuf), FileError> {
    let dir = parent_dir(path);
    let name = path.file_name().map(OsString::from).unwrap_or_default();
    // A name taken by chance (or by a planted file) is skipped; 16 misses in a row is not chance.
    for _ in 0..16 {
        let mut temp = OsString::from(".");
        temp.push(&name);
        temp.push(format!(".{:016x}.{suffix}", rand::random::<u64>()));
        let temp = dir.join(temp);
        match create_exclusive(&temp) {
            Ok(file) => return Ok((file, temp)),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(FileError::new("create", &temp, err)),
        }
    }
    Err(FileError::new(
        "create a temporary file in",
        dir,
        io::Error::from(io::ErrorKind::AlreadyExists),
    ))
}

/// Checks that files can be created in the directory of `path` (creating the directory if needed)
/// and, when `path` exists, that it can be opened for writing. Leaves the file's content untouched.
pub(crate) fn probe_writable(path: &Path) -> Result<(), FileError> {
    let dir = parent_dir(path);
    std::fs::create_dir_all(dir).ctx("create directory", dir)?;
    if path.exists() {
        OpenOptions::new()
            .append(true)
            .open(path)
            .ctx("open for writing", path)?;
    }
    let (_, probe) = create_temp_beside(path, "iocsync-probe")?;
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

    #[cfg(unix)]
    #[test]
    fn a_planted_symlink_is_never_opened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("precious");
        std::fs::write(&target, "keep me").expect("seed");
        let planted = dir.path().join("planted");
        std::os::unix::fs::symlink(&target, &planted).expect("symlink");
        let err = create_exclusive(&planted).expect_err("a symlink is not a new file");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nothing-yet"), &dangling).expect("symlink");
        assert!(create_exclusive(&dangling).is_err());
        assert!(
            !dir.path().join("nothing-yet").exists(),
            "created through a symlink"
        );
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "keep me");
    }

    #[test]
    fn file_modes_parse_as_octal_and_must_keep_owner_read_write() {
        let parse = |s: &str| FileMode::try_from(s.to_owned());
        assert_eq!(parse("0640"), Ok(FileMode(0o640)));
        assert_eq!(parse("644"), Ok(FileMode(0o644)));
        assert_eq!(parse("0o600"), Ok(FileMode(0o600)));
        for bad in ["", "rw-r-----", "0890", "01640", "0440"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(String::from(FileMode::DEFAULT), "0640");
    }

    #[test]
    fn temp_names_are_fresh_each_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("intel.dat");
        let (_, a) = create_temp_beside(&path, "iocsync-tmp").expect("a");
        let (_, b) = create_temp_beside(&path, "iocsync-tmp").expect("b");
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(dir.path()));
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

//! The JSONL sink: appends one JSON record per change to a local file, fsync'd before each ack.
//!
//! Record (one line per change, keys always present, in this order):
//!
//! ```text
//! {"op":"create"|"delete"|"update","type":"sha256|…","value":"…","indicator_id":"indicator--…",
//!  "valid_until":"…"|null,"name":"…"|null,"score":0-100|null}
//! ```
//!
//! `update` is iocsync's extension for metadata-only changes. It neither adds nor removes a value, so
//! the contract of `interface.md` holds as written: the live set is the creates minus the later
//! deletes of the same `indicator_id`; a reader that ignores `update` lines computes the same set.
//!
//! Crash safety: the file is the truth. After a kill between the write and the state commit,
//! [`JsonlSink`]'s `resolve` reads the file back and reports the change as applied, so no duplicate line
//! is written; a torn last line (no trailing newline) is ignored by `resolve` and cut away before the
//! next append, so the file stays valid JSONL. Only one process may write the file.

mod config;
mod format;
pub(crate) mod fs;
mod sink;

pub use config::JsonlConfig;
pub(crate) use format::{key_of, settle_in_order, Key};
pub use fs::FileMode;
pub use sink::JsonlSink;

/// Builders shared by the sinks' unit tests.
#[cfg(test)]
pub(crate) use format::tests as tests_support;

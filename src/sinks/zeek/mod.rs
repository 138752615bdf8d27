//! The Zeek Intelligence Framework sink: keeps an intel file that Zeek re-reads, holding the current
//! live set, rewritten atomically after every batch.
//!
//! Zeek keeps an item after its row disappears, so deletions follow `zeek.removal`: `tombstone` keeps
//! a `meta.remove = T` row for `zeek.tombstone_retention`; `expire` drops the row and relies on Zeek
//! expiring items that are not re-read, the file being rewritten at least every
//! `zeek.rewrite_interval` (run [`ZeekSink::spawn_maintenance`]). The live set and tombstone times
//! live in `<intel_path>.iocsync.json`, the source of truth the intel file is generated from.
//!
//! The Zeek scripts to load for each removal mode are in the README ("Sink: Zeek intel file").

mod config;
mod format;
mod sink;
mod state;

pub use config::{Removal, ZeekConfig};
/// The intel file's format, for `iocsync reconcile` to read it back.
pub(crate) use format::{parse_field, zeek_url};
pub use sink::ZeekSink;

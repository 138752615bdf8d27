//! The Zeek Intelligence Framework sink: keeps an intel file that Zeek re-reads, holding the current
//! live set, rewritten atomically after every batch.
//!
//! Zeek keeps an item after its row disappears, so deletions follow `zeek.removal`: `tombstone` keeps
//! a `meta.remove = T` row for `zeek.tombstone_retention`; `expire` drops the row and relies on Zeek
//! expiring items that are not re-read, the file being rewritten at least every
//! `zeek.rewrite_interval` (run [`ZeekSink::spawn_maintenance`]). The live set and tombstone times
//! live in `<intel_path>.iocsync.json`, the source of truth the intel file is generated from.
//!
//! The Zeek side is described in [`ZEEK_SCRIPTS_DOC`].

mod config;
mod format;
mod sink;
mod state;

pub use config::{Removal, ZeekConfig};
pub use sink::ZeekSink;

/// What to add to Zeek's `local.zeek` (or a site script) for the intel file; for the README.
pub const ZEEK_SCRIPTS_DOC: &str = r#"# Zeek side of the iocsync intel file (local.zeek or a site policy script).
# Match intel against what Zeek sees (DNS, HTTP, TLS SNI, certificates, files, connections):
@load frameworks/intel/seen
# The file iocsync writes (zeek.intel_path); Zeek re-reads it whenever iocsync replaces it:
redef Intel::read_files += { "/path/intel.dat" };

# With zeek.removal = tombstone (the default): rows with meta.remove = T remove the item.
@load frameworks/intel/removal

# With zeek.removal = expire instead: items not re-read within Intel::item_expiration are dropped.
# iocsync rewrites the file at least every zeek.rewrite_interval (default 1h), so choose an
# expiration comfortably longer, e.g. three times the interval:
# @load frameworks/intel/do_expire
# redef Intel::item_expiration = 3hr;
"#;

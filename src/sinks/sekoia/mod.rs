//! Sekoia.io IOC collection sink: one iocsync feeds one collection, creating indicators with the JSON
//! import (as documented: `default_fields` per call, no ids in the answer, so ids are learned by a
//! search for the value and our marker) and revoking exactly the ones it created.
//!
//! - [`config`] — the `sekoia_intel` section, URL and collection id normalisation, validation.
//! - [`types`] — wire types: import items and default fields, indicators as returned, pages, the
//!   collection.
//! - [`client`] — one method per API call (collection, import, term search, revoke), typed errors.
//! - [`error`] — [`SekoiaError`] and the mapping to the pipeline's `SinkError`.
//! - [`item`] — `Change` → import item + default fields (validity, kill chain phases, our marker).
//! - [`quota`] — the live IOC count, its gauge and the 90 % quota warning.
//! - [`sink`] — the `Sink` implementation: grouping, batching, 400 recovery, id lookup, revoke,
//!   resolve, check.

pub mod client;
pub mod config;
pub mod error;
pub mod item;
pub mod quota;
pub mod sink;
pub mod types;

pub use client::SekoiaClient;
pub use config::SekoiaConfig;
pub use error::SekoiaError;
pub use sink::SekoiaSink;
pub use types::{DefaultFields, ImportItem, KillChainPhase, RemoteIndicator};

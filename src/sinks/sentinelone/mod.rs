//! SentinelOne Threat Intelligence IOC store: the sink, and the client the `iocsync s1` CLI reuses.
//!
//! - [`config`] — the `sentinelone_intel` section and its validation.
//! - [`types`] — wire types: items to create, IOCs as returned, list queries, delete filters.
//! - [`client`] — one method per API call (create, list with cursor paging, delete), typed errors.
//! - [`error`] — [`S1Error`] and the mapping to the pipeline's `SinkError`.
//! - [`detail`] — reads the offending items out of a whole-batch 400's `detail` string.
//! - [`item`] — `Change` → item (type mapping, `validUntil` caps, defaults, text limits).
//! - [`sink`] — the `Sink` implementation: batching, 400 recovery, update, resolve, check.

pub mod client;
pub mod config;
pub mod detail;
pub mod error;
pub mod item;
pub mod sink;
pub mod types;

pub use client::SentinelOneClient;
pub use config::{Scope, SentinelOneConfig};
pub use error::S1Error;
pub use sink::SentinelOneSink;
pub use types::{DeleteFilter, IocItem, ListAll, ListPage, ListQuery, PagesEnd, RemoteIoc, S1Type};

//! The MISP source (the iOCLink path): polls `attributes/restSearch` on a schedule and pushes the
//! IDS-flagged attributes to every sink, with deletions following (soft deletes and `to_ids` flips at
//! each poll, hard deletes at the periodic full resync).
//!
//! - [`config`] — the `misp` section: access, schedule forms, look-back, resync, filters.
//! - [`wire`] — lenient reading of MISP's JSON (attributes, feeds).
//! - [`mapping`] — attribute → IOCs (protocols.md §5 type mapping) and metadata, or a skip reason.
//! - [`feeds`] — linking attributes to feeds, `misp.disabled_feeds`, per-feed run counts.
//! - [`overrides`] — what the web console set over the config (schedule, feed toggles,
//!   `last_run_time`), read from the state at every run start.
//! - [`schedule`] — interval / time-of-day schedules (time zones, DST) and the checkpoint [`Mark`].
//! - [`client`] — the REST client (`restSearch`, `feeds`, `getVersion`) with retries.
//! - [`source`] — [`MispSource`]: the run loop, paging, de-duplication, resync, `Source::check`.

pub mod client;
pub mod config;
mod edits;
pub mod feeds;
pub mod mapping;
mod memo;
pub mod overrides;
mod resync;
pub mod schedule;
pub mod source;
pub mod wire;

pub use client::{MispClient, MispError, SearchPage};
pub use config::MispConfig;
pub use feeds::{FeedCounts, FeedIndex, FeedRule, FEED_COUNTS_KEY};
pub use schedule::{Mark, Schedule};
pub use source::MispSource;

/// The source's name (checkpoint key, metrics label).
pub const SOURCE_NAME: &str = "misp";

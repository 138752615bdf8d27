//! The web console (issue 15): login, dashboard, status, live log, runs, IOC search and settings,
//! served on its own listener (`console.listen`) from `iocsync run` (with control of the running
//! pipeline) or from `iocsync console` (read-only, beside a daemon or alone).
//!
//! - [`cli`] — `iocsync console` and `iocsync console hash-password`.
//! - [`config`] — the `console.*` section.
//! - [`auth`] — password hashing, sessions, CSRF, the login rate limit.
//! - [`server`] — the router, the login and security middleware, the handlers.
//! - [`data`] — the facts behind each page, gathered from the state, the metrics and `check`.
//! - `dashboard` — the dashboard's figures, counted in the background, never on a request.
//! - `status` — the Status page and its per-row re-check.
//! - [`s1view`] — SentinelOne's view of the IOCs, marked against the state.
//! - [`pages`] — the HTML (maud), one function per page.
//! - [`settings`] — every effective setting with its source, secrets masked, and the MISP
//!   settings the console edits; `edit` serves and stores them, `settings_page` renders them.

pub mod auth;
pub mod cli;
pub mod config;
mod dashboard;
pub mod data;
mod edit;
mod gate;
pub mod pages;
pub mod s1view;
pub mod server;
pub mod settings;
mod settings_page;
mod status;

pub use server::{start, start_for_daemon, ConsoleHandle, ConsoleOptions};

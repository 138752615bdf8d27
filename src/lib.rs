//! iocsync: one headless daemon that moves threat-intel indicators from OpenCTI live streams or MISP
//! into the tools that block and detect (SentinelOne, Sekoia.io, Zeek, JSONL).
//!
//! # Layout
//!
//! - [`pattern`] — the STIX 2.1 patterning grammar (nom) → typed AST with spans, canonical printing,
//!   and classification of a pattern into an [`ioc::Ioc`] or a [`skip::SkipReason`].
//! - [`ioc`] — the IOC kinds and the normalisation/validation rules of each.
//! - [`skip`] — every reason an event does not become an IOC, with stable codes.
//! - [`model`] — the events, indicator states and metadata that flow between stages.
//! - [`pipeline`] — the flow from source events to sink calls, one stage per file:
//!   [`pipeline::classify`] (a STIX object → an indicator's desired IOCs and metadata, or a named
//!   skip), [`pipeline::plan`] (desired IOCs vs what each sink holds → ref-counted
//!   create/update/delete changes, intents written first), [`pipeline::apply`] (changes to a sink
//!   in batches, retries, outcomes, dead letters); `pipeline/mod.rs` batches events, overlaps
//!   planning with applying, accounts for every event and moves checkpoints.
//! - [`state`] — the SQLite state: checkpoint, indicators, holders, sink entries, intents, runs,
//!   expiry index; one file per concern under `state/`.
//! - [`config`] — figment: defaults < config.yml < env (OpenCTI connector names), validation.
//! - [`app`] — the commands behind the CLI (run, check, state, runs).
//! - [`cli`] — the subcommands' front-ends: `s1 list|add|update|delete` (the SentinelOne IOC manager
//!   for analysts), `misp feeds`, `state`, `runs`, `parse`.
//! - [`sources`] — the `Source` trait and one folder per source (OpenCTI stream, MISP, file).
//! - [`sinks`] — the `Sink` trait and one folder per destination (SentinelOne, Sekoia, Zeek, JSONL).
//! - [`remote`] — URL joining, HTTP client building, `Retry-After` parsing shared by remote clients.
//! - [`secret`] — the newtype that keeps tokens out of logs.
//! - [`metrics`] — the Prometheus registry every component counts into.
//! - [`http`] — the `/metrics`, `/healthz` and `/readyz` server (`connector.expose_metrics`).
//! - [`fuzz`] — the properties every decoder of outside bytes must keep, shared by the cargo-fuzz
//!   targets and the bounded property tests in CI.

pub mod app;
pub mod cli;
pub mod config;
pub mod console;
pub mod control;
pub mod fuzz;
pub mod http;
pub mod ioc;
mod lenient;
pub mod logring;
pub mod metrics;
pub mod model;
pub mod pattern;
pub mod pipeline;
pub mod reconcile;
pub mod remote;
pub mod secret;
pub mod sinks;
pub mod skip;
pub mod sources;
pub mod state;

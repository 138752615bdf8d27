//! `iocsync misp feeds`: lists the MISP server's feeds with their state in MISP, whether iocsync
//! pushes their attributes and what decided it (a console toggle, `misp.disabled_feeds`, or
//! nothing), and how many attributes each contributed to the last run (the counts the MISP source
//! stores in the state at the end of every run). The console's settings page shows the same rows.

use crate::app::AppError;
use crate::config::{Config, ConfigError, Problem, Valid};
use crate::sources::misp::overrides::Overrides;
use crate::sources::misp::wire::Feed;
use crate::sources::misp::{
    FeedCounts, FeedIndex, MispClient, MispConfig, MispError, FEED_COUNTS_KEY,
};
use crate::state::{State, StateError};
use clap::Subcommand;
use serde::Serialize;
use std::io::Write;

/// `iocsync misp …`.
#[derive(Debug, Clone, Subcommand)]
pub enum MispCommand {
    /// List MISP feeds: enabled in MISP, pushed or disabled in iocsync, attributes last run.
    Feeds {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// One row of `iocsync misp feeds`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FeedRow {
    /// Feed id.
    pub id: String,
    /// Feed name.
    pub name: String,
    /// Provider.
    pub provider: Option<String>,
    /// Enabled in MISP.
    pub enabled_in_misp: bool,
    /// False when iocsync holds the feed's attributes back.
    pub pushed_by_iocsync: bool,
    /// What decided it: `console`, `misp.disabled_feeds` or `default`.
    pub decided_by: &'static str,
    /// For a console toggle: who set it and when.
    pub toggled_by: Option<String>,
    /// Attributes linked to this feed in the last run.
    pub last_run_attributes: u64,
    /// Of those, held back because the feed is disabled in iocsync.
    pub last_run_ignored: u64,
}

/// What the command prints.
#[derive(Debug, Clone, Serialize)]
pub struct FeedsReport {
    /// Start of the last run, when one was recorded.
    pub last_run: Option<String>,
    /// Attributes of the last run linked to no feed.
    pub last_run_unlinked: u64,
    /// `misp.disabled_feeds` entries that match no feed.
    pub unknown_disabled: Vec<String>,
    /// One row per feed.
    pub feeds: Vec<FeedRow>,
}

fn auth_or_other(e: MispError) -> AppError {
    match e {
        MispError::Auth { .. } => AppError::Auth(format!("misp: {e}")),
        other => AppError::Other(format!("misp: {other}")),
    }
}

/// Builds the report: feeds from the server, counts from the state.
pub async fn feeds_report(cfg: &Config) -> Result<FeedsReport, AppError> {
    let section = Valid::new(cfg.misp.clone())?;
    let client = MispClient::new(&section).map_err(|e| match e {
        MispError::Setup(e) => AppError::Config(ConfigError::Invalid(vec![Problem {
            key: e.key().to_string(),
            message: format!("misp: {e}"),
        }])),
        e => AppError::Other(format!("misp: {e}")),
    })?;
    let feeds = client.feeds().await.map_err(auth_or_other)?;
    let state = State::open(&cfg.state.dir)?;
    Ok(build_report(feeds, &cfg.misp, Some(&state))?)
}

/// The report for `feeds` as the MISP source sees them: the config's disabled list with the
/// console's toggles (from `state`) over it, and the last run's counts.
pub fn build_report(
    feeds: Vec<Feed>,
    misp: &MispConfig,
    state: Option<&State>,
) -> Result<FeedsReport, StateError> {
    let (index, unknown) = FeedIndex::new(feeds, &misp.disabled_feed_list());
    let (counts, overrides) = match state {
        Some(state) => (
            state
                .kv_get(FEED_COUNTS_KEY)?
                .and_then(|text| serde_json::from_str::<FeedCounts>(&text).ok()),
            Overrides::read(state)?,
        ),
        None => (None, Overrides::default()),
    };
    let (index, _) = index.with_toggles(&overrides.pushed_by_id());
    let counts_ref = counts.as_ref();
    let rows = index
        .feeds()
        .iter()
        .map(|f| FeedRow {
            id: f.id.clone(),
            name: f.name.clone(),
            provider: f.provider.clone(),
            enabled_in_misp: f.enabled,
            pushed_by_iocsync: !index.is_disabled(f),
            decided_by: index.rule(f).label(),
            toggled_by: overrides
                .feeds
                .get(&f.id)
                .map(|t| format!("{} at {}", t.set.by, t.set.at)),
            last_run_attributes: counts_ref
                .and_then(|c| c.by_feed.get(&f.id).copied())
                .unwrap_or(0),
            last_run_ignored: counts_ref
                .and_then(|c| c.ignored.get(&f.id).copied())
                .unwrap_or(0),
        })
        .collect();
    Ok(FeedsReport {
        last_run: counts_ref.map(|c| c.run_started.clone()),
        last_run_unlinked: counts_ref.map_or(0, |c| c.unlinked),
        unknown_disabled: unknown,
        feeds: rows,
    })
}

/// Runs a `misp` subcommand, writing to `out`.
pub async fn run(cfg: &Config, cmd: MispCommand, out: &mut impl Write) -> Result<(), AppError> {
    let io = crate::app::output_error;
    match cmd {
        MispCommand::Feeds { json } => {
            let report = feeds_report(cfg).await?;
            if json {
                let text = serde_json::to_string_pretty(&report)
                    .map_err(|e| AppError::Other(e.to_string()))?;
                writeln!(out, "{text}").map_err(io)?;
                return Ok(());
            }
            write_table(&report, out).map_err(io)
        }
    }
}

fn write_table(r: &FeedsReport, out: &mut impl Write) -> std::io::Result<()> {
    if r.feeds.is_empty() {
        writeln!(out, "this MISP has no feeds")?;
    } else {
        let width = r
            .feeds
            .iter()
            .map(|f| f.name.chars().count())
            .max()
            .unwrap_or(4)
            .clamp(4, 48);
        writeln!(
            out,
            "{:>5}  {:<width$}  {:<8}  {:<8}  {:<19}  {:>9}  {:>7}",
            "id", "name", "misp", "iocsync", "decided by", "last run", "ignored"
        )?;
        for f in &r.feeds {
            let name: String = f.name.chars().take(width).collect();
            writeln!(
                out,
                "{:>5}  {:<width$}  {:<8}  {:<8}  {:<19}  {:>9}  {:>7}",
                f.id,
                name,
                if f.enabled_in_misp {
                    "enabled"
                } else {
                    "disabled"
                },
                if f.pushed_by_iocsync {
                    "pushed"
                } else {
                    "disabled"
                },
                f.decided_by,
                f.last_run_attributes,
                f.last_run_ignored
            )?;
        }
    }
    match &r.last_run {
        Some(t) => writeln!(
            out,
            "last run started {t}; {} attributes linked to no feed",
            r.last_run_unlinked
        )?,
        None => writeln!(out, "no MISP run recorded yet")?,
    }
    let toggled: Vec<String> = r
        .feeds
        .iter()
        .filter_map(|f| f.toggled_by.as_ref().map(|by| format!("{} ({by})", f.id)))
        .collect();
    if !toggled.is_empty() {
        writeln!(
            out,
            "toggled in the web console (over misp.disabled_feeds): {}",
            toggled.join(", ")
        )?;
    }
    if !r.unknown_disabled.is_empty() {
        writeln!(
            out,
            "warning: misp.disabled_feeds names no feed here: {}",
            r.unknown_disabled.join(", ")
        )?;
    }
    Ok(())
}

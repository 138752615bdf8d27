//! `iocsync s1 list|add|update|delete`: analysts' hands-on access to SentinelOne's IOC store, through
//! the same client, config section (`sentinelone_intel`, `SENTINELONE_INTEL_*`) and state database as
//! the SentinelOne sink.
//!
//! - [`pattern`] — the `%` wildcard filters.
//! - [`select`] — filters → S1 list queries (server-side narrowing) + the client-side test.
//! - [`values`] — typed values → S1 type and normalised value, refusing invalid or ambiguous ones.
//! - [`output`] — table (80 columns), JSON and CSV.
//! - [`cache`] — the last complete listing, for `list --offline`.
//! - [`list`], [`add`], [`update`], [`delete`] — the commands.

pub mod add;
pub mod cache;
pub mod delete;
pub mod list;
pub mod output;
pub mod pattern;
pub mod select;
pub mod update;
pub mod values;

use crate::app::AppError;
use crate::config::{Config, Valid};
use crate::remote::RemoteFailure;
use crate::sinks::sentinelone::{S1Error, S1Type, SentinelOneClient};
use clap::{Args, Subcommand};
use output::Format;
use std::io::{BufRead, Write};
use std::path::PathBuf;

/// The `iocsync s1` subcommands.
#[derive(Debug, Subcommand)]
pub enum S1Command {
    /// List IOCs in the configured scope (filters take `%` as a wildcard).
    List(ListArgs),
    /// Add IOCs (type detected unless --type).
    Add(AddArgs),
    /// Change an IOC's validity, name, description or score.
    Update(UpdateArgs),
    /// Delete IOCs after showing them and asking for confirmation.
    Delete(DeleteArgs),
}

/// Filters shared by `list` and `delete`.
#[derive(Debug, Clone, Default, Args)]
pub struct CommonFilters {
    /// Name pattern (`%` wildcard; without `%` the whole name must match; case-insensitive).
    #[arg(long, value_name = "P")]
    pub name: Option<String>,
    /// Creator pattern (S1's `creator` field).
    #[arg(long, value_name = "P")]
    pub user: Option<String>,
    /// Description pattern.
    #[arg(long, value_name = "P")]
    pub description: Option<String>,
    /// IOC type: DNS, IPV4, IPV6, MD5, SHA1, SHA256, URL (also `domain`).
    #[arg(long = "type", value_name = "T", value_parser = values::parse_type)]
    pub kind: Option<S1Type>,
    /// Source pattern (S1's `source` field).
    #[arg(long, value_name = "S")]
    pub source: Option<String>,
}

/// `iocsync s1 list`.
#[derive(Debug, Clone, Default, Args)]
pub struct ListArgs {
    /// Value pattern (`%evil%`, `evil%`; without `%` an exact value).
    #[arg(long, value_name = "P")]
    pub value: Option<String>,
    /// externalId (the indicator id the sink stored), or a pattern.
    #[arg(long, value_name = "ID")]
    pub external_id: Option<String>,
    /// The filters every selecting command shares.
    #[command(flatten)]
    pub filters: CommonFilters,
    /// Show at most N IOCs.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Answer from the last complete listing kept in the state database, without the API.
    #[arg(long)]
    pub offline: bool,
}

/// `iocsync s1 add`.
#[derive(Debug, Clone, Default, Args)]
pub struct AddArgs {
    /// Values to add (hash, IP, domain, URL).
    #[arg(value_name = "VALUE", required_unless_present = "from_file")]
    pub values: Vec<String>,
    /// Type of every value (default: detected per value).
    #[arg(long = "type", value_name = "T", value_parser = values::parse_type)]
    pub kind: Option<S1Type>,
    /// Name (default: the value).
    #[arg(long)]
    pub name: Option<String>,
    /// Description.
    #[arg(long)]
    pub description: Option<String>,
    /// Risk score 0–100 (default: sentinelone_intel.default_score, 100).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub score: Option<u8>,
    /// Days of validity (default 30; S1 caps IPs at 30 and others at 180).
    #[arg(long, value_name = "N", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=180))]
    pub valid_days: u32,
    /// The `source` field (default "iocsync").
    #[arg(long, value_name = "S")]
    pub source: Option<String>,
    /// Read more values from a file, one per line (`#` comments and blank lines skipped; `-` is
    /// stdin).
    #[arg(long, value_name = "F")]
    pub from_file: Option<PathBuf>,
    /// Output format of what was created.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// `iocsync s1 update`.
#[derive(Debug, Clone, Default, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["uuid", "value"])))]
pub struct UpdateArgs {
    /// The IOC's uuid.
    #[arg(long, value_name = "U")]
    pub uuid: Option<String>,
    /// The IOC's exact value (must select one IOC; add --type when a value has several types).
    #[arg(long, value_name = "V")]
    pub value: Option<String>,
    /// Narrows --value to one type.
    #[arg(long = "type", value_name = "T", value_parser = values::parse_type, requires = "value")]
    pub kind: Option<S1Type>,
    /// New validity: N days from now (capped by S1 at 30 for IPs, 180 otherwise).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=180))]
    pub valid_days: Option<u32>,
    /// New name.
    #[arg(long)]
    pub name: Option<String>,
    /// New description.
    #[arg(long)]
    pub description: Option<String>,
    /// New risk score 0–100.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub score: Option<u8>,
    /// Output format of the updated IOC.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// `iocsync s1 delete`.
#[derive(Debug, Clone, Default, Args)]
#[command(group(
    clap::ArgGroup::new("selector")
        .required(true)
        .multiple(true)
        .args(["uuid", "value", "external_id", "name", "user", "description", "kind", "source"])
))]
pub struct DeleteArgs {
    /// Uuids to delete.
    #[arg(long, value_name = "U", num_args = 1..)]
    pub uuid: Vec<String>,
    /// Values (or `%` patterns) to delete.
    #[arg(long, value_name = "V", num_args = 1..)]
    pub value: Vec<String>,
    /// externalIds (or patterns) to delete.
    #[arg(long, value_name = "ID", num_args = 1..)]
    pub external_id: Vec<String>,
    /// The filters every selecting command shares.
    #[command(flatten)]
    pub filters: CommonFilters,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Show what would be deleted and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Format of the preview.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Where a command reads answers and writes results (the process's streams, or buffers in tests).
pub struct Io<'a> {
    /// Results.
    pub out: &'a mut dyn Write,
    /// Notes, warnings and prompts.
    pub err: &'a mut dyn Write,
    /// Answers to prompts (and `add --from-file -`).
    pub input: &'a mut dyn BufRead,
}

/// An output failure as a command error (a closed pipe ends the command quietly).
pub(crate) fn io_err(e: std::io::Error) -> AppError {
    crate::app::output_error(e)
}

/// An S1 failure as a command error: 401/403 exit 3, a refused unsafe call exit 2, others exit 1.
pub(crate) fn s1_err(e: S1Error) -> AppError {
    AppError::from(e.to_sink_error())
}

/// Runs a subcommand on the process's stdin / stdout / stderr.
pub async fn run(cfg: &Config, cmd: S1Command) -> Result<(), AppError> {
    // Unlocked handles: holding the std locks across awaits could block the runtime's workers
    // when they log to stderr.
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let mut input = std::io::stdin().lock();
    let mut io = Io {
        out: &mut out,
        err: &mut err,
        input: &mut input,
    };
    execute(cfg, cmd, &mut io).await
}

/// Validates the `sentinelone_intel` section (only it: no source is needed) and runs `cmd`.
pub async fn execute(cfg: &Config, cmd: S1Command, io: &mut Io<'_>) -> Result<(), AppError> {
    let section = Valid::new(cfg.sentinelone_intel.clone())?;
    let client = SentinelOneClient::new(&section)?;
    match cmd {
        S1Command::List(args) => list::run(cfg, &client, &args, io).await,
        S1Command::Add(args) => add::run(cfg, &client, &args, io).await,
        S1Command::Update(args) => update::run(cfg, &client, &args, io).await,
        S1Command::Delete(args) => delete::run(&client, &args, io).await,
    }
}

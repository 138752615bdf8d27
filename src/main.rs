//! The `iocsync` command line: parses arguments, sets up logging, and calls the library.

use clap::{Parser, Subcommand};
use iocsync::app::{self, AppError, RunOptions};
use iocsync::config::Config;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// Threat-intel indicator sync: OpenCTI live streams and MISP into SentinelOne, Sekoia.io, Zeek, JSONL.
#[derive(Parser)]
#[command(name = "iocsync", version, about)]
struct Cli {
    /// Config file (default: $IOCSYNC_CONFIG, else ./config.yml if it exists, else environment only).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Log format (overrides log.format).
    #[arg(long, global = true, value_parser = ["text", "json"])]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the configured source into its sinks until stopped (a file source stops at its end).
    Run {
        /// One pass and exit (MISP: one poll; OpenCTI: until caught up).
        #[arg(long)]
        once: bool,
        /// Run the shipped sample stream into ./iocsync-demo/ (JSONL and Zeek files); no server needed.
        #[arg(long)]
        demo: bool,
    },
    /// Validate the configuration and probe every configured endpoint.
    Check,
    /// Ask the running daemon's /readyz (on http.bind and connector.metrics_port): exit 0 ready,
    /// 1 otherwise (a container HEALTHCHECK).
    Health,
    /// Parse STIX patterns (arguments, or one per line on stdin) and print one JSON object per line.
    Parse {
        /// Patterns; none or `-` reads stdin.
        patterns: Vec<String>,
    },
    /// Show or clear the durable state.
    State {
        #[command(subcommand)]
        action: StateAction,
    },
    /// History of the last 20 runs.
    Runs {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// SentinelOne IOC manager: list, add, update, delete IOCs by hand.
    S1 {
        #[command(subcommand)]
        command: iocsync::cli_s1::S1Command,
    },
    /// MISP helpers (feeds and their state in iocsync).
    Misp {
        #[command(subcommand)]
        action: iocsync::cli_misp::MispCommand,
    },
    /// Serve the web console read-only on console.listen (beside a running daemon or alone).
    Console {
        #[command(subcommand)]
        action: Option<iocsync::console::cli::ConsoleCommand>,
    },
}

#[derive(Subcommand)]
enum StateAction {
    /// Print checkpoints, counts and pending changes.
    Show {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Clear the checkpoint, id maps, intents and run history.
    Reset {
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

fn config_path(cli: &Cli) -> Option<PathBuf> {
    cli.config
        .clone()
        .or_else(|| std::env::var_os("IOCSYNC_CONFIG").map(PathBuf::from))
        .or_else(|| {
            let local = PathBuf::from("config.yml");
            local.exists().then_some(local)
        })
}

fn load_config(cli: &Cli) -> Result<Config, AppError> {
    Ok(Config::load(config_path(cli).as_deref(), std::env::vars())?)
}

fn init_logging(level: Option<String>, json: bool) {
    let level = match level.as_deref() {
        Some("warning") => "warn".to_string(),
        Some(l) => l.to_string(),
        None => "info".to_string(),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("IOCSYNC_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},hyper=warn,reqwest=warn,rustls=warn"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    // Every line also goes to the in-memory ring behind the live console and the run logs.
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    if json {
        builder
            .json()
            .flatten_event(true)
            .finish()
            .with(iocsync::logring::layer())
            .init();
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .finish()
            .with(iocsync::logring::layer())
            .init();
    }
}

fn main() {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Health) {
        std::process::exit(health(&cli));
    }
    let code = match real_main(cli) {
        Ok(()) => 0,
        // The reader of our output went away (`| head`): what it wanted it has; nothing to report.
        Err(AppError::OutputClosed) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    };
    std::process::exit(code);
}

/// `iocsync health`: 0 ready, 1 for anything else (Docker reserves 2 in a HEALTHCHECK).
fn health(cli: &Cli) -> i32 {
    let answer = load_config(cli).and_then(|cfg| {
        if !cfg.connector.expose_metrics {
            return Err(AppError::Other(
                "the metrics endpoint is off: set CONNECTOR_EXPOSE_METRICS=true to serve /readyz"
                    .into(),
            ));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| AppError::Other(format!("failed to start the async runtime: {e}")))?;
        runtime
            .block_on(iocsync::http::probe_ready(
                &cfg.http.bind,
                cfg.connector.metrics_port,
                std::time::Duration::from_secs(5),
            ))
            .map_err(|e| AppError::Other(format!("not ready: {e}")))
    });
    match answer {
        Ok(report) => {
            let _ = writeln!(std::io::stdout(), "ready: {}", report.trim_end());
            0
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e}");
            1
        }
    }
}

fn real_main(cli: Cli) -> Result<(), AppError> {
    if let Command::Parse { patterns } = &cli.command {
        return parse_command(patterns);
    }
    if let Command::Console { action: Some(a) } = &cli.command {
        return iocsync::console::cli::offline(a);
    }
    let demo = matches!(cli.command, Command::Run { demo: true, .. });
    let cfg = if demo {
        app::demo_config(&app::demo_dir())?
    } else {
        load_config(&cli)?
    };
    let json_logs = cli
        .log_format
        .as_deref()
        .map(|f| f == "json")
        .unwrap_or_else(|| cfg.json_logs());
    init_logging(cfg.log_level(), json_logs);
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| AppError::Other(format!("failed to start the async runtime: {e}")))?;
    let config_file = config_path(&cli);
    runtime.block_on(async move {
        match cli.command {
            Command::Run { once, .. } => {
                let token = CancellationToken::new();
                app::spawn_signal_handler(token.clone());
                let stats = app::run(&cfg, RunOptions { once, control: None }, token).await?;
                let mut out = std::io::stdout();
                writeln!(out, "{}", stats.render().trim_end()).map_err(app::output_error)?;
                if demo {
                    let dir = app::demo_dir();
                    writeln!(out, "demo outputs: {0}/iocs.jsonl (JSONL sink), {0}/intel.dat (Zeek intel file)", dir.display()).map_err(app::output_error)?;
                }
                Ok(())
            }
            Command::Check => app::check(&cfg, &mut std::io::stdout()).await,
            Command::State { action } => state_command(&cfg, action, &mut std::io::stdout().lock()),
            Command::Runs { json } => runs_command(&cfg, json, &mut std::io::stdout().lock()),
            Command::S1 { command } => iocsync::cli_s1::run(&cfg, command).await,
            Command::Misp { action } => {
                iocsync::cli_misp::run(&cfg, action, &mut std::io::stdout()).await
            }
            Command::Console { .. } => {
                iocsync::console::cli::serve(&cfg, config_file).await
            }
            Command::Parse { .. } | Command::Health => Ok(()),
        }
    })
}

/// `iocsync parse`: one JSON line per argument, or per stdin line (none given, or `-`); the
/// library streams it (`iocsync::pattern::write_reports`).
fn parse_command(patterns: &[String]) -> Result<(), AppError> {
    // The lock is taken once; the library writes whole blocks of lines and flushes each.
    let stdout = std::io::stdout().lock();
    let written = if patterns.is_empty() || patterns == ["-"] {
        // `Stdin`, not its lock: the library reads on its own thread (one lock per 64 KiB read).
        let stdin =
            std::io::BufReader::with_capacity(iocsync::pattern::BLOCK_BYTES, std::io::stdin());
        iocsync::pattern::write_reports(stdin, stdout, iocsync::pattern::default_threads())
    } else {
        iocsync::pattern::write_arg_reports(patterns, stdout)
    };
    match written {
        Ok(_) => Ok(()),
        Err(iocsync::pattern::StreamError::Write(e)) => Err(app::output_error(e)),
        Err(e) => Err(AppError::Other(e.to_string())),
    }
}

fn state_command(cfg: &Config, action: StateAction, out: &mut impl Write) -> Result<(), AppError> {
    match action {
        StateAction::Show { json } => {
            let o = match app::read_state(cfg)? {
                Some(state) => state.overview()?,
                None => iocsync::state::Overview {
                    path: cfg
                        .state
                        .dir
                        .join(iocsync::state::DB_FILE)
                        .display()
                        .to_string(),
                    checkpoints: Vec::new(),
                    indicators: 0,
                    sinks: Vec::new(),
                    pending_intents: 0,
                },
            };
            if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&o).map_err(|e| AppError::Other(e.to_string()))?
                )
                .map_err(app::output_error)?;
                return Ok(());
            }
            writeln!(out, "state: {}", o.path).map_err(app::output_error)?;
            if o.checkpoints.is_empty() {
                writeln!(
                    out,
                    "checkpoint: none (the next run starts from the beginning)"
                )
                .map_err(app::output_error)?;
            }
            for (source, position, updated) in &o.checkpoints {
                let when = chrono::DateTime::from_timestamp_millis(*updated)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default();
                writeln!(out, "checkpoint {source}: {position} (written {when})")
                    .map_err(app::output_error)?;
            }
            writeln!(out, "indicators with IOCs: {}", o.indicators).map_err(app::output_error)?;
            for (sink, live, pending, rejected) in &o.sinks {
                writeln!(
                    out,
                    "sink {sink}: {live} live, {pending} pending, {rejected} rejected"
                )
                .map_err(app::output_error)?;
            }
            writeln!(out, "pending intents: {}", o.pending_intents).map_err(app::output_error)?;
            Ok(())
        }
        StateAction::Reset { yes } => {
            let state = app::open_state(cfg)?;
            if !yes {
                eprint!(
                    "clear the checkpoint, id maps and run history in {}? [y/N] ",
                    state.path().display()
                );
                let mut answer = String::new();
                std::io::stdin()
                    .read_line(&mut answer)
                    .map_err(|e| AppError::Other(format!("failed to read the answer: {e}")))?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    writeln!(out, "state left as it was").map_err(app::output_error)?;
                    return Ok(());
                }
            }
            state.reset()?;
            writeln!(out, "state cleared: the next run starts from the beginning")
                .map_err(app::output_error)?;
            Ok(())
        }
    }
}

fn runs_command(cfg: &Config, json: bool, out: &mut impl Write) -> Result<(), AppError> {
    let runs = match app::read_state(cfg)? {
        Some(state) => state.runs()?,
        None => Vec::new(),
    };
    if json {
        let list: Vec<_> = runs.iter().map(|r| &r.stats).collect();
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&list).map_err(|e| AppError::Other(e.to_string()))?
        )
        .map_err(app::output_error)?;
        return Ok(());
    }
    if runs.is_empty() {
        writeln!(out, "no runs recorded yet").map_err(app::output_error)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<20} {:>8} {:>7} {:>9} {:>7} {:>6} {:>6}  skipped by reason",
        "started", "source", "secs", "received", "pushed", "dead", "errors"
    )
    .map_err(app::output_error)?;
    for r in runs {
        let s: iocsync::pipeline::RunStats =
            serde_json::from_value(r.stats.clone()).unwrap_or_default();
        let pushed: u64 = s
            .sinks
            .values()
            .map(|k| {
                k.created.values().sum::<u64>()
                    + k.deleted.values().sum::<u64>()
                    + k.updated.values().sum::<u64>()
            })
            .sum();
        let skipped: Vec<String> = s.skipped.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let started = chrono::DateTime::from_timestamp_millis(r.started_ms)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        writeln!(
            out,
            "{:<20} {:>8} {:>7.1} {:>9} {:>7} {:>6} {:>6}  {}",
            started,
            r.source,
            (r.ended_ms - r.started_ms) as f64 / 1000.0,
            s.received,
            pushed,
            s.dead_lettered,
            s.errors.len(),
            skipped.join(" ")
        )
        .map_err(app::output_error)?;
    }
    Ok(())
}

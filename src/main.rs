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
        /// After `reconcile --adopt`: replay the source into the state only (one pass, no sink
        /// called); `reconcile --apply` then sends each sink only the difference.
        #[arg(long, conflicts_with = "demo")]
        state_only: bool,
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
        action: iocsync::cli::state::StateAction,
    },
    /// History of the last 20 runs.
    Runs {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The life of an indicator, or of every indicator holding an IOC value: events, skips,
    /// changes per sink and their outcomes, and where the value stands in each sink.
    Explain {
        /// An indicator id, or an IOC value.
        query: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compare each sink with the state: in sync, missing, extra, stale, not managed (exit 4 on
    /// drift); --apply repairs, --adopt rebuilds a lost state from the sinks.
    Reconcile {
        /// Only this sink (repeatable); default every configured sink.
        #[arg(long = "sink", value_name = "NAME")]
        sinks: Vec<String>,
        /// Repair the drift through the pipeline's intents.
        #[arg(long, conflicts_with = "adopt")]
        apply: bool,
        /// Rebuild the state's sink entries from what the sinks hold with iocsync's marker.
        #[arg(long)]
        adopt: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// SentinelOne IOC manager: list, add, update, delete IOCs by hand.
    S1 {
        #[command(subcommand)]
        command: iocsync::cli::s1::S1Command,
    },
    /// MISP helpers (feeds and their state in iocsync).
    Misp {
        #[command(subcommand)]
        action: iocsync::cli::misp::MispCommand,
    },
    /// Serve the web console read-only on console.listen (beside a running daemon or alone).
    Console {
        #[command(subcommand)]
        action: Option<iocsync::console::cli::ConsoleCommand>,
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
        return iocsync::cli::parse::run(patterns);
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
            Command::Run {
                once, state_only, ..
            } => {
                let token = CancellationToken::new();
                app::spawn_signal_handler(token.clone());
                let stats = app::run(
                    &cfg,
                    RunOptions {
                        once,
                        control: None,
                        state_only,
                    },
                    token,
                )
                .await?;
                let mut out = std::io::stdout();
                writeln!(out, "{}", stats.render().trim_end()).map_err(app::output_error)?;
                if demo {
                    let dir = app::demo_dir();
                    writeln!(out, "demo outputs: {0}/iocs.jsonl (JSONL sink), {0}/intel.dat (Zeek intel file)", dir.display()).map_err(app::output_error)?;
                }
                Ok(())
            }
            Command::Check => app::check(&cfg, &mut std::io::stdout()).await,
            Command::State { action } => iocsync::cli::state::run(
                &cfg,
                action,
                &mut std::io::stdout().lock(),
                &mut std::io::stdin().lock(),
            ),
            Command::Runs { json } => iocsync::cli::runs::run(&cfg, json, &mut std::io::stdout().lock()),
            Command::Explain { query, json } => {
                iocsync::cli::explain::command(&cfg, &query, json, &mut std::io::stdout().lock())
            }
            Command::S1 { command } => iocsync::cli::s1::run(&cfg, command).await,
            Command::Misp { action } => {
                iocsync::cli::misp::run(&cfg, action, &mut std::io::stdout()).await
            }
            Command::Reconcile {
                sinks,
                apply,
                adopt,
                json,
            } => {
                let token = CancellationToken::new();
                app::spawn_signal_handler(token.clone());
                let opts = iocsync::reconcile::Options { sinks, apply, adopt };
                let drift =
                    iocsync::cli::reconcile::run(&cfg, &opts, json, token, &mut std::io::stdout())
                        .await?;
                if drift {
                    std::process::exit(iocsync::reconcile::EXIT_DRIFT);
                }
                Ok(())
            }
            Command::Console { .. } => {
                iocsync::console::cli::serve(&cfg, config_file).await
            }
            Command::Parse { .. } | Command::Health => Ok(()),
        }
    })
}

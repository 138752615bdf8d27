//! `iocsync console` (serve the console read-only until Ctrl-C) and
//! `iocsync console hash-password` (print the argon2id PHC string of a password read from stdin).

use super::server::{start, ConsoleOptions};
use crate::app::AppError;
use crate::config::Config;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

/// `iocsync console` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ConsoleCommand {
    /// Read a password from stdin and print its argon2id PHC string for
    /// IOCSYNC_CONSOLE_PASSWORD_HASH.
    HashPassword,
}

/// Commands that need no configuration.
pub fn offline(cmd: &ConsoleCommand) -> Result<(), AppError> {
    match cmd {
        ConsoleCommand::HashPassword => hash_password_command(),
    }
}

fn hash_password_command() -> Result<(), AppError> {
    let stdin = std::io::stdin();
    let line = if stdin.is_terminal() {
        // On a terminal the password is typed without echo.
        rpassword::prompt_password("password: ").map_err(|e| {
            AppError::Other(format!("cannot read the password from the terminal: {e}"))
        })?
    } else {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| AppError::Other(format!("cannot read the password from stdin: {e}")))?;
        line
    };
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(AppError::Other("empty password on stdin".into()));
    }
    let phc = super::auth::hash_password(password).map_err(|e| AppError::Other(e.to_string()))?;
    writeln!(std::io::stdout(), "{phc}").map_err(crate::app::output_error)
}

/// `iocsync console`: serves the console read-only (no control, no edits) until SIGINT/SIGTERM.
pub async fn serve(cfg: &Config, config_file: Option<PathBuf>) -> Result<(), AppError> {
    let opts = ConsoleOptions {
        control: None,
        config_file,
        env_names: std::env::vars().map(|(k, _)| k).collect(),
    };
    let handle = start(cfg, opts).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    crate::app::spawn_signal_handler(stop.clone());
    println!(
        "iocsync console on http://{} (read-only)",
        handle.local_addr()
    );
    stop.cancelled().await;
    handle.stop().await;
    Ok(())
}

//! `iocsync parse`: STIX patterns in, one JSON report per pattern out.

use crate::app::{self, AppError};

/// `iocsync parse`: one JSON line per argument, or per stdin line (none given, or `-`); the
/// library streams it (`crate::pattern::write_reports`).
pub fn run(patterns: &[String]) -> Result<(), AppError> {
    // The lock is taken once; the library writes whole blocks of lines and flushes each.
    let stdout = std::io::stdout().lock();
    let written = if patterns.is_empty() || patterns == ["-"] {
        // `Stdin`, not its lock: the library reads on its own thread (one lock per 64 KiB read).
        let stdin =
            std::io::BufReader::with_capacity(crate::pattern::BLOCK_BYTES, std::io::stdin());
        crate::pattern::write_reports(stdin, stdout, crate::pattern::default_threads())
    } else {
        crate::pattern::write_arg_reports(patterns, stdout)
    };
    match written {
        Ok(_) => Ok(()),
        Err(crate::pattern::StreamError::Write(e)) => Err(app::output_error(e)),
        Err(e) => Err(AppError::Other(e.to_string())),
    }
}

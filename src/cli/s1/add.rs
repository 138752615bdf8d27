//! `iocsync s1 add`: validates every value first (nothing is sent if one is refused), then creates
//! the IOCs in batches of `sentinelone_intel.batch_size` and prints what S1 created, with uuids.

use super::{io_err, output, s1_err, values, AddArgs, Io};
use crate::app::AppError;
use crate::config::Config;
use crate::sinks::sentinelone::item::{
    truncate_chars, valid_until, MAX_DESCRIPTION_CHARS, MAX_NAME_CHARS,
};
use crate::sinks::sentinelone::{IocItem, S1Type, SentinelOneClient};
use std::collections::HashSet;
use std::io::BufRead;

/// The `source` of IOCs added by hand when `--source` is not given.
pub const DEFAULT_SOURCE: &str = "iocsync";

/// The values of the command line and of `--from-file`, in order.
fn raw_values(args: &AddArgs, io: &mut Io<'_>) -> Result<Vec<String>, AppError> {
    let mut out = args.values.clone();
    let Some(path) = &args.from_file else {
        return Ok(out);
    };
    let text = if path.as_os_str() == "-" {
        let mut text = String::new();
        for line in io.input.lines() {
            let line = line
                .map_err(|e| AppError::Other(format!("failed to read values from stdin: {e}")))?;
            text.push_str(&line);
            text.push('\n');
        }
        text
    } else {
        std::fs::read_to_string(path).map_err(|e| {
            AppError::Other(format!(
                "failed to read values from `{}`: {e}",
                path.display()
            ))
        })?
    };
    out.extend(
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string),
    );
    Ok(out)
}

/// Keeps the exit code of an error and adds what had been done before it.
pub(crate) fn with_context(e: AppError, context: &str) -> AppError {
    match e {
        AppError::Auth(m) => AppError::Auth(format!("{m} ({context})")),
        AppError::Other(m) => AppError::Other(format!("{m} ({context})")),
        config => config,
    }
}

/// The items to create, or every refusal.
pub fn build_items(
    raws: &[String],
    args: &AddArgs,
    default_score: u8,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<IocItem>, Vec<String>> {
    let mut problems = Vec::new();
    let mut seen: HashSet<(S1Type, String)> = HashSet::new();
    let mut items = Vec::new();
    let source = args
        .source
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_SOURCE);
    for raw in raws {
        match values::detect_type(raw, args.kind) {
            Err(message) => problems.push(message),
            Ok((kind, value)) => {
                if !seen.insert((kind, value.clone())) {
                    continue;
                }
                let mut item = IocItem::new(kind, value.clone(), source);
                let name = args.name.as_deref().filter(|n| !n.trim().is_empty());
                item.name = Some(truncate_chars(name.unwrap_or(&value), MAX_NAME_CHARS));
                item.description = args
                    .description
                    .as_deref()
                    .filter(|d| !d.trim().is_empty())
                    .map(|d| truncate_chars(d, MAX_DESCRIPTION_CHARS));
                item.original_risk_score = Some(args.score.unwrap_or(default_score).min(100));
                item.valid_until = valid_until(kind, None, Some(args.valid_days), now);
                items.push(item);
            }
        }
    }
    if problems.is_empty() {
        Ok(items)
    } else {
        Err(problems)
    }
}

/// Runs `add`.
pub async fn run(
    cfg: &Config,
    client: &SentinelOneClient,
    args: &AddArgs,
    io: &mut Io<'_>,
) -> Result<(), AppError> {
    let raws = raw_values(args, io)?;
    let s1 = &cfg.sentinelone_intel;
    let items = build_items(&raws, args, s1.default_score, chrono::Utc::now()).map_err(|p| {
        AppError::Other(format!(
            "refused {} of {} values, nothing was added:\n{}",
            p.len(),
            raws.len(),
            p.iter()
                .map(|m| format!("  - {m}"))
                .collect::<Vec<_>>()
                .join("\n")
        ))
    })?;
    if items.is_empty() {
        return Err(AppError::Other("no values to add".into()));
    }
    let capped: Vec<&str> = S1Type::ALL
        .iter()
        .filter(|t| i64::from(args.valid_days) > t.max_valid_days())
        .filter(|t| items.iter().any(|i| i.kind == **t))
        .map(|t| t.as_str())
        .collect();
    if !capped.is_empty() {
        writeln!(
            io.err,
            "note: validity of {} IOCs capped at 30 days (SentinelOne's maximum for IPs)",
            capped.join("/")
        )
        .map_err(io_err)?;
    }
    let mut created = Vec::new();
    for chunk in items.chunks(s1.batch_size.max(1)) {
        match client.create(chunk).await {
            Ok(got) => {
                if got.len() != chunk.len() {
                    writeln!(
                        io.err,
                        "warning: sent {} IOCs, SentinelOne answered with {}",
                        chunk.len(),
                        got.len()
                    )
                    .map_err(io_err)?;
                }
                created.extend(got);
            }
            Err(e) => {
                if !created.is_empty() {
                    output::write(io.out, args.format, &created, Some(" created"))
                        .map_err(io_err)?;
                }
                let context = format!(
                    "{} of {} IOCs were created before the error",
                    created.len(),
                    items.len()
                );
                return Err(with_context(s1_err(e), &context));
            }
        }
    }
    output::write(io.out, args.format, &created, Some(" created")).map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_deduplicated_items_with_defaults() {
        let args = AddArgs {
            valid_days: 30,
            ..Default::default()
        };
        let now = chrono::Utc::now();
        let raws: Vec<String> = ["Evil.example", "evil.example.", "10.1.2.3"]
            .map(String::from)
            .to_vec();
        let items = build_items(&raws, &args, 100, now).expect("items");
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].name.as_deref(), Some("evil.example"));
        assert_eq!(items[0].source, "iocsync");
        assert_eq!(items[1].original_risk_score, Some(100));
        assert!(items[1].valid_until.is_some());
        let bad = build_items(&["x".into(), "1.2.3.4".into(), "y".into()], &args, 100, now)
            .expect_err("refused");
        assert_eq!(bad.len(), 2);
    }
}

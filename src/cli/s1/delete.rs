//! `iocsync s1 delete`: resolves the selection to concrete IOCs first, shows them, asks (unless
//! `--yes`), and deletes exactly those uuids, so the delete can never reach further than the list
//! the analyst confirmed. `--dry-run` stops after showing.

use super::pattern::Pattern;
use super::select::{self, value_pattern, Selector};
use super::{io_err, output, s1_err, DeleteArgs, Io};
use crate::app::AppError;
use crate::sinks::sentinelone::SentinelOneClient;

/// The selector of a `delete` command line.
pub fn selector(args: &DeleteArgs) -> Selector {
    let f = &args.filters;
    Selector {
        uuids: args
            .uuid
            .iter()
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect(),
        values: args.value.iter().map(|v| value_pattern(v)).collect(),
        external_ids: args.external_id.iter().map(|e| Pattern::new(e)).collect(),
        name: f.name.as_deref().map(Pattern::new),
        user: f.user.as_deref().map(Pattern::new),
        description: f.description.as_deref().map(Pattern::new),
        kind: f.kind,
        source: f.source.as_deref().map(Pattern::new),
    }
}

/// Runs `delete`.
pub async fn run(
    client: &SentinelOneClient,
    args: &DeleteArgs,
    io: &mut Io<'_>,
) -> Result<(), AppError> {
    let sel = selector(args);
    if sel.is_empty() {
        return Err(AppError::Other(
            "delete needs --uuid, --value, --external-id or a filter option".into(),
        ));
    }
    let fetched = select::fetch(client, &sel, None).await.map_err(s1_err)?;
    if fetched.incomplete {
        writeln!(
            io.err,
            "warning: SentinelOne repeated a paging cursor; only the IOCs read before it are shown \
             and deleted"
        )
        .map_err(io_err)?;
    }
    for uuid in &sel.uuids {
        let known = fetched.items.iter().any(|i| {
            i.uuid
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case(uuid))
        });
        if !known {
            writeln!(io.err, "not found: {uuid}").map_err(io_err)?;
        }
    }
    let items: Vec<_> = fetched
        .items
        .into_iter()
        .filter(|i| i.uuid.as_deref().is_some_and(|u| !u.is_empty()))
        .collect();
    if items.is_empty() {
        writeln!(io.err, "nothing matches; nothing deleted").map_err(io_err)?;
        return Ok(());
    }
    output::write(io.out, args.format, &items, Some(" selected")).map_err(io_err)?;
    let n = items.len();
    let scope = client.scope().describe();
    if args.dry_run {
        writeln!(
            io.err,
            "dry run: {n} IOCs would be deleted from {scope}; nothing was deleted"
        )
        .map_err(io_err)?;
        return Ok(());
    }
    if !args.yes {
        write!(
            io.err,
            "delete these {n} IOCs from SentinelOne ({scope})? [y/N] "
        )
        .map_err(io_err)?;
        io.err.flush().map_err(io_err)?;
        let mut answer = String::new();
        let read = io
            .input
            .read_line(&mut answer)
            .map_err(|e| AppError::Other(format!("failed to read the answer: {e}")))?;
        if read == 0 {
            return Err(AppError::Other(
                "no answer (stdin is closed): nothing deleted; pass --yes to delete without asking"
                    .into(),
            ));
        }
        if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            writeln!(io.err, "nothing deleted").map_err(io_err)?;
            return Ok(());
        }
    }
    let uuids: Vec<String> = items.iter().filter_map(|i| i.uuid.clone()).collect();
    let affected = client.delete_uuids(&uuids).await.map_err(s1_err)?;
    let gone = (n as u64).saturating_sub(affected);
    let extra = if gone > 0 {
        format!(" ({gone} were already gone)")
    } else {
        String::new()
    };
    writeln!(io.err, "deleted {affected} of {n} IOCs{extra}").map_err(io_err)
}

//! `iocsync s1 list`: pages through S1 with the filters S1 has, matches the rest here, prints the
//! result, and keeps a complete unfiltered listing as the offline cache; `--offline` answers from it.

use super::output;
use super::pattern::Pattern;
use super::select::{self, value_pattern, Selector};
use super::{cache, io_err, s1_err, Io, ListArgs};
use crate::app::{self, AppError};
use crate::config::Config;
use crate::sinks::sentinelone::SentinelOneClient;

/// The selector of a `list` command line.
pub fn selector(args: &ListArgs) -> Selector {
    let f = &args.filters;
    Selector {
        uuids: Vec::new(),
        values: args.value.iter().map(|v| value_pattern(v)).collect(),
        external_ids: args.external_id.iter().map(|e| Pattern::new(e)).collect(),
        name: f.name.as_deref().map(Pattern::new),
        user: f.user.as_deref().map(Pattern::new),
        description: f.description.as_deref().map(Pattern::new),
        kind: f.kind,
        source: f.source.as_deref().map(Pattern::new),
    }
}

fn limit_of(args: &ListArgs) -> Option<usize> {
    args.limit.map(|n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// Runs `list`.
pub async fn run(
    cfg: &Config,
    client: &SentinelOneClient,
    args: &ListArgs,
    io: &mut Io<'_>,
) -> Result<(), AppError> {
    let sel = selector(args);
    let limit = limit_of(args);
    if args.offline {
        return offline(cfg, client, &sel, limit, args, io);
    }
    let fetched = select::fetch(client, &sel, limit).await.map_err(s1_err)?;
    if fetched.incomplete {
        writeln!(
            io.err,
            "warning: SentinelOne repeated a paging cursor; the listing stopped there and may miss IOCs"
        )
        .map_err(io_err)?;
    }
    if let Some(all) = &fetched.full_listing {
        // A cache failure must not hide the answer the analyst asked for.
        let stored = app::open_state(cfg).and_then(|mut state| {
            cache::store(
                &mut state,
                client.endpoint_url(),
                &client.scope().describe(),
                all,
                chrono::Utc::now(),
            )
            .map_err(AppError::from)
        });
        if let Err(e) = stored {
            writeln!(io.err, "warning: the offline cache was not updated: {e}").map_err(io_err)?;
        }
    }
    let note = limit
        .filter(|n| fetched.items.len() >= *n)
        .map(|_| " (--limit reached; there may be more)".to_string());
    output::write(io.out, args.format, &fetched.items, note.as_deref()).map_err(io_err)
}

fn offline(
    cfg: &Config,
    client: &SentinelOneClient,
    sel: &Selector,
    limit: Option<usize>,
    args: &ListArgs,
    io: &mut Io<'_>,
) -> Result<(), AppError> {
    let state = app::open_state(cfg)?;
    let Some(cached) = cache::load(&state)? else {
        return Err(AppError::Other(format!(
            "no cached listing in `{}`: run `iocsync s1 list` once online (without filters) to \
             fill it",
            state.path().display()
        )));
    };
    let scope = client.scope().describe();
    if cached.meta.endpoint != client.endpoint_url() || cached.meta.scope != scope {
        return Err(AppError::Other(format!(
            "the cached listing is of {} ({}), not of the configured {} ({scope}): run \
             `iocsync s1 list` online to refresh it",
            cached.meta.endpoint,
            cached.meta.scope,
            client.endpoint_url()
        )));
    }
    let now = chrono::Utc::now();
    let age = cache::age(&cached.meta.fetched_at, now);
    writeln!(
        io.err,
        "offline: cached listing of {} IOCs from {} ({age} old); changes since then are not shown",
        cached.meta.count, cached.meta.fetched_at
    )
    .map_err(io_err)?;
    let mut items: Vec<_> = cached
        .items
        .into_iter()
        .filter(|i| sel.matches(i))
        .collect();
    if let Some(n) = limit {
        items.truncate(n);
    }
    let note = format!(" (offline, as of {}, {age} old)", cached.meta.fetched_at);
    output::write(io.out, args.format, &items, Some(&note)).map_err(io_err)
}

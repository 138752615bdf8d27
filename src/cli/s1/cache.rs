//! The offline copy of the last complete SentinelOne listing, kept in the state database so
//! `iocsync s1 list --offline` answers without the API. It is a snapshot: later adds and deletes
//! are not applied to it, which is why every offline answer says how old it is.

use crate::sinks::sentinelone::RemoteIoc;
use crate::state::{State, StateError};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// The cache's name in the state database.
const NAME: &str = "sentinelone";

/// What the cached listing is of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheMeta {
    /// When it was read (RFC 3339, UTC).
    pub fetched_at: String,
    /// The IOC endpoint it came from.
    pub endpoint: String,
    /// The scope it covers, as `Scope::describe` prints it.
    pub scope: String,
    /// How many IOCs it holds.
    pub count: usize,
}

/// A cached listing read back.
#[derive(Debug, Clone)]
pub struct Cached {
    /// Its description.
    pub meta: CacheMeta,
    /// The IOCs.
    pub items: Vec<RemoteIoc>,
}

/// Stores a complete listing.
pub fn store(
    state: &mut State,
    endpoint: &str,
    scope: &str,
    items: &[RemoteIoc],
    now: DateTime<Utc>,
) -> Result<(), StateError> {
    let meta = CacheMeta {
        fetched_at: now.to_rfc3339_opts(SecondsFormat::Secs, true),
        endpoint: endpoint.to_string(),
        scope: scope.to_string(),
        count: items.len(),
    };
    let rows = items
        .iter()
        .map(|i| crate::state::encode("a cached IOC", i))
        .collect::<Result<Vec<String>, _>>()?;
    let meta = crate::state::encode("the listing cache's header", &meta)?;
    state.cache_put(NAME, &meta, &rows)
}

/// The cached listing, if one was stored.
pub fn load(state: &State) -> Result<Option<Cached>, StateError> {
    let Some((meta, rows)) = state.cache_get(NAME)? else {
        return Ok(None);
    };
    let corrupt = |message: String| StateError::Corrupt {
        path: state.path().to_path_buf(),
        what: "s1 listing cache",
        message,
    };
    let meta: CacheMeta = serde_json::from_str(&meta).map_err(|e| corrupt(e.to_string()))?;
    let items = rows
        .iter()
        .map(|r| serde_json::from_str(r))
        .collect::<Result<Vec<RemoteIoc>, _>>()
        .map_err(|e| corrupt(e.to_string()))?;
    Ok(Some(Cached { meta, items }))
}

/// "3h 12m", "2d 4h", "45s": how long ago `fetched_at` was.
pub fn age(fetched_at: &str, now: DateTime<Utc>) -> String {
    let Ok(then) = DateTime::parse_from_rfc3339(fetched_at) else {
        return "unknown age".into();
    };
    let secs = (now - then.with_timezone(&Utc)).num_seconds().max(0);
    let (d, h, m, s) = (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_and_loads_with_age() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut state = State::open(dir.path()).expect("state");
        assert!(load(&state).expect("load").is_none());
        let now = Utc::now();
        let items = vec![RemoteIoc {
            uuid: Some("u1".into()),
            value: Some("evil.example".into()),
            ..Default::default()
        }];
        store(&mut state, "http://x/iocs", "account 1", &items, now).expect("store");
        let cached = load(&state).expect("load").expect("cached");
        assert_eq!(cached.items, items);
        assert_eq!(cached.meta.count, 1);
        assert_eq!(cached.meta.scope, "account 1");
        store(&mut state, "http://x/iocs", "account 1", &[], now).expect("replace");
        assert!(load(&state)
            .expect("load")
            .expect("cached")
            .items
            .is_empty());
        state.reset().expect("reset");
        assert!(load(&state).expect("load").is_none());
    }

    #[test]
    fn ages_read_well() {
        let now = Utc::now();
        let ago = |s: i64| (now - chrono::Duration::seconds(s)).to_rfc3339();
        assert_eq!(age(&ago(45), now), "45s");
        assert_eq!(age(&ago(3 * 3600 + 12 * 60), now), "3h 12m");
        assert_eq!(age(&ago(2 * 86_400 + 4 * 3600), now), "2d 4h");
        assert_eq!(age("garbage", now), "unknown age");
    }
}

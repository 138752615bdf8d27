//! Reading a Sekoia IOC collection for reconcile. The documented API has no listing of a
//! collection's indicators, only the `term` search (a text search, paged, revoked indicators
//! included; see the shared protocol notes): so each value the state desires is searched for, and
//! the live indicators holding exactly that value are compared. An indicator is iocsync's when its
//! description carries the instance's marker (`sink::is_ours`); revoked ones are not held. Extra
//! indicators (ours, for a value the state does not desire) are found only among the values
//! searched: the caller adds those the journal says iocsync created in the collection.

use super::compare::{Expectation, RemoteEntry};
use crate::ioc::IocKind;
use crate::model::IocMeta;
use crate::remote::RemoteFailure;
use crate::sinks::sekoia::SekoiaClient;
use crate::sinks::SinkError;
use std::collections::HashSet;

/// Sekoia's description carries the marker (one per instance, not per indicator) and its
/// validity is rounded to the day: neither the indicator, the description nor the validity is
/// compared.
pub struct SekoiaExpectation;

impl Expectation for SekoiaExpectation {
    fn description(&self, _meta: &IocMeta) -> Option<String> {
        None
    }

    fn validity_matches(&self, _valid_until: Option<i64>, _entry: &RemoteEntry) -> bool {
        true
    }

    fn compares_indicator(&self) -> bool {
        false
    }
}

/// Searches the collection for each of `values` and hands every live indicator holding exactly
/// that value to `on_entry` (with `marker` when it is iocsync's, without when it is another's).
pub async fn stream(
    client: &SekoiaClient,
    marker: &str,
    values: &[(IocKind, String)],
    mut on_entry: impl FnMut(RemoteEntry),
) -> Result<(), SinkError> {
    let mut seen: HashSet<String> = HashSet::new();
    for (kind, value) in values {
        let found = client
            .search(value.trim())
            .await
            .map_err(|e| e.to_sink_error())?;
        for r in found {
            if r.revoked || !r.has_value(*kind, value.trim()) {
                continue;
            }
            // A value searched twice (or an indicator matching two terms) is one indicator.
            if let Some(id) = &r.id {
                if !seen.insert(id.clone()) {
                    continue;
                }
            }
            on_entry(RemoteEntry {
                kind: Some(kind.sink_kind()),
                type_name: kind.sink_kind().as_str().to_string(),
                value: value.clone(),
                marker: r.has_marker(marker).then(|| marker.to_string()),
                remote_id: r.id.clone(),
                description: None,
                valid_until: r.valid_until.clone(),
                written_at: None,
            });
        }
    }
    Ok(())
}

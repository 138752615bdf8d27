//! The full resync of a MISP source: every `misp.resync_interval`, list every attribute MISP would
//! have us hold, remove from the sinks what MISP no longer has and re-add what an incremental poll
//! missed — removing only once every page of the listing was read.

use super::feeds::FeedIndex;
use super::mapping::{gate, map_attribute, Gate};
use super::schedule::Mark;
use crate::model::{IndicatorState, IocMeta};
use crate::sources::SourceContext;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use tracing::info;

use super::source::{classified, emit, MispSource, RunError, Tally};

impl MispSource {
    /// The full resync: lists every attribute MISP would have us hold, removes from the sinks the
    /// ones it no longer has (hard deletes, deleted events, filter changes, feeds disabled since),
    /// and sends the ones the sinks miss (within the floor; an incremental poll can miss an
    /// attribute when a hard delete shifts pages under it, or when only event tags changed).
    pub(super) async fn resync(
        &self,
        ctx: &SourceContext,
        feeds: &FeedIndex,
        floor: Option<i64>,
        sent: &HashSet<String>,
        tally: &mut Tally,
    ) -> Result<(), RunError> {
        let held = ctx.store.held_indicator_ids().await?;
        // Only bare uuids are MISP attributes; `indicator--…` ids belong to another source.
        let held: HashMap<uuid::Uuid, String> = held
            .into_iter()
            .filter_map(|id| uuid::Uuid::parse_str(&id).ok().map(|u| (u, id)))
            .collect();
        let mut present: HashSet<uuid::Uuid> = HashSet::new();
        let mut added = 0u64;
        let body = self.resync_body(floor);
        self.pages(ctx, body, |_, attr| {
            let attr = attr.ok()?;
            let feed = feeds.link(&attr);
            let disabled = feed.is_some_and(|f| feeds.is_disabled(f));
            if gate(&attr, disabled, &self.opts) != Gate::Open {
                return None;
            }
            let state = map_attribute(&attr, disabled, &self.opts);
            if state.iocs.is_empty() {
                return None;
            }
            let key = uuid::Uuid::parse_str(&attr.uuid).ok();
            if let Some(u) = key {
                present.insert(u);
            }
            let missing = key.is_some_and(|u| !held.contains_key(&u));
            if floor.is_some() && missing && !sent.contains(&attr.uuid) {
                added += 1;
                return Some(classified(state));
            }
            None
        })
        .await?;
        let mut removed = 0u64;
        for (u, id) in &held {
            if present.contains(u) || sent.contains(id) {
                continue;
            }
            removed += 1;
            emit(
                ctx,
                classified(IndicatorState {
                    id: id.clone(),
                    iocs: Vec::new(),
                    skip: None,
                    meta: IocMeta::default(),
                    version: None,
                }),
            )
            .await?;
        }
        info!(
            held = held.len(),
            present = present.len(),
            removed,
            added,
            "MISP resync compared what the sinks hold with what MISP has"
        );
        tally.received += removed + added;
        tally.removed_by_resync = removed;
        tally.added_by_resync = added;
        Ok(())
    }

    /// The resync listing: live attributes that can yield IOCs, changed since the floor.
    pub(super) fn resync_body(&self, floor: Option<i64>) -> serde_json::Map<String, Value> {
        let mut body = self.filters();
        if let Some(floor) = floor {
            body.insert("timestamp".into(), json!(floor));
        }
        body.insert("deleted".into(), json!(0));
        if self.cfg.only_to_ids {
            body.insert("to_ids".into(), json!(1));
        }
        body
    }

    pub(super) fn resync_due(&self, mark: Option<&Mark>, run_start: i64) -> bool {
        let every = self.cfg.resync_interval.as_secs() as i64;
        match mark {
            // The first run reads the whole look-back window: it is its own full view.
            None => false,
            Some(_) if every == 0 => false,
            Some(m) => m.last_resync.is_none_or(|r| run_start - r >= every),
        }
    }
}

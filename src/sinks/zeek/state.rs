//! What the intel file holds: live items and tombstones, keyed by (sink kind, value), and the sidecar
//! JSON that keeps them across restarts.

use super::config::Removal;
use crate::ioc::IocKind;
use crate::sinks::jsonl::{key_of, Key};
use crate::sinks::{Change, ChangeOp};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// The sidecar's format version; bump it when `Entry` changes incompatibly.
const VERSION: u32 = 1;

/// One item of the intel file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// The kind as the sink stores it ([`IocKind::sink_kind`]).
    #[serde(rename = "type")]
    pub kind: IocKind,
    /// The IOC value.
    pub value: String,
    /// The indicator that created (or last updated) the item.
    pub indicator_id: String,
    /// Indicator name, for `meta.desc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Link back to the source, for `meta.url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_url: Option<String>,
    /// The source platform's internal id, for `zeek.url_template`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_id: Option<String>,
    /// When the item was deleted: a tombstone row until the retention has passed. `None`: live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_at: Option<DateTime<Utc>>,
}

impl Entry {
    fn from_change(change: &Change) -> Entry {
        Entry {
            kind: change.ioc.kind.sink_kind(),
            value: change.ioc.value.clone(),
            indicator_id: change.indicator_id.clone(),
            name: change.meta.name.clone(),
            source_url: change.meta.source_url.clone(),
            internal_id: change.meta.source_internal_id.clone(),
            removed_at: None,
        }
    }
}

/// The sidecar file's content, as read.
#[derive(Deserialize)]
struct Sidecar {
    version: u32,
    entries: Vec<Entry>,
}

/// The sidecar file's content, as written: borrowed, so a write does not copy the whole set.
#[derive(Serialize)]
struct SidecarRef<'a> {
    version: u32,
    entries: Vec<&'a Entry>,
}

/// The previous value of every key a batch touched, so the set can be rolled back to what is on disk
/// when writing the files fails (cheaper than copying the whole set before each batch).
#[derive(Debug, Default)]
pub(crate) struct Undo {
    before: HashMap<Key, Option<Entry>>,
}

impl Undo {
    /// Remembers `key`'s value before its first change in this batch.
    fn record(&mut self, key: &Key, current: Option<&Entry>) {
        if !self.before.contains_key(key) {
            self.before.insert(key.clone(), current.cloned());
        }
    }

    /// Puts back every recorded value.
    pub fn revert(self, set: &mut LiveSet) {
        for (key, before) in self.before {
            match before {
                Some(entry) => set.entries.insert(key, entry),
                None => set.entries.remove(&key),
            };
        }
    }
}

/// The items of the intel file, in a stable order so rewrites are deterministic.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct LiveSet {
    entries: BTreeMap<Key, Entry>,
}

impl LiveSet {
    /// Applies one change at `now`, recording what it replaces in `undo`.
    pub fn apply(
        &mut self,
        change: &Change,
        removal: Removal,
        now: DateTime<Utc>,
        undo: &mut Undo,
    ) {
        let key = key_of(change);
        undo.record(&key, self.entries.get(&key));
        match change.op {
            // An update for an item we do not hold is a create: the file shows the desired state.
            ChangeOp::Create | ChangeOp::Update => {
                self.entries.insert(key, Entry::from_change(change));
            }
            ChangeOp::Delete => match removal {
                Removal::Expire => {
                    self.entries.remove(&key);
                }
                Removal::Tombstone => {
                    // Repeated deletes keep the first deletion time: retention counts from it.
                    if let Some(entry) = self.entries.get_mut(&key) {
                        entry.removed_at.get_or_insert(now);
                    }
                }
            },
        }
    }

    /// The number of tombstones due to be dropped at `now`.
    pub fn due_tombstones(
        &self,
        removal: Removal,
        retention: Duration,
        now: DateTime<Utc>,
    ) -> usize {
        self.entries
            .values()
            .filter(|e| is_due(e, removal, retention, now))
            .count()
    }

    /// Drops the tombstones due at `now` (all of them in expire mode, where none should exist),
    /// recording them in `undo`; returns how many.
    pub fn prune(
        &mut self,
        removal: Removal,
        retention: Duration,
        now: DateTime<Utc>,
        undo: &mut Undo,
    ) -> usize {
        let due: Vec<Key> = self
            .entries
            .iter()
            .filter(|(_, e)| is_due(e, removal, retention, now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &due {
            undo.record(key, self.entries.get(key));
            self.entries.remove(key);
        }
        due.len()
    }

    /// Whether the set already shows the effect of `change`.
    pub fn reflects(&self, change: &Change) -> bool {
        let live = self
            .entries
            .get(&key_of(change))
            .filter(|e| e.removed_at.is_none());
        match (change.op, live) {
            (ChangeOp::Create, Some(e)) => e.indicator_id == change.indicator_id,
            (ChangeOp::Update, Some(e)) => *e == Entry::from_change(change),
            (ChangeOp::Delete, None) => true,
            (ChangeOp::Create | ChangeOp::Update, None) | (ChangeOp::Delete, Some(_)) => false,
        }
    }

    /// Every item, live and tombstoned, in key order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Counts (live, tombstones).
    pub fn counts(&self) -> (usize, usize) {
        let tombstones = self
            .entries
            .values()
            .filter(|e| e.removed_at.is_some())
            .count();
        (self.entries.len() - tombstones, tombstones)
    }

    /// The sidecar JSON.
    pub fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&SidecarRef {
            version: VERSION,
            entries: self.entries.values().collect(),
        })
    }

    /// Reads the sidecar JSON back.
    pub fn from_json(bytes: &[u8]) -> Result<LiveSet, String> {
        let sidecar: Sidecar = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if sidecar.version != VERSION {
            return Err(format!(
                "state format version {} is not {VERSION}",
                sidecar.version
            ));
        }
        let entries = sidecar
            .entries
            .into_iter()
            .map(|e| ((e.kind.sink_kind(), e.value.clone()), e))
            .collect();
        Ok(LiveSet { entries })
    }
}

fn is_due(entry: &Entry, removal: Removal, retention: Duration, now: DateTime<Utc>) -> bool {
    match (entry.removed_at, removal) {
        (None, _) => false,
        (Some(_), Removal::Expire) => true,
        // A retention too large for chrono never ends.
        (Some(at), Removal::Tombstone) => chrono::Duration::from_std(retention)
            .ok()
            .and_then(|r| at.checked_add_signed(r))
            .is_some_and(|end| end <= now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::jsonl::tests_support::change;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("time")
    }

    const DAY: Duration = Duration::from_secs(86_400);

    /// Applies one change outside any batch.
    fn apply(set: &mut LiveSet, change: &Change, removal: Removal, at: i64) {
        set.apply(change, removal, t(at), &mut Undo::default());
    }

    fn prune(set: &mut LiveSet, removal: Removal, at: i64) -> usize {
        set.prune(removal, DAY, t(at), &mut Undo::default())
    }

    #[test]
    fn tombstone_lifecycle() {
        let mut set = LiveSet::default();
        let create = change(
            ChangeOp::Create,
            IocKind::Domain,
            "a.example",
            "indicator--1",
        );
        let delete = change(
            ChangeOp::Delete,
            IocKind::Hostname,
            "a.example",
            "indicator--1",
        );
        apply(&mut set, &create, Removal::Tombstone, 0);
        assert!(set.reflects(&create));
        assert!(!set.reflects(&delete));
        apply(&mut set, &delete, Removal::Tombstone, 10);
        apply(&mut set, &delete, Removal::Tombstone, 20);
        assert_eq!(set.counts(), (0, 1));
        assert!(set.reflects(&delete));
        assert!(!set.reflects(&create));
        let removed_at = set.entries().next().and_then(|e| e.removed_at);
        assert_eq!(removed_at, Some(t(10)), "first deletion time kept");

        assert_eq!(
            set.due_tombstones(Removal::Tombstone, DAY, t(10 + 86_399)),
            0
        );
        assert_eq!(prune(&mut set, Removal::Tombstone, 10 + 86_399), 0);
        assert_eq!(
            set.due_tombstones(Removal::Tombstone, DAY, t(10 + 86_400)),
            1
        );
        assert_eq!(prune(&mut set, Removal::Tombstone, 10 + 86_400), 1);
        assert_eq!(set.counts(), (0, 0));
    }

    #[test]
    fn recreating_a_tombstoned_value_makes_it_live() {
        let mut set = LiveSet::default();
        let create = change(ChangeOp::Create, IocKind::Md5, "aa", "indicator--1");
        let delete = change(ChangeOp::Delete, IocKind::Md5, "aa", "indicator--1");
        let again = change(ChangeOp::Create, IocKind::Md5, "aa", "indicator--2");
        for (c, at) in [(&create, 0), (&delete, 1), (&again, 2)] {
            apply(&mut set, c, Removal::Tombstone, at);
        }
        assert_eq!(set.counts(), (1, 0));
        assert!(set.reflects(&again));
        assert!(!set.reflects(&create), "held by another indicator now");
    }

    #[test]
    fn expire_mode_drops_rows_and_leftover_tombstones() {
        let mut set = LiveSet::default();
        let a = change(ChangeOp::Create, IocKind::Ipv4, "10.0.0.1", "indicator--1");
        let b = change(ChangeOp::Create, IocKind::Ipv4, "10.0.0.2", "indicator--2");
        let delete_a = change(ChangeOp::Delete, IocKind::Ipv4, "10.0.0.1", "indicator--1");
        let delete_b = change(ChangeOp::Delete, IocKind::Ipv4, "10.0.0.2", "indicator--2");
        apply(&mut set, &a, Removal::Tombstone, 0);
        apply(&mut set, &b, Removal::Tombstone, 0);
        apply(&mut set, &delete_a, Removal::Tombstone, 1);
        // The operator switched to expire mode: the old tombstone goes on the next rewrite.
        assert_eq!(prune(&mut set, Removal::Expire, 2), 1);
        apply(&mut set, &delete_b, Removal::Expire, 3);
        assert_eq!(set.counts(), (0, 0));
    }

    #[test]
    fn update_is_reflected_only_with_the_same_metadata() {
        let mut set = LiveSet::default();
        let create = change(ChangeOp::Create, IocKind::Sha1, "bb", "indicator--1");
        let mut update = change(ChangeOp::Update, IocKind::Sha1, "bb", "indicator--1");
        update.meta.name = Some("new name".to_owned());
        apply(&mut set, &create, Removal::Tombstone, 0);
        assert!(!set.reflects(&update));
        apply(&mut set, &update, Removal::Tombstone, 1);
        assert!(set.reflects(&update));
        assert!(set.reflects(&create));
    }

    #[test]
    fn undo_restores_the_set_before_the_batch() {
        let mut set = LiveSet::default();
        let kept = change(ChangeOp::Create, IocKind::Md5, "aa", "indicator--1");
        let old = change(ChangeOp::Create, IocKind::Md5, "bb", "indicator--2");
        let old_delete = change(ChangeOp::Delete, IocKind::Md5, "bb", "indicator--2");
        apply(&mut set, &kept, Removal::Tombstone, 0);
        apply(&mut set, &old, Removal::Tombstone, 0);
        apply(&mut set, &old_delete, Removal::Tombstone, 0);
        let before = set.clone();

        let mut undo = Undo::default();
        let batch = [
            change(ChangeOp::Delete, IocKind::Md5, "aa", "indicator--1"),
            change(ChangeOp::Create, IocKind::Md5, "cc", "indicator--3"),
            change(ChangeOp::Update, IocKind::Md5, "cc", "indicator--3"),
        ];
        for c in &batch {
            set.apply(c, Removal::Tombstone, t(5), &mut undo);
        }
        assert_eq!(
            set.prune(Removal::Tombstone, DAY, t(DAY.as_secs() as i64), &mut undo),
            1
        );
        assert_ne!(set, before);
        undo.revert(&mut set);
        assert_eq!(set, before);
    }

    #[test]
    fn sidecar_round_trip_and_version_check() {
        let mut set = LiveSet::default();
        let url = change(ChangeOp::Create, IocKind::Url, "http://x/", "indicator--1");
        let md5 = change(ChangeOp::Create, IocKind::Md5, "aa", "indicator--2");
        let delete = change(ChangeOp::Delete, IocKind::Md5, "aa", "indicator--2");
        apply(&mut set, &url, Removal::Tombstone, 0);
        apply(&mut set, &md5, Removal::Tombstone, 0);
        apply(&mut set, &delete, Removal::Tombstone, 5);
        let bytes = set.to_json().expect("json");
        assert_eq!(LiveSet::from_json(&bytes), Ok(set));
        assert!(LiveSet::from_json(br#"{"version":99,"entries":[]}"#).is_err());
        assert!(LiveSet::from_json(b"{not json").is_err());
    }
}

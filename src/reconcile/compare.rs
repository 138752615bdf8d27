//! The comparison itself, independent of any vendor: the state's desired set of one sink kept as a
//! compact sorted index of hashes (32 bytes a value, not the values themselves), the sink's entries
//! streamed past it one at a time, and the tallies per IOC type.

use crate::ioc::IocKind;
use crate::model::IocMeta;
use crate::state::{EntryStatus, SinkEntry, State, StateError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

/// One entry a sink holds, as its reader sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteEntry {
    /// The IOC kind as the state keys it (`hostname` is `domain`); `None` for a type iocsync does
    /// not push.
    pub kind: Option<IocKind>,
    /// The sink's own name of the type, for entries of a type iocsync does not know.
    pub type_name: String,
    /// The value.
    pub value: String,
    /// The indicator id iocsync wrote with it (its marker); `None` for an entry iocsync did not write.
    pub marker: Option<String>,
    /// The sink's id for the entry.
    pub remote_id: Option<String>,
    /// Its description.
    pub description: Option<String>,
    /// Its end of validity (RFC 3339).
    pub valid_until: Option<String>,
    /// When the sink last wrote it (RFC 3339), for sinks that cap validity relative to that time.
    pub written_at: Option<String>,
}

/// What the sink should say about a state entry: its description and validity as the sink's
/// writer derives them from the metadata.
pub trait Expectation: Send + Sync {
    /// The description the sink's writer sends for this metadata (`None`: not compared).
    fn description(&self, meta: &IocMeta) -> Option<String>;
    /// True when the entry's validity is what the writer would have sent for `valid_until`.
    fn validity_matches(&self, valid_until: Option<i64>, entry: &RemoteEntry) -> bool;
    /// False for a sink whose marker is not the indicator id (Zeek's `meta.source`).
    fn compares_indicator(&self) -> bool {
        true
    }
    /// The value as the sink holds it (Zeek rewrites URLs the way it matches them).
    fn held_value<'v>(&self, _kind: IocKind, value: &'v str) -> std::borrow::Cow<'v, str> {
        std::borrow::Cow::Borrowed(value)
    }
}

/// Per IOC type counts of one sink.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Desired and held as recorded.
    pub in_sync: u64,
    /// Desired, not in the sink.
    pub missing: u64,
    /// In the sink with iocsync's marker, not desired (or a second copy of a desired value).
    pub extra: u64,
    /// In the sink with another remote id, indicator, validity or description than recorded.
    pub stale: u64,
    /// In the sink without iocsync's marker: never touched.
    pub not_managed: u64,
    /// A change is outstanding in the state (settled by the next run): not counted as drift.
    pub pending: u64,
}

impl Counts {
    /// Missing + extra + stale.
    pub fn drift(&self) -> u64 {
        self.missing + self.extra + self.stale
    }
}

/// Why an entry is stale (bit set).
pub mod stale {
    /// Another indicator id than the state records.
    pub const INDICATOR: u8 = 1;
    /// Another remote id than the state records.
    pub const REMOTE_ID: u8 = 2;
    /// Another description.
    pub const DESCRIPTION: u8 = 4;
    /// Another end of validity.
    pub const VALIDITY: u8 = 8;
}

/// What became of one remote entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Held as recorded.
    InSync,
    /// Stale, for these [`stale`] reasons.
    Stale(u8),
    /// iocsync's, not desired.
    Extra,
    /// iocsync's, a second copy of a value already seen.
    Duplicate,
    /// Not iocsync's.
    NotManaged,
    /// A change is outstanding for it.
    Pending,
}

/// One desired value, hashed.
#[derive(Debug, Clone, Copy)]
struct Slot {
    key: u64,
    /// End of validity in Unix seconds, `i64::MIN` when open.
    valid: i64,
    indicator: u32,
    remote_id: u32,
    description: u32,
    kind: IocKind,
    pending: bool,
}

fn hash64(parts: impl Hash) -> u64 {
    // `DefaultHasher::new()` has fixed keys: the same value hashes the same on both sides.
    let mut h = DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

fn hash32(s: Option<&str>) -> u32 {
    match s {
        None => 0,
        // Folded, never 0: 0 stands for "none".
        Some(s) => (hash64(s) as u32) | 1,
    }
}

/// The state key of a value in a sink; values compare case-insensitively (S1 and Sekoia do).
pub fn key_hash(kind: IocKind, value: &str) -> u64 {
    hash64((kind.sink_kind().as_str(), value.trim().to_lowercase()))
}

/// Parses an RFC 3339 time to Unix seconds.
pub fn unix_seconds(t: Option<&str>) -> Option<i64> {
    t.and_then(|t| chrono::DateTime::parse_from_rfc3339(t.trim()).ok())
        .map(|t| t.timestamp())
}

/// The desired set of one sink with the comparison's tallies.
pub struct Comparison<'e> {
    slots: Vec<Slot>,
    seen: Vec<u64>,
    expect: &'e dyn Expectation,
    /// Per IOC type (state kind name, or the sink's type name for unknown types).
    pub counts: BTreeMap<String, Counts>,
}

impl<'e> Comparison<'e> {
    /// Loads the desired set of `sink` from the state (`None`: no state yet, nothing desired).
    pub fn load(
        state: Option<&State>,
        sink: &str,
        expect: &'e dyn Expectation,
    ) -> Result<Self, StateError> {
        let mut slots = Vec::new();
        if let Some(state) = state {
            state.for_each_sink_entry(sink, |entry| {
                if let Some(slot) = slot_of(&entry, expect) {
                    slots.push(slot);
                }
            })?;
        }
        slots.sort_unstable_by_key(|s| s.key);
        slots.shrink_to_fit();
        let seen = vec![0u64; slots.len().div_ceil(64)];
        Ok(Comparison {
            slots,
            seen,
            expect,
            counts: BTreeMap::new(),
        })
    }

    /// How many values the state desires in the sink.
    pub fn desired(&self) -> usize {
        self.slots.len()
    }

    fn find(&self, key: u64) -> Option<usize> {
        self.slots.binary_search_by_key(&key, |s| s.key).ok()
    }

    fn counts_for(&mut self, name: &str) -> &mut Counts {
        self.counts.entry(name.to_string()).or_default()
    }

    /// Compares one remote entry with the state and counts it.
    pub fn observe(&mut self, entry: &RemoteEntry) -> Verdict {
        let (Some(kind), Some(marker)) = (entry.kind, entry.marker.as_deref()) else {
            let name = entry
                .kind
                .map(|k| k.as_str().to_string())
                .unwrap_or_else(|| entry.type_name.to_ascii_lowercase());
            self.counts_for(&name).not_managed += 1;
            return Verdict::NotManaged;
        };
        let name = kind.sink_kind().as_str();
        let verdict = match self.find(key_hash(kind, &entry.value)) {
            None => Verdict::Extra,
            Some(i) => {
                let (word, bit) = (i / 64, 1u64 << (i % 64));
                if self.seen[word] & bit != 0 {
                    Verdict::Duplicate
                } else {
                    self.seen[word] |= bit;
                    let slot = self.slots[i];
                    if slot.pending {
                        Verdict::Pending
                    } else {
                        let reasons = self.stale_reasons(&slot, marker, entry);
                        if reasons == 0 {
                            Verdict::InSync
                        } else {
                            Verdict::Stale(reasons)
                        }
                    }
                }
            }
        };
        let counts = self.counts_for(name);
        match verdict {
            Verdict::InSync => counts.in_sync += 1,
            Verdict::Stale(_) => counts.stale += 1,
            Verdict::Extra | Verdict::Duplicate => counts.extra += 1,
            Verdict::Pending => counts.pending += 1,
            Verdict::NotManaged => counts.not_managed += 1,
        }
        verdict
    }

    fn stale_reasons(&self, slot: &Slot, marker: &str, entry: &RemoteEntry) -> u8 {
        let mut reasons = 0;
        if self.expect.compares_indicator() && hash32(Some(marker)) != slot.indicator {
            reasons |= stale::INDICATOR;
        }
        if entry.remote_id.is_some() && hash32(entry.remote_id.as_deref()) != slot.remote_id {
            reasons |= stale::REMOTE_ID;
        }
        if slot.description != u32::MAX {
            let got = entry
                .description
                .as_deref()
                .map(str::trim)
                .filter(|d| !d.is_empty());
            if hash32(got) != slot.description {
                reasons |= stale::DESCRIPTION;
            }
        }
        let valid = (slot.valid != i64::MIN).then_some(slot.valid);
        if !self.expect.validity_matches(valid, entry) {
            reasons |= stale::VALIDITY;
        }
        reasons
    }

    /// Counts the desired values no remote entry matched as missing (pending ones as pending).
    /// Call once, after the last [`Self::observe`].
    pub fn finish(&mut self) {
        for i in 0..self.slots.len() {
            if self.seen[i / 64] & (1u64 << (i % 64)) != 0 {
                continue;
            }
            let slot = self.slots[i];
            let counts = self.counts_for(slot.kind.as_str());
            if slot.pending {
                counts.pending += 1;
            } else {
                counts.missing += 1;
            }
        }
    }

    /// True when the state entry is desired, not pending, and was not seen in the sink.
    pub fn is_missing(&self, entry: &SinkEntry) -> bool {
        let held = self.expect.held_value(entry.ioc.kind, &entry.ioc.value);
        match self.find(key_hash(entry.ioc.kind, &held)) {
            Some(i) => !self.slots[i].pending && self.seen[i / 64] & (1u64 << (i % 64)) == 0,
            None => false,
        }
    }

    /// True when the state desires this value (whatever its status).
    pub fn is_desired(&self, kind: IocKind, value: &str) -> bool {
        self.find(key_hash(kind, value)).is_some()
    }

    /// The counts summed over types.
    pub fn total(&self) -> Counts {
        let mut t = Counts::default();
        for c in self.counts.values() {
            t.in_sync += c.in_sync;
            t.missing += c.missing;
            t.extra += c.extra;
            t.stale += c.stale;
            t.not_managed += c.not_managed;
            t.pending += c.pending;
        }
        t
    }
}

/// The slot of a state entry; `None` for a rejected one (nothing is expected in the sink).
fn slot_of(entry: &SinkEntry, expect: &dyn Expectation) -> Option<Slot> {
    let pending = match entry.status {
        EntryStatus::Live => false,
        EntryStatus::PendingCreate | EntryStatus::PendingUpdate | EntryStatus::PendingDelete => {
            true
        }
        EntryStatus::Rejected => return None,
    };
    let description = match expect.description(&entry.meta) {
        Some(d) if d.trim().is_empty() => hash32(None),
        Some(d) => hash32(Some(d.trim())),
        None if entry.meta.description.is_none() => hash32(None),
        // The sink does not carry descriptions: not compared.
        None => u32::MAX,
    };
    Some(Slot {
        key: key_hash(
            entry.ioc.kind,
            &expect.held_value(entry.ioc.kind, &entry.ioc.value),
        ),
        valid: unix_seconds(entry.meta.valid_until.as_deref()).unwrap_or(i64::MIN),
        indicator: hash32(Some(&entry.indicator_id)),
        remote_id: hash32(entry.remote_id.as_deref()),
        description,
        kind: entry.ioc.kind.sink_kind(),
        pending,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ioc::Ioc;

    struct Plain;
    impl Expectation for Plain {
        fn description(&self, meta: &IocMeta) -> Option<String> {
            meta.description.clone()
        }
        fn validity_matches(&self, valid_until: Option<i64>, entry: &RemoteEntry) -> bool {
            valid_until.is_none() || valid_until == unix_seconds(entry.valid_until.as_deref())
        }
    }

    fn remote(value: &str, marker: Option<&str>, id: &str) -> RemoteEntry {
        RemoteEntry {
            kind: Some(IocKind::Domain),
            type_name: "DNS".into(),
            value: value.into(),
            marker: marker.map(str::to_string),
            remote_id: Some(id.into()),
            description: None,
            valid_until: None,
            written_at: None,
        }
    }

    #[test]
    fn each_kind_of_drift_is_told_apart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut state = State::open(dir.path()).expect("state");
        let tx = state.tx().expect("tx");
        for (value, id) in [
            ("a.example", "r1"),
            ("b.example", "r2"),
            ("c.example", "r3"),
        ] {
            tx.put_sink_entry(
                "s",
                &SinkEntry {
                    ioc: Ioc {
                        kind: IocKind::Hostname,
                        value: value.into(),
                    },
                    indicator_id: "indicator--1".into(),
                    remote_id: Some(id.into()),
                    status: EntryStatus::Live,
                    meta: IocMeta::default(),
                },
            )
            .expect("put");
        }
        tx.commit().expect("commit");
        let mut c = Comparison::load(Some(&state), "s", &Plain).expect("load");
        assert_eq!(c.desired(), 3);
        let m = Some("indicator--1");
        assert_eq!(c.observe(&remote("A.example", m, "r1")), Verdict::InSync);
        assert_eq!(c.observe(&remote("a.example", m, "r1")), Verdict::Duplicate);
        assert_eq!(
            c.observe(&remote("b.example", m, "other")),
            Verdict::Stale(stale::REMOTE_ID)
        );
        assert_eq!(c.observe(&remote("x.example", m, "r9")), Verdict::Extra);
        assert_eq!(
            c.observe(&remote("y.example", None, "r8")),
            Verdict::NotManaged
        );
        c.finish();
        let d = &c.counts["domain"];
        assert_eq!(
            (d.in_sync, d.stale, d.extra, d.not_managed, d.missing),
            (1, 1, 2, 1, 1)
        );
    }
}

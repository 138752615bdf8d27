//! Feed filtering: which MISP feed an attribute came from, whether that feed is listed in
//! `misp.disabled_feeds`, and the per-feed counts of the last run (`iocsync misp feeds`).
//!
//! No attribute carries a feed id. An attribute is linked to a feed by, in order (protocols.md §5):
//! the feed's fixed event is the attribute's event; the feed's tag is on the attribute or its event;
//! the feed's creator org is the event's creator org; the event is titled `"<feed name> feed"`.

use super::wire::{Attribute, Feed};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The state kv key holding the last run's [`FeedCounts`].
pub const FEED_COUNTS_KEY: &str = "misp.feed_counts";

/// The feeds of a MISP server and the local disabled list, resolved to feed ids.
#[derive(Debug, Clone, Default)]
pub struct FeedIndex {
    feeds: Vec<Feed>,
    /// Effective: `misp.disabled_feeds` with the console's toggles over it.
    disabled: BTreeSet<String>,
    /// Feed ids the console decided for.
    toggled: BTreeSet<String>,
}

/// What decided whether iocsync pushes a feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedRule {
    /// Nothing: pushed.
    Default,
    /// `misp.disabled_feeds` lists it.
    Config,
    /// A console toggle (over the config).
    Console,
}

impl FeedRule {
    /// As shown: `default`, `misp.disabled_feeds`, `console`.
    pub fn label(self) -> &'static str {
        match self {
            FeedRule::Default => "default",
            FeedRule::Config => "misp.disabled_feeds",
            FeedRule::Console => "console",
        }
    }
}

impl FeedIndex {
    /// Resolves `disabled` (names, case-insensitive, or ids) against `feeds`. Returns the index and
    /// the configured entries that match no feed (worth a warning: a typo pushes what it meant to
    /// hold back).
    pub fn new(feeds: Vec<Feed>, disabled: &[String]) -> (FeedIndex, Vec<String>) {
        let mut ids = BTreeSet::new();
        let mut unknown = Vec::new();
        for entry in disabled {
            let matched: Vec<&Feed> = feeds
                .iter()
                .filter(|f| f.id == *entry || f.name.eq_ignore_ascii_case(entry.trim()))
                .collect();
            if matched.is_empty() {
                unknown.push(entry.clone());
            }
            ids.extend(matched.into_iter().map(|f| f.id.clone()));
        }
        (
            FeedIndex {
                feeds,
                disabled: ids,
                toggled: BTreeSet::new(),
            },
            unknown,
        )
    }

    /// Applies the console's toggles (feed id → pushed) over the config. Returns the toggled ids
    /// this MISP has no feed for (a feed deleted since: worth a warning, nothing else).
    pub fn with_toggles(mut self, toggles: &BTreeMap<String, bool>) -> (FeedIndex, Vec<String>) {
        let mut unknown = Vec::new();
        for (id, pushed) in toggles {
            if !self.feeds.iter().any(|f| f.id == *id) {
                unknown.push(id.clone());
                continue;
            }
            self.toggled.insert(id.clone());
            if *pushed {
                self.disabled.remove(id);
            } else {
                self.disabled.insert(id.clone());
            }
        }
        (self, unknown)
    }

    /// What decided `feed`'s state.
    pub fn rule(&self, feed: &Feed) -> FeedRule {
        if self.toggled.contains(&feed.id) {
            FeedRule::Console
        } else if self.disabled.contains(&feed.id) {
            FeedRule::Config
        } else {
            FeedRule::Default
        }
    }

    /// The feeds, in the server's order.
    pub fn feeds(&self) -> &[Feed] {
        &self.feeds
    }

    /// Whether no feed is disabled.
    pub fn none_disabled(&self) -> bool {
        self.disabled.is_empty()
    }

    /// Whether iocsync holds `feed` back (`misp.disabled_feeds` or a console toggle).
    pub fn is_disabled(&self, feed: &Feed) -> bool {
        self.disabled.contains(&feed.id)
    }

    /// The feed an attribute came from, if any rule links one.
    pub fn link(&self, attr: &Attribute) -> Option<&Feed> {
        let event_id = attr.event_id.as_deref().or(attr.event.id.as_deref());
        if let Some(event_id) = event_id {
            if let Some(f) = self
                .feeds
                .iter()
                .find(|f| f.event_id.as_deref() == Some(event_id))
            {
                return Some(f);
            }
        }
        if let Some(f) = self.feeds.iter().find(|f| {
            f.tag_id
                .as_deref()
                .is_some_and(|t| attr.tags.iter().any(|tag| tag.id.as_deref() == Some(t)))
        }) {
            return Some(f);
        }
        if let Some(orgc) = attr.event.orgc_id.as_deref() {
            if let Some(f) = self
                .feeds
                .iter()
                .find(|f| f.orgc_id.as_deref() == Some(orgc))
            {
                return Some(f);
            }
        }
        let info = attr.event.info.as_deref()?.trim();
        self.feeds
            .iter()
            .find(|f| !f.name.is_empty() && info == format!("{} feed", f.name.trim()))
    }
}

/// How many attributes each feed contributed to one run (stored in the state kv).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedCounts {
    /// RFC 3339 start of the run.
    pub run_started: String,
    /// Attributes received, by feed id.
    pub by_feed: BTreeMap<String, u64>,
    /// Attributes linked to no feed.
    pub unlinked: u64,
    /// Attributes held back because their feed is disabled, by feed id.
    pub ignored: BTreeMap<String, u64>,
}

impl FeedCounts {
    /// Counts one attribute.
    pub fn count(&mut self, feed: Option<&Feed>, ignored: bool) {
        match feed {
            Some(f) => {
                *self.by_feed.entry(f.id.clone()).or_default() += 1;
                if ignored {
                    *self.ignored.entry(f.id.clone()).or_default() += 1;
                }
            }
            None => self.unlinked += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::misp::wire::{EventRef, TagRef};

    fn feed(id: &str, name: &str) -> Feed {
        Feed {
            id: id.into(),
            name: name.into(),
            provider: None,
            url: None,
            enabled: true,
            source_format: Some("misp".into()),
            fixed_event: false,
            event_id: None,
            orgc_id: None,
            tag_id: None,
        }
    }

    fn attr(event_id: &str, orgc: Option<&str>, info: &str, tags: &[&str]) -> Attribute {
        Attribute {
            id: Some("1".into()),
            event_id: Some(event_id.into()),
            uuid: "u".into(),
            kind: "ip-dst".into(),
            category: None,
            value: "1.2.3.4".into(),
            to_ids: true,
            deleted: false,
            timestamp: 0,
            comment: None,
            first_seen: None,
            event: EventRef {
                id: Some(event_id.into()),
                info: Some(info.into()),
                org_id: None,
                orgc_id: orgc.map(str::to_string),
                uuid: None,
            },
            tags: tags
                .iter()
                .map(|t| TagRef {
                    id: Some(t.to_string()),
                    name: format!("tag{t}"),
                })
                .collect(),
        }
    }

    #[test]
    fn rules_apply_in_order() {
        let fixed = Feed {
            fixed_event: true,
            event_id: Some("50".into()),
            ..feed("1", "Fixed")
        };
        let tagged = Feed {
            tag_id: Some("9".into()),
            ..feed("2", "Tagged")
        };
        let by_org = Feed {
            orgc_id: Some("4".into()),
            ..feed("3", "ByOrg")
        };
        let by_name = feed("4", "CIRCL OSINT");
        let (index, unknown) = FeedIndex::new(
            vec![fixed, tagged, by_org, by_name],
            &["circl osint".into(), "2".into(), "nope".into()],
        );
        assert_eq!(unknown, ["nope"]);
        let id = |a: &Attribute| index.link(a).map(|f| f.id.clone());
        // The fixed event wins over a tag and an org that also match.
        assert_eq!(
            id(&attr("50", Some("4"), "x", &["9"])).as_deref(),
            Some("1")
        );
        assert_eq!(
            id(&attr("51", Some("4"), "x", &["9"])).as_deref(),
            Some("2")
        );
        assert_eq!(id(&attr("51", Some("4"), "x", &[])).as_deref(), Some("3"));
        assert_eq!(
            id(&attr("51", None, "CIRCL OSINT feed", &[])).as_deref(),
            Some("4")
        );
        assert_eq!(id(&attr("51", Some("8"), "Manual event", &["1"])), None);
        let linked = index.link(&attr("51", None, "CIRCL OSINT feed", &[]));
        assert!(linked.is_some_and(|f| index.is_disabled(f)));
        let linked = index.link(&attr("50", None, "x", &[]));
        assert!(linked.is_some_and(|f| !index.is_disabled(f)));
    }

    #[test]
    fn console_toggles_override_the_config() {
        let (index, _) = FeedIndex::new(
            vec![feed("1", "One"), feed("2", "Two"), feed("3", "Three")],
            &["One".into()],
        );
        let toggles: BTreeMap<String, bool> =
            [("1".into(), true), ("2".into(), false), ("9".into(), false)].into();
        let (index, unknown) = index.with_toggles(&toggles);
        assert_eq!(unknown, ["9"]);
        let f = |id: &str| {
            index
                .feeds()
                .iter()
                .find(|f| f.id == id)
                .cloned()
                .expect("feed")
        };
        assert!(!index.is_disabled(&f("1")) && index.is_disabled(&f("2")));
        assert_eq!(index.rule(&f("1")), FeedRule::Console);
        assert_eq!(index.rule(&f("3")), FeedRule::Default);
        let (plain, _) = FeedIndex::new(vec![feed("1", "One")], &["1".into()]);
        assert_eq!(plain.rule(&f("1")), FeedRule::Config);
    }

    #[test]
    fn counts_by_feed() {
        let f = feed("7", "Seven");
        let mut c = FeedCounts::default();
        c.count(Some(&f), false);
        c.count(Some(&f), true);
        c.count(None, false);
        assert_eq!(c.by_feed["7"], 2);
        assert_eq!(c.ignored["7"], 1);
        assert_eq!(c.unlinked, 1);
    }
}

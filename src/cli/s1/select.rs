//! Which IOCs a `list` or `delete` is about: the filters as typed, the S1 list queries that narrow
//! them server-side where S1 has a filter, and the client-side test every returned IOC must pass.
//!
//! Server-side narrowing never decides on its own: every IOC S1 returns is tested again here, so
//! an S1 that ignores a parameter (or compares differently) cannot widen a delete.

use super::pattern::Pattern;
use crate::ioc::Ioc;
use crate::sinks::sentinelone::{
    ListQuery, PagesEnd, RemoteIoc, S1Error, S1Type, SentinelOneClient,
};
use std::collections::HashSet;
use std::ops::ControlFlow;

/// Most uuids per list call (they travel in the query string).
const UUIDS_PER_QUERY: usize = 50;

/// The filters of one command. Within `uuids`, `values` and `external_ids` any alternative may
/// match; every other filter must match too.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    /// Exact uuids.
    pub uuids: Vec<String>,
    /// Value patterns.
    pub values: Vec<Pattern>,
    /// externalId patterns.
    pub external_ids: Vec<Pattern>,
    /// Name pattern.
    pub name: Option<Pattern>,
    /// Creator (`--user`) pattern.
    pub user: Option<Pattern>,
    /// Description pattern.
    pub description: Option<Pattern>,
    /// Type.
    pub kind: Option<S1Type>,
    /// Source pattern.
    pub source: Option<Pattern>,
}

/// A value pattern; a literal value is normalised the way iocsync stores it (hashes and domains
/// lower-case, IPs canonical), so `--value ABC…` finds what `s1 add ABC…` created.
pub fn value_pattern(raw: &str) -> Pattern {
    let p = Pattern::new(raw.trim());
    match p.literal().map(Ioc::detect) {
        Some(Ok(ioc)) => Pattern::new(&ioc.value.replace('\\', "\\\\").replace('%', "\\%")),
        _ => p,
    }
}

fn field_matches(p: &Option<Pattern>, field: Option<&str>) -> bool {
    p.as_ref().is_none_or(|p| p.matches(field.unwrap_or("")))
}

impl Selector {
    /// True when nothing is selected (a delete must refuse: it would mean "everything").
    pub fn is_empty(&self) -> bool {
        self.uuids.is_empty()
            && self.values.is_empty()
            && self.external_ids.is_empty()
            && self.name.is_none()
            && self.user.is_none()
            && self.description.is_none()
            && self.kind.is_none()
            && self.source.is_none()
    }

    fn has_alternatives(&self) -> bool {
        !(self.uuids.is_empty() && self.values.is_empty() && self.external_ids.is_empty())
    }

    fn has_wild_alternative(&self) -> bool {
        self.values
            .iter()
            .chain(&self.external_ids)
            .any(Pattern::is_wild)
    }

    /// The client-side test.
    pub fn matches(&self, ioc: &RemoteIoc) -> bool {
        let alternative = !self.has_alternatives()
            || ioc
                .uuid
                .as_deref()
                .is_some_and(|u| self.uuids.iter().any(|want| want.eq_ignore_ascii_case(u)))
            || self
                .values
                .iter()
                .any(|p| p.matches(ioc.value.as_deref().unwrap_or("")))
            || self
                .external_ids
                .iter()
                .any(|p| p.matches(ioc.external_id.as_deref().unwrap_or("")));
        let creator = ioc.extra.get("creator").and_then(|v| v.as_str());
        alternative
            && field_matches(&self.name, ioc.name.as_deref())
            && field_matches(&self.user, creator)
            && field_matches(&self.description, ioc.description.as_deref())
            && field_matches(&self.source, ioc.source.as_deref())
            && self.kind.is_none_or(|k| {
                ioc.kind
                    .as_deref()
                    .is_some_and(|t| t.eq_ignore_ascii_case(k.as_str()))
            })
    }

    /// The filters S1 applies itself: type, exact source, and `__contains` with the longest
    /// literal piece of the name / creator / description patterns.
    fn base_query(&self) -> ListQuery {
        let hint = |p: &Option<Pattern>| {
            p.as_ref()
                .and_then(|p| p.contains_hint().map(str::to_string))
        };
        ListQuery {
            kind: self.kind,
            source: self
                .source
                .as_ref()
                .and_then(|p| p.literal().map(str::to_string)),
            name_contains: hint(&self.name),
            creator_contains: hint(&self.user),
            description_contains: hint(&self.description),
            ..Default::default()
        }
    }

    /// The list calls that together return every IOC that can match (usually a superset).
    pub fn queries(&self) -> Vec<ListQuery> {
        let base = self.base_query();
        if !self.has_alternatives() || self.has_wild_alternative() {
            // No value filter S1 can apply (value wildcards are matched here): one scan.
            return vec![base];
        }
        let mut out = Vec::new();
        for chunk in self.uuids.chunks(UUIDS_PER_QUERY) {
            out.push(ListQuery {
                uuids: chunk.to_vec(),
                ..base.clone()
            });
        }
        for v in self.values.iter().filter_map(Pattern::literal) {
            out.push(ListQuery {
                value: Some(v.to_string()),
                ..base.clone()
            });
        }
        for e in self.external_ids.iter().filter_map(Pattern::literal) {
            out.push(ListQuery {
                external_id: Some(e.to_string()),
                ..base.clone()
            });
        }
        out
    }

    /// True when the queries are one unfiltered listing of the whole scope.
    pub fn is_full_scan(&self) -> bool {
        self.queries() == [ListQuery::default()]
    }
}

/// What a fetch read.
#[derive(Debug, Default)]
pub struct Fetched {
    /// The matching IOCs, de-duplicated by uuid, in S1's order.
    pub items: Vec<RemoteIoc>,
    /// Every IOC read, when the fetch was one complete unfiltered scan (the listing to cache).
    pub full_listing: Option<Vec<RemoteIoc>>,
    /// S1's `totalItems` of the first query, when it said.
    pub total_items: Option<u64>,
    /// S1 repeated a cursor: the result may miss IOCs.
    pub incomplete: bool,
}

/// Runs the selector's queries, paging through each, until `limit` matches (if given).
pub async fn fetch(
    client: &SentinelOneClient,
    sel: &Selector,
    limit: Option<usize>,
) -> Result<Fetched, S1Error> {
    let full_scan = sel.is_full_scan();
    let mut out = Fetched::default();
    let mut all: Vec<RemoteIoc> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut ended_complete = true;
    for mut q in sel.queries() {
        // Small pages for a small `--limit` when S1 does the filtering; full pages when value
        // wildcards are matched here, where most of a page may not match.
        q.limit = Some(match limit {
            Some(n) if !sel.has_wild_alternative() => {
                u32::try_from(n.clamp(1, 1000)).unwrap_or(1000)
            }
            _ => 1000,
        });
        let first = out.total_items.is_none();
        let end = client
            .list_pages(&q, |page| {
                if first && out.total_items.is_none() {
                    out.total_items = page.total_items;
                }
                for ioc in page.data {
                    if full_scan {
                        all.push(ioc.clone());
                    }
                    let fresh = ioc.uuid.as_ref().is_none_or(|u| seen.insert(u.clone()));
                    if fresh && sel.matches(&ioc) {
                        out.items.push(ioc);
                        if limit.is_some_and(|n| out.items.len() >= n) {
                            return ControlFlow::Break(());
                        }
                    }
                }
                ControlFlow::Continue(())
            })
            .await?;
        match end {
            PagesEnd::Complete => {}
            PagesEnd::Stopped => {
                ended_complete = false;
                break;
            }
            PagesEnd::RepeatedCursor => {
                ended_complete = false;
                out.incomplete = true;
            }
        }
    }
    if full_scan && ended_complete {
        out.full_listing = Some(all);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ioc(value: &str, name: &str) -> RemoteIoc {
        RemoteIoc {
            uuid: Some(format!("u-{value}")),
            kind: Some("DNS".into()),
            value: Some(value.into()),
            name: Some(name.into()),
            ..Default::default()
        }
    }

    #[test]
    fn literal_values_go_to_s1_and_wildcards_scan() {
        let sel = Selector {
            values: vec![value_pattern("EVIL.example"), value_pattern("b.example")],
            name: Some(Pattern::new("%apt%28%")),
            ..Default::default()
        };
        let qs = sel.queries();
        assert_eq!(qs.len(), 2);
        assert_eq!(qs[0].value.as_deref(), Some("evil.example"));
        assert_eq!(qs[0].name_contains.as_deref(), Some("apt"));
        assert!(sel.matches(&ioc("evil.example", "APT 28 infra")));
        assert!(!sel.matches(&ioc("evil.example", "apt29")));
        assert!(!sel.matches(&ioc("c.example", "apt28")));

        let wild = Selector {
            values: vec![value_pattern("%evil%"), value_pattern("x.example")],
            ..Default::default()
        };
        assert_eq!(wild.queries(), [ListQuery::default()]);
        assert!(wild.is_full_scan());
        assert!(wild.matches(&ioc("my-evil.example", "")));
        assert!(wild.matches(&ioc("x.example", "")));
    }

    #[test]
    fn uuids_are_chunked_and_filters_combine() {
        let sel = Selector {
            uuids: (0..120).map(|i| format!("{i:032x}")).collect(),
            kind: Some(S1Type::Dns),
            ..Default::default()
        };
        let qs = sel.queries();
        assert_eq!(qs.len(), 3);
        assert!(qs.iter().all(|q| q.kind == Some(S1Type::Dns)));
        assert!(!sel.is_full_scan());
        assert!(Selector::default().is_empty() && !sel.is_empty());
    }
}

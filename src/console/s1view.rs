//! SentinelOne's view of the IOCs (`/iocs/s1`, `/api/iocs/s1`): one page of what S1 holds in the
//! configured scope, read with the `s1` client (type, value and externalId filters, cursor paging),
//! each entry marked as iocsync's or not the way reconcile decides it (an indicator id as
//! `externalId`) and, when it is iocsync's, what the state records for it.
//!
//! S1's cursors only go forward, so the way back travels in the page's links: `back` carries the
//! cursors of the pages before (the last [`TRAIL`]), and every link works without JavaScript.

use super::gate::{ctx, html, Authed};
use super::pages;
use super::server::{with_state, PageError, Shared};
use crate::config::SinkKind;
use crate::ioc::Ioc;
use crate::reconcile::s1::{is_indicator_id, kind_of};
use crate::sinks::sentinelone::{ListQuery, RemoteIoc, S1Error, S1Type, SentinelOneClient};
use crate::state::HeldEntry;
use axum::extract::{RawQuery, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use std::sync::Arc;

/// Entries per page unless `limit` says otherwise.
pub const DEFAULT_PAGE: u32 = 50;
/// The most entries one page asks S1 for.
pub const MAX_PAGE: u32 = 200;
/// How many earlier pages "Previous" can go back to (older ones through "First page").
pub const TRAIL: usize = 20;
/// The longest cursor taken from a URL (S1's are far shorter).
const MAX_CURSOR: usize = 2_048;

/// The S1 view's query, from the URL.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct S1Query {
    /// Type filter as typed (`ipv4`, `DNS`, `domain`...).
    pub kind: Option<String>,
    /// Exact value (normalised as iocsync stores values).
    pub value: Option<String>,
    /// Exact externalId.
    pub external_id: Option<String>,
    /// Entries per page.
    pub limit: u32,
    /// This page's cursor (`None`: the first page).
    pub cursor: Option<String>,
    /// The cursors of the pages before this one, oldest first (`""` is the first page).
    pub back: Vec<String>,
    /// This page's number, from 1.
    pub page: u32,
}

fn filled(v: String) -> Option<String> {
    let v = v.trim();
    (!v.is_empty()).then(|| v.to_string())
}

impl S1Query {
    /// Reads a query string; repeated `back` pairs keep their order.
    pub fn parse(raw: Option<&str>) -> S1Query {
        let mut q = S1Query {
            limit: DEFAULT_PAGE,
            page: 1,
            ..S1Query::default()
        };
        for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()).into_owned() {
            match k.as_str() {
                "kind" => q.kind = filled(v),
                "value" => q.value = filled(v),
                "external_id" => q.external_id = filled(v),
                "cursor" => q.cursor = filled(v),
                "back" => q.back.push(v),
                "limit" => q.limit = v.trim().parse().unwrap_or(DEFAULT_PAGE),
                "page" => q.page = v.trim().parse().unwrap_or(1),
                _ => {}
            }
        }
        q.limit = q.limit.clamp(1, MAX_PAGE);
        q.page = q.page.max(1);
        let drop = q.back.len().saturating_sub(TRAIL);
        q.back.drain(..drop);
        q
    }

    /// The URL of another page of the same listing.
    fn link(&self, path: &str, cursor: Option<&str>, back: &[String], page: u32) -> String {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("kind", &self.kind),
            ("value", &self.value),
            ("external_id", &self.external_id),
        ] {
            if let Some(v) = v {
                s.append_pair(k, v);
            }
        }
        if self.limit != DEFAULT_PAGE {
            s.append_pair("limit", &self.limit.to_string());
        }
        if let Some(c) = cursor {
            s.append_pair("cursor", c);
            for b in back {
                s.append_pair("back", b);
            }
            s.append_pair("page", &page.to_string());
        }
        let q = s.finish();
        if q.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{q}")
        }
    }

    /// The next page's URL, given S1's next cursor.
    pub fn next_link(&self, path: &str, next: &str) -> String {
        let mut back = self.back.clone();
        back.push(self.cursor.clone().unwrap_or_default());
        let drop = back.len().saturating_sub(TRAIL);
        back.drain(..drop);
        self.link(path, Some(next), &back, self.page + 1)
    }

    /// The previous page's URL (`None` on the first page).
    pub fn prev_link(&self, path: &str) -> Option<String> {
        self.cursor.as_ref()?;
        let Some((prev, older)) = self.back.split_last() else {
            // Further back than the trail keeps: only the first page is reachable.
            return Some(self.link(path, None, &[], 1));
        };
        let cursor = (!prev.is_empty()).then_some(prev.as_str());
        Some(self.link(path, cursor, older, self.page.saturating_sub(1).max(1)))
    }

    /// The first page's URL.
    pub fn first_link(&self, path: &str) -> String {
        self.link(path, None, &[], 1)
    }

    /// The S1 list query, or why the filters are not valid.
    fn list_query(&self) -> Result<ListQuery, String> {
        let kind = match &self.kind {
            Some(k) => Some(crate::cli::s1::values::parse_type(k)?),
            None => None,
        };
        if self.cursor.as_ref().is_some_and(|c| c.len() > MAX_CURSOR) {
            return Err(format!(
                "the cursor is longer than {MAX_CURSOR} characters: not one SentinelOne gave"
            ));
        }
        // As iocsync stores (and so sent) the value: `ABC…` finds the entry written as `abc…`.
        let value = self.value.as_ref().map(|v| {
            let typed = match kind {
                Some(t) => Ioc::new(kind_of(t), v),
                None => Ioc::detect(v),
            };
            typed.map(|ioc| ioc.value).unwrap_or_else(|_| v.clone())
        });
        Ok(ListQuery {
            limit: Some(self.limit),
            cursor: self.cursor.clone(),
            value,
            external_id: self.external_id.clone(),
            kind,
            ..ListQuery::default()
        })
    }
}

/// One S1 entry, marked.
#[derive(Debug, Clone, Serialize)]
pub struct S1Row {
    /// S1's uuid.
    pub uuid: Option<String>,
    /// S1's type name.
    pub kind: Option<String>,
    /// The value.
    pub value: Option<String>,
    /// `externalId`.
    pub external_id: Option<String>,
    /// S1's `source` field.
    pub source: Option<String>,
    /// End of validity.
    pub valid_until: Option<String>,
    /// True when the entry carries iocsync's marker (an indicator id as `externalId`).
    pub managed: bool,
    /// For a managed entry: what the state records for its value in the SentinelOne sink.
    pub state: Option<HeldEntry>,
    /// The marking in words.
    pub verdict: String,
}

/// One page of the view.
#[derive(Debug, Clone, Serialize)]
pub struct S1Page {
    /// The entries.
    pub rows: Vec<S1Row>,
    /// S1's cursor of the next page.
    pub next_cursor: Option<String>,
    /// How many entries match in scope, when S1 says.
    pub total_items: Option<u64>,
    /// The scope read (`account 123`...).
    pub scope: String,
}

/// What the view shows: a page, or why there is none.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum S1View {
    /// A page of entries.
    Page(S1Page),
    /// No SentinelOne sink is configured.
    NotConfigured {
        /// What to set.
        message: String,
    },
    /// The filters are not valid.
    BadQuery {
        /// Which and why.
        message: String,
    },
    /// SentinelOne could not be read (unreachable, token refused, ...).
    Failed {
        /// S1's answer or the transport's error, with the setting to check.
        message: String,
    },
}

impl S1View {
    fn status(&self) -> StatusCode {
        match self {
            S1View::Page(_) | S1View::NotConfigured { .. } => StatusCode::OK,
            S1View::BadQuery { .. } => StatusCode::BAD_REQUEST,
            S1View::Failed { .. } => StatusCode::BAD_GATEWAY,
        }
    }
}

fn verdict(managed: bool, uuid: Option<&str>, held: Option<&HeldEntry>) -> String {
    match (managed, held) {
        (false, _) => "no indicator id as externalId".into(),
        (true, None) => {
            "iocsync's marker, but not in this state (reconcile counts it as extra)".into()
        }
        (true, Some(h)) if h.remote_id.is_some() && h.remote_id.as_deref() != uuid => format!(
            "iocsync's; the state records another uuid ({}) for this value: a second copy",
            h.remote_id.as_deref().unwrap_or_default()
        ),
        (true, Some(h)) => format!("managed by iocsync ({})", h.status),
    }
}

/// The SentinelOne sink's name in the state.
fn sink_name() -> &'static str {
    SinkKind::SentinelOne.name()
}

/// The state's key of an S1 entry: (kind, value) as the sink recorded it.
fn state_key(ioc: &RemoteIoc) -> Option<(String, String)> {
    let kind = kind_of(S1Type::from_name(ioc.kind.as_deref()?)?);
    let raw = ioc.value.as_deref()?;
    let value = Ioc::new(kind, raw)
        .map(|i| i.value)
        .unwrap_or_else(|_| raw.to_string());
    Some((kind.sink_kind().as_str().to_string(), value))
}

fn client(app: &Shared) -> Result<Arc<SentinelOneClient>, String> {
    app.s1_client
        .get_or_init(|| {
            let valid = crate::config::Valid::new(app.cfg.sentinelone_intel.clone())
                .map_err(|e| e.to_string())?;
            SentinelOneClient::new(&valid)
                .map(Arc::new)
                .map_err(|e| e.to_string())
        })
        .clone()
}

/// Reads one page from S1 and marks it against the state.
pub(super) async fn view(app: &Shared, q: &S1Query) -> Result<S1View, PageError> {
    let configured = app
        .cfg
        .sink_kinds()
        .is_ok_and(|k| k.contains(&SinkKind::SentinelOne));
    if !configured {
        return Ok(S1View::NotConfigured {
            message: "No SentinelOne sink is configured (IOCSYNC_SINKS): there is nothing of \
                      SentinelOne's to show."
                .into(),
        });
    }
    let query = match q.list_query() {
        Ok(query) => query,
        Err(message) => return Ok(S1View::BadQuery { message }),
    };
    let client = match client(app) {
        Ok(c) => c,
        Err(message) => return Ok(S1View::Failed { message }),
    };
    let page = match client.list(&query).await {
        Ok(p) => p,
        Err(e) => {
            let hint = match &e {
                S1Error::Auth { .. } | S1Error::Permission { .. } => {
                    crate::config::env_name("sentinelone_intel.api_key")
                }
                _ => crate::config::env_name("sentinelone_intel.url"),
            };
            let message = match hint {
                Some(key) => format!("{e} (check {key})"),
                None => e.to_string(),
            };
            tracing::warn!(error = %e, "console: the SentinelOne view could not read SentinelOne");
            return Ok(S1View::Failed { message });
        }
    };
    let scope = client.scope().describe();
    let keys: Vec<Option<(String, String)>> = page
        .data
        .iter()
        .map(|ioc| {
            let managed = ioc.external_id.as_deref().is_some_and(is_indicator_id);
            managed.then(|| state_key(ioc)).flatten()
        })
        .collect();
    let held = with_state(app, move |s| {
        let Some(s) = s else {
            return Ok(vec![None; keys.len()]);
        };
        keys.iter()
            .map(|k| match k {
                Some((kind, value)) => s.held_entry(sink_name(), kind, value),
                None => Ok(None),
            })
            .collect()
    })
    .await?;
    let rows = page
        .data
        .into_iter()
        .zip(held)
        .map(|(ioc, held)| {
            let managed = ioc.external_id.as_deref().is_some_and(is_indicator_id);
            S1Row {
                verdict: verdict(managed, ioc.uuid.as_deref(), held.as_ref()),
                uuid: ioc.uuid,
                kind: ioc.kind,
                value: ioc.value,
                external_id: ioc.external_id,
                source: ioc.source,
                valid_until: ioc.valid_until,
                managed,
                state: held,
            }
        })
        .collect();
    Ok(S1View::Page(S1Page {
        rows,
        next_cursor: page.next_cursor,
        total_items: page.total_items,
        scope,
    }))
}

/// `/iocs/s1`.
pub(super) async fn page(
    AxState(app): AxState<Shared>,
    axum::Extension(Authed(s)): axum::Extension<Authed>,
    RawQuery(raw): RawQuery,
) -> Result<Response, PageError> {
    let q = S1Query::parse(raw.as_deref());
    let v = view(&app, &q).await?;
    Ok((v.status(), html(pages::iocs_s1(&ctx(&app, &s), &q, &v))).into_response())
}

/// `/api/iocs/s1`.
pub(super) async fn api(
    AxState(app): AxState<Shared>,
    RawQuery(raw): RawQuery,
) -> Result<Response, PageError> {
    let q = S1Query::parse(raw.as_deref());
    let v = view(&app, &q).await?;
    Ok((v.status(), Json(v)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_and_previous_links_carry_the_way_back() {
        let first = S1Query::parse(Some("kind=ipv4&limit=5"));
        assert_eq!(first.prev_link("/p"), None);
        let next = first.next_link("/p", "c1");
        assert_eq!(next, "/p?kind=ipv4&limit=5&cursor=c1&back=&page=2");
        let second = S1Query::parse(next.split_once('?').map(|(_, q)| q));
        assert_eq!(second.page, 2);
        let third = S1Query::parse(second.next_link("/p", "c2").split_once('?').map(|(_, q)| q));
        assert_eq!(third.back, ["", "c1"]);
        assert_eq!(
            third.prev_link("/p").as_deref(),
            Some("/p?kind=ipv4&limit=5&cursor=c1&back=&page=2")
        );
        assert_eq!(
            second.prev_link("/p").as_deref(),
            Some("/p?kind=ipv4&limit=5")
        );
    }

    #[test]
    fn page_size_and_trail_are_bounded() {
        let q = S1Query::parse(Some("limit=100000"));
        assert_eq!(q.limit, MAX_PAGE);
        let long: String = (0..50).map(|i| format!("back=c{i}&")).collect();
        let q = S1Query::parse(Some(&format!("{long}cursor=x&page=51")));
        assert_eq!(q.back.len(), TRAIL);
        assert_eq!(q.back[0], "c30");
        assert!(S1Query::parse(Some("kind=bogus")).list_query().is_err());
    }
}

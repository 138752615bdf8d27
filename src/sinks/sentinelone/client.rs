//! HTTP client of S1's Threat Intelligence IOC API: create, list (with cursor paging), delete, all in
//! the configured scope. One call per method, no retries (the pipeline owns retry policy); every call
//! is counted in metrics and mapped to a typed [`S1Error`].

use super::config::{Scope, SentinelOneConfig};
use super::error::SINK;
use super::error::{auth_message, describe_errors, parse_errors, permission_message, S1Error};
use super::types::{
    CreatedIoc, DeleteFilter, ListAll, ListPage, ListQuery, PagesEnd, RemoteIoc, S1Type,
};
use crate::config::Valid;
use crate::remote::{join_url, trim_body, CallFailure, JsonApi, Refusal};
use crate::sinks::SinkError;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::HashSet;

/// Path of the IOC endpoint below the console URL.
pub const IOCS_PATH: &str = "web/api/v2.1/threat-intelligence/iocs";

/// Most uuids per delete call when the caller passes more.
const DELETE_CHUNK: usize = 1_000;

/// A client bound to one console, token and scope.
// Derived: the credential lives in `JsonApi`, whose `Debug` leaves it out.
#[derive(Debug)]
pub struct SentinelOneClient {
    api: JsonApi,
    url: String,
    scope: Scope,
}

/// The IOC endpoint for a console URL; a URL that already ends in `/web/api/v2.1[...]` is not
/// extended twice.
pub fn iocs_url(console: &str) -> String {
    let base = console.trim().trim_end_matches('/');
    if base.ends_with(IOCS_PATH) {
        return base.to_string();
    }
    match base.strip_suffix("/web/api/v2.1") {
        Some(root) => join_url(root, IOCS_PATH),
        None => join_url(base, IOCS_PATH),
    }
}

/// A write's body: the scope filter and the items.
#[derive(serde::Serialize)]
struct WriteBody<'a, I> {
    filter: Map<String, Value>,
    data: &'a [I],
}

#[derive(Deserialize)]
struct DataList<T> {
    #[serde(default = "Vec::new")]
    data: Vec<T>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Pagination {
    next_cursor: Option<String>,
    total_items: Option<u64>,
}

#[derive(Deserialize)]
struct ListBody {
    #[serde(default)]
    data: Vec<RemoteIoc>,
    #[serde(default)]
    pagination: Option<Pagination>,
}

#[derive(Deserialize)]
struct DeleteBody {
    data: Affected,
}

#[derive(Deserialize)]
struct Affected {
    #[serde(default)]
    affected: u64,
}

impl SentinelOneClient {
    /// Builds a client from a validated section; fails only on the TLS setup (a CA bundle that
    /// cannot be read).
    pub fn new(cfg: &Valid<SentinelOneConfig>) -> Result<Self, SinkError> {
        let facts = cfg.facts();
        Ok(SentinelOneClient {
            api: JsonApi::for_sink(
                SINK,
                &cfg.tls(),
                cfg.timeout,
                facts.token.expose(),
                facts.auth.clone(),
            )?,
            url: iocs_url(&facts.console_url),
            scope: facts.scope.clone(),
        })
    }

    /// The full IOC endpoint URL.
    pub fn endpoint_url(&self) -> &str {
        &self.url
    }

    /// The scope every call carries.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// The scope part of a write's `filter`: ids plus `"tenant": false`.
    pub fn write_filter(&self) -> Map<String, Value> {
        let mut f = Map::new();
        for (key, ids) in [
            ("accountIds", &self.scope.account_ids),
            ("siteIds", &self.scope.site_ids),
            ("groupIds", &self.scope.group_ids),
        ] {
            if !ids.is_empty() {
                f.insert(key.into(), json!(ids));
            }
        }
        f.insert("tenant".into(), Value::Bool(false));
        f
    }

    /// The scope part of a list query: account or site ids (S1's GET refuses `groupIds`).
    fn read_scope(&self) -> Vec<(String, String)> {
        let mut q = Vec::new();
        if !self.scope.account_ids.is_empty() {
            q.push(("accountIds".to_string(), self.scope.account_ids.join(",")));
        }
        if !self.scope.site_ids.is_empty() {
            q.push(("siteIds".to_string(), self.scope.site_ids.join(",")));
        }
        q
    }

    /// One call: sends, counts, maps the status. Returns the 2xx body.
    async fn call<B: serde::Serialize + ?Sized>(
        &self,
        method: Method,
        query: &[(String, String)],
        body: Option<&B>,
    ) -> Result<bytes::Bytes, S1Error> {
        let answer = self.api.call(method, &self.url, "/iocs", query, body).await;
        answer.map_err(|failure| match failure {
            CallFailure::Transport { endpoint, message } => {
                S1Error::Transport { endpoint, message }
            }
            CallFailure::Refused(refusal) => refused(refusal),
        })
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        method: &Method,
        bytes: &[u8],
    ) -> Result<T, S1Error> {
        serde_json::from_slice(bytes).map_err(|e| S1Error::Decode {
            endpoint: format!("{method} {}", self.url),
            message: e.to_string(),
        })
    }

    /// Creates the items in one POST; returns S1's `data` (normally one entry per item, in order).
    /// Takes items or references to them: the body is serialised straight from them.
    pub async fn create<I: serde::Serialize>(
        &self,
        items: &[I],
    ) -> Result<Vec<RemoteIoc>, S1Error> {
        self.post_items(items).await
    }

    /// As [`Self::create`], reading only which entries were made (the pipeline's path).
    pub async fn create_lean<I: serde::Serialize>(
        &self,
        items: &[I],
    ) -> Result<Vec<CreatedIoc>, S1Error> {
        self.post_items(items).await
    }

    async fn post_items<I: serde::Serialize, O: serde::de::DeserializeOwned>(
        &self,
        items: &[I],
    ) -> Result<Vec<O>, S1Error> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let body = WriteBody {
            filter: self.write_filter(),
            data: items,
        };
        let bytes = self.call(Method::POST, &[], Some(&body)).await?;
        Ok(self.decode::<DataList<O>>(&Method::POST, &bytes)?.data)
    }

    /// Reads one page of IOCs in scope.
    pub async fn list(&self, q: &ListQuery) -> Result<ListPage, S1Error> {
        let mut query = q.pairs();
        query.extend(self.read_scope());
        let bytes = self.call(Method::GET, &query, None::<&Value>).await?;
        let body: ListBody = self.decode(&Method::GET, &bytes)?;
        let pagination = body.pagination.unwrap_or_default();
        Ok(ListPage {
            data: body.data,
            next_cursor: pagination.next_cursor.filter(|c| !c.is_empty()),
            total_items: pagination.total_items,
        })
    }

    /// Pages through a list until the last page, `max` items, or a cursor S1 already gave (then
    /// stops with `repeated_cursor`: following it would loop over the same pages forever).
    pub async fn list_all(&self, q: &ListQuery, max: Option<usize>) -> Result<ListAll, S1Error> {
        let mut q = q.clone();
        let mut out = ListAll::default();
        let mut seen: HashSet<String> = q.cursor.iter().cloned().collect();
        loop {
            if let Some(max) = max {
                let left = max.saturating_sub(out.items.len());
                let page = q
                    .limit
                    .unwrap_or(1000)
                    .min(u32::try_from(left).unwrap_or(1000));
                q.limit = Some(page.max(1));
            }
            let page = self.list(&q).await?;
            out.total_items = out.total_items.or(page.total_items);
            out.items.extend(page.data);
            let Some(cursor) = page.next_cursor else {
                break;
            };
            if max.is_some_and(|m| out.items.len() >= m) {
                out.items.truncate(max.unwrap_or(usize::MAX));
                out.truncated = true;
                break;
            }
            if !seen.insert(cursor.clone()) {
                tracing::warn!(
                    endpoint = %self.url,
                    items = out.items.len(),
                    "sentinelone returned a cursor it already gave; stopping the listing"
                );
                out.repeated_cursor = true;
                break;
            }
            q.cursor = Some(cursor);
        }
        Ok(out)
    }

    /// Pages through a list, handing each page to `on_page` until the last page, `on_page` answers
    /// `Break`, or S1 repeats a cursor. For callers that filter pages as they arrive (the CLI's
    /// client-side wildcards) and so cannot say up front how many raw items they need.
    pub async fn list_pages<F>(&self, q: &ListQuery, mut on_page: F) -> Result<PagesEnd, S1Error>
    where
        F: FnMut(ListPage) -> std::ops::ControlFlow<()>,
    {
        let mut q = q.clone();
        let mut seen: HashSet<String> = q.cursor.iter().cloned().collect();
        loop {
            let page = self.list(&q).await?;
            let next = page.next_cursor.clone();
            if on_page(page).is_break() {
                return Ok(PagesEnd::Stopped);
            }
            let Some(cursor) = next else {
                return Ok(PagesEnd::Complete);
            };
            if !seen.insert(cursor.clone()) {
                tracing::warn!(
                    endpoint = %self.url,
                    "sentinelone returned a cursor it already gave; stopping the listing"
                );
                return Ok(PagesEnd::RepeatedCursor);
            }
            q.cursor = Some(cursor);
        }
    }

    /// The IOCs in scope with this type and value (and externalId, when given).
    pub async fn find(
        &self,
        kind: S1Type,
        value: &str,
        external_id: Option<&str>,
    ) -> Result<Vec<RemoteIoc>, S1Error> {
        let q = ListQuery {
            kind: Some(kind),
            value: Some(value.to_string()),
            external_id: external_id.map(str::to_string),
            ..Default::default()
        };
        let all = self.list_all(&q, Some(10_000)).await?;
        // Filter again locally: keeps us correct if S1 ignores a filter parameter.
        Ok(all
            .items
            .into_iter()
            .filter(|r| r.matches(kind, value, external_id))
            .collect())
    }

    /// Deletes by uuid (in chunks); returns how many S1 removed. Unknown uuids are not an error.
    pub async fn delete_uuids(&self, uuids: &[String]) -> Result<u64, S1Error> {
        let mut affected = 0;
        for chunk in uuids.chunks(DELETE_CHUNK) {
            affected += self
                .delete_where(&DeleteFilter {
                    uuids: chunk.to_vec(),
                    ..Default::default()
                })
                .await?;
        }
        Ok(affected)
    }

    /// Deletes what the filter selects in scope; refuses a filter that selects nothing specific.
    pub async fn delete_where(&self, filter: &DeleteFilter) -> Result<u64, S1Error> {
        if filter.is_unbounded() {
            return Err(S1Error::Unsafe {
                endpoint: format!("DELETE {}", self.url),
                message: "a delete without uuids, value or externalId would remove every IOC in \
                          scope"
                    .into(),
            });
        }
        let mut f = self.write_filter();
        if !filter.uuids.is_empty() {
            f.insert("uuids".into(), json!(filter.uuids));
        }
        if let Some(v) = &filter.value {
            f.insert("value".into(), json!(v));
        }
        if let Some(e) = &filter.external_id {
            f.insert("externalId".into(), json!(e));
        }
        f.extend(filter.extra.clone());
        let body = json!({ "filter": f });
        let bytes = self.call(Method::DELETE, &[], Some(&body)).await?;
        Ok(self
            .decode::<DeleteBody>(&Method::DELETE, &bytes)?
            .data
            .affected)
    }

    /// `GET` with `limit=1` in scope: proves the URL, the token and the scope ids.
    pub async fn probe(&self) -> Result<ListPage, S1Error> {
        self.list(&ListQuery {
            limit: Some(1),
            ..Default::default()
        })
        .await
    }
}

/// Reads a non-2xx answer: the status, with S1's error entries for what they add.
fn refused(refusal: Refusal) -> S1Error {
    let Refusal {
        endpoint,
        status,
        retry_after,
        text,
    } = refusal;
    let errors = parse_errors(&text);
    match status {
        401 => S1Error::Auth {
            endpoint,
            message: auth_message(&errors),
        },
        403 => S1Error::Permission {
            endpoint,
            code: errors.iter().find_map(|e| e.code),
            message: permission_message(&errors, &text),
        },
        429 => S1Error::RateLimited {
            endpoint,
            retry_after,
        },
        400 | 422 => S1Error::Validation {
            endpoint,
            status,
            errors,
            body: trim_body(&text),
        },
        _ => S1Error::Http {
            endpoint,
            status,
            message: describe_errors(&errors, &text),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_url_is_built_once() {
        let want = "https://s1.example/web/api/v2.1/threat-intelligence/iocs";
        for base in [
            "https://s1.example",
            "https://s1.example//",
            "https://s1.example/web/api/v2.1/",
            "https://s1.example/web/api/v2.1/threat-intelligence/iocs/",
        ] {
            assert_eq!(iocs_url(base), want, "{base}");
        }
    }
}

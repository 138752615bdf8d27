//! HTTP client of Sekoia's IOC collection API, bound to one collection: read the collection, JSON
//! import, term search (with paging), revoke. One request per call, no retries (the pipeline owns
//! retry policy); every call is counted in metrics and mapped to a typed [`SekoiaError`].
//!
//! The text import (`POST …/indicators/text`) is deliberately not used: it answers 202 with a task
//! id and creates the indicators later, so no indicator ids come back — we could neither record what
//! we created nor tell which line Sekoia refused — and it takes one format per call, which is how the
//! seed connector came to send mixed-type batches under the first pattern's type.

use super::config::SekoiaConfig;
use super::error::{
    auth_message, collection_message, describe_body, permission_message, SekoiaError, SINK,
};
use super::types::{Collection, DefaultFields, ImportItem, IndicatorPage, RemoteIndicator};
use crate::config::Valid;
use crate::remote::{join_url, trim_body, CallFailure, JsonApi, Refusal};
use crate::sinks::SinkError;
use reqwest::Method;
use serde_json::json;

/// Page size of term searches.
pub const SEARCH_PAGE: usize = 100;
/// Most indicators one term search reads: a value shared by thousands of revoked copies is not worth
/// paging through forever; ours, when live, are among the first pages in practice.
pub const SEARCH_MAX: usize = 2_000;

/// How a 404 is read for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On404 {
    /// The collection (or the whole URL) is wrong.
    Collection,
    /// One indicator is unknown, unless Sekoia says the collection is.
    Indicator,
}

/// A client bound to one API base, key and collection.
// Derived: the credential lives in `JsonApi`, whose `Debug` leaves it out.
#[derive(Debug)]
pub struct SekoiaClient {
    api: JsonApi,
    /// `…/v2/inthreat/ioc-collections`.
    collections: String,
    /// `ioc-collection--<uuid>`.
    collection: String,
}

impl SekoiaClient {
    /// Builds a client from a validated section; fails only on the TLS setup (a CA bundle that
    /// cannot be read).
    pub fn new(cfg: &Valid<SekoiaConfig>) -> Result<Self, SinkError> {
        let facts = cfg.facts();
        Ok(SekoiaClient {
            api: JsonApi::for_sink(
                SINK,
                &cfg.tls(),
                cfg.timeout,
                facts.key.expose(),
                facts.auth.clone(),
            )?,
            collections: facts.collections_url.clone(),
            collection: facts.collection_id.clone(),
        })
    }

    /// `ioc-collection--<uuid>`.
    pub fn collection_id(&self) -> &str {
        &self.collection
    }

    /// `{base}/ioc-collections/{id}`.
    pub fn collection_url(&self) -> String {
        join_url(&self.collections, &self.collection)
    }

    /// `{base}/ioc-collections/{id}/indicators`.
    pub fn indicators_url(&self) -> String {
        join_url(&self.collection_url(), "indicators")
    }

    /// `{base}/ioc-collections/{id}/indicators/{indicator id}`, the id percent-encoded as one path
    /// segment (it comes from our state, but must never be able to change the path).
    pub fn indicator_url(&self, indicator: &str) -> Result<String, SekoiaError> {
        let base = self.indicators_url();
        let mut url = url::Url::parse(&base).map_err(|e| SekoiaError::Decode {
            endpoint: format!("DELETE {base}"),
            message: format!("cannot build the indicator URL: {e}"),
        })?;
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.push(indicator.trim());
        }
        Ok(url.to_string())
    }

    /// One call: sends, counts, maps the status. Returns the 2xx body.
    async fn call(
        &self,
        method: Method,
        url: &str,
        route: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
        on_404: On404,
    ) -> Result<bytes::Bytes, SekoiaError> {
        let answer = self.api.call(method, url, route, query, body).await;
        answer.map_err(|failure| match failure {
            CallFailure::Transport { endpoint, message } => {
                SekoiaError::Transport { endpoint, message }
            }
            CallFailure::Refused(refusal) => self.refused(refusal, on_404),
        })
    }

    /// Reads a non-2xx answer: the status, and for a 404 whether Sekoia names the collection.
    fn refused(&self, refusal: Refusal, on_404: On404) -> SekoiaError {
        let Refusal {
            endpoint,
            status,
            retry_after,
            text,
        } = refusal;
        match status {
            401 => SekoiaError::Auth {
                endpoint,
                message: auth_message(&text),
            },
            403 => SekoiaError::Permission {
                endpoint,
                message: permission_message(&text),
            },
            // On an indicator URL, a 404 names the indicator unless Sekoia says the collection.
            404 if on_404 == On404::Indicator
                && !describe_body(&text).to_lowercase().contains("collection") =>
            {
                SekoiaError::IndicatorNotFound {
                    endpoint,
                    message: describe_body(&text),
                }
            }
            404 => SekoiaError::CollectionNotFound {
                endpoint,
                message: collection_message(&self.collection, &text),
            },
            429 => SekoiaError::RateLimited {
                endpoint,
                retry_after,
            },
            400 | 422 => SekoiaError::Validation {
                endpoint,
                status,
                message: describe_body(&text),
                body: trim_body(&text),
            },
            _ => SekoiaError::Http {
                endpoint,
                status,
                message: describe_body(&text),
            },
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(
        endpoint: impl FnOnce() -> String,
        bytes: &[u8],
    ) -> Result<T, SekoiaError> {
        serde_json::from_slice(bytes).map_err(|e| SekoiaError::Decode {
            endpoint: endpoint(),
            message: e.to_string(),
        })
    }

    /// `GET {base}/ioc-collections/{id}`: proves the URL, the key and the collection.
    pub async fn get_collection(&self) -> Result<Collection, SekoiaError> {
        let url = self.collection_url();
        let bytes = self
            .call(
                Method::GET,
                &url,
                "/ioc-collections/{id}",
                &[],
                None,
                On404::Collection,
            )
            .await?;
        Self::decode(|| format!("GET {url}"), &bytes)
    }

    /// JSON import of up to 100 items sharing `defaults` in one call; returns Sekoia's `items`
    /// (normally one per item, in order). As documented they are `{value, result}` without an id;
    /// a richer answer (full indicators) is read the same way.
    pub async fn import(
        &self,
        defaults: &DefaultFields,
        items: &[ImportItem],
    ) -> Result<Vec<RemoteIndicator>, SekoiaError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let url = self.indicators_url();
        let body = json!({ "indicators": items, "default_fields": defaults });
        let bytes = self
            .call(
                Method::POST,
                &url,
                "/ioc-collections/{id}/indicators",
                &[],
                Some(&body),
                On404::Collection,
            )
            .await?;
        Ok(Self::decode::<IndicatorPage>(|| format!("POST {url}"), &bytes)?.items)
    }

    /// Every indicator (revoked ones included) whose text matches `term`, paging with
    /// `limit`/`offset` up to [`SEARCH_MAX`]. `term` is a text search: callers match values exactly.
    /// A page may be shorter than `limit` with more to come (Sekoia does not promise full pages):
    /// we stop when `total` is reached or, without a `total`, at an empty page.
    pub async fn search(&self, term: &str) -> Result<Vec<RemoteIndicator>, SekoiaError> {
        let url = self.indicators_url();
        let mut out: Vec<RemoteIndicator> = Vec::new();
        loop {
            let query = [
                ("term", term.trim().to_string()),
                ("limit", SEARCH_PAGE.to_string()),
                ("offset", out.len().to_string()),
            ];
            let bytes = self
                .call(
                    Method::GET,
                    &url,
                    "/ioc-collections/{id}/indicators",
                    &query,
                    None,
                    On404::Collection,
                )
                .await?;
            let page: IndicatorPage = Self::decode(|| format!("GET {url}"), &bytes)?;
            let got = page.items.len();
            out.extend(page.items);
            let done = match page.total {
                Some(total) => u64::try_from(out.len()).unwrap_or(u64::MAX) >= total,
                None => false,
            };
            if got == 0 || done {
                break;
            }
            if out.len() >= SEARCH_MAX {
                tracing::warn!(
                    sink = SINK,
                    term = term.trim(),
                    total = page.total,
                    read = out.len(),
                    "sekoia term search has more matches than we read; an indicator of ours beyond \
                     them would be missed"
                );
                break;
            }
        }
        Ok(out)
    }

    /// `DELETE …/indicators/{id}`: revokes one indicator (a soft delete). A 404 is
    /// [`SekoiaError::IndicatorNotFound`]; the caller decides whether that is fine.
    pub async fn revoke(&self, indicator: &str) -> Result<(), SekoiaError> {
        let url = self.indicator_url(indicator)?;
        self.call(
            Method::DELETE,
            &url,
            "/ioc-collections/{id}/indicators/{indicator_id}",
            &[],
            None,
            On404::Indicator,
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::super::error::{KEY_APIKEY, KEY_COLLECTION, KEY_URL};
    use super::*;
    use crate::secret::Secret;

    fn cfg(url: &str) -> SekoiaConfig {
        SekoiaConfig {
            url: Some(url.into()),
            apikey: Some(Secret::new("Bearer  k")),
            ioc_collection_uuid: Some("3E7F0D2C-5B1A-4C6D-9E8F-0A1B2C3D4E5F".into()),
            ..Default::default()
        }
    }

    #[test]
    fn builds_every_url_once() {
        let valid = Valid::new(cfg("https://api.sekoia.io/v2/inthreat/")).expect("valid");
        let c = SekoiaClient::new(&valid).expect("client");
        let coll = "https://api.sekoia.io/v2/inthreat/ioc-collections/\
                    ioc-collection--3e7f0d2c-5b1a-4c6d-9e8f-0a1b2c3d4e5f";
        assert_eq!(c.collection_url(), coll);
        assert_eq!(c.indicators_url(), format!("{coll}/indicators"));
        assert_eq!(
            c.indicator_url("indicator--1").expect("url"),
            format!("{coll}/indicators/indicator--1")
        );
        assert_eq!(
            c.indicator_url("../x?y").expect("url"),
            format!("{coll}/indicators/..%2Fx%3Fy")
        );
        assert!(!format!("{c:?}").contains(" k"));
    }

    /// The settings a client cannot use never make a validated section (so never a client).
    #[test]
    fn refuses_bad_settings() {
        let key_of = |c: SekoiaConfig| match Valid::new(c) {
            Err(crate::config::ConfigError::Invalid(p)) => {
                p.into_iter().map(|p| p.key).collect::<Vec<_>>()
            }
            Ok(_) => Vec::new(),
        };
        let mut bad = cfg("https://api.sekoia.io");
        bad.ioc_collection_uuid = Some("ChangeMe".into());
        assert_eq!(key_of(bad), [KEY_COLLECTION]);
        let mut bad = cfg("https://api.sekoia.io");
        bad.apikey = Some(Secret::new("a\nb"));
        assert_eq!(key_of(bad), [KEY_APIKEY]);
        assert_eq!(key_of(cfg("not a url")), [KEY_URL]);
    }
}

//! The `sekoia_intel` config section: API base URL, API key, the IOC collection, batching, validity
//! defaults, the link back to the source and the quota we warn against; plus the normalisation of the
//! URL and the collection id, which users write in several forms.

use crate::config::Section;
use crate::secret::Secret;
use reqwest::header::HeaderValue;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Config section name; env vars are `SEKOIA_INTEL_<KEY>`.
pub const SECTION: &str = "sekoia_intel";

/// Most indicators Sekoia accepts in one JSON import (protocols.md §2).
pub const MAX_BATCH_SIZE: usize = 100;

/// Sekoia's IOC quota. The docs say per community (all collections), the seed connector's README per
/// collection; either way it is the number we must not reach.
pub const DEFAULT_QUOTA: u64 = 500_000;

/// The prefix of Sekoia collection ids.
pub const COLLECTION_PREFIX: &str = "ioc-collection--";

/// Longest `instance` name (the marker must leave room in a 500-character description).
pub const MAX_INSTANCE_CHARS: usize = 64;

/// Placeholders a `link_template` may use.
const LINK_PLACEHOLDERS: [&str; 2] = ["{id}", "{indicator_id}"];

/// Settings of the Sekoia.io sink.
///
/// Every field serialises (the config loader discovers known keys by serialising `Default`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SekoiaConfig {
    /// API base: `https://api.sekoia.io`, `…/v2/inthreat`, `…/v2/inthreat/ioc-collections`, or a
    /// regional `https://app.<region>.sekoia.io/api[/…]`; see [`collections_url`].
    pub url: Option<String>,
    /// API key (sent as `Authorization: Bearer`), with the permission to manage IOC collections.
    pub apikey: Option<Secret>,
    /// The IOC collection, with or without the `ioc-collection--` prefix.
    pub ioc_collection_uuid: Option<String>,
    /// Most indicators per JSON import (1–100).
    pub batch_size: usize,
    /// Per-request timeout.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Verify the API's TLS certificate.
    pub ssl_verify: bool,
    /// PEM bundle of CA certificates to trust in addition to the bundled and system roots (an
    /// internal CA); unreadable or invalid is a config error.
    pub ssl_ca: Option<std::path::PathBuf>,
    /// The source name written in descriptions; default "OpenCTI" or "MISP" after the running source.
    pub source_name: Option<String>,
    /// Names this iocsync in the marker it writes in the description of every indicator it creates
    /// (`[iocsync:<instance>]`; unset: `[iocsync]`). Give each iocsync process that feeds the same
    /// collection its own, and never change it while indicators it created are live.
    pub instance: Option<String>,
    /// Accepted for older configurations, no longer used: Sekoia's JSON import has one description
    /// per call (`default_fields`), so there is no room for a per-indicator link.
    pub link_template: Option<String>,
    /// Validity in days when the indicator has no `valid_until`; unset lets Sekoia choose.
    pub default_valid_days: Option<u32>,
    /// The IOC quota to warn against (at 90 %).
    pub quota: u64,
}

impl Default for SekoiaConfig {
    fn default() -> Self {
        SekoiaConfig {
            url: None,
            apikey: None,
            ioc_collection_uuid: None,
            batch_size: MAX_BATCH_SIZE,
            timeout: Duration::from_secs(30),
            ssl_verify: true,
            ssl_ca: None,
            source_name: None,
            instance: None,
            link_template: None,
            default_valid_days: None,
            quota: DEFAULT_QUOTA,
        }
    }
}

/// Builds the `…/v2/inthreat/ioc-collections` URL from any accepted form of the API base: empty path
/// segments (doubled slashes) are dropped, a trailing `ioc-collections` and `v2/inthreat` are not
/// added twice, a regional console host without a path gets its `/api`, query and fragment go.
pub fn collections_url(base: &str) -> Result<String, String> {
    let mut url = url::Url::parse(base.trim()).map_err(|e| format!("not a valid URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "expected an http(s) URL, got scheme `{}`",
            url.scheme()
        ));
    }
    let mut segments: Vec<String> = url
        .path_segments()
        .map(|s| s.filter(|p| !p.is_empty()).map(str::to_string).collect())
        .unwrap_or_default();
    if segments.last().is_some_and(|s| s == "ioc-collections") {
        segments.pop();
    }
    if segments.ends_with(&["v2".to_string(), "inthreat".to_string()]) {
        segments.truncate(segments.len() - 2);
    } else if segments.last().is_some_and(|s| s == "v2") {
        segments.pop();
    }
    // `https://app.eu2.sekoia.io` serves the console; its API lives under `/api`.
    let regional = url
        .host_str()
        .is_some_and(|h| h.starts_with("app.") && h.ends_with(".sekoia.io"));
    if regional && segments.is_empty() {
        segments.push("api".into());
    }
    segments.extend(["v2", "inthreat", "ioc-collections"].map(String::from));
    url.set_path(&segments.join("/"));
    url.set_query(None);
    url.set_fragment(None);
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// Normalises a collection id to `ioc-collection--<uuid>`, accepting it with or without the prefix
/// (any case) and the uuid in any case.
pub fn collection_id(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    let bare = match raw.get(..COLLECTION_PREFIX.len()) {
        Some(head) if head.eq_ignore_ascii_case(COLLECTION_PREFIX) => {
            &raw[COLLECTION_PREFIX.len()..]
        }
        _ => raw,
    };
    let uuid = uuid::Uuid::parse_str(bare)
        .map_err(|_| format!("`{raw}` is not `ioc-collection--<uuid>` nor a bare uuid"))?;
    Ok(format!("{COLLECTION_PREFIX}{}", uuid.hyphenated()))
}

impl SekoiaConfig {
    /// The TLS settings of the HTTP client (verification, extra CA bundle).
    pub fn tls(&self) -> crate::remote::TlsSettings<'_> {
        crate::remote::TlsSettings::new(
            "sekoia",
            ["sekoia_intel.ssl_verify", "sekoia_intel.ssl_ca"],
            self.ssl_verify,
            self.ssl_ca.as_deref(),
        )
    }

    /// The API base as configured, trimmed; `None` when unset or blank.
    pub fn base_url(&self) -> Option<&str> {
        self.url.as_deref().map(str::trim).filter(|u| !u.is_empty())
    }

    /// True when the user started configuring this sink (a URL, a key or a collection is set).
    pub fn is_configured(&self) -> bool {
        self.base_url().is_some()
            || self.apikey.as_ref().is_some_and(|k| !k.is_blank())
            || self
                .ioc_collection_uuid
                .as_deref()
                .is_some_and(|c| !c.trim().is_empty())
    }

    /// Checks the section without I/O; returns `(config key, message)` for every problem.
    pub fn validate(&self) -> Vec<(String, String)> {
        self.check().err().unwrap_or_default()
    }
}

/// What a valid `sekoia_intel` section establishes: the endpoint, the collection, the credential as
/// sent.
#[derive(Debug, Clone)]
pub struct SekoiaFacts {
    /// `…/v2/inthreat/ioc-collections` (see [`collections_url`]).
    pub collections_url: String,
    /// `ioc-collection--<uuid>` (see [`collection_id`]).
    pub collection_id: String,
    /// The API key without a pasted `Bearer ` scheme.
    pub key: Secret,
    /// `Authorization: Bearer <key>`, marked sensitive.
    pub auth: HeaderValue,
}

impl Section for SekoiaConfig {
    type Facts = SekoiaFacts;

    fn check(&self) -> Result<SekoiaFacts, Vec<(String, String)>> {
        let mut errs = Vec::new();
        let mut err = |key: &str, msg: String| errs.push((format!("{SECTION}.{key}"), msg));

        let collections = match self.base_url() {
            None => {
                err(
                    "url",
                    "the Sekoia API URL is required (e.g. https://api.sekoia.io)".into(),
                );
                None
            }
            Some(u) => match collections_url(u) {
                Ok(c) => Some(c),
                Err(e) => {
                    err("url", e);
                    None
                }
            },
        };
        let key = self
            .apikey
            .as_ref()
            .map(|k| k.expose().trim())
            .filter(|k| !k.is_empty())
            // A pasted `Bearer ` scheme is tolerated rather than sent twice.
            .map(|k| match k.split_once(char::is_whitespace) {
                Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
                _ => k,
            });
        let credential = match key {
            None => {
                err("apikey", "the Sekoia API key is required".into());
                None
            }
            Some(k) => match HeaderValue::from_str(&format!("Bearer {k}")) {
                Ok(mut auth) => {
                    auth.set_sensitive(true);
                    Some((Secret::new(k), auth))
                }
                Err(_) => {
                    err(
                        "apikey",
                        "the API key contains characters not allowed in an HTTP header".into(),
                    );
                    None
                }
            },
        };
        let collection = match self.ioc_collection_uuid.as_deref().map(str::trim) {
            None | Some("") => {
                err(
                    "ioc_collection_uuid",
                    "the IOC collection id is required".into(),
                );
                None
            }
            Some(c) => match collection_id(c) {
                Ok(id) => Some(id),
                Err(e) => {
                    err("ioc_collection_uuid", e);
                    None
                }
            },
        };
        if self.batch_size == 0 || self.batch_size > MAX_BATCH_SIZE {
            err(
                "batch_size",
                format!("must be between 1 and {MAX_BATCH_SIZE} (Sekoia's import limit)"),
            );
        }
        if self.timeout.is_zero() {
            err("timeout", "must be greater than zero".into());
        }
        if let Some(i) = self.instance.as_deref().map(str::trim) {
            let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
            if i.is_empty() || i.chars().count() > MAX_INSTANCE_CHARS || !i.chars().all(allowed) {
                err(
                    "instance",
                    format!(
                        "must be 1 to {MAX_INSTANCE_CHARS} letters, digits, `-`, `_` or `.` \
                         (it goes into the marker `[iocsync:<instance>]`)"
                    ),
                );
            }
        }
        if let Some(t) = self.link_template.as_deref() {
            if !LINK_PLACEHOLDERS.iter().any(|p| t.contains(p)) {
                err(
                    "link_template",
                    "must contain `{id}` (source internal id) or `{indicator_id}`".into(),
                );
            } else if !t.trim_start().starts_with("http://")
                && !t.trim_start().starts_with("https://")
            {
                err("link_template", "must be an http(s) URL".into());
            }
        }
        if self.default_valid_days == Some(0) {
            err("default_valid_days", "must be at least 1".into());
        }
        if self.quota == 0 {
            err("quota", "must be greater than zero".into());
        }
        match (collections, collection, credential) {
            (Some(collections_url), Some(collection_id), Some((key, auth))) if errs.is_empty() => {
                Ok(SekoiaFacts {
                    collections_url,
                    collection_id,
                    key,
                    auth,
                })
            }
            _ => Err(errs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "3e7f0d2c-5b1a-4c6d-9e8f-0a1b2c3d4e5f";

    fn good() -> SekoiaConfig {
        SekoiaConfig {
            url: Some("https://api.sekoia.io".into()),
            apikey: Some(Secret::new("key")),
            ioc_collection_uuid: Some(UUID.into()),
            ..Default::default()
        }
    }

    fn keys(cfg: &SekoiaConfig) -> Vec<String> {
        cfg.validate().into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn default_serialises_every_key() {
        let v = serde_json::to_value(SekoiaConfig::default()).expect("json");
        let obj = v.as_object().expect("object");
        for key in [
            "url",
            "apikey",
            "ioc_collection_uuid",
            "batch_size",
            "timeout",
            "ssl_verify",
            "ssl_ca",
            "source_name",
            "instance",
            "link_template",
            "default_valid_days",
            "quota",
        ] {
            assert!(obj.contains_key(key), "missing {key}");
        }
        assert_eq!(obj.len(), 12);
        assert_eq!(obj["timeout"], "30s");
        assert_eq!(obj["batch_size"], 100);
        assert_eq!(obj["quota"], 500_000);
    }

    #[test]
    fn every_accepted_url_form_gives_one_collections_url() {
        let global = "https://api.sekoia.io/v2/inthreat/ioc-collections";
        for base in [
            "https://api.sekoia.io",
            "https://api.sekoia.io/",
            " https://api.sekoia.io// ",
            "https://api.sekoia.io/v2",
            "https://api.sekoia.io/v2/inthreat",
            "https://api.sekoia.io//v2//inthreat/",
            "https://api.sekoia.io/v2/inthreat/ioc-collections",
            "https://api.sekoia.io/v2/inthreat/ioc-collections/",
            "https://api.sekoia.io/v2/inthreat/ioc-collections?x=1#f",
        ] {
            assert_eq!(collections_url(base).as_deref(), Ok(global), "{base}");
        }
        let regional = "https://app.eu2.sekoia.io/api/v2/inthreat/ioc-collections";
        for base in [
            "https://app.eu2.sekoia.io",
            "https://app.eu2.sekoia.io/api",
            "https://app.eu2.sekoia.io/api/",
            "https://app.eu2.sekoia.io/api/v2/inthreat",
            "https://app.eu2.sekoia.io/api/v2/inthreat/ioc-collections/",
        ] {
            assert_eq!(collections_url(base).as_deref(), Ok(regional), "{base}");
        }
        assert_eq!(
            collections_url("http://127.0.0.1:8080/api").as_deref(),
            Ok("http://127.0.0.1:8080/api/v2/inthreat/ioc-collections")
        );
        assert!(collections_url("api.sekoia.io").is_err());
        assert!(collections_url("ftp://api.sekoia.io").is_err());
    }

    #[test]
    fn collection_ids_with_or_without_prefix() {
        let want = format!("ioc-collection--{UUID}");
        for raw in [
            UUID.to_string(),
            want.clone(),
            format!(" IOC-Collection--{} ", UUID.to_uppercase()),
        ] {
            assert_eq!(collection_id(&raw).as_deref(), Ok(want.as_str()), "{raw}");
        }
        assert!(collection_id("ChangeMe").is_err());
        assert!(collection_id("ioc-collection--").is_err());
    }

    #[test]
    fn validation_rules() {
        assert!(good().validate().is_empty(), "{:?}", good().validate());
        assert!(!SekoiaConfig::default().is_configured());
        assert!(good().is_configured());
        assert_eq!(
            keys(&SekoiaConfig::default()),
            [
                "sekoia_intel.url",
                "sekoia_intel.apikey",
                "sekoia_intel.ioc_collection_uuid"
            ]
        );

        let mut c = good();
        c.batch_size = 101;
        c.ioc_collection_uuid = Some("ChangeMe".into());
        c.link_template = Some("https://cti/x".into());
        assert_eq!(
            keys(&c),
            [
                "sekoia_intel.ioc_collection_uuid",
                "sekoia_intel.batch_size",
                "sekoia_intel.link_template"
            ]
        );

        let mut c = good();
        c.link_template = Some("cti/{id}".into());
        c.default_valid_days = Some(0);
        c.apikey = Some(Secret::new("  "));
        c.instance = Some("a]b".into());
        assert_eq!(
            keys(&c),
            [
                "sekoia_intel.apikey",
                "sekoia_intel.instance",
                "sekoia_intel.link_template",
                "sekoia_intel.default_valid_days"
            ]
        );
        c.instance = Some("prod-eu.1".into());
        c.link_template = Some("https://cti/dashboard/observations/indicators/{id}".into());
        c.default_valid_days = Some(30);
        c.apikey = Some(Secret::new("k"));
        assert!(c.validate().is_empty());
    }
}

//! The `sentinelone_intel` config section: console URL, API token, scope ids and the defaults used
//! when an indicator does not say (source name, score, validity).

use crate::config::Section;
use crate::secret::Secret;
use reqwest::header::HeaderValue;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Config section name; env vars are `SENTINELONE_INTEL_<KEY>`.
pub const SECTION: &str = "sentinelone_intel";

/// Hard cap we accept for `batch_size`: S1's real per-POST maximum is unconfirmed, production peers
/// send 2,500, so anything far above is almost certainly a typo.
pub const MAX_BATCH_SIZE: usize = 5_000;

/// Settings of the SentinelOne sink (and of the `iocsync s1` CLI, which shares the client).
///
/// Every field serialises (the config loader discovers known keys by serialising `Default`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SentinelOneConfig {
    /// Console URL, e.g. `https://usea1.sentinelone.net` (trailing slashes are fine).
    pub url: Option<String>,
    /// Alias of `url` (the seed connector's `SENTINELONE_INTEL_API_URL`).
    pub api_url: Option<String>,
    /// API token, with or without the `ApiToken ` prefix.
    pub api_key: Option<Secret>,
    /// Account id(s) the IOCs belong to (comma-separated for several); exclusive with `site_id`.
    pub account_id: Option<String>,
    /// Site id(s) (comma-separated for several); exclusive with `account_id`.
    pub site_id: Option<String>,
    /// Group id(s) (comma-separated for several); narrows writes, not sent on reads.
    pub group_id: Option<String>,
    /// Most IOCs per create / delete call.
    pub batch_size: usize,
    /// The `source` field of created IOCs; default "OpenCTI" or "MISP" after the running source.
    pub source_name: Option<String>,
    /// `originalRiskScore` when the indicator has no score (0–100).
    pub default_score: u8,
    /// Validity in days when the indicator has no `valid_until`; unset lets S1 pick its per-type
    /// default (14 days for IPs, 90 for URLs and domains, 180 for hashes).
    pub default_valid_days: Option<u32>,
    /// Per-request timeout.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Verify the console's TLS certificate.
    pub ssl_verify: bool,
    /// PEM bundle of CA certificates to trust in addition to the bundled and system roots (an
    /// internal CA); unreadable or invalid is a config error.
    pub ssl_ca: Option<std::path::PathBuf>,
}

impl Default for SentinelOneConfig {
    fn default() -> Self {
        SentinelOneConfig {
            url: None,
            api_url: None,
            api_key: None,
            account_id: None,
            site_id: None,
            group_id: None,
            batch_size: 1_000,
            source_name: None,
            default_score: 100,
            default_valid_days: None,
            timeout: Duration::from_secs(30),
            ssl_verify: true,
            ssl_ca: None,
        }
    }
}

/// The scope every call carries: which account(s), site(s) and group(s) the IOCs live in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Account ids.
    pub account_ids: Vec<String>,
    /// Site ids.
    pub site_ids: Vec<String>,
    /// Group ids.
    pub group_ids: Vec<String>,
}

impl Scope {
    /// True when no id is set.
    pub fn is_empty(&self) -> bool {
        self.account_ids.is_empty() && self.site_ids.is_empty() && self.group_ids.is_empty()
    }

    /// Human description for `check` and logs, e.g. `account 123` or `site 4, group 7`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (what, ids) in [
            ("account", &self.account_ids),
            ("site", &self.site_ids),
            ("group", &self.group_ids),
        ] {
            if !ids.is_empty() {
                parts.push(format!("{what} {}", ids.join(",")));
            }
        }
        if parts.is_empty() {
            "tenant".to_string()
        } else {
            parts.join(", ")
        }
    }
}

/// Splits a comma-separated id list, dropping blanks.
fn split_ids(raw: &Option<String>) -> Vec<String> {
    raw.as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

impl SentinelOneConfig {
    /// The TLS settings of the HTTP client (verification, extra CA bundle).
    pub fn tls(&self) -> crate::remote::TlsSettings<'_> {
        crate::remote::TlsSettings::new(
            "sentinelone",
            ["sentinelone_intel.ssl_verify", "sentinelone_intel.ssl_ca"],
            self.ssl_verify,
            self.ssl_ca.as_deref(),
        )
    }

    /// The console URL (`url`, else its alias `api_url`), trimmed; `None` when neither is set.
    pub fn console_url(&self) -> Option<&str> {
        [&self.url, &self.api_url]
            .into_iter()
            .filter_map(|u| u.as_deref().map(str::trim))
            .find(|u| !u.is_empty())
    }

    /// The scope ids, parsed.
    pub fn scope(&self) -> Scope {
        Scope {
            account_ids: split_ids(&self.account_id),
            site_ids: split_ids(&self.site_id),
            group_ids: split_ids(&self.group_id),
        }
    }

    /// True when the user started configuring this sink (a URL or a key is set).
    pub fn is_configured(&self) -> bool {
        self.console_url().is_some() || self.api_key.as_ref().is_some_and(|k| !k.is_blank())
    }

    /// Checks the section without I/O; returns `(config key, message)` for every problem.
    pub fn validate(&self) -> Vec<(String, String)> {
        self.check().err().unwrap_or_default()
    }
}

/// What a valid `sentinelone_intel` section establishes: the console, the credential as sent, the
/// scope.
#[derive(Debug, Clone)]
pub struct S1Facts {
    /// The console URL (`url` or its alias), trimmed, an http(s) URL.
    pub console_url: String,
    /// The API token without a pasted `ApiToken ` scheme.
    pub token: Secret,
    /// `Authorization: ApiToken <token>`, marked sensitive.
    pub auth: HeaderValue,
    /// The scope ids; at least one is set, and not both accounts and sites.
    pub scope: Scope,
}

impl Section for SentinelOneConfig {
    type Facts = S1Facts;

    fn check(&self) -> Result<S1Facts, Vec<(String, String)>> {
        let mut errs = Vec::new();
        let mut err = |key: &str, msg: String| errs.push((format!("{SECTION}.{key}"), msg));

        let console_url = match self.console_url() {
            None => {
                err("url", "the SentinelOne console URL is required".into());
                None
            }
            Some(u) => match url::Url::parse(u) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Some(u.to_string()),
                Ok(parsed) => {
                    err(
                        "url",
                        format!("expected an http(s) URL, got scheme `{}`", parsed.scheme()),
                    );
                    None
                }
                Err(e) => {
                    err("url", format!("not a valid URL ({e})"));
                    None
                }
            },
        };
        if let (Some(a), Some(b)) = (&self.url, &self.api_url) {
            if a.trim().trim_end_matches('/') != b.trim().trim_end_matches('/') {
                err(
                    "api_url",
                    "`url` and its alias `api_url` are both set and differ: keep one".into(),
                );
            }
        }
        let token = self
            .api_key
            .as_ref()
            .map(|k| strip_token_scheme(k.expose()))
            .filter(|t| !t.is_empty());
        let credential = match token {
            None => {
                err("api_key", "the SentinelOne API token is required".into());
                None
            }
            Some(t) => match HeaderValue::from_str(&format!("ApiToken {t}")) {
                Ok(mut auth) => {
                    auth.set_sensitive(true);
                    Some((Secret::new(t), auth))
                }
                Err(_) => {
                    err(
                        "api_key",
                        "the API token contains characters not allowed in an HTTP header".into(),
                    );
                    None
                }
            },
        };

        let scope = self.scope();
        if scope.is_empty() {
            err(
                "account_id",
                "at least one of account_id, site_id or group_id is required".into(),
            );
        }
        if !scope.account_ids.is_empty() && !scope.site_ids.is_empty() {
            err(
                "site_id",
                "account_id and site_id are mutually exclusive: set only one".into(),
            );
        }
        for (key, ids) in [
            ("account_id", &scope.account_ids),
            ("site_id", &scope.site_ids),
            ("group_id", &scope.group_ids),
        ] {
            // S1 ids are numeric strings; this catches placeholders like `changeme`.
            if let Some(bad) = ids
                .iter()
                .find(|id| !id.bytes().all(|b| b.is_ascii_digit()))
            {
                err(key, format!("`{bad}` is not a numeric SentinelOne id"));
            }
        }

        if self.batch_size == 0 || self.batch_size > MAX_BATCH_SIZE {
            err(
                "batch_size",
                format!("must be between 1 and {MAX_BATCH_SIZE}"),
            );
        }
        if self.default_score > 100 {
            err("default_score", "must be between 0 and 100".into());
        }
        if let Some(days) = self.default_valid_days {
            if days == 0 || days > 180 {
                err(
                    "default_valid_days",
                    "must be between 1 and 180 (S1 caps IPs at 30 days)".into(),
                );
            }
        }
        if self.timeout.is_zero() {
            err("timeout", "must be greater than zero".into());
        }
        match (console_url, credential) {
            (Some(console_url), Some((token, auth))) if errs.is_empty() => Ok(S1Facts {
                console_url,
                token,
                auth,
                scope,
            }),
            _ => Err(errs),
        }
    }
}

/// Removes a pasted `ApiToken ` scheme (any case, also `APIToken`) and surrounding whitespace.
pub fn strip_token_scheme(raw: &str) -> &str {
    let raw = raw.trim();
    if raw.eq_ignore_ascii_case("apitoken") {
        // Only the scheme was pasted.
        return "";
    }
    match raw.split_once(char::is_whitespace) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("apitoken") => rest.trim(),
        _ => raw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> SentinelOneConfig {
        SentinelOneConfig {
            url: Some("https://s1.example/".into()),
            api_key: Some(Secret::new("tok")),
            account_id: Some("123".into()),
            ..Default::default()
        }
    }

    fn keys(cfg: &SentinelOneConfig) -> Vec<String> {
        cfg.validate().into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn default_serialises_every_key() {
        let v = serde_json::to_value(SentinelOneConfig::default()).expect("json");
        let obj = v.as_object().expect("object");
        for key in [
            "url",
            "api_url",
            "api_key",
            "account_id",
            "site_id",
            "group_id",
            "batch_size",
            "source_name",
            "default_score",
            "default_valid_days",
            "timeout",
            "ssl_verify",
            "ssl_ca",
        ] {
            assert!(obj.contains_key(key), "missing {key}");
        }
        assert_eq!(obj["timeout"], "30s");
        assert_eq!(obj["batch_size"], 1000);
    }

    #[test]
    fn validation_rules() {
        assert!(good().validate().is_empty(), "{:?}", good().validate());
        assert!(!SentinelOneConfig::default().is_configured());
        assert!(good().is_configured());

        let mut c = good();
        c.account_id = None;
        assert_eq!(keys(&c), ["sentinelone_intel.account_id"]);
        c.group_id = Some("77".into());
        assert!(c.validate().is_empty());

        let mut c = good();
        c.site_id = Some("5".into());
        assert_eq!(keys(&c), ["sentinelone_intel.site_id"]);

        let mut c = good();
        c.account_id = Some("changeme".into());
        assert_eq!(keys(&c), ["sentinelone_intel.account_id"]);

        let mut c = good();
        c.url = None;
        c.api_url = Some("https://s1.example".into());
        assert!(c.validate().is_empty());
        c.url = Some("https://other.example".into());
        assert_eq!(keys(&c), ["sentinelone_intel.api_url"]);

        let mut c = good();
        c.api_key = Some(Secret::new("ApiToken   "));
        c.batch_size = 0;
        c.default_valid_days = Some(365);
        assert_eq!(
            keys(&c),
            [
                "sentinelone_intel.api_key",
                "sentinelone_intel.batch_size",
                "sentinelone_intel.default_valid_days"
            ]
        );
    }

    #[test]
    fn scheme_is_stripped_case_insensitively() {
        assert_eq!(strip_token_scheme("ApiToken abc"), "abc");
        assert_eq!(strip_token_scheme(" apitoken  abc "), "abc");
        assert_eq!(strip_token_scheme("APIToken abc"), "abc");
        assert_eq!(strip_token_scheme("abc"), "abc");
        assert_eq!(strip_token_scheme("Bearer abc"), "Bearer abc");
    }

    #[test]
    fn scope_parses_lists() {
        let mut c = good();
        c.group_id = Some(" 1, 2 ,".into());
        let s = c.scope();
        assert_eq!(s.group_ids, ["1", "2"]);
        assert_eq!(s.describe(), "account 123, group 1,2");
    }
}

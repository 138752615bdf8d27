//! The `zeek` config section (env `IOCSYNC_ZEEK_<KEY>`).

use crate::config::Section;
use crate::sinks::jsonl::fs::FileMode;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// How deleted items are taken out of a running Zeek, which keeps items whose rows disappeared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Removal {
    /// Keep a `meta.remove = T` row for `tombstone_retention` (`@load frameworks/intel/removal`).
    #[default]
    Tombstone,
    /// Drop the row; Zeek expires items not re-read within `Intel::item_expiration`
    /// (`@load frameworks/intel/do_expire`), so the file is rewritten every `rewrite_interval`.
    Expire,
}

impl Removal {
    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            Removal::Tombstone => "tombstone",
            Removal::Expire => "expire",
        }
    }
}

/// Settings of the Zeek Intelligence Framework sink.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZeekConfig {
    /// The intel file Zeek reads (`Intel::read_files`). Unset: sink not configured.
    pub intel_path: Option<PathBuf>,
    /// `tombstone` (default) or `expire`.
    pub removal: Removal,
    /// How long a tombstone row stays in the file after the deletion (tombstone mode).
    #[serde(with = "humantime_serde")]
    pub tombstone_retention: Duration,
    /// The longest time between two rewrites of the file (expire mode; also how often due tombstones
    /// are dropped).
    #[serde(with = "humantime_serde")]
    pub rewrite_interval: Duration,
    /// `meta.source` of every row; Zeek removes an item per (indicator, source).
    pub source_name: String,
    /// `meta.url` when the indicator has no source URL: `{indicator_id}` and `{internal_id}` are
    /// replaced (a row whose template needs a missing `{internal_id}` gets no URL).
    pub url_template: Option<String>,
    /// The permission bits of the intel file (octal string, default `0640`); the sidecar state is
    /// always 0600.
    pub file_mode: FileMode,
}

impl Default for ZeekConfig {
    fn default() -> Self {
        ZeekConfig {
            intel_path: None,
            removal: Removal::Tombstone,
            tombstone_retention: Duration::from_secs(7 * 24 * 3600),
            rewrite_interval: Duration::from_secs(3600),
            source_name: "iocsync".to_owned(),
            url_template: None,
            file_mode: FileMode::DEFAULT,
        }
    }
}

impl ZeekConfig {
    /// Whether the sink is configured at all (an intel path is set).
    pub fn is_configured(&self) -> bool {
        self.intel_path.is_some()
    }

    /// Checks the values without touching the filesystem; returns `(key, message)` per problem.
    pub fn validate(&self) -> Vec<(String, String)> {
        self.check().err().unwrap_or_default()
    }
}

/// What a valid `zeek` section establishes.
#[derive(Debug, Clone)]
pub struct ZeekFacts {
    /// The intel file, naming a file.
    pub intel_path: PathBuf,
}

impl Section for ZeekConfig {
    type Facts = ZeekFacts;

    fn check(&self) -> Result<ZeekFacts, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, message: String| problems.push((key.to_owned(), message));
        let intel_path = match &self.intel_path {
            None => {
                problem("zeek.intel_path", "no intel file configured".to_owned());
                None
            }
            Some(path) => {
                let text = path.to_string_lossy();
                if text.trim().is_empty() {
                    problem("zeek.intel_path", "must not be empty".to_owned());
                    None
                } else if text.ends_with('/') || path.file_name().is_none() {
                    problem(
                        "zeek.intel_path",
                        format!("`{text}` must name a file, not a directory"),
                    );
                    None
                } else {
                    Some(path.clone())
                }
            }
        };
        // A zero retention would drop the tombstone in the very rewrite that adds it: Zeek would
        // never see the removal.
        if self.removal == Removal::Tombstone && self.tombstone_retention.is_zero() {
            problem(
                "zeek.tombstone_retention",
                "must be longer than zero in tombstone mode".to_owned(),
            );
        }
        if self.rewrite_interval < Duration::from_secs(2) {
            problem(
                "zeek.rewrite_interval",
                "must be at least 2s (Zeek sees changes by whole-second mtime)".to_owned(),
            );
        }
        if self.source_name.trim().is_empty() {
            problem(
                "zeek.source_name",
                "must not be empty (it is the required meta.source)".to_owned(),
            );
        }
        if let Some(template) = &self.url_template {
            if let Err(message) = expand_url_template(template, "indicator--x", Some("x")) {
                problem("zeek.url_template", message);
            }
        }
        match intel_path {
            Some(intel_path) if problems.is_empty() => Ok(ZeekFacts { intel_path }),
            _ => Err(problems),
        }
    }
}

/// Fills `{indicator_id}` and `{internal_id}` in a URL template. `Ok(None)` when the template needs
/// an internal id the indicator does not have; `Err` for an unknown or unclosed placeholder.
pub(crate) fn expand_url_template(
    template: &str,
    indicator_id: &str,
    internal_id: Option<&str>,
) -> Result<Option<String>, String> {
    let mut out = String::with_capacity(template.len() + indicator_id.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("unclosed `{{` in `{template}`"))?;
        match &after[..close] {
            "indicator_id" => out.push_str(indicator_id),
            "internal_id" => match internal_id {
                Some(id) => out.push_str(id),
                None => return Ok(None),
            },
            other => {
                return Err(format!(
                    "unknown placeholder `{{{other}}}` (use {{indicator_id}} or {{internal_id}})"
                ))
            }
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_serialises_every_key_with_human_durations() {
        let value = serde_json::to_value(ZeekConfig::default()).expect("serialise");
        assert_eq!(
            value,
            serde_json::json!({
                "intel_path": null,
                "removal": "tombstone",
                "tombstone_retention": "7days",
                "rewrite_interval": "1h",
                "source_name": "iocsync",
                "url_template": null,
                "file_mode": "0640",
            })
        );
        assert!(!ZeekConfig::default().is_configured());
        let keys: Vec<_> = ZeekConfig::default()
            .validate()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["zeek.intel_path"], "a selected sink needs its file");
    }

    #[test]
    fn parses_human_durations_and_refuses_unknown_keys() {
        let cfg: ZeekConfig = serde_json::from_str(
            r#"{"intel_path":"/z/intel.dat","removal":"expire","rewrite_interval":"15m"}"#,
        )
        .expect("parse");
        assert_eq!(cfg.removal, Removal::Expire);
        assert_eq!(cfg.rewrite_interval, Duration::from_secs(900));
        assert_eq!(cfg.tombstone_retention, Duration::from_secs(7 * 86400));
        assert!(cfg.is_configured());
        assert!(serde_json::from_str::<ZeekConfig>(r#"{"intel_pth":"x"}"#).is_err());
        assert!(serde_json::from_str::<ZeekConfig>(r#"{"removal":"delete"}"#).is_err());
    }

    #[test]
    fn validate_names_each_bad_key() {
        let cfg = ZeekConfig {
            intel_path: Some(PathBuf::from("/var/zeek/")),
            tombstone_retention: Duration::ZERO,
            rewrite_interval: Duration::from_secs(1),
            source_name: " ".to_owned(),
            url_template: Some("https://cti/{id}".to_owned()),
            ..ZeekConfig::default()
        };
        let keys: Vec<_> = cfg.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "zeek.intel_path",
                "zeek.tombstone_retention",
                "zeek.rewrite_interval",
                "zeek.source_name",
                "zeek.url_template"
            ]
        );
        let expire = ZeekConfig {
            intel_path: Some(PathBuf::from("/var/zeek/intel.dat")),
            removal: Removal::Expire,
            tombstone_retention: Duration::ZERO,
            ..ZeekConfig::default()
        };
        assert!(
            expire.validate().is_empty(),
            "retention is unused in expire mode"
        );
    }

    #[test]
    fn url_template_expansion() {
        let t =
            "https://cti.example/dashboard/observations/indicators/{internal_id}?x={indicator_id}";
        assert_eq!(
            expand_url_template(t, "indicator--1", Some("abc")),
            Ok(Some(
                "https://cti.example/dashboard/observations/indicators/abc?x=indicator--1"
                    .to_owned()
            ))
        );
        assert_eq!(expand_url_template(t, "indicator--1", None), Ok(None));
        assert!(expand_url_template("https://x/{indicator_id", "i", None).is_err());
        assert_eq!(
            expand_url_template("plain", "i", None),
            Ok(Some("plain".to_owned()))
        );
    }
}

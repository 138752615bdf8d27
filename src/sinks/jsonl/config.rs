//! The `jsonl` config section (env `IOCSYNC_JSONL_<KEY>`).

use super::fs::FileMode;
use crate::config::Section;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Settings of the JSONL sink.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JsonlConfig {
    /// The file records are appended to; parent directories are created. Unset: sink not configured.
    pub path: Option<PathBuf>,
    /// The permission bits the file is created with (octal string, default `0640`).
    pub file_mode: FileMode,
}

impl Default for JsonlConfig {
    fn default() -> Self {
        JsonlConfig {
            path: None,
            file_mode: FileMode::DEFAULT,
        }
    }
}

impl JsonlConfig {
    /// Whether the sink is configured at all (a path is set).
    pub fn is_configured(&self) -> bool {
        self.path.is_some()
    }

    /// Checks the values without touching the filesystem; returns `(key, message)` per problem.
    pub fn validate(&self) -> Vec<(String, String)> {
        self.check().err().unwrap_or_default()
    }
}

/// What a valid `jsonl` section establishes.
#[derive(Debug, Clone)]
pub struct JsonlFacts {
    /// The file records are appended to, naming a file.
    pub path: PathBuf,
}

impl Section for JsonlConfig {
    type Facts = JsonlFacts;

    fn check(&self) -> Result<JsonlFacts, Vec<(String, String)>> {
        let problem = |message: String| Err(vec![("jsonl.path".to_owned(), message)]);
        match &self.path {
            None => problem("no file configured".to_owned()),
            Some(path) => {
                let text = path.to_string_lossy();
                if text.trim().is_empty() {
                    problem("must not be empty".to_owned())
                } else if text.ends_with('/') || path.file_name().is_none() {
                    problem(format!("`{text}` must name a file, not a directory"))
                } else {
                    Ok(JsonlFacts { path: path.clone() })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_unconfigured_and_needs_a_path() {
        let cfg = JsonlConfig::default();
        assert!(!cfg.is_configured());
        let problems = cfg.validate();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].0, "jsonl.path");
    }

    #[test]
    fn default_serialises_every_key() {
        let value = serde_json::to_value(JsonlConfig::default()).expect("serialise");
        assert_eq!(
            value,
            serde_json::json!({ "path": null, "file_mode": "0640" })
        );
    }

    #[test]
    fn rejects_directory_and_empty_paths() {
        for bad in ["", "out/", ".."] {
            let cfg = JsonlConfig {
                path: Some(PathBuf::from(bad)),
                ..JsonlConfig::default()
            };
            let problems = cfg.validate();
            assert_eq!(problems.len(), 1, "{bad:?}: {problems:?}");
            assert_eq!(problems[0].0, "jsonl.path");
        }
        let ok = JsonlConfig {
            path: Some(PathBuf::from("data/iocs.jsonl")),
            ..JsonlConfig::default()
        };
        assert!(ok.is_configured());
        assert!(ok.validate().is_empty());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = serde_json::from_str::<JsonlConfig>(r#"{"path":"a","paht":"b"}"#);
        assert!(err.is_err());
    }
}

//! Environment variables: the names OpenCTI connectors and vendors use (`OPENCTI_TOKEN`,
//! `SENTINELONE_INTEL_API_KEY`) and iocsync's own `IOCSYNC_<SECTION>_<KEY>`, mapped to config keys
//! and back; `*_FILE` secrets; the environment as a figment provider.

use super::Config;
use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider};

/// Sections named after a remote system: env `SECTION_KEY` (upper case), longest prefix first.
pub(super) const REMOTE_SECTIONS: &[(&str, &str)] = &[
    ("SENTINELONE_INTEL_", "sentinelone_intel"),
    ("SEKOIA_INTEL_", "sekoia_intel"),
    ("CONNECTOR_", "connector"),
    ("OPENCTI_", "opencti"),
    ("MISP_", "misp"),
];

/// iocsync's own sections: env `IOCSYNC_SECTION_KEY`.
pub(super) const OWN_SECTIONS: &[&str] = &[
    "state", "file", "jsonl", "zeek", "pipeline", "log", "http", "console",
];

/// The keys that hold a secret ([`crate::secret::Secret`]). Each can also be read from a file named by
/// its variable with `_FILE` appended (`OPENCTI_TOKEN_FILE`): Docker and Kubernetes secrets, systemd
/// `LoadCredential=`.
pub const SECRET_KEYS: &[&str] = &[
    "opencti.token",
    "misp.key",
    "sentinelone_intel.api_key",
    "sekoia_intel.apikey",
    "console.password",
    "console.password_hash",
];

/// The secret key a `<NAME>_FILE` variable stands for (`OPENCTI_TOKEN_FILE` → `opencti.token`).
pub fn secret_file_key(name: &str) -> Option<String> {
    let base = name.strip_suffix("_FILE")?;
    env_key(base).filter(|k| SECRET_KEYS.contains(&k.as_str()))
}

/// A secret's file: its content without one trailing newline (what `echo` and editors add). The
/// message of an error never holds any of the content.
pub(super) fn read_secret_file(path: &str) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
    let mut text = String::from_utf8(bytes).map_err(|_| format!("`{path}` is not UTF-8 text"))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

/// Env names read elsewhere (the CLI) that the config must not treat as unknown.
pub(super) const HANDLED_ELSEWHERE: &[&str] = &["IOCSYNC_CONFIG", "IOCSYNC_LOG"];

/// Maps an environment variable to its config key, `None` when it is not ours.
pub fn env_key(name: &str) -> Option<String> {
    if let Some(rest) = name.strip_prefix("IOCSYNC_") {
        if rest == "SOURCE" || rest == "SINKS" {
            return Some(rest.to_ascii_lowercase());
        }
        let lower = rest.to_ascii_lowercase();
        return OWN_SECTIONS.iter().find_map(|section| {
            lower
                .strip_prefix(section)
                .and_then(|k| k.strip_prefix('_'))
                .filter(|k| !k.is_empty())
                .map(|k| format!("{section}.{k}"))
        });
    }
    REMOTE_SECTIONS.iter().find_map(|(prefix, section)| {
        name.strip_prefix(prefix)
            .filter(|k| !k.is_empty())
            .map(|k| format!("{section}.{}", k.to_ascii_lowercase()))
    })
}

/// The environment variable for a config key (for messages).
pub fn env_name(key: &str) -> Option<String> {
    if key == "source" || key == "sinks" {
        return Some(format!("IOCSYNC_{}", key.to_ascii_uppercase()));
    }
    let (section, rest) = key.split_once('.')?;
    if let Some((prefix, _)) = REMOTE_SECTIONS.iter().find(|(_, s)| *s == section) {
        return Some(format!("{prefix}{}", rest.to_ascii_uppercase()));
    }
    OWN_SECTIONS.contains(&section).then(|| {
        format!(
            "IOCSYNC_{}_{}",
            section.to_ascii_uppercase(),
            rest.to_ascii_uppercase()
        )
    })
}

/// The keys `Config::default()` has, as `section.key` (and top-level names).
pub(super) fn known_keys() -> std::collections::BTreeSet<String> {
    let mut keys = std::collections::BTreeSet::new();
    if let Ok(serde_json::Value::Object(top)) = serde_json::to_value(Config::default()) {
        for (name, value) in top {
            match value {
                serde_json::Value::Object(section) => {
                    for key in section.keys() {
                        keys.insert(format!("{name}.{key}"));
                    }
                }
                _ => {
                    keys.insert(name);
                }
            }
        }
    }
    keys
}

/// The environment as a figment provider: every value a string, keys mapped by [`env_key`].
pub(super) struct EnvProvider {
    pub(super) vars: Vec<(String, String, String)>,
}

impl Provider for EnvProvider {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable").interpolater(|_, keys| {
            let key = keys.join(".");
            env_name(&key).unwrap_or(key)
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (_, key, value) in &self.vars {
            let nested = figment::util::nest(key, Value::from(value.clone()));
            if let Value::Dict(_, d) = nested {
                dict = merge_dicts(dict, d);
            }
        }
        Ok(Profile::Default.collect(dict))
    }
}

pub(super) fn merge_dicts(mut a: Dict, b: Dict) -> Dict {
    for (k, v) in b {
        match (a.remove(&k), v) {
            (Some(Value::Dict(t, da)), Value::Dict(_, db)) => {
                a.insert(k, Value::Dict(t, merge_dicts(da, db)));
            }
            (_, v) => {
                a.insert(k, v);
            }
        }
    }
    a
}

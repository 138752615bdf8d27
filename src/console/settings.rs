//! The settings page's rows: every effective setting, where its value came from (default,
//! config.yml, environment) and secrets masked as `••••1234`.

use crate::config::{env_name, Config, SECRET_KEYS};
use figment::providers::{Format, Yaml};
use figment::Figment;
use std::path::Path;

/// One effective setting.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SettingRow {
    /// `section.key`.
    pub key: String,
    /// Its environment variable, when it has one.
    pub env: Option<String>,
    /// The value as shown (secrets masked).
    pub value: String,
    /// `default`, `config.yml` or `env`.
    pub source: &'static str,
}

/// `••••` and the last four characters of a long secret; short secrets show nothing of themselves.
pub fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() >= 16 {
        let tail: String = chars[chars.len() - 4..].iter().collect();
        format!("••••{tail}")
    } else {
        "••••".to_string()
    }
}

fn secret_value(cfg: &Config, key: &str) -> Option<String> {
    let s = match key {
        "opencti.token" => cfg.opencti.token.as_ref(),
        "misp.key" => cfg.misp.key.as_ref(),
        "sentinelone_intel.api_key" => cfg.sentinelone_intel.api_key.as_ref(),
        "sekoia_intel.apikey" => cfg.sekoia_intel.apikey.as_ref(),
        "console.password" => cfg.console.password.as_ref(),
        "console.password_hash" => cfg.console.password_hash.as_ref(),
        _ => None,
    };
    s.map(|s| mask(s.expose()))
}

fn show(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "—".to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Every setting of `cfg`, in section order; `file` is the config file it was loaded from and
/// `env` the variable names present at load time.
pub fn effective(cfg: &Config, file: Option<&Path>, env: &[String]) -> Vec<SettingRow> {
    let yaml = file.map(|p| Figment::from(Yaml::file(p)));
    let mut rows = Vec::new();
    let Ok(serde_json::Value::Object(top)) = serde_json::to_value(cfg) else {
        return rows;
    };
    let mut push = |key: String, value: &serde_json::Value| {
        let env_var = env_name(&key);
        let from_env = env_var.as_ref().is_some_and(|n| {
            env.iter()
                .any(|e| e == n || e.strip_suffix("_FILE") == Some(n.as_str()))
        });
        let source = if from_env {
            "env"
        } else if yaml.as_ref().is_some_and(|y| y.find_value(&key).is_ok()) {
            "config.yml"
        } else {
            "default"
        };
        let value = if SECRET_KEYS.contains(&key.as_str()) {
            secret_value(cfg, &key).unwrap_or_default()
        } else {
            show(value)
        };
        rows.push(SettingRow {
            key,
            env: env_var,
            value,
            source,
        });
    };
    for (name, value) in top {
        match value {
            serde_json::Value::Object(section) => {
                for (k, v) in section {
                    push(format!("{name}.{k}"), &v);
                }
            }
            other => push(name, &other),
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_and_sources_named() {
        let env = vec![
            ("MISP_URL".to_string(), "https://misp.example".to_string()),
            (
                "MISP_KEY".to_string(),
                "misp-key-0123456789abcdef".to_string(),
            ),
        ];
        let cfg = Config::load(None, env.clone()).expect("load");
        let names: Vec<String> = env.into_iter().map(|(n, _)| n).collect();
        let rows = effective(&cfg, None, &names);
        let key = rows.iter().find(|r| r.key == "misp.key").expect("misp.key");
        assert_eq!(key.value, "••••cdef");
        assert_eq!(key.source, "env");
        let dir = rows
            .iter()
            .find(|r| r.key == "state.dir")
            .expect("state.dir");
        assert_eq!(dir.source, "default");
        assert!(rows.iter().all(|r| !r.value.contains("misp-key-0123")));
    }
}

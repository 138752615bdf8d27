//! The `console.*` config section (env `IOCSYNC_CONSOLE_<KEY>`): where the web console listens and
//! the one admin account that may log in.

use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `console.*`: the web console.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve the console from `iocsync run` (`IOCSYNC_CONSOLE_ENABLED`, default false).
    pub enabled: bool,
    /// `host:port` of the console's own listener (default `127.0.0.1:9096`).
    pub listen: String,
    /// The admin user name.
    pub user: Option<String>,
    /// The admin password as an argon2id PHC string (`iocsync console hash-password`).
    pub password_hash: Option<Secret>,
    /// The admin password in plain text (hashed in memory at start; weaker than `password_hash`).
    pub password: Option<Secret>,
    /// Mark the login cookie `Secure`; default: true unless `listen` is a loopback address.
    pub secure_cookies: Option<bool>,
    /// A login ends after this long without a request (default 8h).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: false,
            listen: "127.0.0.1:9096".into(),
            user: None,
            password_hash: None,
            password: None,
            secure_cookies: None,
            idle_timeout: Duration::from_secs(8 * 3600),
        }
    }
}

impl ConsoleConfig {
    /// Whether the login cookie carries `Secure`.
    pub fn secure(&self) -> bool {
        self.secure_cookies.unwrap_or_else(|| !self.is_loopback())
    }

    /// True when `listen` names a loopback host.
    pub fn is_loopback(&self) -> bool {
        let host = self
            .listen
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(&self.listen)
            .trim_matches(['[', ']']);
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .map(|ip| ip.is_loopback())
                .unwrap_or(false)
    }

    /// Problems as (key, message); `serving`: the console is about to be served (enabled, or
    /// `iocsync console`), so credentials are required.
    pub fn problems(&self, serving: bool) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !serving {
            return out;
        }
        if self.user.as_deref().is_none_or(|u| u.trim().is_empty()) {
            out.push((
                "console.user".into(),
                "the console needs an admin user (IOCSYNC_CONSOLE_USER)".into(),
            ));
        }
        let hash = self.password_hash.as_ref().filter(|s| !s.is_blank());
        let plain = self.password.as_ref().filter(|s| !s.is_blank());
        match (hash, plain) {
            (None, None) => out.push((
                "console.password_hash".into(),
                "the console needs IOCSYNC_CONSOLE_PASSWORD_HASH (from `iocsync console hash-password`) or IOCSYNC_CONSOLE_PASSWORD".into(),
            )),
            (Some(_), Some(_)) => out.push((
                "console.password".into(),
                "both console.password_hash and console.password are set: keep one".into(),
            )),
            (Some(h), None) => {
                if argon2::PasswordHash::new(h.expose()).is_err() {
                    out.push((
                        "console.password_hash".into(),
                        "not an argon2 PHC string (`$argon2id$...`): make one with `iocsync console hash-password`".into(),
                    ));
                }
            }
            (None, Some(_)) => {}
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            out.push((
                "console.listen".into(),
                format!("`{}` is not an IP address with a port", self.listen),
            ));
        }
        if self.idle_timeout.is_zero() {
            out.push(("console.idle_timeout".into(), "must be more than 0".into()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enabled_without_credentials_names_the_keys() {
        let c = ConsoleConfig::default();
        assert!(c.problems(false).is_empty());
        let keys: Vec<String> = c.problems(true).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["console.user", "console.password_hash"]);
        assert!(!c.secure(), "loopback: no Secure by default");
        let wide = ConsoleConfig {
            listen: "0.0.0.0:9096".into(),
            ..ConsoleConfig::default()
        };
        assert!(wide.secure());
    }
}

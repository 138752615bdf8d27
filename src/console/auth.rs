//! Login for the console's one admin account: argon2id password check, sessions (random 256-bit
//! ids, idle expiry), a CSRF token per session and a per-IP login rate limit.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// Login attempts allowed per client IP within [`RATE_WINDOW`].
pub const RATE_LIMIT: usize = 5;
/// The window of [`RATE_LIMIT`].
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Errors of password hashing.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// argon2 refused (never carries the password).
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// An argon2id PHC string for `password` (fresh random salt).
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// The admin account: user name and the PHC string of its password.
pub struct Account {
    user: String,
    phc: String,
}

impl Account {
    /// An account from a user and a PHC string (validated by the config).
    pub fn new(user: impl Into<String>, phc: impl Into<String>) -> Account {
        Account {
            user: user.into(),
            phc: phc.into(),
        }
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// True when both match; the user comparison is constant-time and the hash is always checked,
    /// so timing tells neither which part was wrong.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let user_ok: bool = self.user.as_bytes().ct_eq(user.as_bytes()).into();
        let pass_ok = PasswordHash::new(&self.phc)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        user_ok & pass_ok
    }
}

/// A logged-in session.
#[derive(Clone)]
pub struct Session {
    /// Who logged in.
    pub user: String,
    /// The token every POST must carry.
    pub csrf: String,
    last_seen: Instant,
}

/// Sessions by id, expiring after `idle` without a request.
pub struct Sessions {
    idle: Duration,
    map: Mutex<HashMap<String, Session>>,
}

/// 256 random bits as hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    /// An empty store.
    pub fn new(idle: Duration) -> Sessions {
        Sessions {
            idle,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock cannot leave the map half-updated (single inserts/removes).
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a session; returns its id.
    pub fn create(&self, user: &str) -> String {
        let id = random_token();
        let mut map = self.lock();
        let idle = self.idle;
        map.retain(|_, s| s.last_seen.elapsed() < idle);
        map.insert(
            id.clone(),
            Session {
                user: user.to_string(),
                csrf: random_token(),
                last_seen: Instant::now(),
            },
        );
        id
    }

    /// The live session `id` (touching it), or `None` when unknown or idle too long.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut map = self.lock();
        let expired = map
            .get(id)
            .is_some_and(|s| s.last_seen.elapsed() >= self.idle);
        if expired {
            map.remove(id);
            return None;
        }
        let s = map.get_mut(id)?;
        s.last_seen = Instant::now();
        Some(s.clone())
    }

    /// Ends a session.
    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }
}

/// True when `given` equals the session's CSRF token (constant-time).
pub fn csrf_ok(session: &Session, given: &str) -> bool {
    !given.is_empty() && bool::from(session.csrf.as_bytes().ct_eq(given.as_bytes()))
}

/// Login attempts per client IP in a sliding window.
#[derive(Default)]
pub struct RateLimiter {
    map: Mutex<HashMap<IpAddr, Vec<Instant>>>,
}

impl RateLimiter {
    /// Records an attempt from `ip`; false when it is over the limit (the attempt must be refused).
    pub fn allow(&self, ip: IpAddr) -> bool {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, v| {
            v.retain(|t| t.elapsed() < RATE_WINDOW);
            !v.is_empty()
        });
        let hits = map.entry(ip).or_default();
        if hits.len() >= RATE_LIMIT {
            return false;
        }
        hits.push(Instant::now());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verifies_and_sessions_expire() {
        let phc = hash_password("s3cret").expect("hash");
        assert!(phc.starts_with("$argon2id$"));
        let acct = Account::new("admin", phc);
        assert!(acct.verify("admin", "s3cret"));
        assert!(!acct.verify("admin", "wrong"));
        assert!(!acct.verify("root", "s3cret"));
        let s = Sessions::new(Duration::from_millis(30));
        let id = s.create("admin");
        assert_eq!(id.len(), 64);
        let sess = s.get(&id).expect("live");
        assert!(csrf_ok(&sess, &sess.csrf.clone()));
        assert!(!csrf_ok(&sess, ""));
        std::thread::sleep(Duration::from_millis(40));
        assert!(s.get(&id).is_none(), "idle session expired");
        let rl = RateLimiter::default();
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        assert!((0..RATE_LIMIT).all(|_| rl.allow(ip)));
        assert!(!rl.allow(ip));
    }
}

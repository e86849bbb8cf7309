//! Who may use the admin listener: address allow-lists, HTTP Basic logins
//! (RFC 7617) checked against argon2 hashes, and a per-address limit on
//! failed logins.
//!
//! argon2 is slow on purpose (tens of milliseconds), so a verification runs
//! on the blocking pool, a login that succeeded is remembered for a few
//! minutes (the stats page polls every 2 s with the same credentials), and
//! an address that failed too often is refused before any hash is computed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::util::lock;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use sha2::{Digest, Sha256};

/// Failed logins an address may make within `FAILURE_WINDOW` before it is refused.
pub const MAX_FAILURES: u32 = 5;
/// The window over which failures are counted; a refused address may try again after it.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// How long a successful login is remembered (so polling does not hash every 2 s).
const REMEMBER: Duration = Duration::from_secs(300);
/// At most this many addresses are tracked (older ones are forgotten first).
const MAX_TRACKED: usize = 10_000;

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The password was empty.
    #[error("the password is empty")]
    Empty,
    /// argon2 refused it.
    #[error("cannot hash the password: {0}")]
    Argon2(String),
}

/// Hashes `password` with argon2id and a random salt, in PHC form
/// (`$argon2id$v=19$m=19456,t=2,p=1$…`), as `[admin] users` expects.
pub fn hash_password(password: &str) -> Result<String, HashError> {
    if password.is_empty() {
        return Err(HashError::Empty);
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| HashError::Argon2(err.to_string()))
}

/// Whether `password` matches the PHC `hash` (false for a malformed hash).
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// The user name and password of an `Authorization: Basic …` header value.
pub fn parse_basic(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Failed logins per client address, and logins recently verified.
#[derive(Debug, Default)]
pub struct Logins {
    /// Per address: failures in the current window and when that window began.
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    /// Digest of (user, password, hash) → when it was verified. Keyed with the
    /// hash, so a reload that changes a password forgets the old login.
    verified: Mutex<HashMap<[u8; 32], Instant>>,
}

impl Logins {
    /// If `ip` failed too often lately: how long until it may try again.
    pub fn blocked_for(&self, ip: IpAddr) -> Option<Duration> {
        let failures = lock(&self.failures);
        let (count, since) = failures.get(&ip)?;
        let elapsed = since.elapsed();
        (*count >= MAX_FAILURES && elapsed < FAILURE_WINDOW).then(|| FAILURE_WINDOW - elapsed)
    }

    /// Counts a failed login from `ip`; returns the failures in its window.
    pub fn failed(&self, ip: IpAddr) -> u32 {
        let mut failures = lock(&self.failures);
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
        }
        if failures.len() >= MAX_TRACKED {
            // Still full of fresh entries (a spray from many addresses): start over rather than grow.
            failures.clear();
        }
        let entry = failures.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FAILURE_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
        entry.0
    }

    /// Checks `password` for `user` against `hash`, remembering a success for a few minutes.
    pub async fn verify(&self, user: &str, password: &str, hash: &str) -> bool {
        let key: [u8; 32] = Sha256::new()
            .chain_update(user.as_bytes())
            .chain_update([0])
            .chain_update(password.as_bytes())
            .chain_update([0])
            .chain_update(hash.as_bytes())
            .finalize()
            .into();
        {
            let verified = lock(&self.verified);
            if verified.get(&key).is_some_and(|at| at.elapsed() < REMEMBER) {
                return true;
            }
        }
        let (password, hash) = (password.to_string(), hash.to_string());
        let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
            .await
            .unwrap_or(false);
        if ok {
            let mut verified = lock(&self.verified);
            if verified.len() >= MAX_TRACKED {
                verified.retain(|_, at| at.elapsed() < REMEMBER);
            }
            if verified.len() < MAX_TRACKED {
                verified.insert(key, Instant::now());
            }
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let hash = hash_password("s3cret").expect("hash");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("s3cret", &hash));
        assert!(!verify_password("secret", &hash));
        assert!(!verify_password("s3cret", "not a hash"));
        assert!(matches!(hash_password(""), Err(HashError::Empty)));
    }

    #[test]
    fn basic_credentials_are_parsed() {
        assert_eq!(
            parse_basic("Basic YWRtaW46cGE6c3M="),
            Some(("admin".to_string(), "pa:ss".to_string()))
        );
        assert_eq!(parse_basic("Bearer abc"), None);
        assert_eq!(parse_basic("Basic !!!"), None);
    }

    #[test]
    fn an_address_is_blocked_after_too_many_failures() {
        let logins = Logins::default();
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        for _ in 0..MAX_FAILURES - 1 {
            logins.failed(ip);
        }
        assert!(logins.blocked_for(ip).is_none());
        logins.failed(ip);
        assert!(logins.blocked_for(ip).is_some());
        assert!(logins.blocked_for("192.0.2.2".parse().expect("ip")).is_none());
    }
}

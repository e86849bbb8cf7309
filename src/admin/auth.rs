//! Who may use the admin listener: address allow-lists, HTTP Basic logins
//! (RFC 7617) checked against argon2 hashes, and a per-address limit on
//! failed logins.
//!
//! argon2 is slow on purpose (tens of milliseconds, ~19 MiB each), so a
//! verification runs on the blocking pool, at most `MAX_CONCURRENT_CHECKS`
//! at once; a login that succeeded is remembered for a few minutes (the
//! stats page polls every 2 s with the same credentials); each attempt is
//! counted before its check (a success gives it back), so a client that
//! failed too often, or sends many attempts at once, is refused before any
//! hash is computed. Clients are IPv4 addresses or IPv6 /64 networks.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::model::AdminUser;
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

/// Password checks (argon2) that may run at once, whoever asks: each takes
/// ~19 MiB and a blocking thread, so a flood of logins cannot exhaust memory.
pub const MAX_CONCURRENT_CHECKS: usize = 2;
/// How long a login waits for a free check before it is answered 429.
pub const CHECK_QUEUE_WAIT: Duration = Duration::from_secs(2);
/// The `Retry-After` of a login refused because every check was busy.
pub const BUSY_RETRY: Duration = Duration::from_secs(1);
/// The longest user name written to the logs (longer ones are cut).
pub const MAX_LOGGED_NAME: usize = 64;

/// What became of a login attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The name and password are right.
    Accepted,
    /// Wrong name or password: the failures counted for the client in its window.
    Refused {
        /// Failures of the client's address (or IPv6 /64) in the current window.
        failures: u32,
    },
    /// The client failed too often lately (its attempts in flight count): retry after this.
    Blocked(Duration),
    /// Every password check was busy for `CHECK_QUEUE_WAIT`: retry after this.
    Busy(Duration),
}

/// One client's failed logins in the current window.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Failures (and attempts in flight) in the window.
    count: u32,
    /// When the window began.
    since: Instant,
    /// Order of the last change: the lowest are evicted first when the map is full.
    seq: u64,
}

/// Failed logins per client key, bounded: when full, the entries changed
/// longest ago are forgotten, never the whole map.
#[derive(Debug)]
struct Failures {
    map: HashMap<IpAddr, Entry>,
    next_seq: u64,
    capacity: usize,
}

impl Failures {
    fn live(&mut self, key: IpAddr) -> Option<&mut Entry> {
        if self.map.get(&key)?.since.elapsed() >= FAILURE_WINDOW {
            self.map.remove(&key);
            return None;
        }
        self.map.get_mut(&key)
    }

    /// Makes room for one more key: expired entries go first, then the oldest changed.
    fn make_room(&mut self) {
        if self.map.len() < self.capacity {
            return;
        }
        self.map.retain(|_, e| e.since.elapsed() < FAILURE_WINDOW);
        if self.map.len() < self.capacity {
            return;
        }
        // Evict an eighth at once, so a spray from many addresses costs one scan per many inserts.
        let evict = (self.map.len() + 1 - self.capacity).max(self.capacity / 8).max(1);
        let mut order: Vec<(u64, IpAddr)> = self.map.iter().map(|(k, e)| (e.seq, *k)).collect();
        let evict = evict.min(order.len());
        if evict < order.len() {
            order.select_nth_unstable(evict);
        }
        for (_, key) in &order[..evict] {
            self.map.remove(key);
        }
    }

    /// Counts one failure (or a reservation) for `key`: the count in its window.
    fn add(&mut self, key: IpAddr) -> u32 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(entry) = self.live(key) {
            entry.count += 1;
            entry.seq = seq;
            return entry.count;
        }
        self.make_room();
        self.map.insert(
            key,
            Entry {
                count: 1,
                since: Instant::now(),
                seq,
            },
        );
        1
    }
}

/// Failed logins per client (IPv4 address or IPv6 /64), the password checks
/// running, and logins recently verified.
#[derive(Debug)]
pub struct Logins {
    failures: Mutex<Failures>,
    /// Digest of (user, password, hash) → when it was verified. Keyed with the
    /// hash, so a reload that changes a password forgets the old login.
    verified: Mutex<HashMap<[u8; 32], Instant>>,
    /// At most `MAX_CONCURRENT_CHECKS` argon2 checks at once (a permit
    /// lives as long as its check, even when the client went away).
    checking: Arc<tokio::sync::Semaphore>,
    /// argon2 checks run so far (`/metrics`).
    checks: AtomicU64,
    /// Logins refused, by cause: wrong credentials, blocked client, checks busy (`/metrics`).
    refused: [AtomicU64; 3],
}

impl Default for Logins {
    fn default() -> Self {
        Logins::with_capacity(MAX_TRACKED)
    }
}

/// The key failures of `ip` are counted under (IPv6 by /64).
fn key_of(ip: IpAddr) -> IpAddr {
    crate::cidr::client_key(ip, crate::cidr::DEFAULT_IPV6_CLIENT_PREFIX)
}

impl Logins {
    /// Tracks the failures of at most `capacity` clients.
    pub fn with_capacity(capacity: usize) -> Logins {
        Logins {
            failures: Mutex::new(Failures {
                map: HashMap::new(),
                next_seq: 0,
                capacity: capacity.max(1),
            }),
            verified: Mutex::new(HashMap::new()),
            checking: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_CHECKS)),
            checks: AtomicU64::new(0),
            refused: Default::default(),
        }
    }

    /// If `ip` failed too often lately: how long until it may try again.
    pub fn blocked_for(&self, ip: IpAddr) -> Option<Duration> {
        let mut failures = lock(&self.failures);
        let entry = failures.live(key_of(ip))?;
        (entry.count >= MAX_FAILURES).then(|| FAILURE_WINDOW.saturating_sub(entry.since.elapsed()))
    }

    /// Counts a failed login from `ip`; returns the failures in its window.
    pub fn failed(&self, ip: IpAddr) -> u32 {
        lock(&self.failures).add(key_of(ip))
    }

    /// Reserves one attempt for `ip` before its password is checked, so
    /// parallel attempts cannot all pass the limit: `Err(wait)` when the
    /// client has no attempt left in its window.
    fn reserve(&self, ip: IpAddr) -> Result<(), Duration> {
        let key = key_of(ip);
        let mut failures = lock(&self.failures);
        if let Some(entry) = failures.live(key) {
            if entry.count >= MAX_FAILURES {
                return Err(FAILURE_WINDOW.saturating_sub(entry.since.elapsed()));
            }
        }
        failures.add(key);
        Ok(())
    }

    /// Gives back an attempt reserved by `reserve` (the login succeeded or was never checked).
    fn give_back(&self, ip: IpAddr) {
        let mut failures = lock(&self.failures);
        if let Some(entry) = failures.live(key_of(ip)) {
            entry.count = entry.count.saturating_sub(1);
        }
    }

    /// The failures counted for `ip` in its window.
    fn failures_of(&self, ip: IpAddr) -> u32 {
        lock(&self.failures).live(key_of(ip)).map_or(0, |e| e.count)
    }

    /// argon2 checks run so far.
    pub fn password_checks(&self) -> u64 {
        self.checks.load(Ordering::Relaxed)
    }

    /// Logins refused so far: `(wrong credentials, client blocked, checks busy)`.
    pub fn refused(&self) -> (u64, u64, u64) {
        let [wrong, blocked, busy] = &self.refused;
        (
            wrong.load(Ordering::Relaxed),
            blocked.load(Ordering::Relaxed),
            busy.load(Ordering::Relaxed),
        )
    }

    /// Checks a login from `ip` against `users`. The attempt is counted
    /// before the password is checked (a success gives it back); at most
    /// `MAX_CONCURRENT_CHECKS` checks run at once; an unknown name is
    /// checked against a configured hash all the same, so it takes as long
    /// as a known one.
    pub async fn login(&self, ip: IpAddr, user: &str, password: &str, users: &[AdminUser]) -> Outcome {
        let outcome = self.login_inner(ip, user, password, users).await;
        let cause = match outcome {
            Outcome::Accepted => None,
            Outcome::Refused { .. } => Some(0),
            Outcome::Blocked(_) => Some(1),
            Outcome::Busy(_) => Some(2),
        };
        if let Some(cause) = cause {
            self.refused[cause].fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }

    async fn login_inner(&self, ip: IpAddr, user: &str, password: &str, users: &[AdminUser]) -> Outcome {
        if let Some(wait) = self.blocked_for(ip) {
            return Outcome::Blocked(wait);
        }
        let known = users.iter().find(|u| u.name == user);
        let key = known.map(|u| remembered_key(user, password, &u.password_hash));
        if key.is_some_and(|key| self.remembered(&key)) {
            return Outcome::Accepted;
        }
        // Same parameters as a real user's hash, by construction: an unknown
        // name costs a real check whose result is ignored.
        let Some(hash) = known.or(users.first()).map(|u| u.password_hash.clone()) else {
            return Outcome::Refused {
                failures: self.failed(ip),
            };
        };
        if let Err(wait) = self.reserve(ip) {
            return Outcome::Blocked(wait);
        }
        let permit = match tokio::time::timeout(CHECK_QUEUE_WAIT, self.checking.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            _ => {
                self.give_back(ip);
                return Outcome::Busy(BUSY_RETRY);
            }
        };
        self.checks.fetch_add(1, Ordering::Relaxed);
        let password_owned = password.to_string();
        let matched = tokio::task::spawn_blocking(move || {
            let matched = verify_password(&password_owned, &hash);
            drop(permit);
            matched
        })
        .await
        .unwrap_or(false);
        match key {
            Some(key) if matched => {
                self.give_back(ip);
                self.remember(key);
                Outcome::Accepted
            }
            _ => Outcome::Refused {
                failures: self.failures_of(ip),
            },
        }
    }

    fn remembered(&self, key: &[u8; 32]) -> bool {
        lock(&self.verified).get(key).is_some_and(|at| at.elapsed() < REMEMBER)
    }

    fn remember(&self, key: [u8; 32]) {
        let mut verified = lock(&self.verified);
        if verified.len() >= MAX_TRACKED {
            verified.retain(|_, at| at.elapsed() < REMEMBER);
        }
        if verified.len() < MAX_TRACKED {
            verified.insert(key, Instant::now());
        }
    }
}

/// The key a verified login is remembered under.
fn remembered_key(user: &str, password: &str, hash: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(user.as_bytes())
        .chain_update([0])
        .chain_update(password.as_bytes())
        .chain_update([0])
        .chain_update(hash.as_bytes())
        .finalize()
        .into()
}

/// A user name nobody verified, made safe for a log line: control
/// characters escaped (`\n`, `\u{1b}`), cut to `MAX_LOGGED_NAME` characters
/// (then ending with `…`).
pub fn printable(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if i == MAX_LOGGED_NAME {
            out.push('…');
            break;
        }
        if c.is_control() || c == '"' || c == '\\' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
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
    fn a_full_failure_map_forgets_its_oldest_entries_and_keeps_the_latest_blocked_address() {
        let logins = Logins::default();
        let ip = |n: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n));
        for n in 0..MAX_TRACKED as u32 - 1 {
            logins.failed(ip(n));
        }
        let blocked: IpAddr = "192.0.2.9".parse().expect("ip");
        for _ in 0..MAX_FAILURES {
            logins.failed(blocked);
        }
        // The map is full: one more client must not wipe it.
        logins.failed(ip(MAX_TRACKED as u32));
        assert!(
            logins.blocked_for(blocked).is_some(),
            "the latest blocked address is still blocked"
        );
        logins.failed(ip(MAX_TRACKED as u32 + 1));
        assert!(logins.blocked_for(blocked).is_some());
    }

    #[test]
    fn ipv6_failures_count_per_64() {
        let logins = Logins::default();
        for n in 0..MAX_FAILURES {
            logins.failed(format!("2001:db8:0:1::{n:x}").parse().expect("ip"));
        }
        assert!(logins.blocked_for("2001:db8:0:1::ffff".parse().expect("ip")).is_some());
        assert!(logins.blocked_for("2001:db8:0:2::1".parse().expect("ip")).is_none());
    }

    #[test]
    fn user_names_are_logged_without_control_characters_and_cut() {
        assert_eq!(printable("ad\nmin\u{1b}[31m"), "ad\\nmin\\u{1b}[31m");
        let long = printable(&"x".repeat(500));
        assert_eq!(long.chars().count(), MAX_LOGGED_NAME + 1);
        assert!(long.ends_with('…'));
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

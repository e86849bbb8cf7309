//! What an instance accepts from Redis. Anything that can write to the
//! cluster's Redis could otherwise steer every instance, so each value read
//! back is bounded, checked, and — with `[cluster] secret` — signed by the
//! writer and verified by the reader (HMAC-SHA256 over what the value means
//! and where it is stored, so a value cannot be moved to another key).
//! What does not pass is skipped (never fails the whole read), counted, and
//! logged at most once a minute.

use std::sync::atomic::{AtomicU64, Ordering};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::util::clock::unix_ms;

/// How far in the future a timestamp read from Redis may be. Hosts of a
/// cluster kept by NTP agree within milliseconds; 5 s tolerates a host whose
/// clock drifted badly while bounding how long a forged (or skewed) future
/// record can hold off the next genuine change: it is treated as written at
/// most 5 s from now, so an operator's change made later always wins.
pub const MAX_SKEW_MS: u64 = 5_000;
/// Most bytes of a server or instance name taken from Redis (longer is ignored).
pub const MAX_NAME_LEN: usize = 256;
/// Most bytes of one operator record (JSON) taken from Redis.
pub const MAX_RECORD_LEN: usize = 4096;
/// Most instances counted at once, this one included; more in the heartbeat set are ignored.
pub const MAX_INSTANCES: usize = 128;
/// Bytes of the HMAC kept in a signature (128 bits, written as 32 hex digits).
const MAC_BYTES: usize = 16;
/// Least time between two log lines about rejected data.
const LOG_EVERY_MS: u64 = 60_000;

/// The latest timestamp accepted as is: later ones are clamped to it.
pub fn latest_acceptable(now_ms: u64) -> u64 {
    now_ms.saturating_add(MAX_SKEW_MS)
}

/// A record tether keeps in Redis as JSON, stamped with its time and, with
/// `[cluster] secret`, signed over its JSON without the signature.
pub trait SignedRecord: serde::Serialize + serde::de::DeserializeOwned + Clone {
    /// What a malformed or out-of-bounds one is counted as.
    const MALFORMED: &'static str;
    /// What one stamped beyond the allowed clock skew is counted as.
    const FROM_THE_FUTURE: &'static str;
    /// What one with a bad or missing signature is counted as.
    const BAD_SIGNATURE: &'static str;
    /// Its signature field.
    fn signature(&mut self) -> &mut Option<String>;
    /// When it was made (Unix ms).
    fn at_unix_ms(&self) -> u64;
}

/// Signs and verifies values, and counts what is rejected.
pub struct Trust {
    /// The HMAC key, when `[cluster] secret` is set.
    key: Option<Hmac<Sha256>>,
    /// Values read from Redis and ignored (unsigned, bad signature, malformed, out of bounds).
    rejected: AtomicU64,
    /// When (Unix ms) a rejection was last logged.
    logged_at: AtomicU64,
}

impl Trust {
    /// Signing with `secret`, or only bounds checks without one.
    pub fn new(secret: Option<&str>) -> Self {
        Self {
            key: secret.and_then(|s| Hmac::<Sha256>::new_from_slice(s.as_bytes()).ok()),
            rejected: AtomicU64::new(0),
            logged_at: AtomicU64::new(0),
        }
    }

    /// Whether values are signed.
    pub fn signs(&self) -> bool {
        self.key.is_some()
    }

    /// The signature of `parts` (32 hex digits), `None` without a secret.
    /// Each part is length-prefixed, so no two lists of parts sign alike.
    pub fn mac(&self, parts: &[&[u8]]) -> Option<String> {
        let mut mac = self.key.clone()?;
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        let tag = mac.finalize().into_bytes();
        Some(tag[..MAC_BYTES].iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Whether `tag` is the signature of `parts` (constant time).
    pub fn verify(&self, parts: &[&[u8]], tag: &str) -> bool {
        let Some(mut mac) = self.key.clone() else {
            return true;
        };
        let Some(tag) = unhex(tag) else { return false };
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.verify_truncated_left(&tag).is_ok() && tag.len() == MAC_BYTES
    }

    /// Counts one ignored value (`what` says which kind) and logs the count
    /// at most once a minute, so hostile data cannot flood the log.
    pub fn reject(&self, what: &'static str) {
        let total = self.rejected.fetch_add(1, Ordering::Relaxed) + 1;
        let now = unix_ms();
        let last = self.logged_at.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= LOG_EVERY_MS)
            && self
                .logged_at
                .compare_exchange(last, now.max(1), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                last = what,
                total,
                "ignoring data in Redis this instance cannot trust (unsigned, badly signed, malformed or out of bounds): \
                 check who can write to the cluster's Redis and that every instance has the same `[cluster] secret`"
            );
        }
    }

    /// `record` as stored and published under `domain` and the hash `key`:
    /// its JSON, with its signature when values are signed.
    pub fn encode<R: SignedRecord>(&self, domain: &[u8], key: &str, record: &R) -> String {
        let mut record = record.clone();
        *record.signature() = None;
        let json = serde_json::to_string(&record).unwrap_or_default();
        match self.mac(&[domain, key.as_bytes(), json.as_bytes()]) {
            Some(mac) => {
                *record.signature() = Some(mac);
                serde_json::to_string(&record).unwrap_or_default()
            }
            None => json,
        }
    }

    /// The record `bytes` (read from Redis) holds, if it can be trusted: at
    /// most `MAX_RECORD_LEN` bytes of JSON whose fields `fits`, a time within
    /// the clock skew, signed (over `domain` and `key`) when values are
    /// signed. Anything else is counted and ignored.
    pub fn decode<R: SignedRecord>(
        &self,
        domain: &[u8],
        key: &str,
        bytes: &[u8],
        fits: impl FnOnce(&R) -> bool,
    ) -> Option<R> {
        let record = (bytes.len() <= MAX_RECORD_LEN)
            .then(|| serde_json::from_slice::<R>(bytes).ok())
            .flatten();
        let Some(mut record) = record.filter(fits) else {
            self.reject(R::MALFORMED);
            return None;
        };
        if record.at_unix_ms() > latest_acceptable(unix_ms()) {
            self.reject(R::FROM_THE_FUTURE);
            return None;
        }
        if self.signs() {
            let sig = record.signature().take().unwrap_or_default();
            let json = serde_json::to_string(&record).unwrap_or_default();
            if !self.verify(&[domain, key.as_bytes(), json.as_bytes()], &sig) {
                self.reject(R::BAD_SIGNATURE);
                return None;
            }
        }
        *record.signature() = None;
        Some(record)
    }

    /// Values ignored since start.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() != MAC_BYTES * 2 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_binds_every_part_and_only_the_secret_makes_it() {
        let trust = Trust::new(Some("0123456789abcdef"));
        let tag = trust.mac(&[b"stick", b"k", b"s1"]).expect("signing");
        assert_eq!(tag.len(), 32);
        assert!(trust.verify(&[b"stick", b"k", b"s1"], &tag));
        assert!(!trust.verify(&[b"stick", b"k", b"s2"], &tag), "another value");
        assert!(
            !trust.verify(&[b"stick", b"ks", b"1"], &tag),
            "parts are length-prefixed"
        );
        assert!(!trust.verify(&[b"stick", b"k", b"s1"], "zz"), "not hex");
        let other = Trust::new(Some("another secret!!"));
        assert!(!other.verify(&[b"stick", b"k", b"s1"], &tag), "another secret");
        let open = Trust::new(None);
        assert!(open.mac(&[b"x"]).is_none() && !open.signs());
    }

    #[test]
    fn rejections_are_counted() {
        let trust = Trust::new(None);
        trust.reject("test");
        trust.reject("test");
        assert_eq!(trust.rejected(), 2);
        assert_eq!(latest_acceptable(u64::MAX), u64::MAX);
        assert_eq!(latest_acceptable(1_000), 6_000);
    }
}

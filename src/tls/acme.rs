//! What a TLS frontend with automatic certificates (ACME, RFC 8555) needs
//! at handshake time: a certificate slot that the ACME task swaps without a
//! reload, and the answers to the CA's challenges (TLS-ALPN-01, RFC 8737;
//! HTTP-01, RFC 8555 §8.3), shared with the proxy's plain frontends.
//!
//! The tables are process-wide: a CA's validation may reach any frontend of
//! the process, and a slot outlives a reload of the configuration (the
//! ACME task keeps it; a reloaded frontend with the same slot key finds it).
//! With `[cluster]`, another instance may be the one ordering: a validation
//! that finds no answer here asks the cluster (`ClusterAnswers`).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The ALPN name of the TLS-ALPN-01 challenge (RFC 8737 §6.2).
pub const ALPN_ACME_TLS: &[u8] = b"acme-tls/1";

/// The certificate a frontend serves now, swapped in whole when a new one
/// is issued; handshakes before the swap keep the old one.
#[derive(Debug, Default)]
pub struct CertSlot {
    /// `None` until the first certificate is in (handshakes then fail).
    current: ArcSwapOption<CertifiedKey>,
    /// The current certificate's notAfter, Unix seconds (0: none yet), for `/metrics`.
    not_after: AtomicI64,
}

impl CertSlot {
    /// Serves `key` (valid until `not_after`, Unix seconds) from the next handshake on.
    pub fn install(&self, key: Arc<CertifiedKey>, not_after: i64) {
        self.current.store(Some(key));
        self.not_after.store(not_after, Ordering::Relaxed);
    }

    /// The certificate served now.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }

    /// The current certificate's expiry (Unix seconds), if one is in.
    pub fn not_after(&self) -> Option<i64> {
        match self.not_after.load(Ordering::Relaxed) {
            0 => None,
            at => Some(at),
        }
    }
}

static SLOTS: LazyLock<Mutex<HashMap<String, Weak<CertSlot>>>> = LazyLock::new(Default::default);
static ALPN_CHALLENGES: LazyLock<Mutex<HashMap<String, Arc<CertifiedKey>>>> = LazyLock::new(Default::default);
static HTTP_CHALLENGES: LazyLock<Mutex<HashMap<String, HttpAnswer>>> = LazyLock::new(Default::default);

/// An HTTP-01 answer: offered by this process's order (until withdrawn),
/// or fetched from the cluster (until `until`).
struct HttpAnswer {
    key_authorization: String,
    until: Option<Instant>,
}

/// The path prefix of HTTP-01 validations (RFC 8555 §8.3).
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// How long an HTTP-01 answer fetched from the cluster is kept here: the
/// CA validates from a few places within seconds of each other.
pub const FETCHED_HTTP_ANSWER_LIFE: Duration = Duration::from_secs(60);

/// A boxed future of the cluster's answers.
pub type AnswerFuture<'a, T> = Pin<Box<dyn Future<Output = Option<T>> + Send + 'a>>;

/// The challenge answers of a cluster, for validations that reach an
/// instance other than the one ordering (`instance` implements it over
/// Redis). Asked only when this process has no answer, and only by a
/// validation: a handshake offering `acme-tls/1` for one of an ACME
/// frontend's names, or a plain `GET /.well-known/acme-challenge/<token>`;
/// never by ordinary traffic.
pub trait ClusterAnswers: Send + Sync {
    /// The TLS-ALPN-01 certificate for `domain` (lower case), if an order of the cluster is validating it.
    fn alpn_certificate<'a>(&'a self, domain: &'a str) -> AnswerFuture<'a, Arc<CertifiedKey>>;
    /// The key authorization for HTTP-01 `token`, if an order of the cluster is validating it.
    fn http_key_authorization<'a>(&'a self, token: &'a str) -> AnswerFuture<'a, String>;
}

/// The slot for `key` (the cache directory and the domains): the one in
/// use if any, so a reload keeps serving the certificate already issued.
pub fn slot(key: &str) -> Arc<CertSlot> {
    let mut slots = SLOTS.lock().unwrap_or_else(PoisonError::into_inner);
    slots.retain(|_, slot| slot.strong_count() > 0);
    if let Some(slot) = slots.get(key).and_then(Weak::upgrade) {
        return slot;
    }
    let slot = Arc::new(CertSlot::default());
    slots.insert(key.to_string(), Arc::downgrade(&slot));
    slot
}

/// Answers TLS-ALPN-01 for `domain` with `key` (its acmeIdentifier certificate) until withdrawn.
pub fn offer_alpn_challenge(domain: &str, key: Arc<CertifiedKey>) {
    let mut table = ALPN_CHALLENGES.lock().unwrap_or_else(PoisonError::into_inner);
    table.insert(domain.to_ascii_lowercase(), key);
}

/// Stops answering TLS-ALPN-01 for `domain`.
pub fn withdraw_alpn_challenge(domain: &str) {
    let mut table = ALPN_CHALLENGES.lock().unwrap_or_else(PoisonError::into_inner);
    table.remove(&domain.to_ascii_lowercase());
}

/// The challenge certificate for `domain`, while its validation is pending.
pub fn alpn_challenge(domain: &str) -> Option<Arc<CertifiedKey>> {
    let table = ALPN_CHALLENGES.lock().unwrap_or_else(PoisonError::into_inner);
    table.get(&domain.to_ascii_lowercase()).cloned()
}

/// Answers `GET /.well-known/acme-challenge/{token}` with `key_authorization` until withdrawn.
pub fn offer_http_challenge(token: &str, key_authorization: &str) {
    let mut table = HTTP_CHALLENGES.lock().unwrap_or_else(PoisonError::into_inner);
    table.insert(
        token.to_string(),
        HttpAnswer {
            key_authorization: key_authorization.to_string(),
            until: None,
        },
    );
}

/// Answers HTTP-01 `token` with `key_authorization`, fetched from the
/// cluster, for `life`; answers fetched earlier that expired are dropped.
fn remember_http_challenge(token: &str, key_authorization: String, life: Duration) {
    let now = Instant::now();
    let mut table = HTTP_CHALLENGES.lock().unwrap_or_else(PoisonError::into_inner);
    table.retain(|_, answer| answer.until.is_none_or(|until| until > now));
    table.entry(token.to_string()).or_insert(HttpAnswer {
        key_authorization,
        until: Some(now + life),
    });
}

/// The HTTP-01 token of a request path, if it is a validation's path with
/// a token that can be one (base64url, RFC 8555 §8.3; at most 128 characters).
pub fn http01_token(path: &str) -> Option<&str> {
    let token = path.strip_prefix(HTTP01_PREFIX)?;
    let plausible = (1..=128).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    plausible.then_some(token)
}

/// Makes the HTTP-01 answer for the request `path` available to
/// `http_challenge`: when it is a validation's path and this process has
/// no answer for its token, the cluster's (kept `FETCHED_HTTP_ANSWER_LIFE`).
pub async fn fetch_http_challenge(answers: &dyn ClusterAnswers, path: &str) {
    let Some(token) = http01_token(path) else {
        return;
    };
    if http_challenge(token).is_some() {
        return;
    }
    if let Some(key_authorization) = answers.http_key_authorization(token).await {
        remember_http_challenge(token, key_authorization, FETCHED_HTTP_ANSWER_LIFE);
    }
}

/// Stops answering HTTP-01 for `token`.
pub fn withdraw_http_challenge(token: &str) {
    let mut table = HTTP_CHALLENGES.lock().unwrap_or_else(PoisonError::into_inner);
    table.remove(token);
}

/// The key authorization for an HTTP-01 `token`, while its validation is pending.
pub fn http_challenge(token: &str) -> Option<String> {
    let table = HTTP_CHALLENGES.lock().unwrap_or_else(PoisonError::into_inner);
    let answer = table.get(token)?;
    answer
        .until
        .is_none_or(|until| until > Instant::now())
        .then(|| answer.key_authorization.clone())
}

/// Whether a ClientHello asks for the TLS-ALPN-01 challenge (ALPN `acme-tls/1`).
pub fn wants_acme_tls(hello: &ClientHello<'_>) -> bool {
    hello.alpn().is_some_and(|mut names| names.any(|n| n == ALPN_ACME_TLS))
}

/// Serves one certificate: a TLS-ALPN-01 answer fetched from the cluster.
#[derive(Debug)]
pub(super) struct FixedResolver(pub(super) Arc<CertifiedKey>);

impl ResolvesServerCert for FixedResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Chooses the certificate of an ACME frontend's handshake: the challenge
/// certificate when the client offers `acme-tls/1` for a domain under
/// validation, the slot's certificate otherwise.
#[derive(Debug)]
pub(super) struct AcmeResolver {
    /// The certificate issued for this frontend.
    pub(super) slot: Arc<CertSlot>,
}

impl ResolvesServerCert for AcmeResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if wants_acme_tls(&hello) {
            return hello.server_name().and_then(alpn_challenge);
        }
        self.slot.current()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_plausible_token_on_the_validation_path_is_looked_up() {
        assert_eq!(
            http01_token("/.well-known/acme-challenge/LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"),
            Some("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0")
        );
        assert_eq!(http01_token("/.well-known/acme-challenge/"), None);
        assert_eq!(http01_token("/.well-known/acme-challenge/a/b"), None);
        assert_eq!(http01_token("/.well-known/acme-challenge/a%2Fb"), None);
        assert_eq!(http01_token(&format!("{HTTP01_PREFIX}{}", "a".repeat(129))), None);
        assert_eq!(http01_token("/index.html"), None);
    }

    #[test]
    fn an_answer_fetched_from_the_cluster_expires_and_never_replaces_an_offered_one() {
        offer_http_challenge("offered-token", "offered");
        remember_http_challenge("offered-token", "fetched".into(), Duration::from_secs(60));
        assert_eq!(http_challenge("offered-token").as_deref(), Some("offered"));
        remember_http_challenge("fetched-token", "fetched".into(), Duration::ZERO);
        assert_eq!(http_challenge("fetched-token"), None, "expired at once");
        withdraw_http_challenge("offered-token");
        assert_eq!(http_challenge("offered-token"), None);
    }
}

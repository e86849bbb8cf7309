//! Automatic certificates (ACME, RFC 8555): for each frontend with
//! `tls.acme`, one task serves the cached certificate if it has one, orders
//! a new one when there is none or it is due (two thirds of its lifetime,
//! with jitter), retries with backoff, and swaps the result into the
//! frontend's certificate slot (`tls::acme::CertSlot`): handshakes go on
//! with the old certificate until the new one is in.
//!
//! - `order`: the account and one order with instant-acme;
//! - `challenge`: the TLS-ALPN-01 certificate;
//! - `cache`: account and certificates on disk, 0600;
//! - `renew`: when to renew, how long to back off (pure).

pub mod cache;
pub mod challenge;
pub mod order;
pub mod renew;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::model::AcmeSettings;
use crate::tls::acme::CertSlot;
use cache::StoredCertificate;

/// A boxed future of the shared store's calls.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the instances of a cluster share their certificates, so only one
/// of them orders at a time (a lock with an expiry) and the others load what
/// it stored. `instance` implements it over Redis; errors count as "no".
pub trait SharedStore: Send + Sync {
    /// Takes the ordering lock `name` for `ttl`; true when this instance holds it now.
    fn lock<'a>(&'a self, name: &'a str, ttl: Duration) -> StoreFuture<'a, bool>;
    /// Gives the lock `name` back, if this instance still holds it.
    fn unlock<'a>(&'a self, name: &'a str) -> StoreFuture<'a, ()>;
    /// The certificate stored under `name` (verified when the cluster signs its records).
    fn load<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<String>>;
    /// Stores a certificate (chain and key, PEM) under `name`.
    fn store<'a>(&'a self, name: &'a str, pem: &'a str) -> StoreFuture<'a, ()>;
    /// Publishes the answer to a pending challenge for `ttl`, so the
    /// instance the CA's validation reaches can give it.
    fn offer_challenge<'a>(
        &'a self,
        challenge: &'a PendingChallenge,
        key_authorization: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, ()>;
    /// Withdraws a published answer (the order's validation is over).
    fn withdraw_challenge<'a>(&'a self, challenge: &'a PendingChallenge) -> StoreFuture<'a, ()>;
}

/// A challenge under validation, as the instances of a cluster look its
/// answer up: TLS-ALPN-01 by the domain in the handshake's SNI, HTTP-01
/// by the token in the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingChallenge {
    /// TLS-ALPN-01 for this domain (lower case).
    TlsAlpn01(String),
    /// HTTP-01 with this token.
    Http01(String),
}

/// How long a published challenge answer lives in the shared store: the
/// order's validation wait (90 s) with room to spare; withdrawn earlier
/// when the order ends.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(120);

/// How long one instance may hold the ordering lock (an order that takes
/// longer lets another instance try).
pub const LOCK_TTL: Duration = Duration::from_secs(180);

/// How often an instance waiting for another's order looks for its result.
const SHARED_POLL: Duration = Duration::from_secs(1);

/// Why a certificate could not be obtained, stored or used.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The ACME exchange failed (network, CA error document).
    #[error("ACME: {0}")]
    Acme(#[from] instant_acme::Error),
    /// A key, CSR or challenge certificate could not be made.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    /// A certificate or key could not be parsed or used.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The CA refused an authorization or the order.
    #[error("the CA refused: {0}")]
    Refused(String),
    /// The cache directory could not be read or written.
    #[error("cache {path}: {source}")]
    Cache {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
}

/// A stored certificate made ready to serve, with its validity (Unix seconds).
pub struct Usable {
    /// What rustls serves.
    pub key: Arc<CertifiedKey>,
    /// The leaf's notBefore.
    pub not_before: i64,
    /// The leaf's notAfter.
    pub not_after: i64,
}

/// Parses a stored chain and key into something to serve.
pub fn usable(stored: &StoredCertificate) -> Result<Usable, AcmeError> {
    let bad = |what: &str, err: &dyn std::fmt::Display| AcmeError::Certificate(format!("{what}: {err}"));
    let chain = CertificateDer::pem_slice_iter(stored.chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("chain", &e))?;
    let leaf = chain
        .first()
        .ok_or_else(|| AcmeError::Certificate("empty chain".into()))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(|e| bad("leaf", &e))?;
    let validity = parsed.validity();
    let (not_before, not_after) = (validity.not_before.timestamp(), validity.not_after.timestamp());
    let private = PrivateKeyDer::from_pem_slice(stored.key_pem.as_bytes()).map_err(|e| bad("key", &e))?;
    let key = CertifiedKey::from_der(chain, private, &crate::tls::provider()).map_err(|e| bad("key", &e))?;
    Ok(Usable {
        key: Arc::new(key),
        not_before,
        not_after,
    })
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A number in 0.0–1.0 that differs between processes and frontends: the renewal jitter.
fn jitter(frontend: &str) -> f64 {
    use sha2::Digest;
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let digest = sha2::Sha256::digest(format!("{frontend}{nanos}{}", std::process::id()).as_bytes());
    f64::from(u16::from_be_bytes([digest[0], digest[1]])) / f64::from(u16::MAX)
}

/// Keeps frontend `frontend`'s certificate in `slot` for as long as it
/// runs; with `shared` (a cluster), through its lock and store.
pub async fn run(
    frontend: Arc<str>,
    settings: AcmeSettings,
    slot: Arc<CertSlot>,
    shared: Option<Arc<dyn SharedStore>>,
) {
    let path = cache::certificate_path(&settings.cache, &settings.domains);
    // The shared name: the certificate file's, so the same domains share one.
    let name = path
        .file_stem()
        .map_or_else(|| settings.domains.join(","), |s| s.to_string_lossy().into_owned());
    let jitter = jitter(&frontend);
    let mut failures = 0u32;
    loop {
        // What the cache holds: served if still valid, renewed when due.
        match cache::read_certificate(&path).and_then(|c| c.as_ref().map(usable).transpose()) {
            Ok(Some(cached)) if renew::usable(cached.not_after, now()) => {
                if slot.not_after() != Some(cached.not_after) {
                    slot.install(cached.key.clone(), cached.not_after);
                    tracing::info!(frontend = %frontend, domains = ?settings.domains, not_after = cached.not_after, "ACME certificate in use");
                }
                let due = renew::due_at(cached.not_before, cached.not_after, jitter);
                if now() < due {
                    tokio::time::sleep(Duration::from_secs((due - now()).max(1) as u64)).await;
                    continue;
                }
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(frontend = %frontend, cause = %err, "ACME cache unusable: ordering anew"),
        }
        let mut locked = false;
        if let Some(shared) = &shared {
            // Another instance may have stored one that is not due yet.
            if let Some(stored) = fresh_shared(shared.as_ref(), &name, jitter).await {
                if let Err(err) = cache::write_certificate(&path, &stored) {
                    tracing::warn!(frontend = %frontend, cause = %err, "ACME cache not written");
                }
                continue;
            }
            if !shared.lock(&name, LOCK_TTL).await {
                tracing::debug!(frontend = %frontend, "ACME: another instance is ordering; waiting for its certificate");
                tokio::time::sleep(SHARED_POLL).await;
                continue;
            }
            locked = true;
            // It may have finished between the look and the lock.
            if let Some(stored) = fresh_shared(shared.as_ref(), &name, jitter).await {
                shared.unlock(&name).await;
                let _ = cache::write_certificate(&path, &stored);
                continue;
            }
        }
        tracing::info!(frontend = %frontend, domains = ?settings.domains, directory = %settings.directory, "ACME: ordering a certificate");
        let outcome = obtain(&settings, shared.as_deref()).await.and_then(|stored| {
            usable(&stored)?;
            cache::write_certificate(&path, &stored)?;
            Ok(stored)
        });
        if let (Some(shared), Ok(stored)) = (&shared, &outcome) {
            let mut text = stored.chain_pem.clone();
            if !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&stored.key_pem);
            shared.store(&name, &text).await;
        }
        if let (Some(shared), true) = (&shared, locked) {
            shared.unlock(&name).await;
        }
        match outcome.map(|_| ()) {
            Ok(()) => {
                failures = 0;
                tracing::info!(frontend = %frontend, domains = ?settings.domains, "ACME: certificate issued");
            }
            Err(err) => {
                let wait = renew::backoff(failures);
                failures = failures.saturating_add(1);
                tracing::warn!(frontend = %frontend, cause = %err, retry_in = ?wait, "ACME: no certificate obtained; the current one (if any) stays");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// The certificate another instance stored under `name`, if it is valid and not due.
async fn fresh_shared(shared: &dyn SharedStore, name: &str, jitter: f64) -> Option<StoredCertificate> {
    let text = shared.load(name).await?;
    let at = text.find("-----BEGIN PRIVATE KEY-----")?;
    let stored = StoredCertificate {
        chain_pem: text[..at].to_string(),
        key_pem: text[at..].to_string(),
    };
    let parsed = usable(&stored).ok()?;
    (now() < renew::due_at(parsed.not_before, parsed.not_after, jitter)).then_some(stored)
}

async fn obtain(settings: &AcmeSettings, shared: Option<&dyn SharedStore>) -> Result<StoredCertificate, AcmeError> {
    let account = order::account(settings).await?;
    order::issue(&account, settings, shared).await
}

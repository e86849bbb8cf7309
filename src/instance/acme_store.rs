//! The cluster's share of automatic certificates: `acme::SharedStore` over
//! the cluster's Redis. The ordering lock is `SET NX PX` with this
//! instance's name as its value (given back only by its holder); a stored
//! certificate is signed like the cluster's other records when `[cluster]
//! secret` is set, and one with a bad signature is ignored and counted.
//!
//! The answers of the order's pending challenges are published the same
//! way (`acme:alpn:<domain>`, `acme:http:<token>`, with a short expiry), and
//! every instance reads them (`tls::acme::ClusterAnswers`), so the CA's
//! validation may reach any instance behind a load balancer.

use std::sync::Arc;
use std::time::Duration;

use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::acme::{PendingChallenge, SharedStore, StoreFuture};
use crate::cluster::Cluster;
use crate::tls::acme::{AnswerFuture, ClusterAnswers};

/// What signatures of stored certificates are made over (with the key).
const DOMAIN: &[u8] = b"acme-certificate";

/// What signatures of challenge answers are made over (with the key).
const CHALLENGE_DOMAIN: &[u8] = b"acme-challenge";

/// A pending challenge's answer as stored in Redis.
#[derive(Serialize, Deserialize)]
struct StoredAnswer {
    /// The key authorization (RFC 8555 §8.1); TLS-ALPN-01 certifies its SHA-256.
    key_authorization: String,
    /// HMAC over the key and the key authorization, with `[cluster] secret`.
    signature: Option<String>,
}

/// A certificate as stored in Redis.
#[derive(Serialize, Deserialize)]
struct Stored {
    /// Chain then key, PEM.
    pem: String,
    /// HMAC over the key and `pem`, with `[cluster] secret`.
    signature: Option<String>,
}

/// The cluster's Redis as the ACME tasks' shared store.
pub(super) struct RedisStore {
    /// Its client, trust and key prefix.
    pub(super) cluster: Arc<Cluster>,
}

impl RedisStore {
    fn lock_key(&self, name: &str) -> String {
        self.cluster.key(&["acme", "lock", name])
    }

    fn cert_key(&self, name: &str) -> String {
        self.cluster.key(&["acme", "cert", name])
    }

    fn limit(&self) -> Duration {
        self.cluster.redis.background_timeout()
    }

    /// The value stored under `key`; `None` when there is none or Redis
    /// did not answer within the limit.
    async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(key);
        let (bytes,) = self
            .cluster
            .redis
            .query::<(Option<Vec<u8>>,)>(&pipe, self.limit())
            .await
            .ok()?;
        bytes
    }

    fn challenge_key(&self, challenge: &PendingChallenge) -> String {
        match challenge {
            PendingChallenge::TlsAlpn01(domain) => self.cluster.key(&["acme", "alpn", domain]),
            PendingChallenge::Http01(token) => self.cluster.key(&["acme", "http", token]),
        }
    }

    /// The key authorization published for `challenge`, if its signature holds.
    async fn answer(&self, challenge: &PendingChallenge) -> Option<String> {
        let key = self.challenge_key(challenge);
        let bytes = self.get(&key).await?;
        let Ok(stored) = serde_json::from_slice::<StoredAnswer>(&bytes) else {
            self.cluster.trust.reject("malformed ACME challenge answer");
            return None;
        };
        let trust = &self.cluster.trust;
        let signed = stored.signature.as_deref().unwrap_or_default();
        if trust.signs()
            && !trust.verify(
                &[CHALLENGE_DOMAIN, key.as_bytes(), stored.key_authorization.as_bytes()],
                signed,
            )
        {
            trust.reject("badly signed ACME challenge answer");
            return None;
        }
        Some(stored.key_authorization)
    }
}

impl ClusterAnswers for RedisStore {
    fn alpn_certificate<'a>(&'a self, domain: &'a str) -> AnswerFuture<'a, Arc<CertifiedKey>> {
        Box::pin(async move {
            let key_authorization = self.answer(&PendingChallenge::TlsAlpn01(domain.to_string())).await?;
            let digest = Sha256::digest(key_authorization.as_bytes());
            match crate::acme::challenge::alpn_certificate(domain, &digest) {
                Ok(key) => Some(key),
                Err(err) => {
                    tracing::warn!(domain, cause = %err, "ACME TLS-ALPN-01 certificate not made");
                    None
                }
            }
        })
    }

    fn http_key_authorization<'a>(&'a self, token: &'a str) -> AnswerFuture<'a, String> {
        Box::pin(async move { self.answer(&PendingChallenge::Http01(token.to_string())).await })
    }
}

impl SharedStore for RedisStore {
    fn lock<'a>(&'a self, name: &'a str, ttl: Duration) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            pipe.cmd("SET")
                .arg(self.lock_key(name))
                .arg(self.cluster.instance())
                .arg("NX")
                .arg("PX")
                .arg(ttl.as_millis() as u64);
            matches!(
                self.cluster.redis.query::<(Option<String>,)>(&pipe, self.limit()).await,
                Ok((Some(_),))
            )
        })
    }

    fn unlock<'a>(&'a self, name: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            pipe.cmd("EVAL")
                .arg(
                    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
                )
                .arg(1)
                .arg(self.lock_key(name))
                .arg(self.cluster.instance());
            let _ = self.cluster.redis.query::<(i64,)>(&pipe, self.limit()).await;
        })
    }

    fn load<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<String>> {
        Box::pin(async move {
            let key = self.cert_key(name);
            let bytes = self.get(&key).await?;
            let stored: Stored = match serde_json::from_slice(&bytes) {
                Ok(stored) => stored,
                Err(_) => {
                    self.cluster.trust.reject("malformed ACME certificate");
                    return None;
                }
            };
            let trust = &self.cluster.trust;
            let signed = stored.signature.as_deref().unwrap_or_default();
            if trust.signs() && !trust.verify(&[DOMAIN, key.as_bytes(), stored.pem.as_bytes()], signed) {
                trust.reject("badly signed ACME certificate");
                return None;
            }
            Some(stored.pem)
        })
    }

    fn store<'a>(&'a self, name: &'a str, pem: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let key = self.cert_key(name);
            let signature = self.cluster.trust.mac(&[DOMAIN, key.as_bytes(), pem.as_bytes()]);
            let record = Stored {
                pem: pem.to_string(),
                signature,
            };
            let Ok(json) = serde_json::to_string(&record) else {
                return;
            };
            let mut pipe = redis::pipe();
            pipe.cmd("SET").arg(&key).arg(json);
            if let Err(err) = self.cluster.redis.query::<((),)>(&pipe, self.limit()).await {
                tracing::warn!(cause = %err, "ACME certificate not stored in Redis: the other instances will order their own");
            }
        })
    }

    fn offer_challenge<'a>(
        &'a self,
        challenge: &'a PendingChallenge,
        key_authorization: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let key = self.challenge_key(challenge);
            let signature = self
                .cluster
                .trust
                .mac(&[CHALLENGE_DOMAIN, key.as_bytes(), key_authorization.as_bytes()]);
            let record = StoredAnswer {
                key_authorization: key_authorization.to_string(),
                signature,
            };
            let Ok(json) = serde_json::to_string(&record) else {
                return;
            };
            let mut pipe = redis::pipe();
            pipe.cmd("SET")
                .arg(&key)
                .arg(json)
                .arg("PX")
                .arg(ttl.as_millis() as u64);
            if let Err(err) = self.cluster.redis.query::<((),)>(&pipe, self.limit()).await {
                tracing::warn!(cause = %err, "ACME challenge answer not stored in Redis: only this instance can answer the CA");
            }
        })
    }

    fn withdraw_challenge<'a>(&'a self, challenge: &'a PendingChallenge) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            pipe.cmd("DEL").arg(self.challenge_key(challenge));
            let _ = self.cluster.redis.query::<(i64,)>(&pipe, self.limit()).await;
        })
    }
}

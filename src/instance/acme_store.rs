//! The cluster's share of automatic certificates: `acme::SharedStore` over
//! the cluster's Redis. The ordering lock is `SET NX PX` with this
//! instance's name as its value (given back only by its holder); a stored
//! certificate is signed like the cluster's other records when `[cluster]
//! secret` is set, and one with a bad signature is ignored and counted.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::acme::{SharedStore, StoreFuture};
use crate::cluster::Cluster;

/// What signatures of stored certificates are made over (with the key).
const DOMAIN: &[u8] = b"acme-certificate";

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
            let mut pipe = redis::pipe();
            pipe.cmd("GET").arg(&key);
            let (bytes,) = self
                .cluster
                .redis
                .query::<(Option<Vec<u8>>,)>(&pipe, self.limit())
                .await
                .ok()?;
            let stored: Stored = match serde_json::from_slice(&bytes?) {
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
}

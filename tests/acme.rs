//! Automatic certificates against a real ACME server: pebble (Let's
//! Encrypt's test CA) with pebble-challtestsrv as its DNS, validating
//! TLS-ALPN-01 and HTTP-01 on tether's own ports. A client then gets a
//! certificate for the domain that chains to pebble's root; the cache is
//! reused across a restart without a new order; a short-lived certificate
//! is renewed while the old one keeps being served.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tether_test_support::*;
use tokio::net::TcpStream;

/// Each test its own domain: the challenge answers are per domain in one
/// process, and the tests of this binary run at the same time.
const DOMAIN: &str = "ws.acme.test";
const RENEW_DOMAIN: &str = "renew.acme.test";
const HTTP_DOMAIN: &str = "http.acme.test";

/// A fresh cache directory for one test.
fn cache_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tether-acme-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn config(pebble: &Pebble, tls_port: u16, cache: &std::path::Path, backend: &TestBackend, domain: &str) -> Config {
    let tls = FrontendTls::acme(
        &[domain],
        &pebble.directory,
        pebble.https_ca.to_str().expect("path"),
        cache.to_str().expect("path"),
    );
    let frontend = Frontend::new("secure")
        .bind(format!("127.0.0.1:{tls_port}").as_str())
        .default_backend("pool")
        .tls(tls);
    Config::simple(frontend, pool().servers([backend]))
}

/// The leaf that tether serves for `domain`, once a handshake verifies
/// against pebble's root (`root_pem`) with the domain as the name.
async fn verified_leaf(addr: SocketAddr, root_pem: &str, domain: &str) -> Option<CertificateDer<'static>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots.add(cert.expect("root PEM")).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(tether::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.ok()?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(domain.to_string()).expect("name"), tcp)
        .await
        .ok()?;
    tls.get_ref()
        .1
        .peer_certificates()?
        .first()
        .map(|c| c.clone().into_owned())
}

/// Waits (up to `limit`) for a verified leaf other than `not`.
async fn wait_for_leaf(
    pebble: &Pebble,
    addr: SocketAddr,
    root_pem: &str,
    domain: &str,
    not: Option<&CertificateDer<'static>>,
    limit: Duration,
) -> CertificateDer<'static> {
    let start = Instant::now();
    loop {
        if let Some(leaf) = verified_leaf(addr, root_pem, domain).await {
            if Some(&leaf) != not {
                return leaf;
            }
        }
        assert!(
            start.elapsed() < limit,
            "no (new) certificate from pebble within {limit:?}: {}",
            pebble.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn validity(leaf: &CertificateDer<'_>) -> (i64, i64) {
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).expect("leaf X.509");
    (
        parsed.validity().not_before.timestamp(),
        parsed.validity().not_after.timestamp(),
    )
}

fn names(leaf: &CertificateDer<'_>) -> Vec<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).expect("leaf X.509");
    parsed
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| san.value.general_names.iter().map(|n| n.to_string()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_is_obtained_with_tls_alpn_01_and_reused_after_a_restart() {
    init_logs();
    let backend = backend("s1").start().await;
    let tls_port = free_port();
    let pebble = Pebble::start(free_port(), tls_port, None).await;
    let cache = cache_dir("alpn");
    let config =
        config(&pebble, tls_port, &cache, &backend, DOMAIN).admin(Admin::bind("127.0.0.1:0").hosts(&["tether.test"]));
    let root = pebble.root_pem().await;

    let tether = start_tether(&config).await;
    let leaf = wait_for_leaf(&pebble, tether.addr, &root, DOMAIN, None, Duration::from_secs(30)).await;
    assert!(names(&leaf).iter().any(|n| n.contains(DOMAIN)), "{:?}", names(&leaf));
    assert_eq!(pebble.orders(), 1, "{}", pebble.log_text());
    assert_eq!(pebble.issued(), 1);
    // The expiry, as Unix time, in /metrics and the admin API (the stats page's line).
    let admin = tether.handle.admin_addr().expect("admin listener");
    let series = format!("tether_tls_certificate_expiry_seconds{{frontend=\"secure\",domain=\"{DOMAIN}\"}}");
    assert_eq!(metric(admin, &series).await as i64, validity(&leaf).1);
    let (_, api) = admin_call(admin, http::Method::GET, "/api/v1/frontends", None).await;
    assert_eq!(api["frontends"][0]["certificate"]["expires"], validity(&leaf).1);
    assert_eq!(api["frontends"][0]["certificate"]["domains"][0], DOMAIN);
    // A reload keeps serving the certificate (its slot outlives the old snapshot) and orders nothing.
    tether.handle.reload(&config.parse()).expect("reload");
    assert_eq!(verified_leaf(tether.addr, &root, DOMAIN).await.as_ref(), Some(&leaf));
    assert_eq!(pebble.orders(), 1);
    // Account key and certificate on disk, readable by tether's user only.
    let files: Vec<_> = std::fs::read_dir(&cache).expect("cache dir").flatten().collect();
    assert_eq!(files.len(), 2, "{files:?}");
    for file in &files {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata().expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{:?}", file.path());
    }
    tether.stop().await;

    // A restart serves the cached certificate and orders nothing.
    let again = start_tether(&config).await;
    let served = wait_for_leaf(&pebble, again.addr, &root, DOMAIN, None, Duration::from_secs(10)).await;
    assert_eq!(served, leaf, "the cached certificate is served");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        pebble.orders(),
        1,
        "no new order after a restart: {}",
        pebble.log_text()
    );
    again.stop().await;
    let _ = std::fs::remove_dir_all(cache);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lived_certificate_is_renewed_and_the_old_one_served_until_then() {
    let backend = backend("s1").start().await;
    let tls_port = free_port();
    // pebble's own short validity: 15 s, so renewal is due after about 10 s.
    let pebble = Pebble::start(free_port(), tls_port, Some(15)).await;
    let cache = cache_dir("renew");
    let root = pebble.root_pem().await;
    let tether = start_tether(&config(&pebble, tls_port, &cache, &backend, RENEW_DOMAIN)).await;
    let first = wait_for_leaf(&pebble, tether.addr, &root, RENEW_DOMAIN, None, Duration::from_secs(30)).await;
    let (not_before, not_after) = validity(&first);
    assert!(not_after - not_before <= 16, "pebble issued {not_before}..{not_after}");
    // Until the renewal, the first certificate is what clients get.
    let served = verified_leaf(tether.addr, &root, RENEW_DOMAIN).await.expect("served");
    assert_eq!(served, first);
    let second = wait_for_leaf(
        &pebble,
        tether.addr,
        &root,
        RENEW_DOMAIN,
        Some(&first),
        Duration::from_secs(25),
    )
    .await;
    let renewed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!(renewed_at < not_after + 1, "renewed before the old one expired");
    assert!(validity(&second).1 > not_after);
    assert_eq!(pebble.orders(), 2, "{}", pebble.log_text());
    tether.stop().await;
    let _ = std::fs::remove_dir_all(cache);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_01_is_answered_on_a_plain_frontend_before_its_redirect() {
    let backend = backend("s1").start().await;
    let (tls_port, http_port) = (free_port(), free_port());
    let pebble = Pebble::start(http_port, tls_port, None).await;
    let cache = cache_dir("http01");
    let root = pebble.root_pem().await;
    let tls = FrontendTls::acme(
        &[HTTP_DOMAIN],
        &pebble.directory,
        pebble.https_ca.to_str().expect("path"),
        cache.to_str().expect("path"),
    )
    .acme_challenge("http-01");
    let config = Config::new()
        .frontend(
            Frontend::new("secure")
                .bind(format!("127.0.0.1:{tls_port}").as_str())
                .default_backend("pool")
                .tls(tls),
        )
        .frontend(
            Frontend::new("plain")
                .bind(format!("127.0.0.1:{http_port}").as_str())
                .default_backend("pool")
                .redirect_https(true),
        )
        .backend(pool().servers([&backend]));
    let tether = start_tether(&config).await;
    let leaf = wait_for_leaf(&pebble, tether.addr, &root, HTTP_DOMAIN, None, Duration::from_secs(30)).await;
    assert!(names(&leaf).iter().any(|n| n.contains(HTTP_DOMAIN)));
    assert_eq!(pebble.orders(), 1);
    // Other paths on the plain frontend are still redirected.
    let (status, _, _) = get(
        SocketAddr::from(([127, 0, 0, 1], http_port)),
        "/.well-known/acme-challenge/unknown",
    )
    .await;
    assert_eq!(status, http::StatusCode::PERMANENT_REDIRECT);
    tether.stop().await;
    let _ = std::fs::remove_dir_all(cache);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clustered_instances_make_one_order_and_serve_the_same_certificate() {
    const CLUSTER_DOMAIN: &str = "cluster.acme.test";
    let redis = RedisServer::start().await;
    let backend = backend("s1").start().await;
    let (port_a, port_b) = (free_port(), free_port());
    // The CA validates at instance A's port; either instance may order.
    let pebble = Pebble::start(free_port(), port_a, None).await;
    let root = pebble.root_pem().await;
    let (cache_a, cache_b) = (cache_dir("cluster-a"), cache_dir("cluster-b"));
    let clustered = |port: u16, cache: &std::path::Path, name: &str| {
        config(&pebble, port, cache, &backend, CLUSTER_DOMAIN).cluster(
            Cluster::redis(&redis.url())
                .instance(name)
                .secret("a shared secret of the cluster"),
        )
    };
    let (config_a, config_b) = (clustered(port_a, &cache_a, "a"), clustered(port_b, &cache_b, "b"));
    let (a, b) = tokio::join!(start_tether(&config_a), start_tether(&config_b));
    let leaf_a = wait_for_leaf(&pebble, a.addr, &root, CLUSTER_DOMAIN, None, Duration::from_secs(30)).await;
    let leaf_b = wait_for_leaf(&pebble, b.addr, &root, CLUSTER_DOMAIN, None, Duration::from_secs(15)).await;
    assert_eq!(leaf_a, leaf_b, "both serve the one certificate ordered");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(pebble.orders(), 1, "one order for two instances: {}", pebble.log_text());
    // Stored signed, and the lock given back.
    let certs: Vec<String> = redis.run(redis::cmd("KEYS").arg("*acme:cert:*")).await;
    assert_eq!(certs.len(), 1, "{certs:?}");
    let stored: serde_json::Value = serde_json::from_str(&redis.get(&certs[0]).await.expect("stored")).expect("JSON");
    assert!(stored["signature"].is_string(), "signed with the cluster's secret");
    assert!(stored["pem"].as_str().is_some_and(|p| p.contains("BEGIN CERTIFICATE")));
    let locks: Vec<String> = redis.run(redis::cmd("KEYS").arg("*acme:lock:*")).await;
    assert!(locks.is_empty(), "the ordering lock is given back: {locks:?}");
    a.stop().await;
    b.stop().await;
    let _ = std::fs::remove_dir_all(cache_a);
    let _ = std::fs::remove_dir_all(cache_b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_adds_an_acme_frontend_obtains_its_certificate() {
    const RELOAD_DOMAIN: &str = "reload.acme.test";
    let backend = backend("s1").start().await;
    let tls_port = free_port();
    let pebble = Pebble::start(free_port(), tls_port, None).await;
    let cache = cache_dir("reload");
    let root = pebble.root_pem().await;
    let plain = Config::simple(Frontend::public(), pool().servers([&backend]));
    let tether = start_tether(&plain).await;
    let with_acme = plain.clone().frontend(
        Frontend::new("secure")
            .bind(format!("127.0.0.1:{tls_port}").as_str())
            .default_backend("pool")
            .tls(FrontendTls::acme(
                &[RELOAD_DOMAIN],
                &pebble.directory,
                pebble.https_ca.to_str().expect("path"),
                cache.to_str().expect("path"),
            )),
    );
    tether.handle.reload(&with_acme.parse()).expect("reload");
    let secure = SocketAddr::from(([127, 0, 0, 1], tls_port));
    let leaf = wait_for_leaf(&pebble, secure, &root, RELOAD_DOMAIN, None, Duration::from_secs(30)).await;
    assert!(names(&leaf).iter().any(|n| n.contains(RELOAD_DOMAIN)));
    assert_eq!(pebble.orders(), 1);
    // A reload that removes the frontend stops its task; one that adds it
    // back starts a new one, which serves the cached certificate and orders nothing.
    tether.handle.reload(&plain.parse()).expect("reload");
    tether.handle.reload(&with_acme.parse()).expect("reload");
    let again = wait_for_leaf(&pebble, secure, &root, RELOAD_DOMAIN, None, Duration::from_secs(10)).await;
    assert_eq!(again, leaf, "the cached certificate is served");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pebble.orders(), 1, "{}", pebble.log_text());
    tether.stop().await;
    let _ = std::fs::remove_dir_all(cache);
}

/// Steers each connection, as a load balancer in front of the cluster
/// would, to an instance that does not hold the ACME ordering lock (its
/// value is the ordering instance's name): the CA's validation then
/// reaches an instance that did not order. `addrs` maps instance names to
/// the addresses to relay to; the choice waits (up to 10 s) until the lock
/// is taken and another instance's address is known.
fn to_an_instance_not_ordering(redis_url: String, addrs: Arc<Mutex<HashMap<String, SocketAddr>>>) -> Choose {
    Arc::new(move || {
        let (url, addrs) = (redis_url.clone(), addrs.clone());
        Box::pin(async move {
            let client = redis::Client::open(url).ok()?;
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                let locks: Vec<String> = redis::cmd("KEYS")
                    .arg("*acme:lock:*")
                    .query_async(&mut conn)
                    .await
                    .ok()?;
                if let Some(lock) = locks.first() {
                    let holder: Option<String> = redis::cmd("GET").arg(lock).query_async(&mut conn).await.ok()?;
                    let other = holder.and_then(|holder| {
                        let addrs = addrs.lock().expect("addresses");
                        addrs.iter().find(|(name, _)| **name != holder).map(|(_, addr)| *addr)
                    });
                    if other.is_some() {
                        return other;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            None
        })
    })
}

fn clustered(config: Config, redis: &RedisServer, name: &str) -> Config {
    config.cluster(
        Cluster::redis(&redis.url())
            .instance(name)
            .secret("a shared secret of the cluster"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_01_is_answered_by_the_clustered_instance_that_did_not_order() {
    const SHARED_DOMAIN: &str = "shared-alpn.acme.test";
    let redis = RedisServer::start().await;
    let backend = backend("s1").start().await;
    // pebble validates at the relay, which sends it to the instance that did not order.
    let relay_port = free_port();
    let pebble = Pebble::start(free_port(), relay_port, None).await;
    let root = pebble.root_pem().await;
    let addrs = Arc::new(Mutex::new(HashMap::new()));
    let relay = Relay::start(relay_port, to_an_instance_not_ordering(redis.url(), addrs.clone())).await;
    let (cache_a, cache_b) = (cache_dir("shared-alpn-a"), cache_dir("shared-alpn-b"));
    // One instance in a process of its own: this process's challenge
    // tables are not the other's, as on two machines.
    let config_b = clustered(config(&pebble, 0, &cache_b, &backend, SHARED_DOMAIN), &redis, "b");
    let b = TetherProcess::start(env!("CARGO_BIN_EXE_tether"), &config_b).await;
    addrs.lock().expect("addresses").insert("b".to_string(), b.addr);
    let config_a = clustered(config(&pebble, 0, &cache_a, &backend, SHARED_DOMAIN), &redis, "a");
    let a = start_tether(&config_a).await;
    addrs.lock().expect("addresses").insert("a".to_string(), a.addr);

    let leaf_a = wait_for_leaf(&pebble, a.addr, &root, SHARED_DOMAIN, None, Duration::from_secs(30)).await;
    let leaf_b = wait_for_leaf(&pebble, b.addr, &root, SHARED_DOMAIN, None, Duration::from_secs(15)).await;
    assert_eq!(leaf_a, leaf_b, "both serve the one certificate ordered");
    assert!(names(&leaf_a).iter().any(|n| n.contains(SHARED_DOMAIN)));
    assert_eq!(pebble.orders(), 1, "validated at the first try: {}", pebble.log_text());
    let targets = relay.targets();
    assert!(!targets.is_empty(), "pebble validated through the relay");
    assert!(
        targets.iter().all(|t| *t == targets[0]),
        "all at one instance: {targets:?}"
    );
    // The answer is withdrawn once the order is validated.
    let answers: Vec<String> = redis.run(redis::cmd("KEYS").arg("*acme:alpn:*")).await;
    assert!(answers.is_empty(), "{answers:?}");
    b.terminate();
    a.stop().await;
    let _ = std::fs::remove_dir_all(cache_a);
    let _ = std::fs::remove_dir_all(cache_b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_01_is_answered_by_the_clustered_instance_that_did_not_order() {
    const SHARED_DOMAIN: &str = "shared-http.acme.test";
    let redis = RedisServer::start().await;
    let backend = backend("s1").start().await;
    let relay_port = free_port();
    let pebble = Pebble::start(relay_port, free_port(), None).await;
    let root = pebble.root_pem().await;
    let addrs = Arc::new(Mutex::new(HashMap::new()));
    let relay = Relay::start(relay_port, to_an_instance_not_ordering(redis.url(), addrs.clone())).await;
    let (cache_a, cache_b) = (cache_dir("shared-http-a"), cache_dir("shared-http-b"));
    let (plain_a, plain_b) = (free_port(), free_port());
    let instance = |cache: &std::path::Path, plain: u16, name: &str| {
        let tls = FrontendTls::acme(
            &[SHARED_DOMAIN],
            &pebble.directory,
            pebble.https_ca.to_str().expect("path"),
            cache.to_str().expect("path"),
        )
        .acme_challenge("http-01");
        let config = Config::new()
            .frontend(
                Frontend::new("secure")
                    .bind("127.0.0.1:0")
                    .default_backend("pool")
                    .tls(tls),
            )
            .frontend(
                Frontend::new("plain")
                    .bind(format!("127.0.0.1:{plain}").as_str())
                    .default_backend("pool")
                    .redirect_https(true),
            )
            .backend(pool().servers([&backend]));
        clustered(config, &redis, name)
    };
    let b = TetherProcess::start(env!("CARGO_BIN_EXE_tether"), &instance(&cache_b, plain_b, "b")).await;
    addrs
        .lock()
        .expect("addresses")
        .insert("b".to_string(), SocketAddr::from(([127, 0, 0, 1], plain_b)));
    let a = start_tether(&instance(&cache_a, plain_a, "a")).await;
    addrs
        .lock()
        .expect("addresses")
        .insert("a".to_string(), SocketAddr::from(([127, 0, 0, 1], plain_a)));

    let leaf_a = wait_for_leaf(&pebble, a.addr, &root, SHARED_DOMAIN, None, Duration::from_secs(30)).await;
    let leaf_b = wait_for_leaf(&pebble, b.addr, &root, SHARED_DOMAIN, None, Duration::from_secs(15)).await;
    assert_eq!(leaf_a, leaf_b, "both serve the one certificate ordered");
    assert_eq!(pebble.orders(), 1, "validated at the first try: {}", pebble.log_text());
    let targets = relay.targets();
    assert!(!targets.is_empty(), "pebble validated through the relay");
    assert!(
        targets.iter().all(|t| *t == targets[0]),
        "all at one instance: {targets:?}"
    );
    let answers: Vec<String> = redis.run(redis::cmd("KEYS").arg("*acme:http:*")).await;
    assert!(answers.is_empty(), "{answers:?}");
    // Other paths of the plain frontends are still redirected.
    let (status, _, _) = get(targets[0], "/.well-known/acme-challenge/unknown").await;
    assert_eq!(status, http::StatusCode::PERMANENT_REDIRECT);
    b.terminate();
    a.stop().await;
    let _ = std::fs::remove_dir_all(cache_a);
    let _ = std::fs::remove_dir_all(cache_b);
}

/// A CA's view of a TLS-ALPN-01 answer: any certificate is taken, to be
/// looked at (webpki, behind rustls' own checks, refuses the critical
/// acmeIdentifier extension; a CA reads it instead).
#[derive(Debug)]
struct TakeAnyCertificate;

impl rustls::client::danger::ServerCertVerifier for TakeAnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        tether::tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The certificate served to a TLS-ALPN-01 validation (ALPN `acme-tls/1`)
/// for `domain`, as a CA sees it, if any.
async fn validation_certificate(addr: SocketAddr, domain: &str) -> Option<CertificateDer<'static>> {
    let mut config = rustls::ClientConfig::builder_with_provider(tether::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(TakeAnyCertificate))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"acme-tls/1".to_vec()];
    let tcp = TcpStream::connect(addr).await.ok()?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(domain.to_string()).expect("name"), tcp)
        .await
        .ok()?;
    tls.get_ref()
        .1
        .peer_certificates()?
        .first()
        .map(|c| c.clone().into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_alpn_01_answer_in_redis_is_served_only_when_signed_by_the_cluster() {
    const SIGNED_DOMAIN: &str = "signed.acme.test";
    const SECRET: &str = "a shared secret of the cluster";
    let redis = RedisServer::start().await;
    let backend = backend("s1").start().await;
    let pebble = Pebble::start(free_port(), free_port(), None).await;
    let cache = cache_dir("signed");
    // The CA's directory is out of reach: this instance orders nothing and
    // has no answer of its own; what it serves comes from Redis.
    let unreachable = format!("https://{}/dir", closed_port().await);
    let tls = FrontendTls::acme(
        &[SIGNED_DOMAIN],
        &unreachable,
        pebble.https_ca.to_str().expect("path"),
        cache.to_str().expect("path"),
    );
    let frontend = Frontend::new("secure")
        .bind("127.0.0.1:0")
        .default_backend("pool")
        .tls(tls);
    let config = clustered(Config::simple(frontend, pool().servers([&backend])), &redis, "a");
    let tether = start_tether(&config).await;
    let key = format!("tether:acme:alpn:{SIGNED_DOMAIN}");
    let key_authorization = "a-token.a-thumbprint";
    assert!(validation_certificate(tether.addr, SIGNED_DOMAIN).await.is_none());

    // Written by someone without the cluster's secret: not served.
    let forged = serde_json::json!({ "key_authorization": key_authorization, "signature": "00".repeat(16) });
    let _: () = redis.run(redis::cmd("SET").arg(&key).arg(forged.to_string())).await;
    assert!(validation_certificate(tether.addr, SIGNED_DOMAIN).await.is_none());

    // Signed with it: served, certifying the key authorization's SHA-256 (RFC 8737 §3).
    let trust = tether::cluster::trust::Trust::new(Some(SECRET));
    let signature = trust.mac(&[b"acme-challenge", key.as_bytes(), key_authorization.as_bytes()]);
    let signed = serde_json::json!({ "key_authorization": key_authorization, "signature": signature });
    let _: () = redis.run(redis::cmd("SET").arg(&key).arg(signed.to_string())).await;
    let leaf = validation_certificate(tether.addr, SIGNED_DOMAIN)
        .await
        .expect("the signed answer is served");
    let (_, parsed) = x509_parser::parse_x509_certificate(&leaf).expect("leaf X.509");
    let acme_identifier = parsed
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
        .expect("acmeIdentifier extension");
    assert!(acme_identifier.critical);
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key_authorization.as_bytes());
    assert!(acme_identifier.value.ends_with(&digest), "{:?}", acme_identifier.value);
    assert!(names(&leaf).iter().any(|n| n.contains(SIGNED_DOMAIN)));
    // Only the frontend's own names are looked up.
    let other = "tether:acme:alpn:other.acme.test";
    let _: () = redis.run(redis::cmd("SET").arg(other).arg(signed.to_string())).await;
    assert!(validation_certificate(tether.addr, "other.acme.test").await.is_none());
    tether.stop().await;
    let _ = std::fs::remove_dir_all(cache);
}

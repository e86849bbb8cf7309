//! Automatic certificates against a real ACME server: pebble (Let's
//! Encrypt's test CA) with pebble-challtestsrv as its DNS, validating
//! TLS-ALPN-01 and HTTP-01 on tether's own ports. A client then gets a
//! certificate for the domain that chains to pebble's root; the cache is
//! reused across a restart without a new order; a short-lived certificate
//! is renewed while the old one keeps being served.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
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
    let with_acme = plain.frontend(
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
    tether.stop().await;
    let _ = std::fs::remove_dir_all(cache);
}

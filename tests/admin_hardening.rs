//! The admin listener against hostile clients: a web page reaching it by
//! DNS rebinding, a flood of wrong passwords, framing of the stats page,
//! passwords read off the network (TLS), session ids and log lines.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls_pki_types::ServerName;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tether_test_support::*;
use tokio::net::TcpStream;

const USER: &str = "admin";
const PASSWORD: &str = "correct horse";

fn hash() -> String {
    tether::admin::auth::hash_password(PASSWORD).expect("hash")
}

fn basic(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

/// One request on a fresh connection, with the `Host` (and `Origin`) given.
async fn call_as(
    addr: SocketAddr,
    method: Method,
    path: &str,
    host: &str,
    origin: Option<&str>,
    auth: Option<&str>,
) -> (StatusCode, HeaderMap, Bytes) {
    let mut client = http_client(addr).await;
    let mut builder = Request::builder().method(method).uri(path).header(header::HOST, host);
    if let Some(origin) = origin {
        builder = builder.header(header::ORIGIN, origin);
    }
    if let Some(auth) = auth {
        builder = builder.header(header::AUTHORIZATION, auth);
    }
    let body = Full::new(Bytes::new()).map_err(|never| match never {}).boxed();
    send(&mut client, builder.body(body).unwrap()).await
}

async fn call(addr: SocketAddr, method: Method, path: &str, auth: Option<&str>) -> (StatusCode, HeaderMap, Bytes) {
    call_as(addr, method, path, &addr.to_string(), None, auth).await
}

fn json(body: &Bytes) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|_| panic!("not JSON: {body:?}"))
}

fn state_of(servers: &Value, name: &str) -> String {
    servers["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .find(|s| s["name"] == name)
        .map(|s| s["state"].as_str().unwrap_or_default().to_string())
        .unwrap_or_else(|| panic!("no {name} in {servers}"))
}

/// The value of an unlabelled series in the exposition.
fn series(exposition: &str, name: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn a_page_reached_by_dns_rebinding_cannot_drive_the_admin_listener() {
    let s1 = backend("s1").start().await;
    // No users: the loopback listener asks no login, which is what rebinding exploits.
    let admin = Admin::bind("127.0.0.1:0");
    let tether = start_tether(&Config::over(pool().server(&s1)).admin(admin)).await;
    let addr = tether.handle.admin_addr().expect("admin listener");
    let port = addr.port();
    let evil = format!("rebind.attacker.example:{port}");
    let evil_origin = format!("http://{evil}");
    // The attacker's page POSTs to its own origin, whose name now resolves to 127.0.0.1.
    let (status, headers, body) = call_as(
        addr,
        Method::POST,
        "/api/v1/backends/pool/servers/s1/maint",
        &evil,
        Some(&evil_origin),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{body:?}");
    assert!(
        json(&body)["error"].as_str().unwrap().contains("[admin] hosts"),
        "{body:?}"
    );
    assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
    let (status, _, _) = call_as(addr, Method::GET, "/api/v1/servers", &evil, None, None).await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "reads are refused too");
    let (_, _, body) = call(addr, Method::GET, "/api/v1/servers", None).await;
    assert_eq!(state_of(&json(&body), "s1"), "up", "nothing changed");
    // Its own names are served: the address, localhost, the names listed in `hosts`.
    for host in [
        addr.to_string(),
        "127.0.0.1".to_string(),
        format!("localhost:{port}"),
        "localhost".to_string(),
    ] {
        let (status, _, _) = call_as(addr, Method::GET, "/api/v1/servers", &host, None, None).await;
        assert_eq!(status, StatusCode::OK, "Host: {host}");
    }
    // The Origin check still stands for a name that is served.
    let (status, _, _) = call_as(
        addr,
        Method::POST,
        "/api/v1/backends/pool/servers/s1/maint",
        &format!("localhost:{port}"),
        Some("http://evil.example"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    tether.stop().await;
}

#[tokio::test]
async fn names_listed_in_hosts_are_served() {
    let s1 = backend("s1").start().await;
    let admin = Admin::bind("127.0.0.1:0").hosts(&["tether.internal"]);
    let tether = start_tether(&Config::over(pool().server(&s1)).admin(admin)).await;
    let addr = tether.handle.admin_addr().expect("admin listener");
    for host in [
        format!("Tether.Internal:{}", addr.port()),
        "tether.internal.".to_string(),
    ] {
        let (status, _, _) = call_as(addr, Method::GET, "/api/v1/servers", &host, None, None).await;
        assert_eq!(status, StatusCode::OK, "Host: {host}");
    }
    let (status, _, _) = call_as(addr, Method::GET, "/api/v1/servers", "other.internal", None, None).await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    let bad = Config::over(pool().server(&s1))
        .admin(Admin::bind("127.0.0.1:0").hosts(&["http://tether.internal:9000"]))
        .toml();
    let message = tether::config::parse(&bad, "test.toml")
        .expect_err("a URL is not a host")
        .to_string();
    assert!(message.contains("without scheme or port"), "{message}");
    tether.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_wrong_passwords_run_at_most_the_limit_of_password_checks() {
    let s1 = backend("s1").start().await;
    let admin = Admin::bind("127.0.0.1:0")
        .user(USER, &hash())
        .metrics_allow(&["127.0.0.1/32"]);
    let tether = start_tether(&Config::over(pool().server(&s1)).admin(admin)).await;
    let addr = tether.handle.admin_addr().expect("admin listener");
    const ATTEMPTS: usize = 120;
    let mut clients = Vec::new();
    for _ in 0..ATTEMPTS {
        clients.push(http_client(addr).await);
    }
    let wrong = basic(USER, "guess");
    let attempts = clients.into_iter().map(|mut client| {
        let wrong = wrong.clone();
        async move {
            let request = Request::get("/api/v1/servers")
                .header(header::HOST, addr.to_string())
                .header(header::AUTHORIZATION, wrong)
                .body(Full::new(Bytes::new()).map_err(|never| match never {}).boxed())
                .unwrap();
            let (status, headers, _) = send(&mut client, request).await;
            (status, headers.get(header::RETRY_AFTER).cloned())
        }
    });
    let results = futures_util::future::join_all(attempts).await;
    let refused = results.iter().filter(|(s, _)| *s == StatusCode::UNAUTHORIZED).count();
    let limited: Vec<_> = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    let limit = tether::admin::auth::MAX_FAILURES as usize;
    assert!(refused <= limit, "{refused} wrong passwords were checked and refused");
    assert_eq!(refused + limited.len(), ATTEMPTS, "{results:?}");
    assert!(
        limited.iter().all(|(_, retry)| retry.is_some()),
        "every 429 says when to retry"
    );
    let (_, _, metrics) = call(addr, Method::GET, "/metrics", None).await;
    let text = String::from_utf8_lossy(&metrics).to_string();
    let checks = series(&text, "tether_admin_password_checks_total").expect("the checks counter");
    assert!(checks <= limit as f64, "{checks} argon2 checks for one address");
    assert!(checks >= 1.0, "the first attempts are checked");
    // Blocked now: even the right password waits for the window.
    let (status, headers, _) = call(addr, Method::GET, "/api/v1/servers", Some(&basic(USER, PASSWORD))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(headers.contains_key(header::RETRY_AFTER));
    tether.stop().await;
}

#[tokio::test]
async fn an_unknown_user_costs_a_password_check_like_a_known_one() {
    let s1 = backend("s1").start().await;
    let admin = Admin::bind("127.0.0.1:0")
        .user(USER, &hash())
        .metrics_allow(&["127.0.0.1/32"]);
    let tether = start_tether(&Config::over(pool().server(&s1)).admin(admin)).await;
    let addr = tether.handle.admin_addr().expect("admin listener");
    let checks = || async {
        let (_, _, metrics) = call(addr, Method::GET, "/metrics", None).await;
        series(&String::from_utf8_lossy(&metrics), "tether_admin_password_checks_total").expect("the checks counter")
    };
    let before = checks().await;
    let (status, _, _) = call(addr, Method::GET, "/api/v1/servers", Some(&basic("root", PASSWORD))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        checks().await,
        before + 1.0,
        "the unknown name was checked against a hash"
    );
    let (status, _, _) = call(addr, Method::GET, "/api/v1/servers", Some(&basic(USER, "wrong"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(checks().await, before + 2.0);
    // A right login is checked once, then remembered; it gives its attempt back.
    for _ in 0..3 {
        let (status, _, _) = call(addr, Method::GET, "/api/v1/servers", Some(&basic(USER, PASSWORD))).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(checks().await, before + 3.0);
    tether.stop().await;
}

/// The headers every admin response carries.
fn assert_hardened(headers: &HeaderMap, what: &str) {
    assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY", "{what}");
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{what}");
    assert_eq!(headers[header::REFERRER_POLICY], "no-referrer", "{what}");
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
}

#[tokio::test]
async fn every_admin_response_refuses_framing_sniffing_and_referrers() {
    let s1 = backend("s1").start().await;
    let admin = Admin::bind("127.0.0.1:0").user(USER, &hash());
    let tether = start_tether(&Config::over(pool().server(&s1)).admin(admin)).await;
    let addr = tether.handle.admin_addr().expect("admin listener");
    let auth = basic(USER, PASSWORD);
    let cases: Vec<(&str, Method, &str, Option<&str>, StatusCode)> = vec![
        ("page", Method::GET, "/", Some(&auth), StatusCode::OK),
        ("api", Method::GET, "/api/v1/backends", Some(&auth), StatusCode::OK),
        ("metrics", Method::GET, "/metrics", Some(&auth), StatusCode::OK),
        ("no login", Method::GET, "/", None, StatusCode::UNAUTHORIZED),
        (
            "metrics, no login",
            Method::GET,
            "/metrics",
            None,
            StatusCode::UNAUTHORIZED,
        ),
        ("unknown path", Method::GET, "/nope", None, StatusCode::NOT_FOUND),
        (
            "wrong method",
            Method::GET,
            "/api/v1/reload",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ];
    for (what, method, path, auth, expected) in cases {
        let (status, headers, _) = call(addr, method, path, auth).await;
        assert_eq!(status, expected, "{what}");
        assert_hardened(&headers, what);
    }
    let (status, headers, _) = call_as(addr, Method::GET, "/", "elsewhere.example", None, None).await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    assert_hardened(&headers, "wrong host");
    // The page's own script runs: its policy names the script's hash.
    let (_, headers, body) = call(addr, Method::GET, "/", Some(&auth)).await;
    let page = String::from_utf8_lossy(&body).to_string();
    let script = page
        .split_once("<script>")
        .and_then(|(_, rest)| rest.split_once("</script>"))
        .map(|(inside, _)| inside)
        .expect("the page has its script");
    let digest = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(script.as_bytes()));
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains(&format!("'sha256-{digest}'")), "{csp}");
    assert!(
        !page.contains("style=\""),
        "inline style attributes would be blocked by the policy"
    );
    // Failed logins up to the limit, then 429: hardened too.
    for _ in 0..tether::admin::auth::MAX_FAILURES {
        call(addr, Method::GET, "/api/v1/servers", Some(&basic(USER, "nope"))).await;
    }
    let (status, headers, _) = call(addr, Method::GET, "/api/v1/servers", Some(&basic(USER, "nope"))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_hardened(&headers, "429");
    tether.stop().await;
}

/// A test CA and a leaf for 127.0.0.1 and `admin.test`, as PEM files in a fresh directory.
struct Certificates {
    dir: std::path::PathBuf,
}

impl Certificates {
    fn new(tag: &str) -> Certificates {
        let dir = std::env::temp_dir().join(format!("tether-admin-tls-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut params = CertificateParams::new(Vec::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().expect("ca key");
        let ca = params.self_signed(&ca_key).expect("ca cert");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write ca");
        let issuer = Issuer::new(params, ca_key);
        let leaf_params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "admin.test".to_string()]).expect("leaf params");
        let key = KeyPair::generate().expect("leaf key");
        let leaf = leaf_params.signed_by(&key, &issuer).expect("leaf cert");
        std::fs::write(dir.join("admin.pem"), leaf.pem()).expect("write cert");
        std::fs::write(dir.join("admin.key"), key.serialize_pem()).expect("write key");
        Certificates { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().expect("UTF-8 path").to_string()
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn the_admin_listener_speaks_tls_with_the_frontends_certificate_keys() {
    let certs = Certificates::new("serve");
    let s1 = backend("s1").start().await;
    let admin = Admin::bind("127.0.0.1:0")
        .user(USER, &hash())
        .tls(FrontendTls::new(&certs.path("admin.pem"), &certs.path("admin.key")));
    let tether = start_tether(&Config::over(pool().server(&s1)).admin(admin)).await;
    let addr = tether.handle.admin_addr().expect("admin listener");
    let config: Arc<rustls::ClientConfig> =
        tether::tls::client::client_config(Some(std::path::Path::new(&certs.path("ca.pem"))), true).expect("client");
    let stream = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("name").to_owned();
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(config).connect(name, stream),
    )
    .await
    .expect("handshake in time")
    .expect("a certificate the client verifies");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP over TLS");
    tokio::spawn(connection);
    let request = Request::get("/api/v1/servers")
        .header(header::HOST, addr.to_string())
        .header(header::AUTHORIZATION, basic(USER, PASSWORD))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(state_of(&json(&body), "s1"), "up");
    // Plain HTTP on the TLS port gets no answer in clear.
    let answer = raw_exchange(addr, b"GET /api/v1/servers HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
    assert!(!answer.starts_with("HTTP/1.1 "), "{answer:?}");
    tether.stop().await;
}

#[test]
fn an_admin_certificate_that_cannot_be_read_names_the_key_and_the_fix() {
    let text = Config::over(pool().server(Server::new("s1", "127.0.0.1:8200")))
        .admin(
            Admin::bind("127.0.0.1:0")
                .user(USER, &hash())
                .tls(FrontendTls::new("/nonexistent/admin.pem", "/nonexistent/admin.key")),
        )
        .toml();
    let message = tether::config::parse(&text, "test.toml")
        .expect_err("a missing certificate")
        .to_string();
    assert!(message.contains("[admin], tls `cert`"), "{message}");
    assert!(message.contains("fix the file or the path"), "{message}");
}

/// Runs `test` on a runtime of this thread, with the logs of this thread
/// captured; `test` gets the capture so far, to retry an action whose line
/// a concurrently running test may have kept from being captured (tracing
/// caches which call sites are enabled process-wide).
fn with_logs<F: std::future::Future<Output = ()>>(test: impl FnOnce(Captured) -> F) -> String {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _this_thread = tracing_subscriber::util::SubscriberInitExt::set_default(subscriber);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(test(captured.clone()));
    captured.text()
}

#[test]
fn a_user_name_nobody_verified_is_logged_escaped_and_cut() {
    let log = with_logs(|captured| async move {
        let s1 = backend("s1").start().await;
        let admin = Admin::bind("127.0.0.1:0").user(USER, &hash());
        let tether = start_tether(&Config::over(pool().server(&s1)).admin(admin)).await;
        let addr = tether.handle.admin_addr().expect("admin listener");
        let forged = format!("x\n2026-12-02T00.00.00Z  INFO forged line\u{1b}[2J{}", "y".repeat(500));
        for _ in 0..3 {
            let (status, _, _) = call(addr, Method::GET, "/api/v1/servers", Some(&basic(&forged, "pw"))).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            if captured.text().contains("admin login failed") {
                break;
            }
        }
        tether.stop().await;
    });
    let line = log
        .lines()
        .find(|l| l.contains("admin login failed"))
        .unwrap_or_else(|| panic!("no failed-login line in {log}"));
    assert!(
        line.contains(r"x\n2026-12-02T00.00.00Z  INFO forged line\u{1b}[2J"),
        "{line}"
    );
    assert!(!log.contains("\nINFO forged") && !log.contains('\u{1b}'), "{log}");
    assert!(!line.contains(&"y".repeat(100)), "the name is cut: {line}");
}

/// The logs of starting (up to three times, until `wanted` shows) and stopping an instance with `admin`.
fn start_logs(admin: Admin, wanted: &'static str) -> String {
    with_logs(|captured| async move {
        let s1 = backend("s1").start().await;
        for _ in 0..3 {
            let tether = start_tether(&Config::over(pool().server(&s1)).admin(admin.clone())).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            tether.stop().await;
            if captured.text().contains(wanted) {
                break;
            }
        }
    })
}

#[test]
fn users_on_a_plain_http_admin_off_loopback_are_warned_about_at_start() {
    let warning = "as plain HTTP off loopback";
    let log = start_logs(Admin::bind("0.0.0.0:0").user(USER, &hash()), warning);
    assert!(log.contains(warning), "{log}");
    let quiet = start_logs(Admin::bind("127.0.0.1:0").user(USER, &hash()), "admin listening");
    assert!(quiet.contains("admin listening"), "{quiet}");
    assert!(!quiet.contains(warning), "{quiet}");
}

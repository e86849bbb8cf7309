//! Pebble, Let's Encrypt's test CA, and pebble-challtestsrv as its DNS
//! (every name resolves to 127.0.0.1), started on free ports with an HTTPS
//! certificate made at test time.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A running pebble and its DNS; both killed on drop.
pub struct Pebble {
    /// The ACME directory URL.
    pub directory: String,
    /// The PEM CA of pebble's own HTTPS (tether's `directory_ca`).
    pub https_ca: PathBuf,
    management: SocketAddr,
    dir: PathBuf,
    log: PathBuf,
    pebble: Child,
    dns: Child,
}

/// A free TCP port on 127.0.0.1 (bound, then released), never one this
/// process was given before: the kernel readily hands a just-released port
/// out again, and two of pebble's four ports once came out equal (pebble
/// then failed to bind its ACME port).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        if GIVEN.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

impl Pebble {
    /// Starts pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on
    /// `tls_port` (tether's frontends), issuing certificates valid for
    /// `validity` seconds (pebble's `certificateValidityPeriod`; its default
    /// of five years when `None`).
    pub async fn start(http_port: u16, tls_port: u16, validity: Option<u64>) -> Pebble {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tether-pebble-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        // pebble's HTTPS: a leaf for 127.0.0.1 signed by a CA made here.
        let mut params = CertificateParams::new(Vec::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().expect("ca key");
        let ca = params.self_signed(&ca_key).expect("ca cert");
        std::fs::write(dir.join("https-ca.pem"), ca.pem()).expect("write ca");
        let issuer = Issuer::new(params, ca_key);
        let leaf_params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("leaf params");
        let key = KeyPair::generate().expect("leaf key");
        let leaf = leaf_params.signed_by(&key, &issuer).expect("leaf cert");
        std::fs::write(dir.join("https.pem"), leaf.pem()).expect("write cert");
        std::fs::write(dir.join("https.key"), key.serialize_pem()).expect("write key");

        let (acme_port, management_port, dns_port, dns_management) =
            (free_port(), free_port(), free_port(), free_port());
        let mut pebble = serde_json::json!({
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{management_port}"),
            "certificate": path_str(&dir.join("https.pem")),
            "privateKey": path_str(&dir.join("https.key")),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        });
        if let Some(seconds) = validity {
            pebble["certificateValidityPeriod"] = serde_json::json!(seconds);
        }
        let config = dir.join("pebble.json");
        std::fs::write(&config, serde_json::json!({ "pebble": pebble }).to_string()).expect("write config");

        let dns_log = std::fs::File::create(dir.join("dns.log")).expect("dns log");
        let dns = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{dns_management}")])
            .stdout(dns_log.try_clone().expect("log"))
            .stderr(dns_log)
            .spawn()
            .expect("pebble-challtestsrv (apt-get install pebble)");
        let log = dir.join("pebble.log");
        let out = std::fs::File::create(&log).expect("pebble log");
        let pebble = Command::new("pebble")
            .args([
                "-config",
                path_str(&config),
                "-dnsserver",
                &format!("127.0.0.1:{dns_port}"),
            ])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            // Every order validates anew, so a renewal is a real validation.
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("pebble (apt-get install pebble)");
        let started = Pebble {
            directory: format!("https://127.0.0.1:{acme_port}/dir"),
            https_ca: dir.join("https-ca.pem"),
            management: SocketAddr::from(([127, 0, 0, 1], management_port)),
            dir,
            log,
            pebble,
            dns,
        };
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", acme_port)).await.is_ok()
                && TcpStream::connect(("127.0.0.1", management_port)).await.is_ok()
            {
                return started;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("pebble did not start: {}", started.log_text());
    }

    /// Pebble's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many orders pebble has received (its "Added order" log lines).
    pub fn orders(&self) -> usize {
        self.log_text().matches("Added order").count()
    }

    /// How many certificates pebble has issued.
    pub fn issued(&self) -> usize {
        self.log_text().matches("Issued certificate serial").count()
    }

    /// The root that pebble's issued chains end at (`/roots/0` of its management API), PEM.
    pub async fn root_pem(&self) -> String {
        let config = tether::tls::client::client_config(Some(&self.https_ca), true).expect("client config");
        let connector = tokio_rustls::TlsConnector::from(config);
        let tcp = TcpStream::connect(self.management).await.expect("management");
        let name = rustls_pki_types::ServerName::IpAddress(self.management.ip().into());
        let mut tls = connector.connect(name, tcp).await.expect("management TLS");
        tls.write_all(b"GET /roots/0 HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .expect("request");
        let mut response = Vec::new();
        let _ = tls.read_to_end(&mut response).await;
        let text = String::from_utf8_lossy(&response);
        let body = text.split("\r\n\r\n").nth(1).expect("response body");
        assert!(body.contains("BEGIN CERTIFICATE"), "roots/0: {text}");
        body.to_string()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.pebble.kill();
        let _ = self.dns.kill();
        let _ = self.pebble.wait();
        let _ = self.dns.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

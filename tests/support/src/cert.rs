//! Certificates made at test time.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::FrontendTls;

/// A self-signed certificate for `tether.test`, as PEM files removed on drop.
pub struct SelfSigned {
    dir: PathBuf,
}

impl Default for SelfSigned {
    fn default() -> Self {
        Self::new()
    }
}

impl SelfSigned {
    /// Makes the certificate and its key in a fresh temporary directory.
    pub fn new() -> SelfSigned {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tether-h2-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let cert = rcgen::generate_simple_self_signed(vec!["tether.test".to_string()]).expect("certificate");
        std::fs::write(dir.join("site.pem"), cert.cert.pem()).expect("write cert");
        std::fs::write(dir.join("site.key"), cert.signing_key.serialize_pem()).expect("write key");
        SelfSigned { dir }
    }

    /// A frontend `tls` with this certificate.
    pub fn tls(&self) -> FrontendTls {
        let path = |name: &str| self.dir.join(name).to_str().expect("UTF-8 path").to_string();
        FrontendTls::new(&path("site.pem"), &path("site.key"))
    }
}

impl Drop for SelfSigned {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

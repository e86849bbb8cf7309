//! The cache directory: the ACME account's credentials (one file per
//! directory URL) and each certificate with its key, written 0600 in a 0700
//! directory, so a restart serves the certificate it has instead of ordering.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::AcmeError;

/// A certificate chain and its private key, as PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCertificate {
    /// The chain, leaf first.
    pub chain_pem: String,
    /// The leaf's private key.
    pub key_pem: String,
}

/// The account file for `directory` (a hash of the URL: one account per CA).
pub fn account_path(cache: &Path, directory: &str) -> PathBuf {
    cache.join(format!("account-{}.json", short_hash(directory)))
}

/// The certificate file for `domains` (named after the first, with a hash
/// of the whole list so a changed list orders anew).
pub fn certificate_path(cache: &Path, domains: &[String]) -> PathBuf {
    let first = domains.first().map_or("none", String::as_str);
    cache.join(format!("{first}-{}.pem", short_hash(&domains.join(","))))
}

fn short_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Reads a file of the cache, `None` when it is not there.
pub fn read(path: &Path) -> Result<Option<String>, AcmeError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AcmeError::Cache {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes `text` to `path` with mode 0600 (through a temporary file and a
/// rename, so a crash never leaves half a key), creating the directory 0700.
pub fn write(path: &Path, text: &str) -> Result<(), AcmeError> {
    let fail = |source| AcmeError::Cache {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(fail)?;
    }
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(fail)?;
    file.write_all(text.as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&temporary, path).map_err(fail)
}

/// The certificate and key stored at `path` (chain then key, in one file).
pub fn read_certificate(path: &Path) -> Result<Option<StoredCertificate>, AcmeError> {
    let Some(text) = read(path)? else {
        return Ok(None);
    };
    let Some(at) = text.find("-----BEGIN PRIVATE KEY-----") else {
        return Ok(None);
    };
    Ok(Some(StoredCertificate {
        chain_pem: text[..at].to_string(),
        key_pem: text[at..].to_string(),
    }))
}

/// Stores a certificate and its key at `path`, 0600.
pub fn write_certificate(path: &Path, stored: &StoredCertificate) -> Result<(), AcmeError> {
    let mut text = stored.chain_pem.clone();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&stored.key_pem);
    write(path, &text)
}

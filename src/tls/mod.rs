//! TLS with rustls: the server side of TLS frontends (certificates from PEM
//! files, chosen by SNI; `server`), the client side toward TLS servers
//! (`client`), and the stream type that carries either plain TCP or TLS
//! through the proxy without a box per message (`MaybeTls`).
//!
//! Only TLS 1.2 and 1.3 are spoken, with the `ring` provider. Frontends
//! offer ALPN `h2` and `http/1.1` (`h2` only with `http2` on); toward
//! servers tether offers `http/1.1` only.
//!
//! Certificates are read when the configuration is read (`tether check`,
//! start, reload), so a bad file fails there with the config key's line and
//! the running configuration stays; a reload builds new rustls configs and
//! new connections use them, connections already open keep theirs.

pub mod acme;
pub mod client;
pub mod server;

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use client::UpstreamTls;
pub use server::ServerTls;

/// The ALPN name of HTTP/1.1 (RFC 7301), the only protocol tether speaks to servers.
pub const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// The ALPN name of HTTP/2 over TLS (RFC 9113 §3.2), offered to clients
/// of frontends with `http2` on.
pub const ALPN_H2: &[u8] = b"h2";

/// The TLS versions tether speaks: 1.3 and 1.2, never older ones.
pub static VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The cryptography provider (ring: builds without cmake or nasm).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why a certificate, key or CA file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The file holds no PEM certificate.
    #[error("{path} holds no PEM certificate (`-----BEGIN CERTIFICATE-----`): give the certificate chain, leaf first")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The file is not valid PEM.
    #[error("{path} is not valid PEM: {cause}")]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        cause: String,
    },
    /// The file holds no private key.
    #[error("{path} holds no PEM private key (PKCS#8 `BEGIN PRIVATE KEY`, `BEGIN RSA PRIVATE KEY` or `BEGIN EC PRIVATE KEY`)")]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The key is of a kind rustls cannot sign with, or does not belong to the certificate.
    #[error("the key in {key} cannot be used with the certificate in {cert}: {cause}")]
    Key {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        cause: rustls::Error,
    },
    /// A certificate could not be parsed as X.509.
    #[error("the certificate in {path} cannot be parsed: {cause}")]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        cause: String,
    },
    /// A rustls configuration could not be built.
    #[error("TLS settings refused: {0}")]
    Rustls(#[from] rustls::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads every PEM certificate of `path` (a chain, leaf first, or a CA bundle).
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::BadPem {
            path: path.to_path_buf(),
            cause: err.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Reads the first PEM private key of `path`.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|err| match err {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_path_buf(),
        },
        other => TlsError::BadPem {
            path: path.to_path_buf(),
            cause: other.to_string(),
        },
    })
}

/// A stream that is plain TCP or TLS over it. One enum instead of a boxed
/// trait object, so the plain path costs a branch per read or write, no
/// allocation; the TLS state is boxed once per connection (it is large).
#[derive(Debug)]
pub enum MaybeTls<P, T> {
    /// Plain bytes.
    Plain(P),
    /// TLS over the plain stream.
    Tls(Box<T>),
}

impl<P, T> MaybeTls<P, T> {
    /// Whether this is a TLS stream.
    pub fn is_tls(&self) -> bool {
        matches!(self, MaybeTls::Tls(_))
    }
}

impl<P: AsyncRead + Unpin, T: AsyncRead + Unpin> AsyncRead for MaybeTls<P, T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl<P: AsyncWrite + Unpin, T: AsyncWrite + Unpin> AsyncWrite for MaybeTls<P, T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// A client connection as the proxy sees it: plain TCP or TLS terminated by tether.
pub type ClientStream = MaybeTls<tokio::net::TcpStream, tokio_rustls::server::TlsStream<tokio::net::TcpStream>>;

/// A server connection: plain TCP or TLS started by tether.
pub type UpstreamStream = MaybeTls<tokio::net::TcpStream, tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

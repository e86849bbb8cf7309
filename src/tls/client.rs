//! The client side toward TLS servers (`tls = true` on a backend or server):
//! which CAs are trusted, whether the certificate is verified, and the
//! name sent as SNI and checked in the certificate.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;

use super::{load_certificates, provider, TlsError, UpstreamStream, ALPN_HTTP_1_1, VERSIONS};

/// How tether speaks TLS to one server.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// Trusted roots, verification, ALPN; shared by the servers of a backend.
    pub config: Arc<ClientConfig>,
    /// Sent as SNI and, when verifying, required in the server's certificate.
    pub server_name: ServerName<'static>,
}

impl UpstreamTls {
    /// `stream` as the proxy uses it: plain without `tls`, else with TLS
    /// started on it within `timeout` (the pool and the health checks share this).
    pub async fn maybe_start(
        tls: Option<&UpstreamTls>,
        stream: TcpStream,
        timeout: Duration,
    ) -> std::io::Result<UpstreamStream> {
        match tls {
            None => Ok(UpstreamStream::Plain(stream)),
            Some(tls) => tls.connect(stream, timeout).await,
        }
    }

    /// Starts TLS on `stream` within `timeout`.
    pub async fn connect(&self, stream: TcpStream, timeout: Duration) -> std::io::Result<UpstreamStream> {
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        match tokio::time::timeout(timeout, connector.connect(self.server_name.clone(), stream)).await {
            Ok(Ok(tls)) => Ok(UpstreamStream::Tls(Box::new(tls))),
            Ok(Err(err)) => Err(std::io::Error::new(err.kind(), format!("TLS handshake failed: {err}"))),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("TLS handshake timed out after {timeout:?}"),
            )),
        }
    }
}

/// Builds a client configuration trusting the CAs in `ca` (a PEM bundle), or
/// the Mozilla roots (webpki-roots) when absent; `verify = false` accepts any
/// certificate (the handshake signature is still checked).
pub fn client_config(ca: Option<&Path>, verify: bool) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider()).with_protocol_versions(VERSIONS)?;
    let mut config = if verify {
        let mut roots = RootCertStore::empty();
        match ca {
            Some(path) => {
                for cert in load_certificates(path)? {
                    roots.add(cert).map_err(|err| TlsError::BadCertificate {
                        path: path.to_path_buf(),
                        cause: err.to_string(),
                    })?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())))
            .with_no_client_auth()
    };
    config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
    Ok(Arc::new(config))
}

/// `verify = false`: any certificate is accepted (encryption without
/// authentication, for servers with self-signed certificates on a trusted
/// network); the handshake signatures are still verified.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

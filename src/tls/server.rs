//! The server side of a TLS frontend: its certificates, chosen by the name
//! the client asks for (SNI), in one rustls `ServerConfig`.

use std::path::Path;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::{DnsName, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::acme::{
    alpn_challenge, wants_acme_tls, AcmeResolver, CertSlot, ClusterAnswers, FixedResolver, ALPN_ACME_TLS,
};
use super::{load_certificates, load_key, provider, TlsError, ALPN_H2, ALPN_HTTP_1_1, VERSIONS};

/// A TLS frontend's settings, built once per configuration load and shared
/// by every connection accepted under it.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// What each accepted connection's handshake uses.
    pub config: Arc<ServerConfig>,
    /// With automatic certificates: the slot the ACME task fills, and the
    /// configuration of TLS-ALPN-01 handshakes (ALPN `acme-tls/1` only, so
    /// ordinary clients are never offered it).
    pub acme: Option<AcmeTls>,
}

/// The ACME side of a TLS frontend.
#[derive(Debug, Clone)]
pub struct AcmeTls {
    /// The certificate served now, swapped by the ACME task.
    pub slot: Arc<CertSlot>,
    /// The domains the certificate is for, in config order (for `/metrics`).
    pub domains: Arc<[String]>,
    /// Handshakes that offer `acme-tls/1` use this configuration.
    challenge: Arc<ServerConfig>,
}

/// How an accepted TLS handshake ended.
pub enum Accepted<IO> {
    /// An ordinary connection, ready for HTTP.
    Connection(Box<tokio_rustls::server::TlsStream<IO>>),
    /// A TLS-ALPN-01 validation handshake, answered and closed (RFC 8737 §3).
    ChallengeAnswered,
}

impl ServerTls {
    /// Reads each `(certificate chain, key)` pair of files and builds the
    /// frontend's configuration; the first pair is the default certificate.
    /// It offers ALPN `http/1.1` only.
    pub fn load(pairs: &[(&Path, &Path)]) -> Result<ServerTls, TlsError> {
        let keys = pairs
            .iter()
            .map(|(cert, key)| load_pair(cert, key).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_keys(keys, false)
    }

    /// Builds the configuration from certificates already loaded (first:
    /// the default); with `http2` it offers ALPN `h2` before `http/1.1`.
    pub fn from_keys(keys: Vec<Arc<CertifiedKey>>, http2: bool) -> Result<ServerTls, TlsError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SniResolver { keys }));
        config.alpn_protocols = match http2 {
            true => vec![ALPN_H2.to_vec(), ALPN_HTTP_1_1.to_vec()],
            false => vec![ALPN_HTTP_1_1.to_vec()],
        };
        Ok(ServerTls {
            config: Arc::new(config),
            acme: None,
        })
    }

    /// A frontend whose certificate comes from ACME: served from `slot`
    /// (swapped without a reload), with TLS-ALPN-01 challenges answered for
    /// handshakes that offer `acme-tls/1`.
    pub fn with_acme(slot: Arc<CertSlot>, domains: Vec<String>, http2: bool) -> Result<ServerTls, TlsError> {
        let resolver = Arc::new(AcmeResolver { slot: slot.clone() });
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = match http2 {
            true => vec![ALPN_H2.to_vec(), ALPN_HTTP_1_1.to_vec()],
            false => vec![ALPN_HTTP_1_1.to_vec()],
        };
        let challenge = challenge_config(resolver)?;
        Ok(ServerTls {
            config: Arc::new(config),
            acme: Some(AcmeTls {
                slot,
                domains: domains.into(),
                challenge,
            }),
        })
    }

    /// Runs the server side of a handshake on `io`: an ACME frontend first
    /// reads the ClientHello and answers a TLS-ALPN-01 validation with its
    /// own configuration (the answer of this process's order, else, for one
    /// of the frontend's names, the one `answers` has from the cluster's
    /// order); every other handshake uses `config`, with no look-up.
    pub async fn accept<IO>(&self, io: IO, answers: Option<&dyn ClusterAnswers>) -> std::io::Result<Accepted<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let Some(acme) = &self.acme else {
            return self
                .acceptor()
                .accept(io)
                .await
                .map(|tls| Accepted::Connection(Box::new(tls)));
        };
        let start = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io).await?;
        let hello = start.client_hello();
        if wants_acme_tls(&hello) {
            let name = hello.server_name().map(str::to_ascii_lowercase);
            let config = match (name, answers) {
                (Some(name), Some(answers)) if acme.asks_cluster(&name) => {
                    match answers.alpn_certificate(&name).await {
                        Some(key) => challenge_config(Arc::new(FixedResolver(key))).map_err(std::io::Error::other)?,
                        None => acme.challenge.clone(),
                    }
                }
                _ => acme.challenge.clone(),
            };
            let mut tls = start.into_stream(config).await?;
            let _ = tls.shutdown().await;
            return Ok(Accepted::ChallengeAnswered);
        }
        start
            .into_stream(self.config.clone())
            .await
            .map(|tls| Accepted::Connection(Box::new(tls)))
    }

    /// An acceptor for one connection's handshake.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }
}

impl AcmeTls {
    /// Whether a TLS-ALPN-01 validation for `name` (lower case) is answered
    /// from the cluster: this process has no answer, and it is one of this
    /// frontend's names (so no other name costs a look-up).
    fn asks_cluster(&self, name: &str) -> bool {
        alpn_challenge(name).is_none() && self.domains.iter().any(|d| d.eq_ignore_ascii_case(name))
    }
}

/// The configuration of TLS-ALPN-01 handshakes: RFC 8737 §4, TLS 1.2 or
/// later, ALPN `acme-tls/1` and nothing else.
fn challenge_config(resolver: Arc<dyn ResolvesServerCert>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut challenge = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    challenge.alpn_protocols = vec![ALPN_ACME_TLS.to_vec()];
    Ok(Arc::new(challenge))
}

/// Reads a certificate chain and its private key, and checks that they belong together.
pub fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = load_certificates(cert)?;
    // The leaf must parse as X.509, or SNI could never pick it.
    webpki::EndEntityCert::try_from(&chain[0]).map_err(|err| TlsError::BadCertificate {
        path: cert.to_path_buf(),
        cause: err.to_string(),
    })?;
    let private = load_key(key)?;
    CertifiedKey::from_der(chain, private, &provider()).map_err(|cause| TlsError::Key {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        cause,
    })
}

/// Chooses the certificate for a handshake: the first (in config order)
/// whose subject alternative names cover the SNI name, wildcards included;
/// the first certificate when the client sent no name or none matches.
#[derive(Debug)]
struct SniResolver {
    /// At least one; the first is the default.
    keys: Vec<Arc<CertifiedKey>>,
}

impl SniResolver {
    fn pick(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if self.keys.len() > 1 {
            if let Some(name) = name.and_then(|n| DnsName::try_from(n).ok()) {
                let name = ServerName::DnsName(name);
                let covering = self.keys.iter().find(|key| {
                    key.end_entity_cert()
                        .ok()
                        .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
                        .is_some_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
                });
                if let Some(key) = covering {
                    return Some(key.clone());
                }
            }
        }
        self.keys.first().cloned()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(client_hello.server_name())
    }
}

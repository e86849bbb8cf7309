//! The TLS-ALPN-01 challenge certificate (RFC 8737 §3): self-signed, for the
//! one domain under validation, carrying the SHA-256 of the key
//! authorization in the critical acmeIdentifier extension.

use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::AcmeError;

/// Builds the certificate served to the CA's `acme-tls/1` handshake for `domain`.
pub fn alpn_certificate(domain: &str, key_authorization_digest: &[u8]) -> Result<Arc<CertifiedKey>, AcmeError> {
    let mut params = rcgen::CertificateParams::new(vec![domain.to_string()])?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(key_authorization_digest)];
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    // `CertifiedKey::new`, not `from_der`: the latter parses the certificate
    // with webpki, which refuses the critical acmeIdentifier extension.
    let signer = crate::tls::provider()
        .key_provider
        .load_private_key(private)
        .map_err(|err| AcmeError::Certificate(err.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(vec![cert.der().clone()], signer)))
}

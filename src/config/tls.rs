//! The TLS keys of the file: their rules (which keys go together), and the
//! certificate, key and CA files they name, read when the configuration is
//! read so a bad file is reported with the key's line (at `tether check`, at
//! start, and on reload, where the running configuration then stays).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::ServerName;
use toml::Spanned;

use super::error::{ConfigError, SourceMap};
use super::types::{Backend, Config, Frontend, Server, UpstreamTlsSetting};
use crate::tls::{client::client_config, server::load_pair, ServerTls, TlsError, UpstreamTls};

/// Checks the TLS keys and reads the files they name into the config's
/// `loaded_tls` fields. Relative paths are taken from `base` (the config
/// file's directory).
pub(crate) fn load(config: &mut Config, source: &SourceMap<'_>, base: &Path) -> Result<(), ConfigError> {
    for frontend in &mut config.frontend {
        check_frontend(frontend, source)?;
        frontend.loaded_tls = load_frontend(frontend, source, base)?;
    }
    for backend in &mut config.backend {
        load_backend(backend, source, base)?;
    }
    Ok(())
}

fn check_frontend(frontend: &Frontend, source: &SourceMap<'_>) -> Result<(), ConfigError> {
    let name = frontend.name.get_ref();
    let redirect = &frontend.redirect_https;
    if *redirect.get_ref() && frontend.tls.is_some() {
        return Err(source.error(
            Some(redirect.span()),
            format!(
                "frontend `{name}` has `tls`, so it is https already: `redirect_https` belongs on a plain frontend"
            ),
        ));
    }
    if let Some(port) = &frontend.https_port {
        if !*redirect.get_ref() {
            return Err(source.error(
                Some(port.span()),
                "`https_port` is the port of `redirect_https` locations: add redirect_https = true or remove it",
            ));
        }
        if *port.get_ref() == 0 {
            return Err(source.error(Some(port.span()), "`https_port` must be between 1 and 65535"));
        }
    }
    if let Some(hsts) = &frontend.hsts {
        if frontend.tls.is_none() {
            return Err(source.error(
                Some(hsts.span()),
                "`hsts` only applies to a TLS frontend (browsers ignore Strict-Transport-Security over plain HTTP, \
                 RFC 6797 §8.1): add `tls` or move it to the https frontend",
            ));
        }
        let value = hsts.get_ref();
        if http::HeaderValue::from_str(value).is_err()
            || !value.trim_start().to_ascii_lowercase().starts_with("max-age=")
        {
            return Err(source.error(
                Some(hsts.span()),
                "`hsts` is the Strict-Transport-Security value and starts with max-age, \
                 like \"max-age=31536000; includeSubDomains\"",
            ));
        }
    }
    Ok(())
}

fn resolve(base: &Path, file: &str) -> PathBuf {
    base.join(file)
}

/// The span of whichever of the two files an error is about.
fn span_of(err: &TlsError, cert: &Spanned<String>, key: &Spanned<String>, key_path: &Path) -> std::ops::Range<usize> {
    let about_key = match err {
        TlsError::Read { path, .. } | TlsError::BadPem { path, .. } => path == key_path,
        TlsError::NoKey { .. } | TlsError::Key { .. } => true,
        _ => false,
    };
    if about_key {
        key.span()
    } else {
        cert.span()
    }
}

fn load_frontend(frontend: &Frontend, source: &SourceMap<'_>, base: &Path) -> Result<Option<ServerTls>, ConfigError> {
    let Some(tls) = &frontend.tls else {
        return Ok(None);
    };
    let settings = tls.get_ref();
    let mut pairs: Vec<(&Spanned<String>, &Spanned<String>)> = Vec::new();
    match (&settings.cert, &settings.key) {
        (Some(cert), Some(key)) => pairs.push((cert, key)),
        (Some(cert), None) => {
            return Err(source.error(
                Some(cert.span()),
                "`cert` needs its private key: add key = \"….key\" (a PEM file) next to it",
            ))
        }
        (None, Some(key)) => {
            return Err(source.error(
                Some(key.span()),
                "`key` needs its certificate: add cert = \"….pem\" (a PEM chain, leaf first) next to it",
            ))
        }
        (None, None) => {}
    }
    pairs.extend(
        settings
            .certificates
            .iter()
            .map(|pair| (&pair.get_ref().cert, &pair.get_ref().key)),
    );
    if pairs.is_empty() {
        return Err(source.error(
            Some(tls.span()),
            "`tls` has no certificate: write tls = { cert = \"site.pem\", key = \"site.key\" } \
             or tls = { certificates = [{ cert = \"a.pem\", key = \"a.key\" }, …] }",
        ));
    }
    let mut keys = Vec::with_capacity(pairs.len());
    for (cert, key) in pairs {
        let (cert_path, key_path) = (resolve(base, cert.get_ref()), resolve(base, key.get_ref()));
        let loaded = load_pair(&cert_path, &key_path).map_err(|err| {
            source.error(
                Some(span_of(&err, cert, key, &key_path)),
                format!(
                    "frontend `{}`: {err}: fix the file or the path (relative paths start at the configuration file's directory)",
                    frontend.name.get_ref()
                ),
            )
        })?;
        keys.push(Arc::new(loaded));
    }
    ServerTls::from_keys(keys).map(Some).map_err(|err| {
        source.error(
            Some(tls.span()),
            format!("frontend `{}`: {err}", frontend.name.get_ref()),
        )
    })
}

/// A client configuration per distinct setting, so the servers of a backend share one.
fn build_client(
    setting: &Spanned<UpstreamTlsSetting>,
    source: &SourceMap<'_>,
    base: &Path,
    owner: &str,
) -> Result<Arc<rustls::ClientConfig>, ConfigError> {
    let s = setting.get_ref();
    let ca = s.ca.as_ref().map(|ca| (ca, resolve(base, ca.get_ref())));
    if !s.verify {
        tracing::warn!(
            at = %owner,
            "tls verify = false: the server's certificate is not checked, so the connection is encrypted but not authenticated"
        );
    }
    client_config(ca.as_ref().map(|(_, path)| path.as_path()), s.verify).map_err(|err| {
        let span = ca.as_ref().map_or(setting.span(), |(ca, _)| ca.span());
        source.error(
            Some(span),
            format!("{owner}: {err}: fix the CA file or the path (relative paths start at the configuration file's directory)"),
        )
    })
}

fn load_backend(backend: &mut Backend, source: &SourceMap<'_>, base: &Path) -> Result<(), ConfigError> {
    let name = backend.name.get_ref().clone();
    let shared = match &backend.tls {
        Some(setting) if setting.get_ref().enabled => {
            Some(build_client(setting, source, base, &format!("backend `{name}`"))?)
        }
        _ => None,
    };
    let backend_tls = backend.tls.as_ref();
    for server in &mut backend.server {
        server.loaded_tls = load_server(server, backend_tls, shared.as_ref(), source, base, &name)?;
    }
    Ok(())
}

fn load_server(
    server: &Server,
    backend_tls: Option<&Spanned<UpstreamTlsSetting>>,
    backend_config: Option<&Arc<rustls::ClientConfig>>,
    source: &SourceMap<'_>,
    base: &Path,
    backend: &str,
) -> Result<Option<UpstreamTls>, ConfigError> {
    let owner = format!("server `{}` of backend `{backend}`", server.name.get_ref());
    // The server's own `tls` (even `false`) wins over the backend's.
    let chosen = match (&server.tls, backend_tls, backend_config) {
        (Some(own), _, _) if own.get_ref().enabled => Some((own, build_client(own, source, base, &owner)?)),
        (Some(_), _, _) => None,
        (None, Some(setting), Some(config)) => Some((setting, config.clone())),
        (None, _, _) => None,
    };
    let Some((setting, config)) = chosen else {
        if let Some(sni) = &server.sni {
            return Err(source.error(
                Some(sni.span()),
                format!("{owner}: `sni` is the TLS server name, but this server is not reached over TLS: add tls = true or remove it"),
            ));
        }
        return Ok(None);
    };
    let server_name = match server.sni.as_ref().or(setting.get_ref().sni.as_ref()) {
        Some(sni) => ServerName::try_from(sni.get_ref().as_str())
            .map(|n| n.to_owned())
            .map_err(|_| {
                source.error(
                    Some(sni.span()),
                    format!(
                        "{owner}: `{}` is not a DNS name or IP address usable as SNI",
                        sni.get_ref()
                    ),
                )
            })?,
        None => ServerName::IpAddress(server.address.get_ref().0.ip().into()),
    };
    Ok(Some(UpstreamTls { config, server_name }))
}

//! The TLS keys of the file: their rules (which keys go together), and the
//! certificate, key and CA files they name, read into the model's TLS
//! objects when the configuration is read, so a bad file is reported with
//! the key's line (at `tether check`, at start, and on reload, where the
//! running configuration then stays).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::ServerName;
use toml::Spanned;

use super::error::{ConfigError, SourceMap};
use super::model::AcmeSettings;
use super::raw::{Admin, Backend, Frontend, FrontendTls, Server, UpstreamTlsSetting};
use crate::tls::{client::client_config, server::load_pair, ServerTls, TlsError, UpstreamTls};

/// Checks a frontend's TLS keys and reads the certificates they name (`None`:
/// a plain frontend). Relative paths are taken from `base` (the config
/// file's directory).
pub(super) fn frontend(
    frontend: &Frontend,
    source: &SourceMap<'_>,
    base: &Path,
) -> Result<(Option<ServerTls>, Option<AcmeSettings>), ConfigError> {
    check_frontend(frontend, source)?;
    if let Some(tls) = &frontend.tls {
        if let Some(acme) = &tls.get_ref().acme {
            let owner = format!("frontend `{}`", frontend.name.get_ref());
            let settings = super::acme::check(tls, acme, &owner, source, base)?;
            let http2 = frontend.http2_enabled();
            let slot = crate::tls::acme::slot(&format!("{}|{}", settings.cache.display(), settings.domains.join(",")));
            let server = ServerTls::with_acme(slot, settings.domains.clone(), http2)
                .map_err(|err| source.error(Some(tls.span()), format!("{owner}: {err}")))?;
            return Ok((Some(server), Some(settings)));
        }
    }
    Ok((load_frontend(frontend, source, base)?, None))
}

/// How tether speaks TLS to each server of `backend` (`None`: plain TCP),
/// in server order; `addresses` are the servers' resolved addresses (the
/// SNI name is the IP when no `sni` is given).
pub(super) fn backend(
    backend: &Backend,
    servers: &[&super::raw::Server],
    addresses: &[SocketAddr],
    source: &SourceMap<'_>,
    base: &Path,
) -> Result<Vec<Option<UpstreamTls>>, ConfigError> {
    let name = backend.name.get_ref();
    let shared = match &backend.tls {
        Some(setting) if setting.get_ref().enabled => {
            Some(build_client(setting, source, base, &format!("backend `{name}`"))?)
        }
        _ => None,
    };
    servers
        .iter()
        .zip(addresses)
        .map(|(server, address)| {
            load_server(
                server,
                *address,
                backend.tls.as_ref(),
                shared.as_ref(),
                source,
                base,
                name,
            )
        })
        .collect()
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

/// The key (`cert` or `key`) an error is about, and its span.
fn blamed<'a>(
    err: &TlsError,
    cert: &'a Spanned<String>,
    key: &'a Spanned<String>,
    key_path: &Path,
) -> (&'static str, &'a Spanned<String>) {
    let about_key = match err {
        TlsError::Read { path, .. } | TlsError::BadPem { path, .. } => path == key_path,
        TlsError::NoKey { .. } | TlsError::Key { .. } => true,
        _ => false,
    };
    if about_key {
        ("key", key)
    } else {
        ("cert", cert)
    }
}

/// Reads the certificates of the admin listener's `tls` (`None`: plain
/// HTTP): the same keys and the same loader as a frontend's.
pub(super) fn admin(admin: &Admin, source: &SourceMap<'_>, base: &Path) -> Result<Option<ServerTls>, ConfigError> {
    if let Some(acme) = admin.tls.as_ref().and_then(|t| t.get_ref().acme.as_ref()) {
        return Err(source.error(
            Some(acme.span()),
            "`acme` is for frontends: give [admin] tls = { cert = \"….pem\", key = \"….key\" }",
        ));
    }
    match &admin.tls {
        // The admin listener speaks HTTP/1.1 only.
        Some(tls) => load_server_tls(tls, "[admin]", false, source, base).map(Some),
        None => Ok(None),
    }
}

fn load_frontend(frontend: &Frontend, source: &SourceMap<'_>, base: &Path) -> Result<Option<ServerTls>, ConfigError> {
    let Some(tls) = &frontend.tls else {
        return Ok(None);
    };
    let owner = format!("frontend `{}`", frontend.name.get_ref());
    let http2 = frontend.http2_enabled();
    load_server_tls(tls, &owner, http2, source, base).map(Some)
}

/// Reads the certificate pairs of a frontend's (or the admin listener's)
/// `tls`; with `http2` the handshake offers ALPN `h2` too.
fn load_server_tls(
    tls: &Spanned<FrontendTls>,
    owner: &str,
    http2: bool,
    source: &SourceMap<'_>,
    base: &Path,
) -> Result<ServerTls, ConfigError> {
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
            let (name, at) = blamed(&err, cert, key, &key_path);
            source.error(
                Some(at.span()),
                format!(
                    "{owner}, tls `{name}`: {err}: fix the file or the path \
                     (relative paths start at the configuration file's directory)"
                ),
            )
        })?;
        keys.push(Arc::new(loaded));
    }
    ServerTls::from_keys(keys, http2).map_err(|err| source.error(Some(tls.span()), format!("{owner}: {err}")))
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
            format!(
                "{owner}, tls `ca`: {err}: fix the CA file or the path \
                 (relative paths start at the configuration file's directory)"
            ),
        )
    })
}

fn load_server(
    server: &Server,
    address: SocketAddr,
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
        None => ServerName::IpAddress(address.ip().into()),
    };
    Ok(Some(UpstreamTls { config, server_name }))
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, ConfigError};

    /// A self-signed certificate and its key written into a fresh directory.
    fn write_pair(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("tether-config-tls-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["a.test".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        std::fs::write(dir.join("a.pem"), cert.pem()).expect("write cert");
        std::fs::write(dir.join("a.key"), key.serialize_pem()).expect("write key");
        let other = rcgen::KeyPair::generate().expect("key");
        std::fs::write(dir.join("other.key"), other.serialize_pem()).expect("write key");
        dir
    }

    fn config(tls: &str) -> String {
        format!(
            "[[frontend]]\nname = \"public\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"web\"\n{tls}\n\n\
             [[backend]]\nname = \"web\"\n[[backend.server]]\nname = \"s1\"\naddress = \"127.0.0.1:8200\"\n"
        )
    }

    fn error_of(text: &str) -> (usize, usize, String) {
        ConfigError::invalid_at(parse(text, "test.toml"))
    }

    #[test]
    fn a_missing_certificate_file_names_the_key_its_line_and_the_fix() {
        let text = config("tls = { cert = \"/nonexistent/site.pem\", key = \"/nonexistent/site.key\" }");
        let (line, column, message) = error_of(&text);
        assert_eq!((line, column), (5, 16), "{message}");
        assert!(message.contains("tls `cert`"), "{message}");
        assert!(message.contains("/nonexistent/site.pem"), "{message}");
        assert!(message.contains("fix the file or the path"), "{message}");
    }

    #[test]
    fn good_files_load_and_a_key_of_another_certificate_is_refused() {
        let dir = write_pair("pair");
        let good = config(&format!(
            "tls = {{ cert = \"{0}/a.pem\", key = \"{0}/a.key\" }}",
            dir.display()
        ));
        let loaded = parse(&good, "test.toml").expect("valid");
        assert!(loaded.frontends[0].tls.is_some());
        let mismatched = config(&format!(
            "tls = {{ cert = \"{0}/a.pem\", key = \"{0}/other.key\" }}",
            dir.display()
        ));
        let (line, _, message) = error_of(&mismatched);
        assert_eq!(line, 5);
        assert!(message.contains("tls `key`"), "{message}");
        // The certificate file given as the key: no private key in it.
        let swapped = config(&format!(
            "tls = {{ cert = \"{0}/a.pem\", key = \"{0}/a.pem\" }}",
            dir.display()
        ));
        let (_, _, message) = error_of(&swapped);
        assert!(message.contains("no PEM private key"), "{message}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn tls_keys_that_do_not_go_together_are_refused() {
        let (_, _, message) = error_of(&config("tls = {}"));
        assert!(message.contains("no certificate"), "{message}");
        let (_, _, message) = error_of(&config("tls = { cert = \"a.pem\" }"));
        assert!(message.contains("needs its private key"), "{message}");
        let (line, _, message) = error_of(&config("hsts = \"max-age=60\""));
        assert_eq!(line, 5);
        assert!(message.contains("only applies to a TLS frontend"), "{message}");
        let (_, _, message) = error_of(&config("https_port = 8443"));
        assert!(message.contains("redirect_https"), "{message}");
        parse(&config("redirect_https = true\nhttps_port = 8443"), "test.toml").expect("a plain redirect");
        let server_sni = config("").replace("8200\"\n", "8200\"\nsni = \"ws1.internal\"\n");
        let (_, _, message) = error_of(&server_sni);
        assert!(message.contains("not reached over TLS"), "{message}");
        let bad_tls = config("").replace("8200\"\n", "8200\"\ntls = { verify = \"yes\" }\n");
        let (line, _, message) = error_of(&bad_tls);
        assert_eq!(line, 12, "{message}");
    }

    #[test]
    fn tls_to_servers_is_inherited_from_the_backend_and_a_server_may_turn_it_off() {
        let text = config("").replace(
            "name = \"web\"\n",
            "name = \"web\"\ntls = { verify = false, sni = \"pool.internal\" }\n",
        ) + "[[backend.server]]\nname = \"s2\"\naddress = \"127.0.0.1:8201\"\ntls = false\n\
               [[backend.server]]\nname = \"s3\"\naddress = \"127.0.0.1:8202\"\nsni = \"s3.internal\"\n";
        let loaded = parse(&text, "test.toml").expect("valid");
        let servers = &loaded.backends[0].servers;
        let name = |i: usize| servers[i].tls.as_ref().map(|t| format!("{:?}", t.server_name));
        assert!(name(0).is_some_and(|n| n.contains("pool.internal")), "{:?}", name(0));
        assert_eq!(name(1), None);
        assert!(name(2).is_some_and(|n| n.contains("s3.internal")), "{:?}", name(2));
    }
}

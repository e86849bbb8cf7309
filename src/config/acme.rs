//! The `tls.acme` block of a frontend: its rules (names that a CA can
//! validate, a `mailto:` contact, exclusive with certificate files), checked
//! at `tether check`, start and reload with the key's line and the fix.

use std::path::Path;

use rustls_pki_types::DnsName;
use toml::Spanned;

use super::error::{ConfigError, SourceMap};
use super::model::{AcmeChallenge, AcmeSettings, LETS_ENCRYPT_DIRECTORY};
use super::raw::{Acme, FrontendTls};

/// Where certificates are kept when `cache` is absent.
pub const DEFAULT_CACHE: &str = "/var/lib/tether/acme";

/// Checks `acme` (inside `tls`) and resolves its paths against `base`.
pub(super) fn check(
    tls: &Spanned<FrontendTls>,
    acme: &Spanned<Acme>,
    owner: &str,
    source: &SourceMap<'_>,
    base: &Path,
) -> Result<AcmeSettings, ConfigError> {
    let files = tls.get_ref();
    let file_key = files
        .cert
        .as_ref()
        .or(files.key.as_ref())
        .map(|k| k.span())
        .or_else(|| files.certificates.first().map(|c| c.span()));
    if let Some(span) = file_key {
        return Err(source.error(
            Some(span),
            format!(
                "{owner}: `acme` obtains the certificate itself, so `cert`, `key` and `certificates` \
                 cannot be given with it: keep one of the two"
            ),
        ));
    }
    let raw = acme.get_ref();
    if raw.domains.get_ref().is_empty() {
        return Err(source.error(
            Some(raw.domains.span()),
            format!("{owner}: acme `domains` is empty: name the host names, like domains = [\"ws.example.com\"]"),
        ));
    }
    let mut domains = Vec::with_capacity(raw.domains.get_ref().len());
    for domain in raw.domains.get_ref() {
        let name = domain.get_ref().trim_end_matches('.').to_ascii_lowercase();
        let problem = if name.starts_with("*.") {
            Some("is a wildcard, which needs the DNS-01 challenge (not supported): list each name")
        } else if name.parse::<std::net::IpAddr>().is_ok() {
            Some("is an IP address: ACME certificates here are for DNS names")
        } else if DnsName::try_from(name.as_str()).is_err() || !name.contains('.') {
            Some("is not a valid DNS name with a dot (like ws.example.com)")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(source.error(
                Some(domain.span()),
                format!("{owner}: acme domain `{}` {problem}", domain.get_ref()),
            ));
        }
        if domains.contains(&name) {
            return Err(source.error(
                Some(domain.span()),
                format!("{owner}: acme domain `{name}` is listed twice: remove one"),
            ));
        }
        domains.push(name);
    }
    let contact = match &raw.contact {
        Some(contact) => {
            let value = contact.get_ref();
            let address = value.strip_prefix("mailto:").unwrap_or_default();
            if !address.contains('@') || address.contains(char::is_whitespace) || address.contains(',') {
                return Err(source.error(
                    Some(contact.span()),
                    format!(
                        "{owner}: acme `contact` is a mailto: URL with one address, like \"mailto:ops@example.com\""
                    ),
                ));
            }
            Some(value.clone())
        }
        None => None,
    };
    let directory = match &raw.directory {
        Some(directory) => {
            let value = directory.get_ref();
            let valid = value
                .parse::<http::Uri>()
                .is_ok_and(|uri| uri.scheme_str() == Some("https") && uri.host().is_some());
            if !valid {
                return Err(source.error(
                    Some(directory.span()),
                    format!(
                        "{owner}: acme `directory` is the CA's https:// directory URL, like \
                         \"https://acme-staging-v02.api.letsencrypt.org/directory\""
                    ),
                ));
            }
            value.clone()
        }
        None => LETS_ENCRYPT_DIRECTORY.to_string(),
    };
    let directory_ca = match &raw.directory_ca {
        Some(ca) => {
            let path = base.join(ca.get_ref());
            crate::tls::load_certificates(&path).map_err(|err| {
                source.error(
                    Some(ca.span()),
                    format!(
                        "{owner}, acme `directory_ca`: {err}: give the PEM CA of the ACME server's HTTPS \
                         (relative paths start at the configuration file's directory)"
                    ),
                )
            })?;
            Some(path)
        }
        None => None,
    };
    let cache = base.join(raw.cache.as_ref().map_or(DEFAULT_CACHE, |c| c.get_ref().as_str()));
    let challenge = match raw.challenge.as_ref().map(|c| (c, c.get_ref().as_str())) {
        None | Some((_, "tls-alpn-01")) => AcmeChallenge::TlsAlpn01,
        Some((_, "http-01")) => AcmeChallenge::Http01,
        Some((c, _)) => {
            return Err(source.error(
                Some(c.span()),
                format!("{owner}: acme `challenge` is \"tls-alpn-01\" (on this frontend) or \"http-01\" (on a plain frontend, port 80)"),
            ))
        }
    };
    Ok(AcmeSettings {
        domains,
        contact,
        directory,
        directory_ca,
        cache,
        challenge,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, ConfigError};

    fn config(acme: &str) -> String {
        format!(
            "[[frontend]]\nname = \"secure\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"web\"\n\
             tls = {{ acme = {{ {acme} }} }}\n\n\
             [[backend]]\nname = \"web\"\n[[backend.server]]\nname = \"s1\"\naddress = \"127.0.0.1:8200\"\n"
        )
    }

    fn error_of(text: &str) -> (usize, usize, String) {
        ConfigError::invalid_at(parse(text, "test.toml"))
    }

    #[test]
    fn a_good_acme_block_loads_with_its_defaults() {
        let loaded = parse(
            &config("domains = [\"WS.Example.com\"], contact = \"mailto:ops@example.com\""),
            "test.toml",
        )
        .expect("valid");
        let acme = loaded.frontends[0].acme.as_ref().expect("acme");
        assert_eq!(acme.domains, ["ws.example.com"]);
        assert_eq!(acme.directory, crate::config::model::LETS_ENCRYPT_DIRECTORY);
        assert_eq!(acme.cache, std::path::Path::new(super::DEFAULT_CACHE));
        assert!(loaded.frontends[0].tls.as_ref().is_some_and(|t| t.acme.is_some()));
    }

    #[test]
    fn bad_acme_values_name_their_line_column_and_fix() {
        let (line, column, message) = error_of(&config("domains = []"));
        assert_eq!((line, column), (5, 28), "{message}");
        assert!(message.contains("`domains` is empty"), "{message}");
        let (_, _, message) = error_of(&config("domains = [\"*.example.com\"]"));
        assert!(message.contains("wildcard"), "{message}");
        let (_, _, message) = error_of(&config("domains = [\"bad name.com\"]"));
        assert!(message.contains("not a valid DNS name"), "{message}");
        let (_, _, message) = error_of(&config("domains = [\"a.com\"], contact = \"ops@example.com\""));
        assert!(message.contains("mailto:"), "{message}");
        let (_, _, message) = error_of(&config("domains = [\"a.com\"], directory = \"http://ca/dir\""));
        assert!(message.contains("https://"), "{message}");
        let (_, _, message) = error_of(&config("domains = [\"a.com\"], directory_ca = \"/nonexistent/ca.pem\""));
        assert!(message.contains("directory_ca"), "{message}");
        let (_, _, message) = error_of(&config("domains = [\"a.com\"], challenge = \"dns-01\""));
        assert!(message.contains("tls-alpn-01"), "{message}");
        let both = config("domains = [\"a.com\"]").replace("tls = {", "tls = { cert = \"a.pem\", key = \"a.key\",");
        let (line, _, message) = error_of(&both);
        assert_eq!(line, 5);
        assert!(message.contains("cannot be given with it"), "{message}");
    }
}

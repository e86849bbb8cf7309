//! `host:port` addresses as the file writes them. Reading one does no I/O:
//! an IP address is taken as is, a name is kept as a name for the resolve
//! step (`resolve`) that runs after validation.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Deserializer};

/// An address as written, not yet resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// `ip:port` (or `[v6]:port`): usable as is.
    Socket(SocketAddr),
    /// `name:port`: a host name still to be resolved.
    Name {
        /// The host name.
        host: String,
        /// The port.
        port: u16,
    },
}

impl Address {
    /// Reads `ip:port` or `name:port`; the error says how to write it.
    pub fn parse(text: &str) -> Result<Address, String> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Address::Socket(addr));
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(format!("`{text}` has no port: write it as \"{text}:8080\""));
        };
        let Ok(port) = port.parse::<u16>() else {
            return Err(format!(
                "`{text}` is not an address tether can reach (invalid port value): write \"ip:port\" or \"host:port\""
            ));
        };
        // As the standard library reads `(host, port)`: an IP host needs no lookup.
        Ok(match host.parse::<IpAddr>() {
            Ok(ip) => Address::Socket(SocketAddr::new(ip, port)),
            Err(_) => Address::Name {
                host: host.to_string(),
                port,
            },
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Socket(addr) => write!(f, "{addr}"),
            Address::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Address::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A nameserver as written: `ip` (port 53) or `ip:port`.
pub(super) fn nameserver(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)).map_err(|_| {
        format!("nameserver `{text}` is not an IP address: write \"10.0.0.2\" or \"10.0.0.2:5353\" (no host names)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_are_taken_as_is_and_names_are_kept() {
        assert_eq!(
            Address::parse("127.0.0.1:8080"),
            Ok(Address::Socket("127.0.0.1:8080".parse().unwrap()))
        );
        assert_eq!(
            Address::parse("[::1]:80"),
            Ok(Address::Socket("[::1]:80".parse().unwrap()))
        );
        let name = Address::parse("localhost:8080").unwrap();
        assert_eq!(
            name,
            Address::Name {
                host: "localhost".to_string(),
                port: 8080
            }
        );
        assert_eq!(name.to_string(), "localhost:8080");
    }

    #[test]
    fn a_missing_or_bad_port_says_how_to_write_it() {
        assert!(Address::parse("127.0.0.1").unwrap_err().contains("has no port"));
        assert!(Address::parse("example.com")
            .unwrap_err()
            .contains("\"example.com:8080\""));
        let bad = Address::parse("example.com:http").unwrap_err();
        assert!(bad.contains("is not an address tether can reach"), "{bad}");
    }
}

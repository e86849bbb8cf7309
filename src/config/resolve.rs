//! The resolve step: an address written as a name becomes a socket address.
//!
//! It runs after the rules of `validate` passed, while the model is built
//! (so inside `config::parse` / `load_file`, at start, at `tether check`
//! and on every reload, including one asked through the admin API); a
//! name is looked up with the system resolver, which blocks. Deserialising
//! never resolves. The DNS discovery issue moves this off the reload path.

use std::net::{SocketAddr, ToSocketAddrs};

use toml::Spanned;

use super::address::Address;
use super::error::{ConfigError, SourceMap};

/// The socket address of `address`: an IP as is, a name's first address
/// from the system resolver. The error says what went wrong and the fix.
pub fn resolve(address: &Address) -> Result<SocketAddr, String> {
    match address {
        Address::Socket(addr) => Ok(*addr),
        Address::Name { host, port } => match (host.as_str(), *port).to_socket_addrs() {
            Ok(mut addrs) => addrs
                .next()
                .ok_or_else(|| format!("`{address}` resolves to no address")),
            Err(err) => Err(format!(
                "`{address}` is not an address tether can reach ({err}): write \"ip:port\" or \"host:port\""
            )),
        },
    }
}

/// `resolve`, with an error located at the address in the file.
pub(crate) fn located(address: &Spanned<Address>, source: &SourceMap<'_>) -> Result<SocketAddr, ConfigError> {
    resolve(address.get_ref()).map_err(|message| source.error(Some(address.span()), message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ip_needs_no_lookup() {
        let ip = Address::parse("192.0.2.7:8080").unwrap();
        assert_eq!(resolve(&ip), Ok("192.0.2.7:8080".parse().unwrap()));
    }

    #[test]
    fn a_name_is_looked_up_and_keeps_its_port() {
        let name = Address::parse("localhost:8080").unwrap();
        let addr = resolve(&name).expect("localhost resolves");
        assert!(addr.ip().is_loopback(), "{addr}");
        assert_eq!(addr.port(), 8080);
    }

    #[test]
    fn an_unknown_name_says_it_cannot_be_reached() {
        let name = Address::parse("no-such-host.invalid:80").unwrap();
        let message = resolve(&name).unwrap_err();
        assert!(
            message.contains("`no-such-host.invalid:80` is not an address tether can reach"),
            "{message}"
        );
    }
}

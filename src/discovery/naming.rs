//! Pure answers to "what is this found server called": names and cookie ids
//! derived from the address alone (every instance agrees without talking),
//! SRV weights and priorities, and which address a named server keeps.

use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};

use sha2::{Digest, Sha256};

use super::Found;
use crate::config::MAX_WEIGHT;

/// A discovered server's name: `backend-ip-port` (an IPv6 address with `-`
/// for `:`), e.g. `ws-10.0.0.5-8200`.
pub fn server_name(backend: &str, address: SocketAddr) -> String {
    let ip = address.ip().to_string().replace(':', "-");
    format!("{backend}-{ip}-{}", address.port())
}

/// A discovered server's cookie id: 16 hex digits of the SHA-256 of its
/// address, the same on every instance and across restarts.
pub fn cookie_id(address: SocketAddr) -> String {
    let digest = Sha256::digest(address.to_string().as_bytes());
    digest.iter().take(8).fold(String::with_capacity(16), |mut id, byte| {
        let _ = write!(id, "{byte:02x}");
        id
    })
}

/// An SRV record's weight as a server weight: 0 ("no preference", RFC
/// 2782) becomes 1 so the server still takes traffic; capped at `MAX_WEIGHT`.
pub fn srv_weight(weight: u16) -> u32 {
    u32::from(weight).clamp(1, MAX_WEIGHT)
}

/// One SRV record, its target already looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvAnswer {
    /// Lower is preferred; only the lowest present is used.
    pub priority: u16,
    /// Relative share among records of one priority.
    pub weight: u16,
    /// The port of the service on the target.
    pub port: u16,
    /// The target's addresses.
    pub ips: Vec<IpAddr>,
}

/// The servers of an SRV answer: every address of the records with the
/// lowest priority (the others are backups, RFC 2782), with their port and
/// weight (records whose target has no address are skipped). An address
/// named twice keeps its first record.
pub fn srv_servers(records: &[SrvAnswer]) -> Vec<Found> {
    // A target without an address cannot serve: the next priority may.
    let records: Vec<&SrvAnswer> = records.iter().filter(|r| !r.ips.is_empty()).collect();
    let Some(best) = records.iter().map(|r| r.priority).min() else {
        return Vec::new();
    };
    let mut found: Vec<Found> = Vec::new();
    for record in records.iter().filter(|r| r.priority == best) {
        for ip in &record.ips {
            let address = SocketAddr::new(*ip, record.port);
            if !found.iter().any(|f| f.address == address) {
                found.push(Found {
                    address,
                    weight: Some(srv_weight(record.weight)),
                });
            }
        }
    }
    found
}

/// The address a named server keeps from `ips`: its current one while the
/// answer still has it (no flapping between records), else the lowest.
pub fn named_address(current: Option<SocketAddr>, ips: &[IpAddr], port: u16) -> Option<SocketAddr> {
    if let Some(current) = current.filter(|c| ips.contains(&c.ip()) && c.port() == port) {
        return Some(current);
    }
    ips.iter().min().map(|ip| SocketAddr::new(*ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_cookie_ids_come_from_the_address_alone() {
        let a: SocketAddr = "10.0.0.5:8200".parse().unwrap();
        assert_eq!(server_name("ws", a), "ws-10.0.0.5-8200");
        assert_eq!(server_name("ws", "[fd00::1]:80".parse().unwrap()), "ws-fd00--1-80");
        assert_eq!(cookie_id(a), cookie_id("10.0.0.5:8200".parse().unwrap()));
        assert_eq!(cookie_id(a).len(), 16);
        assert_ne!(cookie_id(a), cookie_id("10.0.0.5:8201".parse().unwrap()));
    }

    #[test]
    fn srv_answers_keep_the_lowest_priority_with_ports_and_weights() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let records = vec![
            SrvAnswer {
                priority: 10,
                weight: 5,
                port: 8201,
                ips: vec![ip("127.0.0.2")],
            },
            SrvAnswer {
                priority: 10,
                weight: 0,
                port: 8202,
                ips: vec![ip("127.0.0.3")],
            },
            SrvAnswer {
                priority: 20,
                weight: 9,
                port: 8203,
                ips: vec![ip("127.0.0.4")],
            },
        ];
        let found = srv_servers(&records);
        assert_eq!(
            found,
            vec![
                Found {
                    address: "127.0.0.2:8201".parse().unwrap(),
                    weight: Some(5)
                },
                Found {
                    address: "127.0.0.3:8202".parse().unwrap(),
                    weight: Some(1)
                },
            ]
        );
        assert!(srv_servers(&[]).is_empty());
        assert_eq!(srv_weight(u16::MAX), MAX_WEIGHT.min(65535));
    }

    #[test]
    fn a_named_server_keeps_its_address_while_it_is_answered() {
        let ips: Vec<IpAddr> = vec!["10.0.0.9".parse().unwrap(), "10.0.0.3".parse().unwrap()];
        let current: SocketAddr = "10.0.0.9:80".parse().unwrap();
        assert_eq!(named_address(Some(current), &ips, 80), Some(current));
        assert_eq!(named_address(None, &ips, 80), Some("10.0.0.3:80".parse().unwrap()));
        assert_eq!(
            named_address(Some("10.0.0.1:80".parse().unwrap()), &ips, 80),
            Some("10.0.0.3:80".parse().unwrap())
        );
        assert_eq!(named_address(None, &[], 80), None);
    }
}

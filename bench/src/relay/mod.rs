//! `bench-relay`: a plain TCP relay with two interchangeable data paths, to
//! measure what an io_uring data path would save over epoll on the
//! established-tunnel path (issue 19), outside tether itself.
//!
//! Each accepted client gets a connection to the next upstream (round robin);
//! bytes are copied both ways until both directions have ended, an end of
//! stream being passed on as a write shutdown (half-close).

use std::net::SocketAddr;

pub mod epoll;
#[cfg(target_os = "linux")]
pub mod uring;

/// Size of one receive buffer (tether's tunnel buffer has the same size).
pub const BUF_SIZE: usize = 16 * 1024;

/// Round-robin choice of the upstream for the next connection.
#[derive(Debug, Clone)]
pub struct Upstreams {
    addrs: Vec<SocketAddr>,
    next: usize,
}

impl Upstreams {
    /// The upstream addresses, in the order they are used; at least one.
    pub fn new(addrs: Vec<SocketAddr>) -> Option<Self> {
        (!addrs.is_empty()).then_some(Self { addrs, next: 0 })
    }

    /// The upstream for the next accepted client.
    pub fn pick(&mut self) -> SocketAddr {
        let addr = self.addrs[self.next % self.addrs.len()];
        self.next = self.next.wrapping_add(1);
        addr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_are_used_in_turn() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let mut u = Upstreams::new(vec![a, b]).unwrap();
        assert_eq!([u.pick(), u.pick(), u.pick()], [a, b, a]);
        assert!(Upstreams::new(Vec::new()).is_none());
    }
}

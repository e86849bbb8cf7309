//! The kernel's side of a connection's memory: what idle sockets cost outside
//! every process's RSS. Read before and after connections open, the deltas
//! divided by the connections give KiB per connection:
//!
//! - socket buffers: `/proc/net/sockstat` `TCP: ... mem N` (pages charged to
//!   TCP sockets: queued data and reserved forward allocation);
//! - slab: the socket objects themselves (`TCP`, `sock_inode_cache`, the
//!   file, dentry and epoll entries of each descriptor) from
//!   `/proc/slabinfo` when it is readable (root), and the whole `Slab:` and
//!   `SUnreclaim:` of `/proc/meminfo` for reference.
//!
//! These counters are global: every socket of the run (load generator, proxy,
//! echo server) and anything else running on the machine shows in them. The
//! report subtracts the `direct` figure (load generator ↔ echo server only)
//! to get a proxy's own share.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

/// Slab caches that grow with every TCP socket held open by a process using
/// epoll: the socket, its inode, the file and dentry of its descriptor, the
/// epoll entry and the LSM blobs. `kmalloc-*` caches are shared with
/// everything else on the machine and left out (they show in `Slab:`).
pub const SOCKET_CACHES: [&str; 15] = [
    "TCP",
    "TCPv6",
    "sock_inode_cache",
    "dentry",
    "filp",
    "eventpoll_epi",
    "eventpoll_pwq",
    "ep_head",
    "lsm_file_cache",
    "lsm_inode_cache",
    "skbuff_head_cache",
    "skbuff_small_head",
    "skbuff_fclone_cache",
    "tcp_bind_bucket",
    "tcp_bind2_bucket",
];

/// One reading of the kernel's memory counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KernelMem {
    /// `/proc/net/sockstat` `TCP: ... mem`, in pages.
    pub tcp_mem_pages: Option<u64>,
    /// `/proc/meminfo` `Slab:`, KiB.
    pub slab_kib: Option<u64>,
    /// `/proc/meminfo` `SUnreclaim:`, KiB.
    pub sunreclaim_kib: Option<u64>,
    /// Bytes of the objects in use in each slab cache (`active_objs ×
    /// objsize`), when `/proc/slabinfo` is readable. Objects in use rather
    /// than slabs allocated: the kernel frees empty slabs lazily, so the
    /// slabs left over from the previous run's sockets would hide part of
    /// this run's growth.
    pub caches: Option<BTreeMap<String, u64>>,
}

/// The page size `sockstat` counts in.
fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).ok().filter(|&p| p > 0).unwrap_or(4096)
}

/// The `mem` field of the `TCP:` line of `/proc/net/sockstat`.
pub fn parse_sockstat_tcp_mem(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let mut it = line.split_whitespace();
    while let Some(word) = it.next() {
        if word == "mem" {
            return it.next()?.parse().ok();
        }
    }
    None
}

/// A `Name:   N kB` field of `/proc/meminfo`.
pub fn parse_meminfo_kib(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.split(':').next() == Some(name))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Bytes of the objects in use per cache of `/proc/slabinfo` (version 2.1:
/// name, active_objs, num_objs, objsize, ...).
pub fn parse_slabinfo(text: &str) -> BTreeMap<String, u64> {
    let mut caches = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with("slabinfo") || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        if let (Ok(active), Ok(size)) = (f[1].parse::<u64>(), f[3].parse::<u64>()) {
            caches.insert(f[0].to_string(), active * size);
        }
    }
    caches
}

impl KernelMem {
    /// Reads the counters now; a file that cannot be read leaves its fields empty.
    pub fn read() -> KernelMem {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        let meminfo = read("/proc/meminfo").unwrap_or_default();
        KernelMem {
            tcp_mem_pages: read("/proc/net/sockstat").as_deref().and_then(parse_sockstat_tcp_mem),
            slab_kib: parse_meminfo_kib(&meminfo, "Slab"),
            sunreclaim_kib: parse_meminfo_kib(&meminfo, "SUnreclaim"),
            caches: read("/proc/slabinfo")
                .map(|t| parse_slabinfo(&t))
                .filter(|c| !c.is_empty()),
        }
    }

    /// The growth from `before` to `self` per connection, as JSON fields:
    /// `kernel_sock_kib_per_conn` (sockstat pages), `kernel_slab_kib_per_conn`
    /// (the socket caches of slabinfo, else the whole `Slab:`),
    /// `kernel_kib_per_conn` (their sum), the whole `Slab:` and `SUnreclaim:`
    /// deltas, and the caches that grew by at least 0.01 KiB per connection.
    pub fn per_conn_since(&self, before: &KernelMem, conns: u64) -> Map<String, Value> {
        let mut out = Map::new();
        if conns == 0 {
            return out;
        }
        let n = conns as f64;
        let per = |kib: f64| (kib / n * 1000.0).round() / 1000.0;
        let delta = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a as f64 - b as f64),
            _ => None,
        };
        let sock = delta(self.tcp_mem_pages, before.tcp_mem_pages).map(|p| per(p * page_size() as f64 / 1024.0));
        let slab_all = delta(self.slab_kib, before.slab_kib).map(per);
        let unreclaim = delta(self.sunreclaim_kib, before.sunreclaim_kib).map(per);
        let mut grew = Map::new();
        let mut socket_caches = None;
        if let (Some(now), Some(then)) = (&self.caches, &before.caches) {
            let mut sum = 0.0;
            for (name, &bytes) in now {
                let d = bytes as f64 - then.get(name).copied().unwrap_or(0) as f64;
                if SOCKET_CACHES.contains(&name.as_str()) {
                    sum += d;
                }
                let kib = per(d / 1024.0);
                if kib.abs() >= 0.01 {
                    grew.insert(name.clone(), json!(kib));
                }
            }
            socket_caches = Some(per(sum / 1024.0));
        }
        let slab = socket_caches.or(slab_all);
        out.insert("kernel_sock_kib_per_conn".into(), json!(sock));
        out.insert("kernel_slab_kib_per_conn".into(), json!(slab));
        out.insert(
            "kernel_slab_source".into(),
            json!(if socket_caches.is_some() {
                "slabinfo socket caches"
            } else {
                "meminfo Slab"
            }),
        );
        out.insert("kernel_slab_all_kib_per_conn".into(), json!(slab_all));
        out.insert("kernel_sunreclaim_kib_per_conn".into(), json!(unreclaim));
        if !grew.is_empty() {
            out.insert("kernel_slab_caches_kib_per_conn".into(), Value::Object(grew));
        }
        let total = match (sock, slab) {
            (Some(a), Some(b)) => Some(((a + b) * 1000.0).round() / 1000.0),
            (a, b) => a.or(b),
        };
        out.insert("kernel_kib_per_conn".into(), json!(total));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOCKSTAT: &str = "sockets: used 13\nTCP: inuse 1 orphan 0 tw 0 alloc 1 mem 285\nUDP: inuse 0 mem 7\n";
    const MEMINFO: &str = "MemTotal:       24000000 kB\nSlab:             998988 kB\nSReclaimable:     898304 kB\nSUnreclaim:       100684 kB\n";
    const SLABINFO: &str = "slabinfo - version: 2.1\n\
# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables ...\n\
TCP                   92    143   2368   13    8 : tunables    0    0    0 : slabdata     11     11      0\n\
kmalloc-64          2618   2752     64   64    1 : tunables    0    0    0 : slabdata     43     43      0\n";

    #[test]
    fn reads_the_tcp_line_not_udp() {
        assert_eq!(parse_sockstat_tcp_mem(SOCKSTAT), Some(285));
        assert_eq!(parse_sockstat_tcp_mem("UDP: inuse 0 mem 7\n"), None);
    }

    #[test]
    fn reads_meminfo_fields_by_exact_name() {
        assert_eq!(parse_meminfo_kib(MEMINFO, "Slab"), Some(998_988));
        assert_eq!(parse_meminfo_kib(MEMINFO, "SUnreclaim"), Some(100_684));
        assert_eq!(parse_meminfo_kib(MEMINFO, "SReclaim"), None);
    }

    #[test]
    fn slabinfo_counts_the_objects_in_use() {
        let c = parse_slabinfo(SLABINFO);
        assert_eq!(c.get("TCP"), Some(&(92 * 2368)));
        assert_eq!(c.get("kmalloc-64"), Some(&(2618 * 64)));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn per_connection_growth_uses_the_socket_caches() {
        let mut caches = BTreeMap::new();
        caches.insert("TCP".to_string(), 1_000_000u64);
        caches.insert("kmalloc-64".to_string(), 1_000_000u64);
        let before = KernelMem {
            tcp_mem_pages: Some(100),
            slab_kib: Some(10_000),
            sunreclaim_kib: Some(5_000),
            caches: Some(caches.clone()),
        };
        caches.insert("TCP".to_string(), 1_000_000 + 1000 * 4096);
        caches.insert("kmalloc-64".to_string(), 1_000_000 + 1000 * 1024);
        let after = KernelMem {
            tcp_mem_pages: Some(100 + 250),
            slab_kib: Some(10_000 + 5_000),
            sunreclaim_kib: Some(5_000 + 4_000),
            caches: Some(caches),
        };
        let m = after.per_conn_since(&before, 1000);
        let f = |k: &str| m.get(k).and_then(Value::as_f64);
        assert_eq!(
            f("kernel_sock_kib_per_conn"),
            Some(250.0 * page_size() as f64 / 1024.0 / 1000.0)
        );
        assert_eq!(f("kernel_slab_kib_per_conn"), Some(4.0));
        assert_eq!(f("kernel_slab_all_kib_per_conn"), Some(5.0));
        assert_eq!(f("kernel_sunreclaim_kib_per_conn"), Some(4.0));
        assert_eq!(
            f("kernel_kib_per_conn"),
            Some(4.0 + 250.0 * page_size() as f64 / 1024.0 / 1000.0)
        );
        assert_eq!(m["kernel_slab_caches_kib_per_conn"]["kmalloc-64"], json!(1.0));
    }

    #[test]
    fn without_slabinfo_the_whole_slab_counts() {
        let before = KernelMem {
            tcp_mem_pages: Some(0),
            slab_kib: Some(1_000),
            ..KernelMem::default()
        };
        let after = KernelMem {
            tcp_mem_pages: Some(0),
            slab_kib: Some(9_000),
            ..KernelMem::default()
        };
        let m = after.per_conn_since(&before, 1000);
        assert_eq!(m["kernel_slab_kib_per_conn"], json!(8.0));
        assert_eq!(m["kernel_kib_per_conn"], json!(8.0));
        assert_eq!(m["kernel_slab_source"], json!("meminfo Slab"));
    }
}

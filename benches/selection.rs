//! Micro-benchmarks of server selection (issue 8, item 5): nanoseconds per
//! `pick` for every algorithm at 3, 100 and 1,000 servers, and per stick-table
//! `get` (hit and miss) and `insert` on a table of 100,000 entries.
//!
//! Run with `cargo bench --bench selection`. Groups are kept short (1 s warm-up,
//! 2 s of measuring, 30 samples) so the whole run takes a few minutes.
//!
//! Setup of every `pick`: servers of weight 1, all up, none excluded, and a
//! spread of active connections (0 to 15, fixed per server) so that leastconn,
//! power-of-two random and the bounded-load hashes compare real loads; with
//! factor 1.25 about 40% of the servers are over the bound, so bounded picks
//! often walk past the key's first owner. Keys cycle through 1,024
//! precomputed 32-character session ids. `pick` does not take a slot, so the
//! loads stay as set.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use tether::balance::{build, Balancer, Candidate, Candidates, Hashing, RequestKey};
use tether::config::types::Balance;
use tether::state::ServerState;
use tether::sticky::table::{MemoryTable, StickTable};

/// Server counts every algorithm is measured at.
const SERVER_COUNTS: [usize; 3] = [3, 100, 1_000];
/// Distinct request keys cycled through (a power of two, for a cheap wrap).
const KEYS: usize = 1_024;
/// Entries held by the stick table under test.
const TABLE_ENTRIES: usize = 100_000;

/// A deterministic 64-bit mix (SplitMix64's finaliser).
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A 32-hex-digit session id, like the ones servers issue.
fn session_id(salt: u64, i: usize) -> String {
    let i = i as u64;
    format!("{:016x}{:016x}", mix(salt ^ i), mix(salt.rotate_left(17) ^ i))
}

/// `n` candidates of weight 1, up, with 0–15 active connections each.
fn candidates(n: usize) -> Vec<Candidate> {
    (0..n)
        .map(|i| {
            let state = ServerState::new(1);
            state
                .active
                .store((mix(i as u64) % 16) as u32, std::sync::atomic::Ordering::Relaxed);
            Candidate {
                state: Arc::new(state),
                maxconn: None,
                slowstart: None,
            }
        })
        .collect()
}

/// The algorithms under test: a benchmark name, the config's `balance` and its hash settings.
fn algorithms() -> Vec<(&'static str, Balance, Hashing)> {
    // The hash settings only matter to hashing balances; `Map` stands in for the others.
    let consistent = |balance_factor| Hashing::Consistent { balance_factor };
    let maglev = |balance_factor| Hashing::Maglev {
        table_size: 65_537,
        balance_factor,
    };
    vec![
        ("roundrobin", Balance::Roundrobin, Hashing::Map),
        ("leastconn", Balance::Leastconn, Hashing::Map),
        ("random", Balance::Random, Hashing::Map),
        ("hash_map", Balance::Header, Hashing::Map),
        ("hash_consistent", Balance::Header, consistent(None)),
        ("hash_consistent_bounded_1.25", Balance::Header, consistent(Some(1.25))),
        ("hash_maglev", Balance::Header, maglev(None)),
        ("hash_maglev_bounded_1.25", Balance::Header, maglev(Some(1.25))),
    ]
}

fn pick(c: &mut Criterion) {
    let keys: Vec<String> = (0..KEYS).map(|i| session_id(0x5e55, i)).collect();
    for (name, balance, hash) in algorithms() {
        let mut group = c.benchmark_group(format!("pick/{name}"));
        for n in SERVER_COUNTS {
            let names: Vec<String> = (0..n).map(|i| format!("srv-{i}")).collect();
            let spec: Vec<(&str, u32)> = names.iter().map(|name| (name.as_str(), 1)).collect();
            let balancer: Box<dyn Balancer> = build(balance, hash, &spec);
            let servers = candidates(n);
            let candidates = Candidates::new(&servers, &[]);
            assert!(
                balancer
                    .pick(&candidates, &RequestKey::hashed(keys[0].as_bytes()))
                    .is_some(),
                "{name} picks a server"
            );
            group.bench_function(BenchmarkId::from_parameter(n), |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) & (KEYS - 1);
                    let key = RequestKey::hashed(keys[i].as_bytes());
                    black_box(balancer.pick(black_box(&candidates), &key))
                });
            });
        }
        group.finish();
    }
}

fn stick_table(c: &mut Criterion) {
    // Twice as many ids as the table holds: the second half are never in it
    // at first, and inserting in a cycle over all of them always adds a key
    // evicted long ago, so every `insert` adds one entry and evicts the oldest.
    let ids: Vec<String> = (0..2 * TABLE_ENTRIES).map(|i| session_id(0x571c, i)).collect();
    let servers: Vec<Arc<str>> = (0..3).map(|i| Arc::from(format!("srv-{i}"))).collect();
    let filled = || {
        let table = MemoryTable::new(Duration::from_secs(3_600), TABLE_ENTRIES);
        for (i, id) in ids[..TABLE_ENTRIES].iter().enumerate() {
            table.insert(id, servers[i % servers.len()].clone());
        }
        assert_eq!(table.len(), TABLE_ENTRIES);
        table
    };
    // Lookups in a scattered order, so consecutive ones touch unrelated memory.
    let order: Vec<usize> = (0..TABLE_ENTRIES)
        .map(|i| (mix(i as u64) % TABLE_ENTRIES as u64) as usize)
        .collect();

    let mut group = c.benchmark_group("stick_table_100k");
    let table = filled();
    group.bench_function("get_hit", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % TABLE_ENTRIES;
            let hit = table.get(black_box(&ids[order[i]]));
            debug_assert!(hit.is_some());
            black_box(hit)
        });
    });
    group.bench_function("get_miss", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % TABLE_ENTRIES;
            let miss = table.get(black_box(&ids[TABLE_ENTRIES + order[i]]));
            debug_assert!(miss.is_none());
            black_box(miss)
        });
    });
    drop(table);
    let table = filled();
    group.bench_function("insert_evicting", |b| {
        let mut i = TABLE_ENTRIES;
        b.iter(|| {
            table.insert(black_box(&ids[i]), servers[i % servers.len()].clone());
            i = (i + 1) % ids.len();
        });
    });
    group.finish();
    assert_eq!(table.len(), TABLE_ENTRIES);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .without_plots();
    targets = pick, stick_table
}
criterion_main!(benches);

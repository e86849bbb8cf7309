//! Latency histograms kept on the data path (connect, handshake, first
//! byte, queue wait, TLS handshake): fixed buckets from 100 µs to 10 s,
//! each an atomic counter, so recording one sample is a bucket search and
//! two relaxed adds — no lock, no label lookup. `/metrics` and the admin
//! API read them at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (100 µs – 10 s); one more
/// bucket (`+Inf`) takes what is slower.
pub const LATENCY_BOUNDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The bounds in nanoseconds, for the search on the data path.
const BOUNDS_NS: [u64; 16] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Number of buckets: the bounds plus `+Inf`.
pub const BUCKETS: usize = LATENCY_BOUNDS.len() + 1;

/// A histogram of durations whose buckets are atomic counters.
#[derive(Debug, Default)]
pub struct Latency {
    buckets: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

impl Latency {
    /// Records one sample.
    pub fn observe(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(ns)].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The counts and sum as of now (relaxed: each exact, not one instant).
    pub fn read(&self) -> LatencyReading {
        LatencyReading {
            counts: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// The bucket a sample of `ns` nanoseconds falls in: the first whose bound
/// is at least the sample (Prometheus buckets are `le`).
pub fn bucket_of(ns: u64) -> usize {
    BOUNDS_NS.partition_point(|&bound| bound < ns)
}

/// One reading of a [`Latency`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyReading {
    /// Samples per bucket (not cumulative), the last one `+Inf`.
    pub counts: [u64; BUCKETS],
    /// Sum of all samples, in seconds.
    pub sum_seconds: f64,
}

impl LatencyReading {
    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `(upper bound, count)` per bucket, the last bound `+Inf`, as the
    /// Prometheus encoder takes them.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        LATENCY_BOUNDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts)
            .collect()
    }

    /// The `q` quantile (0..=1) in seconds, interpolated linearly within
    /// its bucket as Prometheus' `histogram_quantile` does (the `+Inf`
    /// bucket answers its lower bound, 10 s); `None` without samples.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (index, &count) in self.counts.iter().enumerate() {
            if count > 0 && (below + count) as f64 >= rank {
                let lower = if index == 0 { 0.0 } else { LATENCY_BOUNDS[index - 1] };
                let Some(&upper) = LATENCY_BOUNDS.get(index) else {
                    return Some(lower);
                };
                let within = ((rank - below as f64) / count as f64).clamp(0.0, 1.0);
                return Some(lower + (upper - lower) * within);
            }
            below += count;
        }
        Some(LATENCY_BOUNDS[LATENCY_BOUNDS.len() - 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_fall_in_the_first_bucket_whose_bound_holds_them() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(100_000), 0);
        assert_eq!(bucket_of(100_001), 1);
        assert_eq!(bucket_of(30_000_000), 8);
        assert_eq!(bucket_of(10_000_000_000), 15);
        assert_eq!(bucket_of(10_000_000_001), 16);
    }

    #[test]
    fn the_bounds_in_seconds_and_nanoseconds_agree() {
        for (seconds, ns) in LATENCY_BOUNDS.iter().zip(BOUNDS_NS) {
            assert_eq!((seconds * 1e9).round() as u64, ns);
        }
    }

    #[test]
    fn quantiles_interpolate_within_their_bucket() {
        let latency = Latency::default();
        assert_eq!(latency.read().quantile(0.5), None);
        // 10 samples between 25 and 50 ms, one at 3 s.
        for _ in 0..10 {
            latency.observe(Duration::from_millis(30));
        }
        latency.observe(Duration::from_secs(3));
        let reading = latency.read();
        assert_eq!(reading.count(), 11);
        assert!((reading.sum_seconds - 3.3).abs() < 1e-9);
        let p50 = reading.quantile(0.5).unwrap();
        assert!((0.025..=0.05).contains(&p50), "{p50}");
        // rank 5.5 of 10 in the 25–50 ms bucket: 25 + 25 × 0.55 ms.
        assert!((p50 - 0.03875).abs() < 1e-9, "{p50}");
        let p99 = reading.quantile(0.99).unwrap();
        assert!((2.5..=5.0).contains(&p99), "{p99}");
        latency.observe(Duration::from_secs(60));
        assert_eq!(latency.read().quantile(1.0), Some(10.0));
    }
}

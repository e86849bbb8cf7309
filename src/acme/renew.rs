//! When to renew, and how long to wait after a failure: pure decisions.

use std::time::Duration;

/// When a certificate valid from `not_before` to `not_after` (Unix seconds)
/// is due: at two thirds of its lifetime (as Let's Encrypt advises), moved
/// earlier by `jitter` (0.0–1.0) times a twentieth of the lifetime, so that
/// many certificates issued together do not all renew in the same second.
pub fn due_at(not_before: i64, not_after: i64, jitter: f64) -> i64 {
    let lifetime = (not_after - not_before).max(0);
    let spread = (lifetime as f64 / 20.0 * jitter.clamp(0.0, 1.0)) as i64;
    not_before + lifetime * 2 / 3 - spread
}

/// Whether a certificate is still worth serving at `now`: not expired.
pub fn usable(not_after: i64, now: i64) -> bool {
    now < not_after
}

/// The wait before try number `failures + 1` after `failures` failed orders:
/// 5 s doubling, at most an hour (a CA's rate limits count failed validations).
pub fn backoff(failures: u32) -> Duration {
    let seconds = 5u64.saturating_mul(1u64 << failures.min(10));
    Duration::from_secs(seconds.min(3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_at_two_thirds_of_the_lifetime_minus_the_jitter() {
        let day = 86_400;
        assert_eq!(due_at(0, 90 * day, 0.0), 60 * day);
        // The jitter moves it earlier by at most a twentieth of the lifetime.
        let early = due_at(0, 90 * day, 1.0);
        assert_eq!(early, 60 * day - 90 * day / 20);
        assert!(due_at(0, 90 * day, 0.5) < 60 * day && due_at(0, 90 * day, 0.5) > early);
        assert!(usable(90 * day, 89 * day) && !usable(90 * day, 90 * day));
    }

    #[test]
    fn backoff_doubles_from_five_seconds_up_to_an_hour() {
        assert_eq!(backoff(0), Duration::from_secs(5));
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(3), Duration::from_secs(40));
        assert_eq!(backoff(30), Duration::from_secs(3600));
    }
}

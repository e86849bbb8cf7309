//! Primality, for table sizes that must be prime (Maglev).

/// Whether `n` is prime (trial division by 2, 3 and `6k ± 1`). Config
/// validation and the Maglev table call it: the table needs a prime size so
/// every server's permutation covers every slot.
pub fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    if n < 4 {
        return true;
    }
    if n % 2 == 0 || n % 3 == 0 {
        return false;
    }
    let mut d = 5usize;
    while d.checked_mul(d).is_some_and(|sq| sq <= n) {
        if n % d == 0 || n % (d + 2) == 0 {
            return false;
        }
        d += 6;
    }
    true
}

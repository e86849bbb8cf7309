//! Small helpers every layer may use, written once: the SplitMix64 mixer,
//! the lock that survives a poisoned mutex, the two clocks, and a primality
//! test.
//!
//! This is the lowest layer: it knows nothing of tether's model and imports
//! nothing from the crate.

pub mod clock;
pub mod lock;
pub mod mix;
pub mod prime;

pub use lock::lock;

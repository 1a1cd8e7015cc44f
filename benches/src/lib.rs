//! canopy-benches: criterion benches (`benches/*.rs`) and, as later parts land, the comparison
//! harness that runs Canopy side by side with its baselines.
//!
//! Shared bench inputs live here so every bench builds them the same way.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A pseudo-gradient-like vector: magnitudes spread over seven decades, random signs, seeded.
pub fn random_update(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len)
        .map(|_| {
            let magnitude = 10f32.powf(rng.random_range(-6.0..1.0));
            if rng.random_bool(0.5) {
                magnitude
            } else {
                -magnitude
            }
        })
        .collect()
}

/// Seeded random bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    ChaCha8Rng::seed_from_u64(seed).fill(&mut data[..]);
    data
}

/// The environment variable `{prefix}_{name}` parsed, or `default` when it is unset; a value
/// that does not parse stops the bench with a message naming it.
pub fn env_setting<T: std::str::FromStr>(prefix: &str, name: &str, default: T) -> T
where
    T::Err: std::fmt::Display,
{
    let key = format!("{prefix}_{name}");
    match std::env::var(&key) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{key}={v:?} does not parse: {e}")),
        Err(_) => default,
    }
}

//! Draws a node cannot predict: which results are re-run for verification, and which corpus
//! task a volunteer is handed. Both are keyed with a per-run secret the coordinator keeps in
//! its state database and never sends, so nothing a node receives (its lease, the task id, the
//! round) tells it whether its work will be checked, or lets two identities that ask one
//! after the other land on the two runs of one corpus chunk. Before, re-runs were a hash of
//! the task id in the lease, and corpus tasks went out in order, a chunk's two runs side by
//! side.

use std::fmt;
use std::str::FromStr;

use canopy_protocol::Digest;

use crate::state::{State, StateError};

/// The `meta` key the secret is kept under.
pub const META_KEY: &str = "sampling_secret";

/// Domain tag in front of a re-run draw.
const RERUN_DOMAIN: &[u8] = b"canopy/v1/rerun";
/// Domain tag in front of a task-order draw.
const ORDER_DOMAIN: &[u8] = b"canopy/v1/order";
/// Domain tag in front of a corpus re-check draw.
const RECHECK_DOMAIN: &[u8] = b"canopy/v1/corpus-recheck";

/// Why the run's secret could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SamplingError {
    /// The state database failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The operating system gave no randomness.
    #[error("no randomness for the run's secret: {0}")]
    Entropy(getrandom::Error),
}

/// The run's secret from `meta`, made and stored on the run's first start (or when what is
/// stored cannot be read).
pub fn load_or_create(state: &mut State) -> Result<Sampler, SamplingError> {
    if let Some(text) = state.read().meta(META_KEY)? {
        match Sampler::from_hex(&text) {
            Some(sampler) => return Ok(sampler),
            None => tracing::warn!("the stored sampling secret is unreadable; drawing a new one"),
        }
    }
    let sampler = Sampler::generate().map_err(SamplingError::Entropy)?;
    state.transaction(|tx| tx.set_meta(META_KEY, &sampler.to_hex()))?;
    Ok(sampler)
}

/// The per-run secret verification work is drawn with.
#[derive(Clone, PartialEq, Eq)]
pub struct Sampler {
    key: [u8; 32],
}

impl fmt::Debug for Sampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sampler(secret)")
    }
}

impl Sampler {
    /// A sampler with `key` as its secret.
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// A sampler with a fresh secret from the operating system.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)?;
        Ok(Self { key })
    }

    /// Reads a secret written by [`Sampler::to_hex`].
    pub fn from_hex(text: &str) -> Option<Self> {
        Digest::from_str(text)
            .ok()
            .map(|d| Self::new(*d.as_bytes()))
    }

    /// The secret as hex, for the state database only.
    pub fn to_hex(&self) -> String {
        Digest::from_bytes(self.key).to_string()
    }

    /// Where task `task` stands in `peer`'s own order of tasks: each peer's order is its own
    /// draw, so two peers asking at once seldom pick the same chunk.
    pub fn order(&self, peer: &str, task: u64) -> u64 {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(ORDER_DOMAIN);
        hasher.update(&(peer.len() as u64).to_le_bytes());
        hasher.update(peer.as_bytes());
        hasher.update(&task.to_le_bytes());
        let h = hasher.finalize();
        u64::from_le_bytes(*h.as_bytes().first_chunk::<8>().unwrap_or(&[0; 8]))
    }

    /// Whether task `task` is re-run: true for about `fraction` of tasks.
    pub fn rerun(&self, task: u64, fraction: f64) -> bool {
        self.draw(RERUN_DOMAIN, &task.to_le_bytes()) < fraction
    }

    /// Whether the coordinator computes corpus chunk `chunk` again before accepting the
    /// volunteers' agreement on it: true for about `fraction` of chunks.
    pub fn recheck(&self, chunk: &[u8; 32], fraction: f64) -> bool {
        self.draw(RECHECK_DOMAIN, chunk) < fraction
    }

    /// A uniform draw in [0, 1] keyed by the secret, for `value` under `domain`.
    fn draw(&self, domain: &[u8], value: &[u8]) -> f64 {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(domain);
        hasher.update(value);
        let h = hasher.finalize();
        let x = u64::from_le_bytes(*h.as_bytes().first_chunk::<8>().unwrap_or(&[0; 8]));
        x as f64 / u64::MAX as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a node could compute from its lease before the draw was keyed.
    fn unkeyed(task: u64, fraction: f64) -> bool {
        let h = Digest::of(&task.to_le_bytes());
        let x = u64::from_le_bytes(*h.as_bytes().first_chunk::<8>().unwrap_or(&[0; 8]));
        (x as f64 / u64::MAX as f64) < fraction
    }

    /// Issue 19, "spot checks are predictable": the draw depends on the secret, so neither the
    /// old rule over the task id nor another run's secret predicts it better than chance.
    #[test]
    fn reruns_cannot_be_predicted_from_the_task_id() {
        let fraction = 0.25;
        let n = 20_000u64;
        let a = Sampler::new([1; 32]);
        let b = Sampler::new([2; 32]);
        let drawn: Vec<bool> = (0..n).map(|t| a.rerun(t, fraction)).collect();
        let share = drawn.iter().filter(|d| **d).count() as f64 / n as f64;
        assert!((share - fraction).abs() < 0.015, "share {share}");
        // Of the tasks a node would think safe by the old rule, a quarter are still re-run.
        let safe: Vec<u64> = (0..n).filter(|t| !unkeyed(*t, fraction)).collect();
        let caught = safe.iter().filter(|t| drawn[**t as usize]).count() as f64;
        let rate = caught / safe.len() as f64;
        assert!(
            (rate - fraction).abs() < 0.02,
            "re-run rate among 'safe' tasks {rate}"
        );
        // Another secret draws other tasks: the overlap is what chance gives.
        let both = (0..n)
            .filter(|t| drawn[*t as usize] && b.rerun(*t, fraction))
            .count() as f64;
        let overlap = both / n as f64;
        assert!(
            (overlap - fraction * fraction).abs() < 0.015,
            "overlap {overlap}"
        );
    }

    #[test]
    fn the_secret_round_trips_and_never_shows_in_logs() {
        let s = Sampler::generate().unwrap();
        assert_eq!(Sampler::from_hex(&s.to_hex()), Some(s.clone()));
        assert!(Sampler::from_hex("not hex").is_none());
        assert!(!format!("{s:?}").contains(&s.to_hex()[..8]));
        assert!(!Sampler::new([0; 32]).rerun(7, 0.0));
        assert!(Sampler::new([0; 32]).rerun(7, 1.0));
    }

    /// The secret is drawn on a run's first start, kept across restarts, and differs from one
    /// run to the next.
    #[test]
    fn a_run_keeps_its_secret_and_another_run_has_its_own() {
        let draws = |p: &crate::project::Project| -> Vec<bool> {
            (0..400).map(|t| p.rerun_sampled(t)).collect()
        };
        let mut config = crate::config::Config::default();
        config.training.batch_size = 1;
        config.training.seq_len = 16;
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = crate::project::Project::open(a.path(), config.clone()).unwrap();
        let drawn = draws(&first);
        drop(first);
        let again = crate::project::Project::open(a.path(), config.clone()).unwrap();
        assert_eq!(draws(&again), drawn, "the same run draws the same tasks");
        let other = crate::project::Project::open(b.path(), config).unwrap();
        assert_ne!(draws(&other), drawn, "another run draws others");
    }
}

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

/// Latency figures of one kind of operation, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest sample.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    /// Summarises `samples` (milliseconds, in any order; sorted in place). All zero when empty.
    pub fn of(samples: &mut [f64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_by(f64::total_cmp);
        Self {
            count: samples.len(),
            p50: quantile(samples, 0.50),
            p99: quantile(samples, 0.99),
            max: samples[samples.len() - 1],
            mean: samples.iter().sum::<f64>() / samples.len() as f64,
        }
    }
}

/// The `q` quantile (`0..=1`) of ascending `sorted` samples, by nearest rank; 0 when empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// What Linux's `/proc` says about a process (`None` elsewhere, or when the process is gone).
pub mod proc_stats {
    /// Kernel clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`, 100 on every Linux
    /// architecture Canopy builds for).
    const TICKS_PER_SEC: u64 = 100;

    /// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`, …), in bytes.
    pub fn status_bytes(pid: u32, field: &str) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kib * 1024)
        })
    }

    /// User plus system CPU time the process has used, in milliseconds (`utime + stime` of
    /// `/proc/<pid>/stat`).
    pub fn cpu_ms(pid: u32) -> Option<u64> {
        stat_cpu_ms(&format!("/proc/{pid}/stat"))
    }

    /// [`cpu_ms`] of one thread `tid` of process `pid` (the main thread's `tid` is `pid`).
    pub fn thread_cpu_ms(pid: u32, tid: u32) -> Option<u64> {
        stat_cpu_ms(&format!("/proc/{pid}/task/{tid}/stat"))
    }

    fn stat_cpu_ms(path: &str) -> Option<u64> {
        let text = std::fs::read_to_string(path).ok()?;
        // The command name (field 2) is in parentheses and may hold spaces: count from the
        // last ')'. utime and stime are fields 14 and 15, so the 12th and 13th after it.
        let after = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some((utime + stime) * 1000 / TICKS_PER_SEC)
    }

    /// The 1-minute load average of the machine.
    pub fn load_average() -> Option<f64> {
        std::fs::read_to_string("/proc/loadavg")
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }
}

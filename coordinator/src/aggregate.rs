//! Robust aggregation of DiLoCo pseudo-gradients and the outer optimizer.
//!
//! Every volunteer runs a number of inner steps from the round's parameters
//! `θ_round` and reports a pseudo-gradient `Δ = θ_round − θ_local`, a flat
//! `f32` vector as long as the model. The coordinator turns the round's
//! updates into a single outer gradient in four stages:
//!
//! 1. **Screening** ([`check_update`]): an update of the wrong length or with
//!    a NaN / infinity is rejected outright (the coordinator refuses the
//!    result, see `crate::refusal`). [`aggregate`] re-checks this and returns an error
//!    rather than panicking if a caller forgot.
//! 2. **Norm clipping**: the median `m` of the L2 norms of this round's
//!    updates is a robust estimate of an honest update's size. Any update
//!    whose norm exceeds `clip_multiple · m` is scaled down to exactly that
//!    bound, so a single huge (scaled or noisy) update cannot dominate.
//!    Norms are taken before weighting. (If more than half the updates are
//!    exactly zero the median, and so the bound, is zero and every update is
//!    scaled to zero: the majority said "no change".)
//! 3. **Staleness weighting**: each update is multiplied by its weight in
//!    `(0, 1]` (1 for a fresh update, less for one computed from an older
//!    `θ_round`).
//! 4. **Coordinate-wise robust combine** ([`Combine`]): for every coordinate
//!    the `n` (clipped, weighted) values are combined by a trimmed mean
//!    (drop the `⌊trim·n⌋` smallest and largest values, average the rest),
//!    the median, or the plain mean. Trimmed mean and median tolerate a
//!    minority of arbitrary (Byzantine) updates; the plain mean does not.
//!
//! Coordinates are processed in parallel blocks of [`BLOCK_LEN`] with rayon,
//! each worker using a scratch buffer of `n` values; the result does not
//! depend on the number of threads. [`aggregate_held`] gives the same result
//! from updates [held](Held) sparsely, as top-k updates are: a round of a
//! thousand of them then takes megabytes, not gigabytes.
//!
//! The outer step is Nesterov SGD as in DiLoCo (PyTorch
//! `SGD(nesterov=True)`), see [`OuterOptimizer`], with DiLoCo's defaults
//! [`DILOCO_OUTER_LR`] and [`DILOCO_OUTER_MOMENTUM`].

use std::fmt;
use std::str::FromStr;

use rayon::prelude::*;

pub mod direction;
mod held;
mod optimizer;
pub use held::{Held, aggregate_held};
pub use optimizer::OuterOptimizer;

/// DiLoCo's outer learning rate (Douillard et al., 2023).
pub const DILOCO_OUTER_LR: f32 = 0.7;

/// DiLoCo's outer Nesterov momentum (Douillard et al., 2023).
pub const DILOCO_OUTER_MOMENTUM: f32 = 0.9;

/// Default fraction trimmed from each end per coordinate by [`Combine::TrimmedMean`].
pub const DEFAULT_TRIM: f32 = 0.25;

/// Default clipping bound, as a multiple of the round's median update norm.
pub const DEFAULT_CLIP_MULTIPLE: f32 = 2.0;

/// Number of coordinates per parallel work block.
pub const BLOCK_LEN: usize = 4096;

/// Errors from aggregation and the outer optimizer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AggregateError {
    /// [`aggregate`] was called with no updates.
    #[error("no updates to aggregate")]
    NoUpdates,
    /// A candidate update failed [`check_update`].
    #[error("update {index} rejected: {reason}")]
    BadUpdate {
        /// Position of the candidate in the input slice.
        index: usize,
        /// Why it was rejected.
        reason: Rejection,
    },
    /// A candidate's staleness weight is not in `(0, 1]`.
    #[error("update {index} has staleness weight {weight}; expected a value in (0, 1]")]
    BadWeight {
        /// Position of the candidate in the input slice.
        index: usize,
        /// The offending weight.
        weight: f32,
    },
    /// The trimmed-mean fraction is not in `[0, 0.5)`.
    #[error("trim fraction {trim} is outside [0, 0.5)")]
    BadTrim {
        /// The offending fraction.
        trim: f32,
    },
    /// The clip multiple is negative or not finite.
    #[error("clip multiple {clip_multiple} must be finite and non-negative")]
    BadClipMultiple {
        /// The offending multiple.
        clip_multiple: f32,
    },
    /// A combine rule name could not be parsed.
    #[error("unknown combine rule {name:?}; expected trimmed_mean, median or mean")]
    UnknownCombine {
        /// The name that was given.
        name: String,
    },
    /// The outer learning rate is not finite and positive.
    #[error("outer learning rate {lr} must be finite and positive")]
    BadLearningRate {
        /// The offending learning rate.
        lr: f32,
    },
    /// The outer momentum is not in `[0, 1)`.
    #[error("outer momentum {momentum} is outside [0, 1)")]
    BadMomentum {
        /// The offending momentum.
        momentum: f32,
    },
    /// Parameters, outer gradient or momentum buffer differ in length.
    #[error("length mismatch: expected {expected}, got {got}")]
    LengthMismatch {
        /// Length of the optimizer's momentum buffer.
        expected: usize,
        /// Length that was supplied.
        got: usize,
    },
    /// The outer gradient passed to [`OuterOptimizer::step`] is not finite.
    #[error("outer gradient has a non-finite value at index {index}")]
    NonFiniteDelta {
        /// First offending index.
        index: usize,
    },
    /// A momentum buffer restored from a checkpoint is not finite.
    #[error("momentum buffer has a non-finite value at index {index}")]
    NonFiniteBuffer {
        /// First offending index.
        index: usize,
    },
    /// The model step's codec, or the carry restored for it, is not usable.
    #[error("model step codec: {0}")]
    StepCodec(canopy_protocol::error::CompressError),
}

/// L2 norm of `values`, accumulated in `f64`.
pub fn l2_norm(values: &[f32]) -> f64 {
    values
        .iter()
        .map(|&v| {
            let v = f64::from(v);
            v * v
        })
        .sum::<f64>()
        .sqrt()
}

/// Cosine similarity of two vectors, accumulated in `f64`.
///
/// Returns `None` when the lengths differ, either norm is zero, or the
/// values are not finite.
pub fn cosine(a: &[f32], b: &[f32]) -> Option<f64> {
    if a.len() != b.len() {
        return None;
    }
    let (na, nb) = (l2_norm(a), l2_norm(b));
    if na == 0.0 || nb == 0.0 {
        return None;
    }
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum();
    let c = dot / (na * nb);
    c.is_finite().then(|| c.clamp(-1.0, 1.0))
}

/// Why [`check_update`] refused an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The update contains a NaN or an infinity.
    #[error("non-finite value at index {index}")]
    NonFinite {
        /// First offending index.
        index: usize,
    },
    /// The update does not have the model's length.
    #[error("wrong shape: expected {expected} values, got {got}")]
    WrongShape {
        /// The model's parameter count.
        expected: usize,
        /// The update's length.
        got: usize,
    },
}

/// Screens one update: checks its length and that every value is finite,
/// and returns its L2 norm.
pub fn check_update(values: &[f32], expected_len: usize) -> Result<f64, Rejection> {
    if values.len() != expected_len {
        return Err(Rejection::WrongShape {
            expected: expected_len,
            got: values.len(),
        });
    }
    if let Some(index) = values.iter().position(|v| !v.is_finite()) {
        return Err(Rejection::NonFinite { index });
    }
    Ok(l2_norm(values))
}

/// The coordinate-wise rule that combines the round's updates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Combine {
    /// Drop `⌊trim·n⌋` values from each end per coordinate (never all of
    /// them) and average the rest; `trim` must be in `[0, 0.5)`.
    TrimmedMean {
        /// Fraction trimmed from each end.
        trim: f32,
    },
    /// Coordinate-wise median; an even count averages the two middle values.
    Median,
    /// Plain coordinate-wise mean (not robust).
    Mean,
}

impl Default for Combine {
    fn default() -> Self {
        Combine::TrimmedMean { trim: DEFAULT_TRIM }
    }
}

impl Combine {
    /// Short stable name, as accepted by [`FromStr`].
    pub fn name(&self) -> &'static str {
        match self {
            Combine::TrimmedMean { .. } => "trimmed_mean",
            Combine::Median => "median",
            Combine::Mean => "mean",
        }
    }

    /// Checks the rule's parameters.
    pub fn validate(&self) -> Result<(), AggregateError> {
        match *self {
            Combine::TrimmedMean { trim } if !(0.0..0.5).contains(&trim) => {
                Err(AggregateError::BadTrim { trim })
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Combine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Combine::TrimmedMean { trim } => write!(f, "trimmed_mean(trim={trim})"),
            other => f.write_str(other.name()),
        }
    }
}

impl FromStr for Combine {
    type Err = AggregateError;

    /// Parses `trimmed_mean` (with [`DEFAULT_TRIM`]), `median` or `mean`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "trimmed_mean" => Ok(Combine::default()),
            "median" => Ok(Combine::Median),
            "mean" => Ok(Combine::Mean),
            other => Err(AggregateError::UnknownCombine {
                name: other.to_owned(),
            }),
        }
    }
}

/// How [`aggregate`] combines a round's updates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AggregateConfig {
    /// Coordinate-wise combine rule.
    pub combine: Combine,
    /// Updates with norm above `clip_multiple ×` the round's median norm are
    /// scaled down to that bound; 0 disables clipping.
    pub clip_multiple: f32,
}

impl Default for AggregateConfig {
    fn default() -> Self {
        AggregateConfig {
            combine: Combine::default(),
            clip_multiple: DEFAULT_CLIP_MULTIPLE,
        }
    }
}

impl AggregateConfig {
    /// Checks the combine rule and the clip multiple.
    pub fn validate(&self) -> Result<(), AggregateError> {
        self.combine.validate()?;
        if !self.clip_multiple.is_finite() || self.clip_multiple < 0.0 {
            return Err(AggregateError::BadClipMultiple {
                clip_multiple: self.clip_multiple,
            });
        }
        Ok(())
    }
}

/// One update offered to [`aggregate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate<'a> {
    /// The pseudo-gradient `θ_round − θ_local`.
    pub values: &'a [f32],
    /// Staleness weight in `(0, 1]` multiplying the values (1 when fresh).
    pub weight: f32,
}

/// Result of [`aggregate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// The combined outer gradient.
    pub delta: Vec<f32>,
    /// Number of updates that went into the combine.
    pub used: usize,
    /// Number of updates that were scaled down by clipping.
    pub clipped: usize,
    /// Median L2 norm of the round's updates (before clipping and weighting).
    pub median_norm: f64,
}

/// Median of a non-empty set of finite values; even counts average the two
/// middle values. Sorts `values` in place. Returns 0 for an empty slice.
fn median_in_place(values: &mut [f64]) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return 0.0;
    }
    let hi = values[n / 2];
    if n % 2 == 1 {
        hi
    } else {
        0.5 * (values[n / 2 - 1] + hi)
    }
}

/// Number of values dropped from each end by a trimmed mean over `n` values.
fn trim_count(trim: f32, n: usize) -> usize {
    // `trim` is validated to [0, 0.5); the cast saturates and the clamp keeps
    // at least one value whatever rounding does.
    let k = (f64::from(trim) * n as f64).floor() as usize;
    k.min(n.saturating_sub(1) / 2)
}

/// Combines one coordinate's values; `values` is reordered.
fn combine_values(combine: Combine, values: &mut [f64]) -> f64 {
    match combine {
        Combine::Mean => {
            if values.is_empty() {
                0.0
            } else {
                values.iter().sum::<f64>() / values.len() as f64
            }
        }
        Combine::Median => median_in_place(values),
        Combine::TrimmedMean { trim } => {
            values.sort_unstable_by(f64::total_cmp);
            let n = values.len();
            let k = trim_count(trim, n);
            let kept = values.get(k..n - k).unwrap_or(&[]);
            if kept.is_empty() {
                0.0
            } else {
                kept.iter().sum::<f64>() / kept.len() as f64
            }
        }
    }
}

/// What [`aggregate`] and [`aggregate_held`] do before the combine: checks the configuration,
/// that there are updates and that every weight is in `(0, 1]`, screens update `i` with
/// `check(i)` (in parallel), and returns each update's scale, how many were clipped, and the
/// median norm.
fn prepare(
    config: &AggregateConfig,
    weights: &[f32],
    check: impl Fn(usize) -> Result<f64, Rejection> + Send + Sync,
) -> Result<(Vec<f64>, usize, f64), AggregateError> {
    config.validate()?;
    if weights.is_empty() {
        return Err(AggregateError::NoUpdates);
    }
    check_weights(weights.iter().copied())?;
    let checked: Vec<Result<f64, Rejection>> =
        (0..weights.len()).into_par_iter().map(check).collect();
    let norms = norms(checked)?;
    Ok(clip_scales(weights.iter().copied(), &norms, config))
}

/// Checks that every staleness weight is in `(0, 1]`.
fn check_weights(weights: impl Iterator<Item = f32>) -> Result<(), AggregateError> {
    for (index, weight) in weights.enumerate() {
        if !(weight > 0.0 && weight <= 1.0) {
            return Err(AggregateError::BadWeight { index, weight });
        }
    }
    Ok(())
}

/// The updates' norms, or the first screening failure.
fn norms(checked: Vec<Result<f64, Rejection>>) -> Result<Vec<f64>, AggregateError> {
    checked
        .into_iter()
        .enumerate()
        .map(|(index, r)| r.map_err(|reason| AggregateError::BadUpdate { index, reason }))
        .collect()
}

/// Each update's scale (its staleness weight, times its clipping factor when its norm is over
/// the bound), how many were clipped, and the median norm.
fn clip_scales(
    weights: impl Iterator<Item = f32>,
    norms: &[f64],
    config: &AggregateConfig,
) -> (Vec<f64>, usize, f64) {
    let median_norm = median_in_place(&mut norms.to_vec());
    let bound = f64::from(config.clip_multiple) * median_norm;
    let clip = config.clip_multiple > 0.0;
    let mut clipped = 0;
    let scales = weights
        .zip(norms)
        .map(|(weight, &norm)| {
            let mut s = f64::from(weight);
            if clip && norm > bound {
                clipped += 1;
                s *= bound / norm;
            }
            s
        })
        .collect();
    (scales, clipped, median_norm)
}

/// Robustly combines a round's updates into one outer gradient of length `len`.
///
/// Each candidate is validated (length, finiteness, weight), clipped to
/// `clip_multiple ×` the median norm, multiplied by its staleness weight and
/// then combined coordinate-wise by `config.combine`, in parallel blocks.
pub fn aggregate(
    updates: &[Candidate<'_>],
    len: usize,
    config: &AggregateConfig,
) -> Result<Aggregate, AggregateError> {
    let weights: Vec<f32> = updates.iter().map(|c| c.weight).collect();
    let (scales, clipped, median_norm) =
        prepare(config, &weights, |i| check_update(updates[i].values, len))?;

    let n = updates.len();
    let combine = config.combine;
    let mut delta = vec![0.0f32; len];
    delta.par_chunks_mut(BLOCK_LEN).enumerate().for_each_init(
        || Vec::with_capacity(n),
        |scratch: &mut Vec<f64>, (block, out)| {
            let start = block * BLOCK_LEN;
            for (j, o) in out.iter_mut().enumerate() {
                let i = start + j;
                scratch.clear();
                scratch.extend(
                    updates
                        .iter()
                        .zip(&scales)
                        .map(|(c, &s)| c.values.get(i).map_or(0.0, |&v| f64::from(v) * s)),
                );
                *o = combine_values(combine, scratch) as f32;
            }
        },
    );

    Ok(Aggregate {
        delta,
        used: n,
        clipped,
        median_norm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn rng(seed: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(seed)
    }

    /// Standard normal sample by Box–Muller.
    fn gauss(r: &mut ChaCha8Rng) -> f32 {
        let u1: f64 = r.random_range(f64::MIN_POSITIVE..1.0);
        let u2: f64 = r.random();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    fn fresh(values: &[f32]) -> Candidate<'_> {
        Candidate {
            values,
            weight: 1.0,
        }
    }

    fn rel_err(a: &[f32], b: &[f32]) -> f64 {
        let diff: Vec<f32> = a.iter().zip(b).map(|(x, y)| x - y).collect();
        l2_norm(&diff) / l2_norm(b)
    }

    fn mean_of(vs: &[Vec<f32>]) -> Vec<f32> {
        let len = vs[0].len();
        (0..len)
            .map(|i| (vs.iter().map(|v| f64::from(v[i])).sum::<f64>() / vs.len() as f64) as f32)
            .collect()
    }

    /// Straightforward sequential reference of [`aggregate`]: same arithmetic,
    /// one coordinate at a time, no blocks, no rayon.
    fn reference(
        updates: &[Vec<f32>],
        weights: &[f32],
        combine: Combine,
        clip_multiple: f32,
    ) -> Vec<f32> {
        let n = updates.len();
        let norms: Vec<f64> = updates.iter().map(|u| l2_norm(u)).collect();
        let mut sorted = norms.clone();
        sorted.sort_by(f64::total_cmp);
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            0.5 * (sorted[n / 2 - 1] + sorted[n / 2])
        };
        let bound = f64::from(clip_multiple) * median;
        let scales: Vec<f64> = norms
            .iter()
            .zip(weights)
            .map(|(&norm, &w)| {
                let mut s = f64::from(w);
                if clip_multiple > 0.0 && norm > bound {
                    s *= bound / norm;
                }
                s
            })
            .collect();
        let len = updates[0].len();
        let mut out = Vec::with_capacity(len);
        for i in 0..len {
            let mut col: Vec<f64> = updates
                .iter()
                .zip(&scales)
                .map(|(u, &s)| f64::from(u[i]) * s)
                .collect();
            let v = match combine {
                Combine::Mean => col.iter().sum::<f64>() / n as f64,
                Combine::Median => {
                    col.sort_by(f64::total_cmp);
                    if n % 2 == 1 {
                        col[n / 2]
                    } else {
                        0.5 * (col[n / 2 - 1] + col[n / 2])
                    }
                }
                Combine::TrimmedMean { trim } => {
                    col.sort_by(f64::total_cmp);
                    let k = (f64::from(trim) * n as f64).floor() as usize;
                    let kept = &col[k..n - k];
                    kept.iter().sum::<f64>() / kept.len() as f64
                }
            };
            out.push(v as f32);
        }
        out
    }

    #[test]
    fn l2_norm_and_cosine() {
        assert_eq!(l2_norm(&[]), 0.0);
        assert!((l2_norm(&[3.0, 4.0]) - 5.0).abs() < 1e-12);
        let a = [1.0, 2.0, -1.0];
        let b = [2.0, 4.0, -2.0];
        let neg: Vec<f32> = a.iter().map(|x| -x).collect();
        assert!((cosine(&a, &b).unwrap() - 1.0).abs() < 1e-12);
        assert!((cosine(&a, &neg).unwrap() + 1.0).abs() < 1e-12);
        assert!(cosine(&[1.0, 0.0], &[0.0, 1.0]).unwrap().abs() < 1e-12);
        assert_eq!(cosine(&a, &[1.0, 2.0]), None);
        assert_eq!(cosine(&a, &[0.0; 3]), None);
        assert_eq!(cosine(&[], &[]), None);
    }

    #[test]
    fn check_update_screens_shape_and_finiteness() {
        assert!((check_update(&[3.0, 4.0], 2).unwrap() - 5.0).abs() < 1e-12);
        assert_eq!(
            check_update(&[1.0, 2.0], 3),
            Err(Rejection::WrongShape {
                expected: 3,
                got: 2
            })
        );
        assert_eq!(
            check_update(&[1.0, f32::NAN, f32::INFINITY], 3),
            Err(Rejection::NonFinite { index: 1 })
        );
        assert_eq!(
            check_update(&[1.0, f32::NEG_INFINITY], 2),
            Err(Rejection::NonFinite { index: 1 })
        );
        let msg = Rejection::WrongShape {
            expected: 3,
            got: 2,
        }
        .to_string();
        assert!(msg.contains('3') && msg.contains('2'), "{msg}");
        assert!(Rejection::NonFinite { index: 7 }.to_string().contains('7'));
    }

    #[test]
    fn combine_parse_name_and_defaults() {
        assert_eq!(Combine::default(), Combine::TrimmedMean { trim: 0.25 });
        for c in [Combine::default(), Combine::Median, Combine::Mean] {
            assert_eq!(c.name().parse::<Combine>().unwrap(), c);
        }
        assert!(matches!(
            "mode".parse::<Combine>(),
            Err(AggregateError::UnknownCombine { .. })
        ));
        let cfg = AggregateConfig::default();
        assert_eq!(cfg.combine, Combine::default());
        assert_eq!(cfg.clip_multiple, 2.0);
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn adversarial_quarter_is_outvoted_by_trimmed_mean_and_median() {
        const LEN: usize = 10_000;
        let mut r = rng(0xD1_10C0);
        let truth: Vec<f32> = (0..LEN).map(|_| r.random_range(-1.0..1.0)).collect();
        let honest: Vec<Vec<f32>> = (0..12)
            .map(|_| truth.iter().map(|&t| t + 0.1 * gauss(&mut r)).collect())
            .collect();
        let honest_mean = mean_of(&honest);

        let scaled: Vec<f32> = honest[0].iter().map(|v| -10.0 * v).collect();
        let flipped: Vec<f32> = honest[1].iter().map(|v| -v).collect();
        let noise: Vec<f32> = (0..LEN).map(|_| 20.0 * gauss(&mut r)).collect();
        let mut nan = honest[2].clone();
        nan[LEN / 3] = f32::NAN;

        // Interleave attackers among the honest updates.
        let mut incoming: Vec<&[f32]> = honest.iter().map(Vec::as_slice).collect();
        incoming.insert(3, &scaled);
        incoming.insert(7, &flipped);
        incoming.insert(10, &noise);
        incoming.insert(14, &nan);
        assert_eq!(incoming.len(), 16);

        let mut rejected = Vec::new();
        let mut accepted = Vec::new();
        let mut accepted_norms = Vec::new();
        for values in incoming {
            match check_update(values, LEN) {
                Ok(norm) => {
                    accepted.push(fresh(values));
                    accepted_norms.push(norm);
                }
                Err(rejection) => rejected.push(rejection),
            }
        }
        assert_eq!(accepted.len(), 15);

        let robust = aggregate(&accepted, LEN, &AggregateConfig::default()).unwrap();
        assert_eq!(robust.used, 15);
        assert_eq!(robust.delta.len(), LEN);

        // The scaled update was clipped, and the count matches the rule.
        let bound = 2.0 * robust.median_norm;
        assert!(l2_norm(&scaled) > bound);
        let expected_clipped = accepted_norms.iter().filter(|&&n| n > bound).count();
        assert!(expected_clipped >= 1);
        assert_eq!(robust.clipped, expected_clipped);

        let err_trimmed = rel_err(&robust.delta, &honest_mean);
        assert!(
            err_trimmed < 0.1,
            "trimmed mean relative error {err_trimmed}"
        );

        let median_cfg = AggregateConfig {
            combine: Combine::Median,
            ..AggregateConfig::default()
        };
        let median = aggregate(&accepted, LEN, &median_cfg).unwrap();
        let err_median = rel_err(&median.delta, &honest_mean);
        assert!(err_median < 0.1, "median relative error {err_median}");

        let naive_cfg = AggregateConfig {
            combine: Combine::Mean,
            clip_multiple: 0.0,
        };
        let naive = aggregate(&accepted, LEN, &naive_cfg).unwrap();
        assert_eq!(naive.clipped, 0);
        let err_mean = rel_err(&naive.delta, &honest_mean);
        assert!(err_mean > 1.0, "plain mean relative error {err_mean}");

        assert!(
            matches!(rejected[..], [Rejection::NonFinite { .. }]),
            "only the NaN update is rejected: {rejected:?}"
        );
    }

    #[test]
    fn tiny_inputs_match_reference() {
        let mut r = rng(5);
        for n in [5usize, 4] {
            let mut updates: Vec<Vec<f32>> = (0..n)
                .map(|_| (0..3).map(|_| r.random_range(-5.0f32..5.0)).collect())
                .collect();
            updates[1][0] = 100.0; // an outlier in coordinate 0
            let candidates: Vec<Candidate<'_>> = updates.iter().map(|u| fresh(u)).collect();
            for combine in [Combine::default(), Combine::Median, Combine::Mean] {
                let cfg = AggregateConfig {
                    combine,
                    clip_multiple: 0.0,
                };
                let got = aggregate(&candidates, 3, &cfg).unwrap();
                // Hand-level reference: per coordinate, sort and combine.
                for i in 0..3 {
                    let mut col: Vec<f64> = updates.iter().map(|u| f64::from(u[i])).collect();
                    col.sort_by(f64::total_cmp);
                    let want = match combine {
                        Combine::Mean => col.iter().sum::<f64>() / n as f64,
                        // n = 5 keeps the middle one; n = 4 averages the middle two.
                        Combine::Median if n == 5 => col[2],
                        Combine::Median => (col[1] + col[2]) / 2.0,
                        // k = floor(0.25 n) = 1 value dropped at each end.
                        Combine::TrimmedMean { .. } => {
                            col[1..n - 1].iter().sum::<f64>() / (n - 2) as f64
                        }
                    };
                    assert!(
                        (f64::from(got.delta[i]) - want).abs() < 1e-5,
                        "{combine} n={n} i={i}: {} vs {want}",
                        got.delta[i]
                    );
                }
                assert_eq!(got.clipped, 0);
            }
        }
    }

    #[test]
    fn trim_never_drops_everything() {
        assert_eq!(trim_count(0.25, 5), 1);
        assert_eq!(trim_count(0.25, 3), 0);
        assert_eq!(trim_count(0.49, 3), 1);
        assert_eq!(trim_count(0.49, 2), 0);
        assert_eq!(trim_count(0.0, 10), 0);
        for n in 1..50 {
            let k = trim_count(0.499_999_97, n);
            assert!(n - 2 * k >= 1, "n={n} k={k}");
        }
        // trim 0.49 over three updates leaves the median.
        let us = [vec![1.0f32], vec![7.0], vec![2.0]];
        let cs: Vec<_> = us.iter().map(|u| fresh(u)).collect();
        let cfg = AggregateConfig {
            combine: Combine::TrimmedMean { trim: 0.49 },
            clip_multiple: 0.0,
        };
        assert_eq!(aggregate(&cs, 1, &cfg).unwrap().delta, vec![2.0]);
    }

    #[test]
    fn clipping_scales_to_exact_bound() {
        // Updates supported on disjoint coordinate ranges, so the mean shows
        // each clipped update scaled by 1/n.
        const PART: usize = 50;
        let n = 5;
        let scales = [1.0f32, 2.0, 3.0, 40.0, 0.5];
        let mut r = rng(11);
        let updates: Vec<Vec<f32>> = (0..n)
            .map(|j| {
                let mut v = vec![0.0f32; n * PART];
                for x in &mut v[j * PART..(j + 1) * PART] {
                    *x = scales[j] * gauss(&mut r);
                }
                v
            })
            .collect();
        let norms: Vec<f64> = updates.iter().map(|u| l2_norm(u)).collect();
        let mut sorted = norms.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[n / 2];
        for clip_multiple in [2.0f32, 1.0, 1.5] {
            let bound = f64::from(clip_multiple) * median;
            let cs: Vec<_> = updates.iter().map(|u| fresh(u)).collect();
            let cfg = AggregateConfig {
                combine: Combine::Mean,
                clip_multiple,
            };
            let agg = aggregate(&cs, n * PART, &cfg).unwrap();
            assert_eq!(agg.median_norm, median);
            assert_eq!(agg.clipped, norms.iter().filter(|&&x| x > bound).count());
            assert!(agg.clipped >= 1);
            for j in 0..n {
                let part: Vec<f32> = agg.delta[j * PART..(j + 1) * PART]
                    .iter()
                    .map(|x| x * n as f32)
                    .collect();
                let got = l2_norm(&part);
                let want = norms[j].min(bound);
                assert!((got - want).abs() <= 1e-5 * want, "j={j}: {got} vs {want}");
                // Direction is preserved.
                assert!(cosine(&part, &updates[j][j * PART..(j + 1) * PART]).unwrap() > 0.999_999);
            }
        }
        // clip_multiple = 0 disables clipping.
        let cs: Vec<_> = updates.iter().map(|u| fresh(u)).collect();
        let cfg = AggregateConfig {
            combine: Combine::Mean,
            clip_multiple: 0.0,
        };
        assert_eq!(aggregate(&cs, n * PART, &cfg).unwrap().clipped, 0);
    }

    #[test]
    fn staleness_weight_scales_contribution() {
        let mut r = rng(3);
        let x: Vec<f32> = (0..1000).map(|_| gauss(&mut r)).collect();
        let cfg = AggregateConfig {
            combine: Combine::Mean,
            ..AggregateConfig::default()
        };
        let half = aggregate(
            &[Candidate {
                values: &x,
                weight: 0.5,
            }],
            x.len(),
            &cfg,
        )
        .unwrap();
        for (h, v) in half.delta.iter().zip(&x) {
            assert_eq!(*h, 0.5 * v);
        }
        // Mixed: mean of (x, weight 1) and (y, weight 0.25) = (x + y/4) / 2.
        let y: Vec<f32> = (0..1000).map(|_| gauss(&mut r)).collect();
        let cfg = AggregateConfig {
            combine: Combine::Mean,
            clip_multiple: 0.0,
        };
        let mixed = aggregate(
            &[
                fresh(&x),
                Candidate {
                    values: &y,
                    weight: 0.25,
                },
            ],
            x.len(),
            &cfg,
        )
        .unwrap();
        for i in 0..x.len() {
            let want = (f64::from(x[i]) + 0.25 * f64::from(y[i])) / 2.0;
            assert!((f64::from(mixed.delta[i]) - want).abs() < 1e-6);
        }
    }

    #[test]
    fn every_error_path_returns_an_error() {
        let good = vec![1.0f32, 2.0, 3.0];
        let cfg = AggregateConfig::default();
        assert_eq!(aggregate(&[], 3, &cfg), Err(AggregateError::NoUpdates));

        let short = vec![1.0f32, 2.0];
        assert_eq!(
            aggregate(&[fresh(&good), fresh(&short)], 3, &cfg),
            Err(AggregateError::BadUpdate {
                index: 1,
                reason: Rejection::WrongShape {
                    expected: 3,
                    got: 2
                }
            })
        );
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let v = vec![1.0, bad, 3.0];
            assert_eq!(
                aggregate(&[fresh(&v), fresh(&good)], 3, &cfg),
                Err(AggregateError::BadUpdate {
                    index: 0,
                    reason: Rejection::NonFinite { index: 1 }
                })
            );
        }
        for weight in [0.0, -0.5, 1.5, f32::NAN, f32::INFINITY] {
            let c = Candidate {
                values: &good,
                weight,
            };
            assert!(matches!(
                aggregate(&[fresh(&good), c], 3, &cfg),
                Err(AggregateError::BadWeight { index: 1, .. })
            ));
        }
        for trim in [0.5, 0.7, -0.1, f32::NAN, f32::INFINITY] {
            let cfg = AggregateConfig {
                combine: Combine::TrimmedMean { trim },
                ..cfg
            };
            assert!(matches!(
                aggregate(&[fresh(&good)], 3, &cfg),
                Err(AggregateError::BadTrim { .. })
            ));
        }
        for clip_multiple in [-1.0, f32::NAN, f32::INFINITY] {
            let cfg = AggregateConfig {
                clip_multiple,
                ..cfg
            };
            assert!(matches!(
                aggregate(&[fresh(&good)], 3, &cfg),
                Err(AggregateError::BadClipMultiple { .. })
            ));
        }

        for lr in [0.0, -0.7, f32::NAN, f32::INFINITY] {
            assert!(matches!(
                OuterOptimizer::new(3, lr, 0.9),
                Err(AggregateError::BadLearningRate { .. })
            ));
        }
        for momentum in [1.0, 1.5, -0.1, f32::NAN] {
            assert!(matches!(
                OuterOptimizer::new(3, 0.7, momentum),
                Err(AggregateError::BadMomentum { .. })
            ));
            assert!(OuterOptimizer::with_momentum(0.7, momentum, vec![0.0; 3]).is_err());
        }
        assert_eq!(
            OuterOptimizer::with_momentum(0.7, 0.9, vec![0.0, f32::NAN]),
            Err(AggregateError::NonFiniteBuffer { index: 1 })
        );

        let mut opt = OuterOptimizer::with_momentum(0.7, 0.9, vec![0.1, 0.2, 0.3]).unwrap();
        let before = opt.clone();
        let mut params = vec![1.0f32, 1.0, 1.0];
        assert_eq!(
            opt.step(&mut params, &[1.0, 2.0]),
            Err(AggregateError::LengthMismatch {
                expected: 3,
                got: 2
            })
        );
        let mut long = vec![1.0f32; 4];
        assert_eq!(
            opt.step(&mut long, &good),
            Err(AggregateError::LengthMismatch {
                expected: 3,
                got: 4
            })
        );
        assert_eq!(
            opt.step(&mut params, &[0.0, f32::NAN, 0.0]),
            Err(AggregateError::NonFiniteDelta { index: 1 })
        );
        assert_eq!(params, vec![1.0; 3]);
        assert_eq!(long, vec![1.0; 4]);
        assert_eq!(opt, before);
    }

    #[test]
    fn nesterov_two_steps_match_hand_formula() {
        let (lr, m) = (DILOCO_OUTER_LR, DILOCO_OUTER_MOMENTUM);
        let theta0 = [1.0f32, -2.0, 0.5];
        let g1 = [0.1f32, 0.2, -0.3];
        let g2 = [0.05f32, -0.1, 0.2];

        let mut opt = OuterOptimizer::new(3, lr, m).unwrap();
        assert_eq!(opt.len(), 3);
        let mut params = theta0.to_vec();
        opt.step(&mut params, &g1).unwrap();
        opt.step(&mut params, &g2).unwrap();

        for i in 0..3 {
            // Step 1 from a zero buffer.
            let b1 = g1[i];
            let t1 = theta0[i] - lr * (g1[i] + m * b1);
            // Step 2.
            let b2 = m * b1 + g2[i];
            let t2 = t1 - lr * (g2[i] + m * b2);
            assert!((params[i] - t2).abs() < 1e-6, "{i}: {} vs {t2}", params[i]);
            assert!((opt.momentum_buffer()[i] - b2).abs() < 1e-6);
        }

        // Restoring from the checkpointed buffer continues identically.
        let g3 = [-0.2f32, 0.3, 0.1];
        let mut restored =
            OuterOptimizer::with_momentum(lr, m, opt.momentum_buffer().to_vec()).unwrap();
        let mut p_a = params.clone();
        let mut p_b = params.clone();
        opt.step(&mut p_a, &g3).unwrap();
        restored.step(&mut p_b, &g3).unwrap();
        assert_eq!(p_a, p_b);
        assert_eq!(opt.momentum_buffer(), restored.momentum_buffer());
    }

    #[test]
    fn zero_momentum_is_plain_sgd() {
        let mut r = rng(9);
        let len = 2 * BLOCK_LEN + 17;
        let lr = 0.3f32;
        let mut opt = OuterOptimizer::new(len, lr, 0.0).unwrap();
        let mut params: Vec<f32> = (0..len).map(|_| gauss(&mut r)).collect();
        for _ in 0..3 {
            let delta: Vec<f32> = (0..len).map(|_| gauss(&mut r)).collect();
            let want: Vec<f32> = params.iter().zip(&delta).map(|(p, d)| p - lr * d).collect();
            opt.step(&mut params, &delta).unwrap();
            assert_eq!(params, want);
        }
    }

    #[test]
    fn parallel_blocks_match_single_threaded_reference() {
        let len = 3 * BLOCK_LEN + 123;
        let n = 7;
        let mut r = rng(42);
        let mut updates: Vec<Vec<f32>> = (0..n)
            .map(|_| (0..len).map(|_| gauss(&mut r)).collect())
            .collect();
        for v in &mut updates[4] {
            *v *= 30.0; // gets clipped
        }
        let weights: Vec<f32> = (0..n).map(|_| r.random_range(0.3f32..=1.0)).collect();
        let cs: Vec<_> = updates
            .iter()
            .zip(&weights)
            .map(|(u, &weight)| Candidate { values: u, weight })
            .collect();
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let four = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        for combine in [
            Combine::default(),
            Combine::TrimmedMean { trim: 0.1 },
            Combine::Median,
            Combine::Mean,
        ] {
            let cfg = AggregateConfig {
                combine,
                clip_multiple: 2.0,
            };
            let want = reference(&updates, &weights, combine, 2.0);
            let par = four.install(|| aggregate(&cs, len, &cfg)).unwrap();
            let seq = one.install(|| aggregate(&cs, len, &cfg)).unwrap();
            assert_eq!(par.delta, want, "{combine}");
            assert_eq!(par, seq, "{combine}");
            assert_eq!(par.clipped, 1);
        }
    }
}

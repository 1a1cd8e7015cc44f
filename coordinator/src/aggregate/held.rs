//! Updates held for aggregation in the form that takes least memory, and their aggregate.
//!
//! A round's updates are top-k sparse: at the default 1 % most coordinates are zero. Held as
//! dense vectors, a round of a thousand updates of a 0.8M-parameter model took over 3 GB
//! while it closed; held as their nonzero coordinates it takes a few MB. [`aggregate_held`]
//! gives exactly what [`aggregate`](super::aggregate) gives on the same updates made dense: the
//! zeros a sparse update leaves out are counted, not stored, and take their place in the
//! coordinate's sorted values.

use rayon::prelude::*;

use super::{
    Aggregate, AggregateConfig, AggregateError, BLOCK_LEN, Combine, Rejection, check_update,
    combine_values, l2_norm, prepare, trim_count,
};

/// One update held for aggregation: dense, or, when at most half of its coordinates are
/// nonzero, as those coordinates (ascending) and their values.
#[derive(Debug, Clone, PartialEq)]
pub enum Held {
    /// Every coordinate.
    Dense(Vec<f32>),
    /// The nonzero coordinates of an update of `len` values.
    Sparse {
        /// The update's length as a dense vector.
        len: usize,
        /// The nonzero coordinates, ascending.
        indices: Vec<u32>,
        /// Their values.
        values: Vec<f32>,
    },
}

impl Held {
    /// Holds `values`, sparsely when that takes less memory (a NaN counts as nonzero, so
    /// screening still finds it).
    pub fn new(values: Vec<f32>) -> Held {
        let nonzero = values.iter().filter(|v| **v != 0.0).count();
        if nonzero.saturating_mul(2) > values.len() || u32::try_from(values.len()).is_err() {
            return Held::Dense(values);
        }
        let mut indices = Vec::with_capacity(nonzero);
        let mut kept = Vec::with_capacity(nonzero);
        for (i, &v) in values.iter().enumerate() {
            if v != 0.0 {
                indices.push(i as u32);
                kept.push(v);
            }
        }
        Held::Sparse {
            len: values.len(),
            indices,
            values: kept,
        }
    }

    /// Bytes of values and coordinates held.
    pub fn bytes(&self) -> usize {
        match self {
            Held::Dense(v) => v.len() * 4,
            Held::Sparse {
                indices, values, ..
            } => indices.len() * 4 + values.len() * 4,
        }
    }

    /// Screens the update as [`check_update`] does its dense form, and returns its norm.
    fn check(&self, expected_len: usize) -> Result<f64, Rejection> {
        match self {
            Held::Dense(v) => check_update(v, expected_len),
            Held::Sparse {
                len,
                indices,
                values,
            } => {
                if *len != expected_len {
                    return Err(Rejection::WrongShape {
                        expected: expected_len,
                        got: *len,
                    });
                }
                if let Some(p) = values.iter().position(|v| !v.is_finite()) {
                    let index = indices.get(p).map_or(0, |&i| i as usize);
                    return Err(Rejection::NonFinite { index });
                }
                Ok(l2_norm(values))
            }
        }
    }
}

/// [`aggregate`](super::aggregate) of updates [`Held`] with their staleness weights: the same
/// screening, clipping, weighting and combine, the same result.
pub fn aggregate_held(
    updates: &[(Held, f32)],
    len: usize,
    config: &AggregateConfig,
) -> Result<Aggregate, AggregateError> {
    let weights: Vec<f32> = updates.iter().map(|(_, w)| *w).collect();
    let (scales, clipped, median_norm) = prepare(config, &weights, |i| updates[i].0.check(len))?;

    let n = updates.len();
    let combine = config.combine;
    let mut delta = vec![0.0f32; len];
    delta.par_chunks_mut(BLOCK_LEN).enumerate().for_each_init(
        Vec::<Vec<f64>>::new,
        |buckets, (block, out)| {
            let start = block * BLOCK_LEN;
            let end = start + out.len();
            buckets.resize_with(out.len().max(buckets.len()), Vec::new);
            let buckets = &mut buckets[..out.len()];
            buckets.iter_mut().for_each(Vec::clear);
            // Each coordinate's values in the order of the updates, as the dense combine
            // sees them, less the zeros of sparse updates.
            for ((held, _), &s) in updates.iter().zip(&scales) {
                match held {
                    Held::Dense(v) => {
                        for (b, &x) in buckets.iter_mut().zip(&v[start..end]) {
                            b.push(f64::from(x) * s);
                        }
                    }
                    Held::Sparse {
                        indices, values, ..
                    } => {
                        let lo = indices.partition_point(|&i| (i as usize) < start);
                        let hi = indices.partition_point(|&i| (i as usize) < end);
                        for (&i, &x) in indices[lo..hi].iter().zip(&values[lo..hi]) {
                            buckets[i as usize - start].push(f64::from(x) * s);
                        }
                    }
                }
            }
            for (o, b) in out.iter_mut().zip(buckets.iter_mut()) {
                let zeros = n - b.len();
                *o = combine_with_zeros(combine, b, zeros) as f32;
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

/// [`combine_values`] of `values` and `zeros` more zeros, without storing the zeros: in sorted
/// order they sit between the negative values and the others. `values` is reordered.
fn combine_with_zeros(combine: Combine, values: &mut [f64], zeros: usize) -> f64 {
    if zeros == 0 {
        return combine_values(combine, values);
    }
    let n = values.len() + zeros;
    if let Combine::Mean = combine {
        // Zeros add nothing to the sum, in whatever order.
        return values.iter().sum::<f64>() / n as f64;
    }
    values.sort_unstable_by(f64::total_cmp);
    let negatives = values.partition_point(|v| *v < 0.0);
    // Where value `j` stands among all `n`.
    let position = |j: usize| if j < negatives { j } else { j + zeros };
    match combine {
        Combine::Median => {
            let at = |p: usize| {
                if p < negatives {
                    values[p]
                } else if p < negatives + zeros {
                    0.0
                } else {
                    values[p - zeros]
                }
            };
            let hi = at(n / 2);
            if n % 2 == 1 {
                hi
            } else {
                0.5 * (at(n / 2 - 1) + hi)
            }
        }
        Combine::TrimmedMean { trim } => {
            let k = trim_count(trim, n);
            let kept = n - 2 * k;
            let sum: f64 = values
                .iter()
                .enumerate()
                .filter(|&(j, _)| (k..n - k).contains(&position(j)))
                .map(|(_, v)| *v)
                .sum();
            sum / kept as f64
        }
        Combine::Mean => unreachable!("handled above"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Candidate, aggregate};
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// An update of `len` values with about `density` of them nonzero (some exact zeros and
    /// ties among the rest, as quantised updates have).
    fn update(rng: &mut ChaCha8Rng, len: usize, density: f64) -> Vec<f32> {
        (0..len)
            .map(|_| {
                if rng.random_bool(density) {
                    let v: f32 = rng.random_range(-2.0..2.0);
                    if rng.random_bool(0.1) { v.round() } else { v }
                } else {
                    0.0
                }
            })
            .collect()
    }

    fn same(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
    }

    /// Random rounds (sparse and dense updates mixed, lengths across block edges, every
    /// combine rule, with and without clipping): held updates aggregate to exactly what their
    /// dense forms do.
    #[test]
    fn held_updates_aggregate_exactly_as_dense_ones() {
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        let combines = [
            Combine::TrimmedMean { trim: 0.25 },
            Combine::TrimmedMean { trim: 0.0 },
            Combine::TrimmedMean { trim: 0.45 },
            Combine::Median,
            Combine::Mean,
        ];
        for trial in 0..120 {
            let len = [1, 7, BLOCK_LEN - 1, BLOCK_LEN + 3, 3 * BLOCK_LEN][trial % 5];
            let n = rng.random_range(1..14);
            let dense: Vec<Vec<f32>> = (0..n)
                .map(|_| {
                    let density = [0.001, 0.01, 0.2, 0.9][rng.random_range(0..4)];
                    update(&mut rng, len, density)
                })
                .collect();
            let weights: Vec<f32> = (0..n)
                .map(|_| {
                    if rng.random_bool(0.7) {
                        1.0
                    } else {
                        rng.random_range(0.1..1.0)
                    }
                })
                .collect();
            let config = AggregateConfig {
                combine: combines[trial % combines.len()],
                clip_multiple: if trial % 3 == 0 { 0.0 } else { 2.0 },
            };
            let candidates: Vec<Candidate<'_>> = dense
                .iter()
                .zip(&weights)
                .map(|(v, &weight)| Candidate { values: v, weight })
                .collect();
            let held: Vec<(Held, f32)> = dense
                .iter()
                .zip(&weights)
                .map(|(v, &w)| (Held::new(v.clone()), w))
                .collect();
            let want = aggregate(&candidates, len, &config).unwrap();
            let got = aggregate_held(&held, len, &config).unwrap();
            assert!(
                same(&want.delta, &got.delta),
                "trial {trial}: {config:?}, n {n}, len {len}"
            );
            assert_eq!(
                (want.used, want.clipped, want.median_norm),
                (got.used, got.clipped, got.median_norm),
                "trial {trial}"
            );
        }
    }

    /// A top-k update is held in a fraction of its dense size, and bad updates are refused
    /// as their dense forms are, naming the same coordinate.
    #[test]
    fn sparse_updates_are_small_and_screened_alike() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let len = 100_000;
        let topk = update(&mut rng, len, 0.001);
        let held = Held::new(topk.clone());
        assert!(matches!(held, Held::Sparse { .. }));
        assert!(held.bytes() * 50 < len * 4, "{} bytes", held.bytes());
        assert!(matches!(
            Held::new(update(&mut rng, 64, 0.9)),
            Held::Dense(_)
        ));

        let mut bad = topk;
        bad[4321] = f32::NAN;
        let config = AggregateConfig::default();
        let dense = aggregate(
            &[Candidate {
                values: &bad,
                weight: 1.0,
            }],
            len,
            &config,
        );
        let sparse = aggregate_held(&[(Held::new(bad.clone()), 1.0)], len, &config);
        assert_eq!(dense, sparse);
        assert!(matches!(
            sparse,
            Err(AggregateError::BadUpdate {
                reason: Rejection::NonFinite { index: 4321 },
                ..
            })
        ));
        assert_eq!(
            aggregate_held(&[(Held::new(bad), 1.0)], len + 1, &config),
            aggregate(
                &[Candidate {
                    values: &vec![0.0; len],
                    weight: 1.0
                }],
                len + 1,
                &config
            )
        );
        assert_eq!(
            aggregate_held(&[], len, &config),
            Err(AggregateError::NoUpdates)
        );
        assert!(matches!(
            aggregate_held(&[(Held::new(vec![0.0; 4]), 0.0)], 4, &config),
            Err(AggregateError::BadWeight { index: 0, .. })
        ));
    }
}

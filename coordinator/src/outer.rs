//! The DiLoCo outer step as one pure function: a round's accepted updates are combined by the
//! robust aggregation of [`aggregate`](crate::aggregate), the outer optimizer moves the model
//! by the result, and the move is rounded to the model step nodes fetch instead of the full
//! weights (int8, or a low-bit codec whose rounding the optimizer carries into the next
//! step), so the new version is exactly the old one plus that step.
//!
//! [`outer_step`] touches no database, clock, network or lock: the coordinator's
//! [`Project::close_round`](crate::project::Project::close_round) calls it between gathering
//! the round's updates and persisting what it returns, and the benches that simulate rounds
//! call the same function, so a simulated round is the coordinator's round.

use canopy_node::objects;
use canopy_protocol::compress::CompressedUpdate;
use canopy_shaders::Params;

use crate::aggregate::{self, AggregateConfig, AggregateError, Held, OuterOptimizer};

/// What can go wrong in the outer step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OuterStepError {
    /// The updates could not be aggregated, or the outer optimizer refused the aggregate.
    #[error(transparent)]
    Aggregate(#[from] AggregateError),
    /// The model step could not be encoded or applied.
    #[error(transparent)]
    Step(#[from] canopy_node::NodeError),
}

/// What one outer step produced.
#[derive(Debug, Clone)]
pub struct OuterStep {
    /// The new model version: the old parameters plus the decoded [`step`](Self::step),
    /// exactly as a node rebuilds it.
    pub params: Params,
    /// The model step nodes fetch instead of the full weights (in the optimizer's
    /// [`step_codec`](OuterOptimizer::step_codec)).
    pub step: CompressedUpdate,
    /// The outer optimizer after the step (its momentum buffer is the run's checkpoint).
    pub optimizer: OuterOptimizer,
    /// How many updates clipping scaled down.
    pub clipped: usize,
}

/// One DiLoCo outer step from `params`: aggregates `updates` (each a pseudo-gradient with its
/// weight in `(0, 1]`) by `config`, applies `optimizer`'s step to a copy of `params`, and
/// rounds the move (with what earlier steps did not carry) to the model step.
///
/// With no updates the model and the momentum stay as they are (the step is zero). `params`
/// and `optimizer` are not changed: the caller keeps the returned ones once it has stored
/// them, so a failure anywhere leaves the run where it was.
pub fn outer_step(
    params: &Params,
    optimizer: &OuterOptimizer,
    updates: &[(Held, f32)],
    config: &AggregateConfig,
) -> Result<OuterStep, OuterStepError> {
    let mut optimizer = optimizer.clone();
    let mut moved = params.clone();
    let clipped = if updates.is_empty() {
        0
    } else {
        let agg = aggregate::aggregate_held(updates, params.values().len(), config)?;
        optimizer.step(moved.values_mut(), &agg.delta)?;
        agg.clipped
    };
    let mut compressor = optimizer.step_compressor()?;
    let (step, params) = objects::quantized_step_with(params, &moved, &mut compressor)?;
    optimizer.keep_carry(compressor);
    Ok(OuterStep {
        params,
        step,
        optimizer,
        clipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{Candidate, Combine};
    use canopy_protocol::compress::{CodecSpec, DEFAULT_INT8_BLOCK};
    use canopy_shaders::testing::small_config;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A round's updates: dense ones near a common direction, a top-k-like sparse one, one
    /// ten times too large (clipped) and one stale.
    fn round_updates(rng: &mut ChaCha8Rng, len: usize) -> Vec<(Vec<f32>, f32)> {
        let common: Vec<f32> = (0..len).map(|_| rng.random_range(-1e-3..1e-3)).collect();
        let mut updates: Vec<(Vec<f32>, f32)> = (0..4)
            .map(|_| {
                let v = common
                    .iter()
                    .map(|c| c + rng.random_range(-5e-4..5e-4))
                    .collect();
                (v, 1.0)
            })
            .collect();
        let sparse = common
            .iter()
            .enumerate()
            .map(|(i, c)| if i % 37 == 0 { 5.0 * c } else { 0.0 })
            .collect();
        updates.push((sparse, 1.0));
        updates.push((common.iter().map(|c| 10.0 * c).collect(), 1.0));
        updates.push((common.clone(), 0.5));
        updates
    }

    fn held(updates: &[(Vec<f32>, f32)]) -> Vec<(Held, f32)> {
        updates
            .iter()
            .map(|(v, w)| (Held::new(v.clone()), *w))
            .collect()
    }

    fn bits(values: &[f32]) -> Vec<u32> {
        values.iter().map(|v| v.to_bits()).collect()
    }

    /// The sequence `close_round` and `rounds_sim` ran inline before [`outer_step`] existed:
    /// the dense aggregate, the optimizer's step on a copy, the int8 step of the move.
    fn by_hand(
        params: &Params,
        optimizer: &mut OuterOptimizer,
        updates: &[(Vec<f32>, f32)],
        config: &AggregateConfig,
    ) -> (Params, CompressedUpdate, usize) {
        let candidates: Vec<Candidate<'_>> = updates
            .iter()
            .map(|(values, weight)| Candidate {
                values,
                weight: *weight,
            })
            .collect();
        let mut next = params.clone();
        let clipped = if candidates.is_empty() {
            0
        } else {
            let agg = aggregate::aggregate(&candidates, params.values().len(), config).unwrap();
            optimizer.step(next.values_mut(), &agg.delta).unwrap();
            agg.clipped
        };
        let (step, next) = objects::quantized_step(
            params,
            &next,
            CodecSpec::Int8 {
                block: DEFAULT_INT8_BLOCK,
            },
        )
        .unwrap();
        (next, step, clipped)
    }

    #[test]
    fn outer_step_is_the_inline_sequence_bit_for_bit() {
        for combine in [
            Combine::TrimmedMean { trim: 0.25 },
            Combine::Median,
            Combine::Mean,
        ] {
            let config = AggregateConfig {
                combine,
                clip_multiple: 2.0,
            };
            let mut rng = ChaCha8Rng::seed_from_u64(7);
            let start = Params::init(&small_config(), 3).unwrap();
            let len = start.values().len();
            let mut optimizer = OuterOptimizer::new(len, 0.7, 0.9).unwrap();
            let mut params = start.clone();
            let mut hand_optimizer = optimizer.clone();
            let mut hand_params = start;
            // Three rounds, so the momentum carries over; the second has no updates.
            for round in 0..3 {
                let updates = if round == 1 {
                    Vec::new()
                } else {
                    round_updates(&mut rng, len)
                };
                let out = outer_step(&params, &optimizer, &held(&updates), &config).unwrap();
                let (want, want_step, want_clipped) =
                    by_hand(&hand_params, &mut hand_optimizer, &updates, &config);
                assert_eq!(bits(out.params.values()), bits(want.values()), "{combine}");
                assert_eq!(
                    out.step.to_frame().unwrap(),
                    want_step.to_frame().unwrap(),
                    "{combine}"
                );
                assert_eq!(
                    bits(out.optimizer.momentum_buffer()),
                    bits(hand_optimizer.momentum_buffer()),
                    "{combine}"
                );
                assert_eq!(out.clipped, want_clipped, "{combine}");
                if round != 1 {
                    assert_eq!(out.clipped, 1, "the tenfold update is clipped");
                }
                params = out.params;
                optimizer = out.optimizer;
                hand_params = want;
            }
        }
    }

    #[test]
    fn the_new_version_is_the_old_plus_the_published_step() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let params = Params::init(&small_config(), 5).unwrap();
        let len = params.values().len();
        let optimizer = OuterOptimizer::new(len, 0.7, 0.9).unwrap();
        let updates = held(&round_updates(&mut rng, len));
        let out = outer_step(&params, &optimizer, &updates, &AggregateConfig::default()).unwrap();
        let rebuilt = objects::apply_delta(&params, &out.step.to_frame().unwrap()).unwrap();
        assert_eq!(bits(out.params.values()), bits(rebuilt.values()));
        assert_ne!(bits(out.params.values()), bits(params.values()));
        // The inputs are untouched; the momentum moved.
        assert!(optimizer.momentum_buffer().iter().all(|m| *m == 0.0));
        assert!(out.optimizer.momentum_buffer().iter().any(|m| *m != 0.0));
    }

    #[test]
    fn a_low_bit_step_carries_its_rounding_into_the_next_step() {
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        let start = Params::init(&small_config(), 5).unwrap();
        let len = start.values().len();
        let codec = CodecSpec::Quant {
            block: DEFAULT_INT8_BLOCK,
            bits: 2,
        };
        let mut optimizer = OuterOptimizer::new(len, 0.7, 0.0)
            .unwrap()
            .with_step(codec, Vec::new())
            .unwrap();
        let mut params = start.clone();
        // Where the moves alone lead: the model without any rounding.
        let mut exact: Vec<f64> = start.values().iter().map(|v| f64::from(*v)).collect();
        for _ in 0..4 {
            let updates = round_updates(&mut rng, len);
            let out = outer_step(
                &params,
                &optimizer,
                &held(&updates),
                &AggregateConfig::default(),
            )
            .unwrap();
            let rebuilt = objects::apply_delta(&params, &out.step.to_frame().unwrap()).unwrap();
            assert_eq!(bits(out.params.values()), bits(rebuilt.values()));
            assert_eq!(out.step.codec, codec);
            // The move of this round, as the optimizer made it (momentum 0: lr times the
            // aggregate).
            let agg = aggregate::aggregate_held(&held(&updates), len, &AggregateConfig::default())
                .unwrap();
            for (e, d) in exact.iter_mut().zip(&agg.delta) {
                *e -= 0.7 * f64::from(*d);
            }
            // The published model plus the carry is where the moves lead.
            for (i, e) in exact.iter().enumerate() {
                let got =
                    f64::from(out.params.values()[i]) + f64::from(out.optimizer.step_carry()[i]);
                assert!((got - e).abs() < 1e-5, "index {i}: {got} vs {e}");
            }
            params = out.params;
            optimizer = out.optimizer;
        }
        assert!(optimizer.step_carry().iter().any(|c| *c != 0.0));
        // A checkpointed carry restores the same optimizer; a wrong one is refused.
        let restored = OuterOptimizer::new(len, 0.7, 0.0)
            .unwrap()
            .with_step(codec, optimizer.step_carry().to_vec())
            .unwrap();
        assert!(bits(restored.step_carry()) == bits(optimizer.step_carry()));
        assert_eq!(restored.step_codec(), codec);
        assert!(
            OuterOptimizer::new(len, 0.7, 0.0)
                .unwrap()
                .with_step(codec, vec![0.0; len - 1])
                .is_err()
        );
        assert!(
            OuterOptimizer::new(len, 0.7, 0.0)
                .unwrap()
                .with_step(codec, vec![f32::NAN; len])
                .is_err()
        );
    }

    #[test]
    fn no_updates_leave_the_model_and_momentum_as_they_are() {
        let params = Params::init(&small_config(), 5).unwrap();
        let len = params.values().len();
        let optimizer =
            OuterOptimizer::with_momentum(0.7, 0.9, (0..len).map(|i| i as f32 * 1e-6).collect())
                .unwrap();
        let out = outer_step(&params, &optimizer, &[], &AggregateConfig::default()).unwrap();
        assert_eq!(bits(out.params.values()), bits(params.values()));
        assert_eq!(out.optimizer, optimizer);
        assert_eq!(out.clipped, 0);
    }

    #[test]
    fn a_bad_update_is_an_error_and_changes_nothing() {
        let params = Params::init(&small_config(), 5).unwrap();
        let len = params.values().len();
        let optimizer = OuterOptimizer::new(len, 0.7, 0.9).unwrap();
        let mut bad = vec![0.0; len];
        bad[3] = f32::NAN;
        let err = outer_step(
            &params,
            &optimizer,
            &[(Held::new(bad), 1.0)],
            &AggregateConfig::default(),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            OuterStepError::Aggregate(AggregateError::BadUpdate { index: 0, .. })
        ));
    }
}

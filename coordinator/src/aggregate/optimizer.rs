//! The outer optimizer: DiLoCo's Nesterov step on the round's aggregate, and the low-bit
//! model step it publishes with the carry of what earlier steps left out.

use canopy_protocol::{CodecSpec, Compressor};
use rayon::prelude::*;

use super::{AggregateError, BLOCK_LEN};

/// Nesterov-momentum SGD outer optimizer, as in DiLoCo / PyTorch
/// `SGD(nesterov=True)`.
///
/// With outer gradient `g` (the aggregated Δ):
/// `buf = momentum·buf + g; update = g + momentum·buf; θ -= lr·update`.
/// DiLoCo uses `lr` [`DILOCO_OUTER_LR`](super::DILOCO_OUTER_LR) and momentum [`DILOCO_OUTER_MOMENTUM`](super::DILOCO_OUTER_MOMENTUM).
///
/// It also holds how each move is published ([`step_codec`](Self::step_codec), int8 unless
/// set) and, for a low-bit codec, the part of earlier moves the published steps have not
/// carried yet (the [`step_carry`](Self::step_carry)), checkpointed with the momentum.
#[derive(Debug, Clone, PartialEq)]
pub struct OuterOptimizer {
    lr: f32,
    momentum: f32,
    buf: Vec<f32>,
    step: CodecSpec,
    carry: Vec<f32>,
}

fn check_hyper(lr: f32, momentum: f32) -> Result<(), AggregateError> {
    if !(lr.is_finite() && lr > 0.0) {
        return Err(AggregateError::BadLearningRate { lr });
    }
    if !(0.0..1.0).contains(&momentum) {
        return Err(AggregateError::BadMomentum { momentum });
    }
    Ok(())
}

impl OuterOptimizer {
    /// A fresh optimizer for `len` parameters with a zero momentum buffer.
    pub fn new(len: usize, lr: f32, momentum: f32) -> Result<Self, AggregateError> {
        check_hyper(lr, momentum)?;
        Ok(OuterOptimizer {
            lr,
            momentum,
            buf: vec![0.0; len],
            step: CodecSpec::default(),
            carry: Vec::new(),
        })
    }

    /// Restores an optimizer from a checkpointed momentum buffer.
    pub fn with_momentum(lr: f32, momentum: f32, buffer: Vec<f32>) -> Result<Self, AggregateError> {
        check_hyper(lr, momentum)?;
        if let Some(index) = buffer.iter().position(|v| !v.is_finite()) {
            return Err(AggregateError::NonFiniteBuffer { index });
        }
        Ok(OuterOptimizer {
            lr,
            momentum,
            buf: buffer,
            step: CodecSpec::default(),
            carry: Vec::new(),
        })
    }

    /// Publishes moves with `codec`, going on from a checkpointed `carry` (empty: none yet;
    /// ignored by a codec without error feedback).
    pub fn with_step(mut self, codec: CodecSpec, carry: Vec<f32>) -> Result<Self, AggregateError> {
        let compressor = Compressor::with_residual(codec, self.buf.len(), carry)
            .map_err(AggregateError::StepCodec)?;
        self.step = codec;
        self.carry = compressor.into_residual();
        Ok(self)
    }

    /// The codec of the model step each move is published as.
    pub fn step_codec(&self) -> CodecSpec {
        self.step
    }

    /// What the published steps have not carried yet of the moves so far (empty for a codec
    /// without error feedback), for checkpointing.
    pub fn step_carry(&self) -> &[f32] {
        &self.carry
    }

    /// A compressor for the next model step, holding the carry.
    pub fn step_compressor(&self) -> Result<Compressor, AggregateError> {
        Compressor::with_residual(self.step, self.buf.len(), self.carry.clone())
            .map_err(AggregateError::StepCodec)
    }

    /// Keeps what `compressor` did not send of the last step.
    pub fn keep_carry(&mut self, compressor: Compressor) {
        self.carry = compressor.into_residual();
    }

    /// The outer learning rate.
    pub fn lr(&self) -> f32 {
        self.lr
    }

    /// The momentum coefficient.
    pub fn momentum(&self) -> f32 {
        self.momentum
    }

    /// The momentum buffer, for checkpointing.
    pub fn momentum_buffer(&self) -> &[f32] {
        &self.buf
    }

    /// Number of parameters this optimizer is sized for.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether the optimizer is sized for zero parameters.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Applies one outer step to `params` with outer gradient `delta`.
    ///
    /// On a length mismatch or a non-finite `delta`, returns an error and
    /// changes nothing.
    pub fn step(&mut self, params: &mut [f32], delta: &[f32]) -> Result<(), AggregateError> {
        let expected = self.buf.len();
        for got in [params.len(), delta.len()] {
            if got != expected {
                return Err(AggregateError::LengthMismatch { expected, got });
            }
        }
        if let Some(index) = delta.iter().position(|v| !v.is_finite()) {
            return Err(AggregateError::NonFiniteDelta { index });
        }
        let (lr, m) = (self.lr, self.momentum);
        params
            .par_chunks_mut(BLOCK_LEN)
            .zip(self.buf.par_chunks_mut(BLOCK_LEN))
            .zip(delta.par_chunks(BLOCK_LEN))
            .for_each(|((p, b), d)| {
                for ((p, b), &g) in p.iter_mut().zip(b.iter_mut()).zip(d) {
                    *b = m * *b + g;
                    let update = g + m * *b;
                    *p -= lr * update;
                }
            });
        Ok(())
    }
}

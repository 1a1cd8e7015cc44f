//! Closing a round: the accepted updates (and late ones, by the staleness rule) become the
//! next model version through the outer step, which is stored with its step, momentum and
//! carry, and the next round opens with its tasks, all in one transaction.

use std::sync::Arc;

use canopy_node::objects;
use canopy_protocol::ObjectKind;
use canopy_protocol::messages::ModelDelta;
use canopy_shaders::Params;

use super::{
    Current, Project, ProjectError, Result, RoundSummary, STEP_CARRY_META, aggregate_config,
    evaluate, now_ms,
};
use crate::aggregate::{self, Held};
use crate::judge::quality_weight;
use crate::outer;
use crate::state::{Judged, LeaseStatus, ResultRecord, TaskStatus};
use crate::training::make_tasks;

impl Project {
    /// Closes the round in progress: aggregates its accepted updates (and late ones, by the
    /// staleness rule), applies the outer step, evaluates, stores the new model and momentum,
    /// and opens the next round with its tasks, all committed in one transaction.
    pub fn close_round(&self) -> Result<RoundSummary> {
        let current = self.current();
        let round = current.round;
        let t = &self.config.training;
        // Every accepted update not yet aggregated: this round's, and any accepted while the
        // previous close was computing (weighted by staleness). Late results of closed rounds
        // are refused on arrival under the `drop` rule, so nothing accepted is dropped here.
        // Checks fail closed: an update still waiting for its re-run is kept out unless the
        // project takes unchecked updates in.
        let take_unchecked = self.config.verification.aggregate_unchecked;
        let unchecked = self
            .state()
            .transaction(|tx| tx.settle_unchecked(take_unchecked))?;
        if unchecked > 0 {
            tracing::info!(
                round,
                unchecked,
                aggregated = take_unchecked,
                "updates whose re-run had not happened when the round closed"
            );
            let counter = if take_unchecked {
                &self.metrics.unchecked_aggregated
            } else {
                &self.metrics.unchecked_held
            };
            counter.inc_by(unchecked as u64);
        }
        let inputs: Vec<ResultRecord> = self.state().read().unaggregated()?;
        // Each peer's updates weigh by its loss score: a peer whose updates keep sitting at
        // the top of the spread loses influence round after round.
        let scores = self
            .state()
            .read()
            .loss_scores(inputs.iter().map(|r| r.peer.as_str()))?;
        let len = self.model.num_params();
        let mut values = Vec::with_capacity(inputs.len());
        let mut used = Vec::with_capacity(inputs.len());
        let mut senders = Vec::with_capacity(inputs.len());
        for r in &inputs {
            let Some(root) = r.update_root else { continue };
            let Some(signed) = self.state().read().manifest(&root)? else {
                continue;
            };
            let Some(bytes) = self.store.get_object(signed.manifest())? else {
                tracing::warn!(
                    lease = r.lease,
                    "an accepted update is missing from the store"
                );
                continue;
            };
            let update = objects::update_values(&bytes, len)?;
            if aggregate::check_update(&update, len).is_err() {
                continue;
            }
            let age = round.saturating_sub(r.round);
            let quality = quality_weight(scores.get(&r.peer).copied().unwrap_or(0.0));
            let weight = f64::from(t.staleness_decay).powi(age as i32) * quality;
            // Held sparsely when mostly zero (top-k updates are): a round of a thousand
            // updates takes megabytes while it closes, not gigabytes.
            values.push((Held::new(update), weight as f32));
            used.push((r.lease, weight));
            senders.push(r);
        }
        // An update pulling against the rest of its round (a flipped sign, say) is left out
        // and not credited.
        let held: Vec<&Held> = values.iter().map(|(h, _)| h).collect();
        let cosines = aggregate::direction::cosines_to_rest(&held, len);
        let best = aggregate::direction::best_pair_cosines(&held, len);
        let flags = aggregate::direction::opposed(&cosines, best.as_deref());
        let agreement = aggregate::direction::agreement(&cosines, best.as_deref());
        tracing::debug!(
            round,
            to_rest = ?cosines,
            best_pair = ?best,
            "directions of the round's updates"
        );
        let mut left_out = Vec::new();
        for (i, r) in senders.iter().enumerate().rev() {
            if flags[i] {
                tracing::info!(peer = %r.peer, task = r.task, cosine = cosines[i], "an update opposed to its round: left out");
                left_out.push((r.lease, r.task, r.peer.clone(), cosines[i]));
                values.remove(i);
                used.remove(i);
            }
        }
        for _ in &left_out {
            self.metrics.rejected("outlier");
        }
        let agg_config = aggregate_config(&self.config)?;
        // The new version is exactly the old one plus the int8 step nodes fetch instead of
        // the full weights; the optimizer's state is kept once both are stored.
        let outer::OuterStep {
            params,
            step,
            optimizer,
            clipped,
        } = {
            let optimizer = self.optimizer.lock().unwrap_or_else(|e| e.into_inner());
            outer::outer_step(&current.params, &optimizer, &values, &agg_config)?
        };
        let next = round + 1;
        let (delta_signed, delta_bytes) = objects::delta_object(&self.keys, &step, next)?;
        let eval_loss = evaluate(&self.config, &params, &self.heldout)?;
        // The next version's updates are checked against this same figure.
        *self.check_base.lock().unwrap_or_else(|e| e.into_inner()) = Some((next, eval_loss));
        let (model_signed, model_bytes) =
            objects::weights_object(&self.keys, ObjectKind::ModelWeights, &params, next)?;
        let momentum_params =
            Params::from_values(&self.model, optimizer.momentum_buffer().to_vec())?;
        let (mom_signed, mom_bytes) =
            objects::weights_object(&self.keys, ObjectKind::Checkpoint, &momentum_params, next)?;
        self.store
            .put_object(model_signed.manifest(), &model_bytes)?;
        self.store.put_object(mom_signed.manifest(), &mom_bytes)?;
        let carry_signed = if optimizer.step_carry().is_empty() {
            None
        } else {
            let carry = Params::from_values(&self.model, optimizer.step_carry().to_vec())?;
            let (signed, bytes) =
                objects::weights_object(&self.keys, ObjectKind::Checkpoint, &carry, next)?;
            self.store.put_object(signed.manifest(), &bytes)?;
            Some(signed)
        };
        self.store
            .put_object(delta_signed.manifest(), &delta_bytes)?;
        let model_root = model_signed.manifest().root;
        let delta = ModelDelta {
            base: current.model_root,
            delta: delta_signed.manifest().root,
        };
        let train_losses: Vec<f64> = inputs
            .iter()
            .filter(|r| r.round == round)
            .filter_map(|r| r.train_loss)
            .collect();
        let train_loss = (!train_losses.is_empty())
            .then(|| train_losses.iter().sum::<f64>() / train_losses.len() as f64);
        let finished = next >= u64::from(t.rounds);
        // What the final model writes, for the dashboard and the demo.
        let samples = if finished {
            let samples = crate::samples::generate(&self.tokenizer, &params)?;
            Some(
                serde_json::to_string(&samples)
                    .map_err(|e| ProjectError::Invalid(e.to_string()))?,
            )
        } else {
            None
        };
        let now = now_ms();
        let mut settled = (0, 0);
        let record = {
            let mut state = self.state();
            state.transaction(|tx| {
                tx.put_manifest(&model_signed, now)?;
                tx.put_manifest(&mom_signed, now)?;
                tx.put_manifest(&delta_signed, now)?;
                if let Some(carry) = &carry_signed {
                    tx.put_manifest(carry, now)?;
                    tx.set_meta(STEP_CARRY_META, &carry.manifest().root.to_string())?;
                }
                for (lease, task, peer, cosine) in &left_out {
                    let reason = format!(
                        "the update points against the rest of its round (cosine {cosine:.2}): \
                         left out of it, uncredited"
                    );
                    tx.leave_out(*lease, *task, peer, &reason)?;
                }
                let judged: Vec<Judged<'_>> = senders
                    .iter()
                    .zip(agreement.iter().zip(&flags))
                    .map(|(r, (&agreement, &left_out))| Judged {
                        peer: &r.peer,
                        task: r.task,
                        agreement,
                        left_out,
                    })
                    .collect();
                settled = tx.settle_direction(&judged)?;
                tx.close_round(round, now, train_loss, Some(f64::from(eval_loss)))?;
                if let Some(samples) = &samples {
                    tx.set_meta(crate::samples::SAMPLES_META, samples)?;
                }
                tx.tally_round(round)?;
                tx.mark_aggregated(&used, round)?;
                tx.open_round(next, &model_root, Some(&mom_signed.manifest().root), now)?;
                tx.cancel_tasks_before(next)?;
                for lease in tx.active_leases(None)? {
                    if tx
                        .task(lease.task)?
                        .is_some_and(|t| t.status == TaskStatus::Cancelled)
                    {
                        tx.set_lease_status(lease.id, LeaseStatus::Expired)?;
                    }
                }
                if !finished {
                    make_tasks(
                        tx,
                        &self.config,
                        &self.shards,
                        next,
                        &model_root,
                        Some(delta),
                        self.tokens,
                    )?;
                }
                tx.round(round)
            })?
        };
        let (held, released) = settled;
        if held + released > 0 {
            tracing::info!(round, held, released, "credit held and released");
        }
        self.metrics.credit_held.inc_by(held as u64);
        self.metrics.credit_released.inc_by(released as u64);
        // The momentum moves on with the model, once both are stored.
        *self.optimizer.lock().unwrap_or_else(|e| e.into_inner()) = optimizer;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Current {
            round: next,
            params: Arc::new(params),
            model_root,
        };
        // What the new round no longer needs leaves the disk (its provider records follow).
        let freed = crate::retention::release_superseded(
            &mut self.state(),
            &self.store,
            next,
            self.config.store.checkpoint_every,
        )?;
        tracing::debug!(round = next, freed, "superseded objects released");
        let (accepted, rejected) = record.map_or((0, 0), |r| (r.accepted, r.rejected));
        Ok(RoundSummary {
            round,
            train_loss,
            eval_loss: f64::from(eval_loss),
            accepted,
            rejected,
            aggregated: used.len(),
            clipped,
            finished,
        })
    }
}

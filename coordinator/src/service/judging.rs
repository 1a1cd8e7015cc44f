//! A result's verdict committed: the checks' outcome becomes the result record, the ledger
//! claim and the reputation change, before the node gets its acknowledgement.

use std::sync::Arc;

use canopy_node::network::Client;
use canopy_protocol::messages::{ResultAck, TaskOutput, TaskResult};
use libp2p::PeerId;

use super::checks::{Checked, RerunVerdict, check_result};
use super::peer::datacenter_active;
use crate::judge::LossVerdict;
use crate::project::{Project, now_ms};
use crate::refusal::Refusal;
use crate::state::{LeaseStatus, LedgerClaim, LedgerVerdict, ResultStatus, TaskKind, TaskStatus};
use canopy_protocol::messages::Tier;

/// A refused result: why, and the loss judge's verdict when the refusal is on the update's
/// effect on held-out loss.
pub(super) struct Refused {
    pub(super) reason: Refusal,
    pub(super) judged: Option<LossVerdict>,
}

impl From<Refusal> for Refused {
    fn from(reason: Refusal) -> Self {
        Self {
            reason,
            judged: None,
        }
    }
}

/// An accepted update's change of held-out loss and the judge's verdict on it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Judged {
    pub(super) change: f64,
    pub(super) verdict: LossVerdict,
}

/// Judges a result and commits the verdict; the returned ack is sent only after that.
pub(super) async fn judge(
    project: &Arc<Project>,
    client: &Client,
    peer: PeerId,
    result: TaskResult,
) -> ResultAck {
    let task = result.task;
    // The end of the wall time that bounds the compute time the ledger records.
    let arrived = now_ms();
    let verdict = check_result(project, client, peer, &result).await;
    let key = peer.to_string();
    let now = now_ms();
    let rep = &project.config.reputation;
    let ack = |accepted: bool, reason: Option<String>| ResultAck {
        task,
        accepted,
        reason,
    };
    match verdict {
        Ok(Checked::Internal(e)) => {
            tracing::warn!(%peer, task = task.0, "could not judge a result: {e}");
            project.metrics.rejected("coordinator_error");
            ack(
                false,
                Some("the coordinator could not judge this result; it will be re-run".into()),
            )
        }
        Ok(Checked::Accepted(record, verify, judged)) => {
            let outlier = record.status == ResultStatus::Outlier;
            let kind = if verify.is_some() {
                TaskKind::Verify
            } else {
                TaskKind::Train
            };
            let update_root = record.update_root;
            let committed = project.state().transaction(|tx| {
                let mut record = (*record).clone();
                let mut verified_original = None;
                if let Some(compared) = &verify {
                    let (original, cosine) = &**compared;
                    // A verification run: judge the original, keep this one out of aggregation
                    // (its update may be the original's, byte for byte: the ledger keeps its
                    // hash, the results table does not).
                    record.status = ResultStatus::Verifier;
                    record.update_root = None;
                    let verdict = RerunVerdict::of(*cosine, project.config.verification.min_cosine);
                    if let Some(orig) = original
                        && verdict == RerunVerdict::Unverifiable
                    {
                        tracing::warn!(
                            task = orig.task,
                            "the original update of a re-run could not be loaded; left unverified"
                        );
                        tx.set_ledger_verified(
                            orig.task,
                            &orig.peer,
                            LedgerVerdict::Unverifiable,
                            true,
                        )?;
                    } else if let Some(orig) = original {
                        let ok = verdict == RerunVerdict::Agrees;
                        let (status, verdict) = if ok {
                            (ResultStatus::Accepted, LedgerVerdict::Verified)
                        } else {
                            (ResultStatus::Rejected, LedgerVerdict::Failed)
                        };
                        tx.set_result_status(
                            orig.lease,
                            status,
                            (!ok).then_some("failed verification by re-run"),
                        )?;
                        tx.set_ledger_verified(orig.task, &orig.peer, verdict, ok)?;
                        let mut quality = tx.peer_quality(&orig.peer)?;
                        quality.observe_rerun(ok);
                        tx.set_peer_quality(&orig.peer, &quality)?;
                        let delta = if ok {
                            rep.accepted
                        } else {
                            rep.failed_verification
                        };
                        tx.adjust_reputation(&orig.peer, delta, rep.ban_below)?;
                        verified_original = Some((orig.peer.clone(), ok));
                    }
                }
                if let TaskOutput::Train(output) = &result.output {
                    tx.put_manifest(&output.update, now)?;
                }
                // Volunteer work is sampled for a datacenter re-run while one is active to
                // run it; a sampled update waits for its verdict (`pending`) before any round
                // aggregates it.
                let rerun = verify.is_none()
                    && !outlier
                    && tx.peer(&key)?.is_none_or(|p| p.tier != Tier::Datacenter)
                    && project.rerun_sampled(record.task)
                    && datacenter_active(&tx.reader(), now)?;
                if rerun {
                    record.status = ResultStatus::Pending;
                }
                tx.insert_result(&record)?;
                let mut quality = tx.peer_quality(&key)?;
                let pattern = quality.observe(&judged.verdict);
                tx.set_peer_quality(&key, &quality)?;
                // An outlier costs nothing by itself (nor earns anything); a repeated pattern
                // of them does.
                let delta = match (outlier, pattern) {
                    (false, _) => rep.accepted,
                    (true, false) => 0,
                    (true, true) => rep.failed_verification,
                };
                if pattern {
                    tracing::info!(%peer, "outliers again and again: penalised");
                }
                if delta != 0 {
                    tx.adjust_reputation(&key, delta, rep.ban_below)?;
                }
                // The ledger takes the task's tokens and bounds the compute time claimed.
                tx.ledger_entry(
                    &LedgerClaim {
                        peer: &key,
                        round: record.round,
                        task: record.task,
                        lease: record.lease,
                        kind,
                        compute_ms: result.compute_ms,
                        accepted: !outlier,
                        verified: if verify.is_some() {
                            LedgerVerdict::Verifier
                        } else {
                            LedgerVerdict::Unchecked
                        },
                        result_hash: update_root.as_ref(),
                        reason: record.reason.as_deref(),
                        arrived_ms: arrived,
                    },
                    now,
                )?;
                tx.set_lease_status(record.lease, LeaseStatus::Done)?;
                tx.set_task_status(record.task, TaskStatus::Done)?;
                // The throughput estimate (which sizes this peer's leases) takes the compute
                // time claimed only up to the lease's wall time, as the coordinator saw it: a
                // node cannot claim to be slower than it is to hold its tasks longer.
                let ran_ms = tx
                    .lease(record.lease)?
                    .map_or(0, |l| arrived.saturating_sub(l.granted_ms));
                tx.record_throughput(
                    &key,
                    measured_throughput(record.tokens, result.compute_ms, ran_ms),
                )?;
                if rerun && let Some(t) = tx.task(record.task)? {
                    tx.insert_task(t.round, TaskKind::Verify, &t.spec, Some(t.id), t.tokens)?;
                }
                Ok(verified_original)
            });
            match committed {
                Ok(_) if outlier => {
                    let reason = record.reason.clone();
                    tracing::info!(%peer, task = task.0, "result left out: {reason:?}");
                    project.metrics.rejected("outlier");
                    if let Some(root) = record.update_root {
                        let _ = client.release(root).await;
                    }
                    ack(false, reason)
                }
                Ok(verified) => {
                    project.metrics.results_accepted.inc();
                    if verify.is_none() {
                        project.record_loss_change(judged.change);
                    }
                    if let Some((orig, ok)) = verified {
                        tracing::info!(original = %orig, passed = ok, "verification re-run compared");
                        if !ok {
                            project.metrics.verification_failures.inc();
                        }
                    }
                    // A verifier's update has served its purpose once compared (unless it
                    // is the original's, byte for byte, which aggregation still needs).
                    let original_root = verify
                        .as_ref()
                        .and_then(|c| c.0.as_ref())
                        .and_then(|o| o.update_root);
                    if let Some(root) = record.update_root
                        && verify.is_some()
                        && original_root != Some(root)
                    {
                        let _ = client.release(root).await;
                    }
                    ack(true, None)
                }
                Err(e) => {
                    if let Some(root) = record.update_root {
                        let _ = client.release(root).await;
                    }
                    tracing::warn!("committing a result: {e}");
                    project.metrics.rejected("coordinator_error");
                    ack(
                        false,
                        Some("the coordinator could not record this result".into()),
                    )
                }
            }
        }
        Err(refusal) => {
            project.metrics.rejected(refusal.reason.kind().name());
            tracing::info!(%peer, task = task.0, "result refused: {}", refusal.reason);
            let lease = result.lease.0;
            let committed = project.state().transaction(|tx| {
                let l = tx.lease(lease)?;
                let round = match l.as_ref().and_then(|l| tx.task(l.task).ok().flatten()) {
                    Some(t) => t.round,
                    None => project.current().round,
                };
                // A gross update also counts as a strike and weighs on the peer's score.
                let mut pattern = false;
                if let Some(verdict) = &refusal.judged
                    && tx.peer(&key)?.is_some()
                {
                    let mut quality = tx.peer_quality(&key)?;
                    pattern = quality.observe(verdict);
                    tx.set_peer_quality(&key, &quality)?;
                }
                // A gross effect on held-out loss is evidence of tampering, as a failed
                // re-run is; other penalised refusals cost a rejection.
                let mut penalty = 0;
                if refusal.reason.penalised() {
                    penalty += match refusal.judged {
                        Some(LossVerdict::Gross { .. }) => rep.failed_verification,
                        _ => rep.rejected,
                    };
                }
                if pattern {
                    tracing::info!(%peer, "outliers again and again: penalised");
                    penalty += rep.failed_verification;
                }
                let refused = crate::refusal::Refused {
                    peer: &key,
                    task: task.0,
                    lease,
                    kind: TaskKind::Train,
                    round,
                    compute_ms: result.compute_ms,
                    arrived_ms: arrived,
                    reason: &refusal.reason,
                    penalty,
                };
                if let Some((score, true)) =
                    crate::refusal::record(tx, &refused, now, rep.ban_below)?
                {
                    tracing::warn!(%peer, score, "peer banned");
                }
                Ok(())
            });
            if let Err(e) = committed {
                tracing::warn!("recording a refusal: {e}");
            }
            ack(false, Some(refusal.reason.to_string()))
        }
    }
}

/// Tokens a second from a task's `tokens`, the compute time a node claimed and the wall time
/// its lease ran: the claim counts only up to the wall time (and at least a millisecond).
fn measured_throughput(tokens: u64, claimed_ms: u64, ran_ms: u64) -> f64 {
    let ms = claimed_ms.min(ran_ms).max(1);
    tokens as f64 / (ms as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 19, "nothing a peer says about itself is trusted": the throughput that sizes a
    /// peer's leases came from the compute time it claimed, so a node claiming to be slow got
    /// long leases to sit on. The claim now counts only up to the lease's wall time.
    #[test]
    fn a_claimed_compute_time_counts_only_up_to_the_leases_wall_time() {
        // Honest: 1,000 tokens in 2 s of a lease that ran 2.5 s.
        assert_eq!(measured_throughput(1000, 2000, 2500), 500.0);
        // Claims an hour for a lease that ran 2 s.
        assert_eq!(measured_throughput(1000, 3_600_000, 2000), 500.0);
        // Nothing claimed, nothing measured: bounded, not infinite.
        assert_eq!(measured_throughput(1000, 0, 0), 1_000_000.0);
    }
}

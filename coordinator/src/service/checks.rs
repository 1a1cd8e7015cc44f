//! The checks of a result: lease, signature and signer, model version and replay, then its
//! update fetched, decoded and screened by its effect on held-out loss, and for a
//! verification run compared with the original.

use std::sync::Arc;
use std::time::Duration;

use canopy_node::network::Client;
use canopy_node::objects;
use canopy_protocol::messages::{TaskOutput, TaskResult, TaskSpec};
use canopy_protocol::{Digest, ObjectKind};
use libp2p::{Multiaddr, PeerId};

use super::judging::{Judged, Refused};
use crate::aggregate;
use crate::judge::LossVerdict;
use crate::project::{Project, decode_spec, now_ms};
use crate::refusal::{Leased, Refusal, Work, check_lease, check_signer};
use crate::state::{PeerRecord, ResultRecord, ResultStatus, TaskKind};
use canopy_protocol::messages::Tier;

/// How long the coordinator waits for an update's chunks.
const FETCH_TIMEOUT: Duration = Duration::from_secs(120);

/// What a re-run says of the original result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RerunVerdict {
    /// The updates agree: the original is verified.
    Agrees,
    /// They disagree: the original fails verification.
    Disagrees,
    /// The original could not be compared: it is neither verified nor failed, and its sender
    /// gains no reputation from it.
    Unverifiable,
}

impl RerunVerdict {
    /// The verdict for a cosine similarity (`None`: not compared) against `min_cosine`.
    pub(super) fn of(cosine: Option<f64>, min_cosine: f64) -> Self {
        match cosine {
            Some(c) if c >= min_cosine => Self::Agrees,
            Some(_) => Self::Disagrees,
            None => Self::Unverifiable,
        }
    }
}

pub(super) enum Checked {
    /// The result record to commit, and for a verification run the original's result (if
    /// still on record) and the cosine similarity with it (`None` when the original's update
    /// could not be loaded to compare).
    Accepted(
        Box<ResultRecord>,
        Option<Box<(Option<ResultRecord>, Option<f64>)>>,
        Judged,
    ),
    /// The coordinator failed, not the node.
    Internal(String),
}

pub(super) async fn check_result(
    project: &Arc<Project>,
    client: &Client,
    peer: PeerId,
    result: &TaskResult,
) -> Result<Checked, Refused> {
    let key = peer.to_string();
    let (lease, task, sender) = {
        let state = project.state();
        let r = state.read();
        let internal = |e: crate::state::StateError| Refusal::Internal(e.to_string());
        (
            r.lease(result.lease.0).map_err(internal)?,
            r.task(result.task.0).map_err(internal)?,
            r.peer(&key).map_err(internal)?,
        )
    };
    let Leased {
        lease,
        task,
        sender,
    } = check_lease(Work::Training, &key, lease, task, sender)?;
    let TaskOutput::Train(output) = &result.output else {
        return Err(Refusal::WrongOutput(Work::Training).into());
    };
    // An honest node reports exactly the tokens its task asked for; a claim of more is a
    // lie about the work, evidence like a bad signature (the ledger would credit the task's
    // tokens only, whatever the claim).
    if output.tokens > task.tokens {
        return Err(Refusal::FalseTokenClaim {
            claimed: output.tokens,
            task: task.tokens,
        }
        .into());
    }
    let spec = match decode_spec(&task.spec) {
        Ok(TaskSpec::Train(spec)) => spec,
        _ => {
            return Ok(Checked::Internal(
                "a stored task spec does not decode".into(),
            ));
        }
    };
    // Signature and signer: the update must be signed by the node that ran the lease.
    let signed = &output.update;
    let manifest = check_signer(Work::Training, signed, peer)?;
    if manifest.kind != ObjectKind::Update {
        return Err(Refusal::NotAnUpdate.into());
    }
    let named_round = manifest
        .metadata
        .get("round")
        .and_then(|r| r.parse::<u64>().ok());
    let named_task = manifest
        .metadata
        .get("task")
        .and_then(|r| r.parse::<u64>().ok());
    if named_round != Some(spec.model_version) {
        return Err(Refusal::WrongVersion.into());
    }
    if named_task != Some(task.id) {
        return Err(Refusal::WrongTask.into());
    }
    let current = project.current().round;
    if spec.model_version < current
        && project.config.training.late_updates == crate::config::LateUpdates::Drop
    {
        return Err(Refusal::RoundClosed.into());
    }
    // The coordinator keeps the current and previous model versions only (see `retention`):
    // an update of an older one cannot be judged and is too stale to help anyway.
    if spec.model_version.saturating_add(1) < current {
        return Err(Refusal::TooOld.into());
    }
    // A verification re-run may reproduce the original bit for bit: that is not a replay.
    match project.state().read().update_seen(&manifest.root) {
        Ok(true) if task.kind == TaskKind::Verify => {}
        Ok(true) => {
            return Err(Refusal::AlreadySubmitted.into());
        }
        Ok(false) => {}
        Err(e) => return Ok(Checked::Internal(e.to_string())),
    }
    // Sizes before anything is fetched or allocated: no update is larger than the model's.
    let len = project.model.num_params();
    if manifest.total_len > objects::max_update_len(len) {
        return Err(Refusal::TooLarge(manifest.total_len).into());
    }
    // Fetch the update from the sender (and anyone else providing it), chunk by chunk.
    let hint = Multiaddr::empty().with(libp2p::multiaddr::Protocol::P2p(peer));
    let fetched =
        match tokio::time::timeout(FETCH_TIMEOUT, client.fetch_from(signed.clone(), vec![hint]))
            .await
        {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => return Err(Refusal::FetchFailed(Work::Training, e.to_string()).into()),
            Err(_) => return Err(Refusal::FetchTimedOut(Work::Training).into()),
        };
    // From here the update is in the store: an update refused on its content leaves it again.
    let root = manifest.root;
    let checked = check_fetched(
        project,
        &sender,
        &lease,
        &task,
        &spec,
        output,
        root,
        &fetched.data,
    )
    .await;
    if !matches!(checked, Ok(Checked::Accepted(..))) {
        let _ = client.release(root).await;
    }
    checked
}

/// The checks of a fetched update: shape, finiteness, its effect on held-out loss, and for a
/// verification run the comparison with the original.
#[allow(clippy::too_many_arguments)]
async fn check_fetched(
    project: &Arc<Project>,
    sender: &PeerRecord,
    lease: &crate::state::LeaseRecord,
    task: &crate::state::TaskRecord,
    spec: &canopy_protocol::messages::TrainSpec,
    output: &canopy_protocol::messages::TrainOutput,
    root: Digest,
    data: &[u8],
) -> Result<Checked, Refused> {
    let len = project.model.num_params();
    let values = match objects::update_values(data, len) {
        Ok(v) => v,
        Err(e) => return Err(Refusal::BadUpdate(e.to_string()).into()),
    };
    let norm = match aggregate::check_update(&values, len) {
        Ok(n) => n,
        Err(aggregate::Rejection::NonFinite { index }) => {
            return Err(Refusal::NonFinite(index).into());
        }
        Err(e) => return Err(Refusal::BadUpdate(e.to_string()).into()),
    };
    // The cheap signal: the loss the update alone causes on held-out text.
    let values = Arc::new(values);
    let v = values.clone();
    let p = project.clone();
    let version = spec.model_version;
    let losses = tokio::task::spawn_blocking(move || {
        p.update_loss_change(version, &v).map_err(|e| e.to_string())
    })
    .await;
    let (before, after) = match losses {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => return Ok(Checked::Internal(e)),
        Err(e) => return Ok(Checked::Internal(e.to_string())),
    };
    // Judged against the spread of recent accepted updates, not a fixed bound: one noisy
    // update is left out at no cost, a repeated pattern or a gross one is evidence.
    let increase = f64::from(after) - f64::from(before);
    let verdict = project.judge_loss_change(increase);
    let mut outlier = None;
    match verdict {
        LossVerdict::Fine { .. } => {}
        // Recorded, left out of aggregation, and the task done: re-running the same task
        // elsewhere would only strike every node that ran it.
        LossVerdict::Outlier { standing } => {
            outlier = Some(format!(
                "the update raises the held-out loss by {increase:.3} nats, {standing:.1} \
                 spreads above the typical update: left out of this round"
            ));
        }
        LossVerdict::Gross { .. } => {
            return Err(Refused {
                reason: Refusal::GrossLossIncrease(increase),
                judged: Some(verdict),
            });
        }
    }
    let judged = Judged {
        change: increase,
        verdict,
    };
    let record = ResultRecord {
        lease: lease.id,
        task: task.id,
        peer: sender.peer.clone(),
        round: spec.model_version,
        update_root: Some(root),
        norm: Some(norm),
        train_loss: Some(f64::from(output.train_loss)),
        tokens: task.tokens,
        status: if outlier.is_some() {
            ResultStatus::Outlier
        } else {
            ResultStatus::Accepted
        },
        weight: if outlier.is_some() { 0.0 } else { 1.0 },
        reason: outlier,
        received_ms: now_ms(),
        aggregated_in: None,
        loss_change: Some(increase),
    };
    // A verification run: compare with the original's update.
    if task.kind == TaskKind::Verify {
        if sender.tier != Tier::Datacenter {
            return Err(Refusal::VerifyNotDatacenter.into());
        }
        let original = task
            .verifies
            .and_then(|t| project.state().read().result_of_task(t).ok().flatten());
        // An original that cannot be loaded is not compared: the check did not happen, and it
        // must not count as passed (it did, as a cosine of 1, before).
        let cosine = match original.as_ref().and_then(|o| o.update_root) {
            Some(original_root) => match project.object(&original_root) {
                Ok(Some((_, bytes))) => Some(match objects::update_values(&bytes, len) {
                    Ok(orig) => aggregate::cosine(&orig, &values).unwrap_or(-1.0),
                    Err(_) => -1.0,
                }),
                _ => None,
            },
            None => None,
        };
        return Ok(Checked::Accepted(
            Box::new(record),
            Some(Box::new((original, cosine))),
            judged,
        ));
    }
    Ok(Checked::Accepted(Box::new(record), None, judged))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 19, "verification fails open": an original whose update could not be loaded was
    /// compared as a cosine of 1 and passed. Not compared now means not verified.
    #[test]
    fn a_rerun_that_cannot_compare_verifies_nothing() {
        assert_eq!(RerunVerdict::of(None, 0.8), RerunVerdict::Unverifiable);
        assert_eq!(RerunVerdict::of(Some(0.9), 0.8), RerunVerdict::Agrees);
        assert_eq!(RerunVerdict::of(Some(0.8), 0.8), RerunVerdict::Agrees);
        assert_eq!(RerunVerdict::of(Some(0.5), 0.8), RerunVerdict::Disagrees);
        assert_eq!(RerunVerdict::of(Some(-1.0), -1.0), RerunVerdict::Agrees);
    }
}

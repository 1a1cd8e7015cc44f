//! Corpus tasks in the state database (granting runs of a chunk, the tasks of a chunk,
//! applying an agreement, the build's progress), and the small pieces the answers share.

use super::*;
use crate::state::{CorpusRunStatus, LedgerVerdict, TaskStatus};
use canopy_protocol::messages::Tier;

/// `e` with its sources, for a refusal reason.
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Whether one of `runs` came from the datacenter tier (trusted: its agreement needs no
/// re-check).
pub(super) fn any_datacenter_run(tx: &Tx<'_>, runs: &[CorpusRun]) -> Result<bool, StateError> {
    for run in runs {
        if tx
            .peer(&run.peer)?
            .is_some_and(|p| p.tier == Tier::Datacenter)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Chunks of the plan with a result in `agreed`, and the plan's chunk count.
pub(super) fn plan_progress(plan: &Plan, agreed: &HashMap<Digest, Digest>) -> (usize, usize) {
    let done = plan
        .chunks
        .iter()
        .filter(|c| agreed.contains_key(&c.digest))
        .count();
    (done, plan.chunks.len())
}

/// The corpus tasks of `chunk` that are open or leased.
pub(super) fn chunk_tasks(tx: &Tx<'_>, chunk: &Digest) -> Result<Vec<TaskRecord>, StateError> {
    let mut out = Vec::new();
    for status in [TaskStatus::Open, TaskStatus::Leased] {
        for t in tx.tasks(Some(CORPUS_ROUND), status)? {
            if task_chunk(&t).as_ref() == Some(chunk) {
                out.push(t);
            }
        }
    }
    Ok(out)
}

pub(super) fn task_chunk(task: &TaskRecord) -> Option<Digest> {
    match decode_spec(&task.spec) {
        Ok(TaskSpec::Corpus(spec)) => Some(spec.chunk),
        _ => None,
    }
}

/// Makes `root` the agreed result of `chunk`: every pending run naming it is accepted
/// (ledger `verified`, reputation `accepted`), every other pending run failed (ledger
/// `failed`, reputation `failed_verification`); open runs of the chunk are cancelled.
pub(super) fn apply_agreement(
    tx: &Tx<'_>,
    build: u64,
    chunk: &Digest,
    root: &Digest,
    rep: &crate::config::ReputationConfig,
) -> Result<(), StateError> {
    tx.set_corpus_agreed(build, chunk, root)?;
    for run in tx.corpus_runs(build, chunk)? {
        if run.status != CorpusRunStatus::Pending {
            continue;
        }
        if run.result == *root {
            tx.set_corpus_run_status(run.lease, CorpusRunStatus::Accepted)?;
            tx.set_ledger_verdict(run.task, &run.peer, LedgerVerdict::Verified, true, None)?;
            tx.adjust_reputation(&run.peer, rep.accepted, rep.ban_below)?;
        } else {
            tx.set_corpus_run_status(run.lease, CorpusRunStatus::Failed)?;
            tx.set_ledger_verdict(
                run.task,
                &run.peer,
                LedgerVerdict::Failed,
                false,
                Some("disagrees with the agreed result of its chunk"),
            )?;
            let (score, banned) =
                tx.adjust_reputation(&run.peer, rep.failed_verification, rep.ban_below)?;
            tracing::warn!(peer = %run.peer, score, banned, chunk = %chunk.fmt_short(), "a corpus result failed verification");
        }
    }
    for t in chunk_tasks(tx, chunk)? {
        tx.set_task_status(t.id, TaskStatus::Cancelled)?;
    }
    Ok(())
}

/// Grants `peer` a lease on a corpus task of `build` it may run, through the scheduler's one
/// grant ([`scheduler::grant_with`]); the task is [`pick_chunk`]'s.
pub(super) fn grant(
    tx: &Tx<'_>,
    config: &crate::config::SchedulingConfig,
    order: &Sampler,
    build: u64,
    peer: &PeerRecord,
    now: u64,
    datacenter_active: bool,
) -> Result<std::result::Result<scheduler::Granted, NoTask>, StateError> {
    scheduler::grant_with(tx, config, peer, now, |tx, peer| {
        pick_chunk(tx, order, build, peer, now, datacenter_active)
    })
}

/// The corpus task of `build` for `peer`: never a chunk it already ran or holds; further runs ([`TaskKind::CorpusCheck`]) go to the datacenter tier while one is
/// active, and datacenter nodes take them first. Among the tasks a volunteer may run, it gets
/// the first in its own secret order ([`Sampler::order`]), not the first by id: a chunk's two
/// runs are side by side in id order, and two identities asking one after the other got both.
/// A volunteer never gets a chunk that a volunteer of its own network or invited organisation
/// ran or holds ([`Tx::corpus_nearby`]) while a volunteer of another network is active: many
/// identities on one machine or one home network count as one.
fn pick_chunk(
    tx: &Tx<'_>,
    order: &Sampler,
    build: u64,
    peer: &PeerRecord,
    now: u64,
    datacenter_active: bool,
) -> Result<Option<TaskRecord>, StateError> {
    let held = tx.active_leases(Some(&peer.peer))?;
    let mut ran: HashSet<Digest> = tx
        .corpus_runs_of_peer(build, &peer.peer)?
        .into_iter()
        .map(|r| r.chunk)
        .collect();
    for l in &held {
        if let Some(t) = tx.task(l.task)?
            && let Some(c) = task_chunk(&t)
        {
            ran.insert(c);
        }
    }
    let datacenter = peer.tier == Tier::Datacenter;
    let mut near: HashSet<Digest> = HashSet::new();
    if !datacenter {
        let since = (now + 1).saturating_sub(crate::scheduler::ACTIVE_MS);
        let nearby = tx.corpus_nearby(build, &peer.peer, since)?;
        if nearby.others_active {
            near.extend(nearby.ran.iter().filter_map(|c| c.parse::<Digest>().ok()));
            for id in nearby.holding {
                if let Some(c) = tx.task(id)?.as_ref().and_then(task_chunk) {
                    near.insert(c);
                }
            }
        }
    }
    let mut best: Option<TaskRecord> = None;
    for task in tx.tasks(Some(CORPUS_ROUND), TaskStatus::Open)? {
        let check = task.kind == TaskKind::CorpusCheck;
        if !datacenter && datacenter_active && (check || task.reopened) {
            continue;
        }
        if task_chunk(&task).is_none_or(|c| ran.contains(&c) || near.contains(&c)) {
            continue;
        }
        // Datacenter nodes take further runs and reopened tasks first; among equals, and
        // for volunteers, the peer's own secret order decides.
        let rank = |t: &TaskRecord| {
            (
                std::cmp::Reverse(datacenter && t.kind == TaskKind::CorpusCheck),
                std::cmp::Reverse(datacenter && t.reopened),
                order.order(&peer.peer, t.id),
            )
        };
        best = match best {
            Some(b) if rank(&task) < rank(&b) => Some(task),
            Some(b) => Some(b),
            None => Some(task),
        };
    }
    Ok(best)
}

//! How each record is selected and read from its row.

use canopy_protocol::Digest;
use canopy_protocol::messages::Tier;

use super::records::*;
use super::{Result, digest, opt_digest};

pub(super) const PEER_SELECT: &str = "SELECT peer, tier, name, org, country, reputation, banned, tokens_per_sec, slots, joined_ms, last_seen_ms FROM peers";

/// The tier named in column `i`: a name that is not a tier is a conversion error.
pub(super) fn tier_at(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Tier> {
    let name: String = r.get(i)?;
    name.parse().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

pub(super) fn peer_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PeerRecord> {
    Ok(PeerRecord {
        peer: r.get(0)?,
        tier: tier_at(r, 1)?,
        name: r.get(2)?,
        org: r.get(3)?,
        country: r.get(4)?,
        reputation: r.get(5)?,
        banned: r.get(6)?,
        tokens_per_sec: r.get(7)?,
        slots: r.get::<_, i64>(8)? as u32,
        joined_ms: r.get::<_, i64>(9)? as u64,
        last_seen_ms: r.get::<_, i64>(10)? as u64,
    })
}

pub(super) const ROUND_SELECT: &str = "SELECT round, model_root, momentum_root, opened_ms, closed_ms, train_loss, eval_loss, accepted, rejected, bytes_in, bytes_out FROM rounds";

pub(super) fn round_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<RoundRecord>> {
    let model: String = r.get(1)?;
    let momentum: Option<String> = r.get(2)?;
    let rest = (
        r.get::<_, i64>(0)? as u64,
        r.get::<_, i64>(3)? as u64,
        r.get::<_, Option<i64>>(4)?.map(|v| v as u64),
        r.get(5)?,
        r.get(6)?,
        r.get::<_, i64>(7)? as u64,
        r.get::<_, i64>(8)? as u64,
        r.get::<_, i64>(9)? as u64,
        r.get::<_, i64>(10)? as u64,
    );
    Ok((|| {
        Ok(RoundRecord {
            round: rest.0,
            model_root: digest("model root", model)?,
            momentum_root: opt_digest("momentum root", momentum)?,
            opened_ms: rest.1,
            closed_ms: rest.2,
            train_loss: rest.3,
            eval_loss: rest.4,
            accepted: rest.5,
            rejected: rest.6,
            bytes_in: rest.7,
            bytes_out: rest.8,
        })
    })())
}

pub(super) const TASK_SELECT: &str =
    "SELECT id, round, kind, spec, status, verifies, reopened, tokens FROM tasks";

pub(super) fn task_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TaskRecord> {
    Ok(TaskRecord {
        id: r.get::<_, i64>(0)? as u64,
        round: r.get::<_, i64>(1)? as u64,
        kind: r.get(2)?,
        spec: r.get(3)?,
        status: r.get(4)?,
        verifies: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
        reopened: r.get(6)?,
        tokens: r.get::<_, i64>(7)? as u64,
    })
}

pub(super) const LEASE_SELECT: &str =
    "SELECT id, task, peer, granted_ms, expires_ms, status FROM leases";

pub(super) fn lease_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LeaseRecord> {
    Ok(LeaseRecord {
        id: r.get::<_, i64>(0)? as u64,
        task: r.get::<_, i64>(1)? as u64,
        peer: r.get(2)?,
        granted_ms: r.get::<_, i64>(3)? as u64,
        expires_ms: r.get::<_, i64>(4)? as u64,
        status: r.get(5)?,
    })
}

pub(super) const RESULT_SELECT: &str = "SELECT lease, task, peer, round, update_root, norm, train_loss, tokens, status, reason, received_ms, weight, aggregated_in, loss_change FROM results";

pub(super) fn result_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<ResultRecord>> {
    let root: Option<String> = r.get(4)?;
    let mut rec = ResultRecord {
        lease: r.get::<_, i64>(0)? as u64,
        task: r.get::<_, i64>(1)? as u64,
        peer: r.get(2)?,
        round: r.get::<_, i64>(3)? as u64,
        update_root: None,
        norm: r.get(5)?,
        train_loss: r.get(6)?,
        tokens: r.get::<_, i64>(7)? as u64,
        status: r.get(8)?,
        reason: r.get(9)?,
        received_ms: r.get::<_, i64>(10)? as u64,
        weight: r.get(11)?,
        aggregated_in: r.get::<_, Option<i64>>(12)?.map(|v| v as u64),
        loss_change: r.get(13)?,
    };
    Ok(opt_digest("update root", root).map(|root| {
        rec.update_root = root;
        rec
    }))
}

pub(super) fn corpus_run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<CorpusRun>> {
    let chunk: String = r.get(3)?;
    let result: String = r.get(5)?;
    let run = CorpusRun {
        lease: r.get::<_, i64>(0)? as u64,
        task: r.get::<_, i64>(1)? as u64,
        build: r.get::<_, i64>(2)? as u64,
        chunk: Digest::of(b""),
        peer: r.get(4)?,
        result: Digest::of(b""),
        status: r.get(6)?,
        received_ms: r.get::<_, i64>(7)? as u64,
    };
    Ok((|| {
        Ok(CorpusRun {
            chunk: digest("corpus chunk", chunk)?,
            result: digest("corpus result", result)?,
            ..run
        })
    })())
}

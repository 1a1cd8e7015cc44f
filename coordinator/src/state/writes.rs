//! The changes, each inside a transaction ([`Tx`]).

use canopy_protocol::messages::Tier;
use canopy_protocol::{Digest, SignedManifest};
use rusqlite::{OptionalExtension, params};

use super::records::*;
use super::status::{
    CorpusRunStatus, LeaseStatus, LedgerVerdict, ResultStatus, TaskKind, TaskStatus,
};
use super::{PAUSED_KEY, Result, StateError, Tx};

impl Tx<'_> {
    /// Records a corpus result (status `pending` until its chunk's runs agree).
    pub fn insert_corpus_run(&self, run: &CorpusRun) -> Result<()> {
        self.tx.execute(
            "INSERT INTO corpus_results(lease, task, build, chunk, peer, result, status, received_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![run.lease as i64, run.task as i64, run.build as i64, run.chunk.to_string(),
                run.peer, run.result.to_string(), run.status, run.received_ms as i64],
        )?;
        Ok(())
    }

    /// Sets a corpus result's verdict.
    pub fn set_corpus_run_status(&self, lease: u64, status: CorpusRunStatus) -> Result<()> {
        self.tx.execute(
            "UPDATE corpus_results SET status = ?2 WHERE lease = ?1",
            params![lease as i64, status],
        )?;
        Ok(())
    }

    /// Cancels every open or leased task of `round` and ends their active leases (the corpus
    /// build's leftovers once every chunk is agreed).
    pub fn cancel_round_tasks(&self, round: u64) -> Result<()> {
        self.tx.execute(
            "UPDATE leases SET status = 'released' WHERE status = 'active'
             AND task IN (SELECT id FROM tasks WHERE round = ?1)",
            [round as i64],
        )?;
        self.tx.execute(
            "UPDATE tasks SET status = 'cancelled' WHERE round = ?1 AND status IN ('open', 'leased')",
            [round as i64],
        )?;
        Ok(())
    }

    /// Records the agreed result of a chunk.
    pub fn set_corpus_agreed(&self, build: u64, chunk: &Digest, result: &Digest) -> Result<()> {
        self.tx.execute(
            "INSERT OR REPLACE INTO corpus_agreed(build, chunk, result) VALUES (?1, ?2, ?3)",
            params![build as i64, chunk.to_string(), result.to_string()],
        )?;
        Ok(())
    }

    /// Sets a value in `meta`.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.tx.execute(
            "INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
            [key, value],
        )?;
        Ok(())
    }

    /// Forgets the manifests of objects the run no longer keeps (their chunks were released).
    pub fn forget_objects(&self, roots: &[Digest]) -> Result<()> {
        let mut stmt = self.prepare_cached("DELETE FROM objects WHERE root = ?1")?;
        for root in roots {
            stmt.execute([root.to_string()])?;
        }
        Ok(())
    }

    /// Records an object's signed manifest.
    pub fn put_manifest(&self, signed: &SignedManifest, now_ms: u64) -> Result<()> {
        let frame = signed.to_frame().map_err(|e| StateError::Corrupt {
            what: "manifest",
            reason: e.to_string(),
        })?;
        let m = signed.manifest();
        self.tx.execute(
            "INSERT OR IGNORE INTO objects(root, kind, manifest, added_ms) VALUES (?1, ?2, ?3, ?4)",
            params![
                m.root.to_string(),
                format!("{:?}", m.kind),
                frame,
                now_ms as i64
            ],
        )?;
        Ok(())
    }

    /// Adds or refreshes a peer (keeping its reputation, ban and join time).
    pub fn upsert_peer(&self, p: &PeerRecord) -> Result<()> {
        self.tx.execute(
            "INSERT INTO peers(peer, tier, name, org, country, reputation, banned, tokens_per_sec, slots, joined_ms, last_seen_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT(peer) DO UPDATE SET tier = ?2, name = ?3, org = ?4, country = ?5, slots = ?9, last_seen_ms = ?11",
            params![p.peer, p.tier.as_str(), p.name, p.org, p.country, p.reputation, p.banned, p.tokens_per_sec, p.slots, p.joined_ms as i64, p.last_seen_ms as i64],
        )?;
        Ok(())
    }

    /// Notes contact from a peer.
    pub fn touch_peer(&self, peer: &str, now_ms: u64) -> Result<()> {
        self.tx.execute(
            "UPDATE peers SET last_seen_ms = ?2 WHERE peer = ?1",
            params![peer, now_ms as i64],
        )?;
        Ok(())
    }

    /// Adds `delta` to a peer's reputation and bans it below `ban_below`. Returns the new
    /// reputation and whether the peer is now banned.
    pub fn adjust_reputation(&self, peer: &str, delta: i64, ban_below: i64) -> Result<(i64, bool)> {
        self.tx.execute(
            "UPDATE peers SET reputation = reputation + ?2,
                banned = CASE WHEN banned = 1 OR reputation + ?2 < ?3 THEN 1 ELSE 0 END WHERE peer = ?1",
            params![peer, delta, ban_below],
        )?;
        Ok(self
            .tx
            .query_row(
                "SELECT reputation, banned FROM peers WHERE peer = ?1",
                [peer],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .unwrap_or((0, false)))
    }

    /// Folds a measured throughput into a peer's estimate (an exponential average).
    pub fn record_throughput(&self, peer: &str, tokens_per_sec: f64) -> Result<()> {
        self.tx.execute(
            "UPDATE peers SET tokens_per_sec = CASE WHEN tokens_per_sec IS NULL THEN ?2
                ELSE 0.5 * tokens_per_sec + 0.5 * ?2 END WHERE peer = ?1",
            params![peer, tokens_per_sec],
        )?;
        Ok(())
    }

    /// Allowlists a key for a tier.
    pub fn allow(&self, peer: &str, tier: Tier, now_ms: u64) -> Result<()> {
        let tier = tier.as_str();
        self.tx.execute(
            "INSERT INTO allowlist(peer, tier, added_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT(peer) DO UPDATE SET tier = ?2",
            params![peer, tier, now_ms as i64],
        )?;
        self.tx.execute(
            "UPDATE peers SET tier = ?2 WHERE peer = ?1",
            params![peer, tier],
        )?;
        Ok(())
    }

    /// Opens a round.
    pub fn open_round(
        &self,
        round: u64,
        model: &Digest,
        momentum: Option<&Digest>,
        now_ms: u64,
    ) -> Result<()> {
        self.tx.execute(
            "INSERT INTO rounds(round, model_root, momentum_root, opened_ms) VALUES (?1, ?2, ?3, ?4)",
            params![round as i64, model.to_string(), momentum.map(|m| m.to_string()), now_ms as i64],
        )?;
        Ok(())
    }

    /// Closes a round with its figures.
    pub fn close_round(
        &self,
        round: u64,
        now_ms: u64,
        train_loss: Option<f64>,
        eval_loss: Option<f64>,
    ) -> Result<()> {
        self.tx.execute(
            "UPDATE rounds SET closed_ms = ?2, train_loss = ?3, eval_loss = ?4 WHERE round = ?1",
            params![round as i64, now_ms as i64, train_loss, eval_loss],
        )?;
        Ok(())
    }

    /// Adds to a round's counters.
    pub fn count_round(
        &self,
        round: u64,
        accepted: u64,
        rejected: u64,
        bytes_in: u64,
        bytes_out: u64,
    ) -> Result<()> {
        self.tx.execute(
            "UPDATE rounds SET accepted = accepted + ?2, rejected = rejected + ?3,
                bytes_in = bytes_in + ?4, bytes_out = bytes_out + ?5 WHERE round = ?1",
            params![
                round as i64,
                accepted as i64,
                rejected as i64,
                bytes_in as i64,
                bytes_out as i64
            ],
        )?;
        Ok(())
    }

    /// Sets a round's accepted and rejected counts from its results and ledger (credit held
    /// by direction is no rejection: the update was aggregated).
    pub fn tally_round(&self, round: u64) -> Result<()> {
        self.tx.execute(
            "UPDATE rounds SET
                accepted = (SELECT COUNT(*) FROM results WHERE round = ?1 AND status = 'accepted'),
                rejected = (SELECT COUNT(*) FROM ledger
                            WHERE round = ?1 AND accepted = 0 AND verified != ?2)
             WHERE round = ?1",
            params![round as i64, LedgerVerdict::Held],
        )?;
        Ok(())
    }

    /// Adds a task; returns its id.
    pub fn insert_task(
        &self,
        round: u64,
        kind: TaskKind,
        spec: &[u8],
        verifies: Option<u64>,
        tokens: u64,
    ) -> Result<u64> {
        self.tx.execute(
            "INSERT INTO tasks(round, kind, spec, status, verifies, tokens) VALUES (?1, ?2, ?3, 'open', ?4, ?5)",
            params![round as i64, kind, spec, verifies.map(|v| v as i64), tokens as i64],
        )?;
        Ok(self.tx.last_insert_rowid() as u64)
    }

    /// Sets a task's status (and marks it reopened when it goes back to `open`).
    pub fn set_task_status(&self, task: u64, status: TaskStatus) -> Result<()> {
        self.tx.execute(
            "UPDATE tasks SET status = ?2, reopened = CASE WHEN ?2 = 'open' THEN 1 ELSE reopened END WHERE id = ?1",
            params![task as i64, status],
        )?;
        Ok(())
    }

    /// Cancels every open or leased task of rounds before `round`.
    pub fn cancel_tasks_before(&self, round: u64) -> Result<()> {
        self.tx.execute(
            "UPDATE tasks SET status = 'cancelled' WHERE round < ?1 AND status IN ('open', 'leased')",
            [round as i64],
        )?;
        Ok(())
    }

    /// Grants a lease; returns its id.
    pub fn insert_lease(&self, task: u64, peer: &str, now_ms: u64, expires_ms: u64) -> Result<u64> {
        self.tx.execute(
            "INSERT INTO leases(task, peer, granted_ms, expires_ms, status) VALUES (?1, ?2, ?3, ?4, 'active')",
            params![task as i64, peer, now_ms as i64, expires_ms as i64],
        )?;
        self.set_task_status(task, TaskStatus::Leased)?;
        Ok(self.tx.last_insert_rowid() as u64)
    }

    /// Sets a lease's status.
    pub fn set_lease_status(&self, lease: u64, status: LeaseStatus) -> Result<()> {
        self.tx.execute(
            "UPDATE leases SET status = ?2 WHERE id = ?1",
            params![lease as i64, status],
        )?;
        Ok(())
    }

    /// Extends a lease.
    pub fn extend_lease(&self, lease: u64, expires_ms: u64, progress: u16) -> Result<()> {
        self.tx.execute(
            "UPDATE leases SET expires_ms = ?2, progress = ?3 WHERE id = ?1",
            params![lease as i64, expires_ms as i64, progress],
        )?;
        Ok(())
    }

    /// Records a received result.
    pub fn insert_result(&self, r: &ResultRecord) -> Result<()> {
        self.tx.execute(
            "INSERT INTO results(lease, task, peer, round, update_root, norm, train_loss, tokens, status, reason, received_ms, weight, loss_change)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![r.lease as i64, r.task as i64, r.peer, r.round as i64, r.update_root.map(|d| d.to_string()),
                r.norm, r.train_loss, r.tokens as i64, r.status, r.reason, r.received_ms as i64, r.weight, r.loss_change],
        )?;
        Ok(())
    }

    /// Sets a result's verdict.
    pub fn set_result_status(
        &self,
        lease: u64,
        status: ResultStatus,
        reason: Option<&str>,
    ) -> Result<()> {
        self.tx.execute(
            "UPDATE results SET status = ?2, reason = COALESCE(?3, reason) WHERE lease = ?1",
            params![lease as i64, status, reason],
        )?;
        Ok(())
    }

    /// Marks results as used by round `round`'s aggregation, with their weights.
    pub fn mark_aggregated(&self, leases: &[(u64, f64)], round: u64) -> Result<()> {
        for (lease, weight) in leases {
            self.tx.execute(
                "UPDATE results SET aggregated_in = ?2, weight = ?3 WHERE lease = ?1",
                params![*lease as i64, round as i64, weight],
            )?;
        }
        Ok(())
    }

    /// Records the compute a node said it runs on.
    pub fn set_peer_adapter(&self, peer: &str, adapter: &str) -> Result<()> {
        self.tx.execute(
            "INSERT INTO peer_adapters(peer, adapter) VALUES (?1, ?2)
             ON CONFLICT(peer) DO UPDATE SET adapter = ?2",
            [peer, adapter],
        )?;
        Ok(())
    }

    /// Bans a node (or lifts its ban). Returns whether the node is known.
    pub fn set_banned(&self, peer: &str, banned: bool) -> Result<bool> {
        let n = self.tx.execute(
            "UPDATE peers SET banned = ?2 WHERE peer = ?1",
            params![peer, banned],
        )?;
        Ok(n > 0)
    }

    /// Pauses or resumes the project (see [`PAUSED_KEY`]).
    pub fn set_paused(&self, paused: bool) -> Result<()> {
        self.set_meta(PAUSED_KEY, if paused { "1" } else { "0" })
    }

    /// Starts a corpus build over `chunks_total` chunks; returns its id.
    pub fn start_corpus_build(&self, chunks_total: u64, now_ms: u64) -> Result<u64> {
        self.tx.execute(
            "INSERT INTO corpus_builds(started_ms, chunks_total) VALUES (?1, ?2)",
            params![now_ms as i64, chunks_total as i64],
        )?;
        Ok(self.tx.last_insert_rowid() as u64)
    }

    /// Records a corpus build's progress.
    pub fn corpus_build_progress(
        &self,
        id: u64,
        chunks_done: u64,
        documents_in: u64,
        documents_kept: u64,
    ) -> Result<()> {
        self.tx.execute(
            "UPDATE corpus_builds SET chunks_done = ?2, documents_in = ?3, documents_kept = ?4
             WHERE id = ?1",
            params![
                id as i64,
                chunks_done as i64,
                documents_in as i64,
                documents_kept as i64
            ],
        )?;
        Ok(())
    }

    /// Finishes a corpus build with its data card.
    pub fn finish_corpus_build(
        &self,
        id: u64,
        datacard: &serde_json::Value,
        now_ms: u64,
    ) -> Result<()> {
        self.tx.execute(
            "UPDATE corpus_builds SET finished_ms = ?2, datacard = ?3 WHERE id = ?1",
            params![id as i64, now_ms as i64, datacard.to_string()],
        )?;
        Ok(())
    }
}

//! The queries, on a connection ([`Reader`]) or inside a transaction ([`Tx`]) alike.

use canopy_protocol::messages::Tier;
use canopy_protocol::{Digest, SignedManifest};
use rusqlite::{Connection, OptionalExtension, params};

use super::records::*;
use super::rows::*;
use super::status::{ResultStatus, TaskKind, TaskStatus};
use super::{PAUSED_KEY, Reader, Result, StateError, Tx, digest};

macro_rules! reads {
    ($($t:ty),*) => {$(
impl $t {
    pub(super) fn c(&self) -> &Connection {
        self.conn_ref()
    }

    /// A value from `meta`.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .c()
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// The signed manifest of object `root`, if the coordinator has it.
    pub fn manifest(&self, root: &Digest) -> Result<Option<SignedManifest>> {
        let blob: Option<Vec<u8>> = self
            .c()
            .query_row(
                "SELECT manifest FROM objects WHERE root = ?1",
                [root.to_string()],
                |r| r.get(0),
            )
            .optional()?;
        blob.map(|b| {
            SignedManifest::from_frame(&b).map_err(|e| StateError::Corrupt {
                what: "manifest",
                reason: e.to_string(),
            })
        })
        .transpose()
    }

    /// Every object root of `kind`.
    pub fn objects_of_kind(&self, kind: &str) -> Result<Vec<Digest>> {
        let mut stmt = self.c().prepare("SELECT root FROM objects WHERE kind = ?1 ORDER BY added_ms, root")?;
        let rows = stmt.query_map([kind], |r| r.get::<_, String>(0))?;
        rows.map(|r| digest("object root", r?)).collect()
    }

    /// A peer.
    pub fn peer(&self, peer: &str) -> Result<Option<PeerRecord>> {
        Ok(self
            .c()
            .query_row(&format!("{PEER_SELECT} WHERE peer = ?1"), [peer], peer_row)
            .optional()?)
    }

    /// Every peer, best reputation first.
    pub fn peers(&self) -> Result<Vec<PeerRecord>> {
        let mut stmt = self.c().prepare(&format!("{PEER_SELECT} ORDER BY reputation DESC, peer"))?;
        let rows = stmt.query_map([], peer_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Peers of `tier` (any tier when `None`) that are not banned and were heard from at or
    /// after `since_ms`: one indexed count, not a scan of every peer.
    pub fn peers_seen_since(&self, tier: Option<Tier>, since_ms: u64) -> Result<u64> {
        let n: i64 = match tier {
            Some(tier) => self.c().query_row(
                "SELECT COUNT(*) FROM peers WHERE tier = ?1 AND last_seen_ms >= ?2 AND banned = 0",
                params![tier.as_str(), since_ms as i64],
                |r| r.get(0),
            )?,
            None => self.c().query_row(
                "SELECT COUNT(*) FROM peers WHERE last_seen_ms >= ?1 AND banned = 0",
                [since_ms as i64],
                |r| r.get(0),
            )?,
        };
        Ok(n.max(0) as u64)
    }

    /// The tier `peer` is allowlisted for.
    pub fn allowlisted(&self, peer: &str) -> Result<Option<Tier>> {
        Ok(self
            .c()
            .query_row("SELECT tier FROM allowlist WHERE peer = ?1", [peer], |r| {
                tier_at(r, 0)
            })
            .optional()?)
    }

    /// The newest round.
    pub fn current_round(&self) -> Result<Option<RoundRecord>> {
        self.c()
            .query_row(&format!("{ROUND_SELECT} ORDER BY round DESC LIMIT 1"), [], round_row)
            .optional()?
            .transpose()
    }

    /// A round.
    pub fn round(&self, round: u64) -> Result<Option<RoundRecord>> {
        self.c()
            .query_row(&format!("{ROUND_SELECT} WHERE round = ?1"), [round as i64], round_row)
            .optional()?
            .transpose()
    }

    /// Every round, oldest first.
    pub fn rounds(&self) -> Result<Vec<RoundRecord>> {
        let mut stmt = self.c().prepare(&format!("{ROUND_SELECT} ORDER BY round"))?;
        let rows = stmt.query_map([], round_row)?;
        rows.map(|r| r?).collect()
    }

    /// A task.
    pub fn task(&self, id: u64) -> Result<Option<TaskRecord>> {
        Ok(self
            .c()
            .query_row(&format!("{TASK_SELECT} WHERE id = ?1"), [id as i64], task_row)
            .optional()?)
    }

    /// Tasks of `round` (every round when `None`) with `status`.
    pub fn tasks(&self, round: Option<u64>, status: TaskStatus) -> Result<Vec<TaskRecord>> {
        let mut stmt = self.c().prepare(&format!(
            "{TASK_SELECT} WHERE status = ?1 AND (?2 IS NULL OR round = ?2) ORDER BY reopened DESC, id"
        ))?;
        let rows = stmt.query_map(params![status, round.map(|r| r as i64)], task_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The first open task of `round` in grant order (reopened first, then by id) that is not
    /// a re-run check, and not a reopened task when `skip_reopened`: what a volunteer is
    /// granted, found through an index without loading the other open tasks.
    pub fn first_open_task(&self, round: u64, skip_reopened: bool) -> Result<Option<TaskRecord>> {
        Ok(self
            .c()
            .query_row(
                &format!(
                    "{TASK_SELECT} WHERE round = ?1 AND status = 'open' AND kind != ?2
                     AND (?3 = 0 OR reopened = 0) ORDER BY reopened DESC, id LIMIT 1"
                ),
                params![round as i64, TaskKind::Verify, skip_reopened],
                task_row,
            )
            .optional()?)
    }

    /// A lease.
    pub fn lease(&self, id: u64) -> Result<Option<LeaseRecord>> {
        Ok(self
            .c()
            .query_row(&format!("{LEASE_SELECT} WHERE id = ?1"), [id as i64], lease_row)
            .optional()?)
    }

    /// Active leases (of `peer`, when given).
    pub fn active_leases(&self, peer: Option<&str>) -> Result<Vec<LeaseRecord>> {
        // Two statements, so that a peer's leases are found through its index.
        let mut stmt = match peer {
            Some(_) => self.c().prepare_cached(&format!(
                "{LEASE_SELECT} WHERE peer = ?1 AND status = 'active' ORDER BY id"
            ))?,
            None => self.c().prepare_cached(&format!(
                "{LEASE_SELECT} WHERE status = 'active' AND ?1 IS NULL ORDER BY id"
            ))?,
        };
        let rows = stmt.query_map(params![peer], lease_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every lease ever granted, oldest first: the scheduling history (who held which task,
    /// and whether the lease ended done, expired or handed back).
    pub fn leases(&self) -> Result<Vec<LeaseRecord>> {
        let mut stmt = self.c().prepare(&format!("{LEASE_SELECT} ORDER BY id"))?;
        let rows = stmt.query_map([], lease_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every lease ever granted on `task`.
    pub fn leases_of_task(&self, task: u64) -> Result<Vec<LeaseRecord>> {
        let mut stmt = self.c().prepare(&format!("{LEASE_SELECT} WHERE task = ?1 ORDER BY id"))?;
        let rows = stmt.query_map([task as i64], lease_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Whether an update with this root was ever received.
    pub fn update_seen(&self, root: &Digest) -> Result<bool> {
        Ok(self
            .c()
            .query_row(
                "SELECT 1 FROM results WHERE update_root = ?1",
                [root.to_string()],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Results with `status` (of `round`, when given).
    pub fn results(&self, round: Option<u64>, status: Option<ResultStatus>) -> Result<Vec<ResultRecord>> {
        let mut stmt = self.c().prepare(&format!(
            "{RESULT_SELECT} WHERE (?1 IS NULL OR round = ?1) AND (?2 IS NULL OR status = ?2) ORDER BY lease"
        ))?;
        let rows = stmt.query_map(params![round.map(|r| r as i64), status], result_row)?;
        rows.map(|r| r?).collect()
    }

    /// Accepted results not yet aggregated.
    pub fn unaggregated(&self) -> Result<Vec<ResultRecord>> {
        let mut stmt = self.c().prepare(&format!(
            "{RESULT_SELECT} WHERE status = 'accepted' AND aggregated_in IS NULL ORDER BY lease"
        ))?;
        let rows = stmt.query_map([], result_row)?;
        rows.map(|r| r?).collect()
    }

    /// The result of a task's accepted (or pending) run, if any.
    pub fn result_of_task(&self, task: u64) -> Result<Option<ResultRecord>> {
        self.c()
            .query_row(
                &format!("{RESULT_SELECT} WHERE task = ?1 AND status IN ('accepted', 'pending') LIMIT 1"),
                [task as i64],
                result_row,
            )
            .optional()?
            .transpose()
    }

    /// The compute each node said it runs on, by peer id.
    pub fn peer_adapters(&self) -> Result<std::collections::HashMap<String, String>> {
        let mut stmt = self.c().prepare("SELECT peer, adapter FROM peer_adapters")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every corpus build, newest first.
    pub fn corpus_builds(&self) -> Result<Vec<CorpusBuildRecord>> {
        let mut stmt = self.c().prepare(
            "SELECT id, started_ms, finished_ms, chunks_total, chunks_done, documents_in,
                    documents_kept, datacard FROM corpus_builds ORDER BY id DESC",
        )?;
        let rows = stmt.query_map([], |r| {
            let card: Option<String> = r.get(7)?;
            Ok((
                CorpusBuildRecord {
                    id: r.get::<_, i64>(0)? as u64,
                    started_ms: r.get::<_, i64>(1)? as u64,
                    finished_ms: r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
                    chunks_total: r.get::<_, i64>(3)? as u64,
                    chunks_done: r.get::<_, i64>(4)? as u64,
                    documents_in: r.get::<_, i64>(5)? as u64,
                    documents_kept: r.get::<_, i64>(6)? as u64,
                    datacard: None,
                },
                card,
            ))
        })?;
        rows.map(|row| {
            let (mut build, card) = row?;
            build.datacard = card
                .map(|c| serde_json::from_str(&c))
                .transpose()
                .map_err(|e| StateError::Corrupt {
                    what: "data card",
                    reason: e.to_string(),
                })?;
            Ok(build)
        })
        .collect()
    }

    /// The corpus results of `chunk` in `build`, oldest first.
    pub fn corpus_runs(&self, build: u64, chunk: &Digest) -> Result<Vec<CorpusRun>> {
        let mut stmt = self.c().prepare(
            "SELECT lease, task, build, chunk, peer, result, status, received_ms
             FROM corpus_results WHERE build = ?1 AND chunk = ?2 ORDER BY lease",
        )?;
        let rows = stmt.query_map(params![build as i64, chunk.to_string()], corpus_run_row)?;
        rows.map(|r| r?).collect()
    }

    /// Every corpus result of `build` sent by `peer`.
    pub fn corpus_runs_of_peer(&self, build: u64, peer: &str) -> Result<Vec<CorpusRun>> {
        let mut stmt = self.c().prepare(
            "SELECT lease, task, build, chunk, peer, result, status, received_ms
             FROM corpus_results WHERE build = ?1 AND peer = ?2 ORDER BY lease",
        )?;
        let rows = stmt.query_map(params![build as i64, peer], corpus_run_row)?;
        rows.map(|r| r?).collect()
    }

    /// The agreed result root of every chunk of `build` that has one.
    pub fn corpus_agreed(&self, build: u64) -> Result<std::collections::HashMap<Digest, Digest>> {
        let mut stmt = self
            .c()
            .prepare("SELECT chunk, result FROM corpus_agreed WHERE build = ?1")?;
        let rows = stmt.query_map([build as i64], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = std::collections::HashMap::new();
        for row in rows {
            let (chunk, result) = row?;
            out.insert(
                digest("corpus chunk", chunk)?,
                digest("corpus result", result)?,
            );
        }
        Ok(out)
    }

    /// How many tasks of `round` have each status.
    pub fn task_counts(&self, round: u64) -> Result<Vec<(String, u64)>> {
        let mut stmt = self
            .c()
            .prepare("SELECT status, COUNT(*) FROM tasks WHERE round = ?1 GROUP BY status ORDER BY status")?;
        let rows = stmt.query_map([round as i64], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Whether the project is paused (see [`PAUSED_KEY`]).
    pub fn paused(&self) -> Result<bool> {
        Ok(self.meta(PAUSED_KEY)?.as_deref() == Some("1"))
    }
}
    )*};
}

impl Reader<'_> {
    fn conn_ref(&self) -> &Connection {
        self.conn
    }
}

impl Tx<'_> {
    fn conn_ref(&self) -> &Connection {
        self.tx
    }
}

impl Tx<'_> {
    /// This transaction's view, for functions written over a [`Reader`].
    pub fn reader(&self) -> Reader<'_> {
        Reader { conn: self.tx }
    }
}

reads!(Reader<'_>, Tx<'_>);

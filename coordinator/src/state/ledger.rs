//! The contribution ledger: one entry per result, with the coordinator's own figures (the
//! task's tokens, compute time bounded by the lease), and `contributor_totals`, the ledger
//! summed per node by triggers in the transaction of every ledger change, grouped on read per
//! node, organisation and country.

use std::collections::HashMap;

use canopy_protocol::Digest;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::status::{LedgerVerdict, TaskKind};
use super::{Reader, Result, Tx, schema_version, sql_u64};

/// The figures one ledger row adds to its node's `contributor_totals` row, as SQL over the
/// row named `{r}` (never negative, whatever the row holds).
const TOTAL_COLUMNS: [(&str, &str); 8] = [
    ("results", "1"),
    ("accepted", "CASE WHEN {r}.accepted = 1 THEN 1 ELSE 0 END"),
    // Credit held by direction (`judging::HELD`) is neither: it is counted once released.
    (
        "rejected",
        "CASE WHEN {r}.accepted = 0 AND {r}.verified != 'held' THEN 1 ELSE 0 END",
    ),
    (
        "verified",
        "CASE WHEN {r}.verified = 'verified' THEN 1 ELSE 0 END",
    ),
    (
        "verifications",
        "CASE WHEN {r}.verified = 'verifier' THEN 1 ELSE 0 END",
    ),
    (
        "tokens",
        "CASE WHEN {r}.accepted = 1 THEN MAX({r}.tokens, 0) ELSE 0 END",
    ),
    (
        "tokens_verified",
        "CASE WHEN {r}.verified = 'verified' THEN MAX({r}.tokens, 0) ELSE 0 END",
    ),
    ("compute_ms", "MAX({r}.compute_ms, 0)"),
];

/// SQL that adds the figures of the ledger rows `row` (selected by `from`, which may be
/// empty for a trigger's `NEW`) to `contributor_totals`, saturating at `i64::MAX`. Rows are
/// inserted one by one, so rows of one node in one statement add up too.
fn totals_add_sql(row: &str, from: &str) -> String {
    let columns: Vec<&str> = TOTAL_COLUMNS.iter().map(|(c, _)| *c).collect();
    let values: Vec<String> = TOTAL_COLUMNS
        .iter()
        .map(|(_, e)| e.replace("{r}", row))
        .collect();
    let sets: Vec<String> = columns
        .iter()
        .map(|c| {
            format!(
                "{c} = CASE WHEN {c} > {max} - excluded.{c} THEN {max} ELSE {c} + excluded.{c} END",
                max = i64::MAX
            )
        })
        .collect();
    format!(
        "INSERT INTO contributor_totals(peer, {}) SELECT {row}.peer, {} {from} WHERE true
         ON CONFLICT(peer) DO UPDATE SET {}",
        columns.join(", "),
        values.join(", "),
        sets.join(", ")
    )
}

/// SQL that takes the figures of the trigger row `row` (`OLD`) off its node's totals.
fn totals_sub_sql(row: &str) -> String {
    let sets: Vec<String> = TOTAL_COLUMNS
        .iter()
        .map(|(c, e)| format!("{c} = MAX({c} - ({}), 0)", e.replace("{r}", row)))
        .collect();
    format!(
        "UPDATE contributor_totals SET {} WHERE peer = {row}.peer",
        sets.join(", ")
    )
}

/// Schema version 1: per-node totals of the ledger, kept by triggers in the transaction of
/// every ledger change, and filled from the ledger already there.
pub(super) fn migration_1() -> String {
    let columns: Vec<String> = TOTAL_COLUMNS
        .iter()
        .map(|(c, _)| format!("{c} INTEGER NOT NULL DEFAULT 0"))
        .collect();
    format!(
        "CREATE TABLE IF NOT EXISTS contributor_totals (peer TEXT PRIMARY KEY, {columns});
         DROP TRIGGER IF EXISTS ledger_totals_insert;
         DROP TRIGGER IF EXISTS ledger_totals_update;
         DROP TRIGGER IF EXISTS ledger_totals_delete;
         CREATE TRIGGER ledger_totals_insert AFTER INSERT ON ledger BEGIN {add_new}; END;
         CREATE TRIGGER ledger_totals_update
             AFTER UPDATE OF peer, accepted, verified, tokens, compute_ms ON ledger
             BEGIN {sub_old}; {add_new}; END;
         CREATE TRIGGER ledger_totals_delete AFTER DELETE ON ledger BEGIN {sub_old}; END;
         DELETE FROM contributor_totals;
         {fill};",
        columns = columns.join(", "),
        add_new = totals_add_sql("NEW", ""),
        sub_old = totals_sub_sql("OLD"),
        fill = totals_add_sql("l", "FROM ledger AS l"),
    )
}

/// One ledger entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LedgerEntry {
    /// Entry number.
    pub id: u64,
    /// Who.
    pub peer: String,
    /// Their display name, if any.
    pub name: Option<String>,
    /// Their organisation, if any.
    pub org: Option<String>,
    /// Round.
    pub round: u64,
    /// Task.
    pub task: u64,
    /// What the task asked.
    pub kind: TaskKind,
    /// Tokens of its task (none for a refused result).
    pub tokens: u64,
    /// Compute time reported, at most the wall time its lease ran (none when refused).
    pub compute_ms: u64,
    /// Whether the result was accepted.
    pub accepted: bool,
    /// What its verification found.
    pub verified: LedgerVerdict,
    /// Root hash of the signed result.
    pub result_hash: Option<String>,
    /// Why rejected.
    pub reason: Option<String>,
    /// When.
    pub ts_ms: u64,
}

/// How [`Reader::contributors`] groups the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContributorGroup {
    /// One row per node.
    Peer,
    /// One row per self-declared organisation (nodes without one together).
    Organisation,
    /// One row per self-declared country (nodes without one together).
    Country,
}

/// The work one contributor (a node, an organisation or a country) did, from the ledger.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Contribution {
    /// The peer id, organisation or country code; `None` for "not declared".
    pub key: Option<String>,
    /// For a node: its display name.
    pub name: Option<String>,
    /// For a node: its organisation.
    pub org: Option<String>,
    /// For a node: its country.
    pub country: Option<String>,
    /// For a node: its tier.
    pub tier: Option<String>,
    /// Nodes in the group.
    pub peers: u64,
    /// Ledger entries (results sent).
    pub results: u64,
    /// Results accepted.
    pub accepted: u64,
    /// Results refused (or failed verification).
    pub rejected: u64,
    /// Results confirmed by a datacenter re-run.
    pub verified: u64,
    /// Re-runs done for others (datacenter tier).
    pub verifications: u64,
    /// Training tokens in accepted results.
    pub tokens: u64,
    /// Training tokens in verified results.
    pub tokens_verified: u64,
    /// Compute time recorded for all results (each bounded by its lease's wall time).
    pub compute_ms: u64,
}

/// The contribution ledger summed per node, per organisation and per country: what
/// `canopy-coordinator ledger --totals` prints and the dashboard shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Contributors {
    /// Ledger entries in all.
    pub entries: u64,
    /// Per node, most tokens first.
    pub volunteers: Vec<Contribution>,
    /// Per organisation, most tokens first.
    pub organisations: Vec<Contribution>,
    /// Per country, most tokens first.
    pub countries: Vec<Contribution>,
}

/// A result's entry for the ledger, as its sender's message and the coordinator's verdict
/// give it. [`Tx::ledger_entry`] checks it against the coordinator's own records: the node
/// must have joined, the tokens are those of the task, and the compute time is bounded by the
/// lease's wall time.
#[derive(Debug, Clone, Copy)]
pub struct LedgerClaim<'a> {
    /// The sender.
    pub peer: &'a str,
    /// The round it counts for.
    pub round: u64,
    /// The task the result is for.
    pub task: u64,
    /// The lease the result names.
    pub lease: u64,
    /// What the task asked.
    pub kind: TaskKind,
    /// The compute time the node reports (a claim: bounded before it is recorded).
    pub compute_ms: u64,
    /// Whether the coordinator accepted the result.
    pub accepted: bool,
    /// What its verification found.
    pub verified: LedgerVerdict,
    /// Root hash of the signed result.
    pub result_hash: Option<&'a Digest>,
    /// Why it was refused.
    pub reason: Option<&'a str>,
    /// When the result arrived (ms since the epoch): the end of the wall time that bounds
    /// the compute time.
    pub arrived_ms: u64,
}

/// One node's ledger totals (a `contributor_totals` row), with what it declared.
#[derive(Debug, Clone, Default)]
struct PeerTotals {
    peer: String,
    name: Option<String>,
    org: Option<String>,
    country: Option<String>,
    tier: Option<String>,
    /// In [`TOTAL_COLUMNS`] order.
    figures: [u64; 8],
}

impl PeerTotals {
    /// Adds `figures`, saturating at `cap`: `i64::MAX` for one node (as `contributor_totals`
    /// keeps it), `u64::MAX` for a group of nodes.
    fn add(&mut self, figures: &[u64; 8], cap: u64) {
        for (total, v) in self.figures.iter_mut().zip(figures) {
            *total = total.saturating_add(*v).min(cap);
        }
    }
}

/// Sums per-node totals by `group`, most tokens first (then by key, "not declared" first).
fn group_contributions(rows: &[PeerTotals], group: ContributorGroup) -> Vec<Contribution> {
    let mut groups: Vec<(Option<String>, Option<&PeerTotals>, u64, PeerTotals)> = Vec::new();
    let mut index: HashMap<Option<String>, usize> = HashMap::new();
    for row in rows {
        let key = match group {
            ContributorGroup::Peer => Some(row.peer.clone()),
            ContributorGroup::Organisation => row.org.clone(),
            ContributorGroup::Country => row.country.clone(),
        };
        let i = *index.entry(key.clone()).or_insert_with(|| {
            groups.push((key, Some(row), 0, PeerTotals::default()));
            groups.len() - 1
        });
        let (_, _, peers, totals) = &mut groups[i];
        *peers += 1;
        totals.add(&row.figures, u64::MAX);
    }
    let node = group == ContributorGroup::Peer;
    let mut out: Vec<Contribution> = groups
        .into_iter()
        .map(|(key, first, peers, t)| {
            let own = |f: fn(&PeerTotals) -> &Option<String>| {
                first.filter(|_| node).and_then(|p| f(p).clone())
            };
            let [
                results,
                accepted,
                rejected,
                verified,
                verifications,
                tokens,
                tokens_verified,
                compute_ms,
            ] = t.figures;
            Contribution {
                name: own(|p| &p.name),
                org: own(|p| &p.org),
                country: own(|p| &p.country),
                tier: own(|p| &p.tier),
                key,
                peers,
                results,
                accepted,
                rejected,
                verified,
                verifications,
                tokens,
                tokens_verified,
                compute_ms,
            }
        })
        .collect();
    out.sort_by(|a, b| b.tokens.cmp(&a.tokens).then_with(|| a.key.cmp(&b.key)));
    out
}

macro_rules! ledger_reads {
    ($($t:ty),*) => {$(
impl $t {
    /// The whole ledger, oldest first.
    pub fn ledger(&self) -> Result<Vec<LedgerEntry>> {
        let mut stmt = self.c().prepare(
            "SELECT l.id, l.peer, p.name, p.org, l.round, l.task, l.kind, l.tokens, l.compute_ms,
                    l.accepted, l.verified, l.result_hash, l.reason, l.ts_ms
             FROM ledger l LEFT JOIN peers p ON p.peer = l.peer ORDER BY l.id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(LedgerEntry {
                id: r.get::<_, i64>(0)? as u64,
                peer: r.get(1)?,
                name: r.get(2)?,
                org: r.get(3)?,
                round: r.get::<_, i64>(4)? as u64,
                task: r.get::<_, i64>(5)? as u64,
                kind: r.get(6)?,
                tokens: r.get::<_, i64>(7)? as u64,
                compute_ms: r.get::<_, i64>(8)? as u64,
                accepted: r.get(9)?,
                verified: r.get(10)?,
                result_hash: r.get(11)?,
                reason: r.get(12)?,
                ts_ms: r.get::<_, i64>(13)? as u64,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every node's ledger totals, with what it declared. Read from `contributor_totals`
    /// (one row per node, whatever the ledger's length); a database not yet migrated (opened
    /// read-only) is summed from the ledger instead. Neither can overflow: figures saturate.
    fn peer_totals(&self, only: Option<&str>) -> Result<Vec<PeerTotals>> {
        let sql = if schema_version(self.c())? >= 1 {
            let columns: Vec<String> =
                TOTAL_COLUMNS.iter().map(|(c, _)| format!("t.{c}")).collect();
            format!(
                "SELECT t.peer, p.name, p.org, p.country, p.tier, {}
                 FROM contributor_totals t LEFT JOIN peers p ON p.peer = t.peer
                 WHERE t.results > 0 AND (?1 IS NULL OR t.peer = ?1)",
                columns.join(", ")
            )
        } else {
            // Not migrated yet: the same figures, per ledger row, summed below.
            let figures: Vec<String> = TOTAL_COLUMNS
                .iter()
                .map(|(_, e)| e.replace("{r}", "l"))
                .collect();
            format!(
                "SELECT l.peer, p.name, p.org, p.country, p.tier, {}
                 FROM ledger l LEFT JOIN peers p ON p.peer = l.peer
                 WHERE ?1 IS NULL OR l.peer = ?1",
                figures.join(", ")
            )
        };
        let mut stmt = self.c().prepare(&sql)?;
        let mut by_peer: HashMap<String, PeerTotals> = HashMap::new();
        let mut rows = stmt.query([only])?;
        while let Some(r) = rows.next()? {
            let peer: String = r.get(0)?;
            let mut figures = [0u64; 8];
            for (i, f) in figures.iter_mut().enumerate() {
                *f = r.get::<_, Option<i64>>(5 + i)?.unwrap_or(0).max(0) as u64;
            }
            match by_peer.get_mut(&peer) {
                Some(t) => t.add(&figures, i64::MAX as u64),
                None => {
                    let t = PeerTotals {
                        peer: peer.clone(),
                        name: r.get(1)?,
                        org: r.get(2)?,
                        country: r.get(3)?,
                        tier: r.get(4)?,
                        figures,
                    };
                    by_peer.insert(peer, t);
                }
            }
        }
        Ok(by_peer.into_values().collect())
    }

    /// The ledger summed by `group`, most tokens first. Every grouping comes from the same
    /// per-node totals, so the ledger command and the dashboard agree on every figure; the
    /// cost grows with the nodes, not with the ledger.
    pub fn contributions(&self, group: ContributorGroup) -> Result<Vec<Contribution>> {
        Ok(group_contributions(&self.peer_totals(None)?, group))
    }

    /// One node's ledger totals (`None`: no entry yet); one indexed row, whatever the
    /// ledger's length.
    pub fn contribution_of(&self, peer: &str) -> Result<Option<Contribution>> {
        Ok(group_contributions(&self.peer_totals(Some(peer))?, ContributorGroup::Peer)
            .into_iter()
            .next())
    }

    /// The ledger summed per node, per organisation and per country.
    pub fn contributors(&self) -> Result<Contributors> {
        let rows = self.peer_totals(None)?;
        Ok(Contributors {
            entries: rows
                .iter()
                .fold(0u64, |n, r| n.saturating_add(r.figures[0])),
            volunteers: group_contributions(&rows, ContributorGroup::Peer),
            organisations: group_contributions(&rows, ContributorGroup::Organisation),
            countries: group_contributions(&rows, ContributorGroup::Country),
        })
    }

}
    )*};
}

ledger_reads!(Reader<'_>, Tx<'_>);

impl Tx<'_> {
    /// Sets the verdict of the ledger entry of one result (by task and peer), with its
    /// acceptance.
    pub fn set_ledger_verdict(
        &self,
        task: u64,
        peer: &str,
        verified: LedgerVerdict,
        accepted: bool,
        reason: Option<&str>,
    ) -> Result<()> {
        self.tx.execute(
            "UPDATE ledger SET verified = ?3, accepted = ?4, reason = COALESCE(?5, reason)
             WHERE task = ?1 AND peer = ?2 AND accepted = 1",
            params![task as i64, peer, verified, accepted, reason],
        )?;
        Ok(())
    }

    /// Adds the ledger entry of a result, checked against the coordinator's own records;
    /// returns its id, or `None` when the sender never joined (no entry is written for it).
    ///
    /// The entry's figures are the coordinator's, not the node's: an accepted result gets
    /// the tokens of its task (a refused one none), and the compute time claimed is bounded
    /// by the wall time between the grant of the sender's lease on the task and the result's
    /// arrival (a refused result, or one on a lease that is not the sender's, gets none).
    pub fn ledger_entry(&self, claim: &LedgerClaim<'_>, now_ms: u64) -> Result<Option<u64>> {
        let c = claim;
        if self.peer(c.peer)?.is_none() {
            return Ok(None);
        }
        let (tokens, compute_ms) = if c.accepted {
            let tokens: Option<i64> = self
                .tx
                .query_row(
                    "SELECT tokens FROM tasks WHERE id = ?1",
                    [sql_u64(c.task)],
                    |r| r.get(0),
                )
                .optional()?;
            let ran_ms = match self.lease(c.lease)? {
                Some(l) if l.peer == c.peer && l.task == c.task => {
                    c.arrived_ms.saturating_sub(l.granted_ms)
                }
                _ => 0,
            };
            (
                tokens.unwrap_or(0).max(0),
                sql_u64(c.compute_ms.min(ran_ms)),
            )
        } else {
            (0, 0)
        };
        self.tx.execute(
            "INSERT INTO ledger(peer, round, task, kind, tokens, compute_ms, accepted, verified, result_hash, reason, ts_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![c.peer, sql_u64(c.round), sql_u64(c.task), c.kind, tokens, compute_ms, c.accepted,
                c.verified, c.result_hash.map(|d| d.to_string()), c.reason, sql_u64(now_ms)],
        )?;
        Ok(Some(self.tx.last_insert_rowid() as u64))
    }

    /// Sets the verification verdict of the ledger entries of `task` by `peer`.
    pub fn set_ledger_verified(
        &self,
        task: u64,
        peer: &str,
        verified: LedgerVerdict,
        accepted: bool,
    ) -> Result<()> {
        self.tx.execute(
            "UPDATE ledger SET verified = ?3, accepted = ?4 WHERE task = ?1 AND peer = ?2",
            params![task as i64, peer, verified, accepted],
        )?;
        Ok(())
    }
}

//! The coordinator's durable state: one SQLite database (`canopy.db`, WAL, synchronous=FULL)
//! beside the content-addressed chunk store that holds the objects themselves.
//!
//! Tables:
//! - `meta`: key/value facts about the run (the coordinator's identity, the data layout).
//! - `objects`: the signed manifest of every object the coordinator serves or has accepted
//!   (model versions, momentum checkpoints, training shards, updates), by root.
//! - `rounds`: one row per DiLoCo round: the model version it started from, when it opened
//!   and closed, its losses and counts.
//! - `peers`: every node that joined: tier, self-declared name/organisation/country,
//!   reputation, ban, measured throughput, last contact.
//! - `allowlist`: keys the operator admitted to the datacenter tier.
//! - `tasks` and `leases`: the work of each round and who holds it until when.
//! - `results`: every update received, with its verdict; accepted ones feed aggregation.
//! - `ledger`: the contribution ledger: who did what work, how much, verified or not, and the
//!   hash of the signed result. Only joined nodes get rows; the tokens of a row are those of
//!   its task and its compute time is at most the wall time the coordinator saw its lease run
//!   (see [`Tx::ledger_entry`]).
//! - `contributor_totals`: the ledger summed per node, kept by triggers in the transaction of
//!   each ledger change (saturating, so no figure can overflow): what the dashboard and
//!   `ledger --totals` read, instead of scanning the ledger.
//! - `peer_adapters`: the compute each node said it runs on when it last joined.
//! - `corpus_builds`: progress and data-card figures of each corpus build.
//! - `corpus_results`: every corpus result received on the swarm: the chunk, the sender, the
//!   root it named, and its verdict (`pending` until two runs agree, then `accepted` or
//!   `failed`); `corpus_agreed`: the agreed result root of each chunk.
//!
//! Every change that a node is told about (a lease, an acknowledged result) is committed
//! before the answer is sent. Write transactions begin `IMMEDIATE` (they take the write lock
//! at once, waiting up to the busy timeout for it), so two writers never deadlock half-way;
//! [`StateError::is_transient`] tells a lock timeout from a real failure.
//!
//! The schema version is SQLite's `user_version`: [`State::open`] migrates an older database
//! in one transaction (version 1: `contributor_totals` and its triggers, filled from the
//! ledger once; version 2: each peer's loss score and strikes, in [`judging`]; version 3: invitations' uses
//! and revocations, in [`invites`]; version 4: each peer's direction record, in [`judging`]).

mod invites;
mod judging;
mod ledger;
mod neighbours;

pub use invites::Redeemed;
pub use judging::{HELD, Judged};
pub use ledger::{Contribution, ContributorGroup, Contributors, LedgerClaim, LedgerEntry};
pub use neighbours::Nearby;

use std::path::Path;
use std::time::Duration;

use canopy_protocol::{Digest, SignedManifest};
use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

/// What can go wrong with the state database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// SQLite failed.
    #[error("state database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored value does not decode.
    #[error("state database holds a damaged {what}: {reason}")]
    Corrupt {
        /// What was being read.
        what: &'static str,
        /// Why it does not decode.
        reason: String,
    },
}

impl StateError {
    /// Whether the operation may succeed if tried again: the database was busy or locked by
    /// another connection past the busy timeout (`SQLITE_BUSY`, `SQLITE_LOCKED`), a statement
    /// was interrupted (`SQLITE_INTERRUPT`), or the WAL lock protocol lost a race
    /// (`SQLITE_PROTOCOL`). Nothing was committed then. Any other error (a damaged value, a
    /// full or failing disk, a constraint) is not transient.
    pub fn is_transient(&self) -> bool {
        match self {
            StateError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                ErrorCode::DatabaseBusy
                    | ErrorCode::DatabaseLocked
                    | ErrorCode::OperationInterrupted
                    | ErrorCode::FileLockingProtocolFailed
            ),
            _ => false,
        }
    }
}

/// Results of state operations.
pub type Result<T> = std::result::Result<T, StateError>;

/// How long a connection waits for another one's lock before the operation fails with a
/// transient error.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The schema version [`State::open`] migrates to (SQLite's `user_version`).
const SCHEMA_VERSION: i64 = 4;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    root TEXT PRIMARY KEY, kind TEXT NOT NULL, manifest BLOB NOT NULL, added_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY, model_root TEXT NOT NULL, momentum_root TEXT,
    opened_ms INTEGER NOT NULL, closed_ms INTEGER, train_loss REAL, eval_loss REAL,
    accepted INTEGER NOT NULL DEFAULT 0, rejected INTEGER NOT NULL DEFAULT 0,
    bytes_in INTEGER NOT NULL DEFAULT 0, bytes_out INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS peers (
    peer TEXT PRIMARY KEY, tier TEXT NOT NULL, name TEXT, org TEXT, country TEXT,
    reputation INTEGER NOT NULL, banned INTEGER NOT NULL DEFAULT 0, tokens_per_sec REAL,
    slots INTEGER NOT NULL DEFAULT 1, joined_ms INTEGER NOT NULL, last_seen_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS peers_seen ON peers(tier, last_seen_ms);
CREATE TABLE IF NOT EXISTS allowlist (peer TEXT PRIMARY KEY, tier TEXT NOT NULL, added_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY, round INTEGER NOT NULL, kind TEXT NOT NULL, spec BLOB NOT NULL,
    status TEXT NOT NULL, verifies INTEGER, reopened INTEGER NOT NULL DEFAULT 0,
    tokens INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks(status);
CREATE INDEX IF NOT EXISTS tasks_round ON tasks(round, status);
CREATE INDEX IF NOT EXISTS tasks_grant ON tasks(round, status, reopened DESC, id);
CREATE TABLE IF NOT EXISTS leases (
    id INTEGER PRIMARY KEY, task INTEGER NOT NULL, peer TEXT NOT NULL, granted_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL, status TEXT NOT NULL, progress INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS leases_status ON leases(status);
CREATE INDEX IF NOT EXISTS leases_task ON leases(task);
CREATE INDEX IF NOT EXISTS leases_peer ON leases(peer, status);
CREATE TABLE IF NOT EXISTS results (
    lease INTEGER PRIMARY KEY, task INTEGER NOT NULL, peer TEXT NOT NULL, round INTEGER NOT NULL,
    update_root TEXT, norm REAL, train_loss REAL, tokens INTEGER NOT NULL, status TEXT NOT NULL,
    reason TEXT, received_ms INTEGER NOT NULL, weight REAL NOT NULL DEFAULT 1.0,
    aggregated_in INTEGER);
CREATE UNIQUE INDEX IF NOT EXISTS results_update ON results(update_root);
CREATE INDEX IF NOT EXISTS results_round ON results(round, status);
CREATE INDEX IF NOT EXISTS results_task ON results(task);
CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY, peer TEXT NOT NULL, round INTEGER NOT NULL, task INTEGER NOT NULL,
    kind TEXT NOT NULL, tokens INTEGER NOT NULL, compute_ms INTEGER NOT NULL,
    accepted INTEGER NOT NULL, verified TEXT NOT NULL, result_hash TEXT, reason TEXT,
    ts_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS ledger_task ON ledger(task, peer);
CREATE INDEX IF NOT EXISTS ledger_round ON ledger(round, accepted);
CREATE TABLE IF NOT EXISTS peer_adapters (peer TEXT PRIMARY KEY, adapter TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS corpus_builds (
    id INTEGER PRIMARY KEY, started_ms INTEGER NOT NULL, finished_ms INTEGER,
    chunks_total INTEGER NOT NULL, chunks_done INTEGER NOT NULL DEFAULT 0,
    documents_in INTEGER NOT NULL DEFAULT 0, documents_kept INTEGER NOT NULL DEFAULT 0,
    datacard TEXT);
CREATE TABLE IF NOT EXISTS corpus_results (
    lease INTEGER PRIMARY KEY, task INTEGER NOT NULL, build INTEGER NOT NULL, chunk TEXT NOT NULL,
    peer TEXT NOT NULL, result TEXT NOT NULL, status TEXT NOT NULL, received_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS corpus_results_chunk ON corpus_results(build, chunk);
CREATE INDEX IF NOT EXISTS corpus_results_peer ON corpus_results(build, peer);
CREATE TABLE IF NOT EXISTS corpus_agreed (
    build INTEGER NOT NULL, chunk TEXT NOT NULL, result TEXT NOT NULL, PRIMARY KEY (build, chunk));
";

/// `v` as SQLite stores it: figures beyond `i64::MAX` are clamped, never wrapped negative.
fn sql_u64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The `meta` key whose value `1` pauses the project: no new leases are granted.
pub const PAUSED_KEY: &str = "paused";

/// A node the coordinator knows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerRecord {
    /// Its peer id.
    pub peer: String,
    /// `volunteer` or `datacenter`.
    pub tier: String,
    /// Display name.
    pub name: Option<String>,
    /// Organisation.
    pub org: Option<String>,
    /// Country code.
    pub country: Option<String>,
    /// Reputation points.
    pub reputation: i64,
    /// Whether it is banned.
    pub banned: bool,
    /// Measured training throughput.
    pub tokens_per_sec: Option<f64>,
    /// Tasks it may hold at once.
    pub slots: u32,
    /// When it first joined (ms since the epoch).
    pub joined_ms: u64,
    /// When it was last heard from.
    pub last_seen_ms: u64,
}

/// One round.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoundRecord {
    /// The round number (= model version).
    pub round: u64,
    /// Root of the model version it trains from.
    pub model_root: Digest,
    /// Root of the outer optimizer's momentum after the previous round, if any.
    pub momentum_root: Option<Digest>,
    /// When it opened.
    pub opened_ms: u64,
    /// When it closed.
    pub closed_ms: Option<u64>,
    /// Mean inner training loss of the accepted updates.
    pub train_loss: Option<f64>,
    /// Held-out loss of the model this round produced.
    pub eval_loss: Option<f64>,
    /// Updates accepted.
    pub accepted: u64,
    /// Updates rejected.
    pub rejected: u64,
    /// Bytes received (updates).
    pub bytes_in: u64,
    /// Bytes served (model and data chunks).
    pub bytes_out: u64,
}

/// Task kinds.
pub const TRAIN: &str = "train";
/// A datacenter re-run of a volunteer's training task.
pub const VERIFY: &str = "verify";
/// The status of a result left out of aggregation as an outlier of held-out loss.
pub const OUTLIER: &str = "outlier";
/// One of the two runs of a corpus chunk (also the ledger kind of every corpus result).
pub const CORPUS: &str = "corpus";
/// A further run of a corpus chunk whose first runs disagree (datacenter tier first).
pub const CORPUS_CHECK: &str = "corpus_check";
/// The `round` of corpus tasks: they precede training and belong to no training round.
pub const CORPUS_ROUND: u64 = u32::MAX as u64;

/// One corpus result received on the swarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CorpusRun {
    /// The lease it ran under.
    pub lease: u64,
    /// The task.
    pub task: u64,
    /// The build.
    pub build: u64,
    /// The chunk's root.
    pub chunk: Digest,
    /// The sender.
    pub peer: String,
    /// The root of the result object it named (the blake3 of the encoding).
    pub result: Digest,
    /// `pending`, `accepted` or `failed`.
    pub status: String,
    /// Received at.
    pub received_ms: u64,
}

/// One task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    /// Its id.
    pub id: u64,
    /// Its round.
    pub round: u64,
    /// [`TRAIN`] or [`VERIFY`].
    pub kind: String,
    /// The encoded `TaskSpec`.
    pub spec: Vec<u8>,
    /// `open`, `leased`, `done` or `cancelled`.
    pub status: String,
    /// For a verification task, the task it re-runs.
    pub verifies: Option<u64>,
    /// Whether a lease on it expired or was handed back (datacenter nodes take these first).
    pub reopened: bool,
    /// Training tokens it processes.
    pub tokens: u64,
}

/// One lease.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeaseRecord {
    /// Its id.
    pub id: u64,
    /// The task.
    pub task: u64,
    /// The holder.
    pub peer: String,
    /// Granted at.
    pub granted_ms: u64,
    /// Expires at.
    pub expires_ms: u64,
    /// `active`, `done`, `expired` or `released`.
    pub status: String,
}

/// One received result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResultRecord {
    /// The lease it ran under.
    pub lease: u64,
    /// The task.
    pub task: u64,
    /// The sender.
    pub peer: String,
    /// The round it was computed for.
    pub round: u64,
    /// The update object's root.
    pub update_root: Option<Digest>,
    /// Norm of the decoded update.
    pub norm: Option<f64>,
    /// Mean inner loss reported.
    pub train_loss: Option<f64>,
    /// Tokens processed.
    pub tokens: u64,
    /// `accepted`, `pending` (awaiting its re-run), `rejected`, `unverified` (its re-run had
    /// not happened when its round closed; kept out), `outlier` (see [`OUTLIER`]) or
    /// `verifier`.
    pub status: String,
    /// Why rejected.
    pub reason: Option<String>,
    /// Received at.
    pub received_ms: u64,
    /// Staleness weight in aggregation.
    pub weight: f64,
    /// The round whose aggregation used it.
    pub aggregated_in: Option<u64>,
    /// The change of held-out loss the update alone causes, as the coordinator measured it
    /// (nats; `None` where not measured).
    pub loss_change: Option<f64>,
}

/// One corpus build: how far it got and, once finished, its data card.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CorpusBuildRecord {
    /// Build number.
    pub id: u64,
    /// When it started (ms since the epoch).
    pub started_ms: u64,
    /// When it finished, if it has.
    pub finished_ms: Option<u64>,
    /// Chunks to process.
    pub chunks_total: u64,
    /// Chunks processed so far.
    pub chunks_done: u64,
    /// Documents ingested.
    pub documents_in: u64,
    /// Documents kept after filtering, deduplication and opt-outs.
    pub documents_kept: u64,
    /// The data card (JSON), once written.
    pub datacard: Option<serde_json::Value>,
}

/// The schema version of a database (SQLite's `user_version`).
fn schema_version(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

fn digest(what: &'static str, text: String) -> Result<Digest> {
    text.parse().map_err(|e| StateError::Corrupt {
        what,
        reason: format!("{e}"),
    })
}

fn opt_digest(what: &'static str, text: Option<String>) -> Result<Option<Digest>> {
    text.map(|t| digest(what, t)).transpose()
}

/// The state database.
#[derive(Debug)]
pub struct State {
    conn: Connection,
}

impl State {
    /// Opens (creating if needed) the database at `path`, migrating an older schema.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        let mut state = Self { conn };
        state.migrate()?;
        Ok(state)
    }

    /// Brings the schema to [`SCHEMA_VERSION`], in one transaction (so a second process
    /// opening the database at the same time waits, then finds it done).
    fn migrate(&mut self) -> Result<()> {
        if schema_version(&self.conn)? >= SCHEMA_VERSION {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version = schema_version(&tx)?;
        if version < 1 {
            tx.execute_batch(&ledger::migration_1())?;
        }
        if version < 2 {
            tx.execute_batch(judging::MIGRATION_2)?;
        }
        if version < 3 {
            tx.execute_batch(invites::MIGRATION_3)?;
        }
        if version < 4 {
            tx.execute_batch(judging::MIGRATION_4)?;
            // The totals' triggers again: held credit is no rejection.
            tx.execute_batch(&ledger::migration_1())?;
        }
        if version < SCHEMA_VERSION {
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Opens an existing database for reading (the `status` and `ledger` commands, which may
    /// run beside a live coordinator). A database not yet migrated is read as it is.
    pub fn open_read_only(path: &Path) -> Result<Self> {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        Ok(Self { conn })
    }

    /// Sets how long this connection waits for another one's lock ([`BUSY_TIMEOUT`] unless
    /// set) before failing with a [transient](StateError::is_transient) error.
    pub fn set_busy_timeout(&self, timeout: Duration) -> Result<()> {
        Ok(self.conn.busy_timeout(timeout)?)
    }

    /// Runs `f` in one transaction: all of it is committed, or none. The transaction takes
    /// the write lock when it begins (`BEGIN IMMEDIATE`), waiting up to the busy timeout;
    /// past that it fails with a [transient](StateError::is_transient) error, and nothing of
    /// `f` ran.
    pub fn transaction<T>(&mut self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&Tx { tx: &tx })?;
        tx.commit()?;
        Ok(out)
    }

    /// Read access outside a transaction.
    pub fn read(&self) -> Reader<'_> {
        Reader { conn: &self.conn }
    }
}

/// Queries, on a connection or inside a transaction.
pub struct Reader<'a> {
    conn: &'a Connection,
}

/// Writes (and reads) inside a transaction.
pub struct Tx<'a> {
    tx: &'a rusqlite::Transaction<'a>,
}

impl std::ops::Deref for Tx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.tx
    }
}

macro_rules! reads {
    ($($t:ty),*) => {$(
impl $t {
    fn c(&self) -> &Connection {
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
    pub fn peers_seen_since(&self, tier: Option<&str>, since_ms: u64) -> Result<u64> {
        let n: i64 = match tier {
            Some(tier) => self.c().query_row(
                "SELECT COUNT(*) FROM peers WHERE tier = ?1 AND last_seen_ms >= ?2 AND banned = 0",
                params![tier, since_ms as i64],
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
    pub fn allowlisted(&self, peer: &str) -> Result<Option<String>> {
        Ok(self
            .c()
            .query_row("SELECT tier FROM allowlist WHERE peer = ?1", [peer], |r| r.get(0))
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
    pub fn tasks(&self, round: Option<u64>, status: &str) -> Result<Vec<TaskRecord>> {
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
                params![round as i64, VERIFY, skip_reopened],
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
    pub fn results(&self, round: Option<u64>, status: Option<&str>) -> Result<Vec<ResultRecord>> {
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

const PEER_SELECT: &str = "SELECT peer, tier, name, org, country, reputation, banned, tokens_per_sec, slots, joined_ms, last_seen_ms FROM peers";

fn peer_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PeerRecord> {
    Ok(PeerRecord {
        peer: r.get(0)?,
        tier: r.get(1)?,
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

const ROUND_SELECT: &str = "SELECT round, model_root, momentum_root, opened_ms, closed_ms, train_loss, eval_loss, accepted, rejected, bytes_in, bytes_out FROM rounds";

fn round_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<RoundRecord>> {
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

const TASK_SELECT: &str =
    "SELECT id, round, kind, spec, status, verifies, reopened, tokens FROM tasks";

fn task_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TaskRecord> {
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

const LEASE_SELECT: &str = "SELECT id, task, peer, granted_ms, expires_ms, status FROM leases";

fn lease_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LeaseRecord> {
    Ok(LeaseRecord {
        id: r.get::<_, i64>(0)? as u64,
        task: r.get::<_, i64>(1)? as u64,
        peer: r.get(2)?,
        granted_ms: r.get::<_, i64>(3)? as u64,
        expires_ms: r.get::<_, i64>(4)? as u64,
        status: r.get(5)?,
    })
}

const RESULT_SELECT: &str = "SELECT lease, task, peer, round, update_root, norm, train_loss, tokens, status, reason, received_ms, weight, aggregated_in, loss_change FROM results";

fn result_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<ResultRecord>> {
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

fn corpus_run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<CorpusRun>> {
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
    pub fn set_corpus_run_status(&self, lease: u64, status: &str) -> Result<()> {
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
            params![p.peer, p.tier, p.name, p.org, p.country, p.reputation, p.banned, p.tokens_per_sec, p.slots, p.joined_ms as i64, p.last_seen_ms as i64],
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
    pub fn allow(&self, peer: &str, tier: &str, now_ms: u64) -> Result<()> {
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
            params![round as i64, HELD],
        )?;
        Ok(())
    }

    /// Adds a task; returns its id.
    pub fn insert_task(
        &self,
        round: u64,
        kind: &str,
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
    pub fn set_task_status(&self, task: u64, status: &str) -> Result<()> {
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
        self.set_task_status(task, "leased")?;
        Ok(self.tx.last_insert_rowid() as u64)
    }

    /// Sets a lease's status.
    pub fn set_lease_status(&self, lease: u64, status: &str) -> Result<()> {
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
    pub fn set_result_status(&self, lease: u64, status: &str, reason: Option<&str>) -> Result<()> {
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

#[cfg(test)]
mod tests;

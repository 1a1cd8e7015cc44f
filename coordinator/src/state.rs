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
//! ledger once; version 2: each peer's loss score and strikes, in [`judging`]; version 3:
//! invitations' uses and revocations, in [`invites`]; version 4: each peer's direction record,
//! in [`judging`]).

mod invites;
mod judging;
mod ledger;
mod neighbours;
mod reads;
mod records;
mod rows;
mod status;
mod writes;

pub use invites::Redeemed;
pub use judging::Judged;
pub use ledger::{Contribution, ContributorGroup, Contributors, LedgerClaim, LedgerEntry};
pub use neighbours::Nearby;
pub use records::*;
pub use status::{
    CorpusRunStatus, LeaseStatus, LedgerVerdict, ResultStatus, TaskKind, TaskStatus, UnknownStatus,
};

use std::path::Path;
use std::time::Duration;

use canopy_protocol::Digest;
use rusqlite::{Connection, ErrorCode, TransactionBehavior};

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

#[cfg(test)]
mod tests;

//! What a task asks, and where a task, a lease, a result and a corpus run stand, as enums:
//! each is defined once here, stored in SQLite, shown by the API and compared in code by the
//! same name.

use std::fmt;
use std::str::FromStr;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::Serialize;

/// A status name that is none of its enum's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a {what} status")]
pub struct UnknownStatus {
    /// Which kind of status was read.
    pub what: &'static str,
    /// The name found.
    pub value: String,
}

/// Defines a status enum with its stored names: `as_str`, `Display`, `FromStr`, SQLite's
/// `ToSql`/`FromSql` (a name it does not know is an error, not a default) and `Serialize`.
macro_rules! statuses {
    ($(#[$doc:meta])* $name:ident, $what:literal { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every status, in order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The name it is stored and shown by.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownStatus;

            fn from_str(s: &str) -> Result<Self, UnknownStatus> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(UnknownStatus { what: $what, value: s.to_owned() }),
                }
            }
        }

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                value
                    .as_str()?
                    .parse()
                    .map_err(|e: UnknownStatus| FromSqlError::Other(Box::new(e)))
            }
        }
    };
}

statuses! {
    /// Where a task stands.
    TaskStatus, "task" {
        /// Waiting for a node to lease it.
        Open = "open",
        /// A node holds a lease on it.
        Leased = "leased",
        /// Its result was taken (or, for a corpus chunk, its chunk was decided).
        Done = "done",
        /// Its round or build moved on without it.
        Cancelled = "cancelled",
    }
}

statuses! {
    /// What became of a lease.
    LeaseStatus, "lease" {
        /// Its holder is working on it.
        Active = "active",
        /// Its result came in.
        Done = "done",
        /// Its time ran out (or its round closed) before a result.
        Expired = "expired",
        /// Its holder handed it back.
        Released = "released",
    }
}

statuses! {
    /// Where one run of a corpus chunk stands.
    CorpusRunStatus, "corpus run" {
        /// Waiting until the chunk's runs agree.
        Pending = "pending",
        /// It agrees with the chunk's agreed result.
        Accepted = "accepted",
        /// It disagrees with the chunk's agreed result.
        Failed = "failed",
    }
}

statuses! {
    /// What a task asks of its node.
    TaskKind, "task kind" {
        /// Inner steps of a training round.
        Train = "train",
        /// A datacenter re-run of a volunteer's training task.
        Verify = "verify",
        /// One of the two runs of a corpus chunk (also the ledger kind of every corpus result).
        Corpus = "corpus",
        /// A further run of a corpus chunk whose first runs disagree (datacenter tier first).
        CorpusCheck = "corpus_check",
    }
}

statuses! {
    /// What the ledger says of a result's verification.
    LedgerVerdict, "ledger verdict" {
        /// Re-run by the datacenter tier (or, for a corpus run, matched by the other run) and
        /// agreed.
        Verified = "verified",
        /// Re-run or matched, and disagreed.
        Failed = "failed",
        /// Sampled for a re-run whose comparison could not be made: neither verified nor failed.
        Unverifiable = "unverifiable",
        /// Not re-run: accepted on its checks alone.
        Unchecked = "unchecked",
        /// A re-run of another node's task.
        Verifier = "verifier",
        /// Its credit is held until its sender's direction record points with its rounds.
        Held = "held",
    }
}

statuses! {
    /// What became of a received training result.
    ResultStatus, "result" {
        /// Taken into its round's aggregate.
        Accepted = "accepted",
        /// Waiting for its datacenter re-run's verdict before any round may take it.
        Pending = "pending",
        /// Refused: its re-run disagreed.
        Rejected = "rejected",
        /// Its re-run had not happened when its round closed: kept out, no credit.
        Unverified = "unverified",
        /// Left out as an outlier of held-out loss.
        Outlier = "outlier",
        /// A datacenter re-run of another node's task: compared, never aggregated.
        Verifier = "verifier",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each of `all` reads back as itself from its name, from SQLite and as JSON.
    fn round_trips<T>(conn: &rusqlite::Connection, all: &[T])
    where
        T: Copy + PartialEq + fmt::Debug + fmt::Display + FromStr + ToSql + FromSql + Serialize,
        T::Err: fmt::Debug,
    {
        for &s in all {
            assert_eq!(s.to_string().parse::<T>().ok(), Some(s));
            let back: T = conn.query_row("SELECT ?1", [s], |r| r.get(0)).unwrap();
            assert_eq!(back, s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.to_string());
        }
    }

    /// Every status reads back as itself through its name and through SQLite, and a name
    /// that is not one is an error, not a default.
    #[test]
    fn statuses_round_trip_by_name_and_refuse_strangers() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        round_trips(&conn, TaskStatus::ALL);
        round_trips(&conn, LeaseStatus::ALL);
        round_trips(&conn, TaskKind::ALL);
        round_trips(&conn, LedgerVerdict::ALL);
        round_trips(&conn, ResultStatus::ALL);
        round_trips(&conn, CorpusRunStatus::ALL);
        let err = "finished".parse::<LeaseStatus>().unwrap_err();
        assert_eq!(err.to_string(), "\"finished\" is not a lease status");
        let read: rusqlite::Result<TaskStatus> =
            conn.query_row("SELECT 'finished'", [], |r| r.get(0));
        assert!(read.is_err());
    }
}

//! Why a result is refused: one typed list for training and corpus results, the reputation
//! counter each reason feeds and whether it is held against the sender, the checks both
//! judges run first (the lease and its holder, the signer of the result), and how a refusal is
//! recorded. The checks are pure: they take the records the caller read, so each path through
//! them is a unit test. Also why a request for work gets none ([`NoWorkReason`]).

use std::fmt;

use canopy_protocol::{Manifest, SignedManifest};
use libp2p::PeerId;

use crate::state::{
    LeaseRecord, LeaseStatus, LedgerClaim, LedgerVerdict, PeerRecord, StateError, TaskKind,
    TaskRecord, TaskStatus, Tx,
};

/// The two kinds of work a result can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Training and verification runs.
    Training,
    /// Corpus chunks and their re-checks.
    Corpus,
}

impl Work {
    /// The work a task of `kind` is.
    pub fn of(kind: TaskKind) -> Self {
        match kind {
            TaskKind::Train | TaskKind::Verify => Self::Training,
            TaskKind::Corpus | TaskKind::CorpusCheck => Self::Corpus,
        }
    }

    /// What a result of this work hands in, in words.
    fn object(self) -> &'static str {
        match self {
            Self::Training => "update",
            Self::Corpus => "result",
        }
    }
}

/// What kind of refusal it is: the `reason` label of the dashboard's `results_rejected`
/// metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionKind {
    /// NaN or infinity in an update.
    NonFinite,
    /// The wrong length, kind or encoding.
    WrongShape,
    /// Computed against another model version.
    WrongVersion,
    /// A result handed in again, or under a lease that is not the sender's.
    Replay,
    /// A bad signature, or another key's.
    BadSignature,
    /// Checked and found false: a false claim, a gross effect on loss, a wrong answer.
    FailedVerification,
    /// Too late to be used.
    StaleDropped,
    /// From a banned sender.
    BannedSender,
    /// None of the above (the coordinator's own trouble, a fetch that failed, …).
    Other,
}

impl RejectionKind {
    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            Self::NonFinite => "non_finite",
            Self::WrongShape => "wrong_shape",
            Self::WrongVersion => "wrong_version",
            Self::Replay => "replay",
            Self::BadSignature => "bad_signature",
            Self::FailedVerification => "failed_verification",
            Self::StaleDropped => "stale_dropped",
            Self::BannedSender => "banned_sender",
            Self::Other => "other",
        }
    }
}

/// Why a result was refused. Its text ([`fmt::Display`]) is what the sender is told and what
/// the ledger records.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// The coordinator failed, not the node.
    Internal(String),
    /// The sender never joined.
    UnknownNode,
    /// The sender is banned.
    Banned,
    /// No such lease or task.
    NoSuchLease,
    /// The lease is another node's, or for another task.
    OtherLease,
    /// A training result for a corpus task that the training service no longer runs.
    BuildFinished,
    /// A result for a task that is not a corpus task, handed to the corpus build.
    NotCorpusTask,
    /// The lease's result was already handed in.
    AlreadyIn,
    /// The lease ran out and another node finished the task first.
    FinishedByAnother,
    /// The output is of the other kind of work than the task.
    WrongOutput(Work),
    /// A stored task spec that does not decode.
    SpecUndecodable,
    /// A claim of more tokens than the task asked for.
    FalseTokenClaim {
        /// Tokens claimed.
        claimed: u64,
        /// Tokens the task asked for.
        task: u64,
    },
    /// The result's manifest signature does not verify.
    BadSignature(Work, String),
    /// The result is signed by a key other than the sender's.
    SignedByAnotherKey(Work),
    /// The object named is not an update.
    NotAnUpdate,
    /// The update names another model version than its task's.
    WrongVersion,
    /// The update names another task.
    WrongTask,
    /// The task's round has closed and late updates are dropped.
    RoundClosed,
    /// The task's model version is more than a round old.
    TooOld,
    /// This update was handed in before.
    AlreadySubmitted,
    /// An update larger than any of this model's.
    TooLarge(u64),
    /// Fetching the result failed.
    FetchFailed(Work, String),
    /// Fetching the result timed out.
    FetchTimedOut(Work),
    /// An update that does not decode to the model's shape.
    BadUpdate(String),
    /// NaN or infinity at this index.
    NonFinite(usize),
    /// The update raises held-out loss (by this many nats) far beyond honest updates.
    GrossLossIncrease(f64),
    /// A verification task run by a node outside the datacenter tier.
    VerifyNotDatacenter,
    /// The corpus task names a chunk that is not in the plan.
    ChunkNotInPlan,
    /// The sender has no manifest for the corpus result it named.
    NoManifest,
    /// The sender answered a manifest request with another message (its kind).
    ManifestAnswer(String),
    /// Asking for the result's manifest failed.
    ManifestAskFailed(String),
    /// Asking for the result's manifest timed out.
    ManifestTimedOut,
    /// The manifest is not that of the corpus result named.
    ManifestMismatch,
    /// The fetched result does not hash to its root.
    HashMismatch,
    /// The result does not answer its chunk (why).
    WrongAnswer(String),
    /// The documents reported are not the chunk's.
    DocumentCount {
        /// Reported.
        reported: u64,
        /// In the chunk.
        expected: u64,
    },
}

impl Refusal {
    /// The counter it feeds.
    pub fn kind(&self) -> RejectionKind {
        use RejectionKind as K;
        match self {
            Self::Banned => K::BannedSender,
            Self::NoSuchLease
            | Self::OtherLease
            | Self::NotCorpusTask
            | Self::AlreadyIn
            | Self::WrongTask
            | Self::AlreadySubmitted => K::Replay,
            Self::BuildFinished | Self::FinishedByAnother | Self::RoundClosed | Self::TooOld => {
                K::StaleDropped
            }
            Self::WrongOutput(_)
            | Self::NotAnUpdate
            | Self::TooLarge(_)
            | Self::BadUpdate(_)
            | Self::ManifestAnswer(_)
            | Self::ManifestMismatch => K::WrongShape,
            Self::BadSignature(..) | Self::SignedByAnotherKey(_) => K::BadSignature,
            Self::WrongVersion => K::WrongVersion,
            Self::NonFinite(_) => K::NonFinite,
            Self::FalseTokenClaim { .. }
            | Self::GrossLossIncrease(_)
            | Self::HashMismatch
            | Self::WrongAnswer(_)
            | Self::DocumentCount { .. } => K::FailedVerification,
            Self::Internal(_)
            | Self::UnknownNode
            | Self::SpecUndecodable
            | Self::FetchFailed(..)
            | Self::FetchTimedOut(_)
            | Self::VerifyNotDatacenter
            | Self::ChunkNotInPlan
            | Self::NoManifest
            | Self::ManifestAskFailed(_)
            | Self::ManifestTimedOut => K::Other,
        }
    }

    /// Whether it is held against the sender (it costs reputation): evidence of a fault or a
    /// lie, not lateness, a ban already in force, or the coordinator's or the network's
    /// trouble.
    pub fn penalised(&self) -> bool {
        !matches!(
            self,
            Self::Internal(_)
                | Self::UnknownNode
                | Self::Banned
                | Self::BuildFinished
                | Self::FinishedByAnother
                | Self::SpecUndecodable
                | Self::RoundClosed
                | Self::TooOld
                | Self::FetchFailed(..)
                | Self::FetchTimedOut(_)
                | Self::ChunkNotInPlan
                | Self::ManifestAskFailed(_)
                | Self::ManifestTimedOut
        )
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Internal(e) => write!(f, "the coordinator failed: {e}"),
            Self::UnknownNode => f.write_str("unknown node: join first"),
            Self::Banned => f.write_str("this node is banned"),
            Self::NoSuchLease => f.write_str("no such lease or task"),
            Self::OtherLease => f.write_str("this lease belongs to another node or task"),
            Self::BuildFinished => f.write_str("the corpus build has finished"),
            Self::NotCorpusTask => f.write_str("this is not a corpus task"),
            Self::AlreadyIn => f.write_str("this lease's result is already in"),
            Self::FinishedByAnother => {
                f.write_str("another node finished this task after the lease expired")
            }
            Self::WrongOutput(Work::Training) => f.write_str("a corpus result for a training task"),
            Self::WrongOutput(Work::Corpus) => f.write_str("a training result for a corpus task"),
            Self::SpecUndecodable => f.write_str("a stored task spec does not decode"),
            Self::FalseTokenClaim { claimed, task } => write!(
                f,
                "the result claims {claimed} tokens of work for a task of {task}: a false claim"
            ),
            Self::BadSignature(work, e) => write!(f, "{} signature: {e}", work.object()),
            Self::SignedByAnotherKey(work) => {
                write!(f, "the {} is signed by another key", work.object())
            }
            Self::NotAnUpdate => f.write_str("the result is not an update object"),
            Self::WrongVersion => f.write_str("the update names another model version"),
            Self::WrongTask => f.write_str("the update names another task"),
            Self::RoundClosed => f.write_str("the round of this task has closed"),
            Self::TooOld => f.write_str("the model version of this task is more than a round old"),
            Self::AlreadySubmitted => f.write_str("this update was already submitted"),
            Self::TooLarge(len) => write!(
                f,
                "the update is {len} bytes, more than any update of this model"
            ),
            Self::FetchFailed(work, e) => write!(f, "fetching the {}: {e}", work.object()),
            Self::FetchTimedOut(work) => write!(f, "fetching the {} timed out", work.object()),
            Self::BadUpdate(e) => f.write_str(e),
            Self::NonFinite(index) => write!(f, "non-finite value at {index}"),
            Self::GrossLossIncrease(increase) => write!(
                f,
                "the update raises the held-out loss by {increase:.3} nats, far beyond the \
                 spread of honest updates"
            ),
            Self::VerifyNotDatacenter => {
                f.write_str("verification tasks are for the datacenter tier")
            }
            Self::ChunkNotInPlan => f.write_str("the task names a chunk not in the plan"),
            Self::NoManifest => f.write_str("the sender has no manifest for the result it named"),
            Self::ManifestAnswer(kind) => write!(f, "answered a manifest request with {kind}"),
            Self::ManifestAskFailed(e) => write!(f, "asking for the result's manifest: {e}"),
            Self::ManifestTimedOut => f.write_str("asking for the result's manifest timed out"),
            Self::ManifestMismatch => {
                f.write_str("the manifest is not that of the corpus result named")
            }
            Self::HashMismatch => f.write_str("the fetched result does not hash to its root"),
            Self::WrongAnswer(e) => write!(f, "the result does not answer its chunk: {e}"),
            Self::DocumentCount { reported, expected } => {
                write!(f, "{reported} documents reported for a chunk of {expected}")
            }
        }
    }
}

/// Why a node asking for work (or renewing or handing back a lease) gets none now; its text
/// is what the node is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoWorkReason {
    /// The node has not joined (it is sent back to join).
    JoinFirst,
    /// The node is banned (it is sent back to join, where it hears why and stops).
    Banned,
    /// Every training round is done.
    TrainingFinished,
    /// The round is closing; the next opens shortly.
    RoundClosing,
    /// The coordinator paused the project.
    Paused,
    /// The node holds all the leases it has slots for.
    SlotsFull,
    /// Nothing is open for this node now, in this kind of work.
    NothingOpen(Work),
    /// The lease to renew expired or went to another node.
    LeaseGone,
    /// The lease was handed back.
    LeaseReleased,
    /// The coordinator failed answering.
    Internal,
    /// A request the coordinator does not answer (the message's kind).
    Unexpected(String),
}

impl NoWorkReason {
    /// Whether the node should join again before asking for work.
    pub fn join_first(&self) -> bool {
        matches!(self, Self::JoinFirst | Self::Banned)
    }
}

impl fmt::Display for NoWorkReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::JoinFirst => f.write_str("join first"),
            Self::Banned => f.write_str("this node is banned"),
            Self::TrainingFinished => f.write_str("training has finished"),
            Self::RoundClosing => f.write_str("the round is closing; the next opens shortly"),
            Self::Paused => f.write_str("the project is paused by its coordinator"),
            Self::SlotsFull => f.write_str("this node holds all the leases it has slots for"),
            Self::NothingOpen(Work::Training) => {
                f.write_str("no task open now; waiting for the round to close")
            }
            Self::NothingOpen(Work::Corpus) => {
                f.write_str("no corpus task open for this node now; the corpus build goes on")
            }
            Self::LeaseGone => f.write_str("this lease has expired or was reassigned"),
            Self::LeaseReleased => f.write_str("lease released"),
            Self::Internal => f.write_str("the coordinator hit an internal error"),
            Self::Unexpected(kind) => write!(f, "unexpected {kind}"),
        }
    }
}

/// A result's lease, task and sender, once [`check_lease`] has passed them.
#[derive(Debug, Clone)]
pub struct Leased {
    /// The lease it ran under.
    pub lease: LeaseRecord,
    /// The task.
    pub task: TaskRecord,
    /// The sender's record.
    pub sender: PeerRecord,
}

/// The first checks of any result handed to the judge of `work`: the sender joined and is not
/// banned, the lease and task exist and are the sender's, the task is this judge's kind of
/// work, its result is not in yet, and no other node finished the task meanwhile. `lease`,
/// `task` and `sender` are what the state holds for the ids the result names.
pub fn check_lease(
    work: Work,
    sender_key: &str,
    lease: Option<LeaseRecord>,
    task: Option<TaskRecord>,
    sender: Option<PeerRecord>,
) -> Result<Leased, Refusal> {
    let sender = sender.ok_or(Refusal::UnknownNode)?;
    if sender.banned {
        return Err(Refusal::Banned);
    }
    let (Some(lease), Some(task)) = (lease, task) else {
        return Err(Refusal::NoSuchLease);
    };
    if lease.peer != sender_key || lease.task != task.id {
        return Err(Refusal::OtherLease);
    }
    match (work, Work::of(task.kind)) {
        (Work::Training, Work::Corpus) => return Err(Refusal::BuildFinished),
        (Work::Corpus, Work::Training) => return Err(Refusal::NotCorpusTask),
        _ => {}
    }
    if !matches!(lease.status, LeaseStatus::Active | LeaseStatus::Expired) {
        return Err(Refusal::AlreadyIn);
    }
    if task.status == TaskStatus::Done {
        return Err(Refusal::FinishedByAnother);
    }
    Ok(Leased {
        lease,
        task,
        sender,
    })
}

/// The manifest of `signed` when its signature verifies and its signer is `peer`.
pub fn check_signer(
    work: Work,
    signed: &SignedManifest,
    peer: PeerId,
) -> Result<&Manifest, Refusal> {
    let manifest = signed
        .verify()
        .map_err(|e| Refusal::BadSignature(work, e.to_string()))?;
    if signed.signer().peer_id() != peer {
        return Err(Refusal::SignedByAnotherKey(work));
    }
    Ok(manifest)
}

/// A refused result, as both judges record it.
#[derive(Debug, Clone, Copy)]
pub struct Refused<'a> {
    /// The sender.
    pub peer: &'a str,
    /// The task and lease the result named.
    pub task: u64,
    /// The lease the result named.
    pub lease: u64,
    /// The kind of work, for the ledger.
    pub kind: TaskKind,
    /// The round the ledger files it under.
    pub round: u64,
    /// The compute time the sender claimed (kept in the ledger, credited nothing).
    pub compute_ms: u64,
    /// When it arrived.
    pub arrived_ms: u64,
    /// Why.
    pub reason: &'a Refusal,
    /// Reputation it costs the sender (0 for none).
    pub penalty: i64,
}

/// Records a refusal: a ledger entry with no tokens or compute time credited, the sender's own
/// active lease ended and its task reopened for another node, and the penalty taken from its
/// reputation (a sender that never joined gets neither entry nor score). Returns the sender's
/// score and whether it is banned, when the penalty changed them.
pub fn record(
    tx: &Tx<'_>,
    refused: &Refused<'_>,
    now_ms: u64,
    ban_below: i64,
) -> Result<Option<(i64, bool)>, StateError> {
    let r = refused;
    tx.ledger_entry(
        &LedgerClaim {
            peer: r.peer,
            round: r.round,
            task: r.task,
            lease: r.lease,
            kind: r.kind,
            compute_ms: r.compute_ms,
            accepted: false,
            verified: LedgerVerdict::Unchecked,
            result_hash: None,
            reason: Some(&r.reason.to_string()),
            arrived_ms: r.arrived_ms,
        },
        now_ms,
    )?;
    if let Some(l) = tx
        .lease(r.lease)?
        .filter(|l| l.peer == r.peer && l.status == LeaseStatus::Active)
    {
        tx.set_lease_status(l.id, LeaseStatus::Done)?;
        crate::scheduler::reopen(tx, l.task)?;
    }
    if r.penalty == 0 || tx.peer(r.peer)?.is_none() {
        return Ok(None);
    }
    tx.adjust_reputation(r.peer, r.penalty, ban_below).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::service::unknown_peer as sender;

    fn task(id: u64, kind: TaskKind, status: TaskStatus) -> TaskRecord {
        TaskRecord {
            id,
            round: 0,
            kind,
            spec: Vec::new(),
            status,
            verifies: None,
            reopened: false,
            tokens: 100,
        }
    }

    fn lease(id: u64, task: u64, peer: &str, status: LeaseStatus) -> LeaseRecord {
        LeaseRecord {
            id,
            task,
            peer: peer.into(),
            granted_ms: 0,
            expires_ms: 1_000,
            status,
        }
    }

    /// Runs the lease check for `a`'s result under lease 1 of task 7 (a training task).
    fn check(
        work: Work,
        l: Option<LeaseRecord>,
        t: Option<TaskRecord>,
        s: Option<PeerRecord>,
    ) -> Result<Leased, Refusal> {
        check_lease(work, "a", l, t, s)
    }

    #[test]
    fn every_lease_check_refuses_with_its_own_reason() {
        let active = || Some(lease(1, 7, "a", LeaseStatus::Active));
        let open = || Some(task(7, TaskKind::Train, TaskStatus::Leased));
        let a = || Some(sender("a"));
        let w = Work::Training;
        assert!(check(w, active(), open(), a()).is_ok());
        // A result after the lease expired still counts while the task is open.
        let expired = Some(lease(1, 7, "a", LeaseStatus::Expired));
        assert!(check(w, expired.clone(), open(), a()).is_ok());
        let cases = [
            (check(w, active(), open(), None), Refusal::UnknownNode),
            (
                check(
                    w,
                    active(),
                    open(),
                    Some(PeerRecord {
                        banned: true,
                        ..sender("a")
                    }),
                ),
                Refusal::Banned,
            ),
            (check(w, None, open(), a()), Refusal::NoSuchLease),
            (check(w, active(), None, a()), Refusal::NoSuchLease),
            (
                check(w, Some(lease(1, 7, "b", LeaseStatus::Active)), open(), a()),
                Refusal::OtherLease,
            ),
            (
                check(w, Some(lease(1, 8, "a", LeaseStatus::Active)), open(), a()),
                Refusal::OtherLease,
            ),
            (
                check(w, Some(lease(1, 7, "a", LeaseStatus::Done)), open(), a()),
                Refusal::AlreadyIn,
            ),
            // Late: the lease expired, the task was re-leased and finished by another node.
            (
                check(
                    w,
                    expired,
                    Some(task(7, TaskKind::Train, TaskStatus::Done)),
                    a(),
                ),
                Refusal::FinishedByAnother,
            ),
            (
                check(
                    w,
                    active(),
                    Some(task(7, TaskKind::Corpus, TaskStatus::Leased)),
                    a(),
                ),
                Refusal::BuildFinished,
            ),
            (
                check(Work::Corpus, active(), open(), a()),
                Refusal::NotCorpusTask,
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got.map(|_| ()), Err(want));
        }
    }

    #[test]
    fn lateness_and_the_coordinators_trouble_cost_no_reputation_but_lies_do() {
        for late in [
            Refusal::FinishedByAnother,
            Refusal::RoundClosed,
            Refusal::TooOld,
            Refusal::BuildFinished,
            Refusal::FetchTimedOut(Work::Training),
            Refusal::Internal("disk".into()),
            Refusal::Banned,
        ] {
            assert!(!late.penalised(), "{late}");
        }
        for lie in [
            Refusal::FalseTokenClaim {
                claimed: 2,
                task: 1,
            },
            Refusal::SignedByAnotherKey(Work::Corpus),
            Refusal::AlreadySubmitted,
            Refusal::HashMismatch,
            Refusal::GrossLossIncrease(3.0),
            Refusal::NonFinite(4),
        ] {
            assert!(lie.penalised(), "{lie}");
        }
    }

    #[test]
    fn each_refusal_is_labelled_by_its_kind_and_told_in_words() {
        let labels: Vec<&str> = [
            Refusal::NonFinite(1),
            Refusal::TooLarge(9),
            Refusal::WrongVersion,
            Refusal::AlreadySubmitted,
            Refusal::SignedByAnotherKey(Work::Training),
            Refusal::GrossLossIncrease(1.0),
            Refusal::Banned,
        ]
        .iter()
        .map(|r| r.kind().name())
        .collect();
        assert_eq!(
            labels,
            [
                "non_finite",
                "wrong_shape",
                "wrong_version",
                "replay",
                "bad_signature",
                "failed_verification",
                "banned_sender"
            ]
        );
        assert_eq!(Refusal::TooOld.kind().name(), "stale_dropped");
        assert_eq!(Refusal::ChunkNotInPlan.kind().name(), "other");
        assert_eq!(
            Refusal::SignedByAnotherKey(Work::Corpus).to_string(),
            "the result is signed by another key"
        );
        assert_eq!(
            Refusal::FetchFailed(Work::Training, "gone".into()).to_string(),
            "fetching the update: gone"
        );
    }

    /// A replay against the state on disk: a volunteer's result is refused twice, once late
    /// (its lease expired and the task went to another node) and once on evidence.
    #[test]
    fn a_refusal_reopens_only_the_senders_active_lease_and_costs_only_its_penalty() {
        use crate::scheduler::{grant, reopen};
        use crate::state::State;
        let dir = tempfile::tempdir().expect("temp dir");
        let mut state = State::open(&dir.path().join("canopy.db")).expect("state");
        let config = crate::config::SchedulingConfig::default();
        let (a, b) = (
            PeerRecord {
                reputation: 5,
                ..sender("a")
            },
            sender("b"),
        );
        state
            .transaction(|tx| {
                tx.upsert_peer(&a)?;
                tx.upsert_peer(&b)?;
                let t = tx.insert_task(0, TaskKind::Train, b"spec", None, 100)?;
                let first = grant(tx, &config, &a, 0, 0, false)?.expect("a gets the task");
                // a's lease runs out and b takes the task.
                tx.set_lease_status(first.lease, LeaseStatus::Expired)?;
                reopen(tx, t)?;
                let second = grant(tx, &config, &b, 0, 1, false)?.expect("b gets it again");
                assert_eq!(second.task.id, t);
                // a's late result: refused without cost, and b's lease is left alone.
                let late = Refusal::FinishedByAnother;
                let refused = Refused {
                    peer: "a",
                    task: t,
                    lease: first.lease,
                    kind: TaskKind::Train,
                    round: 0,
                    compute_ms: 500,
                    arrived_ms: 2,
                    reason: &late,
                    penalty: 0,
                };
                assert_eq!(record(tx, &refused, 2, -10)?, None);
                assert_eq!(
                    tx.lease(second.lease)?.map(|l| l.status),
                    Some(LeaseStatus::Active)
                );
                // b's result under its own lease, refused on evidence: its lease ends, the
                // task reopens, and the penalty bans it.
                let lie = Refusal::SignedByAnotherKey(Work::Training);
                let refused = Refused {
                    peer: "b",
                    lease: second.lease,
                    reason: &lie,
                    penalty: -20,
                    ..refused
                };
                assert_eq!(record(tx, &refused, 3, -10)?, Some((-20, true)));
                assert_eq!(
                    tx.lease(second.lease)?.map(|l| l.status),
                    Some(LeaseStatus::Done)
                );
                assert_eq!(tx.task(t)?.map(|t| t.status), Some(TaskStatus::Open));
                // Neither result earned tokens; the ledger keeps both reasons.
                let ledger = tx.ledger()?;
                assert_eq!(ledger.len(), 2);
                assert!(ledger.iter().all(|e| !e.accepted && e.tokens == 0));
                assert_eq!(
                    ledger[1].reason.as_deref(),
                    Some("the update is signed by another key")
                );
                assert_eq!(tx.peer("a")?.map(|p| p.reputation), Some(5));
                // A sender that never joined has no entry and no score to lose.
                let stranger = Refused {
                    peer: "c",
                    penalty: -20,
                    ..refused
                };
                assert_eq!(record(tx, &stranger, 4, -10)?, None);
                assert_eq!(tx.ledger()?.len(), 2);
                Ok(())
            })
            .expect("transaction");
    }

    #[test]
    fn only_the_unknown_and_the_banned_are_sent_back_to_join() {
        let back = [NoWorkReason::JoinFirst, NoWorkReason::Banned];
        let wait = [
            NoWorkReason::TrainingFinished,
            NoWorkReason::RoundClosing,
            NoWorkReason::Paused,
            NoWorkReason::SlotsFull,
            NoWorkReason::NothingOpen(Work::Corpus),
            NoWorkReason::LeaseGone,
            NoWorkReason::Internal,
            NoWorkReason::Unexpected("Join".into()),
        ];
        assert!(back.iter().all(NoWorkReason::join_first));
        assert!(!wait.iter().any(NoWorkReason::join_first));
        assert_eq!(
            NoWorkReason::NothingOpen(Work::Training).to_string(),
            "no task open now; waiting for the round to close"
        );
    }

    #[test]
    fn only_the_lease_holders_key_signs_its_result() {
        let holder = canopy_protocol::Keypair::from_secret_bytes(&[1; 32]);
        let other = canopy_protocol::Keypair::from_secret_bytes(&[2; 32]);
        let signed = Manifest::build(
            canopy_protocol::ObjectKind::Update,
            &[5u8; 4096],
            1024,
            Default::default(),
        )
        .and_then(|m| m.sign(&holder))
        .expect("signed");
        let id = |k: &canopy_protocol::Keypair| k.peer_id();
        assert!(check_signer(Work::Training, &signed, id(&holder)).is_ok());
        assert_eq!(
            check_signer(Work::Training, &signed, id(&other)).map(|_| ()),
            Err(Refusal::SignedByAnotherKey(Work::Training))
        );
    }
}

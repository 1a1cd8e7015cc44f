//! The requests the corpus build and training answer alike (joins, heartbeats, credit
//! queries, lease renewals and releases, manifests), and how long a waiting peer is asked to wait.

use canopy_protocol::Message;
use canopy_protocol::messages::{JoinAck, LeaseRenewed, ManifestResponse, NoWork, Tier};

use crate::project::now_ms;
use crate::refusal::{NoWorkReason, Work};
use crate::scheduler::{self, ACTIVE_MS};
use crate::state::{LeaseStatus, PeerRecord};

/// How stale a peer's recorded last contact may get before a request of its updates it.
const LAST_SEEN_STEP_MS: u64 = 10_000;
/// Requests a second the coordinator aims to get from peers that are only waiting, however
/// many there are (see [`waiting_retry_ms`]).
const WAITING_REQUESTS_PER_SEC: u64 = 100;

/// Who sent a request: its key, and the network its connection comes from (see
/// [`crate::admission::network_of`]), if known.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The peer id, as text.
    pub key: &'a str,
    /// Its network, if the connection shows it.
    pub network: Option<&'a str>,
}

/// What [`answer_peer`] did with a request.
pub enum Answered {
    /// Answered it, and for a join the tier granted.
    Reply(Message, Option<Tier>),
    /// Not one of the requests it answers: handed back.
    Other(Message),
}

/// The answer to a node's [`CreditQuery`](canopy_protocol::messages::CreditQuery): its
/// ledger totals, `own`, where it has any.
fn credit_report(
    own: Option<crate::state::Contribution>,
    known: bool,
    round: u64,
) -> canopy_protocol::messages::CreditReport {
    let mut report = canopy_protocol::messages::CreditReport {
        known,
        round,
        ..Default::default()
    };
    if let Some(c) = own {
        report.known = true;
        report.results = c.results;
        report.accepted = c.accepted;
        report.rejected = c.rejected;
        report.verified = c.verified;
        report.tokens = c.tokens;
        report.compute_ms = c.compute_ms;
    }
    report
}

/// Answers the requests that the corpus build and training answer alike: joins, heartbeats,
/// credit queries, lease renewals and releases, manifest requests (notes the contact first). Any other
/// message comes back as [`Answered::Other`].
pub fn answer_peer(
    state: &mut crate::state::State,
    config: &crate::config::Config,
    issuer: &canopy_protocol::PublicKey,
    caller: Caller<'_>,
    round: u64,
    now: u64,
    message: Message,
) -> Result<Answered, crate::state::StateError> {
    let key = caller.key.to_string();
    let mut known = state.read().peer(&key)?;
    // Noting every contact would write (and sync) the database on every request; a peer's
    // last contact is kept to within LAST_SEEN_STEP_MS, far finer than what reads it (a
    // peer is active when heard from in the last minute).
    if let Some(p) = known.as_mut()
        && now.saturating_sub(p.last_seen_ms) >= LAST_SEEN_STEP_MS
    {
        state.transaction(|tx| tx.touch_peer(&key, now))?;
        p.last_seen_ms = now;
    }
    let mut joined = None;
    let reply = match message {
        Message::Join(join) => {
            let admission =
                crate::admission::admit(state, config, issuer, caller, round, now, join)?;
            joined = admission.joined;
            Message::JoinAck(admission.ack)
        }
        Message::CreditQuery(_) => {
            let own = state.read().contribution_of(&key)?;
            Message::CreditReport(credit_report(own, known.is_some(), round))
        }
        Message::Heartbeat(_) => match known {
            Some(p) => Message::JoinAck(JoinAck {
                accepted: !p.banned,
                tier: if p.tier == Tier::Datacenter {
                    Tier::Datacenter
                } else {
                    Tier::Volunteer
                },
                round,
                message: String::new(),
                work_bits: 0,
            }),
            None => no_work(0, NoWorkReason::JoinFirst),
        },
        Message::LeaseRenew(renew) => {
            let lease = state.read().lease(renew.lease.0)?;
            match lease {
                Some(l) if l.peer == key && l.status == LeaseStatus::Active => {
                    let task = state.read().task(l.task)?;
                    let tokens = task.map_or(0, |t| t.tokens);
                    let p = known.unwrap_or_else(|| unknown_peer(&key));
                    let expires = now + scheduler::lease_ms(&config.scheduling, &p, tokens);
                    state.transaction(|tx| {
                        tx.extend_lease(l.id, expires, renew.progress_permille)
                    })?;
                    Message::LeaseRenewed(LeaseRenewed {
                        lease: renew.lease,
                        expires_at_ms: expires,
                    })
                }
                _ => no_work(0, NoWorkReason::LeaseGone),
            }
        }
        Message::LeaseRelease(release) => {
            let lease = state.read().lease(release.lease.0)?;
            if let Some(l) = lease.filter(|l| l.peer == key && l.status == LeaseStatus::Active) {
                tracing::info!(lease = l.id, task = l.task, peer = %key, reason = ?release.reason, "lease handed back");
                state.transaction(|tx| {
                    tx.set_lease_status(l.id, LeaseStatus::Released)?;
                    scheduler::reopen(tx, l.task)
                })?;
            }
            no_work(0, NoWorkReason::LeaseReleased)
        }
        Message::ManifestRequest(req) => Message::ManifestResponse(Box::new(ManifestResponse {
            root: req.root,
            manifest: state.read().manifest(&req.root)?,
        })),
        other => return Ok(Answered::Other(other)),
    };
    Ok(Answered::Reply(reply, joined))
}

/// The record of a peer seen for the first time: a volunteer with no reputation yet.
pub(crate) fn unknown_peer(key: &str) -> PeerRecord {
    PeerRecord {
        peer: key.into(),
        tier: Tier::Volunteer,
        name: None,
        org: None,
        country: None,
        reputation: 0,
        banned: false,
        tokens_per_sec: None,
        slots: 1,
        joined_ms: 0,
        last_seen_ms: 0,
    }
}

/// How long a peer that is only waiting (for a task to open, for the round to close) is asked
/// to wait before it asks again: `base_ms`, stretched when `active` peers are about so that
/// together they send about [`WAITING_REQUESTS_PER_SEC`] such requests a second, and jittered
/// by ±25 % so that peers turned away together do not come back together. At most a minute.
pub fn waiting_retry_ms(base_ms: u64, active: u64) -> u32 {
    use rand::{Rng, SeedableRng};
    // Jitter needs no secrecy: a generator seeded from a counter and the clock.
    static DRAWS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let draw = DRAWS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(draw ^ now_ms().rotate_left(32));
    let spread = active.saturating_mul(1000) / WAITING_REQUESTS_PER_SEC;
    let ms = base_ms
        .max(spread)
        .saturating_mul(rng.random_range(75..=125))
        / 100;
    ms.min(60_000) as u32
}

/// Answers a lease request for either kind of work: a node that never joined is sent back to
/// join; `refuse_first` (the work's own reason to give none now, such as training being over)
/// comes next, then a paused project; otherwise `grant` (told whether a datacenter node is
/// active) runs in one transaction. A request that gets no work gets the delay before asking
/// again and the reason (answered with [`no_work`]); nothing open means asking again after
/// `nothing_retry_ms`.
pub(crate) fn answer_lease_request(
    state: &mut crate::state::State,
    key: &str,
    now: u64,
    work: Work,
    refuse_first: Option<(u32, NoWorkReason)>,
    nothing_retry_ms: u32,
    grant: impl FnOnce(
        &crate::state::Tx<'_>,
        &PeerRecord,
        bool,
    ) -> Result<
        Result<scheduler::Granted, scheduler::NoTask>,
        crate::state::StateError,
    >,
) -> Result<Result<scheduler::Granted, (u32, NoWorkReason)>, crate::state::StateError> {
    let Some(peer) = state.read().peer(key)? else {
        return Ok(Err((0, NoWorkReason::JoinFirst)));
    };
    if let Some(refusal) = refuse_first {
        return Ok(Err(refusal));
    }
    if state.read().paused()? {
        return Ok(Err((5_000, NoWorkReason::Paused)));
    }
    let active = datacenter_active(&state.read(), now)?;
    Ok(match state.transaction(|tx| grant(tx, &peer, active))? {
        Ok(granted) => Ok(granted),
        // Sent back to join, where it hears why (failed verifications, or a revoked
        // invitation) and stops instead of asking for work forever.
        Err(scheduler::NoTask::Banned) => Err((5_000, NoWorkReason::Banned)),
        Err(scheduler::NoTask::Busy) => Err((2_000, NoWorkReason::SlotsFull)),
        Err(scheduler::NoTask::Nothing) => Err((nothing_retry_ms, NoWorkReason::NothingOpen(work))),
    })
}

/// The message answering a lease request: the grant, or no work with its delay and reason.
pub(crate) fn lease_answer(
    granted: Result<scheduler::Granted, (u32, NoWorkReason)>,
) -> Result<Message, crate::state::StateError> {
    Ok(match granted {
        Ok(g) => Message::LeaseGrant(canopy_protocol::messages::LeaseGrant {
            lease: canopy_protocol::messages::LeaseId(g.lease),
            task: canopy_protocol::messages::TaskId(g.task.id),
            spec: crate::training::decode_spec(&g.task.spec)?,
            expires_at_ms: g.expires_ms,
        }),
        Err((retry_after_ms, reason)) => no_work(retry_after_ms, reason),
    })
}

/// A "no work now" answer: ask again after `retry_after_ms`, or join first when `reason`
/// says so.
pub(crate) fn no_work(retry_after_ms: u32, reason: NoWorkReason) -> Message {
    Message::NoWork(NoWork {
        retry_after_ms,
        join_first: reason.join_first(),
        reason: reason.to_string(),
    })
}

/// Whether a datacenter node that is not banned was heard from in the last minute (one
/// indexed count, however many peers the project has).
pub fn datacenter_active(
    r: &crate::state::Reader<'_>,
    now: u64,
) -> Result<bool, crate::state::StateError> {
    Ok(r.peers_seen_since(Some(Tier::Datacenter), (now + 1).saturating_sub(ACTIVE_MS))? > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thousand waiting peers polling every second would swamp the coordinator: the retry
    /// interval stretches with the peers about, and stays jittered and bounded.
    #[test]
    fn waiting_peers_are_spread_out_as_their_number_grows() {
        for _ in 0..200 {
            let few = u64::from(waiting_retry_ms(1000, 4));
            assert!((750..=1250).contains(&few), "{few}");
            let many = u64::from(waiting_retry_ms(1000, 1000));
            let spread = 1000 * 1000 / WAITING_REQUESTS_PER_SEC;
            assert!((spread * 3 / 4..=spread * 5 / 4).contains(&many), "{many}");
            assert!(waiting_retry_ms(1000, u64::MAX) <= 60_000);
        }
        let draws: std::collections::BTreeSet<u32> =
            (0..50).map(|_| waiting_retry_ms(1000, 0)).collect();
        assert!(draws.len() > 10, "not jittered: {draws:?}");
    }

    /// Every way a lease request is answered, through the path both kinds of work share,
    /// against a state database on disk.
    #[test]
    fn a_lease_request_is_answered_by_one_path_for_both_kinds_of_work() {
        use crate::state::{State, TaskKind};
        let dir = tempfile::tempdir().expect("temp dir");
        let mut state = State::open(&dir.path().join("canopy.db")).expect("state");
        let config = crate::config::SchedulingConfig::default();
        state
            .transaction(|tx| {
                tx.upsert_peer(&unknown_peer("vol"))?;
                tx.upsert_peer(&unknown_peer("banned"))?;
                tx.adjust_reputation("banned", -100, -10)?;
                tx.insert_task(0, TaskKind::Train, b"spec", None, 100)?;
                Ok(())
            })
            .expect("setup");
        let mut ask = |key: &str, first: Option<(u32, NoWorkReason)>| {
            answer_lease_request(
                &mut state,
                key,
                1,
                Work::Training,
                first,
                777,
                |tx, p, a| scheduler::grant(tx, &config, p, 0, 1, a),
            )
            .expect("answered")
        };
        let told = |answer: Result<scheduler::Granted, (u32, NoWorkReason)>| match answer {
            Err((retry, reason)) => (retry, reason.to_string(), reason.join_first()),
            Ok(g) => panic!("expected no work, got {g:?}"),
        };
        assert_eq!(
            told(ask("stranger", None)),
            (0, "join first".into(), true),
            "a node that never joined is sent back to join, whatever else holds"
        );
        assert_eq!(
            told(ask("vol", Some((10, NoWorkReason::TrainingFinished)))),
            (10, "training has finished".into(), false)
        );
        assert_eq!(
            told(ask("banned", None)),
            (5_000, "this node is banned".into(), true)
        );
        let granted = ask("vol", None).expect("the volunteer gets the task");
        assert_eq!(granted.task.kind, TaskKind::Train);
        assert_eq!(
            told(ask("vol", None)).1,
            "this node holds all the leases it has slots for"
        );
        state
            .transaction(|tx| {
                tx.upsert_peer(&unknown_peer("late"))?;
                tx.set_paused(true)
            })
            .expect("pause");
        let mut ask = |key: &str| {
            answer_lease_request(&mut state, key, 1, Work::Corpus, None, 777, |_, _, _| {
                Ok(Err(scheduler::NoTask::Nothing))
            })
            .expect("answered")
        };
        assert_eq!(
            told(ask("late")).1,
            "the project is paused by its coordinator"
        );
        state
            .transaction(|tx| tx.set_paused(false))
            .expect("resume");
        let mut ask = |key: &str| {
            answer_lease_request(&mut state, key, 1, Work::Corpus, None, 777, |_, _, _| {
                Ok(Err(scheduler::NoTask::Nothing))
            })
            .expect("answered")
        };
        assert_eq!(
            told(ask("late")),
            (
                777,
                "no corpus task open for this node now; the corpus build goes on".into(),
                false
            )
        );
    }

    /// A renewal racing an expiry, replayed both ways against the state on disk: a renewal
    /// that arrives first moves the deadline past the sweep; one that arrives after the sweep
    /// is told the lease is gone, and the task goes to the next node that asks.
    #[test]
    fn a_renewal_racing_an_expiry_is_decided_by_which_comes_first() {
        use canopy_protocol::messages::{LeaseId, LeaseRenew};

        use crate::state::{LeaseStatus, State, TaskKind};
        let dir = tempfile::tempdir().expect("temp dir");
        let mut state = State::open(&dir.path().join("canopy.db")).expect("state");
        let config = crate::config::Config::default();
        let issuer = canopy_protocol::Keypair::from_secret_bytes(&[3; 32]).public();
        let (first, second) = state
            .transaction(|tx| {
                for key in ["a", "b", "c"] {
                    tx.upsert_peer(&unknown_peer(key))?;
                }
                tx.insert_task(0, TaskKind::Train, b"one", None, 100)?;
                tx.insert_task(0, TaskKind::Train, b"two", None, 100)?;
                let first =
                    scheduler::grant(tx, &config.scheduling, &unknown_peer("a"), 0, 0, false)?;
                let second =
                    scheduler::grant(tx, &config.scheduling, &unknown_peer("b"), 0, 0, false)?;
                Ok((first.expect("a's lease"), second.expect("b's lease")))
            })
            .expect("setup");
        let deadline = first.expires_ms;
        let renew = |state: &mut State, key: &str, lease: u64, now: u64| {
            let message = Message::LeaseRenew(LeaseRenew {
                lease: LeaseId(lease),
                progress_permille: 500,
            });
            let caller = Caller { key, network: None };
            match answer_peer(state, &config, &issuer, caller, 0, now, message) {
                Ok(Answered::Reply(reply, _)) => reply,
                _ => panic!("a renewal is answered"),
            }
        };
        // a renews just before its deadline: the deadline moves on.
        let Message::LeaseRenewed(renewed) = renew(&mut state, "a", first.lease, deadline - 1)
        else {
            panic!("a's renewal in time is granted");
        };
        assert!(renewed.expires_at_ms > deadline);
        // b's renewal comes too late: the sweep at the deadline took its lease first.
        let swept = state
            .transaction(|tx| scheduler::expire(tx, deadline + 1))
            .expect("sweep");
        assert_eq!(
            swept.iter().map(|l| l.id).collect::<Vec<_>>(),
            [second.lease],
            "only the lease that was not renewed expires"
        );
        let Message::NoWork(gone) = renew(&mut state, "b", second.lease, deadline + 2) else {
            panic!("a late renewal gets no lease");
        };
        assert_eq!(gone.reason, NoWorkReason::LeaseGone.to_string());
        // Another node asking now gets b's task; a's lease is still its own.
        let again = state
            .transaction(|tx| {
                scheduler::grant(
                    tx,
                    &config.scheduling,
                    &unknown_peer("c"),
                    0,
                    deadline + 3,
                    false,
                )
            })
            .expect("grant")
            .expect("c gets the reopened task");
        assert_eq!(again.task.id, second.task.id);
        let read = state.read();
        assert_eq!(
            read.lease(first.lease).expect("read").map(|l| l.status),
            Some(LeaseStatus::Active)
        );
    }

    /// A volunteer banned mid-round: its lease's result is refused as banned, and its next
    /// request for work sends it back to join, where it hears why.
    #[test]
    fn a_volunteer_banned_mid_round_gets_no_result_counted_and_no_more_work() {
        use crate::refusal::{Refusal, check_lease};
        use crate::state::{State, TaskKind};
        let dir = tempfile::tempdir().expect("temp dir");
        let mut state = State::open(&dir.path().join("canopy.db")).expect("state");
        let config = crate::config::SchedulingConfig::default();
        let granted = state
            .transaction(|tx| {
                tx.upsert_peer(&unknown_peer("v"))?;
                tx.insert_task(0, TaskKind::Train, b"one", None, 100)?;
                tx.insert_task(0, TaskKind::Train, b"two", None, 100)?;
                scheduler::grant(tx, &config, &unknown_peer("v"), 0, 0, false)
            })
            .expect("grant")
            .expect("v's lease");
        state
            .transaction(|tx| tx.adjust_reputation("v", -100, -10))
            .expect("ban");
        let (lease, task, sender) = {
            let r = state.read();
            (
                r.lease(granted.lease).expect("read"),
                r.task(granted.task.id).expect("read"),
                r.peer("v").expect("read"),
            )
        };
        assert_eq!(
            check_lease(Work::Training, "v", lease, task, sender).map(|_| ()),
            Err(Refusal::Banned)
        );
        let answer =
            answer_lease_request(&mut state, "v", 1, Work::Training, None, 1, |tx, p, a| {
                scheduler::grant(tx, &config, p, 0, 1, a)
            })
            .expect("answered");
        let Err((_, reason)) = answer else {
            panic!("a banned volunteer gets no work");
        };
        assert_eq!(reason, NoWorkReason::Banned);
        assert!(reason.join_first());
    }
}

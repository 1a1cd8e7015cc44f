//! Who gets which task, for how long.
//!
//! - A lease's deadline comes from the node's measured throughput (an exponential average of
//!   what its results reported; a configured guess until it has one) times a slack factor,
//!   within configured bounds: a fast node gets a short lease, a slow one a long one, and no
//!   global timeout needs tuning.
//! - When a lease expires (or is handed back) its task is reopened. Datacenter-tier nodes
//!   take reopened tasks first: while one of them is active, volunteers get only fresh tasks.
//! - Verification tasks (datacenter re-runs of volunteer tasks) go to the datacenter tier only.
//! - A banned node gets nothing, nor does a node already holding as many leases as it has
//!   slots.

use crate::config::SchedulingConfig;
use crate::state::{
    LeaseRecord, LeaseStatus, PeerRecord, Result, TaskKind, TaskRecord, TaskStatus, Tx,
};
use canopy_protocol::messages::Tier;

/// A node counts as active this long after it was last heard from.
pub const ACTIVE_MS: u64 = 60_000;

/// A lease just granted.
#[derive(Debug, Clone, PartialEq)]
pub struct Granted {
    /// The task.
    pub task: TaskRecord,
    /// The lease id.
    pub lease: u64,
    /// Its deadline (ms since the epoch).
    pub expires_ms: u64,
}

/// Why a node got no task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoTask {
    /// The node is banned.
    Banned,
    /// The node holds as many leases as it has slots.
    Busy,
    /// Nothing suits it now.
    Nothing,
}

/// How long a lease on a task of `tokens` lasts for `peer`, in milliseconds.
pub fn lease_ms(config: &SchedulingConfig, peer: &PeerRecord, tokens: u64) -> u64 {
    let rate = peer
        .tokens_per_sec
        .filter(|r| r.is_finite() && *r > 0.0)
        .unwrap_or(config.assumed_tokens_per_sec)
        .max(1e-3);
    let secs = (tokens as f64 / rate * config.lease_slack)
        .clamp(config.min_lease_secs as f64, config.max_lease_secs as f64);
    (secs * 1000.0) as u64
}

/// Accepted results a volunteer shows for each lease it may hold beyond its first.
pub const RESULTS_PER_SLOT: u64 = 4;

/// The leases `peer` may hold at once. The slots a node claims (one per adapter it lists) are
/// not taken on its word: a volunteer starts with one and earns each further one, up to its
/// claim, with [`RESULTS_PER_SLOT`] accepted results, so listing sixteen adapters wins a new
/// identity nothing. Datacenter nodes are allowlisted by the operator and get their claim.
pub fn usable_slots(tx: &Tx<'_>, peer: &PeerRecord) -> Result<usize> {
    let claimed = u64::from(peer.slots.max(1));
    if peer.tier == Tier::Datacenter {
        return Ok(claimed as usize);
    }
    let earned = 1 + tx.accepted_results(&peer.peer)? / RESULTS_PER_SLOT;
    Ok(claimed.min(earned) as usize)
}

/// Grants `peer` a lease on the best open training task of `round`, if any suits it.
/// `datacenter_active`: whether a datacenter node has been heard from recently (then
/// reopened tasks wait for one).
pub fn grant(
    tx: &Tx<'_>,
    config: &SchedulingConfig,
    peer: &PeerRecord,
    round: u64,
    now_ms: u64,
    datacenter_active: bool,
) -> Result<std::result::Result<Granted, NoTask>> {
    grant_with(tx, config, peer, now_ms, |tx, peer| {
        pick_training(tx, peer, round, datacenter_active)
    })
}

/// The one way any work is leased: a banned node gets nothing, a node holding all the leases
/// its slots allow waits, and otherwise `pick` (the kind of work's choice among its open
/// tasks) names the task, leased until a deadline from the node's measured throughput.
pub fn grant_with(
    tx: &Tx<'_>,
    config: &SchedulingConfig,
    peer: &PeerRecord,
    now_ms: u64,
    pick: impl FnOnce(&Tx<'_>, &PeerRecord) -> Result<Option<TaskRecord>>,
) -> Result<std::result::Result<Granted, NoTask>> {
    if peer.banned {
        return Ok(Err(NoTask::Banned));
    }
    if tx.active_leases(Some(&peer.peer))?.len() >= usable_slots(tx, peer)? {
        return Ok(Err(NoTask::Busy));
    }
    match pick(tx, peer)? {
        Some(task) => granted(tx, config, peer, task, now_ms),
        None => Ok(Err(NoTask::Nothing)),
    }
}

/// The training task of `round` for `peer`: a volunteer takes the first in grant order it may
/// take; a datacenter node the highest-ranked (reopened ones, then re-run checks), never a
/// check of its own work.
fn pick_training(
    tx: &Tx<'_>,
    peer: &PeerRecord,
    round: u64,
    datacenter_active: bool,
) -> Result<Option<TaskRecord>> {
    if peer.tier != Tier::Datacenter {
        // One indexed lookup, however many tasks are open.
        return tx.first_open_task(round, datacenter_active);
    }
    // Open tasks come reopened first, then by id.
    let open = tx.tasks(Some(round), TaskStatus::Open)?;
    let mut best: Option<&TaskRecord> = None;
    for task in &open {
        if task.kind == TaskKind::Verify
            && let Some(original) = task.verifies
            && tx
                .leases_of_task(original)?
                .iter()
                .any(|l| l.peer == peer.peer)
        {
            continue;
        }
        let rank = |t: &TaskRecord| (t.reopened, t.kind == TaskKind::Verify);
        best = match best {
            Some(b) if rank(task) > rank(b) => Some(task),
            Some(b) => Some(b),
            None => Some(task),
        };
    }
    Ok(best.cloned())
}

/// Records `peer`'s lease on `task`.
fn granted(
    tx: &Tx<'_>,
    config: &SchedulingConfig,
    peer: &PeerRecord,
    task: TaskRecord,
    now_ms: u64,
) -> Result<std::result::Result<Granted, NoTask>> {
    let expires_ms = now_ms + lease_ms(config, peer, task.tokens);
    let lease = tx.insert_lease(task.id, &peer.peer, now_ms, expires_ms)?;
    Ok(Ok(Granted {
        task,
        lease,
        expires_ms,
    }))
}

/// Expires every active lease past its deadline and reopens its task. Returns the leases.
pub fn expire(tx: &Tx<'_>, now_ms: u64) -> Result<Vec<LeaseRecord>> {
    let expired: Vec<LeaseRecord> = tx
        .active_leases(None)?
        .into_iter()
        .filter(|l| l.expires_ms < now_ms)
        .collect();
    for lease in &expired {
        tx.set_lease_status(lease.id, LeaseStatus::Expired)?;
        reopen(tx, lease.task)?;
    }
    Ok(expired)
}

/// Puts a task back up for lease unless it is finished or cancelled.
pub fn reopen(tx: &Tx<'_>, task: u64) -> Result<()> {
    if let Some(t) = tx.task(task)?
        && t.status == TaskStatus::Leased
    {
        tx.set_task_status(task, TaskStatus::Open)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{LedgerVerdict, State, TaskKind};

    fn peer(name: &str, tier: Tier) -> PeerRecord {
        PeerRecord {
            peer: name.into(),
            tier,
            name: None,
            org: None,
            country: None,
            reputation: 0,
            banned: false,
            tokens_per_sec: Some(1000.0),
            slots: 1,
            joined_ms: 0,
            last_seen_ms: 0,
        }
    }

    fn setup() -> (tempfile::TempDir, State) {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(&dir.path().join("canopy.db")).unwrap();
        (dir, state)
    }

    #[test]
    fn an_expired_lease_goes_to_the_datacenter_tier_first() {
        let (_dir, mut state) = setup();
        let config = SchedulingConfig::default();
        let (vol_a, vol_b, dc) = (
            peer("vol-a", Tier::Volunteer),
            peer("vol-b", Tier::Volunteer),
            peer("dc", Tier::Datacenter),
        );
        state
            .transaction(|tx| {
                for p in [&vol_a, &vol_b, &dc] {
                    tx.upsert_peer(p)?;
                }
                let t1 = tx.insert_task(0, TaskKind::Train, b"a", None, 10_000)?;
                tx.insert_task(0, TaskKind::Train, b"b", None, 10_000)?;
                let g = grant(tx, &config, &vol_a, 0, 1_000, true)?.unwrap();
                assert_eq!(g.task.id, t1);
                // 10k tokens at 1k tokens/s with slack 3: 30 s.
                assert_eq!(g.expires_ms, 1_000 + 30_000);
                assert_eq!(expire(tx, 20_000)?.len(), 0);
                let expired = expire(tx, 40_000)?;
                assert_eq!(expired.len(), 1);
                assert_eq!(tx.lease(g.lease)?.unwrap().status, LeaseStatus::Expired);
                // A volunteer asking now gets the fresh task, not the reopened one.
                let v = grant(tx, &config, &vol_b, 0, 40_000, true)?.unwrap();
                assert_ne!(v.task.id, t1);
                // The datacenter node takes the reopened task.
                let d = grant(tx, &config, &dc, 0, 40_000, true)?.unwrap();
                assert_eq!(d.task.id, t1);
                assert!(d.task.reopened);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn without_an_active_datacenter_node_volunteers_take_reopened_tasks() {
        let (_dir, mut state) = setup();
        let config = SchedulingConfig::default();
        let (a, b) = (peer("a", Tier::Volunteer), peer("b", Tier::Volunteer));
        state
            .transaction(|tx| {
                tx.upsert_peer(&a)?;
                tx.upsert_peer(&b)?;
                let t = tx.insert_task(0, TaskKind::Train, b"a", None, 1000)?;
                let g = grant(tx, &config, &a, 0, 0, false)?.unwrap();
                expire(tx, g.expires_ms + 1)?;
                let again = grant(tx, &config, &b, 0, g.expires_ms + 1, false)?.unwrap();
                assert_eq!(again.task.id, t);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn banned_busy_and_volunteer_peers_get_no_verification_or_extra_work() {
        let (_dir, mut state) = setup();
        let config = SchedulingConfig::default();
        let mut banned = peer("banned", Tier::Volunteer);
        banned.banned = true;
        let vol = peer("vol", Tier::Volunteer);
        state
            .transaction(|tx| {
                tx.upsert_peer(&banned)?;
                tx.upsert_peer(&vol)?;
                let original = tx.insert_task(0, TaskKind::Train, b"a", None, 1000)?;
                tx.insert_task(0, TaskKind::Train, b"b", None, 1000)?;
                tx.insert_task(0, TaskKind::Verify, b"a", Some(original), 1000)?;
                assert_eq!(
                    grant(tx, &config, &banned, 0, 0, false)?,
                    Err(NoTask::Banned)
                );
                let g = grant(tx, &config, &vol, 0, 0, false)?.unwrap();
                assert_eq!(g.task.kind, TaskKind::Train);
                assert_eq!(grant(tx, &config, &vol, 0, 0, false)?, Err(NoTask::Busy));
                tx.set_lease_status(g.lease, LeaseStatus::Done)?;
                tx.set_task_status(g.task.id, TaskStatus::Done)?;
                let g2 = grant(tx, &config, &vol, 0, 0, false)?.unwrap();
                assert_eq!(g2.task.kind, TaskKind::Train);
                tx.set_lease_status(g2.lease, LeaseStatus::Done)?;
                tx.set_task_status(g2.task.id, TaskStatus::Done)?;
                // Only the verification task is left: not for a volunteer.
                assert_eq!(grant(tx, &config, &vol, 0, 0, false)?, Err(NoTask::Nothing));
                Ok(())
            })
            .unwrap();
    }

    /// Issue 19, "each may claim up to 16 slots by listing adapters": a new identity that
    /// lists sixteen adapters got sixteen tasks at once. Slots are earned with accepted work.
    #[test]
    fn a_volunteer_earns_its_slots_with_accepted_results() {
        let (_dir, mut state) = setup();
        let config = SchedulingConfig::default();
        let mut vol = peer("vol", Tier::Volunteer);
        vol.slots = 16;
        let mut dc = peer("dc", Tier::Datacenter);
        dc.slots = 3;
        state
            .transaction(|tx| {
                tx.upsert_peer(&vol)?;
                tx.upsert_peer(&dc)?;
                for _ in 0..40 {
                    tx.insert_task(0, TaskKind::Train, b"t", None, 1000)?;
                }
                let granted = |tx: &Tx<'_>, p: &PeerRecord| -> Result<usize> {
                    let mut n = 0;
                    while grant(tx, &config, p, 0, 0, false)?.is_ok() {
                        n += 1;
                    }
                    Ok(n)
                };
                assert_eq!(granted(tx, &vol)?, 1, "a new identity holds one lease");
                assert_eq!(granted(tx, &dc)?, 3, "the datacenter tier gets its claim");
                // Eight accepted results later, two more slots.
                let lease = tx.active_leases(Some("vol"))?[0].id;
                for task in 0..8 {
                    tx.ledger_entry(
                        &crate::state::LedgerClaim {
                            peer: "vol",
                            round: 0,
                            task,
                            lease,
                            kind: TaskKind::Train,
                            compute_ms: 1,
                            accepted: true,
                            verified: LedgerVerdict::Unchecked,
                            result_hash: None,
                            reason: None,
                            arrived_ms: 1,
                        },
                        1,
                    )?;
                }
                assert_eq!(usable_slots(tx, &vol)?, 3);
                assert_eq!(granted(tx, &vol)?, 2);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn lease_length_follows_measured_throughput_within_bounds() {
        let config = SchedulingConfig::default();
        let mut p = peer("p", Tier::Volunteer);
        p.tokens_per_sec = Some(100.0);
        let slow = lease_ms(&config, &p, 100_000);
        p.tokens_per_sec = Some(10_000.0);
        let fast = lease_ms(&config, &p, 100_000);
        assert!(slow > fast);
        assert_eq!(fast, config.min_lease_secs * 1000);
        p.tokens_per_sec = Some(1e-9);
        assert_eq!(lease_ms(&config, &p, 100_000), config.max_lease_secs * 1000);
        p.tokens_per_sec = None;
        let guessed = lease_ms(&config, &p, 1_000_000);
        let expected = 1_000_000.0 / config.assumed_tokens_per_sec * config.lease_slack * 1000.0;
        assert_eq!(guessed, expected as u64);
    }
}

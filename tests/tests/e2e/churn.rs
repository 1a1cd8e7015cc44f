//! Churn: volunteers come and go while a project trains. A coordinator process and six
//! volunteer processes run a six-round project with short leases; two volunteers are killed
//! with SIGKILL at moments a seeded RNG picks, and a new volunteer joins mid-run. The run
//! finishes, the tasks the killed nodes held are taken over by other peers once their leases
//! expire, the newcomer's work is accepted, and no accepted update is lost.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use canopy_tests::processes::{
    Coordinator, Volunteer, array, coordinator_json, free_port, history, node_peer_id,
    seed_from_env, signal, small_project, str_of, u64_of,
};
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Six rounds of six tasks; a round closes once all six are in.
const TRAINING: &[(&str, &str)] = &[
    ("rounds", "6"),
    ("inner_steps", "30"),
    ("tasks_per_round", "6"),
    ("min_updates", "6"),
];

/// Short leases, so that a killed node's task is back up for lease within seconds; healthy
/// nodes renew theirs at a third of the remaining time.
const SCHEDULING: &str =
    "[scheduling]\nmin_lease_secs = 3\nmax_lease_secs = 6\nheartbeat_secs = 1\n";

/// The volunteers started at the beginning.
const VOLUNTEERS: usize = 6;

/// The environment variable that replays a churn schedule.
const SEED_ENV: &str = "CANOPY_CHURN_SEED";

/// Something the test does to the swarm once round `round` is open and `delay` has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Step {
    round: u64,
    delay_ms: u64,
    action: Action,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    /// SIGKILL the volunteer with this index, as soon as it holds a lease.
    Kill(usize),
    /// Start the new volunteer.
    Join,
}

/// The churn schedule of `seed`: two distinct victims, each killed in one of rounds 1 to 3,
/// and the newcomer joining in round 1 or 2 (so that rounds are left for it to work in).
fn schedule(seed: u64) -> Vec<Step> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut steps: Vec<Step> = sample(&mut rng, VOLUNTEERS, 2)
        .into_iter()
        .map(|victim| Step {
            round: rng.random_range(1..=3),
            delay_ms: rng.random_range(0..4000),
            action: Action::Kill(victim),
        })
        .collect();
    steps.push(Step {
        round: rng.random_range(1..=2),
        delay_ms: rng.random_range(0..4000),
        action: Action::Join,
    });
    steps.sort();
    steps
}

/// The active lease of `peer`, if it holds one now.
fn active_lease(config: &Path, peer: &str) -> Option<u64> {
    array(&history(config), "leases")
        .iter()
        .find(|l| l["peer"] == peer && l["status"] == "active")
        .map(|l| u64_of(l, "id"))
}

/// Six volunteers, two SIGKILLed and one newcomer on the schedule of a printed seed: the run
/// completes, lost leases are finished by other peers, the newcomer's work is accepted, and
/// every accepted update is in the ledger and was aggregated.
#[test]
fn training_survives_killed_volunteers_and_a_newcomer() {
    let seed = seed_from_env(SEED_ENV);
    let steps = schedule(seed);
    eprintln!("churn seed {seed} ({SEED_ENV}={seed} replays it): {steps:?}");

    let tmp = tempfile::tempdir().expect("tmp");
    let config = small_project(
        &tmp.path().join("project"),
        free_port(),
        TRAINING,
        SCHEDULING,
    );
    let dirs: Vec<_> = (0..=VOLUNTEERS)
        .map(|i| tmp.path().join(format!("v{i}")))
        .collect();
    let ids: Vec<String> = dirs.iter().map(|d| node_peer_id(d)).collect();
    let newcomer = &ids[VOLUNTEERS];

    let mut coordinator = Coordinator::start(&config);
    let mut nodes: Vec<Option<Volunteer>> = (0..VOLUNTEERS)
        .map(|i| {
            Some(Volunteer::start(
                &dirs[i],
                &coordinator.addr,
                &["--name", &format!("volunteer-{i}")],
            ))
        })
        .collect();
    let mut late: Option<Volunteer> = None;

    // Leases held by the victims at the moment they were killed.
    let mut killed: BTreeMap<String, u64> = BTreeMap::new();
    for step in &steps {
        // Round `step.round` is open once round `step.round - 1` has closed.
        coordinator
            .wait_for(Duration::from_secs(600), |e| {
                e["round"]["round"].as_u64() == Some(step.round - 1)
            })
            .unwrap_or_else(|| panic!("round {} opens", step.round));
        std::thread::sleep(Duration::from_millis(step.delay_ms));
        match step.action {
            Action::Join => {
                eprintln!("round {}: volunteer {VOLUNTEERS} joins", step.round);
                late = Some(Volunteer::start(
                    &dirs[VOLUNTEERS],
                    &coordinator.addr,
                    &["--name", "newcomer"],
                ));
            }
            Action::Kill(i) => {
                // Kill it in the middle of a task, so that there is a lease to lose.
                let deadline = Instant::now() + Duration::from_secs(300);
                let lease = loop {
                    if let Some(lease) = active_lease(&config, &ids[i]) {
                        break lease;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "volunteer {i} took no lease in round {} or later",
                        step.round
                    );
                    std::thread::sleep(Duration::from_millis(100));
                };
                let node = nodes[i].take().expect("each victim is killed once");
                signal(&node.child, "KILL");
                drop(node);
                eprintln!(
                    "round {}: volunteer {i} killed holding lease {lease}",
                    step.round
                );
                killed.insert(ids[i].clone(), lease);
            }
        }
    }

    let status = coordinator.wait_exit(Duration::from_secs(900));
    assert!(status.success(), "the coordinator finishes the run");
    drop(late);
    drop(nodes);
    assert_eq!(
        coordinator.events_named("round").len(),
        6,
        "one event per round"
    );

    let h = history(&config);
    let rounds = array(&h, "rounds");
    let closed: Vec<&serde_json::Value> = rounds
        .iter()
        .filter(|r| !r["closed_ms"].is_null())
        .collect();
    assert_eq!(closed.len(), 6, "every round closed: {rounds:?}");
    let leases = array(&h, "leases");
    let results = array(&h, "results");

    // Leases were reassigned: a victim's lease that ran out had its task finished by another
    // peer. Its lease was either lost (expired) or, where the result was already on its way
    // when the kill came, done.
    let mut reassigned = 0;
    for (victim, lease_id) in &killed {
        let lease = leases
            .iter()
            .find(|l| u64_of(l, "id") == *lease_id)
            .expect("the victim's lease is in the history");
        let task = u64_of(lease, "task");
        match str_of(lease, "status") {
            "expired" => {
                let finisher = leases.iter().find(|l| {
                    u64_of(l, "task") == task && l["status"] == "done" && l["peer"] != *victim
                });
                let finisher = finisher.unwrap_or_else(|| {
                    panic!("task {task} of killed {victim} was never finished: {leases:?}")
                });
                assert!(
                    u64_of(finisher, "id") > *lease_id,
                    "the task was leased again after the loss"
                );
                assert!(
                    results.iter().any(|r| u64_of(r, "task") == task
                        && r["peer"] == finisher["peer"]
                        && r["status"] == "accepted"),
                    "the new holder's result for task {task} was accepted"
                );
                reassigned += 1;
                eprintln!(
                    "task {task}: lease {lease_id} of killed {victim} expired, finished by {} under lease {}",
                    finisher["peer"], finisher["id"]
                );
            }
            "done" => eprintln!(
                "notice: killed {victim}'s lease {lease_id} was done: its result landed first"
            ),
            other => panic!("lease {lease_id} of a killed node ended {other:?}"),
        }
        // A killed node holds nothing and does no work after its kill.
        assert!(
            leases
                .iter()
                .all(|l| l["peer"] != *victim || u64_of(l, "id") <= *lease_id),
            "killed {victim} got a lease after its kill"
        );
    }
    assert_eq!(killed.len(), 2, "both victims were killed");
    assert!(
        reassigned >= 1,
        "at least one lost lease was reassigned (seed {seed})"
    );

    // The newcomer contributed accepted work that went into a model version.
    let ledger = coordinator_json("ledger", &config);
    let ledger = ledger.as_array().expect("ledger");
    let accepted: Vec<(u64, &str)> = ledger
        .iter()
        .filter(|e| e["kind"] == "train" && canopy_tests::processes::aggregated_entry(e))
        .map(|e| (u64_of(e, "task"), str_of(e, "peer")))
        .collect();
    assert!(
        accepted.iter().any(|(_, p)| p == newcomer),
        "the newcomer's work was accepted: {ledger:?}"
    );

    // No accepted update is lost: the ledger and the aggregation inputs agree, and every
    // accepted ledger entry is a result that a round aggregated.
    let aggregated: u64 = closed.iter().map(|r| u64_of(r, "accepted")).sum();
    assert_eq!(
        aggregated as usize,
        accepted.len(),
        "the ledger and the aggregation inputs agree"
    );
    let mut seen = BTreeSet::new();
    for (task, peer) in &accepted {
        assert!(seen.insert(*task), "task {task} has one accepted result");
        let result = results
            .iter()
            .find(|r| u64_of(r, "task") == *task && r["peer"] == *peer && r["status"] == "accepted")
            .unwrap_or_else(|| panic!("accepted ledger entry ({task}, {peer}) has a result"));
        assert!(
            result["aggregated_in"].is_u64(),
            "accepted result of task {task} was aggregated: {result}"
        );
    }
    let accepted_results = results.iter().filter(|r| r["status"] == "accepted").count();
    assert_eq!(accepted_results, accepted.len());
    eprintln!(
        "{} accepted updates over 6 rounds, {reassigned} lost lease(s) reassigned, newcomer {} accepted",
        accepted.len(),
        accepted.iter().filter(|(_, p)| p == newcomer).count()
    );
}

//! Byzantine volunteers: one of four volunteers returns adversarial updates (scaled,
//! sign-flipped, NaN, replayed from an earlier round, for the wrong model version, signed by
//! another key). Every attack is refused or neutralised, the attacker's reputation falls until
//! it is banned (possibly before its script ends: a grossly harmful update costs as much as a
//! failed re-run), and the final model is as good as that of an all-honest run.

use std::time::Duration;

use canopy_tests::adversary::{Adversary, Attack, Outcome};
use canopy_tests::processes::{Coordinator, Volunteer, coordinator_json, free_port, small_project};

/// Both runs: the tiny model, four tasks a round, a round closing on three accepted updates.
const TRAINING: &[(&str, &str)] = &[
    ("rounds", "10"),
    ("inner_steps", "12"),
    ("tasks_per_round", "4"),
    ("min_updates", "3"),
];

/// The held-out loss after the last round, from `canopy-coordinator status --json`.
pub(crate) fn final_eval_loss(config: &std::path::Path) -> f64 {
    let status = coordinator_json("status", config);
    status["rounds"]
        .as_array()
        .expect("rounds")
        .iter()
        .filter(|r| !r["closed_ms"].is_null())
        .filter_map(|r| r["eval_loss"].as_f64())
        .next_back()
        .expect("a closed round")
}

pub(crate) fn peer<'a>(status: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    status["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .find(|p| p["peer"] == id)
        .unwrap_or_else(|| panic!("peer {id} is not in {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversarial_updates_are_refused_and_training_survives() {
    let tmp = tempfile::tempdir().expect("tmp");

    // The all-honest run.
    let honest = small_project(&tmp.path().join("honest"), free_port(), TRAINING, "");
    let honest_loss = tokio::task::block_in_place(|| {
        let mut coordinator = Coordinator::start(&honest);
        let _nodes: Vec<Volunteer> =
            Volunteer::start_many(tmp.path(), "honest", 4, &coordinator.addr);
        assert!(coordinator.wait_exit(Duration::from_secs(600)).success());
        final_eval_loss(&honest)
    });

    // Three honest volunteers and the adversary.
    let attacked = small_project(&tmp.path().join("attacked"), free_port(), TRAINING, "");
    let mut coordinator = Coordinator::start(&attacked);
    let nodes: Vec<Volunteer> =
        Volunteer::start_many(tmp.path(), "volunteer", 3, &coordinator.addr);
    let mut adversary = Adversary::join(&tmp.path().join("mallory"), &coordinator.addr).await;
    let script = [
        Attack::Honest,
        Attack::Scaled(30.0),
        Attack::Replay,
        Attack::SignFlipped,
        Attack::NonFinite,
        Attack::WrongVersion,
        Attack::WrongKey,
    ];
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mallory = adversary.peer_id().to_string();
    for attack in script {
        // A banned attacker gets no more leases: the rest of the script cannot run.
        if peer(&coordinator_json("status", &attacked), &mallory)["banned"] == true {
            eprintln!("banned before {attack:?}");
            break;
        }
        let outcome = adversary
            .attack(attack, Duration::from_secs(300))
            .await
            .unwrap_or_else(|| panic!("no lease for {attack:?} after {outcomes:?}"));
        outcomes.push(outcome);
    }
    adversary.shutdown().await;
    tokio::task::block_in_place(|| {
        assert!(coordinator.wait_exit(Duration::from_secs(600)).success());
    });
    drop(nodes);
    let attacked_loss = final_eval_loss(&attacked);
    eprintln!("attacks: {outcomes:#?}");
    eprintln!("final held-out loss: honest {honest_loss:.4}, attacked {attacked_loss:.4}");

    for o in &outcomes {
        match o.attack {
            Attack::Honest => assert!(o.accepted, "the honest update is taken: {o:?}"),
            // A negated update of ordinary size may pass the arrival checks; it is left out
            // when its round closes (below, it earns no credit).
            Attack::SignFlipped => {}
            _ => assert!(!o.accepted, "{:?} was accepted", o.attack),
        }
    }
    let flipped = outcomes
        .iter()
        .find(|o| o.attack == Attack::SignFlipped)
        .expect("sign flip outcome");
    eprintln!("sign-flipped update accepted: {}", flipped.accepted);

    let status = coordinator_json("status", &attacked);
    let attacker = peer(&status, &mallory);
    let reputation = attacker["reputation"].as_i64().expect("reputation");
    assert!(reputation < 0, "the attacker's reputation fell: {attacker}");
    assert_eq!(
        attacker["banned"], true,
        "the attacker is banned: {attacker}"
    );
    for p in status["peers"].as_array().expect("peers") {
        if p["peer"] != mallory.as_str() {
            assert!(
                p["reputation"].as_i64().expect("reputation") > reputation,
                "honest peers keep a better score: {p}"
            );
            assert_eq!(p["banned"], false);
        }
    }
    // Nothing the attacker sent after its honest update went into a model version or
    // earned credit: the flipped update, if it passed on arrival, was left out at close.
    let ledger = coordinator_json("ledger", &attacked);
    let accepted_from_attacker = ledger
        .as_array()
        .expect("ledger")
        .iter()
        .filter(|e| e["peer"] == mallory.as_str() && canopy_tests::processes::aggregated_entry(e))
        .count();
    assert_eq!(
        accepted_from_attacker,
        outcomes
            .iter()
            .filter(|o| o.accepted && o.attack == Attack::Honest)
            .count()
    );
    assert!(
        attacked_loss <= honest_loss * 1.05,
        "held-out loss under attack {attacked_loss:.4} vs all-honest {honest_loss:.4}"
    );
}

//! Untrusted volunteers at scale: noise is not malice. Honest volunteers running tiny, noisy
//! tasks (one inner step of one 16-token sequence, at a high learning rate) with the default
//! verification settings run 200 rounds to the end: every round closes, and no honest
//! volunteer is banned or loses reputation for the noise of its updates.
//!
//! With a fixed bound on how much an update may raise the held-out loss (0.5 nats, refused and
//! penalised each time), this run banned every honest volunteer within a few dozen rounds and
//! stalled for good. Updates are now judged against the spread of the updates before them: an
//! outlier is left out of its round at no cost, and only a repeated pattern costs reputation.

use std::time::Duration;

use canopy_protocol::{Invite, InviteTerms};
use canopy_tests::adversary::Adversary;
use canopy_tests::processes::{
    Coordinator, Volunteer, array, coordinator_cli, coordinator_json, free_port, history,
    node_peer_id, poll_until, small_project, str_of,
};

/// Rounds of the noisy run.
const ROUNDS: u64 = 200;
/// Honest volunteers.
const NODES: usize = 3;

#[test]
fn honest_volunteers_with_tiny_noisy_tasks_run_to_the_end_and_none_is_banned() {
    let _heavy = canopy_tests::harness::heavy_test();
    let tmp = tempfile::tempdir().expect("tmp");
    let rounds = ROUNDS.to_string();
    let config = small_project(
        &tmp.path().join("project"),
        free_port(),
        &[
            ("rounds", rounds.as_str()),
            ("inner_steps", "1"),
            ("batch_size", "1"),
            ("seq_len", "16"),
            ("tasks_per_round", "3"),
            ("min_updates", "3"),
            ("round_deadline_secs", "5"),
            // Over three times the default rate: tiny tasks then move the model noisily
            // enough that dozens of honest updates raise the held-out loss past 0.5 nats.
            ("lr", "1e-2"),
        ],
        // The default verification settings; only the scheduling is quick, so that 200
        // rounds take a few minutes.
        "[scheduling]\nmin_lease_secs = 3\nmax_lease_secs = 6\nheartbeat_secs = 1\n\
         idle_retry_ms = 100\n[store]\ncheckpoint_every = 0\n",
    );
    let mut coordinator = Coordinator::start(&config);
    let _nodes = Volunteer::start_many(tmp.path(), "noisy", NODES, &coordinator.addr);
    let finished = canopy_tests::processes::poll_until(
        Duration::from_secs(480),
        Duration::from_millis(200),
        || matches!(coordinator.child.try_wait(), Ok(Some(_))),
    );
    if !finished {
        let _ = coordinator.child.kill();
    }
    let status = coordinator.child.wait().expect("coordinator exit status");

    let h = history(&config);
    let closed = array(&h, "rounds")
        .iter()
        .filter(|r| !r["closed_ms"].is_null())
        .count() as u64;
    let ledger = coordinator_json("ledger", &config);
    let refusals: Vec<&str> = ledger
        .as_array()
        .expect("ledger")
        .iter()
        .filter(|e| e["accepted"] == false)
        .filter_map(|e| e["reason"].as_str())
        .collect();
    let outliers = refusals
        .iter()
        .filter(|r| r.contains("spreads above"))
        .count();
    eprintln!(
        "{closed} rounds closed; {} results refused, {outliers} of them as loss outliers",
        refusals.len()
    );
    // What the old fixed bound (0.5 nats, refused and penalised each time) would have made
    // of the same updates.
    let changes: Vec<f64> = array(&h, "results")
        .iter()
        .filter_map(|r| r["loss_change"].as_f64())
        .collect();
    let over_fixed_bound = changes.iter().filter(|&&c| c > 0.5).count();
    let largest = changes.iter().copied().reduce(f64::max).unwrap_or(f64::NAN);
    eprintln!(
        "{} updates measured; {over_fixed_bound} raised the held-out loss by more than 0.5 nats \
         (largest {largest:.3})",
        changes.len()
    );
    let status_json = coordinator_json("status", &config);
    let peers = array(&status_json, "peers");
    for p in peers {
        eprintln!(
            "{} reputation {} banned {}",
            str_of(p, "peer"),
            p["reputation"],
            p["banned"]
        );
    }
    assert!(
        finished && status.success(),
        "the coordinator did not finish: {status}"
    );
    assert_eq!(closed, ROUNDS, "every round closes");
    assert_eq!(peers.len(), NODES);
    for p in peers {
        assert_eq!(p["banned"], false, "an honest volunteer was banned: {p}");
        assert!(
            p["reputation"].as_i64().expect("reputation") > 0,
            "an honest volunteer lost reputation: {p}"
        );
    }
    // Noise may leave an update out now and then, never most of them.
    assert!(
        outliers as u64 <= ROUNDS / 10,
        "{outliers} outliers in {ROUNDS} rounds: {refusals:?}"
    );
}

/// Admission `allowlist`: a key the operator allowlisted joins and works; any other key is
/// told why it cannot join, stops, and leaves no trace in the project's state.
#[test]
fn under_the_allowlist_policy_only_allowlisted_keys_join() {
    let tmp = tempfile::tempdir().expect("tmp");
    let config = small_project(
        &tmp.path().join("project"),
        free_port(),
        &[
            ("rounds", "2"),
            ("tasks_per_round", "2"),
            ("min_updates", "2"),
        ],
        "[admission]\npolicy = \"allowlist\"\n",
    );
    let (member, stranger) = (tmp.path().join("member"), tmp.path().join("stranger"));
    let member_id = node_peer_id(&member);
    let stranger_id = node_peer_id(&stranger);
    let config_s = config.to_string_lossy().to_string();
    coordinator_cli(&[
        "allow",
        &member_id,
        "--tier",
        "volunteer",
        "--config",
        &config_s,
    ]);
    let mut coordinator = Coordinator::start(&config);
    let _member = Volunteer::start(&member, &coordinator.addr, &["--name", "member"]);
    let mut outsider = Volunteer::start(&stranger, &coordinator.addr, &["--name", "stranger"]);
    let stopped = poll_until(Duration::from_secs(120), Duration::from_millis(200), || {
        matches!(outsider.child.try_wait(), Ok(Some(_)))
    });
    assert!(stopped, "a key not on the allowlist stops");
    let exit = outsider.child.wait().expect("exit status");
    assert!(!exit.success(), "and says it failed: {exit}");
    let log = std::fs::read_to_string(stranger.with_extension("log")).expect("node log");
    assert!(
        log.contains("admits allowlisted nodes only") && log.contains(&stranger_id),
        "the node says why and names its key: {log}"
    );
    let status = coordinator.wait_exit(Duration::from_secs(300));
    assert!(
        status.success(),
        "the allowlisted node ran the project: {status}"
    );
    let peers = array(&coordinator_json("status", &config), "peers")
        .iter()
        .map(|p| str_of(p, "peer").to_string())
        .collect::<Vec<_>>();
    assert_eq!(peers, [member_id]);
    let ledger = coordinator_json("ledger", &config);
    assert!(
        ledger
            .as_array()
            .expect("ledger")
            .iter()
            .all(|e| e["peer"] != stranger_id.as_str())
    );
}

fn peer_record(config: &std::path::Path, id: &str) -> Option<serde_json::Value> {
    array(&coordinator_json("status", config), "peers")
        .iter()
        .find(|p| p["peer"] == id)
        .cloned()
}

/// Under the `invite` policy a node joins with a token the coordinator signed, and is
/// recorded under the organisation the token names (not the one it claims); nodes without a
/// token, with a token used up, forged by another key or altered are refused and leave no
/// trace; a revoked invitation stops the nodes it admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_invite_policy_only_invited_nodes_join_under_their_organisation() {
    let tmp = tempfile::tempdir().expect("tmp");
    let config = small_project(
        &tmp.path().join("project"),
        free_port(),
        &[
            ("rounds", "1000"),
            ("tasks_per_round", "1"),
            ("min_updates", "1"),
        ],
        "[admission]\npolicy = \"invite\"\n",
    );
    let config_s = config.to_string_lossy().to_string();
    let made = coordinator_cli(&[
        "invite",
        "new",
        "--org",
        "Institut Pasteur",
        "--uses",
        "1",
        "--json",
        "--config",
        &config_s,
    ]);
    let made: serde_json::Value = serde_json::from_str(&made).expect("invite JSON");
    let token = str_of(&made, "token").to_string();
    let invite_id = str_of(&made, "id").to_string();
    let mut coordinator = tokio::task::block_in_place(|| Coordinator::start(&config));

    // The invited node, claiming another organisation: the token's is recorded.
    let member = tmp.path().join("member");
    let member_id = tokio::task::block_in_place(|| node_peer_id(&member));
    let mut node = Volunteer::start(
        &member,
        &coordinator.addr,
        &[
            "--name",
            "member",
            "--org",
            "Claimed Org",
            "--invite",
            &token,
        ],
    );
    let joined = tokio::task::block_in_place(|| {
        poll_until(Duration::from_secs(120), Duration::from_millis(300), || {
            peer_record(&config, &member_id).is_some()
        })
    });
    assert!(joined, "the invited node joined");
    let record = peer_record(&config, &member_id).expect("member");
    assert_eq!(record["org"], "Institut Pasteur", "{record}");
    assert_eq!(record["tier"], "volunteer", "{record}");

    // Each of these is refused, with a reason, and recorded nowhere.
    let mut refused = Vec::new();
    for (name, invite, expect) in [
        ("no token", None, "admits invited nodes only"),
        (
            "a used-up token",
            Some(token.clone()),
            "admitted its 1 node(s) already",
        ),
        (
            "garbage",
            Some("canopy-invite-0102".to_string()),
            "not a Canopy invitation",
        ),
    ] {
        let stranger = Adversary::start(&tmp.path().join(name), &coordinator.addr).await;
        let ack = stranger.try_join(invite).await.expect("an answer");
        assert!(!ack.accepted, "{name}: {ack:?}");
        assert!(ack.message.contains(expect), "{name}: {}", ack.message);
        refused.push(stranger);
    }
    // A token with the right terms, signed by an attacker's own key.
    let original = Invite::from_token(&token).expect("token");
    let forger = Adversary::start(&tmp.path().join("forger"), &coordinator.addr).await;
    let forged = Invite::issue(
        forger.keys(),
        InviteTerms {
            max_uses: 100,
            ..original.terms.clone()
        },
    )
    .expect("issue")
    .to_token()
    .expect("token");
    let ack = forger.try_join(Some(forged)).await.expect("an answer");
    assert!(
        !ack.accepted && ack.message.contains("another coordinator"),
        "{ack:?}"
    );
    // The coordinator's token with its terms altered.
    let mut altered = original.clone();
    altered.terms.max_uses = 100;
    altered.terms.id[0] ^= 1;
    let ack = forger
        .try_join(Some(altered.to_token().expect("token")))
        .await
        .expect("an answer");
    assert!(
        !ack.accepted && ack.message.contains("signature"),
        "{ack:?}"
    );
    refused.push(forger);
    for stranger in &refused {
        let id = stranger.peer_id().to_string();
        assert!(
            tokio::task::block_in_place(|| peer_record(&config, &id)).is_none(),
            "a refused node left a record"
        );
    }

    // Revoked: the invited node gets no more work.
    let out = coordinator_cli(&["invite", "revoke", &invite_id, "--config", &config_s]);
    assert!(out.contains("1 node(s)"), "{out}");
    let record = peer_record(&config, &member_id).expect("member");
    assert_eq!(record["banned"], true, "{record}");
    let stopped = tokio::task::block_in_place(|| {
        poll_until(Duration::from_secs(120), Duration::from_millis(300), || {
            matches!(node.child.try_wait(), Ok(Some(_)))
        })
    });
    let log = std::fs::read_to_string(member.with_extension("log")).expect("node log");
    assert!(stopped, "the revoked node stops: {log}");
    coordinator.child.kill().expect("kill the coordinator");
}

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
use canopy_tests::adversary::{Adversary, Attack};
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
    let mut others: Vec<&str> = refusals
        .iter()
        .filter(|r| !r.contains("spreads above"))
        .map(|r| r.split(" (").next().unwrap_or(r))
        .collect();
    others.sort_unstable();
    others.dedup();
    eprintln!("other refusals: {others:?}");
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
    // Nor does it keep honest credit held for pulling against the rounds: what a noisy
    // update loses is given back once its sender's updates point with their rounds.
    let held = ledger
        .as_array()
        .expect("ledger")
        .iter()
        .filter(|e| e["verified"] == "held")
        .count();
    let released = ledger
        .as_array()
        .expect("ledger")
        .iter()
        .filter(|e| e["reason"].as_str().is_some_and(|r| r.contains("released")))
        .count();
    eprintln!("credit held at the end: {held}; held and released later: {released}");
    assert!(
        held as u64 <= ROUNDS / 20,
        "{held} honest credits still held after {ROUNDS} rounds"
    );
}

/// Admission `allowlist`: a key the operator allowlisted (from a file of peer ids) joins and
/// works; any other key is told why it cannot join, stops, and leaves no trace in the
/// project's state.
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
    // Enrolled from a file, as an institution enrols its machines (the second key is a
    // machine that never comes).
    let absent = canopy_protocol::Keypair::generate()
        .expect("keys")
        .peer_id();
    let list = tmp.path().join("cluster.txt");
    std::fs::write(
        &list,
        format!("# our cluster\n{member_id}  # rack 1\n\n{absent}\n"),
    )
    .expect("peer list");
    let out = coordinator_cli(&[
        "allow",
        "--file",
        &list.to_string_lossy(),
        "--tier",
        "volunteer",
        "--config",
        &config_s,
    ]);
    assert!(out.contains("2 nodes admitted"), "{out}");
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

/// A project in `tmp` with `admission` settings that runs until the test stops it (one task
/// a round).
fn open_ended_project(tmp: &std::path::Path, admission: &str) -> std::path::PathBuf {
    small_project(
        &tmp.join("project"),
        free_port(),
        &[
            ("rounds", "1000"),
            ("tasks_per_round", "1"),
            ("min_updates", "1"),
        ],
        admission,
    )
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
    let config = open_ended_project(tmp.path(), "[admission]\npolicy = \"invite\"\n");
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

/// Proof of work on join: a project that asks for it admits a real node, which finds the
/// work by itself, and refuses an identity that brings none or brings another identity's;
/// an identity that brings its own is admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_join_work_each_new_identity_proves_work_before_it_joins() {
    use canopy_protocol::join_work;
    const BITS: u8 = 16;
    let tmp = tempfile::tempdir().expect("tmp");
    let config = open_ended_project(
        tmp.path(),
        &format!("[admission]\njoin_work_bits = {BITS}\n"),
    );
    let mut coordinator = tokio::task::block_in_place(|| Coordinator::start(&config));
    let member = tmp.path().join("member");
    let member_id = tokio::task::block_in_place(|| node_peer_id(&member));
    let _node = Volunteer::start(&member, &coordinator.addr, &["--name", "member"]);
    let joined = tokio::task::block_in_place(|| {
        poll_until(Duration::from_secs(120), Duration::from_millis(300), || {
            peer_record(&config, &member_id).is_some()
        })
    });
    assert!(joined, "the node proved its work and joined");

    let stranger = Adversary::start(&tmp.path().join("stranger"), &coordinator.addr).await;
    let ack = stranger.try_join(None).await.expect("an answer");
    assert!(!ack.accepted, "{ack:?}");
    assert_eq!(ack.work_bits, BITS, "{ack:?}");
    assert!(ack.message.contains("proof of work"), "{}", ack.message);
    // Work found for another identity is no work for this one.
    let coordinator_id = stranger.coordinator();
    let member_peer: canopy_protocol::PeerId = member_id.parse().expect("peer id");
    let borrowed = join_work::solve(&coordinator_id, &member_peer, BITS).expect("work");
    if !join_work::meets(&coordinator_id, &stranger.peer_id(), borrowed, BITS) {
        let ack = stranger
            .try_join_with(None, Some(borrowed))
            .await
            .expect("an answer");
        assert!(!ack.accepted && ack.work_bits == BITS, "{ack:?}");
    }
    let id = stranger.peer_id().to_string();
    assert!(
        tokio::task::block_in_place(|| peer_record(&config, &id)).is_none(),
        "a refused identity left a record"
    );
    // Its own work admits it.
    let own = join_work::solve(&coordinator_id, &stranger.peer_id(), BITS).expect("work");
    let ack = stranger
        .try_join_with(None, Some(own))
        .await
        .expect("an answer");
    assert!(ack.accepted, "{ack:?}");
    stranger.shutdown().await;
    coordinator.child.kill().expect("kill the coordinator");
}

/// Training settings of the attack and its baseline: four tasks a round, three to close it.
const ATTACK_TRAINING: &[(&str, &str)] = &[
    ("rounds", "12"),
    ("inner_steps", "12"),
    ("tasks_per_round", "4"),
    ("min_updates", "3"),
];
/// Honest volunteers in each run.
const HONEST: usize = 3;
/// Where the attacker's identities connect from: the IPv6 loopback, to the coordinator
/// another network than the volunteers' `127.0.0.1` (as another home would be).
const ATTACKER_HOST: &str = "/ip6/::1";

/// Takes corpus runs and tampers with each until training starts; the coordinator's answers.
async fn tamper_all(sybil: &mut Adversary) -> Vec<canopy_tests::adversary::Outcome> {
    let mut outcomes = Vec::new();
    while let Some(o) = sybil.attack_corpus(Duration::from_secs(3)).await {
        outcomes.push(o);
    }
    outcomes
}

/// One attacker machine, several identities, beside honest volunteers: two identities tamper
/// with corpus chunks in the same way (so that, given both runs of a chunk, they would agree
/// and decide it), then two more send harmful updates (flipped, scaled, non-finite, for
/// another version, signed by another key) and claim a thousand times the work they did. No chunk is decided by the attacker, every tampered run is caught, no
/// identity pair runs the same chunk, the final held-out loss is within 5% of the same run
/// without the attacker, and the attacker is credited with nothing: not even a flipped
/// update of ordinary size in a round that agrees too little to leave it out, whose credit
/// is held while its sender's updates pull against their rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attacker_with_many_identities_decides_no_chunk_and_earns_nothing_by_cheating() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (sources, local, _, _) = tokio::task::block_in_place(|| {
        crate::corpus_swarm::sources_and_local_build(tmp.path(), 300)
    });
    let corpus = format!(
        "[corpus]\nsources = {:?}\nout = \"corpus-out\"\n",
        sources.to_string_lossy()
    );
    let project = |name: &str| {
        let port = free_port();
        let config = small_project(&tmp.path().join(name), port, ATTACK_TRAINING, &corpus);
        // The coordinator also listens on the IPv6 loopback, where the attacker connects.
        let text = std::fs::read_to_string(&config).expect("config");
        let v4 = format!("\"/ip4/127.0.0.1/tcp/{port}\"");
        assert!(text.contains(&v4), "{text}");
        let text = text.replace(&v4, &format!("{v4}, \"/ip6/::1/tcp/{port}\""));
        std::fs::write(&config, text).expect("config");
        (config, port)
    };
    // The coordinator's address on each loopback (it prints either first).
    let on = |coordinator: &Coordinator, host: &str, port: u16| {
        let peer = coordinator.addr.rsplit("/p2p/").next().expect("peer id");
        format!("{host}/tcp/{port}/p2p/{peer}")
    };

    // The same project without the attacker.
    let (baseline, port) = project("baseline");
    let baseline_loss = tokio::task::block_in_place(|| {
        let mut coordinator = Coordinator::start(&baseline);
        let addr = on(&coordinator, "/ip4/127.0.0.1", port);
        let _nodes = Volunteer::start_many(&tmp.path().join("baseline"), "honest", HONEST, &addr);
        assert!(coordinator.wait_exit(Duration::from_secs(900)).success());
        crate::byzantine::final_eval_loss(&baseline)
    });

    let (attacked, port) = project("attacked");
    let mut coordinator = tokio::task::block_in_place(|| Coordinator::start(&attacked));
    let honest_addr = on(&coordinator, "/ip4/127.0.0.1", port);
    let attacker_addr = on(&coordinator, ATTACKER_HOST, port);
    let nodes = Volunteer::start_many(tmp.path(), "honest", HONEST, &honest_addr);
    // The attacker arrives in a running project, once the volunteers are at work.
    let active = tokio::task::block_in_place(|| {
        poll_until(Duration::from_secs(120), Duration::from_millis(300), || {
            array(&coordinator_json("status", &attacked), "peers").len() >= HONEST
        })
    });
    assert!(active, "the volunteers joined");
    let mut tamperers = Vec::new();
    for i in 0..HONEST - 1 {
        let dir = tmp.path().join(format!("tamperer-{i}"));
        tamperers.push(Adversary::join_on(&dir, &attacker_addr, ATTACKER_HOST).await);
    }
    let tamperer_ids: Vec<String> = tamperers.iter().map(|t| t.peer_id().to_string()).collect();
    // Two more identities, for training, join now too (they ask for work only later).
    let mut trainers = Vec::new();
    for i in 0..2 {
        let dir = tmp.path().join(format!("trainer-{i}"));
        trainers.push(Adversary::join_on(&dir, &attacker_addr, ATTACKER_HOST).await);
    }
    let [a, b] = tamperers.as_mut_slice() else {
        panic!("two tamperers")
    };
    // Both ask at once, as colluding identities would, until training starts.
    let (from_a, from_b) = tokio::join!(tamper_all(a), tamper_all(b));
    eprintln!("tampered runs: {} and {}", from_a.len(), from_b.len());
    assert!(
        !from_a.is_empty() || !from_b.is_empty(),
        "the attacker got corpus runs"
    );
    tokio::task::block_in_place(|| {
        crate::corpus_swarm::wait_finished(&mut coordinator);
    });

    // Training: the fresh identities from the same machine.
    let script = [
        Attack::SignFlipped,
        Attack::InflatedClaim,
        Attack::Scaled(30.0),
        Attack::NonFinite,
        Attack::WrongVersion,
        Attack::WrongKey,
    ];
    let mut outcomes = Vec::new();
    for mut sybil in trainers {
        let id = sybil.peer_id().to_string();
        for attack in script {
            let status = tokio::task::block_in_place(|| coordinator_json("status", &attacked));
            if crate::byzantine::peer(&status, &id)["banned"] == true {
                break;
            }
            match sybil.attack(attack, Duration::from_secs(120)).await {
                Some(o) => outcomes.push((id.clone(), o)),
                None => break,
            }
        }
        sybil.shutdown().await;
    }
    for t in tamperers {
        t.shutdown().await;
    }
    tokio::task::block_in_place(|| {
        assert!(coordinator.wait_exit(Duration::from_secs(900)).success());
    });
    drop(nodes);
    eprintln!("training attacks: {outcomes:#?}");

    // No chunk decided by the attacker: the outputs are the local build's.
    let built = canopy_tests::processes::dir_files(&tmp.path().join("attacked").join("corpus-out"));
    let expected = canopy_tests::processes::dir_files(&local);
    let differ: Vec<&String> = expected
        .iter()
        .filter(|(name, bytes)| built.get(*name) != Some(*bytes))
        .map(|(name, _)| name)
        .chain(built.keys().filter(|name| !expected.contains_key(*name)))
        .collect();
    if !differ.is_empty() {
        let kept = tmp.keep();
        panic!(
            "the corpus differs from the local build in {differ:?} (kept {})",
            kept.display()
        );
    }
    let ledger = coordinator_json("ledger", &attacked);
    let entries = ledger.as_array().expect("ledger");
    let of = |id: &str| {
        entries
            .iter()
            .filter(|e| e["peer"] == id)
            .collect::<Vec<_>>()
    };
    // (A run's first answer only says it arrived; its verdict, in the ledger, follows.)
    let mut tampered: Vec<Vec<String>> = Vec::new();
    for id in &tamperer_ids {
        let corpus: Vec<_> = of(id)
            .into_iter()
            .filter(|e| e["kind"] == "corpus")
            .collect();
        for e in &corpus {
            assert_eq!(e["accepted"], false, "{e}");
            assert_eq!(e["verified"], "failed", "every tampered run is caught: {e}");
        }
        tampered.push(
            corpus
                .iter()
                .map(|e| str_of(e, "result_hash").to_string())
                .collect(),
        );
    }
    // A chunk's tampered result is the same whoever computes it: two identities that ran the
    // same chunk would share one.
    for (i, x) in tampered.iter().enumerate() {
        for y in &tampered[i + 1..] {
            assert!(
                x.iter().all(|h| !y.contains(h)),
                "two identities of one network ran the same chunk"
            );
        }
    }

    // Credit: every attack is refused on arrival and earns nothing, but for the flipped
    // update of ordinary size, which passes the arrival checks. Where its round's updates
    // agree, it is left out (and uncredited) when the round closes; where they agree too
    // little to tell it from noise (small batches), it stays in the aggregate (the robust
    // combine and the loss below show that it did no harm) but its credit is held, and an
    // identity whose updates only pull against their rounds never gets it.
    for (_, o) in &outcomes {
        if o.attack != Attack::SignFlipped {
            assert!(!o.accepted, "{o:?} was accepted");
        }
    }
    let flipped: Vec<&String> = outcomes
        .iter()
        .filter(|(_, o)| o.attack == Attack::SignFlipped && o.accepted)
        .map(|(id, _)| id)
        .collect();
    let attackers: Vec<&String> = tamperer_ids
        .iter()
        .chain(outcomes.iter().map(|(id, _)| id))
        .collect();
    for id in attackers {
        let credited: Vec<_> = of(id)
            .into_iter()
            .filter(|e| e["accepted"] == true)
            .collect();
        assert!(
            credited.is_empty(),
            "the attacker was credited: {credited:?}"
        );
    }
    let flips: Vec<String> = flipped
        .iter()
        .flat_map(|id| of(id))
        .filter(|e| e["kind"] == "train")
        .map(|e| format!("{} ({})", e["verified"], e["reason"]))
        .collect();
    eprintln!(
        "flipped updates passing the arrival checks: {}; their ledger entries: {flips:?}",
        flipped.len()
    );
    let honest_credit = entries.iter().filter(|e| e["accepted"] == true).count();
    assert!(honest_credit > 0, "the honest volunteers were credited");
    let attacked_loss = crate::byzantine::final_eval_loss(&attacked);
    // What each run's rounds took in, and what honest work was left out, for the record.
    for (name, config) in [("baseline", &baseline), ("attacked", &attacked)] {
        let status = coordinator_json("status", config);
        let rounds: Vec<String> = array(&status, "rounds")
            .iter()
            .map(|r| format!("{}:{}/{}", r["eval_loss"], r["accepted"], r["rejected"]))
            .collect();
        eprintln!("{name} rounds (held-out loss:accepted/rejected): {rounds:?}");
    }
    let honest_left_out: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| e["kind"] == "train" && e["accepted"] == false)
        .filter(|e| !outcomes.iter().any(|(id, _)| e["peer"] == id.as_str()))
        .collect();
    eprintln!("honest training results not credited: {honest_left_out:?}");
    eprintln!("final held-out loss: baseline {baseline_loss:.4}, attacked {attacked_loss:.4}");
    assert!(
        attacked_loss <= baseline_loss * 1.05,
        "the attack cost more than 5%: {attacked_loss:.4} against {baseline_loss:.4}"
    );
}

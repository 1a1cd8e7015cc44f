//! The core part: the coordinator's decisions for many simulated peers in this process, with
//! no network.

use std::time::{Duration, Instant};

use canopy_benches::Latency;
use canopy_coordinator::config::{Config, Preset};
use canopy_coordinator::project::{Project, decode_spec, now_ms};
use canopy_coordinator::scheduler;
use canopy_coordinator::service::{Answered, Caller, answer_peer, datacenter_active};
use canopy_coordinator::state::{
    LeaseStatus, LedgerClaim, LedgerVerdict, ResultRecord, ResultStatus, TaskKind, TaskStatus,
};
use canopy_node::objects;
use canopy_protocol::messages::{LeaseRenew, LeaseRequest, TaskId};
use canopy_protocol::{Keypair, Message};
use serde_json::{Value, json};

use crate::{join_message, latency_json, ms, setting, unique_update, update_template};

pub(crate) fn core_config(tasks: u32) -> Config {
    let mut config = Config::default();
    config.project.name = "coordinator-load".into();
    config.model.preset = Preset::Tiny;
    config.data.generated_bytes = 300_000;
    config.data.shard_bytes = 32_768;
    let t = &mut config.training;
    t.rounds = 100_000;
    t.inner_steps = 1;
    t.batch_size = 1;
    t.seq_len = 16;
    t.tasks_per_round = tasks;
    t.min_updates = tasks;
    t.compression = canopy_coordinator::config::Compression::TopK;
    t.topk_density = 0.001;
    config.verification.rerun_fraction = 0.0;
    config.dashboard.listen = None;
    config
}

/// Time spent in each step of a lease request, in ms.
#[derive(Default)]
pub(crate) struct LeaseSpans {
    pub(crate) touch: Vec<f64>,
    pub(crate) reads: Vec<f64>,
    pub(crate) peers_scan: Vec<f64>,
    pub(crate) grant_tx: Vec<f64>,
    /// The baseline, on every [`BASELINE_EVERY`]th request of the same run: what a lease
    /// request did before it used indexes and noted contacts at most every 10 s (a synced
    /// write noting the contact, a load of every peer, a load of every open task).
    pub(crate) old_touch: Vec<f64>,
    pub(crate) old_peers_scan: Vec<f64>,
    pub(crate) old_open_tasks: Vec<f64>,
}

/// How often the core part also times the work a lease request did before (see
/// [`LeaseSpans`]), so that both are measured in one run.
pub(crate) const BASELINE_EVERY: usize = 20;

pub(crate) fn core_part() -> (Value, Vec<String>) {
    let peers: usize = setting("CORE_PEERS", 10_000usize).max(1);
    let tasks: u32 = setting("CORE_TASKS", peers as u32).max(1);
    let phase_budget = Duration::from_secs(setting("CORE_PHASE_SECS", 60));
    println!(
        "coordinator_load core: {peers} peers, {tasks} tasks, phases of at most {} s",
        phase_budget.as_secs()
    );
    // `COORDINATOR_LOAD_CORE_DIR=/dev/shm` takes the disk (and fsync) out of the figures.
    let parent: std::path::PathBuf = setting("CORE_DIR", std::env::temp_dir());
    let dir = tempfile::tempdir_in(&parent).expect("temp dir");
    let config = core_config(tasks);
    let opened = Instant::now();
    let project = Project::open(dir.path(), config).expect("project");
    println!(
        "  project opened with {tasks} tasks in {:.1} s",
        opened.elapsed().as_secs_f64()
    );
    let round = project.current().round;
    let template = update_template(&project.config);
    let keys: Vec<Keypair> = (0..peers)
        .map(|_| Keypair::generate().expect("key"))
        .collect();
    let names: Vec<String> = keys.iter().map(|k| k.peer_id().to_string()).collect();

    let mut total_ops = 0usize;
    let mut total_time = Duration::ZERO;
    let mut timed = |d: Duration| {
        total_ops += 1;
        total_time += d;
        ms(d)
    };

    // Joins.
    let mut join = Vec::with_capacity(peers);
    let issuer = project.keys.public();
    let phase = Instant::now();
    for (i, key) in names.iter().enumerate() {
        if phase.elapsed() > phase_budget {
            break;
        }
        let message = Message::Join(join_message(&format!("sim-{i}")));
        let t = Instant::now();
        let answered = {
            let mut state = project.state();
            answer_peer(
                &mut state,
                &project.config,
                &issuer,
                Caller { key, network: None },
                round,
                now_ms(),
                message,
            )
            .expect("join")
        };
        join.push(timed(t.elapsed()));
        assert!(matches!(answered, Answered::Reply(Message::JoinAck(_), _)));
    }
    let joined = join.len();
    println!("  {joined} joins in {:.1} s", phase.elapsed().as_secs_f64());

    // Leases: the service's LeaseRequest arm.
    let mut grant = Vec::with_capacity(joined);
    let mut spans = LeaseSpans::default();
    let mut grants: Vec<(usize, scheduler::Granted)> = Vec::with_capacity(joined);
    let phase = Instant::now();
    for (i, key) in names.iter().enumerate().take(joined) {
        if phase.elapsed() > phase_budget {
            break;
        }
        let t = Instant::now();
        let now = now_ms();
        let mut state = project.state();
        let s0 = Instant::now();
        let answered = answer_peer(
            &mut state,
            &project.config,
            &issuer,
            Caller { key, network: None },
            round,
            now,
            Message::LeaseRequest(LeaseRequest { slots: 1 }),
        )
        .expect("lease request");
        assert!(matches!(answered, Answered::Other(_)));
        let s1 = Instant::now();
        let p = state.read().peer(key).expect("peer").expect("joined");
        let paused = state.read().paused().expect("paused");
        assert!(!paused);
        let s2 = Instant::now();
        let active = datacenter_active(&state.read(), now).expect("datacenter check");
        let s3 = Instant::now();
        let granted = state
            .transaction(|tx| {
                scheduler::grant(tx, &project.config.scheduling, &p, round, now, active)
            })
            .expect("grant");
        let s4 = Instant::now();
        drop(state);
        let g = granted.expect("an open task for every peer");
        let _spec = decode_spec(&g.task.spec).expect("spec");
        grant.push(timed(t.elapsed()));
        spans.touch.push(ms(s1 - s0));
        spans.reads.push(ms(s2 - s1));
        spans.peers_scan.push(ms(s3 - s2));
        spans.grant_tx.push(ms(s4 - s3));
        if i % BASELINE_EVERY == 0 {
            let mut state = project.state();
            let b0 = Instant::now();
            state
                .transaction(|tx| tx.touch_peer(key, now))
                .expect("touch");
            let b1 = Instant::now();
            let all = state.read().peers().expect("peers");
            let b2 = Instant::now();
            let open = state
                .read()
                .tasks(Some(round), TaskStatus::Open)
                .expect("tasks");
            let b3 = Instant::now();
            assert!(!all.is_empty() && open.len() < tasks as usize);
            spans.old_touch.push(ms(b1 - b0));
            spans.old_peers_scan.push(ms(b2 - b1));
            spans.old_open_tasks.push(ms(b3 - b2));
        }
        grants.push((i, g));
    }
    println!(
        "  {} leases in {:.1} s",
        grants.len(),
        phase.elapsed().as_secs_f64()
    );

    // Renewals.
    let mut renew = Vec::with_capacity(grants.len());
    let phase = Instant::now();
    for (i, g) in &grants {
        if phase.elapsed() > phase_budget {
            break;
        }
        let message = Message::LeaseRenew(LeaseRenew {
            lease: canopy_protocol::messages::LeaseId(g.lease),
            progress_permille: 500,
        });
        let t = Instant::now();
        let answered = {
            let mut state = project.state();
            answer_peer(
                &mut state,
                &project.config,
                &issuer,
                Caller {
                    key: &names[*i],
                    network: None,
                },
                round,
                now_ms(),
                message,
            )
            .expect("renew")
        };
        renew.push(timed(t.elapsed()));
        assert!(matches!(
            answered,
            Answered::Reply(Message::LeaseRenewed(_), _)
        ));
    }
    println!(
        "  {} renewals in {:.1} s",
        renew.len(),
        phase.elapsed().as_secs_f64()
    );

    // Results: the service's state reads for a result, then the commit of an accepted one.
    let mut result = Vec::with_capacity(grants.len());
    let phase = Instant::now();
    let rep = project.config.reputation.clone();
    for (n, (i, g)) in grants.iter().enumerate() {
        if phase.elapsed() > phase_budget {
            break;
        }
        let key = &names[*i];
        let (signed, _) = objects::update_object(
            &keys[*i],
            &unique_update(&template, n as u64 + 1),
            TaskId(g.task.id),
            round,
        )
        .expect("update");
        let root = signed.manifest().root;
        let compute_ms = 1000;
        let t = Instant::now();
        let arrived = now_ms();
        {
            let state = project.state();
            let r = state.read();
            let lease = r.lease(g.lease).expect("lease").expect("a lease");
            let task = r.task(g.task.id).expect("task").expect("a task");
            let sender = r.peer(key).expect("peer").expect("a peer");
            assert!(lease.peer == *key && task.status == TaskStatus::Leased && !sender.banned);
            assert!(!r.update_seen(&root).expect("seen"));
        }
        let record = ResultRecord {
            lease: g.lease,
            task: g.task.id,
            peer: key.clone(),
            round,
            update_root: Some(root),
            norm: Some(1.0),
            train_loss: Some(3.0),
            tokens: g.task.tokens,
            status: ResultStatus::Accepted,
            reason: None,
            received_ms: now_ms(),
            weight: 1.0,
            aggregated_in: None,
            loss_change: None,
        };
        let now = now_ms();
        let tps = record.tokens as f64 / (compute_ms as f64 / 1000.0);
        project
            .state()
            .transaction(|tx| {
                tx.put_manifest(&signed, now)?;
                tx.insert_result(&record)?;
                tx.ledger_entry(
                    &LedgerClaim {
                        peer: key,
                        round,
                        task: record.task,
                        lease: record.lease,
                        kind: TaskKind::Train,
                        compute_ms,
                        accepted: true,
                        verified: LedgerVerdict::Unchecked,
                        result_hash: Some(&root),
                        reason: None,
                        arrived_ms: arrived,
                    },
                    now,
                )?;
                tx.set_lease_status(record.lease, LeaseStatus::Done)?;
                tx.set_task_status(record.task, TaskStatus::Done)?;
                tx.adjust_reputation(key, rep.accepted, rep.ban_below)?;
                tx.record_throughput(key, tps)?;
                // The service asks whether the sender is a volunteer before sampling re-runs.
                let _volunteer = tx.peer(key)?;
                Ok(())
            })
            .expect("commit");
        result.push(timed(t.elapsed()));
    }
    println!(
        "  {} results committed in {:.1} s",
        result.len(),
        phase.elapsed().as_secs_f64()
    );

    // What judging costs besides the state: decoding and screening an update, and the
    // held-out loss with it applied (the coordinator runs four at once, on blocking threads).
    let len = project.model.num_params();
    let mut decode = Vec::new();
    let mut heldout = Vec::new();
    for n in 0..=setting("CORE_EVALS", 20u64) {
        let (_, bytes) = objects::update_object(
            &keys[0],
            &unique_update(&template, u64::MAX - n),
            TaskId(0),
            round,
        )
        .expect("update");
        let t = Instant::now();
        let values = objects::update_values(&bytes, len).expect("decode");
        canopy_coordinator::aggregate::check_update(&values, len).expect("a sound update");
        let t1 = Instant::now();
        let (before, after) = project
            .update_loss_change(round, &values)
            .expect("held-out loss");
        assert!(f64::from(after - before) < project.config.verification.max_loss_increase);
        // The first computes the version's own loss once as well.
        if n > 0 {
            decode.push(ms(t1 - t));
            heldout.push(ms(t1.elapsed()));
        }
    }
    let ops_per_sec = total_ops as f64 / total_time.as_secs_f64().max(1e-9);
    let j = Latency::of(&mut join);
    let g = Latency::of(&mut grant);
    let r = Latency::of(&mut renew);
    let c = Latency::of(&mut result);
    let span = |v: &mut Vec<f64>| latency_json(&Latency::of(v));
    let report = json!({
        "peers": peers,
        "tasks": tasks,
        "joined": joined,
        "join_ms": latency_json(&j),
        "grant_ms": latency_json(&g),
        "renew_ms": latency_json(&r),
        "result_ms": latency_json(&c),
        "grant_spans_ms": {
            "answer_peer_note_contact": span(&mut spans.touch),
            "peer_and_pause_reads": span(&mut spans.reads),
            "datacenter_active": span(&mut spans.peers_scan),
            "grant_transaction": span(&mut spans.grant_tx),
        },
        "grant_baseline_ms": {
            "every": BASELINE_EVERY,
            "touch_peer_synced": span(&mut spans.old_touch),
            "load_every_peer": span(&mut spans.old_peers_scan),
            "load_every_open_task": span(&mut spans.old_open_tasks),
        },
        "judge_decode_ms": latency_json(&Latency::of(&mut decode)),
        "judge_heldout_ms": latency_json(&Latency::of(&mut heldout)),
        "db_dir": parent.display().to_string(),
        "ops": total_ops,
        "ops_per_sec": (ops_per_sec * 10.0).round() / 10.0,
    });
    let worst = [j.p99, g.p99, r.p99, c.p99]
        .into_iter()
        .fold(0.0f64, f64::max);
    let lines = vec![
        format!(
            "core: {peers} peers, {tasks} tasks: join p50 {:.2} p99 {:.2} ms (n {}), grant p50 {:.2} p99 {:.2} (n {}), renew p50 {:.2} p99 {:.2} (n {}), result p50 {:.2} p99 {:.2} (n {}); {ops_per_sec:.0} ops/s",
            j.p50,
            j.p99,
            j.count,
            g.p50,
            g.p99,
            g.count,
            r.p50,
            r.p99,
            r.count,
            c.p50,
            c.p99,
            c.count
        ),
        format!(
            "  goal (p99 < 5 ms for every operation): {}",
            if worst < 5.0 { "met" } else { "missed" }
        ),
    ];
    drop(project);
    (report, lines)
}

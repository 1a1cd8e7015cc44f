//! The network part: the real `canopy-coordinator run` as a child process under the
//! simulated volunteers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use canopy_benches::{Latency, proc_stats};
use canopy_coordinator::config::{Config, Preset};
use libp2p::Multiaddr;
use serde_json::{Value, json};

use crate::peer::{NetSettings, PeerStats, Shared, volunteer};
use crate::{latency_json, update_template};

pub(crate) fn network_part(s: &NetSettings) -> (Value, Vec<String>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = canopy_tests::processes::free_port();
    let tasks = s.tasks_per_round.to_string();
    let training = [
        ("rounds", "100000"),
        ("inner_steps", "1"),
        ("batch_size", "1"),
        ("seq_len", "16"),
        ("tasks_per_round", tasks.as_str()),
        ("min_updates", tasks.as_str()),
        ("compression", "\"topk\""),
        ("topk_density", "0.001"),
    ];
    let extra = format!(
        "[verification]\nrerun_fraction = 0.0\n[scheduling]\nidle_retry_ms = {}\n\
         [admission]\nnew_nodes_per_network_hour = 0\n",
        s.idle_retry_ms
    );
    let config_path = canopy_tests::processes::small_project(
        &dir.path().join("project"),
        port,
        &training,
        &extra,
    );
    let config = Config::load(&config_path).expect("the bench's project config");
    assert_eq!(config.model.preset, Preset::Tiny);
    let template = update_template(&config);
    println!(
        "coordinator_load network: {} peers, {} tasks per round, tasks of ~{} ms, {} s measured; starting the coordinator (builds it if needed)",
        s.peers, s.tasks_per_round, s.task_ms, s.secs
    );
    let mut coordinator = canopy_tests::processes::Coordinator::start(&config_path);
    let pid = coordinator.child.id();
    let addr: Multiaddr = coordinator.addr.parse().expect("coordinator address");
    let coordinator_peer = match addr.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(p)) => p,
        _ => panic!("the coordinator's address names no peer: {addr}"),
    };
    std::thread::sleep(Duration::from_secs(2));
    let rss_base = proc_stats::status_bytes(pid, "VmRSS").unwrap_or(0);
    let me = std::process::id();
    let sim_rss_base = proc_stats::status_bytes(me, "VmRSS").unwrap_or(0);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (start_tx, start_rx) = tokio::sync::watch::channel(None);
    let shared = Arc::new(Shared {
        template,
        unique: AtomicU64::new(1),
        joined: AtomicUsize::new(0),
        start: start_rx,
        task_ms: s.task_ms,
        retry_busy_renew: s.retry_busy_renew,
        timeout: s.timeout,
    });
    let ramp_started = Instant::now();
    let handles: Vec<_> = runtime.block_on(async {
        let mut handles = Vec::with_capacity(s.peers);
        for index in 0..s.peers {
            // Paced: `ramp` new connections per second.
            let due = ramp_started + Duration::from_secs_f64(index as f64 / s.ramp as f64);
            tokio::time::sleep_until(due.into()).await;
            handles.push(tokio::spawn(volunteer(
                index,
                addr.clone(),
                coordinator_peer,
                shared.clone(),
            )));
        }
        handles
    });
    // Every peer joined (or the wait ran out).
    let join_deadline = Instant::now() + Duration::from_secs(180);
    while shared.joined.load(Ordering::Relaxed) < s.peers && Instant::now() < join_deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let joined = shared.joined.load(Ordering::Relaxed);
    let join_phase_s = ramp_started.elapsed().as_secs_f64();
    // Let the coordinator settle (the join events' printing, allocator) before reading.
    std::thread::sleep(Duration::from_secs(2));
    let rss_joined = proc_stats::status_bytes(pid, "VmRSS").unwrap_or(0);
    let sim_rss_joined = proc_stats::status_bytes(me, "VmRSS").unwrap_or(0);
    println!(
        "  {joined} of {} peers joined in {join_phase_s:.1} s; coordinator RSS {:.1} -> {:.1} MiB",
        s.peers,
        rss_base as f64 / (1 << 20) as f64,
        rss_joined as f64 / (1 << 20) as f64
    );

    // The measured phase.
    let rounds_before = coordinator.events_named("round").len();
    let cpu_before = proc_stats::cpu_ms(pid).unwrap_or(0);
    // `canopy-coordinator run` drives the service loop (every request but results, which are
    // judged on spawned tasks) with `block_on`, on the process's main thread.
    let loop_cpu_before = proc_stats::thread_cpu_ms(pid, pid).unwrap_or(0);
    let load_before = proc_stats::load_average();
    let begin = Instant::now() + Duration::from_millis(200);
    let end = begin + Duration::from_secs(s.secs);
    let _ = start_tx.send(Some((begin, end)));
    let mut progress = Instant::now();
    let mut closes: Vec<f64> = Vec::new();
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
        let closed = coordinator.events_named("round").len() - rounds_before;
        while closes.len() < closed {
            closes.push((begin.elapsed().as_secs_f64() * 10.0).round() / 10.0);
        }
        if progress.elapsed() >= Duration::from_secs(15) {
            progress = Instant::now();
            println!(
                "  {:>4.0} s: {} rounds closed, coordinator RSS {:.1} MiB",
                (Instant::now() - begin).as_secs_f64(),
                coordinator.events_named("round").len() - rounds_before,
                proc_stats::status_bytes(pid, "VmRSS").unwrap_or(0) as f64 / (1 << 20) as f64
            );
        }
    }
    let cpu_at_end = proc_stats::cpu_ms(pid).unwrap_or(0);
    let loop_cpu_ms = proc_stats::thread_cpu_ms(pid, pid)
        .unwrap_or(0)
        .saturating_sub(loop_cpu_before);
    let rounds_closed = coordinator.events_named("round").len() - rounds_before;
    let load_after = proc_stats::load_average();
    // Requests still in flight finish (answered or timed out) before the figures are taken.
    let stats: Vec<PeerStats> = runtime.block_on(async {
        let mut all = Vec::with_capacity(handles.len());
        for h in handles {
            if let Ok(s) = h.await {
                all.push(s);
            }
        }
        all
    });
    let drained = Instant::now() - end;
    let cpu_after = proc_stats::cpu_ms(pid).unwrap_or(0);
    let rss_end = proc_stats::status_bytes(pid, "VmRSS").unwrap_or(0);
    let rss_peak = proc_stats::status_bytes(pid, "VmHWM").unwrap_or(0);
    drop(runtime);
    if let Ok(Some(status)) = coordinator.child.try_wait() {
        println!("  warning: the coordinator exited during the run: {status}");
    }
    drop(coordinator);

    let mut all = PeerStats::default();
    let (mut connected, mut still_connected) = (0, 0);
    for p in stats {
        connected += usize::from(p.connected);
        still_connected += usize::from(p.still_connected);
        all.disconnects += p.disconnects;
        all.join.extend(p.join);
        all.grant.extend(p.grant);
        all.nowork.extend(p.nowork);
        all.renew.extend(p.renew);
        all.result.extend(p.result);
        all.release.extend(p.release);
        all.answered += p.answered;
        for (k, v) in p.lost {
            *all.lost.entry(k).or_default() += v;
        }
        for (k, v) in p.nowork_reasons {
            *all.nowork_reasons.entry(k).or_default() += v;
        }
        for (k, v) in p.refused {
            *all.refused.entry(k).or_default() += v;
        }
        all.result_busy += p.result_busy;
        all.result_given_up += p.result_given_up;
        all.judge_queue.extend(p.judge_queue);
        all.judge_rest.extend(p.judge_rest);
        all.accepted += p.accepted;
        all.renew_refused += p.renew_refused;
        all.renew_busy_retried += p.renew_busy_retried;
        all.unexpected += p.unexpected;
        all.chunks_served += p.chunks_served;
        all.manifests_served += p.manifests_served;
    }
    let lost: u64 = all.lost.values().sum();
    let grant = Latency::of(&mut all.grant);
    let renew = Latency::of(&mut all.renew);
    let result = Latency::of(&mut all.result);
    let nowork = Latency::of(&mut all.nowork);
    let join = Latency::of(&mut all.join);
    let release = Latency::of(&mut all.release);
    let judge_queue = Latency::of(&mut all.judge_queue);
    let judge_rest = Latency::of(&mut all.judge_rest);
    let cpu_ms = cpu_at_end.saturating_sub(cpu_before);
    let rounds_per_min = rounds_closed as f64 / (s.secs as f64 / 60.0);
    let rss_per_peer = rss_joined.saturating_sub(rss_base) as f64 / joined.max(1) as f64;
    let sim_per_peer = sim_rss_joined.saturating_sub(sim_rss_base) as f64 / connected.max(1) as f64;
    let cpu_per_request = cpu_ms as f64 / all.answered.max(1) as f64;
    let requests_per_sec = all.answered as f64 / s.secs as f64;
    let refused: u64 = all.refused.values().sum();

    let report = json!({
        "peers": s.peers,
        "connected": connected,
        "joined": joined,
        "still_connected": still_connected,
        "disconnects": all.disconnects,
        "secs": s.secs,
        "task_ms": s.task_ms,
        "tasks_per_round": s.tasks_per_round,
        "join_phase_s": (join_phase_s * 10.0).round() / 10.0,
        "join_ms": latency_json(&join),
        "grant_ms": latency_json(&grant),
        "nowork_ms": latency_json(&nowork),
        "renew_ms": latency_json(&renew),
        "result_ms": latency_json(&result),
        "release_ms": latency_json(&release),
        "lost": lost,
        "lost_by_request": all.lost,
        "requests_answered": all.answered,
        "requests_per_sec": (requests_per_sec * 10.0).round() / 10.0,
        "nowork_reasons": all.nowork_reasons,
        "results_accepted": all.accepted,
        "results_refused": refused,
        "refusals": all.refused,
        "result_busy": all.result_busy,
        "result_given_up": all.result_given_up,
        "results_per_sec": (all.accepted as f64 / s.secs as f64 * 100.0).round() / 100.0,
        "judge_queue_ms": latency_json(&judge_queue),
        "judge_fetch_to_ack_ms": latency_json(&judge_rest),
        "round_closed_at_s": closes,
        "renew_refused": all.renew_refused,
        "renew_busy_retried": all.renew_busy_retried,
        "idle_retry_ms": s.idle_retry_ms,
        "retry_busy_renew": s.retry_busy_renew,
        "unexpected_answers": all.unexpected,
        "chunks_served": all.chunks_served,
        "rounds_closed": rounds_closed,
        "rounds_per_min": (rounds_per_min * 100.0).round() / 100.0,
        "rss_base_bytes": rss_base,
        "rss_joined_bytes": rss_joined,
        "rss_bytes_per_peer": rss_per_peer.round(),
        "rss_end_bytes": rss_end,
        "rss_peak_bytes": rss_peak,
        "cpu_ms": cpu_ms,
        "cpu_ms_after_drain": cpu_after.saturating_sub(cpu_before),
        "cpu_ms_service_loop_thread": loop_cpu_ms,
        "cpu_ms_per_request": (cpu_per_request * 1000.0).round() / 1000.0,
        "drain_s": (drained.as_secs_f64() * 10.0).round() / 10.0,
        "sim_rss_bytes_per_peer": sim_per_peer.round(),
        "load_avg_1m": [load_before, load_after],
    });
    let lines = vec![
        format!(
            "network: {connected}/{} peers connected, {joined} joined, {still_connected} still connected at the end; {} requests answered in {} s ({requests_per_sec:.0}/s), {lost} lost",
            s.peers, all.answered, s.secs
        ),
        format!(
            "  grant p50 {:.1} ms p99 {:.1} ms (n {}), renew p50 {:.1} p99 {:.1} (n {}), result p50 {:.1} p99 {:.1} (n {}), nowork p50 {:.1} p99 {:.1} (n {}), join p50 {:.1} p99 {:.1}",
            grant.p50,
            grant.p99,
            grant.count,
            renew.p50,
            renew.p99,
            renew.count,
            result.p50,
            result.p99,
            result.count,
            nowork.p50,
            nowork.p99,
            nowork.count,
            join.p50,
            join.p99
        ),
        format!(
            "  results accepted {} ({:.1}/s) refused {refused} busy {} given up {}; judging: queue p50 {:.0} ms, fetch to ack p50 {:.0} ms p99 {:.0} ms; {rounds_closed} rounds closed ({rounds_per_min:.2}/min) at {closes:?} s",
            all.accepted,
            all.accepted as f64 / s.secs as f64,
            all.result_busy,
            all.result_given_up,
            judge_queue.p50,
            judge_rest.p50,
            judge_rest.p99
        ),
        format!(
            "  coordinator RSS {:.1} KiB per peer (peak {:.0} MiB), CPU {:.2} ms per request; simulated peers {:.1} KiB each",
            rss_per_peer / 1024.0,
            rss_peak as f64 / (1 << 20) as f64,
            cpu_per_request,
            sim_per_peer / 1024.0
        ),
        format!(
            "  goal (p99 grant < 50 ms, none lost): {}",
            if grant.p99 < 50.0 && lost == 0 && grant.count > 0 {
                "met"
            } else {
                "missed"
            }
        ),
    ];
    (report, lines)
}

//! Soak: a thousand rounds with churn, and nothing growing without bound. A coordinator process
//! and four volunteer processes run 1,000 rounds of a deliberately tiny task (one inner step of
//! one sequence of 16 tokens, two tasks a round); at moments a seeded RNG picks, a volunteer is
//! killed with SIGKILL and restarted on the same data directory a little later.
//!
//! Every 25 rounds the test samples, for the coordinator and each node: resident memory
//! (`VmRSS`), open file descriptors, chunk-store bytes and provider records (the nodes' status
//! files, the coordinator's `/metrics`), and the size of the coordinator's project directory.
//! It prints the samples as a table and one JSON summary line (run with `--nocapture` to see
//! them when it passes), and checks that every round closed, that every accepted update was
//! aggregated, that restarted volunteers work again, and that the figures stay within fixed
//! bounds: the smallest figure of the last eight samples may exceed the smallest of the eight
//! from round 100 on (the steady state before any restart) by a fixed slack only: about one
//! model for stores, a few for records and descriptors, half again plus 16 MiB for memory, and
//! a few KiB a round for the coordinator's database.
//!
//! `CANOPY_SOAK_SEED=<seed>` replays a churn schedule. The test first waits for any other
//! heavy test of the suite to finish (`harness::heavy_test`): its time limit is for two cores.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use canopy_tests::http::{get, metric, parse_metrics};
use canopy_tests::processes::{
    Coordinator, ProcStats, Volunteer, array, coordinator_json, disk_usage, free_port, history,
    node_peer_id, poll_until, proc_stats, seed_from_env, set_network_key, signal, small_project,
    str_of, u64_of,
};
use canopy_tests::report::{log_tail, round_timing};
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The rounds the bounds are checked over.
const ROUNDS: u64 = 1000;
/// Rounds the project runs past [`ROUNDS`], so that the coordinator is still running when the
/// last sample is taken (it exits once its last round closes).
const TAIL: u64 = 10;
/// The volunteers.
const NODES: usize = 4;
/// Rounds between samples.
const SAMPLE_EVERY: u64 = 25;
/// The first sample, before the steady state.
const FIRST_SAMPLE: u64 = 10;
/// Where the steady state starts: by then every kind of object has been made, fetched and
/// released many times over.
const WARM_UP: u64 = 100;
/// Samples per comparison window. A figure such as store bytes moves within a round (a new
/// model arrives before the old one goes), so single samples are not compared but the floors
/// of two windows: the smallest figure of the first [`WINDOW`] samples from [`WARM_UP`] on
/// (the baseline) and the smallest of the last [`WINDOW`] samples. Growth that stays (a leak)
/// raises the floor; the motion within a round does not (over eight samples the floor is the
/// store between rounds).
const WINDOW: usize = 8;
/// Volunteers killed and restarted during the run.
const KILLS: usize = 3;
/// The environment variable that replays a churn schedule.
const SEED_ENV: &str = "CANOPY_SOAK_SEED";
/// How long the rounds may take in all: the test must finish in under 15 minutes on two
/// cores, startup and checks included.
const RUN_LIMIT: Duration = Duration::from_secs(14 * 60);
/// How often the run loop looks at the coordinator's events.
const POLL: Duration = Duration::from_millis(100);
/// A round that has not closed after this long means the run is stuck (a round takes under a
/// second, a killed node's lease stalls one for a few): the test stops there and says why.
const STALL_LIMIT: Duration = Duration::from_secs(60);

const MIB: u64 = 1 << 20;
/// How far the floor of chunk-store bytes and data-directory bytes may rise from the warm-up
/// window to the final one (see [`WINDOW`]): a little more than one model of the tiny preset
/// (3.2 MiB). A node's store holds a fixed number of objects of very different sizes, so its
/// bytes sit at one of a few levels and eight samples may miss the lowest: a node's final
/// floor is held to its warm-up median plus this slack (one low warm-up sample failed a run).
const STORE_SLACK: u64 = 4 * MIB;
/// How far provider records and stored objects may grow: a round's objects, twice over. Peers'
/// records follow the round rate (announced within a time to live): their final floor is held
/// to the warm-up's top plus this; the coordinator's own (swinging each round), to its median.
const RECORDS_SLACK: u64 = 10;
/// The DHT's provider record time to live here, in seconds (about 35 rounds, as an hour is a
/// few dozen rounds of a real run).
const PROVIDER_TTL_SECS: &str = "10";
/// What the coordinator's state database may add per round (leases, results, ledger entries,
/// the round's row and its objects' manifests: a few KiB; its write-ahead log comes and goes
/// within [`STORE_SLACK`]). Before the retention fix the directory grew about 10 MB a round.
const DB_BYTES_PER_ROUND: u64 = 64 * 1024;
/// Resident memory may grow to `RSS_FACTOR_PERCENT`% of the warm-up figure plus
/// [`RSS_SLACK`] (allocator noise, caches filling).
const RSS_FACTOR_PERCENT: u64 = 150;
/// See [`RSS_FACTOR_PERCENT`].
const RSS_SLACK: u64 = 16 * MIB;
/// Open file descriptors may grow by this many (a connection or two being replaced).
const FDS_SLACK: u64 = 8;
/// Requests waiting for the coordinator's answer, at any sample: four nodes ask one thing at
/// a time (plus renewals), so anything near this is a leak.
const PENDING_MAX: u64 = 64;

/// One SIGKILL and restart: once `round` rounds have closed, volunteer `victim` is killed and,
/// `down_ms` later, started again on its data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Kill {
    round: u64,
    victim: usize,
    down_ms: u64,
}

/// The churn schedule of `seed`: [`KILLS`] kills at distinct rounds between the warm-up
/// window and the final one (so that the baseline is the steady state before any restart, and
/// the final figures are all of restarted processes that have settled).
fn schedule(seed: u64) -> Vec<Kill> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let window = WINDOW as u64 * SAMPLE_EVERY;
    let first = WARM_UP + window;
    let span = (ROUNDS - window - SAMPLE_EVERY - first) as usize;
    let mut kills: Vec<Kill> = sample(&mut rng, span, KILLS)
        .into_iter()
        .map(|offset| Kill {
            round: first + offset as u64,
            victim: rng.random_range(0..NODES),
            down_ms: rng.random_range(500..3000),
        })
        .collect();
    kills.sort();
    kills
}

/// The coordinator's figures at one sample.
#[derive(Debug, Clone, Copy)]
struct CoordinatorFigures {
    proc: ProcStats,
    store_bytes: u64,
    provider_records: u64,
    remote_provider_records: u64,
    pending_requests: u64,
    /// The project directory on disk, less the test's log of the coordinator's stderr.
    dir_bytes: u64,
}

/// A node's figures at one sample.
#[derive(Debug, Clone, Copy)]
struct NodeFigures {
    proc: ProcStats,
    store_bytes: u64,
    store_objects: u64,
    provider_records: u64,
    remote_provider_records: u64,
    dir_bytes: u64,
}

/// One sample: taken once `round` rounds had closed (`closed` had by the time it was read).
#[derive(Debug, Clone)]
struct Sample {
    round: u64,
    closed: u64,
    elapsed_s: f64,
    coordinator: Option<CoordinatorFigures>,
    /// `None` for a node that is down (killed, not yet restarted) or whose restarted process
    /// has not written its status yet.
    nodes: Vec<Option<NodeFigures>>,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

fn coordinator_figures(
    coordinator: &mut Coordinator,
    http: SocketAddr,
    project: &Path,
    log: &Path,
) -> Option<CoordinatorFigures> {
    if !matches!(coordinator.child.try_wait(), Ok(None)) {
        return None;
    }
    let proc = proc_stats(coordinator.child.id())?;
    let response = get(http, "/metrics");
    assert_eq!(response.status, 200, "/metrics: {}", response.body);
    let samples = parse_metrics(&response.body);
    let gauge = |name: &str| {
        let v = metric(&samples, name);
        assert!(v >= 0.0 && v.is_finite(), "{name} is {v}");
        v as u64
    };
    Some(CoordinatorFigures {
        proc,
        store_bytes: gauge("canopy_store_bytes"),
        provider_records: gauge("canopy_provider_records"),
        remote_provider_records: gauge("canopy_remote_provider_records"),
        pending_requests: gauge("canopy_pending_requests"),
        dir_bytes: disk_usage(project).saturating_sub(disk_usage(log)),
    })
}

fn node_figures(node: &Volunteer) -> Option<NodeFigures> {
    let pid = node.child.id();
    let proc = proc_stats(pid)?;
    let status = canopy_node::control::read_status(&node.dir)
        .unwrap_or_else(|e| panic!("reading the status file in {}: {e}", node.dir.display()))?;
    // A restarted node's first status is a second away; until then the file is its
    // predecessor's.
    if status.pid != pid {
        return None;
    }
    Some(NodeFigures {
        proc,
        store_bytes: status.store_bytes,
        store_objects: status.store_objects as u64,
        provider_records: status.provider_records as u64,
        remote_provider_records: status.remote_provider_records as u64,
        dir_bytes: disk_usage(&node.dir),
    })
}

fn table_header() -> String {
    let mut line = format!(
        "{:>5} {:>5} {:>6} | {:>7} {:>4} {:>7} {:>4} {:>4} {:>4} {:>7}",
        "round", "at", "t_s", "c_rss", "fds", "store", "recs", "rmt", "pend", "dir"
    );
    for i in 0..NODES {
        line.push_str(&format!(
            " | {:>7} {:>3} {:>6} {:>4} {:>4}",
            format!("n{i}_rss"),
            "fds",
            "store",
            "recs",
            "rmt"
        ));
    }
    line.push_str("   (MiB for rss, store and dir)");
    line
}

fn table_row(s: &Sample) -> String {
    let mut line = format!("{:>5} {:>5} {:>6.1} | ", s.round, s.closed, s.elapsed_s);
    match &s.coordinator {
        Some(c) => line.push_str(&format!(
            "{:>7.1} {:>4} {:>7.2} {:>4} {:>4} {:>4} {:>7.2}",
            mib(c.proc.rss_bytes),
            c.proc.fds,
            mib(c.store_bytes),
            c.provider_records,
            c.remote_provider_records,
            c.pending_requests,
            mib(c.dir_bytes)
        )),
        None => line.push_str(&format!("{:>47}", "(coordinator gone)")),
    }
    for n in &s.nodes {
        match n {
            Some(n) => line.push_str(&format!(
                " | {:>7.1} {:>3} {:>6.2} {:>4} {:>4}",
                mib(n.proc.rss_bytes),
                n.proc.fds,
                mib(n.store_bytes),
                n.provider_records,
                n.remote_provider_records
            )),
            None => line.push_str(&format!(" | {:>28}", "(down)")),
        }
    }
    line
}

/// One series compared: the floors of the warm-up window (the baseline) and of the final
/// window, each with the rounds closed when it was taken.
#[derive(Debug, Clone, Copy)]
struct Compared {
    baseline: (u64, u64),
    last: (u64, u64),
    /// The highest figure of the warm-up window.
    warm_max: u64,
    /// The median of the warm-up window.
    warm_median: u64,
    max: u64,
    /// The round label of the final window's first sample.
    final_from: u64,
}

/// The windows of one series (see [`WINDOW`]); `None` when it has no sample after warm-up.
/// Samples where the process was down or restarting are left out.
fn compare(samples: &[Sample], pick: &dyn Fn(&Sample) -> Option<u64>) -> Option<Compared> {
    let labelled: Vec<(u64, (u64, u64))> = samples
        .iter()
        .filter(|s| s.round >= WARM_UP)
        .filter_map(|s| pick(s).map(|v| (s.round, (s.closed, v))))
        .collect();
    let final_from = labelled.get(labelled.len().checked_sub(WINDOW)?)?.0;
    let present: Vec<(u64, u64)> = labelled.into_iter().map(|(_, p)| p).collect();
    let baseline = present
        .iter()
        .take(WINDOW)
        .min_by_key(|(_, v)| *v)
        .copied()?;
    let last = present
        .iter()
        .rev()
        .take(WINDOW)
        .min_by_key(|(_, v)| *v)
        .copied()?;
    let mut warm: Vec<u64> = present.iter().take(WINDOW).map(|(_, v)| *v).collect();
    warm.sort_unstable();
    let warm_max = *warm.last()?;
    let warm_median = warm[warm.len() / 2];
    let max = samples.iter().filter_map(pick).max().unwrap_or(0);
    Some(Compared {
        baseline,
        last,
        warm_max,
        warm_median,
        max,
        final_from,
    })
}

fn rss_limit(warm: u64) -> u64 {
    warm * RSS_FACTOR_PERCENT / 100 + RSS_SLACK
}

/// A thousand rounds, four volunteers, three of them killed and restarted at moments a printed
/// seed picks: every round closes, no accepted update is lost, restarted volunteers work
/// again, and memory, descriptors, stores, provider records and the project directory stay
/// within fixed bounds after warm-up.
#[test]
fn a_thousand_rounds_with_churn_grow_nothing_without_bound() {
    let _heavy = canopy_tests::harness::heavy_test();
    let test_started = Instant::now();
    let seed = seed_from_env(SEED_ENV);
    let kills = schedule(seed);
    eprintln!("soak seed {seed} ({SEED_ENV}={seed} replays it): {kills:?}");

    let tmp = tempfile::tempdir().expect("tmp");
    let project = tmp.path().join("project");
    let http_port = free_port();
    let http: SocketAddr = format!("127.0.0.1:{http_port}").parse().expect("addr");
    let rounds = (ROUNDS + TAIL).to_string();
    let config = small_project(
        &project,
        free_port(),
        &[
            ("rounds", rounds.as_str()),
            ("inner_steps", "1"),
            ("batch_size", "1"),
            ("seq_len", "16"),
            ("tasks_per_round", "2"),
            // A round closes once both tasks are in; a task held by a killed node comes back
            // up for lease when its lease runs out, or the deadline closes the round on the
            // other task's update.
            ("min_updates", "2"),
            ("round_deadline_secs", "5"),
            // Gentle steps: a one-sequence update at the default rate can raise the loss on
            // the (128-token) held-out sample by a nat, be refused, and be refused again for
            // every node that reruns the task, until all of them are banned.
            ("lr", "1e-3"),
        ],
        &format!(
            "[verification]\nmax_loss_increase = 2.0\n\
             [scheduling]\nmin_lease_secs = 3\nmax_lease_secs = 6\nheartbeat_secs = 1\n\
             idle_retry_ms = 100\n\
             [store]\ncheckpoint_every = 0\n\
             [dashboard]\nlisten = \"127.0.0.1:{http_port}\"\n"
        ),
    );
    set_network_key(&config, "provider_ttl_secs", PROVIDER_TTL_SECS);
    let log = config.with_extension("log");
    let dirs: Vec<PathBuf> = (0..NODES)
        .map(|i| tmp.path().join(format!("v{i}")))
        .collect();
    let ids: Vec<String> = dirs.iter().map(|d| node_peer_id(d)).collect();
    let name = |i: usize| format!("soak-{i}");

    let mut coordinator = Coordinator::start(&config);
    let started = Instant::now();
    let mut nodes: Vec<Option<Volunteer>> = (0..NODES)
        .map(|i| {
            Some(Volunteer::start(
                &dirs[i],
                &coordinator.addr,
                &["--name", &name(i), "--provider-ttl-secs", PROVIDER_TTL_SECS],
            ))
        })
        .collect();

    eprintln!("{}", table_header());
    let mut samples: Vec<Sample> = Vec::new();
    let mut next_sample = FIRST_SAMPLE;
    let mut pending_kills = kills.iter().copied().peekable();
    // The volunteer that is down and when it comes back.
    let mut down: Option<(usize, Instant)> = None;
    // Each restart: the volunteer and when it started again (ms since the epoch, the
    // coordinator's clock on this machine).
    let mut restarts: Vec<(usize, u64)> = Vec::new();
    let now_ms = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    };

    // The rounds closed at the last look, and since when.
    let mut progress = (0, Instant::now());
    let mut stalled = false;
    let finished = poll_until(RUN_LIMIT, POLL, || {
        let closed = coordinator.count_named("round") as u64;
        if closed >= ROUNDS + TAIL {
            return true;
        }
        if let Ok(Some(status)) = coordinator.child.try_wait() {
            panic!("the coordinator exited with {status} after {closed} rounds");
        }
        if closed != progress.0 {
            progress = (closed, Instant::now());
        } else if progress.1.elapsed() > STALL_LIMIT {
            stalled = true;
            return true;
        }
        while next_sample <= ROUNDS && closed >= next_sample {
            let closed = coordinator.count_named("round") as u64;
            let s = Sample {
                round: next_sample,
                closed,
                elapsed_s: started.elapsed().as_secs_f64(),
                coordinator: coordinator_figures(&mut coordinator, http, &project, &log),
                nodes: nodes
                    .iter()
                    .map(|n| n.as_ref().and_then(node_figures))
                    .collect(),
            };
            eprintln!("{}", table_row(&s));
            samples.push(s);
            next_sample = if next_sample < SAMPLE_EVERY {
                SAMPLE_EVERY
            } else {
                next_sample + SAMPLE_EVERY
            };
        }
        if let Some((i, back)) = down
            && Instant::now() >= back
        {
            nodes[i] = Some(Volunteer::start(
                &dirs[i],
                &coordinator.addr,
                &["--name", &name(i), "--provider-ttl-secs", PROVIDER_TTL_SECS],
            ));
            restarts.push((i, now_ms()));
            eprintln!("round {closed}: volunteer {i} restarted");
            down = None;
        }
        if down.is_none()
            && let Some(kill) = pending_kills.next_if(|k| closed >= k.round)
        {
            let node = nodes[kill.victim]
                .take()
                .expect("a victim is up when it is killed");
            let task = canopy_node::control::read_status(&node.dir)
                .ok()
                .flatten()
                .map(|s| s.worker["task"].clone());
            signal(&node.child, "KILL");
            drop(node);
            eprintln!(
                "round {closed}: volunteer {} killed (its last status showed task {})",
                kill.victim,
                task.unwrap_or_default()
            );
            down = Some((
                kill.victim,
                Instant::now() + Duration::from_millis(kill.down_ms),
            ));
        }
        false
    });
    let wall = started.elapsed();
    let closed = coordinator.count_named("round") as u64;
    if !finished || stalled {
        let h = history(&config);
        let timing = round_timing(&h);
        eprintln!("where the time went (ms): {timing}");
        let peers: Vec<String> = array(&h, "peers")
            .iter()
            .map(|p| format!("{} {} {}", p["name"], p["reputation"], p["banned"]))
            .collect();
        eprintln!("peers (name, reputation, banned): {peers:?}");
        eprintln!("the coordinator's last log lines:\n{}", log_tail(&log, 20));
        let why = if stalled {
            format!("no round closed for {STALL_LIMIT:?} after round {closed}")
        } else {
            format!(
                "only {closed} of {} rounds closed in {RUN_LIMIT:?}",
                ROUNDS + TAIL
            )
        };
        panic!("{why} (seed {seed}); round timing: {timing}");
    }
    let status = coordinator.wait_exit(Duration::from_secs(120));
    let total_wall = started.elapsed();
    drop(nodes);

    let mut failures: Vec<String> = Vec::new();
    if !status.success() {
        failures.push(format!("the coordinator exited with {status}"));
    }
    if coordinator.count_named("finished") != 1 {
        failures.push("the coordinator did not report the run finished".into());
    }

    // Every round closed, once.
    let events = coordinator.events_named("round");
    let numbers: Vec<u64> = events.iter().map(|e| u64_of(e, "round")).collect();
    if numbers != (0..ROUNDS + TAIL).collect::<Vec<_>>() {
        failures.push(format!(
            "round events are not rounds 0 to {} once each: {} events",
            ROUNDS + TAIL - 1,
            numbers.len()
        ));
    }
    let h = history(&config);
    let timing = round_timing(&h);
    let rounds_closed = array(&h, "rounds")
        .iter()
        .filter(|r| r["closed_ms"].is_u64())
        .count() as u64;
    if rounds_closed != ROUNDS + TAIL {
        failures.push(format!(
            "{rounds_closed} rounds closed in the history, not {}",
            ROUNDS + TAIL
        ));
    }

    // Nothing accepted was lost: every accepted result was aggregated, the round events
    // aggregated exactly those, and the ledger's accepted training entries are those results.
    let results = array(&h, "results");
    let accepted: Vec<&serde_json::Value> = results
        .iter()
        .filter(|r| r["status"] == "accepted")
        .collect();
    let unaggregated: Vec<u64> = accepted
        .iter()
        .filter(|r| !r["aggregated_in"].is_u64())
        .map(|r| u64_of(r, "task"))
        .collect();
    if !unaggregated.is_empty() {
        failures.push(format!(
            "accepted results never aggregated, tasks {unaggregated:?}"
        ));
    }
    let aggregated: u64 = events.iter().map(|e| u64_of(e, "aggregated")).sum();
    if aggregated != accepted.len() as u64 {
        failures.push(format!(
            "the round events aggregated {aggregated} updates; {} were accepted",
            accepted.len()
        ));
    }
    let ledger = coordinator_json("ledger", &config);
    let ledger_accepted: BTreeSet<(u64, String)> = ledger
        .as_array()
        .expect("ledger array")
        .iter()
        .filter(|e| e["kind"] == "train" && canopy_tests::processes::aggregated_entry(e))
        .map(|e| (u64_of(e, "task"), str_of(e, "peer").to_owned()))
        .collect();
    let results_accepted: BTreeSet<(u64, String)> = accepted
        .iter()
        .map(|r| (u64_of(r, "task"), str_of(r, "peer").to_owned()))
        .collect();
    if ledger_accepted != results_accepted || results_accepted.len() != accepted.len() {
        failures.push(format!(
            "the ledger's {} accepted entries and the {} accepted results differ",
            ledger_accepted.len(),
            accepted.len()
        ));
    }

    // Restarted volunteers came back and worked.
    for &(i, at) in &restarts {
        let worked = accepted
            .iter()
            .any(|r| r["peer"] == ids[i].as_str() && u64_of(r, "received_ms") > at);
        if !worked {
            failures.push(format!(
                "volunteer {i} had no accepted result after its restart"
            ));
        }
    }
    if restarts.len() != KILLS {
        failures.push(format!("{} restarts, not {KILLS}", restarts.len()));
    }

    // Bounds, from the warm-up window to the final one.
    let mut summary = serde_json::Map::new();
    {
        let failures = &mut failures;
        let final_from = ROUNDS - (WINDOW as u64 - 1) * SAMPLE_EVERY;
        let mut series = |who: &str,
                          what: &str,
                          pick: &dyn Fn(&Sample) -> Option<u64>,
                          limit: &dyn Fn(u64, u64, u64, u64) -> u64|
         -> serde_json::Value {
            let Some(c) = compare(&samples, pick) else {
                failures.push(format!(
                    "{who} {what}: fewer than {WINDOW} samples after warm-up"
                ));
                return serde_json::Value::Null;
            };
            if c.final_from < final_from {
                failures.push(format!(
                    "{who} {what}: samples are missing: the final window starts at round {}, not {final_from}",
                    c.final_from
                ));
            }
            let limit = limit(
                c.baseline.1,
                c.last.0.saturating_sub(c.baseline.0),
                c.warm_max,
                c.warm_median,
            );
            if c.last.1 > limit {
                failures.push(format!(
                    "{who} {what}: its floor rose from {} (warm-up, round {}) to {} \
                     (final rounds, round {}); bound {limit}",
                    c.baseline.1, c.baseline.0, c.last.1, c.last.0
                ));
            }
            serde_json::json!({
                "baseline": c.baseline.1, "final": c.last.1, "max": c.max, "bound": limit,
                "baseline_round": c.baseline.0, "final_round": c.last.0,
            })
        };
        let c = |f: fn(&CoordinatorFigures) -> u64| move |s: &Sample| s.coordinator.as_ref().map(f);
        let who = "coordinator";
        let coordinator_summary = serde_json::json!({
            "rss": series(who, "RSS", &c(|c| c.proc.rss_bytes), &|w, _, _, _| rss_limit(w)),
            "fds": series(who, "fds", &c(|c| c.proc.fds), &|w, _, _, _| w + FDS_SLACK),
            "store_bytes": series(who, "store bytes", &c(|c| c.store_bytes), &|w, _, _, _| w + STORE_SLACK),
            "provider_records": series(who, "provider records", &c(|c| c.provider_records), &|_, _, _, median| median + RECORDS_SLACK),
            "remote_provider_records": series(who, "remote provider records", &c(|c| c.remote_provider_records), &|_, _, warm_max, _| warm_max + RECORDS_SLACK),
            "dir_bytes": series(who, "project directory bytes", &c(|c| c.dir_bytes), &|w, rounds, _, _| {
                w + STORE_SLACK + DB_BYTES_PER_ROUND * rounds
            }),
        });
        summary.insert("coordinator".into(), coordinator_summary);
        let mut node_summaries = Vec::new();
        for i in 0..NODES {
            let who = format!("node {i}");
            let n = |f: fn(&NodeFigures) -> u64| move |s: &Sample| s.nodes[i].as_ref().map(f);
            node_summaries.push(serde_json::json!({
                "rss": series(&who, "RSS", &n(|n| n.proc.rss_bytes), &|w, _, _, _| rss_limit(w)),
                "fds": series(&who, "fds", &n(|n| n.proc.fds), &|w, _, _, _| w + FDS_SLACK),
                "store_bytes": series(&who, "store bytes", &n(|n| n.store_bytes), &|_, _, _, median| median + STORE_SLACK),
                "store_objects": series(&who, "store objects", &n(|n| n.store_objects), &|w, _, _, _| w + RECORDS_SLACK),
                "provider_records": series(&who, "provider records", &n(|n| n.provider_records), &|w, _, _, _| w + RECORDS_SLACK),
                "remote_provider_records": series(&who, "remote provider records", &n(|n| n.remote_provider_records), &|_, _, warm_max, _| warm_max + RECORDS_SLACK),
                "dir_bytes": series(&who, "data directory bytes", &n(|n| n.dir_bytes), &|_, _, _, median| median + STORE_SLACK),
            }));
        }
        summary.insert("nodes".into(), node_summaries.into());
    }
    for s in &samples {
        if let Some(c) = &s.coordinator
            && c.pending_requests > PENDING_MAX
        {
            failures.push(format!(
                "{} requests pending at round {} (bound {PENDING_MAX})",
                c.pending_requests, s.closed
            ));
        }
    }

    eprintln!("\nsoak seed {seed}: {closed} rounds in {wall:.1?} ({total_wall:.1?} to exit)");
    eprintln!("{}", table_header());
    for s in &samples {
        eprintln!("{}", table_row(s));
    }
    eprintln!("where the time went (ms): {timing}");
    summary.insert("seed".into(), seed.into());
    summary.insert("rounds".into(), closed.into());
    summary.insert("wall_s".into(), (wall.as_secs_f64().round() as u64).into());
    summary.insert(
        "test_s".into(),
        (test_started.elapsed().as_secs_f64().round() as u64).into(),
    );
    summary.insert("accepted".into(), accepted.len().into());
    summary.insert(
        "kills".into(),
        kills
            .iter()
            .map(
                |k| serde_json::json!({"round": k.round, "victim": k.victim, "down_ms": k.down_ms}),
            )
            .collect::<Vec<_>>()
            .into(),
    );
    summary.insert("round_ms".into(), timing);
    summary.insert("failures".into(), failures.len().into());
    eprintln!("{}", serde_json::json!({ "soak": summary }));
    assert!(
        failures.is_empty(),
        "soak (seed {seed}) out of bounds:\n  {}",
        failures.join("\n  ")
    );
}

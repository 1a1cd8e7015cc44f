//! The coordinator under many volunteers, in two parts.
//!
//! **Network** (`network` in the JSON): the real `canopy-coordinator run --json` as a child
//! process, on loopback, and `COORDINATOR_LOAD_PEERS` simulated volunteers (1,000 unless
//! told) in this process. Each volunteer has its own identity, its own minimal libp2p swarm
//! (TCP, Noise, Yamux and the `/canopy/1` request-response protocol with Canopy's codec) and
//! its own connection, driven by its own tokio task. It speaks the real protocol as
//! `canopy-node`'s worker does: `Join`, then `LeaseRequest`; on a grant it "computes" for a
//! while (`COORDINATOR_LOAD_TASK_MS`, ±50 %), sends one `LeaseRenew` half-way, then a
//! `TaskResult` carrying an update it signed for that task and round, and answers the
//! coordinator's `ChunkRequest`s (and `ManifestRequest`s) for it while it waits for the
//! `ResultAck`. `NoWork` is honoured as a node honours it (its `retry_after_ms`, 0.1 to 60 s;
//! `join_first` sends a join), a busy result is sent again after a second (30 times at most).
//! Every update is a real top-k pseudo-gradient computed once from the initial weights (a
//! small step towards zero), each copy made unique in three low mantissa bits so that no two
//! results have the same root.
//!
//! The project: the tiny model, `tasks_per_round` = the peer count (`COORDINATOR_LOAD_TASKS`),
//! a round closes when every task is in, one inner step of one 16-token window (so that the
//! coordinator's held-out check of each update is cheap), top-k updates at 0.1 %, no
//! datacenter re-runs; scheduling (lease lengths, retry intervals) as the coordinator's
//! defaults. Figures, all taken at the volunteers except memory and CPU (from
//! `/proc/<coordinator pid>`):
//!
//! - `grant_ms`, `nowork_ms`, `renew_ms`, `result_ms`, `release_ms`, `join_ms`: latency of
//!   `LeaseRequest` answered with a grant / with `NoWork`, of `LeaseRenew`, of each
//!   `TaskResult` until its `ResultAck` (a busy ack included), of `LeaseRelease`, of `Join`:
//!   p50, p99, max, mean, count. `nowork_reasons` counts every `NoWork` by its reason (the
//!   swarm's "the peer is busy" is the coordinator's queue overflowing).
//! - `judge_queue_ms`, `judge_fetch_to_ack_ms`: for each judged result, from the `TaskResult`
//!   to the coordinator's first `ChunkRequest` for its update, and from there to the
//!   `ResultAck`.
//! - `lost`: requests sent but not answered within the request timeout (20 s, as
//!   `canopy-node`), or failed on the connection, by request.
//! - `rounds_per_min`: rounds the coordinator closed during the measured phase, per minute.
//! - `rss_bytes_per_peer`: (coordinator RSS once every peer has joined − RSS before the
//!   first connected) / peers; `rss_peak_bytes`: its high-water mark at the end.
//! - `cpu_ms_per_request`: coordinator user + system CPU over the measured phase divided by
//!   the requests it answered in it; `cpu_ms_service_loop_thread`: the part of the main
//!   thread, where `canopy-coordinator run` drives the service loop.
//! - `round_closed_at_s`: when each round closed, from the start of the measured phase.
//!
//! **Core** (`core`): `COORDINATOR_LOAD_CORE_PEERS` (10,000) simulated peers through the
//! coordinator's decisions in this process, with no network: a project opened with
//! `Project::open` in a temporary directory (its SQLite state on disk, as the coordinator
//! runs it) with as many tasks as peers; every peer joins (`service::answer_peer`), then every
//! peer asks for a lease (the `LeaseRequest` arm of the service: `answer_peer` notes the
//! contact, then the peer and pause reads, `datacenter_active` (one indexed count), and
//! `scheduler::grant` in a transaction), then renews it (`answer_peer`), then its result is
//! committed (the state reads of the service's result check and the transaction that records
//! an accepted result; the update's fetch and held-out evaluation are left out). Each phase
//! stops early when `COORDINATOR_LOAD_CORE_PHASE_SECS` have passed (the count says how far
//! it got). Figures: latency per operation and operations per second over all four phases,
//! and for leases the share of the time in each step.
//!
//! Experiments: `COORDINATOR_LOAD_IDLE_RETRY_MS` sets the project's
//! `scheduling.idle_retry_ms` (how long an idle node waits before asking again; 1,000 by
//! default, as the coordinator's own default; the coordinator stretches it when many peers
//! wait); `COORDINATOR_LOAD_RETRY_BUSY_RENEW=0` makes the volunteers take a "busy" answer to
//! a renewal for a lost lease, as nodes did before, where `canopy-node` (and this bench by
//! default) sends the renewal again.
//!
//! Other settings: `COORDINATOR_LOAD_SECS` (the measured phase, 240 s: long enough for a
//! round of 1,000 results to close), `_RAMP` (peers connecting per second, 200),
//! `_TIMEOUT_SECS` (20), `_CORE_TASKS` (as many as core peers), `_CORE_DIR` (where the core
//! part's database goes; `/dev/shm` takes the disk out), `_CORE_EVALS` (20), `_PARTS`
//! (`network,core`), all prefixed `COORDINATOR_LOAD`. It prints a short summary, then one
//! JSON line (`{"bench":"coordinator_load",…}`). The machine's load average is in the JSON:
//! other work on the machine shows in every figure.
//!
//! ```text
//! cargo bench -p canopy-benches --bench coordinator_load
//! COORDINATOR_LOAD_PEERS=200 COORDINATOR_LOAD_SECS=30 COORDINATOR_LOAD_PARTS=network \
//!     cargo bench -p canopy-benches --bench coordinator_load
//! ```

// The network report is one large `json!` object.
#![recursion_limit = "256"]

use std::time::Duration;

use canopy_benches::{Latency, env_setting};
use canopy_coordinator::config::Config;
use canopy_coordinator::project;
use canopy_node::objects;
use canopy_protocol::messages::{AdapterInfo, AdapterKind, Capabilities, Join, Tier};
use canopy_protocol::{CodecSpec, CompressedUpdate};
use canopy_shaders::Params;
use serde_json::{Value, json};

mod decisions;
mod network;
mod peer;

use decisions::core_part;
use network::network_part;
use peer::NetSettings;

/// `COORDINATOR_LOAD_<name>` from the environment, or `default`.
fn setting<T: std::str::FromStr>(name: &str, default: T) -> T
where
    T::Err: std::fmt::Display,
{
    env_setting("COORDINATOR_LOAD", name, default)
}

/// The reason of a `ResultAck` for a result the coordinator is too busy to judge now.
const RESULT_BUSY: &str = canopy_node::worker::RESULT_BUSY;
/// Times a busy result is sent again, as `canopy-node` does.
const BUSY_RETRIES: u32 = 30;
/// What the coordinator's swarm answers, at once, a request its service's queue has no room
/// for (`canopy-node`'s event loop, word for word).
const SWARM_BUSY: &str = canopy_node::network::PEER_BUSY;

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken from the command line.
    let parts: String = setting("PARTS", "network,core".to_string());
    let mut out = serde_json::Map::new();
    out.insert("bench".into(), json!("coordinator_load"));
    let mut summary = Vec::new();
    if parts.split(',').any(|p| p.trim() == "network") {
        let settings = NetSettings::from_env();
        let (report, lines) = network_part(&settings);
        summary.extend(lines);
        out.insert("network".into(), report);
    }
    if parts.split(',').any(|p| p.trim() == "core") {
        let (report, lines) = core_part();
        summary.extend(lines);
        out.insert("core".into(), report);
    }
    println!();
    println!("coordinator_load summary");
    for line in summary {
        println!("  {line}");
    }
    println!("{}", Value::Object(out));
}

// ---------------------------------------------------------------------------------------------
// Shared: the update every simulated volunteer sends.
// ---------------------------------------------------------------------------------------------

/// The project's update codec and a real pseudo-gradient in it: the initial weights minus the
/// same weights shrunk by 0.1 % (one small step towards zero, which cannot raise the held-out
/// loss by much), compressed as the project asks.
fn update_template(config: &Config) -> CompressedUpdate {
    let model = config.model.preset.config();
    let before = Params::init(&model, config.project.seed).expect("initial weights");
    let shrunk = before.values().iter().map(|v| v * 0.999).collect();
    let after = Params::from_values(&model, shrunk).expect("shrunk weights");
    objects::pseudo_gradient(&before, &after, project::codec(config)).expect("pseudo-gradient")
}

/// `template` made unique by `unique`: 12 low mantissa bits of each of its first three top-k
/// values (finite values stay finite and barely move). Only top-k bodies are supported.
fn unique_update(template: &CompressedUpdate, unique: u64) -> CompressedUpdate {
    assert!(
        matches!(template.codec, CodecSpec::TopK { .. }),
        "the bench's project sends top-k updates"
    );
    let mut update = template.clone();
    let k = u64::from_le_bytes(update.body[..8].try_into().expect("top-k count")) as usize;
    assert!(k >= 3, "a top-k update of at least three values");
    let values = 8 + 4 * k;
    for j in 0..3 {
        let at = values + 4 * j;
        let bits = u32::from_le_bytes(update.body[at..at + 4].try_into().expect("a value"));
        let mark = ((unique >> (12 * j)) & 0xfff) as u32;
        let bits = (bits & !0xfff) | mark;
        update.body[at..at + 4].copy_from_slice(&bits.to_le_bytes());
    }
    update
}

fn join_message(name: &str) -> Join {
    Join {
        capabilities: Capabilities {
            adapters: vec![AdapterInfo {
                name: "simulated".into(),
                backend: "cpu".into(),
                kind: AdapterKind::Cpu,
                memory_bytes: 0,
            }],
            threads: 1,
            tier: Tier::Volunteer,
            software_version: "coordinator-load".into(),
        },
        display_name: Some(name.into()),
        organisation: None,
        country: None,
        invite: None,
        work: None,
    }
}

fn latency_json(l: &Latency) -> Value {
    let r = |v: f64| (v * 1000.0).round() / 1000.0;
    json!({"p50": r(l.p50), "p99": r(l.p99), "max": r(l.max), "mean": r(l.mean), "n": l.count})
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------------------------
// Part 1: simulated volunteers over loopback libp2p against the real coordinator process.
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Part 2: the coordinator's core decisions in-process.
// ---------------------------------------------------------------------------------------------

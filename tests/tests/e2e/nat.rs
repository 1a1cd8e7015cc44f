//! Volunteers behind home routers, in real Linux network namespaces (issue 18): a public
//! segment with the coordinator (also the relay) and two homes, each a volunteer behind a
//! router that masquerades with iptables. Each volunteer fetches objects that only the other
//! provides: first through the relay, then over a direct connection punched through both
//! routers (TCP and QUIC); behind a symmetric NAT, hole punching fails and the data still
//! arrives through the relay. Each test prints the path every fetch took.
//!
//! Needs root, `ip` and `iptables`. Without them the tests say so and pass, unless
//! `CANOPY_REQUIRE_NAT=1` (CI sets it), when they fail.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use canopy_tests::harness::{Program, binary};
use canopy_tests::netns::{self, Mapping, NatLab, PUBLIC_ADDR};
use canopy_tests::processes::{Coordinator, small_project};
use canopy_tests::report::log_tail;
use serde_json::Value;

/// One lab at a time: each runs a coordinator and two volunteers.
static ONE_LAB: Mutex<()> = Mutex::new(());
/// The coordinator's port on the public segment.
const PORT: u16 = 4001;
/// The size of each object the peers exchange.
const OBJECT: u64 = 2 << 20;

/// Whether the lab can run here; panics under `CANOPY_REQUIRE_NAT=1` when it cannot.
fn lab_available() -> bool {
    match netns::available() {
        Ok(()) => true,
        Err(e) if std::env::var("CANOPY_REQUIRE_NAT").is_ok_and(|v| v == "1") => {
            panic!("CANOPY_REQUIRE_NAT=1 but {e}")
        }
        Err(e) => {
            eprintln!("skipping the NAT test: {e}");
            false
        }
    }
}

/// What one volunteer printed.
struct PeerRun {
    name: &'static str,
    events: Vec<Value>,
    log: std::path::PathBuf,
}

impl PeerRun {
    fn event(&self, name: &str) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e["event"] == name)
            .map(|e| &e["data"])
            .collect()
    }

    fn fetched(&self, object: &str) -> &Value {
        self.event("fetched")
            .into_iter()
            .find(|f| f["object"] == object)
            .unwrap_or_else(|| panic!("{} never fetched its {object} object", self.name))
    }

    fn last_status(&self) -> &Value {
        self.event("final")
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("{} printed no final status", self.name))
    }
}

fn spawn_peer(
    lab: &NatLab,
    home: usize,
    coordinator: &str,
    dir: &std::path::Path,
    transport: &str,
) -> Child {
    let bin = binary(Program::NatPeer).expect("build the NAT peer");
    let (name, other) = if home == 0 { ("a", "b") } else { ("b", "a") };
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
    lab.command(&lab.home(home), &bin)
        .args([
            coordinator,
            &dir.display().to_string(),
            name,
            other,
            transport,
        ])
        .env("RUST_LOG", "info,libp2p_dcutr=debug,libp2p_relay=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn the NAT peer")
}

fn collect(mut child: Child, name: &'static str, dir: &std::path::Path) -> PeerRun {
    let stdout = child.stdout.take().expect("stdout");
    let events: Vec<Value> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect();
    let status = child.wait().expect("wait");
    let log = dir.join(format!("{name}.log"));
    assert!(
        status.success(),
        "volunteer {name} failed ({status}): {:?}\n{}",
        events.last(),
        log_tail(&log, 60)
    );
    PeerRun { name, events, log }
}

/// Builds the lab, runs the coordinator and the two volunteers to the end, and prints the
/// path each fetch took.
fn run_lab(tag: &str, mappings: [Mapping; 2], transport: &str) -> Option<[PeerRun; 2]> {
    if !lab_available() {
        return None;
    }
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().to_path_buf();
    // CANOPY_NAT_KEEP=1 keeps the volunteers' logs after the test.
    let _tmp = if std::env::var("CANOPY_NAT_KEEP").is_ok_and(|v| v == "1") {
        println!("keeping {}", tmp.keep().display());
        None
    } else {
        Some(tmp)
    };
    let lab = NatLab::new(tag, mappings).expect("the NAT lab");
    let config = small_project(&dir.as_path().join("project"), PORT, &[], "");
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text.replace(
        &format!("listen = [\"/ip4/127.0.0.1/tcp/{PORT}\"]"),
        &format!(
            "listen = [\"/ip4/{PUBLIC_ADDR}/tcp/{PORT}\", \"/ip4/{PUBLIC_ADDR}/udp/{PORT}/quic-v1\"]\npublic = true"
        ),
    );
    std::fs::write(&config, text).expect("config");
    let coordinator_bin = binary(Program::Coordinator).expect("build the coordinator");
    let mut coordinator =
        Coordinator::start_as(lab.command(lab.public(), &coordinator_bin), &config);
    let peer_id = coordinator
        .addr
        .rsplit('/')
        .next()
        .expect("a peer id")
        .to_owned();
    let addr = match transport {
        "quic" => format!("/ip4/{PUBLIC_ADDR}/udp/{PORT}/quic-v1/p2p/{peer_id}"),
        _ => format!("/ip4/{PUBLIC_ADDR}/tcp/{PORT}/p2p/{peer_id}"),
    };
    let started = Instant::now();
    let a = spawn_peer(&lab, 0, &addr, dir.as_path(), transport);
    let b = spawn_peer(&lab, 1, &addr, dir.as_path(), transport);
    let dir_b = dir.clone();
    let b = std::thread::spawn(move || collect(b, "b", &dir_b));
    let a = collect(a, "a", dir.as_path());
    let b = b.join().expect("volunteer b's reader");
    let _ = coordinator.child.kill();
    let _ = coordinator.child.wait();
    println!(
        "NAT lab {tag} ({transport}, routers {mappings:?}) in {:.1}s:",
        started.elapsed().as_secs_f64()
    );
    for peer in [&a, &b] {
        let status = peer.last_status();
        for object in ["first", "second"] {
            let f = peer.fetched(object);
            println!(
                "  {} fetched its {object} object: {} B direct, {} B relayed",
                peer.name, f["direct_bytes"], f["relayed_bytes"]
            );
        }
        println!(
            "  {}: {}; paths {}; log {}",
            peer.name,
            status["reachability"],
            status["paths"],
            peer.log.display()
        );
    }
    drop(lab);
    Some([a, b])
}

fn u64_at(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// Both peers were relayed first (part of the first object came through the relay), then a
/// direct connection was punched, and the second object came over it alone; no byte came from
/// the coordinator.
fn assert_punched(peers: &[PeerRun; 2]) {
    for peer in peers {
        let reach = peer.event("reachability");
        assert_eq!(reach[0]["reachability"], "relayed", "{}", peer.name);
        let paths = &peer.last_status()["paths"];
        assert!(
            u64_at(paths, "relayed_connections") >= 1,
            "{}: {paths}",
            peer.name
        );
        let first = peer.fetched("first");
        assert_eq!(
            u64_at(first, "direct_bytes") + u64_at(first, "relayed_bytes"),
            OBJECT
        );
        assert!(u64_at(first, "relayed_bytes") > 0, "{}: {first}", peer.name);
        let second = peer.fetched("second");
        assert_eq!(
            u64_at(second, "direct_bytes"),
            OBJECT,
            "{}: {second}",
            peer.name
        );
        assert_eq!(u64_at(paths, "fetched_from_bootstrap"), 0, "{}", peer.name);
    }
    // DCUtR reports the punch on the side whose attempt connected (on one side or both).
    assert!(
        peers
            .iter()
            .any(|p| u64_at(&p.last_status()["paths"], "hole_punches") >= 1),
        "no hole was punched"
    );
    let relayed: u64 = peers
        .iter()
        .map(|p| u64_at(&p.last_status()["paths"], "fetched_relayed"))
        .sum();
    let direct: u64 = peers
        .iter()
        .map(|p| u64_at(&p.last_status()["paths"], "fetched_direct"))
        .sum();
    println!(
        "  bytes between the volunteers: {:.0}% direct, {:.0}% relayed, 0% from the coordinator",
        100.0 * direct as f64 / (direct + relayed) as f64,
        100.0 * relayed as f64 / (direct + relayed) as f64
    );
}

#[test]
fn tcp_home_routers_are_punched_through_after_relaying() {
    if let Some(peers) = run_lab(
        "t",
        [Mapping::EndpointIndependent, Mapping::EndpointIndependent],
        "tcp",
    ) {
        assert_punched(&peers);
    }
}

#[test]
fn quic_home_routers_are_punched_through_after_relaying() {
    if let Some(peers) = run_lab(
        "q",
        [Mapping::EndpointIndependent, Mapping::EndpointIndependent],
        "quic",
    ) {
        assert_punched(&peers);
    }
}

/// Behind a symmetric NAT no hole can be punched: every byte goes through the relay, and
/// every fetch completes.
#[test]
fn symmetric_router_falls_back_on_the_relay() {
    let Some(peers) = run_lab(
        "s",
        [Mapping::EndpointIndependent, Mapping::PortDependent],
        "tcp",
    ) else {
        return;
    };
    for peer in &peers {
        let paths = &peer.last_status()["paths"];
        assert_eq!(u64_at(paths, "hole_punches"), 0, "{}: {paths}", peer.name);
        for object in ["first", "second"] {
            let f = peer.fetched(object);
            assert_eq!(u64_at(f, "relayed_bytes"), OBJECT, "{}: {f}", peer.name);
        }
    }
    assert!(
        peers
            .iter()
            .any(|p| u64_at(&p.last_status()["paths"], "hole_punch_failures") >= 1),
        "no hole punch was even tried"
    );
}

//! Another libp2p implementation (js-libp2p, in `tests/interop`) identifies and pings a Canopy
//! node: the standard protocols stay standard. Needs Node.js and `npm ci --prefix
//! tests/interop`; `.ci/run` installs both and sets `CANOPY_REQUIRE_INTEROP=1`, which turns a
//! missing runtime into a failure instead of a skip.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use canopy_node::network::NetworkConfig;
use canopy_tests::harness::{run_with_timeout, spawn_node_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_libp2p_identifies_and_pings_a_canopy_node() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop");
    let ready = dir.join("node_modules").join("libp2p").exists()
        && Command::new("node").arg("--version").output().is_ok();
    if !ready {
        let required = std::env::var("CANOPY_REQUIRE_INTEROP").as_deref() == Ok("1");
        assert!(
            !required,
            "CANOPY_REQUIRE_INTEROP=1 but Node.js or tests/interop/node_modules is missing \
             (run `npm ci --prefix tests/interop`)"
        );
        eprintln!("skipping the js-libp2p interop test: run `npm ci --prefix tests/interop`");
        return;
    }
    let node = spawn_node_with(
        &[],
        NetworkConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")],
            ..NetworkConfig::loopback()
        },
    )
    .await;
    let addr = node.addrs[0].to_string();
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("node");
        cmd.arg(dir.join("probe.mjs")).arg(addr);
        run_with_timeout(cmd, Duration::from_secs(60))
    })
    .await
    .expect("probe task")
    .expect("probe runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "probe failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("probe prints JSON");
    assert_eq!(report["peer"], node.client.peer_id().to_string());
    assert!(
        report["agent"]
            .as_str()
            .unwrap_or("")
            .starts_with("canopy-node/")
    );
    assert!(report["ping_ms"].as_f64().is_some());
    let protocols: Vec<&str> = report["protocols"]
        .as_array()
        .expect("protocols")
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    for expected in [
        "/ipfs/id/1.0.0",
        "/ipfs/ping/1.0.0",
        "/canopy/1",
        "/canopy/kad/1.0.0",
    ] {
        assert!(
            protocols.contains(&expected),
            "{expected} missing from {protocols:?}"
        );
    }
}

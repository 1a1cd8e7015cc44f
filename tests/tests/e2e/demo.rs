//! The demo binary, run as a user runs it.

use std::process::Command;
use std::time::Duration;

use canopy_tests::harness::{binary, run_with_timeout};

/// `canopy-coordinator demo --json` runs the protocol walkthrough and reports every honest
/// result accepted and the replay and tampered result refused.
#[test]
fn demo_json_reports_accepted_and_refused() {
    let bin = binary("canopy-coordinator", "canopy-coordinator").unwrap();
    let mut cmd = Command::new(bin);
    cmd.args(["demo", "--nodes", "3", "--params", "500000", "--json"]);
    let out = run_with_timeout(cmd, Duration::from_secs(120)).unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(summary["accepted"], 3);
    assert_eq!(summary["params"], 500000);
    let rejected = summary["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    let int8 = summary["codecs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["codec"] == "int8/128")
        .unwrap();
    assert!(int8["ratio_to_f32"].as_f64().unwrap() < 0.27);
    // Every step line names its actor.
    assert!(
        lines[..lines.len() - 1]
            .iter()
            .all(|l| l["actor"].is_string())
    );
}

/// Bad arguments get a clear error and a non-zero exit, not a panic.
#[test]
fn demo_refuses_bad_arguments() {
    let bin = binary("canopy-coordinator", "canopy-coordinator").unwrap();
    let mut cmd = Command::new(bin);
    cmd.args(["demo", "--nodes", "0"]);
    let out = run_with_timeout(cmd, Duration::from_secs(30)).unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--nodes"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

//! A polite node as a volunteer sets it up: its rules in `canopy-node.toml` and `CANOPY_*`
//! variables, paused while the machine is in use and outside its hours, going on by itself,
//! and `canopy-node status` saying why. The idle probe reads a test directory
//! (`CANOPY_INPUT_DEVICES_DIR`) whose files' times stand for the keyboard and mouse.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use canopy_tests::harness::{Program, binary, run_with_timeout, spawn_node, wait_until};

/// `canopy-node status` on `dir`: its words, and its JSON.
fn status(dir: &Path) -> (String, serde_json::Value) {
    let run = |json: bool| {
        let mut cmd = Command::new(binary(Program::Node).unwrap());
        cmd.arg("--data-dir").arg(dir).arg("status");
        if json {
            cmd.arg("--json");
        }
        let out = run_with_timeout(cmd, Duration::from_secs(30)).unwrap();
        assert!(out.status.success(), "{out:?}");
        out.stdout
    };
    let words = String::from_utf8_lossy(&run(false)).into_owned();
    let json = serde_json::from_slice(&run(true)).unwrap_or_default();
    (words, json)
}

fn paused_by(dir: &Path) -> Option<String> {
    status(dir).1["status"]["paused_by"]
        .as_str()
        .map(str::to_owned)
}

/// Sets the keyboard's last input `ago` in the past.
fn input(devices: &Path, ago: Duration) {
    let file = std::fs::File::create(devices.join("keyboard")).unwrap();
    let at = SystemTime::now() - ago;
    file.set_times(std::fs::FileTimes::new().set_accessed(at).set_modified(at))
        .unwrap();
}

fn join(dir: &Path, devices: &Path, envs: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(binary(Program::Node).unwrap());
    cmd.arg("--data-dir")
        .arg(dir)
        .args(["join", "--json"])
        .env("CANOPY_INPUT_DEVICES_DIR", devices)
        // The harness's volunteers set these; this test wants the defaults and its file.
        .env_remove("CANOPY_PRIORITY")
        .env_remove("CANOPY_WORK_ON_BATTERY")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

fn stop(child: Child) {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_works_only_when_its_rules_allow_and_says_why() {
    let boot = spawn_node(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("canopy-node.toml"),
        format!(
            "# A volunteer's settings\ncoordinator = \"{}\"\nwhen = \"idle\"\nidle_minutes = 1\n\
             cpu_share = 50\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\n",
            boot.addrs[0]
        ),
    )
    .unwrap();
    // Someone is typing.
    input(devices.path(), Duration::ZERO);
    let child = join(dir.path(), devices.path(), &[]);
    let in_use = wait_until(Duration::from_secs(60), || async {
        paused_by(dir.path()).as_deref() == Some("the machine is in use")
    })
    .await;
    let (words, _) = status(dir.path());
    assert!(in_use, "{words}");
    assert!(
        words.contains("paused: the machine is in use (goes on by itself"),
        "{words}"
    );
    assert!(
        words.contains(
            "rules: works when the machine has been idle for 1 minute, at most 50% of the \
             time; pauses on battery"
        ),
        "{words}"
    );
    // Nobody has touched it for two minutes: it works.
    input(devices.path(), Duration::from_secs(120));
    let idle = wait_until(Duration::from_secs(30), || async {
        paused_by(dir.path()).is_none()
    })
    .await;
    let (words, json) = status(dir.path());
    assert!(idle, "{words}");
    assert!(words.contains("working: its rules allow it now"), "{words}");
    assert_eq!(json["status"]["paused"], false, "{json}");
    // Back at the keyboard: it steps aside again.
    input(devices.path(), Duration::ZERO);
    let back = wait_until(Duration::from_secs(30), || async {
        paused_by(dir.path()).as_deref() == Some("the machine is in use")
    })
    .await;
    assert!(back, "{}", status(dir.path()).0);
    stop(child);

    // Working hours from the environment, which wins over the file: a window that is not now.
    let hour = local_hour();
    let hours = format!("{:02}:00-{:02}:00", (hour + 2) % 24, (hour + 3) % 24);
    let child = join(
        dir.path(),
        devices.path(),
        &[("CANOPY_HOURS", &hours), ("CANOPY_WHEN", "always")],
    );
    let expect = format!("outside its working hours ({hours})");
    let outside = wait_until(Duration::from_secs(60), || async {
        paused_by(dir.path()).as_deref() == Some(expect.as_str())
    })
    .await;
    let (words, _) = status(dir.path());
    assert!(outside, "{words}");
    assert!(
        words.contains(&format!("works whenever allowed, between {hours}")),
        "{words}"
    );
    stop(child);
}

/// The local hour, from `date` (the node reads the same local time).
fn local_hour() -> u32 {
    let out = Command::new("date").arg("+%H").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// A mistake in the settings file stops `join` with the file and the setting named, before
/// anything starts, and leaves the file as it was.
#[test]
fn the_settings_file_is_checked_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("canopy-node.toml");
    let join_with = |args: &[&str]| {
        let mut cmd = Command::new(binary(Program::Node).unwrap());
        cmd.arg("--data-dir").arg(dir.path()).arg("join").args(args);
        run_with_timeout(cmd, Duration::from_secs(60)).unwrap()
    };
    // No coordinator anywhere: told where to put it, and nothing is written.
    let out = join_with(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("set `coordinator` in canopy-node.toml"),
        "{stderr}"
    );
    std::fs::write(&settings, "when = \"sometimes\"\n").unwrap();
    let out = join_with(&[
        "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWRh8tC5w9fyYZci3S9vTrNDbMNdXj13XfBj5aof2awhA9",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&settings.display().to_string()) && stderr.contains("sometimes"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&settings).unwrap(),
        "when = \"sometimes\"\n",
        "the volunteer's file is left as it was"
    );
}

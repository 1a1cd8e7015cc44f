//! Real coordinator and node processes for end-to-end tests: a project directory with a small
//! configuration, a coordinator whose JSON events are collected as they come, and volunteers
//! that can be stopped (SIGTERM) or killed (SIGKILL) like real ones.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{Program, binary, run_with_timeout};

/// A small, fast training project: the tiny model, short inner phases, a few rounds.
/// `training` overrides keys of `[training]` (e.g. `("rounds", "4")`); `extra` appends whole
/// sections (e.g. `"[verification]\nrerun_fraction = 1.0"`). The dashboard is off unless
/// `extra` has a `[dashboard]` section (tests run side by side; a fixed port would clash).
pub fn small_project(dir: &Path, port: u16, training: &[(&str, &str)], extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("project dir");
    let path = dir.join("canopy.toml");
    let mut keys = vec![
        ("rounds", "3"),
        ("inner_steps", "10"),
        ("batch_size", "4"),
        ("seq_len", "32"),
        ("tasks_per_round", "3"),
        ("min_updates", "2"),
    ];
    for (k, v) in training {
        match keys.iter_mut().find(|(key, _)| key == k) {
            Some(entry) => entry.1 = v,
            None => keys.push((k, v)),
        }
    }
    let training: String = keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    let dashboard = if extra.contains("[dashboard]") {
        ""
    } else {
        "[dashboard]\nlisten = \"\"\n"
    };
    let text = format!(
        "[project]\nname = \"e2e\"\n[network]\nlisten = [\"/ip4/127.0.0.1/tcp/{port}\"]\n\
         [data]\nshard_bytes = 32768\n[training]\n{training}{dashboard}{extra}\n"
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// Adds `key = value` to the `[network]` section of a config written by [`small_project`].
pub fn set_network_key(config: &Path, key: &str, value: &str) {
    let text = std::fs::read_to_string(config).expect("read config");
    let text = text.replacen("[network]\n", &format!("[network]\n{key} = {value}\n"), 1);
    std::fs::write(config, text).expect("write config");
}

/// A free TCP port on loopback (for a coordinator that must come back on the same address).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Kills a child with a signal (`TERM` or `KILL`).
pub fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{signal} failed");
}

/// A running `canopy-coordinator run --json`.
pub struct Coordinator {
    /// The process.
    pub child: Child,
    /// Every JSON line it printed so far.
    pub events: Arc<Mutex<Vec<serde_json::Value>>>,
    /// Its first listen address (ending in /p2p/<peer id>).
    pub addr: String,
    /// The dashboard's URL, when it serves one.
    pub dashboard: Option<String>,
}

impl Coordinator {
    /// Starts the coordinator on `config` and waits for its listen address.
    pub fn start(config: &Path) -> Self {
        let bin = binary(Program::Coordinator).expect("build coordinator");
        Self::start_as(Command::new(bin), config)
    }

    /// [`Coordinator::start`] through `command`, the coordinator's binary or a wrapper that
    /// runs it (inside a network namespace, say).
    pub fn start_as(mut command: Command, config: &Path) -> Self {
        let mut child = command
            .args(["run", "--json", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(config.with_extension("log")).expect("log file"),
            ))
            .spawn()
            .expect("spawn coordinator");
        let stdout = child.stdout.take().expect("stdout");
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    sink.lock().unwrap_or_else(|e| e.into_inner()).push(v);
                }
            }
        });
        let mut coordinator = Self {
            child,
            events,
            addr: String::new(),
            dashboard: None,
        };
        let started = coordinator
            .wait_for(Duration::from_secs(120), |e| e.get("started").is_some())
            .expect("the coordinator starts");
        coordinator.addr = started["started"]["listen"][0]
            .as_str()
            .expect("a listen address")
            .to_string();
        coordinator.dashboard = started["started"]["dashboard"].as_str().map(str::to_string);
        coordinator
    }

    /// Waits until an event satisfies `f`; returns it.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        f: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(e) = self
                .events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .find(|e| f(e))
            {
                return Some(e.clone());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the coordinator exited early with {status}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Waits until at least `n` events named `key` have arrived.
    pub fn wait_for_count(&mut self, key: &str, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.count_named(key) >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Waits for the process to exit on its own (training finished).
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the coordinator did not finish in {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// How many events named `key` have arrived (without copying them).
    pub fn count_named(&self, key: &str) -> usize {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|e| e.get(key).is_some())
            .count()
    }

    /// Events whose top-level key is `key`.
    pub fn events_named(&self, key: &str) -> Vec<serde_json::Value> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|e| e.get(key).cloned())
            .collect()
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `canopy-node join`.
pub struct Volunteer {
    /// The process.
    pub child: Child,
    /// Its data directory.
    pub dir: PathBuf,
}

impl Volunteer {
    /// Starts a node on data directory `dir` joining `addr`, with extra flags.
    pub fn start(dir: &Path, addr: &str, flags: &[&str]) -> Self {
        let bin = binary(Program::Node).expect("build node");
        // Appended to: a node restarted on the same directory keeps the log of its last run.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.with_extension("log"))
            .expect("log file");
        let child = Command::new(bin)
            .arg("--data-dir")
            .arg(dir)
            .args(["join", addr, "--listen", "/ip4/127.0.0.1/tcp/0", "--json"])
            .args(flags)
            .env("RUST_LOG", "info")
            // These tests are about the protocol: the nodes train on the CPU path even where
            // CI requires an adapter for the kernel tests.
            .env("CANOPY_ADAPTER", "cpu")
            .env_remove("CANOPY_REQUIRE_ADAPTER")
            // The coordinators whose timing these tests check share the machine with them:
            // nodes compute at its priority, and a laptop's battery pauses nothing.
            .env("CANOPY_PRIORITY", "normal")
            .env("CANOPY_WORK_ON_BATTERY", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn node");
        Self {
            child,
            dir: dir.to_path_buf(),
        }
    }
}

impl Volunteer {
    /// Starts `n` nodes joining `addr`, named `<name>-<i>`, with data directories
    /// `<dir>/<name>-<i>`.
    pub fn start_many(dir: &Path, name: &str, n: usize, addr: &str) -> Vec<Self> {
        (0..n)
            .map(|i| {
                let name = format!("{name}-{i}");
                Self::start(&dir.join(&name), addr, &["--name", &name])
            })
            .collect()
    }
}

impl Drop for Volunteer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The peer id of the node identity in `dir` (created if missing).
pub fn node_peer_id(dir: &Path) -> String {
    let bin = binary(Program::Node).expect("build node");
    let mut cmd = Command::new(bin);
    cmd.arg("--data-dir").arg(dir).args(["info", "--json"]);
    let out = run_with_timeout(cmd, Duration::from_secs(60)).expect("info");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("info json");
    v["peer_id"].as_str().expect("peer id").to_string()
}

/// Runs a `canopy-coordinator` command and returns its stdout, asserting success.
pub fn coordinator_cli(args: &[&str]) -> String {
    let bin = binary(Program::Coordinator).expect("build coordinator");
    let mut cmd = Command::new(bin);
    cmd.args(args);
    let out = run_with_timeout(cmd, Duration::from_secs(120)).expect("coordinator command");
    assert!(
        out.status.success(),
        "canopy-coordinator {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `canopy-coordinator export latest <out> --config <config>`: the project's latest model
/// exported into `out`.
pub fn export_latest(config: &Path, out: &Path) {
    coordinator_cli(&[
        "export",
        "latest",
        &out.to_string_lossy(),
        "--config",
        &config.to_string_lossy(),
    ]);
}

/// Whether a ledger entry (from `canopy-coordinator ledger --json`) stands for an update that
/// went into a model version: credited, or held until its sender's record earns the credit
/// (a new identity's first updates, or a peer whose updates pull against their rounds).
pub fn aggregated_entry(entry: &serde_json::Value) -> bool {
    entry["accepted"] == true || entry["verified"] == "held"
}

/// `canopy-coordinator <command> --json --config <config>`, parsed.
pub fn coordinator_json(command: &str, config: &Path) -> serde_json::Value {
    let config = config.to_string_lossy();
    let out = coordinator_cli(&[command, "--json", "--config", &config]);
    serde_json::from_str(&out).expect("JSON output")
}

/// `canopy-coordinator status --json --history --config <config>`: rounds, peers, every lease
/// and every result.
pub fn history(config: &Path) -> serde_json::Value {
    let config = config.to_string_lossy();
    let out = coordinator_cli(&["status", "--json", "--history", "--config", &config]);
    serde_json::from_str(&out).expect("status JSON")
}

/// The array `v[key]` (panics naming `key` and `v` when it is not one).
pub fn array<'a>(v: &'a serde_json::Value, key: &str) -> &'a [serde_json::Value] {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} array in {v}"))
}

/// The number `v[key]` (panics naming `key` and `v` when it is not one).
pub fn u64_of(v: &serde_json::Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key} number in {v}"))
}

/// The string `v[key]` (panics naming `key` and `v` when it is not one).
pub fn str_of<'a>(v: &'a serde_json::Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} string in {v}"))
}

/// The seed of a randomised test: `env` when set to a number (to replay a run), else one drawn
/// from the clock. Tests print it, so that a failure can be replayed.
pub fn seed_from_env(env: &str) -> u64 {
    std::env::var(env)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        })
}

/// Calls `f` every `every` until it returns true or `timeout` passes; returns whether it did.
pub fn poll_until(timeout: Duration, every: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// What the kernel says a running process holds (Linux: read from `/proc/<pid>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStats {
    /// Resident memory in bytes (`VmRSS`).
    pub rss_bytes: u64,
    /// Open file descriptors (entries of `/proc/<pid>/fd`).
    pub fds: u64,
}

/// The resident memory and open file descriptors of process `pid`; `None` when it is gone
/// (or this is not Linux).
pub fn proc_stats(pid: u32) -> Option<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(ProcStats {
        rss_bytes: kib * 1024,
        fds,
    })
}

/// Bytes the files at or under `path` take on disk (allocated blocks, so sparse files count for
/// what they use). Files that vanish during the walk (a store deleting as it goes) are skipped.
pub fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&p) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        } else {
            total += meta.blocks() * 512;
        }
    }
    total
}

/// Runs `canopy-coordinator` with `args` and environment changes (`(key, Some(value))` sets,
/// `(key, None)` removes) and returns its output, whatever its exit status.
pub fn coordinator_output(args: &[&str], env: &[(&str, Option<&str>)]) -> std::process::Output {
    let bin = binary(Program::Coordinator).expect("build coordinator");
    let mut cmd = Command::new(bin);
    cmd.args(args);
    for (key, value) in env {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    run_with_timeout(cmd, Duration::from_secs(600)).expect("coordinator command")
}

/// Every file under `dir`, by path relative to it, with its bytes (to compare two output
/// directories byte for byte).
pub fn dir_files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(dir)
                    .expect("under dir")
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read(&path).expect("read file"));
            }
        }
    }
    out
}

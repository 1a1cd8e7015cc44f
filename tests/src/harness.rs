//! Helpers for end-to-end tests: locate the programs under test, built by cargo in the same
//! profile as the running test, and run them with a deadline.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Errors of the harness itself (not of the program under test).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// The test executable's location does not look like `target/<profile>/deps/…`.
    #[error("cannot find the target directory from {0}")]
    TargetDir(PathBuf),
    /// A program under test was not built beside the test executable.
    #[error("{0} is missing: run the tests with `cargo test`, which builds the programs they run")]
    Missing(PathBuf),
    /// A process did not finish in time and was killed.
    #[error("{program} did not finish within {timeout:?}")]
    Timeout {
        /// The program.
        program: String,
        /// The deadline.
        timeout: Duration,
    },
    /// Spawning, waiting or staging a file failed.
    #[error("running {program}: {source}")]
    Io {
        /// The program.
        program: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A program the end-to-end tests run as a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Program {
    /// `canopy-node`, the volunteer's and the institution's peer.
    Node,
    /// `canopy-coordinator`.
    Coordinator,
    /// `canopy-nat-peer`, the network stack alone, for the NAT tests.
    NatPeer,
}

impl Program {
    /// The name users run it by.
    pub fn name(self) -> &'static str {
        match self {
            Self::Node => "canopy-node",
            Self::Coordinator => "canopy-coordinator",
            Self::NatPeer => "canopy-nat-peer",
        }
    }

    /// The bin target of this package that builds it. The node and the coordinator are built
    /// from their own `main.rs` (see `Cargo.toml`), under a name of their own so as not to
    /// collide with the binaries of their packages.
    fn target(self) -> &'static str {
        match self {
            Self::Node => "e2e-canopy-node",
            Self::Coordinator => "e2e-canopy-coordinator",
            Self::NatPeer => "canopy-nat-peer",
        }
    }
}

/// The programs this test process has staged under their real names, and where.
static STAGED: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The path of `program`, built by cargo with this package in the profile of the running
/// test (cargo builds a package's binaries before its integration tests run, so `cargo test
/// --release` runs release binaries; no test runs cargo). The node and the coordinator are
/// staged once per test process in `target/<profile>/e2e-bin/` under their real names, so
/// that usage lines, process lists and packaging see `canopy-node` and `canopy-coordinator`.
pub fn binary(program: Program) -> Result<PathBuf, HarnessError> {
    let exe = std::env::current_exe().map_err(|source| HarnessError::Io {
        program: "current_exe".into(),
        source,
    })?;
    // target/<profile>/deps/<test-binary>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| HarnessError::TargetDir(exe.clone()))?;
    let built = |p: Program| {
        let path = profile_dir.join(format!("{}{}", p.target(), std::env::consts::EXE_SUFFIX));
        if path.is_file() {
            Ok(path)
        } else {
            Err(HarnessError::Missing(path))
        }
    };
    if program == Program::NatPeer {
        return built(program);
    }
    // Held while staging: tests asking at once stage once.
    let mut staged = STAGED.lock().unwrap_or_else(|e| e.into_inner());
    let dir = match &*staged {
        Some(dir) => dir.clone(),
        None => {
            let dir = profile_dir.join("e2e-bin");
            for p in [Program::Node, Program::Coordinator] {
                stage(&built(p)?, &dir, p.name())?;
            }
            *staged = Some(dir.clone());
            dir
        }
    };
    Ok(dir.join(format!(
        "{}{}",
        program.name(),
        std::env::consts::EXE_SUFFIX
    )))
}

/// Puts `from` at `dir/name` atomically: a hard link (a copy across file systems) under a
/// name of this process, renamed into place, so a process still running the old file keeps it.
fn stage(from: &Path, dir: &Path, name: &str) -> Result<(), HarnessError> {
    let io = |source| HarnessError::Io {
        program: format!("staging {name}"),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let file = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    let partial = dir.join(format!(".{file}.{}", std::process::id()));
    let _ = std::fs::remove_file(&partial);
    if std::fs::hard_link(from, &partial).is_err() {
        std::fs::copy(from, &partial).map_err(io)?;
    }
    std::fs::rename(&partial, dir.join(file)).map_err(io)
}

/// The first of `names` found as a file in a directory of the `PATH`, if any.
pub fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// A deployment or packaging tool on the `PATH`; without it, a notice and `None`, or a
/// failure under `CANOPY_REQUIRE_DEPLOY_TOOLS=1` (CI sets it).
pub fn deploy_tool(name: &str) -> Option<PathBuf> {
    let found = on_path(&[name]);
    if found.is_none() {
        assert!(
            !required("CANOPY_REQUIRE_DEPLOY_TOOLS"),
            "CANOPY_REQUIRE_DEPLOY_TOOLS=1 but `{name}` is not installed"
        );
        eprintln!("skipping a check: `{name}` is not installed");
    }
    found
}

/// A file's text, panicking with its path when it cannot be read.
pub fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Whether environment variable `var` is `1`: CI's way of turning a test's skip (a missing
/// tool, browser or runtime) into a failure.
pub fn required(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "1")
}

/// Held by the tests that need the machine's cores to themselves to keep their own time
/// limits (the 1,000-round soak, the parity demo): with two of them at once on two cores,
/// each ran at half speed. Other tests go on beside the holder.
static EXCLUSIVE: Mutex<()> = Mutex::new(());

/// Waits until no other heavy test of this test process runs, and holds that until the guard
/// drops (see [`EXCLUSIVE`]).
pub fn heavy_test() -> std::sync::MutexGuard<'static, ()> {
    EXCLUSIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `command` to completion, killing it after `timeout`.
pub fn run_with_timeout(mut command: Command, timeout: Duration) -> Result<Output, HarnessError> {
    let program = format!("{:?}", command.get_program());
    let io = |source| HarnessError::Io {
        program: program.clone(),
        source,
    };
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io)?;
    // Both pipes are drained while the command runs: a command printing more than a pipe
    // holds would otherwise block on its write and never exit.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().map_err(io)? {
            return Ok(Output {
                status,
                stdout: stdout.join().unwrap_or_default(),
                stderr: stderr.join().unwrap_or_default(),
            });
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(HarnessError::Timeout {
                program: program.clone(),
                timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running node for swarm tests: its client, events, swarm task and data directory.
pub struct TestNode {
    /// The node's client.
    pub client: canopy_node::network::Client,
    /// Its events (tests that do not read them may leave them; the swarm drops what overflows).
    pub events: tokio::sync::mpsc::Receiver<canopy_node::network::NetworkEvent>,
    /// The swarm task; aborting it is how a test kills the node.
    pub task: tokio::task::JoinHandle<()>,
    /// Its identity.
    pub keys: canopy_protocol::Keypair,
    /// Its listen addresses, each ending in `/p2p/<peer id>`.
    pub addrs: Vec<libp2p::Multiaddr>,
    /// Its chunk store.
    pub store: std::sync::Arc<canopy_node::store::ChunkStore>,
    _dir: tempfile::TempDir,
}

/// Starts a node on loopback with a fresh identity and store, bootstrapping from `bootstrap`.
pub async fn spawn_node(bootstrap: &[libp2p::Multiaddr]) -> TestNode {
    spawn_node_with(bootstrap, canopy_node::network::NetworkConfig::loopback()).await
}

/// [`spawn_node`] with a configuration of the test's own (listen and bootstrap are set here).
pub async fn spawn_node_with(
    bootstrap: &[libp2p::Multiaddr],
    config: canopy_node::network::NetworkConfig,
) -> TestNode {
    let keys = canopy_protocol::Keypair::generate().expect("key");
    spawn_node_as(keys, bootstrap, config).await
}

/// [`spawn_node_with`] under a given identity (to restart a node as itself).
pub async fn spawn_node_as(
    keys: canopy_protocol::Keypair,
    bootstrap: &[libp2p::Multiaddr],
    mut config: canopy_node::network::NetworkConfig,
) -> TestNode {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = std::sync::Arc::new(
        canopy_node::store::ChunkStore::open(dir.path(), 1 << 30).expect("store"),
    );
    config.bootstrap = bootstrap.to_vec();
    let (client, events, task) = canopy_node::network::start(keys.clone(), store.clone(), config)
        .await
        .expect("swarm starts");
    let addrs = client.listen_addrs().await.expect("addresses");
    TestNode {
        client,
        events,
        task,
        keys,
        addrs,
        store,
        _dir: dir,
    }
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub async fn wait_until<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A seeded object of `len` bytes, chunked at `chunk_size` and signed by `keys`.
pub fn signed_object(
    keys: &canopy_protocol::Keypair,
    len: usize,
    chunk_size: u32,
    seed: u64,
) -> (canopy_protocol::SignedManifest, Vec<u8>) {
    // splitmix64 of the seed, so nearby seeds give unrelated objects.
    let mut state = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    state = (state ^ (state >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    state = (state ^ (state >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    state = (state ^ (state >> 31)) | 1;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let manifest = canopy_protocol::Manifest::build(
        canopy_protocol::ObjectKind::ModelWeights,
        &data,
        chunk_size,
        Default::default(),
    )
    .expect("manifest")
    .sign(keys)
    .expect("sign");
    (manifest, data)
}

//! `canopy-nat-peer`: a volunteer's network stack (the node library's swarm with its default,
//! non-loopback configuration) for the NAT tests, run inside a home namespace. It joins through
//! the coordinator, waits until it knows how it is reached, provides two objects, writes their
//! manifests into a directory the two peers share, fetches the other peer's two objects (the
//! second after hole punching has succeeded or failed), and prints one JSON line per step.
//!
//! ```text
//! canopy-nat-peer <coordinator address> <shared directory> <name> <other peer's name> <tcp|quic>
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use canopy_node::network::{self, Client, Fetched, NetworkConfig, NetworkStatus, Reachability};
use canopy_node::store::ChunkStore;
use canopy_protocol::{Keypair, SignedManifest};
use canopy_tests::harness::signed_object;

/// Each object's size and chunk size: 32 chunks, so a fetch spans many requests.
const OBJECT: usize = 2 << 20;
const CHUNK: u32 = 64 << 10;
/// How long each step may take.
const STEP: Duration = Duration::from_secs(90);

fn emit(event: &str, body: serde_json::Value) {
    println!("{}", serde_json::json!({ "event": event, "data": body }));
}

fn status_json(status: &NetworkStatus) -> serde_json::Value {
    serde_json::to_value(status).unwrap_or_default()
}

fn fetched_json(object: &str, fetched: &Fetched) -> serde_json::Value {
    serde_json::json!({
        "object": object,
        "bytes": fetched.data.len(),
        "direct_bytes": fetched.direct_bytes,
        "relayed_bytes": fetched.relayed_bytes,
        "sources": fetched.sources.keys().map(ToString::to_string).collect::<Vec<_>>(),
    })
}

async fn wait_status(
    client: &Client,
    what: &str,
    ok: impl Fn(&NetworkStatus) -> bool,
) -> Result<NetworkStatus, String> {
    let deadline = Instant::now() + STEP;
    loop {
        let status = client.status().await.map_err(|e| e.to_string())?;
        if ok(&status) {
            return Ok(status);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{what}: not within {STEP:?}; last status {status:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_file(path: &Path) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + STEP;
    loop {
        if let Ok(bytes) = std::fs::read(path) {
            return Ok(bytes);
        }
        if Instant::now() > deadline {
            return Err(format!("{} did not appear within {STEP:?}", path.display()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("{}: {e}", path.display()))
}

async fn fetch(client: &Client, dir: &Path, other: &str, object: &str) -> Result<(), String> {
    let frame = wait_file(&dir.join(format!("{other}.{object}"))).await?;
    let manifest = SignedManifest::from_frame(&frame).map_err(|e| e.to_string())?;
    let fetched = tokio::time::timeout(STEP, client.fetch(manifest))
        .await
        .map_err(|_| format!("fetching {other}'s {object} object timed out"))?
        .map_err(|e| format!("fetching {other}'s {object} object: {e}"))?;
    if fetched.data.len() != OBJECT {
        return Err(format!("fetched {} bytes", fetched.data.len()));
    }
    emit("fetched", fetched_json(object, &fetched));
    Ok(())
}

async fn run(
    coordinator: &str,
    dir: PathBuf,
    name: &str,
    other: &str,
    transport: &str,
) -> Result<(), String> {
    let listen = match transport {
        "tcp" => "/ip4/0.0.0.0/tcp/0",
        "quic" => "/ip4/0.0.0.0/udp/0/quic-v1",
        other => return Err(format!("unknown transport {other:?}")),
    };
    let coordinator = coordinator
        .parse()
        .map_err(|e| format!("{coordinator}: {e}"))?;
    let keys = Keypair::generate().map_err(|e| e.to_string())?;
    let store = ChunkStore::open(&dir.join(name), 1 << 30).map_err(|e| e.to_string())?;
    let config = NetworkConfig {
        bootstrap: vec![coordinator],
        listen: vec![listen.parse().map_err(|e| format!("{listen}: {e}"))?],
        upnp: false,
        ..NetworkConfig::default()
    };
    let (client, mut events, _task) = network::start(keys.clone(), store.into(), config)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    emit(
        "started",
        serde_json::json!({ "peer": client.peer_id().to_string() }),
    );
    let status = wait_status(&client, "a relay slot", |s| {
        s.reachability == Reachability::Relayed
    })
    .await?;
    emit("reachability", status_json(&status));
    for (i, object) in ["first", "second"].into_iter().enumerate() {
        let seed = name.bytes().fold(i as u64, |h, b| h * 131 + u64::from(b));
        let (manifest, data) = signed_object(&keys, OBJECT, CHUNK, seed);
        client
            .provide(manifest.clone(), data)
            .await
            .map_err(|e| format!("providing: {e}"))?;
        let frame = manifest.to_frame().map_err(|e| e.to_string())?;
        write_atomic(&dir.join(format!("{name}.{object}")), &frame)?;
    }
    fetch(&client, &dir, other, "first").await?;
    // The second object after hole punching has ended either way (and, when it succeeded,
    // once the relayed connections it replaced have closed).
    let status = wait_status(&client, "a hole punch attempt", |s| {
        let ended = s.paths.hole_punches + s.paths.hole_punch_failures > 0;
        let direct = s.paths.fetched_direct > 0 || s.paths.hole_punches > 0;
        (ended || direct) && (!direct || s.relayed_open == 0)
    })
    .await?;
    emit("punched", status_json(&status));
    fetch(&client, &dir, other, "second").await?;
    // Keep serving until the other peer is done too.
    write_atomic(&dir.join(format!("{name}.done")), b"done")?;
    wait_file(&dir.join(format!("{other}.done"))).await?;
    let status = client.status().await.map_err(|e| e.to_string())?;
    emit("final", status_json(&status));
    let _ = client.shutdown().await;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, coordinator, dir, name, other, transport] = args.as_slice() else {
        eprintln!(
            "usage: canopy-nat-peer <coordinator address> <shared directory> <name> <other> <tcp|quic>"
        );
        return ExitCode::from(2);
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(coordinator, PathBuf::from(dir), name, other, transport)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            emit("error", serde_json::json!(e));
            eprintln!("canopy-nat-peer {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

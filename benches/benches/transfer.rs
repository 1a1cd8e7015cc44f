//! Object transfer benches: a 64 MiB object in 1 MiB chunks fetched between two real
//! canopy-node swarms on loopback, over TCP (Noise + Yamux) only and over QUIC only, each
//! against a plain tokio TCP copy of the same 64 MiB over loopback in the same run.
//!
//! A node serves an object from its own store once it has it, so every fetch needs a fresh
//! fetcher: each iteration starts one (bootstrapped from the provider and connected to it
//! before the clock starts), times `fetch_from` alone, then shuts it down. The timed fetch
//! therefore covers the provider lookup, chunk requests and responses, signature and blake3
//! checks of every chunk, reassembly and the write of the object into the fetcher's store; it
//! leaves out node start-up and the first connection. The providers' per-peer upload limit
//! (`serve_rate_bytes_per_sec`, 64 MiB/s by default) is lifted so the figures measure the
//! transport and the protocol, not the limiter. Throughput is in bytes of the object.
//!
//! ```text
//! cargo bench -p canopy-benches --bench transfer -- --warm-up-time 1 --measurement-time 3
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use canopy_node::network::{Multiaddr, NetworkConfig};
use canopy_protocol::{Keypair, SignedManifest};
use canopy_tests::harness::{TestNode, signed_object, spawn_node_with, wait_until};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

/// The object's size.
const OBJECT: usize = 64 << 20;
/// Its chunk size.
const CHUNK: u32 = 1 << 20;
/// How long a fetcher may take to connect to the provider.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// A loopback configuration listening on `listen` only, with the upload limit lifted.
fn config(listen: &str) -> NetworkConfig {
    NetworkConfig {
        listen: vec![listen.parse().expect("valid multiaddr")],
        serve_rate_bytes_per_sec: u64::MAX / 2,
        ..NetworkConfig::loopback()
    }
}

/// A plain TCP server on loopback that writes `data` to every connection and closes it.
async fn plain_tcp_server(data: Arc<Vec<u8>>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let data = Arc::clone(&data);
            tokio::spawn(async move {
                socket.write_all(&data).await.expect("write");
                socket.shutdown().await.expect("shutdown");
            });
        }
    });
    addr
}

/// One plain TCP copy: connect, read everything into a buffer of the right size.
async fn plain_tcp_copy(addr: std::net::SocketAddr) -> usize {
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    let mut buf = Vec::with_capacity(OBJECT);
    socket.read_to_end(&mut buf).await.expect("read");
    assert_eq!(buf.len(), OBJECT);
    buf.len()
}

/// A provider holding the object, listening on `listen` only.
async fn provider(listen: &str, manifest: &SignedManifest, data: &[u8]) -> TestNode {
    let node = spawn_node_with(&[], config(listen)).await;
    node.client
        .provide(manifest.clone(), data.to_vec())
        .await
        .expect("provide");
    node
}

/// Starts a fresh fetcher bootstrapped from `provider`, waits until they are connected, and
/// times one fetch of the object.
async fn timed_fetch(listen: &str, provider: &TestNode, manifest: &SignedManifest) -> Duration {
    let fetcher = spawn_node_with(&provider.addrs, config(listen)).await;
    let peer = provider.client.peer_id();
    let connected = wait_until(CONNECT_TIMEOUT, || async {
        fetcher
            .client
            .connected_peers()
            .await
            .is_ok_and(|p| p.contains(&peer))
    })
    .await;
    assert!(connected, "fetcher did not connect to the provider");
    let start = Instant::now();
    let fetched = fetcher
        .client
        .fetch_from(manifest.clone(), provider.addrs.clone())
        .await
        .expect("fetch");
    let elapsed = start.elapsed();
    assert_eq!(fetched.data.len(), OBJECT);
    assert_eq!(fetched.sources.get(&peer), Some(&(OBJECT / CHUNK as usize)));
    fetcher.client.shutdown().await.expect("shutdown");
    fetcher.task.await.expect("swarm task");
    elapsed
}

fn transfer(c: &mut Criterion) {
    let rt = Runtime::new().expect("tokio runtime");
    let publisher = Keypair::from_secret_bytes(&[9; 32]);
    let (manifest, data) = signed_object(&publisher, OBJECT, CHUNK, 1);
    let transports: [(&str, &str); 2] = [
        ("tcp", "/ip4/127.0.0.1/tcp/0"),
        ("quic", "/ip4/127.0.0.1/udp/0/quic-v1"),
    ];
    let (server, providers) = rt.block_on(async {
        let server = plain_tcp_server(Arc::new(data.clone())).await;
        let mut providers = Vec::new();
        for (_, listen) in transports {
            providers.push(provider(listen, &manifest, &data).await);
        }
        (server, providers)
    });
    let addrs: Vec<&Multiaddr> = providers.iter().flat_map(|p| &p.addrs).collect();
    println!("providers listen on {addrs:?}");

    let mut group = c.benchmark_group("transfer_64MiB_1MiB_chunks");
    group.throughput(Throughput::Bytes(OBJECT as u64));
    group.sample_size(10);
    // Each fetch needs a fresh node: flat sampling keeps the run to about ten fetches per
    // transport instead of criterion's 55 for ten linear samples.
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("baseline_plain_tokio_tcp", |b| {
        b.iter(|| rt.block_on(plain_tcp_copy(server)))
    });
    for ((name, listen), provider) in transports.into_iter().zip(&providers) {
        group.bench_function(format!("fetch_{name}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += timed_fetch(listen, provider, &manifest).await;
                    }
                    total
                })
            })
        });
    }
    group.finish();
    rt.block_on(async {
        for p in &providers {
            let _ = p.client.shutdown().await;
        }
    });
}

criterion_group!(benches, transfer);
criterion_main!(benches);

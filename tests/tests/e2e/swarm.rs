//! Swarms of real nodes on loopback: discovery through Kademlia, multi-provider object
//! transfer, a malicious provider, and a provider killed mid-transfer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use canopy_node::network::NetworkConfig;
use canopy_node::network::codec::{CHUNK_FRAME, PROTOCOL, read_frame, write_frame};
use canopy_protocol::codec::MAX_FRAME_LEN;
use canopy_protocol::messages::{ChunkRequest, ChunkResponse};
use canopy_protocol::{Digest, Envelope, Keypair, Message, SignedManifest};
use canopy_tests::harness::{TestNode, signed_object, spawn_node, spawn_node_as, wait_until};
use futures::{AsyncRead, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, identify, kad, noise, request_response, tcp, yamux,
};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Starts a bootstrap peer and `n` nodes that bootstrap from it, then has every node run a
/// DHT bootstrap so late joiners are known to early ones.
async fn swarm(n: usize) -> (TestNode, Vec<TestNode>) {
    let boot = spawn_node(&[]).await;
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(spawn_node(&boot.addrs[..1]).await);
    }
    for node in &nodes {
        // The first nodes may run it before anyone else is there: try until it takes.
        assert!(
            wait_until(TIMEOUT, || async { node.client.bootstrap().await.is_ok() }).await,
            "bootstrap never succeeded"
        );
    }
    (boot, nodes)
}

async fn knows_all(node: &TestNode, others: &[PeerId]) -> bool {
    let table = node.client.routing_table().await.unwrap_or_default();
    others
        .iter()
        .filter(|p| **p != node.client.peer_id())
        .all(|p| table.contains(p))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_discover_each_other_and_fetch_from_several_providers() {
    let (boot, nodes) = swarm(4).await;
    let mut everyone: Vec<PeerId> = nodes.iter().map(|n| n.client.peer_id()).collect();
    everyone.push(boot.client.peer_id());
    for node in nodes.iter().chain(std::iter::once(&boot)) {
        let mut tries = 0;
        let found = wait_until(TIMEOUT, || {
            tries += 1;
            let everyone = everyone.clone();
            async move {
                if tries % 20 == 0 {
                    let _ = node.client.bootstrap().await;
                }
                knows_all(node, &everyone).await
            }
        })
        .await;
        assert!(
            found,
            "{} did not discover every peer",
            node.client.peer_id()
        );
    }

    // Node 0 publishes; nodes 1 and 2 fetch it and so become providers; node 3 then fetches
    // from several of them at once.
    let publisher = &nodes[0];
    let (manifest, data) = signed_object(&publisher.keys, 4 << 20, 64 << 10, 1);
    publisher
        .client
        .provide(manifest.clone(), data.clone())
        .await
        .expect("provide");
    for node in &nodes[1..3] {
        let fetched = node.client.fetch(manifest.clone()).await.expect("fetch");
        assert_eq!(fetched.data, data);
    }
    let fetched = nodes[3]
        .client
        .fetch(manifest.clone())
        .await
        .expect("fetch");
    assert_eq!(fetched.data, data);
    assert_eq!(fetched.sources.values().sum::<usize>(), 64);
    assert!(
        fetched.sources.len() >= 2,
        "expected several providers, got {:?}",
        fetched.sources
    );
    // Every chunk was checked on the way in, and the object is now served by node 3 as well.
    assert!(nodes[3].store.has_object(manifest.manifest()));
    for node in &nodes {
        assert!(
            node.client
                .scores()
                .await
                .unwrap()
                .values()
                .all(|s| *s >= 0)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_completes_when_a_provider_is_killed_mid_transfer() {
    let (_boot, mut nodes) = swarm(3).await;
    let (manifest, data) = signed_object(&nodes[0].keys, 32 << 20, 16 << 10, 2);
    let total = data.len() as u64;
    for node in &nodes[..2] {
        node.client
            .provide(manifest.clone(), data.clone())
            .await
            .expect("provide");
    }
    let fetcher = nodes.pop().expect("three nodes");
    let client = fetcher.client.clone();
    let fetch = tokio::spawn({
        let manifest = manifest.clone();
        async move { client.fetch(manifest).await }
    });
    // Kill provider 0 as soon as chunks are flowing.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut at_kill = 0;
    while tokio::time::Instant::now() < deadline {
        at_kill = fetcher.client.status().await.expect("status").bytes_fetched;
        if at_kill > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let killed = nodes[0].client.peer_id();
    nodes[0].task.abort();
    assert!(
        at_kill > 0 && at_kill < total,
        "kill at {at_kill} of {total} bytes"
    );
    let fetched = tokio::time::timeout(TIMEOUT, fetch)
        .await
        .expect("fetch finishes")
        .expect("task")
        .expect("fetch succeeds");
    assert_eq!(fetched.data, data);
    let survivor = nodes[1].client.peer_id();
    assert!(fetched.sources.get(&survivor).copied().unwrap_or(0) > 0);
    assert!(
        fetched
            .sources
            .keys()
            .all(|p| *p == survivor || *p == killed),
        "{:?}",
        fetched.sources
    );
}

/// How the malicious provider answers requests for one object's chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Mischief {
    /// A raw chunk answer (as nodes send) carrying damaged bytes.
    RawCorruptChunk,
    /// A raw chunk answer naming another chunk than the one asked for.
    RawWrongName,
    /// A well-signed response carrying damaged chunk bytes.
    CorruptChunk,
    /// A length prefix followed by random bytes.
    Garbage,
    /// A length prefix of 4 GiB.
    Oversized,
    /// The right chunk, in an envelope signed by a key that is not the connection's.
    WrongKey,
}

/// Reads request frames; writes responses as raw bytes, so they can be anything at all.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, MAX_FRAME_LEN).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, MAX_FRAME_LEN).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Vec<u8>,
    ) -> std::io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &request).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Vec<u8>,
    ) -> std::io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&response).await?;
        io.close().await
    }
}

#[derive(NetworkBehaviour)]
struct EvilBehaviour {
    identify: identify::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    canopy: request_response::Behaviour<RawCodec>,
}

type Served = Arc<Mutex<HashMap<Mischief, usize>>>;

/// A provider that announces objects in the DHT like any node, then answers every chunk
/// request for them with its object's kind of mischief.
async fn run_evil_provider(
    keys: Keypair,
    bootstrap: Multiaddr,
    objects: Vec<(SignedManifest, Vec<u8>, Mischief)>,
    served: Served,
    ready: tokio::sync::oneshot::Sender<Multiaddr>,
) {
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keys.to_libp2p())
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("tcp")
        .with_behaviour(|key| {
            let peer = key.public().to_peer_id();
            let mut config = kad::Config::new(canopy_node::network::KAD_PROTOCOL);
            config.set_query_timeout(Duration::from_secs(20));
            let mut kad =
                kad::Behaviour::with_config(peer, kad::store::MemoryStore::new(peer), config);
            kad.set_mode(Some(kad::Mode::Server));
            EvilBehaviour {
                identify: identify::Behaviour::new(identify::Config::new(
                    canopy_node::network::IDENTIFY_PROTOCOL_VERSION.into(),
                    key.public(),
                )),
                kad,
                canopy: request_response::Behaviour::new(
                    [(PROTOCOL, request_response::ProtocolSupport::Full)],
                    request_response::Config::default(),
                ),
            }
        })
        .expect("behaviour")
        .build();
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("addr"))
        .expect("listen");
    let Some(libp2p::multiaddr::Protocol::P2p(boot_peer)) = bootstrap.iter().last() else {
        panic!("bootstrap address without a peer id");
    };
    swarm
        .behaviour_mut()
        .kad
        .add_address(&boot_peer, bootstrap.clone());
    swarm.dial(bootstrap).expect("dial");
    let mut chunks: HashMap<Digest, (Vec<u8>, Mischief)> = HashMap::new();
    let mut providing = 0;
    for (manifest, data, mischief) in &objects {
        let m = manifest.manifest();
        for (i, id) in m.chunks.iter().enumerate() {
            let start = i * m.chunk_size as usize;
            let end = start + m.chunk_len(i).expect("chunk");
            chunks.insert(*id, (data[start..end].to_vec(), *mischief));
        }
    }
    let imposter = Keypair::generate().expect("key");
    let mut ready = Some(ready);
    let mut joined = false;
    let mut listen: Option<Multiaddr> = None;
    // Like any provider it republishes its records, here every two seconds.
    let mut republish = tokio::time::interval(Duration::from_secs(2));
    loop {
        let event = tokio::select! {
            event = swarm.select_next_some() => event,
            _ = republish.tick() => {
                if ready.is_none() {
                    for (manifest, _, _) in &objects {
                        let key = canopy_node::network::provider_key(&manifest.manifest().root);
                        let _ = swarm.behaviour_mut().kad.start_providing(key);
                    }
                }
                continue;
            }
        };
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                listen = Some(address.clone());
                swarm.add_external_address(address);
            }
            SwarmEvent::ConnectionEstablished { .. } if !joined => {
                joined = true;
                let _ = swarm.behaviour_mut().kad.bootstrap();
            }
            SwarmEvent::Behaviour(EvilBehaviourEvent::Kad(
                kad::Event::OutboundQueryProgressed {
                    result: kad::QueryResult::Bootstrap(_),
                    step,
                    ..
                },
            )) if step.last => {
                for (manifest, _, _) in &objects {
                    swarm
                        .behaviour_mut()
                        .kad
                        .start_providing(canopy_node::network::provider_key(
                            &manifest.manifest().root,
                        ))
                        .expect("provide");
                }
            }
            SwarmEvent::Behaviour(EvilBehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                for addr in info.listen_addrs {
                    swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            SwarmEvent::Behaviour(EvilBehaviourEvent::Kad(
                kad::Event::OutboundQueryProgressed {
                    result: kad::QueryResult::StartProviding(result),
                    ..
                },
            )) => match result {
                Ok(_) if ready.is_some() => {
                    providing += 1;
                    if providing == objects.len()
                        && let Some(addr) = listen.clone()
                        && let Some(ready) = ready.take()
                    {
                        let me = *swarm.local_peer_id();
                        let _ = ready.send(addr.with(libp2p::multiaddr::Protocol::P2p(me)));
                    }
                }
                Ok(_) => {}
                // Not stored widely enough yet (the DHT is still filling): announce again.
                Err(e) => {
                    let _ = swarm.behaviour_mut().kad.start_providing(e.into_key());
                }
            },
            SwarmEvent::Behaviour(EvilBehaviourEvent::Canopy(
                request_response::Event::Message {
                    message:
                        request_response::Message::Request {
                            request, channel, ..
                        },
                    ..
                },
            )) => {
                let Ok(envelope) = Envelope::from_frame(&request) else {
                    continue;
                };
                let Ok(Message::ChunkRequest(ChunkRequest { id })) =
                    envelope.verify().and_then(|v| v.message())
                else {
                    continue;
                };
                let Some((chunk, mischief)) = chunks.get(&id).cloned() else {
                    continue;
                };
                *served.lock().expect("lock").entry(mischief).or_default() += 1;
                let seal = |signer: &Keypair, data: Vec<u8>| {
                    let env = Envelope::seal(
                        signer,
                        0,
                        7,
                        &Message::ChunkResponse(ChunkResponse {
                            id,
                            data: Some(data),
                        }),
                    )
                    .expect("seal")
                    .to_frame()
                    .expect("frame");
                    let mut out = (env.len() as u32).to_le_bytes().to_vec();
                    out.extend(env);
                    out
                };
                let raw = |name: Digest, data: Vec<u8>| {
                    let mut out = ((1 + 32 + 1 + data.len()) as u32).to_le_bytes().to_vec();
                    out.push(CHUNK_FRAME);
                    out.extend(name.as_bytes());
                    out.push(1);
                    out.extend(data);
                    out
                };
                let bytes = match mischief {
                    Mischief::RawCorruptChunk => {
                        let mut bad = chunk;
                        bad[0] ^= 0xff;
                        raw(id, bad)
                    }
                    Mischief::RawWrongName => raw(Digest::of(b"another chunk"), chunk),
                    Mischief::CorruptChunk => {
                        let mut bad = chunk;
                        bad[0] ^= 0xff;
                        seal(&keys, bad)
                    }
                    Mischief::Garbage => {
                        let mut out = 64u32.to_le_bytes().to_vec();
                        out.extend((0..64u8).map(|i| i.wrapping_mul(97)));
                        out
                    }
                    Mischief::Oversized => {
                        let mut out = u32::MAX.to_le_bytes().to_vec();
                        out.extend([0u8; 32]);
                        out
                    }
                    Mischief::WrongKey => seal(&imposter, chunk),
                };
                let _ = swarm.behaviour_mut().canopy.send_response(channel, bytes);
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malicious_provider_is_detected_penalised_and_banned() {
    let modes = [
        Mischief::RawCorruptChunk,
        Mischief::RawWrongName,
        Mischief::CorruptChunk,
        Mischief::Garbage,
        Mischief::Oversized,
        Mischief::WrongKey,
    ];
    // The source, and one fetcher per kind of mischief.
    let (boot, nodes) = swarm(1 + modes.len()).await;
    let honest = &nodes[0];
    let objects: Vec<(SignedManifest, Vec<u8>, Mischief)> = modes
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let (manifest, data) = signed_object(&honest.keys, 2 << 20, 32 << 10, 10 + i as u64);
            (manifest, data, *m)
        })
        .collect();
    for (manifest, data, _) in &objects {
        honest
            .client
            .provide(manifest.clone(), data.clone())
            .await
            .expect("provide");
    }
    let served: Served = Arc::default();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let evil_task = tokio::spawn(run_evil_provider(
        Keypair::generate().expect("key"),
        boot.addrs[0].clone(),
        objects.clone(),
        served.clone(),
        ready_tx,
    ));
    let evil_addr = tokio::time::timeout(TIMEOUT, ready_rx)
        .await
        .expect("evil provider announces in time")
        .expect("evil provider runs");
    let Some(libp2p::multiaddr::Protocol::P2p(evil)) = evil_addr.iter().last() else {
        panic!("address without peer id");
    };

    // Nodes 1 on each fetch one object, meeting one kind of mischief each.
    for (node, (manifest, data, mischief)) in nodes[1..].iter().zip(&objects) {
        // Both providers are named up front (as the coordinator names a result's sender), so
        // the malicious one is certainly asked; the DHT may list either, too.
        let fetched = node
            .client
            .fetch_from(
                manifest.clone(),
                vec![honest.addrs[0].clone(), evil_addr.clone()],
            )
            .await
            .unwrap_or_else(|e| panic!("fetch despite {mischief:?}: {e}"));
        assert_eq!(&fetched.data, data, "{mischief:?}");
        assert!(
            !fetched.sources.contains_key(&evil),
            "{mischief:?}: chunks from the malicious peer were accepted"
        );
        let score = node
            .client
            .scores()
            .await
            .expect("scores")
            .get(&evil)
            .copied();
        assert!(
            score.is_some_and(|s| s < 0),
            "{mischief:?} not penalised: {score:?}"
        );
    }
    let served = served.lock().expect("lock").clone();
    for mode in modes {
        assert!(
            served.get(&mode).copied().unwrap_or(0) > 0,
            "{mode:?} never exercised: {served:?}"
        );
    }

    // One node that meets the peer again and again bans it.
    let judge = &nodes[1];
    for (manifest, data, _) in &objects[1..] {
        let fetched = judge
            .client
            .fetch_from(
                manifest.clone(),
                vec![honest.addrs[0].clone(), evil_addr.clone()],
            )
            .await
            .expect("fetch");
        assert_eq!(&fetched.data, data);
    }
    let score = judge.client.scores().await.expect("scores")[&evil];
    assert!(
        score <= canopy_node::network::BAN_THRESHOLD,
        "score {score} after repeated offences"
    );
    assert!(
        wait_until(TIMEOUT, || async {
            !judge
                .client
                .connected_peers()
                .await
                .unwrap_or_default()
                .contains(&evil)
        })
        .await,
        "banned peer still connected"
    );
    evil_task.abort();
    // No node panicked: every swarm task is still running.
    for node in nodes.iter().chain(std::iter::once(&boot)) {
        assert!(!node.task.is_finished());
    }
}

/// A node whose bootstrap peer goes away comes back by itself when the peer returns at the
/// same address, as after a coordinator restart or a dropped network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_reconnects_when_its_bootstrap_peer_returns() {
    let boot_keys = Keypair::generate().expect("key");
    let tcp_only = NetworkConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")],
        ..NetworkConfig::loopback()
    };
    let boot = spawn_node_as(boot_keys.clone(), &[], tcp_only.clone()).await;
    let boot_id = boot.client.peer_id();
    let boot_addr = boot.addrs[0].clone();
    let node = spawn_node(std::slice::from_ref(&boot_addr)).await;
    let connected = |want: bool| {
        let client = node.client.clone();
        move || {
            let client = client.clone();
            async move {
                client
                    .connected_peers()
                    .await
                    .unwrap_or_default()
                    .contains(&boot_id)
                    == want
            }
        }
    };
    assert!(
        wait_until(TIMEOUT, connected(true)).await,
        "never connected"
    );

    boot.task.abort();
    let _ = boot.task.await;
    assert!(
        wait_until(TIMEOUT, connected(false)).await,
        "never noticed the drop"
    );

    // The bootstrap peer comes back as itself, on the same address.
    let back_config = NetworkConfig {
        listen: vec![
            boot_addr
                .iter()
                .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
                .collect(),
        ],
        ..tcp_only
    };
    let back = spawn_node_as(boot_keys, &[], back_config).await;
    assert_eq!(back.client.peer_id(), boot_id);
    assert!(
        wait_until(TIMEOUT, connected(true)).await,
        "the node did not reconnect to its returning bootstrap peer"
    );
    assert!(!node.task.is_finished());
}

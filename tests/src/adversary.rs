//! An adversarial volunteer for the Byzantine end-to-end tests: a real libp2p peer on loopback
//! that joins a running coordinator, takes training leases, trains honestly (so that every
//! attack starts from a real update), and then returns the update its script tells it to
//! corrupt. It speaks the same protocol as `canopy-node`, through the node library.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use canopy_node::network::{self, Client, NetworkConfig};
use canopy_node::store::ChunkStore;
use canopy_node::{objects, worker};
use canopy_protocol::messages::{
    AdapterInfo, AdapterKind, Capabilities, CorpusOutput, Join, JoinAck, LeaseGrant, LeaseRelease,
    LeaseRequest, ManifestRequest, ReleaseReason, TaskId, TaskOutput, TaskResult, TaskSpec, Tier,
    TrainOutput,
};
use canopy_protocol::{
    CodecSpec, Compressor, Digest, Keypair, Message, ObjectKind, SignedManifest,
};
use canopy_shaders::Cpu;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

/// What the adversary does with one task.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Attack {
    /// Returns its honest update (the later replay needs one on record).
    Honest,
    /// Multiplies its update by the factor.
    Scaled(f32),
    /// Returns the negated update.
    SignFlipped,
    /// Puts NaN into its update (sent as raw f32, so the NaN reaches the coordinator).
    NonFinite,
    /// Labels its update with the next model version.
    WrongVersion,
    /// Signs its update with a key that is not its own.
    WrongKey,
    /// Sends the update of its first task again, for a new lease.
    Replay,
    /// Corpus tasks only ([`Adversary::attack_corpus`]): changes one MinHash value.
    CorpusSignature,
    /// Returns its honest update, claiming a thousand times the tokens and compute time.
    InflatedClaim,
}

/// How the coordinator answered one attack.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The attack.
    pub attack: Attack,
    /// Whether the coordinator accepted the result.
    pub accepted: bool,
    /// The coordinator's reason for a refusal.
    pub reason: Option<String>,
}

/// A running adversary.
pub struct Adversary {
    client: Client,
    keys: Keypair,
    coordinator: PeerId,
    task: tokio::task::JoinHandle<()>,
    first_update: Option<SignedManifest>,
}

impl Adversary {
    /// Starts a peer with its own identity and store under `dir` and joins the coordinator at
    /// `addr` (ending in `/p2p/<peer id>`), asking until it is admitted.
    pub async fn join(dir: &Path, addr: &str) -> Self {
        Self::join_on(dir, addr, "/ip4/127.0.0.1").await
    }

    /// [`Adversary::join`] from `host` (see [`Adversary::start_on`]).
    pub async fn join_on(dir: &Path, addr: &str, host: &str) -> Self {
        let adversary = Self::start_on(dir, addr, host).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match adversary.try_join(None).await {
                Ok(ack) if ack.accepted => break,
                other => {
                    assert!(
                        Instant::now() < deadline,
                        "the coordinator never admitted the adversary: {other:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        adversary
    }

    /// Starts a peer with its own identity and store under `dir`, connected to the
    /// coordinator at `addr` (ending in `/p2p/<peer id>`) but not joined.
    pub async fn start(dir: &Path, addr: &str) -> Self {
        Self::start_on(dir, addr, "/ip4/127.0.0.1").await
    }

    /// [`Adversary::start`], listening on `host` (a multiaddr prefix such as `/ip6/::1`):
    /// dialling the coordinator's address on the same loopback (`addr`), it comes from
    /// there, and so, on one machine, from another network than volunteers on `127.0.0.1`.
    pub async fn start_on(dir: &Path, addr: &str, host: &str) -> Self {
        let addr: Multiaddr = addr.parse().expect("coordinator address");
        let coordinator = addr
            .iter()
            .find_map(|p| match p {
                Protocol::P2p(peer) => Some(peer),
                _ => None,
            })
            .expect("the address names the coordinator");
        std::fs::create_dir_all(dir).expect("adversary dir");
        let keys = Keypair::generate().expect("keys");
        let store = Arc::new(ChunkStore::open(dir, 1 << 30).expect("store"));
        let config = NetworkConfig {
            bootstrap: vec![addr],
            listen: vec![
                format!("{host}/tcp/0").parse().expect("listen address"),
                format!("{host}/udp/0/quic-v1")
                    .parse()
                    .expect("listen address"),
            ],
            ..NetworkConfig::loopback()
        };
        let (client, mut events, task) = network::start(keys.clone(), store, config)
            .await
            .expect("adversary swarm");
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        Self {
            client,
            keys,
            coordinator,
            task,
            first_update: None,
        }
    }

    /// Its signing identity (to forge invitations with, for one).
    pub fn keys(&self) -> &Keypair {
        &self.keys
    }

    /// Asks once to join, presenting `invite` if given; the coordinator's answer.
    pub async fn try_join(&self, invite: Option<String>) -> Result<JoinAck, String> {
        self.try_join_with(invite, None).await
    }

    /// The coordinator's peer id.
    pub fn coordinator(&self) -> PeerId {
        self.coordinator
    }

    /// [`Adversary::try_join`], presenting `work` as its proof of work on join.
    pub async fn try_join_with(
        &self,
        invite: Option<String>,
        work: Option<u64>,
    ) -> Result<JoinAck, String> {
        let join = Join {
            capabilities: Capabilities {
                adapters: vec![AdapterInfo {
                    name: "cpu".into(),
                    backend: "cpu".into(),
                    kind: AdapterKind::Cpu,
                    memory_bytes: 0,
                }],
                threads: 1,
                tier: Tier::Volunteer,
                software_version: canopy_node::VERSION.into(),
            },
            display_name: Some("mallory".into()),
            organisation: None,
            country: None,
            invite,
            work,
        };
        match self.ask(Message::Join(join)).await {
            Ok(Message::JoinAck(ack)) => Ok(ack),
            Ok(other) => Err(format!("answered a join with {:?}", other.kind())),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Its peer id.
    pub fn peer_id(&self) -> PeerId {
        self.keys.peer_id()
    }

    async fn ask(&self, message: Message) -> Result<Message, canopy_node::NodeError> {
        self.client.request(self.coordinator, 0, message).await
    }

    /// Fetches an object the coordinator signed.
    async fn object(&self, root: Digest, kind: ObjectKind) -> (SignedManifest, Vec<u8>) {
        let answer = self
            .ask(Message::ManifestRequest(ManifestRequest { root }))
            .await
            .expect("manifest request");
        let Message::ManifestResponse(resp) = answer else {
            panic!("answered a manifest request with {:?}", answer.kind());
        };
        let signed = resp.manifest.expect("the coordinator has the object");
        let manifest = signed.verify().expect("signed by the coordinator");
        assert_eq!(manifest.kind, kind);
        let hint = Multiaddr::empty().with(Protocol::P2p(self.coordinator));
        let fetched = self
            .client
            .fetch_from(signed.clone(), vec![hint])
            .await
            .expect("fetch");
        (signed, fetched.data)
    }

    /// Asks for leases until one is granted (`None` once `deadline` passes).
    async fn next_grant(&self, deadline: Instant) -> Option<LeaseGrant> {
        while Instant::now() < deadline {
            match self
                .ask(Message::LeaseRequest(LeaseRequest { slots: 1 }))
                .await
            {
                Ok(Message::LeaseGrant(grant)) => return Some(grant),
                Ok(Message::NoWork(none)) => {
                    let wait = u64::from(none.retry_after_ms).clamp(100, 1000);
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
                _ => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
        None
    }

    /// Hands a lease it does not want back to the coordinator.
    async fn hand_back(&self, grant: &LeaseGrant) {
        let release = Message::LeaseRelease(LeaseRelease {
            lease: grant.lease,
            reason: ReleaseReason::Shutdown,
        });
        let _ = self.ask(release).await;
    }

    /// Takes the next training lease, trains, applies `attack` and sends the result; returns
    /// the coordinator's verdict, or `None` when no lease came before `timeout` (the run is
    /// over).
    pub async fn attack(&mut self, attack: Attack, timeout: Duration) -> Option<Outcome> {
        let deadline = Instant::now() + timeout;
        let grant = loop {
            let grant = self.next_grant(deadline).await?;
            if matches!(grant.spec, TaskSpec::Train(_)) {
                break grant;
            }
            self.hand_back(&grant).await;
        };
        let TaskSpec::Train(spec) = &grant.spec else {
            unreachable!("only training grants are kept")
        };
        let (signed, bytes) = self.object(spec.model, ObjectKind::ModelWeights).await;
        let params = objects::params_from_object(signed.manifest(), &bytes).expect("weights");
        let mut text = Vec::new();
        for root in &spec.data_shards {
            text.extend(self.object(*root, ObjectKind::TrainingShard).await.1);
        }
        let settings = worker::inner_settings(spec);
        let start = params.clone();
        let report = tokio::task::spawn_blocking(move || {
            canopy_shaders::train_inner(&Cpu::new(), &start, &text, &settings, |_, _| {
                std::ops::ControlFlow::Continue(())
            })
        })
        .await
        .expect("training thread")
        .expect("training")
        .expect("not interrupted");
        let mut delta: Vec<f32> = params
            .values()
            .iter()
            .zip(report.params.values())
            .map(|(a, b)| a - b)
            .collect();
        let mut codec = spec.compression;
        let mut version = spec.model_version;
        let mut signer = self.keys.clone();
        match attack {
            Attack::Honest | Attack::Replay | Attack::CorpusSignature | Attack::InflatedClaim => {}
            Attack::Scaled(k) => delta.iter_mut().for_each(|d| *d *= k),
            Attack::SignFlipped => delta.iter_mut().for_each(|d| *d = -*d),
            Attack::NonFinite => codec = CodecSpec::F32,
            Attack::WrongVersion => version += 1,
            Attack::WrongKey => signer = Keypair::generate().expect("keys"),
        }
        let update = match (attack, &self.first_update) {
            (Attack::Replay, Some(first)) => first.clone(),
            (Attack::Replay, None) => panic!("a replay needs an earlier honest update"),
            _ => {
                let mut compressed = Compressor::new(codec, delta.len())
                    .and_then(|mut c| c.compress(&delta))
                    .expect("compress");
                if attack == Attack::NonFinite {
                    // The compressor refuses NaN, so the attacker writes it into the raw f32
                    // body itself.
                    for value in compressed.body.chunks_exact_mut(4).step_by(97) {
                        value.copy_from_slice(&f32::NAN.to_le_bytes());
                    }
                }
                let (signed, bytes) =
                    objects::update_object(&signer, &compressed, TaskId(grant.task.0), version)
                        .expect("update object");
                self.client
                    .provide(signed.clone(), bytes)
                    .await
                    .expect("provide");
                signed
            }
        };
        if attack == Attack::Honest && self.first_update.is_none() {
            self.first_update = Some(update.clone());
        }
        let claim = if attack == Attack::InflatedClaim {
            1000
        } else {
            1
        };
        let result = Message::TaskResult(TaskResult {
            lease: grant.lease,
            task: grant.task,
            output: TaskOutput::Train(Box::new(TrainOutput {
                update,
                train_loss: report.mean_loss,
                tokens: report.tokens * claim,
            })),
            compute_ms: (report.secs * 1000.0) as u64 * claim,
        });
        match self.ask(result).await {
            Ok(Message::ResultAck(ack)) => Some(Outcome {
                attack,
                accepted: ack.accepted,
                reason: ack.reason,
            }),
            other => panic!("the coordinator answered a result with {other:?}"),
        }
    }

    /// Takes the next corpus lease (handing back any training lease), computes the chunk
    /// honestly on the CPU path, changes one MinHash value of its first document, and sends
    /// that result under its own signature, as a lying volunteer would; returns the
    /// coordinator's answer, or `None` when no corpus lease came before `timeout`.
    pub async fn attack_corpus(&mut self, timeout: Duration) -> Option<Outcome> {
        let grant = self.next_grant(Instant::now() + timeout).await?;
        if !matches!(grant.spec, TaskSpec::Corpus(_)) {
            // Training has started: the corpus build is over.
            self.hand_back(&grant).await;
            return None;
        }
        let TaskSpec::Corpus(spec) = &grant.spec else {
            unreachable!("only corpus grants are kept")
        };
        let (_, frame) = self.object(spec.chunk, ObjectKind::CorpusChunk).await;
        let (mut result, _) =
            canopy_shaders::corpus::compute_chunk(&Cpu::new(), &frame, &spec.minhash)
                .expect("compute the chunk");
        if let Some(doc) = result.documents.first_mut() {
            doc.signature[0] ^= 1;
        }
        let bytes = result.encode().expect("encode");
        let manifest = canopy_protocol::Manifest::build(
            ObjectKind::CorpusResult,
            &bytes,
            canopy_protocol::chunk::DEFAULT_CHUNK_SIZE,
            Default::default(),
        )
        .expect("manifest");
        let root = manifest.root;
        let signed = manifest.sign(&self.keys).expect("sign");
        self.client.provide(signed, bytes).await.expect("provide");
        let message = Message::TaskResult(TaskResult {
            lease: grant.lease,
            task: grant.task,
            output: TaskOutput::Corpus(CorpusOutput {
                result: root,
                documents: result.documents.len() as u64,
            }),
            compute_ms: 10,
        });
        match self.ask(message).await {
            Ok(Message::ResultAck(ack)) => Some(Outcome {
                attack: Attack::CorpusSignature,
                accepted: ack.accepted,
                reason: ack.reason,
            }),
            other => panic!("the coordinator answered a corpus result with {other:?}"),
        }
    }

    /// Leaves the swarm.
    pub async fn shutdown(self) {
        let _ = self.client.shutdown().await;
        let _ = self.task.await;
    }
}

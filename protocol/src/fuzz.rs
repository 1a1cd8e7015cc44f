//! Entry points for the fuzz targets in `protocol/fuzz`: each takes untrusted bytes, runs them
//! through one decoder and everything a receiver would do next, and says whether the input was
//! accepted. None may panic, whatever the bytes. The same functions run over the seed corpus in
//! an ordinary test, so the targets are exercised on every `cargo test`.

use crate::chunk::{Reassembler, SignedManifest};
use crate::codec::{self, MAX_FRAME_LEN};
use crate::compress::CompressedUpdate;
use crate::envelope::Envelope;
use crate::governance::{DataSource, OptOut};
use crate::invite::Invite;
use crate::keys::Keypair;
use crate::messages::Message;

/// The fixed key the seeds are signed with (and the `invite` target trusts as issuer).
const SEED_KEY: [u8; 32] = [0x5e; 32];
/// The project the `invite` target's coordinator runs.
const SEED_PROJECT: &str = "fuzz";

/// What a receiver made of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Decoded and passed every check.
    Accepted,
    /// Refused with an error.
    Rejected,
}

fn outcome<T, E>(result: Result<T, E>) -> Outcome {
    match result {
        Ok(_) => Outcome::Accepted,
        Err(_) => Outcome::Rejected,
    }
}

/// A whole envelope: decode, verify, open the message.
pub fn envelope(data: &[u8]) -> Outcome {
    outcome(Envelope::from_frame(data).and_then(|e| e.verify().and_then(|v| v.message())))
}

/// A bare message payload: decode and validate.
pub fn message(data: &[u8]) -> Outcome {
    outcome(
        codec::decode::<Message, MAX_FRAME_LEN>(data)
            .map_err(|_| ())
            .and_then(|m| m.validate().map_err(|_| ())),
    )
}

/// A signed manifest: decode, verify, and start a bounded reassembly from it.
pub fn manifest(data: &[u8]) -> Outcome {
    outcome(SignedManifest::from_frame(data).and_then(|m| {
        let manifest = m.verify()?.clone();
        Reassembler::new(manifest, 1 << 20)
    }))
}

/// A compressed update object: decode it and decompress it at its declared length (bounded).
pub fn update(data: &[u8]) -> Outcome {
    outcome(
        CompressedUpdate::from_frame(data)
            .map_err(|_| ())
            .and_then(|u| {
                let len = usize::try_from(u.len).map_err(|_| ())?.min(1 << 20);
                u.decompress(len).map_err(|_| ())
            }),
    )
}

/// A governance record or an opt-out entry.
pub fn governance(data: &[u8]) -> Outcome {
    let source = outcome(DataSource::from_frame(data));
    let opt_out = outcome(OptOut::from_frame(data));
    if source == Outcome::Accepted || opt_out == Outcome::Accepted {
        Outcome::Accepted
    } else {
        Outcome::Rejected
    }
}

/// An invitation token as a node presents it: read as text, decode, verify against the
/// coordinator's key and project.
pub fn invite(data: &[u8]) -> Outcome {
    let issuer = Keypair::from_secret_bytes(&SEED_KEY).public();
    outcome(
        std::str::from_utf8(data)
            .map_err(|_| ())
            .and_then(|t| Invite::from_token(t).map_err(|_| ()))
            .and_then(|i| {
                i.verify(&issuer, SEED_PROJECT, 0)
                    .map(|_| ())
                    .map_err(|_| ())
            }),
    )
}

/// A fuzz target: untrusted bytes in, a verdict out.
pub type Target = fn(&[u8]) -> Outcome;

/// Every target by name, as the fuzz crate and the seed test list them.
pub const TARGETS: &[(&str, Target)] = &[
    ("envelope", envelope),
    ("message", message),
    ("manifest", manifest),
    ("update", update),
    ("governance", governance),
    ("invite", invite),
];

/// A seed input for one target: valid inputs are named `valid-*` and must be accepted, the
/// others must be rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// The target it feeds (a name in [`TARGETS`]).
    pub target: &'static str,
    /// The file name in `protocol/fuzz/corpus/<target>/`.
    pub name: String,
    /// The bytes.
    pub data: Vec<u8>,
}

impl Seed {
    /// Whether the target must accept it.
    pub fn should_accept(&self) -> bool {
        self.name.starts_with("valid-")
    }
}

/// The seed corpus, built deterministically (fixed keys; ed25519 signing is deterministic), so
/// the files in `protocol/fuzz/corpus` can be checked against it. Regenerate them with
/// `cargo run -p canopy-protocol --example fuzz_seeds`.
pub fn seeds() -> Result<Vec<Seed>, Box<dyn std::error::Error + Send + Sync>> {
    use std::collections::BTreeMap;

    use crate::chunk::{Manifest, ObjectKind};
    use crate::compress::{CodecSpec, Compressor};
    use crate::governance::{ConsentBasis, OptOutTarget};
    use crate::id::Digest;
    use crate::invite::InviteTerms;
    use crate::messages::{
        AdapterInfo, AdapterKind, Capabilities, ChunkRequest, Heartbeat, Join, TaskId, Tier,
    };

    let keys = Keypair::from_secret_bytes(&SEED_KEY);
    let join = Message::Join(Join {
        capabilities: Capabilities {
            adapters: vec![AdapterInfo {
                name: "llvmpipe".into(),
                backend: "vulkan".into(),
                kind: AdapterKind::Software,
                memory_bytes: 1 << 30,
            }],
            threads: 2,
            tier: Tier::Volunteer,
            software_version: "0.1.0".into(),
        },
        display_name: Some("ada".into()),
        organisation: None,
        country: Some("FR".into()),
        invite: None,
        work: None,
    });
    let heartbeat = Message::Heartbeat(Heartbeat {
        current_task: Some(TaskId(3)),
        progress: 0.25,
        tasks_done: 9,
        paused: false,
    });
    let bad_heartbeat = Message::Heartbeat(Heartbeat {
        progress: 7.0,
        ..match &heartbeat {
            Message::Heartbeat(h) => h.clone(),
            _ => unreachable!("built above"),
        }
    });
    let request = Message::ChunkRequest(ChunkRequest {
        id: Digest::of(b"chunk"),
    });

    let mut out = Vec::new();
    let mut push = |target: &'static str, name: &str, data: Vec<u8>| {
        out.push(Seed {
            target,
            name: name.to_string(),
            data,
        });
    };

    let sealed = Envelope::seal(&keys, 4, 1, &join)?.to_frame()?;
    let mut tampered = sealed.clone();
    if let Some(last) = tampered.last_mut() {
        *last ^= 0x01;
    }
    push("envelope", "valid-join", sealed.clone());
    push(
        "envelope",
        "valid-heartbeat",
        Envelope::seal(&keys, 4, 2, &heartbeat)?.to_frame()?,
    );
    push("envelope", "bad-tampered-payload", tampered);
    push(
        "envelope",
        "bad-truncated",
        sealed[..sealed.len() / 2].to_vec(),
    );
    push(
        "envelope",
        "bad-invalid-message",
        Envelope::seal(&keys, 4, 3, &bad_heartbeat)?.to_frame()?,
    );

    push("message", "valid-join", codec::encode(&join)?);
    push("message", "valid-chunk-request", codec::encode(&request)?);
    push(
        "message",
        "valid-credit-report",
        codec::encode(&Message::CreditReport(crate::messages::CreditReport {
            known: true,
            results: 7,
            accepted: 6,
            rejected: 1,
            verified: 2,
            tokens: 9216,
            compute_ms: 4200,
            round: 3,
        }))?,
    );
    push(
        "message",
        "bad-out-of-range",
        codec::encode(&bad_heartbeat)?,
    );
    push("message", "bad-empty", Vec::new());

    let object: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 251) as u8).collect();
    let meta = BTreeMap::from([("dtype".to_string(), "f32".to_string())]);
    let signed = Manifest::build(ObjectKind::ModelWeights, &object, 1024, meta)?.sign(&keys)?;
    let frame = signed.to_frame()?;
    let mut forged = frame.clone();
    if let Some(b) = forged.get_mut(20) {
        *b ^= 0x80;
    }
    push("manifest", "valid-weights", frame);
    push("manifest", "bad-forged", forged);

    let values: Vec<f32> = (0..1000)
        .map(|i| ((i as f32) * 0.37).sin() * 1e-2)
        .collect();
    for (name, spec) in [
        ("valid-f32", CodecSpec::F32),
        ("valid-f16", CodecSpec::F16),
        ("valid-int8", CodecSpec::default()),
        (
            "valid-topk",
            CodecSpec::TopK {
                density_ppm: 20_000,
            },
        ),
        (
            "valid-quant-2bit",
            CodecSpec::Quant {
                block: 128,
                bits: 2,
            },
        ),
        (
            "valid-topk-4bit",
            CodecSpec::TopKQuant {
                density_ppm: 20_000,
                bits: 4,
            },
        ),
    ] {
        let update = Compressor::new(spec, values.len()).and_then(|mut c| c.compress(&values))?;
        push("update", name, update.to_frame()?);
    }
    let mut short = Compressor::new(CodecSpec::default(), values.len())
        .and_then(|mut c| c.compress(&values))?;
    short.body.truncate(10);
    push("update", "bad-short-body", short.to_frame()?);

    let source = DataSource {
        name: "wiki-fr".into(),
        languages: vec!["fr".into()],
        license: "CC-BY-SA-4.0".into(),
        provenance_url: "https://dumps.example.org/frwiki".into(),
        consent_basis: ConsentBasis::OpenLicense,
        steward_contact: "data@example.org".into(),
    };
    push("governance", "valid-source", source.to_frame()?);
    push(
        "governance",
        "valid-opt-out",
        OptOut {
            target: OptOutTarget::UrlPattern("https://blog.example.com/*".into()),
            received_at: 1_700_000_000,
            requested_by: Some("author".into()),
            reason: None,
        }
        .to_frame()?,
    );
    push(
        "governance",
        "bad-no-license",
        DataSource {
            license: String::new(),
            ..source
        }
        .to_frame()?,
    );

    let terms = InviteTerms {
        project: SEED_PROJECT.into(),
        organisation: "Institut Pasteur".into(),
        tier: Tier::Datacenter,
        expires_at_ms: 1 << 50,
        max_uses: 10,
        id: [9; 16],
    };
    let token = Invite::issue(&keys, terms.clone())?.to_token()?;
    push("invite", "valid-token", token.clone().into_bytes());
    let other = Keypair::from_secret_bytes(&[0x42; 32]);
    push(
        "invite",
        "bad-other-issuer",
        Invite::issue(&other, terms.clone())?
            .to_token()?
            .into_bytes(),
    );
    let mut altered = Invite::issue(&keys, terms)?;
    altered.terms.max_uses = 1_000;
    push("invite", "bad-altered", altered.to_token()?.into_bytes());
    push(
        "invite",
        "bad-truncated",
        token.as_bytes()[..token.len() / 2].to_vec(),
    );
    Ok(out)
}

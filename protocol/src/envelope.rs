//! Signed envelopes: every message travels as a [`Header`] (protocol version, kind, sender,
//! round, nonce, payload length and blake3), the sender's signature over a domain-separation tag
//! plus the encoded header, and the payload. A receiver calls [`Envelope::verify`] (or
//! [`Envelope::verify_for`]) and decodes the payload only after that succeeds.

use serde::{Deserialize, Serialize};

use crate::PROTOCOL_VERSION;
use crate::codec::{self, MAX_FRAME_LEN};
use crate::error::EnvelopeError;
use crate::id::Digest;
use crate::keys::{Keypair, PublicKey, Signature};
use crate::messages::{Message, MessageKind};

/// Domain-separation tag in front of every signed header.
pub const ENVELOPE_DOMAIN: &[u8] = b"canopy/v1/envelope";

/// What the signature covers, besides the domain tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Protocol version of the payload's encoding.
    pub version: u16,
    /// Which message the payload is.
    pub kind: MessageKind,
    /// Who sent (and signed) it.
    pub sender: PublicKey,
    /// The training round (or epoch) it belongs to, so it cannot be replayed into another.
    pub round: u64,
    /// A value the sender never reuses within a round, so receivers can refuse replays.
    pub nonce: u64,
    /// Payload length in bytes.
    pub payload_len: u64,
    /// blake3 of the payload.
    pub payload_hash: Digest,
}

impl Header {
    fn signing_bytes(&self) -> Result<Vec<u8>, EnvelopeError> {
        let mut bytes = ENVELOPE_DOMAIN.to_vec();
        codec::encode_into(self, &mut bytes)?;
        Ok(bytes)
    }
}

/// A signed message as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    header: Header,
    signature: Signature,
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
}

impl Envelope {
    /// Encodes `message` and signs it for `round` with a fresh `nonce`.
    pub fn seal(
        keys: &Keypair,
        round: u64,
        nonce: u64,
        message: &Message,
    ) -> Result<Self, EnvelopeError> {
        let payload = codec::encode(message)?;
        Self::seal_raw(keys, message.kind(), round, nonce, payload)
    }

    /// Signs an already-encoded payload of the given kind.
    pub fn seal_raw(
        keys: &Keypair,
        kind: MessageKind,
        round: u64,
        nonce: u64,
        payload: Vec<u8>,
    ) -> Result<Self, EnvelopeError> {
        let header = Header {
            version: PROTOCOL_VERSION,
            kind,
            sender: keys.public(),
            round,
            nonce,
            payload_len: payload.len() as u64,
            payload_hash: Digest::of(&payload),
        };
        let signature = keys.sign(&header.signing_bytes()?);
        Ok(Self {
            header,
            signature,
            payload,
        })
    }

    /// The header, unverified: for routing and logs only.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// A name for this exact envelope (blake3 of its signed header), for replay caches.
    pub fn id(&self) -> Result<Digest, EnvelopeError> {
        Ok(Digest::of(&self.header.signing_bytes()?))
    }

    /// Checks version, payload length, payload hash and signature, in that order.
    pub fn verify(&self) -> Result<Verified<'_>, EnvelopeError> {
        self.check_unsigned()?;
        if !self
            .header
            .sender
            .verify(&self.header.signing_bytes()?, &self.signature)
        {
            return Err(EnvelopeError::BadSignature);
        }
        Ok(Verified { envelope: self })
    }

    /// [`Envelope::verify`], then checks the envelope is the kind and round expected here.
    pub fn verify_for(&self, kind: MessageKind, round: u64) -> Result<Verified<'_>, EnvelopeError> {
        let verified = self.verify()?;
        if self.header.kind != kind {
            return Err(EnvelopeError::WrongKind {
                expected: kind,
                found: self.header.kind,
            });
        }
        if self.header.round != round {
            return Err(EnvelopeError::WrongRound {
                expected: round,
                found: self.header.round,
            });
        }
        Ok(verified)
    }

    fn check_unsigned(&self) -> Result<(), EnvelopeError> {
        if self.header.version != PROTOCOL_VERSION {
            return Err(EnvelopeError::UnsupportedVersion {
                found: self.header.version,
                supported: PROTOCOL_VERSION,
            });
        }
        if self.header.payload_len != self.payload.len() as u64 {
            return Err(EnvelopeError::LengthMismatch {
                declared: self.header.payload_len,
                actual: self.payload.len() as u64,
            });
        }
        if Digest::of(&self.payload) != self.header.payload_hash {
            return Err(EnvelopeError::PayloadHash);
        }
        Ok(())
    }

    /// Encodes the envelope as a frame.
    pub fn to_frame(&self) -> Result<Vec<u8>, EnvelopeError> {
        Ok(codec::encode(self)?)
    }

    /// Decodes a frame of at most [`MAX_FRAME_LEN`] bytes. Nothing is trusted until
    /// [`Envelope::verify`].
    pub fn from_frame(frame: &[u8]) -> Result<Self, EnvelopeError> {
        Ok(codec::decode::<Self, MAX_FRAME_LEN>(frame)?)
    }
}

/// Verifies many envelopes at once with ed25519 batch verification, which is several times
/// faster per signature than one at a time. Returns one verdict per envelope; when the batch
/// fails, each is checked alone so the bad ones are named.
pub fn verify_batch(envelopes: &[Envelope]) -> Vec<Result<(), EnvelopeError>> {
    let mut verdicts: Vec<Result<(), EnvelopeError>> = Vec::with_capacity(envelopes.len());
    let mut messages = Vec::new();
    let mut signatures = Vec::new();
    let mut keys = Vec::new();
    for envelope in envelopes {
        let prepared = envelope
            .check_unsigned()
            .and_then(|()| envelope.header.signing_bytes());
        match prepared {
            Ok(bytes) => {
                messages.push(bytes);
                signatures.push(envelope.signature.dalek());
                keys.push(*envelope.header.sender.dalek());
                verdicts.push(Ok(()));
            }
            Err(e) => verdicts.push(Err(e)),
        }
    }
    let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    if ed25519_dalek::verify_batch(&refs, &signatures, &keys).is_err() {
        for (envelope, verdict) in envelopes.iter().zip(verdicts.iter_mut()) {
            if verdict.is_ok() {
                *verdict = envelope.verify().map(|_| ());
            }
        }
    }
    verdicts
}

/// An envelope whose signature and payload hash have been checked.
#[derive(Debug, Clone, Copy)]
pub struct Verified<'a> {
    envelope: &'a Envelope,
}

impl<'a> Verified<'a> {
    /// The checked header.
    pub fn header(&self) -> &'a Header {
        &self.envelope.header
    }

    /// Who signed it.
    pub fn sender(&self) -> &'a PublicKey {
        &self.envelope.header.sender
    }

    /// The checked payload bytes.
    pub fn payload(&self) -> &'a [u8] {
        &self.envelope.payload
    }

    /// Decodes the payload as a [`Message`] and checks it is the kind the header names and
    /// within the protocol's limits.
    pub fn message(&self) -> Result<Message, EnvelopeError> {
        let message: Message = codec::decode::<Message, MAX_FRAME_LEN>(self.payload())?;
        if message.kind() != self.header().kind {
            return Err(EnvelopeError::KindMismatch {
                header: self.header().kind,
                payload: message.kind(),
            });
        }
        message.validate()?;
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::messages::{ChunkRequest, ChunkResponse, Heartbeat, LeaseRequest, TaskId};

    fn keys() -> Keypair {
        Keypair::from_secret_bytes(&[9; 32])
    }

    fn heartbeat() -> Message {
        Message::Heartbeat(Heartbeat {
            current_task: Some(TaskId(4)),
            progress: 0.5,
            tasks_done: 12,
            paused: false,
        })
    }

    #[test]
    fn seal_verify_open() {
        let env = Envelope::seal(&keys(), 3, 77, &heartbeat()).unwrap();
        let frame = env.to_frame().unwrap();
        let back = Envelope::from_frame(&frame).unwrap();
        let verified = back.verify_for(MessageKind::Heartbeat, 3).unwrap();
        assert_eq!(verified.sender(), &keys().public());
        assert_eq!(verified.message().unwrap(), heartbeat());
    }

    #[test]
    fn replay_under_another_round_or_kind_fails() {
        let env = Envelope::seal(&keys(), 3, 1, &heartbeat()).unwrap();
        // Presented where another round or kind is expected.
        assert!(matches!(
            env.verify_for(MessageKind::Heartbeat, 4),
            Err(EnvelopeError::WrongRound {
                expected: 4,
                found: 3
            })
        ));
        assert!(matches!(
            env.verify_for(MessageKind::TaskResult, 3),
            Err(EnvelopeError::WrongKind { .. })
        ));
        // Relabelled to another round or kind: the signature no longer holds.
        let mut moved = env.clone();
        moved.header.round = 4;
        assert!(matches!(moved.verify(), Err(EnvelopeError::BadSignature)));
        let mut rekinded = env.clone();
        rekinded.header.kind = MessageKind::Join;
        assert!(matches!(
            rekinded.verify(),
            Err(EnvelopeError::BadSignature)
        ));
    }

    #[test]
    fn typed_errors_for_each_check() {
        let env = Envelope::seal(&keys(), 0, 0, &heartbeat()).unwrap();
        let mut v = env.clone();
        v.header.version = 99;
        assert!(matches!(
            v.verify(),
            Err(EnvelopeError::UnsupportedVersion { found: 99, .. })
        ));
        let mut l = env.clone();
        l.payload.push(0);
        assert!(matches!(
            l.verify(),
            Err(EnvelopeError::LengthMismatch { .. })
        ));
        let mut h = env.clone();
        h.payload[1] ^= 0x10;
        assert!(matches!(h.verify(), Err(EnvelopeError::PayloadHash)));
        let mut s = env.clone();
        s.signature = keys().sign(b"something else");
        assert!(matches!(s.verify(), Err(EnvelopeError::BadSignature)));
        // A correctly signed envelope whose payload is another kind than its header says.
        let lie = Envelope::seal_raw(
            &keys(),
            MessageKind::ChunkRequest,
            0,
            0,
            codec::encode(&heartbeat()).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            lie.verify().unwrap().message(),
            Err(EnvelopeError::KindMismatch { .. })
        ));
    }

    #[test]
    fn batch_names_the_bad_envelope() {
        let good: Vec<Envelope> = (0..6)
            .map(|i| {
                let k = Keypair::from_secret_bytes(&[i as u8 + 1; 32]);
                Envelope::seal(&k, 1, i, &Message::LeaseRequest(LeaseRequest { slots: 1 })).unwrap()
            })
            .collect();
        assert!(verify_batch(&good).iter().all(Result::is_ok));
        let mut mixed = good.clone();
        mixed[2].header.nonce += 1;
        mixed[4].payload.push(1);
        let verdicts = verify_batch(&mixed);
        let bad: Vec<usize> = verdicts
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_err())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(bad, vec![2, 4]);
        assert!(matches!(verdicts[2], Err(EnvelopeError::BadSignature)));
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            any::<[u8; 32]>().prop_map(|b| Message::ChunkRequest(ChunkRequest {
                id: Digest::from_bytes(b)
            })),
            (
                any::<[u8; 32]>(),
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300))
            )
                .prop_map(|(b, data)| Message::ChunkResponse(ChunkResponse {
                    id: Digest::from_bytes(b),
                    data
                })),
            (
                any::<Option<u64>>(),
                0f32..=1.0,
                any::<u64>(),
                any::<bool>()
            )
                .prop_map(|(t, progress, tasks_done, paused)| Message::Heartbeat(
                    Heartbeat {
                        current_task: t.map(TaskId),
                        progress,
                        tasks_done,
                        paused
                    }
                )),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn round_trip(msg in arb_message(), round: u64, nonce: u64, seed: [u8; 32]) {
            let keys = Keypair::from_secret_bytes(&seed);
            let env = Envelope::seal(&keys, round, nonce, &msg).unwrap();
            let back = Envelope::from_frame(&env.to_frame().unwrap()).unwrap();
            prop_assert_eq!(&back, &env);
            prop_assert_eq!(back.verify_for(msg.kind(), round).unwrap().message().unwrap(), msg);
        }

        /// Flipping any single bit of an envelope frame (header, signature or payload) is
        /// detected: decoding or verification fails.
        #[test]
        fn any_bit_flip_detected(msg in arb_message(), round: u64, bit: usize) {
            let env = Envelope::seal(&keys(), round, 5, &msg).unwrap();
            let frame = env.to_frame().unwrap();
            let mut bad = frame.clone();
            let bit = bit % (frame.len() * 8);
            bad[bit / 8] ^= 1 << (bit % 8);
            let verdict = Envelope::from_frame(&bad).and_then(|e| e.verify().map(|_| ()));
            prop_assert!(verdict.is_err(), "flip of bit {} of {} accepted", bit, frame.len() * 8);
        }

        /// Random bytes and truncated frames never panic the decoder.
        #[test]
        fn garbage_and_truncation_never_panic(garbage in proptest::collection::vec(any::<u8>(), 0..512), cut: usize, msg in arb_message()) {
            let _ = Envelope::from_frame(&garbage).map(|e| e.verify().map(|v| v.message().is_ok()));
            let frame = Envelope::seal(&keys(), 1, 1, &msg).unwrap().to_frame().unwrap();
            let cut = cut % frame.len();
            prop_assert!(Envelope::from_frame(&frame[..cut]).is_err());
        }
    }
}

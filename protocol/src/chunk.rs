//! Chunks and manifests: any object (model weights, a compressed update, a corpus shard) is split
//! into fixed-size chunks named by their blake3; a [`Manifest`] lists them in order with the
//! object's own blake3 (its root), and its producer signs it. A [`Reassembler`] takes chunks in
//! any order from anyone and accepts only those the manifest names.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::codec::{self, MAX_CHUNK_SIZE, MAX_MANIFEST_LEN};
use crate::error::ChunkError;
use crate::id::Digest;
use crate::keys::{Keypair, PublicKey, Signature};

/// Default chunk size: 1 MiB.
pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;
/// Smallest chunk size a manifest may declare.
pub const MIN_CHUNK_SIZE: u32 = 1 << 10;
/// Most chunks one manifest may list.
pub const MAX_CHUNKS: usize = 1 << 16;
/// Most metadata entries in a manifest.
pub const MAX_METADATA_ENTRIES: usize = 32;
/// Longest metadata key or value, in bytes.
pub const MAX_METADATA_TEXT: usize = 1024;

/// Domain-separation tag for manifest signatures.
pub const MANIFEST_DOMAIN: &[u8] = b"canopy/v1/manifest";

/// What an object is, so a receiver knows how to use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ObjectKind {
    /// A model version's weights.
    ModelWeights,
    /// A compressed pseudo-gradient.
    Update,
    /// A chunk of corpus documents.
    CorpusChunk,
    /// A corpus task's results (signals and signatures).
    CorpusResult,
    /// A tokenised training shard.
    TrainingShard,
    /// A coordinator checkpoint.
    Checkpoint,
    /// The compressed difference between two model versions, from which a node that holds
    /// the older one rebuilds the newer one exactly.
    ModelDelta,
    /// A project's tokenizer (its `tokenizer.json`), which made its training shards.
    Tokenizer,
}

/// The ordered list of an object's chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// What the object is.
    pub kind: ObjectKind,
    /// The object's length in bytes.
    pub total_len: u64,
    /// Every chunk but the last is exactly this long.
    pub chunk_size: u32,
    /// The chunks' blake3 digests, in order.
    #[serde(with = "crate::id::digest_list")]
    pub chunks: Vec<Digest>,
    /// blake3 of the whole object.
    pub root: Digest,
    /// Free-form labels (shape, dtype, round), bounded in size.
    pub metadata: BTreeMap<String, String>,
}

impl Manifest {
    /// Splits `data` into chunks of `chunk_size` and lists them.
    pub fn build(
        kind: ObjectKind,
        data: &[u8],
        chunk_size: u32,
        metadata: BTreeMap<String, String>,
    ) -> Result<Self, ChunkError> {
        check_chunk_size(chunk_size)?;
        let chunks = data.chunks(chunk_size as usize).map(Digest::of).collect();
        let manifest = Self {
            kind,
            total_len: data.len() as u64,
            chunk_size,
            chunks,
            root: Digest::of(data),
            metadata,
        };
        manifest.validate_structure()?;
        Ok(manifest)
    }

    /// Checks that the chunk size, the chunk count, the length and the metadata agree and stay
    /// within limits.
    pub fn validate_structure(&self) -> Result<(), ChunkError> {
        check_chunk_size(self.chunk_size)?;
        let expected = self.total_len.div_ceil(u64::from(self.chunk_size));
        if self.chunks.len() as u64 != expected {
            return Err(ChunkError::ChunkCount {
                listed: self.chunks.len(),
                expected,
            });
        }
        if self.chunks.len() > MAX_CHUNKS {
            return Err(ChunkError::TooLarge {
                len: self.total_len,
                max: MAX_CHUNKS as u64 * u64::from(self.chunk_size),
            });
        }
        if self.metadata.len() > MAX_METADATA_ENTRIES {
            return Err(ChunkError::Metadata("too many entries"));
        }
        if self
            .metadata
            .iter()
            .any(|(k, v)| k.len() > MAX_METADATA_TEXT || v.len() > MAX_METADATA_TEXT)
        {
            return Err(ChunkError::Metadata("key or value too long"));
        }
        Ok(())
    }

    /// The expected length of chunk `index`.
    pub fn chunk_len(&self, index: usize) -> Result<usize, ChunkError> {
        if index >= self.chunks.len() {
            return Err(ChunkError::IndexOutOfRange {
                index,
                count: self.chunks.len(),
            });
        }
        let start = index as u64 * u64::from(self.chunk_size);
        Ok((self.total_len - start).min(u64::from(self.chunk_size)) as usize)
    }

    /// Checks one chunk's bytes against position `index`.
    pub fn verify_chunk(&self, index: usize, data: &[u8]) -> Result<(), ChunkError> {
        let expected = self.chunk_len(index)?;
        if data.len() != expected {
            return Err(ChunkError::WrongLength {
                index,
                len: data.len(),
                expected,
            });
        }
        if Digest::of(data) != self.chunks[index] {
            return Err(ChunkError::HashMismatch { index });
        }
        Ok(())
    }

    /// Signs the manifest as its producer.
    pub fn sign(self, keys: &Keypair) -> Result<SignedManifest, ChunkError> {
        let signature = keys.sign(&signing_bytes(&self)?);
        Ok(SignedManifest {
            manifest: self,
            signer: keys.public(),
            signature,
        })
    }
}

fn check_chunk_size(size: u32) -> Result<(), ChunkError> {
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&size) {
        return Err(ChunkError::ChunkSize {
            size,
            min: MIN_CHUNK_SIZE,
            max: MAX_CHUNK_SIZE,
        });
    }
    Ok(())
}

fn signing_bytes(manifest: &Manifest) -> Result<Vec<u8>, ChunkError> {
    let mut bytes = MANIFEST_DOMAIN.to_vec();
    codec::encode_into(manifest, &mut bytes)?;
    Ok(bytes)
}

/// A manifest with its producer's signature. Its fields are reachable only after
/// [`SignedManifest::verify`], or through [`SignedManifest::manifest`] for display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest {
    manifest: Manifest,
    signer: PublicKey,
    signature: Signature,
}

impl SignedManifest {
    /// Checks the signature and the manifest's structure; returns the manifest on success.
    pub fn verify(&self) -> Result<&Manifest, ChunkError> {
        if !self
            .signer
            .verify(&signing_bytes(&self.manifest)?, &self.signature)
        {
            return Err(ChunkError::BadSignature);
        }
        self.manifest.validate_structure()?;
        Ok(&self.manifest)
    }

    /// The manifest, unverified (for logs and display; verify before use).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Who signed it.
    pub fn signer(&self) -> &PublicKey {
        &self.signer
    }

    /// Encodes it as a frame.
    pub fn to_frame(&self) -> Result<Vec<u8>, ChunkError> {
        Ok(codec::encode(self)?)
    }

    /// Decodes a frame (bounded by [`MAX_MANIFEST_LEN`]); call [`SignedManifest::verify`] next.
    pub fn from_frame(frame: &[u8]) -> Result<Self, ChunkError> {
        Ok(codec::decode::<Self, MAX_MANIFEST_LEN>(frame)?)
    }
}

/// How far a reassembly has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Chunks placed.
    pub chunks_done: usize,
    /// Chunks in the object.
    pub chunks_total: usize,
    /// Bytes placed.
    pub bytes_done: u64,
    /// Bytes in the object.
    pub bytes_total: u64,
}

impl Progress {
    /// Whether every chunk is in.
    pub fn is_complete(&self) -> bool {
        self.chunks_done == self.chunks_total
    }
}

/// What [`Reassembler::insert`] did with a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// The chunk filled this many positions (equal chunks fill every position they occupy).
    New(usize),
    /// Every position this chunk occupies was already filled.
    Duplicate,
}

/// Rebuilds an object from chunks that arrive in any order, from any peer.
#[derive(Debug)]
pub struct Reassembler {
    manifest: Manifest,
    buffer: Vec<u8>,
    filled: Vec<bool>,
    positions: HashMap<Digest, Vec<usize>>,
    chunks_done: usize,
    bytes_done: u64,
    /// The object's hash over the chunks in place from the start on, so the root is known as
    /// soon as the last chunk lands instead of taking one more pass over the whole object.
    root: blake3::Hasher,
    /// Chunks from the start that `root` covers.
    hashed: usize,
}

impl Reassembler {
    /// Starts a reassembly, refusing objects over `max_len` bytes before allocating for them.
    pub fn new(manifest: Manifest, max_len: u64) -> Result<Self, ChunkError> {
        manifest.validate_structure()?;
        if manifest.total_len > max_len {
            return Err(ChunkError::TooLarge {
                len: manifest.total_len,
                max: max_len,
            });
        }
        let mut positions: HashMap<Digest, Vec<usize>> = HashMap::new();
        for (index, id) in manifest.chunks.iter().enumerate() {
            positions.entry(*id).or_default().push(index);
        }
        Ok(Self {
            buffer: vec![0; manifest.total_len as usize],
            filled: vec![false; manifest.chunks.len()],
            positions,
            chunks_done: 0,
            bytes_done: 0,
            root: blake3::Hasher::new(),
            hashed: 0,
            manifest,
        })
    }

    /// The manifest being reassembled.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Places a chunk that claims to be `id`. The bytes are hashed: a chunk whose hash is not
    /// `id`, or that is not in the manifest, or has the wrong length, is refused and changes
    /// nothing.
    pub fn insert(&mut self, id: &Digest, data: &[u8]) -> Result<Inserted, ChunkError> {
        let positions = self.positions.get(id).ok_or(ChunkError::UnknownChunk)?;
        self.manifest.verify_chunk(positions[0], data)?;
        let mut placed = 0;
        for &index in positions {
            if self.filled[index] {
                continue;
            }
            let start = index * self.manifest.chunk_size as usize;
            self.buffer[start..start + data.len()].copy_from_slice(data);
            self.filled[index] = true;
            self.chunks_done += 1;
            self.bytes_done += data.len() as u64;
            placed += 1;
        }
        self.hash_in_order();
        Ok(if placed == 0 {
            Inserted::Duplicate
        } else {
            Inserted::New(placed)
        })
    }

    /// Feeds the root hash the chunks now in place right after those it covers.
    fn hash_in_order(&mut self) {
        let size = self.manifest.chunk_size as usize;
        while self.filled.get(self.hashed).copied().unwrap_or(false) {
            let start = self.hashed * size;
            let end = (start + size).min(self.buffer.len());
            self.root.update(&self.buffer[start..end]);
            self.hashed += 1;
        }
    }

    /// How far the reassembly has come.
    pub fn progress(&self) -> Progress {
        Progress {
            chunks_done: self.chunks_done,
            chunks_total: self.manifest.chunks.len(),
            bytes_done: self.bytes_done,
            bytes_total: self.manifest.total_len,
        }
    }

    /// The chunks still missing, as (position, digest), in order.
    pub fn missing(&self) -> impl Iterator<Item = (usize, Digest)> + '_ {
        self.filled
            .iter()
            .enumerate()
            .filter(|(_, f)| !**f)
            .map(|(i, _)| (i, self.manifest.chunks[i]))
    }

    /// The whole object, once every chunk is in and the root hash matches.
    pub fn finish(self) -> Result<Vec<u8>, ChunkError> {
        let missing = self.manifest.chunks.len() - self.chunks_done;
        if missing > 0 {
            return Err(ChunkError::Incomplete { missing });
        }
        if Digest::from_bytes(*self.root.finalize().as_bytes()) != self.manifest.root {
            return Err(ChunkError::RootMismatch);
        }
        Ok(self.buffer)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::seq::SliceRandom;
    use rand::{RngCore, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn object(len: usize, seed: u64) -> Vec<u8> {
        let mut data = vec![0u8; len];
        ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut data);
        data
    }

    fn meta() -> BTreeMap<String, String> {
        BTreeMap::from([("dtype".to_string(), "f32".to_string())])
    }

    #[test]
    fn chunk_lengths_and_counts() {
        let data = object(5000, 1);
        let m = Manifest::build(ObjectKind::Update, &data, 2048, meta()).unwrap();
        assert_eq!(m.chunks.len(), 3);
        assert_eq!(m.chunk_len(2).unwrap(), 5000 - 4096);
        assert!(matches!(
            m.chunk_len(3),
            Err(ChunkError::IndexOutOfRange { index: 3, count: 3 })
        ));
        let empty = Manifest::build(ObjectKind::Update, &[], 2048, meta()).unwrap();
        assert!(empty.chunks.is_empty());
        assert_eq!(
            Reassembler::new(empty, 10).unwrap().finish().unwrap(),
            Vec::<u8>::new()
        );
        assert!(matches!(
            Manifest::build(ObjectKind::Update, &data, 10, meta()),
            Err(ChunkError::ChunkSize { size: 10, .. })
        ));
        let mut short = m.clone();
        short.chunks.pop();
        assert!(matches!(
            short.validate_structure(),
            Err(ChunkError::ChunkCount {
                listed: 2,
                expected: 3
            })
        ));
    }

    /// The root is hashed as chunks land in order; whatever the order of arrival (a repeated
    /// chunk included), it is the whole object's, and a manifest whose root is not is refused.
    #[test]
    fn the_root_is_checked_whatever_the_order_of_arrival() {
        let mut data = object(10_000, 3);
        data.copy_within(..1024, 3072);
        let m = Manifest::build(ObjectKind::ModelWeights, &data, 1024, meta()).unwrap();
        let mut order: Vec<usize> = (0..m.chunks.len()).collect();
        order.reverse();
        order.swap(2, 7);
        let place = |m: &Manifest| {
            let mut r = Reassembler::new(m.clone(), 1 << 20).unwrap();
            for &i in &order {
                let start = i * 1024;
                let end = (start + 1024).min(data.len());
                r.insert(&m.chunks[i], &data[start..end]).unwrap();
            }
            r.finish()
        };
        assert_eq!(place(&m).unwrap(), data);
        let mut lying = m.clone();
        lying.root = Digest::of(b"another object");
        assert!(matches!(place(&lying), Err(ChunkError::RootMismatch)));
    }

    #[test]
    fn reassembler_refuses_bad_chunks_and_reports_progress() {
        let data = object(10_000, 2);
        let m = Manifest::build(ObjectKind::ModelWeights, &data, 1024, meta()).unwrap();
        let mut r = Reassembler::new(m.clone(), 1 << 20).unwrap();
        let chunk0 = &data[..1024];
        let mut bad = chunk0.to_vec();
        bad[3] ^= 1;
        assert!(matches!(
            r.insert(&m.chunks[0], &bad),
            Err(ChunkError::HashMismatch { index: 0 })
        ));
        assert!(matches!(
            r.insert(&Digest::of(&bad), &bad),
            Err(ChunkError::UnknownChunk)
        ));
        assert!(matches!(
            r.insert(&m.chunks[0], &data[..1000]),
            Err(ChunkError::WrongLength { .. })
        ));
        assert_eq!(r.progress().chunks_done, 0);
        assert_eq!(r.insert(&m.chunks[0], chunk0).unwrap(), Inserted::New(1));
        assert_eq!(r.insert(&m.chunks[0], chunk0).unwrap(), Inserted::Duplicate);
        let p = r.progress();
        assert_eq!((p.chunks_done, p.chunks_total, p.bytes_done), (1, 10, 1024));
        assert_eq!(r.missing().count(), 9);
        assert!(matches!(
            Reassembler::new(m, 100),
            Err(ChunkError::TooLarge { .. })
        ));
    }

    #[test]
    fn equal_chunks_fill_every_position() {
        let data = vec![0u8; 4096];
        let m = Manifest::build(ObjectKind::Checkpoint, &data, 1024, meta()).unwrap();
        let mut r = Reassembler::new(m.clone(), 1 << 20).unwrap();
        assert_eq!(
            r.insert(&m.chunks[0], &data[..1024]).unwrap(),
            Inserted::New(4)
        );
        assert_eq!(r.finish().unwrap(), data);
    }

    #[test]
    fn signed_manifest_round_trip_and_forgery() {
        let keys = Keypair::from_secret_bytes(&[3; 32]);
        let data = object(3000, 3);
        let signed = Manifest::build(ObjectKind::Update, &data, 1024, meta())
            .unwrap()
            .sign(&keys)
            .unwrap();
        let frame = signed.to_frame().unwrap();
        let back = SignedManifest::from_frame(&frame).unwrap();
        assert_eq!(back.verify().unwrap().root, Digest::of(&data));
        assert_eq!(back.signer(), &keys.public());
        // Same manifest, claimed by someone else.
        let other = Keypair::from_secret_bytes(&[4; 32]);
        let forged = SignedManifest {
            signer: other.public(),
            ..back
        };
        assert!(matches!(forged.verify(), Err(ChunkError::BadSignature)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Chunks in any order rebuild the object exactly.
        #[test]
        fn any_order_round_trip(len in 0usize..20_000, size_log in 10u32..13, seed: u64) {
            let data = object(len, seed);
            let m = Manifest::build(ObjectKind::CorpusChunk, &data, 1 << size_log, meta()).unwrap();
            let mut order: Vec<usize> = (0..m.chunks.len()).collect();
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
            let mut r = Reassembler::new(m.clone(), u64::MAX).unwrap();
            for i in order {
                let start = i * m.chunk_size as usize;
                let end = start + m.chunk_len(i).unwrap();
                r.insert(&m.chunks[i], &data[start..end]).unwrap();
            }
            prop_assert!(r.progress().is_complete());
            prop_assert_eq!(r.finish().unwrap(), data);
        }

        /// Flipping any single bit of a chunk is detected.
        #[test]
        fn chunk_bit_flip_detected(len in 1usize..4096, seed: u64, bit: usize) {
            let data = object(len, seed);
            let m = Manifest::build(ObjectKind::Update, &data, 4096, meta()).unwrap();
            let mut bad = data.clone();
            let bit = bit % (len * 8);
            bad[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(m.verify_chunk(0, &bad).is_err());
            let mut r = Reassembler::new(m.clone(), u64::MAX).unwrap();
            prop_assert!(r.insert(&m.chunks[0], &bad).is_err());
        }

        /// Flipping any single bit of a signed manifest's frame is detected.
        #[test]
        fn manifest_bit_flip_detected(len in 0usize..5000, seed: u64, bit: usize) {
            let keys = Keypair::from_secret_bytes(&[5; 32]);
            let data = object(len, seed);
            let frame = Manifest::build(ObjectKind::Update, &data, 1024, meta())
                .unwrap()
                .sign(&keys)
                .unwrap()
                .to_frame()
                .unwrap();
            let mut bad = frame.clone();
            let bit = bit % (bad.len() * 8);
            bad[bit / 8] ^= 1 << (bit % 8);
            let verdict = SignedManifest::from_frame(&bad).and_then(|m| m.verify().map(|_| ()));
            prop_assert!(verdict.is_err(), "flip of bit {} accepted", bit);
        }
    }
}

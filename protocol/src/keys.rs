//! Identities: an ed25519 [`Keypair`] that signs Canopy messages and is also the node's libp2p
//! identity, so a [`PeerId`] and a signing key are one thing.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{SigningKey, VerifyingKey};
pub use libp2p_identity::PeerId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

use crate::error::{KeyError, ParseError};
use crate::id::{fixed_bytes, from_hex, to_hex};

/// A node's signing identity. The secret half zeroizes on drop and never appears in `Debug`.
#[derive(Clone)]
pub struct Keypair {
    signing: SigningKey,
}

impl Keypair {
    /// A fresh keypair from the operating system's randomness.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|e| KeyError::Entropy(e.to_string()))?;
        Ok(Self::from_secret_bytes(&seed))
    }

    /// The keypair whose secret key is these 32 bytes (as stored by [`Keypair::secret_bytes`]).
    pub fn from_secret_bytes(secret: &[u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(secret),
        }
    }

    /// The secret key's 32 bytes, for storing the identity; zeroized when dropped.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key())
    }

    /// Signs `message` (callers prepend a domain-separation tag).
    pub fn sign(&self, message: &[u8]) -> Signature {
        use ed25519_dalek::Signer;
        Signature(self.signing.sign(message).to_bytes())
    }

    /// The same key as a libp2p identity, for the swarm.
    pub fn to_libp2p(&self) -> libp2p_identity::Keypair {
        let secret = self.secret_bytes();
        let mut bytes = *secret;
        // Accepts any 32 bytes; the copy is zeroized by libp2p-identity.
        match libp2p_identity::ed25519::SecretKey::try_from_bytes(&mut bytes) {
            Ok(sk) => libp2p_identity::ed25519::Keypair::from(sk).into(),
            Err(_) => unreachable!("every 32-byte string is an ed25519 secret key"),
        }
    }

    /// The libp2p peer id of this identity.
    pub fn peer_id(&self) -> PeerId {
        self.public().peer_id()
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair")
            .field("public", &self.public())
            .field("secret", &format_args!("SecretKey(..)"))
            .finish()
    }
}

/// An ed25519 public key: who sent a message, who signed a manifest, which peer a reputation
/// belongs to. Small-order keys are refused when parsed.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses a public key, refusing bytes that are not a curve point or are a weak key.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::InvalidPublicKey)?;
        if key.is_weak() {
            return Err(KeyError::WeakPublicKey);
        }
        Ok(Self(key))
    }

    /// The 32 bytes of the key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// Checks `signature` over `message` with strict rules (no malleable signatures).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        self.0.verify_strict(message, &sig).is_ok()
    }

    /// The libp2p peer id for this key.
    pub fn peer_id(&self) -> PeerId {
        self.to_libp2p().to_peer_id()
    }

    /// The key as a libp2p public key.
    pub fn to_libp2p(&self) -> libp2p_identity::PublicKey {
        match libp2p_identity::ed25519::PublicKey::try_from_bytes(self.as_bytes()) {
            Ok(pk) => pk.into(),
            Err(_) => unreachable!("a checked ed25519 key is a valid libp2p key"),
        }
    }

    /// The key embedded in an ed25519 peer id (libp2p inlines such keys in the id).
    pub fn from_peer_id(peer: &PeerId) -> Result<Self, KeyError> {
        let multihash = peer.as_ref();
        // Multihash code 0 is "identity": the digest is the protobuf-encoded public key.
        if multihash.code() != 0 {
            return Err(KeyError::NotEd25519PeerId);
        }
        let key = libp2p_identity::PublicKey::try_decode_protobuf(multihash.digest())
            .map_err(|_| KeyError::NotEd25519PeerId)?
            .try_into_ed25519()
            .map_err(|_| KeyError::NotEd25519PeerId)?;
        Self::from_bytes(&key.to_bytes())
    }

    /// The first five bytes in hex, for logs.
    pub fn fmt_short(&self) -> String {
        to_hex(&self.as_bytes()[..5])
    }

    /// The underlying dalek key (for batch verification).
    pub(crate) fn dalek(&self) -> &VerifyingKey {
        &self.0
    }
}

impl PartialOrd for PublicKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PublicKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(self.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fmt_short())
    }
}

/// Parses a public key from 64 hex digits.
impl FromStr for PublicKey {
    type Err = PublicKeyParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = from_hex::<32>(s)?;
        Ok(Self::from_bytes(&bytes)?)
    }
}

/// Why a textual public key does not parse.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublicKeyParseError {
    /// Not 64 hex digits.
    #[error(transparent)]
    Hex(#[from] ParseError),
    /// Hex, but not a usable key.
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        fixed_bytes::serialize(self.as_bytes(), serializer)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes: [u8; 32] = fixed_bytes::deserialize(deserializer)?;
        Self::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

/// An ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature([u8; 64]);

impl Signature {
    /// Wraps raw signature bytes.
    pub const fn from_bytes(bytes: [u8; 64]) -> Self {
        Self(bytes)
    }

    /// The raw 64 bytes.
    pub const fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }

    pub(crate) fn dalek(&self) -> ed25519_dalek::Signature {
        ed25519_dalek::Signature::from_bytes(&self.0)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", to_hex(&self.0[..5]))
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        fixed_bytes::serialize(&self.0, serializer)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        fixed_bytes::deserialize(deserializer).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_is_the_signing_key() {
        let keys = Keypair::from_secret_bytes(&[7u8; 32]);
        let libp2p = keys.to_libp2p();
        assert_eq!(libp2p.public().to_peer_id(), keys.peer_id());
        assert_eq!(
            PublicKey::from_peer_id(&keys.peer_id()).unwrap(),
            keys.public()
        );
        // A signature made through libp2p verifies as a Canopy signature and back.
        let sig = libp2p.sign(b"hello").unwrap();
        let sig = Signature::from_bytes(sig.try_into().unwrap());
        assert!(keys.public().verify(b"hello", &sig));
        assert!(
            libp2p
                .public()
                .verify(b"again", keys.sign(b"again").as_bytes())
        );
    }

    #[test]
    fn secret_never_printed() {
        let keys = Keypair::from_secret_bytes(&[0x42; 32]);
        let shown = format!("{keys:?} {keys:#?}");
        assert!(shown.contains("SecretKey(..)"));
        assert!(!shown.contains(&to_hex(keys.secret_bytes().as_ref())));
        assert!(!shown.contains("66, 66"));
    }

    #[test]
    fn generated_keys_differ_and_restore() {
        let a = Keypair::generate().unwrap();
        let b = Keypair::generate().unwrap();
        assert_ne!(a.public(), b.public());
        let restored = Keypair::from_secret_bytes(&a.secret_bytes());
        assert_eq!(restored.public(), a.public());
    }

    #[test]
    fn weak_and_invalid_keys_refused() {
        // The identity point is a small-order key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(matches!(
            PublicKey::from_bytes(&identity),
            Err(KeyError::WeakPublicKey)
        ));
        let text = Keypair::from_secret_bytes(&[1; 32]).public().to_string();
        assert_eq!(
            text.parse::<PublicKey>().unwrap(),
            Keypair::from_secret_bytes(&[1; 32]).public()
        );
        assert!("00".parse::<PublicKey>().is_err());
    }
}

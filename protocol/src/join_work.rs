//! Proof of work on join: a project may ask each new identity to find a nonce whose hash,
//! bound to the coordinator's and the node's peer ids, starts with a number of zero bits.
//! One identity then costs a moment of one core (about 2^bits hashes), a thousand of them a
//! thousand times that; the work cannot be reused for another identity or another
//! coordinator, and checking it costs one hash.

use crate::keys::PeerId;

/// The most zero bits a project may ask for (about 2^24 hashes);
/// a node never searches for more, whatever a coordinator says.
pub const MAX_JOIN_WORK_BITS: u8 = 24;

/// Domain separation for the hash.
const DOMAIN: &[u8] = b"canopy join work v1";

/// The hash a nonce is judged by.
fn digest(coordinator: &PeerId, node: &PeerId, nonce: u64) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(DOMAIN);
    for id in [coordinator, node] {
        let bytes = id.to_bytes();
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    h.update(&nonce.to_le_bytes());
    *h.finalize().as_bytes()
}

/// Leading zero bits of `hash`.
fn leading_zeros(hash: &[u8; 32]) -> u32 {
    let mut zeros = 0;
    for byte in hash {
        zeros += byte.leading_zeros();
        if *byte != 0 {
            break;
        }
    }
    zeros
}

/// Whether `nonce` is work of at least `bits` zero bits for `node` joining `coordinator`.
/// Zero bits asks for nothing; more than [`MAX_JOIN_WORK_BITS`] is never met.
pub fn meets(coordinator: &PeerId, node: &PeerId, nonce: u64, bits: u8) -> bool {
    bits == 0
        || (bits <= MAX_JOIN_WORK_BITS
            && leading_zeros(&digest(coordinator, node, nonce)) >= u32::from(bits))
}

/// Finds a nonce meeting `bits` for `node` joining `coordinator` (about 2^bits hashes), or
/// `None` when `bits` is above [`MAX_JOIN_WORK_BITS`].
pub fn solve(coordinator: &PeerId, node: &PeerId, bits: u8) -> Option<u64> {
    if bits > MAX_JOIN_WORK_BITS {
        return None;
    }
    (0..=u64::MAX).find(|&nonce| meets(coordinator, node, nonce, bits))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Keypair;

    fn peer() -> PeerId {
        Keypair::generate().expect("keys").peer_id()
    }

    #[test]
    fn a_solved_nonce_meets_its_bits_and_binds_both_identities() {
        let (coordinator, node) = (peer(), peer());
        let nonce = solve(&coordinator, &node, 12).expect("solvable");
        assert!(meets(&coordinator, &node, nonce, 12));
        assert!(leading_zeros(&digest(&coordinator, &node, nonce)) >= 12);
        // The same nonce is (almost surely) no work for another identity or coordinator:
        // over a few tries at least one of them fails, as 1 in 4,096 would pass by chance.
        let others = (0..4).filter(|_| meets(&coordinator, &peer(), nonce, 12));
        assert!(others.count() < 4);
        let elsewhere = (0..4).filter(|_| meets(&peer(), &node, nonce, 12));
        assert!(elsewhere.count() < 4);
    }

    #[test]
    fn no_bits_asks_nothing_and_too_many_are_never_met() {
        let (coordinator, node) = (peer(), peer());
        assert!(meets(&coordinator, &node, 0, 0));
        assert_eq!(solve(&coordinator, &node, 0), Some(0));
        assert_eq!(solve(&coordinator, &node, MAX_JOIN_WORK_BITS + 1), None);
        assert!(!meets(&coordinator, &node, 0, MAX_JOIN_WORK_BITS + 1));
        assert!(!meets(&coordinator, &node, 0, u8::MAX));
    }

    #[test]
    fn the_work_grows_with_the_bits() {
        // Over many identities, the mean nonce found is about 2^bits.
        let coordinator = peer();
        let mean = |bits: u8| {
            let n = 64;
            let total: u64 = (0..n)
                .map(|_| solve(&coordinator, &peer(), bits).expect("solvable"))
                .sum();
            total as f64 / n as f64
        };
        let (small, large) = (mean(2), mean(8));
        assert!(small < 16.0, "2 bits: mean nonce {small}");
        assert!(
            (100.0..1000.0).contains(&large),
            "8 bits: mean nonce {large}"
        );
    }

    #[test]
    fn leading_zeros_counts_across_bytes() {
        let mut h = [0xffu8; 32];
        assert_eq!(leading_zeros(&h), 0);
        h[0] = 0;
        h[1] = 0b0001_0000;
        assert_eq!(leading_zeros(&h), 11);
        assert_eq!(leading_zeros(&[0; 32]), 256);
    }
}

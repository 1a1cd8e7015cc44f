//! Per-peer reputation as this node sees it: offences lower a score, and a peer whose score
//! falls to [`BAN_THRESHOLD`] is banned (disconnected and refused). The map is bounded.

use std::collections::HashMap;

use libp2p::PeerId;

/// Score at or below which a peer is banned.
pub const BAN_THRESHOLD: i64 = -100;
/// Most peers tracked at once; beyond it, the best-behaved entries are forgotten first.
const MAX_TRACKED: usize = 4096;

/// Ways a peer can misbehave, with what each costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offence {
    /// Served a chunk that does not match the manifest.
    BadChunk,
    /// Sent a frame that does not decode, or an oversized one.
    MalformedFrame,
    /// Sent an envelope signed by a key other than its connection's.
    WrongKey,
    /// Sent a message that fails verification or validation.
    InvalidMessage,
    /// Let a request time out.
    Timeout,
}

impl Offence {
    fn cost(self) -> i64 {
        match self {
            Offence::BadChunk | Offence::MalformedFrame | Offence::InvalidMessage => 40,
            Offence::WrongKey => 60,
            Offence::Timeout => 5,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Scores {
    scores: HashMap<PeerId, i64>,
}

impl Scores {
    /// Lowers `peer`'s score; returns true when this offence gets it banned.
    pub(crate) fn penalise(&mut self, peer: PeerId, offence: Offence) -> bool {
        if self.scores.len() >= MAX_TRACKED && !self.scores.contains_key(&peer) {
            let best = self.scores.iter().max_by_key(|(_, s)| **s).map(|(p, _)| *p);
            if let Some(best) = best {
                self.scores.remove(&best);
            }
        }
        let score = self.scores.entry(peer).or_insert(0);
        let before = *score;
        *score -= offence.cost();
        tracing::warn!(%peer, ?offence, score = *score, "peer penalised");
        before > BAN_THRESHOLD && *score <= BAN_THRESHOLD
    }

    pub(crate) fn is_banned(&self, peer: &PeerId) -> bool {
        self.scores.get(peer).is_some_and(|s| *s <= BAN_THRESHOLD)
    }

    pub(crate) fn snapshot(&self) -> HashMap<PeerId, i64> {
        self.scores.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_bad_chunks_ban() {
        let mut s = Scores::default();
        let p = PeerId::random();
        assert!(!s.penalise(p, Offence::BadChunk));
        assert!(!s.penalise(p, Offence::BadChunk));
        assert!(s.penalise(p, Offence::BadChunk));
        assert!(s.is_banned(&p));
        assert!(!s.penalise(p, Offence::BadChunk), "banned once");
    }
}

//! The upload limits when serving chunks: one per peer and one for every peer together. A
//! chunk over a limit is not refused (the peer would give up on this provider): its answer
//! waits in a short queue until the limits allow it, so uploads are paced, not dropped.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use canopy_protocol::Digest;

use super::codec::Response;
use libp2p::PeerId;
use libp2p::request_response::ResponseChannel;
use libp2p::swarm::ConnectionId;

use super::rate::TokenBucket;

/// Peers whose serving rate is tracked, at most.
const MAX_RATE_BUCKETS: usize = 4096;
/// Chunk answers waiting for the upload limits, at most (beyond, a chunk is answered absent
/// and the peer asks another provider).
pub(crate) const MAX_DELAYED: usize = 1024;

/// A chunk answer waiting for the upload limits.
pub(crate) struct Delayed {
    pub(crate) peer: PeerId,
    pub(crate) connection: ConnectionId,
    pub(crate) channel: ResponseChannel<Response>,
    pub(crate) id: Digest,
    pub(crate) len: usize,
}

/// Per-peer and total upload pacing.
pub(crate) struct UploadLimits {
    per_peer_rate: u64,
    per_peer: HashMap<PeerId, TokenBucket>,
    total: Option<TokenBucket>,
    delayed: VecDeque<Delayed>,
}

impl UploadLimits {
    /// Limits of `per_peer_rate` bytes a second to each peer and, when not 0, `total_rate`
    /// to all.
    pub(crate) fn new(per_peer_rate: u64, total_rate: u64) -> Self {
        Self {
            per_peer_rate,
            per_peer: HashMap::new(),
            total: (total_rate > 0).then(|| TokenBucket::new(total_rate, Instant::now())),
            delayed: VecDeque::new(),
        }
    }

    /// Whether `bytes` may go to `peer` now; if so they are counted against both limits.
    pub(crate) fn admit(&mut self, peer: PeerId, bytes: usize, now: Instant) -> bool {
        if self.per_peer.len() >= MAX_RATE_BUCKETS && !self.per_peer.contains_key(&peer) {
            self.per_peer
                .retain(|_, b| now.duration_since(b.last) < Duration::from_secs(10));
            if self.per_peer.len() >= MAX_RATE_BUCKETS {
                return false;
            }
        }
        let rate = self.per_peer_rate;
        let own = self
            .per_peer
            .entry(peer)
            .or_insert_with(|| TokenBucket::new(rate, now));
        if !own.ready(now) || !self.total.as_mut().is_none_or(|t| t.ready(now)) {
            return false;
        }
        own.spend(bytes, now);
        if let Some(total) = &mut self.total {
            total.spend(bytes, now);
        }
        true
    }

    /// Queues an answer until the limits allow it; gives it back when the queue is full.
    pub(crate) fn defer(&mut self, delayed: Delayed) -> Option<Delayed> {
        if self.delayed.len() >= MAX_DELAYED {
            return Some(delayed);
        }
        self.delayed.push_back(delayed);
        None
    }

    /// Whether answers wait.
    pub(crate) fn is_pacing(&self) -> bool {
        !self.delayed.is_empty()
    }

    /// The next waiting answer the limits allow now, in order; answers whose requester gave
    /// up are dropped on the way.
    pub(crate) fn next_due(&mut self, now: Instant) -> Option<Delayed> {
        loop {
            let front = self.delayed.front()?;
            if !front.channel.is_open() {
                self.delayed.pop_front();
                continue;
            }
            let (peer, len) = (front.peer, front.len);
            return if self.admit(peer, len, now) {
                self.delayed.pop_front()
            } else {
                None
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_limit_holds_every_peer_back_and_the_per_peer_limit_one() {
        let t0 = Instant::now();
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut limits = UploadLimits::new(1 << 20, 1000);
        assert!(limits.admit(a, 4000, t0), "one chunk over the total goes");
        assert!(!limits.admit(b, 10, t0), "then every peer waits");
        assert!(limits.admit(b, 10, t0 + Duration::from_millis(3100)));
        let mut limits = UploadLimits::new(1000, 0);
        assert!(limits.admit(a, 4000, t0));
        assert!(
            !limits.admit(a, 10, t0 + Duration::from_secs(1)),
            "a is in debt"
        );
        assert!(limits.admit(b, 10, t0), "b is not");
    }
}

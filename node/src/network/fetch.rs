//! The state of one object fetch: which chunks are still wanted, which peers provide them, what
//! is in flight to whom. The event loop feeds it providers and responses and asks it what to
//! request next; it never touches the network itself.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use canopy_protocol::error::ChunkError;
use canopy_protocol::{Digest, Manifest, Reassembler};
use libp2p::PeerId;
use tokio::sync::oneshot;

use crate::error::NodeError;

/// A fetched object and who served it.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The object, checked against its manifest.
    pub data: Vec<u8>,
    /// Chunks served, by peer (empty when the object was already stored locally).
    pub sources: HashMap<PeerId, usize>,
    /// Bytes that came over direct connections.
    pub direct_bytes: u64,
    /// Bytes that came through a relay.
    pub relayed_bytes: u64,
}

/// Largest object a node fetches into memory.
pub(crate) const MAX_OBJECT_LEN: u64 = 4 << 30;
/// Provider lookups before a fetch with no providers left gives up.
pub(crate) const MAX_PROVIDER_QUERIES: u32 = 5;
/// Chunk requests a fetch keeps in flight to a peer at first. The window grows by one with
/// each answer that comes back within [`QUICK`] (up to the configured most), and halves with
/// each slower than [`SLOW`] or failed: a fast peer gets requests back to back, while a slow
/// link is never asked for more than it delivers well within the request timeout.
pub(crate) const START_WINDOW: usize = 4;
/// An answer this quick grows the peer's window.
const QUICK: Duration = Duration::from_secs(1);
/// An answer this slow shrinks it.
const SLOW: Duration = Duration::from_secs(4);

pub(crate) struct Fetch {
    pub(crate) reassembler: Reassembler,
    /// Chunk positions not yet placed nor in flight.
    queue: VecDeque<usize>,
    /// Peers to ask, in round-robin order.
    providers: Vec<PeerId>,
    /// Peers this fetch no longer asks (bad data, no data, banned).
    excluded: HashSet<PeerId>,
    /// Peers not asked again until a provider lookup names them again: a request to them
    /// failed on the way (a connection reset or refused) without their doing anything wrong.
    set_aside: HashSet<PeerId>,
    in_flight: HashMap<PeerId, usize>,
    /// Requests each peer may have in flight now (see [`START_WINDOW`]).
    windows: HashMap<PeerId, usize>,
    /// Chunks placed, by the peer that served them.
    pub(crate) sources: HashMap<PeerId, usize>,
    /// Bytes placed, by kind of path: direct, relayed.
    pub(crate) direct_bytes: u64,
    pub(crate) relayed_bytes: u64,
    next: usize,
    /// Whether chunk requests have started: they wait for the first provider lookup to end (or
    /// for enough providers, or a short while) so the load spreads over every provider.
    pub(crate) started: bool,
    /// When the first provider was found.
    pub(crate) first_provider_at: Option<std::time::Instant>,
    pub(crate) provider_queries: u32,
    pub(crate) query_running: bool,
    pub(crate) reply: Option<oneshot::Sender<Result<Fetched, NodeError>>>,
    /// Stores chunks as they arrive (started with the first one).
    pub(crate) writer: Option<std::sync::mpsc::SyncSender<super::writer::WriteJob>>,
}

impl Fetch {
    /// Starts a fetch of `manifest`'s object (refused when it is over [`MAX_OBJECT_LEN`]).
    pub(crate) fn reassembler(manifest: Manifest) -> Result<Reassembler, ChunkError> {
        Reassembler::new(manifest, MAX_OBJECT_LEN)
    }

    pub(crate) fn new(
        reassembler: Reassembler,
        reply: oneshot::Sender<Result<Fetched, NodeError>>,
    ) -> Self {
        let queue = (0..reassembler.manifest().chunks.len()).collect();
        Self {
            reassembler,
            queue,
            providers: Vec::new(),
            excluded: HashSet::new(),
            set_aside: HashSet::new(),
            in_flight: HashMap::new(),
            windows: HashMap::new(),
            sources: HashMap::new(),
            direct_bytes: 0,
            relayed_bytes: 0,
            next: 0,
            started: false,
            first_provider_at: None,
            provider_queries: 0,
            query_running: false,
            reply: Some(reply),
            writer: None,
        }
    }

    pub(crate) fn root(&self) -> Digest {
        self.reassembler.manifest().root
    }

    /// Adds providers found in the DHT (or known otherwise), set-aside ones among them again;
    /// returns how many were new.
    pub(crate) fn add_providers(&mut self, peers: impl IntoIterator<Item = PeerId>) -> usize {
        let mut added = 0;
        for peer in peers {
            self.set_aside.remove(&peer);
            if !self.excluded.contains(&peer) && !self.providers.contains(&peer) {
                self.providers.push(peer);
                self.first_provider_at
                    .get_or_insert_with(std::time::Instant::now);
                added += 1;
            }
        }
        added
    }

    /// Stops asking `peer` for this object.
    pub(crate) fn exclude(&mut self, peer: PeerId) {
        self.excluded.insert(peer);
        self.providers.retain(|p| *p != peer);
    }

    /// Stops asking `peer` until a provider lookup names it again (see `set_aside`).
    pub(crate) fn set_aside(&mut self, peer: PeerId) {
        if !self.excluded.contains(&peer) {
            self.set_aside.insert(peer);
        }
        self.providers.retain(|p| *p != peer);
    }

    /// The next (chunk position, chunk name, peer) to request, if a chunk is waiting and a
    /// provider has room.
    pub(crate) fn next_request(&mut self, max_per_peer: usize) -> Option<(usize, Digest, PeerId)> {
        if !self.started || self.queue.is_empty() || self.providers.is_empty() {
            return None;
        }
        for offset in 0..self.providers.len() {
            let i = (self.next + offset) % self.providers.len();
            let peer = self.providers[i];
            let busy = self.in_flight.get(&peer).copied().unwrap_or(0);
            if busy < self.window(peer, max_per_peer) {
                let index = self.queue.pop_front()?;
                self.next = (i + 1) % self.providers.len();
                *self.in_flight.entry(peer).or_default() += 1;
                let id = self.reassembler.manifest().chunks[index];
                return Some((index, id, peer));
            }
        }
        None
    }

    /// How many requests `peer` may have in flight, at most `max_per_peer`.
    fn window(&self, peer: PeerId, max_per_peer: usize) -> usize {
        self.windows
            .get(&peer)
            .copied()
            .unwrap_or(START_WINDOW)
            .clamp(1, max_per_peer.max(1))
    }

    /// Adjusts `peer`'s window to how long a request took (`None`: it failed).
    pub(crate) fn answered_in(
        &mut self,
        peer: PeerId,
        took: Option<Duration>,
        max_per_peer: usize,
    ) {
        let window = self.window(peer, max_per_peer);
        let next = match took {
            Some(t) if t <= QUICK => window + 1,
            Some(t) if t < SLOW => window,
            _ => window / 2,
        };
        if self.providers.contains(&peer) || self.windows.contains_key(&peer) {
            self.windows
                .insert(peer, next.clamp(1, max_per_peer.max(1)));
        }
    }

    /// A request to `peer` for position `index` has ended; `retry` puts the chunk back.
    pub(crate) fn finished(&mut self, peer: PeerId, index: usize, retry: bool) {
        if let Some(n) = self.in_flight.get_mut(&peer) {
            *n = n.saturating_sub(1);
        }
        if retry {
            self.queue.push_back(index);
        }
    }

    /// Starts requesting at once when the caller named providers, else once the lookup has
    /// ended, or enough providers are known, or the first was found a while ago.
    pub(crate) fn maybe_start(&mut self) {
        const ENOUGH_PROVIDERS: usize = 4;
        const GATHER: std::time::Duration = std::time::Duration::from_millis(500);
        if !self.started
            && (!self.query_running
                || self.providers.len() >= ENOUGH_PROVIDERS
                || self
                    .first_provider_at
                    .is_some_and(|t| t.elapsed() >= GATHER))
        {
            self.started = true;
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.values().sum()
    }

    pub(crate) fn is_complete(&self) -> bool {
        self.reassembler.progress().is_complete()
    }

    /// Nothing in flight, chunks still wanted, nobody left to ask.
    pub(crate) fn is_stuck(&self) -> bool {
        !self.is_complete() && self.in_flight() == 0 && self.providers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use canopy_protocol::ObjectKind;

    use super::*;

    #[test]
    fn a_quick_peer_gets_more_requests_and_a_slow_one_fewer() {
        let manifest = Manifest::build(ObjectKind::Update, &[7u8; 64 << 10], 1024, BTreeMap::new())
            .expect("manifest");
        let reassembler = Fetch::reassembler(manifest).expect("reassembler");
        let (reply, _) = oneshot::channel();
        let mut fetch = Fetch::new(reassembler, reply);
        let (fast, slow) = (PeerId::random(), PeerId::random());
        fetch.add_providers([fast, slow]);
        fetch.started = true;
        let max = 16;
        let sent_to = |fetch: &mut Fetch, peer| {
            let mut n = 0;
            while let Some((_, _, p)) = fetch.next_request(max) {
                n += usize::from(p == peer);
            }
            n
        };
        assert_eq!(
            sent_to(&mut fetch, fast),
            START_WINDOW,
            "both start at the same window"
        );
        for _ in 0..20 {
            fetch.finished(fast, 0, false);
            fetch.answered_in(fast, Some(Duration::from_millis(5)), max);
            fetch.finished(slow, 0, false);
            fetch.answered_in(slow, Some(Duration::from_secs(6)), max);
        }
        assert_eq!(
            fetch.window(fast, max),
            max,
            "quick answers grow the window to the most"
        );
        assert_eq!(fetch.window(slow, max), 1, "slow answers shrink it to one");
        fetch.answered_in(fast, None, max);
        assert_eq!(fetch.window(fast, max), max / 2, "a failure halves it");
    }

    #[test]
    fn a_peer_set_aside_comes_back_with_the_next_lookup_and_an_excluded_one_does_not() {
        let manifest = Manifest::build(ObjectKind::Update, &[7u8; 4096], 1024, BTreeMap::new())
            .expect("manifest");
        let (reply, _) = oneshot::channel();
        let mut fetch = Fetch::new(Fetch::reassembler(manifest).expect("reassembler"), reply);
        let (reset, liar) = (PeerId::random(), PeerId::random());
        fetch.add_providers([reset, liar]);
        fetch.set_aside(reset);
        fetch.exclude(liar);
        assert!(fetch.is_stuck(), "nobody left to ask");
        assert_eq!(
            fetch.add_providers([reset, liar]),
            1,
            "the lookup names both"
        );
        assert!(!fetch.is_stuck());
        fetch.started = true;
        let (_, _, asked) = fetch.next_request(4).expect("a request");
        assert_eq!(asked, reset);
        // Excluded stays excluded, even when set aside afterwards.
        fetch.set_aside(liar);
        assert_eq!(fetch.add_providers([liar]), 0);
    }
}

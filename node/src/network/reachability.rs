//! How others reach this node, and over which paths its data travels: the connections it
//! holds (direct, relayed, upgraded by hole punching), the relays it may reserve a slot on,
//! what AutoNAT and the relays said, and the bytes carried on each kind of path.
//!
//! A node behind a home router learns it is not reachable (AutoNAT dial-backs fail, or none
//! confirms an address for a while), reserves a slot on a relay (the coordinator, or another
//! public peer that serves as one) and advertises its `/p2p-circuit` address; peers that need it
//! dial it through the relay, and DCUtR then punches a direct connection, after which the
//! relayed one is closed. The event loop feeds this state and asks it what to do next; it never
//! touches the swarm itself.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};

/// How long a node waits for some peer to confirm a public address before it takes a relay
/// slot anyway (AutoNAT needs a server that dials back; a lone coordinator may have none).
pub(crate) const CHECK_FOR: Duration = Duration::from_secs(15);
/// Relays a node behind NAT holds a slot on, at most.
pub(crate) const MAX_RELAYS: usize = 2;
/// Known relays kept, at most.
const MAX_KNOWN_RELAYS: usize = 64;
/// Connections tracked, at most (beyond the connection limit, as a guard).
const MAX_LINKS: usize = 1 << 16;
/// How long a relayed connection stays open once a direct one replaced it.
const RETIRE_AFTER: Duration = Duration::from_secs(2);
/// The wait before asking a relay again after a reservation failed or closed.
const RESERVE_RETRY: Duration = Duration::from_secs(10);

/// Whether and how other peers can reach this node, in the terms a volunteer is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reachability {
    /// Not known yet: the node is still asking peers to dial it back.
    Checking,
    /// Peers connect to this node directly at an address others confirmed.
    Public,
    /// Behind a router: peers reach the node through a relay, and connections are upgraded
    /// to direct ones by hole punching where the router allows it.
    Relayed,
    /// Behind a router, and no relay holds a slot for it yet: peers cannot reach it, it
    /// can still reach them.
    Unreachable,
}

impl Reachability {
    /// One line for a volunteer: what this means.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Checking => "checking whether other peers can reach this node",
            Self::Public => "reachable directly by other peers",
            Self::Relayed => {
                "behind a router: reachable through a relay, upgraded to direct connections where the router allows"
            }
            Self::Unreachable => "behind a router and not reachable by other peers yet",
        }
    }

    /// The one thing a volunteer can do about it, if anything.
    pub fn advice(self) -> Option<&'static str> {
        match self {
            Self::Unreachable => Some(
                "the node keeps working, but others cannot fetch from it: forward a port on the router to `--listen /ip4/0.0.0.0/tcp/<port>` (or enable UPnP), or wait for a relay",
            ),
            _ => None,
        }
    }
}

/// Bytes and events on each kind of path since the node started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PathCounters {
    /// Direct connections made by hole punching.
    pub hole_punches: u64,
    /// Connections opened through a relay.
    pub relayed_connections: u64,
    /// Hole punching attempts that failed (the relayed connection stays).
    pub hole_punch_failures: u64,
    /// Chunk bytes received over direct connections.
    pub fetched_direct: u64,
    /// Chunk bytes received over relayed connections.
    pub fetched_relayed: u64,
    /// Chunk bytes received from the bootstrap peers (the coordinator).
    pub fetched_from_bootstrap: u64,
    /// Chunk bytes sent over relayed connections.
    pub served_relayed: u64,
}

struct Link {
    peer: PeerId,
    relayed: bool,
    /// The remote address (for a relayed connection, the circuit through the relay).
    addr: Multiaddr,
}

/// What the event loop keeps about paths and reachability.
pub(crate) struct Paths {
    links: HashMap<ConnectionId, Link>,
    /// Peers that serve as relays, with an address to reach each (ending in its `/p2p/`).
    relays: HashMap<PeerId, Multiaddr>,
    /// Circuit listeners (reservations asked for or held), by relay.
    listeners: HashMap<ListenerId, PeerId>,
    reserved: HashSet<PeerId>,
    confirmed: HashSet<Multiaddr>,
    /// Peers whose relayed connections close at the given time (a direct one was punched).
    retiring: Vec<(Instant, PeerId)>,
    /// Peers reached only through a relay whose hole punch has failed (counted once each
    /// until a direct connection opens or the relayed ones close).
    punch_failed: HashSet<PeerId>,
    probes_failed: u64,
    started: Instant,
    next_reserve: Instant,
    /// Whether this node takes relay slots at all (not when it is public or a relay itself).
    may_reserve: bool,
    /// Whether its listen addresses are public by configuration.
    public_by_config: bool,
    pub(crate) counters: PathCounters,
}

impl Paths {
    pub(crate) fn new(public_by_config: bool, relay_server: bool) -> Self {
        let now = Instant::now();
        Self {
            links: HashMap::new(),
            relays: HashMap::new(),
            listeners: HashMap::new(),
            reserved: HashSet::new(),
            confirmed: HashSet::new(),
            retiring: Vec::new(),
            punch_failed: HashSet::new(),
            probes_failed: 0,
            started: now,
            next_reserve: now,
            may_reserve: !public_by_config && !relay_server,
            public_by_config,
            counters: PathCounters::default(),
        }
    }

    /// What this node knows of its reachability now.
    pub(crate) fn reachability(&self) -> Reachability {
        if self.public_by_config || !self.confirmed.is_empty() {
            Reachability::Public
        } else if !self.reserved.is_empty() {
            Reachability::Relayed
        } else if self.probes_failed > 0 || self.started.elapsed() >= CHECK_FOR {
            Reachability::Unreachable
        } else {
            Reachability::Checking
        }
    }

    /// Addresses others confirmed this node is reachable at (relayed ones excluded).
    pub(crate) fn confirmed(&self) -> Vec<String> {
        self.confirmed.iter().map(ToString::to_string).collect()
    }

    /// The relays holding a slot for this node.
    pub(crate) fn reserved_on(&self) -> Vec<String> {
        self.reserved.iter().map(ToString::to_string).collect()
    }

    pub(crate) fn opened(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        relayed: bool,
        addr: Multiaddr,
    ) {
        if relayed {
            self.counters.relayed_connections += 1;
        }
        if !relayed {
            self.punch_failed.remove(&peer);
        }
        if self.links.len() < MAX_LINKS {
            self.links.insert(
                id,
                Link {
                    peer,
                    relayed,
                    addr,
                },
            );
        }
    }

    pub(crate) fn closed(&mut self, id: ConnectionId) {
        if let Some(link) = self.links.remove(&id)
            && self.relayed_to(link.peer).is_empty()
        {
            self.punch_failed.remove(&link.peer);
        }
    }

    /// A hole punch to `peer` failed: either side may learn it, the side that asked for the
    /// punch from DCUtR's verdict and the side that was asked from its own direct dial
    /// failing, so both count it, once per relayed episode.
    pub(crate) fn punch_failed(&mut self, peer: PeerId) {
        if self.has_direct(peer) || self.relayed_to(peer).is_empty() {
            return;
        }
        if self.punch_failed.len() < MAX_LINKS && self.punch_failed.insert(peer) {
            self.counters.hole_punch_failures += 1;
        }
    }

    /// The remote address of connection `id`, if it is open (and was recorded).
    pub(crate) fn remote_addr(&self, id: ConnectionId) -> Option<&Multiaddr> {
        self.links.get(&id).map(|l| &l.addr)
    }

    /// Whether connection `id` goes through a relay.
    pub(crate) fn is_relayed(&self, id: ConnectionId) -> bool {
        self.links.get(&id).is_some_and(|l| l.relayed)
    }

    /// Relayed connections to `peer` (to close once a direct one exists).
    pub(crate) fn relayed_to(&self, peer: PeerId) -> Vec<ConnectionId> {
        self.links
            .iter()
            .filter(|(_, l)| l.peer == peer && l.relayed)
            .map(|(id, _)| *id)
            .collect()
    }

    /// `peer` is now reached directly: its relayed connections close after a grace period
    /// (requests already sent over them finish there).
    pub(crate) fn retire_relayed(&mut self, peer: PeerId, now: Instant) {
        if self.retiring.len() < MAX_KNOWN_RELAYS * 16 {
            self.retiring.push((now + RETIRE_AFTER, peer));
        }
    }

    /// Relayed connections due to close now: those of peers reached directly for a while.
    pub(crate) fn relayed_to_close(&mut self, now: Instant) -> Vec<ConnectionId> {
        let (due, later): (Vec<_>, Vec<_>) = self.retiring.drain(..).partition(|(t, _)| *t <= now);
        self.retiring = later;
        due.into_iter()
            .filter(|(_, peer)| self.has_direct(*peer))
            .flat_map(|(_, peer)| self.relayed_to(peer))
            .collect()
    }

    /// Relayed connections open now.
    pub(crate) fn relayed_open(&self) -> usize {
        self.links.values().filter(|l| l.relayed).count()
    }

    /// Whether a direct (not relayed) connection to `peer` is open.
    pub(crate) fn has_direct(&self, peer: PeerId) -> bool {
        self.links.values().any(|l| l.peer == peer && !l.relayed)
    }

    /// `peer`, reached at `addr` (ending in its `/p2p/`), serves as a relay.
    pub(crate) fn add_relay(&mut self, peer: PeerId, addr: Multiaddr) {
        if self.relays.len() < MAX_KNOWN_RELAYS || self.relays.contains_key(&peer) {
            self.relays.insert(peer, addr);
        }
    }

    /// Addresses through which `peer` may be reached if it holds a slot on a known relay.
    pub(crate) fn routes_to(&self, peer: PeerId) -> Vec<Multiaddr> {
        self.relays
            .iter()
            .filter(|(relay, _)| **relay != peer)
            .map(|(_, addr)| {
                addr.clone()
                    .with(Protocol::P2pCircuit)
                    .with(Protocol::P2p(peer))
            })
            .collect()
    }

    pub(crate) fn address_confirmed(&mut self, addr: Multiaddr) {
        if !addr.iter().any(|p| matches!(p, Protocol::P2pCircuit)) && self.confirmed.len() < 64 {
            self.confirmed.insert(addr);
        }
    }

    pub(crate) fn address_expired(&mut self, addr: &Multiaddr) {
        self.confirmed.remove(addr);
    }

    pub(crate) fn probe_failed(&mut self) {
        self.probes_failed += 1;
    }

    pub(crate) fn reservation_accepted(&mut self, relay: PeerId) -> bool {
        self.reserved.insert(relay)
    }

    /// A circuit listener ended (the relay refused, closed, or went away).
    pub(crate) fn listener_closed(&mut self, id: ListenerId) {
        if let Some(relay) = self.listeners.remove(&id) {
            self.reserved.remove(&relay);
            self.next_reserve = Instant::now() + RESERVE_RETRY;
        }
    }

    /// The relay addresses to listen on now (each a reservation to ask for), if this node is
    /// not reachable and holds fewer than [`MAX_RELAYS`] slots.
    pub(crate) fn to_reserve(&self, now: Instant) -> Vec<(PeerId, Multiaddr)> {
        if !self.may_reserve
            || now < self.next_reserve
            || !matches!(
                self.reachability(),
                Reachability::Unreachable | Reachability::Relayed
            )
        {
            return Vec::new();
        }
        let held: HashSet<&PeerId> = self.listeners.values().collect();
        let mut relays: Vec<(PeerId, Multiaddr)> = self
            .relays
            .iter()
            .filter(|(peer, _)| !held.contains(peer))
            .map(|(peer, addr)| (*peer, addr.clone().with(Protocol::P2pCircuit)))
            .collect();
        relays.sort_by_key(|(peer, _)| *peer);
        relays.truncate(MAX_RELAYS.saturating_sub(held.len()));
        relays
    }

    /// Asking a relay failed at once: wait before asking again.
    pub(crate) fn reserve_failed(&mut self) {
        self.next_reserve = Instant::now() + RESERVE_RETRY;
    }

    pub(crate) fn listening_via(&mut self, id: ListenerId, relay: PeerId) {
        self.listeners.insert(id, relay);
    }

    /// Circuit listeners to drop once the node is found public.
    pub(crate) fn surplus_listeners(&mut self) -> Vec<ListenerId> {
        if self.confirmed.is_empty() || self.listeners.is_empty() {
            return Vec::new();
        }
        self.reserved.clear();
        self.listeners.drain().map(|(id, _)| id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay_addr(peer: PeerId) -> Multiaddr {
        "/ip4/198.51.100.1/tcp/4001"
            .parse::<Multiaddr>()
            .expect("addr")
            .with(Protocol::P2p(peer))
    }

    #[test]
    fn a_failed_punch_counts_once_per_relayed_episode_from_either_side() {
        let mut paths = Paths::new(false, false);
        let peer = PeerId::random();
        // No relayed connection: a failed dial is not a punch.
        paths.punch_failed(peer);
        assert_eq!(paths.counters.hole_punch_failures, 0);
        let relayed = ConnectionId::new_unchecked(1);
        paths.opened(relayed, peer, true, Multiaddr::empty());
        // The asked side's dial fails, then DCUtR's verdict arrives: one failure.
        paths.punch_failed(peer);
        paths.punch_failed(peer);
        assert_eq!(paths.counters.hole_punch_failures, 1);
        // The relayed connection closes and a new one is punched at again.
        paths.closed(relayed);
        paths.opened(
            ConnectionId::new_unchecked(2),
            peer,
            true,
            Multiaddr::empty(),
        );
        paths.punch_failed(peer);
        assert_eq!(paths.counters.hole_punch_failures, 2);
        // Once a direct connection is open, a stray failure is not a failed punch.
        paths.opened(
            ConnectionId::new_unchecked(3),
            peer,
            false,
            Multiaddr::empty(),
        );
        paths.punch_failed(peer);
        assert_eq!(paths.counters.hole_punch_failures, 2);
    }

    #[test]
    fn a_node_that_fails_its_probes_reserves_a_relay_and_then_says_relayed() {
        let mut paths = Paths::new(false, false);
        let relay = PeerId::random();
        paths.add_relay(relay, relay_addr(relay));
        assert_eq!(paths.reachability(), Reachability::Checking);
        assert!(paths.to_reserve(Instant::now()).is_empty());
        paths.probe_failed();
        assert_eq!(paths.reachability(), Reachability::Unreachable);
        assert!(paths.reachability().advice().is_some());
        let wanted = paths.to_reserve(Instant::now());
        assert_eq!(wanted.len(), 1);
        assert!(wanted[0].1.iter().any(|p| p == Protocol::P2pCircuit));
        let id = ListenerId::next();
        paths.listening_via(id, relay);
        assert!(paths.to_reserve(Instant::now()).is_empty(), "asked once");
        paths.reservation_accepted(relay);
        assert_eq!(paths.reachability(), Reachability::Relayed);
        paths.listener_closed(id);
        assert_eq!(paths.reachability(), Reachability::Unreachable);
        assert!(
            paths.to_reserve(Instant::now()).is_empty(),
            "waits before asking again"
        );
        assert_eq!(
            paths.to_reserve(Instant::now() + RESERVE_RETRY).len(),
            1,
            "asks again later"
        );
    }

    #[test]
    fn public_nodes_and_relays_never_reserve_and_a_confirmed_address_drops_the_slots() {
        let relay = PeerId::random();
        for (public, serves) in [(true, false), (false, true)] {
            let mut paths = Paths::new(public, serves);
            paths.add_relay(relay, relay_addr(relay));
            paths.probe_failed();
            assert!(paths.to_reserve(Instant::now()).is_empty());
        }
        let mut paths = Paths::new(false, false);
        paths.add_relay(relay, relay_addr(relay));
        paths.probe_failed();
        let id = ListenerId::next();
        paths.listening_via(id, relay);
        paths.reservation_accepted(relay);
        paths.address_confirmed("/ip4/198.51.100.9/tcp/4001/p2p-circuit".parse().expect("a"));
        assert_eq!(
            paths.reachability(),
            Reachability::Relayed,
            "relayed is not public"
        );
        paths.address_confirmed("/ip4/198.51.100.9/tcp/4001".parse().expect("a"));
        assert_eq!(paths.reachability(), Reachability::Public);
        assert_eq!(paths.surplus_listeners(), vec![id]);
    }

    #[test]
    fn routes_go_through_every_known_relay_but_the_peer_itself() {
        let mut paths = Paths::new(false, false);
        let (relay, target) = (PeerId::random(), PeerId::random());
        paths.add_relay(relay, relay_addr(relay));
        let routes = paths.routes_to(target);
        assert_eq!(routes.len(), 1);
        assert_eq!(
            routes[0].to_string(),
            format!("/ip4/198.51.100.1/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{target}")
        );
        assert!(paths.routes_to(relay).is_empty());
        let (a, b) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
        );
        paths.opened(a, target, true, Multiaddr::empty());
        assert!(!paths.has_direct(target));
        paths.opened(b, target, false, Multiaddr::empty());
        assert!(paths.has_direct(target));
        assert_eq!(paths.relayed_to(target), vec![a]);
        assert!(paths.is_relayed(a) && !paths.is_relayed(b));
        let now = Instant::now();
        paths.retire_relayed(target, now);
        assert!(paths.relayed_to_close(now).is_empty(), "not yet");
        assert_eq!(paths.relayed_to_close(now + RETIRE_AFTER), vec![a]);
        assert!(
            paths.relayed_to_close(now + RETIRE_AFTER).is_empty(),
            "once"
        );
    }
}

//! The DHT's record store: a bounded store of provider records that refuses floods.
//!
//! libp2p's `MemoryStore` counts every key, local and remote, against one cap (1,024 by
//! default) and refuses new local announcements once remote peers have filled it, so a long
//! run (or one hostile peer) stopped the coordinator from publishing. This store keeps the two
//! apart: this peer's own records are bounded by what its chunk store holds (the event loop
//! withdraws records of released objects), and remote records are capped in total and per
//! remote peer, the oldest making room for new ones. Remote records also expire: libp2p drops
//! an expired record only when someone asks for its key, so records of objects their
//! providers released long ago (a round's updates, checkpoints) would otherwise stay until
//! the cap pushed them out. Canopy uses no value records; the few a peer may put are capped
//! tightly.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use libp2p::PeerId;
use libp2p::kad::store::{Error, MemoryStore, MemoryStoreConfig, RecordStore, Result};
use libp2p::kad::{ProviderRecord, Record, RecordKey};

/// Limits of a [`ProviderStore`].
#[derive(Debug, Clone, Copy)]
pub struct ProviderLimits {
    /// This peer's own provider records, at most.
    pub local: usize,
    /// Remote provider records, at most (the oldest go first beyond it).
    pub remote: usize,
    /// Remote provider records one remote peer may have here, at most (beyond it, its new
    /// records are refused).
    pub per_peer: usize,
    /// Providers kept for one key, at most (the replication factor).
    pub per_key: usize,
}

impl Default for ProviderLimits {
    fn default() -> Self {
        Self {
            local: 1 << 16,
            remote: 1 << 14,
            per_peer: 1 << 10,
            per_key: 20,
        }
    }
}

/// One remote record in the arrival queue: its key, its provider and the number it was given
/// when it arrived or was last refreshed.
type Arrival = (RecordKey, PeerId, u64);

/// A remote record and the number of its latest arrival.
struct Held {
    record: ProviderRecord,
    arrival: u64,
}

/// A Kademlia record store with bounded provider records (see the module docs).
pub struct ProviderStore {
    local_peer: PeerId,
    limits: ProviderLimits,
    /// Value records, which Canopy does not use: a small memory store.
    values: MemoryStore,
    local: HashMap<RecordKey, ProviderRecord>,
    remote: HashMap<RecordKey, Vec<Held>>,
    remote_count: usize,
    per_peer: HashMap<PeerId, usize>,
    /// Remote records in the order they arrived or were last refreshed; entries of records
    /// since removed or refreshed are skipped. Every remote record gets the same time to live,
    /// so the front is also the first to expire.
    order: VecDeque<Arrival>,
    /// The number the next arrival gets.
    arrivals: u64,
}

impl ProviderStore {
    /// An empty store of `local_peer` with `limits`.
    pub fn new(local_peer: PeerId, limits: ProviderLimits) -> Self {
        let values = MemoryStore::with_config(
            local_peer,
            MemoryStoreConfig {
                max_records: 64,
                max_value_bytes: 4096,
                ..MemoryStoreConfig::default()
            },
        );
        Self {
            local_peer,
            limits,
            values,
            local: HashMap::new(),
            remote: HashMap::new(),
            remote_count: 0,
            per_peer: HashMap::new(),
            order: VecDeque::new(),
            arrivals: 0,
        }
    }

    /// This peer's own provider records.
    pub fn local_count(&self) -> usize {
        self.local.len()
    }

    /// Remote provider records.
    pub fn remote_count(&self) -> usize {
        self.remote_count
    }

    /// The keys this peer provides.
    pub fn local_keys(&self) -> impl Iterator<Item = &RecordKey> {
        self.local.keys()
    }

    /// Drops the remote records whose time to live ran out by `now`; returns how many.
    pub fn purge_expired(&mut self, now: Instant) -> usize {
        let mut dropped = 0;
        while let Some(front) = self.order.front() {
            match self.current(front) {
                Some(held) => match held.record.expires {
                    Some(expires) if expires <= now => {
                        if let Some((key, provider, _)) = self.order.pop_front() {
                            self.remove_remote(&key, &provider);
                            dropped += 1;
                        }
                    }
                    _ => break,
                },
                _ => {
                    self.order.pop_front();
                }
            }
        }
        dropped
    }

    /// The record an arrival entry stands for: `None` if the record is gone or was refreshed
    /// since (a later entry stands for it).
    fn current(&self, (key, provider, arrival): &Arrival) -> Option<&Held> {
        self.remote
            .get(key)?
            .iter()
            .find(|h| h.record.provider == *provider && h.arrival == *arrival)
    }

    /// Queues an arrival of `record`; returns its number.
    fn arrive(&mut self, record: &ProviderRecord) -> u64 {
        let arrival = self.arrivals;
        self.arrivals += 1;
        self.order
            .push_back((record.key.clone(), record.provider, arrival));
        arrival
    }

    fn remove_remote(&mut self, key: &RecordKey, provider: &PeerId) -> bool {
        let Some(records) = self.remote.get_mut(key) else {
            return false;
        };
        let Some(i) = records.iter().position(|h| h.record.provider == *provider) else {
            return false;
        };
        records.swap_remove(i);
        if records.is_empty() {
            self.remote.remove(key);
        }
        self.remote_count -= 1;
        if let Some(n) = self.per_peer.get_mut(provider) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(provider);
            }
        }
        self.compact_order();
        true
    }

    /// Keeps the arrival queue from growing with entries of removed or refreshed records.
    fn compact_order(&mut self) {
        if self.order.len() > 2 * self.remote_count + 64 {
            let mut order = std::mem::take(&mut self.order);
            order.retain(|entry| self.current(entry).is_some());
            self.order = order;
        }
    }

    /// Drops the oldest remote record; false if there was none.
    fn evict_oldest_remote(&mut self) -> bool {
        while let Some(entry) = self.order.pop_front() {
            if self.current(&entry).is_some() {
                return self.remove_remote(&entry.0, &entry.1);
            }
        }
        false
    }
}

impl RecordStore for ProviderStore {
    type RecordsIter<'a> = <MemoryStore as RecordStore>::RecordsIter<'a>;
    type ProvidedIter<'a> = std::iter::Map<
        std::collections::hash_map::Values<'a, RecordKey, ProviderRecord>,
        fn(&'a ProviderRecord) -> Cow<'a, ProviderRecord>,
    >;

    fn get(&self, k: &RecordKey) -> Option<Cow<'_, Record>> {
        self.values.get(k)
    }

    fn put(&mut self, r: Record) -> Result<()> {
        self.values.put(r)
    }

    fn remove(&mut self, k: &RecordKey) {
        self.values.remove(k)
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        self.values.records()
    }

    fn add_provider(&mut self, record: ProviderRecord) -> Result<()> {
        if record.provider == self.local_peer {
            if self.local.len() >= self.limits.local && !self.local.contains_key(&record.key) {
                return Err(Error::MaxProvidedKeys);
            }
            self.local.insert(record.key.clone(), record);
            return Ok(());
        }
        let refreshed = self
            .remote
            .get(&record.key)
            .is_some_and(|rs| rs.iter().any(|h| h.record.provider == record.provider));
        if refreshed {
            // A refresh of a record already here: it moves to the back of the queue.
            let arrival = self.arrive(&record);
            if let Some(held) = self
                .remote
                .get_mut(&record.key)
                .and_then(|rs| rs.iter_mut().find(|h| h.record.provider == record.provider))
            {
                *held = Held { record, arrival };
            }
            self.compact_order();
            return Ok(());
        }
        if self.per_peer.get(&record.provider).copied().unwrap_or(0) >= self.limits.per_peer {
            return Err(Error::MaxProvidedKeys);
        }
        if self
            .remote
            .get(&record.key)
            .is_some_and(|rs| rs.len() >= self.limits.per_key)
        {
            // Enough providers of this key already: ignore, as libp2p's store does.
            return Ok(());
        }
        self.purge_expired(Instant::now());
        while self.remote_count >= self.limits.remote {
            if !self.evict_oldest_remote() {
                break;
            }
        }
        *self.per_peer.entry(record.provider).or_default() += 1;
        let arrival = self.arrive(&record);
        self.remote
            .entry(record.key.clone())
            .or_default()
            .push(Held { record, arrival });
        self.remote_count += 1;
        Ok(())
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        let mut out: Vec<ProviderRecord> = self.local.get(key).cloned().into_iter().collect();
        if let Some(rs) = self.remote.get(key) {
            out.extend(rs.iter().map(|h| h.record.clone()));
        }
        out
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.local.values().map(Cow::Borrowed)
    }

    fn remove_provider(&mut self, k: &RecordKey, p: &PeerId) {
        if *p == self.local_peer {
            self.local.remove(k);
        } else {
            self.remove_remote(k, p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: u32, provider: PeerId) -> ProviderRecord {
        ProviderRecord::new(RecordKey::new(&key.to_le_bytes()), provider, Vec::new())
    }

    fn limits() -> ProviderLimits {
        ProviderLimits {
            local: 100,
            remote: 50,
            per_peer: 10,
            per_key: 3,
        }
    }

    /// Issue 17, "long runs crash": with libp2p's default store, remote records filled the
    /// cap shared with this peer's own, and announcing failed ("the store cannot contain any
    /// more provider records"). Here a flood from remote peers never stops local announcing.
    #[test]
    fn a_remote_flood_never_blocks_local_announcements() {
        let me = PeerId::random();
        let mut store = ProviderStore::new(me, limits());
        let attackers: Vec<PeerId> = (0..20).map(|_| PeerId::random()).collect();
        let mut refused = 0;
        for (i, attacker) in attackers.iter().enumerate() {
            for k in 0..100u32 {
                if store
                    .add_provider(record(i as u32 * 1000 + k, *attacker))
                    .is_err()
                {
                    refused += 1;
                }
            }
        }
        assert!(store.remote_count() <= 50, "remote records capped");
        assert!(
            refused >= 20 * 90,
            "each peer's records beyond its quota refused"
        );
        for k in 0..100u32 {
            store
                .add_provider(record(k, me))
                .expect("local announcement");
        }
        assert_eq!(store.local_count(), 100);
        assert_eq!(store.provided().count(), 100);
        assert!(store.add_provider(record(100, me)).is_err(), "local cap");
        // Withdrawing makes room again: a long run stays bounded by what it still holds.
        store.remove_provider(&record(0, me).key, &me);
        store
            .add_provider(record(100, me))
            .expect("room after a withdrawal");
    }

    #[test]
    fn providers_of_a_key_are_capped_and_removable() {
        let me = PeerId::random();
        let mut store = ProviderStore::new(me, limits());
        let peers: Vec<PeerId> = (0..5).map(|_| PeerId::random()).collect();
        for p in &peers {
            store.add_provider(record(7, *p)).unwrap();
        }
        store.add_provider(record(7, me)).unwrap();
        let key = record(7, me).key;
        assert_eq!(
            store.providers(&key).len(),
            4,
            "three remote plus this peer"
        );
        // A refresh replaces, it does not add.
        store.add_provider(record(7, peers[0])).unwrap();
        assert_eq!(store.remote_count(), 3);
        store.remove_provider(&key, &peers[0]);
        assert_eq!(store.remote_count(), 2);
        assert_eq!(store.providers(&key).len(), 3);
    }

    fn expiring(key: u32, provider: PeerId, expires: Instant) -> ProviderRecord {
        ProviderRecord {
            expires: Some(expires),
            ..record(key, provider)
        }
    }

    /// Issue 17's soak: records of objects their providers released long ago stayed until the
    /// cap pushed them out, as libp2p drops an expired record only when its key is asked for.
    #[test]
    fn expired_remote_records_go_and_refreshed_ones_stay() {
        let me = PeerId::random();
        let mut store = ProviderStore::new(me, limits());
        let t0 = Instant::now();
        let ttl = std::time::Duration::from_secs(60);
        let (a, b) = (PeerId::random(), PeerId::random());
        for k in 0..5u32 {
            store.add_provider(expiring(k, a, t0 + ttl)).unwrap();
        }
        store.add_provider(expiring(9, b, t0 + ttl)).unwrap();
        // Key 0 is announced again later: its record now lives longer.
        let later = t0 + ttl / 2;
        store.add_provider(expiring(0, a, later + ttl)).unwrap();
        store.add_provider(expiring(10, b, later + ttl)).unwrap();
        assert_eq!(store.remote_count(), 7);
        assert_eq!(store.purge_expired(t0 + ttl / 4), 0, "nothing expired yet");
        assert_eq!(store.purge_expired(t0 + ttl), 5, "keys 1-4 and 9 ran out");
        assert_eq!(store.remote_count(), 2);
        assert_eq!(store.providers(&record(0, me).key).len(), 1, "refreshed");
        assert!(store.providers(&record(3, me).key).is_empty());
        assert_eq!(store.per_peer.get(&a), Some(&1));
        assert_eq!(store.purge_expired(later + ttl), 2);
        assert_eq!(store.remote_count(), 0);
        assert!(store.order.is_empty() && store.per_peer.is_empty());
        // A refresh does not let the queue grow without bound.
        for _ in 0..1000 {
            store.add_provider(expiring(1, a, later + ttl)).unwrap();
        }
        assert!(store.order.len() <= 2 + 64 + 1, "{}", store.order.len());
        // This peer's own records never expire here (libp2p republishes them).
        store.add_provider(record(5, me)).unwrap();
        store.purge_expired(later + 10 * ttl);
        assert_eq!(store.local_count(), 1);
    }

    #[test]
    fn the_oldest_remote_records_make_room() {
        let me = PeerId::random();
        let mut store = ProviderStore::new(me, limits());
        for i in 0..100u32 {
            // One record per peer, so no per-peer quota applies.
            store.add_provider(record(i, PeerId::random())).unwrap();
        }
        assert_eq!(store.remote_count(), 50);
        assert!(
            store.providers(&record(0, me).key).is_empty(),
            "the oldest went"
        );
        assert_eq!(store.providers(&record(99, me).key).len(), 1);
        assert!(store.order.len() <= 2 * 50 + 64);
    }
}

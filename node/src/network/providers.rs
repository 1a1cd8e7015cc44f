//! The DHT's record store: a bounded store of provider records that refuses floods.
//!
//! libp2p's `MemoryStore` counts every key, local and remote, against one cap (1,024 by
//! default) and refuses new local announcements once remote peers have filled it, so a long
//! run (or one hostile peer) stopped the coordinator from publishing. This store keeps the two
//! apart: this peer's own records are bounded by what its chunk store holds (the event loop
//! withdraws records of released objects), and remote records are capped in total and per
//! remote peer, the oldest making room for new ones. Canopy uses no value records; the few a
//! peer may put are capped tightly.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};

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

/// A Kademlia record store with bounded provider records (see the module docs).
pub struct ProviderStore {
    local_peer: PeerId,
    limits: ProviderLimits,
    /// Value records, which Canopy does not use: a small memory store.
    values: MemoryStore,
    local: HashMap<RecordKey, ProviderRecord>,
    remote: HashMap<RecordKey, Vec<ProviderRecord>>,
    remote_count: usize,
    per_peer: HashMap<PeerId, usize>,
    /// Remote records in the order they arrived; entries already removed are skipped.
    order: VecDeque<(RecordKey, PeerId)>,
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

    fn remove_remote(&mut self, key: &RecordKey, provider: &PeerId) -> bool {
        let Some(records) = self.remote.get_mut(key) else {
            return false;
        };
        let Some(i) = records.iter().position(|r| r.provider == *provider) else {
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
        // Keep the arrival queue from growing with stale entries.
        if self.order.len() > 2 * self.remote_count + 64 {
            let remote = &self.remote;
            self.order.retain(|(k, p)| {
                remote
                    .get(k)
                    .is_some_and(|rs| rs.iter().any(|r| r.provider == *p))
            });
        }
        true
    }

    fn evict_oldest_remote(&mut self) {
        while let Some((key, provider)) = self.order.pop_front() {
            if self.remove_remote(&key, &provider) {
                return;
            }
        }
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
        if let Some(existing) = self
            .remote
            .get_mut(&record.key)
            .and_then(|rs| rs.iter_mut().find(|r| r.provider == record.provider))
        {
            // A refresh of a record already here.
            *existing = record;
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
        while self.remote_count >= self.limits.remote {
            self.evict_oldest_remote();
        }
        *self.per_peer.entry(record.provider).or_default() += 1;
        self.order.push_back((record.key.clone(), record.provider));
        self.remote
            .entry(record.key.clone())
            .or_default()
            .push(record);
        self.remote_count += 1;
        Ok(())
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        let mut out: Vec<ProviderRecord> = self.local.get(key).cloned().into_iter().collect();
        if let Some(rs) = self.remote.get(key) {
            out.extend(rs.iter().cloned());
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

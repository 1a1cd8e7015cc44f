//! The event loop's DHT work: providing objects, announcing and withdrawing their records,
//! and the queries' results.

use super::*;

impl EventLoop {
    pub(super) fn provide(
        &mut self,
        signed: canopy_protocol::SignedManifest,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), NodeError>>,
    ) {
        let result = signed
            .verify()
            .map_err(NodeError::from)
            .and_then(|m| self.store.put_object(m, &data).map(|()| m.root));
        match result {
            Ok(root) => {
                self.remember_manifest(root, signed);
                self.announce(root, Some(reply))
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Keeps the manifest of a provided object for [`Self::answer_manifest`], dropping the
    /// oldest beyond [`MAX_PROVIDED_MANIFESTS`].
    pub(super) fn remember_manifest(
        &mut self,
        root: Digest,
        signed: canopy_protocol::SignedManifest,
    ) {
        if self.provided.insert(root, signed).is_none() {
            self.provided_order.push_back(root);
        }
        while self.provided_order.len() > MAX_PROVIDED_MANIFESTS {
            if let Some(old) = self.provided_order.pop_front() {
                self.provided.remove(&old);
            }
        }
    }

    pub(super) fn announce(
        &mut self,
        root: Digest,
        reply: Option<oneshot::Sender<Result<(), NodeError>>>,
    ) {
        match self
            .swarm
            .behaviour_mut()
            .kad
            .start_providing(provider_key(&root))
        {
            Ok(id) => {
                self.queries.insert(id, QueryPurpose::Provide(reply));
            }
            Err(e) => {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(network_error(e)));
                }
            }
        }
    }

    /// Stops providing the objects the chunk store no longer holds (released as superseded,
    /// or never fully stored), so provider records and kept manifests follow what is live.
    pub(super) fn withdraw_released(&mut self) {
        let gone: Vec<kad::RecordKey> = self
            .swarm
            .behaviour_mut()
            .kad
            .store_mut()
            .local_keys()
            .filter(|key| {
                <[u8; 32]>::try_from(key.as_ref())
                    .map(Digest::from_bytes)
                    .is_ok_and(|root| !self.store.holds(&root))
            })
            .cloned()
            .collect();
        for key in &gone {
            self.swarm.behaviour_mut().kad.stop_providing(key);
        }
        let store = &self.store;
        self.provided.retain(|root, _| store.holds(root));
        let provided = &self.provided;
        self.provided_order
            .retain(|root| provided.contains_key(root));
        if !gone.is_empty() {
            tracing::debug!(
                withdrawn = gone.len(),
                "provider records of released objects withdrawn"
            );
        }
    }

    pub(super) fn on_query(&mut self, id: QueryId, result: QueryResult, last: bool) {
        let Some(purpose) = self.queries.remove(&id) else {
            return;
        };
        match (purpose, result) {
            (QueryPurpose::Providers(fetch_id), QueryResult::GetProviders(result)) => {
                if let Ok(GetProvidersOk::FoundProviders { providers, .. }) = result {
                    let me = *self.swarm.local_peer_id();
                    let usable: Vec<PeerId> = providers
                        .into_iter()
                        .filter(|p| *p != me && !self.scores.is_banned(p))
                        .collect();
                    if let Some(fetch) = self.fetches.get_mut(&fetch_id) {
                        let added = fetch.add_providers(usable);
                        tracing::debug!(added, "providers found");
                    }
                }
                if last {
                    if let Some(fetch) = self.fetches.get_mut(&fetch_id) {
                        fetch.query_running = false;
                    }
                } else {
                    self.queries.insert(id, QueryPurpose::Providers(fetch_id));
                }
                self.pump(fetch_id);
            }
            (QueryPurpose::FindProviders(mut found, reply), QueryResult::GetProviders(result)) => {
                if let Ok(GetProvidersOk::FoundProviders { providers, .. }) = result {
                    for p in providers {
                        if !found.contains(&p) {
                            found.push(p);
                        }
                    }
                }
                if last {
                    let _ = reply.send(found);
                } else {
                    self.queries
                        .insert(id, QueryPurpose::FindProviders(found, reply));
                }
            }
            (QueryPurpose::Provide(reply), QueryResult::StartProviding(result)) => {
                if let Some(reply) = reply {
                    let _ = reply.send(result.map(|_| ()).map_err(network_error));
                }
            }
            (QueryPurpose::Bootstrap(reply), QueryResult::Bootstrap(result)) => {
                if last || result.is_err() {
                    if let Some(reply) = reply {
                        let _ = reply.send(result.map(|_| ()).map_err(network_error));
                    }
                } else {
                    self.queries.insert(id, QueryPurpose::Bootstrap(reply));
                }
            }
            (purpose, _) => {
                if !last {
                    self.queries.insert(id, purpose);
                }
            }
        }
    }
}

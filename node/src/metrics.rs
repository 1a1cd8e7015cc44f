//! Prometheus metrics: the registry a coordinator or node shares with its swarm (which adds
//! libp2p's own metrics, prefixed `libp2p_`), the node's `canopy_node_` figures, and the
//! `/metrics` endpoint a node serves when started with `--metrics` (off by default).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use libp2p::swarm::SwarmEvent;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::control::NodeStatus;
use crate::network::behaviour::BehaviourEvent;
use crate::worker::WorkerStatus;

/// A registry shared by the swarm (which registers libp2p's metrics in it) and whoever
/// serves `/metrics`.
pub type SharedRegistry = Arc<Mutex<Registry>>;

/// The registry behind `shared`, also after a panic elsewhere held its lock.
pub fn lock(shared: &SharedRegistry) -> MutexGuard<'_, Registry> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// The metrics of `shared` in the OpenMetrics text format.
pub fn render(shared: &SharedRegistry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    encode(&mut out, &lock(shared))?;
    Ok(out)
}

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A counter that follows a running total kept elsewhere (a status, the swarm's byte counts).
#[derive(Debug, Default)]
pub struct Total {
    counter: Counter,
    mark: AtomicU64,
}

impl Total {
    /// The counter, to register.
    pub fn counter(&self) -> Counter {
        self.counter.clone()
    }

    /// Advances the counter to `total` (a total that went down, as after a restart of what
    /// keeps it, starts counting again from there).
    pub fn set_total(&self, total: u64) {
        let before = self.mark.swap(total, Ordering::Relaxed);
        self.counter.inc_by(total.saturating_sub(before));
    }
}

/// A gauge of 1 labelled with this build's version: `{prefix}_build_info{version="…"}`.
pub fn register_build_info(registry: &mut Registry) {
    let info: Family<[(&'static str, String); 1], Gauge> = Family::default();
    info.get_or_create(&[("version", crate::VERSION.to_owned())])
        .set(1);
    registry.register("build_info", "This build's version (always 1)", info);
}

/// Records `event` in libp2p's metrics: connections, dials and listeners from the swarm, and
/// the Kademlia, identify, ping, gossipsub, relay and hole-punching events.
pub(crate) fn record(m: &libp2p::metrics::Metrics, event: &SwarmEvent<BehaviourEvent>) {
    use libp2p::metrics::Recorder;
    m.record(event);
    if let SwarmEvent::Behaviour(event) = event {
        match event {
            BehaviourEvent::Kad(e) => m.record(e),
            BehaviourEvent::Identify(e) => m.record(e),
            BehaviourEvent::Ping(e) => m.record(e),
            BehaviourEvent::Gossipsub(e) => m.record(e),
            BehaviourEvent::RelayServer(e) => m.record(e),
            BehaviourEvent::Dcutr(e) => m.record(e),
            _ => {}
        }
    }
}

/// A node's own figures, prefixed `canopy_node_`, set from its status as it is written.
#[derive(Debug)]
pub struct NodeMetrics {
    registry: SharedRegistry,
    tasks_completed: Total,
    results_rejected: Total,
    tokens: Total,
    served: Total,
    fetched: Total,
    store_bytes: Gauge,
    peers: Gauge,
    paused: Gauge,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeMetrics {
    /// Fresh metrics in a registry of their own (pass [`NodeMetrics::registry`] to the swarm
    /// for libp2p's).
    pub fn new() -> Self {
        let m = Self {
            registry: SharedRegistry::default(),
            tasks_completed: Total::default(),
            results_rejected: Total::default(),
            tokens: Total::default(),
            served: Total::default(),
            fetched: Total::default(),
            store_bytes: Gauge::default(),
            peers: Gauge::default(),
            paused: Gauge::default(),
        };
        {
            let mut root = lock(&m.registry);
            let r = root.sub_registry_with_prefix("canopy_node");
            register_build_info(r);
            r.register(
                "tasks_completed",
                "Tasks whose results the coordinator accepted",
                m.tasks_completed.counter(),
            );
            r.register(
                "results_rejected",
                "Results the coordinator refused",
                m.results_rejected.counter(),
            );
            r.register(
                "tokens_trained",
                "Tokens trained in accepted tasks",
                m.tokens.counter(),
            );
            let bytes = |r: &mut Registry, name: &str, help: &str, total: &Total| {
                r.register_with_unit(name, help, Unit::Bytes, total.counter());
            };
            bytes(r, "served", "Chunk bytes served to other peers", &m.served);
            bytes(
                r,
                "fetched",
                "Chunk bytes fetched from other peers",
                &m.fetched,
            );
            r.register_with_unit(
                "store",
                "Bytes in the chunk store",
                Unit::Bytes,
                m.store_bytes.clone(),
            );
            r.register("peers", "Connected peers", m.peers.clone());
            r.register("paused", "1 while the node is paused", m.paused.clone());
        }
        m
    }

    /// The registry, for the swarm and for [`serve`].
    pub fn registry(&self) -> SharedRegistry {
        self.registry.clone()
    }

    /// Sets the figures from the status the node has just written.
    pub fn update(&self, status: &NodeStatus, worker: &WorkerStatus) {
        let gauge = |g: &Gauge, v: u64| g.set(i64::try_from(v).unwrap_or(i64::MAX));
        self.tasks_completed.set_total(worker.accepted);
        self.results_rejected.set_total(worker.rejected);
        self.tokens.set_total(worker.tokens);
        self.served.set_total(status.bytes_served);
        self.fetched.set_total(status.bytes_fetched);
        gauge(&self.store_bytes, status.store_bytes);
        gauge(&self.peers, status.peers as u64);
        gauge(&self.paused, u64::from(status.paused));
    }
}

/// Serves `registry` at `/metrics` on `listener` until the task is dropped or aborted.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: SharedRegistry,
) -> std::io::Result<()> {
    use axum::http::{StatusCode, header};
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                match render(&registry) {
                    Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], text),
                    Err(e) => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        [(header::CONTENT_TYPE, "text/plain")],
                        format!("encoding the metrics: {e}"),
                    ),
                }
            }
        }),
    );
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_figures_follow_the_status_by_convention() {
        let m = NodeMetrics::new();
        let mut status = NodeStatus {
            bytes_served: 100,
            store_bytes: 2048,
            peers: 5,
            ..NodeStatus::default()
        };
        let mut worker = WorkerStatus {
            accepted: 3,
            tokens: 4096,
            ..WorkerStatus::default()
        };
        m.update(&status, &worker);
        worker.accepted = 5;
        status.bytes_served = 150;
        m.update(&status, &worker);
        let text = render(&m.registry()).unwrap();
        for line in [
            "canopy_node_tasks_completed_total 5",
            "canopy_node_tokens_trained_total 4096",
            "canopy_node_served_bytes_total 150",
            "canopy_node_fetched_bytes_total 0",
            "canopy_node_store_bytes 2048",
            "canopy_node_peers 5",
            "canopy_node_paused 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        let build = format!("canopy_node_build_info{{version=\"{}\"}} 1", crate::VERSION);
        assert!(text.lines().any(|l| l == build), "{text}");
    }
}

//! The coordinator's Prometheus metrics, served at `/metrics` in the OpenMetrics text format,
//! named by Prometheus' conventions (`_total` counters, `_bytes` and `_seconds` units,
//! `canopy_build_info`).
//!
//! Counters (results accepted and refused by reason, bytes moved, lease expiries, failed
//! verifications) are incremented by the service where it does the work, through the
//! [`Metrics`] it shares with the HTTP server. Gauges describing the state (rounds, losses,
//! peers by tier, active leases, when the last round closed) and the round-duration histogram
//! are read from the state database when scraped. The swarm adds libp2p's own metrics
//! (`libp2p_…`) to the same registry.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use canopy_node::metrics::{SharedRegistry, Total, lock, register_build_info};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// One label pair, e.g. `reason="replay"`.
type Label = [(&'static str, String); 1];

/// Round-duration buckets: 1 s doubling to about 4.5 hours.
const ROUND_BUCKETS: (f64, f64, u16) = (1.0, 2.0, 15);

/// Metrics shared by the service (which counts) and the HTTP server (which reports).
#[derive(Debug)]
pub struct Metrics {
    registry: SharedRegistry,
    /// Results accepted when they arrived (a later failed re-run does not take one back; it
    /// counts under `verification_failures`).
    pub results_accepted: Counter,
    results_rejected: Family<Label, Counter>,
    /// Update bytes fetched from nodes.
    fetched: Total,
    /// Model and data bytes served to nodes.
    served: Total,
    /// Leases that ran past their deadline.
    pub lease_expiries: Counter,
    /// Results found wrong by a datacenter re-run.
    pub verification_failures: Counter,
    /// Updates scheduled for a re-run that had not happened when their round closed, kept
    /// out of aggregation (checks fail closed).
    pub unchecked_held: Counter,
    /// Updates scheduled for a re-run that had not happened when their round closed,
    /// aggregated all the same (`verification.aggregate_unchecked`).
    pub unchecked_aggregated: Counter,
    /// Credits held because their senders' updates pulled against their rounds.
    pub credit_held: Counter,
    /// Held credits released once their senders' updates pointed with their rounds.
    pub credit_released: Counter,
    rounds_completed: Gauge,
    current_round: Gauge,
    round_duration: Histogram,
    /// The first round not yet observed in `round_duration` (scrapes may run at once).
    next_round_observed: Mutex<u64>,
    last_round_closed: Gauge<f64, AtomicU64>,
    train_loss: Gauge<f64, AtomicU64>,
    eval_loss: Gauge<f64, AtomicU64>,
    peers: Family<Label, Gauge>,
    banned_peers: Gauge,
    active_leases: Gauge,
    paused: Gauge,
    /// Bytes in the coordinator's chunk store.
    pub store_bytes: Gauge,
    /// Objects the coordinator announces as their provider in the DHT.
    pub provider_records: Gauge,
    /// Other peers' provider records the coordinator keeps as a DHT server.
    pub remote_provider_records: Gauge,
    /// Requests from peers waiting for an answer.
    pub pending_requests: Gauge,
}

/// The state-derived figures set on each scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateGauges {
    /// Rounds closed.
    pub rounds_completed: u64,
    /// The round in progress.
    pub current_round: u64,
    /// Mean training loss of the last closed round.
    pub train_loss: Option<f64>,
    /// Held-out loss of the last closed round.
    pub eval_loss: Option<f64>,
    /// Known, unbanned peers by tier.
    pub peers_by_tier: Vec<(String, u64)>,
    /// Banned peers.
    pub banned_peers: u64,
    /// Active leases.
    pub active_leases: u64,
    /// Whether the project is paused.
    pub paused: bool,
    /// Each closed round and how long it was open, in seconds, in round order.
    pub round_durations: Vec<(u64, f64)>,
    /// When the last round closed (ms since the epoch).
    pub last_closed_ms: Option<u64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh metrics, registered under the `canopy_` prefix.
    pub fn new() -> Self {
        let (start, factor, count) = ROUND_BUCKETS;
        let m = Self {
            registry: SharedRegistry::default(),
            results_accepted: Counter::default(),
            results_rejected: Family::default(),
            fetched: Total::default(),
            served: Total::default(),
            lease_expiries: Counter::default(),
            verification_failures: Counter::default(),
            unchecked_held: Counter::default(),
            unchecked_aggregated: Counter::default(),
            credit_held: Counter::default(),
            credit_released: Counter::default(),
            rounds_completed: Gauge::default(),
            current_round: Gauge::default(),
            round_duration: Histogram::new(exponential_buckets(start, factor, count)),
            next_round_observed: Mutex::new(0),
            last_round_closed: Gauge::default(),
            train_loss: Gauge::default(),
            eval_loss: Gauge::default(),
            peers: Family::default(),
            banned_peers: Gauge::default(),
            active_leases: Gauge::default(),
            paused: Gauge::default(),
            store_bytes: Gauge::default(),
            provider_records: Gauge::default(),
            remote_provider_records: Gauge::default(),
            pending_requests: Gauge::default(),
        };
        m.register(lock(&m.registry).sub_registry_with_prefix("canopy"));
        m
    }

    fn register(&self, r: &mut Registry) {
        register_build_info(r);
        let counters: [(&str, &str, &Counter); 7] = [
            (
                "results_accepted",
                "Results (updates and re-runs) accepted on arrival",
                &self.results_accepted,
            ),
            (
                "lease_expiries",
                "Leases that ran past their deadline (their task was reopened)",
                &self.lease_expiries,
            ),
            (
                "verification_failures",
                "Accepted results that a datacenter re-run found wrong",
                &self.verification_failures,
            ),
            (
                "updates_unchecked_held",
                "Updates whose scheduled re-run had not happened when their round closed, kept out",
                &self.unchecked_held,
            ),
            (
                "updates_unchecked_aggregated",
                "Updates whose scheduled re-run had not happened when their round closed, aggregated",
                &self.unchecked_aggregated,
            ),
            (
                "credit_held",
                "Credits held because their senders' updates pulled against their rounds",
                &self.credit_held,
            ),
            (
                "credit_released",
                "Held credits released once their senders' updates pointed with their rounds",
                &self.credit_released,
            ),
        ];
        for (name, help, counter) in counters {
            r.register(name, help, counter.clone());
        }
        for (name, help, total) in [
            ("fetched", "Update bytes fetched from nodes", &self.fetched),
            (
                "served",
                "Model and data bytes served to nodes",
                &self.served,
            ),
        ] {
            r.register_with_unit(name, help, Unit::Bytes, total.counter());
        }
        r.register(
            "results_rejected",
            "Results refused, by reason",
            self.results_rejected.clone(),
        );
        let gauges: [(&str, &str, &Gauge); 8] = [
            (
                "rounds_completed",
                "DiLoCo rounds closed",
                &self.rounds_completed,
            ),
            (
                "current_round",
                "The round in progress",
                &self.current_round,
            ),
            ("banned_peers", "Banned peers", &self.banned_peers),
            ("active_leases", "Leases held now", &self.active_leases),
            ("paused", "1 while the project is paused", &self.paused),
            (
                "provider_records",
                "Objects the coordinator provides in the DHT",
                &self.provider_records,
            ),
            (
                "remote_provider_records",
                "Other peers' provider records the coordinator keeps for the DHT",
                &self.remote_provider_records,
            ),
            (
                "pending_requests",
                "Requests from peers waiting for an answer",
                &self.pending_requests,
            ),
        ];
        for (name, help, gauge) in gauges {
            r.register(name, help, gauge.clone());
        }
        r.register_with_unit(
            "store",
            "Bytes in the coordinator's chunk store",
            Unit::Bytes,
            self.store_bytes.clone(),
        );
        r.register_with_unit(
            "round_duration",
            "How long each closed round was open",
            Unit::Seconds,
            self.round_duration.clone(),
        );
        r.register(
            "last_round_closed_timestamp_seconds",
            "When the last round closed (Unix time; 0 before the first)",
            self.last_round_closed.clone(),
        );
        r.register(
            "train_loss",
            "Mean inner training loss of the last closed round",
            self.train_loss.clone(),
        );
        r.register(
            "eval_loss",
            "Held-out loss of the model the last closed round produced",
            self.eval_loss.clone(),
        );
        r.register("peers", "Unbanned peers by tier", self.peers.clone());
    }

    /// The registry, for the swarm to add libp2p's metrics to.
    pub fn registry(&self) -> SharedRegistry {
        self.registry.clone()
    }

    /// Counts a refused result under `reason` (a [`crate::refusal::RejectionKind`]'s name,
    /// or `coordinator_error`).
    pub fn rejected(&self, reason: &str) {
        self.results_rejected
            .get_or_create(&[("reason", reason.to_owned())])
            .inc();
    }

    /// Folds the swarm's running byte totals into the byte counters.
    pub fn observe_bytes(&self, served: u64, fetched: u64) {
        self.served.set_total(served);
        self.fetched.set_total(fetched);
    }

    /// The metrics in the OpenMetrics text format, with the gauges set from `gauges`.
    pub fn render(&self, gauges: &StateGauges) -> Result<String, std::fmt::Error> {
        let set = |g: &Gauge, v: u64| g.set(i64::try_from(v).unwrap_or(i64::MAX));
        set(&self.rounds_completed, gauges.rounds_completed);
        set(&self.current_round, gauges.current_round);
        self.train_loss.set(gauges.train_loss.unwrap_or(f64::NAN));
        self.eval_loss.set(gauges.eval_loss.unwrap_or(f64::NAN));
        self.peers.clear();
        for (tier, n) in &gauges.peers_by_tier {
            set(&self.peers.get_or_create(&[("tier", tier.clone())]), *n);
        }
        set(&self.banned_peers, gauges.banned_peers);
        set(&self.active_leases, gauges.active_leases);
        set(&self.paused, u64::from(gauges.paused));
        {
            let mut next = self
                .next_round_observed
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let from = *next;
            for &(round, secs) in gauges.round_durations.iter().filter(|(r, _)| *r >= from) {
                self.round_duration.observe(secs);
                *next = round + 1;
            }
        }
        self.last_round_closed
            .set(gauges.last_closed_ms.map_or(0.0, |ms| ms as f64 / 1000.0));
        canopy_node::metrics::render(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_render_as_openmetrics() {
        let m = Metrics::new();
        m.results_accepted.inc();
        m.rejected(crate::refusal::RejectionKind::Replay.name());
        m.rejected(crate::refusal::RejectionKind::Other.name());
        m.observe_bytes(100, 40);
        m.observe_bytes(150, 40);
        let text = m
            .render(&StateGauges {
                rounds_completed: 2,
                train_loss: Some(1.5),
                peers_by_tier: vec![("volunteer".into(), 3)],
                round_durations: vec![(0, 3.0), (1, 40.0)],
                last_closed_ms: Some(1_700_000_000_500),
                ..StateGauges::default()
            })
            .unwrap();
        // A later scrape observes only the rounds closed since.
        let text_again = m
            .render(&StateGauges {
                round_durations: vec![(0, 3.0), (1, 40.0), (2, 5.0)],
                ..StateGauges::default()
            })
            .unwrap();
        assert!(
            text_again.contains("canopy_round_duration_seconds_count 3"),
            "{text_again}"
        );
        for line in [
            "canopy_results_accepted_total 1",
            "canopy_results_rejected_total{reason=\"replay\"} 1",
            "canopy_results_rejected_total{reason=\"other\"} 1",
            "canopy_served_bytes_total 150",
            "canopy_fetched_bytes_total 40",
            "canopy_round_duration_seconds_count 2",
            "canopy_round_duration_seconds_sum 43.0",
            "canopy_round_duration_seconds_bucket{le=\"4.0\"} 1",
            "canopy_last_round_closed_timestamp_seconds 1700000000.5",
            "canopy_rounds_completed 2",
            "canopy_train_loss 1.5",
            "canopy_peers{tier=\"volunteer\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        let build = format!(
            "canopy_build_info{{version=\"{}\"}} 1",
            canopy_node::VERSION
        );
        assert!(text.lines().any(|l| l == build), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}

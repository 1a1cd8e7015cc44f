//! The coordinator's Prometheus metrics, served at `/metrics` in the OpenMetrics text format.
//!
//! Counters (results accepted and refused by reason, bytes moved, lease expiries, failed
//! verifications) are incremented by the service where it does the work, through the
//! [`Metrics`] it shares with the HTTP server. Gauges describing the state (rounds, losses,
//! peers by tier, active leases) are read from the state database when scraped.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::aggregate::RejectionStats;

/// One label pair, e.g. `reason="replay"`.
type Label = [(&'static str, String); 1];

/// Metrics shared by the service (which counts) and the HTTP server (which reports).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Results accepted when they arrived (a later failed re-run does not take one back; it
    /// counts under `verification_failures`).
    pub results_accepted: Counter,
    results_rejected: Family<Label, Counter>,
    /// Update bytes fetched from nodes.
    pub bytes_in: Counter,
    /// Model and data bytes served to nodes.
    pub bytes_out: Counter,
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
    rounds_completed: Gauge,
    current_round: Gauge,
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
    marks: (AtomicU64, AtomicU64),
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
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh metrics, registered under the `canopy_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("canopy");
        let m = Self {
            registry: Registry::default(),
            results_accepted: Counter::default(),
            results_rejected: Family::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            lease_expiries: Counter::default(),
            verification_failures: Counter::default(),
            unchecked_held: Counter::default(),
            unchecked_aggregated: Counter::default(),
            rounds_completed: Gauge::default(),
            current_round: Gauge::default(),
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
            marks: (AtomicU64::new(0), AtomicU64::new(0)),
        };
        registry.register(
            "results_accepted",
            "Results (updates and re-runs) accepted on arrival",
            m.results_accepted.clone(),
        );
        registry.register(
            "results_rejected",
            "Results refused, by reason",
            m.results_rejected.clone(),
        );
        registry.register(
            "bytes_in",
            "Update bytes fetched from nodes",
            m.bytes_in.clone(),
        );
        registry.register(
            "bytes_out",
            "Model and data bytes served to nodes",
            m.bytes_out.clone(),
        );
        registry.register(
            "lease_expiries",
            "Leases that ran past their deadline (their task was reopened)",
            m.lease_expiries.clone(),
        );
        registry.register(
            "verification_failures",
            "Accepted results that a datacenter re-run found wrong",
            m.verification_failures.clone(),
        );
        registry.register(
            "updates_unchecked_held",
            "Updates whose scheduled re-run had not happened when their round closed, kept out",
            m.unchecked_held.clone(),
        );
        registry.register(
            "updates_unchecked_aggregated",
            "Updates whose scheduled re-run had not happened when their round closed, aggregated",
            m.unchecked_aggregated.clone(),
        );
        registry.register(
            "rounds_completed",
            "DiLoCo rounds closed",
            m.rounds_completed.clone(),
        );
        registry.register(
            "current_round",
            "The round in progress",
            m.current_round.clone(),
        );
        registry.register(
            "train_loss",
            "Mean inner training loss of the last closed round",
            m.train_loss.clone(),
        );
        registry.register(
            "eval_loss",
            "Held-out loss of the model the last closed round produced",
            m.eval_loss.clone(),
        );
        registry.register("peers", "Unbanned peers by tier", m.peers.clone());
        registry.register("banned_peers", "Banned peers", m.banned_peers.clone());
        registry.register("active_leases", "Leases held now", m.active_leases.clone());
        registry.register("paused", "1 while the project is paused", m.paused.clone());
        registry.register(
            "store_bytes",
            "Bytes in the coordinator's chunk store",
            m.store_bytes.clone(),
        );
        registry.register(
            "provider_records",
            "Objects the coordinator provides in the DHT",
            m.provider_records.clone(),
        );
        registry.register(
            "remote_provider_records",
            "Other peers' provider records the coordinator keeps for the DHT",
            m.remote_provider_records.clone(),
        );
        registry.register(
            "pending_requests",
            "Requests from peers waiting for an answer",
            m.pending_requests.clone(),
        );
        Self { registry, ..m }
    }

    /// Counts a refused result under `reason` (see [`rejection_reason`]).
    pub fn rejected(&self, reason: &str) {
        self.results_rejected
            .get_or_create(&[("reason", reason.to_owned())])
            .inc();
    }

    /// Folds the swarm's running byte totals into the byte counters.
    pub fn observe_bytes(&self, served: u64, fetched: u64) {
        let add = |counter: &Counter, mark: &AtomicU64, total: u64| {
            let before = mark.swap(total, Ordering::Relaxed);
            counter.inc_by(total.saturating_sub(before));
        };
        add(&self.bytes_out, &self.marks.0, served);
        add(&self.bytes_in, &self.marks.1, fetched);
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
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The label of the [`RejectionStats`] counter that `count` increments (`other` when it
/// increments none): the service's refusals name their counter that way.
pub fn rejection_reason(count: fn(&mut RejectionStats)) -> &'static str {
    let mut s = RejectionStats::default();
    count(&mut s);
    let fields: [(&'static str, u64); 9] = [
        ("non_finite", s.non_finite),
        ("wrong_shape", s.wrong_shape),
        ("wrong_version", s.wrong_version),
        ("replay", s.replay),
        ("bad_signature", s.bad_signature),
        ("failed_verification", s.failed_verification),
        ("outlier", s.outliers),
        ("stale_dropped", s.stale_dropped),
        ("banned_sender", s.banned_sender),
    ];
    fields
        .iter()
        .find(|(_, n)| *n > 0)
        .map_or("other", |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_render_as_openmetrics() {
        let m = Metrics::new();
        m.results_accepted.inc();
        m.rejected(rejection_reason(|s| s.replay += 1));
        m.rejected(rejection_reason(|_| {}));
        m.observe_bytes(100, 40);
        m.observe_bytes(150, 40);
        let text = m
            .render(&StateGauges {
                rounds_completed: 2,
                train_loss: Some(1.5),
                peers_by_tier: vec![("volunteer".into(), 3)],
                ..StateGauges::default()
            })
            .unwrap();
        for line in [
            "canopy_results_accepted_total 1",
            "canopy_results_rejected_total{reason=\"replay\"} 1",
            "canopy_results_rejected_total{reason=\"other\"} 1",
            "canopy_bytes_out_total 150",
            "canopy_bytes_in_total 40",
            "canopy_rounds_completed 2",
            "canopy_train_loss 1.5",
            "canopy_peers{tier=\"volunteer\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}

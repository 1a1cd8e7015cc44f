//! Summaries of a run for a test's report: spreads of figures, where the time of a
//! coordinator's rounds went (from its history), and the tail of a log.

use std::collections::BTreeMap;
use std::path::Path;

use crate::processes::{array, u64_of};

/// The `p`-th percentile (0 to 100) of `values`, which must be sorted.
pub fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(sorted.len() - 1) * p / 100]
}

/// Median, 90th percentile, maximum and mean of `values`.
pub fn spread(mut values: Vec<u64>) -> serde_json::Value {
    values.sort_unstable();
    let mean = values.iter().sum::<u64>() as f64 / values.len().max(1) as f64;
    serde_json::json!({
        "median": percentile(&values, 50),
        "p90": percentile(&values, 90),
        "max": values.last().copied().unwrap_or(0),
        "mean": (mean * 10.0).round() / 10.0,
    })
}

/// Where the time of the closed rounds went, from the coordinator's history (ms): `total`
/// from a round's opening to its close; `to_lease` from its opening to its first lease;
/// `work` from the first lease to the last result received (fetching the model step, training,
/// sending the update); `close` from the last result to the close (judging, aggregating,
/// evaluating, storing the new version). A round opens when the previous one closes.
pub fn round_timing(h: &serde_json::Value) -> serde_json::Value {
    let granted: BTreeMap<u64, u64> = array(h, "leases")
        .iter()
        .map(|l| (u64_of(l, "id"), u64_of(l, "granted_ms")))
        .collect();
    let mut per_round: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for r in array(h, "results") {
        let Some(&g) = granted.get(&u64_of(r, "lease")) else {
            continue;
        };
        let entry = per_round.entry(u64_of(r, "round")).or_insert((u64::MAX, 0));
        entry.0 = entry.0.min(g);
        entry.1 = entry.1.max(u64_of(r, "received_ms"));
    }
    let (mut total, mut to_lease, mut work, mut close) = (vec![], vec![], vec![], vec![]);
    let mut slowest = Vec::new();
    for round in array(h, "rounds") {
        let Some(closed) = round["closed_ms"].as_u64() else {
            continue;
        };
        let (n, opened) = (u64_of(round, "round"), u64_of(round, "opened_ms"));
        total.push(closed.saturating_sub(opened));
        slowest.push((closed.saturating_sub(opened), n));
        if let Some(&(first, last)) = per_round.get(&n) {
            to_lease.push(first.saturating_sub(opened));
            work.push(last.saturating_sub(first));
            close.push(closed.saturating_sub(last));
        }
    }
    slowest.sort_unstable_by(|a, b| b.cmp(a));
    slowest.truncate(5);
    let sum: u64 = total.iter().sum();
    serde_json::json!({
        "rounds": total.len(),
        "sum_s": sum as f64 / 1000.0,
        "total": spread(total),
        "to_lease": spread(to_lease),
        "work": spread(work),
        "close": spread(close),
        "slowest": slowest.iter().map(|(ms, n)| serde_json::json!({"round": n, "ms": ms})).collect::<Vec<_>>(),
    })
}

/// The last `n` lines of the log at `path`, without terminal colour codes.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut plain = String::with_capacity(text.len());
    let mut escape = false;
    for c in text.chars() {
        match (escape, c) {
            (false, '\u{1b}') => escape = true,
            (true, 'm') => escape = false,
            (true, _) => {}
            (false, c) => plain.push(c),
        }
    }
    let lines: Vec<&str> = plain.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

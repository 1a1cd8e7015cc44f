//! `canopy-coordinator status` and `ledger`: what a project has done, from its database
//! (kept out of `main.rs`).

use crate::*;

pub(crate) fn status(config: &Path, json: bool, history: bool) -> anyhow::Result<()> {
    let state = open_state(config)?;
    let r = state.read();
    let rounds = r.rounds()?;
    let peers = r.peers()?;
    let leases = r.active_leases(None)?;
    let open = r
        .tasks(None, canopy_coordinator::state::TaskStatus::Open)?
        .len();
    let initial: Option<f64> = r.meta("initial_eval_loss")?.and_then(|v| v.parse().ok());
    let per_token: Option<f64> = r
        .meta(canopy_coordinator::samples::BYTES_PER_TOKEN_META)?
        .and_then(|v| v.parse().ok());
    let last_eval = rounds
        .iter()
        .rev()
        .find(|x| x.closed_ms.is_some())
        .and_then(|x| x.eval_loss);
    let bits_per_byte = last_eval
        .zip(per_token)
        .map(|(l, p)| canopy_coordinator::samples::bits_per_byte(l, p));
    let samples: Vec<canopy_coordinator::samples::Sample> = r
        .meta(canopy_coordinator::samples::SAMPLES_META)?
        .and_then(|j| serde_json::from_str(&j).ok())
        .unwrap_or_default();
    if json {
        let mut out = serde_json::json!({
            "rounds": rounds,
            "initial_eval_loss": initial,
            "eval_bits_per_byte": bits_per_byte,
            "samples": samples,
            "peers": peers,
            "active_leases": leases.len(),
            "open_tasks": open,
            "corpus_builds": r.corpus_builds()?,
        });
        if history {
            out["leases"] = serde_json::to_value(r.leases()?)?;
            out["results"] = serde_json::to_value(r.results(None, None)?)?;
        }
        println!("{out}");
        return Ok(());
    }
    let current = rounds.last().map_or(0, |r| r.round);
    println!(
        "round {current}; {} active leases, {open} open tasks",
        leases.len()
    );
    if let Some(l) = initial {
        println!("initial held-out loss {l:.4}");
    }
    println!(
        "{:>5} {:>10} {:>10} {:>8} {:>8}",
        "round", "train", "held-out", "accepted", "rejected"
    );
    for round in rounds.iter().filter(|r| r.closed_ms.is_some()) {
        println!(
            "{:>5} {:>10} {:>10} {:>8} {:>8}",
            round.round,
            round.train_loss.map_or("-".into(), |l| format!("{l:.4}")),
            round.eval_loss.map_or("-".into(), |l| format!("{l:.4}")),
            round.accepted,
            round.rejected
        );
    }
    if let Some(b) = bits_per_byte {
        println!("last held-out loss in bits per byte of text: {b:.3}");
    }
    if !samples.is_empty() {
        println!(
            "\nwhat the final model writes (greedy, without repeating itself, after each prompt):"
        );
        for s in &samples {
            println!(
                "  [{}] {}⟨{}⟩",
                s.language,
                s.prompt,
                s.continuation.replace('\n', " ⏎ ")
            );
        }
    }
    println!("\n{} peers:", peers.len());
    for p in &peers {
        println!(
            "  {} {:<10} rep {:>4}{} {}",
            p.peer,
            p.tier,
            p.reputation,
            if p.banned { " BANNED" } else { "" },
            p.name.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

pub(crate) fn ledger(config: &Path, csv: bool, json: bool) -> anyhow::Result<()> {
    let state = open_state(config)?;
    let entries = state.read().ledger()?;
    if json {
        println!("{}", serde_json::to_string(&entries)?);
        return Ok(());
    }
    if csv {
        println!(
            "id,peer,name,org,round,task,kind,tokens,compute_ms,accepted,verified,result_hash,reason,ts_ms"
        );
        let esc = |s: &Option<String>| {
            s.as_deref()
                .map(|v| format!("\"{}\"", v.replace('"', "\"\"")))
                .unwrap_or_default()
        };
        for e in &entries {
            println!(
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                e.id,
                e.peer,
                esc(&e.name),
                esc(&e.org),
                e.round,
                e.task,
                e.kind,
                e.tokens,
                e.compute_ms,
                e.accepted,
                e.verified,
                e.result_hash.as_deref().unwrap_or(""),
                esc(&e.reason),
                e.ts_ms
            );
        }
        return Ok(());
    }
    println!(
        "{:>5} {:<54} {:>5} {:>5} {:<6} {:>9} {:<8} {:<10}",
        "id", "peer", "round", "task", "kind", "tokens", "accepted", "verified"
    );
    for e in &entries {
        println!(
            "{:>5} {:<54} {:>5} {:>5} {:<6} {:>9} {:<8} {:<10}",
            e.id, e.peer, e.round, e.task, e.kind, e.tokens, e.accepted, e.verified
        );
    }
    Ok(())
}

pub(crate) fn ledger_totals(config: &Path, json: bool) -> anyhow::Result<()> {
    let state = open_state(config)?;
    let totals = state.read().contributors()?;
    if json {
        println!("{}", serde_json::to_string(&totals)?);
        return Ok(());
    }
    println!("{} ledger entries", totals.entries);
    let groups = [
        ("node", &totals.volunteers),
        ("organisation", &totals.organisations),
        ("country", &totals.countries),
    ];
    for (what, rows) in groups {
        println!(
            "\n{:<54} {:>6} {:>12} {:>12} {:>8} {:>8} {:>8}",
            what, "nodes", "tokens", "compute s", "accepted", "verified", "refused"
        );
        for c in rows {
            let label = match (&c.key, &c.name) {
                (Some(k), Some(n)) => format!("{n} ({k})"),
                (Some(k), None) => k.clone(),
                (None, _) => "(not declared)".into(),
            };
            println!(
                "{:<54} {:>6} {:>12} {:>12.1} {:>8} {:>8} {:>8}",
                label,
                c.peers,
                c.tokens,
                c.compute_ms as f64 / 1000.0,
                c.accepted,
                c.verified,
                c.rejected
            );
        }
    }
    Ok(())
}

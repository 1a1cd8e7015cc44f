//! `canopy-coordinator run`: the project's service, its swarm corpus build, the dashboard, and
//! the lines it prints for people or scripts (kept out of `main.rs`).

use canopy_coordinator::{Outcome, RunEvent};

use crate::cli::args::HttpArgs;
use crate::*;

pub(crate) async fn run_project(
    config_path: &Path,
    json: bool,
    http: &HttpArgs,
) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let dir = project_dir(config_path);
    warn_if_readable(config_path, &config);
    let dashboard = http.bind(Some((&config.dashboard, &dir))).await?;
    let shutdown =
        canopy_node::control::shutdown_signal().context("listening for Ctrl-C and SIGTERM")?;
    let name = config.project.name.clone();
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    let shown = dir.clone();
    let printer = tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            print_run_event(&event, &name, &shown, json);
        }
    });
    let options = canopy_coordinator::RunOptions {
        config,
        dir: dir.clone(),
        dashboard,
    };
    let outcome = canopy_coordinator::run(options, shutdown, tx)
        .await
        .with_context(|| format!("running the project in {}", dir.display()));
    // Every event is sent by the time the run returns; the printer drains what is queued.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), printer).await;
    match outcome? {
        Outcome::Finished { round, model } if json => println!(
            "{}",
            serde_json::json!({"finished": {"round": round, "model": model.to_string()}})
        ),
        Outcome::Finished { round, .. } => println!(
            "training finished after {round} rounds; export with `canopy-coordinator export latest <dir>`"
        ),
        Outcome::Stopped { .. } if json => {}
        Outcome::Stopped {
            during_corpus_build: true,
        } => println!("stopped during the corpus build; run again to carry on"),
        Outcome::Stopped { .. } => println!("stopped; run again on the same directory to carry on"),
    }
    Ok(())
}

fn print_run_event(event: &RunEvent, name: &str, dir: &Path, json: bool) {
    match event {
        RunEvent::Started {
            peer,
            listen,
            round,
            dashboard,
            corpus_build,
            rounds,
        } => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"started": {"peer": peer.to_string(), "listen": listen.iter().map(|a| a.to_string()).collect::<Vec<_>>(), "round": round, "dashboard": dashboard, "corpus_build": corpus_build}})
                );
            } else {
                println!("canopy-coordinator: project {name} in {}", dir.display());
                println!("peer id {peer}");
                for a in listen {
                    println!("listening on {a}");
                }
                if let Some(url) = dashboard {
                    println!("dashboard at {url}");
                }
                if corpus_build.is_some() {
                    println!(
                        "corpus build first, then {rounds} training rounds; nodes join with: canopy-node join <address above>"
                    );
                } else {
                    println!(
                        "round {round} of {rounds}; nodes join with: canopy-node join <address above>"
                    );
                }
            }
            let _ = std::io::stdout().flush();
        }
        RunEvent::Corpus(event) => print_corpus_event(event, json),
        RunEvent::Service(event) => print_event(event, json),
        _ => {}
    }
}

fn print_corpus_event(event: &CorpusEvent, json: bool) {
    if json {
        println!("{}", serde_json::json!({ "corpus": event }));
        return;
    }
    match event {
        CorpusEvent::Planned {
            chunks,
            done,
            documents,
            ..
        } => println!(
            "corpus build: {documents} documents in {chunks} chunks ({done} already agreed); two peers run each chunk"
        ),
        CorpusEvent::Agreed {
            done,
            total,
            failed,
            ..
        } => {
            println!("corpus: {done}/{total} chunks agreed");
            for peer in failed {
                println!("corpus: {peer} returned a result the other runs disagree with");
            }
        }
        CorpusEvent::Finished {
            input_documents,
            kept_documents,
            out,
            ..
        } => println!(
            "corpus build finished: kept {kept_documents} of {input_documents} documents; outputs in {}; training starts",
            out.display()
        ),
        CorpusEvent::Result { .. } => {}
        _ => {}
    }
}

fn print_event(event: &ServiceEvent, json: bool) {
    match event {
        ServiceEvent::RoundClosed(s) if json => println!("{}", serde_json::json!({"round": s})),
        ServiceEvent::RoundClosed(s) => println!(
            "round {:>3} | train loss {} | held-out loss {:.4} | accepted {} rejected {} | aggregated {} (clipped {})",
            s.round,
            s.train_loss.map_or("-".into(), |l| format!("{l:.4}")),
            s.eval_loss,
            s.accepted,
            s.rejected,
            s.aggregated,
            s.clipped
        ),
        ServiceEvent::Joined { peer, tier } if json => {
            println!(
                "{}",
                serde_json::json!({"joined": {"peer": peer.to_string(), "tier": tier}})
            )
        }
        ServiceEvent::Joined { peer, tier } => println!("joined: {peer} ({tier})"),
        ServiceEvent::Result {
            peer,
            task,
            accepted,
            reason,
        } if json => println!(
            "{}",
            serde_json::json!({"result": {"peer": peer.to_string(), "task": task, "accepted": accepted, "reason": reason}})
        ),
        ServiceEvent::Result { accepted: true, .. } => {}
        ServiceEvent::Result {
            peer, task, reason, ..
        } => println!(
            "refused task {task} from {peer}: {}",
            reason.as_deref().unwrap_or("")
        ),
    }
    let _ = std::io::stdout().flush();
}

//! `canopy-coordinator run`: the project's service, its swarm corpus build, the dashboard, and
//! the lines it prints for people or scripts (kept out of `main.rs`).

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
    let listener = http.bind(Some((&config.dashboard, &dir))).await?;
    let mut shutdown = Box::pin(
        canopy_node::control::shutdown_signal().context("listening for Ctrl-C and SIGTERM")?,
    );
    let listen = config
        .network
        .listen
        .iter()
        .map(|a| {
            a.parse()
                .with_context(|| format!("network.listen: {a:?} is not a multiaddr"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let metrics = Arc::new(dashboard::Metrics::new());
    let network = NetworkConfig {
        listen,
        metrics: Some(metrics.registry()),
        mdns: config.network.mdns,
        kad_server: true,
        relay_server: true,
        sync_fetched: true,
        advertise_listen_addrs: config.network.public,
        provider_ttl: std::time::Duration::from_secs(config.network.provider_ttl_secs),
        ..NetworkConfig::default()
    };
    let store = Arc::new(
        canopy_node::store::ChunkStore::open(&dir, config.store.cap_mib << 20)
            .with_context(|| format!("opening the chunk store in {}", dir.display()))?,
    );
    let (keys, _) = canopy_node::identity::load_or_create(&dir)?;
    let open_project = |config: Config| {
        let (d, s) = (dir.clone(), store.clone());
        let shown = dir.display().to_string();
        async move {
            tokio::task::spawn_blocking(move || Project::open_with_store(&d, config, s))
                .await
                .context("opening the project")?
                .with_context(|| format!("opening the project in {shown}"))
        }
    };
    // With [corpus], the build runs on the swarm first and training opens on its output.
    let build = match &config.corpus {
        Some(_) => {
            let (d, c, s) = (dir.clone(), config.clone(), store.clone());
            let build = tokio::task::spawn_blocking(move || SwarmBuild::open(&d, &c, s))
                .await
                .context("planning the corpus build")?
                .context("planning the corpus build")?;
            Some(Arc::new(build))
        }
        None => None,
    };
    let mut project = match build {
        Some(_) => None,
        None => Some(open_project(config.clone()).await?),
    };
    let (client, mut events, net_task) =
        canopy_node::network::start(keys.clone(), store.clone(), network).await?;
    let addrs = client.listen_addrs().await.unwrap_or_default();
    let round = match &project {
        Some(p) => p.current().round,
        None => 0,
    };
    let url = match listener {
        Some(listener) => {
            let url = listener.url()?;
            listener.spawn(
                dir.join(DB_FILE),
                dashboard::ProjectInfo {
                    name: config.project.name.clone(),
                    rounds: config.training.rounds,
                    peer: keys.peer_id().to_string(),
                },
                metrics.clone(),
            );
            Some(url)
        }
        None => None,
    };
    if json {
        println!(
            "{}",
            serde_json::json!({"started": {"peer": keys.peer_id().to_string(), "listen": addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(), "round": round, "dashboard": url, "corpus_build": build.as_ref().map(|b| b.id())}})
        );
    } else {
        println!(
            "canopy-coordinator: project {} in {}",
            config.project.name,
            dir.display()
        );
        println!("peer id {}", keys.peer_id());
        for a in &addrs {
            println!("listening on {a}");
        }
        if let Some(url) = &url {
            println!("dashboard at {url}");
        }
        if build.is_some() {
            println!(
                "corpus build first, then {} training rounds; nodes join with: canopy-node join <address above>",
                config.training.rounds
            );
        } else {
            println!(
                "round {round} of {}; nodes join with: canopy-node join <address above>",
                config.training.rounds
            );
        }
    }
    let _ = std::io::stdout().flush();
    if let Some(build) = build {
        if !build.finished()? {
            let (ctx, mut crx) = tokio::sync::mpsc::channel(256);
            let printer = tokio::spawn(async move {
                while let Some(event) = crx.recv().await {
                    print_corpus_event(&event, json);
                }
            });
            let done = build
                .clone()
                .run(&client, &mut events, &mut shutdown, ctx)
                .await;
            let _ = printer.await;
            if !done.context("running the corpus build")? {
                let _ = client.shutdown().await;
                let _ = net_task.await;
                if !json {
                    println!("stopped during the corpus build; run again to carry on");
                }
                return Ok(());
            }
        }
        let mut training = config.clone();
        training.data.corpus = Some(build.kept());
        training.corpus = None;
        project = Some(open_project(training).await?);
    }
    let Some(mut project) = project else {
        bail!("the project did not open");
    };
    project.metrics = metrics;
    let project = Arc::new(project);
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    let service = Service::with_network(project.clone(), client, events, net_task, tx).await?;
    let _ = std::io::stdout().flush();
    let printer = tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            print_event(&event, json);
        }
    });
    let result = service.run(&mut shutdown).await;
    printer.abort();
    result?;
    if project.finished() {
        let current = project.current();
        if json {
            println!(
                "{}",
                serde_json::json!({"finished": {"round": current.round, "model": current.model_root.to_string()}})
            );
        } else {
            println!(
                "training finished after {} rounds; export with `canopy-coordinator export latest <dir>`",
                current.round
            );
        }
    } else if !json {
        println!("stopped; run again on the same directory to carry on");
    }
    Ok(())
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

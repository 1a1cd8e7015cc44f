//! The `canopy-node` binary: a Canopy peer.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use std::sync::atomic::Ordering;

use canopy_node::cli::{Cli, Command, JoinConfig, PresetArg, TierArg, TrainArgs, data_dir};
use canopy_node::metrics::NodeMetrics;
use canopy_node::network::{self, NetworkEvent};
use canopy_node::polite::{self, Priority};
use canopy_node::settings::{self, SettingsError};
use canopy_node::store::ChunkStore;
use canopy_node::worker::{self, Shared, Worker, WorkerConfig};
use canopy_node::{VERSION, control, gpus, identity, lock};
use canopy_protocol::messages::{AdapterInfo, Capabilities, Join, Tier};
use canopy_shaders::Runtime;

mod credit;
mod info;
mod status;

#[allow(unsafe_code)] // one environment variable, set before any thread starts
fn main() -> ExitCode {
    // SAFETY: the first thing main does: no other thread exists yet.
    unsafe { canopy_shaders::runtime::quiet_device_select_layer() };
    let cli = match canopy_node::settings::parse(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(SettingsError::Args(e)) => e.exit(),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Command::Join(args) = &cli.command
        && let Some(n) = args.threads
    {
        // The matrix products size their thread pool from this when they first run.
        // SAFETY: still before any other thread exists.
        unsafe { std::env::set_var("MATMUL_NUM_THREADS", n.to_string()) };
    }
    canopy_node::logging::init(cli.log.log_format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let dir = || {
        data_dir(cli.data_dir.clone())
            .context("no data directory: pass --data-dir or set CANOPY_DATA_DIR")
    };
    match cli.command {
        Command::Info { json } => info::info(&dir()?, cli.identity.as_deref(), json),
        Command::Selftest { json } => selftest(json),
        Command::Bench { json, size } => bench(json, size as usize),
        Command::Train(args) => train(args),
        Command::Status { json } => status::node_status(&dir()?, json),
        Command::Pause => {
            let dir = dir()?;
            control::set_paused(&dir, true)?;
            println!(
                "paused: the node on {} hands its task back and waits",
                dir.display()
            );
            Ok(())
        }
        Command::Resume => {
            let dir = dir()?;
            control::set_paused(&dir, false)?;
            println!("resumed");
            Ok(())
        }
        Command::Credit { coordinator, json } => async_runtime()?.block_on(credit::command(
            &dir()?,
            cli.identity.as_deref(),
            coordinator,
            json,
        )),
        Command::Join(args) => {
            let config = JoinConfig::from_args(*args)?;
            limit_threads(config.threads)?;
            // Before the runtime starts its threads: they inherit it.
            if config.priority == Priority::Low {
                polite::lower_priority().context("lowering the node's priority")?;
            }
            async_runtime()?.block_on(join(&dir()?, cli.identity.as_deref(), config))
        }
        Command::Service(command) => Ok(canopy_node::service::run(
            command,
            cli.data_dir.clone(),
            cli.identity.clone(),
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        )?),
    }
}

fn async_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Applies `--threads` to rayon's pool (`main` has set the matrix products' limit already).
fn limit_threads(threads: Option<u32>) -> anyhow::Result<()> {
    let Some(n) = threads else { return Ok(()) };
    rayon::ThreadPoolBuilder::new()
        .num_threads(n as usize)
        .build_global()
        .context("limiting the CPU threads")?;
    Ok(())
}

/// The compute runtime from `CANOPY_ADAPTER` / `CANOPY_REQUIRE_ADAPTER`, with a word for
/// people when it is the CPU path.
fn runtime(json: bool) -> anyhow::Result<Runtime> {
    let runtime = Runtime::from_env().context("choosing where kernels run")?;
    if !json {
        println!("compute: {}", runtime.report());
        if matches!(runtime, Runtime::Cpu(_)) {
            println!(
                "no GPU adapter found (or CANOPY_ADAPTER=cpu): kernels run on the CPU path. \
                 CANOPY_ADAPTER=software runs the WGSL on a software Vulkan driver."
            );
        }
    }
    Ok(runtime)
}

fn selftest(json: bool) -> anyhow::Result<()> {
    let runtime = runtime(json)?;
    let rows = match &runtime {
        Runtime::Gpu(gpu) => canopy_shaders::selftest::run(gpu.as_ref(), 7),
        Runtime::Cpu(cpu) => canopy_shaders::selftest::run(cpu, 7),
    };
    let failed = rows.iter().filter(|r| !r.passed).count();
    if json {
        println!(
            "{}",
            serde_json::json!({ "adapter": runtime.report().to_string(), "rows": rows, "failed": failed })
        );
    } else {
        println!(
            "{:<28} {:<22} {:>11} {:>10}  result",
            "kernel", "shape", "max error", "tolerance"
        );
        for r in &rows {
            println!(
                "{:<28} {:<22} {:>11.2e} {:>10.0e}  {}{}",
                r.kernel,
                r.shape,
                r.max_error,
                r.tolerance,
                if r.passed { "pass" } else { "FAIL" },
                r.error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
        }
        println!("{} of {} kernels pass", rows.len() - failed, rows.len());
    }
    if failed > 0 {
        anyhow::bail!("{failed} kernel(s) computed wrongly on this adapter");
    }
    Ok(())
}

fn train(args: TrainArgs) -> anyhow::Result<()> {
    use canopy_shaders::train_loop::StepReport;
    use canopy_shaders::{LrSchedule, ModelConfig, TrainSettings, train_local};
    let config = match args.preset {
        PresetArg::Tiny => ModelConfig::tiny(),
        PresetArg::Small => ModelConfig::small(),
        PresetArg::Base => ModelConfig::base(),
    };
    let seq = args.seq as usize;
    anyhow::ensure!(
        seq <= config.seq_len,
        "--seq {seq} is longer than the {:?} preset's context of {}",
        args.preset,
        config.seq_len
    );
    let text = match &args.text {
        Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        None => canopy_text::udhr::training_text(),
    };
    anyhow::ensure!(
        text.len() >= 20 * (seq + 1),
        "the text has {} bytes; it needs at least {} for --seq {seq} and a held-out tail",
        text.len(),
        20 * (seq + 1)
    );
    let settings = TrainSettings {
        steps: args.steps,
        batch: args.batch as usize,
        seq,
        lr: LrSchedule {
            peak: args.lr,
            warmup: (args.steps / 15).max(1),
            min: args.lr / 10.0,
        },
        seed: args.seed,
        eval_every: (args.steps / 3).max(1),
        ..TrainSettings::default()
    };
    let runtime = runtime(args.json)?;
    if !args.json {
        println!(
            "training {:?} ({} parameters) on {} bytes of {}, {} steps of {}x{seq} bytes",
            args.preset,
            config.num_params(),
            text.len(),
            args.text.as_ref().map_or(
                "the Universal Declaration of Human Rights in 24 languages".into(),
                |p| p.display().to_string()
            ),
            args.steps,
            args.batch
        );
    }
    let started = Instant::now();
    let tokens_per_step = (args.batch as usize * seq) as f64;
    let log_every = (args.steps / 20).max(1);
    let json = args.json;
    let on_step = |r: &StepReport| {
        if !r.step.is_multiple_of(log_every) && r.eval_loss.is_none() && r.step + 1 != args.steps {
            return;
        }
        let rate = tokens_per_step * f64::from(r.step + 1) / started.elapsed().as_secs_f64();
        if json {
            println!(
                "{}",
                serde_json::json!({ "step": r.step, "loss": r.loss, "lr": r.lr,
                    "grad_norm": r.grad_norm, "eval_loss": r.eval_loss, "tokens_per_sec": rate })
            );
        } else {
            let eval = r
                .eval_loss
                .map(|l| format!("  held-out {l:.3}"))
                .unwrap_or_default();
            println!(
                "step {:>5}  loss {:.3}{eval}  lr {:.2e}  {rate:.0} tokens/s",
                r.step, r.loss, r.lr
            );
        }
    };
    let report = match &runtime {
        Runtime::Gpu(gpu) => train_local(gpu.as_ref(), &config, &text, &settings, on_step),
        Runtime::Cpu(cpu) => train_local(cpu, &config, &text, &settings, on_step),
    }
    .context("training")?;
    let first = report.losses.first().copied().unwrap_or(f32::NAN);
    let tail = &report.losses[report.losses.len().saturating_sub(10)..];
    let last = tail.iter().sum::<f32>() / tail.len().max(1) as f32;
    let eval = report.eval_losses.last().map(|e| e.loss);
    if let Some(dir) = &args.export {
        canopy_shaders::export(&report.params, dir)
            .with_context(|| format!("exporting to {}", dir.display()))?;
        write_local_card(dir, &args, &config, &report)?;
    }
    if json {
        println!(
            "{}",
            serde_json::json!({ "summary": { "first_loss": first, "final_loss": last,
                "final_eval_loss": eval, "tokens_per_sec": report.tokens_per_sec,
                "export": args.export } })
        );
    } else {
        println!(
            "loss {first:.3} -> {last:.3} (last 10 steps), held-out {}, {:.0} tokens/s",
            eval.map_or("n/a".into(), |l| format!("{l:.3}")),
            report.tokens_per_sec
        );
        if let Some(dir) = &args.export {
            println!(
                "exported model.safetensors, config.json, the tokenizer and a model card to {}",
                dir.display()
            );
        }
    }
    Ok(())
}

/// The byte-level tokenizer's files and a model card beside a local training's export.
fn write_local_card(
    dir: &std::path::Path,
    args: &TrainArgs,
    config: &canopy_shaders::ModelConfig,
    report: &canopy_shaders::TrainReport,
) -> anyhow::Result<()> {
    use canopy_text::card::{ModelCard, Source};
    let tokenizer = canopy_text::Tokenizer::bytes();
    tokenizer.write_files(dir, config.seq_len)?;
    let source = match &args.text {
        None => Source {
            name: canopy_text::udhr::NAME.into(),
            license: canopy_text::udhr::LICENSE.into(),
            provenance: "the Universal Declaration of Human Rights in 24 translations".into(),
            bytes_per_language: canopy_text::udhr::bytes_per_language(),
        },
        Some(path) => Source {
            name: path
                .file_name()
                .map_or("text".into(), |n| n.to_string_lossy().into_owned()),
            license: "as given by the text's owner".into(),
            provenance: format!("the bytes of {}", path.display()),
            bytes_per_language: Vec::new(),
        },
    };
    let eval = report.eval_losses.last().map(|e| f64::from(e.loss));
    let card = ModelCard {
        name: "canopy-local".into(),
        license: "apache-2.0".into(),
        architecture: format!(
            "BLOOM (ALiBi): hidden size {}, {} layers, {} heads, vocabulary of {}",
            config.hidden, config.layers, config.heads, config.vocab
        ),
        parameters: config.num_params() as u64,
        context: config.seq_len,
        tokenizer: tokenizer.describe(),
        sources: vec![source],
        training: format!(
            "Trained on one machine by `canopy-node train`: {} AdamW steps of {} × {} bytes \
             (peak rate {}), the last 10% of the text held out.",
            args.steps, args.batch, args.seq, args.lr
        ),
        tokens: u64::from(args.steps) * u64::from(args.batch) * u64::from(args.seq),
        eval_loss: eval,
        bits_per_byte: eval.map(|l| l / std::f64::consts::LN_2),
        limitations: vec![
            "A small model trained briefly on one machine, to try Canopy's training; not an \
             assistant, and not to be relied on."
                .into(),
        ],
        ..ModelCard::default()
    };
    std::fs::write(dir.join("README.md"), card.to_markdown())
        .with_context(|| format!("writing the model card in {}", dir.display()))
}

fn bench(json: bool, size: usize) -> anyhow::Result<()> {
    use canopy_shaders::quickbench::{matmul_gflops, train_tokens_per_sec};
    let runtime = runtime(json)?;
    let cpu = canopy_shaders::Cpu::new();
    let config = canopy_shaders::ModelConfig::tiny();
    let (batch, seq, steps) = (8, 128, 5);
    let cpu_gflops = matmul_gflops(&cpu, size, 3)?;
    let (adapter_gflops, tokens) = match &runtime {
        Runtime::Gpu(gpu) => (
            Some(matmul_gflops(gpu.as_ref(), size, 3)?),
            train_tokens_per_sec(gpu.as_ref(), &config, batch, seq, steps)?,
        ),
        Runtime::Cpu(cpu) => (None, train_tokens_per_sec(cpu, &config, batch, seq, steps)?),
    };
    if json {
        println!(
            "{}",
            serde_json::json!({
                "adapter": runtime.report().to_string(),
                "matmul_size": size,
                "matmul_gflops_wgsl": adapter_gflops,
                "matmul_gflops_cpu": cpu_gflops,
                "train_preset": "tiny",
                "train_tokens_per_sec": tokens,
            })
        );
    } else {
        if let Some(g) = adapter_gflops {
            println!(
                "matmul {size}x{size}x{size} f32, WGSL:     {g:>9.1} GFLOP/s ({:.2}x the CPU path)",
                g / cpu_gflops
            );
        }
        println!("matmul {size}x{size}x{size} f32, CPU path: {cpu_gflops:>9.1} GFLOP/s");
        println!(
            "training, preset tiny ({} parameters), batch {batch}x{seq}: {tokens:.0} tokens/s",
            config.num_params()
        );
    }
    Ok(())
}

/// Starts serving `/metrics` on `addr` when asked: the node's figures and libp2p's.
async fn serve_metrics(addr: Option<SocketAddr>) -> anyhow::Result<Option<NodeMetrics>> {
    let Some(addr) = addr else { return Ok(None) };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics: listening on {addr}"))?;
    let metrics = NodeMetrics::new();
    let registry = metrics.registry();
    tokio::spawn(async move {
        if let Err(e) = canopy_node::metrics::serve(listener, registry).await {
            tracing::warn!("the metrics endpoint stopped: {e}");
        }
    });
    tracing::info!("metrics at http://{addr}/metrics");
    Ok(Some(metrics))
}

async fn join(dir: &Path, identity: Option<&Path>, config: JoinConfig) -> anyhow::Result<()> {
    // Catch Ctrl-C and SIGTERM from the start, so leaving is always clean.
    let shutdown =
        canopy_node::control::shutdown_signal().context("listening for Ctrl-C and SIGTERM")?;
    tokio::pin!(shutdown);
    let key_file = lock::identity_file(dir, identity);
    let (keys, _) = identity::load_or_create_at(&key_file)
        .with_context(|| format!("loading the identity {}", key_file.display()))?;
    // One node per data directory and per key, for as long as this one runs.
    let _lock = lock::NodeLock::acquire(dir, &key_file)?;
    let (runtimes, gpu_reason) = gpus::worker_runtimes(&config.gpus)?;
    let store =
        Arc::new(ChunkStore::open(dir, config.store_cap).context("opening the chunk store")?);
    // Nothing is held yet: what an earlier run of this node kept (its last tasks' objects,
    // shards) is not known to be needed, and would otherwise stay until the cap forced it out.
    // Shards come back on demand.
    let freed = store.collect();
    if freed > 0 {
        tracing::info!(
            bytes = freed,
            "deleted what an earlier run left in the chunk store"
        );
    }
    let node_metrics = serve_metrics(config.metrics).await?;
    let network_config = network::NetworkConfig {
        metrics: node_metrics.as_ref().map(NodeMetrics::registry),
        ..config.network.clone()
    };
    let (client, mut events, task) = network::start(keys.clone(), store.clone(), network_config)
        .await
        .context("starting the swarm")?;
    let started = Instant::now();
    let credit = credit::watch(client.clone(), config.coordinator);
    let mut probes = polite::Probes::from_env();
    let rules_words = config.rules.describe();
    let say = |line: String| {
        if !config.json {
            eprintln!("{line}");
        }
    };
    say(format!("canopy-node {VERSION}: peer {}", keys.peer_id()));
    match settings::write_template_if_missing(dir) {
        Ok(path) => say(format!("settings: {}", path.display())),
        Err(e) => tracing::warn!("writing the settings file: {e}"),
    }
    say(format!("rules: {rules_words}"));
    if config.rules.when == polite::When::Idle && probes.idle.idle_for().is_none() {
        say(
            "this machine does not tell when it is in use: --when idle works as --when always"
                .into(),
        );
    }
    for addr in client.listen_addrs().await.unwrap_or_default() {
        say(format!("listening on {addr}"));
    }
    let adapters: Vec<AdapterInfo> = runtimes
        .iter()
        .map(|r| worker::adapter_info(r, config.memory_limit))
        .collect();
    say(format!("workers: {} ({gpu_reason})", runtimes.len()));
    for (i, r) in runtimes.iter().enumerate() {
        say(format!("worker {i} computes on {}", r.report()));
        if matches!(r, Runtime::Cpu(_)) {
            say(
                "no GPU adapter in use: this node trains on the CPU path (slower, but it counts)"
                    .into(),
            );
        }
    }
    if config.paused {
        control::set_paused(dir, true)?;
    }
    let threads = config
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
    let join_message = Join {
        capabilities: Capabilities {
            adapters: adapters.clone(),
            threads,
            memory_bytes: 0,
            tier: match config.tier {
                TierArg::Volunteer => Tier::Volunteer,
                TierArg::Datacenter => Tier::Datacenter,
            },
            software_version: VERSION.into(),
        },
        display_name: config.display_name.clone(),
        organisation: config.organisation.clone(),
        country: config.country.clone(),
        invite: config.invite.clone(),
        work: None,
    };
    let shared = Arc::new(Shared::default());
    shared
        .paused
        .store(control::is_paused(dir), Ordering::Relaxed);
    let mut workers = tokio::task::JoinSet::new();
    for runtime in runtimes {
        let worker = Worker::new(
            client.clone(),
            keys.clone(),
            Arc::new(runtime),
            WorkerConfig {
                coordinator: config.coordinator,
                join: join_message.clone(),
                memory_limit: config.memory_limit,
                cpu_share: config.rules.cpu_share,
            },
            shared.clone(),
        );
        workers.spawn(worker.run());
    }
    let adapter_names: Vec<String> = adapters.iter().map(|a| a.name.clone()).collect();

    let live = std::io::stderr().is_terminal() && !config.json;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut banned = 0u64;
    let mut ticks = 0u64;
    let mut reachability = None;
    let mut failure = None;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            event = events.recv() => match event {
                Some(NetworkEvent::PeerBanned(peer)) => {
                    banned += 1;
                    tracing::warn!(%peer, "banned a misbehaving peer");
                }
                Some(_) => {}
                None => {
                    failure = Some(anyhow::anyhow!("the swarm stopped unexpectedly"));
                    break;
                }
            },
            done = workers.join_next(), if !workers.is_empty() => {
                if let Some(Ok(Err(e))) = done {
                    failure = Some(anyhow::anyhow!(e));
                    break;
                }
            },
            _ = tick.tick() => {
                ticks += 1;
                let by_volunteer = control::is_paused(dir);
                let paused_by = config.rules.why_not(&mut probes, polite::Hours::now_minute());
                let paused = by_volunteer || paused_by.is_some();
                if paused != shared.paused.swap(paused, Ordering::Relaxed) {
                    say(match (&paused_by, paused) {
                        (Some(why), true) if !by_volunteer => format!("\npaused: {why}; the node hands its task back and goes on when that changes"),
                        (_, true) => "\npaused: handing back the task; `canopy-node resume` to go on".into(),
                        _ => "\nresumed".into(),
                    });
                }
                let status = client.status().await.context("asking the swarm for its status")?;
                let w = shared.status();
                let file = control::NodeStatus {
                    paused_by: paused_by.filter(|_| !by_volunteer),
                    rules: rules_words.clone(),
                    credit: *credit.lock().unwrap_or_else(|e| e.into_inner()),
                    pid: std::process::id(),
                    peer: keys.peer_id().to_string(),
                    updated_ms: worker::now_ms(),
                    uptime_s: started.elapsed().as_secs(),
                    peers: status.connected,
                    bytes_served: status.bytes_served,
                    bytes_fetched: status.bytes_fetched,
                    adapters: adapter_names.clone(),
                    paused,
                    worker: serde_json::to_value(&w).unwrap_or_default(),
                    store_bytes: store.stats().bytes,
                    store_objects: store.stats().objects,
                    provider_records: status.provider_records,
                    remote_provider_records: status.remote_provider_records,
                    reachability: Some(status.reachability),
                    relays: status.relays.clone(),
                    paths: status.paths,
                    upload_limit: status.max_upload_bytes_per_sec,
                    download_limit: status.max_download_bytes_per_sec,
                };
                if reachability != Some(status.reachability) {
                    reachability = Some(status.reachability);
                    say(format!("\nnetwork: {}", status::reachability_words(&file)));
                }
                if let Some(m) = &node_metrics {
                    m.update(&file, &w);
                }
                if let Err(e) = control::write_status(dir, &file) {
                    tracing::warn!("writing the status file: {e}");
                }
                if config.json {
                    if ticks % 5 == 1 {
                        println!("{}", serde_json::json!({ "status": file }));
                    }
                } else {
                    let line = status::status_line(&file, &w);
                    if live {
                        eprint!("\r{line}\x1b[K");
                        let _ = std::io::stderr().flush();
                    } else if ticks % 10 == 1 {
                        eprintln!("{line}");
                    }
                }
            }
        }
    }
    // Hand leases back: the workers see the flag, cancel their task, and release it.
    shared.stop.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while workers.join_next().await.is_some() {}
    })
    .await;
    let status = client.status().await.ok();
    let _ = client.shutdown().await;
    let _ = task.await;
    let _ = std::fs::remove_file(dir.join(control::STATUS_FILE));
    let w = shared.status();
    let (served, fetched) = status.map_or((0, 0), |s| (s.bytes_served, s.bytes_fetched));
    if config.json {
        println!(
            "{}",
            serde_json::json!({ "summary": {
                "uptime_s": started.elapsed().as_secs(),
                "bytes_served": served,
                "bytes_fetched": fetched,
                "peers_banned": banned,
                "tasks_done": w.accepted + w.rejected,
                "tasks_accepted": w.accepted,
                "tasks_rejected": w.rejected,
                "tokens": w.tokens,
                "compute_ms": w.compute_ms,
            }})
        );
    } else {
        if live {
            eprintln!();
        }
        eprintln!(
            "left the swarm after {}s: {} task(s) done ({} accepted, {} refused), {} tokens trained in {:.1}s of compute; served {}, fetched {}, banned {banned} misbehaving peer(s)",
            started.elapsed().as_secs(),
            w.accepted + w.rejected,
            w.accepted,
            w.rejected,
            w.tokens,
            w.compute_ms as f64 / 1000.0,
            status::human_bytes(served),
            status::human_bytes(fetched)
        );
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

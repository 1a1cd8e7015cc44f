//! The `canopy-coordinator` binary: runs a Canopy training project.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use canopy_coordinator::admission;
use canopy_coordinator::config::{BuiltinText, Config, FILE_NAME, Preset, TokenizerChoice};
use canopy_coordinator::corpus_swarm::{CorpusEvent, SwarmBuild};
use canopy_coordinator::dashboard;
use canopy_coordinator::demo;
use canopy_coordinator::project::{self, DB_FILE, Project};
use canopy_coordinator::service::{Service, ServiceEvent};
use canopy_coordinator::state::State;
use canopy_node::network::NetworkConfig;
use clap::{Parser, Subcommand, ValueEnum};

mod corpus_cli;
mod invite_cli;
mod report_cli;
mod run_cli;

use report_cli::{ledger, ledger_totals, status};
use run_cli::run_project;

/// The Canopy coordinator: schedules, verifies and aggregates a training project.
#[derive(Parser)]
#[command(name = "canopy-coordinator", version)]
struct Cli {
    #[command(flatten)]
    log: canopy_node::logging::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a project directory: a commented canopy.toml and the coordinator's key.
    Init {
        /// The directory (created if missing).
        dir: PathBuf,
    },
    /// Run the project: serve the model, lease tasks, verify and aggregate results, until
    /// every round has closed or Ctrl-C. Killed and started again, it carries on.
    Run {
        /// The project's configuration; its directory holds the state.
        #[arg(long, default_value = FILE_NAME)]
        config: PathBuf,
        /// One JSON object per event instead of lines for people.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        http: HttpArgs,
    },
    /// Admit nodes' keys to a tier (the datacenter tier verifies volunteers' work).
    Allow {
        /// The nodes' peer ids (`canopy-node info` prints each).
        peers: Vec<String>,
        /// A file of peer ids to admit too, one per line (blank lines and `#` comments are
        /// skipped): a whole cluster at once.
        #[arg(long)]
        file: Option<PathBuf>,
        /// The tier.
        #[arg(long, value_enum, default_value_t = TierArg::Datacenter)]
        tier: TierArg,
        /// The project's configuration.
        #[arg(long, default_value = FILE_NAME)]
        config: PathBuf,
    },
    /// Copy the project (configuration, key, a consistent snapshot of its state and every
    /// object it names) into DIR, a new or empty directory; works beside a running
    /// coordinator. Restore by running the coordinator on DIR/canopy.toml.
    Backup {
        /// Where the backup goes.
        dir: PathBuf,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        /// The project's configuration.
        #[arg(long, default_value = FILE_NAME)]
        config: PathBuf,
    },
    /// Show the run: rounds, losses, peers, leases (works beside a running coordinator).
    Status {
        /// The project's configuration.
        #[arg(long, default_value = FILE_NAME)]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// With --json: add every lease ever granted and every result received (who held
        /// which task, how each lease ended, which round aggregated each result).
        #[arg(long, requires = "json")]
        history: bool,
    },
    /// Print the contribution ledger: who did what work, verified or not.
    Ledger {
        /// The project's configuration.
        #[arg(long, default_value = FILE_NAME)]
        config: PathBuf,
        /// CSV for spreadsheets.
        #[arg(long, conflicts_with = "json")]
        csv: bool,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        /// Totals per node, per organisation and per country instead of the entries (the
        /// figures the dashboard shows).
        #[arg(long, conflicts_with = "csv")]
        totals: bool,
    },
    /// Export a model version in the Hugging Face BLOOM layout (safetensors + config.json).
    Export {
        /// The round whose starting model to export, or `latest`.
        checkpoint: String,
        /// Where to write it.
        dir: PathBuf,
        /// The project's configuration.
        #[arg(long, default_value = FILE_NAME)]
        config: PathBuf,
    },
    /// The local swarm demo: a coordinator, volunteer nodes and datacenter nodes as separate
    /// libp2p peers on loopback train the model with DiLoCo rounds, then the same model is
    /// trained centrally for comparison.
    Demo {
        /// Volunteer nodes.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=32))]
        nodes: u32,
        /// Datacenter-tier nodes.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=8))]
        datacenter: u32,
        /// DiLoCo rounds.
        #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=1000))]
        rounds: u32,
        /// Inner steps per round.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100000))]
        inner_steps: u32,
        /// Token windows (of 64 tokens) per inner step on each node; the baseline's batch is
        /// that of all nodes together.
        #[arg(long, default_value_t = demo::DEFAULT_BATCH, value_parser = clap::value_parser!(u32).range(1..=4096))]
        batch: u32,
        /// The outer learning rate: how far each round's averaged update is taken (1: plain
        /// averaging of the nodes' models).
        #[arg(long, default_value_t = demo::DEFAULT_OUTER_LR, value_parser = outer_lr)]
        outer_lr: f32,
        /// Model size.
        #[arg(long, value_enum, default_value_t = PresetArg::Tiny)]
        preset: PresetArg,
        /// How text becomes tokens: byte-level BPE (4096 tokens unless --bpe-vocab says
        /// otherwise) trained on the training text, or bytes.
        #[arg(long, value_enum, default_value_t = TokenizerArg::Bpe)]
        tokenizer: TokenizerArg,
        /// Tokens in the BPE vocabulary (bytes and special tokens included).
        #[arg(long, default_value_t = demo::DEFAULT_BPE_VOCAB, value_parser = clap::value_parser!(u32).range(260..=65536))]
        bpe_vocab: u32,
        /// Train on this directory's .txt / .jsonl files instead of the built-in text (the
        /// Universal Declaration of Human Rights in 24 languages).
        #[arg(long)]
        corpus: Option<PathBuf>,
        /// The built-in text when no corpus is given: the Universal Declaration of Human
        /// Rights in 24 languages, or generated sentences (synthetic; for tests).
        #[arg(long, value_enum, default_value_t = TextArg::Udhr)]
        text: TextArg,
        /// Where to keep the run (default: a new directory under the system's temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// One JSON object per round and a final {"summary": …} object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        http: HttpArgs,
    },
    /// The corpus pipeline: build a deduplicated, filtered training corpus with a data card.
    Corpus {
        #[command(subcommand)]
        command: corpus_cli::CorpusCommand,
    },
    /// Invitations for the `invite` admission policy: make one for an organisation's
    /// machines, or revoke one.
    Invite {
        #[command(subcommand)]
        command: invite_cli::InviteCommand,
    },
}

/// The dashboard's flags, shared by `run` and `demo`.
#[derive(clap::Args)]
struct HttpArgs {
    /// Serve the dashboard, JSON API and /metrics on this `host:port` (`run` defaults to
    /// `dashboard.listen` of canopy.toml, and `--http ""` turns it off; the demo serves none
    /// unless asked, and keeps serving after the run until Ctrl-C).
    #[arg(long, value_name = "HOST:PORT")]
    http: Option<String>,
    /// Bearer token for the dashboard's changing actions (default: `dashboard.token`).
    #[arg(long, env = "CANOPY_DASHBOARD_TOKEN", hide_env_values = true)]
    http_token: Option<String>,
}

impl HttpArgs {
    /// Binds the dashboard's listener: the flags win over the configuration.
    /// `config` is the project's `[dashboard]` and directory (`run`), or none (`demo`).
    async fn bind(
        &self,
        config: Option<(&canopy_coordinator::config::DashboardConfig, &Path)>,
    ) -> anyhow::Result<Option<dashboard::Listener>> {
        let (config, project) = config.unzip();
        let listen =
            canopy_coordinator::config::DashboardConfig::listen_with(self.http.as_deref(), config);
        let token = self
            .http_token
            .clone()
            .or_else(|| config.and_then(|c| c.token.clone()));
        if let Some(t) = &token
            && !canopy_coordinator::config::token_ok(t)
        {
            bail!(
                "the dashboard token must be 16 to 256 printable ASCII characters without spaces"
            );
        }
        let Some(listen) = listen else {
            return Ok(None);
        };
        let tokens = dashboard::api::Tokens {
            admin: token,
            read: config.and_then(|c| c.read_token.clone()),
        };
        let listener = dashboard::Listener::bind(&listen, tokens).await?;
        Ok(Some(
            match config.zip(project).and_then(|(c, dir)| c.tls_files(dir)) {
                Some((cert, key)) => listener.with_tls(&cert, &key)?,
                None => listener,
            },
        ))
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum PresetArg {
    Tiny,
    Small,
    Base,
}

#[derive(Clone, Copy, ValueEnum)]
enum TextArg {
    Udhr,
    Generated,
}

#[derive(Clone, Copy, ValueEnum)]
enum TokenizerArg {
    Bpe,
    Bytes,
}

#[derive(Clone, Copy, ValueEnum)]
enum TierArg {
    Datacenter,
    Volunteer,
}

#[allow(unsafe_code)] // one environment variable, set before any thread starts
fn main() -> ExitCode {
    // SAFETY: the first thing main does: no other thread exists yet.
    unsafe { canopy_shaders::runtime::quiet_device_select_layer() };
    let cli = Cli::parse();
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
    match cli.command {
        Command::Init { dir } => init(&dir),
        Command::Run { config, json, http } => {
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            rt.block_on(run_project(&config, json, &http))
        }
        Command::Backup { dir, json, config } => {
            let summary = canopy_coordinator::backup::backup(&project_dir(&config), &config, &dir)?;
            if json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                println!(
                    "backed up {} (round {}): {} objects, {} chunks, {:.1} MiB",
                    dir.display(),
                    summary.round.map_or("none".into(), |r| r.to_string()),
                    summary.objects,
                    summary.chunks,
                    summary.bytes as f64 / 1_048_576.0
                );
                println!(
                    "restore: canopy-coordinator run --config {}",
                    dir.join(FILE_NAME).display()
                );
            }
            Ok(())
        }
        Command::Allow {
            peers,
            file,
            tier,
            config,
        } => allow(&config, &peers, file.as_deref(), tier),
        Command::Status {
            config,
            json,
            history,
        } => status(&config, json, history),
        Command::Ledger {
            config,
            csv,
            json,
            totals,
        } => {
            if totals {
                ledger_totals(&config, json)
            } else {
                ledger(&config, csv, json)
            }
        }
        Command::Export {
            checkpoint,
            dir,
            config,
        } => export(&config, &checkpoint, &dir),
        Command::Demo {
            nodes,
            datacenter,
            rounds,
            inner_steps,
            batch,
            outer_lr,
            preset,
            tokenizer,
            bpe_vocab,
            corpus,
            text,
            dir,
            json,
            http,
        } => {
            let dir = dir.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("canopy-demo-{}", std::process::id()))
            });
            let settings = demo::DemoSettings {
                nodes,
                datacenter,
                rounds,
                inner_steps,
                batch,
                outer_lr,
                preset: match preset {
                    PresetArg::Tiny => Preset::Tiny,
                    PresetArg::Small => Preset::Small,
                    PresetArg::Base => Preset::Base,
                },
                tokenizer: match tokenizer {
                    TokenizerArg::Bpe => TokenizerChoice::Bpe,
                    TokenizerArg::Bytes => TokenizerChoice::Bytes,
                },
                bpe_vocab,
                corpus,
                text: match text {
                    TextArg::Udhr => BuiltinText::Udhr,
                    TextArg::Generated => BuiltinText::Generated,
                },
                dir,
            };
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            rt.block_on(swarm_demo(settings, json, &http))
        }
        Command::Corpus { command } => corpus_cli::run(command),
        Command::Invite { command } => invite_cli::run(command),
    }
}

/// Parses `--outer-lr`: a finite rate above 0 and at most 10.
fn outer_lr(arg: &str) -> Result<f32, String> {
    match arg.parse::<f32>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 10.0 => Ok(v),
        Ok(v) => Err(format!("{v} is not a rate above 0 and at most 10")),
        Err(e) => Err(e.to_string()),
    }
}

/// The project directory of a configuration file.
fn project_dir(config: &Path) -> PathBuf {
    match config.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn open_state(config: &Path) -> anyhow::Result<State> {
    let db = project_dir(config).join(DB_FILE);
    if !db.exists() {
        bail!(
            "{} does not exist: run `canopy-coordinator run --config {}` first",
            db.display(),
            config.display()
        );
    }
    State::open_read_only(&db).with_context(|| format!("opening {}", db.display()))
}

/// Warns when `canopy.toml` holds a token yet others than its owner may read it.
fn warn_if_readable(path: &Path, config: &Config) {
    #[cfg(unix)]
    if config.dashboard.holds_secret()
        && let Ok(meta) = std::fs::metadata(path)
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                "{} holds a dashboard token but others may read it (mode {:o}): chmod 600 it",
                path.display(),
                mode & 0o777
            );
        }
    }
}

fn init(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(FILE_NAME);
    if path.exists() {
        bail!("{} already exists; not overwriting it", path.display());
    }
    // Owner-only: the file is where the dashboard's tokens go.
    canopy_node::identity::write_private(&path, Config::template().as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    let (keys, _) = canopy_node::identity::load_or_create(dir)?;
    println!("created {}", path.display());
    println!("coordinator peer id {}", keys.peer_id());
    println!(
        "next: edit it, then `canopy-coordinator run --config {}`",
        path.display()
    );
    Ok(())
}

fn allow(
    config: &Path,
    peers: &[String],
    file: Option<&Path>,
    tier: TierArg,
) -> anyhow::Result<()> {
    // Every id is checked before any is admitted: a typo admits nobody.
    let mut ids = peers
        .iter()
        .map(|p| {
            p.parse::<libp2p::PeerId>()
                .with_context(|| format!("{p:?} is not a peer id (canopy-node info prints it)"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(file) = file {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        ids.extend(
            admission::parse_peer_list(&text).with_context(|| format!("in {}", file.display()))?,
        );
    }
    ids.sort();
    ids.dedup();
    anyhow::ensure!(
        !ids.is_empty(),
        "no peer id given: name them, or pass --file"
    );
    let dir = project_dir(config);
    let mut state = State::open(&dir.join(DB_FILE))?;
    let tier = match tier {
        TierArg::Datacenter => "datacenter",
        TierArg::Volunteer => "volunteer",
    };
    let now = project::now_ms();
    state.transaction(|tx| {
        for id in &ids {
            tx.allow(&id.to_string(), tier, now)?;
        }
        Ok(())
    })?;
    match ids.as_slice() {
        [one] => {
            println!("{one} admitted to the {tier} tier (it takes effect when the node next joins)")
        }
        _ => println!(
            "{} nodes admitted to the {tier} tier (it takes effect when each next joins)",
            ids.len()
        ),
    }
    Ok(())
}

fn export(config_path: &Path, checkpoint: &str, out: &Path) -> anyhow::Result<()> {
    let dir = project_dir(config_path);
    let config = Config::load(config_path)?;
    let state = open_state(config_path)?;
    let round = match checkpoint {
        "latest" => state.read().current_round()?,
        n => {
            let n: u64 = n
                .parse()
                .with_context(|| format!("{n:?} is neither a round number nor `latest`"))?;
            state.read().round(n)?
        }
    }
    .with_context(|| format!("no model version {checkpoint} in this project"))?;
    let store = canopy_node::store::ChunkStore::open(&dir, config.store.cap_mib << 20)?;
    let params = project::load_params(&state, &store, &round.model_root)?;
    canopy_coordinator::export::export_model(&dir, &config, &state, &params, out, Vec::new())
        .with_context(|| format!("exporting to {}", out.display()))?;
    println!(
        "exported the model of round {} to {}",
        round.round,
        out.display()
    );
    Ok(())
}

async fn swarm_demo(
    settings: demo::DemoSettings,
    json: bool,
    http: &HttpArgs,
) -> anyhow::Result<()> {
    let runtime = canopy_shaders::Runtime::from_env().context("choosing where kernels run")?;
    let listener = http.bind(None).await?;
    let url = listener.as_ref().map(|l| l.url()).transpose()?;
    if let Some(url) = &url {
        if json {
            println!("{}", serde_json::json!({ "dashboard": { "url": url } }));
        } else {
            println!("dashboard at {url}");
        }
    }
    if !json {
        println!(
            "Canopy local swarm demo: 1 coordinator, {} volunteers, {} datacenter node(s), each its own libp2p peer on loopback",
            settings.nodes, settings.datacenter
        );
        println!("compute: {}", runtime.report());
        if matches!(runtime, canopy_shaders::Runtime::Cpu(_)) {
            println!("(no GPU adapter: the nodes train on the CPU path)");
        }
        println!("run directory: {}\n", settings.dir.display());
        println!(
            "{:>5} {:>10} {:>10} {:>8} {:>8} {:>10} {:>8}",
            "round", "train", "held-out", "accepted", "rejected", "sent", "elapsed"
        );
    }
    let summary = demo::run(settings, std::sync::Arc::new(runtime), listener, |r| {
        if json {
            println!("{}", serde_json::json!({ "round": r }));
        } else {
            println!(
                "{:>5} {:>10} {:>10.4} {:>8} {:>8} {:>9.1}M {:>7.1}s",
                r.round,
                r.train_loss.map_or("-".into(), |l| format!("{l:.4}")),
                r.eval_loss,
                r.accepted,
                r.rejected,
                r.bytes_sent as f64 / 1e6,
                r.elapsed_s
            );
        }
        let _ = std::io::stdout().flush();
    })
    .await?;
    if json {
        println!("{}", serde_json::json!({ "summary": summary }));
    } else {
        print_demo_summary(&summary);
    }
    if let Some(url) = url {
        if !json {
            println!("\nthe dashboard keeps serving at {url}; Ctrl-C to quit");
        }
        let _ = std::io::stdout().flush();
        canopy_node::control::shutdown_signal()
            .context("listening for Ctrl-C and SIGTERM")?
            .await;
    }
    Ok(())
}

fn print_demo_summary(summary: &demo::DemoSummary) {
    println!(
        "\nthe nodes trained on: {} ({}, {:?})",
        summary.adapter.name, summary.adapter.backend, summary.adapter.kind
    );
    println!(
        "held-out loss: initial {:.4}, decentralized {:.4}, centralized baseline {:.4} ({:+.1}%)",
        summary.initial_eval_loss,
        summary.final_eval_loss,
        summary.baseline_eval_loss,
        (summary.final_eval_loss / summary.baseline_eval_loss - 1.0) * 100.0
    );
    println!(
        "in bits per byte: decentralized {:.3}, centralized {:.3}, unigram byte model {:.3}",
        summary.final_bits_per_byte, summary.baseline_bits_per_byte, summary.unigram_bits_per_byte
    );
    println!("tokenizer: {}", summary.tokenizer);
    if !summary.samples.is_empty() {
        println!("what the final model writes (greedy, after each prompt):");
        for s in &summary.samples {
            println!(
                "  [{}] {}⟨{}⟩",
                s.language,
                s.prompt,
                s.continuation.replace('\n', " ⏎ ")
            );
        }
    }
    println!(
        "communication: {:.1} MB per node per round; data-parallel would send {:.0}x as much",
        summary.bytes_per_node_per_round / 1e6,
        summary.comm_reduction
    );
    let served = (summary.coordinator_served_bytes + summary.peers_served_bytes).max(1) as f64;
    println!(
        "traffic served: {:.0}% by the coordinator ({:.1} MB), {:.0}% by the nodes ({:.1} MB)",
        100.0 * summary.coordinator_served_bytes as f64 / served,
        summary.coordinator_served_bytes as f64 / 1e6,
        100.0 * summary.peers_served_bytes as f64 / served,
        summary.peers_served_bytes as f64 / 1e6,
    );
    println!(
        "time: decentralized {:.0}s, centralized {:.0}s; {} updates accepted, {} rejected",
        summary.decentralized_s, summary.baseline_s, summary.accepted, summary.rejected
    );
    println!("exported model: {}", summary.exported.display());
}

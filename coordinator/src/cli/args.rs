//! The command line of `canopy-coordinator`: its subcommands and their options.

use std::path::{Path, PathBuf};

use anyhow::bail;
use canopy_coordinator::config::FILE_NAME;
use canopy_coordinator::config::{BuiltinText, Preset, TokenizerChoice};
use canopy_coordinator::dashboard;
use canopy_coordinator::demo;
use canopy_node::cli::by_name;
use canopy_protocol::messages::Tier;
use clap::{Parser, Subcommand};

/// The Canopy coordinator: schedules, verifies and aggregates a training project.
#[derive(Parser)]
#[command(name = "canopy-coordinator", version)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) log: canopy_node::logging::LogArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
        #[arg(long, value_parser = by_name::<Tier>(), default_value_t = Tier::Datacenter)]
        tier: Tier,
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
        #[arg(long, value_parser = by_name::<Preset>(), default_value_t = Preset::Tiny)]
        preset: Preset,
        /// How text becomes tokens: byte-level BPE (4096 tokens unless --bpe-vocab says
        /// otherwise) trained on the training text, or bytes.
        #[arg(long, value_enum, default_value_t = TokenizerChoice::Bpe)]
        tokenizer: TokenizerChoice,
        /// Tokens in the BPE vocabulary (bytes and special tokens included).
        #[arg(long, default_value_t = demo::DEFAULT_BPE_VOCAB, value_parser = clap::value_parser!(u32).range(260..=65536))]
        bpe_vocab: u32,
        /// Train on this directory's .txt / .jsonl files instead of the built-in text (the
        /// Universal Declaration of Human Rights in 24 languages).
        #[arg(long)]
        corpus: Option<PathBuf>,
        /// The built-in text when no corpus is given: the Universal Declaration of Human
        /// Rights in 24 languages, or generated sentences (synthetic; for tests).
        #[arg(long, value_enum, default_value_t = BuiltinText::Udhr)]
        text: BuiltinText,
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
        command: crate::cli::corpus::CorpusCommand,
    },
    /// Invitations for the `invite` admission policy: make one for an organisation's
    /// machines, or revoke one.
    Invite {
        #[command(subcommand)]
        command: crate::cli::invite::InviteCommand,
    },
}

/// The dashboard's flags, shared by `run` and `demo`.
#[derive(clap::Args)]
pub(crate) struct HttpArgs {
    /// Serve the dashboard, JSON API and /metrics on this `host:port` (`run` defaults to
    /// `dashboard.listen` of canopy.toml, and `--http ""` turns it off; the demo serves none
    /// unless asked, and keeps serving after the run until Ctrl-C).
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) http: Option<String>,
    /// Bearer token for the dashboard's changing actions (default: `dashboard.token`).
    #[arg(long, env = "CANOPY_DASHBOARD_TOKEN", hide_env_values = true)]
    pub(crate) http_token: Option<String>,
}

impl HttpArgs {
    /// Binds the dashboard's listener: the flags win over the configuration.
    /// `config` is the project's `[dashboard]` and directory (`run`), or none (`demo`).
    pub(crate) async fn bind(
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

/// Parses `--outer-lr`: a finite rate above 0 and at most 10.
pub(crate) fn outer_lr(arg: &str) -> Result<f32, String> {
    match arg.parse::<f32>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 10.0 => Ok(v),
        Ok(v) => Err(format!("{v} is not a rate above 0 and at most 10")),
        Err(e) => Err(e.to_string()),
    }
}

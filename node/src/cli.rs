//! The command line: clap parses raw flags ([`Cli`]), then [`JoinConfig::from_args`] turns them
//! into a checked configuration; `main.rs` only dispatches.

use std::path::PathBuf;

use canopy_protocol::messages::Tier;
use canopy_shaders::Preset;
use clap::{Parser, Subcommand};
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

use crate::network::{
    DEFAULT_PROVIDER_TTL, MAX_PROVIDER_TTL_SECS, MIN_PROVIDER_TTL_SECS, NetworkConfig,
};

/// A Canopy peer: contributes this machine's GPU or CPU to an open language model.
#[derive(Debug, Parser)]
#[command(name = "canopy-node", version = crate::VERSION)]
pub struct Cli {
    /// Where the node keeps its identity and chunk store (default: the platform's data
    /// directory, or $CANOPY_DATA_DIR).
    #[arg(long, global = true, env = "CANOPY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The node's key file (default: identity.key in the data directory, or
    /// $CANOPY_IDENTITY): one per machine where home directories are shared.
    #[arg(long, global = true, env = "CANOPY_IDENTITY")]
    pub identity: Option<PathBuf>,
    /// `--log-format`.
    #[command(flatten)]
    pub log: crate::logging::LogArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The node's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show this node's identity, data directory and chunk store.
    Info {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Join a Canopy swarm through its coordinator and stay until Ctrl-C.
    Join(Box<JoinArgs>),
    /// Run every kernel on the chosen adapter against the CPU path and print a table; exits
    /// non-zero if any kernel computes wrongly. Set CANOPY_ADAPTER=gpu|software|cpu to choose.
    Selftest {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Train a model locally on a byte stream (the built-in Universal Declaration of Human
    /// Rights in 24 languages, or a file), printing loss and tokens/s, and optionally export it in the Hugging Face BLOOM
    /// layout. No swarm: this is the training a task runs, on this machine alone.
    Train(TrainArgs),
    /// Ask the coordinator for this identity's credit: its totals in the contribution ledger
    /// (tokens trained, results accepted, verified and refused), signed by the coordinator.
    Credit {
        /// The coordinator's address, ending in /p2p/<peer id> (as for `join`).
        coordinator: Multiaddr,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Show what the node running on this data directory is doing (from its status file).
    Status {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Pause the node running on this data directory: it hands its task back and takes no
    /// new work until `resume`.
    Pause,
    /// Resume a paused node.
    Resume,
    /// Measure matrix-multiply GFLOP/s (WGSL and CPU path) and training tokens/s.
    Bench {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        /// Matrix size for the matmul measurement.
        #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(16..=8192))]
        size: u32,
    },
    /// Run `join` as a service of this user, started at login: a systemd user unit (Linux), a
    /// launchd agent (macOS) or a scheduled task (Windows).
    #[command(subcommand)]
    Service(crate::service::ServiceCommand),
}

/// Flags of `canopy-node join`.
#[derive(Debug, clap::Args)]
pub struct JoinArgs {
    /// The coordinator's address, ending in /p2p/<peer id>
    /// (e.g. /ip4/203.0.113.7/tcp/4740/p2p/12D3KooW…); or `coordinator` in canopy-node.toml.
    pub coordinator: Option<Multiaddr>,
    /// The tier to ask for; the coordinator grants `datacenter` only to allowlisted keys.
    #[arg(long, value_parser = by_name::<Tier>(), default_value_t = Tier::Volunteer)]
    pub tier: Tier,
    /// A display name for the dashboard.
    #[arg(long)]
    pub name: Option<String>,
    /// Your organisation, if you want it credited.
    #[arg(long, visible_alias = "organisation")]
    pub org: Option<String>,
    /// Your country, as an ISO 3166-1 alpha-2 code (e.g. FR).
    #[arg(long)]
    pub country: Option<String>,
    /// The invitation token the project gave you or your institution (it admits this node
    /// where the project admits invited nodes only, and records its organisation).
    #[arg(long, env = "CANOPY_INVITE", hide_env_values = true)]
    pub invite: Option<String>,
    /// Addresses to listen on (repeatable; default: TCP and QUIC on every interface).
    #[arg(long = "listen")]
    pub listen: Vec<Multiaddr>,
    /// Find peers on the local network with mDNS.
    #[arg(long)]
    pub mdns: bool,
    /// Advertise the listen addresses as reachable (hosts with a public address, LANs).
    #[arg(long)]
    pub public: bool,
    /// Most disk space for the chunk store, in MiB.
    #[arg(long, default_value_t = 4096)]
    pub store_mib: u64,
    /// Most upload rate for serving chunks to one peer, in MiB/s.
    #[arg(long, default_value_t = 64)]
    pub max_upload_mib: u64,
    /// Most upload rate to every peer together, in MiB/s (0: no limit).
    #[arg(long, default_value_t = 0, env = "CANOPY_UPLOAD_LIMIT_MIB")]
    pub upload_limit_mib: u64,
    /// Most download rate from every peer together, in MiB/s (0: no limit).
    #[arg(long, default_value_t = 0, env = "CANOPY_DOWNLOAD_LIMIT_MIB")]
    pub download_limit_mib: u64,
    /// Serve as a relay for volunteers behind NAT (for hosts with a public address).
    #[arg(long)]
    pub relay: bool,
    /// Do not ask the router to forward a port with UPnP.
    #[arg(long)]
    pub no_upnp: bool,
    /// How long this node keeps other peers' DHT provider records, in seconds (it announces
    /// its own again every third of it); use the project's `network.provider_ttl_secs`.
    #[arg(long, default_value_t = DEFAULT_PROVIDER_TTL.as_secs(),
          value_parser = clap::value_parser!(u64).range(MIN_PROVIDER_TTL_SECS..=MAX_PROVIDER_TTL_SECS))]
    pub provider_ttl_secs: u64,
    /// GPUs to run workers on, one worker each: `all`, or adapter numbers such as `0,1`
    /// (`canopy-node info` lists them). Default: the GPUs a scheduler names in
    /// CUDA_VISIBLE_DEVICES, ROCR_VISIBLE_DEVICES, ZE_AFFINITY_MASK or GPU_DEVICE_ORDINAL,
    /// else one worker on the best adapter, or the CPU path.
    #[arg(long)]
    pub gpus: Option<String>,
    /// Most CPU threads the CPU path uses (default: all cores).
    #[arg(long, env = "CANOPY_THREADS", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub threads: Option<u32>,
    /// Most memory one task may use on its device, in MiB (tasks that need more are handed
    /// back).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub gpu_memory_mib: Option<u64>,
    /// Start paused (resume with `canopy-node resume`).
    #[arg(long)]
    pub paused: bool,
    /// CPU and I/O priority: `low` (nice 19 and the idle I/O class: whatever else runs on
    /// this machine comes first) or `normal` (for machines that do nothing else).
    #[arg(long, value_enum, default_value_t, env = "CANOPY_PRIORITY")]
    pub priority: crate::polite::Priority,
    /// Keep working while the machine runs on battery (by default the node pauses, handing
    /// its task back, until it is plugged in again).
    #[arg(long, env = "CANOPY_WORK_ON_BATTERY")]
    pub work_on_battery: bool,
    /// `always` (whenever the other rules allow) or `idle`: only once nobody has used the
    /// keyboard, mouse or a terminal for --idle-minutes.
    #[arg(long, value_enum, default_value_t, env = "CANOPY_WHEN")]
    pub when: crate::polite::When,
    /// Minutes without input after which the machine counts as idle (for --when idle).
    #[arg(long, default_value_t = 3, env = "CANOPY_IDLE_MINUTES",
          value_parser = clap::value_parser!(u64).range(1..=1440))]
    pub idle_minutes: u64,
    /// Daily working hours in local time, such as 22:00-07:00 or 09:00-12:00,14:00-17:00
    /// (default: all day).
    #[arg(long, env = "CANOPY_HOURS")]
    pub hours: Option<crate::polite::Hours>,
    /// Most share of the time spent computing, in percent (default: no cap).
    #[arg(long, env = "CANOPY_CPU_SHARE", value_parser = clap::value_parser!(u8).range(1..=100))]
    pub cpu_share: Option<u8>,
    /// Serve Prometheus metrics (the node's and libp2p's) at http://IP:PORT/metrics, such as
    /// 127.0.0.1:9464. Off by default.
    #[arg(long, value_name = "IP:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Print one JSON status object per interval instead of a live line.
    #[arg(long)]
    pub json: bool,
}

/// Which adapters `--gpus` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuChoice {
    /// One worker on the best adapter or the CPU path.
    Default,
    /// Every hardware GPU.
    All,
    /// These adapter numbers.
    List(Vec<usize>),
}

impl GpuChoice {
    /// Parses `all` or a comma-separated list of adapter numbers.
    pub fn parse(text: &str) -> Result<Self, ArgsError> {
        if text.trim() == "all" {
            return Ok(Self::All);
        }
        let mut list = Vec::new();
        for part in text.split(',') {
            let n = part
                .trim()
                .parse::<usize>()
                .map_err(|_| ArgsError::Gpus(text.to_string()))?;
            if !list.contains(&n) {
                list.push(n);
            }
        }
        if list.is_empty() || list.len() > canopy_protocol::messages::MAX_ADAPTERS {
            return Err(ArgsError::Gpus(text.to_string()));
        }
        Ok(Self::List(list))
    }
}

/// Flags of `canopy-node train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Model size.
    #[arg(long, value_parser = by_name::<Preset>(), default_value_t = Preset::Tiny)]
    pub preset: Preset,
    /// Optimizer steps.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..))]
    pub steps: u32,
    /// Sequences per step.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub batch: u32,
    /// Bytes per sequence (at most the preset's context).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(2..=65536))]
    pub seq: u32,
    /// Peak learning rate (warmup, then cosine decay to a tenth).
    #[arg(long, default_value_t = 5e-3)]
    pub lr: f32,
    /// Seed of the initialisation and the batches.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Train on this file's bytes instead of the built-in text (the Universal Declaration of
    /// Human Rights in 24 languages).
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Write model.safetensors and config.json here when done.
    #[arg(long)]
    pub export: Option<PathBuf>,
    /// One JSON object per logged step and a final summary.
    #[arg(long)]
    pub json: bool,
}

/// An enum of another crate that the command line takes by name: the protocol's [`Tier`] and
/// the model [`Preset`]. Defined once, for the command line, the configuration and the wire.
pub trait Named: Sized + Copy + Send + Sync + 'static {
    /// Every value, in the order `--help` lists them.
    const ALL: &'static [Self];
    /// The value's name.
    fn name(self) -> &'static str;
    /// What the value means, for `--help`.
    fn help(self) -> &'static str;
}

impl Named for Tier {
    const ALL: &'static [Self] = &Tier::ALL;
    fn name(self) -> &'static str {
        self.as_str()
    }
    fn help(self) -> &'static str {
        match self {
            Tier::Volunteer => "a volunteer's machine: its work is checked by others",
            Tier::Datacenter => "an institution's allowlisted cluster node: it checks others",
        }
    }
}

impl Named for Preset {
    const ALL: &'static [Self] = &Preset::ALL;
    fn name(self) -> &'static str {
        self.as_str()
    }
    fn help(self) -> &'static str {
        match self {
            Preset::Tiny => "about 0.8M parameters: trains on a CPU in minutes",
            Preset::Small => "about 25M parameters",
            Preset::Base => "about 300M parameters",
        }
    }
}

/// The command-line parser of a [`Named`] enum: its names are the possible values (`--help`
/// lists them with their meaning) and anything else is refused with that list.
pub fn by_name<T: Named>() -> impl clap::builder::TypedValueParser<Value = T> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser as _};
    let values = T::ALL
        .iter()
        .map(|v| PossibleValue::new(v.name()).help(v.help()));
    PossibleValuesParser::new(values).try_map(|name| {
        T::ALL
            .iter()
            .copied()
            .find(|v| v.name() == name)
            .ok_or_else(|| format!("{name:?} is not one of the values"))
    })
}

/// A checked `join` configuration.
#[derive(Debug, Clone)]
pub struct JoinConfig {
    /// The coordinator's peer id, taken from its address.
    pub coordinator: libp2p::PeerId,
    /// The swarm settings.
    pub network: NetworkConfig,
    /// Chunk store cap in bytes.
    pub store_cap: u64,
    /// Self-declared display name, organisation and country.
    pub display_name: Option<String>,
    /// See [`JoinArgs::org`].
    pub organisation: Option<String>,
    /// See [`JoinArgs::country`].
    pub country: Option<String>,
    /// See [`JoinArgs::invite`] (checked for form; the coordinator checks the rest).
    pub invite: Option<String>,
    /// Requested tier.
    pub tier: Tier,
    /// JSON output.
    pub json: bool,
    /// Adapters to run workers on.
    pub gpus: GpuChoice,
    /// CPU thread limit.
    pub threads: Option<u32>,
    /// Per-task device memory limit in bytes.
    pub memory_limit: Option<u64>,
    /// Start paused.
    pub paused: bool,
    /// Where to serve `/metrics`, if anywhere.
    pub metrics: Option<std::net::SocketAddr>,
    /// CPU and I/O priority.
    pub priority: crate::polite::Priority,
    /// When the node may work.
    pub rules: crate::polite::Rules,
}

/// The coordinator's peer id, from its address's `/p2p/<peer id>` ending.
pub fn coordinator_peer(addr: &Multiaddr) -> Result<libp2p::PeerId, ArgsError> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Ok(peer),
        _ => Err(ArgsError::NoPeerId(addr.clone())),
    }
}

/// Why `join` flags are refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArgsError {
    /// The coordinator address has no `/p2p/<peer id>` part.
    #[error("the coordinator address {0} must end in /p2p/<peer id>")]
    NoPeerId(Multiaddr),
    /// The country is not a two-letter code.
    #[error("--country {0:?} must be a two-letter ISO 3166-1 code such as FR")]
    Country(String),
    /// A text flag is too long.
    #[error("--{flag} is {len} bytes; at most {max}")]
    TooLong {
        /// The flag.
        flag: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A size flag is zero.
    #[error("--{0} must be at least 1")]
    Zero(&'static str),
    /// No coordinator address on the command line nor in the settings file.
    #[error(
        "give the coordinator's address (ending in /p2p/<peer id>), or set `coordinator` in canopy-node.toml"
    )]
    NoCoordinator,
    /// `--invite` is not an invitation token.
    #[error("--invite: {0}")]
    Invite(canopy_protocol::InviteError),
    /// `--gpus` is neither `all` nor a list of adapter numbers.
    #[error("--gpus {0:?}: give `all` or adapter numbers such as 0,1")]
    Gpus(String),
}

impl JoinConfig {
    /// Checks the flags of `join`.
    pub fn from_args(args: JoinArgs) -> Result<Self, ArgsError> {
        let coordinator_addr = args.coordinator.ok_or(ArgsError::NoCoordinator)?;
        let coordinator = coordinator_peer(&coordinator_addr)?;
        let label = canopy_protocol::messages::MAX_LABEL;
        for (flag, value) in [("name", &args.name), ("org", &args.org)] {
            if let Some(v) = value
                && v.len() > label
            {
                return Err(ArgsError::TooLong {
                    flag,
                    len: v.len(),
                    max: label,
                });
            }
        }
        let country = match args.country {
            Some(c) if c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()) => {
                Some(c.to_ascii_uppercase())
            }
            Some(c) => return Err(ArgsError::Country(c)),
            None => None,
        };
        if let Some(token) = &args.invite {
            canopy_protocol::Invite::from_token(token).map_err(ArgsError::Invite)?;
        }
        if args.store_mib == 0 {
            return Err(ArgsError::Zero("store-mib"));
        }
        if args.max_upload_mib == 0 {
            return Err(ArgsError::Zero("max-upload-mib"));
        }
        let mut network = NetworkConfig {
            bootstrap: vec![coordinator_addr],
            mdns: args.mdns,
            advertise_listen_addrs: args.public,
            serve_rate_bytes_per_sec: args.max_upload_mib << 20,
            max_upload_bytes_per_sec: args.upload_limit_mib << 20,
            max_download_bytes_per_sec: args.download_limit_mib << 20,
            relay_server: args.relay,
            upnp: !args.no_upnp,
            provider_ttl: std::time::Duration::from_secs(args.provider_ttl_secs),
            ..NetworkConfig::default()
        };
        if !args.listen.is_empty() {
            network.listen = args.listen;
        }
        Ok(Self {
            coordinator,
            network,
            store_cap: args.store_mib << 20,
            display_name: args.name,
            organisation: args.org,
            country,
            invite: args.invite.map(|t| t.trim().to_string()),
            tier: args.tier,
            json: args.json,
            gpus: match &args.gpus {
                Some(g) => GpuChoice::parse(g)?,
                None => GpuChoice::Default,
            },
            threads: args.threads,
            memory_limit: args.gpu_memory_mib.map(|m| m << 20),
            paused: args.paused,
            metrics: args.metrics,
            priority: args.priority,
            rules: crate::polite::Rules {
                when: args.when,
                idle_after: std::time::Duration::from_secs(args.idle_minutes * 60),
                pause_on_battery: !args.work_on_battery,
                hours: args.hours,
                cpu_share: args.cpu_share,
            },
        })
    }
}

/// The data directory: the flag, else the platform's (e.g. `~/.local/share/canopy`).
pub fn data_dir(flag: Option<PathBuf>) -> Option<PathBuf> {
    flag.or_else(|| {
        directories::ProjectDirs::from("org", "Canopy", "canopy")
            .map(|d| d.data_dir().to_path_buf())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<JoinConfig, String> {
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        match cli.command {
            Command::Join(a) => JoinConfig::from_args(*a).map_err(|e| e.to_string()),
            _ => Err("not join".into()),
        }
    }

    const ADDR: &str =
        "/ip4/127.0.0.1/tcp/4740/p2p/12D3KooWRh8tC5w9fyYZci3S9vTrNDbMNdXj13XfBj5aof2awhA9";

    /// `--tier` and `--preset` take the protocol's and the model's own enums by name, list
    /// the values with their meaning in `--help`, and refuse any other name.
    #[test]
    fn named_values_parse_by_name_and_list_their_meaning() {
        assert_eq!(
            parse(&["canopy-node", "join", ADDR]).unwrap().tier,
            Tier::Volunteer
        );
        let dc = parse(&["canopy-node", "join", ADDR, "--tier", "datacenter"]).unwrap();
        assert_eq!(dc.tier, Tier::Datacenter);
        let bad = parse(&["canopy-node", "join", ADDR, "--tier", "root"]).unwrap_err();
        assert!(
            bad.contains("volunteer") && bad.contains("datacenter"),
            "{bad}"
        );
        for preset in Preset::ALL {
            let cli =
                Cli::try_parse_from(["canopy-node", "train", "--preset", preset.as_str()]).unwrap();
            assert!(matches!(cli.command, Command::Train(t) if t.preset == preset));
        }
        let mut command = <Cli as clap::CommandFactory>::command();
        let help = command
            .find_subcommand_mut("join")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(help.contains("it checks others"), "{help}");
    }

    #[test]
    fn join_flags_are_checked() {
        let ok = parse(&[
            "canopy-node",
            "join",
            ADDR,
            "--country",
            "fr",
            "--name",
            "ada",
        ])
        .unwrap();
        assert_eq!(ok.country.as_deref(), Some("FR"));
        assert_eq!(ok.network.bootstrap.len(), 1);
        let no_peer = parse(&["canopy-node", "join", "/ip4/127.0.0.1/tcp/4740"]).unwrap_err();
        assert!(no_peer.contains("/p2p/"), "{no_peer}");
        let country = parse(&["canopy-node", "join", ADDR, "--country", "France"]).unwrap_err();
        assert!(country.contains("two-letter"), "{country}");
        let zero = parse(&["canopy-node", "join", ADDR, "--store-mib", "0"]).unwrap_err();
        assert!(zero.contains("store-mib"), "{zero}");
        let gpus = parse(&["canopy-node", "join", ADDR, "--gpus", "0, 1,1"]).unwrap();
        assert_eq!(gpus.gpus, GpuChoice::List(vec![0, 1]));
        let all = parse(&["canopy-node", "join", ADDR, "--gpus", "all"]).unwrap();
        assert_eq!(all.gpus, GpuChoice::All);
        let bad = parse(&["canopy-node", "join", ADDR, "--gpus", "first"]).unwrap_err();
        assert!(bad.contains("--gpus"), "{bad}");
        let garbage = parse(&["canopy-node", "join", "not-an-address"]).unwrap_err();
        assert!(garbage.contains("invalid value"), "{garbage}");
        let invite = parse(&["canopy-node", "join", ADDR, "--invite", "letmein"]).unwrap_err();
        assert!(
            invite.contains("--invite: not a Canopy invitation"),
            "{invite}"
        );
    }
}

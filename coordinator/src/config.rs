//! The coordinator's configuration, read from `canopy.toml`.
//!
//! Every section and every key is optional: whatever the file leaves out
//! takes its default (see [`Config::default`] and [`Config::template`], which
//! are kept identical by a test). A key or section the coordinator does not
//! know is an error, so a misspelt key can never be silently ignored.
//!
//! [`Config::load`] and [`Config::from_toml`] parse and then [`validate`]
//! the result; every error names the file, the key and what is allowed.
//!
//! [`validate`]: Config::validate

use std::path::{Path, PathBuf};

use canopy_node::network::{MAX_PROVIDER_TTL_SECS, MIN_PROVIDER_TTL_SECS};
use canopy_protocol::join_work::MAX_JOIN_WORK_BITS;
use serde::{Deserialize, Serialize};

mod admission;
mod checks;
mod dashboard;
mod model;
mod training;
mod validator;
pub use admission::{AdmissionConfig, AdmissionPolicy};
pub use dashboard::{DashboardConfig, token_ok};
pub use model::{BuiltinText, DataConfig, ModelConfig, Preset, TokenizerChoice};
pub use training::{AggregationConfig, Compression, LateUpdates, TrainingConfig};
use validator::Validator;

/// The configuration file's usual name; also the file named by errors from
/// [`Config::validate`], which does not know where the values came from.
pub const FILE_NAME: &str = "canopy.toml";

/// The values `aggregation.combine` may take.
const COMBINE_METHODS: [&str; 3] = ["trimmed_mean", "median", "mean"];

/// Why a configuration could not be read or was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the configuration file: {source}", path.display())]
    Io {
        /// The file that was being read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML, has a value of the wrong type, or names a
    /// key or section that does not exist.
    #[error("{origin}: {source}")]
    Parse {
        /// Where the text came from (usually the file's path).
        origin: String,
        /// The parser's error, which shows the offending line and key.
        #[source]
        source: toml::de::Error,
    },
    /// A value parsed but is outside its allowed range.
    #[error("{origin}: {key} {reason}")]
    Invalid {
        /// Where the values came from (usually the file's path).
        origin: String,
        /// The dotted key at fault, such as `training.inner_steps`.
        key: &'static str,
        /// What is allowed, and the value that was given.
        reason: String,
    },
}

/// The whole coordinator configuration: one field per `canopy.toml` section.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[project]`: the training run's identity.
    pub project: ProjectConfig,
    /// `[network]`: the peer-to-peer listener.
    pub network: NetworkConfig,
    /// `[model]`: which model is trained.
    pub model: ModelConfig,
    /// `[data]`: the training corpus and how it is cut up.
    pub data: DataConfig,
    /// `[training]`: rounds, inner optimiser and round closing.
    pub training: TrainingConfig,
    /// `[aggregation]`: how accepted updates become the next global model.
    pub aggregation: AggregationConfig,
    /// `[scheduling]`: lease deadlines and liveness.
    pub scheduling: SchedulingConfig,
    /// `[verification]`: checks applied to volunteers' updates.
    pub verification: VerificationConfig,
    /// `[reputation]`: per-node score changes and banning.
    pub reputation: ReputationConfig,
    /// `[admission]`: who may join.
    pub admission: AdmissionConfig,
    /// `[dashboard]`: the local web dashboard.
    pub dashboard: DashboardConfig,
    /// `[store]`: the coordinator's content store.
    pub store: StoreConfig,
    /// `[corpus]`: a corpus build the swarm runs before training (absent: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corpus: Option<CorpusSection>,
}

/// `[corpus]`: build the training corpus on the swarm before training starts.
///
/// `canopy-coordinator run` plans the build over `sources`, leases one corpus task per chunk
/// to two distinct peers (a third run breaks a disagreement), writes the same outputs as
/// `canopy-coordinator corpus build` into `out`, and then trains on `out/kept.jsonl`.
/// Relative paths are relative to the project directory (where `canopy.toml` is).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpusSection {
    /// The sources directory: one subdirectory per source with its `source.toml`.
    pub sources: PathBuf,
    /// Where the outputs go (kept.jsonl, dropped.jsonl, shards/, the data card).
    pub out: PathBuf,
    /// The opt-out list (default: `sources/optout.txt` when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optout: Option<PathBuf>,
    /// The build settings, a `corpus.toml` (default: `sources/corpus.toml` when present, else
    /// the defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<PathBuf>,
}

impl CorpusSection {
    /// `path` resolved against the project directory `dir` when relative.
    pub fn resolve(dir: &Path, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            dir.join(path)
        }
    }
}

/// `[project]`: the training run's identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProjectConfig {
    /// The run's name: ASCII letters, digits, `-`, `_` and `.` only.
    pub name: String,
    /// Seed for model initialisation, generated data and task shuffling.
    pub seed: u64,
}

impl Default for ProjectConfig {
    fn default() -> Self {
        Self {
            name: "canopy-demo".to_owned(),
            seed: 0,
        }
    }
}

/// `[network]`: the peer-to-peer listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Multiaddrs to listen on, such as `/ip4/0.0.0.0/tcp/4740`.
    pub listen: Vec<String>,
    /// Advertise the listen addresses as publicly reachable.
    pub public: bool,
    /// Discover peers on the local network with mDNS.
    pub mdns: bool,
    /// How long the DHT keeps a provider record, in seconds; nodes should use the same value
    /// (`canopy-node join --provider-ttl-secs`).
    pub provider_ttl_secs: u64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            listen: vec![
                "/ip4/0.0.0.0/tcp/4740".to_owned(),
                "/ip4/0.0.0.0/udp/4740/quic-v1".to_owned(),
            ],
            public: false,
            mdns: false,
            provider_ttl_secs: canopy_node::network::DEFAULT_PROVIDER_TTL.as_secs(),
        }
    }
}

/// `[scheduling]`: lease deadlines and liveness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulingConfig {
    /// A lease's deadline as a multiple of the task's expected time; at least 1.
    pub lease_slack: f64,
    /// Shortest lease in seconds; at least 1.
    pub min_lease_secs: u64,
    /// Longest lease in seconds; at least `min_lease_secs`.
    pub max_lease_secs: u64,
    /// Throughput assumed for a node never measured; finite and above 0.
    pub assumed_tokens_per_sec: f64,
    /// Seconds between heartbeats; at least 1.
    pub heartbeat_secs: u64,
    /// How long a node with nothing to do waits before asking again, in ms; 50 to 60,000.
    /// The coordinator stretches it when many peers are about (so that waiting peers send
    /// about 100 requests a second in all) and jitters it by ±25 %.
    pub idle_retry_ms: u32,
}

impl Default for SchedulingConfig {
    fn default() -> Self {
        Self {
            lease_slack: 3.0,
            min_lease_secs: 30,
            max_lease_secs: 3600,
            assumed_tokens_per_sec: 2000.0,
            heartbeat_secs: 10,
            idle_retry_ms: 1000,
        }
    }
}

/// `[verification]`: checks applied to volunteers' updates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerificationConfig {
    /// Share of volunteer training tasks re-run by the datacenter tier, in [0, 1].
    pub rerun_fraction: f64,
    /// Least cosine similarity between an update and its re-run, in [-1, 1].
    pub min_cosine: f64,
    /// Raises of held-out loss, in nats, that an update alone may always cause; beyond,
    /// it is judged against the spread of recent accepted updates (see `judge`); at least 0.
    pub max_loss_increase: f64,
    /// Spreads above the typical update beyond which an update is an outlier: left out of
    /// its round without costing reputation (only a repeated pattern does); at least 1.
    pub outlier_spreads: f64,
    /// Whether a round aggregates an update whose scheduled re-run has not happened by the
    /// time it closes (`true`), or keeps it out (`false`, the default: checks fail closed).
    pub aggregate_unchecked: bool,
    /// Nodes that hold each corpus shard; at least 1.
    pub corpus_replicas: u32,
    /// Share of corpus chunks agreed by volunteers alone that the coordinator computes again
    /// itself before accepting the agreement, in [0, 1] (a secret draw per chunk).
    pub corpus_recheck_fraction: f64,
}

impl Default for VerificationConfig {
    fn default() -> Self {
        Self {
            rerun_fraction: 0.25,
            min_cosine: 0.8,
            max_loss_increase: 0.5,
            outlier_spreads: 4.0,
            aggregate_unchecked: false,
            corpus_replicas: 2,
            corpus_recheck_fraction: 0.05,
        }
    }
}

/// `[reputation]`: per-node score changes and banning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReputationConfig {
    /// A new node's score.
    pub start: i64,
    /// Change for an accepted update; at least 0.
    pub accepted: i64,
    /// Change for a rejected update; at most 0.
    pub rejected: i64,
    /// Change for an update that failed verification; at most 0.
    pub failed_verification: i64,
    /// A node whose score falls below this is banned; below `start`.
    pub ban_below: i64,
}

impl Default for ReputationConfig {
    fn default() -> Self {
        Self {
            start: 0,
            accepted: 1,
            rejected: -10,
            failed_verification: -25,
            ban_below: -50,
        }
    }
}

/// `[store]`: the coordinator's content store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Most disk space the store may use, in MiB; at least 1.
    pub cap_mib: u64,
    /// Keep the model of every round that is a multiple of this on disk, for export; 0 keeps
    /// only the current and previous versions (everything else a round leaves is deleted).
    pub checkpoint_every: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            cap_mib: 65_536,
            checkpoint_every: 0,
        }
    }
}

/// TOML has no null, so an optional string is written `""` when absent.
mod empty_string_is_none {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `None` as `""`.
    pub(super) fn serialize<S: Serializer>(
        value: &Option<String>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(value.as_deref().unwrap_or(""))
    }

    /// Reads `""` as `None`.
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let text = String::deserialize(d)?;
        Ok(if text.is_empty() { None } else { Some(text) })
    }
}

impl Config {
    /// Parses and validates `canopy.toml` text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|source| ConfigError::Parse {
            origin: origin.to_owned(),
            source,
        })?;
        config.check(origin)?;
        Ok(config)
    }

    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Checks every value against its allowed range; errors name [`FILE_NAME`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check(FILE_NAME)
    }

    /// The commented `canopy.toml` that `canopy-coordinator init` writes.
    pub fn template() -> String {
        TEMPLATE.to_owned()
    }
}

/// The file `canopy-coordinator init` writes; equal to `Config::default()`.
const TEMPLATE: &str = include_str!("config/template.toml");

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `text`, expecting a validation error for `key`.
    fn invalid(text: &str, key: &str) {
        match Config::from_toml(text, "test.toml") {
            Err(err @ ConfigError::Invalid { .. }) => {
                let msg = err.to_string();
                assert!(msg.starts_with("test.toml: "), "{msg}");
                assert!(msg.contains(key), "{msg} should name {key}");
                match err {
                    ConfigError::Invalid { key: k, .. } => assert_eq!(k, key),
                    other => panic!("{other}"),
                }
            }
            other => panic!("{text:?}: expected an error for {key}, got {other:?}"),
        }
    }

    #[test]
    fn template_parses_to_defaults() {
        let parsed = Config::from_toml(&Config::template(), "template").unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn template_names_every_key() {
        let template: toml::Table = toml::from_str(TEMPLATE).unwrap();
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        for (section, keys) in &defaults {
            let keys = keys.as_table().unwrap();
            let in_template = template[section].as_table().unwrap();
            for key in keys.keys() {
                assert!(
                    in_template.contains_key(key),
                    "template lacks {section}.{key}"
                );
            }
        }
        // The one key whose default is absent is present as a comment.
        assert!(TEMPLATE.contains("\n# corpus = "));
    }

    #[test]
    fn a_corpus_section_parses_and_is_checked() {
        let text = "[corpus]\nsources = \"src\"\nout = \"out\"\n";
        let c = Config::from_toml(text, "c").unwrap();
        let corpus = c.corpus.unwrap();
        assert_eq!(corpus.sources, PathBuf::from("src"));
        assert_eq!(corpus.optout, None);
        assert_eq!(
            CorpusSection::resolve(Path::new("/p"), &corpus.out),
            PathBuf::from("/p/out")
        );
        invalid("[corpus]\nsources = \"\"\nout = \"o\"", "corpus.sources");
        invalid(
            "[data]\ncorpus = \"x\"\n[corpus]\nsources = \"s\"\nout = \"o\"",
            "data.corpus",
        );
        assert!(Config::from_toml("[corpus]\nsources = \"s\"\nout = \"o\"\nx = 1", "c").is_err());
        // The template's [corpus] block, uncommented, parses.
        let block: String = TEMPLATE
            .split("# [corpus]")
            .nth(1)
            .unwrap()
            .lines()
            .map(|l| l.trim_start_matches("# "))
            .collect::<Vec<_>>()
            .join("\n");
        let c = Config::from_toml(&format!("[corpus]{block}"), "t").unwrap();
        assert_eq!(c.corpus.unwrap().config, Some(PathBuf::from("corpus.toml")));
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(Config::from_toml("", "e").unwrap(), Config::default());
        assert_eq!(
            Config::from_toml("# only a comment\n\n", "e").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn partial_file_overrides_only_what_it_names() {
        let text = r#"
            [project]
            seed = 7
            [model]
            preset = "small"
            [data]
            corpus = "/srv/corpus"
            [training]
            compression = "topk"
            late_updates = "weight"
            inner_steps = 20
            [dashboard]
            listen = ""
        "#;
        let got = Config::from_toml(text, "p").unwrap();
        let mut want = Config::default();
        want.project.seed = 7;
        want.model.preset = Preset::Small;
        want.data.corpus = Some(PathBuf::from("/srv/corpus"));
        want.training.compression = Compression::TopK;
        want.training.late_updates = LateUpdates::Weight;
        want.training.inner_steps = 20;
        want.dashboard.listen = None;
        assert_eq!(got, want);
    }

    #[test]
    fn compression_bits_choose_the_low_bit_codecs() {
        use canopy_protocol::CodecSpec;
        let exact = Config::from_toml("[training]\ncompression = \"topk\"\n", "p").unwrap();
        assert_eq!(
            crate::training::codec(&exact),
            CodecSpec::TopK {
                density_ppm: 10_000
            }
        );
        let text =
            "[training]\ncompression = \"topk\"\ntopk_density = 0.02\ncompression_bits = 4\n";
        let low = Config::from_toml(text, "p").unwrap();
        assert_eq!(
            crate::training::codec(&low),
            CodecSpec::TopKQuant {
                density_ppm: 20_000,
                bits: 4
            }
        );
        let dense = Config::from_toml("[training]\ncompression = \"lowbit\"\n", "p").unwrap();
        assert_eq!(
            crate::training::codec(&dense),
            CodecSpec::Quant {
                block: canopy_protocol::compress::DEFAULT_INT8_BLOCK,
                bits: 4
            }
        );
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let err = Config::from_toml("[training]\ninner_stepz = 3\n", "canopy.toml").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }));
        let msg = err.to_string();
        assert!(msg.starts_with("canopy.toml: "), "{msg}");
        assert!(msg.contains("inner_stepz"), "{msg}");
        assert!(
            msg.contains("inner_steps"),
            "{msg} should list allowed keys"
        );
    }

    #[test]
    fn unknown_section_is_an_error_naming_it() {
        let err = Config::from_toml("[trainign]\nrounds = 3\n", "c").unwrap_err();
        assert!(err.to_string().contains("trainign"), "{err}");
    }

    #[test]
    fn wrong_types_and_enum_values_are_errors() {
        for text in [
            "[model]\npreset = \"huge\"",
            "[training]\ncompression = \"TopK\"",
            "[training]\nlate_updates = 1",
            "[training]\nrounds = -1",
            "[training]\nrounds = 5000000000",
            "[training]\nlr = \"fast\"",
            "[network]\nlisten = \"/ip4/0.0.0.0/tcp/1\"",
            "[dashboard]\nlisten = 8080",
            "project = 3",
            "[project\nname = \"x\"",
        ] {
            let err = Config::from_toml(text, "c").unwrap_err();
            assert!(matches!(err, ConfigError::Parse { .. }), "{text}: {err}");
        }
    }

    #[test]
    fn integer_and_float_keys_accept_toml_forms() {
        let text = "[training]\nlr = 1e-4\ngrad_clip = 2\n[data]\nholdout = 0.1\n";
        let config = Config::from_toml(text, "c").unwrap();
        assert_eq!(config.training.lr, 1e-4);
        assert_eq!(config.training.grad_clip, 2.0);
        assert_eq!(config.data.holdout, 0.1);
    }

    #[test]
    fn project_rules() {
        invalid("[project]\nname = \"\"", "project.name");
        invalid("[project]\nname = \"my run\"", "project.name");
        invalid("[project]\nname = \"a/b\"", "project.name");
    }

    #[test]
    fn network_rules() {
        invalid("[network]\nlisten = []", "network.listen");
        invalid("[network]\nlisten = [\"0.0.0.0:4740\"]", "network.listen");
    }

    #[test]
    fn data_rules() {
        invalid("[data]\ncorpus = \"\"", "data.corpus");
        invalid("[data]\ngenerated_bytes = 0", "data.generated_bytes");
        invalid("[data]\nshard_bytes = 0", "data.shard_bytes");
        invalid("[data]\nholdout = 0.0", "data.holdout");
        invalid("[data]\nholdout = 0.5", "data.holdout");
        invalid("[data]\nholdout = nan", "data.holdout");
    }

    #[test]
    fn training_rules() {
        for key in [
            "rounds",
            "inner_steps",
            "batch_size",
            "seq_len",
            "tasks_per_round",
            "min_updates",
            "round_deadline_secs",
        ] {
            invalid(
                &format!("[training]\n{key} = 0"),
                &format!("training.{key}"),
            );
        }
        invalid("[training]\nlr = 0.0", "training.lr");
        invalid("[training]\nlr = inf", "training.lr");
        invalid("[training]\nlr = nan", "training.lr");
        invalid("[training]\ntask_lr_decay = 0.0", "training.task_lr_decay");
        invalid("[training]\ntask_lr_decay = 1.5", "training.task_lr_decay");
        invalid("[training]\ntask_lr_decay = nan", "training.task_lr_decay");
        invalid("[training]\nweight_decay = -0.1", "training.weight_decay");
        invalid("[training]\ngrad_clip = 0.0", "training.grad_clip");
        invalid("[training]\ntopk_density = 0.0", "training.topk_density");
        invalid("[training]\ntopk_density = 1.5", "training.topk_density");
        invalid(
            "[training]\ncompression_bits = 1",
            "training.compression_bits",
        );
        invalid(
            "[training]\ncompression_bits = 32",
            "training.compression_bits",
        );
        invalid("[aggregation]\nstep_bits = 9", "aggregation.step_bits");
        invalid("[aggregation]\nstep_bits = 1", "aggregation.step_bits");
        invalid(
            "[training]\ntasks_per_round = 2\nmin_updates = 3",
            "training.min_updates",
        );
        invalid(
            "[training]\nstaleness_decay = 0.0",
            "training.staleness_decay",
        );
        invalid(
            "[training]\nstaleness_decay = 1.1",
            "training.staleness_decay",
        );
    }

    #[test]
    fn training_message_reads_well() {
        let err = Config::from_toml("[training]\ninner_steps = 0", "canopy.toml").unwrap_err();
        assert_eq!(
            err.to_string(),
            "canopy.toml: training.inner_steps must be at least 1 (got 0)"
        );
    }

    #[test]
    fn aggregation_rules() {
        invalid("[aggregation]\ncombine = \"avg\"", "aggregation.combine");
        invalid("[aggregation]\ntrim = -0.1", "aggregation.trim");
        invalid("[aggregation]\ntrim = 0.5", "aggregation.trim");
        invalid("[aggregation]\ntrim = nan", "aggregation.trim");
        invalid(
            "[aggregation]\nclip_multiple = -1.0",
            "aggregation.clip_multiple",
        );
        invalid("[aggregation]\nouter_lr = 0.0", "aggregation.outer_lr");
        invalid(
            "[aggregation]\nouter_momentum = 1.0",
            "aggregation.outer_momentum",
        );
        invalid(
            "[aggregation]\nouter_momentum = -0.1",
            "aggregation.outer_momentum",
        );
        let ok = "[aggregation]\ncombine = \"median\"\ntrim = 0.0\nclip_multiple = 0.0";
        Config::from_toml(ok, "c").unwrap();
    }

    #[test]
    fn scheduling_rules() {
        invalid("[scheduling]\nlease_slack = 0.5", "scheduling.lease_slack");
        invalid("[scheduling]\nlease_slack = inf", "scheduling.lease_slack");
        invalid(
            "[scheduling]\nmin_lease_secs = 0",
            "scheduling.min_lease_secs",
        );
        invalid(
            "[scheduling]\nmin_lease_secs = 100\nmax_lease_secs = 99",
            "scheduling.max_lease_secs",
        );
        invalid(
            "[scheduling]\nassumed_tokens_per_sec = 0.0",
            "scheduling.assumed_tokens_per_sec",
        );
        invalid(
            "[scheduling]\nheartbeat_secs = 0",
            "scheduling.heartbeat_secs",
        );
    }

    #[test]
    fn verification_rules() {
        invalid(
            "[verification]\nrerun_fraction = -0.1",
            "verification.rerun_fraction",
        );
        invalid(
            "[verification]\nrerun_fraction = 1.5",
            "verification.rerun_fraction",
        );
        invalid(
            "[verification]\nmin_cosine = 1.5",
            "verification.min_cosine",
        );
        invalid(
            "[verification]\nmin_cosine = nan",
            "verification.min_cosine",
        );
        invalid(
            "[verification]\nmax_loss_increase = -1.0",
            "verification.max_loss_increase",
        );
        invalid(
            "[verification]\ncorpus_replicas = 0",
            "verification.corpus_replicas",
        );
        invalid(
            "[admission]\njoin_work_bits = 25",
            "admission.join_work_bits",
        );
        invalid(
            "[admission]\nmin_node_version = \"newest\"",
            "admission.min_node_version",
        );
        let ok = "[verification]\nrerun_fraction = 0.0\nmin_cosine = -1.0";
        Config::from_toml(ok, "c").unwrap();
    }

    #[test]
    fn reputation_rules() {
        invalid("[reputation]\naccepted = -1", "reputation.accepted");
        invalid("[reputation]\nrejected = 1", "reputation.rejected");
        invalid(
            "[reputation]\nfailed_verification = 5",
            "reputation.failed_verification",
        );
        invalid("[reputation]\nban_below = 0", "reputation.ban_below");
    }

    #[test]
    fn dashboard_rules() {
        invalid("[dashboard]\ntoken = \"short\"", "dashboard.token");
        invalid(
            "[dashboard]\ntoken = \"has a space in it, sadly\"",
            "dashboard.token",
        );
        let ok = Config::from_toml("[dashboard]\ntoken = \"0123456789abcdef\"", "c").unwrap();
        assert_eq!(ok.dashboard.token.as_deref(), Some("0123456789abcdef"));
        invalid("[dashboard]\nlisten = \"8080\"", "dashboard.listen");
        invalid("[dashboard]\nlisten = \":8080\"", "dashboard.listen");
        invalid(
            "[dashboard]\nlisten = \"localhost:99999\"",
            "dashboard.listen",
        );
        for ok in ["localhost:3000", "[::1]:8080", "0.0.0.0:0"] {
            let text = format!("[dashboard]\nlisten = \"{ok}\"");
            let config = Config::from_toml(&text, "c").unwrap();
            assert_eq!(config.dashboard.listen.as_deref(), Some(ok));
        }
        invalid(
            "[dashboard]\nread_token = \"short\"",
            "dashboard.read_token",
        );
        invalid("[dashboard]\ntls_cert = \"cert.pem\"", "dashboard.tls_cert");
        invalid("[dashboard]\ntls_key = \"key.pem\"", "dashboard.tls_cert");
        let text = "[dashboard]\nread_token = \"0123456789abcdef\"\n\
                    tls_cert = \"tls/cert.pem\"\ntls_key = \"/etc/canopy/key.pem\"";
        let config = Config::from_toml(text, "c").unwrap();
        assert!(config.dashboard.holds_secret());
        let (cert, key) = config.dashboard.tls_files(Path::new("/srv/p")).unwrap();
        assert_eq!(cert, Path::new("/srv/p/tls/cert.pem"));
        assert_eq!(key, Path::new("/etc/canopy/key.pem"));
        assert!(!Config::default().dashboard.holds_secret());
        let config = Config::default().dashboard;
        let listen = |flag| DashboardConfig::listen_with(flag, Some(&config));
        assert_eq!(listen(None).as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(
            listen(Some("0.0.0.0:9000")).as_deref(),
            Some("0.0.0.0:9000")
        );
        assert_eq!(listen(Some("")), None, "--http \"\" turns it off");
        assert_eq!(DashboardConfig::listen_with(None, None), None);
        assert_eq!(Config::default().dashboard.tls_files(Path::new("/")), None);
    }

    #[test]
    fn store_rules() {
        invalid("[store]\ncap_mib = 0", "store.cap_mib");
    }

    #[test]
    fn validate_names_the_default_file() {
        let mut config = Config::default();
        config.training.batch_size = 0;
        let msg = config.validate().unwrap_err().to_string();
        assert!(msg.starts_with("canopy.toml: training.batch_size"), "{msg}");
    }

    #[test]
    fn load_reads_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("canopy.toml");
        std::fs::write(&path, "[training]\nrounds = 3\n").unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.training.rounds, 3);

        std::fs::write(&path, "[training]\nrounds = 0\n").unwrap();
        let msg = Config::load(&path).unwrap_err().to_string();
        assert!(msg.starts_with(&path.display().to_string()), "{msg}");
        assert!(msg.contains("training.rounds"), "{msg}");
    }

    #[test]
    fn load_of_missing_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nowhere").join("canopy.toml");
        let err = Config::load(&path).unwrap_err();
        assert!(matches!(err, ConfigError::Io { .. }));
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }

    /// `toml::to_string` needs the toml crate's `display` feature, which the
    /// lean feature set leaves out; this round-trips through `toml::Table`,
    /// which exercises the same `Serialize` / `Deserialize` impls.
    #[test]
    fn serde_round_trip() {
        let mut changed = Config::default();
        changed.project.name = "other".to_owned();
        changed.model.preset = Preset::Base;
        changed.data.corpus = Some(PathBuf::from("corpus"));
        changed.training.compression = Compression::TopK;
        changed.training.late_updates = LateUpdates::Weight;
        changed.training.lr = 1.234e-4;
        changed.aggregation.combine = "median".to_owned();
        changed.reputation.start = 100;
        changed.dashboard.listen = None;
        for config in [Config::default(), changed] {
            let table = toml::Table::try_from(&config).unwrap();
            let back: Config = table.try_into().unwrap();
            assert_eq!(back, config);
        }
    }

    #[test]
    fn enums_serialize_lowercase() {
        let table = toml::Table::try_from(Config {
            training: TrainingConfig {
                compression: Compression::TopK,
                ..TrainingConfig::default()
            },
            ..Config::default()
        })
        .unwrap();
        assert_eq!(table["training"]["compression"].as_str(), Some("topk"));
        assert_eq!(table["training"]["late_updates"].as_str(), Some("drop"));
        assert_eq!(table["model"]["preset"].as_str(), Some("tiny"));
    }

    #[test]
    fn no_panic_on_damaged_input() {
        // Every prefix of the template, cut at each line, and each line
        // replaced by something odd: must give Ok or Err, never panic.
        let lines: Vec<&str> = TEMPLATE.lines().collect();
        for end in 0..=lines.len() {
            let _ = Config::from_toml(&lines[..end].join("\n"), "t");
        }
        let odd = [
            "= 1",
            "x = nan",
            "lr = -inf",
            "seed = -1",
            "[[training]]",
            "\u{0}",
            "listen = [1, \"a\"]",
            "ban_below = 9223372036854775807",
            "start = -9223372036854775808",
        ];
        for i in 0..lines.len() {
            for replacement in odd {
                let mut damaged = lines.clone();
                damaged[i] = replacement;
                let _ = Config::from_toml(&damaged.join("\n"), "t");
            }
        }
    }
}

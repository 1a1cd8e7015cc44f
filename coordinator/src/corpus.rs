//! The corpus pipeline (the ROOTS part of Canopy): from governed sources to deduplicated,
//! filtered training text (`kept.jsonl`) and a data card.
//!
//! # Stages
//!
//! The build is three stages, so that the middle one can be spread over the swarm:
//!
//! 1. **plan** ([`plan::plan`]): read the sources directory ([`source`]), refuse any source
//!    whose governance record is incomplete, apply the opt-out list ([`optout`]), and pack the
//!    remaining documents into content-addressed chunks ([`plan::Plan::chunks`], each a
//!    [`canopy_protocol::corpus::CorpusChunk`] frame named by its blake3). Documents dropped
//!    here (opt-out, malformed input, too long, repeated id) are in [`plan::Plan::dropped`].
//! 2. **compute**: per chunk, quality signals and MinHash signatures,
//!    [`canopy_shaders::corpus::compute_chunk`]`(backend, chunk frame, params)`. It is a pure
//!    function of (chunk bytes, [`canopy_protocol::messages::MinHashParams`]) and bit-identical
//!    on the CPU and WGSL paths, so two peers that ran it agree on the blake3 of the result
//!    encoding; [`compute::compare_results`] is the check. [`compute::compute_local`] runs
//!    every chunk of a plan on a local backend.
//! 3. **decide** ([`decide::decide`]): given every chunk's
//!    [`canopy_protocol::corpus::CorpusResult`] (checked against its chunk), apply the
//!    per-language quality filters ([`filter`]), exact dedup on the blake3 of normalised text,
//!    near dedup with LSH banding over the signatures, candidates verified by exact Jaccard of
//!    the shingle sets, union-find clusters keeping the lowest-numbered document ([`dedup`]).
//!    Then [`output::write_outputs`] writes `kept.jsonl`, `dropped.jsonl` and the data card
//!    ([`datacard`]); training reads `kept.jsonl` with the project's tokenizer. E-mail and IP addresses and phone numbers
//!    in kept text are replaced by placeholders on the way ([`pii`]).
//!
//! [`build::build`] runs all three locally (what `canopy-coordinator corpus build` does).
//!
//! # Using the stages from the swarm
//!
//! ```no_run
//! # fn main() -> Result<(), canopy_coordinator::corpus::CorpusBuildError> {
//! use canopy_coordinator::corpus::{CorpusConfig, compute, decide, output, plan};
//! let config = CorpusConfig::default();
//! let plan = plan::plan("sources".as_ref(), None, &config)?;
//! // For each chunk: publish `chunk.frame` as an ObjectKind::CorpusChunk object named
//! // `chunk.digest`, lease a TaskSpec::Corpus { chunk: digest, minhash: config.minhash } to
//! // two peers, fetch both results and check them with compute::compare_results; on
//! // disagreement re-run on the datacenter tier (or locally) and keep the matching one.
//! // Decode the agreed result with compute::accept_result (checks it against the chunk).
//! let results = compute::compute_local(&canopy_shaders::Cpu::new(), &plan, |_, _| {})?;
//! let decisions = decide::decide(&plan, &results)?;
//! let summary = output::write_outputs(&plan, &results, &decisions, "out".as_ref())?;
//! # let _ = summary; Ok(()) }
//! ```
//!
//! Every input document ends up in exactly one of `kept.jsonl` and `dropped.jsonl`, and the
//! build checks it per source before writing anything (`input = kept + dropped`). The outputs
//! hold no timestamps or paths of the machine: the same sources and configuration give
//! byte-identical outputs, on the CPU path and on the WGSL path.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub mod build;
pub mod closed_class;
pub mod compute;
pub mod datacard;
pub mod decide;
pub mod dedup;
pub mod filter;
pub mod flagged;
pub mod language;
pub mod optout;
pub mod output;
pub mod parquet;
pub mod pii;
pub mod plan;
pub mod sample;
pub mod source;
pub mod substrings;

pub use build::{BuildSummary, build};
pub use filter::{FilterConfig, FilterThresholds};
pub use language::LanguageIdConfig;
pub use pii::PiiMode;

use canopy_protocol::messages::MinHashParams;

/// Errors of the corpus pipeline. Each names the source, file or line at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CorpusBuildError {
    /// A file or directory that cannot be read or written.
    #[error("{}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A source whose governance record is incomplete or invalid: it is refused.
    #[error(
        "source {name:?} ({}) is refused: {reason}",
        path.display()
    )]
    Governance {
        /// The source's name (its directory name when the record has none).
        name: String,
        /// Its `source.toml`.
        path: PathBuf,
        /// What is missing or wrong, naming the key.
        reason: String,
    },
    /// A configuration or opt-out file that does not parse.
    #[error("{}: {reason}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong (with the line where known).
        reason: String,
    },
    /// A document file that cannot be decompressed, or expands too far.
    #[error("{}: {reason}", path.display())]
    DocumentFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The sources directory holds no source, or two sources share a name.
    #[error("sources directory {}: {reason}", path.display())]
    Sources {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A chunk that cannot be built, or a result that does not answer its chunk.
    #[error("corpus chunk {index}")]
    Chunk {
        /// The chunk's position in the plan.
        index: usize,
        /// The cause.
        #[source]
        source: canopy_protocol::corpus::CorpusError,
    },
    /// The plan and the results disagree in number.
    #[error("{results} results for a plan of {chunks} chunks")]
    ResultCount {
        /// Results given.
        results: usize,
        /// Chunks in the plan.
        chunks: usize,
    },
    /// The kernels failed.
    #[error("computing chunk {index}")]
    Compute {
        /// The chunk's position in the plan.
        index: usize,
        /// The cause.
        #[source]
        source: canopy_shaders::ShaderError,
    },
    /// Input documents ≠ kept + dropped for a source: a bug, reported rather than written.
    #[error(
        "accounting does not hold for source {name:?}: {input} documents in, {kept} kept + {dropped} dropped"
    )]
    Accounting {
        /// The source.
        name: String,
        /// Documents read.
        input: u64,
        /// Documents kept.
        kept: u64,
        /// Documents dropped.
        dropped: u64,
    },
    /// JSON output that cannot be written.
    #[error("encoding {what} as JSON")]
    Json {
        /// What was being encoded.
        what: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// A result of the corpus pipeline.
pub type Result<T, E = CorpusBuildError> = std::result::Result<T, E>;

/// LSH banding over MinHash signatures: `bands` bands of `rows` values each (`bands · rows ≤
/// num_perm`); two documents that agree on every value of some band become a candidate pair,
/// kept only when the exact Jaccard of their shingle sets reaches `threshold`.
///
/// The defaults, 20 bands of 6 rows over 128 permutations, make a pair with Jaccard `s` a
/// candidate with probability `1 − (1 − s⁶)²⁰`: 0.998 at 0.8, 0.96 at 0.7, 0.61 at 0.6 and
/// 0.08 at 0.4, so almost every pair above the 0.8 threshold is found and the verification
/// removes the rest.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LshConfig {
    /// Bands.
    pub bands: u32,
    /// Rows (signature values) per band.
    pub rows: u32,
    /// Jaccard similarity (of word-shingle sets) at or above which two documents are
    /// near-duplicates.
    pub threshold: f64,
}

impl Default for LshConfig {
    fn default() -> Self {
        Self {
            bands: 20,
            rows: 6,
            threshold: 0.8,
        }
    }
}

/// MinHash settings as written in `corpus.toml` (every key optional).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MinHashSection {
    /// Signature length.
    pub num_perm: u32,
    /// Words per shingle.
    pub shingle_words: u32,
    /// Seed of the permutation family.
    pub seed: u64,
}

impl Default for MinHashSection {
    fn default() -> Self {
        let d = MinHashParams::default();
        Self {
            num_perm: d.num_perm,
            shingle_words: d.shingle_words,
            seed: d.seed,
        }
    }
}

impl From<MinHashSection> for MinHashParams {
    fn from(m: MinHashSection) -> Self {
        Self {
            num_perm: m.num_perm,
            shingle_words: m.shingle_words,
            seed: m.seed,
        }
    }
}

/// The build's settings, from `corpus.toml` (in the sources directory, or `--config`); every
/// key is optional.
///
/// ```toml
/// chunk_bytes = 4194304      # text per corpus chunk (one corpus task)
/// pii = "redact"             # personal data in kept text: "redact" or "keep"
/// kept_parquet = false       # also write kept.parquet
/// [minhash]
/// num_perm = 128
/// shingle_words = 5
/// [lsh]
/// bands = 20
/// rows = 6
/// threshold = 0.8
/// [filters.default]
/// min_words = 15
/// [filters.languages.zh]
/// min_words = 1
/// min_bytes = 150
/// [language_id]              # detected language differs from the label:
/// default = "keep"           # "keep", "relabel" or "drop"
/// [language_id.sources]
/// web-crawl = "drop"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorpusConfig {
    /// Text bytes per chunk.
    pub chunk_bytes: usize,
    /// A key of earlier versions, accepted and ignored so that their files still load: the
    /// build no longer writes token shards (training tokenises `kept.jsonl` itself).
    #[serde(skip_serializing, rename = "shard_tokens")]
    pub retired_shard_tokens: Option<u64>,
    /// MinHash settings.
    pub minhash: MinHashSection,
    /// LSH banding.
    pub lsh: LshConfig,
    /// Quality filter thresholds.
    pub filters: FilterConfig,
    /// Personal data in kept text: `redact` (the default) or `keep`.
    pub pii: PiiMode,
    /// What to do with documents whose detected language differs from their label.
    pub language_id: LanguageIdConfig,
    /// Repeated-substring removal (see [`substrings`]): substrings of at least this many
    /// bytes are cut from every kept document but the first that holds them (0: off).
    pub repeated_substrings_min_bytes: usize,
    /// Also write the kept corpus as `kept.parquet` (see [`parquet`]), beside `kept.jsonl`.
    pub kept_parquet: bool,
}

impl Default for CorpusConfig {
    fn default() -> Self {
        Self {
            chunk_bytes: 4 << 20,
            retired_shard_tokens: None,
            minhash: MinHashSection::default(),
            lsh: LshConfig::default(),
            filters: FilterConfig::default(),
            pii: PiiMode::default(),
            language_id: LanguageIdConfig::default(),
            repeated_substrings_min_bytes: 0,
            kept_parquet: false,
        }
    }
}

impl CorpusConfig {
    /// The file name looked for in a sources directory.
    pub const FILE_NAME: &str = "corpus.toml";

    /// Parses `corpus.toml` text and checks it; `path` names it in errors.
    pub fn from_toml(text: &str, path: &std::path::Path) -> Result<Self> {
        let config: Self = toml::from_str(text).map_err(|e| CorpusBuildError::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        config
            .validate()
            .map_err(|reason| CorpusBuildError::Config {
                path: path.to_path_buf(),
                reason,
            })?;
        if config.retired_shard_tokens.is_some() {
            tracing::warn!(
                "{}: `shard_tokens` is no longer used (the build writes no token shards) and can be removed",
                path.display()
            );
        }
        Ok(config)
    }

    /// Reads `path` with [`Self::from_toml`].
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| CorpusBuildError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// The MinHash parameters of corpus tasks.
    pub fn minhash_params(&self) -> MinHashParams {
        self.minhash.into()
    }

    /// Checks ranges: the chunk size, MinHash parameters, bands · rows ≤ num_perm,
    /// threshold in (0, 1], filter ratios in [0, 1].
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(1024..=(canopy_protocol::corpus::MAX_CHUNK_LEN / 2)).contains(&self.chunk_bytes) {
            return Err(format!(
                "chunk_bytes {} is outside 1024..={}",
                self.chunk_bytes,
                canopy_protocol::corpus::MAX_CHUNK_LEN / 2
            ));
        }
        canopy_shaders::kernels::minhash::check_params(&self.minhash_params())
            .map_err(|e| e.to_string())?;
        let l = &self.lsh;
        if l.bands == 0
            || l.rows == 0
            || u64::from(l.bands) * u64::from(l.rows) > u64::from(self.minhash.num_perm)
        {
            return Err(format!(
                "lsh: {} bands of {} rows need 1 ≤ bands · rows ≤ num_perm ({})",
                l.bands, l.rows, self.minhash.num_perm
            ));
        }
        if !(l.threshold > 0.0 && l.threshold <= 1.0) {
            return Err(format!("lsh.threshold {} is outside (0, 1]", l.threshold));
        }
        self.filters.validate()
    }
}

/// Why a document is not in the training data. The snake_case names are what `dropped.jsonl`
/// and the data card say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DropReason {
    /// An opt-out request matched it.
    OptOut,
    /// The input record is not a usable document (bad JSON, no `text`, undeclared language).
    Malformed,
    /// Its id repeats an earlier document's id in the same source.
    DuplicateId,
    /// Longer than a corpus chunk may carry.
    TooLong,
    /// Fewer words or bytes than its language's minimum.
    TooShort,
    /// Too many bytes repeat the byte before.
    CharRepetition,
    /// Too many words repeat an earlier word.
    WordRepetition,
    /// Too many punctuation, symbol and control bytes.
    SpecialCharacters,
    /// Too many digits.
    Digits,
    /// Its normalised text equals a kept document's.
    ExactDuplicate,
    /// Its shingle set is within the Jaccard threshold of a kept document's cluster.
    NearDuplicate,
    /// Too few of its words are function words of its language (see [`closed_class`]).
    ClosedClassRatio,
    /// Too many of its words are flagged words of its language (see [`flagged`]).
    FlaggedWords,
    /// Its detected language differs from its label, and its source's policy drops such
    /// documents (see [`language`]).
    LanguageMismatch,
}

impl DropReason {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OptOut => "opt_out",
            Self::Malformed => "malformed",
            Self::DuplicateId => "duplicate_id",
            Self::TooLong => "too_long",
            Self::TooShort => "too_short",
            Self::CharRepetition => "char_repetition",
            Self::WordRepetition => "word_repetition",
            Self::SpecialCharacters => "special_characters",
            Self::Digits => "digits",
            Self::ExactDuplicate => "exact_duplicate",
            Self::NearDuplicate => "near_duplicate",
            Self::ClosedClassRatio => "closed_class_ratio",
            Self::FlaggedWords => "flagged_words",
            Self::LanguageMismatch => "language_mismatch",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `shard_tokens` (the build once wrote token shards) still loads, so older sources
    /// directories build unchanged; it is not written back, and a misspelt key still fails.
    #[test]
    fn the_retired_shard_tokens_key_loads_and_unknown_keys_fail() {
        let path = std::path::Path::new("corpus.toml");
        let old = CorpusConfig::from_toml("shard_tokens = 1048576\nchunk_bytes = 8192\n", path)
            .expect("an older corpus.toml loads");
        assert_eq!(old.chunk_bytes, 8192);
        assert_eq!(old.retired_shard_tokens, Some(1 << 20));
        let written = serde_json::to_string(&old).expect("serialises");
        assert!(!written.contains("shard_tokens"), "{written}");
        let err = CorpusConfig::from_toml("shard_token = 1\n", path).expect_err("a typo fails");
        assert!(err.to_string().contains("shard_token"), "{err}");
    }
}

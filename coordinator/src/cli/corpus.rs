//! `canopy-coordinator corpus …`: the corpus pipeline's commands (kept out of `main.rs`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use canopy_coordinator::corpus::build::{self, BuildOptions, Progress};
use canopy_coordinator::corpus::sample;
use canopy_shaders::{AdapterChoice, Runtime};
use clap::Subcommand;

/// The corpus commands.
#[derive(Subcommand)]
pub(crate) enum CorpusCommand {
    /// Build a training corpus: governed sources in, kept.jsonl, dropped.jsonl and a data
    /// card out.
    Build {
        /// The sources directory: one subdirectory per source with its source.toml.
        #[arg(long)]
        sources: PathBuf,
        /// The output directory (created).
        #[arg(long)]
        out: PathBuf,
        /// The opt-out list (default: SOURCES/optout.txt when present).
        #[arg(long)]
        optout: Option<PathBuf>,
        /// Build settings (default: SOURCES/corpus.toml when present, else the defaults).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where the signals and signatures are computed: auto (a hardware GPU, else the CPU
        /// path), gpu, software (lavapipe and the like: runs the WGSL, slowly) or cpu.
        #[arg(long, env = "CANOPY_ADAPTER", default_value = "auto")]
        adapter: String,
        /// One JSON summary object instead of lines for people.
        #[arg(long)]
        json: bool,
    },
    /// Write multilingual sample sources (with planted duplicates, junk and opt-outs).
    Sample {
        /// The directory to write them into.
        dir: PathBuf,
        /// Original documents per source.
        #[arg(long, default_value_t = 200)]
        documents: usize,
        /// The seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also write a source without a license (the build refuses it).
        #[arg(long)]
        unlicensed: bool,
    },
}

/// Runs a corpus command.
pub(crate) fn run(command: CorpusCommand) -> anyhow::Result<()> {
    match command {
        CorpusCommand::Build {
            sources,
            out,
            optout,
            config,
            adapter,
            json,
        } => {
            let choice = AdapterChoice::parse(&adapter).context("--adapter")?;
            let runtime =
                Runtime::select(choice, canopy_shaders::runtime::require_adapter_from_env())
                    .context("choosing where the corpus kernels run")?;
            if !json {
                let path = match &runtime {
                    Runtime::Gpu(_) => "WGSL kernels",
                    Runtime::Cpu(_) => "the CPU path (no GPU adapter chosen)",
                };
                println!("compute: {path} on {}", runtime.report());
            }
            let options = BuildOptions {
                sources,
                out,
                optout,
                config,
            };
            let summary = build::build_on(&runtime, &options, |p| {
                if json {
                    return;
                }
                match p {
                    Progress::Planned {
                        sources,
                        documents,
                        chunks,
                        dropped,
                    } => println!(
                        "planned: {sources} sources, {documents} documents in {chunks} chunks ({dropped} dropped while reading)"
                    ),
                    Progress::Computed { done, total } => {
                        print!("\rcomputed {done}/{total} chunks");
                        if done == total {
                            println!();
                        }
                    }
                    _ => {}
                }
                let _ = std::io::stdout().flush();
            })
            .with_context(|| format!("building the corpus from {}", options.sources.display()))?;
            if json {
                println!("{}", serde_json::to_string(&summary)?);
                return Ok(());
            }
            let o = &summary.outputs;
            println!(
                "kept {} of {} documents ({} bytes); dropped {}",
                o.kept_documents, o.input_documents, o.kept_bytes, o.dropped_documents
            );
            for (reason, n) in &o.dropped_by_reason {
                println!("  {reason:<20} {n}");
            }
            let d = &o.card.dedup;
            println!(
                "dedup: {} exact duplicates; {} near-duplicates in {} clusters ({} candidate pairs, {} verified)",
                d.exact_duplicates,
                d.near_duplicates,
                d.near_clusters,
                d.near_candidate_pairs,
                d.near_verified_pairs
            );
            let parquet = if summary.out.join("kept.parquet").is_file() {
                "kept.parquet, "
            } else {
                ""
            };
            println!(
                "wrote {}/{{kept.jsonl, {parquet}dropped.jsonl, datacard.json, datacard.md, README.md}} in {:.2}s",
                summary.out.display(),
                summary.seconds.plan
                    + summary.seconds.compute
                    + summary.seconds.decide
                    + summary.seconds.write
            );
            Ok(())
        }
        CorpusCommand::Sample {
            dir,
            documents,
            seed,
            unlicensed,
        } => {
            let options = sample::SampleOptions {
                seed,
                documents_per_source: documents,
                unlicensed_source: unlicensed,
            };
            let truth = sample::write_sample(&dir, &options)
                .with_context(|| format!("writing sample sources into {}", dir.display()))?;
            println!(
                "wrote {} sources ({} records) into {}; build with: canopy-coordinator corpus build --sources {} --out <dir>",
                truth.records.len(),
                truth.records.values().sum::<u64>(),
                dir.display(),
                dir.display()
            );
            Ok(())
        }
    }
}

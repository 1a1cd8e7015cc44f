//! A model version as a Hugging Face directory: the weights and `config.json`
//! ([`canopy_shaders::export`]), the tokenizer's files, and a model card (`README.md`) drawn
//! from the project's configuration, its training data and its ledger.

use std::path::Path;

use canopy_shaders::Params;
use canopy_text::card::{Contribution, ModelCard, Source};
use canopy_text::{Tokenizer, udhr};

use crate::config::{BuiltinText, Config};
use crate::project::ProjectError;
use crate::state::{ContributorGroup, State};
use crate::training::project_tokenizer;

type Result<T> = std::result::Result<T, ProjectError>;

fn invalid(e: impl std::fmt::Display) -> ProjectError {
    ProjectError::Invalid(e.to_string())
}

/// Figures measured outside the project's state that the card should show, in bits per
/// byte of the held-out text: (what, value).
pub type Baselines = Vec<(String, f64)>;

/// Writes `params` with its tokenizer and model card into `out`. `dir` is the project
/// directory (where a BPE tokenizer is kept), `state` its database.
pub fn export_model(
    dir: &Path,
    config: &Config,
    state: &State,
    params: &Params,
    out: &Path,
    baselines: Baselines,
) -> Result<()> {
    canopy_shaders::export(params, out)
        .map_err(|e| invalid(format!("exporting the model: {e}")))?;
    let tokenizer = project_tokenizer(config, dir)?;
    tokenizer
        .write_files(out, params.config().seq_len)
        .map_err(invalid)?;
    let card = model_card(config, state, params, &tokenizer, baselines)?;
    let path = out.join("README.md");
    std::fs::write(&path, card.to_markdown()).map_err(|source| ProjectError::Io { path, source })
}

/// The model card of `params` in this project.
pub fn model_card(
    config: &Config,
    state: &State,
    params: &Params,
    tokenizer: &Tokenizer,
    baselines: Baselines,
) -> Result<ModelCard> {
    let r = state.read();
    let rounds = r.rounds()?;
    let closed: Vec<_> = rounds.iter().filter(|x| x.closed_ms.is_some()).collect();
    let eval_loss = closed.last().and_then(|x| x.eval_loss);
    let per_token: Option<f64> = r
        .meta(crate::samples::BYTES_PER_TOKEN_META)?
        .and_then(|v| v.parse().ok());
    let group = |g| -> Result<Vec<Contribution>> {
        Ok(r.contributions(g)?
            .into_iter()
            .filter(|c| c.accepted > 0)
            .map(|c| Contribution {
                name: c.key.unwrap_or_default(),
                nodes: c.peers,
                tokens: c.tokens,
            })
            .collect())
    };
    let nodes = r
        .contributions(ContributorGroup::Peer)?
        .iter()
        .filter(|c| c.accepted > 0)
        .count() as u64;
    let samples: Vec<crate::samples::Sample> = r
        .meta(crate::samples::SAMPLES_META)?
        .and_then(|json| serde_json::from_str(&json).ok())
        .unwrap_or_default();
    let c = params.config();
    let t = &config.training;
    let (sources, data_card) = sources(config);
    Ok(ModelCard {
        name: config.project.name.clone(),
        license: "apache-2.0".into(),
        architecture: format!(
            "BLOOM (decoder-only transformer with ALiBi positions): hidden size {}, {} layers, \
             {} attention heads, vocabulary of {}",
            c.hidden, c.layers, c.heads, c.vocab
        ),
        parameters: c.num_params() as u64,
        context: c.seq_len,
        tokenizer: tokenizer.describe(),
        sources,
        data_card,
        training: format!(
            "DiLoCo: each round, {} tasks of {} AdamW steps on batches of {} × {} tokens (peak \
             rate {}), their pseudo-gradients compressed ({:?}), checked by the coordinator and \
             combined ({}, outer rate {}, momentum {}).",
            t.tasks_per_round,
            t.inner_steps,
            t.batch_size,
            t.seq_len,
            t.lr,
            t.compression,
            config.aggregation.combine,
            config.aggregation.outer_lr,
            config.aggregation.outer_momentum
        ),
        rounds: closed.len() as u64,
        tokens: group(ContributorGroup::Country)?
            .iter()
            .fold(0u64, |n, c| n.saturating_add(c.tokens)),
        eval_loss,
        bits_per_byte: eval_loss
            .zip(per_token)
            .map(|(loss, per)| crate::samples::bits_per_byte(loss, per)),
        baselines,
        nodes,
        organisations: group(ContributorGroup::Organisation)?,
        countries: group(ContributorGroup::Country)?,
        samples: samples
            .into_iter()
            .map(|s| (s.prompt, s.continuation))
            .collect(),
        limitations: vec![
            format!(
                "A small research model ({} parameters) trained briefly: it continues text in \
                 the style of its training data and is not an assistant. Do not rely on what \
                 it writes.",
                c.num_params()
            ),
            "Organisation and country are what each node declared (or, for invited nodes, \
             what the invitation named); they are not otherwise verified."
                .into(),
            "The held-out loss is measured on the tail of the project's own training text, \
             not on an independent benchmark."
                .into(),
        ],
    })
}

/// The training data's sources and, for a corpus build, its data card in words.
fn sources(config: &Config) -> (Vec<Source>, Vec<String>) {
    let Some(corpus) = &config.data.corpus else {
        return match config.data.text {
            BuiltinText::Udhr => (
                vec![Source {
                    name: udhr::NAME.into(),
                    license: udhr::LICENSE.into(),
                    provenance: "the Universal Declaration of Human Rights in 24 translations \
                                 (UDHR in Unicode, through the udhr package 6.0.0), one document \
                                 per article"
                        .into(),
                    bytes_per_language: udhr::bytes_per_language(),
                }],
                Vec::new(),
            ),
            BuiltinText::Generated => (
                vec![Source {
                    name: "canopy-generated".into(),
                    license: "apache-2.0".into(),
                    provenance: "synthetic sentences from Canopy's seeded generator: not real \
                                 language"
                        .into(),
                    bytes_per_language: vec![("mul".into(), config.data.generated_bytes)],
                }],
                Vec::new(),
            ),
        };
    };
    // A corpus build's output directory holds its data card beside kept.jsonl.
    let folder = if corpus.is_file() {
        corpus.parent().unwrap_or(corpus)
    } else {
        corpus.as_path()
    };
    let card: Option<serde_json::Value> = std::fs::read(folder.join("datacard.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let name = folder
        .file_name()
        .map_or("corpus".into(), |n| n.to_string_lossy().into_owned());
    let Some(card) = card else {
        return (
            vec![Source {
                name,
                license: "as given by the corpus's owner".into(),
                provenance: format!("the files of {}", corpus.display()),
                bytes_per_language: Vec::new(),
            }],
            Vec::new(),
        );
    };
    let keys = |field: &str| -> Vec<String> {
        card[field]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    let bytes_per_language = card["languages"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(lang, t)| (lang.clone(), t["bytes"].as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    let n = |path: &[&str]| path.iter().fold(&card, |v, k| &v[*k]).as_u64().unwrap_or(0);
    let lines = vec![
        format!(
            "Corpus build: {} input documents, {} kept ({} bytes), {} dropped with their \
             reasons; {} personal-data spans redacted.",
            n(&["input", "documents"]),
            n(&["kept", "documents"]),
            n(&["kept", "bytes"]),
            n(&["dropped_documents"]),
            ["emails", "ip_addresses", "phone_numbers"]
                .iter()
                .map(|k| n(&["pii", k]))
                .sum::<u64>()
        ),
        format!(
            "Sources: {}.",
            card["sources"]
                .as_array()
                .map(|s| {
                    s.iter()
                        .filter_map(|s| s["governance"]["name"].as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default()
        ),
    ];
    (
        vec![Source {
            name,
            license: keys("licenses").join(", "),
            provenance: format!("a Canopy corpus build ({})", folder.display()),
            bytes_per_language,
        }],
        lines,
    )
}

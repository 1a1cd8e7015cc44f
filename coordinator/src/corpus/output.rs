//! The build's outputs: `kept.jsonl`, `dropped.jsonl` and the data card.
//!
//! - `kept.jsonl`: one object per kept document, in plan order: `id`, `source`, `language`,
//!   `text`, and `url` and `meta` (the record's other fields) when it has them.
//! - `kept.parquet`, when the build asks for it: the same documents and fields, one row each,
//!   `meta` as JSON text (see [`super::parquet`]).
//! - `dropped.jsonl`: one object per dropped input record: `id`, `source`, `reason`, `detail`
//!   when there is one (malformed records name `file:line`), and for duplicates `kept_instead`
//!   (the kept document's id) and `kept_instead_source`. Records dropped while planning come
//!   first, in reading order, then those dropped by the decisions, in plan order.
//! - `datacard.json`, `datacard.md`, `README.md`: see [`super::datacard`].
//!
//! Training reads `kept.jsonl` and tokenises it with the project's tokenizer.
//!
//! Before anything is written the accounting is checked per source: input records = kept +
//! dropped, else [`CorpusBuildError::Accounting`].

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use canopy_protocol::corpus::CorpusResult;
use serde::Serialize;

use super::datacard::{ChunkCard, DataCard, OptOutCard, SourceCard, Tally};
use super::decide::{Decisions, Outcome};
use super::parquet::{KEPT_COLUMNS, StringTable};
use super::pii::{self, PiiCounts};
use super::plan::Plan;
use super::substrings::{self, Removed};
use super::{CorpusBuildError, DropReason, Result};

#[derive(Serialize)]
struct KeptLine<'a> {
    id: &'a str,
    source: &'a str,
    language: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detected_language: Option<&'a str>,
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<&'a serde_json::value::RawValue>,
}

#[derive(Serialize)]
struct DroppedLine<'a> {
    id: &'a str,
    source: &'a str,
    reason: DropReason,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kept_instead: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kept_instead_source: Option<&'a str>,
}

/// What a build wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutputSummary {
    /// Input records.
    pub input_documents: u64,
    /// Kept documents.
    pub kept_documents: u64,
    /// Dropped records.
    pub dropped_documents: u64,
    /// Kept bytes of text.
    pub kept_bytes: u64,
    /// Drops by reason.
    pub dropped_by_reason: BTreeMap<String, u64>,
    /// The data card (also in `datacard.json`).
    #[serde(skip)]
    pub card: DataCard,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CorpusBuildError + '_ {
    move |source| CorpusBuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn json<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|source| CorpusBuildError::Json { what, source })
}

/// Writes the outputs of `plan` decided by `decisions` (computed from `results`) into `out`.
pub fn write_outputs(
    plan: &Plan,
    results: &[CorpusResult],
    decisions: &Decisions,
    out: &Path,
) -> Result<OutputSummary> {
    let ns = plan.sources.len();
    let name = |s: usize| plan.sources[s].record.name.as_str();
    let mut kept = vec![Tally::default(); ns];
    let mut dropped = vec![0u64; ns];
    let mut reasons: Vec<BTreeMap<String, u64>> = vec![BTreeMap::new(); ns];
    for d in &plan.dropped {
        dropped[d.source] += 1;
        *reasons[d.source]
            .entry(d.reason.as_str().into())
            .or_default() += 1;
    }
    let mut languages: BTreeMap<String, Tally> = BTreeMap::new();
    let mut detected_languages: BTreeMap<String, Tally> = BTreeMap::new();
    let mut licenses: BTreeMap<String, Tally> = BTreeMap::new();
    for (doc, outcome) in plan.documents.iter().zip(&decisions.outcomes) {
        match outcome {
            Outcome::Kept => {
                let bytes = plan.text_len(doc);
                for t in [
                    &mut kept[doc.source],
                    languages.entry(doc.language.clone()).or_default(),
                    detected_languages
                        .entry(doc.detected_language.unwrap_or("und").to_string())
                        .or_default(),
                    licenses
                        .entry(plan.sources[doc.source].record.license.clone())
                        .or_default(),
                ] {
                    t.documents += 1;
                    t.bytes += bytes;
                }
            }
            Outcome::Dropped { reason, .. } => {
                dropped[doc.source] += 1;
                *reasons[doc.source]
                    .entry(reason.as_str().into())
                    .or_default() += 1;
            }
        }
    }
    for (s, src) in plan.sources.iter().enumerate() {
        if src.input != kept[s].documents + dropped[s] {
            return Err(CorpusBuildError::Accounting {
                name: name(s).into(),
                input: src.input,
                kept: kept[s].documents,
                dropped: dropped[s],
            });
        }
    }

    // Kept text as written: personal data replaced unless the project keeps it.
    let mode = plan.config.pii;
    let mut pii = PiiCounts::default();
    let mut kept_text = |d: usize| -> Cow<'_, str> {
        let (text, found) = pii::apply(mode, plan.text(d));
        pii.add(found);
        text
    };

    // Repeated substrings, when the project asks: cut from every kept document but the first
    // that holds them. This needs every kept text at once, so it is held in memory.
    let min_bytes = plan.config.repeated_substrings_min_bytes;
    let mut cut: HashMap<usize, String> = HashMap::new();
    let mut repeated = Removed::default();
    if min_bytes > 0 {
        let kept_ids: Vec<usize> = (0..plan.documents.len())
            .filter(|&d| decisions.outcomes[d] == Outcome::Kept)
            .collect();
        let texts: Vec<Cow<'_, str>> = kept_ids
            .iter()
            .map(|&d| pii::apply(mode, plan.text(d)).0)
            .collect();
        let refs: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
        for ((d, text), ranges) in kept_ids
            .iter()
            .zip(&refs)
            .zip(substrings::repeated(&refs, min_bytes))
        {
            if !ranges.is_empty() {
                repeated.documents += 1;
                repeated.bytes += ranges.iter().map(|(a, b)| (b - a) as u64).sum::<u64>();
                cut.insert(*d, substrings::cut(text, &ranges));
            }
        }
    }

    std::fs::create_dir_all(out).map_err(io(out))?;
    let kept_path = out.join("kept.jsonl");
    let mut kept_file =
        std::io::BufWriter::new(std::fs::File::create(&kept_path).map_err(io(&kept_path))?);
    let parquet_path = out.join("kept.parquet");
    let mut kept_parquet = if plan.config.kept_parquet {
        Some(StringTable::create(&parquet_path, &KEPT_COLUMNS)?)
    } else {
        // Not left over from an earlier build into the same directory.
        match std::fs::remove_file(&parquet_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io(&parquet_path)(e));
            }
            _ => None,
        }
    };
    for (d, doc) in plan.documents.iter().enumerate() {
        if decisions.outcomes[d] != Outcome::Kept {
            continue;
        }
        let text = kept_text(d);
        let text = cut.get(&d).map_or(text, |c| Cow::Borrowed(c.as_str()));
        let line = KeptLine {
            id: &doc.id,
            source: name(doc.source),
            language: &doc.language,
            detected_language: doc.detected_language,
            text: &text,
            url: doc.url.as_deref(),
            meta: doc.metadata.as_deref(),
        };
        kept_file
            .write_all(&json("a kept document", &line)?)
            .and_then(|()| kept_file.write_all(b"\n"))
            .map_err(io(&kept_path))?;
        if let Some(writer) = &mut kept_parquet {
            writer.push(&[
                Some(line.id),
                Some(line.source),
                Some(line.language),
                line.detected_language,
                Some(line.text),
                line.url,
                line.meta.map(serde_json::value::RawValue::get),
            ])?;
        }
    }
    kept_file.flush().map_err(io(&kept_path))?;
    if let Some(writer) = kept_parquet {
        writer.finish()?;
    }

    let dropped_path = out.join("dropped.jsonl");
    let mut dropped_file =
        std::io::BufWriter::new(std::fs::File::create(&dropped_path).map_err(io(&dropped_path))?);
    let mut write_dropped = |line: DroppedLine<'_>| -> Result<()> {
        dropped_file
            .write_all(&json("a dropped document", &line)?)
            .and_then(|()| dropped_file.write_all(b"\n"))
            .map_err(io(&dropped_path))
    };
    for d in &plan.dropped {
        write_dropped(DroppedLine {
            id: &d.id,
            source: name(d.source),
            reason: d.reason,
            detail: d.detail.as_deref(),
            kept_instead: None,
            kept_instead_source: None,
        })?;
    }
    for (doc, outcome) in plan.documents.iter().zip(&decisions.outcomes) {
        if let Outcome::Dropped {
            reason,
            kept_instead,
        } = *outcome
        {
            let instead = kept_instead.map(|k| &plan.documents[k]);
            write_dropped(DroppedLine {
                id: &doc.id,
                source: name(doc.source),
                reason,
                detail: None,
                kept_instead: instead.map(|k| k.id.as_str()),
                kept_instead_source: instead.map(|k| name(k.source)),
            })?;
        }
    }
    dropped_file.flush().map_err(io(&dropped_path))?;

    let mut all_reasons: BTreeMap<String, u64> = BTreeMap::new();
    for r in &reasons {
        for (k, v) in r {
            *all_reasons.entry(k.clone()).or_default() += v;
        }
    }
    let sources: Vec<SourceCard> = plan
        .sources
        .iter()
        .enumerate()
        .map(|(s, src)| SourceCard {
            governance: src.record.clone(),
            input: Tally {
                documents: src.input,
                bytes: src.input_bytes,
            },
            kept: kept[s],
            dropped_documents: dropped[s],
            dropped_by_reason: reasons[s].clone(),
        })
        .collect();
    let chunks = plan
        .chunks
        .iter()
        .zip(results)
        .map(|(c, r)| {
            Ok(ChunkCard {
                chunk: c.digest.to_string(),
                result: r
                    .digest()
                    .map_err(|source| CorpusBuildError::Chunk { index: 0, source })?
                    .to_string(),
                documents: c.documents() as u64,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let total = |f: fn(&SourceCard) -> u64| sources.iter().map(f).sum::<u64>();
    let card = DataCard {
        format: "canopy-datacard/2",
        input: Tally {
            documents: total(|s| s.input.documents),
            bytes: total(|s| s.input.bytes),
        },
        kept: Tally {
            documents: total(|s| s.kept.documents),
            bytes: total(|s| s.kept.bytes),
        },
        dropped_documents: total(|s| s.dropped_documents),
        dropped_by_reason: all_reasons.clone(),
        sources,
        languages,
        detected_languages,
        licenses,
        dedup: decisions.dedup.clone(),
        pii,
        repeated_substrings: repeated,
        opt_outs: plan
            .optouts
            .iter()
            .map(|o| OptOutCard {
                rule: o.rule.rule.clone(),
                removed: o.removed,
            })
            .collect(),
        settings: (&plan.config).into(),
        chunks,
    };
    let card_path = out.join("datacard.json");
    let card_json = serde_json::to_vec_pretty(&card).map_err(|source| CorpusBuildError::Json {
        what: "the data card",
        source,
    })?;
    std::fs::write(&card_path, card_json).map_err(io(&card_path))?;
    let md_path = out.join("datacard.md");
    std::fs::write(&md_path, card.to_markdown()).map_err(io(&md_path))?;
    let hf_path = out.join("README.md");
    std::fs::write(&hf_path, card.to_dataset_card()).map_err(io(&hf_path))?;
    Ok(OutputSummary {
        input_documents: card.input.documents,
        kept_documents: card.kept.documents,
        dropped_documents: card.dropped_documents,
        kept_bytes: card.kept.bytes,
        dropped_by_reason: all_reasons,
        card,
    })
}

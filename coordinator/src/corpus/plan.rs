//! Stage 1, **plan**: ingest the sources, enforce governance, apply opt-outs, and pack the
//! documents into content-addressed corpus chunks.
//!
//! Documents keep their sources' order (sources by directory name, files by name, lines in
//! order); their position in [`Plan::documents`] is their number, which later stages use as
//! the deterministic tie-break (the lowest-numbered document of a duplicate cluster is the one
//! kept). Each chunk holds documents of one source only, up to `chunk_bytes` of text (a longer
//! document gets a chunk of its own).

use std::collections::HashSet;
use std::ops::Range;
use std::path::Path;

use canopy_protocol::Digest;
use canopy_protocol::corpus::{
    CorpusChunk, CorpusDocument, MAX_CHUNK_DOCUMENTS, MAX_DOCUMENT_BYTES, text_hash,
};
use canopy_protocol::governance::DataSource;
use canopy_protocol::messages::MinHashParams;

use super::language::{self, MismatchPolicy};
use super::optout::{self, OptOutRule};
use super::source::{self, RawDocument};
use super::{CorpusBuildError, CorpusConfig, DropReason, Result};

/// A document that goes to the compute stage.
#[derive(Debug, Clone)]
pub struct PlannedDocument {
    /// Its id, unique within its source.
    pub id: String,
    /// Its source's position in [`Plan::sources`].
    pub source: usize,
    /// Its language tag.
    pub language: String,
    /// The language detected from its text, when the detection is reliable.
    pub detected_language: Option<&'static str>,
    /// Its URL, if any.
    pub url: Option<String>,
    /// Its other metadata, as a JSON object's text (`None` when it has none): kept as text,
    /// a few dozen bytes, where a parsed map would take several hundred.
    pub metadata: Option<Box<serde_json::value::RawValue>>,
    /// blake3 of its normalised text.
    pub text_hash: Digest,
    /// Its chunk's position in [`Plan::chunks`].
    pub chunk: usize,
    /// Its position within that chunk.
    pub index: usize,
}

/// One corpus chunk: the unit of a corpus task.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedChunk {
    /// blake3 of [`Self::frame`]: the chunk's content address.
    pub digest: Digest,
    /// The encoded chunk (a [`CorpusChunk`] frame) that volunteers fetch. Its documents'
    /// texts are read from it in place, so the plan holds each text once.
    pub frame: Vec<u8>,
    /// Where each document's text lies in [`Self::frame`], in order.
    pub texts: Vec<Range<usize>>,
    /// The position in [`Plan::documents`] of its first document (its documents follow in
    /// order).
    pub first_document: usize,
}

/// A document dropped before or after computing, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct DroppedDocument {
    /// Its id.
    pub id: String,
    /// Its source's position in [`Plan::sources`].
    pub source: usize,
    /// Why.
    pub reason: DropReason,
    /// Details (the `file:line` and error of a malformed record, the opt-out rule).
    pub detail: Option<String>,
    /// For duplicates: the planned document kept instead.
    pub kept_instead: Option<usize>,
}

/// A source of the plan: its governance record and how many records it gave.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedSource {
    /// The governance record.
    pub record: DataSource,
    /// Input records read (documents and malformed records).
    pub input: u64,
    /// Input bytes (document texts).
    pub input_bytes: u64,
}

/// An opt-out request and how many documents it removed.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedOptOut {
    /// The request.
    pub rule: OptOutRule,
    /// Documents it removed.
    pub removed: u64,
}

/// The output of the plan stage: everything the compute and decide stages need.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The settings the build runs with.
    pub config: CorpusConfig,
    /// The sources, in order.
    pub sources: Vec<PlannedSource>,
    /// Documents to compute over, in order.
    pub documents: Vec<PlannedDocument>,
    /// The chunks, in order.
    pub chunks: Vec<PlannedChunk>,
    /// Documents dropped while planning.
    pub dropped: Vec<DroppedDocument>,
    /// The opt-out list with its effect.
    pub optouts: Vec<AppliedOptOut>,
}

impl Plan {
    /// The MinHash parameters of this plan's corpus tasks.
    pub fn params(&self) -> MinHashParams {
        self.config.minhash_params()
    }

    /// The text of planned document `doc`.
    pub fn text(&self, doc: usize) -> &str {
        let d = &self.documents[doc];
        self.chunks[d.chunk].text(d.index)
    }

    /// The length in bytes of a planned document's text.
    pub fn text_len(&self, doc: &PlannedDocument) -> u64 {
        self.chunks[doc.chunk].texts[doc.index].len() as u64
    }
}

impl PlannedChunk {
    /// How many documents the chunk holds.
    pub fn documents(&self) -> usize {
        self.texts.len()
    }

    /// Its documents' text lengths in bytes, in order.
    pub fn text_lengths(&self) -> Vec<usize> {
        self.texts.iter().map(Range::len).collect()
    }

    /// The text of the chunk's document `index`, read from the frame.
    pub fn text(&self, index: usize) -> &str {
        // Sealing checked that each range holds its document's text, which was a `String`.
        std::str::from_utf8(&self.frame[self.texts[index].clone()])
            .expect("a sealed chunk holds each text as UTF-8 where its range says")
    }
}

/// Plans a build of the sources under `sources`. The opt-out list is `optout_file`, else
/// `sources/optout.txt` when it exists, else empty.
pub fn plan(sources: &Path, optout_file: Option<&Path>, config: &CorpusConfig) -> Result<Plan> {
    config
        .validate()
        .map_err(|reason| CorpusBuildError::Config {
            path: sources.join(CorpusConfig::FILE_NAME),
            reason,
        })?;
    let read = source::read_sources(sources)?;
    if let Some(unknown) = config
        .language_id
        .sources
        .keys()
        .find(|n| !read.iter().any(|src| &src.record.name == *n))
    {
        return Err(CorpusBuildError::Config {
            path: sources.join(CorpusConfig::FILE_NAME),
            reason: format!("language_id.sources names {unknown:?}, which is not a source"),
        });
    }
    let default_optout = sources.join(optout::FILE_NAME);
    let rules = match optout_file {
        Some(path) => optout::load(path)?,
        None if default_optout.is_file() => optout::load(&default_optout)?,
        None => Vec::new(),
    };
    let mut optouts: Vec<AppliedOptOut> = rules
        .into_iter()
        .map(|rule| AppliedOptOut { rule, removed: 0 })
        .collect();
    let mut plan = Plan {
        config: config.clone(),
        sources: Vec::with_capacity(read.len()),
        documents: Vec::new(),
        chunks: Vec::new(),
        dropped: Vec::new(),
        optouts: Vec::new(),
    };
    for (s, src) in read.iter().enumerate() {
        let name = src.record.name.clone();
        plan.sources.push(PlannedSource {
            record: src.record.clone(),
            input: 0,
            input_bytes: 0,
        });
        let mut source = SourcePlanner {
            source: s,
            name: &name,
            config,
            ids: HashSet::new(),
            optouts: &mut optouts,
            packer: Packer::new(plan.documents.len()),
        };
        // Records are read and planned a batch at a time, so that the source's raw text is
        // never held whole: only what its chunks keep.
        let mut batch = Vec::with_capacity(RECORD_BATCH);
        let mut planned = Ok(());
        src.for_each_record(source::MAX_FILE_BYTES, |record| {
            let input = &mut plan.sources[s];
            input.input += 1;
            input.input_bytes += record.as_ref().map_or(0, |d| d.text.len() as u64);
            if planned.is_err() {
                return;
            }
            batch.push(record);
            if batch.len() == RECORD_BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(RECORD_BATCH));
                planned = source.plan_batch(&mut plan, full);
            }
        })?;
        planned?;
        source.plan_batch(&mut plan, batch)?;
        source.packer.seal(&mut plan)?;
        tracing::info!("source {name}: {} records", plan.sources[s].input);
    }
    plan.optouts = optouts;
    Ok(plan)
}

/// Records planned together: language detection runs over a batch on every core.
const RECORD_BATCH: usize = 16384;

/// Plans one source's records as they are read.
struct SourcePlanner<'a> {
    source: usize,
    name: &'a str,
    config: &'a CorpusConfig,
    /// blake3 of each id seen, cut to 128 bits (a collision is beyond reach).
    ids: HashSet<[u8; 16]>,
    optouts: &'a mut Vec<AppliedOptOut>,
    packer: Packer,
}

impl SourcePlanner<'_> {
    /// Drops what governance, opt-outs, limits and the language policy refuse, and packs the
    /// rest into chunks.
    fn plan_batch(&mut self, plan: &mut Plan, records: Vec<source::Record>) -> Result<()> {
        let (s, name) = (self.source, self.name);
        let detections = language::detect_all(
            records
                .iter()
                .map(|r| r.as_ref().map_or("", |d| d.text.as_str())),
        );
        for (record, detected) in records.into_iter().zip(detections) {
            let doc = match record {
                Ok(doc) => doc,
                Err(bad) => {
                    plan.dropped.push(DroppedDocument {
                        id: bad.id,
                        source: s,
                        reason: bad.reason,
                        detail: Some(bad.detail),
                        kept_instead: None,
                    });
                    continue;
                }
            };
            let drop = |reason, detail: String| DroppedDocument {
                id: doc.id.clone(),
                source: s,
                reason,
                detail: Some(detail),
                kept_instead: None,
            };
            if !self.ids.insert(id_key(&doc.id)) {
                plan.dropped.push(drop(
                    DropReason::DuplicateId,
                    format!("id {:?} appears earlier in {name}", doc.id),
                ));
                continue;
            }
            let hash = text_hash(&doc.text);
            if let Some(o) = self
                .optouts
                .iter_mut()
                .find(|o| o.rule.matches(name, &hash, &doc.id, doc.url.as_deref()))
            {
                o.removed += 1;
                plan.dropped
                    .push(drop(DropReason::OptOut, o.rule.rule.clone()));
                continue;
            }
            if doc.text.len() > MAX_DOCUMENT_BYTES {
                plan.dropped.push(drop(
                    DropReason::TooLong,
                    format!("{} bytes, at most {MAX_DOCUMENT_BYTES}", doc.text.len()),
                ));
                continue;
            }
            let mut doc = doc;
            // A detection says nothing of a label the detector does not know.
            let detected = detected.filter(|_| language::detectable(&doc.language));
            if let Some(found) = detected.filter(|d| !language::same_language(&doc.language, d)) {
                match self.config.language_id.policy(name) {
                    MismatchPolicy::Keep => {}
                    MismatchPolicy::Relabel => doc.language = found.to_string(),
                    MismatchPolicy::Drop => {
                        plan.dropped.push(DroppedDocument {
                            id: doc.id.clone(),
                            source: s,
                            reason: DropReason::LanguageMismatch,
                            detail: Some(format!(
                                "labelled {:?}, detected {found:?}",
                                doc.language
                            )),
                            kept_instead: None,
                        });
                        continue;
                    }
                }
            }
            self.packer.push(plan, s, doc, hash, detected)?;
        }
        Ok(())
    }
}

/// The key an id is remembered by while a source is planned.
fn id_key(id: &str) -> [u8; 16] {
    let hash = blake3::hash(id.as_bytes());
    let mut key = [0; 16];
    key.copy_from_slice(&hash.as_bytes()[..16]);
    key
}

/// Packs one source's documents, in order, into chunks of at most `chunk_bytes` of text.
struct Packer {
    current: Vec<CorpusDocument>,
    bytes: usize,
    first: usize,
}

impl Packer {
    fn new(first: usize) -> Self {
        Self {
            current: Vec::new(),
            bytes: 0,
            first,
        }
    }

    fn push(
        &mut self,
        plan: &mut Plan,
        source: usize,
        doc: RawDocument,
        hash: Digest,
        detected_language: Option<&'static str>,
    ) -> Result<()> {
        if !self.current.is_empty()
            && (self.bytes + doc.text.len() > plan.config.chunk_bytes
                || self.current.len() == MAX_CHUNK_DOCUMENTS)
        {
            self.seal(plan)?;
        }
        self.bytes += doc.text.len();
        let metadata = (!doc.metadata.is_empty())
            .then(|| serde_json::value::to_raw_value(&doc.metadata))
            .transpose()
            .map_err(|source| CorpusBuildError::Json {
                what: "a document's metadata",
                source,
            })?;
        plan.documents.push(PlannedDocument {
            id: doc.id.clone(),
            source,
            language: doc.language,
            detected_language,
            url: doc.url,
            metadata,
            text_hash: hash,
            chunk: plan.chunks.len(),
            index: self.current.len(),
        });
        self.current.push(CorpusDocument {
            id: doc.id,
            text: doc.text,
        });
        Ok(())
    }

    /// Seals the documents held into a chunk.
    fn seal(&mut self, plan: &mut Plan) -> Result<()> {
        if !self.current.is_empty() {
            seal(plan, std::mem::take(&mut self.current), self.first)?;
        }
        self.bytes = 0;
        self.first = plan.documents.len();
        Ok(())
    }
}

fn seal(plan: &mut Plan, documents: Vec<CorpusDocument>, first: usize) -> Result<()> {
    let index = plan.chunks.len();
    let (frame, texts) = CorpusChunk { documents }
        .encode_locating_texts()
        .map_err(|source| CorpusBuildError::Chunk { index, source })?;
    plan.chunks.push(PlannedChunk {
        digest: Digest::of(&frame),
        frame,
        texts,
        first_document: first,
    });
    Ok(())
}

//! The data card: what went into the training data and what did not, per source, language and
//! license; why documents were dropped; deduplication clusters; opt-outs applied; the
//! governance record of every source; the settings; and the content addresses of the chunks. Written as `datacard.json` (for tools) and `datacard.md` (for people). It holds
//! no timestamps and nothing of the machine, so the same build gives the same card.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use canopy_protocol::governance::DataSource;
use serde::Serialize;

use super::decide::DedupStats;
use super::language::LanguageIdConfig;
use super::pii::{PiiCounts, PiiMode};
use super::substrings::Removed;
use super::{CorpusConfig, LshConfig, MinHashSection, filter::FilterConfig};

/// Documents and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Tally {
    /// Documents.
    pub documents: u64,
    /// Bytes of text.
    pub bytes: u64,
}

/// One source in the card.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceCard {
    /// The governance record.
    pub governance: DataSource,
    /// Records read.
    pub input: Tally,
    /// Documents kept.
    pub kept: Tally,
    /// Documents dropped.
    pub dropped_documents: u64,
    /// Drops by reason.
    pub dropped_by_reason: BTreeMap<String, u64>,
}

/// One opt-out request and its effect.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OptOutCard {
    /// The request as written.
    pub rule: String,
    /// Documents it removed.
    pub removed: u64,
}

/// The build settings, as the card records them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SettingsCard {
    /// Text per chunk.
    pub chunk_bytes: usize,
    /// MinHash.
    pub minhash: MinHashSection,
    /// LSH banding.
    pub lsh: LshConfig,
    /// Quality filters.
    pub filters: FilterConfig,
    /// What was done with personal data.
    pub pii: PiiMode,
    /// What was done with documents whose detected language differs from their label.
    pub language_id: LanguageIdConfig,
    /// Repeated-substring removal: the shortest substring cut (0: off).
    pub repeated_substrings_min_bytes: usize,
}

impl From<&CorpusConfig> for SettingsCard {
    fn from(c: &CorpusConfig) -> Self {
        Self {
            chunk_bytes: c.chunk_bytes,
            minhash: c.minhash,
            lsh: c.lsh,
            filters: c.filters.clone(),
            pii: c.pii,
            language_id: c.language_id.clone(),
            repeated_substrings_min_bytes: c.repeated_substrings_min_bytes,
        }
    }
}

/// A corpus chunk's content addresses.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChunkCard {
    /// blake3 of the chunk frame.
    pub chunk: String,
    /// blake3 of the result encoding.
    pub result: String,
    /// Documents in it.
    pub documents: u64,
}

/// The whole data card.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataCard {
    /// Format tag.
    pub format: &'static str,
    /// Records read.
    pub input: Tally,
    /// Documents kept.
    pub kept: Tally,
    /// Documents dropped.
    pub dropped_documents: u64,
    /// Drops by reason, over all sources.
    pub dropped_by_reason: BTreeMap<String, u64>,
    /// Per source.
    pub sources: Vec<SourceCard>,
    /// Kept documents per language (as labelled, or relabelled by language ID).
    pub languages: BTreeMap<String, Tally>,
    /// Kept documents per language detected from their text (`und`: not reliably).
    pub detected_languages: BTreeMap<String, Tally>,
    /// Kept documents per license.
    pub licenses: BTreeMap<String, Tally>,
    /// Deduplication.
    pub dedup: DedupStats,
    /// Personal data found in kept text (replaced by placeholders unless `settings.pii` is
    /// `keep`).
    pub pii: PiiCounts,
    /// What repeated-substring removal cut from kept text.
    pub repeated_substrings: Removed,
    /// Opt-out requests applied.
    pub opt_outs: Vec<OptOutCard>,
    /// Settings.
    pub settings: SettingsCard,
    /// The corpus chunks and their results.
    pub chunks: Vec<ChunkCard>,
}

impl DataCard {
    /// The card as a Hugging Face dataset card (`README.md`): YAML metadata (licence,
    /// languages, size, task) before the Markdown of [`DataCard::to_markdown`].
    pub fn to_dataset_card(&self) -> String {
        use canopy_text::card::{Meta, front_matter};
        let licenses: Vec<&String> = self.licenses.keys().collect();
        let license = match licenses.as_slice() {
            [one] => one.to_lowercase(),
            _ => "other".to_owned(),
        };
        let size = match self.kept.documents {
            n if n < 1_000 => "n<1K",
            n if n < 10_000 => "1K<n<10K",
            n if n < 100_000 => "10K<n<100K",
            n if n < 1_000_000 => "100K<n<1M",
            n if n < 10_000_000 => "1M<n<10M",
            _ => "n>10M",
        };
        let mut md = front_matter(&[
            ("license", Meta::Text(license)),
            (
                "language",
                Meta::List(self.languages.keys().cloned().collect()),
            ),
            ("pretty_name", Meta::Text("Canopy corpus build".into())),
            ("size_categories", Meta::List(vec![size.into()])),
            (
                "task_categories",
                Meta::List(vec!["text-generation".into()]),
            ),
            (
                "source_datasets",
                Meta::List(
                    self.sources
                        .iter()
                        .map(|s| s.governance.name.clone())
                        .collect(),
                ),
            ),
        ]);
        md.push_str(&self.to_markdown());
        md
    }

    /// The card as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut m = String::new();
        let _ = writeln!(m, "# Data card\n");
        let _ = writeln!(
            m,
            "{} input documents ({} bytes): **{} kept** ({} bytes), {} dropped. \
             Every input document is either kept or dropped with its reason (`dropped.jsonl`).\n",
            self.input.documents,
            self.input.bytes,
            self.kept.documents,
            self.kept.bytes,
            self.dropped_documents
        );
        let _ = writeln!(m, "## Sources\n");
        let _ = writeln!(
            m,
            "| source | languages | license | consent basis | provenance | steward | input | kept | kept bytes | dropped |"
        );
        let _ = writeln!(
            m,
            "| --- | --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: |"
        );
        for s in &self.sources {
            let g = &s.governance;
            let consent = serde_json::to_value(&g.consent_basis)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                g.name,
                g.languages.join(", "),
                g.license,
                consent,
                g.provenance_url,
                g.steward_contact,
                s.input.documents,
                s.kept.documents,
                s.kept.bytes,
                s.dropped_documents
            );
        }
        for (title, map) in [
            ("Languages", &self.languages),
            ("Languages detected from the text", &self.detected_languages),
            ("Licenses", &self.licenses),
        ] {
            let _ = writeln!(m, "\n## {title} (kept)\n");
            let _ = writeln!(m, "| | documents | bytes |\n| --- | ---: | ---: |");
            for (k, t) in map {
                let _ = writeln!(m, "| {k} | {} | {} |", t.documents, t.bytes);
            }
        }
        let _ = writeln!(m, "\n## Dropped, by reason\n");
        let _ = writeln!(m, "| reason | documents |\n| --- | ---: |");
        for (r, n) in &self.dropped_by_reason {
            let _ = writeln!(m, "| {r} | {n} |");
        }
        let d = &self.dedup;
        let _ = writeln!(m, "\n## Deduplication\n");
        let _ = writeln!(
            m,
            "- exact (blake3 of normalised text): {} duplicates in {} groups\n\
             - near (MinHash {} permutations, {}-word shingles; LSH {} bands × {} rows; \
             verified at Jaccard ≥ {}): {} candidate pairs, {} verified, {} rejected; \
             {} clusters, {} documents removed, largest cluster {}",
            d.exact_duplicates,
            d.exact_groups,
            self.settings.minhash.num_perm,
            self.settings.minhash.shingle_words,
            self.settings.lsh.bands,
            self.settings.lsh.rows,
            self.settings.lsh.threshold,
            d.near_candidate_pairs,
            d.near_verified_pairs,
            d.near_rejected_pairs,
            d.near_clusters,
            d.near_duplicates,
            d.largest_cluster
        );
        let p = &self.pii;
        let _ = writeln!(m, "\n## Personal data\n");
        let _ = writeln!(
            m,
            "{} in kept text: {} e-mail addresses, {} IP addresses, {} phone numbers.",
            match self.settings.pii {
                PiiMode::Redact =>
                    "Replaced by placeholders (`PI:EMAIL`, `PI:IP_ADDRESS`, `PI:PHONE`)",
                PiiMode::Keep => "Found and kept (`pii = \"keep\"`)",
            },
            p.emails,
            p.ip_addresses,
            p.phone_numbers
        );
        let _ = writeln!(m, "\n## Repeated substrings\n");
        let r = &self.repeated_substrings;
        let _ = match self.settings.repeated_substrings_min_bytes {
            0 => writeln!(m, "Not removed (`repeated_substrings_min_bytes = 0`)."),
            min => writeln!(
                m,
                "Substrings of {min} bytes or more that an earlier kept document already \
                 holds were cut: {} bytes from {} documents.",
                r.bytes, r.documents
            ),
        };
        let _ = writeln!(m, "\n## Opt-outs\n");
        if self.opt_outs.is_empty() {
            let _ = writeln!(m, "No opt-out requests.");
        }
        for o in &self.opt_outs {
            let _ = writeln!(m, "- `{}`: {} documents removed", o.rule, o.removed);
        }
        let _ = writeln!(
            m,
            "\n## Outputs\n\n{} corpus chunks (content addresses in datacard.json); the kept \
             documents in `kept.jsonl`.",
            self.chunks.len()
        );
        m
    }
}

//! Stage 3, **decide**: from every chunk's result, which planned documents are kept and why
//! the others are dropped.
//!
//! In order, each step over the documents the previous ones kept:
//! 1. quality filters per language ([`super::filter`]);
//! 2. exact dedup: documents with equal blake3 of normalised text; the lowest-numbered is
//!    kept, the others are `exact_duplicate` with `kept_instead`;
//! 3. near dedup ([`super::dedup`]): LSH candidates verified by exact Jaccard, union-find
//!    clusters; the lowest-numbered document of a cluster is kept, the others are
//!    `near_duplicate` with `kept_instead` (the cluster's kept document).
//!
//! Pure: the same plan and results give the same decisions.

use std::collections::{BTreeMap, HashMap};

use canopy_protocol::Digest;
use canopy_protocol::corpus::CorpusResult;
use serde::Serialize;

use super::plan::Plan;
use super::{CorpusBuildError, DropReason, Result, dedup};

/// What happens to one planned document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It goes into the training data.
    Kept,
    /// It does not.
    Dropped {
        /// Why.
        reason: DropReason,
        /// For duplicates, the planned document kept instead.
        kept_instead: Option<usize>,
    },
}

/// Deduplication figures for the data card.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DedupStats {
    /// Documents dropped as exact duplicates.
    pub exact_duplicates: u64,
    /// Groups of exact duplicates (each keeps one document).
    pub exact_groups: u64,
    /// Candidate pairs from LSH banding.
    pub near_candidate_pairs: u64,
    /// Candidate pairs whose exact Jaccard reached the threshold.
    pub near_verified_pairs: u64,
    /// Candidate pairs below the threshold (LSH false positives, not merged).
    pub near_rejected_pairs: u64,
    /// Clusters of two or more near-duplicates.
    pub near_clusters: u64,
    /// Documents dropped as near-duplicates.
    pub near_duplicates: u64,
    /// Size of the largest near-duplicate cluster.
    pub largest_cluster: u64,
    /// Near-duplicate clusters by size.
    pub cluster_sizes: BTreeMap<u64, u64>,
}

/// The decisions for a plan.
#[derive(Debug, Clone)]
pub struct Decisions {
    /// Per planned document, in order.
    pub outcomes: Vec<Outcome>,
    /// Per planned document, its quality signals.
    pub signals: Vec<[u32; 8]>,
    /// Deduplication figures.
    pub dedup: DedupStats,
}

/// Decides over `plan` with `results`, one per chunk in order, each checked against its chunk.
pub fn decide(plan: &Plan, results: &[CorpusResult]) -> Result<Decisions> {
    if results.len() != plan.chunks.len() {
        return Err(CorpusBuildError::ResultCount {
            results: results.len(),
            chunks: plan.chunks.len(),
        });
    }
    let params = plan.params();
    for (index, (r, c)) in results.iter().zip(&plan.chunks).enumerate() {
        r.check_against(&c.text_lengths(), &params)
            .map_err(|source| CorpusBuildError::Chunk { index, source })?;
    }
    let doc_result = |d: usize| {
        let p = &plan.documents[d];
        &results[p.chunk].documents[p.index]
    };
    let n = plan.documents.len();
    let signals: Vec<[u32; 8]> = (0..n).map(|d| doc_result(d).signals).collect();
    let mut outcomes = vec![Outcome::Kept; n];
    let mut stats = DedupStats::default();

    // 1. Quality filters.
    for (d, doc) in plan.documents.iter().enumerate() {
        let thresholds = plan.config.filters.for_language(&doc.language);
        if let Some(reason) = thresholds
            .check(&signals[d])
            .or_else(|| thresholds.check_closed_class(&doc.language, plan.text(d)))
            .or_else(|| thresholds.check_flagged(&doc.language, plan.text(d)))
        {
            outcomes[d] = Outcome::Dropped {
                reason,
                kept_instead: None,
            };
        }
    }

    // 2. Exact duplicates of normalised text.
    let mut first: HashMap<Digest, usize> = HashMap::new();
    let mut groups: HashMap<usize, ()> = HashMap::new();
    for (d, doc) in plan.documents.iter().enumerate() {
        if outcomes[d] != Outcome::Kept {
            continue;
        }
        match first.get(&doc.text_hash) {
            Some(&keep) => {
                outcomes[d] = Outcome::Dropped {
                    reason: DropReason::ExactDuplicate,
                    kept_instead: Some(keep),
                };
                stats.exact_duplicates += 1;
                groups.insert(keep, ());
            }
            None => {
                first.insert(doc.text_hash, d);
            }
        }
    }
    stats.exact_groups = groups.len() as u64;

    // 3. Near duplicates among the survivors.
    let survivors: Vec<usize> = (0..n).filter(|&d| outcomes[d] == Outcome::Kept).collect();
    let texts: Vec<&str> = survivors.iter().map(|&d| plan.text(d)).collect();
    let sigs: Vec<&[u32]> = survivors
        .iter()
        .map(|&d| doc_result(d).signature.as_slice())
        .collect();
    let near = dedup::near_duplicates(
        &texts,
        &sigs,
        &plan.config.lsh,
        params.shingle_words as usize,
    );
    stats.near_candidate_pairs = near.candidates;
    stats.near_verified_pairs = near.verified.len() as u64;
    stats.near_rejected_pairs = near.candidates - near.verified.len() as u64;
    let mut sizes: BTreeMap<u32, u64> = BTreeMap::new();
    for (i, &rep) in near.representative.iter().enumerate() {
        *sizes.entry(rep).or_default() += 1;
        if rep as usize != i {
            outcomes[survivors[i]] = Outcome::Dropped {
                reason: DropReason::NearDuplicate,
                kept_instead: Some(survivors[rep as usize]),
            };
            stats.near_duplicates += 1;
        }
    }
    for &size in sizes.values().filter(|&&s| s > 1) {
        stats.near_clusters += 1;
        stats.largest_cluster = stats.largest_cluster.max(size);
        *stats.cluster_sizes.entry(size).or_default() += 1;
    }
    Ok(Decisions {
        outcomes,
        signals,
        dedup: stats,
    })
}

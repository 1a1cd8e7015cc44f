//! The corpus build as the corpus grows: documents per second, the builder's peak memory per
//! document, and near-duplicate precision and recall against planted truth.
//!
//! For each size N (`CORPUS_SCALE_DOCS`, comma-separated, default `20000,100000`), it
//! generates about N documents with planted near-duplicates
//! ([`canopy_coordinator::corpus::sample::near_duplicate_groups`]: each original with 0 to 3
//! variants graded across the 0.8 Jaccard threshold, and unrelated documents sharing
//! boilerplate), writes them as one JSONL source, and builds the corpus locally on the CPU
//! path in a child process of its own, so that the child's peak resident memory (`VmHWM`) is
//! the build's alone. Generation and the truth are outside the timing.
//!
//! - Truth: the pairs of one group whose exact shingle Jaccard is at least 0.8 (documents of
//!   different groups are far apart by construction).
//! - Recall: truth pairs of which the build did not keep both documents (the kept corpus is
//!   to hold no pair at or above the threshold).
//! - Precision: documents dropped as duplicates whose `kept_instead` is within 0.8 of them.
//!
//! Prints one JSON line per size. The swarm build (volunteers computing the chunks) is not
//! part of it: its coordinator decides and writes the same way, after the same results.
//!
//! ```text
//! CORPUS_SCALE_DOCS=100000,300000,1000000 cargo bench -p canopy-benches --bench corpus_scale
//! ```

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use canopy_coordinator::corpus::build::{BuildOptions, build};
use canopy_coordinator::corpus::dedup::{jaccard, shingle_set};
use canopy_coordinator::corpus::sample::near_duplicate_groups;
use canopy_protocol::messages::MinHashParams;
use canopy_shaders::Cpu;

/// Set in the child: the directory holding `sources/`, where it writes `out/`.
const CHILD: &str = "CORPUS_SCALE_CHILD";

/// The child: builds, then prints the build's seconds (in all and by stage) and peak
/// resident bytes.
fn child(dir: &Path) {
    let options = BuildOptions {
        sources: dir.join("sources"),
        out: dir.join("out"),
        ..BuildOptions::default()
    };
    let start = Instant::now();
    let summary = build(&Cpu::new(), &options, |_| {}).expect("the corpus builds");
    let seconds = start.elapsed().as_secs_f64();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    println!(
        "{}",
        serde_json::json!({
            "seconds": seconds,
            "stage_seconds": summary.seconds,
            "peak_rss_bytes": peak_kib * 1024,
        })
    );
}

/// Writes the groups as one English source; returns each document's id with its text.
fn write_source(dir: &Path, groups: &[Vec<String>]) -> HashMap<String, (usize, usize)> {
    let src = dir.join("sources").join("web");
    std::fs::create_dir_all(&src).expect("source dir");
    std::fs::write(
        src.join("source.toml"),
        "name = \"web\"\nlanguages = [\"en\"]\nlicense = \"CC-BY-4.0\"\n\
         provenance_url = \"https://data.example.org/web\"\nconsent_basis = \"open_license\"\n\
         steward_contact = \"s@example.org\"\n",
    )
    .expect("source.toml");
    let file = std::fs::File::create(src.join("data.jsonl")).expect("data.jsonl");
    let mut w = std::io::BufWriter::new(file);
    let mut ids = HashMap::new();
    for (g, group) in groups.iter().enumerate() {
        for (i, text) in group.iter().enumerate() {
            let id = format!("g{g}-{i}");
            let line = serde_json::json!({"id": id, "text": text});
            writeln!(w, "{line}").expect("write");
            ids.insert(id, (g, i));
        }
    }
    w.flush().expect("flush");
    ids
}

fn main() {
    if let Ok(dir) = std::env::var(CHILD) {
        child(Path::new(&dir));
        return;
    }
    let sizes: Vec<usize> = std::env::var("CORPUS_SCALE_DOCS")
        .unwrap_or_else(|_| "20000,100000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .unwrap_or_else(|e| panic!("CORPUS_SCALE_DOCS: {s:?}: {e}"))
        })
        .collect();
    let k = MinHashParams::default().shingle_words as usize;
    for n in sizes {
        // About 2.7 documents per original (1 + 1.5 variants + 0.2 unrelated).
        let groups = near_duplicate_groups(7, (n as f64 / 2.7).ceil() as usize);
        let documents: usize = groups.iter().map(Vec::len).sum();
        let tmp = tempfile::tempdir().expect("tmp");
        let ids = write_source(tmp.path(), &groups);
        let text = |id: &str| ids.get(id).map(|&(g, i)| groups[g][i].as_str());

        let out = Command::new(std::env::current_exe().expect("this bench"))
            .env(CHILD, tmp.path())
            .output()
            .expect("the child runs");
        assert!(
            out.status.success(),
            "the build failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let child: serde_json::Value = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| serde_json::from_str(l).ok())
            .expect("the child's figures");
        let seconds = child["seconds"].as_f64().expect("seconds");
        let peak = child["peak_rss_bytes"].as_u64().expect("peak");

        // Clusters from the drop log: a duplicate names the document kept instead.
        let dropped = std::fs::read_to_string(tmp.path().join("out").join("dropped.jsonl"))
            .expect("dropped.jsonl");
        let mut kept_instead: HashMap<String, String> = HashMap::new();
        // Documents the quality filters dropped take no part in deduplication.
        let mut filtered: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut reasons: std::collections::BTreeMap<String, u64> = Default::default();
        for line in dropped.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("a drop line");
            let id: String = v["id"].as_str().expect("id").into();
            *reasons
                .entry(v["reason"].as_str().unwrap_or("?").into())
                .or_default() += 1;
            match v["kept_instead"].as_str() {
                Some(instead) => {
                    kept_instead.insert(id, instead.into());
                }
                None => {
                    filtered.insert(id);
                }
            }
        }
        let (mut truth, mut found) = (0u64, 0u64);
        for (g, group) in groups.iter().enumerate() {
            let sets: Vec<Vec<u32>> = group.iter().map(|t| shingle_set(t, k)).collect();
            for a in 0..group.len() {
                for b in a + 1..group.len() {
                    let (x, y) = (format!("g{g}-{a}"), format!("g{g}-{b}"));
                    if filtered.contains(&x) || filtered.contains(&y) {
                        continue;
                    }
                    if jaccard(&sets[a], &sets[b]) >= 0.8 {
                        truth += 1;
                        found += u64::from(
                            kept_instead.contains_key(&x) || kept_instead.contains_key(&y),
                        );
                    }
                }
            }
        }
        let correct = kept_instead
            .iter()
            .filter(|(id, instead)| match (text(id), text(instead)) {
                (Some(a), Some(b)) => jaccard(&shingle_set(a, k), &shingle_set(b, k)) >= 0.8,
                _ => false,
            })
            .count();
        let line = serde_json::json!({
            "documents": documents,
            "input_bytes": groups.iter().flatten().map(|t| t.len() as u64).sum::<u64>(),
            "seconds": seconds,
            "stage_seconds": child["stage_seconds"],
            "docs_per_sec": documents as f64 / seconds,
            "peak_rss_bytes": peak,
            "peak_rss_bytes_per_doc": peak as f64 / documents as f64,
            "truth_pairs": truth,
            "duplicates_dropped": kept_instead.len(),
            "dropped_by_reason": reasons,
            "precision": correct as f64 / kept_instead.len().max(1) as f64,
            "recall": found as f64 / truth.max(1) as f64,
        });
        println!("{line}");
    }
}

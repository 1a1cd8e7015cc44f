//! Side-by-side comparison: Canopy's corpus signatures and near-dedup against `datasketch`
//! (MinHash + MinHashLSH, the Python library most dedup pipelines use), on the same documents
//! in the same run.
//!
//! Generates N documents (`CORPUS_COMPARE_DOCS`, default 20000) with planted near-duplicates
//! ([`canopy_coordinator::corpus::sample::near_duplicate_documents`]), then times:
//! - Canopy, CPU path: quality signals + MinHash signatures
//!   ([`canopy_shaders::corpus::compute_documents`]; the signals are extra work datasketch does
//!   not do), then LSH banding + exact-Jaccard verification + union-find
//!   ([`canopy_coordinator::corpus::dedup::near_duplicates`]);
//! - Canopy, WGSL path, the same, on the adapter `CANOPY_ADAPTER` picks (skipped with a notice
//!   when the runtime is on the CPU path: set `CANOPY_ADAPTER=software` for lavapipe);
//! - datasketch: `MinHash(num_perm=128)` with `update_batch` over the same 5-word shingles
//!   (words split on ASCII whitespace, as Canopy's kernels do; shorter documents are one
//!   shingle), then `MinHashLSH(threshold=0.8)` insert and query for every document. It runs in
//!   a venv under the target directory (`corpus-compare-venv`), created with
//!   `pip install datasketch` on first use; timed inside Python, excluding start-up and reading.
//!
//! Prints documents/second for each and the ratios. Measured once (2 shared cores, lavapipe for
//! WGSL, 20000 documents, 14.9 MB): Canopy CPU 26,799 docs/s, Canopy WGSL on lavapipe 16,649
//! docs/s, datasketch 2.0.0 3,421 docs/s: 7.8x and 4.9x.
//!
//! ```text
//! cargo bench -p canopy-benches --bench corpus_compare
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use canopy_coordinator::corpus::LshConfig;
use canopy_coordinator::corpus::dedup::near_duplicates;
use canopy_coordinator::corpus::sample::near_duplicate_documents;
use canopy_protocol::corpus::{CorpusChunk, CorpusDocument};
use canopy_protocol::messages::MinHashParams;
use canopy_shaders::{Backend, Cpu, Runtime};

const PYTHON: &str = r#"
import json, sys, time
from datasketch import MinHash, MinHashLSH
docs = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
t0 = time.perf_counter()
sigs = []
for text in docs:
    words = text.encode("utf-8").split()
    if len(words) >= 5:
        sh = [b" ".join(words[i:i + 5]) for i in range(len(words) - 4)]
    elif words:
        sh = [b" ".join(words)]
    else:
        sh = []
    m = MinHash(num_perm=128, seed=1)
    m.update_batch(sh)
    sigs.append(m)
t1 = time.perf_counter()
lsh = MinHashLSH(threshold=0.8, num_perm=128)
for i, m in enumerate(sigs):
    lsh.insert(i, m)
pairs = set()
for i, m in enumerate(sigs):
    for j in lsh.query(m):
        if j != i:
            pairs.add((min(i, j), max(i, j)))
t2 = time.perf_counter()
print(json.dumps({"signatures_s": t1 - t0, "lsh_s": t2 - t1, "pairs": len(pairs)}))
"#;

struct Timing {
    signatures_s: f64,
    dedup_s: f64,
    pairs: usize,
}

fn canopy<B: Backend>(backend: &B, docs: &[String]) -> Timing {
    let params = MinHashParams::default();
    // Chunks of about 4 MiB, as the pipeline plans them.
    let mut chunks = vec![CorpusChunk::default()];
    let mut bytes = 0;
    for (i, t) in docs.iter().enumerate() {
        if bytes + t.len() > 4 << 20 {
            chunks.push(CorpusChunk::default());
            bytes = 0;
        }
        bytes += t.len();
        if let Some(c) = chunks.last_mut() {
            c.documents.push(CorpusDocument {
                id: i.to_string(),
                text: t.clone(),
            });
        }
    }
    let t0 = Instant::now();
    let results: Vec<_> = chunks
        .iter()
        .map(|c| canopy_shaders::corpus::compute_documents(backend, c, &params).expect("compute"))
        .collect();
    let signatures_s = t0.elapsed().as_secs_f64();
    let texts: Vec<&str> = docs.iter().map(String::as_str).collect();
    let sigs: Vec<&[u32]> = results
        .iter()
        .flat_map(|r| r.documents.iter().map(|d| d.signature.as_slice()))
        .collect();
    let t1 = Instant::now();
    let found = near_duplicates(&texts, &sigs, &LshConfig::default(), 5);
    Timing {
        signatures_s,
        dedup_s: t1.elapsed().as_secs_f64(),
        pairs: found.verified.len(),
    }
}

/// target/<profile>/deps/<bench> → target.
fn target_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .expect("target dir")
}

fn datasketch(docs: &[String]) -> Result<(Timing, String), String> {
    let venv = target_dir().join("corpus-compare-venv");
    let python = venv.join("bin").join("python");
    let run = |cmd: &mut Command| -> Result<std::process::Output, String> {
        let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{cmd:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(out)
    };
    if !python.exists() {
        println!("creating {} and installing datasketch …", venv.display());
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    }
    let check = Command::new(&python)
        .args(["-c", "import datasketch"])
        .output();
    if !check.is_ok_and(|o| o.status.success()) {
        run(Command::new(&python).args(["-m", "pip", "install", "--quiet", "datasketch"]))?;
    }
    let version = run(Command::new(&python).args([
        "-c",
        "import importlib.metadata as m; print(m.version('datasketch'))",
    ]))?;
    let input = venv.join("corpus-compare-docs.jsonl");
    let body: String = docs
        .iter()
        .map(|d| serde_json::to_string(d).expect("json") + "\n")
        .collect();
    std::fs::write(&input, body).map_err(|e| e.to_string())?;
    let script = venv.join("corpus_compare.py");
    std::fs::write(&script, PYTHON).map_err(|e| e.to_string())?;
    let out = run(Command::new(&python).arg(&script).arg(&input))?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    Ok((
        Timing {
            signatures_s: v["signatures_s"].as_f64().unwrap_or(f64::NAN),
            dedup_s: v["lsh_s"].as_f64().unwrap_or(f64::NAN),
            pairs: v["pairs"].as_u64().unwrap_or(0) as usize,
        },
        String::from_utf8_lossy(&version.stdout).trim().to_string(),
    ))
}

fn report(name: &str, n: usize, t: &Timing) -> f64 {
    let total = t.signatures_s + t.dedup_s;
    let rate = n as f64 / total;
    println!(
        "{name:<34} signatures {:>8.3}s  dedup {:>8.3}s  total {:>8.3}s  {:>10.0} docs/s  {:>7} pairs",
        t.signatures_s, t.dedup_s, total, rate, t.pairs
    );
    rate
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken from the command line.
    let n: usize = std::env::var("CORPUS_COMPARE_DOCS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mut docs = Vec::new();
    let mut seed = 0;
    while docs.len() < n {
        docs.extend(near_duplicate_documents(seed, 1000));
        seed += 1;
    }
    docs.truncate(n);
    let bytes: usize = docs.iter().map(String::len).sum();
    println!(
        "corpus_compare: {n} documents, {:.1} MB; MinHash 128 permutations over 5-word shingles, near-dup threshold 0.8",
        bytes as f64 / 1e6
    );
    let cpu = canopy(&Cpu::new(), &docs);
    let cpu_rate = report("canopy CPU path", n, &cpu);
    let mut wgsl_rate = None;
    match Runtime::from_env() {
        Ok(Runtime::Gpu(gpu)) => {
            let t = canopy(gpu.as_ref(), &docs);
            wgsl_rate = Some(report(
                &format!("canopy WGSL ({})", gpu.report().name),
                n,
                &t,
            ));
        }
        Ok(Runtime::Cpu(_)) => println!(
            "notice: no GPU adapter chosen (set CANOPY_ADAPTER=software or gpu); skipping the WGSL path"
        ),
        Err(e) => println!("notice: no wgpu adapter ({e}); skipping the WGSL path"),
    }
    match datasketch(&docs) {
        Ok((t, version)) => {
            let ds_rate = report(&format!("datasketch {version}"), n, &t);
            println!("ratio canopy CPU / datasketch: {:.1}x", cpu_rate / ds_rate);
            if let Some(w) = wgsl_rate {
                println!("ratio canopy WGSL / datasketch: {:.1}x", w / ds_rate);
            }
        }
        Err(e) => println!("notice: datasketch comparison skipped: {e}"),
    }
}

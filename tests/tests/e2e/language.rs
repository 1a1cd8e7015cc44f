//! Real language: a project with a BPE tokenizer trains through the swarm and exports a
//! directory that carries its tokenizer and model card; and, where Python with `torch` and
//! `transformers` is at hand, exports load in `transformers` and agree with Canopy's logits
//! (`tools/check_export.py`; set `CANOPY_PYTHON` to the interpreter, `python3` by
//! default; the check skips with a notice when the modules are missing, and is not required
//! in CI).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use canopy_shaders::{Cpu, import, logits};
use canopy_tests::harness::{Program, binary, run_with_timeout};
use canopy_tests::processes::{
    Coordinator, Volunteer, coordinator_json, export_latest, free_port, small_project,
};
use canopy_text::{Tokenizer, TokenizerKind};

/// Canopy's logits for `text` from an export (its tokenizer, its weights): the expectation
/// the Python check compares `transformers` against.
fn canopy_logits(export: &Path, text: &str) -> serde_json::Value {
    let tokenizer =
        Tokenizer::from_json(&std::fs::read(export.join("tokenizer.json")).expect("tokenizer"))
            .expect("Canopy's layout");
    let ids = tokenizer.encode(text).expect("encode");
    let params = import(export).expect("import");
    let logits = logits(&Cpu::new(), &params, &ids).expect("logits");
    let rows: Vec<&[f32]> = logits.chunks(params.config().vocab).collect();
    serde_json::json!({ "text": text, "ids": ids, "logits": rows })
}

/// Runs the Python check on an export, or says why it cannot.
fn check_in_transformers(export: &Path, text: &str) {
    let python = std::env::var("CANOPY_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_modules = Command::new(&python)
        .args(["-c", "import torch, transformers"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_modules {
        eprintln!(
            "skipping the transformers check of {}: {python} lacks torch and transformers \
             (set CANOPY_PYTHON to an interpreter that has them)",
            export.display()
        );
        return;
    }
    let expected = export.join("canopy_logits.json");
    std::fs::write(&expected, canopy_logits(export, text).to_string()).expect("write");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/check_export.py");
    let mut cmd = Command::new(&python);
    cmd.arg(script).arg(export).arg(&expected);
    let out = run_with_timeout(cmd, Duration::from_secs(600)).expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("transformers check of {}: {stdout}", export.display());
    assert!(
        out.status.success(),
        "the export does not load or agree in transformers: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Checks an export directory's files: weights, config, tokenizer (of `vocab` tokens, which
/// the model's config names too) and a model card.
fn assert_complete_export(export: &Path, vocab: u32) -> String {
    for file in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "README.md",
    ] {
        assert!(export.join(file).exists(), "{file} in {}", export.display());
    }
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(export.join("config.json")).expect("config"))
            .expect("config.json");
    assert_eq!(config["vocab_size"].as_u64(), Some(u64::from(vocab)));
    let tokenizer =
        Tokenizer::from_json(&std::fs::read(export.join("tokenizer.json")).expect("tokenizer"))
            .expect("the exported tokenizer reads back");
    assert_eq!(tokenizer.vocab(), vocab);
    std::fs::read_to_string(export.join("README.md")).expect("model card")
}

/// A project with `tokenizer = "bpe"`: the coordinator trains the tokenizer on the real
/// built-in text, the volunteers train on 16-bit token shards through the swarm, the
/// held-out loss falls (also in bits per byte), the finished run keeps greedy samples, and
/// the export carries the same tokenizer and a model card that says what was trained on
/// what, by whom.
#[test]
fn a_bpe_project_trains_through_the_swarm_and_exports_its_tokenizer() {
    let tmp = tempfile::tempdir().expect("tmp");
    let project = tmp.path().join("project");
    let config = small_project(
        &project,
        free_port(),
        &[("rounds", "3"), ("inner_steps", "12")],
        "[model]\ntokenizer = \"bpe\"\nbpe_vocab = 512\n",
    );
    let mut coordinator = Coordinator::start(&config);
    let _v1 = Volunteer::start(
        &tmp.path().join("v1"),
        &coordinator.addr,
        &["--name", "ada", "--org", "Lab A", "--country", "KE"],
    );
    let _v2 = Volunteer::start(
        &tmp.path().join("v2"),
        &coordinator.addr,
        &["--name", "lin", "--country", "VN"],
    );
    let status = coordinator.wait_exit(Duration::from_secs(600));
    assert!(status.success(), "the coordinator finishes the run");

    // The tokenizer the project trained: BPE of 512 tokens, kept in the project directory.
    let kept = Tokenizer::from_json(&std::fs::read(project.join("tokenizer.json")).expect("kept"))
        .expect("the project's tokenizer reads back");
    assert_eq!(kept.kind(), TokenizerKind::Bpe { vocab: 512 });

    let status = coordinator_json("status", &config);
    let initial = status["initial_eval_loss"].as_f64().expect("initial loss");
    let last = status["rounds"]
        .as_array()
        .expect("rounds")
        .iter()
        .rev()
        .find(|r| !r["closed_ms"].is_null())
        .and_then(|r| r["eval_loss"].as_f64())
        .expect("a closed round");
    assert!(last < initial - 0.5, "held-out loss {initial} -> {last}");
    // Initially about ln 512 nats per token; per byte that is below 8 bits, since a token
    // covers more than one byte.
    let bits = status["eval_bits_per_byte"]
        .as_f64()
        .expect("bits per byte");
    assert!(
        bits > 0.5 && bits < last / std::f64::consts::LN_2,
        "{bits} bits per byte"
    );
    let samples = status["samples"].as_array().expect("samples");
    assert!(samples.len() >= 5, "{samples:?}");
    assert!(
        samples
            .iter()
            .all(|s| s["prompt"].is_string() && s["continuation"].is_string())
    );
    let ledger = coordinator_json("ledger", &config);
    let accepted = ledger
        .as_array()
        .expect("ledger")
        .iter()
        .filter(|e| e["kind"] == "train" && canopy_tests::processes::aggregated_entry(e))
        .count();
    assert!(
        accepted >= 4,
        "volunteers' BPE updates were accepted: {ledger}"
    );

    let export = tmp.path().join("export");
    export_latest(&config, &export);
    let card = assert_complete_export(&export, 512);
    assert_eq!(
        std::fs::read(export.join("tokenizer.json")).expect("exported"),
        std::fs::read(project.join("tokenizer.json")).expect("kept"),
        "the export carries the tokenizer the swarm trained with"
    );
    for part in [
        "byte-level BPE with 512 tokens",
        "udhr-24",
        "- \"sw\"",
        "| Lab A | 1 |",
        "| KE | 1 |",
        "Held-out bits per byte",
        "## Samples",
        "## Limitations",
    ] {
        assert!(card.contains(part), "{part}:\n{card}");
    }
    check_in_transformers(&export, "Everyone has the right to education.");
}

/// A byte-level export (`canopy-node train --export`) loads in `transformers` as well.
#[test]
fn a_byte_level_export_loads_in_transformers() {
    let out_dir = tempfile::tempdir().expect("tmp");
    let bin = binary(Program::Node).expect("binary");
    let mut cmd = Command::new(bin);
    cmd.args([
        "train", "--steps", "20", "--batch", "4", "--seq", "32", "--json", "--export",
    ])
    .arg(out_dir.path())
    .env("CANOPY_ADAPTER", "cpu")
    .env_remove("CANOPY_REQUIRE_ADAPTER");
    let out = run_with_timeout(cmd, Duration::from_secs(300)).expect("train");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_complete_export(out_dir.path(), 260);
    check_in_transformers(out_dir.path(), "Toute personne a droit à l'éducation.");
}

//! Prints the logits Canopy's model computes for a text, as JSON (`text`, `ids`, `logits`),
//! from an export (`canopy-node train --export DIR`, `canopy-coordinator export`): `cargo run
//! --release -p canopy-shaders --example logits -- DIR "some text"`. The text is tokenized
//! with the export's `tokenizer.json`. `tools/check_export.py DIR FILE` compares this with
//! Hugging Face `transformers` on the same weights and text.

use canopy_shaders::{Cpu, import, logits};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: logits DIR TEXT")?;
    let text = args
        .next()
        .unwrap_or_else(|| "Canopy grows open models together.".into());
    let dir = std::path::Path::new(&dir);
    let params = import(dir)?;
    let tokenizer = canopy_text::Tokenizer::from_json(&std::fs::read(dir.join("tokenizer.json"))?)?;
    let ids = tokenizer.encode(&text)?;
    let logits = logits(&Cpu::new(), &params, &ids)?;
    let vocab = params.config().vocab;
    let rows: Vec<&[f32]> = logits.chunks(vocab).collect();
    println!(
        "{}",
        serde_json::json!({ "text": text, "ids": ids, "logits": rows })
    );
    Ok(())
}

//! Prints the logits Canopy's model computes for a text, as JSON, from a model exported with
//! `canopy-node train --export DIR`: `cargo run --release -p canopy-shaders --example logits --
//! DIR "some text"`. Used to check an export against another implementation of BLOOM, such as
//! Hugging Face `transformers`, on the same weights and bytes.

use canopy_shaders::{Cpu, Model, import};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: logits DIR TEXT")?;
    let text = args
        .next()
        .unwrap_or_else(|| "Canopy grows open models together.".into());
    let params = import(std::path::Path::new(&dir))?;
    let cpu = Cpu::new();
    let model = Model::new(&cpu, &params)?;
    let ids: Vec<u32> = text.bytes().map(u32::from).collect();
    let targets = vec![u32::MAX; ids.len()];
    let mut ws = model.workspace(&cpu, 1, ids.len())?;
    model.forward(&cpu, &mut ws, &ids, &targets)?;
    let logits = ws.logits(&cpu)?;
    let vocab = params.config().vocab;
    let rows: Vec<&[f32]> = logits.chunks(vocab).collect();
    println!("{}", serde_json::json!({ "ids": ids, "logits": rows }));
    Ok(())
}

//! Prints what an export (`canopy-node train --export DIR`, `canopy-coordinator export`)
//! writes after a prompt, greedily: `cargo run --release -p canopy-shaders --example generate
//! -- DIR "prompt" [TOKENS] [REPETITION_PENALTY] [NO_REPEAT_NGRAM]` (60 tokens, 1 and 0 by
//! default: plain greedy; the coordinator's samples use 1.3 and 2).

use canopy_shaders::{Cpu, Decoding, greedy, import};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: generate DIR PROMPT [TOKENS] [REPETITION_PENALTY] [NO_REPEAT_NGRAM]";
    let dir = args.next().ok_or(usage)?;
    let prompt = args.next().ok_or(usage)?;
    let tokens: usize = args.next().map_or(Ok(60), |a| a.parse())?;
    let decoding = Decoding {
        repetition_penalty: args.next().map_or(Ok(1.0), |a| a.parse())?,
        no_repeat_ngram: args.next().map_or(Ok(0), |a| a.parse())?,
    };
    let dir = std::path::Path::new(&dir);
    let params = import(dir)?;
    let tokenizer = canopy_text::Tokenizer::from_json(&std::fs::read(dir.join("tokenizer.json"))?)?;
    let ids = tokenizer.encode(&prompt)?;
    let eos = canopy_shaders::tokens::EOS_ID;
    let out = greedy(&Cpu::new(), &params, &ids, tokens, Some(eos), decoding)?;
    println!("{prompt}{}", tokenizer.decode(&out));
    Ok(())
}

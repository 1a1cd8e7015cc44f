//! Writes the fuzz seed corpus to `protocol/fuzz/corpus/<target>/<name>` (or the directory
//! given as the first argument). The protocol tests check the files against
//! `canopy_protocol::fuzz::seeds()`, so run this after changing the wire format.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let root = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus"));
    for seed in canopy_protocol::fuzz::seeds()? {
        let dir = root.join(seed.target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(&seed.name), &seed.data)?;
    }
    println!("seeds written to {}", root.display());
    Ok(())
}

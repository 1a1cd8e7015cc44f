//! `canopy-node info`: the node's identity, data directory, chunk store and GPUs, and which
//! GPUs `join` would use and why.

use std::path::Path;

use anyhow::Context;
use canopy_node::cli::GpuChoice;
use canopy_node::store::ChunkStore;
use canopy_node::{VERSION, gpus, identity, lock};

/// Prints what `info` shows, for people or as JSON.
pub(crate) fn info(dir: &Path, identity: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let key_file = lock::identity_file(dir, identity);
    let (keys, created) = identity::load_or_create_at(&key_file)
        .with_context(|| format!("loading the identity {}", key_file.display()))?;
    let store = ChunkStore::open(dir, u64::MAX).context("opening the chunk store")?;
    let stats = store.stats();
    let gpus: Vec<_> = gpus::hardware_gpus().iter().map(|a| a.get_info()).collect();
    let selection = gpus::select(&gpus, &GpuChoice::Default, |v| std::env::var(v).ok());
    let (chosen, why) = match &selection {
        Ok(Some(s)) => (s.gpus.clone(), s.reason.clone()),
        Ok(None) => (
            Vec::new(),
            "nothing names GPUs: `join` takes CANOPY_ADAPTER's choice (the best GPU, else the CPU path)".into(),
        ),
        Err(e) => (Vec::new(), format!("error: {e}")),
    };
    if json {
        let value = serde_json::json!({
            "peer_id": keys.peer_id().to_string(),
            "public_key": keys.public().to_string(),
            "identity_created": created,
            "data_dir": dir,
            "identity": key_file,
            "version": VERSION,
            "store": { "chunks": stats.chunks, "bytes": stats.bytes },
            "gpus": gpus.iter().enumerate().map(|(i, g)| serde_json::json!({
                "index": i,
                "name": g.name,
                "vendor": g.vendor,
                "backend": g.backend.to_str(),
                "pci_bus_id": g.device_pci_bus_id,
                "driver": g.driver,
                "chosen": chosen.contains(&i),
            })).collect::<Vec<_>>(),
            "gpu_choice": why,
            "gpu_choice_ok": selection.is_ok(),
        });
        println!("{value}");
    } else {
        if created {
            println!("created a new identity");
        }
        println!("peer id     {}", keys.peer_id());
        println!("public key  {}", keys.public());
        println!("data dir    {}", dir.display());
        println!("identity    {}", key_file.display());
        println!("chunks      {} ({} bytes)", stats.chunks, stats.bytes);
        println!("version     {VERSION}");
        println!(
            "gpus        {}",
            if gpus.is_empty() {
                "none found"
            } else {
                "(* = what join uses)"
            }
        );
        for (i, g) in gpus.iter().enumerate() {
            let mark = if chosen.contains(&i) { '*' } else { ' ' };
            println!(
                "  {mark} {i}  {} ({}, {}, PCI {})",
                g.name,
                g.backend.to_str(),
                g.driver,
                g.device_pci_bus_id
            );
        }
        println!("gpu choice  {why} (`join --gpus` overrides)");
    }
    Ok(())
}

//! The project's own commands: `init` a project directory, `allow` a node into a tier, and
//! `export` a checkpoint.

use std::path::Path;

use anyhow::{Context, bail};
use canopy_coordinator::admission;
use canopy_coordinator::config::{Config, FILE_NAME};
use canopy_coordinator::project::{self, DB_FILE};
use canopy_coordinator::state::State;
use canopy_protocol::messages::Tier;

use crate::{open_state, project_dir};

/// `init`: a project directory with a commented `canopy.toml` (owner-only) and the
/// coordinator's key.
pub(crate) fn init(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(FILE_NAME);
    if path.exists() {
        bail!("{} already exists; not overwriting it", path.display());
    }
    // Owner-only: the file is where the dashboard's tokens go.
    canopy_node::identity::write_private(&path, Config::template().as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    let (keys, _) = canopy_node::identity::load_or_create(dir)?;
    println!("created {}", path.display());
    println!("coordinator peer id {}", keys.peer_id());
    println!(
        "next: edit it, then `canopy-coordinator run --config {}`",
        path.display()
    );
    Ok(())
}

/// `allow`: admits nodes (by key, or a file of keys) to a tier, all or none.
pub(crate) fn allow(
    config: &Path,
    peers: &[String],
    file: Option<&Path>,
    tier: Tier,
) -> anyhow::Result<()> {
    // Every id is checked before any is admitted: a typo admits nobody.
    let mut ids = peers
        .iter()
        .map(|p| {
            p.parse::<libp2p::PeerId>()
                .with_context(|| format!("{p:?} is not a peer id (canopy-node info prints it)"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(file) = file {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        ids.extend(
            admission::parse_peer_list(&text).with_context(|| format!("in {}", file.display()))?,
        );
    }
    ids.sort();
    ids.dedup();
    anyhow::ensure!(
        !ids.is_empty(),
        "no peer id given: name them, or pass --file"
    );
    let dir = project_dir(config);
    let mut state = State::open(&dir.join(DB_FILE))?;
    let now = project::now_ms();
    state.transaction(|tx| {
        for id in &ids {
            tx.allow(&id.to_string(), tier, now)?;
        }
        Ok(())
    })?;
    match ids.as_slice() {
        [one] => {
            println!("{one} admitted to the {tier} tier (it takes effect when the node next joins)")
        }
        _ => println!(
            "{} nodes admitted to the {tier} tier (it takes effect when each next joins)",
            ids.len()
        ),
    }
    Ok(())
}

/// `export`: writes a checkpoint as a Hugging Face model directory.
pub(crate) fn export(config_path: &Path, checkpoint: &str, out: &Path) -> anyhow::Result<()> {
    let dir = project_dir(config_path);
    let config = Config::load(config_path)?;
    let state = open_state(config_path)?;
    let round = match checkpoint {
        "latest" => state.read().current_round()?,
        n => {
            let n: u64 = n
                .parse()
                .with_context(|| format!("{n:?} is neither a round number nor `latest`"))?;
            state.read().round(n)?
        }
    }
    .with_context(|| format!("no model version {checkpoint} in this project"))?;
    let store = canopy_node::store::ChunkStore::open(&dir, config.store.cap_mib << 20)?;
    let params = project::load_params(&state, &store, &round.model_root)?;
    canopy_coordinator::export::export_model(&dir, &config, &state, &params, out, Vec::new())
        .with_context(|| format!("exporting to {}", out.display()))?;
    println!(
        "exported the model of round {} to {}",
        round.round,
        out.display()
    );
    Ok(())
}

//! `canopy-coordinator invite …`: invitations for the `invite` admission policy (kept out of
//! `main.rs`). An invitation is a token this coordinator signs; it needs no running
//! coordinator to make, and takes effect as nodes join with it.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use canopy_coordinator::config::{Config, FILE_NAME};
use canopy_coordinator::project::{self, DB_FILE};
use canopy_coordinator::state::State;
use canopy_node::cli::by_name;
use canopy_protocol::messages::Tier;
use canopy_protocol::{Invite, InviteTerms};
use clap::Subcommand;

use crate::project_dir;

/// The invitation commands.
#[derive(Subcommand)]
pub(crate) enum InviteCommand {
    /// Make an invitation token for an organisation's machines; give it to their operators,
    /// who join with `canopy-node join --invite TOKEN` (or CANOPY_INVITE=TOKEN).
    New {
        /// The organisation its nodes are recorded and credited under.
        #[arg(long)]
        org: String,
        /// The tier its nodes join as (datacenter nodes verify volunteers' work).
        #[arg(long, value_parser = by_name::<Tier>(), default_value_t = Tier::Volunteer)]
        tier: Tier,
        /// How many distinct nodes it admits.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// Days until it stops admitting new nodes (nodes it admitted stay admitted).
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// The project's configuration.
        #[arg(long, default_value = FILE_NAME)]
        config: PathBuf,
        /// One JSON object instead of lines for people.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an invitation: it admits no node from now on, and the nodes it admitted get no
    /// more work (works beside a running coordinator).
    Revoke {
        /// The invitation's id (`invite new` prints it).
        id: String,
        /// The project's configuration.
        #[arg(long, default_value = FILE_NAME)]
        config: PathBuf,
    },
}

/// Runs an invitation command.
pub(crate) fn run(command: InviteCommand) -> anyhow::Result<()> {
    match command {
        InviteCommand::New {
            org,
            tier,
            uses,
            days,
            config,
            json,
        } => new(&config, org, tier, uses, days, json),
        InviteCommand::Revoke { id, config } => revoke(&config, &id),
    }
}

fn new(
    config: &Path,
    org: String,
    tier: Tier,
    uses: u32,
    days: u32,
    json: bool,
) -> anyhow::Result<()> {
    let project = Config::load(config)?.project.name;
    let dir = project_dir(config);
    let (keys, _) = canopy_node::identity::load_or_create(&dir)
        .with_context(|| format!("the coordinator's key in {}", dir.display()))?;
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let terms = InviteTerms {
        project,
        organisation: org.trim().to_string(),
        tier,
        expires_at_ms: project::now_ms().saturating_add(u64::from(days) * 86_400_000),
        max_uses: uses,
        id,
    };
    let invite = Invite::issue(&keys, terms)?;
    let token = invite.to_token()?;
    let terms = &invite.terms;
    if json {
        let value = serde_json::json!({
            "id": terms.id_hex(),
            "organisation": terms.organisation,
            "tier": terms.tier.as_str(),
            "uses": terms.max_uses,
            "expires_at_ms": terms.expires_at_ms,
            "token": token,
        });
        println!("{value}");
    } else {
        println!(
            "invitation {} for {} ({} tier, up to {} node(s), for {days} day(s)):",
            terms.id_hex(),
            terms.organisation,
            terms.tier,
            terms.max_uses
        );
        println!("{token}");
        println!("join with: canopy-node join <coordinator address> --invite <the token above>");
    }
    Ok(())
}

fn revoke(config: &Path, id: &str) -> anyhow::Result<()> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{id:?} is not an invitation id (32 hex digits, as `invite new` prints)");
    }
    let id = id.to_ascii_lowercase();
    let mut state = State::open(&project_dir(config).join(DB_FILE))?;
    let admitted = state.transaction(|tx| tx.revoke_invite(&id, project::now_ms()))?;
    println!("invitation {id} revoked; the {admitted} node(s) it admitted get no more work");
    Ok(())
}

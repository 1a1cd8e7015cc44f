//! Messages about nodes: joining, capabilities and heartbeats.

use serde::{Deserialize, Serialize};

use super::{MAX_LABEL, MAX_TEXT, TaskId, check_text};
use crate::error::MessageError;

/// Which trust tier a node runs in. Its name (`volunteer`, `datacenter`) is what the
/// coordinator's configuration, command line, database and API use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// A volunteer desktop: untrusted, verified by redundancy and spot checks.
    Volunteer,
    /// An institution's cluster node, allowlisted by the coordinator: trusted to verify others.
    Datacenter,
}

impl Tier {
    /// Every tier.
    pub const ALL: [Tier; 2] = [Tier::Volunteer, Tier::Datacenter];
    /// Their names, in the same order (for command lines' lists of values).
    pub const NAMES: [&'static str; 2] = ["volunteer", "datacenter"];

    /// The tier's name.
    pub const fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tier name that is neither `volunteer` nor `datacenter`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a tier (volunteer or datacenter)")]
pub struct UnknownTier(pub String);

impl std::str::FromStr for Tier {
    type Err = UnknownTier;

    fn from_str(s: &str) -> Result<Self, UnknownTier> {
        Tier::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownTier(s.to_owned()))
    }
}

/// What kind of compute device a node runs its kernels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AdapterKind {
    /// A discrete GPU.
    DiscreteGpu,
    /// A GPU integrated with the CPU.
    IntegratedGpu,
    /// A software rasteriser (lavapipe, SwiftShader): runs WGSL, slowly.
    Software,
    /// No wgpu adapter: the plain-Rust CPU path.
    Cpu,
}

/// The device a node computes on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdapterInfo {
    /// The adapter's name as the driver reports it.
    pub name: String,
    /// The graphics backend (Vulkan, Metal, DX12) or `cpu`.
    pub backend: String,
    /// What kind of device it is.
    pub kind: AdapterKind,
    /// Memory the node lets Canopy use on it, in bytes.
    pub memory_bytes: u64,
}

/// What a node offers the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// The adapters the node will run workers on (several on a multi-GPU cluster node).
    pub adapters: Vec<AdapterInfo>,
    /// CPU threads the node lets Canopy use.
    pub threads: u32,
    /// The tier the node asks for; the coordinator grants `Datacenter` only to keys it vouches
    /// for (allowlisted, or joining with an invitation to that tier).
    pub tier: Tier,
    /// The Canopy version the node runs.
    pub software_version: String,
}

/// Most adapters one node may declare.
pub const MAX_ADAPTERS: usize = 16;

/// A node's introduction to the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Join {
    /// What the node offers.
    pub capabilities: Capabilities,
    /// A display name the volunteer chose, shown on the dashboard.
    pub display_name: Option<String>,
    /// The volunteer's organisation, self-declared.
    pub organisation: Option<String>,
    /// ISO 3166-1 alpha-2 country code, self-declared.
    pub country: Option<String>,
    /// An invitation token from the project (see [`crate::invite`]): it admits the node
    /// where the project admits invited nodes only, and attests its organisation and tier.
    pub invite: Option<String>,
    /// Proof of work for this identity (see [`crate::join_work`]), where the project asks
    /// for it.
    pub work: Option<u64>,
}

impl Join {
    pub(crate) fn validate(&self) -> Result<(), MessageError> {
        let caps = &self.capabilities;
        super::check_list("capabilities.adapters", &caps.adapters, MAX_ADAPTERS)?;
        for adapter in &caps.adapters {
            check_text("adapter.name", &adapter.name, MAX_TEXT)?;
            check_text("adapter.backend", &adapter.backend, MAX_LABEL)?;
        }
        check_text(
            "capabilities.software_version",
            &caps.software_version,
            MAX_LABEL,
        )?;
        if let Some(name) = &self.display_name {
            check_text("display_name", name, MAX_LABEL)?;
        }
        if let Some(org) = &self.organisation {
            check_text("organisation", org, MAX_LABEL)?;
        }
        if let Some(token) = &self.invite {
            check_text("invite", token, crate::invite::MAX_TOKEN_LEN)?;
        }
        if let Some(country) = &self.country
            && !(country.len() == 2 && country.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return Err(MessageError::Invalid {
                field: "country",
                reason: "must be an ISO 3166-1 alpha-2 code such as FR",
            });
        }
        Ok(())
    }
}

/// The coordinator's answer to a [`Join`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinAck {
    /// Whether the node was admitted.
    pub accepted: bool,
    /// The tier the coordinator granted.
    pub tier: Tier,
    /// The current training round.
    pub round: u64,
    /// A note for the volunteer (why refused, or a welcome).
    pub message: String,
    /// The proof of work the project asks of each new identity, in zero bits (0: none); a
    /// node refused for lack of it finds the work and joins again.
    pub work_bits: u8,
}

impl JoinAck {
    pub(crate) fn validate(&self) -> Result<(), MessageError> {
        check_text("join_ack.message", &self.message, MAX_TEXT)?;
        if self.work_bits > crate::join_work::MAX_JOIN_WORK_BITS {
            return Err(MessageError::Invalid {
                field: "join_ack.work_bits",
                reason: "more proof of work than any project may ask",
            });
        }
        Ok(())
    }
}

/// A node's periodic sign of life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The task being worked on, if any.
    pub current_task: Option<TaskId>,
    /// Progress of that task in `0.0..=1.0`.
    pub progress: f32,
    /// Tasks finished since the node started.
    pub tasks_done: u64,
    /// Whether the volunteer has paused the node.
    pub paused: bool,
}

impl Heartbeat {
    pub(crate) fn validate(&self) -> Result<(), MessageError> {
        if !(0.0..=1.0).contains(&self.progress) {
            return Err(MessageError::Invalid {
                field: "heartbeat.progress",
                reason: "must be between 0 and 1",
            });
        }
        Ok(())
    }
}

/// A node asks the coordinator for its own credit: what the contribution ledger holds for the
/// identity that signed the request (nobody can ask for another's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CreditQuery {}

/// The coordinator's answer to a [`CreditQuery`], signed by its key as every message is: the
/// asking identity's totals in the contribution ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CreditReport {
    /// Whether the coordinator knows this identity at all (it joined once).
    pub known: bool,
    /// Results sent (ledger entries).
    pub results: u64,
    /// Results accepted.
    pub accepted: u64,
    /// Results refused, or found wrong by a re-run.
    pub rejected: u64,
    /// Results a datacenter re-run confirmed.
    pub verified: u64,
    /// Training tokens in accepted results: the credit.
    pub tokens: u64,
    /// Compute time recorded, in milliseconds.
    pub compute_ms: u64,
    /// The round in progress when the coordinator answered.
    pub round: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tier reads back from its name, in text and in JSON; any other name is refused; and
    /// its wire encoding is the variant's index, whatever the names.
    #[test]
    fn tiers_round_trip_by_name() {
        for tier in Tier::ALL {
            assert_eq!(tier.as_str().parse::<Tier>(), Ok(tier));
            assert_eq!(tier.to_string(), tier.as_str());
        }
        assert_eq!("root".parse::<Tier>(), Err(UnknownTier("root".to_owned())));
        let config = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(Tier::Datacenter, config).expect("encode");
        assert_eq!(bytes, [1]);
    }
}

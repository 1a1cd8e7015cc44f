//! `[admission]`: who may join a project, and at what cost.

use serde::{Deserialize, Serialize};

/// Who may join a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdmissionPolicy {
    /// Any key may join as a volunteer.
    #[default]
    Open,
    /// Only keys the operator allowlisted (`canopy-coordinator allow`) may join.
    Allowlist,
    /// Nodes with an invitation token (`canopy-coordinator invite`) and allowlisted keys may
    /// join; the token names the organisation the node is recorded under.
    Invite,
}

/// `[admission]`: who may join.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionConfig {
    /// `open`, `invite` or `allowlist`.
    pub policy: AdmissionPolicy,
    /// Most new identities admitted from one network (an IPv4 /24, an IPv6 /48) per hour
    /// without an invitation or the allowlist; 0: no limit.
    pub new_nodes_per_network_hour: u32,
    /// Proof of work asked of each new identity without an invitation or the allowlist, in
    /// zero bits of a hash (about 2^bits hashes; each bit doubles the work); 0: none.
    pub join_work_bits: u8,
    /// The oldest `canopy-node` version admitted, such as `0.2.0`; older nodes are told to
    /// upgrade. `""`: any version.
    pub min_node_version: String,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            policy: AdmissionPolicy::Open,
            new_nodes_per_network_hour: 16,
            join_work_bits: 0,
            min_node_version: String::new(),
        }
    }
}

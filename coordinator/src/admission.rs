//! Who may join, and as what: the coordinator's answer to a [`Join`] under the project's
//! admission policy (`open`, `invite`, `allowlist`). An invitation token (see
//! [`canopy_protocol::invite`]) admits a node where the policy asks for one and attests its
//! organisation and tier; a claim in the join message attests nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use canopy_protocol::messages::{Join, JoinAck, Tier};
use canopy_protocol::{Invite, InviteTerms, PeerId, PublicKey, join_work};
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

use crate::config::{AdmissionPolicy, Config};
use crate::service::Caller;
use crate::state::{PeerRecord, Redeemed, State, StateError};

/// How long the join rate limit looks back.
const JOIN_WINDOW_MS: u64 = 3_600_000;

/// The network a node's address belongs to, as the coordinator groups nodes: an IPv4 /24 or
/// an IPv6 /48 (one household, office or small allocation), or on loopback each address by
/// itself (nodes on the coordinator's own machine: the local demo and tests). `None` where
/// the address does not show the node's network: through a relay, a DNS name, no IP.
pub fn network_of(addr: &Multiaddr) -> Option<String> {
    if addr.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
        return None;
    }
    let ip = addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })?;
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    Some(match ip {
        IpAddr::V4(v4) if v4.is_loopback() => format!("{v4}/32"),
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{}/24", Ipv4Addr::new(a, b, c, 0))
        }
        IpAddr::V6(v6) if v6.is_loopback() => format!("{v6}/128"),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{}/48", Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0))
        }
    })
}

/// A line of a peer list that is not a peer id.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {text:?} is not a peer id")]
pub struct PeerListError {
    /// The line, from 1.
    pub line: usize,
    /// What it holds.
    pub text: String,
}

/// The peer ids of a list an operator wrote (one per line; blank lines and `#` comments
/// are skipped), or the first line that is not one.
pub fn parse_peer_list(text: &str) -> Result<Vec<PeerId>, PeerListError> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.split('#').next().unwrap_or("").trim()))
        .filter(|(_, line)| !line.is_empty())
        .map(|(line, text)| {
            text.parse().map_err(|_| PeerListError {
                line,
                text: text.chars().take(80).collect(),
            })
        })
        .collect()
}

/// The answer to a join, and the tier granted if the node was admitted.
pub struct Admission {
    /// What to send back.
    pub ack: JoinAck,
    /// The tier the node runs in now, if admitted (and not banned).
    pub joined: Option<Tier>,
}

fn refused(round: u64, message: String) -> Admission {
    Admission {
        ack: JoinAck {
            accepted: false,
            tier: Tier::Volunteer,
            round,
            message,
            work_bits: 0,
        },
        joined: None,
    }
}

/// Whether `join` carries the proof of work the project asks of `key` (a node whose key is
/// not a peer id never does).
fn work_done(issuer: &PublicKey, key: &str, join: &Join, bits: u8) -> bool {
    let Ok(node) = key.parse::<PeerId>() else {
        return false;
    };
    join.work
        .is_some_and(|nonce| join_work::meets(&issuer.peer_id(), &node, nonce, bits))
}

/// Checks `token` against this coordinator (`issuer`) and project: the terms, or why not.
fn check_invite(
    token: &str,
    issuer: &PublicKey,
    project: &str,
    now_ms: u64,
) -> Result<InviteTerms, String> {
    let invite = Invite::from_token(token).map_err(|e| e.to_string())?;
    invite
        .verify(issuer, project, now_ms)
        .cloned()
        .map_err(|e| e.to_string())
}

/// A version's numbers, `major.minor.patch` (missing parts are 0; a leading `v`, and a
/// pre-release or build suffix after `-` or `+`, are ignored); `None` when it is not one.
pub fn parse_version(text: &str) -> Option<[u64; 3]> {
    let text = text.trim().trim_start_matches('v');
    let core = text.split(['-', '+']).next()?;
    let mut out = [0u64; 3];
    let mut parts = 0;
    for (slot, part) in out.iter_mut().zip(core.split('.')) {
        *slot = part.parse().ok()?;
        parts += 1;
    }
    (parts >= 1 && core.split('.').count() <= 3).then_some(out)
}

/// Why a node's version is not admitted under `min` (empty: any), or `None`.
fn too_old(min: &str, version: &str, project: &str) -> Option<String> {
    let least = parse_version(min)?;
    if parse_version(version).is_some_and(|v| v >= least) {
        return None;
    }
    Some(format!(
        "project {project} needs canopy-node {min} or newer, and this node runs {version}: \
         upgrade canopy-node (a newer release, or a build of a newer source tree), then join again"
    ))
}

/// Answers `join` from `caller`. A refused node leaves nothing in the state; an admitted one
/// is recorded (or updated) with its network and the organisation its invitation names,
/// else the one it declared.
pub fn admit(
    state: &mut State,
    config: &Config,
    issuer: &PublicKey,
    caller: Caller<'_>,
    round: u64,
    now_ms: u64,
    join: Join,
) -> Result<Admission, StateError> {
    let key = caller.key;
    let project = &config.project.name;
    if let Some(why) = too_old(
        &config.admission.min_node_version,
        &join.capabilities.software_version,
        project,
    ) {
        tracing::info!(peer = %key, version = %join.capabilities.software_version, "join refused: too old");
        return Ok(refused(round, why));
    }
    let terms = match &join.invite {
        Some(token) => match check_invite(token, issuer, project, now_ms) {
            Ok(terms) => Some(terms),
            Err(why) => {
                tracing::info!(peer = %key, "join refused: {why}");
                return Ok(refused(
                    round,
                    format!("{why}; ask the operator of project {project} for a new invitation"),
                ));
            }
        },
        None => None,
    };
    let allowed = state.read().allowlisted(key)?;
    let known = state.read().peer(key)?;
    // A node that joined with an invitation before needs no token to join again.
    let earlier = match &terms {
        Some(_) => None,
        None => state.read().peer_invite(key)?,
    };
    if let Some(id) = &earlier
        && state.read().invite_revoked(id)?
    {
        tracing::info!(peer = %key, "join refused: its invitation was revoked");
        return Ok(refused(
            round,
            format!("this node's invitation was revoked by the operator of project {project}"),
        ));
    }
    let invited = terms.is_some() || earlier.is_some();
    match config.admission.policy {
        AdmissionPolicy::Allowlist if allowed.is_none() => {
            tracing::info!(peer = %key, "join refused: not on the allowlist");
            return Ok(refused(
                round,
                format!(
                    "project {project} admits allowlisted nodes only: ask its operator to run \
                     `canopy-coordinator allow {key}`"
                ),
            ));
        }
        AdmissionPolicy::Invite if allowed.is_none() && !invited => {
            tracing::info!(peer = %key, "join refused: no invitation");
            return Ok(refused(
                round,
                format!(
                    "project {project} admits invited nodes only: ask its operator for an \
                     invitation and join with --invite TOKEN"
                ),
            ));
        }
        _ => {}
    }
    // Each new identity pays for itself, unless the operator vouched for it.
    let bits = config.admission.join_work_bits;
    if bits > 0 && allowed.is_none() && !invited && !work_done(issuer, key, &join, bits) {
        tracing::info!(peer = %key, bits, "join refused: no proof of work");
        let mut answer = refused(
            round,
            format!(
                "project {project} asks each new node for a proof of work ({bits} bits); \
                 this node finds it and joins again"
            ),
        );
        answer.ack.work_bits = bits;
        return Ok(answer);
    }
    let limit = config.admission.new_nodes_per_network_hour;
    if limit > 0
        && known.is_none()
        && allowed.is_none()
        && !invited
        && let Some(network) = caller.network
        && state
            .read()
            .peers_joined_from(network, now_ms.saturating_sub(JOIN_WINDOW_MS))?
            >= u64::from(limit)
    {
        tracing::info!(peer = %key, network, "join refused: too many new nodes from its network");
        return Ok(refused(
            round,
            format!(
                "{limit} new nodes joined project {project} from your network ({network}) in \
                 the last hour; try again later, or ask its operator for an invitation"
            ),
        ));
    }
    // A datacenter node is one the operator vouched for: by the allowlist or an invitation.
    let earlier_record = known.as_ref().filter(|_| earlier.is_some());
    let vouched = allowed == Some(Tier::Datacenter)
        || terms.as_ref().is_some_and(|t| t.tier == Tier::Datacenter)
        || earlier_record.is_some_and(|p| p.tier == Tier::Datacenter);
    let tier = if join.capabilities.tier == Tier::Datacenter && vouched {
        Tier::Datacenter
    } else {
        Tier::Volunteer
    };
    let record = PeerRecord {
        peer: key.to_string(),
        tier,
        name: join.display_name.clone(),
        org: match (&terms, earlier_record) {
            (Some(t), _) => Some(t.organisation.clone()),
            (None, Some(p)) => p.org.clone(),
            (None, None) => join.organisation.clone(),
        },
        country: join.country.clone(),
        reputation: config.reputation.start,
        banned: false,
        tokens_per_sec: None,
        slots: (join.capabilities.adapters.len() as u32).clamp(1, 16),
        joined_ms: now_ms,
        last_seen_ms: now_ms,
    };
    let adapter = join
        .capabilities
        .adapters
        .iter()
        .map(|a| format!("{} ({})", a.name, a.backend))
        .collect::<Vec<_>>()
        .join(", ");
    let redeemed = state.transaction(|tx| {
        if let Some(t) = &terms {
            let redeemed = tx.redeem_invite(&t.id_hex(), key, t.max_uses, now_ms)?;
            if redeemed != Redeemed::Admitted {
                return Ok(redeemed);
            }
        }
        tx.upsert_peer(&record)?;
        tx.set_peer_adapter(key, &adapter)?;
        if let Some(network) = caller.network {
            tx.set_peer_network(key, network)?;
        }
        if let Some(t) = &terms {
            tx.set_peer_invite(key, &t.id_hex())?;
        }
        Ok(Redeemed::Admitted)
    })?;
    match (redeemed, &terms) {
        (Redeemed::Admitted, _) | (_, None) => {}
        (Redeemed::UsedUp, Some(t)) => {
            tracing::info!(peer = %key, "join refused: invitation used up");
            return Ok(refused(
                round,
                format!(
                    "this invitation has admitted its {} node(s) already; ask the operator of \
                     project {project} for another",
                    t.max_uses
                ),
            ));
        }
        (Redeemed::Revoked, Some(_)) => {
            tracing::info!(peer = %key, "join refused: invitation revoked");
            return Ok(refused(
                round,
                format!("this invitation was revoked by the operator of project {project}"),
            ));
        }
    }
    let banned = state.read().peer(key)?.is_some_and(|p| p.banned);
    let note = match (join.capabilities.tier == Tier::Datacenter, tier) {
        (true, Tier::Volunteer) => {
            "admitted as a volunteer: neither the allowlist nor an invitation \
                              vouches for this key as a datacenter node"
                .to_string()
        }
        _ => match &terms {
            Some(t) => format!("welcome, {}", t.organisation),
            None => "welcome".to_string(),
        },
    };
    Ok(Admission {
        ack: JoinAck {
            accepted: !banned,
            tier,
            round,
            message: if banned {
                "this node is banned after failed verifications".into()
            } else {
                format!("{note}; project {project}")
            },
            work_bits: 0,
        },
        joined: (!banned).then_some(tier),
    })
}

#[cfg(test)]
mod tests {
    use canopy_protocol::Keypair;
    use canopy_protocol::messages::Capabilities;

    use super::*;

    struct Desk {
        _dir: tempfile::TempDir,
        state: State,
        config: Config,
        keys: Keypair,
    }

    fn desk(policy: AdmissionPolicy) -> Desk {
        let dir = tempfile::tempdir().expect("dir");
        let state = State::open(&dir.path().join("state.db")).expect("state");
        let mut config = Config::from_toml(&Config::template(), "template").expect("config");
        config.admission.policy = policy;
        Desk {
            _dir: dir,
            state,
            config,
            keys: Keypair::generate().expect("keys"),
        }
    }

    fn join(tier: Tier, org: Option<&str>, invite: Option<String>) -> Join {
        Join {
            capabilities: Capabilities {
                adapters: Vec::new(),
                threads: 1,
                tier,
                software_version: "test".into(),
            },
            display_name: None,
            organisation: org.map(str::to_string),
            country: None,
            invite,
            work: None,
        }
    }

    impl Desk {
        fn token(&self, org: &str, tier: Tier, uses: u32) -> String {
            let terms = InviteTerms {
                project: self.config.project.name.clone(),
                organisation: org.into(),
                tier,
                expires_at_ms: 10_000,
                max_uses: uses,
                id: [org.len() as u8; 16],
            };
            Invite::issue(&self.keys, terms)
                .and_then(|i| i.to_token())
                .expect("token")
        }

        fn admit(&mut self, key: &str, join: Join) -> Admission {
            self.admit_from(key, None, join)
        }

        fn admit_from(&mut self, key: &str, network: Option<&str>, join: Join) -> Admission {
            let issuer = self.keys.public();
            let caller = Caller { key, network };
            admit(
                &mut self.state,
                &self.config,
                &issuer,
                caller,
                0,
                1_000,
                join,
            )
            .expect("admit")
        }

        fn org(&self, key: &str) -> Option<String> {
            self.state
                .read()
                .peer(key)
                .expect("peer")
                .and_then(|p| p.org)
        }
    }

    #[test]
    fn nodes_older_than_the_minimum_are_told_to_upgrade_and_leave_no_record() {
        assert_eq!(parse_version("0.2.0"), Some([0, 2, 0]));
        assert_eq!(parse_version("v1.10"), Some([1, 10, 0]));
        assert_eq!(parse_version("0.3.1-rc.1+abc"), Some([0, 3, 1]));
        for bad in ["", "test", "1.2.3.4", "1..2", "one.two"] {
            assert_eq!(parse_version(bad), None, "{bad:?}");
        }
        let mut d = desk(AdmissionPolicy::Open);
        d.config.admission.min_node_version = "0.10.0".into();
        let with = |v: &str| {
            let mut j = join(Tier::Volunteer, None, None);
            j.capabilities.software_version = v.into();
            j
        };
        for old in ["0.9.7", "0.1.0", "a fork of mine"] {
            let a = d.admit("old", with(old));
            assert!(!a.ack.accepted, "{old}");
            assert!(
                a.ack.message.contains("needs canopy-node 0.10.0 or newer")
                    && a.ack.message.contains(&format!("runs {old}"))
                    && a.ack.message.contains("upgrade"),
                "{}",
                a.ack.message
            );
            assert!(d.state.read().peer("old").expect("peer").is_none());
        }
        for new in ["0.10.0", "0.10.1-beta", "1.0.0"] {
            assert!(d.admit(new, with(new)).ack.accepted, "{new}");
        }
        d.config.admission.min_node_version = String::new();
        assert!(d.admit("any", with("test")).ack.accepted);
    }

    #[test]
    fn open_admission_records_claims_but_an_invitation_attests_organisation_and_tier() {
        let mut d = desk(AdmissionPolicy::Open);
        let a = d.admit("claimer", join(Tier::Datacenter, Some("CERN"), None));
        assert!(a.ack.accepted);
        assert_eq!(
            a.joined,
            Some(Tier::Volunteer),
            "a claim vouches for nothing"
        );
        assert_eq!(d.org("claimer").as_deref(), Some("CERN"));
        let token = d.token("GENCI", Tier::Datacenter, 4);
        let a = d.admit("invited", join(Tier::Datacenter, Some("CERN"), Some(token)));
        assert!(a.ack.accepted, "{}", a.ack.message);
        assert_eq!(a.joined, Some(Tier::Datacenter));
        assert_eq!(d.org("invited").as_deref(), Some("GENCI"));
        // A bad token is an error to report, not a claim to ignore.
        let a = d.admit(
            "typo",
            join(Tier::Volunteer, None, Some("canopy-invite-zz".into())),
        );
        assert!(!a.ack.accepted && a.ack.message.contains("not a Canopy invitation"));
        assert!(d.state.read().peer("typo").expect("peer").is_none());
    }

    #[test]
    fn a_peer_list_skips_comments_and_names_its_first_bad_line() {
        let (a, b) = (
            Keypair::generate().expect("keys").peer_id(),
            Keypair::generate().expect("keys").peer_id(),
        );
        let text = format!("# cluster nodes\n{a}\n\n  {b}  # rack 2\n");
        assert_eq!(parse_peer_list(&text).expect("list"), [a, b]);
        let err = parse_peer_list(&format!("{a}\nnode-17\n")).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(
            err.to_string().contains("\"node-17\" is not a peer id"),
            "{err}"
        );
        assert!(parse_peer_list("").expect("empty").is_empty());
    }

    #[test]
    fn networks_group_addresses_as_households_and_offices() {
        let net = |a: &str| network_of(&a.parse().expect("addr"));
        assert_eq!(
            net("/ip4/203.0.113.77/tcp/4001").as_deref(),
            Some("203.0.113.0/24")
        );
        assert_eq!(
            net("/ip4/203.0.113.5/udp/9/quic-v1"),
            net("/ip4/203.0.113.200/tcp/1")
        );
        assert_ne!(net("/ip4/203.0.113.5/tcp/1"), net("/ip4/203.0.114.5/tcp/1"));
        assert_eq!(
            net("/ip6/2001:db8:aa:1::5/tcp/1").as_deref(),
            Some("2001:db8:aa::/48")
        );
        assert_eq!(
            net("/ip6/::ffff:198.51.100.9/tcp/1").as_deref(),
            Some("198.51.100.0/24")
        );
        // The coordinator's own machine: each loopback address is its own network.
        assert_eq!(net("/ip4/127.0.0.2/tcp/1").as_deref(), Some("127.0.0.2/32"));
        assert_ne!(net("/ip4/127.0.0.1/tcp/1"), net("/ip4/127.0.0.2/tcp/1"));
        // Addresses that do not show the node's network.
        assert_eq!(net("/ip4/198.51.100.1/tcp/4001/p2p-circuit"), None);
        assert_eq!(net("/dns4/example.org/tcp/1"), None);
    }

    #[test]
    fn open_admission_limits_new_identities_per_network_but_not_returning_or_invited_nodes() {
        let mut d = desk(AdmissionPolicy::Open);
        d.config.admission.new_nodes_per_network_hour = 3;
        let home = Some("203.0.113.0/24");
        for i in 0..3 {
            let a = d.admit_from(
                &format!("sybil-{i}"),
                home,
                join(Tier::Volunteer, None, None),
            );
            assert!(a.ack.accepted, "{}", a.ack.message);
        }
        let a = d.admit_from("sybil-3", home, join(Tier::Volunteer, None, None));
        assert!(
            !a.ack.accepted && a.ack.message.contains("in the last hour; try again later"),
            "{}",
            a.ack.message
        );
        assert!(d.state.read().peer("sybil-3").expect("peer").is_none());
        // Another network, a node that joined before, an invited node: all admitted.
        let other = Some("198.51.100.0/24");
        assert!(
            d.admit_from("elsewhere", other, join(Tier::Volunteer, None, None))
                .ack
                .accepted
        );
        assert!(
            d.admit_from("sybil-0", home, join(Tier::Volunteer, None, None))
                .ack
                .accepted
        );
        let token = d.token("Lab", Tier::Volunteer, 5);
        let a = d.admit_from("lab-1", home, join(Tier::Volunteer, None, Some(token)));
        assert!(a.ack.accepted, "{}", a.ack.message);
        // An hour later the network may bring new nodes again.
        let issuer = d.keys.public();
        let caller = Caller {
            key: "sybil-4",
            network: home,
        };
        let later = admit(
            &mut d.state,
            &d.config,
            &issuer,
            caller,
            0,
            1_000 + JOIN_WINDOW_MS + 1,
            join(Tier::Volunteer, None, None),
        )
        .expect("admit");
        assert!(later.ack.accepted, "{}", later.ack.message);
    }

    #[test]
    fn join_work_is_asked_of_new_identities_and_checked_against_their_key() {
        let mut d = desk(AdmissionPolicy::Open);
        d.config.admission.join_work_bits = 8;
        let node = Keypair::generate().expect("keys").peer_id();
        let key = node.to_string();
        let coordinator = d.keys.public().peer_id();
        // Without work: refused, told how much, nothing recorded.
        let a = d.admit(&key, join(Tier::Volunteer, None, None));
        assert!(!a.ack.accepted);
        assert_eq!(a.ack.work_bits, 8);
        assert!(
            a.ack.message.contains("proof of work (8 bits)"),
            "{}",
            a.ack.message
        );
        assert!(d.state.read().peer(&key).expect("peer").is_none());
        // Work done for another identity or another coordinator is no work for this one.
        let other = Keypair::generate().expect("keys").peer_id();
        let elsewhere = Keypair::generate().expect("keys").peer_id();
        let wrong = [
            join_work::solve(&coordinator, &other, 8),
            join_work::solve(&elsewhere, &node, 8),
        ];
        for nonce in wrong.into_iter().flatten() {
            if join_work::meets(&coordinator, &node, nonce, 8) {
                continue; // 1 in 256: by chance also this identity's work
            }
            let a = d.admit(
                &key,
                Join {
                    work: Some(nonce),
                    ..join(Tier::Volunteer, None, None)
                },
            );
            assert!(!a.ack.accepted && a.ack.work_bits == 8, "{}", a.ack.message);
        }
        // With its own work: admitted, and (keeping the nonce) it rejoins.
        let nonce = join_work::solve(&coordinator, &node, 8);
        for _ in 0..2 {
            let a = d.admit(
                &key,
                Join {
                    work: nonce,
                    ..join(Tier::Volunteer, None, None)
                },
            );
            assert!(a.ack.accepted, "{}", a.ack.message);
            assert_eq!(a.ack.work_bits, 0);
        }
        // An invited node and an allowlisted one were vouched for: no work.
        let token = d.token("Lab", Tier::Volunteer, 1);
        let a = d.admit("invited", join(Tier::Volunteer, None, Some(token)));
        assert!(a.ack.accepted, "{}", a.ack.message);
        d.state
            .transaction(|tx| tx.allow("listed", Tier::Volunteer, 1))
            .expect("allow");
        let a = d.admit("listed", join(Tier::Volunteer, None, None));
        assert!(a.ack.accepted, "{}", a.ack.message);
    }

    #[test]
    fn invite_admission_counts_uses_remembers_its_nodes_and_honours_revocation() {
        let mut d = desk(AdmissionPolicy::Invite);
        let a = d.admit("stranger", join(Tier::Volunteer, Some("GENCI"), None));
        assert!(!a.ack.accepted && a.ack.message.contains("invited nodes only"));
        assert!(d.state.read().peer("stranger").expect("peer").is_none());

        let token = d.token("Inria", Tier::Volunteer, 1);
        let a = d.admit("first", join(Tier::Volunteer, None, Some(token.clone())));
        assert!(a.ack.accepted, "{}", a.ack.message);
        let a = d.admit("second", join(Tier::Volunteer, None, Some(token.clone())));
        assert!(!a.ack.accepted && a.ack.message.contains("already"));
        // The node it admitted joins again, with or without it, under the attested name.
        let a = d.admit("first", join(Tier::Volunteer, Some("Claimed"), None));
        assert!(a.ack.accepted, "{}", a.ack.message);
        assert_eq!(d.org("first").as_deref(), Some("Inria"));
        let a = d.admit("first", join(Tier::Volunteer, None, Some(token.clone())));
        assert!(a.ack.accepted, "{}", a.ack.message);

        let id = Invite::from_token(&token).expect("token").terms.id_hex();
        d.state
            .transaction(|tx| tx.revoke_invite(&id, 2_000))
            .expect("revoke");
        assert!(
            d.state
                .read()
                .peer("first")
                .expect("peer")
                .expect("known")
                .banned
        );
        for invite in [None, Some(token)] {
            let a = d.admit("first", join(Tier::Volunteer, None, invite));
            assert!(
                !a.ack.accepted && a.ack.message.contains("revoked"),
                "{}",
                a.ack.message
            );
        }
    }
}

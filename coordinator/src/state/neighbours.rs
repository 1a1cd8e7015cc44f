//! Volunteers that must not check each other's work: those joining from the same network (see
//! [`crate::admission::network_of`]) or invited under the same organisation. Two identities
//! on one machine or one home network are, for the corpus build's agreement, one.

use std::collections::HashSet;

use rusqlite::{OptionalExtension, params};

use super::{CORPUS_ROUND, Result, Tx};

/// The SQL condition that peer row `p` is a volunteer neighbour of the asking peer (`?2`),
/// whose network is `?3` and whose attested organisation is `?4`.
/// `IS` rather than `=`, so that a peer whose network is not known (NULL) is no neighbour
/// instead of an unknown.
const NEIGHBOUR: &str = "p.peer != ?2 AND p.tier = 'volunteer'
    AND ((?3 IS NOT NULL AND p.net IS ?3)
         OR (?4 IS NOT NULL AND p.invite IS NOT NULL AND p.org IS ?4))";

/// What a volunteer's neighbours did in a corpus build.
#[derive(Debug, Default)]
pub struct Nearby {
    /// Chunks (hex roots) a neighbour returned a result for.
    pub ran: HashSet<String>,
    /// Tasks a neighbour holds an active lease on.
    pub holding: Vec<u64>,
    /// Whether a volunteer that is not a neighbour (nor the peer itself) was heard from
    /// since the time asked about: some other network could take the work.
    pub others_active: bool,
}

impl Tx<'_> {
    /// What the neighbours of volunteer `peer` did in corpus build `build`, and whether a
    /// volunteer of another network was active at or after `since_ms`.
    pub fn corpus_nearby(&self, build: u64, peer: &str, since_ms: u64) -> Result<Nearby> {
        let me: Option<(Option<String>, Option<String>)> = self
            .tx
            .query_row(
                "SELECT net, CASE WHEN invite IS NOT NULL THEN org END FROM peers WHERE peer = ?1",
                [peer],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((net, org)) = me else {
            return Ok(Nearby::default());
        };
        if net.is_none() && org.is_none() {
            return Ok(Nearby::default());
        }
        let mut ran = HashSet::new();
        let mut stmt = self.tx.prepare_cached(&format!(
            "SELECT DISTINCT cr.chunk FROM corpus_results cr JOIN peers p ON p.peer = cr.peer
             WHERE cr.build = ?1 AND {NEIGHBOUR}"
        ))?;
        for chunk in stmt.query_map(params![build as i64, peer, net, org], |r| r.get(0))? {
            ran.insert(chunk?);
        }
        let mut stmt = self.tx.prepare_cached(&format!(
            "SELECT l.task FROM leases l JOIN tasks t ON t.id = l.task JOIN peers p ON p.peer = l.peer
             WHERE l.status = 'active' AND t.round = ?1 AND {NEIGHBOUR}"
        ))?;
        let holding = stmt
            .query_map(params![CORPUS_ROUND as i64, peer, net, org], |r| {
                r.get::<_, i64>(0)
            })?
            .map(|t| Ok(t?.max(0) as u64))
            .collect::<Result<Vec<u64>>>()?;
        let others_active: bool = self.tx.query_row(
            &format!(
                "SELECT EXISTS(SELECT 1 FROM peers p WHERE p.banned = 0 AND p.tier = 'volunteer'
                   AND p.last_seen_ms >= ?1 AND p.peer != ?2 AND NOT ({NEIGHBOUR}))"
            ),
            params![since_ms as i64, peer, net, org],
            |r| r.get(0),
        )?;
        Ok(Nearby {
            ran,
            holding,
            others_active,
        })
    }
}

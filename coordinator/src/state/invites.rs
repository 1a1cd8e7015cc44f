//! What admission keeps: which nodes each invitation admitted (so it admits no more than it
//! says), which invitations the operator revoked, the invitation each peer joined with (its
//! organisation is then attested by the coordinator), and the network each peer joins from.

use rusqlite::{OptionalExtension, params};

use super::{Reader, Result, Tx};

/// Schema version 3: invitations' uses and revocations, each peer's invitation and network.
pub(super) const MIGRATION_3: &str = "
ALTER TABLE peers ADD COLUMN invite TEXT;
ALTER TABLE peers ADD COLUMN net TEXT;
CREATE INDEX IF NOT EXISTS peers_net ON peers(net, joined_ms);
CREATE TABLE IF NOT EXISTS invite_uses (
    invite TEXT NOT NULL, peer TEXT NOT NULL, used_ms INTEGER NOT NULL,
    PRIMARY KEY (invite, peer));
CREATE TABLE IF NOT EXISTS invites_revoked (invite TEXT PRIMARY KEY, revoked_ms INTEGER NOT NULL);";

/// How an invitation's use by a node went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redeemed {
    /// The node is admitted by it (again, if it used it before).
    Admitted,
    /// It admitted as many other nodes as it allows.
    UsedUp,
    /// The operator revoked it.
    Revoked,
}

impl Reader<'_> {
    /// The invitation `peer` joined with, if any.
    pub fn peer_invite(&self, peer: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT invite FROM peers WHERE peer = ?1", [peer], |r| {
                r.get::<_, Option<String>>(0)
            })
            .optional()?
            .flatten())
    }

    /// Whether the operator revoked invitation `invite`.
    pub fn invite_revoked(&self, invite: &str) -> Result<bool> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM invites_revoked WHERE invite = ?1",
                [invite],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// How many peers first joined from `network` at or after `since_ms`.
    pub fn peers_joined_from(&self, network: &str, since_ms: u64) -> Result<u64> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM peers WHERE net = ?1 AND joined_ms >= ?2",
            params![network, since_ms as i64],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }

    /// How many nodes invitation `invite` admitted.
    pub fn invite_uses(&self, invite: &str) -> Result<u64> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM invite_uses WHERE invite = ?1",
            [invite],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }
}

impl Tx<'_> {
    /// Admits `peer` by invitation `invite` (which allows `max_uses` nodes) if it is neither
    /// revoked nor used up; a node that used it before is admitted again without a new use.
    pub fn redeem_invite(
        &self,
        invite: &str,
        peer: &str,
        max_uses: u32,
        now_ms: u64,
    ) -> Result<Redeemed> {
        let revoked: Option<i64> = self
            .tx
            .query_row(
                "SELECT revoked_ms FROM invites_revoked WHERE invite = ?1",
                [invite],
                |r| r.get(0),
            )
            .optional()?;
        if revoked.is_some() {
            return Ok(Redeemed::Revoked);
        }
        let (uses, mine): (i64, i64) = self.tx.query_row(
            "SELECT COUNT(*), COALESCE(SUM(peer = ?2), 0) FROM invite_uses WHERE invite = ?1",
            params![invite, peer],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if mine > 0 {
            return Ok(Redeemed::Admitted);
        }
        if uses >= i64::from(max_uses) {
            return Ok(Redeemed::UsedUp);
        }
        self.tx.execute(
            "INSERT INTO invite_uses(invite, peer, used_ms) VALUES (?1, ?2, ?3)",
            params![invite, peer, now_ms as i64],
        )?;
        Ok(Redeemed::Admitted)
    }

    /// Records the network `peer` joins from.
    pub fn set_peer_network(&self, peer: &str, network: &str) -> Result<()> {
        self.tx.execute(
            "UPDATE peers SET net = ?2 WHERE peer = ?1",
            params![peer, network],
        )?;
        Ok(())
    }

    /// Records the invitation `peer` joined with.
    pub fn set_peer_invite(&self, peer: &str, invite: &str) -> Result<()> {
        self.tx.execute(
            "UPDATE peers SET invite = ?2 WHERE peer = ?1",
            params![peer, invite],
        )?;
        Ok(())
    }

    /// Revokes invitation `invite`: it admits no node from now on, and the nodes that joined
    /// with it are banned (no more leases; refused when they join again). Returns how many
    /// nodes it had admitted.
    pub fn revoke_invite(&self, invite: &str, now_ms: u64) -> Result<u64> {
        self.tx.execute(
            "INSERT INTO invites_revoked(invite, revoked_ms) VALUES (?1, ?2)
             ON CONFLICT(invite) DO NOTHING",
            params![invite, now_ms as i64],
        )?;
        self.tx
            .execute("UPDATE peers SET banned = 1 WHERE invite = ?1", [invite])?;
        let n: i64 = self.tx.query_row(
            "SELECT COUNT(*) FROM invite_uses WHERE invite = ?1",
            [invite],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::State;

    #[test]
    fn an_invitation_admits_its_count_of_nodes_each_again_and_none_once_revoked() {
        let dir = tempfile::tempdir().expect("dir");
        let mut state = State::open(&dir.path().join("state.db")).expect("state");
        let redeem = |state: &mut State, peer: &str| {
            state
                .transaction(|tx| tx.redeem_invite("inv", peer, 2, 5))
                .expect("redeem")
        };
        assert_eq!(redeem(&mut state, "a"), Redeemed::Admitted);
        assert_eq!(redeem(&mut state, "b"), Redeemed::Admitted);
        assert_eq!(redeem(&mut state, "c"), Redeemed::UsedUp);
        assert_eq!(redeem(&mut state, "a"), Redeemed::Admitted);
        assert_eq!(state.read().invite_uses("inv").expect("uses"), 2);
        let admitted = state
            .transaction(|tx| tx.revoke_invite("inv", 9))
            .expect("revoke");
        assert_eq!(admitted, 2);
        assert_eq!(redeem(&mut state, "a"), Redeemed::Revoked);
        // Reopened, the state keeps all of it.
        drop(state);
        let mut state = State::open(&dir.path().join("state.db")).expect("state");
        assert_eq!(redeem(&mut state, "b"), Redeemed::Revoked);
    }
}

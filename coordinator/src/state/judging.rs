//! What the judging of updates keeps: each peer's standing (its loss score and strikes, see
//! [`crate::judge`]), kept with the peer so it survives a restart, and the settling of
//! updates still waiting for their re-run when a round closes.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::status::{LedgerVerdict, ResultStatus};
use super::{Reader, Result, Tx};
use crate::judge::PeerQuality;

/// Schema version 2: the peers' loss scores and strikes, and each result's measured change
/// of held-out loss.
pub(super) const MIGRATION_2: &str = "
ALTER TABLE peers ADD COLUMN loss_score REAL NOT NULL DEFAULT 0;
ALTER TABLE peers ADD COLUMN strikes REAL NOT NULL DEFAULT 0;
ALTER TABLE results ADD COLUMN loss_change REAL;";

/// Schema version 4: each peer's direction record and how many of its updates it covers
/// (see [`crate::aggregate::direction`]).
pub(super) const MIGRATION_4: &str = "
ALTER TABLE peers ADD COLUMN direction REAL NOT NULL DEFAULT 0;
ALTER TABLE peers ADD COLUMN compared INTEGER NOT NULL DEFAULT 0;";

/// A peer's direction record and how many updates it covers ((0, 0) for a peer not known).
fn direction_of(c: &Connection, peer: &str) -> Result<(f64, u64)> {
    let row: Option<(f64, i64)> = c
        .query_row(
            "SELECT direction, compared FROM peers WHERE peer = ?1",
            [peer],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(row.map_or((0.0, 0), |(d, n)| (d, n.max(0) as u64)))
}

fn quality_of(c: &Connection, peer: &str) -> Result<PeerQuality> {
    Ok(c.query_row(
        "SELECT loss_score, strikes FROM peers WHERE peer = ?1",
        [peer],
        |r| {
            Ok(PeerQuality {
                score: r.get(0)?,
                strikes: r.get(1)?,
            })
        },
    )
    .optional()?
    .unwrap_or_default())
}

impl Reader<'_> {
    /// A peer's standing (the default for a peer not known).
    pub fn peer_quality(&self, peer: &str) -> Result<PeerQuality> {
        quality_of(self.conn, peer)
    }

    /// The loss scores of `peers` (those known).
    pub fn loss_scores<'p>(
        &self,
        peers: impl IntoIterator<Item = &'p str>,
    ) -> Result<HashMap<String, f64>> {
        let mut out = HashMap::new();
        for peer in peers {
            if !out.contains_key(peer) {
                out.insert(peer.to_string(), quality_of(self.conn, peer)?.score);
            }
        }
        Ok(out)
    }
}

impl Tx<'_> {
    /// How many of a peer's results the ledger counts as accepted.
    pub fn accepted_results(&self, peer: &str) -> Result<u64> {
        let n: Option<i64> = self
            .tx
            .query_row(
                "SELECT accepted FROM contributor_totals WHERE peer = ?1",
                [peer],
                |r| r.get(0),
            )
            .optional()?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }

    /// A peer's standing (the default for a peer not known).
    pub fn peer_quality(&self, peer: &str) -> Result<PeerQuality> {
        quality_of(self.tx, peer)
    }

    /// A peer's direction record and how many of its updates it covers ((0, 0) for a peer
    /// not known).
    pub fn direction(&self, peer: &str) -> Result<(f64, u64)> {
        direction_of(self.tx, peer)
    }

    /// Moves a peer's direction record by one update's agreement with its round; returns
    /// the new record and count (a peer not known is left alone, at (0, 0)).
    pub fn observe_direction(&self, peer: &str, agreement: f64) -> Result<(f64, u64)> {
        let (record, compared) = self.direction(peer)?;
        let record = crate::aggregate::direction::record_after(record, agreement);
        let compared = compared.saturating_add(1);
        let known = self.tx.execute(
            "UPDATE peers SET direction = ?2, compared = ?3 WHERE peer = ?1",
            params![peer, record, compared.min(i64::MAX as u64) as i64],
        )?;
        Ok(if known > 0 {
            (record, compared)
        } else {
            (0.0, 0)
        })
    }

    /// Holds the credit of an accepted, unchecked update (by task and peer), giving
    /// `reason`; returns whether there was such credit to hold. Credit a re-run verified is
    /// never held.
    pub fn hold_credit(&self, task: u64, peer: &str, reason: &str) -> Result<bool> {
        let n = self.tx.execute(
            "UPDATE ledger SET accepted = 0, verified = ?3, reason = ?4
             WHERE task = ?1 AND peer = ?2 AND accepted = 1 AND verified = 'unchecked'",
            params![task as i64, peer, LedgerVerdict::Held, reason],
        )?;
        Ok(n > 0)
    }

    /// Releases every held credit of a peer, giving `reason`; returns how many entries.
    pub fn release_held(&self, peer: &str, reason: &str) -> Result<usize> {
        Ok(self.tx.execute(
            "UPDATE ledger SET accepted = 1, verified = 'unchecked', reason = ?3
             WHERE peer = ?1 AND verified = ?2",
            params![peer, LedgerVerdict::Held, reason],
        )?)
    }

    /// Stores a peer's standing (a peer not known is left alone).
    pub fn set_peer_quality(&self, peer: &str, quality: &PeerQuality) -> Result<()> {
        self.tx.execute(
            "UPDATE peers SET loss_score = ?2, strikes = ?3 WHERE peer = ?1",
            params![peer, quality.score, quality.strikes],
        )?;
        Ok(())
    }
}

/// One update of a closing round, as [`Tx::settle_direction`] takes it.
#[derive(Debug, Clone, Copy)]
pub struct Judged<'a> {
    /// Its sender.
    pub peer: &'a str,
    /// Its task.
    pub task: u64,
    /// Its agreement with its round (`None` where there was nothing to compare with).
    pub agreement: Option<f64>,
    /// Whether it was left out of the round as opposed to it (uncredited already).
    pub left_out: bool,
}

/// Why an update's credit is held.
const HELD_REASON: &str = "credit held: its sender is new, or its updates do not point with \
    their rounds; released once it has a record of updates that do";
/// Why a held credit was given after all.
const RELEASED_REASON: &str = "credit held, then released: its sender's updates point with \
    their rounds";

impl Tx<'_> {
    /// Settles the credit of a closing round's updates by direction (see
    /// [`crate::aggregate::direction`]): each update moves its sender's record, the credit
    /// of an update whose sender's record does not point with its rounds is held, and the
    /// held credit of a sender whose record now does is released. Returns how many entries
    /// were held and released.
    pub fn settle_direction(&self, updates: &[Judged<'_>]) -> Result<(usize, usize)> {
        use crate::aggregate::direction::{held, releases};
        let mut held_now = 0;
        for u in updates {
            let Some(agreement) = u.agreement else {
                continue;
            };
            let (record, compared) = self.observe_direction(u.peer, agreement)?;
            if !u.left_out
                && held(u.agreement, record, compared)
                && self.hold_credit(u.task, u.peer, HELD_REASON)?
            {
                held_now += 1;
            }
        }
        let mut released = 0;
        let mut seen = std::collections::HashSet::new();
        for u in updates {
            let (record, compared) = self.direction(u.peer)?;
            if seen.insert(u.peer) && releases(record, compared) {
                released += self.release_held(u.peer, RELEASED_REASON)?;
            }
        }
        Ok((held_now, released))
    }
}

/// Why an update waiting for its re-run was kept out when its round closed.
const UNCHECKED_REASON: &str = "its scheduled re-run had not happened when its round closed";

impl Tx<'_> {
    /// Settles the updates still waiting for their re-run (`pending`) as a round closes:
    /// with `aggregate`, they are accepted unchecked (the ledger keeps them `unchecked`);
    /// without, they are kept out (`unverified`, no credit). Returns how many.
    pub fn settle_unchecked(&self, aggregate: bool) -> Result<usize> {
        let waiting: Vec<(i64, String)> = {
            let mut stmt = self
                .tx
                .prepare("SELECT task, peer FROM results WHERE status = 'pending'")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        if aggregate {
            self.tx.execute(
                "UPDATE results SET status = 'accepted' WHERE status = 'pending'",
                [],
            )?;
            return Ok(waiting.len());
        }
        self.tx.execute(
            "UPDATE results SET status = 'unverified', reason = ?1 WHERE status = 'pending'",
            [UNCHECKED_REASON],
        )?;
        for (task, peer) in &waiting {
            self.set_ledger_verified(*task as u64, peer, LedgerVerdict::Unchecked, false)?;
        }
        Ok(waiting.len())
    }

    /// Leaves an accepted update out of its round after all (as an outlier, weight 0) and
    /// takes back its credit, giving `reason` in its result and ledger entry.
    pub fn leave_out(&self, lease: u64, task: u64, peer: &str, reason: &str) -> Result<()> {
        self.tx.execute(
            "UPDATE results SET status = ?2, weight = 0, reason = ?3 WHERE lease = ?1",
            params![lease as i64, ResultStatus::Outlier, reason],
        )?;
        self.tx.execute(
            "UPDATE ledger SET accepted = 0, reason = ?3 WHERE task = ?1 AND peer = ?2",
            params![task as i64, peer, reason],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{claim, joined};
    use super::super::{ResultRecord, State, TaskKind};
    use super::*;

    fn result(lease: u64, task: u64, peer: &str, status: ResultStatus) -> ResultRecord {
        ResultRecord {
            lease,
            task,
            peer: peer.into(),
            round: 0,
            update_root: None,
            norm: None,
            train_loss: None,
            tokens: 100,
            status,
            reason: None,
            received_ms: 1_000,
            weight: 1.0,
            aggregated_in: None,
            loss_change: None,
        }
    }

    /// Issue 19, "verification fails open": an update scheduled for a re-run that had not
    /// happened when its round closed was aggregated unchecked. Now it waits (`pending`),
    /// and a round closing without its verdict keeps it out, with no credit, unless the
    /// project takes unchecked updates in.
    #[test]
    fn updates_waiting_for_their_rerun_are_kept_out_unless_the_project_says_so() {
        for aggregate in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let mut state = State::open(&dir.path().join("canopy.db")).unwrap();
            let settled = state
                .transaction(|tx| {
                    joined(tx, "ada", None, None)?;
                    for (i, status) in [ResultStatus::Accepted, ResultStatus::Pending]
                        .into_iter()
                        .enumerate()
                    {
                        let task = tx.insert_task(0, TaskKind::Train, b"spec", None, 100)?;
                        let lease = tx.insert_lease(task, "ada", 0, 60_000)?;
                        tx.insert_result(&result(lease, task, "ada", status))?;
                        tx.ledger_entry(&claim("ada", task, lease, 10 + i as u64, true, 1), 1)?;
                    }
                    tx.settle_unchecked(aggregate)
                })
                .unwrap();
            assert_eq!(settled, 1);
            let r = state.read();
            let taken: Vec<u64> = r.unaggregated().unwrap().iter().map(|r| r.task).collect();
            let credited = r.ledger().unwrap().iter().filter(|e| e.accepted).count();
            if aggregate {
                assert_eq!(taken.len(), 2);
                assert_eq!(credited, 2);
            } else {
                assert_eq!(taken.len(), 1, "the unchecked update is kept out");
                assert_eq!(credited, 1, "and earns no credit");
                let ledger = r.ledger().unwrap();
                assert!(
                    ledger
                        .iter()
                        .any(|e| !e.accepted && e.verified == LedgerVerdict::Unchecked)
                );
            }
            assert_eq!(
                r.results(None, Some(ResultStatus::Pending)).unwrap().len(),
                0
            );
        }
    }

    /// An update left out after it was accepted leaves the round's inputs and its sender's
    /// credit; the others keep theirs.
    #[test]
    fn an_update_left_out_at_close_is_not_aggregated_nor_credited() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::open(&dir.path().join("canopy.db")).unwrap();
        state
            .transaction(|tx| {
                for peer in ["ada", "mallory"] {
                    joined(tx, peer, None, None)?;
                    let task = tx.insert_task(0, TaskKind::Train, peer.as_bytes(), None, 100)?;
                    let lease = tx.insert_lease(task, peer, 0, 60_000)?;
                    tx.insert_result(&result(lease, task, peer, ResultStatus::Accepted))?;
                    tx.ledger_entry(&claim(peer, task, lease, 10, true, 1), 1)?;
                    if peer == "mallory" {
                        tx.leave_out(lease, task, peer, "opposed to its round")?;
                    }
                }
                Ok(())
            })
            .unwrap();
        let r = state.read();
        let taken: Vec<String> = r
            .unaggregated()
            .unwrap()
            .into_iter()
            .map(|r| r.peer)
            .collect();
        assert_eq!(taken, ["ada"]);
        let left = r.results(None, Some(ResultStatus::Outlier)).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].reason.as_deref(), Some("opposed to its round"));
        let ledger = r.ledger().unwrap();
        let credited: Vec<&str> = ledger
            .iter()
            .filter(|e| e.accepted)
            .map(|e| e.peer.as_str())
            .collect();
        assert_eq!(credited, ["ada"]);
    }

    /// Issue 19: the credit of a new peer, or of one whose updates pull against their rounds,
    /// is held (the ledger says why), whatever the sign of one update; a peer past probation
    /// whose record points with its rounds is credited, and gets its held credit back.
    /// Verified credit is never held, and totals follow the ledger.
    #[test]
    fn credit_is_held_while_a_peers_record_points_against_its_rounds() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::open(&dir.path().join("canopy.db")).unwrap();
        // Each round: (peer, agreement, left out); every update gets a task and an entry.
        let rounds: [&[(&str, f64, bool)]; 4] = [
            &[("ada", 0.3, false), ("mallory", -0.2, false)],
            &[("ada", -0.05, false), ("mallory", 0.1, false)],
            &[("ada", 0.2, false), ("mallory", -0.5, true)],
            &[("mallory", 0.6, false), ("mallory", 0.6, false)],
        ];
        let mut settled = Vec::new();
        let mut credited = Vec::new();
        for round in rounds {
            let counts = state
                .transaction(|tx| {
                    let mut judged = Vec::new();
                    for &(peer, agreement, left_out) in round {
                        joined(tx, peer, None, None)?;
                        let task = tx.insert_task(0, TaskKind::Train, b"spec", None, 100)?;
                        let lease = tx.insert_lease(task, peer, 0, 60_000)?;
                        tx.ledger_entry(&claim(peer, task, lease, 10, true, 1), 1)?;
                        if left_out {
                            tx.leave_out(lease, task, peer, "opposed to its round")?;
                        }
                        judged.push(Judged {
                            peer,
                            task,
                            agreement: Some(agreement),
                            left_out,
                        });
                    }
                    let counts = tx.settle_direction(&judged)?;
                    let ada = tx.accepted_results("ada")?;
                    Ok((counts, [ada, tx.accepted_results("mallory")?]))
                })
                .unwrap();
            settled.push(counts.0);
            credited.push(counts.1);
        }
        // Both are new: their first two updates are held on probation. Round 3 is ada's
        // third, with a record pointing with its rounds (its one negative update did not
        // turn it): all three credited. Mallory's positive update of round 2 did not lift a
        // record still below zero; round 3 leaves its update out (not held: never credited);
        // round 4 lifts the record and releases the two held entries with the two new ones.
        assert_eq!(settled, [(2, 0), (2, 0), (0, 2), (0, 2)]);
        assert_eq!(credited, [[0, 0], [0, 0], [3, 0], [3, 4]]);
        let ledger = state.read().ledger().unwrap();
        let released: Vec<_> = ledger
            .iter()
            .filter(|e| e.reason.as_deref() == Some(RELEASED_REASON))
            .collect();
        assert_eq!(released.len(), 4, "two of ada's, two of mallory's");
        assert!(ledger.iter().all(|e| e.verified != LedgerVerdict::Held));

        // Held entries say so in the ledger; a verified entry keeps its credit.
        state
            .transaction(|tx| {
                joined(tx, "eve", None, None)?;
                let mut judged = Vec::new();
                for verified in [false, true] {
                    let task = tx.insert_task(0, TaskKind::Train, b"spec", None, 100)?;
                    let lease = tx.insert_lease(task, "eve", 0, 60_000)?;
                    tx.ledger_entry(&claim("eve", task, lease, 10, true, 1), 1)?;
                    if verified {
                        tx.set_ledger_verified(task, "eve", LedgerVerdict::Verified, true)?;
                    }
                    judged.push(Judged {
                        peer: "eve",
                        task,
                        agreement: Some(-0.3),
                        left_out: false,
                    });
                }
                // Past probation with a record against its rounds.
                tx.tx.execute(
                    "UPDATE peers SET direction = -1, compared = 9 WHERE peer = 'eve'",
                    [],
                )?;
                assert_eq!(tx.settle_direction(&judged)?, (1, 0));
                // Held credit is neither accepted nor rejected in the totals.
                let (accepted, rejected, results): (i64, i64, i64) = tx.tx.query_row(
                    "SELECT accepted, rejected, results FROM contributor_totals WHERE peer = 'eve'",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?;
                assert_eq!((accepted, rejected, results), (1, 0, 2));
                Ok(())
            })
            .unwrap();
        let ledger = state.read().ledger().unwrap();
        let eve: Vec<(bool, LedgerVerdict)> = ledger
            .iter()
            .filter(|e| e.peer == "eve")
            .map(|e| (e.accepted, e.verified))
            .collect();
        assert_eq!(
            eve,
            [
                (false, LedgerVerdict::Held),
                (true, LedgerVerdict::Verified)
            ]
        );
        let held = ledger
            .iter()
            .find(|e| e.verified == LedgerVerdict::Held)
            .unwrap();
        assert_eq!(held.reason.as_deref(), Some(HELD_REASON));
    }

    /// A peer's standing survives a restart and a fresh join (rejoining does not wash it).
    #[test]
    fn a_peers_standing_is_kept_across_restarts_and_joins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("canopy.db");
        let bad = PeerQuality {
            score: 4.5,
            strikes: 1.7,
        };
        {
            let mut state = State::open(&path).unwrap();
            state
                .transaction(|tx| {
                    joined(tx, "mallory", None, None)?;
                    tx.set_peer_quality("mallory", &bad)?;
                    tx.set_peer_quality("nobody", &bad)
                })
                .unwrap();
        }
        let mut state = State::open(&path).unwrap();
        state
            .transaction(|tx| joined(tx, "mallory", Some("new org"), None))
            .unwrap();
        let r = state.read();
        assert_eq!(r.peer_quality("mallory").unwrap(), bad);
        assert_eq!(r.peer_quality("nobody").unwrap(), PeerQuality::default());
        let scores = r.loss_scores(["mallory", "nobody", "mallory"]).unwrap();
        assert_eq!(scores.len(), 2);
        assert_eq!(scores["mallory"], 4.5);
    }
}

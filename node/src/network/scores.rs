//! Per-peer reputation as this node sees it: offences lower a score, and a peer whose score
//! falls to [`BAN_THRESHOLD`] is banned (disconnected and refused) for [`BAN_DURATION`]. Scores
//! recover with time, so occasional slowness over a long run never adds up to a ban, and
//! protected peers (the coordinator a node joined) are never banned. The map is bounded.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// Score at or below which a peer is banned.
pub const BAN_THRESHOLD: i64 = -100;
/// How long a ban lasts.
pub const BAN_DURATION: Duration = Duration::from_secs(3600);
/// Points a penalised score regains per second, up to zero.
const RECOVERY_PER_SEC: f64 = 0.1;
/// Most peers tracked at once; beyond it, the best-behaved entries are forgotten first.
const MAX_TRACKED: usize = 4096;

/// Ways a peer can misbehave, with what each costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offence {
    /// Served a chunk that does not match the manifest.
    BadChunk,
    /// Sent a frame that does not decode, or an oversized one.
    MalformedFrame,
    /// Sent an envelope signed by a key other than its connection's.
    WrongKey,
    /// Sent a message that fails verification or validation.
    InvalidMessage,
    /// Let a request time out.
    Timeout,
}

impl Offence {
    fn cost(self) -> f64 {
        match self {
            Offence::BadChunk | Offence::MalformedFrame | Offence::InvalidMessage => 40.0,
            Offence::WrongKey => 60.0,
            Offence::Timeout => 5.0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Score {
    value: f64,
    at: Instant,
    banned_until: Option<Instant>,
}

impl Score {
    /// The score at `now`, recovered since it was last set.
    fn recovered(&self, now: Instant) -> f64 {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        (self.value + secs * RECOVERY_PER_SEC).min(0.0)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Scores {
    scores: HashMap<PeerId, Score>,
    protected: HashSet<PeerId>,
}

impl Scores {
    /// Never bans `peer` (the coordinator, a bootstrap peer): its offences are still logged.
    pub(crate) fn protect(&mut self, peer: PeerId) {
        self.protected.insert(peer);
    }

    /// Lowers `peer`'s score; returns true when this offence gets it banned.
    pub(crate) fn penalise(&mut self, peer: PeerId, offence: Offence, now: Instant) -> bool {
        if self.scores.len() >= MAX_TRACKED && !self.scores.contains_key(&peer) {
            let best = self
                .scores
                .iter()
                .filter(|(_, s)| s.banned_until.is_none())
                .max_by(|a, b| a.1.recovered(now).total_cmp(&b.1.recovered(now)))
                .map(|(p, _)| *p);
            if let Some(best) = best {
                self.scores.remove(&best);
            }
        }
        let entry = self.scores.entry(peer).or_insert(Score {
            value: 0.0,
            at: now,
            banned_until: None,
        });
        let before = entry.recovered(now);
        entry.value = before - offence.cost();
        entry.at = now;
        tracing::warn!(%peer, ?offence, score = entry.value, "peer penalised");
        let banned = entry.banned_until.is_none()
            && entry.value <= BAN_THRESHOLD as f64
            && !self.protected.contains(&peer);
        if banned {
            entry.banned_until = Some(now + BAN_DURATION);
        }
        banned
    }

    /// Lets scores recover: forgets peers back at zero and lifts bans that have run their
    /// course (their scores start again from zero). Returns the peers whose ban was lifted.
    pub(crate) fn recover(&mut self, now: Instant) -> Vec<PeerId> {
        let mut lifted = Vec::new();
        self.scores.retain(|peer, s| match s.banned_until {
            Some(until) if now >= until => {
                lifted.push(*peer);
                false
            }
            Some(_) => true,
            None => s.recovered(now) < 0.0,
        });
        lifted
    }

    pub(crate) fn is_banned(&self, peer: &PeerId) -> bool {
        self.scores
            .get(peer)
            .is_some_and(|s| s.banned_until.is_some())
    }

    pub(crate) fn snapshot(&self) -> HashMap<PeerId, i64> {
        let now = Instant::now();
        self.scores
            .iter()
            .map(|(p, s)| (*p, s.recovered(now).round() as i64))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_bad_chunks_ban() {
        let mut s = Scores::default();
        let p = PeerId::random();
        let now = Instant::now();
        assert!(!s.penalise(p, Offence::BadChunk, now));
        assert!(!s.penalise(p, Offence::BadChunk, now));
        assert!(s.penalise(p, Offence::BadChunk, now));
        assert!(s.is_banned(&p));
        assert!(!s.penalise(p, Offence::BadChunk, now), "banned once");
        // The ban runs its course, then the peer starts again.
        assert!(s.recover(now + BAN_DURATION / 2).is_empty());
        assert_eq!(s.recover(now + BAN_DURATION), vec![p]);
        assert!(!s.is_banned(&p));
    }

    /// Issue 17: a node banned its own coordinator after 20 slow answers over its lifetime,
    /// since scores never recovered and the coordinator was not exempt.
    #[test]
    fn slow_answers_spread_over_a_long_run_never_ban_and_the_coordinator_never_is() {
        let mut s = Scores::default();
        let volunteer = PeerId::random();
        let coordinator = PeerId::random();
        s.protect(coordinator);
        let start = Instant::now();
        // One timeout a minute for a day.
        for minute in 0..1440u64 {
            let now = start + Duration::from_secs(60 * minute);
            assert!(!s.penalise(volunteer, Offence::Timeout, now));
            s.recover(now);
        }
        assert!(!s.is_banned(&volunteer));
        // Even a burst of timeouts from the coordinator does not ban it.
        for _ in 0..100 {
            assert!(!s.penalise(coordinator, Offence::Timeout, start));
        }
        assert!(!s.is_banned(&coordinator));
        // Recovered peers are forgotten, so the map does not grow.
        s.recover(start + Duration::from_secs(86_400 * 2));
        assert!(s.snapshot().is_empty());
    }
}

//! Judging an update by its effect on held-out loss, against the spread of the honest updates
//! before it rather than a fixed threshold, and keeping a score of each peer over rounds.
//!
//! A small task (one inner step of a few tokens) moves the model noisily: an honest update of
//! such a task can raise the held-out loss by most of a nat. A fixed bound refused those, each
//! refusal cost reputation, and a run of tiny tasks banned every honest volunteer. Here:
//!
//! - an update whose effect is within the spread of recent accepted updates (or within
//!   `tolerance` nats) is **fine**;
//! - one well outside it is an **outlier**: left out of the round, at no cost to the sender's
//!   reputation, but counted as a *strike*; strikes fade round by round, and only a repeated
//!   pattern of them ([`STRIKES_TO_PENALISE`]) costs reputation;
//! - one so far outside that no honest noise comes near ([`GROSS_SPREADS`] spreads, and at
//!   least [`GROSS_TOLERANCES`] times the tolerance) is **gross**: evidence, refused and
//!   penalised at once;
//! - every judged update moves its sender's *loss score*, a decaying average of how far its
//!   updates sit above the typical one; aggregation weighs a peer's updates by
//!   [`quality_weight`] of that score, so a patient attacker whose updates are each just
//!   inside the spread still loses influence.

use std::collections::VecDeque;

/// Accepted loss changes remembered as the honest spread.
pub const SPREAD_WINDOW: usize = 64;
/// Accepted updates needed before the spread is measured rather than assumed.
pub const MIN_SPREAD_SAMPLES: usize = 5;
/// How far above the typical update (in spreads) an update is gross: evidence, not noise.
pub const GROSS_SPREADS: f64 = 25.0;
/// How many tolerances a gross update's effect is, at least.
pub const GROSS_TOLERANCES: f64 = 4.0;
/// How many tolerances of effect are gross whatever the spread (10 nats at the default
/// tolerance of 0.5: worse than a uniform guess over bytes by far). Early in a run honest
/// changes spread over a nat or more, and an update scaled thirtyfold, raising the loss by
/// 29 nats, sat just inside [`GROSS_SPREADS`] of them.
pub const GROSS_ABSOLUTE_TOLERANCES: f64 = 20.0;
/// How much of a peer's strikes are kept from one judged update to the next.
pub const STRIKE_DECAY: f64 = 0.7;
/// Strikes at which a peer is penalised (about three outliers in a row, or four in five).
pub const STRIKES_TO_PENALISE: f64 = 2.0;
/// How much of a peer's loss score is kept from one judged update to the next.
pub const SCORE_DECAY: f64 = 0.8;
/// The range a single update's standing (in spreads) is clamped to before it moves a score.
pub const STANDING_RANGE: (f64, f64) = (-2.0, 10.0);

/// The verdict on one update's loss change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LossVerdict {
    /// Within the spread: accepted.
    Fine {
        /// How far above the typical update it sits, in spreads.
        standing: f64,
    },
    /// Well outside the spread: left out, a strike.
    Outlier {
        /// How far above the typical update it sits, in spreads.
        standing: f64,
    },
    /// Far beyond any honest noise: refused and penalised.
    Gross {
        /// How far above the typical update it sits, in spreads.
        standing: f64,
    },
}

impl LossVerdict {
    /// How far above the typical update the judged one sits, in spreads.
    pub fn standing(&self) -> f64 {
        match *self {
            Self::Fine { standing } | Self::Outlier { standing } | Self::Gross { standing } => {
                standing
            }
        }
    }
}

/// The loss changes of recently accepted updates, and the judge that compares a new one
/// with them.
#[derive(Debug, Clone)]
pub struct LossSpread {
    /// Changes at or below this many nats are always fine.
    tolerance: f64,
    /// Spreads above the typical change beyond which an update is an outlier.
    outlier_spreads: f64,
    recent: VecDeque<f64>,
}

impl LossSpread {
    /// A judge with `tolerance` nats of change always allowed and outliers beyond
    /// `outlier_spreads` spreads.
    pub fn new(tolerance: f64, outlier_spreads: f64) -> Self {
        Self {
            tolerance: tolerance.max(0.0),
            outlier_spreads: outlier_spreads.max(1.0),
            recent: VecDeque::with_capacity(SPREAD_WINDOW),
        }
    }

    /// Remembers an accepted update's change (non-finite figures are ignored).
    pub fn record(&mut self, change: f64) {
        if !change.is_finite() {
            return;
        }
        if self.recent.len() == SPREAD_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(change);
    }

    /// The typical change and the spread around it: the median and the scaled median
    /// absolute deviation of the remembered changes, the spread never below half the
    /// tolerance (nor a small floor). With too few samples, the typical change is taken as 0
    /// and the spread as the tolerance.
    pub fn centre_and_spread(&self) -> (f64, f64) {
        let floor = (self.tolerance / 2.0).max(1e-3);
        if self.recent.len() < MIN_SPREAD_SAMPLES {
            return (0.0, self.tolerance.max(floor));
        }
        let mut v: Vec<f64> = self.recent.iter().copied().collect();
        let centre = median(&mut v);
        let mut dev: Vec<f64> = v.iter().map(|x| (x - centre).abs()).collect();
        let mad = median(&mut dev) * 1.4826;
        (centre, mad.max(floor))
    }

    /// Judges a change of held-out loss in nats. A non-finite change is gross.
    pub fn judge(&self, change: f64) -> LossVerdict {
        if !change.is_finite() {
            return LossVerdict::Gross {
                standing: STANDING_RANGE.1,
            };
        }
        let (centre, spread) = self.centre_and_spread();
        let standing = (change - centre) / spread;
        // Before the spread is measured, a fine update's standing says nothing of its
        // sender: it counts as typical.
        let fine = LossVerdict::Fine {
            standing: if self.recent.len() >= MIN_SPREAD_SAMPLES {
                standing
            } else {
                0.0
            },
        };
        // Within the tolerance an update is typical for its sender's score too: held-out
        // gains shrink as a run goes on, so the window's median (from earlier, larger gains)
        // would otherwise rank every later honest update high and shrink the outer step.
        if change <= self.tolerance {
            return match fine {
                LossVerdict::Fine { standing } => LossVerdict::Fine {
                    standing: standing.min(0.0),
                },
                other => other,
            };
        }
        let tolerance = self.tolerance.max(1e-3);
        let gross = (standing > GROSS_SPREADS && change > GROSS_TOLERANCES * tolerance)
            || (standing > self.outlier_spreads && change > GROSS_ABSOLUTE_TOLERANCES * tolerance);
        if gross {
            LossVerdict::Gross { standing }
        } else if standing > self.outlier_spreads {
            LossVerdict::Outlier { standing }
        } else {
            fine
        }
    }
}

/// A peer's standing over rounds: its loss score and its strikes.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PeerQuality {
    /// A decaying average of how far the peer's updates sit above the typical one, in
    /// spreads (0 for a typical peer, negative for a better one).
    pub score: f64,
    /// Decaying count of outliers.
    pub strikes: f64,
}

impl PeerQuality {
    /// Takes in one judged update; returns whether the strikes now call for a penalty (and
    /// if so, starts counting again).
    pub fn observe(&mut self, verdict: &LossVerdict) -> bool {
        let standing = verdict.standing().clamp(STANDING_RANGE.0, STANDING_RANGE.1);
        self.score = SCORE_DECAY * self.score + (1.0 - SCORE_DECAY) * standing;
        let outlier = !matches!(verdict, LossVerdict::Fine { .. });
        self.strikes = STRIKE_DECAY * self.strikes + f64::from(u8::from(outlier));
        if self.strikes >= STRIKES_TO_PENALISE {
            self.strikes = 0.0;
            return true;
        }
        false
    }

    /// Takes in a re-run's verdict: a disagreement is as bad as a gross update.
    pub fn observe_rerun(&mut self, agrees: bool) {
        let standing = if agrees { 0.0 } else { STANDING_RANGE.1 };
        self.score = SCORE_DECAY * self.score + (1.0 - SCORE_DECAY) * standing;
    }
}

/// The score up to which a peer's updates keep their full weight: an honest peer's score
/// wanders about 0 by about a third of a spread, and a weight that followed it would only
/// shrink the outer step.
pub const SCORE_NOISE: f64 = 1.0;

/// The weight aggregation gives a peer's updates for its loss score: 1 up to
/// [`SCORE_NOISE`], then falling as the score grows (1/2 at two spreads above typical, 1/10
/// at the highest score); never 0, which aggregation refuses.
pub fn quality_weight(score: f64) -> f64 {
    let score = if score.is_finite() {
        score.min(STANDING_RANGE.1)
    } else {
        STANDING_RANGE.1
    };
    1.0 / (1.0 + (score - SCORE_NOISE).max(0.0))
}

/// The median of `v` (0 for none), which it sorts.
pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic noisy changes around `centre`, spread `width` (a linear congruential
    /// draw, so the test needs no random crate and replays exactly).
    fn noisy(n: usize, centre: f64, width: f64, seed: u64) -> Vec<f64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (s >> 11) as f64 / (1u64 << 53) as f64;
                centre + width * (2.0 * u - 1.0)
            })
            .collect()
    }

    /// Issue 19, "noise is not malice": with tiny tasks, honest updates raised the held-out
    /// loss by up to 0.635 nats, the fixed bound of 0.5 refused them, and every honest peer
    /// was banned by round 53. Against the spread of the updates before them, such updates
    /// are fine, and a run of thousands of them never calls for a penalty.
    #[test]
    fn noisy_honest_updates_are_fine_and_never_penalised() {
        let mut spread = LossSpread::new(0.5, 4.0);
        let mut peers = [PeerQuality::default(); 3];
        let mut outliers = 0;
        for (i, change) in noisy(3000, 0.35, 0.35, 7).into_iter().enumerate() {
            let verdict = spread.judge(change);
            if !matches!(verdict, LossVerdict::Fine { .. }) {
                outliers += 1;
            }
            assert!(!peers[i % 3].observe(&verdict), "penalised at update {i}");
            spread.record(change);
        }
        assert_eq!(outliers, 0);
        for p in peers {
            assert!(quality_weight(p.score) >= 0.9, "{p:?}");
        }
        let refused_by_fixed_bound = noisy(3000, 0.35, 0.35, 7)
            .iter()
            .filter(|&&c| c > 0.5)
            .count();
        assert!(refused_by_fixed_bound > 500, "{refused_by_fixed_bound}");
    }

    #[test]
    fn a_single_outlier_is_a_strike_and_a_pattern_is_penalised() {
        let mut spread = LossSpread::new(0.5, 4.0);
        for c in noisy(40, 0.2, 0.1, 3) {
            spread.record(c);
        }
        let mut peer = PeerQuality::default();
        let out = spread.judge(1.5);
        assert!(matches!(out, LossVerdict::Outlier { .. }), "{out:?}");
        assert!(!peer.observe(&out), "one outlier does not penalise");
        // Fine updates let the strike fade.
        for _ in 0..5 {
            assert!(!peer.observe(&spread.judge(0.2)));
        }
        assert!(!peer.observe(&out));
        // Three outliers in a row are a pattern.
        let mut other = PeerQuality::default();
        let penalised: Vec<bool> = (0..3).map(|_| other.observe(&out)).collect();
        assert_eq!(penalised, [false, false, true]);
        assert_eq!(other.strikes, 0.0, "counting starts again");
    }

    #[test]
    fn gross_and_non_finite_changes_are_evidence() {
        let mut spread = LossSpread::new(0.5, 4.0);
        // Cold start: the spread is the tolerance.
        assert!(matches!(spread.judge(0.9), LossVerdict::Fine { .. }));
        assert!(matches!(spread.judge(3.0), LossVerdict::Outlier { .. }));
        assert!(matches!(spread.judge(f64::NAN), LossVerdict::Gross { .. }));
        assert!(matches!(
            spread.judge(f64::INFINITY),
            LossVerdict::Gross { .. }
        ));
        for c in noisy(40, 0.1, 0.05, 9) {
            spread.record(c);
        }
        assert!(matches!(spread.judge(8.0), LossVerdict::Gross { .. }));
        // Where honest changes spread wide (a run's first rounds), an update raising the
        // loss by 25 nats is still gross (fewer than GROSS_SPREADS spreads above the typical
        // one), one of a few nats an outlier.
        let mut wide = LossSpread::new(0.5, 4.0);
        for c in noisy(40, -0.8, 2.0, 3) {
            wide.record(c);
        }
        let (_, s) = wide.centre_and_spread();
        assert!(s > 1.0, "spread {s}");
        let verdict = wide.judge(25.0);
        assert!(
            matches!(verdict, LossVerdict::Gross { standing } if standing < GROSS_SPREADS),
            "{verdict:?}, spread {s}"
        );
        assert!(matches!(wide.judge(6.0), LossVerdict::Outlier { .. }));
        // Anything at or below the tolerance is fine, however tight the spread.
        assert!(matches!(spread.judge(0.5), LossVerdict::Fine { .. }));
        // Non-finite figures do not enter the spread.
        spread.record(f64::NAN);
        assert!(spread.centre_and_spread().0.is_finite());
    }

    /// Held-out gains shrink as a run goes on: the four updates of a later round each lower
    /// the loss by far less than those of the first rounds, which fill the window. That is
    /// no reason to weigh them less (a 3-round run with plain averaging ended at 1.089× the
    /// data-parallel loss instead of within 5%, all its later updates down-weighted).
    #[test]
    fn shrinking_gains_as_a_run_goes_on_keep_full_weight() {
        let mut spread = LossSpread::new(0.5, 4.0);
        let mut peers = [PeerQuality::default(); 4];
        for gain in [2.5, 0.6, 0.2, 0.1] {
            for (i, peer) in peers.iter_mut().enumerate() {
                let change = -gain - 0.01 * i as f64;
                assert!(!peer.observe(&spread.judge(change)));
                spread.record(change);
            }
        }
        for p in peers {
            assert_eq!(quality_weight(p.score), 1.0, "{p:?}");
        }
    }

    /// A patient attacker whose updates each stay inside the spread, but always at its top,
    /// loses weight; an ordinary peer keeps it.
    #[test]
    fn a_peer_always_at_the_top_of_the_spread_loses_weight() {
        let mut spread = LossSpread::new(0.0, 4.0);
        for c in noisy(64, 0.0, 0.1, 11) {
            spread.record(c);
        }
        let (centre, width) = spread.centre_and_spread();
        let mut patient = PeerQuality::default();
        let mut ordinary = PeerQuality::default();
        for c in noisy(50, 0.0, 0.1, 12) {
            assert!(!patient.observe(&spread.judge(centre + 3.5 * width)));
            assert!(!ordinary.observe(&spread.judge(c)));
        }
        assert!(quality_weight(patient.score) < 0.3, "{patient:?}");
        assert!(quality_weight(ordinary.score) > 0.8, "{ordinary:?}");
        let mut cheat = PeerQuality::default();
        cheat.observe_rerun(false);
        cheat.observe_rerun(false);
        assert!(quality_weight(cheat.score) < 0.4, "{cheat:?}");
        assert_eq!(quality_weight(f64::NAN), quality_weight(STANDING_RANGE.1));
        assert!(quality_weight(f64::NAN) > 0.0);
        assert_eq!(quality_weight(SCORE_NOISE), 1.0);
    }
}

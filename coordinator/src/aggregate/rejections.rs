//! What the screening of a round's updates refused, and why, counted for the round's summary.

use super::Rejection;

/// Per-reason counters of refused updates, for coordinator metrics.
///
/// [`RejectionStats::record`] counts [`Rejection`]s; the network-level
/// reasons (version, replay, signature, verification, staleness, bans) and
/// `clipped` are incremented by the caller.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RejectionStats {
    /// Updates containing NaN or infinity.
    pub non_finite: u64,
    /// Updates of the wrong length.
    pub wrong_shape: u64,
    /// Updates computed against the wrong model version.
    pub wrong_version: u64,
    /// Replayed (duplicate) updates.
    pub replay: u64,
    /// Updates with an invalid signature.
    pub bad_signature: u64,
    /// Updates that failed spot-check verification.
    pub failed_verification: u64,
    /// Updates left out of their round as outliers of held-out loss (no reputation cost).
    pub outliers: u64,
    /// Updates dropped for being too stale.
    pub stale_dropped: u64,
    /// Updates from banned senders.
    pub banned_sender: u64,
    /// Updates accepted but scaled down by clipping (not a rejection).
    pub clipped: u64,
}

impl RejectionStats {
    /// Counts one [`Rejection`] under its reason.
    pub fn record(&mut self, rejection: &Rejection) {
        let counter = match rejection {
            Rejection::NonFinite { .. } => &mut self.non_finite,
            Rejection::WrongShape { .. } => &mut self.wrong_shape,
        };
        *counter = counter.saturating_add(1);
    }

    /// Total refused updates, i.e. every counter except `clipped`.
    pub fn total_rejected(&self) -> u64 {
        [
            self.non_finite,
            self.wrong_shape,
            self.wrong_version,
            self.replay,
            self.bad_signature,
            self.failed_verification,
            self.outliers,
            self.stale_dropped,
            self.banned_sender,
        ]
        .iter()
        .fold(0u64, |acc, &c| acc.saturating_add(c))
    }
}

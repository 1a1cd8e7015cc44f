//! Token buckets for the upload and download limits: per peer when serving, and in total for
//! every peer together. A bucket may go into debt by one chunk, so limits below a chunk a
//! second still pass chunks, one at a time.

use std::time::Instant;

/// A bucket refilled at `rate` bytes a second, holding at most one second's worth.
pub(crate) struct TokenBucket {
    tokens: f64,
    rate: f64,
    pub(crate) last: Instant,
}

impl TokenBucket {
    /// A full bucket for `rate` bytes a second.
    pub(crate) fn new(rate: u64, now: Instant) -> Self {
        Self {
            tokens: rate as f64,
            rate: rate as f64,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.rate);
        self.last = now;
    }

    /// Whether the bucket is out of debt (holds any tokens).
    pub(crate) fn ready(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens > 0.0
    }

    /// Spends `bytes` whenever the bucket is not in debt, going into debt if they are more
    /// than it holds: a limit below one chunk a second still lets chunks through, one at a
    /// time, and the average rate stays at the limit.
    pub(crate) fn spend(&mut self, bytes: usize, now: Instant) -> bool {
        self.refill(now);
        if self.tokens > 0.0 {
            self.tokens -= bytes as f64;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_bucket_refills_with_time_up_to_one_second() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(1000, t0);
        assert!(bucket.spend(1000, t0));
        assert!(!bucket.ready(t0));
        assert!(bucket.ready(t0 + Duration::from_millis(10)));
        // Never more than one second's worth: a minute idle still leaves a debt after 2,001.
        assert!(bucket.spend(2001, t0 + Duration::from_secs(60)));
        assert!(!bucket.ready(t0 + Duration::from_secs(60)));
    }

    #[test]
    fn spend_goes_into_debt_and_holds_the_average() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(1000, t0);
        assert!(
            bucket.spend(4000, t0),
            "a chunk larger than the limit still goes"
        );
        assert!(
            !bucket.spend(1, t0 + Duration::from_secs(2)),
            "3 s of debt left"
        );
        assert!(!bucket.spend(1, t0 + Duration::from_millis(2999)));
        assert!(bucket.spend(1, t0 + Duration::from_millis(3001)));
    }
}

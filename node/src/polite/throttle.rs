//! A cap on the share of time the node computes, as BOINC's "use at most N% of CPU time":
//! after each piece of work the worker rests long enough that work fills at most that share.

use std::time::{Duration, Instant};

/// Longest single rest, so a long step never makes the node sleep for minutes at once.
const MAX_REST: Duration = Duration::from_secs(30);
/// How often a rest checks whether it should end early (stop, pause, lost lease).
const REST_SLICE: Duration = Duration::from_millis(50);

/// Paces work to a share of the time.
#[derive(Debug)]
pub struct Throttle {
    percent: u8,
    since: Instant,
    rested: Duration,
}

/// How long to rest after `worked` so that work takes `percent` % of the time.
pub fn rest_after(worked: Duration, percent: u8) -> Duration {
    let percent = u32::from(percent.clamp(1, 100));
    (worked * (100 - percent) / percent).min(MAX_REST)
}

impl Throttle {
    /// A throttle for `percent` % of the time; `None` (no throttle) for no cap or 100 %.
    pub fn new(percent: Option<u8>) -> Option<Self> {
        percent.filter(|&p| p < 100).map(|percent| Self {
            percent,
            since: Instant::now(),
            rested: Duration::ZERO,
        })
    }

    /// Call after each piece of work: rests for the share of time the work may not use,
    /// ending early as soon as `interrupted()` says so.
    pub fn pace(&mut self, interrupted: impl Fn() -> bool) {
        let rest = rest_after(self.since.elapsed(), self.percent);
        let start = Instant::now();
        while start.elapsed() < rest && !interrupted() {
            std::thread::sleep(REST_SLICE.min(rest.saturating_sub(start.elapsed())));
        }
        self.rested += start.elapsed();
        self.since = Instant::now();
    }

    /// The time spent resting so far (not compute, so not reported as such).
    pub fn rested(&self) -> Duration {
        self.rested
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_fills_the_rest_of_the_share() {
        let ms = Duration::from_millis;
        assert_eq!(rest_after(ms(100), 50), ms(100));
        assert_eq!(rest_after(ms(100), 25), ms(300));
        assert_eq!(rest_after(ms(300), 75), ms(100));
        assert_eq!(rest_after(ms(100), 100), Duration::ZERO);
        assert_eq!(rest_after(ms(100), 0), ms(9_900), "0 % is taken as 1 %");
        assert_eq!(rest_after(Duration::from_secs(60), 10), MAX_REST);
        assert!(Throttle::new(None).is_none());
        assert!(Throttle::new(Some(100)).is_none());
    }

    #[test]
    fn a_throttle_rests_at_least_its_share_and_stops_resting_when_interrupted() {
        let mut t = Throttle::new(Some(50)).unwrap();
        let busy = Instant::now();
        while busy.elapsed() < Duration::from_millis(20) {}
        t.pace(|| false);
        assert!(t.rested() >= Duration::from_millis(20), "{:?}", t.rested());

        let mut t = Throttle::new(Some(1)).unwrap();
        let busy = Instant::now();
        while busy.elapsed() < Duration::from_millis(100) {}
        t.pace(|| true);
        assert!(t.rested() < Duration::from_secs(5), "{:?}", t.rested());
    }
}

//! The Raft node's two clocks, behind one trait so that a test can drive the node through time
//! without waiting (`harness/`): the monotonic clock (ticks, session TTLs, timeouts) and the
//! wall clock (the time the leader stamps into each command for the state machine).
//!
//! The node reads only these; a [`ManualClock`] moves when the test says, and both clocks move
//! together, as they do in a real second.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What the node asks for the time.
pub trait Clock: Send + Sync {
    /// Now, on the monotonic clock.
    fn now(&self) -> Instant;
    /// Now, in nanoseconds since the Unix epoch.
    fn wall_ns(&self) -> u64;
}

/// The machine's clocks.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall_ns(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    }
}

/// Clocks that stand still until [`ManualClock::advance`] moves them: the same run of a test
/// sees the same times whatever the machine is doing.
pub struct ManualClock {
    start: Instant,
    wall_start_ns: u64,
    elapsed: Mutex<Duration>,
}

impl ManualClock {
    /// Clocks at `wall_start_ns` on the wall clock (any fixed value keeps runs identical).
    pub fn new(wall_start_ns: u64) -> ManualClock {
        ManualClock {
            start: Instant::now(),
            wall_start_ns,
            elapsed: Mutex::new(Duration::ZERO),
        }
    }

    /// Moves both clocks `by` forward.
    pub fn advance(&self, by: Duration) {
        *self.elapsed.lock().expect("clock poisoned") += by;
    }

    /// How far the clocks moved since they were made.
    pub fn elapsed(&self) -> Duration {
        *self.elapsed.lock().expect("clock poisoned")
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + self.elapsed()
    }

    fn wall_ns(&self) -> u64 {
        self.wall_start_ns + self.elapsed().as_nanos() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_both_clocks_together() {
        let c = ManualClock::new(1_000);
        let (t0, w0) = (c.now(), c.wall_ns());
        assert_eq!((c.now(), c.wall_ns()), (t0, w0));
        c.advance(Duration::from_millis(250));
        assert_eq!(c.now() - t0, Duration::from_millis(250));
        assert_eq!(c.wall_ns() - w0, 250_000_000);
    }
}

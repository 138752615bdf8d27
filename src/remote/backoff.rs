//! The one backoff every retry and reconnect uses: exponential from a minimum, capped, with jitter
//! (backon's), so that many connectors failing together do not retry together. A persistent
//! failure (a refused token, a missing stream) waits near the cap at once: it never turns into a
//! hot loop, and a fix of the setting is still picked up within one cap.

use backon::{BackoffBuilder, ExponentialBuilder};
use rand::Rng;
use std::time::Duration;

/// A sequence of delays between attempts; [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: usize,
}

impl Backoff {
    /// Delays between `min` and `max` (a `max` below `min` is raised to it).
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            failures: 0,
        }
    }

    /// A success: the next failure starts from `min` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// The delay before the next attempt after a failure. `persistent`: the failure will not go
    /// away by itself, so wait 75–100 % of the cap.
    pub fn next_delay(&mut self, persistent: bool) -> Duration {
        self.failures = self.failures.saturating_add(1);
        if persistent {
            return self.max.mul_f64(rand::rng().random_range(0.75..=1.0));
        }
        self.delay_of_attempt(self.failures)
    }

    /// The delay after the `attempt`-th failed attempt (1-based), without changing the sequence:
    /// for callers that count attempts themselves.
    pub fn delay_of_attempt(&self, attempt: usize) -> Duration {
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(self.min)
            .with_max_delay(self.max)
            .with_jitter()
            .without_max_times()
            .build();
        delays
            .nth(attempt.saturating_sub(1).min(64))
            .unwrap_or(self.max)
            .min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(60));
        let first = b.next_delay(false);
        assert!(
            first >= Duration::from_secs(2) && first <= Duration::from_secs(4),
            "{first:?}"
        );
        let mut last = first;
        for _ in 0..10 {
            last = b.next_delay(false);
        }
        assert!(last <= Duration::from_secs(60), "{last:?}");
        assert!(last >= Duration::from_secs(30), "{last:?}");
        b.reset();
        assert!(b.next_delay(false) <= Duration::from_secs(4));
    }

    #[test]
    fn persistent_failures_wait_near_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(40));
        for _ in 0..20 {
            let d = b.next_delay(true);
            assert!(
                d >= Duration::from_secs(30) && d <= Duration::from_secs(40),
                "{d:?}"
            );
        }
    }

    /// A retry loop sleeping on the backoff, on tokio's paused clock: a persistent failure never
    /// turns into a hot loop (ten attempts take at least 7.5 caps of virtual time), and after a
    /// reset the next wait is short again.
    #[tokio::test(start_paused = true)]
    async fn a_retry_loop_on_the_paused_clock_waits_as_promised() {
        let (min, max) = (Duration::from_millis(200), Duration::from_secs(10));
        let mut b = Backoff::new(min, max);
        let start = tokio::time::Instant::now();
        for _ in 0..10 {
            tokio::time::sleep(b.next_delay(true)).await;
        }
        let waited = start.elapsed();
        assert!(
            waited >= max.mul_f64(7.5) && waited <= max * 10,
            "{waited:?}"
        );
        b.reset();
        let start = tokio::time::Instant::now();
        tokio::time::sleep(b.next_delay(false)).await;
        assert!(start.elapsed() <= min * 2, "{:?}", start.elapsed());
    }

    #[test]
    fn attempts_are_counted_by_the_caller_without_state() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert!(b.delay_of_attempt(1) <= Duration::from_millis(200));
        assert!(b.delay_of_attempt(30) <= Duration::from_secs(1));
        assert!(b.delay_of_attempt(30) >= Duration::from_millis(500));
    }
}

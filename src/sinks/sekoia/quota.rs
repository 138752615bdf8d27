//! The count of live IOCs iocsync holds in the Sekoia collection, published as the gauge
//! `iocsync_sink_live_iocs{sink="sekoia"}`, with a warning when it reaches 90 % of the quota (Sekoia
//! refuses imports beyond it). Seeded by the pipeline from its state, kept current by the sink.

use super::error::SINK;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Warn at this share of the quota.
pub const WARN_PERCENT: u64 = 90;

/// A live count and its quota; lock-free, shared by concurrent `apply` calls.
#[derive(Debug)]
pub struct LiveCount {
    live: AtomicU64,
    quota: u64,
    /// True while at or above the threshold, so the warning is logged once per crossing.
    warned: AtomicBool,
}

impl LiveCount {
    /// A zero count against `quota` (at least 1).
    pub fn new(quota: u64) -> Self {
        LiveCount {
            live: AtomicU64::new(0),
            quota: quota.max(1),
            warned: AtomicBool::new(false),
        }
    }

    /// The count at which we warn: 90 % of the quota, rounded up.
    pub fn threshold(&self) -> u64 {
        self.quota.saturating_mul(WARN_PERCENT).div_ceil(100)
    }

    /// The quota.
    pub fn quota(&self) -> u64 {
        self.quota
    }

    /// The current count.
    pub fn get(&self) -> u64 {
        self.live.load(Ordering::Relaxed)
    }

    /// True when the count is at or above the warning threshold.
    pub fn near_quota(&self) -> bool {
        self.get() >= self.threshold()
    }

    /// Replaces the count (the pipeline's figure from its state).
    pub fn set(&self, n: u64) {
        self.live.store(n, Ordering::Relaxed);
        self.publish(n);
    }

    /// Adds `created` and removes `revoked` (never below zero).
    pub fn adjust(&self, created: u64, revoked: u64) {
        if created == 0 && revoked == 0 {
            return;
        }
        let mut now = 0;
        // fetch_update never fails with a closure that always returns Some.
        let _ = self
            .live
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                now = n.saturating_add(created).saturating_sub(revoked);
                Some(now)
            });
        self.publish(now);
    }

    fn publish(&self, n: u64) {
        // The gauge is a float; IOC counts stay far below 2^53.
        crate::metrics::global().set("iocsync_sink_live_iocs", &[("sink", SINK)], n as f64);
        let near = n >= self.threshold();
        let was = self.warned.swap(near, Ordering::Relaxed);
        if near && !was {
            tracing::warn!(
                sink = SINK,
                live = n,
                quota = self.quota,
                "the Sekoia IOC collection is at {}% of its quota; imports will fail once it is \
                 full: shorten validity, narrow the stream, or raise the quota with Sekoia",
                n.saturating_mul(100) / self.quota
            );
        } else if !near && was {
            tracing::info!(
                sink = SINK,
                live = n,
                quota = self.quota,
                "the Sekoia IOC collection is back below 90% of its quota"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauge() -> Option<f64> {
        crate::metrics::global().gauge("iocsync_sink_live_iocs", &[("sink", SINK)])
    }

    #[test]
    fn warns_at_ninety_percent_and_publishes_the_gauge() {
        let c = LiveCount::new(500_000);
        assert_eq!(c.threshold(), 450_000);
        c.set(449_999);
        assert!(!c.near_quota());
        assert_eq!(gauge(), Some(449_999.0));
        c.adjust(1, 0);
        assert!(c.near_quota());
        assert!(c.warned.load(Ordering::Relaxed));
        c.adjust(0, 2);
        assert_eq!(c.get(), 449_998);
        assert!(!c.warned.load(Ordering::Relaxed));
        c.set(0);
        c.adjust(0, 5);
        assert_eq!(c.get(), 0);
        assert_eq!(gauge(), Some(0.0));
        assert_eq!(LiveCount::new(10).threshold(), 9);
        assert_eq!(LiveCount::new(0).quota(), 1);
    }
}

//! Hands freed heap memory back to the system after a burst of connections.
//!
//! Each relayed connection pair holds about 30 KiB; when thousands close (a flood, a
//! client's reconnect storm), glibc keeps the freed memory in its arenas and the sidecar
//! stays that large, each burst closer to the pod's memory limit. Every
//! [`CHECK_EVERY`], if at least [`TRIM_AFTER_CLOSED`] connections closed since the last
//! trim, or the resident size grew by [`TRIM_AFTER_GROWTH`] since then, the free pages are
//! given back ([`rmq_heap::trim`], on a blocking thread: it walks the allocator's free lists).

use std::time::Duration;

use crate::metrics::Metrics;

/// How often the trigger is looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);
/// Connections closed since the last trim that make the next check trim.
pub const TRIM_AFTER_CLOSED: u64 = 256;
/// Growth of the resident size (bytes) since the last trim that makes the next check trim
/// (large frames freed leave memory behind too).
pub const TRIM_AFTER_GROWTH: u64 = 64 << 20;

/// What the trigger remembers between checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trigger {
    /// Closed-connection count at the last trim.
    closed_at_last: u64,
    /// Resident bytes right after the last trim (0 before the first).
    rss_after_last: u64,
}

impl Trigger {
    /// True when a check that sees `closed_total` connections closed so far and `rss`
    /// resident bytes should trim.
    pub fn due(&self, closed_total: u64, rss: u64) -> bool {
        closed_total.saturating_sub(self.closed_at_last) >= TRIM_AFTER_CLOSED
            || (self.rss_after_last > 0 && rss >= self.rss_after_last + TRIM_AFTER_GROWTH)
    }

    /// Remembers a trim done when `closed_total` connections had closed, leaving `rss`.
    pub fn trimmed(&mut self, closed_total: u64, rss: u64) {
        self.closed_at_last = closed_total;
        self.rss_after_last = rss;
    }
}

/// Page size of the platforms the sidecar ships for (x86_64, aarch64 with 4 KiB pages).
const PAGE_BYTES: u64 = 4096;

/// Resident set size of this process in bytes (Linux; 0 where unknown).
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * PAGE_BYTES)
}

/// Runs forever: trims the heap when [`Trigger::due`] says so.
pub async fn trim_after_bursts(closed_total: impl Fn() -> u64, metrics: Metrics) {
    let mut trigger = Trigger {
        closed_at_last: 0,
        rss_after_last: resident_bytes(),
    };
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (closed, before) = (closed_total(), resident_bytes());
        if !trigger.due(closed, before) {
            continue;
        }
        let released = tokio::task::spawn_blocking(rmq_heap::trim)
            .await
            .unwrap_or(false);
        let after = resident_bytes();
        trigger.trimmed(closed, after);
        metrics
            .heap_trims
            .with_label_values(&[if released { "released" } else { "nothing" }])
            .inc();
        tracing::debug!(
            closed_connections = closed,
            rss_before_mib = before >> 20,
            rss_after_mib = after >> 20,
            released,
            "heap trimmed after connections closed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_closed_connections_or_a_grown_heap_makes_the_next_check_trim() {
        let mut t = Trigger::default();
        assert!(!t.due(TRIM_AFTER_CLOSED - 1, 10 << 20));
        assert!(t.due(TRIM_AFTER_CLOSED, 10 << 20));
        t.trimmed(TRIM_AFTER_CLOSED, 10 << 20);
        // Counted from the last trim, not from the start.
        assert!(!t.due(TRIM_AFTER_CLOSED + 10, 10 << 20));
        assert!(t.due(2 * TRIM_AFTER_CLOSED, 10 << 20));
        // Growth since the last trim, with no connection closed.
        assert!(!t.due(TRIM_AFTER_CLOSED, (10 << 20) + TRIM_AFTER_GROWTH - 1));
        assert!(t.due(TRIM_AFTER_CLOSED, (10 << 20) + TRIM_AFTER_GROWTH));
    }
}

//! Counters of the sealed gossip transport, and the rate limiter for its warnings.
//!
//! Everything a remote peer can trigger (a packet that fails to open, a bad frame) is counted
//! and logged at most once per [`WARN_INTERVAL`] per reason.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Least time between two warnings for the same reason.
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Live counters, shared between the transport and whoever reports them.
#[derive(Debug, Default)]
pub struct GossipStats {
    sent_datagrams: AtomicU64,
    sent_bytes: AtomicU64,
    received_datagrams: AtomicU64,
    received_bytes: AtomicU64,
    dropped_malformed: AtomicU64,
    dropped_authentication: AtomicU64,
    dropped_stale: AtomicU64,
    dropped_replay: AtomicU64,
    dropped_frame: AtomicU64,
    dropped_oversize: AtomicU64,
    dropped_unknown_relay: AtomicU64,
    send_errors: AtomicU64,
}

/// A copy of [`GossipStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GossipStatsSnapshot {
    /// Sealed datagrams sent.
    pub sent_datagrams: u64,
    pub sent_bytes: u64,
    /// Sealed datagrams received that opened.
    pub received_datagrams: u64,
    pub received_bytes: u64,
    /// Too short, too long or of an unknown version.
    pub dropped_malformed: u64,
    /// Wrong key, wrong cluster id or tampered.
    pub dropped_authentication: u64,
    /// Timestamp outside the accepted clock skew.
    pub dropped_stale: u64,
    pub dropped_replay: u64,
    /// Opened but with a bad fragment header.
    pub dropped_frame: u64,
    /// Outgoing datagrams too large even to fragment.
    pub dropped_oversize: u64,
    /// Inner datagrams from a loopback address that is not one of our relays.
    pub dropped_unknown_relay: u64,
    pub send_errors: u64,
}

impl GossipStatsSnapshot {
    /// Incoming packets dropped because they failed to open.
    pub fn dropped_unopened(&self) -> u64 {
        self.dropped_malformed + self.dropped_authentication + self.dropped_stale + self.dropped_replay
    }
}

/// What a counter is bumped for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Event {
    Sent { bytes: usize },
    Received { bytes: usize },
    Malformed,
    Authentication,
    Stale,
    Replay,
    Frame,
    Oversize,
    UnknownRelay,
    SendError,
}

impl GossipStats {
    pub(crate) fn record(&self, event: Event) {
        let add = |counter: &AtomicU64, n: u64| {
            counter.fetch_add(n, Ordering::Relaxed);
        };
        match event {
            Event::Sent { bytes } => {
                add(&self.sent_datagrams, 1);
                add(&self.sent_bytes, bytes as u64);
            }
            Event::Received { bytes } => {
                add(&self.received_datagrams, 1);
                add(&self.received_bytes, bytes as u64);
            }
            Event::Malformed => add(&self.dropped_malformed, 1),
            Event::Authentication => add(&self.dropped_authentication, 1),
            Event::Stale => add(&self.dropped_stale, 1),
            Event::Replay => add(&self.dropped_replay, 1),
            Event::Frame => add(&self.dropped_frame, 1),
            Event::Oversize => add(&self.dropped_oversize, 1),
            Event::UnknownRelay => add(&self.dropped_unknown_relay, 1),
            Event::SendError => add(&self.send_errors, 1),
        }
    }

    pub fn snapshot(&self) -> GossipStatsSnapshot {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        GossipStatsSnapshot {
            sent_datagrams: get(&self.sent_datagrams),
            sent_bytes: get(&self.sent_bytes),
            received_datagrams: get(&self.received_datagrams),
            received_bytes: get(&self.received_bytes),
            dropped_malformed: get(&self.dropped_malformed),
            dropped_authentication: get(&self.dropped_authentication),
            dropped_stale: get(&self.dropped_stale),
            dropped_replay: get(&self.dropped_replay),
            dropped_frame: get(&self.dropped_frame),
            dropped_oversize: get(&self.dropped_oversize),
            dropped_unknown_relay: get(&self.dropped_unknown_relay),
            send_errors: get(&self.send_errors),
        }
    }
}

/// Allows one log line per reason per [`WARN_INTERVAL`].
#[derive(Debug, Default)]
pub(crate) struct WarnLimiter {
    last: HashMap<&'static str, Instant>,
}

impl WarnLimiter {
    /// Whether a warning for `reason` may be logged at `now` (and if so, records it).
    pub(crate) fn allow(&mut self, reason: &'static str, now: Instant) -> bool {
        match self.last.get(reason) {
            Some(last) if now.saturating_duration_since(*last) < WARN_INTERVAL => false,
            _ => {
                self.last.insert(reason, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_rate_limited_per_reason() {
        let mut limiter = WarnLimiter::default();
        let t0 = Instant::now();
        assert!(limiter.allow("stale", t0));
        assert!(!limiter.allow("stale", t0 + Duration::from_secs(9)));
        assert!(limiter.allow("replay", t0 + Duration::from_secs(9)));
        assert!(limiter.allow("stale", t0 + Duration::from_secs(10)));
    }

    #[test]
    fn counters_add_up() {
        let stats = GossipStats::default();
        stats.record(Event::Sent { bytes: 100 });
        stats.record(Event::Authentication);
        stats.record(Event::Replay);
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.sent_bytes, 100);
        assert_eq!(snapshot.dropped_unopened(), 2);
    }
}

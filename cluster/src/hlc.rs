//! Hybrid logical clock: versions that follow wall time but never go backwards.
//!
//! A [`Version`] is `(wall_ms, counter, node)`, compared in that order. The clock takes
//! wall time as a parameter; it issues strictly increasing versions even if the wall
//! clock stalls or steps back, and after [`Hlc::observe`] every version it issues is
//! greater than the observed one, so a node's write always supersedes what it has seen.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A totally ordered version stamp: wall time in ms, a counter within that ms, and the
/// writing node's id as the final tie-breaker. Displayed as `1732390000000.3@ab12`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    pub wall_ms: u64,
    pub counter: u32,
    pub node: u64,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}@{:x}", self.wall_ms, self.counter, self.node)
    }
}

impl Version {
    /// The (wall_ms, counter) pair that follows this one. Saturates at the largest
    /// representable pair, which no real clock reaches.
    fn successor(self) -> (u64, u32) {
        match self.counter.checked_add(1) {
            Some(counter) => (self.wall_ms, counter),
            None => match self.wall_ms.checked_add(1) {
                Some(wall_ms) => (wall_ms, 0),
                None => (self.wall_ms, self.counter),
            },
        }
    }
}

/// One node's hybrid logical clock.
#[derive(Debug, Clone)]
pub struct Hlc {
    node: u64,
    last: Version,
}

impl Hlc {
    pub fn new(node: u64) -> Self {
        Self { node, last: Version { node, ..Version::default() } }
    }

    /// This clock's node id.
    pub fn node(&self) -> u64 {
        self.node
    }

    /// The last version issued or observed (with this node's id).
    pub fn last(&self) -> Version {
        self.last
    }

    /// Issues a new version, strictly greater than every earlier one from this clock and
    /// every version passed to [`Hlc::observe`].
    pub fn now(&mut self, wall_ms: u64) -> Version {
        let (wall_ms, counter) = if wall_ms > self.last.wall_ms { (wall_ms, 0) } else { self.last.successor() };
        self.last = Version { wall_ms, counter, node: self.node };
        self.last
    }

    /// Takes in a version seen from a peer so that later local versions exceed it.
    ///
    /// A peer whose wall clock runs ahead drags this clock ahead with it (standard HLC
    /// behaviour); bounding that drift is the caller's policy.
    pub fn observe(&mut self, remote: Version, wall_ms: u64) {
        let (wall_ms, counter) =
            (self.last.wall_ms, self.last.counter).max((remote.wall_ms, remote.counter)).max((wall_ms, 0));
        // `now` steps strictly past this pair, so its next version also beats a remote
        // with the same (wall_ms, counter) and a larger node id.
        self.last = Version { wall_ms, counter, node: self.node };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(wall_ms: u64, counter: u32, node: u64) -> Version {
        Version { wall_ms, counter, node }
    }

    #[test]
    fn display() {
        assert_eq!(v(1_732_390_000_000, 3, 0xab12).to_string(), "1732390000000.3@ab12");
        assert_eq!(Version::default().to_string(), "0.0@0");
    }

    #[test]
    fn order_is_wall_then_counter_then_node() {
        assert!(v(1, 9, 9) < v(2, 0, 0));
        assert!(v(2, 0, 9) < v(2, 1, 0));
        assert!(v(2, 1, 0) < v(2, 1, 1));
    }

    #[test]
    fn now_follows_wall_clock_and_counts_within_a_millisecond() {
        let mut hlc = Hlc::new(7);
        assert_eq!(hlc.now(100), v(100, 0, 7));
        assert_eq!(hlc.now(100), v(100, 1, 7));
        assert_eq!(hlc.now(101), v(101, 0, 7));
    }

    #[test]
    fn now_is_monotonic_when_wall_clock_goes_back() {
        let mut hlc = Hlc::new(1);
        let a = hlc.now(1_000);
        let b = hlc.now(500);
        let c = hlc.now(999);
        assert!(a < b && b < c);
        assert_eq!(c, v(1_000, 2, 1));
    }

    #[test]
    fn observe_makes_later_versions_greater() {
        let mut hlc = Hlc::new(1);
        hlc.now(100);
        let remote = v(5_000, 4, 2);
        hlc.observe(remote, 200);
        let next = hlc.now(200);
        assert!(next > remote);
        assert_eq!(next, v(5_000, 5, 1));
        // Same (wall, counter) but a larger remote node id.
        let mut hlc = Hlc::new(1);
        hlc.now(100);
        hlc.observe(v(100, 0, 9), 100);
        assert!(hlc.now(100) > v(100, 0, 9));
    }

    #[test]
    fn observe_of_older_version_changes_nothing() {
        let mut hlc = Hlc::new(1);
        let a = hlc.now(1_000);
        hlc.observe(v(10, 99, 2), 900);
        assert_eq!(hlc.last(), a);
        assert_eq!(hlc.now(900), v(1_000, 1, 1));
    }

    #[test]
    fn counter_overflow_moves_to_next_millisecond() {
        let mut hlc = Hlc::new(1);
        hlc.observe(v(10, u32::MAX, 2), 0);
        assert_eq!(hlc.now(0), v(11, 0, 1));
    }

    #[test]
    fn extreme_remote_does_not_panic() {
        let mut hlc = Hlc::new(1);
        hlc.observe(v(u64::MAX, u32::MAX, 2), 0);
        assert_eq!(hlc.now(u64::MAX), v(u64::MAX, u32::MAX, 1));
    }
}

//! Last-writer-wins records: the merge rule of the replicated store.
//!
//! Every key holds one [`Record`]; a delete is a tombstone record, so it replicates and
//! wins like any write. Replicas that receive the same set of records in any order, any
//! number of times, end with the record of the greatest [`Version`].

use serde::{Deserialize, Serialize};

use crate::Version;

/// A value (or tombstone) stamped with the version of the write that produced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record<T> {
    pub version: Version,
    pub deleted: bool,
    pub value: Option<T>,
}

impl<T> Record<T> {
    /// A live record holding `value`.
    pub fn live(version: Version, value: T) -> Self {
        Self { version, deleted: false, value: Some(value) }
    }

    /// A tombstone: the key was deleted at `version`.
    pub fn tombstone(version: Version) -> Self {
        Self { version, deleted: true, value: None }
    }
}

/// Whether `incoming` should replace `local`: it wins if there is no local record or its
/// version is strictly greater. On equal versions the local record is kept, so applying
/// a record twice is a no-op.
pub fn merge<T: Clone>(local: Option<&Record<T>>, incoming: &Record<T>) -> bool {
    local.is_none_or(|local| incoming.version > local.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(wall_ms: u64, counter: u32, node: u64) -> Version {
        Version { wall_ms, counter, node }
    }

    #[test]
    fn first_write_wins_over_nothing() {
        assert!(merge(None, &Record::live(v(1, 0, 1), "a")));
    }

    #[test]
    fn greater_version_wins_and_equal_keeps_local() {
        let old = Record::live(v(1, 0, 1), "old");
        let new = Record::live(v(1, 1, 1), "new");
        assert!(merge(Some(&old), &new));
        assert!(!merge(Some(&new), &old));
        let same_version_other_value = Record::live(v(1, 1, 1), "other");
        assert!(!merge(Some(&new), &same_version_other_value));
    }

    #[test]
    fn node_id_breaks_ties_between_writers() {
        let a = Record::live(v(5, 0, 1), "from-1");
        let b = Record::live(v(5, 0, 2), "from-2");
        assert!(merge(Some(&a), &b));
        assert!(!merge(Some(&b), &a));
    }

    #[test]
    fn tombstone_wins_like_a_write() {
        let live = Record::live(v(1, 0, 1), 42);
        let dead = Record::tombstone(v(2, 0, 1));
        assert!(merge(Some(&live), &dead));
        assert!(!merge(Some(&dead), &live));
    }
}

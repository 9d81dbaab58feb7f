//! The one merge rule of the replicated store.
//!
//! Two questions are answered here and nowhere else: given the local version of a key and a
//! version seen elsewhere, is the other one worth pulling, and when an entry arrives, what does
//! the key hold afterwards ([`compare`], [`resolve`]). Every [`Storage`](super::Storage) calls
//! [`resolve`] inside its write transaction, and anti-entropy calls [`compare`] to decide what
//! to pull, so the store, the wire and the tests agree by construction.
//!
//! Keyspaces merge in one of two ways ([`Mode`]):
//! - **last writer wins** by [`Version`] (a hybrid logical clock stamp): the greater version
//!   replaces the smaller one, tombstones included; equal versions keep the local entry, so a
//!   re-delivered entry changes nothing;
//! - **join**: values form a join semi-lattice ([`Merge::join`]; the node's Job records are a
//!   grow-only union within a generation). The version is a fingerprint of the content, only
//!   compared for equality: any difference is worth a pull, and the entries are joined.
//!
//! Either way the merge is commutative, associative and idempotent, so replicas that receive
//! the same entries in any order, any number of times, hold the same state
//! (`cluster/tests/merge_properties.rs`).

use super::entry::Entry;
use crate::Version;

/// How the values of a key combine when two replicas differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The entry with the greater version replaces the other.
    Lww,
    /// The values are joined ([`Merge::join`]); versions are content fingerprints.
    Join,
}

/// What a replicated value type tells the merge rule.
///
/// For a last-writer-wins-only type the defaults are all there is to implement.
pub trait Merge: Clone {
    /// How values of `key` merge. The default: last writer wins.
    fn mode(_key: &str) -> Mode {
        Mode::Lww
    }

    /// Joins `other` into `self` (keys whose [`Merge::mode`] is [`Mode::Join`] only). Returns
    /// the fingerprint of the joined value if `self` changed, `None` if it already covered
    /// `other`. The join must be commutative, associative and idempotent, and the fingerprint
    /// a function of the content alone. The default never changes anything.
    fn join(&mut self, _other: &Self) -> Option<Version> {
        None
    }
}

/// What an incoming version means for a key, given the local version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The local entry stays (it is as new, or newer, or the same content).
    Keep,
    /// The incoming entry replaces the local one (or fills an absent key).
    Take,
    /// The contents differ: join them.
    Join,
}

/// Compares a local version of a key (`None`: the key is absent here) with one seen
/// elsewhere. `Keep` means there is nothing to pull.
pub fn compare(mode: Mode, local: Option<Version>, incoming: Version) -> Verdict {
    match (mode, local) {
        (_, None) => Verdict::Take,
        (Mode::Lww, Some(local)) if incoming > local => Verdict::Take,
        (Mode::Lww, Some(_)) => Verdict::Keep,
        (Mode::Join, Some(local)) if incoming == local => Verdict::Keep,
        (Mode::Join, Some(_)) => Verdict::Join,
    }
}

/// The one merge rule: what the key of `incoming` holds once `incoming` arrives where it held
/// `local`. `None` when the local entry stays as it is; otherwise the entry to store.
pub fn resolve<V: Merge>(local: Option<&Entry<V>>, incoming: Entry<V>) -> Option<Entry<V>> {
    debug_assert!(local.is_none_or(|l| l.key == incoming.key), "resolve of two different keys");
    let mode = V::mode(&incoming.key);
    match compare(mode, local.map(|l| l.version), incoming.version) {
        Verdict::Keep => None,
        Verdict::Take => Some(incoming),
        Verdict::Join => {
            let local = local?;
            match (&local.value, incoming.value) {
                (Some(mine), Some(theirs)) => {
                    let mut joined = mine.clone();
                    let version = joined.join(&theirs)?;
                    Some(Entry { key: incoming.key, version, deleted: false, value: Some(joined) })
                }
                // An empty local entry is covered by any content.
                (None, Some(theirs)) => Some(Entry { value: Some(theirs), ..incoming }),
                // Nothing to add.
                (_, None) => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn v(wall_ms: u64, counter: u32, node: u64) -> Version {
        Version { wall_ms, counter, node }
    }

    #[derive(Clone, Debug, PartialEq)]
    struct Text(&'static str);
    impl Merge for Text {}

    #[derive(Clone, Debug, PartialEq)]
    struct Set(BTreeSet<u8>);
    impl Set {
        fn fingerprint(&self) -> Version {
            v(self.0.len() as u64, 0, self.0.iter().fold(0, |h, x| h * 257 + u64::from(*x) + 1))
        }
    }
    impl Merge for Set {
        fn mode(_key: &str) -> Mode {
            Mode::Join
        }
        fn join(&mut self, other: &Self) -> Option<Version> {
            let before = self.0.len();
            self.0.extend(other.0.iter().copied());
            (self.0.len() != before).then(|| self.fingerprint())
        }
    }

    #[test]
    fn greater_version_wins_and_equal_keeps_local() {
        let old = Entry::live("k", v(1, 0, 1), Text("old"));
        let new = Entry::live("k", v(1, 1, 1), Text("new"));
        assert_eq!(resolve(None, old.clone()), Some(old.clone()), "first write fills the key");
        assert_eq!(resolve(Some(&old), new.clone()), Some(new.clone()));
        assert_eq!(resolve(Some(&new), old.clone()), None);
        assert_eq!(resolve(Some(&new), new.clone()), None, "re-delivery changes nothing");
        assert_eq!(resolve(Some(&new), Entry::live("k", v(1, 1, 1), Text("other"))), None);
    }

    #[test]
    fn node_id_breaks_ties_and_tombstones_win_like_writes() {
        let a = Entry::live("k", v(5, 0, 1), Text("from-1"));
        let b = Entry::live("k", v(5, 0, 2), Text("from-2"));
        assert_eq!(resolve(Some(&a), b.clone()), Some(b.clone()));
        assert_eq!(resolve(Some(&b), a), None);
        let dead = Entry::tombstone("k", v(6, 0, 1));
        assert_eq!(resolve(Some(&b), dead.clone()), Some(dead.clone()));
        assert_eq!(resolve(Some(&dead), b), None);
    }

    #[test]
    fn join_keyspaces_join_differing_content_and_keep_equal() {
        let set = |xs: &[u8]| Set(xs.iter().copied().collect());
        let entry = |s: Set| Entry::live("j", s.fingerprint(), s);
        let a = entry(set(&[1, 2]));
        let b = entry(set(&[2, 3]));
        let joined = resolve(Some(&a), b.clone()).expect("differing content joins");
        assert_eq!(joined, entry(set(&[1, 2, 3])));
        assert_eq!(resolve(Some(&joined), a.clone()), None, "covered content changes nothing");
        assert_eq!(resolve(Some(&a), a.clone()), None);
        assert_eq!(compare(Mode::Join, Some(a.version), b.version), Verdict::Join);
        assert_eq!(compare(Mode::Join, Some(a.version), a.version), Verdict::Keep);
        // A smaller fingerprint is still worth a pull: join versions are not ordered.
        assert_eq!(compare(Mode::Join, Some(v(9, 0, 0)), v(1, 0, 0)), Verdict::Join);
        assert_eq!(compare(Mode::Lww, Some(v(9, 0, 0)), v(1, 0, 0)), Verdict::Keep);
    }
}

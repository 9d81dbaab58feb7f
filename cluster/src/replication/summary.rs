//! What a replica holds, in brief: every key with its version ([`Summary`]), and a short hash
//! of that ([`SummaryDigest`]) small enough to gossip.
//!
//! Anti-entropy starts from the digests in gossip: a peer whose digest differs from this
//! node's is asked for its summary, and the keys it holds newer (or, in a join keyspace,
//! different) are pulled ([`Summary::wanted`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::entry::Key;
use super::merge::{Merge, Verdict, compare};
use crate::Version;

/// Every key of a replica with its version (tombstones included), sorted by key, one
/// version per key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<(Key, Version)>", into = "Vec<(Key, Version)>")]
pub struct Summary {
    entries: Vec<(Key, Version)>,
}

impl From<Vec<(Key, Version)>> for Summary {
    fn from(entries: Vec<(Key, Version)>) -> Self {
        Summary::new(entries)
    }
}

impl From<Summary> for Vec<(Key, Version)> {
    fn from(summary: Summary) -> Self {
        summary.entries
    }
}

impl FromIterator<(Key, Version)> for Summary {
    fn from_iter<I: IntoIterator<Item = (Key, Version)>>(iter: I) -> Self {
        Summary::new(iter.into_iter().collect())
    }
}

impl Summary {
    /// Sorts `entries` by key; of duplicate keys (only a confused or hostile peer sends
    /// them) the greatest version stays.
    pub fn new(mut entries: Vec<(Key, Version)>) -> Self {
        entries.sort_unstable();
        // Sorted by (key, version): the last of each run of a key is its greatest version.
        entries.reverse();
        entries.dedup_by(|later, kept| later.0 == kept.0);
        entries.reverse();
        Summary { entries }
    }

    /// The keys and versions, sorted by key.
    pub fn entries(&self) -> &[(Key, Version)] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The version of `key`, if the replica holds it.
    pub fn get(&self, key: &str) -> Option<Version> {
        self.entries.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok().map(|i| self.entries[i].1)
    }

    /// The keys of `theirs` worth pulling into the replica this summary describes: absent
    /// here, newer there, or (join keyspaces) different. Sorted by key.
    pub fn wanted<V: Merge>(&self, theirs: &Summary) -> Vec<Key> {
        let mut mine = self.entries.iter().peekable();
        let mut out = Vec::new();
        // Both are sorted by key: one merge walk.
        for (key, version) in &theirs.entries {
            while mine.next_if(|(k, _)| k < key).is_some() {}
            let local = mine.next_if(|(k, _)| k == key).map(|(_, v)| *v);
            if compare(V::mode(key), local, *version) != Verdict::Keep {
                out.push(key.clone());
            }
        }
        out
    }

    /// A short hash of the whole summary: equal digests mean equal replicas.
    pub fn digest(&self) -> SummaryDigest {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        for (k, v) in &self.entries {
            h.update(k.as_bytes());
            h.update(v.wall_ms.to_be_bytes());
            h.update(v.counter.to_be_bytes());
            h.update(v.node.to_be_bytes());
        }
        let mut out = [0u8; SummaryDigest::LEN];
        out.copy_from_slice(&h.finalize()[..SummaryDigest::LEN]);
        SummaryDigest(out)
    }
}

/// The first 12 bytes of the sha256 of a [`Summary`]; shown (and gossiped) as 24 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SummaryDigest(pub [u8; SummaryDigest::LEN]);

impl SummaryDigest {
    pub const LEN: usize = 12;
}

impl fmt::Display for SummaryDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// A digest that is not 24 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a summary digest is {} hex digits", SummaryDigest::LEN * 2)]
pub struct DigestParseError;

impl FromStr for SummaryDigest {
    type Err = DigestParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; SummaryDigest::LEN];
        hex::decode_to_slice(s, &mut out).map_err(|_| DigestParseError)?;
        Ok(SummaryDigest(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::merge::Mode;

    fn v(wall_ms: u64) -> Version {
        Version { wall_ms, counter: 0, node: 1 }
    }

    #[derive(Clone)]
    struct Lww;
    impl Merge for Lww {}

    #[derive(Clone)]
    struct Jobs;
    impl Merge for Jobs {
        fn mode(key: &str) -> Mode {
            if key.starts_with("job/") { Mode::Join } else { Mode::Lww }
        }
    }

    fn summary(entries: &[(&str, u64)]) -> Summary {
        entries.iter().map(|(k, w)| (k.to_string(), v(*w))).collect()
    }

    #[test]
    fn wanted_is_what_is_absent_or_newer_there() {
        let mine = summary(&[("a", 5), ("b", 5), ("d", 1), ("job/x", 7)]);
        let theirs = summary(&[("a", 4), ("b", 6), ("c", 1), ("d", 1), ("job/x", 3), ("job/y", 1)]);
        assert_eq!(mine.wanted::<Lww>(&theirs), ["b", "c", "job/y"]);
        assert_eq!(mine.wanted::<Jobs>(&theirs), ["b", "c", "job/x", "job/y"]);
        assert!(mine.wanted::<Jobs>(&mine).is_empty());
    }

    #[test]
    fn duplicate_keys_keep_the_greatest_version_and_order_does_not_matter() {
        let a = summary(&[("b", 1), ("a", 2), ("b", 3), ("b", 2)]);
        assert_eq!(a.entries(), &[("a".to_string(), v(2)), ("b".to_string(), v(3))]);
        assert_eq!(a.get("b"), Some(v(3)));
        assert_eq!(a.get("c"), None);
        assert_eq!(a.digest(), summary(&[("a", 2), ("b", 3)]).digest());
        assert_ne!(a.digest(), summary(&[("a", 2), ("b", 4)]).digest());
    }

    #[test]
    fn digest_round_trips_as_hex() {
        let d = summary(&[("a", 1)]).digest();
        let text = d.to_string();
        assert_eq!(text.len(), 24);
        assert_eq!(text.parse::<SummaryDigest>(), Ok(d));
        assert!("xyz".parse::<SummaryDigest>().is_err());
        assert!(format!("{text}00").parse::<SummaryDigest>().is_err());
    }

    #[test]
    fn digest_is_stable_across_versions() {
        // Nodes gossip this digest and compare it for "in sync": changing the function makes
        // nodes of two versions disagree forever. (The node store computed the same before
        // replication moved here.)
        let s = summary(&[("Deployment/default/x", 3), ("tag/hello:1.0", 9)]);
        assert_eq!(s.digest().to_string(), "bd2a6e5c1732acc212a5e481");
    }
}

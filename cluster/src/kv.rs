//! Replicated key-value buckets, the pure parts: which nodes own a key, the version that orders
//! its writes and the one merge rule, the majority a primary needs, and the messages.
//!
//! - **Owners.** Each key (`bucket`, `key`) lives on the first `copies` live nodes in
//!   rendezvous order for it ([`owners`]); the first is its *primary*. Ownership moves only
//!   when an owner dies or a better-ranked node joins.
//! - **One writer per key.** Every write (set, delete, increment) is executed by the primary,
//!   which orders it after the newest version any live owner holds (it reads them all once
//!   after every change of membership: a new primary continues from the last acknowledged
//!   write, which at least one live owner has), stores it durably, copies it to the other
//!   owners and answers once [`write_quorum`] copies are durable. An increment is therefore
//!   applied once, in one order, and an acknowledged one is never lost while fewer than the
//!   acknowledging copies die.
//! - **A majority.** A primary executes writes only while it sees a majority of the cluster's
//!   members alive ([`has_quorum`]): during a partition the minority side refuses writes and
//!   atomics (the guest gets an error) instead of diverging; reads are served from any owner.
//! - **Versions.** `(counter, node)`: the primary takes the counter after the newest it knows;
//!   a copy keeps the greater version ([`KvEntry::newer_than`]); a delete is a tombstone.

use serde::{Deserialize, Serialize};

/// Copies of each key, when there are that many live nodes.
pub const DEFAULT_COPIES: usize = 3;

/// The order of a key's writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KvVersion {
    pub counter: u64,
    /// The writing primary (a hash of its id): breaks ties between two primaries that
    /// disagreed for a moment.
    pub node: u64,
}

/// One key's value (None: deleted) and version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    #[serde(with = "serde_bytes_opt")]
    pub value: Option<Vec<u8>>,
    pub version: KvVersion,
}

impl KvEntry {
    /// Whether this entry wins over `other` (none: it does).
    pub fn newer_than(&self, other: Option<&KvEntry>) -> bool {
        other.is_none_or(|o| self.version > o.version)
    }
}

/// A write the primary executes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOp {
    Set(#[serde(with = "serde_bytes_vec")] Vec<u8>),
    Delete,
    Increment(u64),
    /// Set if the key's version is still `expected` (None: never written).
    Swap {
        expected: Option<KvVersion>,
        #[serde(with = "serde_bytes_vec")]
        value: Vec<u8>,
    },
}

/// A request between nodes (mesh call channel [`KV_CHANNEL`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvRequest {
    /// To the primary: execute a write.
    Execute { bucket: String, key: String, op: KvOp },
    /// To an owner: its entry (a read from a node that does not hold the key; a new primary
    /// catching up).
    Read { bucket: String, key: String },
    /// To an owner: keep this entry if it is newer, durably.
    Put { bucket: String, key: String, entry: KvEntry },
    /// To every node: the keys it holds of a bucket.
    List { bucket: String },
}

/// The answer to a [`KvRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvReply {
    /// A write done: the counter's new value for an increment.
    Done {
        counter: Option<u64>,
    },
    /// A swap not done: the key changed since its version was read.
    Conflict,
    Entry(Option<KvEntry>),
    Stored,
    /// A bucket's keys on a node: each with its version and whether it has a value.
    Listed(Vec<(String, KvVersion, bool)>),
    /// Refused (no majority, not the primary, a bad value): the guest sees the message.
    Refused(String),
}

/// The mesh call channel of key-value requests.
pub const KV_CHANNEL: u8 = 2;

/// A node id's tag in versions and rendezvous weights (FNV-1a, 64 bits).
pub fn node_tag(node: &str) -> u64 {
    fnv(&[node.as_bytes()])
}

fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // A final mix: FNV's low bits are weak for rendezvous.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// The owners of `key` in `bucket` among `live` nodes: the first `copies` in rendezvous
/// order, the primary first.
pub fn owners<'a>(bucket: &str, key: &str, live: impl IntoIterator<Item = &'a str>, copies: usize) -> Vec<String> {
    let mut ranked: Vec<(u64, &str)> =
        live.into_iter().map(|n| (fnv(&[bucket.as_bytes(), key.as_bytes(), n.as_bytes()]), n)).collect();
    ranked.sort_by(|a, b| b.cmp(a));
    ranked.dedup_by(|a, b| a.1 == b.1);
    ranked.into_iter().take(copies).map(|(_, n)| n.to_string()).collect()
}

/// Whether `live` of `members` (alive or not, this node included) is a majority.
pub fn has_quorum(live: usize, members: usize) -> bool {
    live * 2 > members
}

/// Copies a write needs before it is acknowledged: 2, or all owners when fewer.
pub fn write_quorum(owners: usize) -> usize {
    owners.min(2)
}

mod serde_bytes_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&Bytes(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let v: Option<super::serde_bytes_vec::Owned> = Option::deserialize(d)?;
        Ok(v.map(|o| o.0))
    }

    struct Bytes<'a>(&'a [u8]);

    impl serde::Serialize for Bytes<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }
}

mod serde_bytes_vec {
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Owned::deserialize(d).map(|o| o.0)
    }

    /// Bytes that deserialize from a byte string (or, leniently, a sequence of numbers).
    pub struct Owned(pub Vec<u8>);

    impl<'de> Deserialize<'de> for Owned {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Owned, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Owned;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Owned, E> {
                    Ok(Owned(v.to_vec()))
                }
                fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Owned, E> {
                    Ok(Owned(v))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Owned, A::Error> {
                    let mut out = Vec::new();
                    while let Some(b) = seq.next_element::<u8>()? {
                        out.push(b);
                    }
                    Ok(Owned(out))
                }
            }
            d.deserialize_byte_buf(V)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_a_stable_prefix_of_the_live_nodes() {
        let nodes = ["a", "b", "c", "d", "e"];
        let all = owners("ns/b", "k", nodes, 5);
        let three = owners("ns/b", "k", nodes, 3);
        assert_eq!(three, all[..3]);
        // Losing a non-owner changes nothing; losing the primary promotes the second.
        let without: Vec<&str> = nodes.into_iter().filter(|n| *n != all[4]).collect();
        assert_eq!(owners("ns/b", "k", without, 3), three);
        let without: Vec<&str> = nodes.into_iter().filter(|n| *n != all[0]).collect();
        assert_eq!(owners("ns/b", "k", without, 3), all[1..4]);
        assert_eq!(owners("ns/b", "k", ["a"], 3), ["a"]);
        // Keys spread over nodes.
        let primaries: std::collections::BTreeSet<String> =
            (0..100).map(|i| owners("ns/b", &format!("k{i}"), nodes, 1).remove(0)).collect();
        assert_eq!(primaries.len(), 5);
    }

    #[test]
    fn the_newer_version_wins_and_a_majority_is_strict() {
        let e = |counter, node| KvEntry { value: Some(vec![1]), version: KvVersion { counter, node } };
        assert!(e(2, 0).newer_than(Some(&e(1, 9))));
        assert!(e(2, 5).newer_than(Some(&e(2, 4))));
        assert!(!e(2, 4).newer_than(Some(&e(2, 4))));
        assert!(e(1, 0).newer_than(None));
        assert!(has_quorum(2, 3) && has_quorum(3, 5) && has_quorum(1, 1));
        assert!(!has_quorum(2, 4) && !has_quorum(2, 5) && !has_quorum(1, 2));
        assert_eq!((write_quorum(3), write_quorum(1)), (2, 1));
    }

    #[test]
    fn messages_carry_values_as_bytes() {
        let req = KvRequest::Put {
            bucket: "ns/b".into(),
            key: "k".into(),
            entry: KvEntry { value: Some(vec![0, 200, 255]), version: KvVersion { counter: 3, node: 7 } },
        };
        let bytes = rmp_serde::to_vec_named(&req).unwrap();
        assert_eq!(rmp_serde::from_slice::<KvRequest>(&bytes).unwrap(), req);
        let op = KvRequest::Execute { bucket: "b".into(), key: "k".into(), op: KvOp::Set(vec![9; 300]) };
        let bytes = rmp_serde::to_vec_named(&op).unwrap();
        assert!(bytes.len() < 360, "values travel as bytes, not as numbers: {}", bytes.len());
        assert_eq!(rmp_serde::from_slice::<KvRequest>(&bytes).unwrap(), op);
    }
}

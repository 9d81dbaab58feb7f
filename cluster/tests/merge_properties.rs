//! The merge rule is a join: commutative, associative and idempotent, in last-writer-wins and
//! join keyspaces alike, so replicas that receive the same entries in any order, any number
//! of times, end the same. And HLC versions increase past everything observed.

mod common;

use common::{SET_PREFIX, Val, set_entry};
use proptest::prelude::*;
use wasmfleet_cluster::replication::{Entry, MemoryStorage, Storage as _, resolve};
use wasmfleet_cluster::{Hlc, Version};

fn arb_version() -> impl Strategy<Value = Version> {
    (0u64..8, 0u32..4, 0u64..4).prop_map(|(wall_ms, counter, node)| Version { wall_ms, counter, node })
}

/// The entry a writer produces at a version: distinct versions never collide because the
/// node id is part of the version, and equal versions carry equal content (one write).
fn lww_at(version: Version) -> Entry<Val> {
    if version.counter % 3 == 2 {
        Entry::tombstone("k", version)
    } else {
        Entry::live(
            "k",
            version,
            Val::Text((version.wall_ms * 100 + u64::from(version.counter) * 10 + version.node) as u32),
        )
    }
}

fn arb_entry() -> impl Strategy<Value = Entry<Val>> {
    prop_oneof![arb_version().prop_map(lww_at), (0u64..64).prop_map(|m| set_entry("set/k", m))]
}

/// Two entries of one key, or of the other keyspace: the join of two replicas of a key.
fn arb_pair_same_key() -> impl Strategy<Value = (Entry<Val>, Entry<Val>, Entry<Val>)> {
    prop_oneof![
        (arb_version(), arb_version(), arb_version()).prop_map(|(a, b, c)| (lww_at(a), lww_at(b), lww_at(c))),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(a, b, c)| (
            set_entry("set/k", a),
            set_entry("set/k", b),
            set_entry("set/k", c)
        )),
    ]
}

/// `a ⊔ b`: what a replica holding `a` holds once `b` arrives.
fn join(a: &Entry<Val>, b: &Entry<Val>) -> Entry<Val> {
    resolve(Some(a), b.clone()).unwrap_or_else(|| a.clone())
}

proptest! {
    #[test]
    fn merge_is_commutative_associative_idempotent((a, b, c) in arb_pair_same_key()) {
        prop_assert_eq!(join(&a, &b), join(&b, &a), "commutative");
        prop_assert_eq!(join(&join(&a, &b), &c), join(&a, &join(&b, &c)), "associative");
        prop_assert_eq!(join(&a, &a), a.clone(), "idempotent");
        prop_assert_eq!(join(&join(&a, &b), &b), join(&a, &b), "re-delivery changes nothing");
        prop_assert_eq!(resolve(None, a.clone()), Some(a), "an absent key takes anything");
    }

    #[test]
    fn storages_fed_the_same_entries_in_any_order_end_the_same(
        (entries, shuffled) in proptest::collection::vec(arb_entry(), 1..16)
            .prop_flat_map(|es| (Just(es.clone()), Just(es).prop_shuffle())),
        repeats in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        split in any::<prop::sample::Index>(),
    ) {
        let one = MemoryStorage::<Val>::new();
        one.merge(entries.clone()).unwrap();
        // Another order, in two batches, with some entries delivered twice.
        let other = MemoryStorage::<Val>::new();
        let mut redelivered = shuffled;
        redelivered.extend(repeats.iter().map(|i| i.get(&entries).clone()));
        let (first, second) = redelivered.split_at(split.index(redelivered.len()));
        other.merge(first.to_vec()).unwrap();
        other.merge(second.to_vec()).unwrap();
        prop_assert_eq!(one.snapshot(), other.snapshot());
        prop_assert_eq!(one.digest().unwrap(), other.digest().unwrap());
        // Last writer wins holds the greatest version; the join holds the union.
        let lww_max = entries.iter().filter(|e| !e.key.starts_with(SET_PREFIX)).map(|e| e.version).max();
        prop_assert_eq!(one.get("k").map(|e| e.version), lww_max);
        let union = entries.iter().filter_map(|e| match e.value { Some(Val::Set(m)) => Some(m), _ => None }).reduce(|a, b| a | b);
        prop_assert_eq!(one.get("set/k").and_then(|e| e.value), union.map(Val::Set));
    }

    #[test]
    fn hlc_versions_increase_and_pass_observed(
        steps in proptest::collection::vec(
            (0u64..1_000, proptest::option::of((0u64..1_200, any::<u32>(), any::<u64>()))),
            1..40,
        ),
    ) {
        let mut hlc = Hlc::new(7);
        let mut prev = Version::default();
        let mut seen = Version::default();
        for (wall_ms, remote) in steps {
            if let Some((r_wall, counter, node)) = remote {
                let remote = Version { wall_ms: r_wall, counter, node };
                hlc.observe(remote, wall_ms);
                seen = seen.max(remote);
            }
            let next = hlc.now(wall_ms);
            prop_assert!(next > prev, "{} !> {}", next, prev);
            prop_assert!(next > seen, "{} !> observed {}", next, seen);
            prop_assert_eq!(next.node, 7);
            prev = next;
        }
    }
}

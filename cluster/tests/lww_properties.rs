//! Last-writer-wins converges: same records, any order, any repeats, same winner.

use proptest::prelude::*;
use wasmfleet_cluster::{Hlc, Record, Version, merge};

fn arb_version() -> impl Strategy<Value = Version> {
    (0u64..8, 0u32..4, 0u64..4).prop_map(|(wall_ms, counter, node)| Version { wall_ms, counter, node })
}

/// The record a writer produces at a version: distinct versions never collide because
/// the node id is part of the version; equal versions carry equal content.
fn record_at(version: Version) -> Record<String> {
    if version.counter % 3 == 2 { Record::tombstone(version) } else { Record::live(version, version.to_string()) }
}

fn apply(records: &[Record<String>]) -> Option<Record<String>> {
    let mut slot: Option<Record<String>> = None;
    for r in records {
        if merge(slot.as_ref(), r) {
            slot = Some(r.clone());
        }
    }
    slot
}

proptest! {
    #[test]
    fn merge_converges_to_max_version_in_any_order(
        (records, shuffled) in proptest::collection::vec(arb_version(), 1..12)
            .prop_map(|vs| vs.into_iter().map(record_at).collect::<Vec<_>>())
            .prop_flat_map(|rs| (Just(rs.clone()), Just(rs).prop_shuffle())),
        repeats in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let max = records.iter().map(|r| r.version).max().unwrap();
        let a = apply(&records);
        // Re-delivering records (idempotence) in another order changes nothing.
        let mut redelivered = shuffled.clone();
        redelivered.extend(repeats.iter().map(|i| i.get(&records).clone()));
        let b = apply(&redelivered);
        prop_assert_eq!(a.as_ref().map(|r| r.version), Some(max));
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(a, Some(record_at(max)));
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

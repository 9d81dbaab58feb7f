//! A workload planned larger than it runs (`WorkloadReq::planned`, a Deployment's revision
//! sets during a rollout) grows and shrinks within its plan without moving a replica.

use std::collections::BTreeMap;

use proptest::prelude::*;
use wasmfleet_scheduler::{NodeInfo, Slot, WorkloadKind, WorkloadReq, place};

const ZONES: [&str; 3] = ["north", "south", "west"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A workload planned at `planned` slots that grows or shrinks within its plan keeps every
    /// slot that stays on its node, when capacity does not bind (as a Deployment's revision
    /// sets do during a rollout); and while the plan fits the nodes, its replicas are on
    /// distinct nodes.
    #[test]
    fn resizing_within_the_plan_moves_nothing(
        zones in proptest::collection::vec(proptest::option::of(0..ZONES.len()), 1..12),
        planned in 1u32..16,
        a in 0u32..16,
        b in 0u32..16,
    ) {
        let nodes: Vec<NodeInfo> = zones
            .iter()
            .enumerate()
            .map(|(i, zone)| NodeInfo {
                id: format!("node-{i:02}"),
                labels: BTreeMap::new(),
                zone: zone.map(|z| ZONES[z].to_string()),
                arch: "x86_64".to_string(),
                memory_mib: 1 << 20,
                cpu_millis: 1 << 20,
                max_instances: 1000,
            })
            .collect();
        let set = |replicas: u32| WorkloadReq {
            key: "Deployment/default/web@0123456789".into(),
            kind: WorkloadKind::Deployment,
            replicas,
            memory_mib: 1,
            cpu_millis: 1,
            node_selector: BTreeMap::new(),
            arch: None,
            nodes: None,
            planned,
        };
        let (a, b) = (a.min(planned), b.min(planned));
        let before = place(&[set(a)], &nodes);
        let after = place(&[set(b)], &nodes);
        for index in 0..a.min(b) {
            let slot = Slot::new(set(a).key.clone(), index);
            prop_assert_eq!(before.node_of(&slot), after.node_of(&slot), "slot {} moved", index);
        }
        let mut on_node: BTreeMap<&str, u32> = BTreeMap::new();
        for index in 0..b {
            let node = after.node_of(&Slot::new(set(b).key.clone(), index)).expect("placed");
            *on_node.entry(node).or_default() += 1;
        }
        if planned as usize <= nodes.len() {
            prop_assert!(on_node.values().all(|n| *n == 1), "{} replicas crowded on {:?}", b, on_node);
        }
    }
}

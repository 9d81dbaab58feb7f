//! Scheduler throughput (criterion): full placement of 1 M replicas on 10 k nodes (goal
//! ≤ 10 s, i.e. ≥ 100 k placements/s), and re-placement after one node loss at 10 k nodes /
//! 100 k replicas (goal ≤ 50 ms), both as a fresh `place` over the survivors and through a
//! `Scheduler` that placed the fleet before the loss (what a node that keeps one does).
//!
//! `cargo bench --bench scheduler`; `-- --quick` for one sample each.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use wasmfleet_scheduler::{NodeInfo, Scheduler, WorkloadKind, WorkloadReq, place};

/// `count` nodes over 10 zones, with room for everything.
fn nodes(count: usize) -> Vec<NodeInfo> {
    (0..count)
        .map(|i| NodeInfo {
            id: format!("edge-{i:05}"),
            labels: BTreeMap::from([("site".to_string(), format!("site-{}", i % 100))]),
            zone: Some(format!("zone-{}", i % 10)),
            arch: "x86_64".into(),
            memory_mib: 1 << 20,
            cpu_millis: 1 << 20,
            max_instances: 10_000,
        })
        .collect()
}

/// `count` deployments of `replicas` replicas each (64 MiB, 100 m).
fn workloads(count: usize, replicas: u32) -> Vec<WorkloadReq> {
    (0..count)
        .map(|i| WorkloadReq {
            key: format!("Deployment/team-{}/app-{i:05}", i % 50),
            kind: WorkloadKind::Deployment,
            replicas,
            memory_mib: 64,
            cpu_millis: 100,
            node_selector: BTreeMap::new(),
            arch: None,
        })
        .collect()
}

fn full(c: &mut Criterion) {
    let nodes = nodes(10_000);
    let workloads = workloads(10_000, 100);
    let mut g = c.benchmark_group("place");
    g.sample_size(10).measurement_time(Duration::from_secs(20)).warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(1_000_000));
    g.bench_function("1M replicas on 10k nodes", |b| b.iter(|| black_box(place(&workloads, &nodes))));
    g.finish();
}

fn after_loss(c: &mut Criterion) {
    let mut nodes = nodes(10_000);
    let workloads = workloads(1_000, 100);
    let mut scheduler = Scheduler::new();
    let before = scheduler.place(&workloads, &nodes).clone();
    let lost = nodes.remove(4_321);
    let mut g = c.benchmark_group("replace");
    g.sample_size(20);
    g.throughput(Throughput::Elements(100_000));
    g.bench_function("100k replicas on 10k nodes minus one, Scheduler", |b| {
        // Each run starts from the state before the loss; the copy and its drop are not timed.
        b.iter_batched(
            || scheduler.clone(),
            |mut scheduler| {
                black_box(scheduler.place(&workloads, &nodes));
                scheduler
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("100k replicas on 10k nodes minus one, fresh place", |b| {
        b.iter(|| black_box(place(&workloads, &nodes)))
    });
    g.finish();
    let after = place(&workloads, &nodes);
    assert_eq!(scheduler.place(&workloads, &nodes), &after, "the scheduler must agree with place");
    let moved = before.assignments.iter().filter(|(slot, node)| after.assignments.get(*slot) != Some(*node)).count();
    let on_lost = before.assignments.values().filter(|n| **n == lost.id).count();
    println!(
        "node loss moved {moved} slots; {on_lost} were on the lost node; the scheduler placed {} of {} workloads afresh",
        scheduler.recomputed(),
        workloads.len()
    );
}

criterion_group!(benches, full, after_loss);
criterion_main!(benches);

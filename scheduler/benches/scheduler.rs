//! Scheduler throughput and churn (criterion, no wasmtime to build):
//!
//! - full placement of 1 M replicas on 10 k nodes (goal ≤ 1 s);
//! - re-placement after one node loss at 10 k nodes / 100 k replicas (goal ≤ 10 ms through
//!   the `Scheduler` every node keeps), and the same as a fresh `place`;
//! - churn, printed before the timings: after a node loss and after a node join, at 1 k and
//!   10 k nodes with 100 k replicas, how many slots moved against how many had to (the lost
//!   node's slots; the slots the new node takes, which must stay within its fair share).
//!
//! `cargo bench -p wasmfleet-scheduler --bench scheduler`; `-- --quick` for one sample each.
//! The churn lines print whatever filter is given.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use wasmfleet_scheduler::{NodeInfo, Placement, Scheduler, WorkloadKind, WorkloadReq, place};

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
            nodes: None,
            planned: 0,
        })
        .collect()
}

/// Slots whose node differs between `before` and `after` (gone or placed elsewhere).
fn moved(before: &Placement, after: &Placement) -> usize {
    before.assignments.iter().filter(|(slot, node)| after.assignments.get(*slot) != Some(*node)).count()
}

/// Node loss and node join at `node_count` nodes, 1 000 workloads of 100 replicas.
fn churn_at(node_count: usize) {
    let all = nodes(node_count);
    let workloads = workloads(1_000, 100);
    let full = place(&workloads, &all);
    let mut rest = all.clone();
    let gone = rest.remove(4_321 % node_count);
    let without = place(&workloads, &rest);

    // Loss: `full` -> `without`; the slots on the lost node must move.
    let forced = full.slots_on(&gone.id).count();
    let loss_moved = moved(&full, &without);
    println!(
        "{node_count} nodes, node loss: moved {loss_moved} slots; {forced} were on the lost node (extra {})",
        loss_moved - forced.min(loss_moved)
    );

    // Join: `without` -> `full`; the new node may take its fair share, nothing else moves.
    let taken = full.slots_on(&gone.id).count();
    let join_moved = moved(&without, &full);
    let fair: usize = workloads.iter().map(|w| (w.replicas as usize).div_ceil(node_count)).sum();
    let most = workloads.iter().map(|w| full.slots_on(&gone.id).filter(|s| s.key == w.key).count()).max().unwrap_or(0);
    println!(
        "{node_count} nodes, node join: moved {join_moved} slots; the new node took {taken} (at most {most} of one \
         workload, fair share {} each, {fair} in all; extra {})",
        workloads.first().map_or(0, |w| (w.replicas as usize).div_ceil(node_count)),
        join_moved - taken.min(join_moved)
    );
}

fn churn(_c: &mut Criterion) {
    churn_at(1_000);
    churn_at(10_000);
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
    println!(
        "node loss moved {} slots; {} were on the lost node; the scheduler placed {} of {} workloads afresh",
        moved(&before, &after),
        before.slots_on(&lost.id).count(),
        scheduler.recomputed(),
        workloads.len()
    );
}

criterion_group!(benches, churn, full, after_loss);
criterion_main!(benches);

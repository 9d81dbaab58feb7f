//! Why a node cannot take a replica, and the summary text for unschedulable slots.

use std::collections::BTreeMap;
use std::fmt;

use crate::{NodeInfo, WorkloadReq};

/// Capacity a node has left while placement runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Free {
    pub memory_mib: u64,
    pub cpu_millis: u64,
    pub instances: u32,
}

impl Free {
    pub fn of(node: &NodeInfo) -> Self {
        Self { memory_mib: node.memory_mib, cpu_millis: node.cpu_millis, instances: node.max_instances }
    }

    /// Takes one replica of `workload`; the caller has checked [`Free::admits`].
    pub fn take(&mut self, workload: &WorkloadReq) {
        self.memory_mib -= workload.memory_mib;
        self.cpu_millis -= workload.cpu_millis;
        self.instances -= 1;
    }

    /// How many replicas of `workload` fit one after the other, counting up to `limit`:
    /// [`Free::admits`] holds after `t` takes exactly when `t < fits(workload, limit)` (for
    /// `t < limit`).
    pub fn fits(&self, workload: &WorkloadReq, limit: u64) -> u64 {
        let times = |free: u64, need: u64| free.checked_div(need).unwrap_or(u64::MAX);
        times(self.memory_mib, workload.memory_mib)
            .min(times(self.cpu_millis, workload.cpu_millis))
            .min(u64::from(self.instances))
            .min(limit)
    }

    /// Whether one more replica of `workload` fits, and if not, the first shortage.
    pub fn admits(&self, workload: &WorkloadReq) -> Result<(), Rejection> {
        if self.memory_mib < workload.memory_mib {
            Err(Rejection::Memory)
        } else if self.cpu_millis < workload.cpu_millis {
            Err(Rejection::Cpu)
        } else if self.instances == 0 {
            Err(Rejection::Instances)
        } else {
            Ok(())
        }
    }
}

/// The first filter a node fails for a workload. Ordered as reported.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Rejection {
    Selector {
        key: String,
        value: String,
    },
    Arch {
        want: String,
    },
    /// Not one of the nodes that hold the data of a volume the workload claims.
    Volume,
    Memory,
    Cpu,
    Instances,
}

impl Rejection {
    /// The predicate for `count` nodes, e.g. `lack memory`.
    pub fn phrase(&self, count: usize) -> String {
        let (one, many) = match self {
            Rejection::Selector { .. } => ("fails", "fail"),
            Rejection::Arch { .. } => ("is not", "are not"),
            Rejection::Volume => ("has", "have"),
            Rejection::Memory | Rejection::Cpu => ("lacks", "lack"),
            Rejection::Instances => ("is", "are"),
        };
        let verb = if count == 1 { one } else { many };
        match self {
            Rejection::Selector { key, value } => format!("{verb} selector {key}={value}"),
            Rejection::Arch { want } => format!("{verb} {want}"),
            Rejection::Volume => format!("{verb} volume node affinity conflict"),
            Rejection::Memory => format!("{verb} memory"),
            Rejection::Cpu => format!("{verb} cpu"),
            Rejection::Instances => format!("{verb} at max instances"),
        }
    }
}

/// Filters that do not depend on what has been placed: selector, architecture, then the
/// nodes a claimed volume allows.
pub(crate) fn static_check(workload: &WorkloadReq, node: &NodeInfo) -> Result<(), Rejection> {
    match static_failure(workload, node) {
        None => Ok(()),
        Some(StaticFailure::Selector(key, value)) => {
            Err(Rejection::Selector { key: key.clone(), value: value.clone() })
        }
        Some(StaticFailure::Arch(want)) => Err(Rejection::Arch { want: want.clone() }),
        Some(StaticFailure::Volume) => Err(Rejection::Volume),
    }
}

/// Whether `node` passes the static filters of `workload` ([`static_check`] without
/// building the rejection).
pub(crate) fn static_passes(workload: &WorkloadReq, node: &NodeInfo) -> bool {
    static_failure(workload, node).is_none()
}

/// The first static filter that fails, borrowed from the workload.
enum StaticFailure<'w> {
    Selector(&'w String, &'w String),
    Arch(&'w String),
    Volume,
}

fn static_failure<'w>(workload: &'w WorkloadReq, node: &NodeInfo) -> Option<StaticFailure<'w>> {
    for (key, value) in &workload.node_selector {
        let label_matches = node.labels.get(key) == Some(value);
        let zone_matches = key == "zone" && node.zone.as_ref() == Some(value);
        if !(label_matches || zone_matches) {
            return Some(StaticFailure::Selector(key, value));
        }
    }
    match &workload.arch {
        Some(want) if *want != node.arch => return Some(StaticFailure::Arch(want)),
        _ => {}
    }
    match &workload.nodes {
        Some(nodes) if !nodes.contains(&node.id) => Some(StaticFailure::Volume),
        _ => None,
    }
}

/// Summary such as `0/5 nodes: 3 lack memory, 2 fail selector zone=north`.
/// Groups are listed by count, largest first, then in filter order.
pub(crate) struct Summary {
    total: usize,
    counts: BTreeMap<Rejection, usize>,
}

impl Summary {
    pub fn new(total: usize) -> Self {
        Self { total, counts: BTreeMap::new() }
    }

    pub fn add(&mut self, rejection: Rejection) {
        *self.counts.entry(rejection).or_default() += 1;
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0/{} nodes", self.total)?;
        if self.total == 0 {
            return write!(f, ": no nodes known");
        }
        let mut groups: Vec<_> = self.counts.iter().collect();
        // Stable sort keeps filter order among equal counts.
        groups.sort_by(|a, b| b.1.cmp(a.1));
        for (i, (rejection, &count)) in groups.into_iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { ", " })?;
            write!(f, "{count} {}", rejection.phrase(count))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_lists_largest_group_first() {
        let mut s = Summary::new(5);
        s.add(Rejection::Selector { key: "zone".into(), value: "north".into() });
        s.add(Rejection::Memory);
        s.add(Rejection::Memory);
        s.add(Rejection::Selector { key: "zone".into(), value: "north".into() });
        s.add(Rejection::Memory);
        assert_eq!(s.to_string(), "0/5 nodes: 3 lack memory, 2 fail selector zone=north");
    }

    #[test]
    fn summary_singular_and_empty() {
        let mut s = Summary::new(2);
        s.add(Rejection::Arch { want: "aarch64".into() });
        s.add(Rejection::Instances);
        assert_eq!(s.to_string(), "0/2 nodes: 1 is not aarch64, 1 is at max instances");
        assert_eq!(Summary::new(0).to_string(), "0/0 nodes: no nodes known");
    }
}

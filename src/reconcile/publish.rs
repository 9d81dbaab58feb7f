//! Status and gossip: what this node tells the API (its replicas, each object's ready count)
//! and its peers (the replicas it runs, key `replicas` in its gossip state).

use std::collections::{BTreeSet, HashMap, HashSet};

use super::replicas::Running;
use super::{Inner, ObjectStatus, ReplicaStatus};
use crate::manifest::ObjectKey;
use crate::peering::{GossipReplica, PeerView};

/// Largest `replicas` value published in gossip (chitchat values must stay far below 64 KB).
const GOSSIP_VALUE_LIMIT: usize = 48 * 1024;

impl Inner {
    /// This node's replicas as the API shows them (new revisions waiting included), and as it
    /// publishes them in gossip (serving ones only). Sets each object's cluster-wide ready count.
    pub(super) fn views(
        &self,
        running: &Running,
        peers: &[PeerView],
        status: &mut HashMap<ObjectKey, ObjectStatus>,
    ) -> (Vec<ReplicaStatus>, Vec<GossipReplica>) {
        let mut ready_names: HashMap<ObjectKey, HashSet<String>> = HashMap::new();
        let mut view: Vec<ReplicaStatus> = Vec::with_capacity(running.serving.len() + running.incoming.len());
        for r in running.serving.values() {
            let st = r.status(&self.node);
            if st.ready {
                ready_names.entry(r.key.owner.clone()).or_default().insert(st.name.clone());
            }
            view.push(st);
        }
        for peer in peers {
            for r in peer.replicas.iter().filter(|r| r.ready) {
                if let Ok(owner) = r.owner.parse::<ObjectKey>() {
                    ready_names.entry(owner).or_default().insert(r.name.clone());
                }
            }
        }
        for (owner, names) in ready_names {
            if let Some(st) = status.get_mut(&owner) {
                st.ready = names.len() as u32;
            }
        }
        let gossip = view.iter().map(gossip_replica).collect();
        for (r, _) in running.incoming.values() {
            let mut st = r.status(&self.node);
            st.message = Some(format!(
                "new revision, waiting to take over from the serving replica{}",
                st.message.map(|m| format!("; {m}")).unwrap_or_default()
            ));
            view.push(st);
        }
        (view, gossip)
    }

    /// Publishes this node's replicas in gossip when they changed, and reports them straight
    /// to the coordinators of the Deployments whose replicas changed (`peers`: the live
    /// ones), so a rollout's next step does not wait for gossip.
    /// Replicas of a workload that scales from zero go to every live peer: their gateways hold
    /// requests for it (`scalable_to_zero`).
    pub(super) async fn publish_gossip(
        &self,
        replicas: Vec<GossipReplica>,
        peers: &[PeerView],
        scalable_to_zero: &[ObjectKey],
    ) {
        let (value, kept) = gossip_value(replicas);
        if let Some(kept) = kept {
            tracing::warn!(kept, "too many replicas to publish in gossip; published a subset");
        }
        let changed_owners = {
            let mut last = self.published.lock().unwrap_or_else(|e| e.into_inner());
            if *last == value {
                return;
            }
            let owners = changed_owners(&last, &value);
            last.clone_from(&value);
            owners
        };
        let live: Vec<&str> = peers.iter().map(|p| p.name.as_str()).chain([self.node.as_str()]).collect();
        let mut targets: Vec<String> = changed_owners
            .iter()
            .filter(|o| o.kind == crate::manifest::Kind::Deployment)
            .filter_map(|o| super::rollouts::coordinator(o, live.iter().copied()))
            .filter(|c| *c != self.node)
            .map(str::to_string)
            .collect();
        if changed_owners.iter().any(|o| scalable_to_zero.contains(o)) {
            targets = peers.iter().map(|p| p.name.clone()).collect();
        }
        targets.sort();
        targets.dedup();
        let seq = {
            let mut seq = self.published_seq.lock().unwrap_or_else(|e| e.into_inner());
            *seq = (*seq + 1).max(crate::clock::now_ms());
            *seq
        };
        if let Err(e) = self.peering.publish_replicas(&value, seq, &targets).await {
            tracing::warn!(error = %format!("{e:#}"), "cannot publish replicas in gossip");
        }
    }
}

impl Inner {
    /// Publishes this gateway's request figures for the canary revisions under analysis
    /// (`analysed`), for their coordinators to measure; forgets the figures of revisions no
    /// Deployment or Rollout has any more (`live`).
    pub(super) async fn publish_figures(&self, analysed: &BTreeSet<String>, live: &HashSet<String>) {
        let stats = self.routes.revision_stats();
        stats.retain(|r| live.contains(r));
        let figures: std::collections::BTreeMap<String, crate::dataplane::revisions::RevisionFigures> =
            stats.snapshot().into_iter().filter(|(r, _)| analysed.contains(r)).collect();
        let value = serde_json::to_string(&figures).unwrap_or_default();
        {
            let mut last = self.published_figures.lock().unwrap_or_else(|e| e.into_inner());
            if *last == value {
                return;
            }
            last.clone_from(&value);
        }
        if let Err(e) = self.peering.publish(crate::peering::FIGURES_KEY, &value).await {
            tracing::warn!(error = %format!("{e:#}"), "cannot publish request figures in gossip");
        }
    }
}

impl Inner {
    /// Samples the counters of this node's replicas of autoscaled targets, and publishes in
    /// gossip, per replica, their averages over the target's sync period (when they changed).
    pub(super) async fn publish_metrics(&self, view: &[ReplicaStatus], workloads: &super::desired::Workloads) {
        let periods: HashMap<String, u64> = workloads
            .deployments
            .iter()
            .filter_map(|(k, d)| {
                Some((k.to_string(), d.autoscaler.as_ref()?.period(self.hpa_period).as_millis() as u64))
            })
            .collect();
        let now = crate::clock::now_ms();
        let mut figures = std::collections::BTreeMap::new();
        {
            let mut rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
            let mut sampled = HashSet::new();
            for r in view {
                let (Some(period), Some(stats)) = (periods.get(&r.owner), r.stats) else { continue };
                rings.sample(&r.name, now, stats);
                sampled.insert(r.name.as_str());
                if let Some(m) = rings.metrics(&r.name, *period) {
                    figures.insert(r.name.clone(), m);
                }
            }
            rings.retain(|n| sampled.contains(n));
        }
        let value = serde_json::to_string(&figures).unwrap_or_default();
        {
            let mut last = self.published_metrics.lock().unwrap_or_else(|e| e.into_inner());
            if *last == value {
                return;
            }
            last.clone_from(&value);
        }
        if let Err(e) = self.peering.publish(crate::peering::METRICS_KEY, &value).await {
            tracing::warn!(error = %format!("{e:#}"), "cannot publish replica figures in gossip");
        }
    }
}

/// The owners whose replicas differ between two published values.
fn changed_owners(before: &str, after: &str) -> BTreeSet<ObjectKey> {
    let parse = |v: &str| -> BTreeSet<(String, String, bool, String)> {
        serde_json::from_str::<Vec<GossipReplica>>(v)
            .unwrap_or_default()
            .into_iter()
            .map(|r| (r.owner, r.name, r.ready, r.phase.to_string()))
            .collect()
    };
    let (a, b) = (parse(before), parse(after));
    a.symmetric_difference(&b).filter_map(|(owner, ..)| owner.parse().ok()).collect()
}

/// A replica as published in gossip.
pub fn gossip_replica(st: &ReplicaStatus) -> GossipReplica {
    let index = st.name.rsplit_once('-').and_then(|(_, i)| i.parse().ok()).unwrap_or(0);
    GossipReplica {
        owner: st.owner.clone(),
        index,
        name: st.name.clone(),
        revision: st.revision.clone(),
        phase: st.phase,
        ready: st.ready,
        restarts: st.restarts,
        http: st.kind == "http",
        started_ms: st.started_ms,
        in_flight: st.stats.map(|s| s.in_flight).unwrap_or(0),
        ready_ms: st.ready_ms,
    }
}

/// The gossip value of `replicas`, in a canonical order; when it would exceed the value limit,
/// a subset that keeps the ready HTTP replicas (routing) first, and how many were kept.
pub fn gossip_value(mut replicas: Vec<GossipReplica>) -> (String, Option<usize>) {
    replicas.sort_by(|a, b| (&a.owner, a.index, &a.name).cmp(&(&b.owner, b.index, &b.name)));
    let mut json = serde_json::to_string(&replicas).unwrap_or_default();
    if json.len() <= GOSSIP_VALUE_LIMIT {
        return (json, None);
    }
    replicas.sort_by_key(|r| !(r.http && r.ready));
    while json.len() > GOSSIP_VALUE_LIMIT && !replicas.is_empty() {
        replicas.truncate(replicas.len() * 9 / 10);
        json = serde_json::to_string(&replicas).unwrap_or_default();
    }
    (json, Some(replicas.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peering::ReplicaPhase;

    fn replica(i: u32, http: bool, ready: bool) -> GossipReplica {
        GossipReplica {
            owner: format!("Deployment/default/app-{i:05}"),
            index: 0,
            name: format!("app-{i:05}-0"),
            revision: "0123456789".into(),
            phase: if ready { ReplicaPhase::Running } else { ReplicaPhase::NotReady },
            ready,
            restarts: 0,
            http,
            started_ms: 1_700_000_000_000,
            in_flight: 0,
            ready_ms: 0,
        }
    }

    #[test]
    fn a_value_over_the_limit_keeps_the_routable_replicas() {
        let (small, kept) = gossip_value(vec![replica(2, true, true), replica(1, true, true)]);
        assert_eq!(kept, None);
        assert!(small.find("app-00001").unwrap() < small.find("app-00002").unwrap(), "canonical order");
        let many: Vec<GossipReplica> = (0..2000).map(|i| replica(i, i % 2 == 0, i % 4 == 0)).collect();
        let (value, kept) = gossip_value(many);
        assert!(value.len() <= GOSSIP_VALUE_LIMIT);
        let kept = kept.expect("a subset");
        let back: Vec<GossipReplica> = serde_json::from_str(&value).unwrap();
        assert_eq!(back.len(), kept);
        assert!(back.iter().take(500.min(kept)).all(|r| r.http && r.ready), "routable replicas first");
    }
}

//! Weighted split of a Service's requests between a canary revision and the others.
//!
//! A route with a [`Split`] sends each request either to the canary revision's endpoints or
//! to the others ("stable"), by a deterministic smooth sequence per Service and gateway:
//! request `n` goes to the canary iff `⌊(n+1)·w/1000⌋ > ⌊n·w/1000⌋`, so any `N` consecutive
//! requests through one gateway give the canary `⌊N·w/1000⌋` or `⌈N·w/1000⌉` of them. The
//! sequence is kept per Service across routing tables (which are rebuilt on every reconcile
//! pass) and survives a change of weight.
//!
//! Within the chosen group the choice is the gateway's usual one: a ready local replica, else
//! replicas on reachable peers (power of two choices), retried on another node when that
//! fails. When the chosen group has nothing usable left, the other group serves: availability
//! first. A weight of 0 never sends a request to the canary; at 1000 the stable revisions
//! serve only when the canary has nothing usable.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use crate::dataplane::gateway::{Endpoint, ServiceRoute};
use crate::manifest::ObjectKey;

/// A weight that sends every request to the canary.
pub const ALL_PERMILLE: u32 = 1000;

/// How a Service's requests are split between revisions.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Split {
    /// The canary revision (a replica's template hash, as in `Endpoint::revision`).
    pub canary: String,
    /// Share of requests for the canary, in ‰ (0..=1000; more counts as 1000).
    pub weight_permille: u32,
}

impl Split {
    fn weight(&self) -> u32 {
        self.weight_permille.min(ALL_PERMILLE)
    }

    /// Whether request number `n` of the sequence goes to the canary.
    pub fn canary_turn(&self, n: u64) -> bool {
        // The sequence repeats every 1000 requests: w canary turns in each period.
        let (r, w) = (n % u64::from(ALL_PERMILLE), u64::from(self.weight()));
        (r + 1) * w / 1000 > r * w / 1000
    }

    /// The groups request `n` tries, in order.
    fn plan(&self, n: u64) -> Plan {
        use Group::{Canary, Stable};
        match self.weight() {
            0 => Plan { groups: [Stable, Stable], len: 1 },
            ALL_PERMILLE => Plan { groups: [Canary, Stable], len: 2 },
            _ if self.canary_turn(n) => Plan { groups: [Canary, Stable], len: 2 },
            _ => Plan { groups: [Stable, Canary], len: 2 },
        }
    }

    /// Whether the split needs the sequence (not at 0 nor at 1000).
    fn sequenced(&self) -> bool {
        !matches!(self.weight(), 0 | ALL_PERMILLE)
    }
}

/// A set of a route's endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Group<'a> {
    /// All of them (a route without a split).
    Any,
    /// The split's canary revision.
    Canary,
    /// The other revisions.
    Stable,
    /// Exactly this revision (a request forwarded after its gateway chose it).
    Revision(&'a str),
}

impl ServiceRoute {
    /// Whether `e` belongs to `group` (a route without a split has no canary).
    pub(crate) fn in_group(&self, e: &Endpoint, group: Group<'_>) -> bool {
        let canary = || self.split.as_ref().is_some_and(|s| s.canary == e.revision);
        match group {
            Group::Any => true,
            Group::Canary => canary(),
            Group::Stable => !canary(),
            Group::Revision(r) => e.revision == r,
        }
    }

    /// The groups the next request tries, in order; advances the Service's `sequence` when
    /// the route has a split between 0 and 1000 ‰.
    pub(crate) fn plan(&self, sequence: &AtomicU64) -> Plan {
        match &self.split {
            None => Plan { groups: [Group::Any, Group::Any], len: 1 },
            Some(split) if split.sequenced() => split.plan(sequence.fetch_add(1, Ordering::Relaxed)),
            Some(split) => split.plan(0),
        }
    }

    /// The endpoints one request tries, in order (see [`Attempts`]); remote ones only with
    /// `remote` (the node can forward).
    pub(crate) fn attempts(&self, plan: Plan, remote: bool) -> Attempts<'_> {
        Attempts { route: self, plan, group: 0, local_tried: false, remote, tried: Vec::new() }
    }
}

/// The groups one request tries, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    groups: [Group<'static>; 2],
    len: usize,
}

impl Plan {
    pub(crate) fn groups(&self) -> &[Group<'static>] {
        &self.groups[..self.len]
    }
}

/// The endpoints one request tries, by index: in each group of the plan a ready local one (at
/// most one: a local answer is final), then ones on reachable peers, each on a node not yet
/// tried for that group. The caller stops after the first that serves.
pub(crate) struct Attempts<'r> {
    route: &'r ServiceRoute,
    plan: Plan,
    group: usize,
    local_tried: bool,
    remote: bool,
    /// Nodes already tried in the current group.
    tried: Vec<&'r str>,
}

impl Iterator for Attempts<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        while let Some(&group) = self.plan.groups().get(self.group) {
            if !std::mem::replace(&mut self.local_tried, true)
                && let Some(i) = self.route.pick_local_in(group, None)
            {
                return Some(i);
            }
            if self.remote
                && let Some(i) = self.route.pick_remote_in(group, &self.tried)
            {
                self.tried.push(&self.route.endpoints[i].node);
                return Some(i);
            }
            self.group += 1;
            self.local_tried = false;
            self.tried.clear();
        }
        None
    }
}

/// Each Service's request sequence for its split, kept across routing tables.
#[derive(Debug, Default)]
pub(crate) struct Sequences(DashMap<ObjectKey, Arc<AtomicU64>>);

impl Sequences {
    pub(crate) fn of(&self, key: &ObjectKey) -> Arc<AtomicU64> {
        if let Some(s) = self.0.get(key) {
            return s.clone();
        }
        self.0.entry(key.clone()).or_default().clone()
    }

    pub(crate) fn forget(&self, key: &ObjectKey) {
        self.0.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use super::*;
    use crate::dataplane::forward::PeerHealth;
    use crate::dataplane::gateway::{Backend, Routes, RoutingTable};
    use crate::manifest::Kind;

    const CANARY: &str = "c0c0c0c0c0";
    const STABLE: &str = "5757575757";

    fn key(name: &str) -> ObjectKey {
        ObjectKey { kind: Kind::Service, namespace: "default".into(), name: name.into() }
    }

    fn remote(replica: &str, node: &str, revision: &str) -> Endpoint {
        Endpoint {
            replica: replica.into(),
            node: node.into(),
            revision: revision.into(),
            backend: Backend::Remote {
                addr: "127.0.0.1:1".parse().unwrap(),
                lanes: Arc::from([]),
                health: Arc::new(PeerHealth::default()),
            },
            ready: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Two stable replicas and two canary ones, each on its own node.
    fn endpoints() -> Vec<Endpoint> {
        vec![
            remote("web-0", "a", STABLE),
            remote("web-1", "b", STABLE),
            remote("web-c-0", "c", CANARY),
            remote("web-c-1", "d", CANARY),
        ]
    }

    fn split(weight_permille: u32) -> Option<Split> {
        Some(Split { canary: CANARY.into(), weight_permille })
    }

    /// The revision the first attempt of each of `n` requests goes to, as the gateway would
    /// pick it; `None` when nothing is usable.
    fn first_picks(routes: &Routes, route: &ServiceRoute, n: usize) -> Vec<Option<&'static str>> {
        let sequence = &route.bound(routes).sequence;
        (0..n)
            .map(|_| {
                let i = route.attempts(route.plan(sequence), true).next()?;
                Some(if route.endpoints[i].revision == CANARY { CANARY } else { STABLE })
            })
            .collect()
    }

    fn canary_count(picks: &[Option<&str>]) -> usize {
        picks.iter().filter(|p| **p == Some(CANARY)).count()
    }

    #[test]
    fn the_sequence_gives_the_canary_its_weight_in_any_window() {
        for w in [0, 1, 7, 10, 100, 333, 500, 999, 1000, 5000] {
            let s = Split { canary: CANARY.into(), weight_permille: w };
            let expected = f64::from(w.min(1000)) / 1000.0;
            for start in [0u64, 1, 499, 12_345, u64::MAX - 20_000] {
                for len in [1u64, 10, 999, 10_000] {
                    let turns = (start..start + len).filter(|&n| s.canary_turn(n)).count() as f64;
                    let ideal = expected * len as f64;
                    assert!((turns - ideal).abs() < 1.0, "w {w}, start {start}, len {len}: {turns} vs {ideal}");
                }
            }
        }
    }

    #[test]
    fn each_route_splits_exactly_over_ten_thousand_requests() {
        let routes = Routes::default();
        let mut table = RoutingTable::default();
        let weights = [0, 10, 100, 500, 1000];
        for (i, &w) in weights.iter().enumerate() {
            table.insert(Arc::new(ServiceRoute::with_split(key(&format!("svc{i}")), endpoints(), split(w))));
        }
        routes.store(table);
        let table = routes.load();
        // The routes take turns, as concurrent Services would: each has its own sequence.
        let mut picks: Vec<Vec<Option<&str>>> = vec![Vec::new(); weights.len()];
        for _ in 0..100 {
            for (i, p) in picks.iter_mut().enumerate() {
                p.extend(first_picks(&routes, &table.by_key[&key(&format!("svc{i}"))], 100));
            }
        }
        for (p, &w) in picks.iter().zip(&weights) {
            assert_eq!(p.len(), 10_000);
            assert!(p.iter().all(Option::is_some));
            let canary = canary_count(p);
            // Within 1 % (100 requests) by the brief; in fact exact.
            assert_eq!(canary, w as usize * 10, "weight {w}‰");
        }
    }

    #[test]
    fn the_sequence_survives_a_rebuilt_route_and_a_new_weight() {
        let routes = Routes::default();
        let mut picks = Vec::new();
        // A pass every 7 requests, with a weight of 10 %, then 25 %.
        for (w, requests) in [(100, 700), (250, 1400)] {
            for _pass in 0..requests / 7 {
                let mut table = RoutingTable::default();
                table.insert(Arc::new(ServiceRoute::with_split(key("web"), endpoints(), split(w))));
                routes.store(table);
                picks.extend(first_picks(&routes, &routes.load().by_key[&key("web")], 7));
            }
        }
        assert_eq!(canary_count(&picks[..700]), 70);
        assert_eq!(canary_count(&picks[700..]), 350);
    }

    #[test]
    fn a_group_with_nothing_usable_falls_back_to_the_other() {
        let routes = Routes::default();
        let down = |route: &ServiceRoute, revision: &str| {
            for e in route.endpoints.iter().filter(|e| e.revision == revision) {
                e.ready.store(false, Ordering::Relaxed);
            }
        };
        // Canary gone: everything to the stable revision, at any weight but...
        for w in [10, 500, 1000] {
            let route = ServiceRoute::with_split(key("web"), endpoints(), split(w));
            down(&route, CANARY);
            assert_eq!(canary_count(&first_picks(&routes, &route, 1000)), 0);
            assert!(first_picks(&routes, &route, 1000).iter().all(Option::is_some));
        }
        // Stable gone: everything to the canary...
        for w in [10, 500, 1000] {
            let route = ServiceRoute::with_split(key("web"), endpoints(), split(w));
            down(&route, STABLE);
            assert_eq!(canary_count(&first_picks(&routes, &route, 1000)), 1000);
        }
        // ...except at weight 0: the canary never gets a request.
        let route = ServiceRoute::with_split(key("web"), endpoints(), split(0));
        down(&route, STABLE);
        assert!(first_picks(&routes, &route, 100).iter().all(Option::is_none));
        // At 1000 the stable revision serves only when the canary cannot.
        let route = ServiceRoute::with_split(key("web"), endpoints(), split(1000));
        assert_eq!(canary_count(&first_picks(&routes, &route, 1000)), 1000);
    }

    #[test]
    fn attempts_exhaust_the_chosen_group_before_the_other() {
        let route = ServiceRoute::with_split(key("web"), endpoints(), split(1000));
        let sequence = AtomicU64::new(0);
        let order: Vec<(&str, &str)> = route
            .attempts(route.plan(&sequence), true)
            .map(|i| (route.endpoints[i].revision.as_str(), route.endpoints[i].node.as_str()))
            .collect();
        let revisions: Vec<&str> = order.iter().map(|(r, _)| *r).collect();
        assert_eq!(revisions, [CANARY, CANARY, STABLE, STABLE]);
        let mut nodes: Vec<&str> = order.iter().map(|(_, n)| *n).collect();
        nodes[..2].sort();
        nodes[2..].sort();
        assert_eq!(nodes, ["c", "d", "a", "b"]);
        // Without a split: every endpoint, once per node; with no way to forward: none.
        let route = ServiceRoute::new(key("web"), endpoints());
        assert_eq!(route.attempts(route.plan(&sequence), true).count(), 4);
        assert_eq!(route.attempts(route.plan(&sequence), false).count(), 0);
    }

    /// Local replicas of real modules: `hello` answers 200 to anything; `hostile` traps on
    /// `/trap` (a 500).
    mod through_the_request_path {
        use bytes::Bytes;
        use http_body_util::{BodyExt as _, Empty};
        use wasmfleet_cluster::mesh::{Mesh, MeshConfig, PeerInfo};
        use wasmfleet_cluster::pki::ClusterCa;
        use wasmfleet_runtime::{HttpService, LogBuffer, Runtime, RuntimeConfig, WorkloadSpec};

        use super::*;
        use crate::dataplane::forward::{ForwardHead, ForwardServer, Forwarder, STREAM_CHANNEL};
        use crate::dataplane::gateway::dispatch;

        fn runtime() -> Arc<Runtime> {
            let cfg = RuntimeConfig {
                memory_budget_bytes: Some(256 << 20),
                max_instance_memory_bytes: Some(64 << 20),
                max_instances: Some(8),
                ..Default::default()
            };
            Arc::new(Runtime::new(cfg).unwrap())
        }

        fn local(rt: &Arc<Runtime>, module: &str, replica: &str, revision: &str) -> Endpoint {
            let path = format!("{}/{module}.wasm", env!("WASMFLEET_MODULES_DIR"));
            let m = rt.load(&std::fs::read(&path).unwrap()).unwrap();
            let service = HttpService::new(rt.clone(), &m, WorkloadSpec::new(replica), LogBuffer::new(4096)).unwrap();
            Endpoint {
                replica: replica.into(),
                node: "here".into(),
                revision: revision.into(),
                backend: Backend::Local(service),
                ready: Arc::new(AtomicBool::new(true)),
            }
        }

        fn request(
            path: &str,
        ) -> http::Request<impl http_body::Body<Data = Bytes, Error = wasmfleet_runtime::WasiHttpError>> {
            let body = Empty::new().map_err(|never| -> wasmfleet_runtime::WasiHttpError { match never {} });
            http::Request::builder().uri(path).header("host", "web").body(body).unwrap()
        }

        #[tokio::test]
        async fn the_gateway_splits_local_replicas_and_counts_each_revision() {
            let rt = runtime();
            let routes = Routes::default();
            let endpoints = vec![local(&rt, "hello", "web-0", STABLE), local(&rt, "hostile", "web-c-0", CANARY)];
            let mut table = RoutingTable::default();
            table.insert(Arc::new(ServiceRoute::with_split(key("web"), endpoints, split(250))));
            routes.store(table);
            let route = routes.load().by_key[&key("web")].clone();
            let mut served = Vec::new();
            for _ in 0..40 {
                let resp = dispatch(&routes, &route, request("/trap")).await;
                served.push((resp.headers()["x-wasmfleet-replica"].to_str().unwrap().to_string(), resp.status()));
            }
            let by = |replica: &str| served.iter().filter(|(r, _)| r == replica).map(|(_, s)| *s).collect::<Vec<_>>();
            assert_eq!(by("web-c-0"), vec![http::StatusCode::INTERNAL_SERVER_ERROR; 10]);
            assert_eq!(by("web-0"), vec![http::StatusCode::OK; 30]);

            let figures = routes.revision_stats().snapshot();
            let (stable, canary) = (&figures[STABLE], &figures[CANARY]);
            assert_eq!((stable.requests, stable.errors, canary.requests, canary.errors), (30, 0, 10, 10));
            assert_eq!(stable.buckets.iter().sum::<u64>(), 30);
            assert_eq!(canary.buckets.iter().sum::<u64>(), 10);
            assert_eq!(canary.error_rate(), Some(1.0));
            assert!(stable.quantile_ms(0.5).is_some_and(|ms| ms > 0.0 && ms.is_finite()));

            // The canary is rolled back (weight 0): it gets nothing more; the figures go on.
            let mut table = RoutingTable::default();
            let endpoints = route.endpoints.clone();
            table.insert(Arc::new(ServiceRoute::with_split(key("web"), endpoints, split(0))));
            routes.store(table);
            let route = routes.load().by_key[&key("web")].clone();
            for _ in 0..10 {
                assert_eq!(dispatch(&routes, &route, request("/")).await.status(), http::StatusCode::OK);
            }
            let later = routes.revision_stats().snapshot();
            assert_eq!(later[STABLE].delta(stable).requests, 10);
            let canary_since = later[CANARY].delta(canary);
            assert_eq!((canary_since.requests, canary_since.buckets.iter().sum::<u64>()), (0, 0));
        }

        #[tokio::test]
        async fn a_forwarded_request_keeps_to_the_revision_its_gateway_chose() {
            let rt = runtime();
            let ca = ClusterCa::generate("test").unwrap();
            let no_calls = |_: PeerInfo, _: Bytes| async { Err::<Bytes, String>("no calls here".into()) };
            let bind = |node: &str| {
                let config = MeshConfig::new("127.0.0.1:0".parse().unwrap(), ca.issue(node).unwrap());
                Mesh::bind(config, Arc::new(no_calls))
            };
            // Node b: a stable and a canary replica of `web`.
            let b_routes = Routes::default();
            let mut table = RoutingTable::default();
            let endpoints = vec![local(&rt, "hello", "web-0", STABLE), local(&rt, "hello", "web-c-0", CANARY)];
            table.insert(Arc::new(ServiceRoute::new(key("web"), endpoints)));
            b_routes.store(table);
            let b = Arc::new(bind("b").await.unwrap());
            b.set_stream_handler(STREAM_CHANNEL, Arc::new(ForwardServer { routes: b_routes.clone() }));
            let forwarder = Forwarder::new(Arc::new(bind("a").await.unwrap()));

            // Node a chose a replica b no longer has: b serves with one of the chosen revision.
            for (revision, serves) in [(Some(CANARY), "web-c-0"), (Some(STABLE), "web-0"), (Some("0000000000"), "")] {
                for _ in 0..4 {
                    let head = ForwardHead {
                        namespace: "default".into(),
                        service: "web".into(),
                        replica: Some("web-gone-0".into()),
                        method: "GET".into(),
                        uri: "/".into(),
                        headers: Vec::new(),
                        revision: revision.map(str::to_string),
                    };
                    let addr = b.local_addr().unwrap();
                    let sent =
                        forwarder.send("b", addr, &[], &head, Empty::<Bytes>::new(), Duration::from_secs(10)).await;
                    match sent {
                        Ok(resp) => assert_eq!(resp.headers()["x-wasmfleet-replica"], serves, "{revision:?}"),
                        Err(e) => assert!(serves.is_empty() && e.to_string().contains("no ready replica"), "{e}"),
                    }
                }
            }
            // The peer does not count forwarded requests per revision: the caller's gateway does.
            assert!(b_routes.revision_stats().snapshot().values().all(|f| f.requests == 0));
        }
    }
}

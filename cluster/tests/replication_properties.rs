//! The replication protocol under failures, many nodes in one process over a
//! `MemoryNetwork` that drops, delays and cuts, on a paused tokio clock:
//!
//! - any interleaving of writes, deletes, set additions (a join keyspace), node restarts
//!   (durable storage kept, in-memory state lost), link cuts and anti-entropy rounds
//!   converges, once links heal and a few rounds run, to the same map on every node, and
//!   that map is the one the writes imply (the newest write of every key, the union of every
//!   set): nothing written is lost;
//! - a write acknowledged with k copies is never lost while fewer than k of the nodes that
//!   held it die with their storage: after convergence it, or a newer write of its key, is
//!   on every node.
//!
//! Each case runs on its own single-threaded runtime with a paused clock and a seeded
//! network, so a failing case repeats exactly and shrinks.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use common::{SET_PREFIX, Val, set_entry};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use wasmfleet_cluster::replication::{
    Entry, MemoryNetwork, MemoryStorage, MemoryTransport, Replicator, ReplicatorConfig, Storage as _,
};
use wasmfleet_cluster::{Hlc, Version};

type Repl = Replicator<MemoryStorage<Val>, MemoryTransport>;

const RPC_TIMEOUT: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
enum Op {
    Write {
        node: usize,
        key: u8,
        value: u32,
    },
    Delete {
        node: usize,
        key: u8,
    },
    /// Adds `elem` to the set `set/<key>` (a join).
    Add {
        node: usize,
        key: u8,
        elem: u8,
    },
    /// The process restarts: storage kept, everything else (clock, pushes in flight) lost.
    Restart {
        node: usize,
    },
    /// The node dies with its disk and comes back empty.
    Kill {
        node: usize,
    },
    Cut {
        a: usize,
        b: usize,
    },
    Heal {
        a: usize,
        b: usize,
    },
    Round {
        node: usize,
    },
    Pause {
        ms: u16,
    },
}

fn arb_op(nodes: usize, kills: bool) -> impl Strategy<Value = Op> {
    let n = 0..nodes;
    prop_oneof![
        6 => (n.clone(), 0u8..4, any::<u32>()).prop_map(|(node, key, value)| Op::Write { node, key, value }),
        2 => (n.clone(), 0u8..4).prop_map(|(node, key)| Op::Delete { node, key }),
        3 => (n.clone(), 0u8..2, 0u8..64).prop_map(|(node, key, elem)| Op::Add { node, key, elem }),
        1 => n.clone().prop_map(|node| Op::Restart { node }),
        2 => n.clone().prop_map(move |node| if kills { Op::Kill { node } } else { Op::Restart { node } }),
        2 => (n.clone(), n.clone()).prop_map(|(a, b)| Op::Cut { a, b }),
        1 => (n.clone(), n.clone()).prop_map(|(a, b)| Op::Heal { a, b }),
        2 => n.prop_map(|node| Op::Round { node }),
        1 => (0u16..500).prop_map(|ms| Op::Pause { ms }),
    ]
}

/// Network conditions of a case.
#[derive(Debug, Clone)]
struct Weather {
    seed: u64,
    drop_probability: f64,
    max_delay: Duration,
}

fn arb_weather() -> impl Strategy<Value = Weather> {
    (any::<u64>(), 0.0..0.3f64, 0u64..60).prop_map(|(seed, drop_probability, ms)| Weather {
        seed,
        drop_probability,
        max_delay: Duration::from_millis(ms),
    })
}

struct Node {
    name: String,
    storage: Arc<MemoryStorage<Val>>,
    hlc: Hlc,
    replicator: Arc<Repl>,
}

/// A write the model remembers: its key, version and what it put there.
#[derive(Debug, Clone)]
struct Written {
    key: String,
    version: Version,
    /// For set additions, the element added.
    elem: Option<u8>,
    /// Nodes that hold it durably (writer and acknowledgers) and have not died since.
    holders: BTreeSet<usize>,
    copies: usize,
    /// Holders that died since it was acknowledged.
    died: usize,
}

struct Sim {
    net: MemoryNetwork,
    nodes: Vec<Node>,
    start: tokio::time::Instant,
    /// Every write, in order.
    writes: Vec<Written>,
}

fn config() -> ReplicatorConfig {
    ReplicatorConfig { rpc_timeout: RPC_TIMEOUT, pull_batch: 2, ..ReplicatorConfig::default() }
}

/// Starts `name`'s replication over `storage`: a fresh clock that has seen everything stored
/// (as a node's store does when it opens), a fresh replicator, serving on the network.
fn boot(net: &MemoryNetwork, id: u64, name: &str, storage: Arc<MemoryStorage<Val>>) -> Node {
    let mut hlc = Hlc::new(id);
    if let Some(max) = storage.snapshot().values().filter(|e| !e.key.starts_with(SET_PREFIX)).map(|e| e.version).max() {
        hlc.observe(max, 0);
    }
    let replicator = Arc::new(Replicator::new(storage.clone(), Arc::new(net.transport(name)), config()));
    let weak = Arc::downgrade(&replicator);
    net.serve(
        name,
        Arc::new(move |request| match weak.upgrade() {
            Some(r) => r.handle(&request).map_err(|e| e.to_string()),
            None => Err("stopped".into()),
        }),
    );
    Node { name: name.to_owned(), storage, hlc, replicator }
}

impl Sim {
    fn new(nodes: usize, weather: &Weather) -> Sim {
        let net = MemoryNetwork::new(weather.seed);
        net.set_drop_probability(weather.drop_probability);
        net.set_max_delay(weather.max_delay);
        let nodes = (0..nodes).map(|i| boot(&net, i as u64 + 1, &format!("n{i}"), Arc::default())).collect();
        Sim { net, nodes, start: tokio::time::Instant::now(), writes: Vec::new() }
    }

    fn wall_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Every other node: liveness (gossip) is cluster-wide, not reachability.
    fn peers(&self, node: usize) -> Vec<String> {
        self.nodes.iter().enumerate().filter(|(i, _)| *i != node).map(|(_, n)| n.name.clone()).collect()
    }

    /// Writes `entry` on `node` durably, then replicates it; remembers it.
    async fn write(&mut self, node: usize, entry: Entry<Val>, elem: Option<u8>) -> Result<(), TestCaseError> {
        let key = entry.key.clone();
        let n = &self.nodes[node];
        n.storage.write(entry).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let stored = n.storage.get(&key).ok_or_else(|| TestCaseError::fail("written key absent"))?;
        let peers = self.peers(node);
        let copies = n
            .replicator
            .replicate(std::slice::from_ref(&key), &peers)
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(copies.copies, 1 + copies.acknowledged_by.len());
        prop_assert!(copies.copies <= 3, "no more copies are waited for than the quorum");
        let mut holders: BTreeSet<usize> = [node].into();
        for peer in &copies.acknowledged_by {
            holders.extend(self.nodes.iter().position(|n| &n.name == peer));
        }
        self.writes.push(Written { key, version: stored.version, elem, holders, copies: copies.copies, died: 0 });
        Ok(())
    }

    fn version(&mut self, node: usize, key: &str) -> Version {
        let wall = self.wall_ms();
        let n = &mut self.nodes[node];
        if let Some(local) = n.storage.get(key) {
            n.hlc.observe(local.version, wall);
        }
        n.hlc.now(wall)
    }

    fn restart(&mut self, node: usize) {
        let (name, storage) = (self.nodes[node].name.clone(), self.nodes[node].storage.clone());
        self.net.stop(&name);
        // Dropping the old replicator aborts its pushes in flight, as a crash would.
        self.nodes[node] = boot(&self.net, node as u64 + 1, &name, storage);
    }

    /// Kills `node` with its disk if no acknowledged write would then have lost all its
    /// copies (the precondition of the durability promise); returns whether it did.
    fn kill(&mut self, node: usize) -> bool {
        if self.writes.iter().any(|w| w.holders.contains(&node) && w.died + 1 >= w.copies) {
            return false;
        }
        for w in self.writes.iter_mut().filter(|w| w.holders.contains(&node)) {
            w.holders.remove(&node);
            w.died += 1;
        }
        self.nodes[node].storage.wipe();
        self.restart(node);
        true
    }

    /// One anti-entropy round on `node`, with the digests its peers would gossip.
    async fn round(&self, node: usize) -> Result<(), TestCaseError> {
        let peers: Vec<(String, _)> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != node)
            .map(|(_, n)| (n.name.clone(), n.storage.digest().ok()))
            .collect();
        self.nodes[node].replicator.anti_entropy(&peers).await.map_err(|e| TestCaseError::fail(e.to_string()))?;
        Ok(())
    }

    async fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        // Every step takes a millisecond of wall time, as writes on a real node would.
        tokio::time::sleep(Duration::from_millis(1)).await;
        match op {
            Op::Write { node, key, value } => {
                let key = format!("k{key}");
                let version = self.version(node, &key);
                self.write(node, Entry::live(key, version, Val::Text(value)), None).await?;
            }
            Op::Delete { node, key } => {
                let key = format!("k{key}");
                let version = self.version(node, &key);
                self.write(node, Entry::tombstone(key, version), None).await?;
            }
            Op::Add { node, key, elem } => {
                let key = format!("{SET_PREFIX}{key}");
                let mask = match self.nodes[node].storage.get(&key).and_then(|e| e.value) {
                    Some(Val::Set(m)) => m,
                    _ => 0,
                } | (1 << elem);
                self.write(node, set_entry(&key, mask), Some(elem)).await?;
            }
            Op::Restart { node } => self.restart(node),
            Op::Kill { node } => {
                self.kill(node);
            }
            Op::Cut { a, b } if a != b => self.net.remove_link(&self.nodes[a].name, &self.nodes[b].name),
            Op::Heal { a, b } => self.net.add_link(&self.nodes[a].name, &self.nodes[b].name),
            Op::Cut { .. } => {}
            Op::Round { node } => self.round(node).await?,
            Op::Pause { ms } => tokio::time::sleep(Duration::from_millis(u64::from(ms))).await,
        }
        Ok(())
    }

    /// Heals every link, stops losing messages, lets what is in flight land, and runs three
    /// anti-entropy rounds on every node.
    async fn heal_and_converge(&self) -> Result<(), TestCaseError> {
        self.net.heal_all();
        self.net.set_drop_probability(0.0);
        prop_assert!(self.net.settle(Duration::from_secs(30)).await, "calls still in flight after 30 s");
        for _ in 0..3 {
            for node in 0..self.nodes.len() {
                self.round(node).await?;
            }
        }
        Ok(())
    }

    /// Every node holds the same map; returns it.
    fn agreed_map(&self) -> Result<BTreeMap<String, Entry<Val>>, TestCaseError> {
        let first = self.nodes[0].storage.snapshot();
        for n in &self.nodes[1..] {
            prop_assert_eq!(&n.storage.snapshot(), &first, "{} and {} differ", self.nodes[0].name, n.name);
        }
        Ok(first)
    }
}

fn run<F: std::future::Future<Output = Result<(), TestCaseError>>>(f: F) -> Result<(), TestCaseError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| TestCaseError::fail(e.to_string()))?
        .block_on(f)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_interleaving_converges_to_the_map_the_writes_imply(
        (nodes, ops) in (2usize..=5).prop_flat_map(|n| (Just(n), proptest::collection::vec(arb_op(n, false), 1..50))),
        weather in arb_weather(),
    ) {
        run(async {
            let mut sim = Sim::new(nodes, &weather);
            for op in ops {
                sim.apply(op).await?;
            }
            sim.heal_and_converge().await?;
            let map = sim.agreed_map()?;
            // Nothing was lost: every key holds its newest write, every set the union.
            let mut expected: BTreeMap<String, (Version, u64)> = BTreeMap::new();
            for w in &sim.writes {
                let slot = expected.entry(w.key.clone()).or_default();
                match w.elem {
                    Some(elem) => slot.1 |= 1 << elem,
                    None => slot.0 = slot.0.max(w.version),
                }
            }
            prop_assert_eq!(map.len(), expected.len());
            for (key, (version, mask)) in expected {
                let entry = &map[&key];
                if key.starts_with(SET_PREFIX) {
                    prop_assert_eq!(entry.value.clone(), Some(Val::Set(mask)), "{}", key);
                } else {
                    prop_assert_eq!(entry.version, version, "{}", key);
                }
            }
            Ok(())
        })?;
    }

    #[test]
    fn an_acknowledged_write_survives_fewer_deaths_than_its_copies(
        (nodes, ops) in (3usize..=5).prop_flat_map(|n| (Just(n), proptest::collection::vec(arb_op(n, true), 1..50))),
        weather in arb_weather(),
    ) {
        run(async {
            let mut sim = Sim::new(nodes, &weather);
            for op in ops {
                sim.apply(op).await?;
            }
            sim.heal_and_converge().await?;
            let map = sim.agreed_map()?;
            for w in sim.writes.iter().filter(|w| w.died < w.copies) {
                let entry = map.get(&w.key);
                match w.elem {
                    Some(elem) => prop_assert!(
                        matches!(entry.and_then(|e| e.value.clone()), Some(Val::Set(m)) if m & (1 << elem) != 0),
                        "{} lost element {} (copies {}, died {})", w.key, elem, w.copies, w.died
                    ),
                    None => prop_assert!(
                        entry.is_some_and(|e| e.version >= w.version),
                        "{} lost its write {} (copies {}, died {})", w.key, w.version, w.copies, w.died
                    ),
                }
            }
            Ok(())
        })?;
    }
}

//! Membership benchmark over real UDP gossip on 127.0.0.1: many in-process nodes, each with
//! its own sockets and chitchat instance, at the LAN profile (gossip every 175 ms, phi 5).
//!
//! - `detect`: N in {3, 10, 50}; kill one node abruptly (`shutdown()` without `leave`) and
//!   time until every survivor reports it `Dead`; restart it (new generation) between runs.
//! - `join`: N in {10, 50}; time from spawning one extra node (seeded with one random member)
//!   until every existing node lists it alive.
//! - `bytes`: N in {10, 50}; gossip bytes sent per node per second over 10 s of steady state,
//!   sealed (the transport's counters) and plain (chitchat's `UdpSocket` wrapped in a counting
//!   transport: exact UDP payload bytes).
//!
//! Usage: `cargo run --release -p wasmfleet-cluster --example membership_bench -- [detect|join|bytes|all]`
//! (see `benches/membership.sh`). Every node publishes an `info` (~200 B JSON) and a `digest`
//! (64 hex) key like the agent does; values stay constant, so steady-state gossip is heartbeats
//! and digests. Liveness is read from each node's `Membership::watch()` every 10 ms.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chitchat::ChitchatEnvelope;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpSocket};
use tokio::sync::watch;
use wasmfleet_cluster::gossip::frame::SINGLE_FRAME_HEADER_LEN;
use wasmfleet_cluster::membership::{Member, MemberState, Membership, MembershipConfig, spawn_membership};
use wasmfleet_cluster::seal::{GossipKey, SEAL_OVERHEAD};

const CLUSTER_ID: &str = "bench-cluster";
/// The LAN profile, or `BENCH_GOSSIP_MS` / `BENCH_PHI` to try another.
fn gossip_interval() -> Duration {
    std::env::var("BENCH_GOSSIP_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(wasmfleet_cluster::membership::LAN_GOSSIP_INTERVAL)
}

fn phi() -> f64 {
    std::env::var("BENCH_PHI")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(wasmfleet_cluster::membership::LAN_PHI_THRESHOLD)
}
const POLL: Duration = Duration::from_millis(10);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
const DETECT_TIMEOUT: Duration = Duration::from_secs(15);
const JOIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Pause after the cluster is back to N alive before the next kill.
const SETTLE: Duration = Duration::from_secs(1);
const BYTES_WARMUP: Duration = Duration::from_secs(3);
const BYTES_WINDOW: Duration = Duration::from_secs(10);
const DETECT_SIZES: [(usize, usize); 3] = [(3, 10), (10, 10), (50, 10)];
const JOIN_SIZES: [(usize, usize); 2] = [(10, 4), (50, 3)];
const BYTES_SIZES: [usize; 2] = [10, 50];

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Sent-side counters of the plain (unsealed) UDP transport.
#[derive(Debug, Default)]
struct PlainCounters {
    datagrams: AtomicU64,
    bytes: AtomicU64,
}

/// Chitchat's own plain `UdpTransport`, counting what each socket sends.
struct CountingTransport(Arc<PlainCounters>);

struct CountingSocket {
    inner: UdpSocket,
    counters: Arc<PlainCounters>,
}

impl Transport for CountingTransport {
    fn open<'life0, 'async_trait>(
        &'life0 self,
        listen_addr: SocketAddr,
    ) -> BoxFuture<'async_trait, anyhow::Result<Box<dyn Socket>>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        let counters = self.0.clone();
        Box::pin(async move {
            let inner = UdpSocket::open(listen_addr).await?;
            Ok(Box::new(CountingSocket { inner, counters }) as Box<dyn Socket>)
        })
    }
}

impl Socket for CountingSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn send<'life0, 'async_trait>(
        &'life0 mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> BoxFuture<'async_trait, anyhow::Result<SendOutcome>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            let outcome = self.inner.send(to, envelope).await?;
            self.counters.datagrams.fetch_add(1, Ordering::Relaxed);
            self.counters.bytes.fetch_add(outcome.num_bytes_sent as u64, Ordering::Relaxed);
            Ok(outcome)
        })
    }

    fn recv<'life0, 'async_trait>(&'life0 mut self) -> BoxFuture<'async_trait, anyhow::Result<RecvOutcome>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move { self.inner.recv().await })
    }
}

#[derive(Clone)]
enum Mode {
    Sealed(GossipKey),
    Plain,
}

impl Mode {
    fn label(&self) -> &'static str {
        match self {
            Mode::Sealed(_) => "sealed",
            Mode::Plain => "plain",
        }
    }
}

struct Node {
    membership: Membership,
    members: watch::Receiver<Vec<Member>>,
    plain: Option<Arc<PlainCounters>>,
}

impl Node {
    /// (datagrams, bytes) sent so far.
    fn sent(&self) -> (u64, u64) {
        match &self.plain {
            Some(counters) => (counters.datagrams.load(Ordering::Relaxed), counters.bytes.load(Ordering::Relaxed)),
            None => self.membership.gossip_stats().map(|s| (s.sent_datagrams, s.sent_bytes)).unwrap_or_default(),
        }
    }
}

async fn spawn_node(name: &str, seed: Option<SocketAddr>, mode: &Mode) -> anyhow::Result<Node> {
    let config = MembershipConfig {
        node_name: name.to_string(),
        cluster_id: CLUSTER_ID.to_string(),
        seeds: seed.map(|addr| vec![addr.to_string()]).unwrap_or_default(),
        gossip_interval: gossip_interval(),
        phi_threshold: phi(),
        key: match mode {
            Mode::Sealed(key) => Some(key.clone()),
            Mode::Plain => None,
        },
        ..MembershipConfig::default()
    };
    let (transport, plain): (Option<Box<dyn Transport>>, _) = match mode {
        Mode::Sealed(_) => (None, None),
        Mode::Plain => {
            let counters = Arc::new(PlainCounters::default());
            (Some(Box::new(CountingTransport(counters.clone()))), Some(counters))
        }
    };
    let info = format!(
        r#"{{"id":"{name}","version":"0.1.0","zone":"bench-zone-a","http":"127.0.0.1:8080","cluster":"127.0.0.1:7000","cores":2,"modules":["hello","echo"]}}"#
    );
    let digest = format!("{:064x}", rand::random::<u128>());
    let initial = vec![("info".to_string(), info), ("digest".to_string(), digest)];
    let membership = spawn_membership(config, initial, transport).await?;
    let members = membership.watch();
    Ok(Node { membership, members, plain })
}

fn is_alive(members: &[Member], name: &str, generation: Option<u64>) -> bool {
    members.iter().any(|m| {
        m.name == name
            && m.state == MemberState::Alive
            && generation.is_none_or(|generation| m.generation == generation)
    })
}

fn alive_count(members: &[Member]) -> usize {
    members.iter().filter(|m| m.state == MemberState::Alive).count()
}

/// Polls every node's member watch every [`POLL`] until `condition` holds for it; returns
/// each node's time (from `start`) or `None` after `timeout`.
async fn wait_all(
    nodes: &[&Node],
    start: Instant,
    timeout: Duration,
    condition: impl Fn(&[Member]) -> bool,
) -> Option<Vec<Duration>> {
    let mut times: Vec<Option<Duration>> = vec![None; nodes.len()];
    loop {
        let now = start.elapsed();
        for (node, time) in nodes.iter().zip(times.iter_mut()) {
            if time.is_none() && condition(&node.members.borrow()) {
                *time = Some(now);
            }
        }
        if times.iter().all(Option::is_some) {
            return Some(times.into_iter().flatten().collect());
        }
        if now > timeout {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

struct Cluster {
    nodes: Vec<Node>,
    mode: Mode,
    seed: SocketAddr,
}

impl Cluster {
    async fn start(n: usize, mode: Mode) -> anyhow::Result<(Cluster, Duration)> {
        let start = Instant::now();
        let first = spawn_node("n00", None, &mode).await?;
        let seed = first.membership.gossip_addr();
        let mut nodes = vec![first];
        for i in 1..n {
            nodes.push(spawn_node(&format!("n{i:02}"), Some(seed), &mode).await?);
        }
        let cluster = Cluster { nodes, mode, seed };
        cluster.converge(start).await?;
        Ok((cluster, start.elapsed()))
    }

    fn refs(&self) -> Vec<&Node> {
        self.nodes.iter().collect()
    }

    /// Waits until every node sees every node alive.
    async fn converge(&self, start: Instant) -> anyhow::Result<()> {
        let n = self.nodes.len();
        wait_all(&self.refs(), start, CONVERGE_TIMEOUT, |members| alive_count(members) >= n)
            .await
            .map(|_| ())
            .ok_or_else(|| anyhow::anyhow!("{n} {} nodes did not converge in {CONVERGE_TIMEOUT:?}", self.mode.label()))
    }

    async fn shutdown(self) {
        for node in self.nodes {
            let _ = node.membership.shutdown().await;
        }
    }
}

#[derive(Default)]
struct Samples(Vec<Duration>);

impl Samples {
    fn quantile(&self, q: f64) -> Option<Duration> {
        let mut sorted = self.0.clone();
        sorted.sort();
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
        sorted.get(rank - 1).copied()
    }
}

fn secs(duration: Option<Duration>) -> String {
    duration.map(|d| format!("{:.2} s", d.as_secs_f64())).unwrap_or_else(|| "-".to_string())
}

struct DetectRow {
    n: usize,
    all: Samples,
    each: Samples,
    timeouts: usize,
}

async fn detect(cluster: &mut Cluster, runs: usize) -> anyhow::Result<DetectRow> {
    let n = cluster.nodes.len();
    let mut row = DetectRow { n, all: Samples::default(), each: Samples::default(), timeouts: 0 };
    for run in 0..runs {
        let index = rand::random_range(1..n);
        let victim = cluster.nodes.remove(index);
        let name = victim.membership.node_name().to_string();
        let generation = victim.membership.generation();
        let start = Instant::now();
        victim.membership.shutdown().await?;
        let dead = |members: &[Member]| {
            members.iter().any(|m| m.name == name && m.generation == generation && m.state == MemberState::Dead)
        };
        match wait_all(&cluster.refs(), start, DETECT_TIMEOUT, dead).await {
            Some(times) => {
                let worst = times.iter().copied().max().unwrap_or_default();
                eprintln!("  detect N={n} run {}: {name} dead everywhere after {:.3} s", run + 1, worst.as_secs_f64());
                row.all.0.push(worst);
                row.each.0.extend(times);
            }
            None => {
                eprintln!("  detect N={n} run {}: {name} not dead everywhere within {DETECT_TIMEOUT:?}", run + 1);
                row.timeouts += 1;
            }
        }
        // Back to N: the same name restarts as a new generation.
        let node = spawn_node(&name, Some(cluster.seed), &cluster.mode).await?;
        cluster.nodes.insert(index, node);
        cluster.converge(Instant::now()).await?;
        tokio::time::sleep(SETTLE).await;
    }
    Ok(row)
}

struct JoinRow {
    n: usize,
    everyone_sees_it: Samples,
    it_sees_everyone: Samples,
    timeouts: usize,
}

async fn join(cluster: &mut Cluster, runs: usize) -> anyhow::Result<JoinRow> {
    let n = cluster.nodes.len();
    let mut row =
        JoinRow { n, everyone_sees_it: Samples::default(), it_sees_everyone: Samples::default(), timeouts: 0 };
    for run in 0..runs {
        let size = cluster.nodes.len();
        let seed = cluster.nodes[rand::random_range(0..size)].membership.gossip_addr();
        let name = format!("join{run:02}");
        let start = Instant::now();
        let node = spawn_node(&name, Some(seed), &cluster.mode).await?;
        let generation = node.membership.generation();
        let existing = cluster.refs();
        let newcomer = [&node];
        let seen = wait_all(&existing, start, JOIN_TIMEOUT, |members| is_alive(members, &name, Some(generation)));
        let sees = wait_all(&newcomer, start, JOIN_TIMEOUT, |members| alive_count(members) > size);
        let (seen, sees) = tokio::join!(seen, sees);
        match (seen, sees) {
            (Some(seen), Some(sees)) => {
                let worst = seen.iter().copied().max().unwrap_or_default();
                eprintln!(
                    "  join N={size} run {}: {name} alive everywhere after {:.3} s",
                    run + 1,
                    worst.as_secs_f64()
                );
                row.everyone_sees_it.0.push(worst);
                row.it_sees_everyone.0.extend(sees);
            }
            _ => {
                eprintln!("  join N={size} run {}: {name} not alive everywhere within {JOIN_TIMEOUT:?}", run + 1);
                row.timeouts += 1;
            }
        }
        cluster.nodes.push(node);
        cluster.converge(Instant::now()).await?;
        tokio::time::sleep(SETTLE).await;
    }
    Ok(row)
}

struct BytesRow {
    n: usize,
    mode: &'static str,
    mean_bps: f64,
    max_bps: f64,
    datagrams_ps: f64,
    payload_bps: f64,
}

async fn bytes(cluster: &Cluster) -> BytesRow {
    tokio::time::sleep(BYTES_WARMUP).await;
    let before: Vec<(u64, u64)> = cluster.nodes.iter().map(Node::sent).collect();
    let start = Instant::now();
    tokio::time::sleep(BYTES_WINDOW).await;
    let after: Vec<(u64, u64)> = cluster.nodes.iter().map(Node::sent).collect();
    let elapsed = start.elapsed().as_secs_f64();
    let n = cluster.nodes.len();
    let deltas: Vec<(u64, u64)> = before.iter().zip(&after).map(|(b, a)| (a.0 - b.0, a.1 - b.1)).collect();
    let total_datagrams: u64 = deltas.iter().map(|d| d.0).sum();
    let total_bytes: u64 = deltas.iter().map(|d| d.1).sum();
    let max_bytes = deltas.iter().map(|d| d.1).max().unwrap_or(0);
    let overhead = match cluster.mode {
        Mode::Sealed(_) => (SEAL_OVERHEAD + SINGLE_FRAME_HEADER_LEN) as u64,
        Mode::Plain => 0,
    };
    let payload = total_bytes.saturating_sub(total_datagrams * overhead);
    BytesRow {
        n,
        mode: cluster.mode.label(),
        mean_bps: total_bytes as f64 / elapsed / n as f64,
        max_bps: max_bytes as f64 / elapsed,
        datagrams_ps: total_datagrams as f64 / elapsed / n as f64,
        payload_bps: payload as f64 / elapsed / n as f64,
    }
}

#[derive(Default)]
struct Report {
    detect: Vec<DetectRow>,
    join: Vec<JoinRow>,
    bytes: Vec<BytesRow>,
    startup: Vec<(usize, &'static str, Duration)>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let what = std::env::args().nth(1).unwrap_or_else(|| "all".to_string());
    let (do_detect, do_join, do_bytes) = match what.as_str() {
        "detect" => (true, false, false),
        "join" => (false, true, false),
        "bytes" => (false, false, true),
        "all" => (true, true, true),
        other => {
            eprintln!("usage: membership_bench [detect|join|bytes|all] (got {other:?})");
            std::process::exit(2);
        }
    };
    let began = Instant::now();
    let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    let mut report = Report::default();
    let key = GossipKey::generate();

    // One sealed cluster per size: steady-state bytes first, then kills/restarts, then joins.
    for n in [3, 10, 50] {
        let detect_runs = DETECT_SIZES.iter().find(|(size, _)| *size == n).map(|(_, runs)| *runs).filter(|_| do_detect);
        let join_runs = JOIN_SIZES.iter().find(|(size, _)| *size == n).map(|(_, runs)| *runs).filter(|_| do_join);
        let measure_bytes = do_bytes && BYTES_SIZES.contains(&n);
        if detect_runs.is_none() && join_runs.is_none() && !measure_bytes {
            continue;
        }
        let (mut cluster, took) = Cluster::start(n, Mode::Sealed(key.clone())).await?;
        eprintln!("sealed N={n}: all alive everywhere after {:.2} s", took.as_secs_f64());
        report.startup.push((n, "sealed", took));
        if measure_bytes {
            report.bytes.push(bytes(&cluster).await);
        }
        if let Some(runs) = detect_runs {
            report.detect.push(detect(&mut cluster, runs).await?);
        }
        if let Some(runs) = join_runs {
            report.join.push(join(&mut cluster, runs).await?);
        }
        cluster.shutdown().await;
    }
    if do_bytes {
        for n in BYTES_SIZES {
            let (cluster, took) = Cluster::start(n, Mode::Plain).await?;
            eprintln!("plain N={n}: all alive everywhere after {:.2} s", took.as_secs_f64());
            report.startup.push((n, "plain", took));
            report.bytes.push(bytes(&cluster).await);
            cluster.shutdown().await;
        }
    }

    println!();
    println!(
        "membership bench: {cores} cores, all nodes in one process (tokio multi-thread), UDP on 127.0.0.1, \
         gossip {} ms, phi {}",
        gossip_interval().as_millis(),
        phi()
    );
    if !report.startup.is_empty() {
        let startup: Vec<String> =
            report.startup.iter().map(|(n, mode, took)| format!("{mode} N={n} {:.2} s", took.as_secs_f64())).collect();
        println!("cold start to all-alive: {}", startup.join(", "));
    }
    if !report.detect.is_empty() {
        println!();
        println!("failure detection, sealed: kill -> every survivor reports Dead   (goal p99 <= 1.50 s)");
        println!(
            "{:>4} {:>5} {:>9} {:>9} {:>9} {:>16} {:>9}",
            "N", "runs", "p50", "p99", "max", "per-survivor p50", "timeouts"
        );
        for row in &report.detect {
            println!(
                "{:>4} {:>5} {:>9} {:>9} {:>9} {:>16} {:>9}",
                row.n,
                row.all.0.len(),
                secs(row.all.quantile(0.5)),
                secs(row.all.quantile(0.99)),
                secs(row.all.quantile(1.0)),
                secs(row.each.quantile(0.5)),
                row.timeouts
            );
        }
    }
    if !report.join.is_empty() {
        println!();
        println!("join, sealed: spawn -> every member lists it alive   (goal <= 2.00 s; N grows by one per run)");
        println!(
            "{:>4} {:>5} {:>9} {:>9} {:>9} {:>19} {:>9}",
            "N", "runs", "p50", "p99", "max", "it sees all (p50)", "timeouts"
        );
        for row in &report.join {
            println!(
                "{:>4} {:>5} {:>9} {:>9} {:>9} {:>19} {:>9}",
                row.n,
                row.everyone_sees_it.0.len(),
                secs(row.everyone_sees_it.quantile(0.5)),
                secs(row.everyone_sees_it.quantile(0.99)),
                secs(row.everyone_sees_it.quantile(1.0)),
                secs(row.it_sees_everyone.quantile(0.5)),
                row.timeouts
            );
        }
    }
    if !report.bytes.is_empty() {
        println!();
        println!(
            "gossip sent per node, {} s steady state, UDP payload bytes (KB = 1000 B)   (goal <= 20 KB/s at N=50)",
            BYTES_WINDOW.as_secs()
        );
        println!(
            "{:>4} {:>7} {:>11} {:>11} {:>13} {:>10} {:>18}",
            "N", "mode", "mean KB/s", "max KB/s", "datagrams/s", "B/datagram", "minus seal KB/s"
        );
        for row in &report.bytes {
            println!(
                "{:>4} {:>7} {:>11.2} {:>11.2} {:>13.1} {:>10.0} {:>18.2}",
                row.n,
                row.mode,
                row.mean_bps / 1000.0,
                row.max_bps / 1000.0,
                row.datagrams_ps,
                row.mean_bps / row.datagrams_ps.max(f64::MIN_POSITIVE),
                row.payload_bps / 1000.0
            );
        }
        println!(
            "  sealed: the transport's counters; plain: chitchat's UdpSocket wrapped in a counting transport; \
             'minus seal' = sealed bytes - {} B per datagram (seal {SEAL_OVERHEAD} + frame header {SINGLE_FRAME_HEADER_LEN})",
            SEAL_OVERHEAD + SINGLE_FRAME_HEADER_LEN
        );
    }
    println!("total runtime {:.0} s", began.elapsed().as_secs_f64());
    Ok(())
}

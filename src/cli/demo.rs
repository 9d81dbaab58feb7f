//! The quick start: a local three-node cluster of real agent processes (each with its own data
//! dir and ports on 127.0.0.1), `hello` pushed and deployed from `examples/hello.yaml`, steady
//! traffic through one node's gateway, one node killed with SIGKILL, and a timeline of what
//! happened: when the death was noticed, when the replacement was ready, how many requests
//! failed, and latency before, during and after. Then the cluster keeps serving until Ctrl-C.
//!
//! `--runs N` repeats the kill (restarting the node between runs) and prints percentiles:
//! `benches/failover.sh` uses it. `--traffic-via remote` sends the traffic through a node
//! with no local replica, so every request is forwarded over QUIC to another node.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Args, ValueEnum};

use crate::control::client::Client;
use crate::launch::{self, AgentProcess};
use crate::peering::NodeView;
use crate::reconcile::ReplicaStatus;

/// The `hello` component, built from `modules/hello` and embedded in the binary.
pub const HELLO_WASM: &[u8] = include_bytes!(concat!(env!("WASMFLEET_MODULES_DIR"), "/hello.wasm"));
/// The manifest the demo applies.
pub const HELLO_YAML: &str = include_str!("../../examples/hello.yaml");

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Via {
    /// Through a node that runs a replica (served locally).
    Local,
    /// Through a node without a replica (forwarded over QUIC); needs replicas < nodes.
    Remote,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Gateway address of the first node (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub gateway: std::net::SocketAddr,
    /// Nodes in the local cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Replicas of hello.
    #[arg(long, default_value_t = 3)]
    pub replicas: u32,
    /// Which gateway the traffic goes through.
    #[arg(long, value_enum, default_value_t = Via::Local)]
    pub traffic_via: Via,
    /// Concurrent clients of the traffic.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Kill-and-recover cycles (the killed node restarts between cycles).
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Exit after the timeline instead of serving until Ctrl-C.
    #[arg(long)]
    pub exit: bool,
}

/// One agent process of the local cluster.
struct Node {
    name: String,
    dir: PathBuf,
    process: Option<AgentProcess>,
    api: String,
    gateway: String,
    cluster: String,
    token: String,
}

impl Node {
    fn client(&self) -> Client {
        Client::new(self.api.clone(), self.token.clone())
    }

    fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(p) = self.process.as_mut() {
            // A graceful stop (SIGTERM): the agent announces it is leaving.
            p.stop(Duration::from_secs(3));
        }
    }
}

/// Starts `wasmfleet agent` as a child and reads its addresses from its first lines.
fn spawn_node(name: &str, dir: &Path, gateway: &str, join: Option<(&str, &str)>) -> Result<Node> {
    std::fs::create_dir_all(dir)?;
    let log_path = dir.join("agent.log");
    let log = std::fs::File::create(&log_path)?;
    let mut cmd = launch::agent_command(std::env::current_exe()?, dir, gateway);
    cmd.args(["--node-name", name]);
    if let Some((seed, token)) = join {
        cmd.args(["--join", seed, "--join-token", token]);
    }
    cmd.stderr(log);
    let process = AgentProcess::spawn(cmd, launch::BANNER_TIMEOUT)
        .with_context(|| format!("{name} did not start; see {}", log_path.display()))?;
    let token = std::fs::read_to_string(dir.join("token"))?.trim().to_string();
    let l = process.listeners.clone();
    Ok(Node {
        name: name.to_string(),
        dir: dir.to_path_buf(),
        process: Some(process),
        api: l.api,
        gateway: l.gateway,
        cluster: l.cluster,
        token,
    })
}

fn wait<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn alive(node: &Node) -> BTreeSet<String> {
    node.client()
        .get::<Vec<NodeView>>("/v1/nodes")
        .map(|v| v.into_iter().filter(|n| n.state == "Alive").map(|n| n.name).collect())
        .unwrap_or_default()
}

/// Ready hello replicas as `node` sees the cluster: name -> node.
fn ready_hello(node: &Node) -> BTreeMap<String, String> {
    node.client()
        .get::<Vec<ReplicaStatus>>("/v1/replicas")
        .map(|v| {
            v.into_iter()
                .filter(|r| r.owner == "Deployment/default/hello" && r.ready)
                .map(|r| (r.name, r.node))
                .collect()
        })
        .unwrap_or_default()
}

/// Successful requests before the kill and after the recovery: a latency baseline, and proof
/// that traffic flows on both sides of the failover.
const STEADY_REQUESTS: usize = 2000;
/// How long those may take (a debug build on a loaded machine serves ~1 k requests/s).
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// One request's outcome: when it started (since the load began), latency, success.
#[derive(Clone, Copy)]
struct Sample {
    at: Duration,
    latency: Duration,
    ok: bool,
}

struct Load {
    stop: Arc<AtomicBool>,
    /// Requests answered 200 so far.
    ok: Arc<AtomicUsize>,
    samples: Arc<Mutex<Vec<Sample>>>,
    errors: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    start: Instant,
}

impl Load {
    fn start(url: String, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok_count) = (stop.clone(), ok.clone());
                let (samples, errors, url) = (samples.clone(), errors.clone(), url.clone());
                std::thread::spawn(move || {
                    let http = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
                    let mut mine = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let result = http.get(&url).set("Host", "hello").call();
                        let failure = match result {
                            Ok(r) if r.status() == 200 => {
                                r.into_string().err().map(|e| format!("reading the body: {e}"))
                            }
                            Ok(r) => Some(format!("status {}", r.status())),
                            Err(ureq::Error::Status(code, r)) => {
                                Some(format!("status {code}: {}", r.into_string().unwrap_or_default().trim()))
                            }
                            Err(e) => Some(e.to_string()),
                        };
                        let ok = failure.is_none();
                        match failure {
                            None => _ = ok_count.fetch_add(1, Ordering::Relaxed),
                            Some(f) => errors.lock().unwrap_or_else(|e| e.into_inner()).push(f),
                        }
                        mine.push(Sample { at: t - start, latency: t.elapsed(), ok });
                    }
                    samples.lock().unwrap_or_else(|e| e.into_inner()).extend(mine);
                })
            })
            .collect();
        Load { stop, ok, samples, errors, threads, start }
    }

    /// Waits until `n` more requests than now have been answered 200 (the traffic flows).
    fn wait_ok(&self, what: &str, n: usize) -> Result<()> {
        let target = self.ok.load(Ordering::Relaxed) + n;
        wait(what, LOAD_TIMEOUT, || (self.ok.load(Ordering::Relaxed) >= target).then_some(())).map_err(|e| {
            let errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
            anyhow!("{e}; first errors: {:?}", &errors[..errors.len().min(3)])
        })
    }

    fn finish(self) -> (Vec<Sample>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let mut s = self.samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
        s.sort_by_key(|s| s.at);
        let errors = self.errors.lock().unwrap_or_else(|e| e.into_inner()).clone();
        (s, errors)
    }
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// A request latency: fractions of a millisecond where they matter (a sub-millisecond p99
/// must not print as "0 ms").
fn latency_ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 { format!("{ms:.2} ms") } else { format!("{ms:.0} ms") }
}

/// What one kill cost.
struct Outcome {
    detected: Duration,
    replaced: Duration,
    requests: usize,
    failed: usize,
}

pub fn run(args: &DemoArgs, data_dir: Option<PathBuf>) -> Result<i32> {
    if args.nodes < 2 {
        bail!("--nodes must be at least 2 (one to kill, one to serve)");
    }
    if args.traffic_via == Via::Remote && args.replicas as usize >= args.nodes {
        bail!("--traffic-via remote needs fewer replicas than nodes (e.g. --replicas {})", args.nodes - 1);
    }
    let tmp;
    let root = match data_dir {
        Some(d) => d,
        None => {
            tmp = tempfile::Builder::new().prefix("wasmfleet-demo-").tempdir().context("creating a temporary dir")?;
            tmp.path().to_path_buf()
        }
    };
    let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "wasmfleet".into());
    println!(
        "wasmfleet demo: a local cluster of {} agents (real processes), data under {}",
        args.nodes,
        root.display()
    );

    // Node 1 founds the cluster; the others join with a token.
    let started = Instant::now();
    let mut nodes: Vec<Node> = Vec::new();
    let first = spawn_node("node-1", &root.join("node-1"), &args.gateway.to_string(), None)
        .or_else(|_| spawn_node("node-1", &root.join("node-1"), "127.0.0.1:0", None))?;
    let token: serde_json::Value =
        first.client().post_json("/v1/tokens", &serde_json::json!({ "ttl_secs": 3600 })).context("creating a token")?;
    let token = token["token"].as_str().unwrap_or_default().to_string();
    let seed = first.cluster.clone();
    nodes.push(first);
    for i in 2..=args.nodes {
        let name = format!("node-{i}");
        nodes.push(spawn_node(&name, &root.join(&name), "127.0.0.1:0", Some((&seed, &token)))?);
    }
    wait("every node to see every other alive", Duration::from_secs(30), || {
        nodes.iter().all(|n| alive(n).len() == args.nodes).then_some(())
    })?;
    for n in &nodes {
        println!("  {:<7} api {}  gateway {}  cluster {}", n.name, n.api, n.gateway, n.cluster);
    }
    println!("cluster formed in {}", ms(started.elapsed()));

    // Deploy hello (a ClusterIP Service: every gateway serves it by Host).
    let yaml = HELLO_YAML
        .replace("type: LoadBalancer", "type: ClusterIP")
        .replace("replicas: 3", &format!("replicas: {}", args.replicas));
    let client = nodes[0].client();
    let _: serde_json::Value = client.post_bytes("/v1/modules?name=hello:1.0", "application/wasm", HELLO_WASM)?;
    let _: serde_json::Value =
        client.post_bytes("/v1/apply?source=examples/hello.yaml", "application/yaml", yaml.as_bytes())?;
    println!("\n$ wasmfleet push hello:1.0 hello.wasm && wasmfleet apply -f examples/hello.yaml");
    let placed = wait("hello to be ready on distinct nodes", Duration::from_secs(30), || {
        let seen = ready_hello(&nodes[0]);
        let hosts: BTreeSet<&String> = seen.values().collect();
        (seen.len() == args.replicas as usize && hosts.len() == seen.len().min(args.nodes)).then_some(seen)
    })?;
    for (replica, node) in &placed {
        println!("  {replica:<9} ready on {node}");
    }

    let mut outcomes = Vec::new();
    for run in 0..args.runs {
        let placed = ready_hello(&nodes[0]);
        let hosts: BTreeSet<String> = placed.values().cloned().collect();
        let via = match args.traffic_via {
            Via::Local => nodes.iter().position(|n| hosts.contains(&n.name)),
            Via::Remote => nodes.iter().position(|n| !hosts.contains(&n.name)),
        }
        .ok_or_else(|| anyhow!("no node fits --traffic-via"))?;
        let victim = nodes
            .iter()
            .position(|n| hosts.contains(&n.name) && n.name != nodes[via].name)
            .ok_or_else(|| anyhow!("no replica host to kill"))?;
        let outcome = kill_and_recover(args, &mut nodes, via, victim, run == 0)?;
        outcomes.push(outcome);
        if run + 1 < args.runs || !args.exit {
            // Bring the node back for the next run (or for the cluster that keeps serving).
            let name = nodes[victim].name.clone();
            let dir = nodes[victim].dir.clone();
            nodes[victim] = spawn_node(&name, &dir, "127.0.0.1:0", None)?;
            wait("the killed node to rejoin", Duration::from_secs(30), || {
                nodes.iter().all(|n| alive(n).len() == args.nodes).then_some(())
            })?;
            wait("replicas on distinct nodes again", Duration::from_secs(30), || {
                let seen = ready_hello(&nodes[via]);
                let hosts: BTreeSet<&String> = seen.values().collect();
                (seen.len() == args.replicas as usize && hosts.len() == seen.len().min(args.nodes)).then_some(())
            })?;
            if run + 1 < args.runs {
                eprintln!(
                    "run {}: detected {}, replacement ready {}, {} of {} requests failed",
                    run + 1,
                    ms(outcomes[run].detected),
                    ms(outcomes[run].replaced),
                    outcomes[run].failed,
                    outcomes[run].requests
                );
            }
        }
    }
    if args.runs > 1 {
        let det: Vec<Duration> = outcomes.iter().map(|o| o.detected).collect();
        let rep: Vec<Duration> = outcomes.iter().map(|o| o.replaced).collect();
        let failed: usize = outcomes.iter().map(|o| o.failed).sum();
        let requests: usize = outcomes.iter().map(|o| o.requests).sum();
        println!(
            "\n{} kills, traffic via a node with {} replica:",
            args.runs,
            match args.traffic_via {
                Via::Local => "a local",
                Via::Remote => "no local",
            }
        );
        println!(
            "  kill -> detected          p50 {:>7}  p99 {:>7}  max {:>7}",
            ms(percentile(det.clone(), 0.5)),
            ms(percentile(det.clone(), 0.99)),
            ms(percentile(det, 1.0))
        );
        println!(
            "  kill -> replacement ready p50 {:>7}  p99 {:>7}  max {:>7}",
            ms(percentile(rep.clone(), 0.5)),
            ms(percentile(rep.clone(), 0.99)),
            ms(percentile(rep, 1.0))
        );
        println!("  failed requests           {failed} of {requests}");
    }
    let _ = std::io::stdout().flush();
    if args.exit {
        return Ok(if outcomes.iter().all(|o| o.failed == 0) { 0 } else { 1 });
    }
    println!("\nThe cluster keeps serving. Try, in another terminal:");
    println!("  curl -H 'Host: hello' {}/", nodes[0].gateway);
    println!("  export WASMFLEET_DATA_DIR={}", nodes[0].dir.display());
    println!("  {exe} get nodes");
    println!("  {exe} get replicas -o wide");
    println!("  {exe} get services");
    println!("  {exe} scale deployment hello --replicas 5");
    println!("  kill -9 <pid of an agent>   # and watch `get replicas -o wide`");
    println!("Agent logs: {}/node-*/agent.log. Press Ctrl-C to stop.", root.display());
    let _ = std::io::stdout().flush();
    crate::cli::tokio_rt()?.block_on(crate::cli::wait_for_signal());
    println!("stopping");
    drop(nodes);
    Ok(0)
}

/// Drives traffic through `via`, kills `victim`, waits until the loss is noticed and the
/// replica replaced, and reports.
fn kill_and_recover(args: &DemoArgs, nodes: &mut [Node], via: usize, victim: usize, print: bool) -> Result<Outcome> {
    let url = format!("{}/", nodes[via].gateway);
    let load = Load::start(url, args.clients);
    load.wait_ok("traffic before the kill", STEADY_REQUESTS)?;
    let victim_name = nodes[victim].name.clone();
    let pid = nodes[victim].process.as_ref().map(AgentProcess::id).unwrap_or(0);
    let killed_at = Instant::now();
    nodes[victim].kill();
    let kill_offset = killed_at - load.start;
    let observer = &nodes[via];
    let detected = wait("the death to be noticed", Duration::from_secs(30), || {
        let v = observer.client().get::<Vec<NodeView>>("/v1/nodes").ok()?;
        v.iter().any(|n| n.name == victim_name && n.state == "Dead").then(|| killed_at.elapsed())
    })?;
    let replaced = wait("the replacement to be ready", Duration::from_secs(30), || {
        let seen = ready_hello(observer);
        (seen.len() == args.replicas as usize && !seen.values().any(|n| *n == victim_name)).then(|| killed_at.elapsed())
    })?;
    load.wait_ok("traffic after the recovery", STEADY_REQUESTS)?;
    let (samples, errors) = load.finish();
    let recovered_offset = kill_offset + replaced;
    let phase = |from: Duration, to: Duration| -> Vec<Sample> {
        samples.iter().filter(|s| s.at >= from && s.at < to).copied().collect()
    };
    let before = phase(Duration::ZERO, kill_offset);
    let during = phase(kill_offset, recovered_offset);
    let after = phase(recovered_offset, Duration::MAX);
    let failed = samples.iter().filter(|s| !s.ok).count();
    if print {
        let pct = |v: &[Sample], q: f64| latency_ms(percentile(v.iter().map(|s| s.latency).collect(), q));
        println!(
            "\nTraffic: {} clients through {}'s gateway ({}), then kill -9 {victim_name} (pid {pid}):",
            args.clients,
            nodes[via].name,
            match args.traffic_via {
                Via::Local => "it has a local replica",
                Via::Remote => "no local replica: forwarded over QUIC",
            }
        );
        println!("  t=0 ms        {victim_name} killed");
        println!("  t={:<10} {} sees {victim_name} dead (gossip, phi-accrual)", ms(detected), nodes[via].name);
        println!("  t={:<10} {} ready hello replicas again, none on {victim_name}", ms(replaced), args.replicas);
        println!("  requests: {} sent, {failed} failed", samples.len());
        let max = |v: &[Sample]| latency_ms(v.iter().map(|s| s.latency).max().unwrap_or_default());
        println!("  latency   p50 / p99 / max");
        for (label, v) in [("before", &before), ("during", &during), ("after", &after)] {
            println!("    {label:<7} {} / {} / {}   ({} requests)", pct(v, 0.5), pct(v, 0.99), max(v), v.len());
        }
        for e in errors.iter().take(3) {
            println!("  error: {e}");
        }
    }
    if !print && failed > 0 {
        let offsets: Vec<f64> =
            samples.iter().filter(|s| !s.ok).map(|s| (s.at.as_secs_f64() - kill_offset.as_secs_f64()) * 1e3).collect();
        let (first, last) = offsets.iter().fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        eprintln!("  {failed} failures between {first:.0} ms and {last:.0} ms after the kill; first errors:");
        for e in errors.iter().take(3) {
            eprintln!("  error: {e}");
        }
    }
    Ok(Outcome { detected, replaced, requests: samples.len(), failed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_keep_their_fractions_below_ten_ms() {
        assert_eq!(latency_ms(Duration::from_micros(170)), "0.17 ms");
        assert_eq!(latency_ms(Duration::from_micros(9_994)), "9.99 ms");
        assert_eq!(latency_ms(Duration::from_micros(12_400)), "12 ms");
    }
}

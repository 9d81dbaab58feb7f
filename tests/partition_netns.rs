//! A network partition between real agent processes, each in a network namespace of its own:
//! five nodes on one bridge are split 2|3 (the two nodes' bridge ports move to a second
//! bridge), both sides keep serving the Service through their gateways and re-place the other
//! side's replicas onto their own nodes, then the split heals and every node sees five alive
//! members and computes the same placement again: the one from before the split. One node on
//! each side is an edge node that never runs the workload, so its gateway serves only by
//! forwarding over the mesh: across the split until the split is noticed, then within its side.
//! Steady GETs through every gateway run throughout; what they saw is printed at the end.
//!
//! Needs root and iproute2 (`ip netns`, veth, bridge), so it is `#[ignore]`d and run on purpose:
//! `scripts/chaos.sh`, or `cargo test --test partition_netns -- --ignored --nocapture` as root.
//! Nothing touches the host's network: the bridges live in a namespace of their own, addresses
//! are in 10.77.0.0/24 inside the namespaces, and every namespace carries this process's pid in
//! its name and is removed, with every process started in it, on every exit path (drop guards).
//!
//! The test process itself stays in the host's namespace. Agents and the CLI run through
//! `ip netns exec`; an agent's API and gateway listen on 127.0.0.1 (port 0) inside its
//! namespace, and HTTP through a gateway is sent by this test binary re-run inside the node's
//! namespace as the `netns_http_probe` helper.
//!
//! A second test splits the same way with `wasi:keyvalue` buckets: the majority keeps serving
//! atomics, the minority refuses them, and every copy of every key converges after the heal.
//!
//! Map: bounded commands (`output_within`, `ip`); the network (`Net`: bridge and node
//! namespaces, `attach` to split and heal); agents in namespaces (`NsAgent`: start, CLI, node
//! states, replicas, one HTTP request); HTTP from inside a namespace (`probe_command`,
//! `ProbeResult`, the `netns_http_probe` helper, steady `Load`); the cluster harness
//! (`Cluster`: start, timeline, `wait_each`, `hold_each`, diagnostics on failure); the
//! Service partition test; the key-value partition test.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{BIN, module_path};
use wasmfleet::launch::{AgentProcess, BANNER_TIMEOUT};

/// The first three octets of the nodes' addresses (node i: `.{i + 1}`).
const SUBNET: &str = "10.77.0";
/// Nodes; the first `SIDE_A` of them end up on the small side of the split.
const NODES: usize = 5;
const SIDE_A: usize = 2;
/// Nodes labelled `role=edge`, one on each side: hello (`nodeSelector: {role: worker}`) never
/// runs there, so their gateways serve only by forwarding over the mesh, across the split
/// until it is noticed, then within their side.
const EDGE: [usize; 2] = [1, 4];
const REPLICAS: usize = 5;
/// Marks the probe helper's result lines in the output of the re-run test binary.
const PROBE_MARK: &str = "@@probe ";

// ----- bounded commands -----

/// Runs `cmd` to completion, killing it after `timeout`.
fn output_within(mut cmd: Command, timeout: Duration) -> Result<Output, String> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {shown}: {e}"))?;
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{shown} still running after {timeout:?}; killed"));
            }
            Err(e) => return Err(format!("waiting for {shown}: {e}")),
        }
    };
    Ok(Output { status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() })
}

/// `ip ARGS`, which must succeed.
#[track_caller]
fn ip(args: &[&str]) {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    match output_within(cmd, Duration::from_secs(20)) {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!("`ip {}` failed ({}): {}", args.join(" "), o.status, String::from_utf8_lossy(&o.stderr).trim()),
        Err(e) => panic!("`ip {}`: {e}", args.join(" ")),
    }
}

fn epoch_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

// ----- the network -----

/// Network namespaces: one per node (`eth0`, 10.77.0.N/24, `lo` up) and one holding the
/// bridges `br0` (everyone) and `br1` (the cut-off side), each node's veth peer `pN` a port
/// of one of them. Dropping it deletes every namespace (and with them the veths and bridges).
struct Net {
    bridge_ns: String,
    node_ns: Vec<String>,
    created: Vec<String>,
}

impl Net {
    fn create(nodes: usize) -> Net {
        // One test process may build more than one network: each gets its own names.
        static NETS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let nth = NETS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = format!("wfpart-{}-{nth}", std::process::id());
        let mut net = Net { bridge_ns: format!("{prefix}-br"), node_ns: Vec::new(), created: Vec::new() };
        net.add_ns(&net.bridge_ns.clone());
        let br = net.bridge_ns.clone();
        for bridge in ["br0", "br1"] {
            ip(&["-n", &br, "link", "add", bridge, "type", "bridge"]);
            ip(&["-n", &br, "link", "set", bridge, "up"]);
        }
        ip(&["-n", &br, "link", "set", "lo", "up"]);
        for i in 0..nodes {
            let ns = format!("{prefix}-n{i}");
            net.add_ns(&ns);
            let port = format!("p{i}");
            ip(&["-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns", &br]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", node_ip(i)), "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &br, "link", "set", &port, "master", "br0", "up"]);
            net.node_ns.push(ns);
        }
        net
    }

    fn add_ns(&mut self, name: &str) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "add", name]);
        match output_within(cmd, Duration::from_secs(20)) {
            Ok(o) if o.status.success() => self.created.push(name.to_string()),
            Ok(o) => panic!(
                "this test needs root and `ip netns` (iproute2): `ip netns add {name}` failed ({}): {}\n\
                 run it as root, e.g. with scripts/chaos.sh",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!("this test needs iproute2's `ip` on PATH and root: {e}"),
        }
    }

    /// Moves the bridge ports of `nodes` to `bridge` (`br0`: joined to everyone, `br1`: apart).
    fn attach(&self, nodes: std::ops::Range<usize>, bridge: &str) {
        for i in nodes {
            ip(&["-n", &self.bridge_ns, "link", "set", &format!("p{i}"), "master", bridge]);
        }
    }

    /// `ip -o link` of the bridge namespace: which port is on which bridge.
    fn describe(&self) -> String {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", &self.bridge_ns, "-o", "link", "show"]);
        match output_within(cmd, Duration::from_secs(10)) {
            Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
            Err(e) => e,
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            // Processes still in the namespace (there should be none) would keep it alive.
            let mut pids = Command::new("ip");
            pids.args(["netns", "pids", ns]);
            if let Ok(o) = output_within(pids, Duration::from_secs(10)) {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    eprintln!("partition test: killing leftover process {pid} in {ns}");
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let mut del = Command::new("ip");
            del.args(["netns", "del", ns]);
            match output_within(del, Duration::from_secs(20)) {
                Ok(o) if o.status.success() => {}
                Ok(o) => {
                    eprintln!("partition test: `ip netns del {ns}`: {}", String::from_utf8_lossy(&o.stderr).trim())
                }
                Err(e) => eprintln!("partition test: `ip netns del {ns}`: {e}"),
            }
        }
    }
}

fn node_ip(i: usize) -> String {
    format!("{SUBNET}.{}", i + 1)
}

fn node_name(i: usize) -> String {
    format!("node-{}", i + 1)
}

// ----- agents in namespaces -----

/// A `wasmfleet agent` started with `ip netns exec` (which execs it: the child is the agent);
/// killed on drop. Its stderr goes to `log`.
struct NsAgent {
    name: String,
    ns: String,
    _process: AgentProcess,
    data_dir: PathBuf,
    log: PathBuf,
    cluster: String,
    gateway: String,
}

impl NsAgent {
    fn start(ns: &str, name: &str, data_dir: PathBuf, log: PathBuf, ip_addr: &str, extra: &[&str]) -> NsAgent {
        let log_file = std::fs::File::create(&log).expect("create the agent log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, BIN, "agent", "--node-name", name])
            .args(["--listen-api", "127.0.0.1:0", "--listen-gateway", "127.0.0.1:0"])
            .args(["--listen-cluster", &format!("{ip_addr}:0")])
            .args(extra)
            .arg("--data-dir")
            .arg(&data_dir)
            .stderr(log_file)
            .env("NO_COLOR", "1");
        if std::env::var_os("WASMFLEET_LOG").is_none() {
            cmd.env("WASMFLEET_LOG", "warn,chitchat=info,wasmfleet=debug,wasmfleet_cluster=debug");
        }
        let process = AgentProcess::spawn(cmd, BANNER_TIMEOUT).unwrap_or_else(|e| {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            panic!(
                "{name} (`ip netns exec {ns} wasmfleet agent`): {e}; log tail:\n{}",
                all[all.len().saturating_sub(30)..].join("\n")
            )
        });
        NsAgent {
            name: name.to_string(),
            ns: ns.to_string(),
            gateway: process.listeners.gateway.clone(),
            cluster: process.listeners.cluster.clone(),
            _process: process,
            data_dir,
            log,
        }
    }

    /// The CLI against this agent, inside its namespace.
    fn cli(&self, args: &[&str]) -> Result<Output, String> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, BIN])
            .args(args)
            .env("WASMFLEET_DATA_DIR", &self.data_dir)
            .env_remove("WASMFLEET_SERVER")
            .env_remove("WASMFLEET_TOKEN");
        output_within(cmd, Duration::from_secs(30))
    }

    /// The CLI's stdout; panics when it fails.
    #[track_caller]
    fn cli_ok(&self, args: &[&str]) -> String {
        match self.cli(args) {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
            Ok(o) => panic!(
                "{}: `wasmfleet {}` failed ({}): {}{}",
                self.name,
                args.join(" "),
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("{}: `wasmfleet {}`: {e}", self.name, args.join(" ")),
        }
    }

    /// Node name -> state (Alive, Dead, Leaving) as this agent sees the cluster.
    fn node_states(&self) -> Result<Vec<(String, String)>, String> {
        let out = self.cli(&["get", "nodes", "-o", "json"])?;
        let nodes: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).map_err(|e| {
            format!("`get nodes -o json` ({}): {e}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim())
        })?;
        let mut states: Vec<(String, String)> = nodes
            .iter()
            .map(|n| (n["name"].as_str().unwrap_or("").to_string(), n["state"].as_str().unwrap_or("").to_string()))
            .collect();
        states.sort();
        Ok(states)
    }

    /// Ok when this agent sees exactly `alive` alive and every other node it knows dead;
    /// otherwise what it sees.
    fn sees_alive_exactly(&self, alive: &BTreeSet<String>) -> Result<(), String> {
        let states = self.node_states()?;
        let seen: BTreeSet<String> = states.iter().filter(|(_, s)| s == "Alive").map(|(n, _)| n.clone()).collect();
        if &seen == alive && states.iter().all(|(n, s)| alive.contains(n) || s == "Dead") {
            Ok(())
        } else {
            Err(format!("sees {states:?}"))
        }
    }

    /// The `hello` replicas this agent reports, cluster-wide: (name, node, ready), sorted.
    fn replicas(&self) -> Option<Vec<(String, String, bool)>> {
        let out = self.cli(&["get", "replicas", "-o", "json"]).ok().filter(|o| o.status.success())?;
        let reps: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).ok()?;
        let mut v: Vec<(String, String, bool)> = reps
            .iter()
            .filter(|r| r["owner"].as_str().is_some_and(|o| o.ends_with("/hello")))
            .map(|r| {
                (
                    r["name"].as_str().unwrap_or("").to_string(),
                    r["node"].as_str().unwrap_or("").to_string(),
                    r["ready"].as_bool() == Some(true),
                )
            })
            .collect();
        v.sort();
        Some(v)
    }

    /// `count` GETs through this agent's gateway (`Host: hello`), from inside its namespace.
    fn probe(&self, count: u32) -> Vec<ProbeResult> {
        let mut cmd = probe_command(&self.ns, &self.gateway);
        cmd.env("WF_PROBE_COUNT", count.to_string());
        match output_within(cmd, Duration::from_secs(5 * u64::from(count) + 20)) {
            Ok(o) => String::from_utf8_lossy(&o.stdout).lines().filter_map(ProbeResult::parse).collect(),
            Err(e) => vec![ProbeResult { at_ms: epoch_ms(), took_ms: 0, status: None, node: String::new(), detail: e }],
        }
    }

    /// One request `method path` with `Host: host` through this agent's gateway, from inside
    /// its namespace: (status, body); status 0 when there was no answer.
    fn http(&self, method: &str, path: &str, host: &str) -> (u16, String) {
        let mut cmd = probe_command(&self.ns, &self.gateway);
        cmd.env("WF_PROBE_COUNT", "1")
            .env("WF_PROBE_URL", format!("{}{path}", self.gateway))
            .env("WF_PROBE_HOST", host)
            .env("WF_PROBE_METHOD", method);
        let Ok(out) = output_within(cmd, Duration::from_secs(20)) else { return (0, String::new()) };
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let Some(r) = text.lines().find_map(ProbeResult::parse) else { return (0, text) };
        // The body follows the node field (`-` for a component that does not name its node).
        (r.status.unwrap_or(0), r.detail)
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

// ----- HTTP from inside a namespace -----

/// This test binary, re-run inside `ns` as the `netns_http_probe` helper against `gateway`.
fn probe_command(ns: &str, gateway: &str) -> Command {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(exe)
        .args(["--exact", "netns_http_probe", "--ignored", "--nocapture", "--test-threads", "1"])
        .env("WF_PROBE_URL", format!("{gateway}/"));
    cmd
}

/// One GET through a gateway: when it was sent, how long it took, the status (None: no
/// answer), the node that answered.
#[derive(Clone, Debug)]
struct ProbeResult {
    at_ms: u64,
    took_ms: u64,
    status: Option<u16>,
    node: String,
    detail: String,
}

impl ProbeResult {
    fn parse(line: &str) -> Option<ProbeResult> {
        // libtest may print its own text on the same line, before the mark.
        let rest = &line[line.find(PROBE_MARK)? + PROBE_MARK.len()..];
        let mut parts = rest.splitn(5, ' ');
        let at_ms = parts.next()?.parse().ok()?;
        let took_ms = parts.next()?.parse().ok()?;
        let status = parts.next()?.parse().ok();
        let node = parts.next()?.to_string();
        Some(ProbeResult { at_ms, took_ms, status, node, detail: parts.next().unwrap_or("").to_string() })
    }

    fn ok(&self) -> bool {
        self.status == Some(200)
    }
}

/// Not a test: the HTTP client that `probe_command` runs inside a node's namespace (the test
/// process itself cannot reach 127.0.0.1 of another namespace). Without its environment it
/// does nothing. Prints one line per request:
/// `@@probe <sent, epoch ms> <took ms> <status|-> <node|-> <detail>`.
/// `WF_PROBE_COUNT=n`: n requests; `WF_PROBE_STOP=file`: requests every 20 ms until the file
/// exists.
#[test]
#[ignore = "a helper that the partition test runs inside a network namespace"]
fn netns_http_probe() {
    let Ok(url) = std::env::var("WF_PROBE_URL") else { return };
    let count: u64 = std::env::var("WF_PROBE_COUNT").ok().and_then(|c| c.parse().ok()).unwrap_or(u64::MAX);
    let stop = std::env::var_os("WF_PROBE_STOP").map(PathBuf::from);
    let client = ureq::AgentBuilder::new().timeout(Duration::from_secs(3)).build();
    for n in 0..count {
        if stop.as_deref().is_some_and(Path::exists) {
            break;
        }
        if stop.is_some() && n > 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        let (at, sent) = (epoch_ms(), Instant::now());
        let host = std::env::var("WF_PROBE_HOST").unwrap_or_else(|_| "hello".into());
        let method = std::env::var("WF_PROBE_METHOD").unwrap_or_else(|_| "GET".into());
        let answer = client.request(&method, &url).set("Host", &host).call();
        let took = sent.elapsed().as_millis();
        let line = match answer {
            Ok(resp) | Err(ureq::Error::Status(_, resp)) => {
                let status = resp.status();
                let body = resp.into_string().unwrap_or_default();
                // hello answers `...! path=/ replica=hello-3 node=node-4`.
                let node = body.split_whitespace().find_map(|w| w.strip_prefix("node=")).unwrap_or("-").to_string();
                format!("{at} {took} {status} {node} {}", body.trim().replace('\n', " "))
            }
            Err(e) => format!("{at} {took} - - {}", e.to_string().replace('\n', " ")),
        };
        println!("{PROBE_MARK}{line}");
    }
}

/// Steady GETs through one gateway, from inside its namespace, in the background, until
/// [`Load::stop`] (or drop, which kills the helper).
struct Load {
    child: Child,
    results: Arc<Mutex<Vec<ProbeResult>>>,
}

impl Load {
    fn start(agent: &NsAgent, stop_file: &Path) -> Load {
        let mut cmd = probe_command(&agent.ns, &agent.gateway);
        cmd.env("WF_PROBE_STOP", stop_file).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn the probe helper");
        let stdout = child.stdout.take().expect("piped stdout");
        let results: Arc<Mutex<Vec<ProbeResult>>> = Arc::default();
        let sink = results.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(r) = ProbeResult::parse(&line) {
                    sink.lock().unwrap_or_else(|e| e.into_inner()).push(r);
                }
            }
        });
        Load { child, results }
    }

    /// Waits (bounded) for the helper to see the stop file and exit.
    fn stop(&mut self) -> Vec<ProbeResult> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.results.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Requests sent in `[from, to)` (epoch ms): answered, failed, the slowest answer, and the
/// longest time without an answer (from the first failed request to the next answered one).
fn load_summary(results: &[ProbeResult], from: u64, to: u64) -> String {
    let window: Vec<&ProbeResult> = results.iter().filter(|r| r.at_ms >= from && r.at_ms < to).collect();
    let slowest = window.iter().filter(|r| r.ok()).map(|r| r.took_ms).max().unwrap_or(0);
    let (mut ok, mut failed, mut longest, mut outage_since) = (0, 0, 0, None);
    for r in &window {
        if r.ok() {
            ok += 1;
            if let Some(since) = outage_since.take() {
                longest = longest.max(r.at_ms - since);
            }
        } else {
            failed += 1;
            outage_since.get_or_insert(r.at_ms);
        }
    }
    if let Some(since) = outage_since {
        longest = longest.max(to.saturating_sub(since));
    }
    format!("{ok:>4} ok, {failed} failed, slowest {slowest:>4} ms, longest outage {longest} ms")
}

// ----- the cluster -----

/// The agents, their network, their files and a timeline. Dropped on a panic, it first prints
/// what every node sees, the tail of every agent's log and the timeline, and keeps the logs.
/// Fields drop in order: load helpers, agents, then the namespaces.
struct Cluster {
    loads: Vec<Load>,
    agents: Vec<NsAgent>,
    net: Net,
    work: Option<tempfile::TempDir>,
    started: Instant,
    timeline: Mutex<Vec<(Duration, String)>>,
}

impl Cluster {
    /// The network, then `NODES` agents, each bound to its namespace's address; node-1 founds
    /// the cluster and the others join it with a token.
    fn start() -> Cluster {
        let net = Net::create(NODES);
        let work = tempfile::tempdir().expect("tempdir");
        let root = work.path().to_path_buf();
        let mut c = Cluster {
            loads: Vec::new(),
            agents: Vec::new(),
            net,
            work: Some(work),
            started: Instant::now(),
            timeline: Mutex::default(),
        };
        let start = |c: &Cluster, i: usize, join: &[&str]| {
            let (dir, log) = (root.join(node_name(i)), root.join(format!("{}.log", node_name(i))));
            let role = if EDGE.contains(&i) { "role=edge" } else { "role=worker" };
            let extra: Vec<&str> = ["--labels", role].iter().chain(join).copied().collect();
            NsAgent::start(&c.net.node_ns[i], &node_name(i), dir, log, &node_ip(i), &extra)
        };
        let first = start(&c, 0, &[]);
        c.agents.push(first);
        let token = c.agents[0].cli_ok(&["token", "create", "--ttl", "1h"]).trim().to_string();
        let seed = c.agents[0].cluster.clone();
        for i in 1..NODES {
            let agent = start(&c, i, &["--join", &seed, "--token", &token]);
            c.agents.push(agent);
        }
        c.mark(format!("{NODES} agents started, one per namespace, on {SUBNET}.1-{NODES}"));
        c
    }

    fn path(&self, name: &str) -> PathBuf {
        self.work.as_ref().map(|w| w.path().join(name)).unwrap_or_default()
    }

    fn mark(&self, what: impl Into<String>) {
        let what = what.into();
        let at = self.started.elapsed();
        eprintln!("  t={:>6} ms  {what}", at.as_millis());
        self.timeline.lock().unwrap_or_else(|e| e.into_inner()).push((at, what));
    }

    /// Names of the nodes in `range`.
    fn names(range: std::ops::Range<usize>) -> BTreeSet<String> {
        range.map(node_name).collect()
    }

    /// Names of the nodes in `range` that may run hello.
    fn workers(range: std::ops::Range<usize>) -> BTreeSet<String> {
        range.filter(|i| !EDGE.contains(i)).map(node_name).collect()
    }

    /// The nodes on node `i`'s side of the split.
    fn side(i: usize) -> std::ops::Range<usize> {
        if i < SIDE_A { 0..SIDE_A } else { SIDE_A..NODES }
    }

    /// Polls `cond(agent)` for every agent each round until it holds for all, marking on the
    /// timeline when it first held for each; panics after `timeout` with, for each agent for
    /// which it never did, why not the last time.
    #[track_caller]
    fn wait_each(&self, what: &str, timeout: Duration, mut cond: impl FnMut(usize, &NsAgent) -> Result<(), String>) {
        let deadline = Instant::now() + timeout;
        let mut pending: Vec<(usize, String)> = (0..self.agents.len()).map(|i| (i, String::new())).collect();
        loop {
            pending.retain_mut(|(i, why)| match cond(*i, &self.agents[*i]) {
                Ok(()) => {
                    self.mark(format!("{}: {what}", self.agents[*i].name));
                    false
                }
                Err(e) => {
                    *why = e;
                    true
                }
            });
            if pending.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                let why: Vec<String> =
                    pending.iter().map(|(i, why)| format!("{}: {why}", self.agents[*i].name)).collect();
                panic!("timed out after {timeout:?} waiting until each node {what}; not yet:\n  {}", why.join("\n  "));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Checks `cond(agent)` for every agent, round after round, for `duration`; panics the
    /// first time it does not hold.
    #[track_caller]
    fn hold_each(&self, what: &str, duration: Duration, mut cond: impl FnMut(usize, &NsAgent) -> Result<(), String>) {
        let until = Instant::now() + duration;
        let mut rounds = 0;
        while Instant::now() < until {
            for (i, a) in self.agents.iter().enumerate() {
                if let Err(why) = cond(i, a) {
                    panic!("{}: no longer {what} after {rounds} rounds: {why}", a.name);
                }
            }
            rounds += 1;
        }
        self.mark(format!("every node {what}, {rounds} rounds over {duration:?}"));
    }

    /// Starts steady GETs through every gateway, each from inside its node's namespace.
    fn start_loads(&mut self) {
        let stop = self.path("stop-load");
        self.loads = self.agents.iter().map(|a| Load::start(a, &stop)).collect();
    }

    fn stop_loads(&mut self) -> Vec<Vec<ProbeResult>> {
        std::fs::write(self.path("stop-load"), b"").expect("write the stop file");
        self.loads.iter_mut().map(Load::stop).collect()
    }

    fn diagnostics(&self) {
        eprintln!("\n===== partition test diagnostics =====");
        eprintln!("--- bridge ports (`ip -n {} -o link`):\n{}", self.net.bridge_ns, self.net.describe());
        for a in &self.agents {
            eprintln!("--- {} (namespace {}, cluster {}, gateway {}):", a.name, a.ns, a.cluster, a.gateway);
            for args in [&["get", "nodes", "-o", "wide"][..], &["get", "replicas", "-o", "wide"][..]] {
                match a.cli(args) {
                    Ok(o) => eprintln!(
                        "$ wasmfleet {}\n{}{}",
                        args.join(" "),
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    ),
                    Err(e) => eprintln!("$ wasmfleet {}: {e}", args.join(" ")),
                }
            }
            eprintln!("log tail ({}):\n{}", a.log.display(), a.log_tail(40));
        }
        eprintln!("--- timeline:");
        for (at, what) in self.timeline.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            eprintln!("  t={:>6} ms  {what}", at.as_millis());
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.diagnostics();
            if let Some(work) = self.work.take() {
                eprintln!("agent data dirs and logs kept in {}", work.keep().display());
            }
        }
    }
}

/// Ok when `view` is exactly `REPLICAS` ready hello replicas, each name once, all on `nodes`.
fn placed_on(view: Option<Vec<(String, String, bool)>>, nodes: &BTreeSet<String>) -> Result<(), String> {
    let view = view.ok_or("`get replicas` failed")?;
    let names: BTreeSet<&String> = view.iter().map(|(n, _, _)| n).collect();
    if view.len() == REPLICAS
        && names.len() == REPLICAS
        && view.iter().all(|(_, node, ready)| *ready && nodes.contains(node))
    {
        Ok(())
    } else {
        Err(format!("replicas: {}", show(&view)))
    }
}

/// Ok when `n` GETs through `agent`'s gateway are all answered 200 by one of `nodes`;
/// otherwise the first that was not.
fn serves_from(agent: &NsAgent, n: u32, nodes: &BTreeSet<String>) -> Result<(), String> {
    let results = agent.probe(n);
    if let Some((k, bad)) = results.iter().enumerate().find(|(_, r)| !r.ok() || !nodes.contains(&r.node)) {
        return Err(format!("GET {} of {n}: status {:?} from {}: {}", k + 1, bad.status, bad.node, bad.detail));
    }
    if results.len() != n as usize {
        return Err(format!("only {} of {n} GETs ran", results.len()));
    }
    Ok(())
}

/// `hello-0@node-3, ...`, with `(not ready)` where it applies.
fn show(view: &[(String, String, bool)]) -> String {
    let parts: Vec<String> =
        view.iter().map(|(r, n, ready)| format!("{r}@{n}{}", if *ready { "" } else { " (not ready)" })).collect();
    parts.join(", ")
}

fn deployment_yaml() -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: hello\nspec:\n  replicas: {REPLICAS}\n  selector:\n    matchLabels: {{app: hello}}\n  template:\n    metadata:\n      labels: {{app: hello}}\n    spec:\n      nodeSelector: {{role: worker}}\n      containers:\n      - name: hello\n        image: hello:1.0\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: hello\nspec:\n  selector: {{app: hello}}\n  ports:\n  - port: 80\n"
    )
}

#[test]
#[ignore = "needs root and `ip netns`; run by scripts/chaos.sh"]
fn split_two_three_both_sides_serve_then_heal_to_one_placement() {
    let mut c = Cluster::start();
    let everyone = Cluster::names(0..NODES);
    let workers = Cluster::workers(0..NODES);
    c.wait_each("sees 5 alive nodes", Duration::from_secs(30), |_, a| a.sees_alive_exactly(&everyone));

    // hello x5 on the three workers and its Service, seen alike from every node; every
    // gateway serves it, the edge nodes' by forwarding.
    let yaml = c.path("hello.yaml");
    std::fs::write(&yaml, deployment_yaml()).expect("write the manifest");
    c.agents[0].cli_ok(&["push", "hello:1.0", module_path("hello").to_str().expect("utf-8 path")]);
    c.agents[0].cli_ok(&["apply", "-f", yaml.to_str().expect("utf-8 path")]);
    let before =
        common::wait_for("5 ready replicas over the 3 workers, alike on all 5 nodes", Duration::from_secs(60), || {
            let view = c.agents[0].replicas()?;
            let nodes: BTreeSet<&String> = view.iter().map(|(_, n, _)| n).collect();
            let alike = c.agents[1..].iter().all(|a| a.replicas().as_ref() == Some(&view));
            (placed_on(Some(view.clone()), &workers).is_ok() && nodes.len() == workers.len() && alike).then_some(view)
        });
    c.mark(format!("placement: {}", show(&before)));
    c.wait_each("serves hello", Duration::from_secs(30), |_, a| serves_from(a, 10, &workers));

    // Split 2|3: node-1 and node-2 move to a bridge of their own.
    c.start_loads();
    let split_ms = epoch_ms();
    c.net.attach(0..SIDE_A, "br1");
    c.mark("split: node-1, node-2 | node-3, node-4, node-5");
    c.wait_each("sees only its side alive, the other dead", Duration::from_secs(30), |i, a| {
        a.sees_alive_exactly(&Cluster::names(Cluster::side(i)))
    });
    c.wait_each("sees all 5 replicas ready on its side's workers", Duration::from_secs(30), |i, a| {
        placed_on(a.replicas(), &Cluster::workers(Cluster::side(i)))
    });
    c.wait_each("serves hello from its side", Duration::from_secs(30), |i, a| {
        serves_from(a, 20, &Cluster::workers(Cluster::side(i)))
    });

    // The split holds for a while (`CHAOS_SPLIT_SECS`, default 3): nothing flaps.
    let hold = std::env::var("CHAOS_SPLIT_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    c.hold_each("keeps its side's view and placement and serves from its side", Duration::from_secs(hold), |i, a| {
        let side = Cluster::side(i);
        a.sees_alive_exactly(&Cluster::names(side.clone()))?;
        placed_on(a.replicas(), &Cluster::workers(side.clone()))?;
        serves_from(a, 5, &Cluster::workers(side))
    });

    // Heal: everyone back on one bridge.
    let heal_ms = epoch_ms();
    c.net.attach(0..SIDE_A, "br0");
    c.mark("healed");
    c.wait_each("sees 5 alive nodes again", Duration::from_secs(60), |_, a| a.sees_alive_exactly(&everyone));
    c.wait_each("reports the placement from before the split", Duration::from_secs(60), |_, a| {
        let view = a.replicas();
        if view.as_ref() == Some(&before) {
            Ok(())
        } else {
            Err(format!("replicas: {}", view.as_deref().map_or("?".into(), show)))
        }
    });
    common::wait_for("one placement: all 5 nodes report it in the same round", Duration::from_secs(30), || {
        c.agents.iter().all(|a| a.replicas().as_ref() == Some(&before)).then_some(())
    });
    c.wait_each("serves hello", Duration::from_secs(30), |_, a| serves_from(a, 20, &workers));
    c.wait_each("sees every node in sync", Duration::from_secs(30), |_, a| {
        let out = a.cli(&["get", "nodes", "-o", "json"])?;
        let nodes: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let in_sync: Vec<(&str, bool)> =
            nodes.iter().map(|n| (n["name"].as_str().unwrap_or(""), n["in_sync"].as_bool() == Some(true))).collect();
        if in_sync.len() == NODES && in_sync.iter().all(|(_, s)| *s) {
            Ok(())
        } else {
            Err(format!("in sync: {in_sync:?}"))
        }
    });
    let end_ms = epoch_ms();
    c.mark("converged");

    // What the steady traffic through each gateway saw (information, not asserted: the bounded
    // waits above are the contract).
    let loads = c.stop_loads();
    eprintln!("\nsteady GETs through each gateway, every 20 ms:");
    for (i, results) in loads.iter().enumerate() {
        let side = Cluster::names(Cluster::side(i));
        let other_side = results
            .iter()
            .filter(|r| r.at_ms >= split_ms && r.at_ms < heal_ms && r.ok() && !side.contains(&r.node))
            .count();
        eprintln!(
            "  {}  split:  {} ({other_side} answered across it)",
            node_name(i),
            load_summary(results, split_ms, heal_ms)
        );
        eprintln!("          healed: {}", load_summary(results, heal_ms, end_ms));
    }
}

const KV_YAML: &str = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: kv\nspec:\n  selector:\n    matchLabels: {app: kv}\n  template:\n    metadata:\n      labels: {app: kv}\n    spec:\n      containers:\n      - name: kv\n        image: kv:1.0\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: kv\nspec:\n  selector: {app: kv}\n  ports:\n  - port: 80\n";
const KEYS: usize = 12;

/// This node's own copies of the `default` bucket: key -> value (None: deleted).
fn local_copies(a: &NsAgent) -> Result<std::collections::BTreeMap<String, Option<String>>, String> {
    let out = a.cli(&["kv", "ls", "default", "--local"])?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut p = l.splitn(3, '\t');
            let (k, _version, v) = (p.next()?, p.next()?, p.next()?);
            Some((k.to_string(), (v != "<deleted>").then(|| v.to_string())))
        })
        .collect())
}

#[test]
#[ignore = "needs root and `ip netns`; run by scripts/chaos.sh"]
fn kv_split_two_three_majority_keeps_atomics_minority_refuses_then_every_copy_converges() {
    let c = Cluster::start();
    let everyone = Cluster::names(0..NODES);
    c.wait_each("sees 5 alive nodes", Duration::from_secs(30), |_, a| a.sees_alive_exactly(&everyone));
    let yaml = c.path("kv.yaml");
    std::fs::write(&yaml, KV_YAML).expect("write the manifest");
    c.agents[0].cli_ok(&["push", "kv:1.0", module_path("kv").to_str().expect("utf-8 path")]);
    c.agents[0].cli_ok(&["apply", "-f", yaml.to_str().expect("utf-8 path")]);
    c.wait_each("counts through its own kv replica", Duration::from_secs(60), |_, a| {
        match a.http("POST", "/incr?key=warm", "kv") {
            (200, _) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    for k in 0..KEYS {
        let (status, body) = c.agents[2].http("GET", &format!("/set?key=k{k}&value=before"), "kv");
        assert_eq!(status, 200, "set k{k}: {body}");
    }

    c.net.attach(0..SIDE_A, "br1");
    c.mark("split: node-1, node-2 | node-3, node-4, node-5");
    c.wait_each("sees only its side alive", Duration::from_secs(30), |i, a| {
        a.sees_alive_exactly(&Cluster::names(Cluster::side(i)))
    });
    // The majority side keeps counting; the minority refuses, with the reason.
    let mut counted = 0;
    for i in SIDE_A..NODES {
        for _ in 0..10 {
            let (status, body) = c.agents[i].http("POST", "/incr?key=counter", "kv");
            assert_eq!(status, 200, "{}: an increment on the majority side failed: {body}", c.agents[i].name);
            counted += 1;
        }
    }
    for i in 0..SIDE_A {
        let (status, body) = c.agents[i].http("POST", "/incr?key=counter", "kv");
        assert_eq!(status, 500, "{}: the minority side counted: {body}", c.agents[i].name);
        assert!(body.contains("no majority"), "{}: {body}", c.agents[i].name);
    }
    c.mark(format!("split: {counted} increments on the majority side, the minority refused"));
    for k in 0..KEYS {
        let (status, body) = c.agents[3].http("GET", &format!("/set?key=k{k}&value=during"), "kv");
        assert_eq!(status, 200, "set k{k} during the split: {body}");
    }

    c.net.attach(0..SIDE_A, "br0");
    c.mark("healed");
    c.wait_each("sees 5 alive nodes again", Duration::from_secs(60), |_, a| a.sees_alive_exactly(&everyone));
    let healed = Instant::now();
    // Every copy of every key converges: each key on 3 nodes, all holding the last value.
    common::wait_for("every copy of every key holds its last value", Duration::from_secs(30), || {
        let copies: Vec<_> = c.agents.iter().map(local_copies).collect::<Result<_, _>>().ok()?;
        (0..KEYS)
            .all(|k| {
                let key = format!("k{k}");
                let held: Vec<&Option<String>> = copies.iter().filter_map(|m| m.get(&key)).collect();
                held.len() >= 3 && held.iter().filter(|v| v.as_deref() == Some("during")).count() >= 3
            })
            .then_some(())
    });
    let converged = healed.elapsed();
    c.mark(format!("every key's 3 owners hold its last value {converged:?} after every node saw 5 alive"));
    let value = c.agents[0].cli_ok(&["kv", "get", "default", "counter"]);
    assert_eq!(value.trim(), counted.to_string(), "the counter after the heal");
    assert!(converged < Duration::from_secs(5), "copies took {converged:?} to converge");
}

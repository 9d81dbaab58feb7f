//! Replication measurements on real `wasmfleet` agent processes (127.0.0.1, port 0 everywhere,
//! killed on drop), started by `wasmfleet::launch` as the tests and the demo start them:
//!
//! 1. write replication at 5 nodes: the latency of `POST /v1/apply` on node A, and the time
//!    from its acknowledgement until the object is visible on every other node;
//! 2. module transfer: a 10 MiB module pushed on a 2-node cluster minus the same push on a
//!    single node, against a plain loopback TCP copy of the same bytes, and that copy made
//!    durable (the reader writes and fsyncs it, as a node storing a module does);
//! 3. join time: from starting an agent with `--join` until every node lists it `Alive`.
//!
//! `cargo bench --bench replication` (add `-- --test` for a quick smoke run of a few
//! iterations). `benches/cluster.sh` builds release and runs it.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use wasmfleet::launch::{AgentProcess, BANNER_TIMEOUT, agent_command};

const BIN: &str = env!("CARGO_BIN_EXE_wasmfleet");
const MODULES_DIR: &str = env!("WASMFLEET_MODULES_DIR");
const MIB: usize = 1 << 20;

type Res<T> = Result<T, String>;

/// A running agent process, SIGKILLed on drop.
struct Agent {
    _process: AgentProcess,
    name: String,
    api: String,
    cluster: String,
    data_dir: PathBuf,
    token: String,
    http: ureq::Agent,
}

impl Agent {
    /// Starts an agent named `name` in `root/<name>`, with `extra` arguments, and waits for
    /// its three listeners.
    fn start(root: &Path, name: &str, extra: &[&str]) -> Res<Agent> {
        let data_dir = root.join(name);
        let log_path = root.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let mut cmd = agent_command(BIN, &data_dir, "127.0.0.1:0");
        cmd.args(["--node-name", name]).args(extra).env("WASMFLEET_LOG", "warn").stderr(log);
        let process = AgentProcess::spawn(cmd, BANNER_TIMEOUT).map_err(|e| {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            format!("agent {name}: {e}; stderr:\n{log}")
        })?;
        let token = std::fs::read_to_string(data_dir.join("token")).map_err(|e| format!("{name} token: {e}"))?;
        Ok(Agent {
            name: name.to_string(),
            api: process.listeners.api.clone(),
            cluster: process.listeners.cluster.clone(),
            _process: process,
            data_dir,
            token: token.trim().to_string(),
            http: ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build(),
        })
    }

    /// A join token from `wasmfleet token create --ttl 1h` run against this node.
    fn join_token(&self) -> Res<String> {
        let out = Command::new(BIN)
            .args(["token", "create", "--ttl", "1h"])
            .env("WASMFLEET_DATA_DIR", &self.data_dir)
            .env_remove("WASMFLEET_SERVER")
            .env_remove("WASMFLEET_TOKEN")
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("token create: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn auth(&self, req: ureq::Request) -> ureq::Request {
        req.set("Authorization", &format!("Bearer {}", self.token))
    }

    /// The HTTP status of a GET (errors other than a status are `Err`).
    fn status(&self, path: &str) -> Res<u16> {
        match self.auth(self.http.get(&format!("{}{path}", self.api))).call() {
            Ok(r) => Ok(r.status()),
            Err(ureq::Error::Status(s, _)) => Ok(s),
            Err(e) => Err(e.to_string()),
        }
    }

    /// POSTs `body`; answers the `x-wasmfleet-copies` header.
    fn post(&self, path: &str, content_type: &str, body: &[u8]) -> Res<usize> {
        let req = self.auth(self.http.post(&format!("{}{path}", self.api))).set("Content-Type", content_type);
        match req.send_bytes(body) {
            Ok(r) => {
                let copies = r.header("x-wasmfleet-copies").and_then(|c| c.parse().ok());
                let text = r.into_string().map_err(|e| e.to_string())?;
                // The push answers with its copies in the body.
                let from_body = || {
                    serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v.get("copies").and_then(|c| c.as_u64()))
                        .map(|c| c as usize)
                };
                Ok(copies.or_else(from_body).unwrap_or(0))
            }
            Err(ureq::Error::Status(s, r)) => {
                Err(format!("POST {path} on {}: {s} {}", self.name, r.into_string().unwrap_or_default()))
            }
            Err(e) => Err(format!("POST {path} on {}: {e}", self.name)),
        }
    }

    /// `(name, state)` of every member this node lists.
    fn nodes(&self) -> Res<Vec<(String, String)>> {
        let resp = self.auth(self.http.get(&format!("{}/v1/nodes", self.api))).call().map_err(|e| e.to_string())?;
        let v: serde_json::Value = resp.into_json().map_err(|e| e.to_string())?;
        let list = v.as_array().ok_or("GET /v1/nodes: not a list")?;
        Ok(list
            .iter()
            .map(|n| {
                let field = |k: &str| n.get(k).and_then(|s| s.as_str()).unwrap_or_default().to_string();
                (field("name"), field("state"))
            })
            .collect())
    }

    fn lists_alive(&self, name: &str) -> bool {
        self.nodes().is_ok_and(|l| l.iter().any(|(n, s)| n == name && s == "Alive"))
    }

    fn alive_count(&self) -> usize {
        self.nodes().map(|l| l.iter().filter(|(_, s)| s == "Alive").count()).unwrap_or(0)
    }
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Res<Duration> {
    let t0 = Instant::now();
    while !f() {
        if t0.elapsed() > timeout {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(t0.elapsed())
}

/// Starts a seed node and `n - 1` joiners, and waits until every node lists `n` alive members.
fn cluster(root: &Path, n: usize) -> Res<Vec<Agent>> {
    let seed = Agent::start(root, "node-a", &[])?;
    let token = seed.join_token()?;
    let addr = seed.cluster.clone();
    let mut nodes = vec![seed];
    for i in 1..n {
        let name = format!("node-{}", (b'a' + i as u8) as char);
        nodes.push(Agent::start(root, &name, &["--join", &addr, "--join-token", &token])?);
    }
    wait_for(&format!("{n} alive nodes seen from every node"), Duration::from_secs(30), || {
        nodes.iter().all(|a| a.alive_count() == n)
    })?;
    Ok(nodes)
}

fn deployment_yaml(name: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 1\n  selector:\n    \
         matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      \
         containers:\n      - name: {name}\n        image: hello:1.0\n"
    )
}

fn hello_wasm() -> Res<Vec<u8>> {
    let p = PathBuf::from(MODULES_DIR).join("hello.wasm");
    std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))
}

fn leb128(mut v: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn leb128_len(v: usize) -> usize {
    let mut b = Vec::new();
    leb128(v, &mut b);
    b.len()
}

/// `module` with a custom section (id 0, LEB128 size, name, payload) appended, `total` bytes
/// in all; `seed` varies the payload so every blob has its own digest.
fn padded(module: &[u8], total: usize, seed: u64) -> Vec<u8> {
    let name = b"wasmfleet-bench-padding";
    // Section content = LEB128(name len) + name + payload; the section = 1 + LEB128(content) + content.
    let overhead = |content: usize| 1 + leb128_len(content);
    let mut content = total - module.len() - 1;
    while module.len() + overhead(content) + content > total {
        content -= 1;
    }
    let payload_len = content - leb128_len(name.len()) - name.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(module);
    out.push(0);
    leb128(content, &mut out);
    leb128(name.len(), &mut out);
    out.extend_from_slice(name);
    // xorshift bytes: incompressible, different per seed.
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    out.extend((0..payload_len).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u8
    }));
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn summary(label: &str, v: &mut [Duration]) -> Duration {
    v.sort();
    let p99 = percentile(v, 99.0);
    println!(
        "  {label:<34} n={:<4} p50 {:>10}  p99 {:>10}  max {:>10}",
        v.len(),
        ms(percentile(v, 50.0)),
        ms(p99),
        ms(*v.last().unwrap_or(&Duration::ZERO))
    );
    p99
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// Step 1: `applies` distinct Deployments on node A of a 5-node cluster.
fn write_replication(root: &Path, applies: usize) -> Res<()> {
    println!("\n== 1. write replication, 5 nodes, {applies} applies on node-a ==");
    let nodes = cluster(root, 5)?;
    let a = &nodes[0];
    let copies = a.post("/v1/modules?name=hello:1.0", "application/wasm", &hello_wasm()?)?;
    println!("  pushed hello:1.0 on node-a ({copies} copies)");
    let (mut apply, mut visible) = (Vec::new(), Vec::new());
    let mut slowest_node: std::collections::BTreeMap<String, usize> = Default::default();
    let mut copies_seen: std::collections::BTreeMap<usize, usize> = Default::default();
    for i in 0..applies {
        let name = format!("rep-{i:04}");
        let path = format!("/v1/objects/deployments/default/{name}");
        let t0 = Instant::now();
        let copies = a.post("/v1/apply?source=x", "application/yaml", deployment_yaml(&name).as_bytes())?;
        let acked = Instant::now();
        *copies_seen.entry(copies).or_default() += 1;
        apply.push(acked - t0);
        let mut pending: Vec<&Agent> = nodes[1..].iter().collect();
        let mut last = String::new();
        loop {
            let mut still = Vec::new();
            for n in pending {
                if n.status(&path)? != 200 {
                    still.push(n);
                } else {
                    last = n.name.clone();
                }
            }
            pending = still;
            if pending.is_empty() {
                break;
            }
            if acked.elapsed() > Duration::from_secs(30) {
                let names: Vec<&str> = pending.iter().map(|n| n.name.as_str()).collect();
                return Err(format!("{name} not visible on {names:?} 30 s after the ack"));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        visible.push(acked.elapsed());
        *slowest_node.entry(last).or_default() += 1;
    }
    summary("apply latency (ack)", &mut apply);
    let p99 = summary("ack -> visible on all 4 others", &mut visible);
    println!("  x-wasmfleet-copies: {copies_seen:?}; last node to see it: {slowest_node:?}");
    println!(
        "  goal visible-everywhere p99 <= 500 ms: {}",
        if p99 <= Duration::from_millis(500) { "met" } else { "NOT met" }
    );
    Ok(())
}

/// A plain loopback TCP copy of `bytes`: connect, write all, the reader has read all (and,
/// with `durable`, written them to that file and fsynced it, as a module copy must be).
fn loopback_copy(bytes: &[u8], durable: Option<PathBuf>) -> Res<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let len = bytes.len();
    let reader = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
        let (mut s, _) = listener.accept()?;
        let mut buf = Vec::with_capacity(len);
        s.read_to_end(&mut buf)?;
        if let Some(path) = durable {
            let mut f = std::fs::File::create(&path)?;
            f.write_all(&buf)?;
            f.sync_all()?;
            std::fs::remove_file(&path)?;
        }
        s.write_all(b"k")?;
        Ok(buf)
    });
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.write_all(bytes).map_err(|e| e.to_string())?;
    s.shutdown(std::net::Shutdown::Write).map_err(|e| e.to_string())?;
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).map_err(|e| e.to_string())?;
    let took = t0.elapsed();
    let got = reader.join().map_err(|_| "reader panicked")?.map_err(|e| e.to_string())?;
    if got.len() != len {
        return Err(format!("loopback copied {} of {len} bytes", got.len()));
    }
    Ok(took)
}

/// Step 2: A 10 MiB module pushed on a 2-node cluster minus the same push on one node.
fn module_transfer(root: &Path, reps: usize) -> Res<()> {
    let size = 10 * MIB;
    println!("\n== 2. module transfer, {} MiB module, {reps} runs ==", size / MIB);
    let (single_root, pair_root) = (root.join("single"), root.join("pair"));
    for d in [&single_root, &pair_root] {
        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    let single = Agent::start(&single_root, "node-s", &[])?;
    let pair = cluster(&pair_root, 2)?;
    let hello = hello_wasm()?;
    let (mut one, mut two, mut transfer, mut mesh_mbs, mut lo_mbs, mut ratio) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut durable_mbs, mut durable_ratio) = (Vec::new(), Vec::new());
    let mb = size as f64 / 1e6;
    for r in 0..reps {
        // Distinct bytes per push (and per cluster), so no store or compile cache is hit.
        let blob_1 = padded(&hello, size, 2 * r as u64 + 1);
        let blob_2 = padded(&hello, size, 2 * r as u64 + 2);
        let t0 = Instant::now();
        single.post(&format!("/v1/modules?name=big:{r}"), "application/wasm", &blob_1)?;
        let t1 = t0.elapsed();
        let t0 = Instant::now();
        let copies = pair[0].post(&format!("/v1/modules?name=big:{r}"), "application/wasm", &blob_2)?;
        let t2 = t0.elapsed();
        if copies != 2 {
            return Err(format!("push on the 2-node cluster answered {copies} copies"));
        }
        let lo = loopback_copy(&blob_2, None)?;
        let lo_durable = loopback_copy(&blob_2, Some(pair_root.join("loopback-copy")))?;
        let xfer = t2.saturating_sub(t1);
        let m = mb / xfer.as_secs_f64().max(1e-9);
        let l = mb / lo.as_secs_f64().max(1e-9);
        let d = mb / lo_durable.as_secs_f64().max(1e-9);
        println!(
            "  run {r}: push 1 node {:>10}, 2 nodes {:>10}, transfer {:>10} = {m:8.1} MB/s; loopback TCP {:>9} = \
             {l:8.1} MB/s (loopback/mesh {:.1}x); TCP + fsync {:>9} = {d:8.1} MB/s (/mesh {:.1}x)",
            ms(t1),
            ms(t2),
            ms(xfer),
            ms(lo),
            l / m,
            ms(lo_durable),
            d / m
        );
        durable_mbs.push(d);
        durable_ratio.push(d / m);
        one.push(t1.as_secs_f64() * 1e3);
        two.push(t2.as_secs_f64() * 1e3);
        transfer.push(xfer.as_secs_f64() * 1e3);
        mesh_mbs.push(m);
        lo_mbs.push(l);
        ratio.push(l / m);
    }
    println!(
        "  medians: push 1 node {:.1} ms, 2 nodes {:.1} ms, transfer {:.1} ms = {:.1} MB/s; loopback TCP {:.1} MB/s; \
         loopback/mesh {:.1}x; TCP + fsync {:.1} MB/s, (TCP + fsync)/mesh {:.1}x",
        median(&mut one),
        median(&mut two),
        median(&mut transfer),
        median(&mut mesh_mbs),
        median(&mut lo_mbs),
        median(&mut ratio),
        median(&mut durable_mbs),
        median(&mut durable_ratio)
    );
    Ok(())
}

/// Step 3: A fifth node joins a 4-node cluster: start -> `Alive` on every node; the joiner
/// then leaves (and is killed) before the next run.
fn join_time(root: &Path, runs: usize) -> Res<()> {
    println!("\n== 3. join time, 5th node joining 4, {runs} runs ==");
    let nodes = cluster(root, 4)?;
    let token = nodes[0].join_token()?;
    let (mut listening, mut everywhere) = (Vec::new(), Vec::new());
    for r in 0..runs {
        let name = format!("joiner-{r}");
        let t0 = Instant::now();
        let j = Agent::start(root, &name, &["--join", &nodes[r % 4].cluster, "--join-token", &token])?;
        let up = t0.elapsed();
        wait_for(&format!("{name} alive on every node"), Duration::from_secs(30), || {
            j.lists_alive(&name) && nodes.iter().all(|n| n.lists_alive(&name))
        })?;
        let all = t0.elapsed();
        println!("  run {r}: listeners printed after {:>10}, Alive on all 5 nodes after {:>10}", ms(up), ms(all));
        listening.push(up);
        everywhere.push(all);
        // Leave gracefully so the next joiner meets 4 live members.
        if let Err(e) = j.post("/v1/leave", "application/json", b"") {
            println!("  run {r}: leave failed: {e}");
        }
        let gone = |n: &Agent| !n.lists_alive(&name);
        match wait_for(&format!("{name} not Alive on any node"), Duration::from_secs(10), || nodes.iter().all(gone)) {
            Ok(d) => println!("  run {r}: after its leave, not Alive on the 4 others after {}", ms(d)),
            Err(e) => println!("  run {r}: {e}"),
        }
        drop(j);
    }
    summary("start -> listeners printed", &mut listening);
    summary("start -> Alive on every node", &mut everywhere);
    Ok(())
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo bench -- --test` asks for a smoke run.
    let quick = std::env::args().any(|a| a == "--test");
    let (applies, reps, joins) = if quick { (5, 1, 1) } else { (200, 5, 5) };
    println!("wasmfleet replication bench ({}), binary {BIN}", if quick { "--test: quick run" } else { "full run" });
    let root = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("tempdir: {e}");
            std::process::exit(1);
        }
    };
    let mut failed = false;
    for (i, step) in [
        &(|p: &Path| write_replication(p, applies)) as &dyn Fn(&Path) -> Res<()>,
        &|p: &Path| module_transfer(p, reps),
        &|p: &Path| join_time(p, joins),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = root.path().join(format!("step-{}", i + 1));
        let r = std::fs::create_dir_all(&dir).map_err(|e| e.to_string()).and_then(|()| step(&dir));
        if let Err(e) = r {
            eprintln!("step {} failed: {e}", i + 1);
            failed = true;
        }
    }
    if failed {
        std::process::exit(1);
    }
}

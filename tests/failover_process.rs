//! Scheduling and failover across real agent processes on 127.0.0.1 (port 0 everywhere):
//! replicas spread over the nodes, every gateway serves every Service (forwarding over QUIC
//! when it has no local replica), and a node killed with SIGKILL under a steady stream of
//! GETs costs no failed request; its replicas come back on the survivors.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use std::time::Duration;

use common::*;

/// Ready replicas of `owner` as `agent` sees the cluster: replica name -> node.
fn ready_replicas(agent: &Agent, owner: &str) -> BTreeMap<String, String> {
    let out = stdout(&agent.cli(&["get", "replicas", "-o", "json"]));
    let reps: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
    reps.iter()
        .filter(|r| r["owner"].as_str().is_some_and(|o| o.ends_with(&format!("/{owner}"))))
        .filter(|r| r["ready"].as_bool() == Some(true))
        .map(|r| (r["name"].as_str().unwrap_or("").to_string(), r["node"].as_str().unwrap_or("").to_string()))
        .collect()
}

fn deployment(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n      - name: {name}\n        image: hello:1.0\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  selector: {{app: {name}}}\n  ports:\n  - port: 80\n"
    )
}

fn apply(agent: &Agent, file: &std::path::Path, yaml: &str) {
    std::fs::write(file, yaml).unwrap();
    ok(agent.cli(&["apply", "-f", file.to_str().unwrap()]));
}

#[test]
fn forwarded_traffic_survives_a_node_kill_and_the_replica_comes_back() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut agents = cluster(&dirs);
    ok(agents[0].cli(&["push", "hello:1.0", module_path("hello").to_str().unwrap()]));
    apply(&agents[0], &dirs[0].path().join("web.yaml"), &deployment("web", 2));

    // Two replicas on two distinct nodes, as every node sees it.
    let placed = wait_for("2 ready replicas on distinct nodes", Duration::from_secs(30), || {
        let seen = ready_replicas(&agents[0], "web");
        let nodes: BTreeSet<&String> = seen.values().collect();
        (seen.len() == 2 && nodes.len() == 2 && agents.iter().all(|a| ready_replicas(a, "web") == seen)).then_some(seen)
    });
    let hosting: BTreeSet<String> = placed.values().cloned().collect();
    let names = ["node-a", "node-b", "node-c"];
    let spare = names.iter().position(|n| !hosting.contains(*n)).expect("one node without a replica");
    let victim = (0..3).find(|i| *i != spare).unwrap();

    // Traffic through the node without a replica is forwarded over QUIC.
    let load = Load::start(&agents[spare].gateway, "web");
    load.wait_more(50);
    let (status, _, replica) = http_get(&format!("{}/", agents[spare].gateway), "web").unwrap();
    assert_eq!(status, 200);
    assert!(placed.contains_key(&replica), "answered by {replica}, expected one of {placed:?}");

    // Kill a node hosting a replica: no request fails, and two replicas are ready again.
    agents[victim].kill9();
    let survivor = agents.iter().enumerate().find(|(i, _)| *i != victim).map(|(_, a)| a).unwrap();
    wait_for("the lost replica is replaced", Duration::from_secs(20), || {
        let seen = ready_replicas(survivor, "web");
        (seen.len() == 2 && !seen.values().any(|n| n == names[victim])).then_some(())
    });
    load.wait_more(50);

    // Restart it: it rejoins and the replicas end up on distinct nodes, without a gap.
    agents[victim] = Agent::start_node(dirs[victim].path(), names[victim], &[]);
    wait_for("the node is back", Duration::from_secs(20), || (alive_nodes(&agents[spare]) == 3).then_some(()));
    wait_for("2 ready replicas on distinct nodes again", Duration::from_secs(30), || {
        let seen = ready_replicas(&agents[spare], "web");
        let nodes: BTreeSet<&String> = seen.values().collect();
        (seen.len() == 2 && nodes.len() == 2).then_some(())
    });
    load.wait_more(50);
    let (served, failed) = load.finish();
    assert!(failed.is_empty(), "{} of {} requests failed: {:?}", failed.len(), served, &failed[..failed.len().min(5)]);
}

#[test]
fn replicas_spread_daemonset_follows_nodes_and_a_job_completes_once() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut agents = cluster(&dirs);
    let a = &agents[0];
    ok(a.cli(&["push", "hello:1.0", module_path("hello").to_str().unwrap()]));
    ok(a.cli(&["push", "sensor:1.0", module_path("sensor").to_str().unwrap()]));
    ok(a.cli(&["push", "crash:1.0", module_path("crash").to_str().unwrap()]));
    apply(a, &dirs[0].path().join("hello.yaml"), &deployment("hello", 3));
    ok(a.cli(&["apply", "-f", example("sensor-daemonset.yaml").to_str().unwrap()]));

    // One hello replica per node; one sensor per node.
    wait_for("hello: one ready replica per node", Duration::from_secs(30), || {
        let seen = ready_replicas(&agents[1], "hello");
        (seen.values().collect::<BTreeSet<_>>().len() == 3).then_some(())
    });
    wait_for("sensor on every node", Duration::from_secs(30), || {
        (ready_replicas(&agents[2], "sensor").len() == 3).then_some(())
    });
    // Every gateway lists all three endpoints, local or remote.
    wait_for("3/3 endpoints on the Service", Duration::from_secs(10), || {
        stdout(&agents[0].cli(&["get", "services", "hello"])).contains("3/3").then_some(())
    });
    // `logs` on any node shows the replicas of every node; `logs -f` keeps following them.
    wait_for("sensor logs from all three nodes, asked on node-b", Duration::from_secs(20), || {
        let out = stdout(&agents[1].cli(&["logs", "sensor"]));
        ["node-a", "node-b", "node-c"].iter().all(|n| out.contains(&format!("[sensor-{n}]"))).then_some(())
    });
    follows_logs_from_every_node(&agents[0], "sensor", &["node-a", "node-b", "node-c"]);

    // The Job's three completions run across the cluster and complete exactly once.
    ok(agents[0].cli(&["apply", "-f", example("job.yaml").to_str().unwrap()]));
    // Complete as every node sees it: a completion whose record has not reached a node yet
    // can run again there if the node that ran it dies first (see docs/architecture.md).
    wait_for("job complete on every node", Duration::from_secs(40), || {
        agents.iter().all(|x| stdout(&x.cli(&["get", "jobs"])).contains("Complete")).then_some(())
    });

    // Lose node-c: the DaemonSet shrinks to two, hello is back to three ready replicas on
    // the survivors, and the Job stays complete without running again.
    agents[2].kill9();
    wait_for("sensor on the two survivors", Duration::from_secs(20), || {
        let seen = ready_replicas(&agents[0], "sensor");
        (seen.len() == 2 && !seen.values().any(|n| n == "node-c")).then_some(())
    });
    wait_for("hello back to 3 ready replicas", Duration::from_secs(20), || {
        let seen = ready_replicas(&agents[0], "hello");
        (seen.len() == 3 && !seen.values().any(|n| n == "node-c")).then_some(())
    });
    for agent in &agents[..2] {
        let jobs = ok(agent.cli(&["get", "jobs"]));
        assert!(jobs.contains("Complete") && jobs.contains("3/3"), "{jobs}");
        let reps = ok(agent.cli(&["get", "replicas"]));
        assert!(!reps.lines().any(|l| l.starts_with("crash-")), "the job ran again: {reps}");
    }
    // node-c comes back: the DaemonSet follows.
    agents[2] = Agent::start_node(dirs[2].path(), "node-c", &[]);
    wait_for("sensor on every node again", Duration::from_secs(30), || {
        (ready_replicas(&agents[0], "sensor").len() == 3).then_some(())
    });
}

/// Runs `logs -f NAME --tail 0` on `agent` and waits until new lines from every node came.
fn follows_logs_from_every_node(agent: &Agent, name: &str, nodes: &[&str]) {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wasmfleet"))
        .arg("--data-dir")
        .arg(&agent.data_dir)
        .args(["logs", "-f", name, "--tail", "0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while seen.len() < nodes.len() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            let _ = child.kill();
            panic!("logs -f showed new lines only from {seen:?} within 20 s");
        };
        seen.extend(nodes.iter().filter(|n| line.starts_with(&format!("[{name}-{n}]"))).map(|n| n.to_string()));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_component_calls_a_service_by_name_through_the_mesh() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Agent::start_node(da.path(), "node-a", &["--labels", "role=edge"]);
    let t = token(&a);
    let b = Agent::start_node(db.path(), "node-b", &["--labels", "role=web", "--join", &a.cluster, "--token", &t]);
    wait_for("2 alive nodes", Duration::from_secs(20), || (alive_nodes(&a) == 2 && alive_nodes(&b) == 2).then_some(()));
    ok(a.cli(&["push", "hello:1.0", module_path("hello").to_str().unwrap()]));
    ok(a.cli(&["push", "hostile:1.0", module_path("hostile").to_str().unwrap()]));
    // hello runs only on node-b; the caller only on node-a, with no outbound allow-list.
    let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: hello\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: hello}\n  template:\n    metadata:\n      labels: {app: hello}\n    spec:\n      nodeSelector: {role: web}\n      containers:\n      - name: hello\n        image: hello:1.0\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: hello\nspec:\n  selector: {app: hello}\n  ports:\n  - port: 80\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: caller\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: caller}\n  template:\n    metadata:\n      labels: {app: caller}\n    spec:\n      nodeSelector: {role: edge}\n      containers:\n      - name: caller\n        image: hostile:1.0\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: caller\nspec:\n  selector: {app: caller}\n  ports:\n  - port: 80\n";
    apply(&a, &da.path().join("calls.yaml"), yaml);
    wait_for("hello on node-b and caller on node-a", Duration::from_secs(30), || {
        let hello = ready_replicas(&a, "hello");
        let caller = ready_replicas(&a, "caller");
        (hello.values().any(|n| n == "node-b") && caller.values().any(|n| n == "node-a")).then_some(())
    });
    // `http://hello/` and `http://hello.default/` from inside the component reach node-b.
    for authority in ["hello", "hello.default", "hello.default.svc.cluster.local"] {
        let (status, body, _) = wait_for("the service call to succeed", Duration::from_secs(10), || {
            let r = http_get(&format!("{}/fetch?authority={authority}", a.gateway), "caller").ok()?;
            // Until node-a's routing table lists hello's remote endpoint the call answers 503.
            (r.0 == 200 && r.1.contains("upstream status 200")).then_some(r)
        });
        assert_eq!(status, 200);
        assert!(body.contains("upstream status 200"), "{authority}: {body}");
    }
    // A name that is not a Service is still subject to the (empty) allow-list.
    let (status, body, _) = http_get(&format!("{}/fetch?authority=nosuch", a.gateway), "caller").unwrap();
    assert_eq!(status, 502, "{body}");
}

#[test]
fn a_node_restarted_without_network_runs_its_last_assignment_at_once() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut agents = cluster(&dirs);
    ok(agents[0].cli(&["push", "hello:1.0", module_path("hello").to_str().unwrap()]));
    apply(&agents[0], &dirs[0].path().join("web.yaml"), &deployment("web", 3));
    let placed = wait_for("3 ready replicas, one per node, seen alike everywhere", Duration::from_secs(30), || {
        let seen = ready_replicas(&agents[0], "web");
        let nodes: BTreeSet<&String> = seen.values().collect();
        (seen.len() == 3 && nodes.len() == 3 && agents.iter().all(|a| ready_replicas(a, "web") == seen)).then_some(seen)
    });
    let on_c: Vec<String> = placed.iter().filter(|(_, n)| *n == "node-c").map(|(r, _)| r.clone()).collect();
    assert_eq!(on_c.len(), 1, "{placed:?}");
    // Let node-c record its assignment, then take the whole cluster down.
    wait_for("node-c to record its assignment", Duration::from_secs(10), || {
        dirs[2].path().join("assigned.json").exists().then_some(())
    });
    for a in &mut agents {
        a.kill9();
    }

    // node-c comes back with no peer reachable. It serves its last assignment at once, and
    // nothing more until the boot grace has passed.
    let spawned_ms = epoch_ms();
    let c = Agent::start_node(dirs[2].path(), "node-c", &[]);
    let first: Vec<String> = ready_replicas(&c, "web").into_keys().collect();
    let asked_ms = epoch_ms();
    let (status, _, replica) = c.get("web", "/").expect("node-c serves web at once");
    assert_eq!(status, 200, "the restarted node serves before it answers anything else");
    assert!(first.contains(&on_c[0]), "its last assignment runs from the first pass: {first:?}, expected {on_c:?}");
    // Alone past the grace, it is the whole cluster: every replica runs here.
    let all = wait_for("node-c alone to run all 3 replicas", Duration::from_secs(30), || {
        let started = replica_start_ms(&c, "web");
        (started.len() == 3).then_some(started)
    });
    // Checked on the replicas' start times, so the result does not depend on how fast this
    // test got its answers: the grace starts after the process does, so any replica started
    // because the grace ended started at least BOOT_GRACE_MS after the spawn.
    let boot = all[&on_c[0]];
    for (name, started) in all.iter().filter(|(n, _)| **n != on_c[0]) {
        assert!(
            *started >= spawned_ms + BOOT_GRACE_MS && *started > boot,
            "{name} started {} ms after the spawn (the boot grace is {BOOT_GRACE_MS} ms; {} started {} ms after): \
             a restarted node must run only its last assignment until the grace ends",
            started.saturating_sub(spawned_ms),
            on_c[0],
            boot.saturating_sub(spawned_ms)
        );
    }
    // The first answer came from the boot replica, unless this test asked only after the
    // others had started.
    let others_from = all.iter().filter(|(n, _)| **n != on_c[0]).map(|(_, s)| *s).min().unwrap_or(u64::MAX);
    assert!(
        replica == on_c[0] || asked_ms >= others_from,
        "answered by {replica}, asked {} ms after the spawn, before any other replica started; started: {all:?}",
        asked_ms - spawned_ms
    );
}

/// `reconcile::BOOT_GRACE`: how long a restarted node that sees no peer runs only what it was
/// last assigned.
const BOOT_GRACE_MS: u64 = 5_000;

fn epoch_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Ready replicas of `owner` on `agent`: replica name -> when it started (ms since the epoch).
fn replica_start_ms(agent: &Agent, owner: &str) -> BTreeMap<String, u64> {
    let out = stdout(&agent.cli(&["get", "replicas", "-o", "json"]));
    let reps: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
    reps.iter()
        .filter(|r| r["owner"].as_str().is_some_and(|o| o.ends_with(&format!("/{owner}"))))
        .filter(|r| r["ready"].as_bool() == Some(true))
        .filter_map(|r| Some((r["name"].as_str()?.to_string(), r["started_ms"].as_u64()?)))
        .collect()
}

/// A node with `--lanes 0` serves forwarded requests on its cluster endpoint, and forwards
/// from it; a node with lanes reaches it there. Both ways work in one cluster.
#[test]
fn nodes_with_and_without_lanes_forward_to_each_other() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Agent::start_node(da.path(), "node-a", &["--labels", "role=a", "--lanes", "0"]);
    let t = token(&a);
    let b = Agent::start_node(
        db.path(),
        "node-b",
        &["--labels", "role=b", "--lanes", "2", "--join", &a.cluster, "--token", &t],
    );
    wait_for("2 alive nodes", Duration::from_secs(20), || (alive_nodes(&a) == 2 && alive_nodes(&b) == 2).then_some(()));
    let nodes: Vec<serde_json::Value> = serde_json::from_str(&stdout(&a.cli(&["get", "nodes", "-o", "json"]))).unwrap();
    let lanes = |name: &str| {
        let node = nodes.iter().find(|n| n["name"] == name).unwrap_or_else(|| panic!("{name} in {nodes:?}"));
        node["info"]["lanes"].as_array().map_or(0, Vec::len)
    };
    assert_eq!((lanes("node-a"), lanes("node-b")), (0, 2));
    ok(a.cli(&["push", "hello:1.0", module_path("hello").to_str().unwrap()]));
    let pinned = |name: &str, role: &str| {
        deployment(name, 1).replacen("    spec:\n", &format!("    spec:\n      nodeSelector: {{role: {role}}}\n"), 1)
    };
    apply(&a, &da.path().join("on-a.yaml"), &pinned("on-a", "a"));
    apply(&a, &da.path().join("on-b.yaml"), &pinned("on-b", "b"));
    for (gateway, host, node) in [(&a.gateway, "on-b", "node-b"), (&b.gateway, "on-a", "node-a")] {
        let served = wait_for(&format!("{host} through the other node's gateway"), Duration::from_secs(30), || {
            let (status, body, _) = http_get(&format!("{gateway}/"), host).ok()?;
            (status == 200).then_some(body)
        });
        assert!(served.contains(&format!("node={node}")), "{host}: {served}");
    }
}

//! Multi-process clusters of the real binary on 127.0.0.1 (port 0 everywhere): joining with a
//! token, replicated writes that survive the accepting node's death, catch-up after a restart,
//! modules that outlive the node they were pushed to, and refused joins.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn token(agent: &Agent) -> String {
    ok(agent.cli(&["token", "create", "--ttl", "1h"])).trim().to_string()
}

fn join(dir: &std::path::Path, name: &str, seed: &Agent, token: &str) -> Agent {
    // As the docs write it: `agent --join ADDR --token TOKEN`.
    Agent::start_node(dir, name, &["--join", &seed.cluster, "--token", token])
}

fn alive_nodes(agent: &Agent) -> usize {
    stdout(&agent.cli(&["get", "nodes"])).lines().filter(|l| l.contains(" Alive ")).count()
}

fn has_deployment(agent: &Agent, name: &str) -> bool {
    stdout(&agent.cli(&["get", "deployments"])).lines().any(|l| l.starts_with(&format!("{name} ")))
}

fn deployment_yaml(name: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n      - name: {name}\n        image: {image}\n"
    )
}

#[test]
fn three_nodes_replicate_writes_and_modules_and_survive_a_kill() {
    let (da, db, dc) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = Agent::start_node(da.path(), "node-a", &[]);
    let t = token(&a);
    assert!(t.starts_with("wft1."), "{t}");
    let b = join(db.path(), "node-b", &a, &t);
    let c = join(dc.path(), "node-c", &a, &t);
    wait_for("3 alive nodes seen from every node", Duration::from_secs(15), || {
        (alive_nodes(&a) == 3 && alive_nodes(&b) == 3 && alive_nodes(&c) == 3).then_some(())
    });

    // A module pushed on A is copied to the others before the push returns.
    let out = ok(a.cli(&["push", "hello:1.0", module_path("hello").to_str().unwrap()]));
    assert!(out.contains("hello:1.0"), "{out}");

    // An apply on A is visible on C quickly.
    let f = da.path().join("one.yaml");
    std::fs::write(&f, deployment_yaml("one", "hello:1.0")).unwrap();
    ok(a.cli(&["apply", "-f", f.to_str().unwrap()]));
    let t0 = Instant::now();
    wait_for("apply on A visible on C within a second", Duration::from_secs(1), || {
        has_deployment(&c, "one").then_some(())
    });
    eprintln!("apply on A visible on C after {:?}", t0.elapsed());

    // SIGKILL A right after an apply returns: the write is already on B and C.
    let f = da.path().join("two.yaml");
    std::fs::write(&f, deployment_yaml("two", "hello:1.0")).unwrap();
    ok(a.cli(&["apply", "-f", f.to_str().unwrap()]));
    a.kill9();
    assert!(has_deployment(&b, "two"), "acknowledged write missing on B");
    assert!(has_deployment(&c, "two"), "acknowledged write missing on C");

    // B and C notice A is gone.
    wait_for("A seen dead", Duration::from_secs(10), || {
        let out = stdout(&c.cli(&["get", "nodes"]));
        out.lines().any(|l| l.starts_with("node-a") && l.contains("Dead")).then_some(())
    });

    // With A dead, C still runs the module A pushed, from its own copy.
    let f = dc.path().join("three.yaml");
    std::fs::write(&f, deployment_yaml("three", "hello:1.0")).unwrap();
    ok(c.cli(&["apply", "-f", f.to_str().unwrap()]));
    wait_for("hello runs on C", Duration::from_secs(20), || {
        let out = stdout(&c.cli(&["get", "replicas"]));
        out.lines().any(|l| l.starts_with("three-") && l.contains("1/1")).then_some(())
    });

    // A write while A is down; A restarts without a token, keeps its identity, catches up.
    let f = db.path().join("four.yaml");
    std::fs::write(&f, deployment_yaml("four", "hello:1.0")).unwrap();
    ok(b.cli(&["apply", "-f", f.to_str().unwrap()]));
    let a = Agent::start_node(da.path(), "node-a", &[]);
    wait_for("A caught up", Duration::from_secs(15), || has_deployment(&a, "four").then_some(()));
    wait_for("A alive again everywhere", Duration::from_secs(15), || (alive_nodes(&b) == 3).then_some(()));
    wait_for("A reports itself and its peers in sync", Duration::from_secs(15), || {
        let nodes = stdout(&a.cli(&["get", "nodes"]));
        (nodes.lines().filter(|l| l.contains(" Alive ") && l.ends_with(" yes")).count() == 3).then_some(())
    });
}

#[test]
fn joins_with_a_wrong_token_or_another_cluster_are_refused_and_store_nothing() {
    let (da, dx) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Agent::start_node(da.path(), "node-a", &[]);
    let x = Agent::start_node(dx.path(), "other-x", &[]);
    // Runs a joining agent that must give up; killed (and the test failed) if it is still
    // running after 30 s.
    let try_join = |token: &str, dir: &std::path::Path| {
        let mut child = std::process::Command::new(BIN)
            .args(["agent", "--listen-api", "127.0.0.1:0", "--listen-gateway", "127.0.0.1:0"])
            .args(["--listen-cluster", "127.0.0.1:0", "--node-name", "intruder", "--join", &a.cluster])
            .args(["--join-token", token, "--data-dir"])
            .arg(dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("a join that should be refused is still running");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    };
    // Garbage.
    let d1 = tempfile::tempdir().unwrap();
    let out = try_join("not-a-token", d1.path());
    assert!(!out.status.success());
    assert!(stderr(&out).contains("invalid join token"), "{}", stderr(&out));
    assert!(!d1.path().join("cluster/cluster.json").exists());
    // A real token of another cluster, pointed at A: A's certificate does not match the
    // token's CA fingerprint, so the joiner refuses A.
    let d2 = tempfile::tempdir().unwrap();
    let foreign = {
        let mut t = wasmfleet_cluster::token::JoinToken::parse(&token(&x)).unwrap();
        t.seeds = vec![a.cluster.parse().unwrap()];
        t.encode()
    };
    let out = try_join(&foreign, d2.path());
    assert!(!out.status.success());
    assert!(stderr(&out).contains("joining through"), "{}", stderr(&out));
    assert!(!d2.path().join("cluster/cluster.json").exists());
    // A token of this cluster whose secret was altered: A refuses the proof.
    let good = token(&a);
    let forged = {
        let mut t = wasmfleet_cluster::token::JoinToken::parse(&good).unwrap();
        t.secret[0] ^= 0xff;
        t.encode()
    };
    let d3 = tempfile::tempdir().unwrap();
    let out = try_join(&forged, d3.path());
    assert!(!out.status.success());
    assert!(stderr(&out).contains("join refused"), "{}", stderr(&out));
    assert!(!d3.path().join("cluster/cluster.json").exists());
    // Nothing joined.
    assert_eq!(alive_nodes(&a), 1);
}

#[test]
fn leave_is_announced_before_the_node_stops() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Agent::start_node(da.path(), "node-a", &[]);
    let mut b = join(db.path(), "node-b", &a, &token(&a));
    wait_for("2 alive nodes", Duration::from_secs(15), || (alive_nodes(&a) == 2).then_some(()));
    ok(b.cli(&["leave"]));
    let mut saw_leaving = false;
    wait_for("B gone from A's view", Duration::from_secs(20), || {
        let out = stdout(&a.cli(&["get", "nodes"]));
        let line = out.lines().find(|l| l.starts_with("node-b")).unwrap_or_default().to_string();
        saw_leaving |= line.contains("Leaving");
        (line.contains("Dead") || line.is_empty()).then_some(())
    });
    assert!(saw_leaving, "A never saw B as Leaving");
    wait_for("B's process exits", Duration::from_secs(10), || b.process.try_wait().map(|_| ()));
}

//! End-to-end tests of the real binary: an agent on 127.0.0.1 port 0, driven by the CLI.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;

fn deploy_hello(agent: &Agent) {
    let out = ok(agent.cli(&["push", "hello:1.0", module_path("hello").to_str().unwrap()]));
    assert!(out.contains("wasi:http/proxy component"), "{out}");
    let out = ok(agent.cli(&["apply", "-f", example("hello.yaml").to_str().unwrap()]));
    assert!(out.contains("deployment.apps/hello created"), "{out}");
    assert!(out.contains("service/hello created"), "{out}");
}

fn wait_hello(agent: &Agent) {
    wait_for("hello to answer through the gateway", Duration::from_secs(30), || match agent.get("hello", "/") {
        Ok((200, body, _)) if body.contains("Hello") => Some(()),
        _ => None,
    });
}

#[test]
fn push_apply_serve_then_sigkill_and_restart_brings_workloads_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(dir.path());
    deploy_hello(&agent);
    wait_hello(&agent);

    // Requests balance across the three replicas.
    let mut seen = HashSet::new();
    for i in 0..30 {
        let (status, body, replica) = agent.get("hello", &format!("/r/{i}")).unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(&format!("path=/r/{i}")), "{body}");
        seen.insert(replica);
    }
    assert_eq!(seen.len(), 3, "replicas seen: {seen:?}");
    // Also by <svc>.<namespace>.
    assert_eq!(agent.get("hello.default", "/").unwrap().0, 200);

    let out = ok(agent.cli(&["get", "replicas", "-o", "wide"]));
    assert_eq!(out.lines().filter(|l| l.starts_with("hello-")).count(), 3, "{out}");
    let out = ok(agent.cli(&["get", "deployments"]));
    assert!(out.contains("hello") && out.contains("3/3"), "{out}");

    agent.kill9();
    let agent = Agent::start(dir.path());
    // Back without any apply: the store is durable and the first pass runs before serving.
    let (status, body, _) = agent.get("hello", "/after-restart").unwrap();
    assert_eq!(status, 200, "{body}");
    let out = ok(agent.cli(&["get", "deployments"]));
    assert!(out.contains("3/3"), "{out}");
}

#[test]
fn a_fresh_node_serves_what_is_applied_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path());
    deploy_hello(&agent);
    // A node that never knew another member waits for no one (no boot grace): once the
    // Service is routed, the first request (which the gateway holds up to 5 s for a replica)
    // is served.
    let (status, body) =
        wait_for("the Service in the routing table", Duration::from_secs(10), || match agent.get("hello", "/") {
            Ok((404, _, _)) | Err(_) => None,
            Ok((status, body, _)) => Some((status, body)),
        });
    assert_eq!(status, 200, "{body}");
}

#[test]
fn api_requires_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path());
    let r = ureq::get(&format!("{}/v1/replicas", agent.api)).call();
    assert!(matches!(r, Err(ureq::Error::Status(401, _))), "{r:?}");
    let r = ureq::get(&format!("{}/v1/replicas", agent.api)).set("Authorization", "Bearer nope").call();
    assert!(matches!(r, Err(ureq::Error::Status(401, _))), "{r:?}");
    let r = ureq::get(&format!("{}/v1/replicas", agent.api))
        .set("Authorization", &format!("Bearer {}", agent.token()))
        .call();
    assert_eq!(r.unwrap().status(), 200);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir.path().join("token")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // Remote-style access with --server and --token.
    let out = std::process::Command::new(BIN)
        .args(["get", "deployments", "--server", &agent.api, "--token", "wrong"])
        .env("WASMFLEET_DATA_DIR", "/nonexistent")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("token"), "{}", stderr(&out));
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path());
    deploy_hello(&agent);
    wait_hello(&agent);

    // Not wasm.
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"this is not wasm").unwrap();
    let out = agent.cli(&["push", "junk:1", junk.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not a WebAssembly file"), "{}", stderr(&out));

    // Malformed manifest: one line naming the field.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: x}\n  template:\n    metadata:\n      labels: {app: x}\n    spec:\n      containers:\n      - name: x\n        image: hello:1.0\n        imagePullPolcy: Always\n").unwrap();
    let out = agent.cli(&["apply", "-f", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("imagePullPolcy") && err.contains("containers[0]"), "{err}");

    // An image that was never pushed: nothing of the file is applied.
    let two = dir.path().join("two.yaml");
    let text = std::fs::read_to_string(example("hello.yaml"))
        .unwrap()
        .replace("name: hello", "name: other")
        .replace("hello:1.0", "missing:9");
    std::fs::write(&two, text).unwrap();
    let out = agent.cli(&["apply", "-f", two.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("missing:9"), "{}", stderr(&out));
    let out = ok(agent.cli(&["get", "services"]));
    assert!(!out.contains("other"), "half-applied: {out}");

    // Unknown host and a scaled-to-zero service.
    let (status, body, _) = agent.get("nope", "/").unwrap();
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("hello"), "{body}");
    ok(agent.cli(&["scale", "deployment", "hello", "--replicas", "0"]));
    wait_for("503 with no replicas", Duration::from_secs(10), || match agent.get("hello", "/") {
        Ok((503, body, _)) if body.contains("no ready replicas") => Some(()),
        _ => None,
    });
    // A request that arrives while no replica is ready is held (briefly), not failed: the
    // scale-up below starts after it was sent, and it is answered by the new replica.
    let gateway = agent.gateway.clone();
    let held = std::thread::spawn(move || http_get(&format!("{gateway}/"), "hello"));
    ok(agent.cli(&["scale", "deployment", "hello", "--replicas", "1"]));
    let (status, body, _) = held.join().unwrap().unwrap();
    assert_eq!(status, 200, "a request held over a scale-up from zero: {body}");
    wait_hello(&agent);
}

#[test]
fn cli_errors_are_one_line_and_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let out = cli(dir.path(), &["get", "deployments"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.starts_with("error: no running agent found"), "{err}");
    let out = cli(dir.path(), &["get", "frobnicators"]);
    assert!(!out.status.success());
}

#[test]
fn run_passes_the_exit_code_through_and_grants_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let p1 = module_path("crash-p1");
    let out = cli(dir.path(), &["run", p1.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stdout(&out).contains("crash: starting"));
    let out = cli(dir.path(), &["run", p1.to_str().unwrap(), "--", "exit", "7"]);
    assert_eq!(out.status.code(), Some(7));
    std::fs::write(dir.path().join("f.txt"), "from the host").unwrap();
    let grant = format!("{}::/d", dir.path().display());
    let out =
        cli(dir.path(), &["run", "--dir", &grant, module_path("crash").to_str().unwrap(), "--", "cat", "/d/f.txt"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "from the host");
    let out = cli(dir.path(), &["run", "--env", "CRASH_CODE=0", p1.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn job_completes_once_and_daemonset_runs_with_a_volume() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(dir.path());
    ok(agent.cli(&["push", "crash:1.0", module_path("crash").to_str().unwrap()]));
    ok(agent.cli(&["push", "sensor:1.0", module_path("sensor").to_str().unwrap()]));
    ok(agent.cli(&["apply", "-f", example("job.yaml").to_str().unwrap()]));
    ok(agent.cli(&["apply", "-f", example("sensor-daemonset.yaml").to_str().unwrap()]));
    wait_for("job complete", Duration::from_secs(30), || {
        let out = stdout(&agent.cli(&["get", "jobs"]));
        out.contains("Complete").then_some(())
    });
    let out = ok(agent.cli(&["get", "jobs"]));
    assert!(out.contains("3/3"), "{out}");
    wait_for("sensor readings in logs", Duration::from_secs(20), || {
        let out = stdout(&agent.cli(&["logs", "sensor"]));
        out.contains("seq=1").then_some(())
    });
    agent.kill9();
    let agent = Agent::start(dir.path());
    // The job does not run again after a restart; the daemon does.
    let out = ok(agent.cli(&["get", "jobs"]));
    assert!(out.contains("Complete") && out.contains("3/3"), "{out}");
    let reps = ok(agent.cli(&["get", "replicas"]));
    assert!(!reps.lines().any(|l| l.starts_with("crash-")), "{reps}");
    wait_for("sensor running again", Duration::from_secs(20), || {
        let out = stdout(&agent.cli(&["get", "replicas"]));
        out.lines().any(|l| l.starts_with("sensor-") && l.contains("Running")).then_some(())
    });
}

#[test]
fn an_emptydir_goes_with_its_replica() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path());
    ok(agent.cli(&["push", "sensor:1.0", module_path("sensor").to_str().unwrap()]));
    // The sensor DaemonSet's template, as a Deployment of two replicas.
    let yaml = std::fs::read_to_string(example("sensor-daemonset.yaml"))
        .unwrap()
        .replace("kind: DaemonSet", "kind: Deployment")
        .replace("spec:\n  selector:", "spec:\n  replicas: 2\n  selector:");
    let file = dir.path().join("sensors.yaml");
    std::fs::write(&file, yaml).unwrap();
    ok(agent.cli(&["apply", "-f", file.to_str().unwrap()]));
    // Replicas are named `sensor-<revision>-<index>`, as Kubernetes names pods after their
    // ReplicaSet.
    let volume = |index: &str| {
        let root = dir.path().join("volumes/default");
        let replica = std::fs::read_dir(&root).ok()?.filter_map(Result::ok).find(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("sensor-") && name.ends_with(&format!("-{index}"))
        })?;
        Some(replica.path().join("data")).filter(|p| p.is_dir())
    };
    wait_for("both replicas' emptyDirs", Duration::from_secs(20), || {
        (volume("0").is_some() && volume("1").is_some()).then_some(())
    });
    // Scaled to one: the replica that went away takes its emptyDir along; the other keeps its.
    ok(agent.cli(&["scale", "deployment", "sensor", "--replicas", "1"]));
    wait_for("sensor-1's emptyDir removed", Duration::from_secs(20), || volume("1").is_none().then_some(()));
    assert!(volume("0").is_some());
}

#[test]
fn agent_starts_and_serves_in_one_gib_of_address_space() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start_limited(dir.path(), &[], Some(1024 * 1024));
    deploy_hello(&agent);
    wait_hello(&agent);
    for _ in 0..20 {
        assert_eq!(agent.get("hello", "/").unwrap().0, 200);
    }
    let v: serde_json::Value = ureq::get(&format!("{}/v1/node", agent.api))
        .set("Authorization", &format!("Bearer {}", agent.token()))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let reserved = v["pool"]["instances"].as_u64().unwrap() * v["pool"]["instance_memory_bytes"].as_u64().unwrap();
    assert!(reserved <= 512 << 20, "pool reserves {reserved} bytes under a 1 GiB limit");
}

#[test]
fn failing_job_stops_at_its_backoff_limit() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path());
    ok(agent.cli(&["push", "crash:1.0", module_path("crash").to_str().unwrap()]));
    let job = dir.path().join("fail.yaml");
    std::fs::write(
        &job,
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: doomed\nspec:\n  backoffLimit: 1\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: doomed\n        image: crash:1.0\n        args: [\"exit\", \"1\"]\n",
    )
    .unwrap();
    ok(agent.cli(&["apply", "-f", job.to_str().unwrap()]));
    wait_for("job failed", Duration::from_secs(30), || {
        let out = stdout(&agent.cli(&["get", "jobs"]));
        out.lines().any(|l| l.starts_with("doomed") && l.contains("Failed")).then_some(())
    });
    let out = ok(agent.cli(&["get", "jobs"]));
    let line = out.lines().find(|l| l.starts_with("doomed")).unwrap();
    let failed: u32 = line.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert_eq!(failed, 2, "{out}");
    // And it stays failed: no further attempts. A Job applied now is started by a later
    // reconciliation pass and recorded complete by a pass after that; a retry of `doomed`
    // would start in the same passes. So once `marker` is complete, those passes have run.
    let marker = dir.path().join("marker.yaml");
    std::fs::write(
        &marker,
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: marker\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: marker\n        image: crash:1.0\n        args: [\"exit\", \"0\"]\n",
    )
    .unwrap();
    ok(agent.cli(&["apply", "-f", marker.to_str().unwrap()]));
    let out = wait_for("the marker job to complete", Duration::from_secs(30), || {
        let out = stdout(&agent.cli(&["get", "jobs"]));
        out.lines().any(|l| l.starts_with("marker") && l.contains("Complete")).then_some(out)
    });
    assert!(out.lines().any(|l| l.starts_with("doomed") && l.contains("Failed") && l.contains(" 2 ")), "{out}");
    let reps = ok(agent.cli(&["get", "replicas"]));
    assert!(!reps.lines().any(|l| l.starts_with("doomed")), "doomed runs again: {reps}");
}

#[test]
fn service_port_is_opened_on_the_node_or_reported_when_taken() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path());
    ok(agent.cli(&["push", "hello:1.0", module_path("hello").to_str().unwrap()]));
    // One free port for the Service, one port held by someone else.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let free_port = free.local_addr().unwrap().port();
    drop(free);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let yaml = std::fs::read_to_string(example("hello.yaml")).unwrap();
    let open = yaml.replace("port: 80", &format!("port: {free_port}"));
    let busy = yaml
        .replace("port: 80", &format!("port: {taken_port}"))
        .replace("name: hello\nspec:\n  selector", "name: busy\nspec:\n  selector");
    let (f1, f2) = (dir.path().join("open.yaml"), dir.path().join("busy.yaml"));
    std::fs::write(&f1, open).unwrap();
    std::fs::write(&f2, busy).unwrap();
    ok(agent.cli(&["apply", "-f", f1.to_str().unwrap()]));
    ok(agent.cli(&["apply", "-f", f2.to_str().unwrap()]));
    // The Service's own port serves without a Host header.
    wait_for("service port", Duration::from_secs(20), || {
        match http_get(&format!("http://127.0.0.1:{free_port}/p"), "anything") {
            Ok((200, body, _)) if body.contains("path=/p") => Some(()),
            _ => None,
        }
    });
    // The taken port is reported, and the Service still works through the gateway by Host.
    wait_for("unbound port in describe", Duration::from_secs(20), || {
        let out = stdout(&agent.cli(&["describe", "service", "busy"]));
        out.contains("cannot bind").then_some(())
    });
    assert_eq!(agent.get("busy", "/").unwrap().0, 200);
    drop(taken);
}

#[test]
fn readiness_probe_gates_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path());
    ok(agent.cli(&["push", "hostile:1.0", module_path("hostile").to_str().unwrap()]));
    let manifest = |probe_path: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: gated\nspec:\n  selector:\n    matchLabels: {{app: gated}}\n  template:\n    metadata:\n      labels: {{app: gated}}\n    spec:\n      containers:\n      - name: gated\n        image: hostile:1.0\n        readinessProbe:\n          httpGet: {{path: {probe_path}, port: 8080}}\n          periodSeconds: 1\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: gated\nspec:\n  selector: {{app: gated}}\n  ports: [{{port: 8080}}]\n"
        )
    };
    let file = dir.path().join("gated.yaml");
    // A probe on a path that traps: never ready, so the Service answers 503.
    std::fs::write(&file, manifest("/trap")).unwrap();
    ok(agent.cli(&["apply", "-f", file.to_str().unwrap()]));
    wait_for("replica running but not ready", Duration::from_secs(20), || {
        let out = stdout(&agent.cli(&["get", "replicas"]));
        out.lines().any(|l| l.starts_with("gated-") && l.contains("0/1")).then_some(())
    });
    let (status, body, _) = agent.get("gated", "/").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("0/1 ready"), "{body}");
    // A probe that passes: ready, and traffic flows.
    std::fs::write(&file, manifest("/")).unwrap();
    ok(agent.cli(&["apply", "-f", file.to_str().unwrap()]));
    wait_for("ready after a passing probe", Duration::from_secs(20), || match agent.get("gated", "/") {
        Ok((200, body, _)) if body == "ok\n" => Some(()),
        _ => None,
    });
}

#[test]
fn serve_runs_a_component_like_wasmtime_serve() {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(BIN)
        .args(["serve", module_path("hello").to_str().unwrap(), "--addr", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("serving ").unwrap_or_else(|| panic!("unexpected: {line}")).to_string();
    let result = http_get(&format!("{url}/served"), "localhost");
    let _ = child.kill();
    let _ = child.wait();
    let (status, body, _) = result.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("path=/served"), "{body}");
}

#[test]
fn changed_template_is_replaced_make_before_break() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path());
    ok(agent.cli(&["push", "hello:1.0", module_path("hello").to_str().unwrap()]));
    let manifest = |greeting: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: roll\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: roll}}\n  template:\n    metadata:\n      labels: {{app: roll}}\n    spec:\n      containers:\n      - name: roll\n        image: hello:1.0\n        env: [{{name: GREETING, value: {greeting}}}]\n        readinessProbe:\n          httpGet: {{path: /, port: 8080}}\n          initialDelaySeconds: 1\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: roll\nspec:\n  selector: {{app: roll}}\n  ports: [{{port: 8080}}]\n"
        )
    };
    let file = dir.path().join("roll.yaml");
    std::fs::write(&file, manifest("one")).unwrap();
    ok(agent.cli(&["apply", "-f", file.to_str().unwrap()]));
    wait_for("first revision serving", Duration::from_secs(20), || match agent.get("roll", "/") {
        Ok((200, body, _)) if body.starts_with("one!") => Some(()),
        _ => None,
    });
    std::fs::write(&file, manifest("two")).unwrap();
    ok(agent.cli(&["apply", "-f", file.to_str().unwrap()]));
    // The new replica needs >= 1 s to pass its probe; the old one serves meanwhile: no 503.
    let mut served_new = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !served_new {
        assert!(std::time::Instant::now() < deadline, "new revision never took over");
        let (status, body, _) = agent.get("roll", "/").unwrap();
        assert_eq!(status, 200, "gap in service during the replacement: {body}");
        served_new = body.starts_with("two!");
    }
}

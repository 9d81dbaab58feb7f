//! HorizontalPodAutoscalers across real agent processes on 127.0.0.1 (port 0): a CPU-bound
//! Deployment scales up under load and back down when the load stops, the autoscaler's
//! coordinator can die mid-way, a manual scale is corrected, and bad autoscalers are refused
//! at apply.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;

fn apply(agent: &Agent, name: &str, yaml: &str) -> std::process::Output {
    let file = agent.data_dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    agent.cli(&["apply", "-f", file.to_str().unwrap()])
}

/// `work`: the `burn` module (each request spins `ms` ms), 1 replica with a 100m cpu request,
/// its Service, and an autoscaler on cpu at `target`% with a 1 s sync period and a short
/// scale-down window.
fn work(max: u32, target: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: work\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: work}}\n  template:\n    metadata:\n      labels: {{app: work}}\n    spec:\n      containers:\n      - name: work\n        image: burn:1.0\n        resources:\n          requests: {{cpu: 100m}}\n        readinessProbe:\n          httpGet: {{path: /ready, port: 8080}}\n          periodSeconds: 1\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: work\nspec:\n  selector: {{app: work}}\n  ports:\n  - port: 80\n---\n{}",
        hpa(max, target)
    )
}

fn hpa(max: u32, target: u32) -> String {
    format!(
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: work\n  annotations:\n    wasmfleet.io/hpa-sync-period: 1s\nspec:\n  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: work}}\n  minReplicas: 1\n  maxReplicas: {max}\n  metrics:\n  - type: Resource\n    resource:\n      name: cpu\n      target: {{type: Utilization, averageUtilization: {target}}}\n  behavior:\n    scaleDown:\n      stabilizationWindowSeconds: 3\n"
    )
}

/// The autoscaler `work` as `agent` reports it (its status).
fn hpa_status(agent: &Agent) -> serde_json::Value {
    status_of(agent, "work")
}

/// Autoscaler `name` as `agent` reports it (its status).
fn status_of(agent: &Agent, name: &str) -> serde_json::Value {
    let http = ureq::AgentBuilder::new().timeout(Duration::from_secs(5)).build();
    http.get(&format!("{}/v1/objects/horizontalpodautoscalers/default/{name}", agent.api))
        .set("Authorization", &format!("Bearer {}", agent.token()))
        .call()
        .ok()
        .and_then(|r| r.into_json::<serde_json::Value>().ok())
        .map(|v| v["status"]["autoscale"].clone())
        .unwrap_or_default()
}

fn desired(agent: &Agent) -> u64 {
    hpa_status(agent)["desired_replicas"].as_u64().unwrap_or(0)
}

/// Ready replicas of `work` in the cluster, as `agent` sees them.
fn ready_work(agent: &Agent) -> usize {
    let out = stdout(&agent.cli(&["get", "replicas", "-o", "json"]));
    let reps: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
    reps.iter().filter(|r| r["owner"] == "Deployment/default/work" && r["ready"] == true).count()
}

/// Requests that spin `ms` each, back to back on `threads` connections through `gateway`,
/// until stopped.
struct Burn {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Burn {
    fn start(gateway: &str, threads: usize, ms: u32) -> Burn {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let threads = (0..threads)
            .map(|_| {
                let (stop, ok, url) = (stop.clone(), ok.clone(), format!("{gateway}/?ms={ms}"));
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if matches!(http_get(&url, "work"), Ok((200, _, _))) {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        Burn { stop, ok, threads }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        self.ok.load(Ordering::Relaxed)
    }
}

fn fleet(dirs: &[tempfile::TempDir; 3]) -> Vec<Agent> {
    let agents = cluster(dirs);
    ok(agents[0].cli(&["push", "burn:1.0", module_path("burn").to_str().unwrap()]));
    agents
}

#[test]
fn a_cpu_bound_deployment_scales_up_under_load_and_back_down_after() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let agents = fleet(&dirs);
    let out = apply(&agents[0], "work", &work(4, 50));
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("1 ready replica", Duration::from_secs(30), || (ready_work(&agents[1]) == 1).then_some(()));
    wait_for("the autoscaler to report", Duration::from_secs(20), || {
        hpa_status(&agents[2])["targets"][0].as_str().filter(|t| !t.contains("unknown")).map(str::to_string)
    });
    let get = ok(agents[1].cli(&["get", "hpa"]));
    assert!(get.starts_with("NAME") && get.contains("Deployment/work") && get.contains("cpu: "), "{get}");
    // A request spins 20 ms of a 100m request: one connection back to back is ~10x the
    // target on one replica.
    let started = Instant::now();
    let load = Burn::start(&agents[0].gateway, 2, 20);
    wait_for("the autoscaler to reach its maximum", Duration::from_secs(30), || {
        (desired(&agents[0]) == 4).then_some(())
    });
    let up = started.elapsed();
    wait_for("4 ready replicas", Duration::from_secs(20), || (ready_work(&agents[2]) == 4).then_some(()));
    eprintln!("scaled to 4 in {up:?} (from load start to the autoscaler's decision)");
    let served = load.finish();
    assert!(served > 0);
    let describe = ok(agents[2].cli(&["describe", "hpa", "work"]));
    assert!(describe.contains("SuccessfulRescale") && describe.contains("above target"), "{describe}");
    assert!(describe.contains("ScalingActive") && describe.contains("ValidMetricFound"), "{describe}");
    // Idle: after the 3 s window, back to minReplicas.
    let stopped = Instant::now();
    wait_for("back to 1 replica", Duration::from_secs(30), || (desired(&agents[1]) == 1).then_some(()));
    assert!(stopped.elapsed() >= Duration::from_secs(3), "the scale-down window holds: {:?}", stopped.elapsed());
    wait_for("1 replica running", Duration::from_secs(20), || (ready_work(&agents[0]) == 1).then_some(()));
}

#[test]
fn a_manual_scale_is_corrected_and_bad_autoscalers_are_refused() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let agents = fleet(&dirs);
    // A target that does not exist, bounds the wrong way round, an unknown metric: each named,
    // nothing applied.
    let out = apply(&agents[0], "bad-target", &hpa(3, 50));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("spec.scaleTargetRef: Deployment \"work\" does not exist"), "{}", stderr(&out));
    let bad = work(3, 50).replace("minReplicas: 1", "minReplicas: 5").replace("name: cpu", "name: gpu");
    let out = apply(&agents[0], "bad", &bad);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("spec.maxReplicas: must be at least minReplicas (5), got 3"), "{err}");
    assert!(err.contains("spec.metrics[0].resource.name: unknown resource \"gpu\""), "{err}");
    assert!(stdout(&agents[0].cli(&["get", "deployments"])).lines().count() <= 1, "nothing was applied");
    // `autoscale` makes one; an idle target stays at minReplicas.
    assert!(
        apply(&agents[0], "work", work(3, 50).split("---\napiVersion: autoscaling").next().unwrap()).status.success()
    );
    ok(agents[0].cli(&["autoscale", "deployment/work", "--min", "2", "--max", "3", "--cpu-percent", "50"]));
    wait_for("minReplicas (2) enforced", Duration::from_secs(30), || (ready_work(&agents[1]) == 2).then_some(()));
    // A manual scale runs until the next sync, which brings it back within bounds.
    ok(agents[1].cli(&["scale", "deployment", "work", "--replicas", "3"]));
    wait_for("the autoscaler to bring it back to 2", Duration::from_secs(60), || {
        let s = hpa_status(&agents[2]);
        (s["desired_replicas"] == 2 && ready_work(&agents[2]) == 2).then_some(())
    });
}

/// `idle`: `hello` with a Service, autoscaled on requests per second from 0 to 3, idle after
/// a 2 s window.
const IDLE: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: idle\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: idle}\n  template:\n    metadata:\n      labels: {app: idle}\n    spec:\n      containers:\n      - name: idle\n        image: hello:1.0\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: idle\n  annotations:\n    wasmfleet.io/activation-timeout: 15s\nspec:\n  selector: {app: idle}\n  ports:\n  - port: 80\n---\napiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: idle\n  annotations:\n    wasmfleet.io/hpa-sync-period: 1s\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: idle}\n  minReplicas: 0\n  maxReplicas: 3\n  metrics:\n  - type: Pods\n    pods:\n      metric: {name: requests_per_second}\n      target: {type: AverageValue, averageValue: \"1000\"}\n  behavior:\n    scaleDown:\n      stabilizationWindowSeconds: 2\n";

fn idle_status(agent: &Agent) -> serde_json::Value {
    status_of(agent, "idle")
}

fn idle_replicas(agent: &Agent) -> usize {
    let out = stdout(&agent.cli(&["get", "replicas", "-o", "json"]));
    let reps: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
    reps.iter().filter(|r| r["owner"] == "Deployment/default/idle").count()
}

#[test]
fn scaled_to_zero_and_back_by_requests_at_every_gateway_without_a_failure() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let agents = cluster(&dirs);
    ok(agents[0].cli(&["push", "hello:1.0", module_path("hello").to_str().unwrap()]));
    let out = apply(&agents[0], "idle", IDLE);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("no requests: scaled to zero", Duration::from_secs(30), || {
        (idle_status(&agents[1])["desired_replicas"] == 0 && agents.iter().all(|a| idle_replicas(a) == 0)).then_some(())
    });
    wait_for("describe to say why", Duration::from_secs(10), || {
        ok(agents[2].cli(&["describe", "hpa", "idle"])).contains("ScaledToZero").then_some(())
    });
    // 1 000 requests from 30 clients across the three gateways, all while it activates.
    let cold: Arc<std::sync::Mutex<Vec<u64>>> = Arc::default();
    let failed: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let threads: Vec<_> = (0..30)
        .map(|i| {
            let url = format!("{}/", agents[i % 3].gateway);
            let (cold, failed) = (cold.clone(), failed.clone());
            std::thread::spawn(move || {
                // The activation is held up to 15 s (a loaded CI machine); the bench measures it.
                let http = ureq::AgentBuilder::new().timeout(Duration::from_secs(20)).build();
                for _ in 0..(1000 / 30 + usize::from(i < 1000 % 30)) {
                    match http.get(&url).set("Host", "idle").call() {
                        Ok(r) => {
                            if let Some(ms) = r.header("x-wasmfleet-cold-start").and_then(|v| v.parse().ok()) {
                                cold.lock().unwrap().push(ms);
                            }
                        }
                        Err(e) => failed.lock().unwrap().push(e.to_string()),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let failed = failed.lock().unwrap().clone();
    assert!(failed.is_empty(), "{} of 1000 failed: {:?}", failed.len(), &failed[..failed.len().min(5)]);
    let cold = cold.lock().unwrap().clone();
    assert!(!cold.is_empty(), "the first requests were held for the activation");
    eprintln!("{} requests held, longest {} ms", cold.len(), cold.iter().max().unwrap());
    // One activation, whichever gateways asked.
    let events = idle_status(&agents[0])["events"].clone();
    let activations = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e[1].as_str().is_some_and(|m| m.contains("a request arrived")))
        .count();
    assert_eq!(activations, 1, "{events}");
}

/// The node that decides `work`'s rollout and autoscaling, as `agent` reports it.
fn coordinator_of_work(agent: &Agent) -> Option<String> {
    let http = ureq::AgentBuilder::new().timeout(Duration::from_secs(5)).build();
    let v: serde_json::Value = http
        .get(&format!("{}/v1/objects/deployments/default/work", agent.api))
        .set("Authorization", &format!("Bearer {}", agent.token()))
        .call()
        .ok()?
        .into_json()
        .ok()?;
    v["status"]["rollout"]["coordinator"].as_str().map(str::to_string)
}

#[test]
fn a_scale_up_completes_when_its_coordinator_dies_and_keeps_its_pace() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut agents = fleet(&dirs);
    // One replica more every 2 s at most: a scale-up that lasts.
    let slow = work(5, 50).replace(
        "  behavior:\n",
        "  behavior:\n    scaleUp:\n      policies:\n      - {type: Pods, value: 1, periodSeconds: 2}\n",
    );
    assert!(apply(&agents[0], "work", &slow).status.success());
    wait_for("1 ready replica", Duration::from_secs(30), || (ready_work(&agents[1]) == 1).then_some(()));
    let coordinator = wait_for("a coordinator", Duration::from_secs(20), || coordinator_of_work(&agents[0]));
    let victim = ["node-a", "node-b", "node-c"].iter().position(|n| *n == coordinator).unwrap();
    let (survivor, other) = match victim {
        0 => (1, 2),
        1 => (0, 2),
        _ => (0, 1),
    };
    let load = Burn::start(&agents[survivor].gateway, 2, 20);
    let mut seen: Vec<u64> = Vec::new();
    wait_for("the scale-up under way", Duration::from_secs(30), || {
        let d = desired(&agents[other]);
        (d >= 2).then_some(())
    });
    agents[victim].kill9();
    let killed_at = Instant::now();
    wait_for("the scale-up to finish after the coordinator died", Duration::from_secs(60), || {
        let d = desired(&agents[other]);
        seen.push(d);
        std::thread::sleep(Duration::from_millis(100));
        (d == 5).then_some(())
    });
    load.finish();
    eprintln!("finished {:?} after the kill; sizes seen: {seen:?}", killed_at.elapsed());
    // The successor kept the policy: the recorded scale-ups (the autoscaler's own history,
    // with the time of each) add one replica at a time, 2 s apart at least. (A node's view
    // of the size can skip a step: the dead coordinator's last write may reach it only as
    // part of a later record.)
    let events = hpa_status(&agents[other])["events"].clone();
    let ups: Vec<(u64, u64)> = events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            let size = e[1].as_str()?.strip_prefix("New size: ")?.split(';').next()?.parse().ok()?;
            Some((e[0].as_u64()?, size))
        })
        .collect();
    assert!(ups.last().is_some_and(|(_, size)| *size == 5), "{events}");
    for pair in ups.windows(2) {
        let ((t1, s1), (t2, s2)) = (pair[0], pair[1]);
        if s2 > s1 {
            assert!(s2 == s1 + 1 && t2 - t1 >= 1900, "{s1} → {s2} in {} ms: {events}", t2 - t1);
        }
    }
    let new = wait_for("a new coordinator", Duration::from_secs(20), || {
        coordinator_of_work(&agents[other]).filter(|c| *c != coordinator)
    });
    assert_ne!(new, coordinator);
}

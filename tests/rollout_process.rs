//! Rolling updates across real agent processes on 127.0.0.1 (port 0 everywhere): paced by
//! `maxSurge`/`maxUnavailable` under steady traffic through every gateway, watched with
//! `rollout status`, undone, stalled by a bad version, paused, and carried on when the node
//! deciding the steps dies.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

/// A Deployment `web` of `hello` with a Service, greeting `greeting`, paced by `strategy`
/// (YAML lines under `spec:`), with a readiness probe on `/ready`.
fn web(replicas: u32, greeting: &str, strategy: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: {replicas}\n{strategy}  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n      - name: web\n        image: hello:1.0\n        env: [{{name: GREETING, value: \"{greeting}\"}}]\n        readinessProbe:\n          httpGet: {{path: /ready, port: 8080}}\n          periodSeconds: 1\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {{app: web}}\n  ports:\n  - port: 80\n"
    )
}

fn apply(agent: &Agent, yaml: &str) {
    let file = agent.data_dir.join(format!("apply-{}.yaml", std::process::id()));
    std::fs::write(&file, yaml).unwrap();
    ok(agent.cli(&["apply", "-f", file.to_str().unwrap()]));
}

/// GET `path` on the API at `url`.
fn api(url: &str, token: &str, path: &str) -> Option<serde_json::Value> {
    let http = ureq::AgentBuilder::new().timeout(Duration::from_secs(5)).build();
    let resp = http.get(&format!("{url}{path}")).set("Authorization", &format!("Bearer {token}")).call();
    resp.ok()?.into_json().ok()
}

/// The Deployment `web` as `agent` reports it.
fn web_view(agent: &Agent) -> Option<serde_json::Value> {
    api(&agent.api, &agent.token(), "/v1/objects/deployments/default/web")
}

/// A node's own replicas of `web` (first-hand, not from gossip): (revision, ready).
fn local_web(url: &str, token: &str, node: &str) -> Option<Vec<(String, bool)>> {
    let all = api(url, token, "/v1/replicas")?;
    Some(
        all.as_array()?
            .iter()
            .filter(|r| r["node"] == node && r["owner"] == "Deployment/default/web")
            .filter(|r| matches!(r["phase"].as_str(), Some("Running" | "Pending" | "NotReady")))
            .map(|r| (r["revision"].as_str().unwrap_or("").to_string(), r["ready"] == true))
            .collect(),
    )
}

/// What a sampler saw: the most replicas running at once, the fewest ready at once, and the
/// revisions each node ran.
type Seen = (usize, usize, Vec<BTreeSet<String>>);

/// Samples every node's own replicas every 50 ms: the most that ran at once, the fewest ready
/// at once, and every revision seen per node.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Seen>>,
}

impl Sampler {
    fn start(agents: &[Agent]) -> Sampler {
        let targets: Vec<(String, String, String)> =
            agents.iter().zip(NODES).map(|(a, n)| (a.api.clone(), a.token(), n.to_string())).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut max_running, mut min_ready) = (0, usize::MAX);
            let mut revisions = vec![BTreeSet::new(); targets.len()];
            while !s.load(Ordering::Relaxed) {
                let mut sample = Vec::new();
                for (url, token, node) in &targets {
                    sample.push(local_web(url, token, node));
                }
                if sample.iter().all(Option::is_some) {
                    let sample: Vec<Vec<(String, bool)>> = sample.into_iter().flatten().collect();
                    max_running = max_running.max(sample.iter().map(Vec::len).sum());
                    min_ready = min_ready.min(sample.iter().flatten().filter(|(_, ready)| *ready).count());
                    for (i, node) in sample.iter().enumerate() {
                        revisions[i].extend(node.iter().map(|(r, _)| r.clone()));
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (max_running, min_ready, revisions)
        });
        Sampler { stop, thread: Some(thread) }
    }

    /// (most running at once, fewest ready at once, revisions seen per node).
    fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// Ready replicas of `web` as `agent` sees the cluster.
fn ready_web(agent: &Agent) -> usize {
    let out = stdout(&agent.cli(&["get", "replicas", "-o", "json"]));
    let reps: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
    reps.iter().filter(|r| r["owner"] == "Deployment/default/web" && r["ready"] == true).count()
}

/// `rollout status` until it ends; its exit code and output.
fn rollout_status(agent: &Agent, timeout: &str) -> (bool, String, String) {
    let out = agent.cli(&["rollout", "status", "deployment/web", "--timeout", timeout]);
    (out.status.success(), stdout(&out), stderr(&out))
}

/// The revisions `rollout history` lists.
fn history(agent: &Agent) -> Vec<u64> {
    ok(agent.cli(&["rollout", "history", "deployment/web"]))
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// The greeting a GET through `agent`'s gateway answers with.
fn greeting(agent: &Agent) -> String {
    let (status, body, _) = agent.get("web", "/").unwrap();
    assert_eq!(status, 200, "{body}");
    body.split('!').next().unwrap_or("").to_string()
}

/// Three nodes serving `web` (6 replicas, `strategy`), all ready.
fn fleet(dirs: &[tempfile::TempDir; 3], strategy: &str) -> Vec<Agent> {
    let agents = cluster(dirs);
    ok(agents[0].cli(&["push", "hello:1.0", module_path("hello").to_str().unwrap()]));
    apply(&agents[0], &web(6, "v1", strategy));
    wait_for("6 ready replicas of v1", Duration::from_secs(30), || (ready_web(&agents[0]) == 6).then_some(()));
    agents
}

/// Rolls v1 to v2 under traffic through every gateway; returns what the sampler saw.
fn roll_under_load(agents: &[Agent], strategy: &str) -> (usize, usize) {
    let loads: Vec<Load> = agents.iter().map(|a| Load::start(&a.gateway, "web")).collect();
    for l in &loads {
        l.wait_more(20);
    }
    let sampler = Sampler::start(agents);
    std::thread::sleep(Duration::from_millis(200));
    apply(&agents[1], &web(6, "v2", strategy));
    let (done, out, err) = rollout_status(&agents[2], "120s");
    assert!(done, "rollout status failed:\n{out}\n{err}");
    assert!(out.trim_end().ends_with("deployment \"web\" successfully rolled out"), "{out}");
    for l in &loads {
        l.wait_more(20);
    }
    let (max_running, min_ready, _) = sampler.finish();
    let mut total = 0;
    for l in loads {
        let (okd, failed) = l.finish();
        assert!(
            failed.is_empty(),
            "{} failed requests during the rollout: {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        );
        total += okd;
    }
    assert!(total > 100, "only {total} requests");
    for a in agents {
        assert_eq!(greeting(a), "v2");
    }
    (max_running, min_ready)
}

#[test]
fn surge_one_unavailable_zero_rolls_without_a_failed_request_and_undoes() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let strategy = "  strategy:\n    type: RollingUpdate\n    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}\n";
    let agents = fleet(&dirs, strategy);
    let (max_running, min_ready) = roll_under_load(&agents, strategy);
    assert!(max_running <= 7, "{max_running} replicas ran at once (maxSurge 1 allows 7)");
    assert!(min_ready >= 6, "only {min_ready} ready at once (maxUnavailable 0 keeps 6)");
    assert_eq!(history(&agents[0]), [1, 2]);

    // Undo: the first template comes back as revision 3.
    ok(agents[0].cli(&["rollout", "undo", "deployment/web"]));
    let (done, out, err) = rollout_status(&agents[1], "120s");
    assert!(done, "{out}\n{err}");
    assert_eq!(history(&agents[0]), [2, 3]);
    wait_for("every gateway answers v1", Duration::from_secs(10), || {
        agents.iter().all(|a| greeting(a) == "v1").then_some(())
    });
}

#[test]
fn unavailable_two_surge_zero_never_runs_more_than_six() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let strategy = "  strategy:\n    type: RollingUpdate\n    rollingUpdate: {maxSurge: 0, maxUnavailable: 2}\n";
    let agents = fleet(&dirs, strategy);
    let (max_running, min_ready) = roll_under_load(&agents, strategy);
    assert!(max_running <= 6, "{max_running} replicas ran at once (maxSurge 0 allows 6)");
    assert!(min_ready >= 4, "only {min_ready} ready at once (maxUnavailable 2 keeps 4)");
}

#[test]
fn a_version_that_never_gets_ready_stops_at_the_progress_deadline() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let strategy = "  progressDeadlineSeconds: 4\n  strategy:\n    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}\n";
    let agents = fleet(&dirs, strategy);
    ok(agents[0].cli(&["push", "hostile:1.0", module_path("hostile").to_str().unwrap()]));
    let load = Load::start(&agents[1].gateway, "web");
    load.wait_more(20);
    // `hostile` traps on the probe's path: its replicas never get ready.
    let bad =
        web(6, "v1", strategy).replace("path: /ready", "path: /trap").replace("image: hello:1.0", "image: hostile:1.0");
    apply(&agents[0], &bad);
    let (done, out, err) = rollout_status(&agents[2], "60s");
    assert!(!done, "a rollout that cannot progress succeeded:\n{out}");
    assert!(err.contains("error: deployment \"web\" exceeded its progress deadline"), "{out}\n{err}");
    let describe = ok(agents[0].cli(&["describe", "deployment", "web"]));
    assert!(describe.contains("ProgressDeadlineExceeded"), "{describe}");
    load.wait_more(20);
    let (_, failed) = load.finish();
    assert!(failed.is_empty(), "the old replicas kept serving: {failed:?}");
    assert_eq!(ready_web(&agents[0]), 6, "every old replica still serves (maxUnavailable 0)");
}

#[test]
fn a_paused_deployment_waits_and_a_resumed_one_rolls() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let agents = fleet(&dirs, "");
    ok(agents[0].cli(&["rollout", "pause", "deployment/web"]));
    apply(&agents[0], &web(6, "v2", "  paused: true\n"));
    let out = stdout(&agents[1].cli(&["rollout", "status", "deployment/web", "--watch=false"]));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(history(&agents[0]), [1], "a paused Deployment starts no revision");
    assert_eq!(greeting(&agents[2]), "v1", "{out}");
    ok(agents[1].cli(&["rollout", "resume", "deployment/web"]));
    let (done, out, err) = rollout_status(&agents[2], "120s");
    assert!(done, "{out}\n{err}");
    assert_eq!(history(&agents[0]), [1, 2]);
}

/// The node deciding the steps of `web`, as the Deployment's status names it.
fn coordinator(agent: &Agent) -> String {
    let view = web_view(agent).unwrap();
    view["status"]["rollout"]["coordinator"].as_str().unwrap_or("").to_string()
}

#[test]
fn a_rollout_survives_its_coordinator_and_an_offline_node_skips_the_middle_revision() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    // Each step waits 2 s of readiness: the rollout takes long enough to kill a node mid-way.
    let slow = "  minReadySeconds: 2\n  strategy:\n    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}\n";
    let mut agents = fleet(&dirs, slow);
    let boss = coordinator(&agents[0]);
    let b = NODES.iter().position(|n| *n == boss).expect("a coordinator among the nodes");
    let other = (b + 1) % 3;
    let offline = (b + 2) % 3;

    // One node goes offline before any change; it misses v2 entirely.
    agents[offline].kill9();
    apply(&agents[other], &web(6, "v2", slow));
    wait_for("the rollout under way", Duration::from_secs(30), || {
        let view = web_view(&agents[other])?;
        (view["status"]["rollout"]["counts"]["updated"].as_u64()? >= 2).then_some(())
    });
    // The coordinator dies mid-rollout; the survivor carries it through.
    agents[b].kill9();
    let started = Instant::now();
    let (done, out, err) = rollout_status(&agents[other], "120s");
    assert!(done, "the rollout did not finish without its coordinator:\n{out}\n{err}");
    assert_eq!(coordinator(&agents[other]), NODES[other]);
    assert!(started.elapsed() < Duration::from_secs(90));
    let v2 = history(&agents[other]);
    assert_eq!(v2, [1, 2]);

    // v3 while the offline node is still away; then it comes back.
    apply(&agents[other], &web(6, "v3", slow));
    let (done, out, err) = rollout_status(&agents[other], "120s");
    assert!(done, "{out}\n{err}");
    let middle = web_view(&agents[other]).unwrap()["status"]["rollout"]["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["revision"] == 2)
        .map(|r| r["hash"].as_str().unwrap().to_string())
        .expect("revision 2 in history");
    agents[offline] = Agent::start_node(dirs[offline].path(), NODES[offline], &[]);
    let sampler = Sampler::start_one(&agents[offline], NODES[offline]);
    wait_for("the returning node serves v3", Duration::from_secs(30), || {
        (greeting(&agents[offline]) == "v3").then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let seen = sampler.finish_one();
    assert!(!seen.contains(&middle), "the returning node ran the intermediate revision: {seen:?}");
}

impl Sampler {
    /// Samples one node's own replicas of `web`, every 50 ms.
    fn start_one(agent: &Agent, node: &str) -> Sampler {
        let (url, token, node) = (agent.api.clone(), agent.token(), node.to_string());
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = BTreeSet::new();
            while !s.load(Ordering::Relaxed) {
                if let Some(reps) = local_web(&url, &token, &node) {
                    seen.extend(reps.into_iter().map(|(r, _)| r));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (0, 0, vec![seen])
        });
        Sampler { stop, thread: Some(thread) }
    }

    fn finish_one(self) -> BTreeSet<String> {
        self.finish().2.into_iter().next().unwrap_or_default()
    }
}

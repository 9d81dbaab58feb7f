//! Rollout waves across real agent processes on 127.0.0.1 (port 0): three nodes in three
//! zones, a Deployment annotated `wasmfleet.io/rollout-waves: zone`. A rolling update finishes
//! each zone before it starts the next, in the order asked, without a failed request; a
//! version that never gets ready stays in the first zone while the others keep serving; a
//! version that fails the analysis between waves halts there.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;

/// The nodes, their zones, in the wave order the Deployment asks for (`north, east` first,
/// then `west` by name).
const WAVES: [(&str, &str); 3] = [("node-c", "north"), ("node-a", "east"), ("node-b", "west")];

/// Three joined agents, each in its zone.
fn zoned_cluster(dirs: &[tempfile::TempDir; 3]) -> Vec<Agent> {
    let zone = |node: &str| WAVES.iter().find(|(n, _)| *n == node).unwrap().1;
    let a = Agent::start_node(dirs[0].path(), "node-a", &["--zone", zone("node-a")]);
    let t = token(&a);
    let join = |dir: &tempfile::TempDir, name: &str| {
        Agent::start_node(dir.path(), name, &["--zone", zone(name), "--join", &a.cluster, "--token", &t])
    };
    let b = join(&dirs[1], "node-b");
    let c = join(&dirs[2], "node-c");
    let agents = vec![a, b, c];
    wait_for("3 alive nodes seen from every node", Duration::from_secs(20), || {
        agents.iter().all(|x| alive_nodes(x) == 3).then_some(())
    });
    agents
}

/// `web` (6 replicas of `image`, greeting `greeting`) rolled out in zone waves, with `extra`
/// annotations and `strategy` lines under `spec:`, and its Service.
fn web(image: &str, greeting: &str, extra: &str, strategy: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  annotations:\n    wasmfleet.io/rollout-waves: zone\n    wasmfleet.io/rollout-wave-order: \"north, east\"\n{extra}spec:\n  replicas: 6\n{strategy}  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n      - name: web\n        image: {image}\n        env: [{{name: GREETING, value: \"{greeting}\"}}]\n        readinessProbe:\n          httpGet: {{path: /ready, port: 8080}}\n          periodSeconds: 1\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {{app: web}}\n  ports:\n  - port: 80\n"
    )
}

const SURGE_ONE: &str = "  strategy:\n    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}\n";

fn apply(agent: &Agent, name: &str, yaml: &str) {
    let file = agent.data_dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    ok(agent.cli(&["apply", "-f", file.to_str().unwrap()]));
}

/// A node's own replicas of `web` that exist (first-hand): their revisions.
fn local_revisions(url: &str, token: &str, node: &str) -> Option<Vec<String>> {
    let http = ureq::AgentBuilder::new().timeout(Duration::from_secs(5)).build();
    let resp = http.get(&format!("{url}/v1/replicas")).set("Authorization", &format!("Bearer {token}")).call();
    let all: serde_json::Value = resp.ok()?.into_json().ok()?;
    Some(
        all.as_array()?
            .iter()
            .filter(|r| r["node"] == node && r["owner"] == "Deployment/default/web")
            .filter(|r| matches!(r["phase"].as_str(), Some("Running" | "Pending" | "NotReady")))
            .map(|r| r["revision"].as_str().unwrap_or("").to_string())
            .collect(),
    )
}

/// Per node (in `WAVES` order): the first sample that saw a new revision, the last that saw
/// the old one.
type Seen = Vec<(Option<usize>, Option<usize>)>;

/// Samples every node's replicas every 50 ms.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Seen>>,
}

impl Sampler {
    fn start(agents: &[Agent], old: String) -> Sampler {
        let targets: Vec<(String, String, String)> = WAVES
            .iter()
            .map(|(node, _)| {
                let a = &agents[node_index(node)];
                (a.api.clone(), a.token(), node.to_string())
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = vec![(None, None); targets.len()];
            let mut n = 0;
            while !s.load(Ordering::Relaxed) {
                let sample: Vec<Option<Vec<String>>> =
                    targets.iter().map(|(url, token, node)| local_revisions(url, token, node)).collect();
                for (i, revisions) in sample.iter().enumerate() {
                    let Some(revisions) = revisions else { continue };
                    let (first_new, last_old) = &mut seen[i];
                    if revisions.iter().any(|r| *r != old) && first_new.is_none() {
                        *first_new = Some(n);
                    }
                    if revisions.contains(&old) {
                        *last_old = Some(n);
                    }
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            seen
        });
        Sampler { stop, thread: Some(thread) }
    }

    fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

fn node_index(node: &str) -> usize {
    ["node-a", "node-b", "node-c"].iter().position(|n| *n == node).unwrap()
}

/// The one revision every node runs now.
fn only_revision(agents: &[Agent]) -> String {
    let all: BTreeSet<String> = WAVES
        .iter()
        .flat_map(|(node, _)| {
            let a = &agents[node_index(node)];
            local_revisions(&a.api, &a.token(), node).unwrap_or_default()
        })
        .collect();
    assert_eq!(all.len(), 1, "one revision runs: {all:?}");
    all.into_iter().next().unwrap()
}

/// A zoned fleet serving `web` v1 (hello), 2 replicas per zone, all ready.
fn fleet_v1(dirs: &[tempfile::TempDir; 3], extra: &str, strategy: &str) -> Vec<Agent> {
    let agents = zoned_cluster(dirs);
    ok(agents[0].cli(&["push", "hello:1.0", module_path("hello").to_str().unwrap()]));
    apply(&agents[0], "v1", &web("hello:1.0", "v1", extra, strategy));
    let (done, out) = rollout_status(&agents[0], "60s");
    assert!(done, "{out}");
    for (node, zone) in WAVES {
        let a = &agents[node_index(node)];
        wait_for(&format!("2 replicas in zone {zone}"), Duration::from_secs(20), || {
            (local_revisions(&a.api, &a.token(), node)?.len() == 2).then_some(())
        });
    }
    agents
}

fn rollout_status(agent: &Agent, timeout: &str) -> (bool, String) {
    let out = agent.cli(&["rollout", "status", "deployment/web", "--timeout", timeout]);
    (out.status.success(), format!("{}{}", stdout(&out), stderr(&out)))
}

#[test]
fn a_rolling_update_finishes_each_zone_before_the_next() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let agents = fleet_v1(&dirs, "", SURGE_ONE);
    let old = only_revision(&agents);
    let describe = ok(agents[1].cli(&["describe", "deployment", "web"]));
    assert!(describe.contains("by node label zone") && describe.contains("north"), "{describe}");
    let loads: Vec<Load> = agents.iter().map(|a| Load::start(&a.gateway, "web")).collect();
    for l in &loads {
        l.wait_more(10);
    }
    let sampler = Sampler::start(&agents, old.clone());
    apply(&agents[0], "v2", &web("hello:1.0", "v2", "", SURGE_ONE));
    let (done, out) = rollout_status(&agents[2], "120s");
    assert!(done, "{out}");
    wait_for("every node to run only v2", Duration::from_secs(20), || {
        WAVES
            .iter()
            .all(|(node, _)| {
                let a = &agents[node_index(node)];
                local_revisions(&a.api, &a.token(), node).is_some_and(|r| r.len() == 2 && !r.contains(&old))
            })
            .then_some(())
    });
    let seen = sampler.finish();
    eprintln!("waves seen (first new, last old) per zone: {seen:?}");
    for l in &loads {
        l.wait_more(10);
    }
    for l in loads {
        let (_, failed) = l.finish();
        assert!(failed.is_empty(), "failed requests during the waves: {failed:?}");
    }
    // Zone by zone: a zone's first new replica comes after the zone before ran its last old one.
    for k in 1..WAVES.len() {
        let (_, last_old_before) = seen[k - 1];
        let (first_new, _) = seen[k];
        let (Some(last_old_before), Some(first_new)) = (last_old_before, first_new) else {
            panic!("the sampler missed a wave: {seen:?}");
        };
        assert!(
            first_new > last_old_before,
            "zone {} started (sample {first_new}) before zone {} finished (sample {last_old_before}): {seen:?}",
            WAVES[k].1,
            WAVES[k - 1].1
        );
    }
}

#[test]
fn a_version_that_never_gets_ready_stays_in_the_first_zone() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let strategy = "  progressDeadlineSeconds: 4\n  strategy:\n    rollingUpdate: {maxSurge: 3, maxUnavailable: 0}\n";
    let agents = fleet_v1(&dirs, "", strategy);
    let old = only_revision(&agents);
    ok(agents[0].cli(&["push", "hostile:1.0", module_path("hostile").to_str().unwrap()]));
    let load = Load::start(&agents[1].gateway, "web");
    load.wait_more(20);
    let sampler = Sampler::start(&agents, old);
    // `hostile` traps on the probe's path: its replicas never get ready. A surge of 3 would
    // reach a second zone without the waves.
    let bad = web("hostile:1.0", "v2", "", strategy).replace("path: /ready", "path: /trap");
    apply(&agents[0], "bad", &bad);
    let (done, out) = rollout_status(&agents[2], "60s");
    assert!(!done, "a rollout that cannot progress succeeded:\n{out}");
    assert!(out.contains("exceeded its progress deadline"), "{out}");
    let seen = sampler.finish();
    assert!(seen[0].0.is_some(), "the first zone tried the new version: {seen:?}");
    assert_eq!((seen[1].0, seen[2].0), (None, None), "the other zones never ran it: {seen:?}");
    load.wait_more(20);
    let (_, failed) = load.finish();
    assert!(failed.is_empty(), "the old replicas kept serving: {failed:?}");
}

#[test]
fn a_failed_analysis_between_waves_halts_the_rollout() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let extra = "    wasmfleet.io/rollout-wave-analysis: success-rate\n";
    let agents = fleet_v1(&dirs, extra, SURGE_ONE);
    let analysis = "apiVersion: argoproj.io/v1alpha1\nkind: AnalysisTemplate\nmetadata:\n  name: success-rate\nspec:\n  metrics:\n  - name: success\n    interval: 1s\n    count: 3\n    successCondition: \"successRate >= 0.95\"\n    provider:\n      wasmfleet: {minRequests: 5}\n";
    apply(&agents[0], "analysis", analysis);
    let old = only_revision(&agents);
    ok(agents[0].cli(&["push", "hostile:1.0", module_path("hostile").to_str().unwrap()]));
    // `/trap` is an ordinary path for hello; `hostile` traps on it (a 500).
    let loads: Vec<Load> = agents.iter().map(|a| Load::start_path(&a.gateway, "web", "/trap")).collect();
    let sampler = Sampler::start(&agents, old);
    apply(&agents[0], "bad", &web("hostile:1.0", "v2", extra, SURGE_ONE));
    let (done, out) = rollout_status(&agents[1], "90s");
    assert!(!done, "{out}");
    assert!(out.contains("halted before wave 2 of 3"), "{out}");
    let seen = sampler.finish();
    for l in loads {
        l.finish();
    }
    assert!(seen[0].0.is_some(), "the first zone ran the new version: {seen:?}");
    assert_eq!((seen[1].0, seen[2].0), (None, None), "the next zones never ran it: {seen:?}");
    let describe = ok(agents[0].cli(&["describe", "deployment", "web"]));
    assert!(describe.contains("Degraded") && describe.contains("success-rate/success failed"), "{describe}");
}

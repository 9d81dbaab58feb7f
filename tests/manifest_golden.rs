//! Golden tests for the manifest layer.
//!
//! - `tests/manifests/valid/*.yaml` and `examples/*.yaml` must parse; every object must survive
//!   `to_yaml` → `parse_str` and `to_json` → `from_json` unchanged.
//! - `tests/manifests/invalid/*.yaml` must fail with exactly the error lines in the sibling
//!   `*.err` (one `ManifestError` display per line, in the order returned).
//!   Run with `UPDATE_GOLDEN=1` to rewrite the `.err` files, then review the diff.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use wasmfleet::manifest::{Kind, Object, RestartPolicy, ServiceType, Step, StrategyKind, parse_str};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn parse_file(p: &Path) -> Result<Vec<Object>, Vec<wasmfleet::manifest::ManifestError>> {
    let text = fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
    parse_str(&file_name(p), &text)
}

fn parse_ok(p: &Path) -> Vec<Object> {
    parse_file(p).unwrap_or_else(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        panic!("{} should parse, got:\n{}", p.display(), lines.join("\n"))
    })
}

#[test]
fn valid_manifests_parse_and_round_trip() {
    let mut files = yaml_files(&root().join("tests/manifests/valid"));
    files.extend(yaml_files(&root().join("examples")));
    assert!(files.len() >= 9, "expected the valid cases and the examples, found {files:?}");
    for p in files {
        let objects = parse_ok(&p);
        assert!(!objects.is_empty(), "{}", p.display());
        for o in objects {
            let yaml = o.to_yaml();
            let back = parse_str("round-trip", &yaml).unwrap_or_else(|errors| {
                let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
                panic!("{}: {} does not re-parse:\n{}\n---\n{yaml}", p.display(), o.key(), lines.join("\n"))
            });
            assert_eq!(back, vec![o.clone()], "{}: {} changed through to_yaml:\n{yaml}", p.display(), o.key());

            let json = o.to_json();
            assert_eq!(json["apiVersion"], o.kind().api_version());
            assert_eq!(json["kind"], o.kind().as_str());
            assert_eq!(Object::from_json(o.kind(), json).as_ref(), Ok(&o), "{}: JSON round trip", p.display());

            if let Some(t) = o.pod_template() {
                let w = t.workload();
                assert!(!w.image.is_empty(), "{}: {}", p.display(), o.key());
            }
        }
    }
}

#[test]
fn invalid_manifests_match_golden_errors() {
    let dir = root().join("tests/manifests/invalid");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let files = yaml_files(&dir);
    assert!(files.len() >= 16, "expected the invalid cases, found {}", files.len());
    let mut failures = Vec::new();
    for p in &files {
        let errors = match parse_file(p) {
            Ok(objects) => {
                failures.push(format!("{} parsed into {} objects but should fail", p.display(), objects.len()));
                continue;
            }
            Err(errors) => errors,
        };
        let got: String = errors.iter().map(|e| format!("{e}\n")).collect();
        let golden = p.with_extension("err");
        if update {
            fs::write(&golden, &got).unwrap();
            continue;
        }
        let want = fs::read_to_string(&golden).unwrap_or_default();
        if got != want {
            failures.push(format!("{}:\n--- expected\n{want}+++ got\n{got}", p.display()));
        }
    }
    // Every golden file belongs to a case.
    for entry in fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|x| x == "err") && !p.with_extension("yaml").exists() {
            failures.push(format!("{} has no .yaml", p.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden mismatches (UPDATE_GOLDEN=1 rewrites):\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn hello_example_means_what_it_says() {
    let objects = parse_ok(&root().join("examples/hello.yaml"));
    assert_eq!(objects.len(), 2);
    let Object::Deployment(d) = &objects[0] else { panic!("first object is not a Deployment") };
    assert_eq!(objects[0].key().to_string(), "Deployment/default/hello");
    assert_eq!(d.spec.replicas(), 3);
    let w = d.spec.template.workload();
    assert_eq!(w.image, "hello:1.0");
    assert_eq!(w.container_port, Some(8080));
    assert_eq!(w.memory_bytes, Some(32 << 20));
    assert_eq!(w.cpu_millis, Some(100));
    assert_eq!(w.restart_policy, RestartPolicy::Always);
    assert!(w.env.iter().any(|(k, _)| k == "GREETING"));
    assert_eq!(w.labels.get("app").map(String::as_str), Some("hello"));

    let Object::Service(s) = &objects[1] else { panic!("second object is not a Service") };
    assert_eq!(s.spec.service_type(), ServiceType::LoadBalancer);
    assert_eq!(s.spec.ports[0].port, 80);
    assert!(wasmfleet::manifest::selector_matches(&s.spec.selector, &w.labels));
}

#[test]
fn other_examples_map_onto_the_runtime() {
    let ds = parse_ok(&root().join("examples/sensor-daemonset.yaml"));
    assert_eq!(ds[0].kind(), Kind::DaemonSet);
    let w = ds[0].pod_template().unwrap().workload();
    assert_eq!(w.image, "sensor:1.0");
    assert_eq!(w.env, vec![("SENSOR_INTERVAL_MS".to_owned(), "1000".to_owned())]);
    assert_eq!(w.volumes.len(), 1);
    assert_eq!(w.volumes[0].host_path, None);
    assert_eq!(w.volumes[0].guest_path, "/data");

    let job = parse_ok(&root().join("examples/job.yaml"));
    let Object::Job(j) = &job[0] else { panic!("not a Job") };
    assert_eq!((j.spec.completions(), j.spec.parallelism()), (3, 1));
    let w = j.spec.template.workload();
    assert_eq!(w.args, ["exit", "0"]);
    assert_eq!(w.restart_policy, RestartPolicy::OnFailure);

    let echo = parse_ok(&root().join("examples/echo.yaml"));
    let w = echo[0].pod_template().unwrap().workload();
    let probe = w.readiness.expect("echo has a readiness probe");
    assert_eq!(probe.path, "/healthz");
    assert_eq!(probe.initial_delay, Duration::from_secs(1));
    assert_eq!(probe.period, Duration::from_secs(5));
    assert_eq!((probe.timeout, probe.success_threshold, probe.failure_threshold), (Duration::from_secs(1), 1, 3));
    assert_eq!(w.request_timeout, Some(Duration::from_secs(10)));
    assert_eq!(w.max_concurrency, Some(32));
}

#[test]
fn annotations_and_host_paths_reach_the_workload() {
    let objects = parse_ok(&root().join("tests/manifests/valid/daemonset-hostpath.yaml"));
    let w = objects[0].pod_template().unwrap().workload();
    assert_eq!(w.allowed_outbound_hosts, ["historian.plant.internal:8086"]);
    assert_eq!(w.max_concurrency, Some(8));
    assert_eq!(w.node_selector.get("zone").map(String::as_str), Some("line-1"));
    assert_eq!(w.volumes[0].host_path.as_deref(), Some(Path::new("/etc/modbus-bridge")));
    assert!(w.volumes[0].read_only);
    assert_eq!(w.volumes[1].host_path, None);
    assert_eq!(objects[0].namespace(), "plant");

    let frontend = parse_ok(&root().join("tests/manifests/valid/k8s-deployment-service.yaml"));
    let w = frontend[0].pod_template().unwrap().workload();
    assert_eq!(w.allowed_outbound_hosts, ["api.example.com", "*.internal"]);
    assert_eq!(w.memory_bytes, Some(128 << 20), "memory comes from limits before requests");
    assert_eq!(w.cpu_millis, Some(1000));
    assert_eq!(w.env[2], ("EMPTY".to_owned(), String::new()));
}

#[test]
fn rollouts_mean_what_they_say() {
    let objects = parse_ok(&root().join("tests/manifests/valid/rollout-canary.yaml"));
    let Object::Rollout(r) = &objects[0] else { panic!("first object is not a Rollout") };
    assert_eq!(objects[0].key().to_string(), "Rollout/default/web");
    assert_eq!(r.spec.replicas(), 4);
    let w = objects[0].pod_template().expect("a Rollout has a pod template").workload();
    assert_eq!((w.image.as_str(), w.restart_policy), ("web:2.0", RestartPolicy::Always));
    let Some(StrategyKind::Canary(c)) = r.spec.strategy.kind() else { panic!("not a canary") };
    assert_eq!((c.canary_service.as_deref(), c.stable_service.as_deref()), (Some("web-canary"), Some("web-stable")));
    let steps: Vec<Step> = c.steps.iter().map(|s| s.kind().expect("a validated step")).collect();
    let secs = |s| Step::Pause(Some(Duration::from_secs(s)));
    assert_eq!(
        steps,
        [
            Step::SetWeight(10),
            secs(30),
            Step::SetWeight(25),
            secs(60),
            Step::Analysis(vec!["success-rate".into(), "latency".into()]),
            Step::SetWeight(50),
            secs(300),
            Step::SetWeight(50),
            Step::Pause(None),
            Step::SetWeight(100),
        ]
    );
    let background = c.analysis.as_ref().expect("background analysis");
    assert_eq!((background.template_names(), background.starting_step()), (vec!["success-rate".to_owned()], 1));

    let objects = parse_ok(&root().join("tests/manifests/valid/rollout-bluegreen.yaml"));
    let Object::Rollout(r) = &objects[0] else { panic!("not a Rollout") };
    let Some(StrategyKind::BlueGreen(b)) = r.spec.strategy.kind() else { panic!("not blue-green") };
    assert_eq!((b.active_service.as_str(), b.preview_service.as_deref()), ("shop", Some("shop-preview")));
    assert!(!b.auto_promotion_enabled());
    assert_eq!(b.auto_promotion_after(), Some(Duration::from_secs(30)));
    assert_eq!(b.scale_down_delay(), Duration::from_secs(60));
    assert_eq!(b.preview_replicas(r.spec.replicas()), 1);
    let Object::Rollout(r) = &objects[1] else { panic!("not a Rollout") };
    let Some(StrategyKind::BlueGreen(b)) = r.spec.strategy.kind() else { panic!("not blue-green") };
    assert!(b.auto_promotion_enabled());
    assert_eq!((b.scale_down_delay(), b.preview_replicas(r.spec.replicas())), (Duration::from_secs(30), 1));
}

#[test]
fn analysis_templates_mean_what_they_say() {
    let objects = parse_ok(&root().join("tests/manifests/valid/analysistemplate.yaml"));
    assert_eq!(objects[0].kind(), Kind::AnalysisTemplate);
    assert!(objects[0].pod_template().is_none());
    let Object::AnalysisTemplate(t) = &objects[0] else { panic!("not an AnalysisTemplate") };
    let m = &t.spec.metrics[0];
    assert_eq!((m.interval(), m.count(), m.failure_limit(), m.inconclusive_limit()), (Duration::from_secs(5), 3, 0, 1));
    assert_eq!(m.min_requests(), 20);
    let success = m.success_condition().unwrap().expect("a success condition");
    let failure = m.failure_condition().unwrap().expect("a failure condition");
    let figures = |name: &str| match name {
        "successRate" => Some(0.995),
        "errorRate" => Some(0.005),
        "p99Ms" => Some(180.0),
        _ => None,
    };
    assert_eq!((success.eval(&figures), failure.eval(&figures)), (Some(true), Some(false)));
    let m = &t.spec.metrics[1];
    assert_eq!((m.interval(), m.count(), m.min_requests()), (Duration::from_secs(10), 1, 10));
    assert_eq!(m.success_condition().unwrap().map(|c| c.to_string()).as_deref(), Some("rps >= 1 || requests > 100"));
    assert_eq!(m.failure_condition(), Ok(None));
}

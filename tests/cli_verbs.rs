//! The CLI's side of the rollout routes, against a stand-in for the API in this process: the
//! requests `rollout` and `set image` send (path, JSON body), how their answers and errors are
//! read, and how `rollout status` polls, finishes and times out.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser as _;
use serde_json::{Value, json};
use wasmfleet::cli::{Cli, run};
use wasmfleet::control::api::ObjectView;
use wasmfleet::control::client::Client;
use wasmfleet::control::verbs::{ImageUpdate, RolloutAction, RolloutAnswer};
use wasmfleet::manifest::{Kind, ObjectKey};
use wasmfleet::reconcile::{ObjectStatus, RolloutView};
use wasmfleet_scheduler::rollout::{Condition, ConditionStatus, ConditionType, Counts, REASON_TIMED_OUT};

/// A request as the stand-in saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    body: Value,
}

/// An answer: status, extra headers, JSON body.
type Answer = (u16, Vec<(&'static str, String)>, Value);

/// Answers each request with `respond(request, how many came before)`, one connection each.
struct StandIn {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl StandIn {
    fn start(respond: impl Fn(&Seen, usize) -> Answer + Send + 'static) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut head = String::new();
                reader.read_line(&mut head).unwrap();
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if line.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let mut words = head.split_whitespace();
                let request = Seen {
                    method: words.next().unwrap_or_default().to_string(),
                    path: words.next().unwrap_or_default().to_string(),
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                };
                let n = {
                    let mut log = log.lock().unwrap();
                    log.push(request.clone());
                    log.len() - 1
                };
                let (status, headers, body) = respond(&request, n);
                let body = body.to_string();
                let mut answer = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    answer.push_str(&format!("{k}: {v}\r\n"));
                }
                answer.push_str("\r\n");
                answer.push_str(&body);
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        StandIn { url, seen }
    }

    fn client(&self) -> Client {
        Client::new(&self.url, "token")
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Runs `wasmfleet ARGS` against the stand-in, in this process.
    fn cli(&self, args: &[&str]) -> anyhow::Result<i32> {
        let argv = [&["wasmfleet", "--server", &self.url, "--token", "t"][..], args].concat();
        run(Cli::try_parse_from(argv).unwrap())
    }
}

fn view(rollout: Option<RolloutView>) -> ObjectView {
    ObjectView {
        key: ObjectKey::new(Kind::Deployment, "default", "web"),
        object: json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}}),
        resolved: BTreeMap::new(),
        generation: 2,
        version: "1".into(),
        created_ms: 0,
        status: ObjectStatus { desired: 3, rollout, ..ObjectStatus::default() },
    }
}

/// A rollout of 3 replicas at generation 2, observed at `observed`, with `updated` and
/// `available` of them.
fn rollout(observed: u64, updated: u32, available: u32) -> RolloutView {
    RolloutView {
        generation: 2,
        observed_generation: observed,
        replicas: 3,
        counts: Counts { replicas: 3, updated, ready: available, available, unavailable: 3 - available },
        ..RolloutView::default()
    }
}

fn ok(v: impl serde::Serialize) -> Answer {
    (200, vec![], serde_json::to_value(v).unwrap())
}

#[test]
fn rollout_verbs_post_their_action_and_read_the_answer() {
    let api = StandIn::start(|_, _| {
        let answer = RolloutAnswer { object: view(None), message: "deployment.apps/web rolled back".into() };
        let mut a = ok(answer);
        a.0 = 202;
        a.1 = vec![("x-wasmfleet-copies", "1".into()), ("x-wasmfleet-copies-wanted", "2".into())];
        a
    });
    let written = api.client().rollout("default", "web", &RolloutAction::undo(Some(2))).unwrap();
    assert_eq!(written.body.message, "deployment.apps/web rolled back");
    let d = written.durability.unwrap();
    assert_eq!((d.copies, d.wanted), (1, 2));
    let seen = api.seen();
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("POST", "/v1/rollout/default/web"));
    assert_eq!(seen[0].body, json!({"action": "undo", "toRevision": 2}));

    // Through the command line: the short quorum fails only with --wait-durable.
    assert_eq!(api.cli(&["rollout", "pause", "deployment/web"]).unwrap(), 0);
    assert_eq!(api.cli(&["rollout", "restart", "web", "--wait-durable"]).unwrap(), 1);
    assert_eq!(api.cli(&["rollout", "undo", "deploy", "web", "--to-revision=0"]).unwrap(), 0);
    let bodies: Vec<Value> = api.seen()[1..].iter().map(|s| s.body.clone()).collect();
    assert_eq!(bodies, [json!({"action": "pause"}), json!({"action": "restart"}), json!({"action": "undo"})]);
}

#[test]
fn set_image_posts_the_pairs() {
    let api = StandIn::start(|_, _| {
        ok(RolloutAnswer { object: view(None), message: "deployment.apps/web image updated".into() })
    });
    let update = ImageUpdate { images: [("web".to_string(), "web:2".to_string())].into() };
    api.client().set_image("default", "web", &update).unwrap();
    assert_eq!(api.cli(&["set", "image", "deployment/web", "web=web:3", "*=side:1"]).unwrap(), 0);
    let seen = api.seen();
    assert_eq!(seen[1].path, "/v1/image/default/web");
    assert_eq!(seen[0].body, json!({"images": {"web": "web:2"}}));
    assert_eq!(seen[1].body, json!({"images": {"web": "web:3", "*": "side:1"}}));
}

#[test]
fn the_servers_refusal_is_the_error() {
    let api = StandIn::start(|_, _| {
        (
            400,
            vec![],
            json!({"error": "you cannot rollback a paused deployment; resume it first with 'wasmfleet rollout resume deployment/web' and try again"}),
        )
    });
    let err = api.cli(&["rollout", "undo", "deployment/web"]).unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "you cannot rollback a paused deployment; resume it first with 'wasmfleet rollout resume deployment/web' and try again"
    );
}

#[test]
fn status_polls_until_the_rollout_is_done() {
    let steps = [None, Some(rollout(1, 3, 3)), Some(rollout(2, 1, 1)), Some(rollout(2, 1, 1)), Some(rollout(2, 3, 3))];
    let api = StandIn::start(move |_, n| ok(view(steps[n.min(steps.len() - 1)].clone())));
    assert_eq!(api.cli(&["rollout", "status", "deployment/web", "--timeout", "10s"]).unwrap(), 0);
    let seen = api.seen();
    assert_eq!(seen.len(), 5);
    assert!(seen.iter().all(|s| s.method == "GET" && s.path == "/v1/objects/deployments/default/web"));
}

#[test]
fn status_without_watch_looks_once() {
    let api = StandIn::start(|_, _| ok(view(Some(rollout(2, 1, 1)))));
    assert_eq!(api.cli(&["rollout", "status", "web", "--watch=false"]).unwrap(), 0);
    assert_eq!(api.seen().len(), 1);
}

#[test]
fn status_fails_past_the_deadline_and_on_timeout() {
    let mut stuck = rollout(2, 1, 1);
    stuck.conditions.push(Condition {
        type_: ConditionType::Progressing,
        status: ConditionStatus::False,
        reason: REASON_TIMED_OUT.into(),
        message: String::new(),
        last_update_ms: 0,
        last_transition_ms: 0,
    });
    let api = StandIn::start(move |_, _| ok(view(Some(stuck.clone()))));
    let err = api.cli(&["rollout", "status", "deployment/web"]).unwrap_err();
    assert_eq!(err.to_string(), "deployment \"web\" exceeded its progress deadline");

    let api = StandIn::start(|_, _| ok(view(Some(rollout(2, 1, 1)))));
    let started = Instant::now();
    let err = api.cli(&["rollout", "status", "deployment/web", "--timeout", "500ms"]).unwrap_err();
    assert_eq!(err.to_string(), "timed out waiting for the condition");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(api.seen().len() >= 2);
}

#[test]
fn history_of_an_unknown_revision_is_an_error() {
    let api = StandIn::start(|_, _| ok(view(Some(rollout(2, 3, 3)))));
    assert_eq!(api.cli(&["rollout", "history", "deployment/web"]).unwrap(), 0);
    let err = api.cli(&["rollout", "history", "deployment/web", "--revision", "7"]).unwrap_err();
    assert_eq!(err.to_string(), "unable to find the specified revision");
}

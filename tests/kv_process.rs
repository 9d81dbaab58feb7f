//! wasi:keyvalue buckets kept by the cluster, across real agent processes on 127.0.0.1 (port
//! 0): components on three nodes increment one counter while a node is killed, and the history
//! is checked for linearizability; the operator's `kv` commands see what components wrote; bad
//! keys and values are refused with clear errors.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// The `kv` component, 3 replicas, and its Service.
const KV: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: kv\nspec:\n  replicas: 3\n  selector:\n    matchLabels: {app: kv}\n  template:\n    metadata:\n      labels: {app: kv}\n    spec:\n      containers:\n      - name: kv\n        image: kv:1.0\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: kv\nspec:\n  selector: {app: kv}\n  ports:\n  - port: 80\n";

fn deploy(agent: &Agent) {
    ok(agent.cli(&["push", "kv:1.0", module_path("kv").to_str().unwrap()]));
    let file = agent.data_dir.join("kv.yaml");
    std::fs::write(&file, KV).unwrap();
    ok(agent.cli(&["apply", "-f", file.to_str().unwrap()]));
}

fn request(method: &str, url: &str) -> Result<(u16, String), String> {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
    match agent.request(method, url).set("Host", "kv").call() {
        Ok(r) => Ok((r.status(), r.into_string().unwrap_or_default())),
        Err(ureq::Error::Status(code, r)) => Ok((code, r.into_string().unwrap_or_default())),
        Err(e) => Err(e.to_string()),
    }
}

/// One increment as a client saw it.
#[derive(Clone, Debug)]
struct Op {
    start: Instant,
    end: Instant,
    /// The counter after it, if acknowledged.
    value: Option<u64>,
}

/// Checks a history of unit increments of one counter, starting at 0, whose final value is
/// `last`: it is linearizable iff the acknowledged values are distinct, within 1..=last, and
/// ordered as real time orders the operations (an operation that ended before another began
/// returned a smaller value); unacknowledged ones may or may not have taken effect, so the
/// final value lies between the acknowledged count and the count of all operations.
fn check_counter(history: &[Op], last: u64) -> Result<(), String> {
    let acked: Vec<&Op> = history.iter().filter(|o| o.value.is_some()).collect();
    let mut values: Vec<u64> = acked.iter().filter_map(|o| o.value).collect();
    values.sort_unstable();
    if let Some(w) = values.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("two acknowledged increments returned {}: one was applied twice or lost", w[0]));
    }
    if let Some(v) = values.iter().find(|v| **v == 0 || **v > last) {
        return Err(format!("an increment returned {v}, outside 1..={last}"));
    }
    if (last as usize) < acked.len() || last as usize > history.len() {
        return Err(format!(
            "final value {last}: {} increments were acknowledged, {} attempted",
            acked.len(),
            history.len()
        ));
    }
    // Real-time order: sort by end; any op starting after an earlier op's end must be larger.
    let mut by_end = acked.clone();
    by_end.sort_by_key(|o| o.end);
    let mut by_start = acked.clone();
    by_start.sort_by_key(|o| o.start);
    let mut max_ended: Option<(Instant, u64)> = None;
    let mut ended = by_end.iter().peekable();
    for op in by_start {
        while let Some(e) = ended.peek() {
            if e.end < op.start {
                let v = e.value.unwrap_or(0);
                max_ended = Some(match max_ended {
                    Some((t, m)) if m >= v => (t, m),
                    _ => (e.end, v),
                });
                ended.next();
            } else {
                break;
            }
        }
        if let Some((_, m)) = max_ended
            && op.value.unwrap_or(0) <= m
        {
            return Err(format!(
                "an increment that began after one returning {m} had ended returned {}",
                op.value.unwrap_or(0)
            ));
        }
    }
    Ok(())
}

#[test]
fn the_checker_finds_lost_doubled_and_reordered_increments() {
    let t = Instant::now();
    let at = |s: u64, e: u64, v: Option<u64>| Op {
        start: t + Duration::from_millis(s),
        end: t + Duration::from_millis(e),
        value: v,
    };
    let good = [at(0, 10, Some(1)), at(5, 20, Some(3)), at(6, 15, Some(2)), at(30, 40, None)];
    assert_eq!(check_counter(&good, 3), Ok(()));
    assert_eq!(check_counter(&good, 4), Ok(()), "the unacknowledged one may have happened");
    assert!(check_counter(&good, 2).is_err(), "a lost acknowledged increment");
    assert!(check_counter(&[at(0, 10, Some(1)), at(20, 30, Some(1))], 2).unwrap_err().contains("twice"));
    assert!(check_counter(&[at(0, 10, Some(2)), at(20, 30, Some(1))], 2).unwrap_err().contains("began after"));
}

#[test]
fn increments_from_three_nodes_stay_linearizable_while_a_node_is_killed() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut agents = cluster(&dirs);
    deploy(&agents[0]);
    for a in &agents {
        wait_for("the kv Service answers", Duration::from_secs(30), || {
            request("POST", &format!("{}/incr?key=warm", a.gateway)).ok().filter(|(s, _)| *s == 200)
        });
    }
    let history: Arc<Mutex<Vec<Op>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = agents
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let (history, stop, url) = (history.clone(), stop.clone(), format!("{}/incr?key=counter", a.gateway));
            std::thread::spawn(move || {
                let mut failures_in_a_row = 0;
                while !stop.load(Ordering::Relaxed) && failures_in_a_row < 50 {
                    let start = Instant::now();
                    // POST: the gateway never retries it, so a client sees every attempt.
                    let answer = request("POST", &url);
                    let value = match &answer {
                        Ok((200, body)) => body.trim().parse::<u64>().ok(),
                        _ => None,
                    };
                    failures_in_a_row = if value.is_some() { 0 } else { failures_in_a_row + 1 };
                    if value.is_none() && i == 2 {
                        // The killed node's own client: its gateway is gone.
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    history.lock().unwrap().push(Op { start, end: Instant::now(), value });
                }
            })
        })
        .collect();
    let acked = |h: &Arc<Mutex<Vec<Op>>>| h.lock().unwrap().iter().filter(|o| o.value.is_some()).count();
    wait_for("200 increments", Duration::from_secs(30), || (acked(&history) >= 200).then_some(()));
    agents[2].kill9();
    let before = acked(&history);
    wait_for("300 more increments after the kill", Duration::from_secs(60), || {
        (acked(&history) >= before + 300).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let history = history.lock().unwrap().clone();
    let last: u64 = wait_for("the counter read from a survivor", Duration::from_secs(10), || {
        stdout(&agents[0].cli(&["kv", "get", "default", "counter"])).trim().parse().ok()
    });
    let failed = history.iter().filter(|o| o.value.is_none()).count();
    eprintln!(
        "kv: {} increments acknowledged, {failed} failed or cut off by the kill, final value {last}",
        history.len() - failed
    );
    check_counter(&history, last).unwrap();
    // The other survivor reads the same value.
    assert_eq!(stdout(&agents[1].cli(&["kv", "get", "default", "counter"])).trim(), last.to_string());
}

#[test]
fn operators_read_what_components_wrote_and_bad_keys_and_values_are_refused() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let agents = cluster(&dirs);
    deploy(&agents[0]);
    let gw = |i: usize, path: &str| format!("{}{path}", agents[i].gateway);
    wait_for("the kv Service answers", Duration::from_secs(30), || {
        request("GET", &gw(0, "/set?key=greeting&value=hello")).ok().filter(|(s, _)| *s == 200)
    });
    // Written through one node, read through every other and by the operator. A read on an
    // owner is local: the third copy follows the two that acknowledged within one transfer.
    for (i, agent) in agents.iter().enumerate() {
        let got = wait_for("the value through every node's replica", Duration::from_secs(30), || {
            request("GET", &gw(i, "/get?key=greeting")).ok().filter(|(s, _)| *s == 200)
        });
        assert_eq!(got, (200, "hello".into()));
        assert_eq!(stdout(&agent.cli(&["kv", "get", "default", "greeting"])).trim(), "hello");
    }
    ok(agents[1].cli(&["kv", "set", "default", "color", "blue"]));
    let got = wait_for("the value seen everywhere", Duration::from_secs(5), || {
        request("GET", &gw(2, "/get?key=color")).ok().filter(|(s, _)| *s == 200)
    });
    assert_eq!(got, (200, "blue".into()));
    let keys = ok(agents[2].cli(&["kv", "ls", "default"]));
    assert_eq!(keys.lines().collect::<Vec<_>>(), ["color", "greeting"]);
    ok(agents[0].cli(&["kv", "del", "default", "color"]));
    // A read on an owner is local: the third copy follows the two that acknowledged within
    // one transfer.
    wait_for("the delete seen everywhere", Duration::from_secs(5), || {
        (request("GET", &gw(1, "/get?key=color")).unwrap().0 == 404).then_some(())
    });
    assert_eq!(ok(agents[1].cli(&["kv", "ls", "default"])).trim(), "greeting");
    // An application whose buckets are its own does not see the namespace's, nor they its.
    let own = KV
        .replace("name: kv\n", "name: own\n")
        .replace("{app: kv}", "{app: own}")
        .replace(
            "      labels: {app: own}\n",
            "      labels: {app: own}\n      annotations: {wasmfleet.io/keyvalue-scope: application}\n",
        )
        .replace("replicas: 3", "replicas: 1");
    let file = agents[0].data_dir.join("own.yaml");
    std::fs::write(&file, own).unwrap();
    ok(agents[0].cli(&["apply", "-f", file.to_str().unwrap()]));
    let own_get = |path: &str| {
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
        match agent.get(&gw(0, path)).set("Host", "own").call() {
            Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        }
    };
    let got = wait_for("the application's Service", Duration::from_secs(30), || {
        // The component's own answers: a value, or 404 `no value` (not the gateway's 404/503).
        Some(own_get("/get?key=greeting")).filter(|(s, b)| *s == 200 || b == "no value")
    });
    assert_eq!(got, (404, "no value".into()), "the namespace's key is not the application's");
    assert_eq!(own_get("/set?key=greeting&value=mine"), (200, "ok".into()));
    assert_eq!(ok(agents[1].cli(&["kv", "get", "default", "greeting", "--app", "own"])).trim(), "mine");
    assert_eq!(ok(agents[1].cli(&["kv", "get", "default", "greeting"])).trim(), "hello");
    // Other namespaces do not see the bucket.
    let out = agents[0].cli(&["kv", "get", "default", "greeting", "-n", "other"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    // A key of 1 KiB and a value of 2 MiB: clear errors, nothing stored.
    let (status, body) = request("GET", &gw(0, "/set?keylen=1024&value=x")).unwrap();
    assert_eq!((status, body.as_str()), (500, "key of 1024 bytes is over the limit of 256"));
    let (status, body) = request("GET", &gw(0, "/set?key=big&valuelen=2097152")).unwrap();
    assert_eq!(status, 500);
    assert!(body.contains("over the limit of 1048576"), "{body}");
    let long = "k".repeat(1024);
    let out = agents[0].cli(&["kv", "set", "default", &long, "x"]);
    assert!(stderr(&out).contains("key of 1024 bytes is over the limit of 256"), "{}", stderr(&out));
    assert_eq!(ok(agents[1].cli(&["kv", "ls", "default"])).trim(), "greeting");
}

#[test]
fn concurrent_compare_and_swap_appends_from_three_nodes_lose_nothing() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let agents = cluster(&dirs);
    deploy(&agents[0]);
    for a in &agents {
        wait_for("the kv Service answers", Duration::from_secs(30), || {
            request("GET", &format!("{}/incr2?key=warm", a.gateway)).ok().filter(|(s, _)| *s == 200)
        });
    }
    // Each client appends its own letters; every acknowledged append must be in the text once.
    let clients: Vec<_> = agents
        .iter()
        .zip(['x', 'y', 'z'])
        .map(|(a, letter)| {
            let url = format!("{}/append?key=log&add={letter}", a.gateway);
            std::thread::spawn(move || {
                let mut acked = 0;
                let mut retried = 0;
                for _ in 0..30 {
                    if let Ok((200, body)) = request("GET", &url) {
                        acked += 1;
                        let attempts: u32 =
                            body.rsplit("attempts=").next().and_then(|n| n.trim().parse().ok()).unwrap_or(1);
                        retried += attempts - 1;
                    }
                }
                (letter, acked, retried)
            })
        })
        .collect();
    let results: Vec<(char, usize, u32)> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let text = ok(agents[1].cli(&["kv", "get", "default", "log"])).trim().to_string();
    let conflicts: u32 = results.iter().map(|r| r.2).sum();
    eprintln!("cas appends: {results:?}; {conflicts} swaps retried after a conflict; text {} bytes", text.len());
    for (letter, acked, _) in &results {
        assert_eq!(text.matches(*letter).count(), *acked, "appends of {letter:?} lost or doubled in {text:?}");
    }
}

//! A fleet of agents for multi-node tests: three joined agents, and steady traffic through a
//! gateway that counts every failed request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::*;

pub fn token(agent: &Agent) -> String {
    ok(agent.cli(&["token", "create", "--ttl", "1h"])).trim().to_string()
}

/// Three joined agents named node-a, node-b, node-c.
pub fn cluster(dirs: &[tempfile::TempDir; 3]) -> Vec<Agent> {
    let a = Agent::start_node(dirs[0].path(), "node-a", &[]);
    let t = token(&a);
    let b = Agent::start_node(dirs[1].path(), "node-b", &["--join", &a.cluster, "--token", &t]);
    let c = Agent::start_node(dirs[2].path(), "node-c", &["--join", &a.cluster, "--token", &t]);
    let agents = vec![a, b, c];
    wait_for("3 alive nodes seen from every node", Duration::from_secs(20), || {
        agents.iter().all(|x| alive_nodes(x) == 3).then_some(())
    });
    agents
}

pub fn alive_nodes(agent: &Agent) -> usize {
    stdout(&agent.cli(&["get", "nodes"])).lines().filter(|l| l.contains(" Alive ")).count()
}

/// GETs `host` through `gateway` back to back until stopped; counts answers by status.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(gateway: &str, host: &str) -> Load {
        Self::start_path(gateway, host, "/")
    }

    /// GETs `path` instead of `/`.
    pub fn start_path(gateway: &str, host: &str, path: &str) -> Load {
        let (stop, okc, failed) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::default());
        let (s, o, f): (Arc<AtomicBool>, Arc<AtomicU64>, Arc<std::sync::Mutex<Vec<String>>>) =
            (stop.clone(), okc.clone(), Arc::clone(&failed));
        let (url, host) = (format!("{gateway}{path}"), host.to_string());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match http_get(&url, &host) {
                    Ok((200, _, _)) => {
                        o.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((status, body, _)) => f.lock().unwrap().push(format!("{status}: {body}")),
                    Err(e) => f.lock().unwrap().push(e),
                }
            }
        });
        Load { stop, ok: okc, failed, thread: Some(thread) }
    }

    /// Requests that failed so far.
    pub fn failed_count(&self) -> usize {
        self.failed.lock().unwrap().len()
    }

    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Waits until `n` more requests succeeded.
    pub fn wait_more(&self, n: u64) {
        let target = self.ok() + n;
        wait_for("requests to go through", Duration::from_secs(20), || (self.ok() >= target).then_some(()));
    }

    pub fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        (self.ok(), self.failed.lock().unwrap().clone())
    }
}

//! Helpers for tests that run the real `wasmfleet` binary: agents on 127.0.0.1 port 0, killed
//! on drop (started by `wasmfleet::launch`); the CLI; bounded waits.

#![allow(dead_code, reason = "each test binary uses a different subset of the helpers")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use wasmfleet::launch::{AgentProcess, BANNER_TIMEOUT, agent_command};

mod fleet;
#[allow(unused_imports, reason = "each test binary uses a different subset of the helpers")]
pub use fleet::*;

pub const BIN: &str = env!("CARGO_BIN_EXE_wasmfleet");

pub fn module_path(name: &str) -> PathBuf {
    PathBuf::from(format!("{}/{name}.wasm", env!("WASMFLEET_MODULES_DIR")))
}

pub fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples").join(name)
}

/// A running agent process (killed on drop).
pub struct Agent {
    pub process: AgentProcess,
    pub api: String,
    pub gateway: String,
    pub cluster: String,
    pub data_dir: PathBuf,
}

impl Agent {
    pub fn start(data_dir: &Path) -> Agent {
        Self::start_with(data_dir, &[])
    }

    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Agent {
        Self::start_limited(data_dir, extra, None)
    }

    /// Starts the agent under `ulimit -v <address_space_kib>` when given.
    pub fn start_limited(data_dir: &Path, extra: &[&str], address_space_kib: Option<u64>) -> Agent {
        let mut args = vec!["--node-name", "test-node"];
        args.extend_from_slice(extra);
        Self::spawn(data_dir, &args, address_space_kib)
    }

    /// Starts a named node with extra arguments (e.g. `--join ADDR --join-token T`).
    pub fn start_node(data_dir: &Path, name: &str, extra: &[&str]) -> Agent {
        let mut args = vec!["--node-name", name];
        args.extend_from_slice(extra);
        Self::spawn(data_dir, &args, None)
    }

    fn spawn(data_dir: &Path, extra: &[&str], address_space_kib: Option<u64>) -> Agent {
        let mut agent = agent_command(BIN, data_dir, "127.0.0.1:0");
        agent.args(extra);
        let mut cmd = match address_space_kib {
            Some(kib) => {
                let mut c = Command::new("sh");
                c.arg("-c").arg(format!("ulimit -v {kib} && exec \"$0\" \"$@\"")).arg(BIN).args(agent.get_args());
                c
            }
            None => agent,
        };
        cmd.env("WASMFLEET_LOG", "warn").stderr(Stdio::inherit());
        let process =
            AgentProcess::spawn(cmd, BANNER_TIMEOUT).unwrap_or_else(|e| panic!("agent in {}: {e}", data_dir.display()));
        let l = process.listeners.clone();
        Agent { process, api: l.api, gateway: l.gateway, cluster: l.cluster, data_dir: data_dir.to_path_buf() }
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        self.process.kill();
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        cli(&self.data_dir, args)
    }

    /// GET through the gateway with a Host header: (status, body, replica header).
    pub fn get(&self, host: &str, path: &str) -> Result<(u16, String, String), String> {
        http_get(&format!("{}{path}", self.gateway), host)
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("token")).unwrap().trim().to_string()
    }
}

pub fn cli(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("WASMFLEET_DATA_DIR", data_dir)
        .env_remove("WASMFLEET_SERVER")
        .env_remove("WASMFLEET_TOKEN")
        .output()
        .expect("run cli")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
pub fn ok(o: Output) -> String {
    assert!(o.status.success(), "command failed ({}):\nstdout: {}\nstderr: {}", o.status, stdout(&o), stderr(&o));
    stdout(&o)
}

pub fn http_get(url: &str, host: &str) -> Result<(u16, String, String), String> {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
    let resp = match agent.get(url).set("Host", host).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(e.to_string()),
    };
    let status = resp.status();
    let replica = resp.header("x-wasmfleet-replica").unwrap_or("").to_string();
    Ok((status, resp.into_string().unwrap_or_default(), replica))
}

/// Polls `f` until it returns Some, or panics after `timeout`.
#[track_caller]
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

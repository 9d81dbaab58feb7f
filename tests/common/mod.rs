//! Helpers for tests that run the real `wasmfleet` binary: agents on 127.0.0.1 port 0, killed
//! on drop; the CLI; bounded waits.

#![allow(dead_code, reason = "each test binary uses a different subset of the helpers")]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_wasmfleet");

pub fn module_path(name: &str) -> PathBuf {
    PathBuf::from(format!("{}/{name}.wasm", env!("WASMFLEET_MODULES_DIR")))
}

pub fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples").join(name)
}

/// A running agent process.
pub struct Agent {
    pub child: Child,
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
        let mut cmd = match address_space_kib {
            Some(kib) => {
                let mut c = Command::new("sh");
                c.arg("-c").arg(format!("ulimit -v {kib} && exec \"$0\" \"$@\"")).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let mut child = cmd
            .args([
                "agent",
                "--listen-api",
                "127.0.0.1:0",
                "--listen-gateway",
                "127.0.0.1:0",
                "--listen-cluster",
                "127.0.0.1:0",
            ])
            .args(extra)
            .arg("--data-dir")
            .arg(data_dir)
            .env("WASMFLEET_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn agent");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining after the listeners were read, so the agent never writes into a
            // closed pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut api, mut gateway, mut cluster) = (None, None, None);
        let deadline = Instant::now() + Duration::from_secs(60);
        while api.is_none() || gateway.is_none() || cluster.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line =
                rx.recv_timeout(left).unwrap_or_else(|_| panic!("agent did not print its listeners within 60 s"));
            if let Some(a) = line.strip_prefix("api listening on ") {
                api = Some(a.to_string());
            }
            if let Some(g) = line.strip_prefix("gateway listening on ") {
                gateway = Some(g.to_string());
            }
            if let Some(c) = line.strip_prefix("cluster listening on ") {
                cluster = Some(c.to_string());
            }
        }
        Agent {
            child,
            api: api.unwrap(),
            gateway: gateway.unwrap(),
            cluster: cluster.unwrap(),
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
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

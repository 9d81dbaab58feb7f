//! Starting `wasmfleet agent` as a child process and reading the addresses it listens on
//! from the lines it prints (`api listening on http://…`, `gateway listening on http://…`,
//! `cluster listening on …`): the one way the demo, the tests and the benches run real agents.
//!
//! Ports are the OS's choice (`127.0.0.1:0`), read back from the banner; a child is SIGKILLed
//! when its [`AgentProcess`] is dropped. This module uses std alone and no other module of the
//! node, so anything may use it.

use std::ffi::OsStr;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long an agent may take to print its listeners (a debug build on a loaded machine).
pub const BANNER_TIMEOUT: Duration = Duration::from_secs(60);

/// The addresses an agent listens on, as it printed them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listeners {
    /// The control API's URL (`http://127.0.0.1:PORT`).
    pub api: String,
    /// The gateway's URL (`http://127.0.0.1:PORT`).
    pub gateway: String,
    /// The cluster (QUIC) address, `IP:PORT`: what another node `--join`s.
    pub cluster: String,
}

impl Listeners {
    /// Takes what `line` says; answers whether every listener is known now.
    pub fn read_line(&mut self, line: &str) -> bool {
        for (prefix, slot) in [
            ("api listening on ", &mut self.api),
            ("gateway listening on ", &mut self.gateway),
            ("cluster listening on ", &mut self.cluster),
        ] {
            if let Some(v) = line.strip_prefix(prefix) {
                *slot = v.trim().to_string();
            }
        }
        self.missing().is_none()
    }

    /// The first listener not printed yet.
    pub fn missing(&self) -> Option<&'static str> {
        [("api", &self.api), ("gateway", &self.gateway), ("cluster", &self.cluster)]
            .into_iter()
            .find(|(_, v)| v.is_empty())
            .map(|(name, _)| name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("starting {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the agent exited ({status}) before printing its {missing} listener")]
    Exited { status: ExitStatus, missing: &'static str },
    #[error("the agent printed no {missing} listener within {timeout:?}")]
    Timeout { missing: &'static str, timeout: Duration },
}

/// `BIN agent --data-dir DIR --listen-api 127.0.0.1:0 --listen-gateway GATEWAY
/// --listen-cluster 127.0.0.1:0`: an agent on loopback with the ports chosen by the OS
/// (`gateway` is usually `127.0.0.1:0` too). Add further flags to the command.
pub fn agent_command(bin: impl AsRef<OsStr>, data_dir: &Path, gateway: &str) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("agent").arg("--data-dir").arg(data_dir);
    cmd.args(["--listen-api", "127.0.0.1:0", "--listen-gateway", gateway, "--listen-cluster", "127.0.0.1:0"]);
    cmd
}

/// A running agent child; SIGKILLed (and reaped) on drop.
#[derive(Debug)]
pub struct AgentProcess {
    child: Child,
    pub listeners: Listeners,
}

impl AgentProcess {
    /// Spawns `cmd` (an `agent` command line, maybe behind a wrapper that execs it, such as
    /// `ip netns exec` or `sh -c 'ulimit …; exec …'`) with stdout piped and stdin closed, and
    /// waits up to `timeout` for its listeners. Its stdout is drained for as long as it runs,
    /// so it never blocks on (or dies of) a full or closed pipe; stderr is the caller's choice.
    /// On failure the child is killed.
    pub fn spawn(mut cmd: Command, timeout: Duration) -> Result<AgentProcess, LaunchError> {
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).spawn().map_err(|source| {
            LaunchError::Spawn { program: cmd.get_program().to_string_lossy().into_owned(), source }
        })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (line_tx, line_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // Once the listeners are read nobody listens: keep reading all the same.
                let _ = line_tx.send(line);
            }
        });
        let mut listeners = Listeners::default();
        let deadline = Instant::now() + timeout;
        let mut process = AgentProcess { child, listeners: Listeners::default() };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match line_rx.recv_timeout(left) {
                Ok(line) => {
                    if listeners.read_line(&line) {
                        process.listeners = listeners;
                        return Ok(process);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Stdout closed: the agent is gone (or closed it, which it never does).
                    let missing = listeners.missing().unwrap_or("api");
                    let exited = process.wait_exit(Duration::from_secs(5));
                    return Err(match exited {
                        Some(status) => LaunchError::Exited { status, missing },
                        None => LaunchError::Timeout { missing, timeout },
                    });
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let missing = listeners.missing().unwrap_or("api");
                    return Err(match process.child.try_wait() {
                        Ok(Some(status)) => LaunchError::Exited { status, missing },
                        _ => LaunchError::Timeout { missing, timeout },
                    });
                }
            }
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited, and how.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, no chance to clean up; reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM (the agent leaves the cluster gracefully), then SIGKILL if it has not exited
    /// within `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if self.try_wait().is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            self.wait_exit(grace);
        }
        self.kill();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_are_read_from_the_banner() {
        let mut l = Listeners::default();
        assert_eq!(l.missing(), Some("api"));
        assert!(!l.read_line("api listening on http://127.0.0.1:41233"));
        assert!(!l.read_line("some other line"));
        assert!(!l.read_line("gateway listening on http://0.0.0.0:38111"));
        assert_eq!(l.missing(), Some("cluster"));
        assert!(l.read_line("cluster listening on 127.0.0.1:7946"));
        assert!(l.read_line("gossip listening on 127.0.0.1:7947"));
        assert_eq!(
            l,
            Listeners {
                api: "http://127.0.0.1:41233".into(),
                gateway: "http://0.0.0.0:38111".into(),
                cluster: "127.0.0.1:7946".into()
            }
        );
    }

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        c
    }

    #[test]
    fn a_child_that_prints_its_listeners_is_running_and_killed_on_drop() {
        let script = "echo 'api listening on http://127.0.0.1:1'; echo 'gateway listening on http://127.0.0.1:2'; \
                      echo 'cluster listening on 127.0.0.1:3'; i=0; while :; do echo more $i; i=$((i+1)); sleep 0.01; done";
        let mut p = AgentProcess::spawn(sh(script), Duration::from_secs(10)).unwrap();
        assert_eq!(p.listeners.cluster, "127.0.0.1:3");
        assert!(p.try_wait().is_none(), "still running, although nobody reads its later lines");
        let pid = p.id();
        drop(p);
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "killed and reaped on drop");
    }

    #[test]
    fn a_child_that_exits_early_is_an_error_with_its_status() {
        let err =
            AgentProcess::spawn(sh("echo 'api listening on http://127.0.0.1:1'; exit 3"), Duration::from_secs(10))
                .unwrap_err();
        assert!(
            matches!(&err, LaunchError::Exited { status, missing: "gateway" } if status.code() == Some(3)),
            "{err}"
        );
    }

    #[test]
    fn a_silent_child_times_out_and_is_killed() {
        let err = AgentProcess::spawn(sh("exec sleep 30"), Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, LaunchError::Timeout { missing: "api", .. }), "{err}");
        let err = AgentProcess::spawn(Command::new("/nonexistent/wasmfleet"), Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().starts_with("starting /nonexistent/wasmfleet: "), "{err}");
    }

    #[test]
    fn stop_terminates_gracefully() {
        let script = "trap 'exit 0' TERM; echo 'api listening on a'; echo 'gateway listening on b'; \
                      echo 'cluster listening on c'; while :; do sleep 0.01; done";
        let mut p = AgentProcess::spawn(sh(script), Duration::from_secs(10)).unwrap();
        let t = Instant::now();
        p.stop(Duration::from_secs(10));
        assert!(t.elapsed() < Duration::from_secs(5), "SIGTERM was not enough: {:?}", t.elapsed());
    }
}

//! Supervised commands: restart policies with exponential back-off and crash-loop detection.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::WorkloadSpec;
use crate::command::{ExitStatus, Stdio};
use crate::engine::Runtime;
use crate::logs::{LogBuffer, LogStream};
use crate::module::Module;

/// When a finished command is started again (Kubernetes' `restartPolicy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

/// Restart back-off: doubles from `initial` up to `max`; resets after a run of `reset_after`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(10),
        }
    }
}

/// Lifecycle phase of a workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Phase {
    Pending,
    Running,
    /// Exited with 0 and will not restart.
    Succeeded,
    /// Exited with an error and will not restart (policy Never, or back-off limit reached).
    Failed,
    /// Waiting to restart after repeated quick failures.
    CrashLoopBackOff,
    Stopped,
}

/// Status of a supervised command.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorkloadStatus {
    pub phase: Phase,
    pub restarts: u32,
    /// Failed runs so far.
    pub failures: u32,
    pub last_exit: Option<ExitStatus>,
    /// Wall time of the current (or last) start, ms since the Unix epoch.
    pub started_at_ms: Option<u64>,
    /// Delay before the next restart, when waiting.
    pub next_restart_in_ms: Option<u64>,
}

impl WorkloadStatus {
    fn new() -> Self {
        WorkloadStatus {
            phase: Phase::Pending,
            restarts: 0,
            failures: 0,
            last_exit: None,
            started_at_ms: None,
            next_restart_in_ms: None,
        }
    }
}

/// Handle to a supervised command; `stop()` ends it.
pub struct CommandHandle {
    status_rx: watch::Receiver<WorkloadStatus>,
    stop_tx: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for CommandHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandHandle").field("status", &*self.status_rx.borrow()).finish()
    }
}

impl CommandHandle {
    pub fn status(&self) -> WorkloadStatus {
        self.status_rx.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn watch(&self) -> watch::Receiver<WorkloadStatus> {
        self.status_rx.clone()
    }

    /// Stops the command (within one epoch tick) and waits for the supervisor to end.
    pub async fn stop(self) {
        let _ = self.stop_tx.send(true);
        let _ = self.task.await;
    }

    /// Whether the supervisor has finished (the command will not run again).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Runtime {
    /// Starts `module` under a restart policy. `max_failures` ends it as `Failed` after that
    /// many failed runs (a Job's `backoffLimit + 1`).
    pub fn spawn_command(
        self: &Arc<Self>,
        module: Module,
        spec: WorkloadSpec,
        policy: RestartPolicy,
        backoff: Backoff,
        max_failures: Option<u32>,
        logs: Arc<LogBuffer>,
    ) -> CommandHandle {
        let (status_tx, status_rx) = watch::channel(WorkloadStatus::new());
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let rt = self.clone();
        let task = tokio::spawn(async move {
            let mut delay = backoff.initial;
            loop {
                status_tx.send_modify(|s| {
                    s.phase = Phase::Running;
                    s.started_at_ms = Some(now_ms());
                    s.next_restart_in_ms = None;
                });
                let run = rt.run_command(&module, &spec, Stdio::Logs(logs.clone()));
                let outcome = tokio::select! {
                    o = run => o,
                    _ = stop_rx.wait_for(|s| *s) => {
                        status_tx.send_modify(|s| s.phase = Phase::Stopped);
                        return;
                    }
                };
                logs.push(
                    LogStream::System,
                    format!("{} ended after {:?}: {}", spec.name, outcome.duration, outcome.status),
                );
                let ok = outcome.status.success();
                if outcome.duration >= backoff.reset_after {
                    delay = backoff.initial;
                }
                let failures = status_tx.borrow().failures + u32::from(!ok);
                let mut restart = match policy {
                    RestartPolicy::Always => true,
                    RestartPolicy::OnFailure => !ok,
                    RestartPolicy::Never => false,
                };
                if max_failures.is_some_and(|m| failures >= m) {
                    restart = false;
                }
                if !restart {
                    status_tx.send_modify(|s| {
                        s.failures = failures;
                        s.last_exit = Some(outcome.status.clone());
                        s.phase = if ok { Phase::Succeeded } else { Phase::Failed };
                    });
                    return;
                }
                let quick = outcome.duration < backoff.reset_after;
                status_tx.send_modify(|s| {
                    s.failures = failures;
                    s.last_exit = Some(outcome.status.clone());
                    s.phase = if quick && (s.restarts >= 1 || !ok) { Phase::CrashLoopBackOff } else { Phase::Pending };
                    s.next_restart_in_ms = Some(delay.as_millis() as u64);
                });
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop_rx.wait_for(|s| *s) => {
                        status_tx.send_modify(|s| s.phase = Phase::Stopped);
                        return;
                    }
                }
                status_tx.send_modify(|s| s.restarts += 1);
                delay = (delay * 2).min(backoff.max);
            }
        });
        CommandHandle { status_rx, stop_tx, task }
    }
}

//! Running a command (a `wasi:cli/command` component or a wasip1 module) once.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use wasmtime::Store;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};
use wasmtime_wasi_http::WasiHttpCtx;

use crate::WorkloadSpec;
use crate::engine::Runtime;
use crate::host::{HostState, MemLimiter, OutboundPolicy, P1State};
use crate::logs::{LogBuffer, LogSink, LogStream};
use crate::module::{Module, ModuleKind, Pre};

/// Where a command's stdio goes.
#[derive(Clone, Debug)]
pub enum Stdio {
    /// The host process's stdin, stdout and stderr (like `wasmtime run`).
    Inherit,
    /// Captured into a log buffer; stdin is empty.
    Logs(Arc<LogBuffer>),
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "detail")]
pub enum ExitStatus {
    /// The program exited with this code (0: success).
    Code(i32),
    /// The guest trapped (panic, unreachable, out-of-bounds...).
    Trap(String),
    /// The guest hit its memory limit.
    OutOfMemory(String),
    /// The run could not start (bad grant, wrong module kind...).
    Failed(String),
}

impl ExitStatus {
    pub fn success(&self) -> bool {
        matches!(self, ExitStatus::Code(0))
    }

    /// A process-style exit code: the code itself, 1 for failures of other kinds.
    pub fn code(&self) -> i32 {
        match self {
            ExitStatus::Code(c) => *c,
            _ => 1,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Trap(e) => write!(f, "trap: {}", e.lines().next().unwrap_or_default()),
            ExitStatus::OutOfMemory(e) => write!(f, "{e}"),
            ExitStatus::Failed(e) => write!(f, "failed to start: {e}"),
        }
    }
}

/// Emits trailing partial lines when a run ends, however it ends.
struct FinishSinks(Vec<LogSink>);

impl Drop for FinishSinks {
    fn drop(&mut self) {
        for s in &self.0 {
            s.finish();
        }
    }
}

/// The result of one run.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    pub status: ExitStatus,
    pub duration: Duration,
}

impl Runtime {
    /// Runs a command module to completion. Drop the future to stop it: guests yield to the
    /// host every epoch tick, so cancellation takes effect within one tick.
    pub async fn run_command(&self, module: &Module, spec: &WorkloadSpec, stdio: Stdio) -> RunOutcome {
        let start = Instant::now();
        let status = match self.run_inner(module, spec, stdio).await {
            Ok(s) => s,
            Err(s) => s,
        };
        RunOutcome { status, duration: start.elapsed() }
    }

    async fn run_inner(&self, module: &Module, spec: &WorkloadSpec, stdio: Stdio) -> Result<ExitStatus, ExitStatus> {
        if spec.limits.memory_bytes > self.sizing.instance_memory_bytes && self.sizing.instance_memory_bytes > 0 {
            // Commands are pooled too: the pool slot bounds their memory.
            return Err(ExitStatus::Failed(format!(
                "memory limit {} MiB is above this node's per-instance maximum of {} MiB",
                spec.limits.memory_bytes >> 20,
                self.sizing.instance_memory_bytes >> 20
            )));
        }
        // A pool slot for the whole run; waits (cancellably) when the node is full.
        let _slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ExitStatus::Failed("the runtime is shutting down".into()))?;
        let mut wasi = WasiCtxBuilder::new();
        let program = spec.name.rsplit('/').next().unwrap_or("main").to_string();
        wasi.arg(&program).args(&spec.args).envs(&spec.env);
        for dir in &spec.dirs {
            let perms = if dir.read_only { FsPerms::ReadOnly } else { FsPerms::ReadWrite };
            wasi.preopened_dir(&dir.host_path, &dir.guest_path, perms).map_err(|e| {
                ExitStatus::Failed(format!("cannot grant {} as {}: {e:#}", dir.host_path.display(), dir.guest_path))
            })?;
        }
        let mut sinks = Vec::new();
        match &stdio {
            Stdio::Inherit => {
                wasi.inherit_stdio();
            }
            Stdio::Logs(buf) => {
                let (out, err) =
                    (LogSink::new(buf.clone(), LogStream::Stdout), LogSink::new(buf.clone(), LogStream::Stderr));
                wasi.stdout(out.clone()).stderr(err.clone());
                sinks.extend([out, err]);
            }
        }
        let _flush = FinishSinks(sinks);
        let mut limiter = MemLimiter::new(spec.limits.memory_bytes);
        limiter.gauge.clone_from(&spec.usage);
        let cpu = spec.usage.as_deref().map(|u| &u.cpu_ns);
        // The run's memory is gone when it ends, however it ends.
        let _gone = Gone(spec.usage.clone());
        let classify = |e: wasmtime::Error, oom: bool| -> ExitStatus {
            if let Some(exit) = e.downcast_ref::<I32Exit>() {
                ExitStatus::Code(exit.0)
            } else if oom {
                ExitStatus::OutOfMemory(format!("{e:#}"))
            } else {
                ExitStatus::Trap(format!("{e:#}"))
            }
        };
        match &module.pre {
            Pre::Command(pre) => {
                let state = HostState {
                    wasi: wasi.build(),
                    http: WasiHttpCtx::new(),
                    table: wasmtime::component::ResourceTable::new(),
                    hooks: OutboundPolicy {
                        allowed: spec.allowed_outbound_hosts.clone().into(),
                        router: spec.service_router.clone(),
                    },
                    limiter,
                    kv: spec.keyvalue.clone(),
                };
                let mut store = Store::new(&self.engine, state);
                store.limiter(|s| &mut s.limiter);
                store.epoch_deadline_async_yield_and_update(1);
                let result = crate::timing::timed_live(
                    async {
                        let cmd = pre.instantiate_async(&mut store).await?;
                        cmd.wasi_cli_run().call_run(&mut store).await
                    },
                    cpu,
                )
                .await;
                let oom = store.data().limiter.exceeded;
                Ok(match result {
                    Ok(Ok(())) => ExitStatus::Code(0),
                    Ok(Err(())) => ExitStatus::Code(1),
                    Err(e) => classify(e, oom),
                })
            }
            Pre::Core(pre) => {
                let state = P1State { wasi: wasi.build_p1(), limiter };
                let mut store = Store::new(&self.engine, state);
                store.limiter(|s| &mut s.limiter);
                store.epoch_deadline_async_yield_and_update(1);
                let result = crate::timing::timed_live(
                    async {
                        let instance = pre.instantiate_async(&mut store).await?;
                        let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
                        start.call_async(&mut store, ()).await
                    },
                    cpu,
                )
                .await;
                let oom = store.data().limiter.exceeded;
                Ok(match result {
                    Ok(()) => ExitStatus::Code(0),
                    Err(e) => classify(e, oom),
                })
            }
            Pre::Proxy(_) => Err(ExitStatus::Failed(format!(
                "{} is a {}, not a command: serve it (a Deployment with a Service, or `wasmfleet serve`)",
                spec.name,
                ModuleKind::HttpProxy.describe()
            ))),
        }
    }
}

/// Sets a run's published memory to 0 when the run ends.
struct Gone(Option<std::sync::Arc<crate::Usage>>);

impl Drop for Gone {
    fn drop(&mut self) {
        if let Some(u) = &self.0 {
            u.memory_bytes.store(0, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

//! Replicas on this node: starting one from its slot spec (HTTP service or supervised
//! command), what it reports, and stopping it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;
use wasmfleet_runtime::{
    Backoff, CommandHandle, Digest, HttpService, Limits, LogStream, ModuleKind, Phase, RestartPolicy as RtRestart,
    ServiceStats, WorkloadSpec,
};

use super::desired::{Incoming, Local, SlotSpec};
use super::{Inner, ReplicaKey, ReplicaStatus};
use crate::clock::now_ms;
use crate::manifest::{Kind, RestartPolicy};
use crate::peering::ReplicaPhase;

/// How a replica runs.
pub(super) enum Runner {
    Http { service: HttpService, ready: Arc<AtomicBool>, probe: Option<JoinHandle<()>> },
    Command(CommandHandle),
}

/// One replica running on this node.
pub(super) struct Replica {
    pub key: ReplicaKey,
    pub revision: String,
    pub digest: Digest,
    pub runner: Runner,
    pub started_ms: u64,
    /// Wall time (ms) it became ready, 0 while it is not: kept by [`Replica::ready_ms`].
    ready_ms: AtomicU64,
    pub labels: BTreeMap<String, String>,
    /// A command's guest time and memory, as its runs account them.
    usage: Option<Arc<wasmfleet_runtime::Usage>>,
}

/// How a finished command replica ended (Jobs record it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finished {
    pub index: u32,
    pub succeeded: bool,
    /// Failed runs, retries included.
    pub failures: u32,
}

impl Replica {
    pub fn ready(&self) -> bool {
        match &self.runner {
            Runner::Http { ready, .. } => ready.load(Ordering::Relaxed),
            Runner::Command(h) => h.status().phase == Phase::Running,
        }
    }

    /// Since when (wall ms) the replica has been ready, as first seen by a pass; 0 while it
    /// is not. `minReadySeconds` counts from here.
    pub fn ready_ms(&self) -> u64 {
        if !self.ready() {
            self.ready_ms.store(0, Ordering::Relaxed);
            return 0;
        }
        match self.ready_ms.load(Ordering::Relaxed) {
            0 => {
                let now = now_ms();
                self.ready_ms.store(now, Ordering::Relaxed);
                now
            }
            since => since,
        }
    }

    pub fn phase(&self) -> ReplicaPhase {
        match &self.runner {
            Runner::Http { ready, .. } if ready.load(Ordering::Relaxed) => ReplicaPhase::Running,
            Runner::Http { .. } => ReplicaPhase::NotReady,
            Runner::Command(h) => ReplicaPhase::of_command(h.status().phase),
        }
    }

    /// A command that ran to its end (succeeded, or failed for good).
    pub fn finished(&self) -> Option<Finished> {
        let Runner::Command(h) = &self.runner else { return None };
        let st = h.status();
        matches!(st.phase, Phase::Succeeded | Phase::Failed).then_some(Finished {
            index: self.key.index,
            succeeded: st.phase == Phase::Succeeded,
            failures: st.failures,
        })
    }

    /// What the desired step needs to know of a serving replica.
    pub fn local(&self) -> Local {
        let running = matches!(&self.runner, Runner::Command(h) if h.status().phase == Phase::Running);
        Local { revision: self.revision.clone(), ready: self.ready(), running }
    }

    /// The same, for a new revision waiting beside the serving one since `since`.
    pub fn incoming(&self, since: Duration) -> Incoming {
        Incoming { revision: self.revision.clone(), ready: self.ready(), since }
    }

    pub async fn stop(self) {
        match self.runner {
            Runner::Http { ready, probe, .. } => {
                ready.store(false, Ordering::Relaxed);
                if let Some(p) = probe {
                    p.abort();
                }
            }
            Runner::Command(h) => h.stop().await,
        }
    }

    /// The replica as the API reports it.
    pub fn status(&self, node: &str) -> ReplicaStatus {
        let (kind, restarts, message, stats) = match &self.runner {
            Runner::Http { service, .. } => ("http", 0, None, Some(service.stats())),
            Runner::Command(h) => {
                let s = h.status();
                let stats = self.usage.as_ref().map(|u| ServiceStats {
                    cpu_ns: u.cpu_ns.load(Ordering::Relaxed),
                    memory_bytes: u.memory_bytes.load(Ordering::Relaxed),
                    ..ServiceStats::default()
                });
                ("command", s.restarts, s.last_exit.map(|e| format!("last run: {e}")), stats)
            }
        };
        ReplicaStatus {
            name: self.key.name(),
            owner: self.key.owner.to_string(),
            namespace: self.key.owner.namespace.clone(),
            node: node.to_string(),
            revision: self.revision.clone(),
            module: self.digest.to_string(),
            kind: kind.to_string(),
            phase: self.phase(),
            ready: self.ready(),
            restarts,
            started_ms: self.started_ms,
            ready_ms: self.ready_ms(),
            message,
            stats,
        }
    }
}

/// The replicas of this node: those serving their slot, and new revisions waiting beside them
/// (with when they started, as time since the agent started).
#[derive(Default)]
pub(super) struct Running {
    pub serving: BTreeMap<ReplicaKey, Replica>,
    pub incoming: BTreeMap<ReplicaKey, (Replica, Duration)>,
}

impl Running {
    pub fn locals(&self) -> BTreeMap<ReplicaKey, Local> {
        self.serving.iter().map(|(k, r)| (k.clone(), r.local())).collect()
    }

    pub fn incomings(&self) -> BTreeMap<ReplicaKey, Incoming> {
        self.incoming.iter().map(|(k, (r, since))| (k.clone(), r.incoming(*since))).collect()
    }

    pub async fn stop_all(&mut self) {
        for (_, r) in std::mem::take(&mut self.serving) {
            r.stop().await;
        }
        for (_, (r, _)) in std::mem::take(&mut self.incoming) {
            r.stop().await;
        }
    }
}

impl Inner {
    /// Starts the replica of slot `key`.
    pub(super) async fn start(&self, key: &ReplicaKey, slot: &SlotSpec) -> Result<Replica, String> {
        let w = &slot.template;
        let digest = slot.digest;
        let module = self.modules.get(digest).await.map_err(|e| format!("image {} ({digest:?}): {e}", w.image))?;
        let name = key.name();
        let logs = self.logs.buffer(key);
        let mut spec = self.workload_spec(key, slot)?;
        let mut usage = None;
        let runner = match module.kind() {
            ModuleKind::HttpProxy => {
                if key.owner.kind == Kind::Job {
                    return Err(format!("image {} is a {}; a Job needs a command", w.image, module.kind().describe()));
                }
                let service =
                    HttpService::new(self.runtime.clone(), &module, spec, logs.clone()).map_err(|e| e.to_string())?;
                let ready = Arc::new(AtomicBool::new(w.readiness.is_none()));
                let probe = w.readiness.clone().map(|p| {
                    super::probe::spawn_probe(service.clone(), ready.clone(), p, logs.clone(), self.kick.clone())
                });
                Runner::Http { service, ready, probe }
            }
            _ => {
                let accounted = Arc::new(wasmfleet_runtime::Usage::default());
                spec.usage = Some(accounted.clone());
                usage = Some(accounted);
                let policy = match w.restart_policy {
                    RestartPolicy::Always => RtRestart::Always,
                    RestartPolicy::OnFailure => RtRestart::OnFailure,
                    RestartPolicy::Never => RtRestart::Never,
                };
                let handle = self.runtime.spawn_command(
                    module.clone(),
                    spec,
                    policy,
                    Backoff::default(),
                    slot.max_failures,
                    logs.clone(),
                );
                if key.owner.kind == Kind::Job {
                    // Record Job progress as soon as the command ends.
                    let mut rx = handle.watch();
                    let kick = self.kick.clone();
                    tokio::spawn(async move {
                        let _ = rx.wait_for(|s| matches!(s.phase, Phase::Succeeded | Phase::Failed)).await;
                        kick.notify_one();
                    });
                }
                Runner::Command(handle)
            }
        };
        logs.push(
            LogStream::System,
            format!("{name} started on {} (revision {}, module {digest})", self.node, slot.revision),
        );
        Ok(Replica {
            key: key.clone(),
            revision: slot.revision.clone(),
            digest,
            runner,
            started_ms: now_ms(),
            ready_ms: AtomicU64::new(0),
            labels: w.labels.clone(),
            usage,
        })
    }

    /// The runtime's view of a replica: args, env (with the replica's identity), limits,
    /// outbound routing and volumes.
    fn workload_spec(&self, key: &ReplicaKey, slot: &SlotSpec) -> Result<WorkloadSpec, String> {
        let w = &slot.template;
        let name = key.name();
        let mut spec = WorkloadSpec::new(format!("{}/{}", key.owner.namespace, name));
        spec.args = w.args.clone();
        spec.env = w.env.clone();
        for (k, v) in [
            ("WASMFLEET_REPLICA", name.clone()),
            ("WASMFLEET_NODE", self.node.clone()),
            ("WASMFLEET_NAMESPACE", key.owner.namespace.clone()),
            ("HOSTNAME", name.clone()),
        ] {
            if !spec.env.iter().any(|(n, _)| n == k) {
                spec.env.push((k.to_string(), v));
            }
        }
        spec.allowed_outbound_hosts = w.allowed_outbound_hosts.clone();
        spec.service_router = Some(wasmfleet_runtime::OutboundRouter {
            router: Arc::new(crate::dataplane::gateway::ServiceCalls { routes: self.routes.clone() }),
            namespace: key.owner.namespace.as_str().into(),
        });
        let mut limits = Limits::default();
        if let Some(m) = w.memory_bytes {
            limits.memory_bytes = m;
        }
        limits.memory_bytes = limits.memory_bytes.min(self.runtime.sizing().instance_memory_bytes);
        if let Some(t) = w.request_timeout {
            limits.request_timeout = t;
        }
        if let Some(c) = w.max_concurrency {
            limits.max_concurrency = c;
        }
        spec.limits = limits;
        // wasi:keyvalue buckets, kept by the cluster: the namespace's, or the application's.
        let prefix = match w.keyvalue_per_application {
            true => format!("{}/{}/", key.owner.namespace, key.owner.name),
            false => format!("{}/", key.owner.namespace),
        };
        spec.keyvalue =
            Some(wasmfleet_runtime::keyvalue::KvGrant { backend: self.peering.kv(), prefix: prefix.into() });
        for v in &w.volumes {
            spec.dirs.push(self.volumes.preopen(&key.owner.namespace, &name, v, &slot.claims)?);
        }
        Ok(spec)
    }
}

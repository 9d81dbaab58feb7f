//! Starting a node: data dir, token, store, runtime, reconciler, API and gateway.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use wasmfleet_runtime::{Runtime, RuntimeConfig};

use crate::control::api::{Api, router};
use crate::dataplane::forward::{ForwardServer, Forwarder};
use crate::dataplane::gateway::{Binding, Routes, spawn_listener};
use crate::peering::{ClusterOptions, NodeInfo, Peering};
use crate::reconcile::{NodeCapacity, Reconciler};
use crate::state::{Store, write_private};

/// Settings of an agent.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub data_dir: PathBuf,
    pub listen_api: SocketAddr,
    pub listen_gateway: SocketAddr,
    pub node_name: String,
    pub runtime: RuntimeConfig,
    /// Memory offered to workloads (MiB) for placement; default: the runtime budget.
    pub capacity_memory_mib: Option<u64>,
    pub labels: std::collections::BTreeMap<String, String>,
    /// Cluster membership, mesh and replication.
    pub cluster: ClusterOptions,
    /// Data-plane lanes (threads serving gateway traffic and forwarded requests); 0 serves
    /// them on the main runtime. Default: one per core. See [`crate::dataplane`].
    pub lanes: usize,
    /// UDP port of the first lane's endpoint (the others follow); default: any free ports.
    pub lane_ports: Option<u16>,
    /// How often an autoscaler without its own sync period is evaluated.
    pub hpa_sync_period: std::time::Duration,
}

impl AgentConfig {
    /// Defaults for a data dir: API on 127.0.0.1:7070, gateway on 0.0.0.0:8080.
    pub fn new(data_dir: PathBuf) -> Self {
        AgentConfig {
            data_dir,
            listen_api: "127.0.0.1:7070".parse().expect("static addr"),
            listen_gateway: "0.0.0.0:8080".parse().expect("static addr"),
            node_name: default_node_name(),
            runtime: RuntimeConfig::default(),
            capacity_memory_mib: None,
            labels: Default::default(),
            cluster: ClusterOptions::default(),
            lanes: crate::dataplane::lanes::default_lanes(),
            lane_ports: None,
            hpa_sync_period: crate::reconcile::autoscale::DEFAULT_SYNC_PERIOD,
        }
    }

    /// Cross-field checks, before anything binds.
    pub fn validate(&self) -> Result<()> {
        wasmfleet_cluster::pki::validate_node_id(&self.node_name)
            .map_err(|e| anyhow::anyhow!("--node-name {:?}: {e}", self.node_name))?;
        anyhow::ensure!(
            self.cluster.token.is_none() || !self.cluster.join.is_empty(),
            "--token needs --join HOST:PORT (a member's cluster address)"
        );
        anyhow::ensure!(
            self.lanes <= MAX_LANES,
            "--lanes {}: at most {MAX_LANES} (one per core is the default and usually best)",
            self.lanes
        );
        anyhow::ensure!(
            self.lane_ports.is_none() || self.lanes > 0,
            "--lane-ports needs lanes: it is ignored with --lanes 0"
        );
        Ok(())
    }
}

/// Most data-plane lanes an agent runs.
pub const MAX_LANES: usize = 256;

/// The machine's host name, or `node`.
pub fn default_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default();
    // Node names are DNS labels (they are certificate names and hostnames): lowercase, a-z0-9-.
    let first = host.split('.').next().unwrap_or_default().to_ascii_lowercase();
    let name: String = first.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).take(63).collect();
    let name = name.trim_matches('-').to_string();
    if name.is_empty() { "node".into() } else { name }
}

/// The default data dir: `$XDG_DATA_HOME/wasmfleet` (e.g. `~/.local/share/wasmfleet`).
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir().unwrap_or_else(std::env::temp_dir).join("wasmfleet")
}

/// A running agent.
pub struct AgentHandle {
    pub api_addr: SocketAddr,
    pub gateway_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub token: String,
    pub reconciler: Reconciler,
    pub peering: Arc<Peering>,
    shutdown_tx: watch::Sender<bool>,
    leave_rx: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl AgentHandle {
    /// The API base URL, e.g. `http://127.0.0.1:7070`.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    /// Resolves when a client asked this node to leave (`wasmfleet leave`).
    pub async fn leave_requested(&self) {
        let mut rx = self.leave_rx.clone();
        let _ = rx.wait_for(|l| *l).await;
    }

    /// Stops listeners and workloads and waits for them.
    pub async fn shutdown(self) {
        let _ = self.shutdown_tx.send(true);
        self.peering.leave_quietly();
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Leaves the cluster gracefully (peers see `leaving` first), then shuts down.
    pub async fn leave(self) {
        self.peering.leave().await;
        self.shutdown().await;
    }
}

/// Reads the API token of a data dir, creating it (mode 0600) on first use.
pub fn load_or_create_token(data_dir: &Path) -> Result<String> {
    let path = data_dir.join("token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_string();
        if !t.is_empty() {
            return Ok(t);
        }
    }
    let token = hex::encode(rand::random::<[u8; 24]>());
    write_private(&path, token.as_bytes())?;
    Ok(token)
}

fn node_id(data_dir: &Path) -> Result<u64> {
    let path = data_dir.join("node-id");
    if let Some(id) = std::fs::read_to_string(&path).ok().and_then(|s| u64::from_str_radix(s.trim(), 16).ok()) {
        return Ok(id);
    }
    let id: u64 = rand::random();
    write_private(&path, format!("{id:016x}").as_bytes())?;
    Ok(id)
}

/// Starts an agent: binds its listeners (port 0 works), loads desired state and starts the
/// workloads this node should run, at once and without any network.
pub async fn spawn_agent(config: AgentConfig) -> Result<AgentHandle> {
    config.validate()?;
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating data dir {}", data_dir.display()))?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700));
    }
    let token = load_or_create_token(&data_dir)?;
    let store = Arc::new(Store::open(&data_dir, node_id(&data_dir)?).context("opening the state store")?);

    let mut rt_config = config.runtime.clone();
    rt_config.cache_dir.get_or_insert_with(|| data_dir.join("compiled"));
    let runtime = Arc::new(Runtime::new(rt_config).context("starting the wasm runtime")?);
    let sizing = runtime.sizing();

    let api_listener = TcpListener::bind(config.listen_api)
        .await
        .with_context(|| format!("binding the API listener on {}", config.listen_api))?;
    let gw_listener = TcpListener::bind(config.listen_gateway)
        .await
        .with_context(|| format!("binding the gateway listener on {}", config.listen_gateway))?;
    let api_addr = api_listener.local_addr()?;
    let gateway_addr = gw_listener.local_addr()?;

    let lane_sockets = match config.lanes {
        0 => None,
        n => Some(crate::dataplane::lanes::Sockets::bind(n, config.cluster.listen_cluster.ip(), config.lane_ports)?),
    };
    let info = NodeInfo {
        api: format!("http://{api_addr}"),
        gateway: format!("http://{gateway_addr}"),
        labels: config.labels.clone(),
        memory_mib: config.capacity_memory_mib.unwrap_or(sizing.budget_bytes >> 20),
        cpu_millis: std::thread::available_parallelism().map(|n| n.get() as u64 * 1000).unwrap_or(1000),
        max_instances: sizing.instances.max(1) * 4,
        arch: std::env::consts::ARCH.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_ms: crate::clock::now_ms(),
        lanes: lane_sockets.as_ref().map(|s| s.ports()).transpose()?.unwrap_or_default(),
        placement: Some(wasmfleet_scheduler::Rule::default()),
        ..NodeInfo::default()
    };
    let peering = Peering::start(&data_dir, &config.node_name, &config.cluster, store.clone(), info)
        .await
        .context("starting the cluster layer")?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (leave_tx, leave_rx) = watch::channel(false);
    let routes = Routes::default();
    let capacity = NodeCapacity {
        memory_mib: config.capacity_memory_mib.unwrap_or(sizing.budget_bytes >> 20),
        cpu_millis: std::thread::available_parallelism().map(|n| n.get() as u64 * 1000).unwrap_or(1000),
        max_instances: sizing.instances.max(1) * 4,
        labels: config.labels.clone(),
    };
    let reconciler = Reconciler::new(crate::reconcile::Parts {
        node: config.node_name.clone(),
        store: store.clone(),
        runtime: runtime.clone(),
        peering: peering.clone(),
        capacity,
        routes: routes.clone(),
        gateway_ip: gateway_addr.ip(),
        data_dir: data_dir.clone(),
        shutdown: shutdown_rx.clone(),
        hpa_sync_period: config.hpa_sync_period,
    });
    routes.set_activator(Arc::new(crate::reconcile::autoscale::Activator::new(
        config.node_name.clone(),
        peering.clone(),
    )));
    // Traffic between nodes: forwarded requests in, and out with health probes.
    let forwarder = Forwarder::new(peering.mesh().clone());
    routes.set_forwarder(forwarder.clone());
    peering.mesh().set_stream_handler(
        crate::dataplane::forward::STREAM_CHANNEL,
        Arc::new(ForwardServer { routes: routes.clone() }),
    );
    peering.mesh().set_stream_handler(
        crate::control::logs::LOGS_CHANNEL,
        Arc::new(crate::control::logs::LogsServer { logs: reconciler.logs(), node: config.node_name.clone() }),
    );
    let mut tasks = Vec::new();
    if let Some(sockets) = lane_sockets {
        let plane = crate::dataplane::lanes::start(sockets, peering.identity(), &routes, &shutdown_rx).await?;
        forwarder.set_lanes(plane.endpoints);
        routes.set_lanes(plane.lanes);
        tasks.extend(plane.done.into_iter().map(|done| {
            tokio::spawn(async move {
                let _ = done.await;
            })
        }));
    }
    let weak = Arc::downgrade(&peering);
    forwarder.spawn_probes(move || weak.upgrade().map(|p| p.peers()), Peering::probe_request());
    // First pass before serving, so restarted workloads are back as soon as we answer.
    reconciler.pass().await;
    tasks.push(reconciler.spawn());

    let api = Arc::new(Api {
        store,
        reconciler: reconciler.clone(),
        runtime,
        token: token.clone(),
        node: config.node_name.clone(),
        started: Instant::now(),
        peering: peering.clone(),
        leave_tx,
    });
    let app = router(api);
    let mut sd = shutdown_rx.clone();
    tasks.push(tokio::spawn(async move {
        let _ = axum::serve(api_listener, app)
            .with_graceful_shutdown(async move {
                let _ = sd.wait_for(|s| *s).await;
            })
            .await;
    }));
    tasks.push(spawn_listener(gw_listener, routes, Binding::ByHost, shutdown_rx));

    let api_url = format!("http://{api_addr}");
    write_private(&data_dir.join("api.addr"), api_url.as_bytes())?;
    Ok(AgentHandle { api_addr, gateway_addr, data_dir, token, reconciler, peering, shutdown_tx, leave_rx, tasks })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_settings_are_checked() {
        let mut config = AgentConfig::new(PathBuf::from("/nonexistent"));
        config.node_name = "n".into();
        assert!(config.validate().is_ok());
        config.lanes = MAX_LANES + 1;
        assert!(config.validate().unwrap_err().to_string().contains("--lanes 257"));
        config.lanes = 0;
        config.lane_ports = Some(9000);
        assert!(config.validate().unwrap_err().to_string().contains("--lane-ports needs lanes"));
    }
}

//! What the command line accepts.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::agent::default_data_dir;
use crate::control::client::Client;

#[derive(Parser, Debug)]
#[command(name = "wasmfleet", version, about = "High availability for WebAssembly workloads on edge fleets")]
pub struct Cli {
    /// API URL of the agent to talk to (default: the local agent of --data-dir).
    #[arg(long, global = true, env = "WASMFLEET_SERVER")]
    pub server: Option<String>,
    /// API token (default: read from the local agent's data dir).
    #[arg(long, global = true, env = "WASMFLEET_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The agent's data directory.
    #[arg(long, global = true, env = "WASMFLEET_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Namespace of the objects named on the command line.
    #[arg(short = 'n', long, global = true, default_value = "default")]
    pub namespace: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a node: the agent with its API, gateway and workloads.
    Agent(Box<AgentArgs>),
    /// Start a local agent in a temporary data dir, deploy `hello`, and show it answering.
    Demo(crate::cli::demo::DemoArgs),
    /// Push a module (a .wasm file) into the node's store under NAME:TAG.
    Push {
        name: String,
        file: PathBuf,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Create or update objects from YAML manifests (files, directories, or - for stdin).
    Apply {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// List objects: deployments, services, jobs, daemonsets, replicas, modules, node.
    Get {
        kind: String,
        name: Option<String>,
        #[arg(short = 'o', long, value_enum)]
        output: Option<Output>,
    },
    /// Show one object in detail, with its status: `describe KIND NAME` or `describe KIND/NAME`.
    Describe { kind: String, name: Option<String> },
    /// Delete objects by kind and name, or those in manifests (-f).
    Delete {
        kind: Option<String>,
        name: Option<String>,
        #[arg(short = 'f', long = "filename")]
        files: Vec<String>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Print the logs of a deployment, job, daemonset or replica.
    Logs {
        name: String,
        /// Keep streaming new lines.
        #[arg(short = 'f', long)]
        follow: bool,
        #[arg(long)]
        tail: Option<usize>,
    },
    /// Set the replica count of a deployment.
    Scale {
        kind: String,
        name: String,
        #[arg(long)]
        replicas: u32,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Run a command module once, locally, like `wasmtime run` (exit code passed through).
    Run(RunArgs),
    /// Serve a wasi:http/proxy component locally, like `wasmtime serve`.
    Serve {
        component: PathBuf,
        #[arg(long, default_value = "0.0.0.0:8080")]
        addr: SocketAddr,
    },
    /// Join tokens: `token create [--ttl 24h]`.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Ask the agent to leave the cluster gracefully and stop.
    Leave,
    /// Print the version.
    Version,
}

/// Options of the commands that write (apply, delete, scale, push).
#[derive(Args, Debug, Clone, Copy, Default)]
pub struct WriteArgs {
    /// Exit non-zero when a write is not durable on as many nodes as the write quorum asks
    /// (it is stored on the node that answered, and reaches the others when they catch up).
    #[arg(long)]
    pub wait_durable: bool,
}

impl WriteArgs {
    /// The exit code of a write that went through: 1 when it fell short of its quorum and
    /// `--wait-durable` asks for it.
    pub fn exit_code(&self, durable: bool) -> i32 {
        if self.wait_durable && !durable { 1 } else { 0 }
    }
}

#[derive(Subcommand, Debug)]
pub enum TokenAction {
    /// Print a join token for a new node (seed: this node; trust: the cluster CA).
    Create {
        /// Validity: `30m`, `24h`, `7d`.
        #[arg(long, default_value = "24h")]
        ttl: String,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Output {
    Wide,
    Json,
    Yaml,
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// API listener (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen_api: SocketAddr,
    /// Gateway listener for Services (port 0: any free port).
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen_gateway: SocketAddr,
    /// Data-plane threads ("lanes") serving gateway traffic and forwarded requests, each with
    /// its own QUIC endpoint on a UDP port of the cluster address (default: one per core; 0:
    /// all on the cluster endpoint and the shared runtime).
    #[arg(long)]
    pub lanes: Option<usize>,
    /// UDP port of the first lane (the others take the next ports); default: any free ports.
    #[arg(long)]
    pub lane_ports: Option<u16>,
    /// Node name (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Memory budget for Wasm instances, MiB (default: a quarter of RAM, within ulimit -v).
    #[arg(long)]
    pub memory_budget: Option<u64>,
    /// Largest memory of one instance, MiB.
    #[arg(long)]
    pub instance_memory_max: Option<u64>,
    /// Instances alive at once.
    #[arg(long)]
    pub max_instances: Option<u32>,
    /// Node labels for nodeSelector, `k=v,k2=v2`.
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<String>,
    /// QUIC listener for peers and joining nodes (port 0: any free port).
    #[arg(long, default_value = "0.0.0.0:7946")]
    pub listen_cluster: SocketAddr,
    /// Gossip (UDP) listener (default: the cluster port + 1, or any port with port 0).
    #[arg(long)]
    pub listen_gossip: Option<SocketAddr>,
    /// The cluster address peers should use to reach this node.
    #[arg(long)]
    pub advertise: Option<SocketAddr>,
    /// Join the cluster of this member (its cluster address); repeatable.
    #[arg(long)]
    pub join: Vec<SocketAddr>,
    /// Join token from `wasmfleet token create` on a member (`--token` works too).
    #[arg(long, env = "WASMFLEET_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// Zone of this node (placement spreads replicas across zones).
    #[arg(long)]
    pub zone: Option<String>,
    /// Memory offered to workloads, MiB (default: the Wasm memory budget).
    #[arg(long)]
    pub capacity_memory: Option<u64>,
    /// Peers that must hold a write before it is acknowledged (default: min(2, live peers)).
    #[arg(long)]
    pub write_quorum: Option<usize>,
    /// Gossip interval (ms). The LAN default detects a killed node in about a second.
    #[arg(long, default_value_t = wasmfleet_cluster::membership::LAN_GOSSIP_INTERVAL.as_millis() as u64)]
    pub gossip_interval_ms: u64,
    /// Phi-accrual threshold: a peer is declared dead after about phi × gossip interval of
    /// silence. Raise it on lossy or overloaded networks.
    #[arg(long, default_value_t = wasmfleet_cluster::membership::LAN_PHI_THRESHOLD)]
    pub phi_threshold: f64,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    pub module: PathBuf,
    /// Environment variable for the guest, K=V (repeatable).
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    /// Grant a directory: HOST[::GUEST] (repeatable; read-write).
    #[arg(long = "dir")]
    pub dirs: Vec<String>,
    /// Memory limit, MiB.
    #[arg(long, default_value_t = 1024)]
    pub memory: u64,
    /// Arguments for the guest (after --).
    #[arg(last = true)]
    pub args: Vec<String>,
}

impl Cli {
    pub(super) fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(default_data_dir)
    }

    pub(super) fn client(&self) -> Result<Client> {
        Client::resolve(self.server.clone(), self.token.clone(), &self.data_dir())
    }
}

pub(super) fn parse_ttl(s: &str) -> Result<u64> {
    let (num, unit) = s.trim().split_at(s.trim().find(|c: char| !c.is_ascii_digit()).unwrap_or(s.trim().len()));
    let n: u64 = num.parse().with_context(|| format!("--ttl `{s}`: expected e.g. 30m, 24h, 7d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" | "" => 3600,
        "d" => 86_400,
        _ => bail!("--ttl `{s}`: unit must be s, m, h or d"),
    };
    Ok(n * mult)
}

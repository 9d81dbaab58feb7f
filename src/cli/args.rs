//! What the command line accepts.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

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
    /// List objects: deployments, services, jobs, daemonsets, rollouts, analysistemplates, replicas, modules, node.
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
    /// Create a HorizontalPodAutoscaler for a deployment or rollout (`kubectl autoscale`).
    Autoscale {
        /// `deployment/NAME` (or `rollout/NAME`).
        target: String,
        /// Lower bound (0 scales to zero when idle).
        #[arg(long, default_value_t = 1)]
        min: u32,
        #[arg(long)]
        max: u32,
        /// Target average CPU utilization, percent of the replicas' cpu request (default 80).
        #[arg(long)]
        cpu_percent: Option<u32>,
        /// Name of the autoscaler (default: the target's).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Read and write the cluster's wasi:keyvalue buckets (those of the namespace `-n`).
    Kv {
        #[command(subcommand)]
        action: KvCommand,
    },
    /// Manage the rollout of a deployment: status, history, undo, pause, resume, restart.
    Rollout {
        #[command(subcommand)]
        action: RolloutCommand,
    },
    /// Update a field of an object: `set image deployment/NAME CONTAINER=IMAGE ...`.
    Set {
        #[command(subcommand)]
        what: SetCommand,
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

/// `rollout ...`: each names a deployment as `deployment/NAME`, `deployment NAME` or `NAME`.
#[derive(Subcommand, Debug)]
pub enum RolloutCommand {
    /// Watch a rollout until it finishes (exit 1 when it exceeds its progress deadline).
    Status {
        /// `deployment/NAME`, `deployment NAME`, or `NAME`.
        #[arg(required = true, num_args = 1..=2, value_name = "TYPE/NAME")]
        resource: Vec<String>,
        /// Give up after this long: `60s`, `5m`, `1m30s` (0: wait as long as it takes).
        #[arg(long, default_value = "0s")]
        timeout: String,
        /// Keep watching until the rollout finishes (`--watch=false`: print where it stands).
        #[arg(
            short = 'w',
            long,
            default_value_t = true,
            num_args = 0..=1,
            require_equals = true,
            default_missing_value = "true",
            action = ArgAction::Set
        )]
        watch: bool,
    },
    /// List the revisions, or show one (`--revision N`).
    History {
        /// `deployment/NAME`, `deployment NAME`, or `NAME`.
        #[arg(required = true, num_args = 1..=2, value_name = "TYPE/NAME")]
        resource: Vec<String>,
        /// Show the pod template of this revision.
        #[arg(long)]
        revision: Option<u64>,
    },
    /// Roll back to the previous revision, or to `--to-revision N`.
    Undo {
        /// `deployment/NAME`, `deployment NAME`, or `NAME`.
        #[arg(required = true, num_args = 1..=2, value_name = "TYPE/NAME")]
        resource: Vec<String>,
        /// The revision to go back to (0: the previous one).
        #[arg(long)]
        to_revision: Option<u64>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Stop rolling out: template changes wait until `rollout resume`.
    Pause(RolloutTarget),
    /// Roll out again after `rollout pause`.
    Resume(RolloutTarget),
    /// Replace every replica, a few at a time, with the same template.
    Restart(RolloutTarget),
    /// A Rollout: go past the current pause or inconclusive analysis (`--full`: skip every
    /// remaining step and take all traffic once ready; blue/green: switch to the preview).
    Promote {
        /// `NAME` (a Rollout) or `rollout/NAME`.
        #[arg(required = true, num_args = 1..=2, value_name = "NAME")]
        resource: Vec<String>,
        #[arg(long)]
        full: bool,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// A Rollout: send all traffic back to the stable revision and scale the canary down.
    Abort(RolloutTarget),
    /// A Rollout: start an aborted canary again from its first step.
    Retry(RolloutTarget),
}

/// The deployment of `rollout pause|resume|restart`.
#[derive(Args, Debug)]
pub struct RolloutTarget {
    /// `deployment/NAME`, `deployment NAME`, or `NAME`.
    #[arg(required = true, num_args = 1..=2, value_name = "TYPE/NAME")]
    pub resource: Vec<String>,
    #[command(flatten)]
    pub write: WriteArgs,
}

/// `kv ...`: a bucket as a component opens it, in the namespace `-n` (`--app NAME`: the
/// bucket of an application whose buckets are its own, `wasmfleet.io/keyvalue-scope:
/// application`).
#[derive(Subcommand, Debug)]
pub enum KvCommand {
    /// Print a key's value (a counter as its number).
    Get {
        bucket: String,
        key: String,
        #[arg(long)]
        app: Option<String>,
    },
    /// Set a key; `-` reads the value from stdin.
    Set {
        bucket: String,
        key: String,
        value: String,
        #[arg(long)]
        app: Option<String>,
    },
    /// Delete a key.
    Del {
        bucket: String,
        key: String,
        #[arg(long)]
        app: Option<String>,
    },
    /// List a bucket's keys (`--local`: this node's own copies, with versions and values).
    Ls {
        bucket: String,
        #[arg(long)]
        local: bool,
        #[arg(long)]
        app: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum SetCommand {
    /// Change container images: `set image deployment/NAME CONTAINER=IMAGE ...` (`*=IMAGE`: every
    /// container; a local .wasm path is uploaded first).
    Image {
        /// `deployment/NAME` (or `deployment NAME`), then `CONTAINER=IMAGE` pairs.
        #[arg(required = true, num_args = 2.., value_name = "ARGS")]
        args: Vec<String>,
        #[command(flatten)]
        write: WriteArgs,
    },
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
    /// How often an autoscaler is evaluated unless its `wasmfleet.io/hpa-sync-period`
    /// annotation says (Kubernetes: 15s; edge clusters may want 1s).
    #[arg(long, default_value = "15s", value_parser = parse_period)]
    pub hpa_sync_period: std::time::Duration,
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

/// A duration as kubectl's flags take it (Go's `time.ParseDuration`, non-negative): `500ms`,
/// `60s`, `5m`, `1h30m`; `0` alone is zero.
pub(super) fn parse_duration(s: &str) -> Result<std::time::Duration> {
    let text = s.trim();
    let bad = || anyhow::anyhow!("invalid duration `{s}`: expected e.g. 30s, 5m, 1h30m");
    if text == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let mut rest = text;
    let mut total = std::time::Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let d = match &rest[..unit] {
            "ms" => std::time::Duration::from_millis(n),
            "s" => std::time::Duration::from_secs(n),
            "m" => std::time::Duration::from_secs(n * 60),
            "h" => std::time::Duration::from_secs(n * 3600),
            _ => return Err(bad()),
        };
        total += d;
        rest = &rest[unit..];
    }
    if text.is_empty() { Err(bad()) } else { Ok(total) }
}

/// A duration flag (`15s`, `500ms`, `1m`), at least 100 ms.
fn parse_period(s: &str) -> Result<std::time::Duration, String> {
    let d = crate::manifest::parse_duration(s)?;
    if d < std::time::Duration::from_millis(100) {
        return Err("must be at least 100ms".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser as _;

    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        for bad in ["", "5", "5x", "s", "-1s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    fn rollout(args: &[&str]) -> RolloutCommand {
        let cli = Cli::try_parse_from([&["wasmfleet", "rollout"], args].concat()).unwrap();
        match cli.command {
            Command::Rollout { action } => action,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rollout_status_flags_as_kubectl_takes_them() {
        for (args, want) in [
            (&["status", "deployment/web"][..], true),
            (&["status", "deployment/web", "--watch"], true),
            (&["status", "deployment/web", "--watch=false"], false),
            (&["status", "deployment/web", "-w=false"], false),
        ] {
            let RolloutCommand::Status { watch, .. } = rollout(args) else { panic!() };
            assert_eq!(watch, want, "{args:?}");
        }
        let RolloutCommand::Status { resource, timeout, .. } =
            rollout(&["status", "deployment", "web", "--timeout", "60s"])
        else {
            panic!()
        };
        assert_eq!((resource, timeout.as_str()), (vec!["deployment".to_string(), "web".to_string()], "60s"));
        let RolloutCommand::Undo { to_revision, .. } = rollout(&["undo", "deploy/web", "--to-revision=2"]) else {
            panic!()
        };
        assert_eq!(to_revision, Some(2));
        assert!(matches!(rollout(&["pause", "web"]), RolloutCommand::Pause(_)));
    }

    #[test]
    fn set_image_takes_pairs() {
        let cli = Cli::try_parse_from(["wasmfleet", "set", "image", "deployment/web", "web=web:2", "*=x:1"]).unwrap();
        let Command::Set { what: SetCommand::Image { args, .. } } = cli.command else { panic!() };
        assert_eq!(args, ["deployment/web", "web=web:2", "*=x:1"]);
        assert!(Cli::try_parse_from(["wasmfleet", "set", "image", "deployment/web"]).is_err());
    }
}

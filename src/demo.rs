//! The quick start: a local agent in a temporary data dir, `hello` pushed and deployed from
//! `examples/hello.yaml`, requests through the gateway, then serving until Ctrl-C.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::agent::{AgentConfig, spawn_agent};
use crate::api::{ApplyResult, PushResponse};
use crate::client::Client;

/// The `hello` component, built from `modules/hello` and embedded in the binary.
pub const HELLO_WASM: &[u8] = include_bytes!(concat!(env!("WASMFLEET_MODULES_DIR"), "/hello.wasm"));
/// The manifest the demo applies.
pub const HELLO_YAML: &str = include_str!("../examples/hello.yaml");

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Gateway address (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub gateway: std::net::SocketAddr,
    /// Number of requests to send through the gateway.
    #[arg(long, default_value_t = 6)]
    pub requests: usize,
    /// Exit after the requests instead of serving until Ctrl-C.
    #[arg(long)]
    pub exit: bool,
}

pub fn run(args: &DemoArgs, data_dir: Option<PathBuf>) -> Result<i32> {
    let tmp;
    let data_dir = match data_dir {
        Some(d) => d,
        None => {
            tmp = tempfile::Builder::new()
                .prefix("wasmfleet-demo-")
                .tempdir()
                .context("creating a temporary data dir")?;
            tmp.path().to_path_buf()
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let mut config = AgentConfig::new(data_dir.clone());
        config.listen_api = "127.0.0.1:0".parse()?;
        config.listen_gateway = args.gateway;
        config.node_name = "demo-node".into();
        config.cluster.listen_cluster = "127.0.0.1:0".parse()?;
        let agent = match spawn_agent(config.clone()).await {
            Ok(a) => a,
            Err(_) if args.gateway.port() != 0 => {
                // The friendly port is taken: any free port will do.
                config.listen_gateway.set_port(0);
                spawn_agent(config).await?
            }
            Err(e) => return Err(e),
        };
        let gw = agent.gateway_addr;
        println!("wasmfleet demo: one agent, data dir {}", data_dir.display());
        println!("  api listening on {}", agent.api_url());
        println!("  gateway listening on http://{gw}");
        let client = Client::new(agent.api_url(), agent.token.clone());
        let api_client = client.clone();
        let push: PushResponse = tokio::task::spawn_blocking(move || {
            api_client.post_bytes("/v1/modules?name=hello:1.0", "application/wasm", HELLO_WASM)
        })
        .await??;
        let api_client = client.clone();
        let started = Instant::now();
        let applied: Vec<ApplyResult> = tokio::task::spawn_blocking(move || {
            api_client.post_bytes("/v1/apply?source=examples/hello.yaml", "application/yaml", HELLO_YAML.as_bytes())
        })
        .await??;
        println!("\n$ wasmfleet push hello:1.0 hello.wasm");
        println!(
            "pushed hello:1.0 ({}, {} KiB, {})",
            push.kind_description,
            push.size_bytes.div_ceil(1024),
            push.digest
        );
        println!("$ wasmfleet apply -f examples/hello.yaml");
        for r in &applied {
            println!("{} {}", crate::cli::kubectl_name(&r.key), format!("{:?}", r.action).to_lowercase());
        }

        // Requests through the gateway, by Host, as a client of the Service would.
        let http = ureq::AgentBuilder::new().timeout(Duration::from_secs(5)).build();
        let url = format!("http://{gw}/");
        let deadline = Instant::now() + Duration::from_secs(20);
        let first = loop {
            let h = http.clone();
            let u = url.clone();
            let r =
                tokio::task::spawn_blocking(move || h.get(&u).set("Host", "hello").call().map_err(Box::new)).await?;
            match r {
                Ok(resp) => break resp.into_string()?,
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => bail!("hello did not become ready within 20 s: {e}"),
            }
        };
        println!("\nfirst 200 OK through the gateway {:?} after the apply was sent", started.elapsed());
        println!("\n$ curl -H 'Host: hello' http://{gw}/...");
        print!("{first}");
        for i in 1..args.requests {
            let h = http.clone();
            let u = format!("http://{gw}/demo/{i}");
            let body = tokio::task::spawn_blocking(move || -> Result<String> {
                Ok(h.get(&u).set("Host", "hello").call()?.into_string()?)
            })
            .await??;
            print!("{body}");
        }
        let _ = std::io::stdout().flush();
        if args.exit {
            agent.shutdown().await;
            return Ok(0);
        }
        let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "wasmfleet".into());
        println!("\nThe cluster keeps serving. Try, in another terminal:");
        println!("  curl -H 'Host: hello' http://{gw}/");
        println!("  export WASMFLEET_DATA_DIR={}", data_dir.display());
        println!("  {exe} get replicas -o wide");
        println!("  {exe} get services -o wide");
        println!("  {exe} scale deployment hello --replicas 5");
        println!("  {exe} logs hello");
        println!("Press Ctrl-C to stop.");
        let _ = std::io::stdout().flush();
        crate::cli::wait_for_signal().await;
        println!("stopping");
        agent.shutdown().await;
        Ok(0)
    })
}

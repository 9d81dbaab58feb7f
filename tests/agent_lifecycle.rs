//! An agent started in-process and shut down releases what it held: its sockets (the ports can
//! be bound again), its tasks, and its parts (no reference cycle keeps the cluster layer or the
//! mesh alive). An embedding program or a test harness may start and stop agents many times.

use std::net::SocketAddr;
use std::sync::Weak;
use std::time::{Duration, Instant};

use wasmfleet::agent::{AgentConfig, spawn_agent};
use wasmfleet::control::client::Client;

fn hello_wasm() -> Vec<u8> {
    std::fs::read(format!("{}/hello.wasm", env!("WASMFLEET_MODULES_DIR"))).unwrap()
}

async fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current().metrics().num_alive_tasks()
}

/// Serves the hello component through the agent's gateway (so replicas, routes, probes and
/// Service ports exist when it stops).
async fn deploy_hello(api: String, token: String, gateway: SocketAddr) {
    tokio::task::spawn_blocking(move || {
        let client = Client::new(api, token);
        let _: serde_json::Value =
            client.post_bytes("/v1/modules?name=hello:1.0", "application/wasm", &hello_wasm()).unwrap();
        let manifest = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hello.yaml")).unwrap();
        let _: serde_json::Value =
            client.post_bytes("/v1/apply?source=hello.yaml", "application/yaml", &manifest).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = ureq::get(&format!("http://{gateway}/")).set("Host", "hello").call();
            if matches!(&r, Ok(resp) if resp.status() == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "hello never answered: {r:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_stopped_in_process_releases_its_sockets_tasks_and_parts() {
    let baseline = alive_tasks();
    for round in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let mut config = AgentConfig::new(dir.path().to_path_buf());
        config.node_name = format!("solo-{round}");
        config.listen_api = "127.0.0.1:0".parse().unwrap();
        config.listen_gateway = "127.0.0.1:0".parse().unwrap();
        config.cluster.listen_cluster = "127.0.0.1:0".parse().unwrap();
        config.lanes = 1;
        let agent = spawn_agent(config).await.unwrap();
        let (api, gateway) = (agent.api_addr, agent.gateway_addr);
        let (cluster, gossip) = (agent.peering.cluster_addr(), agent.peering.gossip_addr());
        if round == 0 {
            deploy_hello(agent.api_url(), agent.token.clone(), gateway).await;
        }
        let peering: Weak<_> = std::sync::Arc::downgrade(&agent.peering);
        let mesh: Weak<_> = std::sync::Arc::downgrade(agent.peering.mesh());
        agent.shutdown().await;

        wait_until("the cluster layer to be dropped", Duration::from_secs(10), || peering.upgrade().is_none()).await;
        wait_until("the mesh to be dropped", Duration::from_secs(10), || mesh.upgrade().is_none()).await;
        wait_until("the listeners to be closed", Duration::from_secs(10), || {
            std::net::TcpListener::bind(api).is_ok()
                && std::net::TcpListener::bind(gateway).is_ok()
                && std::net::UdpSocket::bind(cluster).is_ok()
                && std::net::UdpSocket::bind(gossip).is_ok()
        })
        .await;
    }
    wait_until("the agents' tasks to end", Duration::from_secs(10), || alive_tasks() <= baseline).await;
}

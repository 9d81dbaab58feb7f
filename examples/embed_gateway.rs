//! An IoT gateway program that embeds `wasmfleet-runtime` on its own — no cluster, no agent.
//!
//! It runs the `sensor` daemon (a WASI command) under a restart policy, serves the `hello`
//! component over HTTP, calls itself a few times, prints the answers and the sensor's readings,
//! and exits. `cargo run --example embed_gateway -- --serve` keeps serving until Ctrl-C.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use wasmfleet_runtime::{Backoff, HttpService, LogBuffer, RestartPolicy, Runtime, RuntimeConfig, WorkloadSpec};

const HELLO: &str = concat!(env!("WASMFLEET_MODULES_DIR"), "/hello.wasm");
const SENSOR: &str = concat!(env!("WASMFLEET_MODULES_DIR"), "/sensor.wasm");

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let serve_forever = std::env::args().any(|a| a == "--serve");

    // One runtime for the whole program; its pool is sized from this machine's memory.
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default())?);
    println!("runtime: {:?}", runtime.sizing());

    // A daemon: the sensor poller, restarted if it ever exits.
    let sensor_logs = LogBuffer::new(64 * 1024);
    let mut sensor_spec = WorkloadSpec::new("gateway/sensor");
    sensor_spec.env.push(("SENSOR_INTERVAL_MS".into(), "200".into()));
    let sensor = runtime.spawn_command(
        runtime.load(&std::fs::read(SENSOR)?)?,
        sensor_spec,
        RestartPolicy::Always,
        Backoff::default(),
        None,
        sensor_logs.clone(),
    );

    // An HTTP service: the hello component, one fresh instance per request.
    let hello = runtime.load(&std::fs::read(HELLO)?)?;
    let mut spec = WorkloadSpec::new("gateway/hello");
    spec.env.push(("WASMFLEET_REPLICA".into(), "embedded".into()));
    let service = HttpService::new(runtime.clone(), &hello, spec, LogBuffer::new(64 * 1024))?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!("serving hello on http://{addr}");
    let server = {
        let service = service.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let service = service.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let service = service.clone();
                        async move { Ok::<_, std::convert::Infallible>(service.handle(req).await) }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        })
    };

    // Call ourselves like a client on the gateway's LAN would.
    for path in ["/", "/temperature", "/status"] {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = http::Request::get(path).header("host", "gateway").body(Empty::<bytes::Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        let body = resp.into_body().collect().await?.to_bytes();
        print!("GET {path} -> {}", String::from_utf8_lossy(&body));
    }

    tokio::time::sleep(Duration::from_millis(700)).await;
    println!("sensor status: {:?}", sensor.status().phase);
    for line in sensor_logs.snapshot(Some(3)) {
        println!("sensor: {}", line.text);
    }

    if serve_forever {
        println!("serving until Ctrl-C");
        tokio::signal::ctrl_c().await?;
    }
    server.abort();
    sensor.stop().await;
    Ok(())
}

//! Instantiate + handle a request for `hello`, pooled vs on-demand; and instantiation alone.
//!
//! `cargo bench --bench instantiate` runs criterion, then prints p50/p99 of instantiation alone
//! (pooled and on-demand) measured over 20 000 iterations, the figure the goal names.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, criterion_group};
use http_body_util::{BodyExt, Empty};
use wasmfleet_runtime::{HttpService, LogBuffer, Runtime, RuntimeConfig, WorkloadSpec};

fn hello() -> Vec<u8> {
    std::fs::read(concat!(env!("WASMFLEET_MODULES_DIR"), "/hello.wasm")).expect("hello.wasm")
}

fn service(pooling: bool) -> HttpService {
    let cfg = RuntimeConfig { pooling, max_instances: Some(64), ..Default::default() };
    let rt = Arc::new(Runtime::new(cfg).expect("runtime"));
    let m = rt.load(&hello()).expect("load");
    HttpService::new(rt, &m, WorkloadSpec::new("bench/hello"), LogBuffer::new(4096)).expect("service")
}

async fn request(svc: &HttpService) {
    let req = http::Request::get("/bench").header("host", "bench").body(Empty::<Bytes>::new()).unwrap();
    let resp = svc.handle(req).await;
    assert_eq!(resp.status(), 200);
    let _ = std::hint::black_box(resp.into_body().collect().await.unwrap().to_bytes());
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut g = c.benchmark_group("hello");
    for (label, pooling) in [("pooled", true), ("on-demand", false)] {
        let svc = service(pooling);
        g.bench_with_input(BenchmarkId::new("instantiate", label), &svc, |b, svc| {
            b.iter(|| rt.block_on(svc.instantiate_only()).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("instantiate+request", label), &svc, |b, svc| {
            b.iter(|| rt.block_on(request(svc)))
        });
    }
    g.finish();
}

fn percentiles() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for (label, pooling) in [("pooled", true), ("on-demand", false)] {
        let svc = service(pooling);
        for _ in 0..1000 {
            rt.block_on(svc.instantiate_only()).unwrap();
        }
        let mut inst: Vec<Duration> = Vec::with_capacity(20_000);
        let mut whole: Vec<Duration> = Vec::with_capacity(20_000);
        for _ in 0..20_000 {
            let t = Instant::now();
            rt.block_on(svc.instantiate_only()).unwrap();
            inst.push(t.elapsed());
            let t = Instant::now();
            rt.block_on(request(&svc));
            whole.push(t.elapsed());
        }
        inst.sort();
        whole.sort();
        let p = |v: &[Duration], q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
        println!(
            "{label:>9}: instantiate p50 {:>6.1?} p99 {:>6.1?} | instantiate+request p50 {:>6.1?} p99 {:>6.1?}",
            p(&inst, 0.5),
            p(&inst, 0.99),
            p(&whole, 0.5),
            p(&whole, 0.99)
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    criterion::Criterion::default().configure_from_args().final_summary();
    // `cargo bench -- --test` (CI smoke run) skips the percentile loop.
    if !std::env::args().any(|a| a == "--test") {
        percentiles();
    }
}

//! Host tests of every guest module in `modules/` against the runtime: HTTP services, limits,
//! commands, restart policies, logs and the sandbox.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use wasmfleet_runtime::{
    Backoff, ExitStatus, HttpService, Limits, LogBuffer, Module, ModuleKind, Phase, Preopen, RestartPolicy, Runtime,
    RuntimeConfig, Stdio, WorkloadSpec,
};

fn module_bytes(name: &str) -> Vec<u8> {
    let p = format!("{}/{name}.wasm", env!("WASMFLEET_MODULES_DIR"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn runtime() -> Arc<Runtime> {
    let cfg = RuntimeConfig {
        memory_budget_bytes: Some(512 << 20),
        max_instance_memory_bytes: Some(64 << 20),
        max_instances: Some(32),
        ..Default::default()
    };
    Arc::new(Runtime::new(cfg).expect("runtime"))
}

fn load(rt: &Runtime, name: &str) -> Module {
    rt.load(&module_bytes(name)).unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

fn service(rt: &Arc<Runtime>, name: &str, limits: Limits) -> (HttpService, Arc<LogBuffer>) {
    let m = load(rt, name);
    let mut spec = WorkloadSpec::new(format!("test/{name}"));
    spec.env.push(("WASMFLEET_REPLICA".into(), format!("{name}-0")));
    spec.limits = limits;
    let logs = LogBuffer::new(64 * 1024);
    (HttpService::new(rt.clone(), &m, spec, logs.clone()).expect("service"), logs)
}

async fn call(svc: &HttpService, method: &str, path: &str, body: &'static [u8]) -> (u16, String) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "test")
        .header("content-length", body.len())
        .body(Full::new(Bytes::from_static(body)))
        .unwrap();
    let resp = svc.handle(req).await;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn hello_answers_with_path_and_replica() {
    let rt = runtime();
    let (svc, _) = service(&rt, "hello", Limits::default());
    let (status, body) = call(&svc, "GET", "/some/path?x=1", b"").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("path=/some/path?x=1"), "{body}");
    assert!(body.contains("replica=hello-0"), "{body}");
}

#[tokio::test]
async fn modules_are_classified() {
    let rt = runtime();
    assert_eq!(load(&rt, "hello").kind(), ModuleKind::HttpProxy);
    assert_eq!(load(&rt, "echo").kind(), ModuleKind::HttpProxy);
    assert_eq!(load(&rt, "sensor").kind(), ModuleKind::Command);
    assert_eq!(load(&rt, "crash").kind(), ModuleKind::Command);
    assert_eq!(load(&rt, "crash-p1").kind(), ModuleKind::CoreCommand);
    let err = rt.load(b"definitely not wasm").unwrap_err().to_string();
    assert!(err.contains("not a WebAssembly file"), "{err}");
    // A core module without _start and with a foreign import.
    let err = rt.load(&wat_module()).unwrap_err().to_string();
    assert!(err.contains("only wasip1 command modules"), "{err}");
}

/// `(module (import "env" "f" (func)))` encoded by hand.
fn wat_module() -> Vec<u8> {
    vec![
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // header
        0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: () -> ()
        0x02, 0x09, 0x01, 0x03, b'e', b'n', b'v', 0x01, b'f', 0x00, 0x00, // import env.f
    ]
}

#[tokio::test]
async fn echo_streams_the_body_back() {
    let rt = runtime();
    let (svc, _) = service(&rt, "echo", Limits::default());
    let (status, body) = call(&svc, "POST", "/echo", b"ping-pong payload").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("method: POST\npath: /echo\n"), "{body}");
    assert!(body.ends_with("ping-pong payload"), "{body}");
}

#[tokio::test]
async fn request_body_limit_gives_413() {
    let rt = runtime();
    let limits = Limits { max_request_body_bytes: 8, ..Limits::default() };
    let (svc, _) = service(&rt, "echo", limits);
    let (status, body) = call(&svc, "POST", "/", b"0123456789abcdef").await;
    assert_eq!(status, 413, "{body}");
    // Without Content-Length the stream is cut at the limit: the guest never sees more.
    let req =
        http::Request::post("/").header("host", "t").body(Full::new(Bytes::from_static(b"0123456789abcdef"))).unwrap();
    let resp = svc.handle(req).await;
    let text = String::from_utf8_lossy(&resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default())
        .into_owned();
    assert!(!text.contains("0123456789abcdef"), "{text}");
}

#[tokio::test]
async fn infinite_loop_hits_the_deadline_and_next_request_works() {
    let rt = runtime();
    let limits = Limits { request_timeout: Duration::from_millis(300), ..Limits::default() };
    let (svc, logs) = service(&rt, "hostile", limits);
    let t = Instant::now();
    let (status, body) = call(&svc, "GET", "/loop", b"").await;
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("deadline"), "{body}");
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    let (status, body) = call(&svc, "GET", "/", b"").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_eq!(svc.stats().timeouts, 1);
    assert!(logs.snapshot(None).iter().any(|l| l.text.contains("deadline")));
}

#[tokio::test]
async fn memory_bomb_hits_the_limit_and_next_request_works() {
    let rt = runtime();
    let limits = Limits { memory_bytes: 16 << 20, ..Limits::default() };
    let (svc, _) = service(&rt, "hostile", limits);
    let (status, body) = call(&svc, "GET", "/oom", b"").await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("memory limit"), "{body}");
    assert_eq!(call(&svc, "GET", "/", b"").await.0, 200);
    assert_eq!(svc.stats().out_of_memory, 1);
}

#[tokio::test]
async fn trap_is_a_500_and_next_request_works() {
    let rt = runtime();
    let (svc, _) = service(&rt, "hostile", Limits::default());
    let (status, body) = call(&svc, "GET", "/trap", b"").await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("trapped"), "{body}");
    assert_eq!(call(&svc, "GET", "/", b"").await.0, 200);
}

#[tokio::test]
async fn a_service_accounts_guest_time_concurrency_and_memory() {
    let rt = runtime();
    let (svc, _) = service(&rt, "burn", Limits::default());
    let before = svc.stats();
    let started = Instant::now();
    for _ in 0..3 {
        let (status, body) = call(&svc, "GET", "/?ms=20", b"").await;
        assert_eq!(status, 200, "{body}");
    }
    let wall = started.elapsed().as_nanos() as u64;
    let after = svc.stats();
    let cpu = after.cpu_ns.wrapping_sub(before.cpu_ns);
    let busy = after.busy_ns.wrapping_sub(before.busy_ns);
    // 3 × 20 ms of spinning, measured as the time the guest's future was polled.
    assert!((60_000_000..wall).contains(&cpu), "guest time {cpu} ns for 60 ms of spinning in {wall} ns");
    assert!(busy >= cpu && busy <= wall, "in flight {busy} ns, guest {cpu} ns, wall {wall} ns");
    assert!(after.memory_kib_us > before.memory_kib_us, "memory held while in flight is accounted");
    // `/ready` costs next to nothing.
    call(&svc, "GET", "/ready", b"").await;
    assert!(svc.stats().cpu_ns.wrapping_sub(after.cpu_ns) < 10_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excess_concurrency_queues_then_gets_503() {
    let rt = runtime();
    let limits = Limits { max_concurrency: 1, queue_timeout: Duration::from_millis(100), ..Limits::default() };
    let (svc, _) = service(&rt, "hostile", limits);
    let slow = {
        let svc = svc.clone();
        tokio::spawn(async move { call(&svc, "GET", "/sleep?ms=1000", b"").await })
    };
    // Wait until the slow request holds the only slot.
    let deadline = Instant::now() + Duration::from_secs(5);
    while svc.in_flight() == 0 {
        assert!(Instant::now() < deadline, "slow request never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, body) = call(&svc, "GET", "/", b"").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("concurrency limit"), "{body}");
    assert_eq!(slow.await.unwrap().0, 200);
    assert_eq!(call(&svc, "GET", "/", b"").await.0, 200);
}

#[tokio::test]
async fn http_component_is_not_a_command_and_vice_versa() {
    let rt = runtime();
    let sensor = load(&rt, "sensor");
    let err = HttpService::new(rt.clone(), &sensor, WorkloadSpec::new("x"), LogBuffer::new(1024)).unwrap_err();
    assert!(err.to_string().contains("not a wasi:http/proxy component"), "{err}");
    let hello = load(&rt, "hello");
    let out = rt.run_command(&hello, &WorkloadSpec::new("x"), Stdio::Logs(LogBuffer::new(1024))).await;
    assert!(matches!(out.status, ExitStatus::Failed(_)), "{:?}", out.status);
}

fn cmd_spec(args: &[&str]) -> WorkloadSpec {
    let mut s = WorkloadSpec::new("test/crash");
    s.args = args.iter().map(|a| a.to_string()).collect();
    s
}

#[tokio::test]
async fn exit_codes_p1_exact_p2_ok_or_err() {
    let rt = runtime();
    let logs = LogBuffer::new(64 * 1024);
    let p1 = load(&rt, "crash-p1");
    let out = rt.run_command(&p1, &cmd_spec(&[]), Stdio::Logs(logs.clone())).await;
    assert_eq!(out.status, ExitStatus::Code(3));
    let out = rt.run_command(&p1, &cmd_spec(&["exit", "0"]), Stdio::Logs(logs.clone())).await;
    assert_eq!(out.status, ExitStatus::Code(0));
    let p2 = load(&rt, "crash");
    let out = rt.run_command(&p2, &cmd_spec(&[]), Stdio::Logs(logs.clone())).await;
    assert!(!out.status.success(), "{:?}", out.status);
    let lines: Vec<String> = logs.snapshot(None).into_iter().map(|l| l.text).collect();
    assert!(lines.iter().any(|l| l.contains("crash: starting")), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("crash: exiting with 3")), "{lines:?}");
}

#[tokio::test]
async fn sandbox_denies_ungranted_directories_and_honours_read_only() {
    let rt = runtime();
    let granted = tempfile::tempdir().unwrap();
    std::fs::write(granted.path().join("hello.txt"), "granted content").unwrap();
    let secret = tempfile::tempdir().unwrap();
    std::fs::write(secret.path().join("secret.txt"), "top secret").unwrap();
    let crash = load(&rt, "crash");
    let logs = LogBuffer::new(64 * 1024);

    let mut spec = cmd_spec(&["cat", "/data/hello.txt"]);
    spec.dirs.push(Preopen { host_path: granted.path().into(), guest_path: "/data".into(), read_only: true });
    let out = rt.run_command(&crash, &spec, Stdio::Logs(logs.clone())).await;
    assert_eq!(out.status, ExitStatus::Code(0));
    assert!(logs.snapshot(None).iter().any(|l| l.text == "granted content"));

    // Not granted: the host path does not exist for the guest, by any name.
    let secret_path = format!("{}/secret.txt", secret.path().display());
    let out = rt.run_command(&crash, &cmd_spec(&["cat", &secret_path]), Stdio::Logs(logs.clone())).await;
    assert!(!out.status.success(), "read an ungranted file");
    assert!(!logs.snapshot(None).iter().any(|l| l.text.contains("top secret")));
    let mut spec = cmd_spec(&["cat", "/data/../../etc/passwd"]);
    spec.dirs.push(Preopen { host_path: granted.path().into(), guest_path: "/data".into(), read_only: true });
    assert!(!rt.run_command(&crash, &spec, Stdio::Logs(logs.clone())).await.status.success(), "escaped the preopen");

    // Read-only grant: writes fail; read-write grant: they land on the host.
    let mut spec = cmd_spec(&["write", "/data/new.txt", "x"]);
    spec.dirs.push(Preopen { host_path: granted.path().into(), guest_path: "/data".into(), read_only: true });
    assert!(!rt.run_command(&crash, &spec, Stdio::Logs(logs.clone())).await.status.success());
    spec.dirs[0].read_only = false;
    assert_eq!(rt.run_command(&crash, &spec, Stdio::Logs(logs.clone())).await.status, ExitStatus::Code(0));
    assert_eq!(std::fs::read_to_string(granted.path().join("new.txt")).unwrap(), "x");

    // No env is inherited from the host.
    let out = rt.run_command(&crash, &cmd_spec(&["env"]), Stdio::Logs(logs.clone())).await;
    assert_eq!(out.status, ExitStatus::Code(0));
    assert!(!logs.snapshot(None).iter().any(|l| l.text.starts_with("PATH=")));
}

#[tokio::test]
async fn restart_policy_backs_off_exponentially_and_reports_crash_loop() {
    let rt = runtime();
    let logs = LogBuffer::new(64 * 1024);
    let crash = load(&rt, "crash-p1");
    let backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(400),
        reset_after: Duration::from_secs(10),
    };
    let h = rt.spawn_command(crash.clone(), cmd_spec(&[]), RestartPolicy::Always, backoff, None, logs.clone());
    let mut rx = h.watch();
    let started = Instant::now();
    let mut crash_loop_seen = false;
    // Delays 50, 100, 200, 400 ms: 4 restarts need >= 750 ms.
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            rx.changed().await.unwrap();
            let s = rx.borrow().clone();
            crash_loop_seen |= s.phase == Phase::CrashLoopBackOff;
            if s.restarts >= 4 {
                break;
            }
        }
    })
    .await
    .expect("4 restarts within 10 s");
    assert!(started.elapsed() >= Duration::from_millis(700), "restarted too fast: {:?}", started.elapsed());
    assert!(crash_loop_seen);
    assert_eq!(h.status().last_exit, Some(ExitStatus::Code(3)));
    h.stop().await;

    // OnFailure: a successful run is not restarted.
    let h = rt.spawn_command(
        crash.clone(),
        cmd_spec(&["exit", "0"]),
        RestartPolicy::OnFailure,
        backoff,
        None,
        logs.clone(),
    );
    let mut rx = h.watch();
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| s.phase == Phase::Succeeded)).await.unwrap().unwrap();
    assert_eq!(h.status().restarts, 0);

    // Never: a failed run ends as Failed; max_failures bounds OnFailure.
    let h = rt.spawn_command(crash.clone(), cmd_spec(&[]), RestartPolicy::Never, backoff, None, logs.clone());
    let mut rx = h.watch();
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| s.phase == Phase::Failed)).await.unwrap().unwrap();
    let h = rt.spawn_command(crash, cmd_spec(&[]), RestartPolicy::OnFailure, backoff, Some(2), logs);
    let mut rx = h.watch();
    let s = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| s.phase == Phase::Failed))
        .await
        .unwrap()
        .unwrap()
        .clone();
    assert_eq!((s.failures, s.restarts), (2, 1));
}

#[tokio::test]
async fn sensor_daemon_logs_readings_and_stops_promptly() {
    let rt = runtime();
    let logs = LogBuffer::new(64 * 1024);
    let data = tempfile::tempdir().unwrap();
    let mut spec = WorkloadSpec::new("test/sensor");
    spec.env.push(("SENSOR_INTERVAL_MS".into(), "20".into()));
    spec.dirs.push(Preopen { host_path: data.path().into(), guest_path: "/data".into(), read_only: false });
    let h = rt.spawn_command(load(&rt, "sensor"), spec, RestartPolicy::Always, Backoff::default(), None, logs.clone());
    let mut sub = logs.subscribe();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let l = sub.recv().await.unwrap();
            if l.text.contains("seq=3") {
                break;
            }
        }
    })
    .await
    .expect("sensor printed 4 readings");
    assert_eq!(h.status().phase, Phase::Running);
    let t = Instant::now();
    h.stop().await;
    assert!(t.elapsed() < Duration::from_secs(2), "stop took {:?}", t.elapsed());
    let file = std::fs::read_to_string(data.path().join("readings.log")).unwrap();
    assert!(file.contains("seq=0"), "{file}");
}

#[tokio::test]
async fn spinning_command_does_not_block_the_host() {
    // A p1 module with `_start` that loops forever, encoded by hand:
    // (module (func (export "_start") (loop (br 0))))
    let bytes: Vec<u8> = vec![
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x04, 0x01, 0x60, 0x00, 0x00, 0x03, 0x02, 0x01, 0x00,
        0x07, 0x0a, 0x01, 0x06, b'_', b's', b't', b'a', b'r', b't', 0x00, 0x00, 0x0a, 0x09, 0x01, 0x07, 0x00, 0x03,
        0x40, 0x0c, 0x00, 0x0b, 0x0b,
    ];
    let rt = runtime();
    let m = rt.load(&bytes).expect("spin module");
    let logs = LogBuffer::new(1024);
    let usage = Arc::new(wasmfleet_runtime::Usage::default());
    let mut spec = WorkloadSpec::new("spin");
    spec.usage = Some(usage.clone());
    let started = Instant::now();
    let h = rt.spawn_command(m, spec, RestartPolicy::Never, Backoff::default(), None, logs);
    // The runtime (single-threaded here) still runs timers while the guest spins.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h.status().phase, Phase::Running);
    // A daemon's guest time is accounted while it runs: most of the time since it started
    // (the guest yields every epoch tick, so the sleeping test gets its turns).
    let spent = usage.cpu_ns.load(std::sync::atomic::Ordering::Relaxed);
    assert!(spent > 30_000_000 && spent <= started.elapsed().as_nanos() as u64, "{spent} ns");
    let t = Instant::now();
    h.stop().await;
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[test]
fn compiled_code_cache_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || RuntimeConfig { cache_dir: Some(dir.path().into()), max_instances: Some(8), ..Default::default() };
    let bytes = module_bytes("hello");
    let first = Runtime::new(cfg()).unwrap();
    let t = Instant::now();
    first.load(&bytes).unwrap();
    let compile = t.elapsed();
    drop(first);
    let n = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(n, 1, "one artifact cached");
    let second = Runtime::new(cfg()).unwrap();
    let t = Instant::now();
    second.load(&bytes).unwrap();
    let cached = t.elapsed();
    assert!(cached < compile, "cached load {cached:?} should beat compile {compile:?}");
}

#[tokio::test]
async fn outbound_http_only_to_allowed_hosts() {
    // A tiny upstream on 127.0.0.1:0.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(
                        b"upstream ok",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let rt = runtime();
    let m = load(&rt, "hostile");
    let path = format!("/fetch?authority={upstream}");

    // Default: no outbound network at all.
    let svc = HttpService::new(rt.clone(), &m, WorkloadSpec::new("t/deny"), LogBuffer::new(4096)).unwrap();
    let (status, body) = call(&svc, "GET", &path, b"").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("HttpRequestDenied"), "{body}");

    // Allowed by host:port.
    let mut spec = WorkloadSpec::new("t/allow");
    spec.allowed_outbound_hosts = vec![upstream.clone()];
    let svc = HttpService::new(rt.clone(), &m, spec, LogBuffer::new(4096)).unwrap();
    let (status, body) = call(&svc, "GET", &path, b"").await;
    assert_eq!((status, body.as_str()), (200, "upstream status 200\n"));

    // Another host is still denied.
    let mut spec = WorkloadSpec::new("t/other");
    spec.allowed_outbound_hosts = vec!["example.com".into()];
    let svc = HttpService::new(rt, &m, spec, LogBuffer::new(4096)).unwrap();
    assert_eq!(call(&svc, "GET", &path, b"").await.0, 502);
}

#[tokio::test]
async fn kv_keeps_values_and_counters_in_its_namespaced_buckets_within_limits() {
    use wasmfleet_runtime::keyvalue::{KeyValue as _, KvGrant, MemoryKv};
    let rt = runtime();
    let m = load(&rt, "kv");
    let backend = Arc::new(MemoryKv::default());
    let mut spec = WorkloadSpec::new("test/kv");
    spec.keyvalue = Some(KvGrant { backend: backend.clone(), prefix: "team-a/".into() });
    let svc = HttpService::new(rt.clone(), &m, spec, LogBuffer::new(64 * 1024)).expect("service");
    assert_eq!(call(&svc, "GET", "/incr?key=hits", b"").await, (200, "1".into()));
    assert_eq!(call(&svc, "GET", "/incr?key=hits&by=41", b"").await, (200, "42".into()));
    assert_eq!(call(&svc, "PUT", "/set?key=greeting&bucket=cache", b"hello").await, (200, "ok".into()));
    assert_eq!(call(&svc, "GET", "/get?key=greeting&bucket=cache", b"").await, (200, "hello".into()));
    assert_eq!(call(&svc, "GET", "/get?key=missing", b"").await.0, 404);
    assert_eq!(call(&svc, "GET", "/keys", b"").await, (200, "hits".into()));
    // The backend sees the namespaced buckets.
    assert_eq!(backend.get("team-a/default", "hits").await.unwrap(), Some(42u64.to_be_bytes().to_vec()));
    assert_eq!(backend.get("team-a/cache", "greeting").await.unwrap(), Some(b"hello".to_vec()));
    // Past the limits: a clear error for the guest, nothing stored.
    let (status, body) = call(&svc, "GET", "/set?keylen=1024&value=x", b"").await;
    assert_eq!((status, body.as_str()), (500, "key of 1024 bytes is over the limit of 256"));
    let (status, body) = call(&svc, "GET", "/set?key=big&valuelen=2097152", b"").await;
    assert_eq!(status, 500);
    assert!(body.contains("value of 2097152 bytes is over the limit"), "{body}");
    assert_eq!(call(&svc, "GET", "/get?key=big", b"").await.0, 404);
    // 0.2.0-draft2 on the same buckets: compare-and-swap and signed increments.
    assert_eq!(call(&svc, "GET", "/append?key=log&add=a", b"").await, (200, "a attempts=1".into()));
    assert_eq!(call(&svc, "GET", "/append?key=log&add=b", b"").await, (200, "ab attempts=1".into()));
    assert_eq!(call(&svc, "GET", "/get?key=log", b"").await, (200, "ab".into()));
    assert_eq!(call(&svc, "GET", "/incr2?key=hits&by=-2", b"").await, (200, "40".into()));
    // Without a grant, a bucket does not open.
    let bare = HttpService::new(rt.clone(), &m, WorkloadSpec::new("test/bare"), LogBuffer::new(1024)).unwrap();
    assert_eq!(call(&bare, "GET", "/get?key=x", b"").await, (500, "no such store".into()));
}

//! Readiness probes: an HTTP GET on the replica itself, as Kubernetes' `httpGet` probe.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::task::JoinHandle;
use wasmfleet_runtime::{HttpService, LogBuffer, LogStream};

use crate::manifest::HttpProbe;

/// Runs `probe` against `service` until aborted, keeping `ready` current, logging each
/// change and poking the reconciler (`kick`) so the change is published at once.
pub fn spawn_probe(
    service: HttpService,
    ready: Arc<AtomicBool>,
    probe: HttpProbe,
    logs: Arc<LogBuffer>,
    kick: Arc<tokio::sync::Notify>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep(probe.initial_delay).await;
        let (mut ok_run, mut fail_run) = (0u32, 0u32);
        loop {
            let req = http::Request::get(probe.path.as_str())
                .header(http::header::HOST, "localhost")
                .header(http::header::USER_AGENT, "wasmfleet-probe")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .expect("static request");
            let ok = match tokio::time::timeout(probe.timeout, service.handle(req)).await {
                Ok(resp) => {
                    let s = resp.status();
                    s.is_success() || s.is_redirection()
                }
                Err(_) => false,
            };
            if ok {
                ok_run += 1;
                fail_run = 0;
                if ok_run >= probe.success_threshold && !ready.swap(true, Ordering::Relaxed) {
                    logs.push(LogStream::System, format!("readiness probe GET {} passed: ready", probe.path));
                    kick.notify_one();
                }
            } else {
                fail_run += 1;
                ok_run = 0;
                if fail_run >= probe.failure_threshold && ready.swap(false, Ordering::Relaxed) {
                    logs.push(
                        LogStream::System,
                        format!("readiness probe GET {} failed {fail_run} times: not ready", probe.path),
                    );
                    kick.notify_one();
                }
            }
            tokio::time::sleep(probe.period).await;
        }
    })
}

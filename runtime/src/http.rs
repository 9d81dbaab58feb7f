//! [`HttpService`]: one HTTP workload (a `wasi:http/proxy` component) with its limits.
//!
//! Every request gets a fresh `Store` from the pooled allocator and a fresh instance of the
//! pre-linked component. Bodies stream both ways. Admission is a semaphore: at most
//! `max_concurrency` instances at once; excess requests wait up to `queue_timeout` and then get
//! `503`. The deadline covers instantiation, handling and the response body: a guest that spins
//! is interrupted by the epoch clock, one that waits on I/O is dropped by tokio.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpView};

use crate::engine::Runtime;
use crate::error::RuntimeError;
use crate::host::{HostState, MemLimiter, OutboundPolicy};
use crate::logs::{LogBuffer, LogSink, LogStream};
use crate::module::{Module, ModuleKind, Pre};
use crate::{Limits, WorkloadSpec};

/// Error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of responses produced by a service.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// Counters of one service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceStats {
    pub requests: u64,
    pub in_flight: u32,
    /// Requests turned away because every slot stayed busy for `queue_timeout`.
    pub rejected: u64,
    pub traps: u64,
    pub timeouts: u64,
    pub out_of_memory: u64,
    /// Time the guest ran (ns), summed over requests: the time of every poll of its future
    /// (instantiation included). Inside a poll the guest never blocks (host I/O returns
    /// pending), so this is its CPU time, short of preemption by other threads. Cumulative,
    /// wrapping: take differences with `wrapping_sub`.
    #[serde(default)]
    pub cpu_ns: u64,
    /// Requests' time in flight (ns), summed: over an interval, its increase divided by the
    /// interval is the mean concurrency (Little's law).
    #[serde(default)]
    pub busy_ns: u64,
    /// Linear memory held by instances, integrated over their requests' time (KiB·µs): over
    /// an interval, its increase divided by the interval is the mean memory in use.
    #[serde(default)]
    pub memory_kib_us: u64,
    /// Linear memory held now (a command's run; 0 for a service, whose instances live only
    /// while requests run: see `memory_kib_us`).
    #[serde(default)]
    pub memory_bytes: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    in_flight: AtomicU32,
    rejected: AtomicU64,
    traps: AtomicU64,
    timeouts: AtomicU64,
    out_of_memory: AtomicU64,
    cpu_ns: AtomicU64,
    busy_ns: AtomicU64,
    memory_kib_us: AtomicU64,
}

struct Inner {
    runtime: Arc<Runtime>,
    pre: ProxyPre<HostState>,
    name: String,
    env: Vec<(String, String)>,
    allowed: Arc<[String]>,
    router: Option<crate::OutboundRouter>,
    kv: Option<crate::keyvalue::KvGrant>,
    limits: Limits,
    sem: Arc<Semaphore>,
    logs: Arc<LogBuffer>,
    counters: Counters,
}

/// A running HTTP workload. Cheap to clone; all clones share limits and counters.
#[derive(Clone)]
pub struct HttpService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HttpService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpService").field("name", &self.inner.name).finish_non_exhaustive()
    }
}

enum Failure {
    Trap(String),
    OutOfMemory(String),
    Timeout,
    NoResponse,
}

impl HttpService {
    /// Prepares `module` (which must be a `wasi:http/proxy` component) to serve requests.
    /// Directories in the spec are not granted to HTTP services (a request has no filesystem).
    pub fn new(
        runtime: Arc<Runtime>,
        module: &Module,
        spec: WorkloadSpec,
        logs: Arc<LogBuffer>,
    ) -> Result<HttpService, RuntimeError> {
        let Pre::Proxy(pre) = &module.pre else {
            return Err(RuntimeError::WrongKind {
                name: spec.name,
                expected: ModuleKind::HttpProxy.describe(),
                actual: module.kind().describe(),
            });
        };
        let max = runtime.sizing.instance_memory_bytes;
        if spec.limits.memory_bytes > max {
            return Err(RuntimeError::MemoryAboveMaximum {
                requested_mib: spec.limits.memory_bytes >> 20,
                max_mib: max >> 20,
            });
        }
        let sem = Arc::new(Semaphore::new(spec.limits.max_concurrency.max(1) as usize));
        Ok(HttpService {
            inner: Arc::new(Inner {
                runtime,
                pre: pre.clone(),
                allowed: spec.allowed_outbound_hosts.clone().into(),
                router: spec.service_router.clone(),
                kv: spec.keyvalue.clone(),
                env: spec.env,
                name: spec.name,
                limits: spec.limits,
                sem,
                logs,
                counters: Counters::default(),
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Requests being handled right now.
    pub fn in_flight(&self) -> u32 {
        self.inner.counters.in_flight.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> ServiceStats {
        let c = &self.inner.counters;
        ServiceStats {
            requests: c.requests.load(Ordering::Relaxed),
            in_flight: c.in_flight.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            traps: c.traps.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
            out_of_memory: c.out_of_memory.load(Ordering::Relaxed),
            cpu_ns: c.cpu_ns.load(Ordering::Relaxed),
            busy_ns: c.busy_ns.load(Ordering::Relaxed),
            memory_kib_us: c.memory_kib_us.load(Ordering::Relaxed),
            memory_bytes: 0,
        }
    }

    /// Instantiates the component in a fresh store and drops it, without handling a request.
    /// For benchmarks of instantiation cost.
    #[doc(hidden)]
    pub async fn instantiate_only(&self) -> Result<(), String> {
        let deadline = Instant::now() + self.inner.limits.request_timeout;
        let mut store = self.new_store(deadline.into_std());
        self.inner.pre.instantiate_async(&mut store).await.map(drop).map_err(|e| format!("{e:#}"))
    }

    /// Handles one request. Never fails: limits and guest failures become error responses.
    pub async fn handle<B>(&self, req: http::Request<B>) -> Response<ResponseBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let inner = &self.inner;
        inner.counters.requests.fetch_add(1, Ordering::Relaxed);
        let max_body = inner.limits.max_request_body_bytes;
        if let Some(len) = content_length(req.headers())
            && len > max_body
        {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body of {len} bytes is above this workload's limit of {max_body} bytes"),
            );
        }

        let admit = async {
            let own = inner.sem.clone().acquire_owned().await.ok()?;
            let node = inner.runtime.slots.clone().acquire_owned().await.ok()?;
            Some((own, node))
        };
        let permit = match tokio::time::timeout(inner.limits.queue_timeout, admit).await {
            Ok(Some(p)) => p,
            _ => {
                inner.counters.rejected.fetch_add(1, Ordering::Relaxed);
                return error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!(
                        "{} is at its concurrency limit ({} instances, or the node's {}) and no slot freed within {:?}",
                        inner.name,
                        inner.limits.max_concurrency,
                        inner.runtime.sizing.instances,
                        inner.limits.queue_timeout
                    ),
                );
            }
        };
        let in_flight = InFlight::new(self.inner.clone());

        let deadline = Instant::now() + inner.limits.request_timeout;
        let mut store = self.new_store(deadline.into_std());
        let req = req.map(|b| {
            LimitBody::new(b.map_err(Into::into).boxed_unsync(), max_body, || {
                wasmtime_wasi_http::Error::HttpRequestBodySize(None)
            })
        });
        let (tx, rx) = tokio::sync::oneshot::channel();
        let prepared: wasmtime::Result<_> = (|| {
            let mut http = store.data_mut().http();
            let req = http.new_incoming_request(Scheme::Http, req)?;
            let out = http.new_response_outparam(tx)?;
            Ok((req, out))
        })();
        let (req, out) = match prepared {
            Ok(v) => v,
            Err(e) => return error_response(StatusCode::BAD_REQUEST, &format!("invalid request: {e:#}")),
        };

        let pre = inner.pre.clone();
        let task = tokio::spawn(async move {
            let _permit = permit;
            let in_flight = in_flight;
            let work = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy.wasi_http_incoming_handler().call_handle(&mut store, req, out).await
            };
            let account = in_flight.0.runtime.guest_time.then_some(&in_flight.0.counters.cpu_ns);
            let work = crate::timing::timed(work, account);
            // Grace after the deadline for the epoch interrupt; then drop the guest outright.
            let result = tokio::time::timeout_at(deadline + Duration::from_millis(50), work).await;
            let held_kib = store.data().limiter.in_use >> 10;
            let took_us = in_flight.1.elapsed().as_micros() as u64;
            in_flight.0.counters.memory_kib_us.fetch_add(held_kib.wrapping_mul(took_us), Ordering::Relaxed);
            let oom = store.data().limiter.exceeded;
            match result {
                Ok(Ok(())) => None,
                Err(_) => Some(Failure::Timeout),
                Ok(Err(e)) if oom => Some(Failure::OutOfMemory(format!("{e:#}"))),
                Ok(Err(e)) if matches!(e.downcast_ref::<wasmtime::Trap>(), Some(wasmtime::Trap::Interrupt)) => {
                    Some(Failure::Timeout)
                }
                Ok(Err(e)) => Some(Failure::Trap(format!("{e:#}"))),
            }
        });

        let failure = match tokio::time::timeout_at(deadline + Duration::from_millis(100), rx).await {
            Ok(Ok(Ok(resp))) => {
                let max_out = inner.limits.max_response_body_bytes;
                return resp.map(|body| {
                    LimitBody::new(body.map_err(|e| Box::new(e) as BoxError), max_out, move || {
                        format!("response body is above the limit of {max_out} bytes").into()
                    })
                    .boxed_unsync()
                });
            }
            Ok(Ok(Err(code))) => {
                return error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("the component answered with an error: {code:?}"),
                );
            }
            // The guest returned or failed without setting a response.
            Ok(Err(_)) => task.await.ok().flatten().unwrap_or(Failure::NoResponse),
            Err(_) => {
                task.abort();
                Failure::Timeout
            }
        };
        self.failure_response(failure)
    }

    fn failure_response(&self, failure: Failure) -> Response<ResponseBody> {
        let inner = &self.inner;
        let (status, msg, counter) = match failure {
            Failure::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                format!("{}: request exceeded its deadline of {:?}", inner.name, inner.limits.request_timeout),
                &inner.counters.timeouts,
            ),
            Failure::OutOfMemory(e) => {
                (StatusCode::INTERNAL_SERVER_ERROR, format!("{}: {e}", inner.name), &inner.counters.out_of_memory)
            }
            Failure::Trap(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{}: the component trapped: {e}", inner.name),
                &inner.counters.traps,
            ),
            Failure::NoResponse => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{}: the component returned without setting a response", inner.name),
                &inner.counters.traps,
            ),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let first_line = msg.lines().next().unwrap_or_default().to_string();
        inner.logs.push(LogStream::System, first_line);
        error_response(status, &msg)
    }

    fn new_store(&self, deadline: std::time::Instant) -> Store<HostState> {
        let inner = &self.inner;
        let mut wasi = WasiCtxBuilder::new();
        wasi.envs(&inner.env)
            .stdout(LogSink::new(inner.logs.clone(), LogStream::Stdout))
            .stderr(LogSink::new(inner.logs.clone(), LogStream::Stderr));
        let state = HostState {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: wasmtime::component::ResourceTable::new(),
            hooks: OutboundPolicy { allowed: inner.allowed.clone(), router: inner.router.clone() },
            limiter: MemLimiter::new(inner.limits.memory_bytes),
            kv: inner.kv.clone(),
        };
        let mut store = Store::new(&inner.runtime.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_callback(move |_| {
            if std::time::Instant::now() >= deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store.set_epoch_deadline(1);
        store
    }
}

/// A request in flight, since when.
struct InFlight(Arc<Inner>, std::time::Instant);

impl InFlight {
    fn new(inner: Arc<Inner>) -> Self {
        inner.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(inner, std::time::Instant::now())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let c = &self.0.counters;
        c.in_flight.fetch_sub(1, Ordering::Relaxed);
        c.busy_ns.fetch_add(self.1.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers.get(http::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// A plain-text error response.
pub fn error_response(status: StatusCode, msg: &str) -> Response<ResponseBody> {
    let mut body = msg.to_string();
    body.push('\n');
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header("x-wasmfleet-error", "1")
        .body(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed_unsync())
        .unwrap_or_else(|_| Response::new(http_body_util::Empty::new().map_err(|never| match never {}).boxed_unsync()))
}

/// Passes a body through, failing once more than `limit` bytes went by.
struct LimitBody<B, F> {
    inner: B,
    seen: u64,
    limit: u64,
    make_err: F,
}

impl<B, F> LimitBody<B, F> {
    fn new(inner: B, limit: u64, make_err: F) -> Self {
        LimitBody { inner, seen: 0, limit, make_err }
    }
}

impl<B, F, E> Body for LimitBody<B, F>
where
    B: Body<Data = Bytes, Error = E> + Unpin,
    F: Fn() -> E + Unpin,
{
    type Data = Bytes;
    type Error = E;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, E>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if this.seen > this.limit {
                        return Poll::Ready(Some(Err((this.make_err)())));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

//! Per-store host state: WASI and wasi:http contexts, the memory limiter, and the outbound HTTP
//! policy (an allow-list; nothing is reachable unless the spec names it).

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

/// Store data for components (HTTP services and p2 commands).
pub(crate) struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) table: ResourceTable,
    pub(crate) hooks: OutboundPolicy,
    pub(crate) limiter: MemLimiter,
    pub(crate) kv: Option<crate::keyvalue::KvGrant>,
}

impl HostState {
    pub(crate) fn kv(&mut self) -> crate::keyvalue::KvView<'_> {
        crate::keyvalue::KvView { table: &mut self.table, grant: self.kv.as_ref() }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// Store data for core wasip1 modules.
pub(crate) struct P1State {
    pub(crate) wasi: wasmtime_wasi::p1::WasiP1Ctx,
    pub(crate) limiter: MemLimiter,
}

/// Caps each linear memory of an instance; records whether the cap was hit so the outcome can
/// say "memory limit exceeded" rather than a bare trap.
pub(crate) struct MemLimiter {
    pub(crate) memory_bytes: u64,
    pub(crate) exceeded: bool,
    /// Linear memory the instance holds now (every memory, as it grew).
    pub(crate) in_use: u64,
    /// Where `in_use` is published while the instance runs (a command's).
    pub(crate) gauge: Option<std::sync::Arc<crate::Usage>>,
}

impl MemLimiter {
    pub(crate) fn new(memory_bytes: u64) -> Self {
        MemLimiter { memory_bytes, exceeded: false, in_use: 0, gauge: None }
    }
}

impl wasmtime::ResourceLimiter for MemLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired as u64 > self.memory_bytes {
            self.exceeded = true;
            return Err(wasmtime::format_err!(
                "memory limit exceeded: the guest asked for {} MiB, its limit is {} MiB",
                desired as u64 >> 20,
                self.memory_bytes >> 20
            ));
        }
        self.in_use += desired.saturating_sub(current) as u64;
        if let Some(g) = &self.gauge {
            g.memory_bytes.store(self.in_use, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// Body of a request a guest sends, and of the answer it gets.
pub type OutboundBody = WasiBody;
/// The answer to a routed outgoing request.
pub type OutboundFuture = std::pin::Pin<Box<dyn Future<Output = Result<http::Response<WasiBody>, HttpError>> + Send>>;

/// Serves a guest's outgoing `wasi:http` requests that name something inside the cluster
/// (for wasmfleet, a Service: `http://<service>/` or `http://<service>.<namespace>/`), without
/// DNS or the network. Such requests bypass the outbound allow-list, as in-cluster traffic
/// does in Kubernetes without a NetworkPolicy.
pub trait ServiceRouter: Send + Sync + 'static {
    /// Takes the request if its authority names something this router serves for a caller
    /// in `namespace`; gives it back otherwise.
    fn route(
        &self,
        namespace: &str,
        request: http::Request<WasiBody>,
    ) -> Result<OutboundFuture, Box<http::Request<WasiBody>>>;
}

/// Outbound `wasi:http` policy: in-cluster names go to the router; anything else must match
/// the allow-list.
pub(crate) struct OutboundPolicy {
    pub(crate) allowed: Arc<[String]>,
    pub(crate) router: Option<crate::OutboundRouter>,
}

impl OutboundPolicy {
    pub(crate) fn allows(&self, host: &str, port: Option<u16>) -> bool {
        host_allowed(&self.allowed, host, port)
    }
}

/// Whether `host[:port]` matches one of the patterns: `*`, `host`, `host:port`, `*.suffix`.
pub(crate) fn host_allowed(patterns: &[String], host: &str, port: Option<u16>) -> bool {
    let host = host.to_ascii_lowercase();
    patterns.iter().any(|p| {
        let p = p.to_ascii_lowercase();
        if p == "*" {
            return true;
        }
        let (phost, pport) = match p.rsplit_once(':') {
            Some((h, pt)) if pt.chars().all(|c| c.is_ascii_digit()) => (h.to_string(), pt.parse::<u16>().ok()),
            _ => (p.clone(), None),
        };
        if let Some(pp) = pport
            && Some(pp) != port
        {
            return false;
        }
        match phost.strip_prefix("*.") {
            Some(suffix) => host.ends_with(&format!(".{suffix}")),
            None => host == phost,
        }
    })
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (http::Response<WasiBody>, Box<dyn Future<Output = Result<(), HttpError>> + Send>),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        let _ = fut;
        let request = match &self.router {
            Some(r) => match r.router.route(&r.namespace, request) {
                Ok(answer) => {
                    return Box::new(async move {
                        let response = answer.await?;
                        Ok((response, Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>))
                    });
                }
                Err(request) => *request,
            },
            None => request,
        };
        let uri = request.uri();
        let allowed = match uri.host() {
            Some(h) => self.allows(h, uri.port_u16()),
            None => false,
        };
        if !allowed {
            tracing::debug!(uri = %uri, "outbound request denied by allow-list");
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((res.map(BodyExt::boxed_unsync), Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::host_allowed;

    #[test]
    fn allow_list_patterns() {
        let p = vec!["api.example.com".to_string(), "*.svc.local".into(), "db:5432".into()];
        assert!(host_allowed(&p, "api.example.com", None));
        assert!(host_allowed(&p, "API.example.com", Some(443)));
        assert!(host_allowed(&p, "a.svc.local", None));
        assert!(!host_allowed(&p, "svc.local", None));
        assert!(host_allowed(&p, "db", Some(5432)));
        assert!(!host_allowed(&p, "db", Some(80)));
        assert!(!host_allowed(&p, "evil.com", None));
        assert!(!host_allowed(&[], "anything", None));
        assert!(host_allowed(&["*".into()], "anything", None));
    }
}

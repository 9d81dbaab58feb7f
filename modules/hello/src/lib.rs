//! `hello`: a `wasi:http/proxy` component that greets, echoes the path and says which replica
//! answered (from the `WASMFLEET_REPLICA` and `WASMFLEET_NODE` environment variables that the
//! host sets). The same `.wasm` runs under `wasmtime serve`, Spin and wasmfleet.

use std::io::Write as _;

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Hello);

struct Hello;

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_else(|| "/".to_string());
        let replica = std::env::var("WASMFLEET_REPLICA").unwrap_or_else(|_| "standalone".into());
        let node = std::env::var("WASMFLEET_NODE").unwrap_or_else(|_| "-".into());
        let greeting = std::env::var("GREETING").unwrap_or_else(|_| "Hello from wasmfleet".into());
        let text = format!("{greeting}! path={path} replica={replica} node={node}\n");

        let headers = Fields::new();
        let _ = headers.set("content-type", &[b"text/plain; charset=utf-8".to_vec()]);
        let _ = headers.set("content-length", &[text.len().to_string().into_bytes()]);
        let resp = OutgoingResponse::new(headers);
        let body = resp.body().expect("outgoing body");
        ResponseOutparam::set(response_out, Ok(resp));

        let mut out = body.write().expect("outgoing stream");
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
        drop(out);
        let _ = OutgoingBody::finish(body, None);
    }
}

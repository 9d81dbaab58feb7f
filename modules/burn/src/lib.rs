//! `burn`: a `wasi:http/proxy` component that spends CPU on every request, for autoscaling
//! tests and benchmarks. `GET /?ms=N` spins for N milliseconds of the monotonic clock (default
//! `BURN_MS` from the environment, else 10) and answers how long it spun; `/ready` answers at
//! once.

use std::io::Write as _;

use wasip2::clocks::monotonic_clock;
use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

wasip2::http::proxy::export!(Burn);

struct Burn;

/// The `ms=` query parameter, if any.
fn ms_of(path: &str) -> Option<u64> {
    let query = path.split_once('?')?.1;
    query.split('&').find_map(|kv| kv.strip_prefix("ms=")?.parse().ok())
}

/// Spins for `ms` milliseconds; returns a value the optimizer cannot drop.
fn spin(ms: u64) -> u64 {
    let until = monotonic_clock::now() + ms * 1_000_000;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while monotonic_clock::now() < until {
        for _ in 0..1000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
    }
    x
}

impl wasip2::exports::http::incoming_handler::Guest for Burn {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_else(|| "/".to_string());
        let text = if path.starts_with("/ready") {
            "ready\n".to_string()
        } else {
            let default = std::env::var("BURN_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
            let ms = ms_of(&path).unwrap_or(default);
            let x = spin(ms);
            format!("burned {ms} ms ({x:x})\n")
        };
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

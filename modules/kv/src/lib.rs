//! `kv`: a `wasi:http/proxy` component over `wasi:keyvalue` buckets, for tests and the demo.
//!
//! - `GET /incr?key=K[&by=N]`: `atomics.increment`, answers the new value;
//! - `GET /get?key=K`: the value as text (404 when there is none);
//! - `PUT /set?key=K` with the value as the body, or `GET /set?key=K&value=V`;
//! - `GET /del?key=K`, `GET /keys`;
//! - `GET /bench?op=get|set|incr|fill&n=N&key=K[&valuelen=L]`: N operations timed inside the
//!   component (the monotonic clock around each call; `fill` sets the keys K0 .. K(N-1)),
//!   answers `p50_ns p99_ns max_ns`;
//! - `&bucket=B` names the bucket (default: the `default` bucket).
//!
//! A bucket error answers 500 with the error (a key over the limit, a node without quorum ...).

use std::io::Write as _;

use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

mod kv {
    wit_bindgen::generate!({
        path: "../../runtime/wit/keyvalue",
        world: "wasi:keyvalue/imports",
        generate_all,
    });
}

use kv::wasi::keyvalue::{atomics, store};

wasip2::http::proxy::export!(Kv);

struct Kv;

fn query(path: &str, name: &str) -> Option<String> {
    let q = path.split_once('?')?.1;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| v.to_string())
    })
}

fn error_text(e: store::Error) -> String {
    match e {
        store::Error::NoSuchStore => "no such store".into(),
        store::Error::AccessDenied => "access denied".into(),
        store::Error::Other(s) => s,
    }
}

fn read_body(request: &IncomingRequest) -> Vec<u8> {
    let mut out = Vec::new();
    let Ok(body) = request.consume() else { return out };
    let Ok(stream) = body.stream() else { return out };
    while let Ok(chunk) = stream.blocking_read(64 * 1024) {
        out.extend_from_slice(&chunk);
    }
    out
}

fn handle(request: &IncomingRequest, path: &str) -> Result<(u16, Vec<u8>), String> {
    let route = path.split('?').next().unwrap_or("/");
    let bucket = store::open(&query(path, "bucket").unwrap_or_default()).map_err(error_text)?;
    // A key may be given as `key=K`, or as `keylen=N` (N bytes of `k`, to try the limits).
    let key = match (query(path, "key"), query(path, "keylen").and_then(|n| n.parse::<usize>().ok())) {
        (Some(k), _) => k,
        (None, Some(n)) => "k".repeat(n),
        (None, None) => String::new(),
    };
    match route {
        "/incr" => {
            let by = query(path, "by").and_then(|b| b.parse().ok()).unwrap_or(1);
            let n = atomics::increment(&bucket, &key, by).map_err(error_text)?;
            Ok((200, n.to_string().into_bytes()))
        }
        "/get" => match bucket.get(&key).map_err(error_text)? {
            Some(v) if v.len() == 8 && query(path, "raw").is_none() => {
                Ok((200, u64::from_be_bytes(v.try_into().unwrap_or_default()).to_string().into_bytes()))
            }
            Some(v) => Ok((200, v)),
            None => Ok((404, b"no value".to_vec())),
        },
        "/set" => {
            let value = match query(path, "value") {
                Some(v) => v.into_bytes(),
                None => match query(path, "valuelen").and_then(|n| n.parse::<usize>().ok()) {
                    Some(n) => vec![b'v'; n],
                    None => read_body(request),
                },
            };
            bucket.set(&key, &value).map_err(error_text)?;
            Ok((200, b"ok".to_vec()))
        }
        "/del" => {
            bucket.delete(&key).map_err(error_text)?;
            Ok((200, b"ok".to_vec()))
        }
        "/keys" => {
            let mut keys = Vec::new();
            let mut cursor = None;
            loop {
                let page = bucket.list_keys(cursor).map_err(error_text)?;
                keys.extend(page.keys);
                match page.cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            Ok((200, keys.join("\n").into_bytes()))
        }
        "/bench" => {
            let n = query(path, "n").and_then(|n| n.parse::<usize>().ok()).unwrap_or(1000).clamp(1, 100_000);
            let op = query(path, "op").unwrap_or_else(|| "get".into());
            let value = vec![b'v'; query(path, "valuelen").and_then(|l| l.parse().ok()).unwrap_or(16)];
            let mut times = Vec::with_capacity(n);
            for _ in 0..n {
                let t0 = wasip2::clocks::monotonic_clock::now();
                match op.as_str() {
                    "set" => bucket.set(&key, &value).map_err(error_text)?,
                    "fill" => bucket.set(&format!("{key}{}", times.len()), &value).map_err(error_text)?,
                    "incr" => {
                        atomics::increment(&bucket, &key, 1).map_err(error_text)?;
                    }
                    _ => {
                        bucket.get(&key).map_err(error_text)?;
                    }
                }
                times.push(wasip2::clocks::monotonic_clock::now() - t0);
            }
            times.sort_unstable();
            let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
            Ok((200, format!("{} {} {}", at(0.5), at(0.99), times[times.len() - 1]).into_bytes()))
        }
        _ => Ok((404, b"routes: /incr /get /set /del /keys /bench".to_vec())),
    }
}

impl wasip2::exports::http::incoming_handler::Guest for Kv {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_else(|| "/".to_string());
        let (status, body) = match handle(&request, &path) {
            Ok(answer) => answer,
            Err(e) => (500, e.into_bytes()),
        };
        let headers = Fields::new();
        let _ = headers.set("content-type", &[b"text/plain; charset=utf-8".to_vec()]);
        let response = OutgoingResponse::new(headers);
        let _ = response.set_status_code(status);
        let Ok(out) = response.body() else { return };
        ResponseOutparam::set(response_out, Ok(response));
        if let Ok(mut stream) = out.write() {
            let _ = stream.write_all(&body);
            let _ = stream.flush();
        }
        let _ = OutgoingBody::finish(out, None);
    }
}

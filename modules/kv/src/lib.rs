//! `kv`: a `wasi:http/proxy` component over `wasi:keyvalue` buckets, for tests and the demo.
//!
//! - `GET /incr?key=K[&by=N]`: `atomics.increment`, answers the new value;
//! - `GET /get?key=K`: the value as text (404 when there is none);
//! - `PUT /set?key=K` with the value as the body, or `GET /set?key=K&value=V`;
//! - `GET /del?key=K`, `GET /keys`;
//! - `GET /bench?op=get|set|incr|fill&n=N&key=K[&valuelen=L]`: N operations timed inside the
//!   component (the monotonic clock around each call; `fill` sets the keys K0 .. K(N-1)),
//!   answers `p50_ns p99_ns max_ns`;
//! - through `wasi:keyvalue@0.2.0-draft2`: `GET /append?key=K&add=X` appends X to the text at
//!   K with compare-and-swap (retried on conflict; answers the text and the attempts), and
//!   `GET /incr2?key=K&by=N` (a signed increment);
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

/// The same buckets through `wasi:keyvalue@0.2.0-draft2` (compare-and-swap, signed increments).
mod kv2 {
    wit_bindgen::generate!({
        path: "../../runtime/wit/keyvalue-draft2",
        world: "wasi:keyvalue/imports@0.2.0-draft2",
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
        "/append" | "/incr2" => draft2(route, path, &key),
        _ => Ok((404, b"routes: /incr /get /set /del /keys /bench /append /incr2".to_vec())),
    }
}

fn error2_text(e: kv2::wasi::keyvalue::store::Error) -> String {
    use kv2::wasi::keyvalue::store::Error;
    match e {
        Error::NoSuchStore => "no such store".into(),
        Error::AccessDenied => "access denied".into(),
        Error::Other(s) => s,
    }
}

/// The draft2 routes.
fn draft2(route: &str, path: &str, key: &str) -> Result<(u16, Vec<u8>), String> {
    use kv2::wasi::keyvalue::{atomics as atomics2, store as store2};
    let bucket = store2::open(&query(path, "bucket").unwrap_or_default()).map_err(error2_text)?;
    if route == "/incr2" {
        let by = query(path, "by").and_then(|b| b.parse().ok()).unwrap_or(1i64);
        let n = atomics2::increment(&bucket, key, by).map_err(error2_text)?;
        return Ok((200, n.to_string().into_bytes()));
    }
    let add = query(path, "add").unwrap_or_default();
    for attempt in 1..=100 {
        let cas = atomics2::Cas::new(&bucket, key).map_err(error2_text)?;
        let mut text = cas.current().map_err(error2_text)?.unwrap_or_default();
        text.extend_from_slice(add.as_bytes());
        match atomics2::swap(cas, &text) {
            Ok(()) => {
                let mut answer = text;
                answer.extend_from_slice(format!(" attempts={attempt}").as_bytes());
                return Ok((200, answer));
            }
            Err(atomics2::CasError::CasFailed(_)) => continue,
            Err(atomics2::CasError::StoreError(e)) => return Err(error2_text(e)),
        }
    }
    Err("compare-and-swap kept failing".into())
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

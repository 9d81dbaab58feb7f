//! `hostile`: a `wasi:http/proxy` component that misbehaves on request, for limit tests.
//!
//! - `/loop`  spins forever (stopped by the host's deadline),
//! - `/oom`   grows memory until allocation fails (stopped by the memory limit),
//! - `/trap`  panics (an `unreachable` trap),
//! - `/sleep?ms=N` sleeps N ms then answers (for admission/concurrency tests),
//! - `/fetch?authority=HOST:PORT` makes an outgoing `wasi:http` GET to `http://HOST:PORT/` and
//!   answers with the upstream status, or `502` with the error (for the egress allow-list),
//! - anything else answers `ok`.

use std::io::Write as _;

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Hostile);

struct Hostile;

fn respond(response_out: ResponseOutparam, status: u16, text: &str) {
    let resp = OutgoingResponse::new(Fields::new());
    let _ = resp.set_status_code(status);
    let body = resp.body().expect("outgoing body");
    ResponseOutparam::set(response_out, Ok(resp));
    let mut out = body.write().expect("outgoing stream");
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    drop(out);
    let _ = OutgoingBody::finish(body, None);
}

impl wasip2::exports::http::incoming_handler::Guest for Hostile {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let (route, query) = path.split_once('?').unwrap_or((path.as_str(), ""));
        match route {
            "/loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "/oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    let mut chunk = vec![0u8; 1 << 20];
                    chunk[0] = 1;
                    hoard.push(std::hint::black_box(chunk));
                }
            }
            "/trap" => panic!("hostile module asked to trap"),
            "/sleep" => {
                let ms: u64 = query
                    .strip_prefix("ms=")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(100);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                respond(response_out, 200, "slept\n");
            }
            "/fetch" => {
                let authority = query.strip_prefix("authority=").unwrap_or("");
                match fetch(authority) {
                    Ok(status) => respond(response_out, 200, &format!("upstream status {status}\n")),
                    Err(e) => respond(response_out, 502, &format!("fetch failed: {e}\n")),
                }
            }
            _ => respond(response_out, 200, "ok\n"),
        }
    }
}

fn fetch(authority: &str) -> Result<u16, String> {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{OutgoingRequest, Scheme};
    let req = OutgoingRequest::new(Fields::new());
    req.set_scheme(Some(&Scheme::Http)).map_err(|_| "scheme")?;
    req.set_authority(Some(authority)).map_err(|_| "authority")?;
    req.set_path_with_query(Some("/")).map_err(|_| "path")?;
    let fut = outgoing_handler::handle(req, None).map_err(|e| format!("{e:?}"))?;
    fut.subscribe().block();
    match fut.get() {
        Some(Ok(Ok(resp))) => Ok(resp.status()),
        Some(Ok(Err(code))) => Err(format!("{code:?}")),
        Some(Err(())) => Err("response already taken".into()),
        None => Err("no response".into()),
    }
}

//! `echo`: a `wasi:http/proxy` component that answers with the request's method, path and
//! headers, followed by the request body, streamed back chunk by chunk.

use std::io::Write as _;

use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Echo);

struct Echo;

fn method_name(m: &Method) -> String {
    match m {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(s) => s.clone(),
    }
}

impl wasip2::exports::http::incoming_handler::Guest for Echo {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let method = method_name(&request.method());
        let path = request.path_with_query().unwrap_or_else(|| "/".to_string());
        let mut head = format!("method: {method}\npath: {path}\nheaders:\n");
        for (name, value) in request.headers().entries() {
            head.push_str(&format!("  {name}: {}\n", String::from_utf8_lossy(&value)));
        }
        head.push('\n');

        let headers = Fields::new();
        let _ = headers.set("content-type", &[b"text/plain; charset=utf-8".to_vec()]);
        let _ = headers.set("x-echo-method", &[method.into_bytes()]);
        let resp = OutgoingResponse::new(headers);
        let out_body = resp.body().expect("outgoing body");
        ResponseOutparam::set(response_out, Ok(resp));
        let mut out = out_body.write().expect("outgoing stream");
        let _ = out.write_all(head.as_bytes());

        if let Ok(in_body) = request.consume() {
            if let Ok(stream) = in_body.stream() {
                loop {
                    match stream.blocking_read(64 * 1024) {
                        Ok(chunk) if chunk.is_empty() => continue,
                        Ok(chunk) => {
                            if out.write_all(&chunk).is_err() {
                                break;
                            }
                        }
                        Err(_) => break, // closed: end of body
                    }
                }
            }
        }
        let _ = out.flush();
        drop(out);
        let _ = OutgoingBody::finish(out_body, None);
    }
}

//! The control API over real HTTP: body limits per route, the durability of writes as the CLI
//! reports it, and the `/metrics` text.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::*;

/// Sends a POST by hand (so that `Content-Length` can announce more than is sent) and
/// returns the status and body of the answer.
fn post_raw(api: &str, token: &str, path: &str, content_length: usize, body: &[u8]) -> (u16, String) {
    let addr = api.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).expect("connect to the API");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\nContent-Length: {content_length}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

#[test]
fn each_route_takes_the_body_it_needs_and_answers_413_above() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path());
    let token = agent.token();
    // Announced sizes over each route's limit: refused before anything is read.
    for (path, over, limit) in [
        ("/v1/apply", (4 << 20) + 1, "4194304 bytes"),
        ("/v1/delete", (4 << 20) + 1, "4194304 bytes"),
        ("/v1/scale/default/hello", (16 << 10) + 1, "16384 bytes"),
        ("/v1/tokens", (16 << 10) + 1, "16384 bytes"),
        ("/v1/modules?name=big:1", (64 << 20) + 1, "67108864 bytes"),
    ] {
        let (status, body) = post_raw(&agent.api, &token, path, over, b"");
        assert_eq!(status, 413, "{path}: {body}");
        assert!(body.contains(limit), "{path}: the answer names the limit: {body}");
    }
    // 5 MiB is over the manifest limit but within the module limit: read, then judged on
    // its content.
    let five_mib = vec![b'x'; 5 << 20];
    let (status, body) = post_raw(&agent.api, &token, "/v1/modules?name=big:1", five_mib.len(), &five_mib);
    assert_eq!(status, 400, "{body}");
    // Within the limit, a small JSON body still works.
    let (status, body) = post_raw(&agent.api, &token, "/v1/tokens", 17, br#"{"ttl_secs":3600}"#);
    assert_eq!(status, 200, "{body}");
}

/// An agent stand-in that answers every request `202 Accepted`, durable on 1 of 2 nodes.
fn short_of_quorum_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(stream);
            let mut content_length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    content_length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; content_length];
            let _ = reader.read_exact(&mut body);
            let answer = "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nx-wasmfleet-copies: 1\r\nx-wasmfleet-copies-wanted: 2\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]";
            let _ = reader.get_mut().write_all(answer.as_bytes());
        }
    });
    format!("http://{addr}")
}

#[test]
fn a_write_short_of_its_quorum_warns_and_fails_with_wait_durable() {
    let server = short_of_quorum_server();
    let manifest = example("hello.yaml");
    let run = |extra: &[&str]| {
        std::process::Command::new(BIN)
            .args(["apply", "-f", manifest.to_str().unwrap(), "--server", &server, "--token", "t"])
            .args(extra)
            .env("WASMFLEET_DATA_DIR", "/nonexistent")
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert!(out.status.success(), "without --wait-durable the write stands: {}", stderr(&out));
    assert!(stderr(&out).contains("warning: durable on 1 of 2 nodes"), "{}", stderr(&out));
    let out = run(&["--wait-durable"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("warning: durable on 1 of 2 nodes"), "{}", stderr(&out));
}

/// Checks the OpenMetrics text line by line: comments are `# TYPE|HELP|UNIT name ...`, every
/// sample is `name{labels} value` of a declared family, and the text ends with `# EOF`.
/// Returns the families.
fn parse_openmetrics(text: &str) -> BTreeSet<String> {
    let mut families = BTreeSet::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "no `# EOF` at the end:\n{text}");
    let valid_name = |n: &str| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    for line in &lines[..lines.len() - 1] {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            assert!(["TYPE", "HELP", "UNIT"].contains(&kind) && valid_name(name), "bad comment line: {line}");
            if kind == "TYPE" {
                let t = parts.next().unwrap_or("");
                assert!(["counter", "gauge", "histogram", "info", "summary", "unknown"].contains(&t), "{line}");
                families.insert(name.to_string());
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        assert!(value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value), "bad value: {line}");
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line}"));
                for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("bad label: {line}"));
                    assert!(valid_name(k) && !v.trim_end_matches('"').contains('"'), "bad label: {line}");
                }
                name
            }
            None => series,
        };
        assert!(valid_name(name), "bad name: {line}");
        assert!(
            families.iter().any(|f| name == f || name.strip_prefix(f.as_str()).is_some_and(|s| s.starts_with('_'))),
            "sample of an undeclared family: {line}"
        );
    }
    families
}

#[test]
fn metrics_parse_and_carry_the_gateway_families() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path());
    ok(agent.cli(&["push", "hello:1.0", module_path("hello").to_str().unwrap()]));
    ok(agent.cli(&["apply", "-f", example("hello.yaml").to_str().unwrap()]));
    wait_for("hello to answer through the gateway", Duration::from_secs(30), || match agent.get("hello", "/") {
        Ok((200, _, _)) => Some(()),
        _ => None,
    });
    for i in 0..5 {
        assert_eq!(agent.get("hello", &format!("/{i}")).unwrap().0, 200);
    }
    let resp = ureq::get(&format!("{}/metrics", agent.api))
        .set("Authorization", &format!("Bearer {}", agent.token()))
        .call()
        .unwrap();
    assert!(resp.content_type().contains("openmetrics"), "{}", resp.content_type());
    let text = resp.into_string().unwrap();
    let families = parse_openmetrics(&text);
    for family in [
        "wasmfleet_gateway_requests",
        "wasmfleet_gateway_unavailable",
        "wasmfleet_gateway_forwarded",
        "wasmfleet_gateway_retried",
        "wasmfleet_gateway_request_duration_seconds",
        "wasmfleet_replica_requests",
        "wasmfleet_replica_in_flight",
        "wasmfleet_replica_restarts",
        "wasmfleet_replica_ready",
        "wasmfleet_uptime_seconds",
    ] {
        assert!(families.contains(family), "no family {family} in:\n{text}");
    }
    let series = r#"{service="hello",namespace="default"}"#;
    let value = |name: &str| -> f64 {
        let prefix = format!("{name}{series} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name}{series} in:\n{text}"))
    };
    assert!(value("wasmfleet_gateway_requests_total") >= 6.0, "{text}");
    assert!(value("wasmfleet_gateway_request_duration_seconds_count") >= 6.0, "{text}");
    assert_eq!(value("wasmfleet_gateway_forwarded_total"), 0.0, "one node forwards nothing");
}

//! A small blocking client of the control API, used by the CLI (and by tests).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::control::api::{COPIES_HEADER, Durability, ErrorBody, ObjectView, WANTED_HEADER};
use crate::control::verbs::{ImageUpdate, RolloutAction, RolloutAnswer};
use crate::manifest::Kind;

/// Where and how to reach an agent.
#[derive(Clone, Debug)]
pub struct Client {
    pub base: String,
    token: String,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(base: impl Into<String>, token: impl Into<String>) -> Client {
        let agent = ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(5)).build();
        Client { base: base.into().trim_end_matches('/').to_string(), token: token.into(), agent }
    }

    /// Resolves the server and token: flags/env first, then the agent's data dir
    /// (`api.addr` and `token`, which the agent writes there).
    pub fn resolve(server: Option<String>, token: Option<String>, data_dir: &Path) -> Result<Client> {
        let from_dir = |file: &str| -> Result<String> {
            let p: PathBuf = data_dir.join(file);
            std::fs::read_to_string(&p).map(|s| s.trim().to_string()).with_context(|| {
                format!(
                    "no running agent found: cannot read {} (start one with `wasmfleet agent`, or pass --server URL and --token / WASMFLEET_SERVER and WASMFLEET_TOKEN)",
                    p.display()
                )
            })
        };
        let server = match server {
            Some(s) => s,
            None => from_dir("api.addr")?,
        };
        let token = match token {
            Some(t) => t,
            None => from_dir("token")?,
        };
        Ok(Client::new(server, token))
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        self.agent
            .request(method, &format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {}", self.token))
    }

    fn check(&self, r: std::result::Result<ureq::Response, ureq::Error>) -> Result<ureq::Response> {
        match r {
            Ok(resp) => Ok(resp),
            Err(ureq::Error::Status(code, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                match serde_json::from_str::<ErrorBody>(&text) {
                    Ok(b) if b.details.is_empty() => Err(anyhow!("{}", b.error)),
                    Ok(b) => Err(anyhow!("{}:\n  {}", b.error, b.details.join("\n  "))),
                    Err(_) => Err(anyhow!("server answered {code}: {}", text.trim())),
                }
            }
            Err(e) => Err(anyhow!("cannot reach the wasmfleet agent at {}: {e} (is it running?)", self.base)),
        }
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self.check(self.request("GET", path).call())?;
        resp.into_json().context("decoding the server's answer")
    }

    /// A GET that also reports `x-wasmfleet-in-sync` (false: the node lags its peers).
    pub fn get_local<T: DeserializeOwned>(&self, path: &str) -> Result<(T, bool)> {
        let resp = self.check(self.request("GET", path).call())?;
        let in_sync = resp.header("x-wasmfleet-in-sync").is_none_or(|v| v == "true");
        Ok((resp.into_json().context("decoding the server's answer")?, in_sync))
    }

    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self.check(self.request("DELETE", path).call())?;
        resp.into_json().context("decoding the server's answer")
    }

    pub fn post_json<T: DeserializeOwned, B: Serialize>(&self, path: &str, body: &B) -> Result<T> {
        let resp = self.check(self.request("POST", path).send_json(body))?;
        resp.into_json().context("decoding the server's answer")
    }

    /// A write (`apply`, `push`, ...) with a raw body: its answer and how durable it is.
    pub fn write_bytes<T: DeserializeOwned>(&self, path: &str, content_type: &str, body: &[u8]) -> Result<Written<T>> {
        Written::from(self.check(self.request("POST", path).set("Content-Type", content_type).send_bytes(body))?)
    }

    /// A write (`delete`, `scale`) with a JSON body: its answer and how durable it is.
    pub fn write_json<T: DeserializeOwned, B: Serialize>(&self, path: &str, body: &B) -> Result<Written<T>> {
        Written::from(self.check(self.request("POST", path).send_json(body))?)
    }

    /// One object with its live status (`GET /v1/objects/{kind}/{ns}/{name}`).
    pub fn object(&self, kind: Kind, namespace: &str, name: &str) -> Result<ObjectView> {
        self.get(&format!("/v1/objects/{}/{}/{}", kind.plural(), encode(namespace), encode(name)))
    }

    /// `rollout pause|resume|restart|undo` of a Deployment (`POST /v1/rollout/{ns}/{name}`).
    pub fn rollout(&self, namespace: &str, name: &str, action: &RolloutAction) -> Result<Written<RolloutAnswer>> {
        self.write_json(&format!("/v1/rollout/{}/{}", encode(namespace), encode(name)), action)
    }

    /// `set image` of a Deployment (`POST /v1/image/{ns}/{name}`).
    pub fn set_image(&self, namespace: &str, name: &str, update: &ImageUpdate) -> Result<Written<RolloutAnswer>> {
        self.write_json(&format!("/v1/image/{}/{}", encode(namespace), encode(name)), update)
    }

    pub fn post_bytes<T: DeserializeOwned>(&self, path: &str, content_type: &str, body: &[u8]) -> Result<T> {
        let resp = self.check(self.request("POST", path).set("Content-Type", content_type).send_bytes(body))?;
        resp.into_json().context("decoding the server's answer")
    }

    /// A streaming GET (logs -f).
    pub fn stream(&self, path: &str) -> Result<impl Read + Send + use<>> {
        let resp = self.check(self.request("GET", path).call())?;
        Ok(resp.into_reader())
    }
}

/// The answer to a write.
#[derive(Debug)]
pub struct Written<T> {
    pub body: T,
    /// From the answer's headers; `None` when the write changed nothing.
    pub durability: Option<Durability>,
}

impl<T: DeserializeOwned> Written<T> {
    fn from(resp: ureq::Response) -> Result<Written<T>> {
        let header = |name: &str| resp.header(name).and_then(|v| v.trim().parse::<usize>().ok());
        let durability = match (header(COPIES_HEADER), header(WANTED_HEADER)) {
            (Some(copies), Some(wanted)) => Some(Durability { copies, wanted }),
            _ => None,
        };
        Ok(Written { body: resp.into_json().context("decoding the server's answer")?, durability })
    }
}

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

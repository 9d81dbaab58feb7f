//! The control API: HTTP/JSON under `/v1`, bearer-token protected.
//!
//! Handlers parse a request into a typed call and hand it to one place that acts
//! ([`Api`]); every failure is an [`ApiError`], mapped to a status code in one function.
//!
//! Map: [`ApiError`] and its status mapping; the answer types; [`Api`] (push, apply, delete,
//! scale, reads); auth; write answers (200, or 202 short of the quorum) and per-route body limits;
//! [`router`]; the logs handler.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};
use wasmfleet_cluster::replication::ReplicationError;
use wasmfleet_runtime::{Digest, ModuleKind, Runtime};

use crate::clock::now_ms;
use crate::control::verbs::{ImageUpdate, RolloutAction, RolloutAnswer};
use crate::manifest::{Kind, ManifestError, Object, ObjectKey};
use crate::reconcile::{ObjectStatus, Reconciler, ReplicaStatus};
use crate::state::{ApplyAction, MAX_MODULE_BYTES, ModuleRecord, Store, StoreError, StoredObject};

pub use super::apply::apply_manifest;
pub(crate) use super::apply::resolve_image;

/// Largest manifest (`apply`) or JSON request derived from one (`delete` by keys).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Largest small JSON request (`scale`, `tokens`), and the default of any other body.
pub const MAX_SMALL_JSON_BYTES: usize = 16 << 10;

/// Header of every write's answer: nodes that hold the write durably, this one included.
pub const COPIES_HEADER: &str = "x-wasmfleet-copies";
/// Header of every write's answer: copies the write quorum asks for, this node included.
pub const WANTED_HEADER: &str = "x-wasmfleet-copies-wanted";

/// Every way an API call can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or wrong API token: pass `Authorization: Bearer <token>` (CLI: --token or WASMFLEET_TOKEN)")]
    Unauthorized,
    #[error("{what} not found")]
    NotFound { what: String },
    #[error(
        "request body of {path} is over its limit of {limit_bytes} bytes ({} KiB){}",
        limit_bytes / 1024,
        if *path == "/v1/modules" { "" } else { ": split it into smaller requests" }
    )]
    TooLarge { path: String, limit_bytes: usize },
    #[error("{0}")]
    BadRequest(String),
    /// The request conflicts with the state of the object (a bound volume deleted).
    #[error("{0}")]
    Conflict(String),
    /// The cluster cannot serve it now (a key-value write without a majority).
    #[error("{0}")]
    Unavailable(String),
    #[error("invalid manifest ({} error{})", .0.len(), if .0.len() == 1 { "" } else { "s" })]
    Invalid(Vec<ManifestError>),
    #[error("{0}")]
    Storage(#[from] StoreError),
    /// The write is durable here but could not be pushed to peers (anti-entropy brings it to
    /// them later).
    #[error("written on this node, but not replicated: {0}")]
    NotReplicated(#[from] ReplicationError),
    #[error("internal error: {0}")]
    Internal(String),
}

#[derive(Serialize, Deserialize, Debug)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

impl ApiError {
    /// The one place that maps errors to status codes.
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Storage(_) | ApiError::NotReplicated(_) | ApiError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let details = match &self {
            ApiError::Invalid(errs) => errs.iter().map(|e| e.to_string()).collect(),
            _ => Vec::new(),
        };
        (self.status(), axum::Json(ErrorBody { error: self.to_string(), details })).into_response()
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// The acting side of the API.
pub struct Api {
    pub store: Arc<Store>,
    pub reconciler: Reconciler,
    pub runtime: Arc<Runtime>,
    pub token: String,
    pub node: String,
    pub started: Instant,
    pub peering: Arc<crate::peering::Peering>,
    pub leave_tx: tokio::sync::watch::Sender<bool>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct PushResponse {
    /// Nodes holding the module (and its tag) durably, this one included.
    #[serde(default)]
    pub copies: usize,
    /// Copies the write quorum asks for (this node included); fewer `copies` answer `202`.
    #[serde(default)]
    pub wanted: usize,
    pub name: Option<String>,
    pub digest: Digest,
    pub kind: ModuleKind,
    pub kind_description: String,
    pub size_bytes: u64,
    pub imports: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ApplyResult {
    pub key: ObjectKey,
    pub action: ApplyAction,
}

/// An object with its live status.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ObjectView {
    pub key: ObjectKey,
    pub object: serde_json::Value,
    pub resolved: BTreeMap<String, Digest>,
    pub generation: u64,
    pub version: String,
    pub created_ms: u64,
    pub status: ObjectStatus,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct NodeView {
    pub name: String,
    pub version: String,
    pub uptime_s: u64,
    pub pool: wasmfleet_runtime::PoolSizing,
}

impl Api {
    fn view(&self, rec: StoredObject) -> ObjectView {
        let mut status = self.reconciler.object_status(&rec.key).unwrap_or_default();
        if let Some(r) = &mut status.rollout {
            // The stored generation, not the one the last pass saw: a spec written since then
            // is not observed yet (`rollout status` waits for it).
            r.generation = rec.generation;
        }
        ObjectView {
            object: rec.object.clone().unwrap_or_default(),
            resolved: rec.resolved,
            generation: rec.generation,
            version: rec.version.to_string(),
            created_ms: rec.created_ms,
            key: rec.key,
            status,
        }
    }

    /// Validates and stores a module; tags it when `name` is given.
    pub async fn push(&self, name: Option<String>, bytes: Bytes) -> ApiResult<PushResponse> {
        if let Some(n) = &name {
            validate_module_name(n)?;
        }
        let rt = self.runtime.clone();
        let b = bytes.clone();
        let info = tokio::task::spawn_blocking(move || rt.load(&b).map(|m| m.info().clone()))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let digest = self.store.put_blob(&bytes)?;
        let wanted = self.peering.wanted_copies();
        // Copies on peers before the answer: the push survives this node's death.
        let mut copies = self.peering.replicate_blob(digest, bytes.clone()).await;
        let name = name.map(|n| with_tag(&n));
        if let Some(n) = &name {
            let rec = ModuleRecord {
                name: n.clone(),
                digest,
                kind: info.kind,
                size_bytes: info.size_bytes,
                pushed_ms: now_ms(),
            };
            self.store.set_tag(&rec)?;
            copies = copies.min(self.peering.replicate(&[format!("{}{n}", crate::state::TAG_PREFIX)]).await?);
        }
        Ok(PushResponse {
            copies,
            wanted,
            name,
            digest,
            kind: info.kind,
            kind_description: info.kind.describe().to_string(),
            size_bytes: info.size_bytes,
            imports: info.imports,
        })
    }

    /// Parses, validates, resolves images and stores every object, or nothing.
    pub async fn apply(&self, source: String, text: String) -> ApiResult<Vec<ApplyResult>> {
        apply_manifest(self.store.clone(), self.runtime.clone(), source, text).await
    }

    pub fn list(&self, kind: Kind) -> ApiResult<Vec<ObjectView>> {
        Ok(self.store.list(Some(kind))?.into_iter().map(|r| self.view(r)).collect())
    }

    pub fn get(&self, key: &ObjectKey) -> ApiResult<ObjectView> {
        let rec = self.store.get(key)?.ok_or_else(|| ApiError::NotFound {
            what: format!("{} {}/{}", key.kind.as_str(), key.namespace, key.name),
        })?;
        Ok(self.view(rec))
    }

    pub fn delete(&self, keys: &[ObjectKey]) -> ApiResult<Vec<(ObjectKey, bool)>> {
        let deleted = self.store.delete(keys)?;
        Ok(keys.iter().cloned().zip(deleted).collect())
    }

    pub fn scale(&self, key: &ObjectKey, replicas: u32) -> ApiResult<ObjectView> {
        if replicas > 10_000 {
            return Err(ApiError::BadRequest("replicas must be at most 10000".into()));
        }
        let updated = self.store.update(key, |o| {
            if let Object::Deployment(d) = o {
                d.spec.replicas = Some(replicas);
            }
        })?;
        let rec =
            updated.ok_or_else(|| ApiError::NotFound { what: format!("deployment {}/{}", key.namespace, key.name) })?;
        Ok(self.view(rec))
    }

    /// Every replica in the cluster (this node's own first-hand, others' from gossip).
    pub fn replicas(&self) -> Vec<ReplicaStatus> {
        self.reconciler.cluster_replicas()
    }

    pub fn modules(&self) -> ApiResult<Vec<ModuleRecord>> {
        let mut v = self.store.list_tags()?;
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// Prometheus metrics in OpenMetrics text ([`crate::control::metrics`]).
    pub fn metrics(&self) -> ApiResult<String> {
        let gateway = self.reconciler.routes().metrics();
        crate::control::metrics::render(gateway, &self.reconciler.replicas(), self.started.elapsed())
            .map_err(|_| ApiError::Internal("encoding the metrics failed".into()))
    }
}

pub(crate) fn with_tag(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') { name.to_string() } else { format!("{name}:latest") }
}

fn validate_module_name(n: &str) -> ApiResult<()> {
    let ok = !n.is_empty()
        && n.len() <= 200
        && !n.starts_with("sha256:")
        && n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid module name `{n}`: use NAME:TAG with letters, digits, '-', '_', '.', '/'"
        )))
    }
}

// --- HTTP plumbing ---

pub(crate) type AppState = Arc<Api>;

async fn auth(State(api): State<AppState>, req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| constant_time_eq(t.as_bytes(), api.token.as_bytes()));
    if ok { next.run(req).await } else { ApiError::Unauthorized.into_response() }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Deserialize)]
struct PushQuery {
    name: Option<String>,
}

#[derive(Deserialize)]
struct ApplyQuery {
    source: Option<String>,
}

#[derive(Deserialize)]
struct DeleteBody {
    keys: Vec<ObjectKey>,
}

#[derive(Deserialize)]
struct TokenBody {
    ttl_secs: u64,
}

/// How many nodes hold a write durably, against how many the write quorum asks for (both
/// count this node).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durability {
    pub copies: usize,
    pub wanted: usize,
}

impl Durability {
    /// The write reached its quorum.
    pub fn met(&self) -> bool {
        self.copies >= self.wanted
    }
}

/// The answer to a write: `200 OK` once it is durable on its quorum, `202 Accepted` when it
/// is stored on this node but fewer peers confirmed it (it reaches them by anti-entropy);
/// both with [`COPIES_HEADER`] and [`WANTED_HEADER`].
fn write_answer<T: Serialize>(durability: Durability, body: T) -> Response {
    let status = if durability.met() { StatusCode::OK } else { StatusCode::ACCEPTED };
    let headers = [(COPIES_HEADER, durability.copies.to_string()), (WANTED_HEADER, durability.wanted.to_string())];
    (status, headers, axum::Json(body)).into_response()
}

/// Pushes the written keys to peers, then answers with [`write_answer`].
async fn replicated<T: Serialize>(a: &Api, keys: &[String], body: T) -> ApiResult<Response> {
    let wanted = a.peering.wanted_copies();
    let copies = a.peering.replicate(keys).await?;
    Ok(write_answer(Durability { copies, wanted }, body))
}

/// A request body read whole; above `MAX` bytes (declared or sent) it is refused with `413`
/// ([`ApiError::TooLarge`]) before more is read.
struct LimitedBody<const MAX: usize>(Bytes);

impl<S: Send + Sync, const MAX: usize> FromRequest<S> for LimitedBody<MAX> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let path = req.uri().path().to_string();
        let too_large = move || ApiError::TooLarge { path, limit_bytes: MAX };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX as u64) {
            return Err(too_large());
        }
        match axum::body::to_bytes(req.into_body(), MAX).await {
            Ok(bytes) => Ok(LimitedBody(bytes)),
            Err(e) if is_length_limit(&e) => Err(too_large()),
            Err(e) => Err(ApiError::BadRequest(format!("cannot read the request body: {e}"))),
        }
    }
}

/// A JSON request body of at most `MAX` bytes.
struct LimitedJson<T, const MAX: usize>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned, const MAX: usize> FromRequest<S> for LimitedJson<T, MAX> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let LimitedBody(bytes) = LimitedBody::<MAX>::from_request(req, state).await?;
        serde_json::from_slice(&bytes)
            .map(LimitedJson)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON request body: {e}")))
    }
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// A read from this node's store, with `x-wasmfleet-in-sync` saying whether every live peer
/// has the same desired state.
fn local_read<T: Serialize>(a: &Api, body: T) -> ApiResult<Response> {
    Ok(([("x-wasmfleet-in-sync", a.peering.in_sync()?.to_string())], axum::Json(body)).into_response())
}

#[derive(Deserialize)]
struct ScaleBody {
    replicas: u32,
}

#[derive(Deserialize)]
struct LogsQuery {
    follow: Option<bool>,
    tail: Option<usize>,
}

fn kind_of(s: &str) -> ApiResult<Kind> {
    Kind::parse(s).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "unknown kind `{s}`: use deployments, services, jobs, daemonsets, rollouts or analysistemplates"
        ))
    })
}

/// The API router.
pub fn router(api: Arc<Api>) -> Router {
    let v1 = Router::new()
        .route(
            "/v1/node",
            get(|State(a): State<AppState>| async move {
                axum::Json(NodeView {
                    name: a.node.clone(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    uptime_s: a.started.elapsed().as_secs(),
                    pool: a.runtime.sizing(),
                })
            }),
        )
        .route(
            "/v1/modules",
            get(|State(a): State<AppState>| async move { a.modules().map(axum::Json) }).post(
                |State(a): State<AppState>,
                 Query(q): Query<PushQuery>,
                 LimitedBody(body): LimitedBody<MAX_MODULE_BYTES>| async move {
                    let pushed = a.push(q.name, body).await?;
                    let durability = Durability { copies: pushed.copies, wanted: pushed.wanted };
                    Ok::<_, ApiError>(write_answer(durability, pushed))
                },
            ),
        )
        .route(
            "/v1/apply",
            post(
                |State(a): State<AppState>,
                 Query(q): Query<ApplyQuery>,
                 LimitedBody(body): LimitedBody<MAX_MANIFEST_BYTES>| async move {
                    let text = std::str::from_utf8(&body)
                        .map_err(|_| ApiError::BadRequest("manifest is not UTF-8 text".into()))?;
                    let results = a.apply(q.source.unwrap_or_else(|| "-".into()), text.to_string()).await?;
                    let keys: Vec<String> = results.iter().map(|r| r.key.to_string()).collect();
                    replicated(&a, &keys, results).await
                },
            ),
        )
        .route(
            "/v1/delete",
            post(|State(a): State<AppState>, LimitedJson(b): LimitedJson<DeleteBody, MAX_MANIFEST_BYTES>| async move {
                let res = a.delete(&b.keys)?;
                let keys: Vec<String> =
                    res.iter().filter(|(_, deleted)| *deleted).map(|(k, _)| k.to_string()).collect();
                if keys.is_empty() {
                    // Nothing was written: nothing to make durable.
                    return Ok::<_, ApiError>(axum::Json(res).into_response());
                }
                replicated(&a, &keys, res).await
            }),
        )
        .route(
            "/v1/objects/{kind}",
            get(|State(a): State<AppState>, Path(kind): Path<String>| async move {
                let list = a.list(kind_of(&kind)?)?;
                local_read(&a, list)
            }),
        )
        .route(
            "/v1/objects/{kind}/{ns}/{name}",
            get(|State(a): State<AppState>, Path((kind, ns, name)): Path<(String, String, String)>| async move {
                let view = a.get(&ObjectKey { kind: kind_of(&kind)?, namespace: ns, name })?;
                local_read(&a, view)
            })
            .delete(
                |State(a): State<AppState>, Path((kind, ns, name)): Path<(String, String, String)>| async move {
                    let key = ObjectKey { kind: kind_of(&kind)?, namespace: ns, name };
                    let res = a.delete(std::slice::from_ref(&key))?;
                    if res.first().is_some_and(|r| r.1) {
                        replicated(&a, &[key.to_string()], res).await
                    } else {
                        Err(ApiError::NotFound {
                            what: format!("{} {}/{}", key.kind.as_str(), key.namespace, key.name),
                        })
                    }
                },
            ),
        )
        .route(
            "/v1/scale/{ns}/{name}",
            post(
                |State(a): State<AppState>,
                 Path((ns, name)): Path<(String, String)>,
                 LimitedJson(b): LimitedJson<ScaleBody, MAX_SMALL_JSON_BYTES>| async move {
                    let key = ObjectKey { kind: Kind::Deployment, namespace: ns, name };
                    let view = a.scale(&key, b.replicas)?;
                    replicated(&a, &[key.to_string()], view).await
                },
            ),
        )
        .route(
            "/v1/rollout/{ns}/{name}",
            post(
                |State(a): State<AppState>,
                 Path((ns, name)): Path<(String, String)>,
                 LimitedJson(b): LimitedJson<RolloutAction, MAX_SMALL_JSON_BYTES>| async move {
                    let kind = match b.kind.as_deref().map(Kind::parse) {
                        None => Kind::Deployment,
                        Some(Some(k @ (Kind::Deployment | Kind::Rollout))) => k,
                        Some(_) => return Err(ApiError::BadRequest("kind must be Deployment or Rollout".into())),
                    };
                    let key = ObjectKey { kind, namespace: ns, name };
                    let done = a.rollout_verb(&key, &b.action, b.to_revision)?;
                    replicated(&a, &[key.to_string()], RolloutAnswer { object: done.view, message: done.message }).await
                },
            ),
        )
        .route(
            "/v1/image/{ns}/{name}",
            post(
                |State(a): State<AppState>,
                 Path((ns, name)): Path<(String, String)>,
                 LimitedJson(b): LimitedJson<ImageUpdate, MAX_SMALL_JSON_BYTES>| async move {
                    let key = ObjectKey { kind: Kind::Deployment, namespace: ns, name };
                    let done = a.set_image(&key, b.images).await?;
                    replicated(&a, &[key.to_string()], RolloutAnswer { object: done.view, message: done.message }).await
                },
            ),
        )
        .route("/v1/replicas", get(|State(a): State<AppState>| async move { axum::Json(a.replicas()) }))
        .route("/v1/kv/{ns}/{bucket}", get(super::kv::list))
        .route("/v1/kv/{ns}/{bucket}/{key}", get(super::kv::get).post(super::kv::set).delete(super::kv::delete))
        .route("/v1/volumes", get(|State(a): State<AppState>| async move { axum::Json(a.reconciler.volumes()) }))
        .route(
            "/v1/volumes/{name}",
            delete(|State(a): State<AppState>, Path(name): Path<String>| async move {
                match super::claims::delete_volume(&a.store, &name).map_err(ApiError::Conflict)? {
                    Some(r) => replicated(&a, &[format!("{}{name}", crate::state::VOLUME_PREFIX)], r).await,
                    None => Err(ApiError::NotFound { what: format!("persistentvolume {name:?}") }),
                }
            }),
        )
        .route(
            "/v1/nodes",
            get(|State(a): State<AppState>| async move { a.peering.nodes().map(axum::Json).map_err(ApiError::from) }),
        )
        .route(
            "/v1/tokens",
            post(
                |State(a): State<AppState>, LimitedJson(b): LimitedJson<TokenBody, MAX_SMALL_JSON_BYTES>| async move {
                    let ttl = std::time::Duration::from_secs(b.ttl_secs.clamp(60, 30 * 86_400));
                    let token = a.peering.create_token(ttl).map_err(|e| ApiError::Internal(format!("{e:#}")))?;
                    Ok::<_, ApiError>(axum::Json(serde_json::json!({ "token": token, "ttl_secs": ttl.as_secs() })))
                },
            ),
        )
        .route(
            "/v1/leave",
            post(|State(a): State<AppState>| async move {
                let _ = a.leave_tx.send(true);
                axum::Json(serde_json::json!({ "node": a.node, "leaving": true }))
            }),
        )
        .route("/v1/logs/{ns}/{name}", get(logs))
        .route(
            "/metrics",
            get(|State(a): State<AppState>| async move {
                a.metrics().map(|text| ([(header::CONTENT_TYPE, crate::control::metrics::CONTENT_TYPE)], text))
            }),
        )
        .route_layer(middleware::from_fn_with_state(api.clone(), auth))
        // Routes with a body read it through `LimitedBody`/`LimitedJson` with their own limit;
        // this bounds any other extractor.
        .layer(DefaultBodyLimit::max(MAX_SMALL_JSON_BYTES));
    Router::new().route("/healthz", get(|| async { "ok\n" })).merge(v1).with_state(api)
}

/// Logs of an object (Deployment, Job, DaemonSet) or of one replica, from every node, as
/// NDJSON lines (see [`crate::control::logs`]).
async fn logs(
    State(a): State<AppState>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Response> {
    let req = crate::control::logs::LogsRequest {
        namespace: ns.clone(),
        name: name.clone(),
        tail: q.tail,
        follow: q.follow.unwrap_or(false),
    };
    let logs = crate::control::logs::cluster_logs(&a.reconciler.logs(), &a.peering, &a.node, &req).await;
    let known = [Kind::Deployment, Kind::Job, Kind::DaemonSet].into_iter().any(|kind| {
        let key = ObjectKey { kind, namespace: ns.clone(), name: name.clone() };
        a.store.get(&key).ok().flatten().is_some()
    });
    if logs.snapshot.is_empty()
        && !known
        && crate::control::logs::local_buffers(&a.reconciler.logs(), &ns, &name).is_empty()
    {
        return Err(ApiError::NotFound {
            what: format!("logs for {ns}/{name} (no deployment, job, daemonset or replica by that name has run)"),
        });
    }
    let mut initial = Vec::new();
    for record in &logs.snapshot {
        initial.extend_from_slice(&record.ndjson());
    }
    let Some(mut rx) = logs.follow else {
        return Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], initial).into_response());
    };
    let first = futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(initial)) });
    let rest = futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|l| l.map(Ok::<_, std::io::Error>)));
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(futures::StreamExt::chain(first, rest)))
        .into_response())
}

impl From<ManifestError> for ApiError {
    fn from(e: ManifestError) -> Self {
        ApiError::Invalid(vec![e])
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use wasmfleet_runtime::RuntimeConfig;

    use super::*;

    const HELLO_WASM: &[u8] = include_bytes!(concat!(env!("WASMFLEET_MODULES_DIR"), "/hello.wasm"));

    fn deployment(image: &str) -> String {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: hello\nspec:\n  selector:\n    matchLabels:\n      app: hello\n  template:\n    metadata:\n      labels:\n        app: hello\n    spec:\n      containers:\n        - name: hello\n          image: {image}\n"
        )
    }

    /// Applying a `sha256:` image compiles the module: that must not hold the async thread
    /// (here the runtime's only one), so other tasks keep running meanwhile.
    #[tokio::test(flavor = "current_thread")]
    async fn apply_compiles_off_the_async_thread() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), 1).unwrap());
        let runtime = Arc::new(Runtime::new(RuntimeConfig::default()).unwrap());
        let digest = store.put_blob(HELLO_WASM).unwrap();
        let turns = Arc::new(AtomicUsize::new(0));
        let ticker = tokio::spawn({
            let turns = turns.clone();
            async move {
                loop {
                    turns.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            }
        });
        let applied = apply_manifest(store, runtime, "hello.yaml".into(), deployment(&digest.to_string())).await;
        ticker.abort();
        assert_eq!(applied.unwrap().len(), 1);
        assert!(turns.load(Ordering::Relaxed) > 0, "no other task ran while the module compiled");
    }

    #[test]
    fn a_write_short_of_its_quorum_is_accepted_not_ok() {
        let short = write_answer(Durability { copies: 1, wanted: 2 }, Vec::<ApplyResult>::new());
        assert_eq!(short.status(), StatusCode::ACCEPTED);
        assert_eq!(short.headers()[COPIES_HEADER], "1");
        assert_eq!(short.headers()[WANTED_HEADER], "2");
        let done = write_answer(Durability { copies: 2, wanted: 2 }, Vec::<ApplyResult>::new());
        assert_eq!(done.status(), StatusCode::OK);
        assert_eq!(done.headers()[COPIES_HEADER], "2");
        // A node alone is its own quorum.
        assert!(Durability { copies: 1, wanted: 1 }.met());
    }

    /// A body sent without `Content-Length` (chunked) is cut at the route's limit too.
    #[tokio::test]
    async fn a_streamed_body_over_the_limit_is_413_with_the_limit() {
        let request = |chunks: usize| {
            let stream =
                futures::stream::iter((0..chunks).map(|_| Ok::<_, std::io::Error>(Bytes::from_static(&[b'x'; 1024]))));
            Request::builder().uri("/v1/scale/default/x").body(Body::from_stream(stream)).unwrap()
        };
        let Err(err) = LimitedBody::<4096>::from_request(request(5), &()).await else {
            panic!("5 KiB passed a 4 KiB limit")
        };
        assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let msg = err.to_string();
        assert!(msg.contains("/v1/scale/default/x") && msg.contains("4096 bytes"), "{msg}");
        let Ok(LimitedBody(body)) = LimitedBody::<4096>::from_request(request(4), &()).await else {
            panic!("4 KiB refused by a 4 KiB limit")
        };
        assert_eq!(body.len(), 4096);
    }
}

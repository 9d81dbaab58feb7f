//! The control plane of one node: the HTTP API ([`api`]), its rollout verbs ([`rollout`]),
//! its client ([`client`]), the bodies of the rollout verbs both sides share ([`verbs`]), the
//! cluster-wide log service ([`logs`]) and the `/metrics` text ([`metrics`]).

pub mod api;
mod apply;
mod claims;
pub mod client;
pub mod kv;
pub mod logs;
pub mod metrics;
pub mod rollout;
pub mod verbs;

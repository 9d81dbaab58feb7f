//! The control plane of one node: the HTTP API ([`api`]), its client ([`client`]) and the
//! cluster-wide log service ([`logs`]).

pub mod api;
pub mod client;
pub mod logs;

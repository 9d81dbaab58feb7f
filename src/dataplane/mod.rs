//! The data plane: every request for a Service, from the first byte to the replica.
//!
//! - [`gateway`]: the routing table, Host/port routing, local dispatch and failover retries;
//! - [`hold`]: a request held while its Service has no usable replica, and activations from zero;
//! - [`forward`]: requests forwarded to another node over QUIC, and serving those that arrive;
//! - [`lanes`]: data-plane threads, each with its own runtime and QUIC endpoint;
//! - [`metrics`]: per-Service counters and latency histograms, kept across routing tables;
//! - [`split`]: a Service's requests split by weight between a canary revision and the others;
//! - [`revisions`]: request figures per revision (requests, errors, latency) for canary analysis.

pub mod forward;
pub mod gateway;
pub mod hold;
pub mod lanes;
pub mod metrics;
pub mod revisions;
pub mod split;

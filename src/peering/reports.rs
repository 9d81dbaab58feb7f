//! Replica reports: a node whose replicas changed sends its replica list straight to the
//! peers deciding rollouts of them ([`super::Peering::publish_replicas`]), so a rollout step
//! does not wait a gossip round. The receiver keeps the newest report of each sender and lets
//! it stand in for the sender's gossip value for [`REPORT_FRESH`], or until gossip carries a
//! list at least as new (the sender publishes the report's sequence as [`REPLICAS_SEQ_KEY`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::GossipReplica;

/// Gossip key of the sequence number of a node's `replicas` value.
pub const REPLICAS_SEQ_KEY: &str = "rseq";

/// How long a direct report stands in for gossip: by then gossip carries the same list.
const REPORT_FRESH: Duration = Duration::from_secs(2);

/// A peer's replicas as it reported them directly.
struct Report {
    seq: u64,
    at: Instant,
    replicas: Vec<GossipReplica>,
}

/// The newest report of each sender.
#[derive(Default)]
pub(super) struct Reports {
    by_sender: Mutex<HashMap<String, Report>>,
    /// Poked when a newer report arrives.
    arrived: Arc<tokio::sync::Notify>,
}

impl Reports {
    /// Wakes whoever waits for reports (the reconciler), with nothing new to read.
    pub fn poke(&self) {
        self.arrived.notify_one();
    }

    /// Keeps `replicas` as `sender`'s report unless a newer one is held.
    pub fn accept(&self, sender: String, seq: u64, replicas: Vec<GossipReplica>) {
        let mut by_sender = self.by_sender.lock().unwrap_or_else(|e| e.into_inner());
        if by_sender.get(&sender).is_none_or(|r| r.seq < seq) {
            by_sender.insert(sender, Report { seq, at: Instant::now(), replicas });
            self.arrived.notify_one();
        }
    }

    /// `sender`'s replicas from its report, if the report is fresh and newer than what gossip
    /// carries (`gossip_seq`).
    pub fn fresh(&self, sender: &str, gossip_seq: u64) -> Option<Vec<GossipReplica>> {
        let by_sender = self.by_sender.lock().unwrap_or_else(|e| e.into_inner());
        by_sender
            .get(sender)
            .filter(|r| r.seq > gossip_seq && r.at.elapsed() < REPORT_FRESH)
            .map(|r| r.replicas.clone())
    }

    pub fn arrived(&self) -> Arc<tokio::sync::Notify> {
        self.arrived.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_report_stands_in_until_gossip_catches_up() {
        let reports = Reports::default();
        reports.accept("b".into(), 5, Vec::new());
        reports.accept("b".into(), 4, vec![]);
        assert!(reports.fresh("b", 4).is_some(), "newer than gossip's 4");
        assert!(reports.fresh("b", 5).is_none(), "gossip carries it");
        assert!(reports.fresh("c", 0).is_none());
    }
}

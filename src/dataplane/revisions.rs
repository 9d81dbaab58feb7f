//! Request figures per revision, for automatic canary analysis.
//!
//! Every request a gateway answers for a client (or for a local component calling a Service)
//! is counted under the revision of the endpoint it picked: one request, whether it was an
//! error (the gateway answered 5xx: the replica did, trapped or timed out, or forwarding to it
//! failed), and its latency from the gateway's dispatch to the response head in a fixed
//! histogram of exponential buckets. A request forwarded to a peer is counted by the gateway
//! that received it, not by the peer that served it, so the figures of all nodes add up to
//! each request once.
//!
//! [`RevisionStats`] holds the live counters (atomics, one registry per node, held by
//! [`Routes`](crate::dataplane::gateway::Routes); a route binds the counters of its endpoints'
//! revisions when it is stored, so the hot path does no lookup). [`RevisionStats::snapshot`]
//! reads them into [`RevisionFigures`]: cumulative, serializable (for gossip), with the pure
//! arithmetic an analysis needs (delta between two snapshots, sum over nodes, rates,
//! quantiles).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

/// Upper bound of the first latency bucket, in µs; bucket `k` holds latencies up to
/// `FIRST_BUCKET_US · 2^k` (inclusive) above the previous bound.
pub const FIRST_BUCKET_US: u64 = 100;
/// Bounded latency buckets: up to `100 µs · 2^20` ≈ 105 s.
pub const BOUNDED_BUCKETS: usize = 21;
/// All buckets: the bounded ones, then one for anything slower.
pub const LATENCY_BUCKETS: usize = BOUNDED_BUCKETS + 1;

/// The bucket a latency falls in: the first whose upper bound is at least `latency_us`.
pub fn bucket_of(latency_us: u64) -> usize {
    // In units of the first bound, rounded up; the bucket is ceil(log2) of that.
    let units = latency_us.div_ceil(FIRST_BUCKET_US);
    if units <= 1 {
        return 0;
    }
    let k = (u64::BITS - (units - 1).leading_zeros()) as usize;
    k.min(BOUNDED_BUCKETS)
}

/// Upper bound of bucket `k` in milliseconds; infinite for the overflow bucket.
pub fn bucket_upper_ms(k: usize) -> f64 {
    if k < BOUNDED_BUCKETS { (FIRST_BUCKET_US << k) as f64 / 1000.0 } else { f64::INFINITY }
}

/// One revision's live counters on this node.
#[derive(Debug, Default)]
pub struct RevisionCounters {
    requests: AtomicU64,
    errors: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS],
}

impl RevisionCounters {
    /// Counts one answered request.
    pub fn record(&self, error: bool, latency: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// The counters as they are now (each read on its own: a request recorded meanwhile may
    /// be in one figure and not yet in another).
    pub fn figures(&self) -> RevisionFigures {
        RevisionFigures {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            buckets: self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect(),
        }
    }
}

/// The counters of every revision this node's gateway has routed to.
#[derive(Debug, Default)]
pub struct RevisionStats {
    by_revision: DashMap<String, Arc<RevisionCounters>>,
}

impl RevisionStats {
    /// The counters of `revision`, created on first use.
    pub fn counters(&self, revision: &str) -> Arc<RevisionCounters> {
        if let Some(c) = self.by_revision.get(revision) {
            return c.clone();
        }
        self.by_revision.entry(revision.to_string()).or_default().clone()
    }

    /// Every revision's cumulative figures (monotonic while the node runs).
    pub fn snapshot(&self) -> BTreeMap<String, RevisionFigures> {
        self.by_revision.iter().map(|e| (e.key().clone(), e.value().figures())).collect()
    }

    /// One revision's cumulative figures, if it was ever routed to here.
    pub fn figures(&self, revision: &str) -> Option<RevisionFigures> {
        self.by_revision.get(revision).map(|c| c.figures())
    }

    /// Forgets the revisions for which `live` is false, except those a routing table still
    /// sends requests to (their counters would otherwise restart from zero).
    pub fn retain(&self, live: impl Fn(&str) -> bool) {
        self.by_revision.retain(|revision, counters| live(revision) || Arc::strong_count(counters) > 1);
    }
}

/// A revision's request figures: cumulative counts from one node (a [`RevisionStats`]
/// snapshot), the sum over several nodes, or the difference between two such.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionFigures {
    /// Requests answered.
    #[serde(rename = "n", default)]
    pub requests: u64,
    /// Of which answered 5xx.
    #[serde(rename = "e", default)]
    pub errors: u64,
    /// Latency histogram: count per bucket (not cumulative across buckets), bucket `k` up to
    /// [`bucket_upper_ms`]`(k)`; [`LATENCY_BUCKETS`] long when taken from the counters.
    #[serde(rename = "b", default)]
    pub buckets: Vec<u64>,
}

impl RevisionFigures {
    /// What happened between `earlier` and `self` (two snapshots of the same node). If any
    /// figure went down, the node restarted in between and its counters started again:
    /// everything in `self` is new.
    pub fn delta(&self, earlier: &RevisionFigures) -> RevisionFigures {
        let bucket = |v: &[u64], k: usize| v.get(k).copied().unwrap_or(0);
        let len = self.buckets.len().max(earlier.buckets.len());
        let reset = self.requests < earlier.requests
            || self.errors < earlier.errors
            || (0..len).any(|k| bucket(&self.buckets, k) < bucket(&earlier.buckets, k));
        if reset {
            return self.clone();
        }
        RevisionFigures {
            requests: self.requests - earlier.requests,
            errors: self.errors - earlier.errors,
            buckets: (0..len).map(|k| bucket(&self.buckets, k) - bucket(&earlier.buckets, k)).collect(),
        }
    }

    /// Adds `other` (another node's figures, say) to these.
    pub fn add(&mut self, other: &RevisionFigures) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine = mine.saturating_add(*theirs);
        }
    }

    /// The sum of several figures (of several nodes).
    pub fn sum<'a>(figures: impl IntoIterator<Item = &'a RevisionFigures>) -> RevisionFigures {
        let mut total = RevisionFigures::default();
        for f in figures {
            total.add(f);
        }
        total
    }

    /// Share of requests that were not errors; `None` without requests.
    pub fn success_rate(&self) -> Option<f64> {
        self.error_rate().map(|e| 1.0 - e)
    }

    /// Share of requests that were errors; `None` without requests.
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors.min(self.requests) as f64 / self.requests as f64)
    }

    /// The upper bound (ms) of the bucket holding the `q`-quantile of latency (`q` in 0..=1;
    /// `0.99` for p99): infinite if it is in the overflow bucket; `None` without requests or
    /// for a `q` out of range.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        // The rank of the quantile's request, 1-based (less a hair, so that 0.29 · 100 is 29).
        let rank = ((q * total as f64 - 1e-9).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (k, count) in self.buckets.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(bucket_upper_ms(k));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(requests: u64, errors: u64, buckets: &[(usize, u64)]) -> RevisionFigures {
        let mut b = vec![0; LATENCY_BUCKETS];
        for &(k, n) in buckets {
            b[k] = n;
        }
        RevisionFigures { requests, errors, buckets: b }
    }

    #[test]
    fn latencies_fall_in_exponential_buckets_bounds_included() {
        let us = |n| Duration::from_micros(n);
        for (latency, bucket) in [
            (us(0), 0),
            (us(100), 0),
            (us(101), 1),
            (us(200), 1),
            (us(201), 2),
            (us(400), 2),
            (us(401), 3),
            (Duration::from_millis(1), 4), // 800 µs < 1 ms ≤ 1.6 ms
            (Duration::from_millis(100), 10),
            (us(100 << 20), 20),
            (us((100 << 20) + 1), 21),
            (Duration::from_secs(3600), 21),
            (Duration::MAX, 21),
        ] {
            let c = RevisionCounters::default();
            c.record(false, latency);
            let f = c.figures();
            assert_eq!(f.buckets.iter().position(|&n| n == 1), Some(bucket), "{latency:?}");
            assert!(
                latency > Duration::from_micros(100 << 20) || latency.as_secs_f64() * 1e3 <= bucket_upper_ms(bucket)
            );
        }
        assert_eq!(bucket_upper_ms(0), 0.1);
        assert_eq!(bucket_upper_ms(10), 102.4);
        assert_eq!(bucket_upper_ms(21), f64::INFINITY);
    }

    #[test]
    fn counters_record_requests_errors_and_latency() {
        let stats = RevisionStats::default();
        let c = stats.counters("abc");
        c.record(false, Duration::from_micros(50));
        c.record(true, Duration::from_micros(150));
        stats.counters("abc").record(false, Duration::from_micros(150));
        let snap = stats.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap["abc"], figures(3, 1, &[(0, 1), (1, 2)]));
        assert_eq!(stats.figures("abc"), Some(snap["abc"].clone()));
        assert_eq!(stats.figures("def"), None);
    }

    #[test]
    fn retain_keeps_live_and_routed_revisions() {
        let stats = RevisionStats::default();
        let routed = stats.counters("routed");
        drop(stats.counters("old"));
        drop(stats.counters("live"));
        stats.retain(|r| r == "live");
        assert_eq!(stats.snapshot().keys().collect::<Vec<_>>(), ["live", "routed"]);
        drop(routed);
        stats.retain(|r| r == "live");
        assert_eq!(stats.snapshot().keys().collect::<Vec<_>>(), ["live"]);
    }

    #[test]
    fn delta_subtracts_and_a_reset_counts_from_zero() {
        let earlier = figures(10, 2, &[(0, 4), (3, 6)]);
        let later = figures(25, 3, &[(0, 9), (3, 10), (21, 6)]);
        assert_eq!(later.delta(&earlier), figures(15, 1, &[(0, 5), (3, 4), (21, 6)]));
        assert_eq!(later.delta(&later), figures(0, 0, &[]));
        // The node restarted: fewer requests than before.
        let restarted = figures(3, 0, &[(1, 3)]);
        assert_eq!(restarted.delta(&later), restarted);
        // From nothing (a revision first seen): everything.
        assert_eq!(later.delta(&RevisionFigures::default()), later);
    }

    #[test]
    fn sum_adds_nodes_even_with_histograms_of_other_lengths() {
        let a = figures(10, 1, &[(0, 10)]);
        let b = figures(5, 5, &[(2, 5)]);
        let short = RevisionFigures { requests: 1, errors: 0, buckets: vec![0, 1] };
        let total = RevisionFigures::sum([&a, &b, &short]);
        assert_eq!(total, figures(16, 6, &[(0, 10), (1, 1), (2, 5)]));
        assert_eq!(RevisionFigures::sum([]), RevisionFigures::default());
        assert_eq!(total.error_rate(), Some(6.0 / 16.0));
        assert_eq!(total.success_rate(), Some(10.0 / 16.0));
        assert_eq!(RevisionFigures::default().success_rate(), None);
        assert_eq!(RevisionFigures::default().error_rate(), None);
    }

    #[test]
    fn quantiles_are_the_upper_bound_of_their_bucket() {
        // 90 requests within 100 µs, 9 within 1.6 ms, 1 over 105 s.
        let f = figures(100, 0, &[(0, 90), (4, 9), (21, 1)]);
        assert_eq!(f.quantile_ms(0.0), Some(0.1));
        assert_eq!(f.quantile_ms(0.5), Some(0.1));
        assert_eq!(f.quantile_ms(0.9), Some(0.1));
        assert_eq!(f.quantile_ms(0.91), Some(1.6));
        assert_eq!(f.quantile_ms(0.99), Some(1.6));
        assert_eq!(f.quantile_ms(0.995), Some(f64::INFINITY));
        assert_eq!(f.quantile_ms(1.0), Some(f64::INFINITY));
        for bad in [-0.1, 1.1, f64::NAN] {
            assert_eq!(f.quantile_ms(bad), None);
        }
        assert_eq!(RevisionFigures::default().quantile_ms(0.5), None);
        // One request at 3 ms: every quantile is its bucket, up to 3.2 ms.
        let one = figures(1, 0, &[(5, 1)]);
        assert_eq!((one.quantile_ms(0.0), one.quantile_ms(1.0)), (Some(3.2), Some(3.2)));
    }

    #[test]
    fn figures_serialize_with_short_names_and_tolerate_missing_fields() {
        let f = figures(7, 1, &[(2, 7)]);
        let json = serde_json::to_string(&f).unwrap();
        assert!(json.starts_with(r#"{"n":7,"e":1,"b":[0,0,7,"#), "{json}");
        assert_eq!(serde_json::from_str::<RevisionFigures>(&json).unwrap(), f);
        let packed = rmp_serde::to_vec(&f).unwrap();
        assert_eq!(rmp_serde::from_slice::<RevisionFigures>(&packed).unwrap(), f);
        assert_eq!(serde_json::from_str::<RevisionFigures>("{}").unwrap(), RevisionFigures::default());
    }
}

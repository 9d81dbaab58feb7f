//! Job progress: finished completion indices are recorded durably and pushed to peers, so a
//! finished index never runs again on any node.
//!
//! The record merges as a grow-only join (see [`JobRecord`]): any node that finishes an index
//! records it, and concurrent records never lose one. [`fold`] is the pure rule; the loop reads,
//! folds, merges into the store, and only then lets the finished replicas go — if the store
//! fails, they stay and the next pass records them.

use std::collections::HashMap;

use super::desired::{JobSpec, Workloads, current_record};
use super::replicas::{Finished, Running};
use super::{Inner, ObjectStatus, ReplicaKey};
use crate::clock::now_ms;
use crate::manifest::ObjectKey;
use crate::state::{JOB_PREFIX, JobRecord, StoreError};

/// Folds finished replicas of one Job into its record.
pub fn fold(mut rec: JobRecord, finished: &[Finished], job: &JobSpec, now_ms: u64) -> JobRecord {
    for f in finished {
        rec.failed += f.failures;
        if f.succeeded && !rec.done.contains(&f.index) {
            rec.done.push(f.index);
        }
    }
    rec.done.sort_unstable();
    rec.succeeded = rec.done.len() as u32;
    if rec.failed > job.backoff_limit {
        rec.failed_permanently = true;
    }
    if rec.done.len() as u32 >= job.completions && !rec.complete {
        rec.complete = true;
        rec.completed_ms = Some(now_ms);
    }
    rec
}

impl Inner {
    /// Records the finished replicas of every Job and lets them go.
    pub(super) fn record_jobs(
        &self,
        running: &mut Running,
        workloads: &Workloads,
        status: &mut HashMap<ObjectKey, ObjectStatus>,
    ) -> Result<(), StoreError> {
        for (key, job) in &workloads.jobs {
            let finished: Vec<(ReplicaKey, Finished)> = running
                .serving
                .iter()
                .filter(|(k, _)| &k.owner == key)
                .filter_map(|(k, r)| Some((k.clone(), r.finished()?)))
                .collect();
            if finished.is_empty() {
                continue;
            }
            let stored = self.store.job_record(key)?;
            let outcomes: Vec<Finished> = finished.iter().map(|(_, f)| *f).collect();
            let rec = fold(current_record(stored.as_ref(), job.generation), &outcomes, job, now_ms());
            self.store.merge_jobs(vec![(key.clone(), rec)])?;
            for (k, _) in &finished {
                running.serving.remove(k);
            }
            let peering = self.peering.clone();
            let summary_key = format!("{JOB_PREFIX}{key}");
            tokio::spawn(async move {
                if let Err(e) = peering.replicate(std::slice::from_ref(&summary_key)).await {
                    tracing::warn!(job = %summary_key, error = %e, "job record not replicated (anti-entropy will)");
                }
            });
            let rec = current_record(self.store.job_record(key)?.as_ref(), job.generation);
            let st = status.entry(key.clone()).or_default();
            st.succeeded = rec.done.len() as u32;
            st.failed = rec.failed;
            st.complete = rec.complete;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: JobSpec = JobSpec { completions: 2, parallelism: 2, backoff_limit: 1, generation: 1 };

    fn finished(index: u32, succeeded: bool, failures: u32) -> Finished {
        Finished { index, succeeded, failures }
    }

    #[test]
    fn successes_complete_the_job_once() {
        let rec = JobRecord { generation: 1, ..Default::default() };
        let rec = fold(rec, &[finished(1, true, 0)], &JOB, 10);
        assert_eq!((rec.done.clone(), rec.complete), (vec![1], false));
        let rec = fold(rec, &[finished(0, true, 0), finished(1, true, 0)], &JOB, 20);
        assert_eq!((rec.done.clone(), rec.succeeded, rec.complete, rec.completed_ms), (vec![0, 1], 2, true, Some(20)));
        let again = fold(rec.clone(), &[finished(0, true, 0)], &JOB, 30);
        assert_eq!(again.completed_ms, Some(20), "completion time is the first");
    }

    #[test]
    fn failures_past_the_backoff_limit_fail_the_job() {
        let rec = JobRecord { generation: 1, ..Default::default() };
        let rec = fold(rec, &[finished(0, false, 1)], &JOB, 1);
        assert!(!rec.failed_permanently);
        let rec = fold(rec, &[finished(0, false, 1)], &JOB, 2);
        assert!(rec.failed_permanently && !rec.complete);
    }
}

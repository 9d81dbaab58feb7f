//! The guest's time: the time of every poll of its future. Inside a poll the guest runs
//! without blocking (host I/O returns pending), so this is its CPU time, short of preemption
//! by other threads. A monotonic clock read is a vDSO call (~30 ns); the per-thread CPU clock
//! is a system call (~1.3 µs on the reference VM), too dear twice per poll.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

/// Runs `fut`, adding the time of its polls to `total_ns` once, when it is done or dropped
/// (a request: one atomic add).
pub(crate) async fn timed<F: Future>(fut: F, total_ns: Option<&AtomicU64>) -> F::Output {
    struct Flush<'a>(Option<&'a AtomicU64>, u64);
    impl Drop for Flush<'_> {
        fn drop(&mut self) {
            if let Some(total) = self.0 {
                total.fetch_add(self.1, Ordering::Relaxed);
            }
        }
    }
    let mut fut = std::pin::pin!(fut);
    let mut spent = Flush(total_ns, 0);
    std::future::poll_fn(|cx| {
        if spent.0.is_none() {
            return fut.as_mut().poll(cx);
        }
        let start = std::time::Instant::now();
        let out = fut.as_mut().poll(cx);
        spent.1 += start.elapsed().as_nanos() as u64;
        out
    })
    .await
}

/// Runs `fut`, adding the time of each poll to `total_ns` as it goes (a daemon that runs for
/// days is measured while it runs).
pub(crate) async fn timed_live<F: Future>(fut: F, total_ns: Option<&AtomicU64>) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        let Some(total) = total_ns else { return fut.as_mut().poll(cx) };
        let start = std::time::Instant::now();
        let out = fut.as_mut().poll(cx);
        total.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        out
    })
    .await
}

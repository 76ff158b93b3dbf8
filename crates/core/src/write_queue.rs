//! A partition's writes, run one at a time off the async threads.
//!
//! An append is more than a copy into the page cache: every
//! `index.interval.bytes` it writes index entries, and when the active
//! segment is full it rolls — seals the segment with three fsyncs, creates
//! the next one and syncs the directory — all under the log's lock. On a
//! tokio worker that stalls every connection the worker serves, including
//! readers of other partitions. So appends are queued here and run on the
//! blocking pool ([`tokio::task::spawn_blocking`]), one at a time per
//! partition in the order they were submitted: a connection's pipelined
//! produce requests land in the order they arrived, as when they were
//! written inline, and partitions still write in parallel.
//!
//! Without a tokio runtime (offline tools) a job runs on the caller's thread.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// Jobs of one partition, run in submission order on the blocking pool.
/// Safe to share; [`WriteQueue::submit`] takes `&Arc<Self>`.
#[derive(Default)]
pub(crate) struct WriteQueue {
    state: Mutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    pending: VecDeque<Job>,
    /// A blocking-pool thread is running the queue's jobs.
    draining: bool,
}

impl std::fmt::Debug for WriteQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock();
        f.debug_struct("WriteQueue")
            .field("pending", &state.pending.len())
            .field("draining", &state.draining)
            .finish()
    }
}

/// Why a queued job gave no answer.
#[derive(Debug, thiserror::Error)]
#[error("a queued write panicked")]
pub(crate) struct JobPanicked;

impl WriteQueue {
    /// Queues `job` behind every job submitted before it; the receiver
    /// gets its result. The order is fixed when this returns, so callers
    /// that submit in order write in order whenever they await.
    pub(crate) fn submit<T: Send + 'static>(
        self: &Arc<Self>,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> oneshot::Receiver<T> {
        let (answer, receiver) = oneshot::channel();
        let job: Job = Box::new(move || {
            // A panicking job (a broken invariant) must not stop the
            // partition's later writes: its caller sees the receiver closed.
            if let Ok(result) = catch_unwind(AssertUnwindSafe(job)) {
                let _ = answer.send(result);
            }
        });
        let start = {
            let mut state = self.state.lock();
            state.pending.push_back(job);
            !std::mem::replace(&mut state.draining, true)
        };
        if start {
            let queue = Arc::clone(self);
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn_blocking(move || queue.drain());
                }
                Err(_) => queue.drain(),
            }
        }
        receiver
    }

    /// Runs jobs until the queue is empty.
    fn drain(&self) {
        loop {
            let job = {
                let mut state = self.state.lock();
                match state.pending.pop_front() {
                    Some(job) => job,
                    None => {
                        state.draining = false;
                        return;
                    }
                }
            };
            job();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_run_in_submission_order_off_the_async_threads() {
        let queue = Arc::new(WriteQueue::default());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let receivers: Vec<_> = (0..100)
            .map(|index| {
                let seen = Arc::clone(&seen);
                queue.submit(move || {
                    seen.lock().push(index);
                    std::thread::current().name().map(str::to_owned)
                })
            })
            .collect();
        for receiver in receivers {
            let thread = receiver.await.expect("answered");
            assert_ne!(thread.as_deref(), Some("tokio-runtime-worker"));
        }
        assert_eq!(*seen.lock(), (0..100).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_panicking_job_does_not_stop_the_queue() {
        let queue = Arc::new(WriteQueue::default());
        let failed = queue.submit(|| -> u32 { panic!("broken invariant") });
        let next = queue.submit(|| 7);
        assert!(failed.await.is_err());
        assert_eq!(next.await.expect("answered"), 7);
    }

    #[test]
    fn without_a_runtime_jobs_run_inline() {
        let queue = Arc::new(WriteQueue::default());
        let mut receiver = queue.submit(|| 3);
        assert_eq!(receiver.try_recv().expect("ran already"), 3);
    }
}

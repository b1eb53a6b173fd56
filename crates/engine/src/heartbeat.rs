//! The node's heartbeat: one statement per interval renews the leases of
//! every job this node is still executing (a finished or abandoned job is
//! not in the set, so it is never renewed), and fires a job's cancel token —
//! saying why — when the process shuts down, its lease is lost, its run was
//! closed, or its handler showed no progress for its type's stall timeout.
//!
//! The stall check is what keeps a renewed lease honest: without it a hung
//! handler (a read that never returns) would hold its lease forever, since
//! this task renews it whatever the handler does. A handler shows progress
//! through [`Liveness::mark`]; the runtime marks every write it makes and
//! the families' provider kit marks every provider call that completes
//! (throttled answers included), so a slow but working handler is left alone.

use crate::finish::Stop;
use opsledger_store::Store;
use opsledger_store::job_batches::HeldJob;
use opsledger_store::jobs::{ClaimedJob, Heartbeat};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Why the token fired, shared with the executor.
pub(crate) type StopSlot = Arc<Mutex<Stop>>;

/// A handler's sign of life: a count of the progress it made (provider calls
/// completed, writes made). Cheap to clone and to mark.
#[derive(Debug, Clone, Default)]
pub struct Liveness(Arc<AtomicU64>);

impl Liveness {
    /// Records progress: the handler is working, not hung.
    pub fn mark(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Whether a handler is stalled: its progress count has not moved since
/// `since`, and `timeout` has passed.
pub(crate) fn is_stalled(seen: u64, count: u64, since: Instant, now: Instant, timeout: Duration) -> bool {
    seen == count && now.duration_since(since) >= timeout
}

struct Entry {
    held: HeldJob,
    cancel: CancellationToken,
    stop: StopSlot,
    liveness: Liveness,
    stall_timeout: Duration,
    /// The progress count last seen, and since when it has not moved.
    seen: u64,
    since: Instant,
    /// Its token fired: it is being abandoned, and is not renewed.
    fired: bool,
}

impl Entry {
    fn fire(&mut self, why: Stop) {
        if !self.fired {
            self.fired = true;
            *self.stop.lock().expect("lock") = why;
            self.cancel.cancel();
        }
    }
}

#[derive(Default)]
struct State {
    jobs: HashMap<String, Entry>,
    shut_down: bool,
}

/// The jobs this node is executing.
#[derive(Clone, Default)]
pub(crate) struct InFlight(Arc<Mutex<State>>);

/// Removes its job from the heartbeat's set when dropped (the job ended, or
/// its execution was abandoned).
pub(crate) struct Registration {
    in_flight: InFlight,
    job_id: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.in_flight.0.lock().expect("lock").jobs.remove(&self.job_id);
    }
}

impl InFlight {
    /// Adds `job` to the set renewed by the heartbeat. After shutdown began
    /// its token fires at once.
    pub fn register(
        &self,
        job: &ClaimedJob,
        cancel: CancellationToken,
        stop: StopSlot,
        liveness: Liveness,
        stall_timeout: Duration,
    ) -> Registration {
        let mut state = self.0.lock().expect("lock");
        let mut entry = Entry {
            held: HeldJob {
                fence: job.fence.clone(),
                run_id: job.run_id.clone(),
            },
            cancel,
            stop,
            seen: liveness.count(),
            liveness,
            stall_timeout,
            since: Instant::now(),
            fired: false,
        };
        if state.shut_down {
            entry.fire(Stop::Shutdown);
        }
        state.jobs.insert(job.fence.job_id.clone(), entry);
        Registration {
            in_flight: self.clone(),
            job_id: job.fence.job_id.clone(),
        }
    }

    /// Beats every `every` until `shutdown`; then fires every job's token.
    pub async fn beat(self, store: Store, every: Duration, lease: Duration, shutdown: CancellationToken) {
        let lease_ms = lease.as_millis() as u64;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
            let held = self.check_stalls();
            if held.is_empty() {
                continue;
            }
            match store.heartbeat_jobs(&held, lease_ms).await {
                Ok(beats) => self.apply(&held, &beats),
                Err(e) => tracing::warn!(jobs = held.len(), error = %e, "heartbeat failed"),
            }
        }
        let mut state = self.0.lock().expect("lock");
        state.shut_down = true;
        for entry in state.jobs.values_mut() {
            entry.fire(Stop::Shutdown);
        }
    }

    /// Fires the stalled jobs; returns the jobs to renew.
    fn check_stalls(&self) -> Vec<HeldJob> {
        let now = Instant::now();
        let mut state = self.0.lock().expect("lock");
        let mut held = Vec::with_capacity(state.jobs.len());
        for entry in state.jobs.values_mut().filter(|e| !e.fired) {
            let count = entry.liveness.count();
            if is_stalled(entry.seen, count, entry.since, now, entry.stall_timeout) {
                tracing::warn!(job = %entry.held.fence.job_id, run = %entry.held.run_id, timeout = ?entry.stall_timeout, "handler shows no progress; cancelling it");
                entry.fire(Stop::Stalled);
                continue;
            }
            if count != entry.seen {
                entry.seen = count;
                entry.since = now;
            }
            held.push(entry.held.clone());
        }
        held
    }

    fn apply(&self, held: &[HeldJob], beats: &[Heartbeat]) {
        let mut state = self.0.lock().expect("lock");
        for (job, beat) in held.iter().zip(beats) {
            let why = match beat {
                Heartbeat::Alive => continue,
                Heartbeat::LeaseLost => Stop::LeaseLost,
                Heartbeat::RunClosed => Stop::RunClosed,
            };
            if let Some(entry) = state.jobs.get_mut(&job.fence.job_id) {
                entry.fire(why);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unmoved_count_past_the_timeout_is_a_stall() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(600);
        assert!(!is_stalled(3, 3, t0, t0 + Duration::from_secs(599), timeout));
        assert!(is_stalled(3, 3, t0, t0 + timeout, timeout));
        assert!(
            !is_stalled(3, 4, t0, t0 + Duration::from_secs(3600), timeout),
            "it moved"
        );
    }
}

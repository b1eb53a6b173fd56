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
use opsledger_store::jobs::{ClaimedJob, Fence, Heartbeat};
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
    fence: Fence,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut state = self.in_flight.0.lock().expect("lock");
        // The same job may have been claimed again by this node under a new
        // lease (the old one was rescued): that registration is not ours.
        if state
            .jobs
            .get(&self.fence.job_id)
            .is_some_and(|e| e.held.fence == self.fence)
        {
            state.jobs.remove(&self.fence.job_id);
        }
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
            fence: job.fence.clone(),
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
            // A beat stuck on a lock or the pool must not hold up shutdown.
            let beat = tokio::select! {
                _ = shutdown.cancelled() => break,
                beat = store.heartbeat_jobs(&held, lease_ms) => beat,
            };
            match beat {
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
            // Only the lease this beat was about (not a newer claim of the job).
            if let Some(entry) = state
                .jobs
                .get_mut(&job.fence.job_id)
                .filter(|e| e.held.fence == job.fence)
            {
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

    fn claim(token: &str) -> ClaimedJob {
        ClaimedJob {
            fence: Fence {
                job_id: "j1".into(),
                lease_token: token.into(),
            },
            run_id: "r1".into(),
            kind: opsledger_store::jobs::JobKind::Unit,
            unit_key: "u1".into(),
            attempt: 1,
            max_attempts: 3,
            head: None,
        }
    }

    #[test]
    fn a_stale_claims_end_does_not_unregister_the_jobs_new_claim() {
        let in_flight = InFlight::default();
        let old = claim("t1");
        let new = claim("t2");
        let register = |job: &ClaimedJob| {
            in_flight.register(
                job,
                CancellationToken::new(),
                Arc::new(Mutex::new(Stop::None)),
                Liveness::default(),
                Duration::from_secs(600),
            )
        };
        let old_registration = register(&old);
        // The old lease was rescued; this node claimed the job again.
        let new_registration = register(&new);
        drop(old_registration);
        let held = in_flight.check_stalls();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].fence, new.fence, "the new claim is still renewed");
        // A beat about the old lease fires nothing of the new one.
        in_flight.apply(
            &[HeldJob {
                fence: old.fence.clone(),
                run_id: "r1".into(),
            }],
            &[Heartbeat::LeaseLost],
        );
        assert_eq!(in_flight.check_stalls().len(), 1);
        drop(new_registration);
        assert!(in_flight.check_stalls().is_empty());
    }
}

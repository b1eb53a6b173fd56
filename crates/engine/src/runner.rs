//! The job runner: claims jobs, executes them with per-job heartbeats, and
//! ends every job it claimed — completed, retried with backoff, failed, or
//! (on graceful shutdown) released without spending an attempt.
//!
//! Hand-written on sqlx on purpose, after River, Oban and graphile-worker:
//! a unit job's completion must commit in the same transaction as its unit
//! recording (exactly-once counting), and heartbeats must be per job (not per
//! worker process) so that staleness is decided per job. Queue crates we
//! looked at (apalis) heartbeat per worker and complete in their own
//! transaction.
//!
//! Pickup is woken at once by [`Runner::notifier`] for work started in this
//! process, and by polling for work started elsewhere.

use crate::handler::{DoneSlot, RunContext, UnitContext, WorkDone};
use crate::{HandlerError, Registry, reconciler};
use opsledger_core::{Failure, Outcome, UnitOutcome};
use opsledger_store::jobs::{ClaimedJob, Heartbeat, JobEnd, JobKind};
use opsledger_store::runs::UnitRecord;
use opsledger_store::{CompleteResult, Completion, Store, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Jobs executed at once by this process.
    pub concurrency: usize,
    /// How often to look for jobs when not woken.
    pub poll_interval: Duration,
    /// How often a job's heartbeat is written (`OPSLEDGER_HEARTBEAT_INTERVAL_MS`).
    pub heartbeat_interval: Duration,
    /// Lease length: a job not heartbeaten for this long may be rescued
    /// (`OPSLEDGER_HEARTBEAT_TIMEOUT_MS`).
    pub lease: Duration,
    /// First retry delay; doubles per attempt, capped at [`MAX_BACKOFF`].
    pub retry_base: Duration,
    /// Names this process in `jobs.worker_id`.
    pub worker_id: String,
}

pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// How long a job whose run this node cannot read waits before it is claimable again.
pub const UNREADABLE_RUN_DELAY: Duration = Duration::from_secs(60);

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            concurrency: 4,
            poll_interval: Duration::from_millis(500),
            heartbeat_interval: Duration::from_secs(5),
            lease: Duration::from_secs(30),
            retry_base: Duration::from_secs(1),
            worker_id: format!("{}:{}", hostname(), std::process::id()),
        }
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "node".into())
}

/// Delay before attempt `attempt + 1`: `base · 2^(attempt-1)`, capped, and
/// never shorter than what the failure asked for.
pub fn backoff(base: Duration, attempt: u32, asked: Option<Duration>) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    exp.min(MAX_BACKOFF).max(asked.unwrap_or_default())
}

pub struct Runner {
    store: Store,
    registry: Registry,
    config: RunnerConfig,
    wake: Arc<Notify>,
}

impl Runner {
    pub fn new(store: Store, registry: Registry, config: RunnerConfig) -> Runner {
        Runner {
            store,
            registry,
            config,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Notify this after starting a run to have it picked up without waiting for a poll.
    pub fn notifier(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Runs until `shutdown` is cancelled; then in-flight handlers are
    /// cancelled, their jobs released, and this returns.
    pub async fn run(self, shutdown: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let mut in_flight = JoinSet::new();
        loop {
            while in_flight.try_join_next().is_some() {}
            let free = permits.available_permits();
            let mut claimed_any = false;
            if free > 0 && !shutdown.is_cancelled() {
                match self
                    .store
                    .claim_jobs(&self.config.worker_id, free as u32, self.lease_ms())
                    .await
                {
                    Ok(jobs) => {
                        claimed_any = !jobs.is_empty();
                        for job in jobs {
                            let permit = permits
                                .clone()
                                .try_acquire_owned()
                                .expect("claimed within free permits");
                            let exec = Execution {
                                store: self.store.clone(),
                                registry: self.registry.clone(),
                                config: self.config.clone(),
                                shutdown: shutdown.clone(),
                            };
                            in_flight.spawn(async move {
                                exec.execute(job).await;
                                drop(permit);
                            });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "claiming jobs failed"),
                }
            }
            if claimed_any && permits.available_permits() > 0 {
                continue; // more may be waiting
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.config.poll_interval) => {}
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            }
        }
        while in_flight.join_next().await.is_some() {}
    }

    fn lease_ms(&self) -> u64 {
        self.config.lease.as_millis() as u64
    }
}

struct Execution {
    store: Store,
    registry: Registry,
    config: RunnerConfig,
    shutdown: CancellationToken,
}

/// Why a handler's cancel token fired.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stop {
    None,
    Shutdown,
    LeaseLost,
    RunClosed,
}

impl Execution {
    async fn execute(self, job: ClaimedJob) {
        let Some(run) = self.load(&job, self.store.run_head(&job.run_id)).await else {
            return;
        };
        if run.is_completed() {
            let _ = self.store.cancel_job(&job.fence).await;
            return;
        }
        // A run handler gets the whole run; a unit handler only its head (a
        // fan-out's context may hold thousands of requested ids).
        let mut full_run = match job.kind {
            JobKind::Run => match self.load(&job, self.store.get_run(&job.run_id)).await {
                Some(full) => Some(full),
                None => return,
            },
            JobKind::Unit => None,
        };
        let cancel = CancellationToken::new();
        let stop = Arc::new(std::sync::Mutex::new(Stop::None));
        let heartbeat = self.spawn_heartbeat(&job, cancel.clone(), stop.clone());
        let span = tracing::info_span!("job", run = %run.id, r#type = %run.run_type, unit = %job.unit_key, attempt = job.attempt);
        let run_type = run.run_type;
        let done = DoneSlot::default();
        let result: Result<(), HandlerError> = match job.kind {
            JobKind::Run => match self.registry.get(run_type) {
                Some(h) => {
                    let ctx = RunContext {
                        done: done.clone(),
                        ..RunContext::new(
                            full_run.take().expect("loaded for run jobs"),
                            self.store.clone(),
                            job.fence.clone(),
                            job.attempt,
                            cancel.clone(),
                        )
                    };
                    contain(tracing::Instrument::instrument(
                        async move { h.execute(ctx).await },
                        span,
                    ))
                    .await
                }
                None => Err(HandlerError::permanent(
                    "no_handler",
                    format!("this node cannot execute {run_type} runs"),
                )),
            },
            JobKind::Unit => match self.registry.get_unit(run_type) {
                Some(h) => {
                    let ctx = UnitContext {
                        run,
                        unit_key: job.unit_key.clone(),
                        store: self.store.clone(),
                        fence: job.fence.clone(),
                        attempt: job.attempt,
                        cancel: cancel.clone(),
                        done: done.clone(),
                    };
                    contain(tracing::Instrument::instrument(
                        async move { h.execute(ctx).await },
                        span,
                    ))
                    .await
                }
                None => Err(HandlerError::permanent(
                    "no_handler",
                    format!("this node cannot execute {run_type} units"),
                )),
            },
        };
        heartbeat.abort();
        let stop = *stop.lock().expect("lock");
        let done = *done.lock().expect("lock");
        if let Err(e) = self.finish(&job, run_type, result, stop, done).await {
            tracing::warn!(job = %job.fence.job_id, error = %e, "finishing job failed; the rescuer will take it");
        }
    }

    /// A read the job needs before it starts. `None` when the run is gone,
    /// or when the read failed — then the job is released for another try.
    async fn load<T>(
        &self,
        job: &ClaimedJob,
        read: impl Future<Output = Result<Option<T>, StoreError>>,
    ) -> Option<T> {
        match read.await {
            Ok(found) => found,
            Err(e) => {
                // Give the job back without spending an attempt: the database
                // may be back soon; a run this node cannot decode (e.g. a type
                // a newer node added during a rolling deploy) may be readable
                // by another node. A failed job here would skip the unit's
                // "finished" path, and leave the run to a sweep that cannot
                // read it either.
                let delay = if e.is_transient() {
                    self.config.retry_base
                } else {
                    UNREADABLE_RUN_DELAY
                };
                tracing::error!(job = %job.fence.job_id, run = %job.run_id, error = %e, ?delay, "cannot load the job's run; releasing the job");
                let _ = self
                    .store
                    .release_job_after(&job.fence, delay.as_millis() as u64)
                    .await;
                None
            }
        }
    }

    fn spawn_heartbeat(
        &self,
        job: &ClaimedJob,
        cancel: CancellationToken,
        stop: Arc<std::sync::Mutex<Stop>>,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        let fence = job.fence.clone();
        let run_id = job.run_id.clone();
        let every = self.config.heartbeat_interval;
        let lease_ms = self.config.lease.as_millis() as u64;
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        *stop.lock().expect("lock") = Stop::Shutdown;
                        cancel.cancel();
                        return;
                    }
                    _ = tokio::time::sleep(every) => {}
                }
                match store.heartbeat_job(&fence, &run_id, lease_ms).await {
                    Ok(Heartbeat::Alive) => {}
                    Ok(Heartbeat::LeaseLost) => {
                        *stop.lock().expect("lock") = Stop::LeaseLost;
                        cancel.cancel();
                        return;
                    }
                    Ok(Heartbeat::RunClosed) => {
                        *stop.lock().expect("lock") = Stop::RunClosed;
                        cancel.cancel();
                        return;
                    }
                    Err(e) => tracing::warn!(run = %run_id, error = %e, "heartbeat failed"),
                }
            }
        })
    }

    async fn finish(
        &self,
        job: &ClaimedJob,
        run_type: opsledger_core::RunType,
        result: Result<(), HandlerError>,
        stop: Stop,
        done: WorkDone,
    ) -> Result<(), StoreError> {
        let store = &self.store;
        let fence = &job.fence;
        let finished = done.unit;
        // The unit's finishing write counted the last unit: complete the
        // parent whatever else happened since (a heartbeat that then found
        // the job ended, a shutdown).
        if finished.is_some_and(|s| s.all_processed) {
            store.maybe_complete_bulk_run(&job.run_id).await?;
        }
        // A stop signal that raced with work already done (the handler closed
        // its run, planned its units, recorded its unit) does not undo it:
        // the job is finished as usual below.
        let work_done = match stop {
            Stop::Shutdown | Stop::RunClosed => self.work_done(job, run_type, &result, done).await?,
            Stop::None | Stop::LeaseLost => false,
        };
        match stop {
            Stop::LeaseLost => return Ok(()), // someone else owns the job now
            Stop::Shutdown if !work_done => {
                store.release_job(fence).await?;
                return Ok(());
            }
            Stop::RunClosed if !work_done => {
                store.cancel_job(fence).await?;
                return Ok(());
            }
            Stop::Shutdown | Stop::RunClosed | Stop::None => {}
        }
        match (job.kind, result) {
            (JobKind::Run, Ok(())) => {
                let run = store.run_head(&job.run_id).await?;
                let open = run.as_ref().is_some_and(|r| !r.is_completed());
                if open && run_type.is_fan_out() {
                    store.complete_job(fence).await?;
                    store.maybe_complete_bulk_run(&job.run_id).await?;
                } else if open {
                    let failure = Failure::new(
                        "handler_left_run_open",
                        "the handler returned without completing the run",
                    );
                    // Only the holder of the lease may close the run.
                    if store.fail_job(fence, &failure.message).await? {
                        self.close_failed(&job.run_id, failure).await?;
                    }
                } else {
                    store.complete_job(fence).await?;
                }
            }
            (JobKind::Unit, Ok(())) => match finished {
                // The common path: the finishing write said whether this was
                // the last unit, and the parent was completed above if so.
                Some(_) => {}
                // Otherwise look: a handler that did not finish its job has its
                // unit finished as failed, so the parent can complete.
                None => {
                    if store.job_is_held(fence).await? {
                        let failure = Failure::new(
                            "handler_left_unit_open",
                            "the unit handler returned without recording",
                        );
                        self.finish_unit_failed(job, failure).await?;
                    }
                    self.complete_parent_if_done(&job.run_id).await?;
                }
            },
            (_, Err(HandlerError::Store(StoreError::LeaseLost { .. }))) => {}
            (_, Err(HandlerError::Store(StoreError::RunNotRunning { .. }))) => {
                store.cancel_job(fence).await?;
            }
            (kind, Err(e)) => {
                let failure = e.failure();
                if let Some(asked) = e.retry_after().filter(|_| !job.is_last_attempt()) {
                    let delay = backoff(self.config.retry_base, job.attempt, Some(asked));
                    tracing::info!(run = %job.run_id, code = %failure.code, ?delay, "retrying: {}", failure.message);
                    store
                        .retry_job(fence, &failure.message, delay.as_millis() as u64)
                        .await?;
                    return Ok(());
                }
                match kind {
                    JobKind::Unit => {
                        self.finish_unit_failed(job, failure).await?;
                        self.complete_parent_if_done(&job.run_id).await?;
                    }
                    JobKind::Run => {
                        // A stalled attempt whose lease was rescued (and maybe
                        // re-claimed) must not close the run under the new one.
                        if store.fail_job(fence, &failure.message).await? {
                            self.close_exhausted(&job.run_id, failure).await?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether a job whose handler was stopped had in fact finished its work:
    /// a unit that recorded itself, a run its handler closed, or a fan-out
    /// parent that planned its units while its run is still open.
    async fn work_done(
        &self,
        job: &ClaimedJob,
        run_type: opsledger_core::RunType,
        result: &Result<(), HandlerError>,
        done: WorkDone,
    ) -> Result<bool, StoreError> {
        if result.is_err() {
            return Ok(false);
        }
        Ok(match job.kind {
            JobKind::Unit => done.unit.is_some(),
            JobKind::Run if done.closed_run => true,
            JobKind::Run if run_type.is_fan_out() => self
                .store
                .run_head(&job.run_id)
                .await?
                .is_some_and(|run| !run.is_completed() && run.summary_counts.total.is_some()),
            JobKind::Run => false,
        })
    }

    /// Completes a fan-out parent once all its units are processed. A plain
    /// read first, so the hot parent row is locked only when it may be done.
    async fn complete_parent_if_done(&self, run_id: &str) -> Result<(), StoreError> {
        let Some(run) = self.store.run_head(run_id).await? else {
            return Ok(());
        };
        let c = run.summary_counts;
        if !run.is_completed() && c.total.is_some() && c.processed >= c.total {
            self.store.maybe_complete_bulk_run(run_id).await?;
        }
        Ok(())
    }

    /// The "unit finished" path for a unit that could not be done.
    async fn finish_unit_failed(&self, job: &ClaimedJob, mut failure: Failure) -> Result<(), StoreError> {
        failure.unit.get_or_insert_with(|| job.unit_key.clone());
        let unit = UnitRecord {
            key: job.unit_key.clone(),
            outcome: UnitOutcome::Failed,
            failure: Some(failure),
            context_patch: None,
        };
        match self
            .store
            .finish_unit_job(&job.fence, &job.run_id, unit, JobEnd::Failed)
            .await
        {
            Ok(_) | Err(StoreError::LeaseLost { .. }) | Err(StoreError::RunNotRunning { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A run job out of attempts: the run's proof decides if there is an
    /// adapter (work that landed is not thrown away); otherwise it fails with
    /// the handler's failure.
    async fn close_exhausted(&self, run_id: &str, failure: Failure) -> Result<(), StoreError> {
        let Some(run) = self.store.get_run(run_id).await? else {
            return Ok(());
        };
        if run.is_completed() {
            return Ok(());
        }
        if self.registry.get_adapter(run.run_type).is_some() {
            let d = reconciler::reconcile_run(&self.store, &self.registry, &run, Some("system")).await?;
            if d.applied != "skipped" {
                return Ok(());
            }
        }
        self.close_failed(run_id, failure).await
    }

    /// Closes the run as failed — unless a job can still move it (a fan-out
    /// parent's units finish it; the sweep closes it if they cannot).
    async fn close_failed(&self, run_id: &str, failure: Failure) -> Result<(), StoreError> {
        let completion = Completion::new(Outcome::Failed).with_failure(failure.clone());
        if let CompleteResult::Completed(_) = self.store.complete_run_if_idle(run_id, completion).await? {
            tracing::warn!(run = %run_id, code = %failure.code, "{}", failure.message);
        }
        Ok(())
    }
}

/// Runs a handler in its own task so a panic is contained and reported.
async fn contain<F>(fut: F) -> Result<(), HandlerError>
where
    F: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    match tokio::spawn(fut).await {
        Ok(r) => r,
        Err(join) if join.is_panic() => Err(HandlerError::permanent(
            "handler_panicked",
            "the handler panicked",
        )),
        Err(_) => Err(HandlerError::permanent(
            "handler_aborted",
            "the handler was aborted",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_honours_retry_after() {
        let base = Duration::from_secs(1);
        assert_eq!(backoff(base, 1, None), Duration::from_secs(1));
        assert_eq!(backoff(base, 3, None), Duration::from_secs(4));
        assert_eq!(backoff(base, 30, None), MAX_BACKOFF);
        assert_eq!(
            backoff(base, 1, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
    }
}

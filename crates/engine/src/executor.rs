//! Executes one claimed job: loads its run, runs its handler under a
//! heartbeat (a panic is contained), reads what the decision needs, and
//! hands the decision to the completer.

use crate::batch_completer::{PendingUnit, ResultSink};
use crate::completer::Completer;
use crate::finish::{Finish, FinishInput, Returned, RunAfter, Stop, decide};
use crate::handler::{DoneSlot, RunContext, UnitContext};
use crate::heartbeat::{InFlight, Liveness, Registration, StopSlot};
use crate::runner::{RunnerConfig, UNREADABLE_RUN_DELAY};
use crate::{HandlerError, Registry};
use opsledger_store::jobs::{ClaimedJob, JobKind};
use opsledger_store::lease::LeasedRun;
use opsledger_store::{Store, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub(crate) struct Execution {
    pub store: Store,
    pub registry: Registry,
    pub config: RunnerConfig,
    pub in_flight: InFlight,
    pub results: ResultSink,
}

impl Execution {
    pub async fn execute(self, job: ClaimedJob) {
        // A unit job's claim read its run's head; a run job's is read here.
        let head = match job.head.clone() {
            Some(head) => head,
            None => {
                let Some(head) = self.load(&job, self.store.run_head(&job.run_id)).await else {
                    return;
                };
                head
            }
        };
        if head.is_completed() {
            let _ = self.store.cancel_job(&job.fence).await;
            return;
        }
        let run_type = head.run_type;
        let cancel = CancellationToken::new();
        let stop: StopSlot = Arc::new(std::sync::Mutex::new(Stop::None));
        let done = DoneSlot::default();
        let liveness = Liveness::default();
        let lease = LeasedRun::new(&self.store, job.fence.clone(), head.clone());
        let span = tracing::info_span!("job", run = %head.id, r#type = %run_type, unit = %job.unit_key, attempt = job.attempt);
        let (returned, heartbeat) = match job.kind {
            JobKind::Run => {
                // A run handler gets the whole run; a unit handler only its
                // head (a fan-out's context may hold thousands of requested ids).
                // Loaded before the heartbeat starts, so a failed read leaves none behind.
                let Some(run) = self.load(&job, self.store.get_run(&job.run_id)).await else {
                    return;
                };
                let heartbeat = self.heartbeat(&job, run_type, &cancel, &stop, &liveness);
                let returned = match self.registry.get(run_type) {
                    Some(h) => {
                        let ctx = RunContext {
                            done: done.clone(),
                            liveness: liveness.clone(),
                            ..RunContext::new(run, lease.clone(), job.attempt, cancel.clone())
                        };
                        Returned::of_run(
                            contain(
                                tracing::Instrument::instrument(async move { h.execute(ctx).await }, span),
                                &cancel,
                                self.config.cancel_grace,
                            )
                            .await,
                        )
                    }
                    None => Returned::of_run(Err(HandlerError::permanent(
                        "no_handler",
                        format!("this node cannot execute {run_type} runs"),
                    ))),
                };
                (returned, heartbeat)
            }
            JobKind::Unit => {
                let heartbeat = self.heartbeat(&job, run_type, &cancel, &stop, &liveness);
                let returned = match self.registry.get_unit(run_type) {
                    Some(h) => {
                        let ctx = UnitContext {
                            run: head.clone(),
                            unit_key: job.unit_key.clone(),
                            attempt: job.attempt,
                            cancel: cancel.clone(),
                            liveness: liveness.clone(),
                            reads: lease.reads().clone(),
                        };
                        Returned::of_unit(
                            contain(
                                tracing::Instrument::instrument(async move { h.execute(ctx).await }, span),
                                &cancel,
                                self.config.cancel_grace,
                            )
                            .await,
                        )
                    }
                    None => Returned::of_unit(Err(HandlerError::permanent(
                        "no_handler",
                        format!("this node cannot execute {run_type} units"),
                    ))),
                };
                (returned, heartbeat)
            }
        };
        let stop = *stop.lock().expect("lock");
        let (closed_run, children_planned) = {
            let done = done.lock().expect("lock");
            (done.closed_run, done.children_planned)
        };
        let completer = Completer {
            store: &self.store,
            registry: &self.registry,
            config: &self.config,
            job: &job,
        };
        let outcome = async {
            // Only a run handler that returned Ok needs its run's state
            // decided on; any other end (a lost lease, a shutdown) must not
            // depend on one more read succeeding.
            let run_after = match (job.kind, &returned) {
                (JobKind::Run, Returned::RunDone) => Some(self.run_after(&job.run_id).await?),
                (JobKind::Run, _) => Some(RunAfter::NOT_READ),
                (JobKind::Unit, _) => None,
            };
            let finish = decide(FinishInput {
                returned,
                stop,
                last_attempt: job.is_last_attempt(),
                fan_out: run_type.is_fan_out(),
                run_after,
                closed_run,
                children_planned,
            });
            match finish {
                // Committed with others by the batch completer; the slot is
                // free as soon as it is handed over. The job leaves the
                // heartbeat's set: renewing it there would lock the rows the
                // batch is ending (measured: deadlocks, expired leases). The
                // flush wait is capped at a quarter of the lease instead.
                Finish::CommitUnit(result) => {
                    drop(heartbeat);
                    match self
                        .results
                        .send(PendingUnit {
                            job: job.clone(),
                            result,
                        })
                        .await
                    {
                        Ok(()) => Ok(()),
                        Err(pending) => completer.commit_unit(pending.result).await,
                    }
                }
                finish => {
                    drop(heartbeat);
                    completer.apply(finish).await
                }
            }
        }
        .await;
        if let Err(e) = outcome {
            tracing::warn!(job = %job.fence.job_id, error = %e, "finishing job failed; the rescuer will take it");
        }
    }

    /// Puts the job under the node's heartbeat until the returned
    /// registration is dropped.
    fn heartbeat(
        &self,
        job: &ClaimedJob,
        run_type: opsledger_core::RunType,
        cancel: &CancellationToken,
        stop: &StopSlot,
        liveness: &Liveness,
    ) -> Registration {
        let stall = self
            .config
            .stall_timeout
            .unwrap_or_else(|| std::time::Duration::from_millis(run_type.stall_timeout_ms()));
        self.in_flight
            .register(job, cancel.clone(), stop.clone(), liveness.clone(), stall)
    }

    async fn run_after(&self, run_id: &str) -> Result<RunAfter, StoreError> {
        let head = self.store.run_head(run_id).await?;
        Ok(RunAfter {
            open: head.as_ref().is_some_and(|r| !r.is_completed()),
            planned: head.as_ref().is_some_and(|r| r.summary_counts.total.is_some()),
        })
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
}

/// Runs a handler in its own task so a panic is contained and reported,
/// and so a handler that ignores its fired cancel token (hung in a call that
/// never returns) is aborted after `grace` instead of holding its slot and
/// the node's shutdown forever.
async fn contain<F, T>(fut: F, cancel: &CancellationToken, grace: Duration) -> Result<T, HandlerError>
where
    F: Future<Output = Result<T, HandlerError>> + Send + 'static,
    T: Send + 'static,
{
    let mut task = tokio::spawn(fut);
    let fired_and_ignored = async {
        cancel.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    let joined = tokio::select! {
        joined = &mut task => joined,
        _ = fired_and_ignored => {
            task.abort();
            tracing::warn!(?grace, "the handler did not stop after its cancel token fired; aborted");
            return Err(HandlerError::permanent(
                "handler_aborted",
                "the handler did not stop after it was cancelled and was aborted",
            ));
        }
    };
    match joined {
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

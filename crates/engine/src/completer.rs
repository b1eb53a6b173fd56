//! Carries out a job's [`Finish`]: every write that ends a job, each fenced
//! by its lease, and the completion of a fan-out parent by its last unit.

use crate::finish::Finish;
use crate::handler::UnitResult;
use crate::runner::{RunnerConfig, backoff};
use crate::{Registry, reconciler};
use opsledger_core::{Failure, Outcome, UnitOutcome};
use opsledger_store::jobs::{ClaimedJob, JobEnd};
use opsledger_store::{CompleteResult, Completion, Store, StoreError};

pub(crate) struct Completer<'a> {
    pub store: &'a Store,
    pub registry: &'a Registry,
    pub config: &'a RunnerConfig,
    pub job: &'a ClaimedJob,
}

impl Completer<'_> {
    pub async fn apply(&self, finish: Finish) -> Result<(), StoreError> {
        let (store, job, fence) = (self.store, self.job, &self.job.fence);
        match finish {
            Finish::Nothing => {}
            Finish::Release => {
                store.release_job(fence).await?;
            }
            Finish::Cancel => {
                store.cancel_job(fence).await?;
            }
            Finish::Retry { failure, asked } => {
                let delay = backoff(self.config.retry_base, job.attempt, Some(asked));
                tracing::info!(run = %job.run_id, code = %failure.code, ?delay, "retrying: {}", failure.message);
                store
                    .retry_job(
                        fence,
                        &failure.message,
                        u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    )
                    .await?;
            }
            Finish::CommitUnit(result) => self.commit_unit(result).await?,
            Finish::CompleteRunJob { fan_out } => {
                store.complete_job(fence).await?;
                if fan_out {
                    // Zero units, or units that all finished before the parent's job did.
                    store.maybe_complete_bulk_run(&job.run_id).await?;
                }
            }
            Finish::FailRunJob { failure, reconcile } => {
                // A stalled attempt whose lease was rescued (and maybe
                // re-claimed) must not close the run under the new one.
                if store.fail_job(fence, &failure.message).await? {
                    if reconcile {
                        self.close_exhausted(failure).await?;
                    } else {
                        self.close_failed(failure).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The one "unit finished" step: ledger, artifact and job end in one
    /// transaction; the last unit completes its parent.
    pub async fn commit_unit(&self, result: UnitResult) -> Result<(), StoreError> {
        let job = self.job;
        let end = match result.outcome {
            UnitOutcome::Failed => JobEnd::Failed,
            UnitOutcome::Succeeded | UnitOutcome::Skipped => JobEnd::Completed,
        };
        let record = result.into_record(&job.unit_key);
        match self
            .store
            .finish_unit_job(&job.fence, &job.run_id, record, end)
            .await
        {
            Ok(summary) if summary.all_processed => {
                self.store.maybe_complete_bulk_run(&job.run_id).await?;
            }
            Ok(_) => {}
            // Someone else owns the job, or the run closed (the job was cancelled).
            Err(StoreError::LeaseLost { .. }) | Err(StoreError::RunNotRunning { .. }) => {}
            // The commit may have landed: the lease decides (it expires, the
            // rescuer retries the unit, and a landed unit is not counted twice).
            Err(e @ StoreError::CommitOutcomeUnknown(_)) => return Err(e),
            // The database refused for now (busy, deadlock, connection lost):
            // the unit runs again after the backoff, as a handler's transient
            // failure would; out of attempts, it fails below like any refusal.
            Err(e) if e.write_may_be_retried() && !job.is_last_attempt() => {
                let delay = backoff(self.config.retry_base, job.attempt, None);
                tracing::info!(run = %job.run_id, unit = %job.unit_key, ?delay, error = %e, "retrying a unit whose result could not be committed");
                self.store
                    .retry_job(&job.fence, &e.to_string(), delay.as_millis() as u64)
                    .await?;
            }
            // The result itself was refused (e.g. its artifact): the unit
            // still finishes, as failed, so its parent can complete.
            Err(e) => {
                tracing::warn!(run = %job.run_id, unit = %job.unit_key, error = %e, "unit result refused; recording the unit as failed");
                let failed = UnitResult {
                    outcome: UnitOutcome::Failed,
                    failure: Some(Failure::new("unit_result_refused", e.to_string())),
                    artifact: None,
                }
                .into_record(&job.unit_key);
                match self
                    .store
                    .finish_unit_job(&job.fence, &job.run_id, failed, JobEnd::Failed)
                    .await
                {
                    Ok(summary) if summary.all_processed => {
                        self.store.maybe_complete_bulk_run(&job.run_id).await?;
                    }
                    Ok(_) | Err(StoreError::LeaseLost { .. }) | Err(StoreError::RunNotRunning { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// A run job out of attempts: the run's proof decides if there is an
    /// adapter (work that landed is not thrown away); otherwise it fails with
    /// the handler's failure.
    async fn close_exhausted(&self, failure: Failure) -> Result<(), StoreError> {
        let Some(run) = self.store.get_run(&self.job.run_id).await? else {
            return Ok(());
        };
        if run.is_completed() {
            return Ok(());
        }
        if self.registry.get_adapter(run.run_type).is_some() {
            let d = reconciler::reconcile_run(self.store, self.registry, &run, Some("system")).await?;
            if d.applied != "skipped" {
                return Ok(());
            }
        }
        self.close_failed(failure).await
    }

    /// Closes the run as failed — unless a job can still move it (a fan-out
    /// parent's units finish it; the sweep closes it if they cannot).
    async fn close_failed(&self, failure: Failure) -> Result<(), StoreError> {
        let run_id = &self.job.run_id;
        let completion = Completion::new(Outcome::Failed).with_failure(failure.clone());
        if let CompleteResult::Completed(_) = self.store.complete_run_if_idle(run_id, completion).await? {
            tracing::warn!(run = %run_id, code = %failure.code, "{}", failure.message);
        }
        Ok(())
    }
}

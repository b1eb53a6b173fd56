//! What a family implements: a [`Handler`] executes a whole run (one job per
//! run); a [`UnitHandler`] executes one unit of a fan-out (one job per unit).

use async_trait::async_trait;
use opsledger_core::{Failure, Run};
use opsledger_store::jobs::{Fence, JobEnd};
use opsledger_store::runs::{Completion, RecordSummary, UnitRecord};
use opsledger_store::{CompleteResult, ContextPatch, RunHead, Store, StoreError};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What a run handler gets: the run, the store, the job's lease, and a token
/// cancelled when the run is cancelled, the lease is lost, or the process
/// shuts down. Its writes to the run go through [`RunContext::init_total`],
/// [`RunContext::record_units`], [`RunContext::patch_context`] and
/// [`RunContext::complete`], all fenced by the lease.
#[derive(Clone)]
pub struct RunContext {
    pub run: Run,
    pub store: Store,
    pub fence: Fence,
    pub attempt: u32,
    pub cancel: CancellationToken,
    /// What the handler reported doing (see [`WorkDone`]).
    pub(crate) done: DoneSlot,
}

/// What a handler's own writes reported, read by the runner after it
/// returns: the work was done even if a stop signal raced with it, and a
/// unit's finish says whether it was the fan-out's last.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WorkDone {
    /// The handler closed its run through [`RunContext::complete`].
    pub closed_run: bool,
    /// The unit's finishing write, for unit jobs.
    pub unit: Option<RecordSummary>,
}

/// Shared between a handler's context and the runner.
pub(crate) type DoneSlot = Arc<Mutex<WorkDone>>;

impl RunContext {
    pub fn new(run: Run, store: Store, fence: Fence, attempt: u32, cancel: CancellationToken) -> RunContext {
        RunContext {
            run,
            store,
            fence,
            attempt,
            cancel,
            done: DoneSlot::default(),
        }
    }

    /// Records units, refused if this worker lost the job's lease.
    pub async fn record_units(&self, units: &[UnitRecord]) -> Result<RecordSummary, StoreError> {
        self.store
            .record_units_fenced(Some(&self.fence), &self.run.id, units)
            .await
    }

    /// Sets the run's `total` once, refused if this worker lost the job's lease.
    pub async fn init_total(&self, total: u64) -> Result<(), StoreError> {
        self.store
            .init_total_fenced(Some(&self.fence), &self.run.id, total)
            .await
    }

    /// Patches the run's context, refused if this worker lost the job's lease.
    pub async fn patch_context(&self, patches: &[ContextPatch]) -> Result<bool, StoreError> {
        self.store
            .patch_context_fenced(Some(&self.fence), &self.run.id, patches)
            .await
    }

    /// Completes the run, refused if this worker lost the job's lease (a
    /// stalled attempt cannot close a run another worker now holds).
    pub async fn complete(&self, completion: Completion) -> Result<CompleteResult, StoreError> {
        let result = self
            .store
            .complete_run_fenced(&self.fence, &self.run.id, completion)
            .await?;
        if let CompleteResult::Completed(_) = &result {
            self.done.lock().expect("lock").closed_run = true;
        }
        Ok(result)
    }
}

/// What a unit handler gets.
#[derive(Clone)]
pub struct UnitContext {
    /// The run's head only: a unit must not need the run's whole context.
    pub run: RunHead,
    pub unit_key: String,
    pub store: Store,
    pub fence: Fence,
    pub attempt: u32,
    pub cancel: CancellationToken,
    /// What the handler reported doing (see [`WorkDone`]).
    pub(crate) done: DoneSlot,
}

impl UnitContext {
    /// Finishes the job and records its unit (no artifact), fenced by the lease.
    pub async fn finish(&self, unit: UnitRecord, end: JobEnd) -> Result<RecordSummary, StoreError> {
        let summary = self
            .store
            .finish_unit_job(&self.fence, &self.run.id, unit, end)
            .await?;
        self.note_finished(summary);
        Ok(summary)
    }

    /// Tells the runner that an artifact writer (e.g.
    /// `Store::finish_backup_unit`) finished this job with this result.
    pub fn note_finished(&self, summary: RecordSummary) {
        self.done.lock().expect("lock").unit = Some(summary);
    }
}

/// A handler failure. `retry_after` marks it transient: the job is retried
/// after that delay (or the backoff, if longer) while attempts remain.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{}", failure.message)]
    Failed {
        failure: Failure,
        retry_after: Option<Duration>,
    },
}

impl HandlerError {
    pub fn permanent(code: &str, message: impl Into<String>) -> HandlerError {
        HandlerError::Failed {
            failure: Failure::new(code, message),
            retry_after: None,
        }
    }

    pub fn transient(code: &str, message: impl Into<String>, retry_after: Duration) -> HandlerError {
        HandlerError::Failed {
            failure: Failure::new(code, message),
            retry_after: Some(retry_after),
        }
    }

    pub fn failure(&self) -> Failure {
        match self {
            HandlerError::Failed { failure, .. } => failure.clone(),
            HandlerError::Store(e) => Failure::new("store_error", e.to_string()),
        }
    }

    /// Transient errors are retried; database errors are too (the database may be back).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            HandlerError::Failed { retry_after, .. } => *retry_after,
            HandlerError::Store(StoreError::Database(_)) => Some(Duration::ZERO),
            HandlerError::Store(_) => None,
        }
    }
}

/// Executes runs of one type. It records units and completes the run through
/// the store — except fan-out parents, which plan units and return (the
/// units' completion completes them). A non-fan-out handler that returns with
/// its run still open has its run closed as failed.
#[async_trait]
pub trait Handler: Send + Sync {
    async fn execute(&self, ctx: RunContext) -> Result<(), HandlerError>;
}

/// Executes one unit of a fan-out. On success it must finish its job through
/// a fenced store call that records the unit ([`UnitContext::finish`], or an
/// artifact writer that does the same, followed by
/// [`UnitContext::note_finished`]) — then the unit and its artifact land
/// together. On error, the runner retries or finishes the unit as failed.
#[async_trait]
pub trait UnitHandler: Send + Sync {
    async fn execute(&self, ctx: UnitContext) -> Result<(), HandlerError>;
}

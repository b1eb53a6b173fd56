//! What a family implements: a [`Handler`] executes a whole run (one job per
//! run); a [`UnitHandler`] executes one unit of a fan-out (one job per unit).
//!
//! Neither gets the store. A run handler writes through its [`RunContext`],
//! whose every write is fenced by the job's lease (a [`LeasedRun`]); a unit
//! handler only reads ([`RunReads`]) and returns its unit's result as data —
//! outcome, failure, artifact — which the runtime commits with the unit
//! ledger and the job's end in one transaction.

use async_trait::async_trait;
use opsledger_core::{Failure, Run, UnitOutcome};
use opsledger_store::artifacts::UnitArtifact;
use opsledger_store::lease::{LeasedRun, RunReads};
use opsledger_store::runs::{Completion, RecordSummary, UnitRecord};
use opsledger_store::{CompleteResult, ContextPatch, RunHead, StoreError};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub use crate::heartbeat::Liveness;

/// What a run handler gets: the run as claimed, its leased writes, and a
/// token cancelled when the run is cancelled, the lease is lost, or the
/// process shuts down.
#[derive(Clone)]
pub struct RunContext {
    pub run: Run,
    pub attempt: u32,
    pub cancel: CancellationToken,
    /// Mark it on progress the runtime cannot see (a long computation); every
    /// write through this context and every provider call of the families'
    /// kit marks it already. A handler that shows none for its type's stall
    /// timeout is cancelled as hung.
    pub liveness: Liveness,
    pub(crate) lease: LeasedRun,
    /// What the handler reported doing (see [`WorkDone`]).
    pub(crate) done: DoneSlot,
}

/// What a handler's own writes reported, read by the runner after it
/// returns: the work was done even if a stop signal raced with it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WorkDone {
    /// The handler closed its run through [`RunContext::complete`].
    pub closed_run: bool,
    /// The handler handed its run to child runs ([`RunContext::enqueue_child_runs`]).
    pub children_planned: bool,
}

/// Shared between a handler's context and the runner.
pub(crate) type DoneSlot = Arc<Mutex<WorkDone>>;

impl RunContext {
    pub fn new(run: Run, lease: LeasedRun, attempt: u32, cancel: CancellationToken) -> RunContext {
        RunContext {
            run,
            attempt,
            cancel,
            liveness: Liveness::default(),
            lease,
            done: DoneSlot::default(),
        }
    }

    /// Reads scoped to this run (its tenant, its ledger, its artifacts).
    /// Passes `r` through, marking progress: a write made is progress.
    fn marked<T>(&self, r: T) -> T {
        self.liveness.mark();
        r
    }

    pub fn reads(&self) -> &RunReads {
        self.lease.reads()
    }

    /// Records units (with the artifacts they carry) exactly once each.
    pub async fn record_units(&self, units: &[UnitRecord]) -> Result<RecordSummary, StoreError> {
        self.marked(self.lease.record_units(units).await)
    }

    /// Sets the run's `total` once.
    pub async fn init_total(&self, total: u64) -> Result<(), StoreError> {
        self.marked(self.lease.init_total(total).await)
    }

    /// Patches the run's context; `false` when the run is completed.
    pub async fn patch_context(&self, patches: &[ContextPatch]) -> Result<bool, StoreError> {
        self.marked(self.lease.patch_context(patches).await)
    }

    /// Plans a fan-out: `total` and one unit job per distinct key, together.
    pub async fn enqueue_units(&self, unit_keys: &[String], max_attempts: u32) -> Result<u64, StoreError> {
        self.marked(self.lease.enqueue_units(unit_keys, max_attempts).await)
    }

    /// Starts or adopts a composite's child runs, once.
    pub async fn enqueue_child_runs(
        &self,
        children: &[opsledger_store::children::NewChild],
    ) -> Result<Vec<opsledger_store::children::ChildStart>, StoreError> {
        let starts = self.lease.enqueue_child_runs(children).await?;
        self.liveness.mark();
        self.done.lock().expect("lock").children_planned = true;
        Ok(starts)
    }

    /// Declares the run's phases once (a retried run keeps them).
    pub async fn plan_phases(&self, plan: &[opsledger_core::phases::PhasePlan]) -> Result<(), StoreError> {
        self.marked(self.lease.plan_phases(plan).await)
    }

    /// Enters phase `key`, with `total` units when it counts them.
    pub async fn set_phase(&self, key: &str, total: Option<u64>) -> Result<(), StoreError> {
        self.marked(self.lease.set_phase(key, total).await)
    }

    /// Records units of the active phase exactly once each.
    pub async fn record_phase_units(
        &self,
        phase: &str,
        units: &[UnitRecord],
    ) -> Result<RecordSummary, StoreError> {
        self.marked(self.lease.record_phase_units(phase, units).await)
    }

    /// Plans a fan-out in waves: wave k+1 is claimable once wave k is recorded.
    pub async fn enqueue_unit_waves(
        &self,
        waves: &[&[String]],
        max_attempts: u32,
    ) -> Result<u64, StoreError> {
        self.marked(self.lease.enqueue_unit_waves(waves, max_attempts).await)
    }

    /// The run's backup set, created once.
    pub async fn backup_set(&self, name: &str) -> Result<String, StoreError> {
        self.marked(self.lease.backup_set(name, None).await)
    }

    /// The run's backup set, created once with the tenant's directory as
    /// read now (the names its items' references point to).
    pub async fn backup_set_with_directory(
        &self,
        name: &str,
        directory: &serde_json::Value,
    ) -> Result<String, StoreError> {
        self.marked(self.lease.backup_set(name, Some(directory)).await)
    }

    /// The run's tenant's default baseline profile, made on first call.
    pub async fn default_baseline_profile(&self) -> Result<opsledger_store::baselines::Profile, StoreError> {
        self.marked(self.lease.default_baseline_profile().await)
    }

    /// Baseline profile `name`, made with the run's tenant as source if new.
    pub async fn named_baseline_profile(
        &self,
        name: &str,
    ) -> Result<opsledger_store::baselines::Profile, StoreError> {
        self.marked(self.lease.named_baseline_profile(name).await)
    }

    /// The run's baseline snapshot, made once with its planned policies.
    pub async fn baseline_snapshot(
        &self,
        profile_id: &str,
        policy_types: &[String],
        planned: &[opsledger_store::baselines::PlannedPolicy],
    ) -> Result<opsledger_store::baselines::SnapshotHead, StoreError> {
        self.marked(
            self.lease
                .baseline_snapshot(profile_id, policy_types, planned)
                .await,
        )
    }

    /// Seals the run's snapshot with its gaps, patching the context with it.
    pub async fn seal_baseline_snapshot(
        &self,
        gaps: &[opsledger_core::baseline::Gap],
        patches: &[ContextPatch],
    ) -> Result<opsledger_store::baselines::SnapshotHead, StoreError> {
        self.marked(self.lease.seal_baseline_snapshot(gaps, patches).await)
    }

    /// Records the run's compare and findings, patching the context with it.
    pub async fn record_compare(
        &self,
        record: &opsledger_store::baselines::CompareRecord,
        findings: &[opsledger_core::drift::Finding],
        patches: &[ContextPatch],
    ) -> Result<(), StoreError> {
        self.marked(self.lease.record_compare(record, findings, patches).await)
    }

    /// The run's evidence snapshot, made once with its items planned in order.
    pub async fn evidence_snapshot(
        &self,
        items: &[opsledger_core::evidence::Item],
        plan_signer: opsledger_store::evidence::PlanSigner<'_>,
    ) -> Result<opsledger_store::evidence::SnapshotHead, StoreError> {
        self.marked(self.lease.evidence_snapshot(items, plan_signer).await)
    }

    /// Seals the run's evidence snapshot with its signature, patching the context with it.
    pub async fn seal_evidence_snapshot(
        &self,
        signature: &str,
        patches: &[ContextPatch],
    ) -> Result<opsledger_store::evidence::SnapshotHead, StoreError> {
        self.marked(self.lease.seal_evidence_snapshot(signature, patches).await)
    }

    /// Completes the run (a stalled attempt cannot close a run another
    /// worker now holds: the write is fenced).
    pub async fn complete(&self, completion: Completion) -> Result<CompleteResult, StoreError> {
        let result = self.lease.complete(completion).await?;
        self.liveness.mark();
        if let CompleteResult::Completed(_) = &result {
            self.done.lock().expect("lock").closed_run = true;
        }
        Ok(result)
    }
}

/// What a unit handler gets: the run's head, the unit, reads, and the token.
#[derive(Clone)]
pub struct UnitContext {
    /// The run's head only: a unit must not need the run's whole context.
    pub run: RunHead,
    pub unit_key: String,
    pub attempt: u32,
    pub cancel: CancellationToken,
    /// As [`RunContext::liveness`].
    pub liveness: Liveness,
    pub reads: RunReads,
}

/// A unit's terminal result, as data: the runtime records it (exactly once),
/// writes its artifact and ends the job, in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitResult {
    pub outcome: UnitOutcome,
    pub failure: Option<Failure>,
    pub artifact: Option<UnitArtifact>,
}

impl UnitResult {
    pub fn succeeded() -> UnitResult {
        UnitResult {
            outcome: UnitOutcome::Succeeded,
            failure: None,
            artifact: None,
        }
    }

    pub fn with_artifact(mut self, artifact: UnitArtifact) -> UnitResult {
        self.artifact = Some(artifact);
        self
    }

    /// The ledger row for unit `key`.
    pub(crate) fn into_record(self, key: &str) -> UnitRecord {
        UnitRecord {
            key: key.to_owned(),
            outcome: self.outcome,
            failure: self.failure.map(|mut f| {
                f.unit.get_or_insert_with(|| key.to_owned());
                f
            }),
            context_patch: None,
            artifact: self.artifact,
        }
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
    /// The handler stopped because its cancel token fired, with nothing to
    /// report; the runner decides from why the token fired.
    #[error("stopped before finishing")]
    Stopped,
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
            HandlerError::Stopped => Failure::new("stopped", "the handler stopped before finishing"),
        }
    }

    /// Transient errors are retried; database errors are too (the database may be back).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            HandlerError::Failed { retry_after, .. } => *retry_after,
            HandlerError::Store(StoreError::Database(_)) => Some(Duration::ZERO),
            HandlerError::Store(_) | HandlerError::Stopped => None,
        }
    }
}

/// Executes runs of one type. It records units and completes the run through
/// its context — except fan-out parents, which plan units and return (the
/// units' completion completes them). A non-fan-out handler that returns with
/// its run still open has its run closed as failed.
#[async_trait]
pub trait Handler: Send + Sync {
    async fn execute(&self, ctx: RunContext) -> Result<(), HandlerError>;
}

/// Executes one unit of a fan-out and returns its result; the runtime
/// commits it. On error, the runner retries or finishes the unit as failed.
#[async_trait]
pub trait UnitHandler: Send + Sync {
    async fn execute(&self, ctx: UnitContext) -> Result<UnitResult, HandlerError>;
}

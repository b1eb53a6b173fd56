//! Proof-based reconciliation (OPERATIONS.md §8): the adapter trait, and
//! deciding + applying a result for one run.
//!
//! Adapters get a [`ProofReader`] — reads only — so they cannot write. The
//! decision is applied by the store's single closing write, only if the run
//! is still in the state the decision was made on; rerunning changes nothing.

use crate::Registry;
use async_trait::async_trait;
use opsledger_core::catalog::Reconciliation;
use opsledger_core::reconcile::AdapterResult;
use opsledger_core::{Outcome, Run};
use opsledger_store::proof::ProofReader;
use opsledger_store::{CompleteResult, Store, StoreError};
use serde::Serialize;

/// Reads a run's proof and decides its outcome.
#[async_trait]
pub trait ReconciliationAdapter: Send + Sync {
    /// Stable name recorded in `context.reconciliation.adapter`.
    fn name(&self) -> &'static str;
    async fn reconcile(&self, run: &Run, proof: &ProofReader) -> Result<AdapterResult, StoreError>;
}

/// The generic fail-closed path for types without an adapter.
pub const GENERIC_ADAPTER: &str = "generic_fail_closed";

/// What reconciliation decided for one run, and whether it was applied.
#[derive(Debug, Clone, Serialize)]
pub struct ReconcileDecision {
    pub run_id: String,
    pub run_type: String,
    pub previous_status: String,
    pub adapter: String,
    pub result: AdapterResult,
    /// `applied` (this pass closed the run), `already_completed`, or `skipped` (not reconciled, or the run moved).
    pub applied: &'static str,
    pub outcome: Option<Outcome>,
}

/// Decides a run's outcome from its proof (no writes).
pub async fn decide(
    store: &Store,
    registry: &Registry,
    run: &Run,
) -> Result<(String, AdapterResult), StoreError> {
    let adapter = match run.run_type.reconciliation() {
        Reconciliation::Unsupported => None,
        _ => registry.get_adapter(run.run_type),
    };
    Ok(match adapter {
        Some(a) => (
            a.name().to_owned(),
            a.reconcile(run, &ProofReader::new(store)).await?,
        ),
        None => (
            GENERIC_ADAPTER.to_owned(),
            AdapterResult::stale_no_proof(&format!("This {} run", run.run_type)),
        ),
    })
}

/// Decides and applies. `by` names who asked (`system` for the sweep).
pub async fn reconcile_run(
    store: &Store,
    registry: &Registry,
    run: &Run,
    by: Option<&str>,
) -> Result<ReconcileDecision, StoreError> {
    let (adapter, result) = decide(store, registry, run).await?;
    let applied = store.apply_reconciliation(run, &adapter, &result, by).await?;
    let (applied, outcome) = match &applied {
        CompleteResult::Completed(r) => ("applied", Some(r.outcome)),
        CompleteResult::AlreadyCompleted(r) => ("already_completed", Some(r.outcome)),
        CompleteResult::NotReady(_) => ("skipped", None),
    };
    if applied == "applied" {
        tracing::info!(run = %run.id, %adapter, reason = %result.reason_code, "reconciled: {}", result.explanation);
    }
    Ok(ReconcileDecision {
        run_id: run.id.clone(),
        run_type: run.run_type.to_string(),
        previous_status: run.status.to_string(),
        adapter,
        result,
        applied,
        outcome,
    })
}

/// Why [`force_close`] did not close the run.
#[derive(Debug, thiserror::Error)]
pub enum ForceCloseError {
    #[error("run {0} not found")]
    NotFound(String),
    #[error("run {} already completed as {}", .0.id, .0.outcome)]
    AlreadyCompleted(Box<Run>),
    #[error(transparent)]
    Refused(#[from] opsledger_core::closing::ForceCloseRefusal),
    #[error("run {0} moved while its proof was being read; look at it again and retry")]
    Moved(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An admin's force-close (OPERATIONS.md §8): `failed` or `cancelled` with
/// the reason; `blocked` only if no unit was recorded; `succeeded` or
/// `partially_succeeded` only when the run's adapter, asked now, finds proof
/// for exactly that outcome. Units never recorded are counted by the closing
/// write (proven ones as succeeded). `run` is the run as the caller read it
/// (already checked to be visible to the caller).
pub async fn force_close(
    store: &Store,
    registry: &Registry,
    run: &Run,
    outcome: Outcome,
    reason: &str,
    by: &str,
) -> Result<Run, ForceCloseError> {
    use opsledger_store::stale::{ForceClose, ForceCloseResult};
    let reason = opsledger_core::closing::check_reason(reason)?;
    if run.is_completed() {
        return Err(ForceCloseError::AlreadyCompleted(Box::new(run.clone())));
    }
    // Ask the adapter only for a success outcome: a failure needs no proof,
    // and a type without an adapter has none to give.
    let proof = match outcome {
        Outcome::Succeeded | Outcome::PartiallySucceeded => {
            match (run.run_type.reconciliation(), registry.get_adapter(run.run_type)) {
                (Reconciliation::Adapter, Some(a)) => Some(a.reconcile(run, &ProofReader::new(store)).await?),
                _ => None,
            }
        }
        _ => None,
    };
    // The rule (`decide_force_close`) is applied once, by the closing write,
    // on the locked row: a refusal there changes nothing.
    let request = ForceClose {
        outcome,
        reason,
        by,
        proof: proof.as_ref(),
    };
    match store.apply_force_close(run, request).await? {
        ForceCloseResult::Closed(run) => {
            tracing::info!(run = %run.id, %by, outcome = %run.outcome, "force-closed: {reason}");
            Ok(run)
        }
        ForceCloseResult::AlreadyCompleted(run) => Err(ForceCloseError::AlreadyCompleted(Box::new(run))),
        ForceCloseResult::Refused(refusal, _) => Err(ForceCloseError::Refused(refusal)),
        ForceCloseResult::Moved(run) => Err(ForceCloseError::Moved(run.id)),
    }
}

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

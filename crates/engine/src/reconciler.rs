//! Proof-based reconciliation (OPERATIONS.md §8): the adapter trait, and
//! deciding + applying results, a page of runs at a time.
//!
//! Adapters get a [`ProofReader`] — reads only — so they cannot write. The
//! decision is applied by the store's single closing write, only if the run
//! is still in the state the decision was made on; rerunning changes nothing.

use crate::Registry;
use async_trait::async_trait;
use opsledger_core::catalog::Reconciliation;
use opsledger_core::reconcile::AdapterResult;
use opsledger_core::{Outcome, Run, RunType};
use opsledger_store::proof::ProofReader;
use opsledger_store::stale::{Applied, ToReconcile};
use opsledger_store::{Store, StoreError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Reads a run's proof and decides its outcome.
///
/// The rules themselves are pure functions of the proof, next to each
/// family's adapter (e.g. `opsledger_core::inventory::reconcile`); an adapter
/// only reads the proof and hands it to its rule. A type without an adapter
/// fails closed here ([`GENERIC_ADAPTER`], `stale_no_proof`).
#[async_trait]
pub trait ReconciliationAdapter: Send + Sync {
    /// Stable name recorded in `context.reconciliation.adapter`.
    fn name(&self) -> &'static str;
    async fn reconcile(&self, run: &Run, proof: &ProofReader) -> Result<AdapterResult, StoreError>;
    /// [`ReconciliationAdapter::reconcile`] for a page of runs of the
    /// adapter's type, one result per run in order. The stale sweep calls
    /// this: an adapter whose proof is in the database overrides it to read
    /// the page's proof in a few queries rather than a few per run. The
    /// default asks run by run.
    async fn reconcile_page(
        &self,
        runs: &[&Run],
        proof: &ProofReader,
    ) -> Result<Vec<AdapterResult>, StoreError> {
        let mut out = Vec::with_capacity(runs.len());
        for run in runs {
            out.push(self.reconcile(run, proof).await?);
        }
        Ok(out)
    }
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

/// The adapter that decides `t`'s stale runs, if any.
fn adapter_of(registry: &Registry, t: RunType) -> Option<Arc<dyn ReconciliationAdapter>> {
    match t.reconciliation() {
        Reconciliation::Unsupported => None,
        _ => registry.get_adapter(t),
    }
}

/// Decides a run's outcome from its proof (no writes).
pub async fn decide(
    store: &Store,
    registry: &Registry,
    run: &Run,
) -> Result<(String, AdapterResult), StoreError> {
    let mut page = decide_page(store, registry, std::slice::from_ref(run)).await?;
    Ok(page.pop().expect("one decision per run"))
}

/// Decides a page of runs from their proof (no writes): each type's adapter
/// reads its runs' proof at once ([`ReconciliationAdapter::reconcile_page`]).
/// One `(adapter, result)` per run, in order.
pub async fn decide_page(
    store: &Store,
    registry: &Registry,
    runs: &[Run],
) -> Result<Vec<(String, AdapterResult)>, StoreError> {
    let proof = ProofReader::new(store);
    let mut by_type: BTreeMap<RunType, Vec<usize>> = BTreeMap::new();
    for (i, run) in runs.iter().enumerate() {
        by_type.entry(run.run_type).or_default().push(i);
    }
    let mut out: Vec<Option<(String, AdapterResult)>> = vec![None; runs.len()];
    for (t, at) in by_type {
        match adapter_of(registry, t) {
            Some(a) => {
                let page: Vec<&Run> = at.iter().map(|&i| &runs[i]).collect();
                let results = a.reconcile_page(&page, &proof).await?;
                if results.len() != at.len() {
                    return Err(StoreError::Corrupt(format!(
                        "adapter {} decided {} of {} runs",
                        a.name(),
                        results.len(),
                        at.len()
                    )));
                }
                for (i, r) in at.into_iter().zip(results) {
                    out[i] = Some((a.name().to_owned(), r));
                }
            }
            None => {
                for i in at {
                    out[i] = Some((
                        GENERIC_ADAPTER.to_owned(),
                        AdapterResult::stale_no_proof(&format!("This {} run", runs[i].run_type)),
                    ));
                }
            }
        }
    }
    Ok(out.into_iter().map(|d| d.expect("every run decided")).collect())
}

/// Decides and applies. `by` names who asked (`system` for the sweep).
pub async fn reconcile_run(
    store: &Store,
    registry: &Registry,
    run: &Run,
    by: Option<&str>,
) -> Result<ReconcileDecision, StoreError> {
    let mut page = reconcile_page(store, registry, std::slice::from_ref(run), by).await?;
    Ok(page.pop().expect("one decision per run"))
}

/// Decides a page of runs from their proof, then applies every decision in
/// one transaction, each only if its run is still as read (the store's
/// compare-and-set, [`Store::apply_reconciliations`]). `runs` are the runs as
/// the caller read them; one decision per run, in order.
pub async fn reconcile_page(
    store: &Store,
    registry: &Registry,
    runs: &[Run],
    by: Option<&str>,
) -> Result<Vec<ReconcileDecision>, StoreError> {
    if runs.is_empty() {
        return Ok(Vec::new());
    }
    let decided = decide_page(store, registry, runs).await?;
    let page: Vec<ToReconcile<'_>> = runs
        .iter()
        .zip(&decided)
        .map(|(seen, (adapter, result))| ToReconcile {
            seen,
            adapter,
            result,
        })
        .collect();
    let applied = store.apply_reconciliations(&page, by).await?;
    Ok(runs
        .iter()
        .zip(decided)
        .zip(applied)
        .map(|((run, (adapter, result)), applied)| {
            let (applied, outcome) = match applied {
                Applied::Closed(o) => ("applied", Some(o)),
                Applied::AlreadyCompleted(o) => ("already_completed", Some(o)),
                Applied::Skipped => ("skipped", None),
            };
            if applied == "applied" {
                tracing::info!(run = %run.id, %adapter, reason = %result.reason_code, "reconciled: {}", result.explanation);
            }
            ReconcileDecision {
                run_id: run.id.clone(),
                run_type: run.run_type.to_string(),
                previous_status: run.status.to_string(),
                adapter,
                result,
                applied,
                outcome,
            }
        })
        .collect())
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

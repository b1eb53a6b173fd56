//! `backup_set.delete`: remove a backup set of the run's tenant, one unit
//! job per item (the fan-out of OPERATIONS.md §5), so progress is counted.
//!
//! - **Parent** (run job): refuses — ends `blocked` before any work — a set
//!   that is not in the workspace (`backup_set_not_found`), of another tenant
//!   (`backup_set_other_tenant`), retention-locked (`backup_set_locked`), or
//!   in use (`backup_set_in_use`: read by a queued or running
//!   `backup_set.restore`, or still being written by the run creating it).
//!   Otherwise it plans one unit per item: `total` and the unit jobs in one
//!   fenced transaction. That planning write is what marks the set as being
//!   deleted ([`opsledger_store::backups::SET_IS_DELETED`] finds a planned
//!   delete by its dedup key): from then on no restore is offered the set as
//!   its tenant's latest complete one, none can name it at start, and no
//!   update changes it. A retried parent keeps its first plan.
//! - **Unit** (one per item): the item's removal is its artifact
//!   ([`UnitArtifact::BackupItemDeleted`]), committed with the unit's ledger
//!   row — the item is counted deleted if and only if it is gone, exactly
//!   once under retries and duplicate deliveries. The same transaction marks
//!   the set's tombstone, and refuses (nothing removed, the unit failed)
//!   when the set was locked or a restore started reading it since the plan.
//! - **A set with no item left** (emptied by an earlier delete, or empty
//!   from the start) has no unit: the parent closes the run `succeeded` with
//!   the set's tombstone as the close's artifact, without a `total`.
//! - **Outcome** by `maybe_complete_bulk_run`: every item removed →
//!   succeeded, and the set is gone (its row stays as a tombstone, because
//!   restore history names it; every read treats it as gone); some → partially
//!   succeeded, the set stays gone with the items left, which a new delete
//!   removes; none → failed, and if nothing was removed the set is as it was.
//! - **Reconciliation**: none. A stale delete fails closed (`stale_no_proof`);
//!   what its units removed stays removed and counted.
//!
//! `OPSLEDGER_DEMO_LATENCY_MS` ([`ProviderSettings::demo_latency`]) paces the
//! units of a demo tenant's delete like its provider calls, so the demo (and
//! the tests) can watch a delete count.

use async_trait::async_trait;
use opsledger_core::{Failure, Outcome, RunType, UnitOutcome};
use opsledger_engine::{Family, Handler, HandlerError, RunContext, UnitContext, UnitHandler, UnitResult};
use opsledger_providers::ProviderSettings;
use opsledger_store::artifacts::UnitArtifact;
use opsledger_store::lease::RunReads;
use opsledger_store::{Completion, ContextPatch, StoreError};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The family's descriptor: its run handler and its unit handler; no
/// adapter (the catalog entry, [`opsledger_core::RunType::spec`], holds the rest).
pub fn family(providers: &ProviderSettings) -> Family {
    Family {
        run: Arc::new(DeleteSet),
        units: Some(Arc::new(DeleteItem {
            demo_pace: providers.demo_latency,
        })),
        adapter: None,
    }
}

/// Unit keys: `item/<backup item id>`.
const ITEM: &str = "item/";

pub struct DeleteSet;

fn blocked(code: &str, message: String) -> Completion {
    Completion::new(Outcome::Blocked).with_failure(Failure::new(code, message))
}

/// The set a run deletes: its `backup_set_id` parameter (required, validated at start).
fn set_of(params: Option<&Value>) -> Result<String, HandlerError> {
    params
        .and_then(|p| p.get("backup_set_id"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| HandlerError::permanent("invalid_params", "backup_set.delete needs `backup_set_id`"))
}

/// Closes the run of a set with no item left, marking the set deleted in
/// the closing transaction; a refusal there (locked or in use since the
/// parent looked) closes it `blocked` instead, the set untouched.
async fn close_emptied(ctx: &RunContext, set_id: &str) -> Result<(), HandlerError> {
    let completion = Completion::new(Outcome::Succeeded)
        .with_patch(ContextPatch::new(["backup_set_delete", "deleted"], json!(true)))
        .with_artifact(UnitArtifact::BackupSetDeleted {
            backup_set_id: set_id.to_owned(),
        });
    match ctx.complete(completion).await {
        Ok(_) => Ok(()),
        Err(StoreError::Conflict(message)) => {
            let locked = ctx
                .reads()
                .backup_set_lifecycle(set_id)
                .await?
                .is_some_and(|s| s.retention_locked);
            let code = if locked {
                "backup_set_locked"
            } else {
                "backup_set_in_use"
            };
            ctx.complete(blocked(code, message)).await?;
            Ok(())
        }
        Err(StoreError::NotFound { .. }) => {
            ctx.complete(blocked(
                "backup_set_not_found",
                format!("backup set {set_id} no longer exists in this workspace"),
            ))
            .await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

#[async_trait]
impl Handler for DeleteSet {
    async fn execute(&self, ctx: RunContext) -> Result<(), HandlerError> {
        let run = &ctx.run;
        let tenant = run
            .tenant_id
            .as_deref()
            .ok_or_else(|| HandlerError::permanent("tenant_missing", "backup_set.delete needs a tenant"))?;
        let set_id = set_of(run.context.get("params"))?;
        if let Some(total) = run.summary_counts.total {
            // A retried parent: the units were planned with `total`, in one
            // transaction, by an earlier attempt; the plan stands.
            tracing::info!(run = %run.id, total, "delete units already planned");
            return Ok(());
        }
        let reads = ctx.reads();
        let Some(set) = reads.backup_set_lifecycle(&set_id).await? else {
            ctx.complete(blocked(
                "backup_set_not_found",
                format!("backup set {set_id} does not exist in this workspace"),
            ))
            .await?;
            return Ok(());
        };
        if set.tenant_id != tenant {
            ctx.complete(blocked(
                "backup_set_other_tenant",
                format!(
                    "backup set {set_id} belongs to tenant {}; start the delete on that tenant",
                    set.tenant_id
                ),
            ))
            .await?;
            return Ok(());
        }
        if set.retention_locked {
            ctx.complete(blocked(
                "backup_set_locked",
                format!(
                    "backup set {set_id} is retention-locked: unlock it first \
                     (backup_set.update with `retention_locked: false`)"
                ),
            ))
            .await?;
            return Ok(());
        }
        if let Some(writer) = &set.writing_run_id {
            ctx.complete(blocked(
                "backup_set_in_use",
                format!(
                    "backup set {set_id} is still being written by run {writer}; delete it when that run ends"
                ),
            ))
            .await?;
            return Ok(());
        }
        let restores = reads.active_restores_of_set(&set_id).await?;
        if !restores.is_empty() {
            ctx.complete(blocked(
                "backup_set_in_use",
                format!(
                    "backup set {set_id} is read by active restore {}; delete it when the restore ends, \
                     or cancel the restore",
                    restores.join(", ")
                ),
            ))
            .await?;
            return Ok(());
        }
        let items = reads.backup_item_ids(&set_id).await?;
        ctx.patch_context(&[ContextPatch::new(
            ["backup_set_delete"],
            json!({"backup_set_id": set_id, "name": set.name, "items": items.len()}),
        )])
        .await?;
        if items.is_empty() {
            // No unit to mark the set: the close does, in its transaction.
            // (Planning zero units would let the bulk completion close the
            // run `succeeded` without it.)
            return close_emptied(&ctx, &set_id).await;
        }
        let keys: Vec<String> = items.iter().map(|id| format!("{ITEM}{id}")).collect();
        // `total` and one job per item, in one fenced transaction: the set is
        // being deleted from this commit on.
        let total = ctx
            .enqueue_units(&keys, RunType::BackupSetDelete.max_attempts())
            .await?;
        tracing::info!(run = %run.id, total, set = %set_id, "planned delete units");
        Ok(())
    }
}

pub struct DeleteItem {
    /// A demo tenant's pace ([`ProviderSettings::demo_latency`]); zero elsewhere.
    pub demo_pace: Duration,
}

/// The set of a delete run, read once per run and process (its units share it).
async fn set_of_run(reads: &RunReads) -> Result<String, HandlerError> {
    static CACHE: crate::kit::RunCache<String> = crate::kit::RunCache::new(16);
    let run_id = &reads.head().id;
    if let Some(set) = CACHE.get(run_id) {
        return Ok(set.as_ref().clone());
    }
    let run = reads
        .reload()
        .await?
        .ok_or_else(|| StoreError::RunNotFound(run_id.clone()))?;
    let set = set_of(run.context.get("params"))?;
    CACHE.put(run_id, std::sync::Arc::new(set.clone()));
    Ok(set)
}

fn failed(code: &str, message: String) -> UnitResult {
    UnitResult {
        outcome: UnitOutcome::Failed,
        failure: Some(Failure::new(code, message)),
        artifact: None,
    }
}

#[async_trait]
impl UnitHandler for DeleteItem {
    async fn execute(&self, ctx: UnitContext) -> Result<UnitResult, HandlerError> {
        let Some(item_id) = ctx.unit_key.strip_prefix(ITEM) else {
            return Err(HandlerError::permanent(
                "invalid_unit_key",
                format!("unit `{}` is not item/ID", ctx.unit_key),
            ));
        };
        let set_id = set_of_run(&ctx.reads).await?;
        crate::kit::demo_pace(&ctx.reads, self.demo_pace, &ctx.cancel).await?;
        // Why a deletion would be refused, said with its own code; the
        // writer checks the same again in the unit's transaction.
        let Some(set) = ctx.reads.backup_set_lifecycle(&set_id).await? else {
            return Ok(failed(
                "backup_set_not_found",
                format!("backup set {set_id} no longer exists in this workspace"),
            ));
        };
        if set.retention_locked {
            return Ok(failed(
                "backup_set_locked",
                format!("backup set {set_id} was retention-locked after the delete was planned; item kept"),
            ));
        }
        let restores = ctx.reads.active_restores_of_set(&set_id).await?;
        if !restores.is_empty() {
            return Ok(failed(
                "backup_set_in_use",
                format!(
                    "backup set {set_id} is read by active restore {}; item kept",
                    restores.join(", ")
                ),
            ));
        }
        Ok(
            UnitResult::succeeded().with_artifact(UnitArtifact::BackupItemDeleted {
                backup_set_id: set_id,
                item_id: item_id.to_owned(),
            }),
        )
    }
}

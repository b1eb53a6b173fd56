//! `workspace.inventory.sync_all`: one `inventory.sync` child run per tenant
//! of the workspace (OPERATIONS.md §5, composite).
//!
//! - **Children** are ordinary `inventory.sync` runs with `parent_id`, started
//!   in one fenced transaction with the plan ([`RunContext::enqueue_child_runs`]).
//!   Each is asked with the parameters a standalone start from the API gets
//!   (the validated empty parameters), under the same dedup key, so a
//!   tenant whose sync is already active **adopts** that run as the child
//!   rather than starting a second one. A tenant whose key is held by a sync
//!   of *other* parameters (`policy_types`) is not a child: the store counts
//!   it as a blocked child in the outcome, and the run names it in
//!   `context.sync_all.held_by_other_work`.
//! - **Progress** is the composite view of the progress contract
//!   ([`opsledger_core::progress::progress_of`] with the children): children
//!   completed of total, each active child's own progress. The parent sets no
//!   `total`, so it never has a top-level percentage.
//! - **Outcome** is derived in the last child's closing transaction
//!   ([`opsledger_core::outcome::derive_composite_outcome`]): all succeeded →
//!   succeeded; all blocked → blocked; none succeeded or partially succeeded
//!   → failed; otherwise partially_succeeded. A workspace without tenants
//!   completes at once, succeeded.
//! - **Retries** get the first plan back: no child is started twice.
//! - **Reconciliation** is derived from the children: the parent is alive
//!   while any child can move and is never a stale candidate until none can;
//!   a stale child is reconciled by its own adapter, and its close closes
//!   the parent. No adapter of its own.

use async_trait::async_trait;
use opsledger_core::RunType;
use opsledger_core::params::validate;
use opsledger_engine::{Family, Handler, HandlerError, RunContext};
use opsledger_store::ContextPatch;
use opsledger_store::children::{ChildStart, MAX_CHILDREN, NewChild};
use serde_json::{Value, json};
use std::sync::Arc;

/// The family's descriptor: a run handler only (the catalog entry,
/// [`opsledger_core::RunType::spec`], holds the rest; reconciliation is
/// derived from the children, so there is no adapter).
pub fn family() -> Family {
    Family {
        run: Arc::new(SyncAll),
        units: None,
        adapter: None,
    }
}

/// The run handler: plans the children and returns; the children close the run.
pub struct SyncAll;

/// The parameters of each child: those a standalone `inventory.sync`
/// started without parameters carries, so an active one is adoptable.
pub fn child_params() -> Result<Value, HandlerError> {
    validate(RunType::InventorySync, &json!({}))
        .map_err(|e| HandlerError::permanent(e.code(), format!("inventory.sync parameters: {e}")))
}

#[async_trait]
impl Handler for SyncAll {
    async fn execute(&self, ctx: RunContext) -> Result<(), HandlerError> {
        let planned_before =
            ctx.run.context.pointer("/composite/children_planned") == Some(&Value::Bool(true));
        if planned_before {
            // The plan committed with its children in one transaction: a
            // retried attempt has nothing left to do (and must not re-list
            // tenants: a workspace grown past the limit since would fail a
            // parent whose children are running).
            return Ok(());
        }
        // One more than a composite may hold: a larger workspace is refused
        // whole rather than synced in part.
        let tenants = ctx.reads().workspace_tenants(MAX_CHILDREN + 1).await?;
        if tenants.len() > MAX_CHILDREN {
            return Err(HandlerError::permanent(
                "workspace_too_many_tenants",
                format!(
                    "the workspace has more than {MAX_CHILDREN} tenants, the most one sync of all tenants covers"
                ),
            ));
        }
        let params = child_params()?;
        let children: Vec<NewChild> = tenants
            .iter()
            .map(|t| NewChild {
                run_type: RunType::InventorySync,
                tenant_id: Some(t.id.clone()),
                params: params.clone(),
            })
            .collect();
        if ctx.cancel.is_cancelled() {
            return Err(HandlerError::Stopped);
        }
        ctx.patch_context(&[ContextPatch::new(
            ["sync_all", "tenant_count"],
            json!(children.len()),
        )])
        .await?;
        // Started or adopted in one fenced transaction; a retried attempt
        // gets its first plan back. With no child (no tenant, or every key
        // held by other work) the store closes the run in that transaction.
        let starts = ctx.enqueue_child_runs(&children).await?;
        // A first plan answers child by child, in order.
        debug_assert_eq!(starts.len(), children.len());
        let held: Vec<Value> = tenants
            .iter()
            .zip(&starts)
            .filter_map(|(tenant, start)| match start {
                ChildStart::HeldByOtherWork(run_id) => {
                    Some(json!({"tenant_id": tenant.id, "run_id": run_id}))
                }
                ChildStart::Started(_) | ChildStart::Adopted(_) => None,
            })
            .collect();
        let adopted = starts
            .iter()
            .filter(|s| matches!(s, ChildStart::Adopted(_)))
            .count();
        let started = starts
            .iter()
            .filter(|s| matches!(s, ChildStart::Started(_)))
            .count();
        tracing::info!(
            run = %ctx.run.id, started, adopted, held = held.len(),
            "workspace.inventory.sync_all planned its children"
        );
        if !held.is_empty() {
            // Not this run's work: the store counts each as a blocked child
            // (`context.composite.held_by_other_work`, written with the plan).
            // Named here per tenant while the run is open; a run the plan
            // already closed (every key held) keeps the store's record only.
            for h in &held {
                tracing::warn!(
                    run = %ctx.run.id, tenant = %h["tenant_id"], holder = %h["run_id"],
                    "an inventory.sync with other parameters is active on this tenant; counted blocked"
                );
            }
            ctx.patch_context(&[ContextPatch::new(
                ["sync_all", "held_by_other_work"],
                Value::Array(held),
            )])
            .await?;
        }
        Ok(())
    }
}

//! `policy.sync`: re-read one policy of a tenant into its inventory.
//!
//! - **Progress** is activity: one indivisible read, no units, no `total`.
//! - **Proof** is the inventory item itself, refreshed in the run's closing
//!   transaction, and `context.policy_sync` naming what was read. The item
//!   is linked to this run (`last_seen_operation_run_id`), the run that last
//!   saw it. A run that did not close has written nothing.
//! - **Outcome**: read → succeeded; the policy no longer exists → failed
//!   (`policy_not_found`); the tenant's consent or permission is missing →
//!   blocked; throttling and 5xx are retried, then fail the attempt.
//! - **Reconciliation**: none. A stale `policy.sync` fails closed
//!   (`stale_no_proof`): an unclosed run has written nothing to prove.

use crate::kit::{OpenFailed, Stopped, open_provider, provider_error, with_retries};
use async_trait::async_trait;
use opsledger_core::{Failure, Outcome};
use opsledger_engine::{Family, Handler, HandlerError, RunContext};
use opsledger_providers::{ProviderError, ProviderSettings};
use opsledger_store::artifacts::UnitArtifact;
use opsledger_store::inventory::ItemSnapshot;
use opsledger_store::{Completion, ContextPatch};
use serde_json::{Value, json};
use std::sync::Arc;

/// The family's descriptor: a run handler, no unit handler, no adapter
/// (the catalog entry, [`opsledger_core::RunType::spec`], holds the rest).
pub fn family(providers: &ProviderSettings) -> Family {
    Family {
        run: Arc::new(PolicySync {
            providers: providers.clone(),
        }),
        units: None,
        adapter: None,
    }
}

pub struct PolicySync {
    providers: ProviderSettings,
}

#[async_trait]
impl Handler for PolicySync {
    async fn execute(&self, ctx: RunContext) -> Result<(), HandlerError> {
        // Validated at start as `TYPE/ID` with a known type.
        let reference = ctx
            .run
            .context
            .pointer("/params/policy_id")
            .and_then(Value::as_str)
            .and_then(|r| r.split_once('/'))
            .map(|(t, id)| (t.to_owned(), id.to_owned()));
        let Some((policy_type, policy_id)) = reference else {
            return Err(HandlerError::permanent(
                "invalid_params",
                "policy.sync needs `policy_id` as TYPE/ID",
            ));
        };
        let provider = match open_provider(ctx.reads(), &self.providers).await {
            Ok(p) => p,
            Err(OpenFailed::Unavailable(failure)) => return close(&ctx, Outcome::Blocked, failure).await,
            Err(OpenFailed::Store(e)) => return Err(e.into()),
        };
        let read = with_retries(&ctx.cancel, &ctx.liveness, || {
            provider.get_policy(&policy_type, &policy_id)
        })
        .await;
        let policy = match read {
            Ok(p) => p,
            Err(Err(Stopped)) => return Err(HandlerError::Stopped),
            Err(Ok(e)) if e.is_precondition() || matches!(e, ProviderError::Forbidden(_)) => {
                return close(&ctx, Outcome::Blocked, Failure::new(e.code(), e.to_string())).await;
            }
            Err(Ok(ProviderError::NotFound(_))) => {
                let failure = Failure::new(
                    "policy_not_found",
                    format!(
                        "policy {policy_type}/{policy_id} does not exist in the tenant (deleted or never there)"
                    ),
                );
                return close(&ctx, Outcome::Failed, failure).await;
            }
            Err(Ok(e)) => return Err(provider_error(e, None)),
        };
        let proof = json!({
            "policy_type": policy_type,
            "policy_id": policy.id,
            "display_name": policy.display_name,
        });
        let item = ItemSnapshot {
            external_id: policy.id,
            display_name: policy.display_name,
            payload: policy.payload,
        };
        // The item and the close commit together, or neither does.
        let completion = Completion::new(Outcome::Succeeded)
            .with_patch(ContextPatch::new(["policy_sync"], proof))
            .with_artifact(UnitArtifact::InventoryItemReread { policy_type, item });
        ctx.complete(completion).await?;
        Ok(())
    }
}

/// Closes the run with `outcome` and the failure that explains it.
async fn close(ctx: &RunContext, outcome: Outcome, failure: Failure) -> Result<(), HandlerError> {
    let completion = Completion::new(outcome)
        .with_patch(ContextPatch::new(
            ["policy_sync", "reason_code"],
            json!(failure.code),
        ))
        .with_failure(failure);
    ctx.complete(completion).await?;
    Ok(())
}

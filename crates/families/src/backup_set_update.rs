//! `backup_set.update`: rename, label, lock or unlock a backup set of the
//! run's tenant.
//!
//! - **Progress** is activity: one write, no units, no `total`.
//! - **The change** is the close's artifact ([`UnitArtifact::BackupSetUpdated`]),
//!   written in the run's closing transaction, fenced by its lease: the set
//!   changed if and only if the run closed `succeeded`, with
//!   `context.backup_set = {id, name, label, retention_locked}` (the set as
//!   the run left it). A retried run writes it again, the same values.
//! - **Outcome**: succeeded; blocked `backup_set_not_found` (no such set in
//!   the workspace, or it is deleted or being deleted — a set on its way out
//!   is not renamed or locked), blocked `backup_set_other_tenant` (the API
//!   refuses both at start; a run started otherwise ends here, having
//!   written nothing).
//! - **Pace**: a demo tenant's update waits `OPSLEDGER_DEMO_LATENCY_MS` once
//!   ([`crate::kit::demo_pace`]), so the demo can watch it running.
//! - **Unlocking** is an update like any other (`retention_locked: false`):
//!   that is how a locked set becomes deletable.
//! - **Reconciliation**: none. A stale update fails closed (`stale_no_proof`):
//!   a run that did not close has written nothing to prove.

use async_trait::async_trait;
use opsledger_core::{Failure, Outcome};
use opsledger_engine::{Family, Handler, HandlerError, RunContext};
use opsledger_providers::ProviderSettings;
use opsledger_store::artifacts::UnitArtifact;
use opsledger_store::backup_set_writes::SetUpdate;
use opsledger_store::{Completion, ContextPatch, StoreError};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The family's descriptor: a run handler, no units, no adapter (the
/// catalog entry, [`opsledger_core::RunType::spec`], holds the rest).
pub fn family(providers: &ProviderSettings) -> Family {
    Family {
        run: Arc::new(UpdateSet {
            demo_pace: providers.demo_latency,
        }),
        units: None,
        adapter: None,
    }
}

pub struct UpdateSet {
    /// A demo tenant's pace ([`ProviderSettings::demo_latency`]); zero elsewhere.
    pub demo_pace: Duration,
}

/// The change a run's parameters ask for (validated at start: the set's id,
/// and at least one of `name`, `label`, `retention_locked`).
pub fn requested(params: &Value) -> Result<SetUpdate, HandlerError> {
    let invalid = |m: &str| HandlerError::permanent("invalid_params", m);
    let backup_set_id = params
        .get("backup_set_id")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("backup_set.update needs `backup_set_id`"))?
        .to_owned();
    let update = SetUpdate {
        backup_set_id,
        name: params.get("name").and_then(Value::as_str).map(str::to_owned),
        // `""` clears the label: stored as none, not as empty text.
        label: params
            .get("label")
            .and_then(Value::as_str)
            .map(|l| Some(l.to_owned()).filter(|l| !l.is_empty())),
        retention_locked: params.get("retention_locked").and_then(Value::as_bool),
    };
    if update.is_empty() {
        return Err(invalid(
            "backup_set.update needs at least one of `name`, `label`, `retention_locked`",
        ));
    }
    Ok(update)
}

fn blocked(code: &str, message: String) -> Completion {
    Completion::new(Outcome::Blocked).with_failure(Failure::new(code, message))
}

#[async_trait]
impl Handler for UpdateSet {
    async fn execute(&self, ctx: RunContext) -> Result<(), HandlerError> {
        let run = &ctx.run;
        let tenant = run
            .tenant_id
            .as_deref()
            .ok_or_else(|| HandlerError::permanent("tenant_missing", "backup_set.update needs a tenant"))?;
        let update = requested(run.context.get("params").unwrap_or(&Value::Null))?;
        crate::kit::demo_pace(ctx.reads(), self.demo_pace, &ctx.cancel).await?;
        let id = update.backup_set_id.clone();
        let gone = || {
            blocked(
                "backup_set_not_found",
                format!("backup set {id} does not exist in this workspace, or is deleted or being deleted"),
            )
        };
        let set = match ctx.reads().backup_set_lifecycle(&id).await? {
            Some(set) if !set.deleted => set,
            _ => {
                ctx.complete(gone()).await?;
                return Ok(());
            }
        };
        if set.tenant_id != tenant {
            ctx.complete(blocked(
                "backup_set_other_tenant",
                format!(
                    "backup set {id} belongs to tenant {}; start the update on that tenant",
                    set.tenant_id
                ),
            ))
            .await?;
            return Ok(());
        }
        // The set as the run leaves it; the writer applies the same change
        // to the row it locks (only this run holds the set's dedup key).
        let after = json!({
            "id": id,
            "name": update.name.clone().unwrap_or(set.name),
            "label": update.label.clone().unwrap_or(set.label),
            "retention_locked": update.retention_locked.unwrap_or(set.retention_locked),
        });
        let completion = Completion::new(Outcome::Succeeded)
            .with_patch(ContextPatch::new(["backup_set"], after))
            .with_artifact(UnitArtifact::BackupSetUpdated(update));
        match ctx.complete(completion).await {
            Ok(_) => Ok(()),
            // A delete planned between the read and the close: refused in
            // the closing transaction, nothing written; say so.
            Err(StoreError::NotFound { .. }) => {
                ctx.complete(gone()).await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_label_clears_and_absent_means_unchanged() {
        let u = requested(&json!({"backup_set_id": "s", "label": "", "retention_locked": false})).unwrap();
        assert_eq!(
            (u.name, u.label, u.retention_locked),
            (None, Some(None), Some(false))
        );
        let u = requested(&json!({"backup_set_id": "s", "name": "n"})).unwrap();
        assert_eq!((u.label, u.retention_locked), (None, None));
        assert!(requested(&json!({"backup_set_id": "s"})).is_err());
        assert!(requested(&json!({"name": "n"})).is_err());
    }
}

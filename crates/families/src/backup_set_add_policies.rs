//! `backup_set.add_policies`: capture policies into a backup set, one unit
//! job per policy (the fan-out of OPERATIONS.md §5).
//!
//! - **Parent** (run job): resolves the deduplicated unit list — the
//!   `policy_ids` parameter (`TYPE/ID` keys) or every inventory item of the
//!   tenant (a tenant with no inventory ends `blocked`, `no_inventory`, before
//!   any work: its policies are unknown, not zero) — creates the run's backup set (once, even when retried), and
//!   enqueues one unit job per policy while setting `total`, in one
//!   transaction. Zero units complete the run at once.
//!   The tenant's directory is read once and stored with the set; a tenant
//!   that cannot be read at all ends `blocked` here.
//! - **Unit** (unit job): reads the policy from the provider as it is now and
//!   writes the backup item in the same transaction as the unit's finish,
//!   with the names its references point to (from the set's directory) and
//!   the hash of its normalized content.
//!   Throttling is retried after `Retry-After`; a policy that cannot be read
//!   is a failed unit, never a missing one.
//! - **Outcome** by `maybe_complete_bulk_run`; **proof** for reconciliation
//!   is the run's backup set and its items.

use crate::kit::{OpenFailed, RunCache, Stopped, open_provider, provider_error, with_retries};
use async_trait::async_trait;
use opsledger_core::normalize::Names;
use opsledger_core::reconcile::{AdapterResult, Verdict};
use opsledger_core::{Failure, Outcome, Run, RunType};
use opsledger_engine::{Family, Handler, HandlerError, RunContext, UnitContext, UnitHandler, UnitResult};
use opsledger_providers::Directory;
use opsledger_providers::ProviderSettings;
use opsledger_store::artifacts::UnitArtifact;
use opsledger_store::backups::BackupItem;
use opsledger_store::proof::ProofReader;
use opsledger_store::{Completion, ContextPatch, StoreError};
use serde_json::{Value, json};
use std::sync::Arc;

/// The family's descriptor: its run handler, its unit handler and its
/// adapter (the catalog entry, [`opsledger_core::RunType::spec`], holds the rest).
pub fn family(providers: &ProviderSettings) -> Family {
    Family {
        run: std::sync::Arc::new(AddPolicies {
            providers: providers.clone(),
        }),
        units: Some(std::sync::Arc::new(AddPolicyUnit {
            providers: providers.clone(),
        })),
        adapter: Some(std::sync::Arc::new(AddPoliciesAdapter)),
    }
}

pub struct AddPolicies {
    pub providers: ProviderSettings,
}

fn tenant_of(tenant_id: Option<&str>) -> Result<&str, HandlerError> {
    tenant_id.ok_or_else(|| HandlerError::permanent("tenant_missing", "this operation needs a tenant"))
}

#[async_trait]
impl Handler for AddPolicies {
    async fn execute(&self, ctx: RunContext) -> Result<(), HandlerError> {
        let run = &ctx.run;
        tenant_of(run.tenant_id.as_deref())?;
        if let Some(total) = run.summary_counts.total {
            // A retried parent: the units were planned (and enqueued with
            // `total`, in one transaction) by an earlier attempt; the plan stands.
            tracing::info!(run = %run.id, total, "backup units already planned");
            return Ok(());
        }
        let keys: Vec<String> = match run
            .context
            .pointer("/params/policy_ids")
            .and_then(Value::as_array)
        {
            Some(ids) => ids.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            None => {
                let refs = ctx.reads().tenant_inventory_refs().await?;
                if refs.is_empty() {
                    // "Every policy" of a tenant never inventoried is unknown,
                    // not zero: an empty backup must not pass for a success.
                    ctx.complete(Completion::new(Outcome::Blocked).with_failure(Failure::new(
                        "no_inventory",
                        "this tenant has no inventory yet: run inventory.sync first, or name the policies in `policy_ids`",
                    )))
                    .await?;
                    return Ok(());
                }
                refs.into_iter().map(|(t, id)| format!("{t}/{id}")).collect()
            }
        };
        // The tenant's directory, read once for the set: each item stores
        // the names its references point to, from this snapshot.
        let provider = match open_provider(ctx.reads(), &self.providers).await {
            Ok(p) => p,
            Err(OpenFailed::Unavailable(failure)) => {
                ctx.complete(Completion::new(Outcome::Blocked).with_failure(failure))
                    .await?;
                return Ok(());
            }
            Err(OpenFailed::Store(e)) => return Err(e.into()),
        };
        let directory = match with_retries(&ctx.cancel, &ctx.liveness, || provider.directory()).await {
            Ok(d) => Some(d),
            Err(Err(Stopped)) => return Ok(()),
            Err(Ok(e)) if e.is_precondition() => {
                ctx.complete(
                    Completion::new(Outcome::Blocked).with_failure(Failure::new(e.code(), e.to_string())),
                )
                .await?;
                return Ok(());
            }
            Err(Ok(e)) if e.is_transient() => return Err(provider_error(e, None)),
            Err(Ok(e)) => {
                // The policies can still be captured; their references stay
                // ids, and the set says its directory is missing.
                ctx.patch_context(&[ContextPatch::new(
                    ["backup_set", "directory_unreadable"],
                    json!({"code": e.code(), "message": e.to_string()}),
                )])
                .await?;
                None
            }
        };
        let name = format!("Backup {}", chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"));
        let set_id = match &directory {
            Some(d) => {
                ctx.backup_set_with_directory(&name, &serde_json::to_value(d).expect("json"))
                    .await?
            }
            None => ctx.backup_set(&name).await?,
        };
        ctx.patch_context(&[ContextPatch::new(["backup_set", "id"], json!(set_id))])
            .await?;
        let total = ctx
            .enqueue_units(&keys, RunType::BackupSetAddPolicies.max_attempts())
            .await?;
        tracing::info!(run = %run.id, total, "planned backup units");
        // Zero units: the runner's bulk completion closes the run at once.
        Ok(())
    }
}

pub struct AddPolicyUnit {
    pub providers: ProviderSettings,
}

#[async_trait]
impl UnitHandler for AddPolicyUnit {
    async fn execute(&self, ctx: UnitContext) -> Result<UnitResult, HandlerError> {
        let Some((policy_type, policy_id)) = ctx.unit_key.split_once('/') else {
            return Err(HandlerError::permanent(
                "invalid_unit_key",
                format!("unit `{}` is not TYPE/ID", ctx.unit_key),
            ));
        };
        let provider = open_provider(&ctx.reads, &self.providers).await?;
        // One call: the runner retries the unit's job after backoff on a
        // transient error, so the call itself is not retried here.
        let policy = tokio::select! {
            _ = ctx.cancel.cancelled() => return Err(HandlerError::Stopped),
            r = provider.get_policy(policy_type, policy_id) => r,
        }
        .map_err(|e| provider_error(e, Some(&ctx.unit_key)))?;
        let names = set_names(&ctx.reads).await?;
        let refs = opsledger_core::normalize::references(&policy.payload, &names);
        let item = BackupItem {
            policy_type: policy_type.to_owned(),
            external_id: policy.id,
            display_name: policy.display_name,
            content_sha256: opsledger_core::normalize::content_hash(&policy.payload, &names),
            refs: json!(refs),
            payload: policy.payload,
        };
        // Written into the run's own backup set with the unit's recording.
        Ok(UnitResult::succeeded().with_artifact(UnitArtifact::BackupItem(item)))
    }
}

/// The names of the directory stored with the run's backup set, read and
/// parsed once per run and process: a fan-out's units share one set (one
/// per run, never replaced), and a tenant's directory can be thousands of
/// objects, so it is not fetched per unit.
async fn set_names(reads: &opsledger_store::lease::RunReads) -> Result<Arc<Names>, HandlerError> {
    static CACHE: RunCache<Names> = RunCache::new(16);
    let run_id = &reads.head().id;
    if let Some(names) = CACHE.get(run_id) {
        return Ok(names);
    }
    let Some((_, directory)) = reads.backup_set_directory().await? else {
        // No set yet is not cached: the unit fails on its write anyway.
        return Ok(Arc::new(Names::default()));
    };
    let names = Arc::new(
        directory
            .and_then(|d| serde_json::from_value::<Directory>(d).ok())
            .map(|d| d.names())
            .unwrap_or_default(),
    );
    CACHE.put(run_id, names.clone());
    Ok(names)
}

/// Reconciles a stale add-policies run from its backup set: complete with
/// every planned item → succeeded; some items → partially_succeeded; no set
/// or no items → failed; a set of another scope, or several sets → failed.
pub struct AddPoliciesAdapter;

#[async_trait]
impl opsledger_engine::ReconciliationAdapter for AddPoliciesAdapter {
    fn name(&self) -> &'static str {
        "backup_set_add_policies"
    }

    async fn reconcile(&self, run: &Run, proof: &ProofReader) -> Result<AdapterResult, StoreError> {
        let sets = proof.backup_sets_created_by(&run.id).await?;
        Ok(reconcile_from_sets(run, &sets))
    }

    /// One query for the page's backup sets (grouped by run), then the rule per run.
    async fn reconcile_page(
        &self,
        runs: &[&Run],
        proof: &ProofReader,
    ) -> Result<Vec<AdapterResult>, StoreError> {
        let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
        let sets = proof.backup_sets_created_by_runs(&ids).await?;
        Ok(runs
            .iter()
            .map(|run| reconcile_from_sets(run, sets.get(&run.id).map_or(&[][..], Vec::as_slice)))
            .collect())
    }
}

/// The add-policies rule applied to one run's proof: `sets`, the backup sets
/// naming the run as their creator, as `(id, workspace, tenant, items)`.
/// Pure: the adapter reads, this decides.
pub fn reconcile_from_sets(run: &Run, sets: &[(String, String, String, u64)]) -> AdapterResult {
    let planned = run.summary_counts.total;
    match sets {
        [] => AdapterResult::stale_no_proof("This backup"),
        [(id, ws, tenant, _)] if ws != &run.workspace_id || Some(tenant) != run.tenant_id.as_ref() => {
            AdapterResult::new(
                Verdict::Failed,
                "proof_wrong_scope",
                format!("backup set {id} belongs to another tenant"),
            )
        }
        [(id, _, _, items)] => {
            let artifact = json!({"kind": "backup_set", "id": id, "items": items});
            let (verdict, code, line) = match planned {
                Some(p) if *items == p => (
                    Verdict::Succeeded,
                    "backup_set_complete",
                    format!("all {p} planned policies were captured"),
                ),
                Some(p) if *items > 0 => (
                    Verdict::PartiallySucceeded,
                    "backup_set_incomplete",
                    format!("{items} of {p} planned policies were captured"),
                ),
                _ if *items > 0 => (
                    Verdict::PartiallySucceeded,
                    "backup_set_unplanned",
                    format!("{items} policies were captured but the plan was never recorded"),
                ),
                _ => (
                    Verdict::Failed,
                    "backup_set_empty",
                    "the backup set holds no items".to_owned(),
                ),
            };
            AdapterResult::new(verdict, code, line)
                .with_artifact(artifact)
                .with_units_succeeded(*items)
        }
        _ => AdapterResult::new(
            Verdict::Failed,
            "proof_ambiguous",
            format!(
                "{} backup sets name this run; none can be chosen safely",
                sets.len()
            ),
        ),
    }
}

/// Outcome a completed run would show, for docs and tests.
pub fn expected_outcome(failed: u64, total: u64) -> Outcome {
    opsledger_core::outcome::derive_bulk_outcome(&opsledger_core::SummaryCounts {
        total: Some(total),
        processed: Some(total),
        failed: Some(failed),
        ..Default::default()
    })
    .unwrap_or(Outcome::Pending)
}

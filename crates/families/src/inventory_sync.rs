//! `inventory.sync`: read every policy type of a tenant into inventory items.
//!
//! - **Units** are the attempted policy types: `total` is set when the run
//!   starts (after the access preflight), `processed` advances per type.
//! - **Proof** is per-type coverage in `context.inventory.coverage`, written
//!   in the same transaction as the type's unit and its items; items carry
//!   `last_seen_operation_run_id` and `type_read_by_run_id` (the latter is
//!   the proof: a `policy.sync` re-read moves only the former). A type whose pages did not all arrive is
//!   `failed` (no items written for it), never "empty".
//! - **Outcome** comes from coverage through the core rule
//!   ([`opsledger_core::inventory::decide`]): all covered → succeeded; some
//!   covered, or a type read with some of its items unreadable (a folder's
//!   broken file: `partial`, each file named in the coverage and the run's
//!   failures), or a source item of no type unreadable
//!   (`context.inventory.unattributed`) → partially_succeeded; a tenant
//!   whose permission is missing → blocked, before any total is set.
//! - **Retries** of the run skip types already in the unit ledger, so a type
//!   is never counted twice.

use crate::kit::{OpenFailed, Stopped, open_provider, provider_error, with_retries};
use async_trait::async_trait;
use opsledger_core::inventory::{
    CoverageStatus, ItemFailure, MAX_LISTED_FAILURES, TypeCoverage, decide, describe_failures,
};
use opsledger_core::{Failure, Outcome, UnitOutcome};
use opsledger_engine::{Family, Handler, HandlerError, RunContext};
use opsledger_providers::{Provider, ProviderError, ProviderSettings};
use opsledger_store::artifacts::UnitArtifact;
use opsledger_store::inventory::ItemSnapshot;
use opsledger_store::{Completion, ContextPatch, UnitRecord};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The family's descriptor: its run handler and its adapter (the catalog
/// entry, [`opsledger_core::RunType::spec`], holds the rest).
pub fn family(providers: &ProviderSettings) -> Family {
    Family {
        run: std::sync::Arc::new(InventorySync::new(providers.clone())),
        units: None,
        adapter: Some(std::sync::Arc::new(InventorySyncAdapter)),
    }
}

pub struct InventorySync {
    providers: ProviderSettings,
}

impl InventorySync {
    pub fn new(providers: ProviderSettings) -> InventorySync {
        InventorySync { providers }
    }
}

/// Why a type could not be read, with the coverage status it earns.
struct TypeFailure {
    status: CoverageStatus,
    error: ProviderError,
}

#[async_trait]
impl Handler for InventorySync {
    async fn execute(&self, ctx: RunContext) -> Result<(), HandlerError> {
        let run = &ctx.run;
        let provider = match open_provider(ctx.reads(), &self.providers).await {
            Ok(p) => p,
            Err(OpenFailed::Unavailable(failure)) => return blocked(&ctx, failure).await,
            Err(OpenFailed::Store(e)) => return Err(e.into()),
        };

        // Preflight: a tenant we may not read at all is blocked before any
        // unit is planned, so it never shows a percentage.
        match with_retries(&ctx.cancel, &ctx.liveness, || provider.check_access()).await {
            Ok(()) => {}
            Err(Ok(e)) if e.is_precondition() => {
                return blocked(&ctx, Failure::new(e.code(), e.to_string())).await;
            }
            Err(Ok(e)) => {
                return Err(provider_error(e, None));
            }
            Err(Err(Stopped)) => return Ok(()),
        }

        // A retried attempt keeps the first attempt's plan: the proof already
        // names what was attempted, and units may already be counted against it.
        let attempted = match planned_types(run) {
            Some(types) => types,
            None => {
                let attempted = match attempted_types(&ctx, provider.as_ref()).await {
                    Ok(t) => t,
                    Err(Ok(e)) => {
                        return Err(provider_error(e, None));
                    }
                    Err(Err(Stopped)) => return Ok(()),
                };
                // Source items of no type (a folder's file that is not a
                // policy it can tell): part of the plan's proof, so a retry
                // or a reconciliation reads the same list.
                let unattributed =
                    match with_retries(&ctx.cancel, &ctx.liveness, || provider.unattributed_failures()).await
                    {
                        Ok(f) => f,
                        Err(Ok(e)) => return Err(provider_error(e, None)),
                        Err(Err(Stopped)) => return Ok(()),
                    };
                let mut patches = vec![ContextPatch::new(
                    ["inventory", "attempted_types"],
                    json!(attempted),
                )];
                if !unattributed.is_empty() {
                    patches.push(ContextPatch::new(
                        ["inventory", "unattributed"],
                        json!({
                            "count": unattributed.len(),
                            "items": &unattributed[..unattributed.len().min(MAX_LISTED_FAILURES)],
                        }),
                    ));
                }
                ctx.patch_context(&patches).await?;
                ctx.init_total(attempted.len() as u64).await?;
                attempted
            }
        };

        let already = ctx.reads().recorded_units().await?;
        for policy_type in attempted.iter().filter(|t| !already.contains_key(*t)) {
            let result = match read_type(&ctx, provider.as_ref(), policy_type).await {
                Err(Err(Stopped)) => return Ok(()),
                Ok((items, unreadable)) => {
                    let count = unreadable.len() as u64;
                    let coverage = TypeCoverage {
                        status: if unreadable.is_empty() {
                            CoverageStatus::Covered
                        } else {
                            CoverageStatus::Partial
                        },
                        item_count: items.len() as u64,
                        failure_code: None,
                        unreadable_count: count,
                        unreadable: unreadable.iter().take(MAX_LISTED_FAILURES).cloned().collect(),
                    };
                    // Every page was read: the items land (the unit succeeds),
                    // and each unreadable item is named in the run's failures.
                    let failure = (!unreadable.is_empty()).then(|| {
                        Failure::new(
                            "source_items_unreadable",
                            format!(
                                "{count} item(s) of {policy_type} could not be read: {}",
                                describe_failures(&unreadable, count, 20)
                            ),
                        )
                        .for_unit(policy_type.clone())
                    });
                    // The items and the type's unit commit together.
                    let unit = unit(policy_type, UnitOutcome::Succeeded, &coverage, failure).with_artifact(
                        UnitArtifact::InventoryItems {
                            policy_type: policy_type.clone(),
                            items,
                        },
                    );
                    ctx.record_units(std::slice::from_ref(&unit)).await
                }
                Err(Ok(f)) => {
                    let coverage = TypeCoverage {
                        status: f.status,
                        item_count: 0,
                        failure_code: Some(f.error.code().to_owned()),
                        unreadable_count: 0,
                        unreadable: Vec::new(),
                    };
                    let failure =
                        Failure::new(f.error.code(), f.error.to_string()).for_unit(policy_type.clone());
                    let unit = unit(policy_type, UnitOutcome::Failed, &coverage, Some(failure));
                    ctx.record_units(std::slice::from_ref(&unit)).await
                }
            };
            // A lost lease or a closed run ends this attempt; the runner sorts out which.
            result?;
        }

        // Decide from the stored proof, the same proof reconciliation reads.
        let Some(run) = ctx.reads().reload().await? else {
            return Ok(());
        };
        let coverage = coverage_of(&run.context);
        let (unattributed_count, unattributed) = unattributed_of(&run.context);
        let decision = if attempted.is_empty() && unattributed_count == 0 {
            opsledger_core::inventory::Decision {
                outcome: Outcome::Succeeded,
                reason_code: "inventory_no_types",
            }
        } else {
            decide(&attempted, &coverage, unattributed_count)
        };
        let mut completion = Completion::new(decision.outcome).with_patch(ContextPatch::new(
            ["inventory", "reason_code"],
            json!(decision.reason_code),
        ));
        if unattributed_count > 0 {
            completion = completion.with_failure(Failure::new(
                "source_items_unreadable",
                format!(
                    "{unattributed_count} source item(s) of no known policy type could not be read: {}",
                    describe_failures(&unattributed, unattributed_count, 20)
                ),
            ));
        }
        ctx.complete(completion).await?;
        Ok(())
    }
}

fn unit(
    policy_type: &str,
    outcome: UnitOutcome,
    coverage: &TypeCoverage,
    failure: Option<Failure>,
) -> UnitRecord {
    UnitRecord {
        key: policy_type.to_owned(),
        outcome,
        failure,
        context_patch: Some(ContextPatch::new(
            ["inventory", "coverage", policy_type],
            serde_json::to_value(coverage).expect("json"),
        )),
        artifact: None,
    }
}

/// `context.inventory.coverage`, parsed; entries that do not parse are not proof.
pub fn coverage_of(context: &Value) -> BTreeMap<String, TypeCoverage> {
    context
        .pointer("/inventory/coverage")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| serde_json::from_value(v.clone()).ok().map(|c| (k.clone(), c)))
                .collect()
        })
        .unwrap_or_default()
}

/// `context.inventory.unattributed`: how many source items of no type could
/// not be read, and the first of them.
pub fn unattributed_of(context: &Value) -> (u64, Vec<ItemFailure>) {
    let Some(u) = context.pointer("/inventory/unattributed") else {
        return (0, Vec::new());
    };
    let items: Vec<ItemFailure> = u
        .get("items")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    // A count that does not parse is still a failure recorded: never zero.
    let count = u
        .get("count")
        .and_then(Value::as_u64)
        .unwrap_or(items.len().max(1) as u64);
    (count, items)
}

async fn blocked(ctx: &RunContext, failure: Failure) -> Result<(), HandlerError> {
    let completion = Completion::new(Outcome::Blocked)
        .with_patch(ContextPatch::new(
            ["inventory", "reason_code"],
            json!(failure.code),
        ))
        .with_failure(failure);
    ctx.complete(completion).await?;
    Ok(())
}

/// The types an earlier attempt planned (`total` set and recorded as
/// `inventory.attempted_types`), if any.
fn planned_types(run: &opsledger_core::Run) -> Option<Vec<String>> {
    run.summary_counts.total?;
    let list = run.context.pointer("/inventory/attempted_types")?.as_array()?;
    Some(list.iter().filter_map(Value::as_str).map(str::to_owned).collect())
}

/// The requested types (already deduplicated by parameter validation), or
/// every type the provider exposes.
async fn attempted_types(
    ctx: &RunContext,
    provider: &dyn Provider,
) -> Result<Vec<String>, Result<ProviderError, Stopped>> {
    if let Some(list) = ctx
        .run
        .context
        .pointer("/params/policy_types")
        .and_then(Value::as_array)
    {
        return Ok(list.iter().filter_map(Value::as_str).map(str::to_owned).collect());
    }
    let types = with_retries(&ctx.cancel, &ctx.liveness, || provider.policy_types()).await?;
    let mut keys: Vec<String> = Vec::new();
    for t in types {
        if !keys.contains(&t.key) {
            keys.push(t.key);
        }
    }
    Ok(keys)
}

/// Pages of one type read at most (100 000 at Graph's 25 a page is
/// 2.5 million policies).
pub const MAX_PAGES: usize = 100_000;

/// Reads every page of one type. Any page that cannot be read fails the
/// whole type: a partial read is not coverage.
async fn read_type(
    ctx: &RunContext,
    provider: &dyn Provider,
    policy_type: &str,
) -> Result<(Vec<ItemSnapshot>, Vec<ItemFailure>), Result<TypeFailure, Stopped>> {
    let mut items = Vec::new();
    let mut unreadable = Vec::new();
    let mut page: Option<String> = None;
    let mut seen = std::collections::HashSet::new();
    loop {
        let token = page.clone();
        let got = with_retries(&ctx.cancel, &ctx.liveness, || {
            provider.list_page(policy_type, token.as_deref())
        })
        .await
        .map_err(|r| {
            r.map(|error| {
                let status = match error {
                    ProviderError::Forbidden(_) | ProviderError::PermissionMissing(_) => {
                        CoverageStatus::Blocked
                    }
                    _ => CoverageStatus::Failed,
                };
                TypeFailure { status, error }
            })
        })?;
        items.extend(got.items.into_iter().map(|p| ItemSnapshot {
            external_id: p.id,
            display_name: p.display_name,
            payload: p.payload,
        }));
        unreadable.extend(got.failures);
        match got.next {
            // A source that hands back a page it gave before, or never
            // ends, has not been read: the type fails, never loops.
            Some(next) if !seen.insert(next.clone()) || seen.len() > MAX_PAGES => {
                return Err(Ok(TypeFailure {
                    status: CoverageStatus::Failed,
                    error: ProviderError::Malformed(format!(
                        "{policy_type}: the pages do not end (a page repeated, or more than {MAX_PAGES})"
                    )),
                }));
            }
            Some(next) => page = Some(next),
            None => return Ok((items, unreadable)),
        }
    }
}

/// The `inventory.sync` reconciliation adapter: reads the run's coverage and
/// the items linked to it, and applies the core rule
/// ([`opsledger_core::inventory::reconcile`]).
pub struct InventorySyncAdapter;

#[async_trait]
impl opsledger_engine::ReconciliationAdapter for InventorySyncAdapter {
    fn name(&self) -> &'static str {
        "inventory_sync"
    }

    async fn reconcile(
        &self,
        run: &opsledger_core::Run,
        proof: &opsledger_store::proof::ProofReader,
    ) -> Result<opsledger_core::reconcile::AdapterResult, opsledger_store::StoreError> {
        let linked = proof.inventory_items_linked_to(&run.id).await?;
        Ok(reconcile_from_proof(run, &linked))
    }

    /// One query for the page's linked items (grouped by run), then the rule per run.
    async fn reconcile_page(
        &self,
        runs: &[&opsledger_core::Run],
        proof: &opsledger_store::proof::ProofReader,
    ) -> Result<Vec<opsledger_core::reconcile::AdapterResult>, opsledger_store::StoreError> {
        let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
        let linked = proof.inventory_items_linked_to_runs(&ids).await?;
        Ok(runs
            .iter()
            .map(|run| reconcile_from_proof(run, linked.get(&run.id).map_or(&[][..], Vec::as_slice)))
            .collect())
    }
}

/// The `inventory.sync` rule applied to one run's proof: its attempted types
/// and coverage (in its context) and `linked`, the inventory items naming
/// it as their last sync. Pure: the adapter reads, this decides.
pub fn reconcile_from_proof(
    run: &opsledger_core::Run,
    linked: &[opsledger_core::inventory::LinkedItems],
) -> opsledger_core::reconcile::AdapterResult {
    use opsledger_core::inventory::{RunScope, reconcile};
    let Some(tenant_id) = run.tenant_id.as_deref() else {
        return opsledger_core::reconcile::AdapterResult::stale_no_proof("This inventory sync");
    };
    let attempted: Option<Vec<String>> = run
        .context
        .pointer("/inventory/attempted_types")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect());
    let scope = RunScope {
        run_id: &run.id,
        workspace_id: &run.workspace_id,
        tenant_id,
    };
    let (unattributed, _) = unattributed_of(&run.context);
    reconcile(
        scope,
        attempted.as_deref(),
        &coverage_of(&run.context),
        unattributed,
        linked,
    )
}

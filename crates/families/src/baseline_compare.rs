//! `baseline.compare`: a tenant compared with a baseline — a snapshot, a
//! profile's latest snapshot, or a backup set ("what changed since
//! Tuesday's backup") — into findings that never cry wolf.
//!
//! - **Progress** is phased: load baseline → read tenant → diff → record
//!   findings; "read tenant" counts the policies read of those listed,
//!   "diff" the policy types compared; the run's own counters stay unset.
//! - **Baseline**: `baseline_snapshot_id`, else `profile`'s latest sealed
//!   snapshot, else `backup_set_id`, else the tenant's default profile's
//!   latest sealed snapshot; none → `blocked` (`no_baseline_snapshot`).
//! - **Matching and diff**: [`opsledger_core::drift`] over policies
//!   normalized ([`opsledger_core::normalize`]) with each tenant's own
//!   directory, so ids, timestamps and order never show as drift. Only the
//!   baseline's readable types are compared. A type the tenant cannot list,
//!   a policy whose settings cannot be read (either side), or two policies
//!   sharing a name is a gap of the compare: reported, never guessed, and
//!   the compare ends partially succeeded.
//! - **Proof**: the findings and one compare row, written in one transaction
//!   with `context.compare` (`baseline_snapshot_id` or `backup_set_id`,
//!   `findings`, `per_type`, `drift_found`, `unreadable_types`); readable at
//!   `GET …/operations/{id}/findings`.

use crate::baseline_capture::{TypeListing, list_type, proof_scope, stop};
use crate::kit::{OpenFailed, PhaseCursor, Stopped, open_provider, provider_error, with_retries};
use async_trait::async_trait;
use opsledger_core::baseline::{
    COMPARE_PHASES, CompareProof, GapReason, compare_outcome, findings_by_type, reconcile_compare,
};
use opsledger_core::drift::{Evidence, compare};
use opsledger_core::normalize::{Names, normalize, sha256_hex};
use opsledger_core::phases::PhasePlan;
use opsledger_core::reconcile::AdapterResult;
use opsledger_core::{Failure, Outcome, Run, UnitOutcome};
use opsledger_engine::{Family, Handler, HandlerError, RunContext};
use opsledger_providers::{Directory, ProviderSettings};
use opsledger_store::baselines::{CompareRecord, Evidence as Held, StoredCompare};
use opsledger_store::proof::ProofReader;
use opsledger_store::{Completion, ContextPatch, StoreError, UnitRecord};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Policies recorded per ledger write of the read phase.
const READ_BATCH: usize = 25;

pub fn family(providers: &ProviderSettings) -> Family {
    Family {
        run: Arc::new(Compare {
            providers: providers.clone(),
        }),
        units: None,
        adapter: Some(Arc::new(CompareAdapter)),
    }
}

pub struct Compare {
    pub providers: ProviderSettings,
}

/// What the compare compares against.
struct Baseline {
    snapshot_id: Option<String>,
    backup_set_id: Option<String>,
    /// Policies whose content is known.
    evidence: Vec<Evidence>,
    /// Policies the baseline holds as metadata only: compared for presence.
    metadata_only: Vec<Evidence>,
    /// The types compared, and the baseline's own unreadable types.
    types: BTreeSet<String>,
    unreadable: BTreeMap<String, String>,
}

/// The run's baseline, or why there is none (a `blocked` stop: code, message).
async fn load(
    ctx: &RunContext,
    tenant_id: &str,
) -> Result<Result<Baseline, (&'static str, String)>, HandlerError> {
    let reads = ctx.reads();
    let params = ctx.run.context.get("params").cloned().unwrap_or(Value::Null);
    let param = |n: &str| params.get(n).and_then(Value::as_str).map(str::to_owned);
    let snapshot = if let Some(id) = param("baseline_snapshot_id") {
        match reads.baseline_snapshot(&id).await? {
            Some(s) if s.sealed_at.is_some() => Some(s),
            Some(_) => {
                return Ok(Err((
                    "baseline_snapshot_unsealed",
                    format!("snapshot {id} was never sealed: its capture did not finish"),
                )));
            }
            None => {
                return Ok(Err((
                    "baseline_snapshot_not_found",
                    format!("snapshot {id} does not exist"),
                )));
            }
        }
    } else if let Some(name) = param("profile") {
        let Some(profile) = reads.baseline_profile_named(&name).await? else {
            return Ok(Err((
                "profile_not_found",
                format!("no baseline profile is named `{name}`"),
            )));
        };
        match reads.latest_sealed_snapshot(&profile.id).await? {
            Some(s) => Some(s),
            None => {
                return Ok(Err((
                    "no_baseline_snapshot",
                    format!("baseline profile `{name}` has no snapshot yet: run baseline.capture first"),
                )));
            }
        }
    } else if let Some(set_id) = param("backup_set_id") {
        let Some(set) = reads.backup_set(&set_id).await? else {
            return Ok(Err((
                "backup_set_not_found",
                format!("backup set {set_id} does not exist"),
            )));
        };
        let names = set
            .directory
            .as_ref()
            .and_then(|d| serde_json::from_value::<Directory>(d.clone()).ok())
            .map(|d| d.names())
            .unwrap_or_default();
        let mut evidence = Vec::new();
        for head in reads.backup_item_heads(&set.id).await? {
            let Some(item) = reads.backup_item(&set.id, &head.id).await? else {
                continue;
            };
            evidence.push(Evidence {
                policy_type: head.policy_type.clone(),
                external_id: head.external_id.clone(),
                display_name: head.display_name.clone(),
                normalized: normalize(&item.payload, &names),
            });
            ctx.liveness.mark();
        }
        let types = evidence.iter().map(|e| e.policy_type.clone()).collect();
        return Ok(Ok(Baseline {
            snapshot_id: None,
            backup_set_id: Some(set.id),
            evidence,
            metadata_only: Vec::new(),
            types,
            unreadable: BTreeMap::new(),
        }));
    } else {
        let Some(profile) = reads.default_baseline_profile_of(tenant_id).await? else {
            return Ok(Err((
                "no_baseline_snapshot",
                "this tenant has no baseline yet: run baseline.capture first, or name a profile or snapshot"
                    .into(),
            )));
        };
        match reads.latest_sealed_snapshot(&profile.id).await? {
            Some(s) => Some(s),
            None => {
                return Ok(Err((
                    "no_baseline_snapshot",
                    "this tenant has no baseline snapshot yet: run baseline.capture first".into(),
                )));
            }
        }
    };
    let snapshot = snapshot.expect("a snapshot or an early return");
    let gaps = ctx.reads().baseline_snapshot_gaps(&snapshot.id).await?;
    let unreadable: BTreeMap<String, String> = gaps
        .iter()
        .filter(|g| g.external_id.is_none())
        .map(|g| {
            (
                g.policy_type.clone(),
                format!("the baseline lacks it: {}", g.reason.as_str()),
            )
        })
        .collect();
    let mut evidence = Vec::new();
    let mut metadata_only = Vec::new();
    for p in reads.snapshot_policies(&snapshot.id).await? {
        let e = Evidence {
            policy_type: p.policy_type,
            external_id: p.external_id,
            display_name: p.display_name,
            normalized: p.payload.unwrap_or(Value::Null),
        };
        match p.evidence {
            Held::Full => evidence.push(e),
            _ => metadata_only.push(e),
        }
    }
    let types = snapshot.policy_types.iter().cloned().collect();
    Ok(Ok(Baseline {
        snapshot_id: Some(snapshot.id),
        backup_set_id: None,
        evidence,
        metadata_only,
        types,
        unreadable,
    }))
}

#[async_trait]
impl Handler for Compare {
    async fn execute(&self, ctx: RunContext) -> Result<(), HandlerError> {
        let run = &ctx.run;
        let Some(tenant_id) = run.tenant_id.clone() else {
            return Err(HandlerError::permanent(
                "tenant_missing",
                "a compare needs a tenant",
            ));
        };
        let plan: Vec<PhasePlan> = COMPARE_PHASES
            .iter()
            .map(|(k, l)| PhasePlan::new(*k, *l))
            .collect();
        ctx.plan_phases(&plan).await?;
        // A retried compare that recorded its findings closes by them.
        if let Some(recorded) = ctx.reads().own_compare().await? {
            return close(&ctx, &recorded).await;
        }
        let mut phases = PhaseCursor::of(run, &plan);
        phases.enter(&ctx, "load", None).await?;
        let baseline = match load(&ctx, &tenant_id).await? {
            Ok(b) => b,
            Err((code, message)) => return stop(&ctx, "compare", code, message).await,
        };

        phases.enter(&ctx, "read", None).await?;
        let provider = match open_provider(ctx.reads(), &self.providers).await {
            Ok(p) => p,
            Err(OpenFailed::Unavailable(f)) => return stop(&ctx, "compare", &f.code, f.message).await,
            Err(OpenFailed::Store(e)) => return Err(e.into()),
        };
        let directory = match with_retries(&ctx.cancel, &ctx.liveness, || async {
            provider.check_access().await?;
            provider.directory().await
        })
        .await
        {
            Ok(d) => d,
            Err(Err(Stopped)) => return Ok(()),
            Err(Ok(e)) if e.is_precondition() => return stop(&ctx, "compare", e.code(), e.to_string()).await,
            Err(Ok(e)) if e.is_transient() => return Err(provider_error(e, None)),
            Err(Ok(e)) => {
                ctx.complete(Completion::new(Outcome::Failed).with_failure(Failure::new(
                    "directory_unreadable",
                    format!(
                        "the tenant's directory cannot be read, so references cannot be compared by name: {e}"
                    ),
                )))
                .await?;
                return Ok(());
            }
        };
        let names: Names = directory.names();
        let mut unreadable = baseline.unreadable.clone();
        let mut listed = Vec::new();
        for t in &baseline.types {
            if unreadable.contains_key(t) {
                continue;
            }
            match list_type(&ctx, provider.as_ref(), t).await {
                Err(Stopped) => return Ok(()),
                Ok(TypeListing::Gap(reason, message)) => {
                    unreadable.insert(t.clone(), format!("{}: {message}", reason.as_str()));
                }
                Ok(TypeListing::Listed(items, unread)) => {
                    if !unread.is_empty() {
                        unreadable.insert(
                            t.clone(),
                            format!(
                                "{}: {} policies could not be read",
                                GapReason::TypeUnreadable.as_str(),
                                unread.len()
                            ),
                        );
                    }
                    listed.extend(items.into_iter().map(|p| (t.clone(), p)));
                }
            }
        }
        phases.enter(&ctx, "read", Some(listed.len() as u64)).await?;
        let mut current = Vec::with_capacity(listed.len());
        let mut presence_only = Vec::new();
        for batch in listed.chunks(READ_BATCH) {
            let mut units = Vec::with_capacity(batch.len());
            for (t, p) in batch {
                let key = format!("{t}/{}", p.id);
                let read = with_retries(&ctx.cancel, &ctx.liveness, || provider.get_policy(t, &p.id)).await;
                let unit = match read {
                    Ok(whole) => {
                        current.push(Evidence {
                            policy_type: t.clone(),
                            external_id: p.id.clone(),
                            display_name: p.display_name.clone(),
                            normalized: normalize(&whole.payload, &names),
                        });
                        UnitRecord::new(key, UnitOutcome::Succeeded)
                    }
                    Err(Err(Stopped)) => return Ok(()),
                    // Transient errors were retried already (with_retries).
                    Err(Ok(e)) => {
                        presence_only.push((t.clone(), p.id.clone(), p.display_name.clone()));
                        UnitRecord::new(key, UnitOutcome::Failed).with_failure(Failure::new(
                            "settings_unreadable",
                            format!(
                                "{t} `{}`: its settings cannot be read ({e}); compared for presence only",
                                p.display_name
                            ),
                        ))
                    }
                };
                units.push(unit);
            }
            ctx.record_phase_units("read", &units).await?;
        }

        // Diff, type by type. A policy known by its name only (either side)
        // is matched for presence, never diffed: its content is not known.
        let compared: Vec<String> = baseline
            .types
            .iter()
            .filter(|t| !unreadable.contains_key(*t))
            .cloned()
            .collect();
        phases.enter(&ctx, "diff", Some(compared.len() as u64)).await?;
        let presence = |t: &str, name: &str| json!({"presence_only": true, "policy_type": t, "name": name.trim().to_lowercase()});
        let mut baseline_side = baseline.evidence.clone();
        let mut current_side = current;
        for e in &baseline.metadata_only {
            baseline_side.push(Evidence {
                normalized: presence(&e.policy_type, &e.display_name),
                ..e.clone()
            });
        }
        for (t, id, name) in &presence_only {
            current_side.push(Evidence {
                policy_type: t.clone(),
                external_id: id.clone(),
                display_name: name.clone(),
                normalized: presence(t, name),
            });
        }
        // Presence-only on one side: the other side's content is not diffed.
        let unknown: BTreeSet<(String, String)> = baseline
            .metadata_only
            .iter()
            .map(|e| (e.policy_type.clone(), e.display_name.trim().to_lowercase()))
            .chain(
                presence_only
                    .iter()
                    .map(|(t, _, n)| (t.clone(), n.trim().to_lowercase())),
            )
            .collect();
        for side in [&mut baseline_side, &mut current_side] {
            for e in side.iter_mut() {
                let id = (e.policy_type.clone(), e.display_name.trim().to_lowercase());
                if unknown.contains(&id) {
                    e.normalized = presence(&id.0, &id.1);
                }
            }
        }
        let mut findings = Vec::new();
        let mut ambiguous = Vec::new();
        for chunk in compared.chunks(8) {
            let mut units = Vec::new();
            for t in chunk {
                let one: BTreeSet<String> = [t.clone()].into();
                let result = compare(&baseline_side, &current_side, &one);
                findings.extend(result.findings);
                ambiguous.extend(result.ambiguous);
                units.push(UnitRecord::new(t.clone(), UnitOutcome::Succeeded));
            }
            ctx.liveness.mark();
            ctx.record_phase_units("diff", &units).await?;
        }

        phases.enter(&ctx, "record", None).await?;
        let gap_types: BTreeSet<&str> = ambiguous
            .iter()
            .map(|a| a.policy_type.as_str())
            .chain(unknown.iter().map(|(t, _)| t.as_str()))
            .collect();
        let summary = json!({
            "baseline_snapshot_id": baseline.snapshot_id,
            "backup_set_id": baseline.backup_set_id,
            "findings": findings.len(),
            "drift_found": !findings.is_empty(),
            "per_type": findings_by_type(&findings),
            "types": baseline.types.len(),
            "unreadable_types": unreadable,
            "gap_types": gap_types,
            "ambiguous": ambiguous,
            "presence_only": unknown.len(),
            "sha256": sha256_hex(serde_json::to_string(&findings).expect("json").as_bytes()),
        });
        let record = CompareRecord {
            baseline_snapshot_id: baseline.snapshot_id.clone(),
            backup_set_id: baseline.backup_set_id.clone(),
            findings: findings.len() as u64,
            summary: summary.clone(),
        };
        ctx.record_compare(&record, &findings, &[ContextPatch::new(["compare"], summary)])
            .await?;
        let recorded = ctx
            .reads()
            .own_compare()
            .await?
            .ok_or_else(|| StoreError::Corrupt("the compare just recorded is not there".into()))?;
        close(&ctx, &recorded).await
    }
}

/// What a recorded compare says for the outcome: types compared, and those
/// unreadable or with gaps (ambiguous names, presence-only policies).
fn proof_of(c: &StoredCompare) -> CompareProof {
    let types = c.summary.get("types").and_then(Value::as_u64).unwrap_or(0);
    let mut short: BTreeSet<String> = c
        .summary
        .get("unreadable_types")
        .and_then(Value::as_object)
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    if let Some(g) = c.summary.get("gap_types").and_then(Value::as_array) {
        short.extend(g.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    CompareProof {
        workspace_id: c.workspace_id.clone(),
        tenant_id: c.tenant_id.clone(),
        findings: c.findings,
        types,
        unreadable_types: short.len() as u64,
    }
}

/// Closes the run by its recorded compare.
async fn close(ctx: &RunContext, recorded: &StoredCompare) -> Result<(), HandlerError> {
    let proof = proof_of(recorded);
    let (outcome, code) = compare_outcome(proof.types as usize, proof.unreadable_types as usize);
    let mut completion = Completion::new(outcome);
    if outcome != Outcome::Succeeded {
        completion = completion.with_failure(Failure::new(
            code,
            format!(
                "{} of {} types could not be compared whole; see context.compare",
                proof.unreadable_types, proof.types
            ),
        ));
    }
    ctx.complete(completion).await?;
    Ok(())
}

/// Reconciles a stale compare from its own compare record.
pub struct CompareAdapter;

#[async_trait]
impl opsledger_engine::ReconciliationAdapter for CompareAdapter {
    fn name(&self) -> &'static str {
        "baseline_compare"
    }

    async fn reconcile(&self, run: &Run, proof: &ProofReader) -> Result<AdapterResult, StoreError> {
        let record = proof.compare_of_run(&run.id).await?;
        Ok(reconcile_compare(
            proof_scope(run, "compare"),
            record.as_ref().map(proof_of).as_ref(),
        ))
    }
}

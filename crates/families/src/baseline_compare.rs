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
    /// Gaps of the baseline that belong to no one type: files of no known
    /// type (any policy may be in them, so nothing is `unexpected`), a
    /// backup set without its directory.
    other_gaps: Vec<String>,
    /// The baseline holds only some policies of its types (a backup of
    /// named policies): a policy it lacks is not `unexpected`.
    items_only: bool,
    /// The baseline's profile covers every type its tenant exposes.
    every_type: bool,
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
        if !set.complete {
            // A set still being written, or one whose capture failed in
            // part, is not a baseline: what it lacks would read as drift.
            return Ok(Err((
                "backup_set_incomplete",
                format!(
                    "backup set {set_id} is not complete (its capture did not read every planned policy)"
                ),
            )));
        }
        let mut other_gaps = Vec::new();
        let directory = set
            .directory
            .as_ref()
            .and_then(|d| serde_json::from_value::<Directory>(d.clone()).ok());
        if directory.is_none() {
            other_gaps.push(format!(
                "backup set {set_id} was taken without its tenant's directory: its references are compared as ids"
            ));
        }
        let names = directory.map(|d| d.names()).unwrap_or_default();
        let mut evidence = Vec::new();
        for head in reads.backup_item_heads(&set.id).await? {
            let Some(item) = reads.backup_item(&set.id, &head.id).await? else {
                other_gaps.push(format!("backup item {} is gone from the set", head.id));
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
            backup_set_id: Some(set.id.clone()),
            evidence,
            metadata_only: Vec::new(),
            types,
            unreadable: BTreeMap::new(),
            other_gaps,
            items_only: reads.backup_set_named_policies(&set.id).await?,
            // A type with no item in the set is not known to be empty.
            every_type: false,
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
        .filter(|g| g.external_id.is_none() && snapshot.policy_types.contains(&g.policy_type))
        .map(|g| {
            (
                g.policy_type.clone(),
                format!("the baseline lacks it: {}", g.reason.as_str()),
            )
        })
        .collect();
    let other_gaps: Vec<String> = gaps
        .iter()
        .filter(|g| g.external_id.is_none() && !snapshot.policy_types.contains(&g.policy_type))
        .map(|g| format!("the baseline's {}: {}", g.policy_type, g.message))
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
        other_gaps,
        items_only: false,
        every_type: reads
            .baseline_profile(&snapshot.profile_id)
            .await?
            .is_some_and(|p| p.policy_types.is_none()),
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
        // The types compared: the baseline's; for a profile of every type,
        // also those the tenant offers and the baseline tenant did not (it
        // held none of them: a policy of such a type is `unexpected`).
        // Other types of the tenant are not compared, and said so.
        let offered: Vec<String> =
            match with_retries(&ctx.cancel, &ctx.liveness, || provider.policy_types()).await {
                Ok(offered) => offered.into_iter().map(|t| t.key).collect(),
                Err(Err(Stopped)) => return Ok(()),
                Err(Ok(_)) => Vec::new(),
            };
        let mut types = baseline.types.clone();
        if baseline.every_type {
            types.extend(offered.iter().cloned());
        }
        let not_compared: Vec<String> = offered.into_iter().filter(|t| !types.contains(t)).collect();
        let mut unreadable = baseline.unreadable.clone();
        let mut listed: Vec<(String, opsledger_providers::Policy)> = Vec::new();
        for t in &types {
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
        // One policy once, however the pages repeat it.
        let mut seen = BTreeSet::new();
        listed.retain(|(t, p)| seen.insert((t.clone(), p.id.to_ascii_lowercase())));
        // Files of no known type that could not be read may hold any
        // policy: none can then be called `missing`.
        let current_unattributed =
            match with_retries(&ctx.cancel, &ctx.liveness, || provider.unattributed_failures()).await {
                Ok(f) => f.len() as u64,
                Err(Err(Stopped)) => return Ok(()),
                Err(Ok(_)) => 1,
            };
        // A retried attempt reads the tenant again; when it changed in
        // between, the phase's total would lie: fail closed instead.
        let earlier = run
            .phases
            .as_ref()
            .and_then(|ps| ps.iter().find(|p| p.key == "read"))
            .and_then(|p| p.total);
        if let Some(total) = earlier.filter(|t| *t != listed.len() as u64) {
            ctx.complete(Completion::new(Outcome::Failed).with_failure(Failure::new(
                "tenant_changed_during_compare",
                format!(
                    "the tenant listed {total} policies in an earlier attempt and {} now: start the compare again",
                    listed.len()
                ),
            )))
            .await?;
            return Ok(());
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
        let compared: Vec<String> = types
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

        // Findings that cannot be told true are not recorded, but counted:
        // `missing` while files of the tenant could not be read, `unexpected`
        // when the baseline holds only some policies of its types or files
        // of the baseline could not be read.
        let mut other_gaps = baseline.other_gaps.clone();
        let mut withheld: BTreeMap<&str, u64> = BTreeMap::new();
        let no_missing = current_unattributed > 0;
        let no_unexpected = baseline.items_only
            || baseline
                .other_gaps
                .iter()
                .any(|g| g.contains(opsledger_core::baseline::UNATTRIBUTED));
        if no_missing {
            other_gaps.push(format!(
                "{current_unattributed} files of the tenant of no known type could not be read: no policy is called missing"
            ));
        }
        findings.retain(|f| {
            let drop = (no_missing && f.kind == opsledger_core::drift::FindingKind::Missing)
                || (no_unexpected && f.kind == opsledger_core::drift::FindingKind::Unexpected);
            if drop {
                *withheld.entry(f.kind.as_str()).or_default() += 1;
            }
            !drop
        });

        phases.enter(&ctx, "record", None).await?;
        let gap_types: BTreeSet<&str> = ambiguous
            .iter()
            .map(|a| a.policy_type.as_str())
            .chain(unknown.iter().map(|(t, _)| t.as_str()))
            .collect();
        let short_types = unreadable
            .keys()
            .map(String::as_str)
            .chain(gap_types.iter().copied())
            .collect::<BTreeSet<&str>>()
            .len() as u64;
        let drift_found = opsledger_core::baseline::drift_found(
            findings.len() as u64,
            withheld.values().sum(),
            short_types,
            !other_gaps.is_empty(),
        );
        let summary = json!({
            "baseline_snapshot_id": baseline.snapshot_id,
            "backup_set_id": baseline.backup_set_id,
            "findings": findings.len(),
            "drift_found": drift_found,
            "per_type": findings_by_type(&findings),
            "types": types.len(),
            "unreadable_types": unreadable,
            "gap_types": gap_types,
            "ambiguous": ambiguous,
            "presence_only": unknown.len(),
            "other_gaps": other_gaps,
            "withheld": withheld,
            "baseline_scope": if baseline.items_only { "named policies" } else { "whole types" },
            "types_not_compared": not_compared,
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
    let count = c.summary.get("types").and_then(Value::as_u64).unwrap_or(0);
    let mut short: BTreeSet<String> = c
        .summary
        .get("unreadable_types")
        .and_then(Value::as_object)
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    if let Some(g) = c.summary.get("gap_types").and_then(Value::as_array) {
        short.extend(g.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    let other_gaps = c
        .summary
        .get("other_gaps")
        .and_then(Value::as_array)
        .is_some_and(|g| !g.is_empty());
    CompareProof {
        workspace_id: c.workspace_id.clone(),
        tenant_id: c.tenant_id.clone(),
        findings: c.findings,
        types: count,
        short_types: (short.len() as u64).min(count),
        other_gaps,
    }
}

/// Closes the run by its recorded compare.
async fn close(ctx: &RunContext, recorded: &StoredCompare) -> Result<(), HandlerError> {
    let proof = proof_of(recorded);
    let (outcome, code) = compare_outcome(proof.types, proof.short_types, proof.other_gaps);
    let mut completion = Completion::new(outcome);
    if outcome != Outcome::Succeeded {
        completion = completion.with_failure(Failure::new(
            code,
            format!(
                "{} of {} types could not be compared whole{}; see context.compare",
                proof.short_types,
                proof.types,
                if proof.other_gaps {
                    ", and some policies could not be verified"
                } else {
                    ""
                }
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

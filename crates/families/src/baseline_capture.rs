//! `baseline.capture`: a tenant's policies captured into a snapshot that
//! says what it holds and where it lacks fidelity (OPERATIONS.md §4, §6, §8).
//!
//! - **Progress** is phased: resolve scope → capture evidence → classify
//!   gaps → persist snapshot. Only "capture evidence" counts (policies
//!   captured of those resolved, each a ledger unit `capture/<type>/<id>`);
//!   the run's own `total`/`processed` stay unset.
//! - **Scope**: the profile named by `profile` (made with this tenant as
//!   source when the name is new), else the tenant's default profile (made
//!   by its first capture); its policy types,
//!   else every type the tenant exposes. The policies resolved are planned
//!   into the run's snapshot at once, so a retried capture captures the same
//!   list and counts each policy once.
//! - **Gaps**: a type that cannot be listed (`type_unreadable`) or is not
//!   offered (`type_unsupported`); a policy whose settings cannot be read,
//!   kept as metadata-only fallback evidence (`settings_unreadable`); two
//!   policies of one type sharing a name (`ambiguous_match`).
//! - **Outcome**: no gap → succeeded; gaps → partially succeeded; nothing
//!   captured and every type a gap → failed; a tenant without consent, or a
//!   profile of another tenant → blocked, before
//!   any snapshot, with `context.baseline_capture.reason_code`.
//! - **Proof**: the snapshot linked to this run, sealed with its gaps in
//!   one transaction with `context.baseline_snapshot` (`id`, `gaps`); the
//!   adapter reads that snapshot only ([`opsledger_core::baseline::reconcile_capture`]).

use crate::kit::{OpenFailed, PhaseCursor, Stopped, open_provider, provider_error, with_retries};
use async_trait::async_trait;
use opsledger_core::baseline::{
    CAPTURE_PHASES, CaptureTally, Gap, GapReason, Listed, ProofScope, SnapshotProof, UNATTRIBUTED,
    ambiguous_gaps, capture_outcome, gaps_by_type, reconcile_capture,
};
use opsledger_core::normalize::{canonical_json, normalize, sha256_hex};
use opsledger_core::reconcile::AdapterResult;
use opsledger_core::{Failure, Outcome, Run, UnitOutcome};
use opsledger_engine::{Family, Handler, HandlerError, RunContext};
use opsledger_providers::{Provider, ProviderError, ProviderSettings};
use opsledger_store::artifacts::UnitArtifact;
use opsledger_store::baselines::{CapturedPolicy, Evidence, PlannedPolicy};
use opsledger_store::proof::ProofReader;
use opsledger_store::{Completion, ContextPatch, StoreError, UnitRecord};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Policies recorded per ledger write of the capture phase.
const CAPTURE_BATCH: usize = 25;

pub fn family(providers: &ProviderSettings) -> Family {
    Family {
        run: Arc::new(Capture {
            providers: providers.clone(),
        }),
        units: None,
        adapter: Some(Arc::new(CaptureAdapter)),
    }
}

pub struct Capture {
    pub providers: ProviderSettings,
}

/// Ends the run `blocked` before any snapshot, saying why in its context.
pub(crate) async fn stop(
    ctx: &RunContext,
    family: &str,
    code: &str,
    message: String,
) -> Result<(), HandlerError> {
    ctx.complete(
        Completion::new(Outcome::Blocked)
            .with_patch(ContextPatch::new([family, "reason_code"], json!(code)))
            .with_failure(Failure::new(code, message)),
    )
    .await?;
    Ok(())
}

/// A type-wide gap.
fn type_gap(policy_type: &str, reason: GapReason, message: String) -> Gap {
    Gap {
        policy_type: policy_type.to_owned(),
        external_id: None,
        reason,
        message,
    }
}

/// What listing one type gave: its policies, or the gap it is.
pub(crate) enum TypeListing {
    Listed(Vec<opsledger_providers::Policy>, Vec<String>),
    Gap(GapReason, String),
}

/// Lists one type to its last page; a type the provider does not offer is
/// `type_unsupported`, one that cannot be listed (after the retries of
/// [`with_retries`]) `type_unreadable`.
pub(crate) async fn list_type(
    ctx: &RunContext,
    provider: &dyn Provider,
    policy_type: &str,
) -> Result<TypeListing, Stopped> {
    let mut items = Vec::new();
    let mut unread = Vec::new();
    let mut page: Option<String> = None;
    loop {
        let got = match with_retries(&ctx.cancel, &ctx.liveness, || {
            provider.list_page(policy_type, page.as_deref())
        })
        .await
        {
            Ok(p) => p,
            Err(Err(Stopped)) => return Err(Stopped),
            Err(Ok(e @ (ProviderError::UnsupportedType(_) | ProviderError::UnknownType(_)))) => {
                return Ok(TypeListing::Gap(GapReason::TypeUnsupported, e.to_string()));
            }
            // Transient errors were retried already: what is left is a type
            // this tenant does not answer for now, a gap, never a guess.
            Err(Ok(e)) => return Ok(TypeListing::Gap(GapReason::TypeUnreadable, e.to_string())),
        };
        unread.extend(got.failures.iter().map(|f| format!("{} ({})", f.source, f.code)));
        items.extend(got.items);
        match got.next {
            Some(next) => page = Some(next),
            None => break,
        }
    }
    Ok(TypeListing::Listed(items, unread))
}

#[async_trait]
impl Handler for Capture {
    async fn execute(&self, ctx: RunContext) -> Result<(), HandlerError> {
        let run = &ctx.run;
        let reads = ctx.reads();
        let Some(tenant_id) = run.tenant_id.clone() else {
            return Err(HandlerError::permanent(
                "tenant_missing",
                "a capture needs a tenant",
            ));
        };
        let plan: Vec<_> = CAPTURE_PHASES
            .iter()
            .map(|(k, l)| opsledger_core::phases::PhasePlan::new(*k, *l))
            .collect();
        ctx.plan_phases(&plan).await?;
        let mut phases = PhaseCursor::of(run, &plan);
        phases.enter(&ctx, "resolve", None).await?;

        // The profile: named (made with this tenant as source when the name
        // is new; another tenant's is refused), else the tenant's default.
        let profile = match run.context.pointer("/params/profile").and_then(Value::as_str) {
            Some(name) => match ctx.named_baseline_profile(name).await? {
                p if p.source_tenant_id == tenant_id => p,
                p => {
                    return stop(
                        &ctx,
                        "baseline_capture",
                        "profile_other_tenant",
                        format!(
                            "baseline profile `{}` captures another tenant ({})",
                            p.name, p.source_tenant_id
                        ),
                    )
                    .await;
                }
            },
            None => ctx.default_baseline_profile().await?,
        };
        let provider = match open_provider(reads, &self.providers).await {
            Ok(p) => p,
            Err(OpenFailed::Unavailable(f)) => {
                return stop(&ctx, "baseline_capture", &f.code, f.message).await;
            }
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
            Err(Ok(e)) if e.is_precondition() => {
                return stop(&ctx, "baseline_capture", e.code(), e.to_string()).await;
            }
            Err(Ok(e)) if e.is_transient() => return Err(provider_error(e, None)),
            Err(Ok(e)) => {
                // Without the directory references would be bare ids, which
                // another tenant never shares: every compare would cry wolf.
                ctx.complete(Completion::new(Outcome::Failed).with_failure(Failure::new(
                    "directory_unreadable",
                    format!("the tenant's directory cannot be read, so references cannot be named: {e}"),
                )))
                .await?;
                return Ok(());
            }
        };
        let names = directory.names();

        let snapshot = match reads.own_baseline_snapshot().await? {
            Some(s) => s,
            None => {
                let offered: Vec<String> =
                    match with_retries(&ctx.cancel, &ctx.liveness, || provider.policy_types()).await {
                        Ok(t) => t.into_iter().map(|t| t.key).collect(),
                        Err(Err(Stopped)) => return Ok(()),
                        Err(Ok(e)) if e.is_transient() => return Err(provider_error(e, None)),
                        Err(Ok(e)) => {
                            ctx.complete(
                                Completion::new(Outcome::Failed)
                                    .with_failure(Failure::new(e.code(), e.to_string())),
                            )
                            .await?;
                            return Ok(());
                        }
                    };
                let types = profile.policy_types.clone().unwrap_or_else(|| offered.clone());
                let mut gaps = Vec::new();
                let mut planned = Vec::new();
                for t in &types {
                    if !offered.contains(t) {
                        gaps.push(type_gap(
                            t,
                            GapReason::TypeUnsupported,
                            format!("the tenant does not offer {t}"),
                        ));
                        continue;
                    }
                    match list_type(&ctx, provider.as_ref(), t).await {
                        Err(Stopped) => return Ok(()),
                        Ok(TypeListing::Gap(reason, message)) => gaps.push(type_gap(t, reason, message)),
                        Ok(TypeListing::Listed(items, unread)) => {
                            if !unread.is_empty() {
                                gaps.push(type_gap(
                                    t,
                                    GapReason::TypeUnreadable,
                                    format!(
                                        "{} of its policies could not be read: {}",
                                        unread.len(),
                                        unread.join("; ")
                                    ),
                                ));
                            }
                            planned.extend(items.into_iter().map(|p| PlannedPolicy {
                                policy_type: t.clone(),
                                external_id: p.id,
                                display_name: p.display_name,
                            }));
                        }
                    }
                }
                // Files of no known type that could not be read may hold any
                // policy: the snapshot cannot claim it holds them all.
                match with_retries(&ctx.cancel, &ctx.liveness, || provider.unattributed_failures()).await {
                    Ok(failed) if failed.is_empty() => {}
                    Ok(failed) => gaps.push(type_gap(
                        UNATTRIBUTED,
                        GapReason::TypeUnreadable,
                        format!(
                            "{} files of no known type could not be read: {}",
                            failed.len(),
                            failed
                                .iter()
                                .take(20)
                                .map(|f| format!("{} ({})", f.source, f.code))
                                .collect::<Vec<_>>()
                                .join("; ")
                        ),
                    )),
                    Err(Err(Stopped)) => return Ok(()),
                    Err(Ok(e)) => gaps.push(type_gap(
                        UNATTRIBUTED,
                        GapReason::TypeUnreadable,
                        format!("whether files of no known type failed cannot be told: {e}"),
                    )),
                }
                // The type gaps first (a snapshot found on retry keeps them),
                // then the snapshot with its plan.
                ctx.patch_context(&[ContextPatch::new(
                    ["baseline_capture"],
                    json!({"profile_id": profile.id, "types": types, "type_gaps": gaps}),
                )])
                .await?;
                ctx.baseline_snapshot(&profile.id, &types, &planned).await?
            }
        };

        // Capture evidence: each planned policy read whole, once.
        let policies = reads.snapshot_policies(&snapshot.id).await?;
        phases.enter(&ctx, "capture", Some(policies.len() as u64)).await?;
        let todo: Vec<_> = policies
            .iter()
            .filter(|p| p.evidence == Evidence::Planned)
            .collect();
        for batch in todo.chunks(CAPTURE_BATCH) {
            let mut units = Vec::with_capacity(batch.len());
            for p in batch {
                let read = with_retries(&ctx.cancel, &ctx.liveness, || {
                    provider.get_policy(&p.policy_type, &p.external_id)
                })
                .await;
                let key = format!("{}/{}", p.policy_type, p.external_id);
                let (evidence, payload, failure) = match read {
                    Ok(policy) => (Evidence::Full, normalize(&policy.payload, &names), None),
                    Err(Err(Stopped)) => return Ok(()),
                    // Transient errors were retried already (with_retries).
                    Err(Ok(e)) => (
                        Evidence::MetadataOnly,
                        json!({"displayName": p.display_name}),
                        Some(Failure::new(
                            "settings_unreadable",
                            format!(
                                "{} `{}`: its settings cannot be read ({e}); kept as metadata only",
                                p.policy_type, p.display_name
                            ),
                        )),
                    ),
                };
                let artifact = UnitArtifact::BaselinePolicy(CapturedPolicy {
                    snapshot_id: snapshot.id.clone(),
                    policy_type: p.policy_type.clone(),
                    external_id: p.external_id.clone(),
                    evidence,
                    payload_sha256: sha256_hex(canonical_json(&payload).as_bytes()),
                    payload,
                });
                let mut unit = match failure {
                    None => UnitRecord::new(key, UnitOutcome::Succeeded),
                    Some(f) => UnitRecord::new(key, UnitOutcome::Failed).with_failure(f),
                };
                unit.artifact = Some(artifact);
                units.push(unit);
            }
            ctx.record_phase_units("capture", &units).await?;
        }

        // Classify gaps: the types', the fallbacks', the ambiguous names'.
        phases.enter(&ctx, "classify", None).await?;
        let policies = reads.snapshot_policies(&snapshot.id).await?;
        let reloaded = reads
            .reload()
            .await?
            .ok_or_else(|| StoreError::RunNotFound(run.id.clone()))?;
        let mut gaps: Vec<Gap> = reloaded
            .context
            .pointer("/baseline_capture/type_gaps")
            .and_then(|g| serde_json::from_value(g.clone()).ok())
            .unwrap_or_default();
        for p in policies.iter().filter(|p| p.evidence == Evidence::MetadataOnly) {
            gaps.push(Gap {
                policy_type: p.policy_type.clone(),
                external_id: Some(p.external_id.clone()),
                reason: GapReason::SettingsUnreadable,
                message: format!(
                    "`{}`: its settings could not be read; the snapshot holds its metadata only",
                    p.display_name
                ),
            });
        }
        let listed: Vec<Listed<'_>> = policies
            .iter()
            .map(|p| Listed {
                policy_type: &p.policy_type,
                external_id: &p.external_id,
                display_name: &p.display_name,
            })
            .collect();
        gaps.extend(ambiguous_gaps(&listed));

        // Persist: sealed with its gaps, in one transaction with the
        // context — unless the capture failed: a snapshot of nothing must
        // never become the profile's latest baseline.
        phases.enter(&ctx, "persist", None).await?;
        let by_type = gaps_by_type(&gaps);
        let (outcome, code) = capture_outcome(CaptureTally::of(
            snapshot.policy_types.len(),
            policies.len() as u64,
            &gaps,
        ));
        let summary = ContextPatch::new(
            ["baseline_snapshot"],
            json!({
                "id": snapshot.id,
                "profile_id": snapshot.profile_id,
                "policies": policies.len(),
                "sealed": outcome != Outcome::Failed,
                "gaps": {"count": gaps.len(), "by_type": by_type},
            }),
        );
        if outcome == Outcome::Failed {
            ctx.patch_context(&[summary]).await?;
        } else {
            ctx.seal_baseline_snapshot(&gaps, &[summary]).await?;
        }
        let mut completion = Completion::new(outcome);
        if outcome != Outcome::Succeeded {
            let types: BTreeSet<&str> = gaps.iter().map(|g| g.policy_type.as_str()).collect();
            completion = completion.with_failure(Failure::new(
                code,
                format!(
                    "the snapshot has {} gaps in {} types ({}); see context.baseline_snapshot.gaps",
                    gaps.len(),
                    types.len(),
                    types.into_iter().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        ctx.complete(completion).await?;
        Ok(())
    }
}

/// Reconciles a stale capture from the snapshot linked to it.
pub struct CaptureAdapter;

/// The scope and stop reason of a run, for the baseline adapters.
pub(crate) fn proof_scope<'a>(run: &'a Run, family: &str) -> ProofScope<'a> {
    ProofScope {
        workspace_id: &run.workspace_id,
        tenant_id: run.tenant_id.as_deref().unwrap_or_default(),
        stopped: run
            .context
            .get(family)
            .and_then(|c| c.get("reason_code"))
            .and_then(Value::as_str),
    }
}

#[async_trait]
impl opsledger_engine::ReconciliationAdapter for CaptureAdapter {
    fn name(&self) -> &'static str {
        "baseline_capture"
    }

    async fn reconcile(&self, run: &Run, proof: &ProofReader) -> Result<AdapterResult, StoreError> {
        let mut snapshots = Vec::new();
        for snap in proof.snapshots_of_run(&run.id).await? {
            let gaps = proof.snapshot_gaps(&snap.id).await?;
            snapshots.push(SnapshotProof {
                sealed: snap.sealed_at.is_some(),
                tally: CaptureTally::of(snap.policy_types.len(), snap.policy_count.unwrap_or(0), &gaps),
                id: snap.id,
                workspace_id: snap.workspace_id,
                tenant_id: snap.tenant_id,
            });
        }
        Ok(reconcile_capture(
            proof_scope(run, "baseline_capture"),
            &snapshots,
        ))
    }
}

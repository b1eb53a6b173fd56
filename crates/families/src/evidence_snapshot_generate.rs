//! `evidence.snapshot.generate`: a signed snapshot of what the database
//! knows about a tenant, for an auditor who must be able to trust it later
//! (OPERATIONS.md §3, §6, §8).
//!
//! - **Items** come from every evidence source, read from the database at
//!   plan time ([`opsledger_core::evidence::items_of`]): inventory coverage
//!   per policy type, backup recency and completeness, baseline compare
//!   status, Conditional Access policies and their state, assignment
//!   coverage per type. A tenant with nothing yet still yields items saying
//!   so ("no backup", "never compared"): never an empty, falsely green
//!   snapshot. No provider is called: a snapshot states what was proven.
//! - **Progress** is counted: `total` = the planned items; each item is a
//!   ledger unit (key = item key) whose artifact records its SHA-256 with
//!   the unit, exactly once. The items are planned into the snapshot in one
//!   transaction, so a retried run records the same items and never
//!   recounts one.
//! - **Signature**: HMAC-SHA256 over the snapshot's id, workspace, tenant,
//!   time and every item's key and hash in order, under the evidence key
//!   (never in the database). It is stored with `context.evidence_snapshot`
//!   (`id`, `items`) in one transaction once every item is recorded, then
//!   the run closes: a worker dying between the two leaves a sealed
//!   snapshot its adapter can prove.
//! - **Outcome**: the sealed snapshot read back and verified → succeeded;
//!   otherwise failed with the verification's reason. A run whose tenant is
//!   gone ends blocked before any snapshot.
//! - **Proof**: the snapshot linked to this run, complete and verifying under
//!   the key ([`opsledger_core::evidence::reconcile`]).

use async_trait::async_trait;
use opsledger_core::evidence::{
    EvidenceKey, RunScope, Signed, SnapshotProof, StoredSnapshot, VerifyFailure, content_sha256, items_of,
    plan_signature, reconcile, verify,
};
use opsledger_core::reconcile::AdapterResult;
use opsledger_core::{Failure, Outcome, Run, UnitOutcome};
use opsledger_engine::{Family, Handler, HandlerError, RunContext};
use opsledger_store::artifacts::UnitArtifact;
use opsledger_store::evidence::{RecordedItem, SnapshotHead, SnapshotItem, stored};
use opsledger_store::proof::ProofReader;
use opsledger_store::{Completion, ContextPatch, StoreError, UnitRecord};
use serde_json::{Value, json};
use std::sync::Arc;

/// Items recorded per ledger write.
const RECORD_BATCH: usize = 100;

/// The family, signing with `key` (the node's evidence key).
pub fn family(key: EvidenceKey) -> Family {
    Family {
        run: Arc::new(Generate { key: key.clone() }),
        units: None,
        adapter: Some(Arc::new(SnapshotAdapter { key })),
    }
}

pub struct Generate {
    key: EvidenceKey,
}

async fn fail(ctx: &RunContext, code: &str, message: String) -> Result<(), HandlerError> {
    ctx.complete(Completion::new(Outcome::Failed).with_failure(Failure::new(code, message)))
        .await?;
    Ok(())
}

#[async_trait]
impl Handler for Generate {
    async fn execute(&self, ctx: RunContext) -> Result<(), HandlerError> {
        let reads = ctx.reads();
        if ctx.run.tenant_id.is_none() {
            return Err(HandlerError::permanent(
                "tenant_missing",
                "an evidence snapshot needs a tenant",
            ));
        }
        if reads.tenant().await?.is_none() {
            ctx.complete(
                Completion::new(Outcome::Blocked)
                    .with_patch(ContextPatch::new(
                        ["evidence_snapshot", "reason_code"],
                        json!("tenant_not_found"),
                    ))
                    .with_failure(Failure::new(
                        "tenant_not_found",
                        "the run's tenant no longer exists",
                    )),
            )
            .await?;
            return Ok(());
        }

        // Plan: the items read now, fixed in the snapshot (a retry finds them).
        let snapshot = match reads.own_evidence_snapshot().await? {
            Some(s) => s,
            None => {
                let sources = reads.evidence_sources().await?;
                let items = match items_of(&sources) {
                    Ok(items) => items,
                    Err(e) => return fail(&ctx, "evidence_too_large", e.to_string()).await,
                };
                let key = self.key.clone();
                let signer = move |head: Signed<'_>, items: &[opsledger_core::evidence::Item]| {
                    plan_signature(&key, head, items)
                };
                ctx.evidence_snapshot(&items, &signer).await?
            }
        };
        ctx.init_total(snapshot.item_count).await?;

        // Record: each item once, its hash computed from what was planned.
        let items = reads.evidence_items(&snapshot.id).await?;
        let pending: Vec<&SnapshotItem> = items.iter().filter(|i| i.item.sha256.is_none()).collect();
        for batch in pending.chunks(RECORD_BATCH) {
            if ctx.cancel.is_cancelled() {
                return Ok(());
            }
            let mut units = Vec::with_capacity(batch.len());
            for i in batch {
                let Some(sha256) = content_sha256(&i.item) else {
                    return fail(
                        &ctx,
                        "evidence_item_corrupt",
                        format!(
                            "planned item `{}` is not one this run wrote: it cannot be recorded",
                            i.item.key
                        ),
                    )
                    .await;
                };
                units.push(
                    UnitRecord::new(i.item.key.clone(), UnitOutcome::Succeeded).with_artifact(
                        UnitArtifact::EvidenceItem(RecordedItem {
                            snapshot_id: snapshot.id.clone(),
                            item_key: i.item.key.clone(),
                            sha256,
                        }),
                    ),
                );
            }
            ctx.record_units(&units).await?;
        }

        // Seal: only the plan's signature, and only when the stored items
        // still reproduce it (content altered in the database since the
        // plan — hashes recomputed or not — is never signed); then the
        // snapshot holds as an auditor will check it, and the run succeeds.
        let items = reads.evidence_items(&snapshot.id).await?;
        let mut candidate = stored(&snapshot, items);
        if snapshot.sealed_at.is_none() {
            candidate.signature = Some(snapshot.plan_signature.clone());
        }
        if let Err(f) = verify(&self.key, &candidate) {
            let code = match f {
                VerifyFailure::SignatureMismatch if snapshot.sealed_at.is_none() => "evidence_plan_altered",
                _ => f.code(),
            };
            return fail(
                &ctx,
                code,
                format!(
                    "evidence snapshot {} does not verify: {f}; it is not signed",
                    snapshot.id
                ),
            )
            .await;
        }
        if snapshot.sealed_at.is_none() {
            let summary = ContextPatch::new(
                ["evidence_snapshot"],
                json!({"id": snapshot.id, "items": snapshot.item_count}),
            );
            ctx.seal_evidence_snapshot(&snapshot.plan_signature, &[summary])
                .await?;
        }
        ctx.complete(Completion::new(Outcome::Succeeded)).await?;
        Ok(())
    }
}

/// Reconciles a stale run from the snapshot linked to it, verified under
/// the node's key (the adapter reads; it never signs).
pub struct SnapshotAdapter {
    key: EvidenceKey,
}

/// What one stored snapshot proves.
fn proof_of(key: &EvidenceKey, head: SnapshotHead, stored: &StoredSnapshot) -> SnapshotProof {
    SnapshotProof {
        verified: verify(key, stored),
        id: head.id,
        workspace_id: head.workspace_id,
        tenant_id: head.tenant_id,
        created_by_run_id: head.created_by_run_id,
        item_count: head.item_count,
    }
}

#[async_trait]
impl opsledger_engine::ReconciliationAdapter for SnapshotAdapter {
    fn name(&self) -> &'static str {
        "evidence_snapshot"
    }

    async fn reconcile(&self, run: &Run, proof: &ProofReader) -> Result<AdapterResult, StoreError> {
        // Candidates: the snapshots linked to the run, and the one its
        // context names (which must be the same one).
        let mut heads = proof.evidence_snapshots_of_run(&run.id).await?;
        if let Some(id) = run
            .context
            .pointer("/evidence_snapshot/id")
            .and_then(Value::as_str)
            && !heads.iter().any(|h| h.id == id)
        {
            match proof.evidence_snapshot(id).await? {
                Some(named) => heads.push(named),
                None => {
                    return Ok(AdapterResult::new(
                        opsledger_core::reconcile::Verdict::Failed,
                        "proof_missing",
                        format!("the evidence snapshot this run names ({id}) does not exist"),
                    ));
                }
            }
        }
        let mut candidates = Vec::with_capacity(heads.len());
        for head in heads {
            let stored = proof.stored_evidence_snapshot(&head).await?;
            candidates.push(proof_of(&self.key, head, &stored));
        }
        Ok(reconcile(
            RunScope {
                run_id: &run.id,
                workspace_id: &run.workspace_id,
                tenant_id: run.tenant_id.as_deref().unwrap_or_default(),
            },
            &candidates,
        ))
    }
}

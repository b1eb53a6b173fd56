//! `backup.schedule.execute`: one slot of a backup schedule for one tenant —
//! a new backup set, captured **counted by policy types** (OPERATIONS.md
//! §6): `total` = the types to capture, one unit per type, recorded with
//! the policies of that type read whole (settings, assignments) into the
//! run's own set.
//!
//! - A schedule disabled (or deleted) since the slot was started, or a
//!   tenant that cannot be read at all, ends `blocked` before any work, and
//!   the context says which (`context.backup_schedule.skipped`).
//! - A type that cannot be listed, or whose policies cannot all be read, is
//!   a failed unit; the policies that were read are kept (a partial set).
//! - `context.backup_schedule_id` and `context.backup_set` name the proof;
//!   the adapter reads **this run's own set** (by its creating run), never
//!   the tenant's latest set.

use crate::kit::{OpenFailed, Stopped, open_provider, provider_error, with_retries};
use async_trait::async_trait;
use opsledger_core::normalize::{Names, content_hash, references};
use opsledger_core::reconcile::{AdapterResult, Verdict};
use opsledger_core::{Failure, Outcome, Run, UnitOutcome};
use opsledger_engine::{Family, Handler, HandlerError, RunContext};
use opsledger_providers::{Provider, ProviderError, ProviderSettings};
use opsledger_store::artifacts::UnitArtifact;
use opsledger_store::backups::BackupItem;
use opsledger_store::proof::ProofReader;
use opsledger_store::{Completion, ContextPatch, StoreError, UnitRecord};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

pub fn family(providers: &ProviderSettings) -> Family {
    Family {
        run: Arc::new(ScheduledBackup {
            providers: providers.clone(),
        }),
        units: None,
        adapter: Some(Arc::new(ScheduledBackupAdapter)),
    }
}

pub struct ScheduledBackup {
    pub providers: ProviderSettings,
}

/// Ends the run `blocked` before any work, saying why in its context.
async fn skip(ctx: &RunContext, code: &str, message: String) -> Result<(), HandlerError> {
    ctx.complete(
        Completion::new(Outcome::Blocked)
            .with_patch(ContextPatch::new(["backup_schedule", "skipped"], json!(code)))
            .with_failure(Failure::new(code, message)),
    )
    .await?;
    Ok(())
}

/// A retried capture that cannot go on: closed by what it captured (the
/// closing write counts the types never attempted as failed).
async fn close_early(ctx: &RunContext, failure: Failure) -> Result<(), HandlerError> {
    let items = ctx.reads().backup_set_items().await?;
    let outcome = if items > 0 {
        Outcome::PartiallySucceeded
    } else {
        Outcome::Failed
    };
    ctx.complete(Completion::new(outcome).with_failure(failure))
        .await?;
    Ok(())
}

/// The outcome of a capture by its types' units: every type captured →
/// succeeded; some, or some policies → partially succeeded; nothing → failed.
pub fn capture_outcome(types_failed: u64, items: u64) -> Outcome {
    if types_failed == 0 {
        Outcome::Succeeded
    } else if items > 0 {
        Outcome::PartiallySucceeded
    } else {
        Outcome::Failed
    }
}

#[async_trait]
impl Handler for ScheduledBackup {
    async fn execute(&self, ctx: RunContext) -> Result<(), HandlerError> {
        let run = &ctx.run;
        let reads = ctx.reads();
        let schedule_id = run
            .context
            .pointer("/params/schedule_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        // A retried attempt (its plan recorded) goes on with the work it
        // started: proof of useful work beats a later stop (§8 precedence).
        let retried = run.summary_counts.total.is_some();
        let schedule = reads.schedule(&schedule_id).await?;
        let Some(schedule) = schedule.filter(|s| s.enabled || retried) else {
            if retried {
                let f = Failure::new(
                    "schedule_deleted",
                    format!("schedule {schedule_id} was deleted during this run"),
                );
                return close_early(&ctx, f).await;
            }
            return skip(
                &ctx,
                "schedule_disabled",
                format!("schedule {schedule_id} was disabled or deleted before this run started its work"),
            )
            .await;
        };
        let provider = match open_provider(reads, &self.providers).await {
            Ok(p) => p,
            Err(OpenFailed::Unavailable(f)) if !retried => return skip(&ctx, &f.code, f.message).await,
            Err(OpenFailed::Unavailable(f)) => return close_early(&ctx, f).await,
            Err(OpenFailed::Store(e)) => return Err(e.into()),
        };
        let directory = match with_retries(&ctx.cancel, &ctx.liveness, || async {
            provider.check_access().await?;
            provider.directory().await
        })
        .await
        {
            Ok(d) => Some(d),
            Err(Err(Stopped)) => return Ok(()),
            Err(Ok(e)) if e.is_precondition() && !retried => {
                return skip(&ctx, e.code(), e.to_string()).await;
            }
            Err(Ok(e)) if e.is_precondition() => {
                return close_early(&ctx, Failure::new(e.code(), e.to_string())).await;
            }
            Err(Ok(e)) if e.is_transient() => return Err(provider_error(e, None)),
            // The policies can still be captured, their references as ids;
            // the set says its directory is missing (as `add_policies` does:
            // such a set restores into its own tenant only).
            Err(Ok(e)) => {
                ctx.patch_context(&[ContextPatch::new(
                    ["backup_set", "directory_unreadable"],
                    json!({"code": e.code(), "message": e.to_string()}),
                )])
                .await?;
                None
            }
        };
        // The types: as an earlier attempt planned them, else the
        // parameter's, else every type the tenant exposes.
        let planned: Option<Vec<String>> = run
            .context
            .pointer("/backup_schedule/types")
            .and_then(|v| serde_json::from_value(v.clone()).ok());
        let types: Vec<String> = match planned {
            Some(t) => t,
            None => match run
                .context
                .pointer("/params/policy_types")
                .and_then(Value::as_array)
            {
                Some(t) => t.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
                None => match with_retries(&ctx.cancel, &ctx.liveness, || provider.policy_types()).await {
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
                },
            },
        };
        let name = format!(
            "{} {}",
            schedule.name,
            chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
        );
        let set_id = match &directory {
            Some(d) => {
                ctx.backup_set_with_directory(&name, &serde_json::to_value(d).expect("json"))
                    .await?
            }
            None => ctx.backup_set(&name).await?,
        };
        ctx.patch_context(&[
            ContextPatch::new(["backup_schedule_id"], json!(schedule.id)),
            ContextPatch::new(["backup_set", "id"], json!(set_id)),
            ContextPatch::new(["backup_schedule", "types"], json!(types)),
        ])
        .await?;
        ctx.init_total(types.len() as u64).await?;
        let names = directory.as_ref().map(|d| d.names()).unwrap_or_default();
        let done = ctx.reads().recorded_units().await?;
        for t in types.iter().filter(|t| !done.contains_key(*t)) {
            let unit = match capture_type(&ctx, provider.as_ref(), t, &names).await {
                Ok(unit) => unit,
                Err(Err(Stopped)) => return Ok(()),
                Err(Ok(e)) => return Err(e),
            };
            ctx.record_units(std::slice::from_ref(&unit)).await?;
        }
        let recorded = ctx.reads().recorded_units().await?;
        let failed = recorded.values().filter(|o| **o == UnitOutcome::Failed).count() as u64;
        let items = ctx.reads().backup_set_items().await?;
        let outcome = capture_outcome(failed, items);
        ctx.complete(Completion::new(outcome).with_patch(ContextPatch::new(
            ["backup_set"],
            json!({"id": set_id, "items": items, "failed_types": failed, "complete": outcome == Outcome::Succeeded}),
        )))
        .await?;
        Ok(())
    }
}

/// One type read whole into a unit: its policies as items; failed when the
/// type could not be listed to its end or a policy could not be read.
async fn capture_type(
    ctx: &RunContext,
    provider: &dyn Provider,
    policy_type: &str,
    names: &Names,
) -> Result<UnitRecord, Result<HandlerError, Stopped>> {
    let mut items: Vec<BackupItem> = Vec::new();
    let mut unread: Vec<String> = Vec::new();
    let mut page: Option<String> = None;
    let mut pages = 0u32;
    let listed: Result<(), ProviderError> = loop {
        let got = match with_retries(&ctx.cancel, &ctx.liveness, || {
            provider.list_page(policy_type, page.as_deref())
        })
        .await
        {
            Ok(p) => p,
            Err(Err(Stopped)) => return Err(Err(Stopped)),
            Err(Ok(e)) => break Err(e),
        };
        unread.extend(got.failures.iter().map(|f| format!("{} ({})", f.source, f.code)));
        for listed in &got.items {
            match with_retries(&ctx.cancel, &ctx.liveness, || {
                provider.get_policy(policy_type, &listed.id)
            })
            .await
            {
                Ok(p) => items.push(BackupItem {
                    policy_type: policy_type.to_owned(),
                    external_id: p.id,
                    display_name: p.display_name,
                    content_sha256: content_hash(&p.payload, names),
                    refs: json!(references(&p.payload, names)),
                    payload: p.payload,
                }),
                Err(Err(Stopped)) => return Err(Err(Stopped)),
                Err(Ok(e)) => unread.push(format!("{} ({})", listed.id, e.code())),
            }
        }
        pages += 1;
        match got.next {
            Some(n) if pages < 100_000 => page = Some(n),
            _ => break Ok(()),
        }
    };
    let failure = match (&listed, unread.is_empty()) {
        (Err(e), _) => Some(Failure::new(
            e.code(),
            format!(
                "{policy_type} was not read to its end: {e} ({} policies captured)",
                items.len()
            ),
        )),
        (Ok(()), false) => Some(Failure::new(
            "policies_unreadable",
            format!(
                "{} {policy_type} policies could not be read: {}",
                unread.len(),
                unread.iter().take(20).cloned().collect::<Vec<_>>().join(", ")
            ),
        )),
        (Ok(()), true) => None,
    };
    let outcome = if failure.is_some() {
        UnitOutcome::Failed
    } else {
        UnitOutcome::Succeeded
    };
    let mut unit = UnitRecord::new(policy_type, outcome).with_artifact(UnitArtifact::BackupItems(items));
    if let Some(f) = failure {
        unit = unit.with_failure(f);
    }
    Ok(unit)
}

/// Reconciles a stale scheduled backup from its own backup set and ledger.
pub struct ScheduledBackupAdapter;

/// This run's proof: the sets naming it as creator `(id, workspace, tenant,
/// items)`, its unit ledger, and whether its context says it was skipped.
pub struct Proof<'a> {
    pub sets: &'a [(String, String, String, u64)],
    pub units: &'a BTreeMap<String, UnitOutcome>,
    pub skipped: Option<&'a str>,
}

/// The rule of OPERATIONS.md §8 for `backup.schedule.execute`. Pure.
pub fn reconcile_from(run: &Run, proof: &Proof<'_>) -> AdapterResult {
    match proof.sets {
        [] => match proof.skipped {
            Some(code) => AdapterResult::new(
                Verdict::Blocked,
                "backup_schedule_skipped",
                format!("the slot was skipped before any work ({code})"),
            ),
            None => AdapterResult::stale_no_proof("This scheduled backup"),
        },
        [(id, ws, tenant, _)] if ws != &run.workspace_id || Some(tenant) != run.tenant_id.as_ref() => {
            AdapterResult::new(
                Verdict::Failed,
                "proof_wrong_scope",
                format!("backup set {id} belongs to another tenant"),
            )
        }
        [(id, _, _, items)] => {
            let ok = proof
                .units
                .values()
                .filter(|o| **o == UnitOutcome::Succeeded)
                .count() as u64;
            let failed = proof.units.len() as u64 - ok;
            let artifact = json!({"kind": "backup_set", "id": id, "items": items});
            let (verdict, code, line) = match run.summary_counts.total {
                Some(p) if ok == p && failed == 0 => (
                    Verdict::Succeeded,
                    "backup_set_complete",
                    format!("all {p} policy types were captured ({items} policies)"),
                ),
                _ if *items > 0 => (
                    Verdict::PartiallySucceeded,
                    "backup_set_incomplete",
                    format!("{ok} policy types captured, {failed} failed, {items} policies in the set"),
                ),
                _ => (
                    Verdict::Failed,
                    "backup_set_empty",
                    "the run's backup set holds no policy".to_owned(),
                ),
            };
            AdapterResult::new(verdict, code, line)
                .with_artifact(artifact)
                .with_units_succeeded(ok)
        }
        more => AdapterResult::new(
            Verdict::Failed,
            "proof_ambiguous",
            format!(
                "{} backup sets name this run; none can be chosen safely",
                more.len()
            ),
        ),
    }
}

#[async_trait]
impl opsledger_engine::ReconciliationAdapter for ScheduledBackupAdapter {
    fn name(&self) -> &'static str {
        "backup_schedule_execute"
    }

    async fn reconcile(&self, run: &Run, proof: &ProofReader) -> Result<AdapterResult, StoreError> {
        let sets = proof.backup_sets_created_by(&run.id).await?;
        let units = proof.recorded_units(&run.id).await?;
        let skipped = run
            .context
            .pointer("/backup_schedule/skipped")
            .and_then(Value::as_str);
        Ok(reconcile_from(
            run,
            &Proof {
                sets: &sets,
                units: &units,
                skipped,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(total: Option<u64>) -> Run {
        Run {
            id: "r".into(),
            workspace_id: "w".into(),
            tenant_id: Some("t".into()),
            parent_id: None,
            run_type: opsledger_core::RunType::BackupScheduleExecute,
            status: opsledger_core::RunStatus::Running,
            outcome: Outcome::Pending,
            summary_counts: opsledger_core::SummaryCounts {
                total,
                ..Default::default()
            },
            phases: None,
            context: json!({}),
            failures: Vec::new(),
            initiator: "schedule:s".into(),
            created_at: 0,
            started_at: None,
            heartbeat_at: None,
            completed_at: None,
        }
    }

    fn units(ok: usize, failed: usize) -> BTreeMap<String, UnitOutcome> {
        (0..ok)
            .map(|i| (format!("ok{i}"), UnitOutcome::Succeeded))
            .chain((0..failed).map(|i| (format!("bad{i}"), UnitOutcome::Failed)))
            .collect()
    }

    #[test]
    fn only_the_runs_own_set_is_proof() {
        let own = [("s".to_owned(), "w".to_owned(), "t".to_owned(), 10)];
        let verdict =
            |sets: &[(String, String, String, u64)], u: &BTreeMap<String, UnitOutcome>, skipped, total| {
                reconcile_from(
                    &run(total),
                    &Proof {
                        sets,
                        units: u,
                        skipped,
                    },
                )
                .verdict
            };
        assert_eq!(verdict(&own, &units(3, 0), None, Some(3)), Verdict::Succeeded);
        assert_eq!(
            verdict(&own, &units(2, 1), None, Some(3)),
            Verdict::PartiallySucceeded
        );
        assert_eq!(
            verdict(&own, &units(2, 0), None, Some(3)),
            Verdict::PartiallySucceeded
        );
        assert_eq!(
            verdict(&[], &units(0, 0), Some("schedule_disabled"), None),
            Verdict::Blocked
        );
        assert_eq!(verdict(&[], &units(3, 0), None, Some(3)), Verdict::Failed);
        let other = [("s".to_owned(), "w".to_owned(), "other".to_owned(), 10)];
        assert_eq!(verdict(&other, &units(3, 0), None, Some(3)), Verdict::Failed);
        let two = [own[0].clone(), own[0].clone()];
        assert_eq!(verdict(&two, &units(3, 0), None, Some(3)), Verdict::Failed);
        let empty = [("s".to_owned(), "w".to_owned(), "t".to_owned(), 0)];
        assert_eq!(verdict(&empty, &units(0, 3), None, Some(3)), Verdict::Failed);
    }

    #[test]
    fn capture_outcomes() {
        assert_eq!(capture_outcome(0, 10), Outcome::Succeeded);
        assert_eq!(capture_outcome(1, 10), Outcome::PartiallySucceeded);
        assert_eq!(capture_outcome(3, 0), Outcome::Failed);
        assert_eq!(
            capture_outcome(0, 0),
            Outcome::Succeeded,
            "zero types: a truthful empty capture"
        );
    }
}

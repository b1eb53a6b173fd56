//! How runs close early (OPERATIONS.md §3, §8), on both databases, through
//! the real writer path and the real adapters: an admin's force-close never
//! fabricates success, and every completed run with a `total` has counts
//! that explain its outcome (`succeeded + failed + skipped == processed ==
//! total`), the units it never recorded counted in the closing transaction.

use opsledger_core::closing::NOT_ATTEMPTED;
use opsledger_core::inventory::{CoverageStatus, TypeCoverage};
use opsledger_core::{Outcome, Run, RunType, SummaryCounts, UnitOutcome};
use opsledger_engine::reconciler::reconcile_run;
use opsledger_engine::{ForceCloseError, Registry, force_close};
use opsledger_providers::ProviderSettings;
use opsledger_store::artifacts::UnitArtifact;
use opsledger_store::backups::BackupItem;
use opsledger_store::inventory::ItemSnapshot;
use opsledger_store::jobs::JobEnd;
use opsledger_store::testing::lease;
use opsledger_store::{Completion, ContextPatch, NewRun, Store, UnitRecord, both_backends, raw_on_pool};
use serde_json::json;

fn registry() -> Registry {
    opsledger_families::registry(ProviderSettings::default())
}

async fn scope(store: &Store) -> (String, String) {
    let ws = store.create_workspace("ws").await.unwrap();
    let t = store
        .create_tenant(&ws.id, "contoso", "demo:healthy")
        .await
        .unwrap();
    (ws.id, t.id)
}

async fn start(store: &Store, ws: &str, tenant: &str, t: RunType) -> String {
    let new = NewRun::on_tenant(ws, tenant, t, "test", json!({}));
    store.create_run(new).await.unwrap().into_run().id
}

async fn run(store: &Store, id: &str) -> Run {
    store.get_run(id).await.unwrap().unwrap()
}

/// (total, processed, succeeded, failed, skipped)
type Counts = (Option<u64>, Option<u64>, Option<u64>, Option<u64>, Option<u64>);

fn counts(run: &Run) -> Counts {
    let c: &SummaryCounts = &run.summary_counts;
    (c.total, c.processed, c.succeeded, c.failed, c.skipped)
}

fn not_attempted(run: &Run) -> Vec<&str> {
    run.failures
        .iter()
        .filter(|f| f.code == NOT_ATTEMPTED)
        .map(|f| f.message.as_str())
        .collect()
}

/// A running backup of `total` policies whose first `done` units were
/// captured into its backup set (the worker then stalled).
async fn backup_in_progress(store: &Store, ws: &str, tenant: &str, total: usize, done: usize) -> String {
    let id = start(store, ws, tenant, RunType::BackupSetAddPolicies).await;
    let parent = store.claim_jobs("w", 1, 60_000).await.unwrap().pop().unwrap();
    let parent_run = lease(store, &parent.fence, &id).await;
    parent_run.backup_set("Backup", None).await.unwrap();
    let keys: Vec<String> = (0..total)
        .map(|i| format!("deviceConfigurations/p{i:04}"))
        .collect();
    parent_run.enqueue_units(&keys, 3).await.unwrap();
    assert!(store.complete_job(&parent.fence).await.unwrap());
    let units = store.claim_jobs("w", done as u32, 60_000).await.unwrap();
    assert_eq!(units.len(), done);
    for job in units {
        let item = BackupItem {
            policy_type: "deviceConfigurations".into(),
            external_id: job.unit_key.clone(),
            display_name: job.unit_key.clone(),
            payload: json!({"id": job.unit_key}),
            refs: json!({}),
            content_sha256: "0".repeat(64),
        };
        let unit = UnitRecord::new(job.unit_key.clone(), UnitOutcome::Succeeded)
            .with_artifact(UnitArtifact::BackupItem(item));
        store
            .finish_unit_job(&job.fence, &id, unit, JobEnd::Completed)
            .await
            .unwrap();
    }
    id
}

both_backends!(force_close_never_fabricates_success, |store: Store| async move {
    let (ws, tenant) = scope(&store).await;
    // The case: a backup at 36 of 138 units.
    let id = backup_in_progress(&store, &ws, &tenant, 138, 36).await;
    let seen = run(&store, &id).await;
    let reg = registry();
    let refuse = async |outcome| {
        force_close(&store, &reg, &seen, outcome, "looks done to me", "user:admin")
            .await
            .unwrap_err()
    };
    match refuse(Outcome::Succeeded).await {
        ForceCloseError::Refused(r) => {
            assert_eq!(r.code(), "no_proof_for_outcome");
            assert!(r.to_string().contains("partially_succeeded"), "{r}");
        }
        other => panic!("{other:?}"),
    }
    match refuse(Outcome::Blocked).await {
        ForceCloseError::Refused(r) => assert_eq!(r.code(), "units_already_recorded"),
        other => panic!("{other:?}"),
    }
    let untouched = run(&store, &id).await;
    assert_eq!(
        (untouched.status, counts(&untouched)),
        (seen.status, counts(&seen)),
        "a refused force-close changes nothing"
    );

    // The proof backs a partial success: allowed, and the 102 units never
    // captured are counted as failed, not attempted.
    let closed = force_close(
        &store,
        &reg,
        &seen,
        Outcome::PartiallySucceeded,
        "worker pool lost; keep what was captured",
        "user:admin",
    )
    .await
    .unwrap();
    assert_eq!(closed.outcome, Outcome::PartiallySucceeded);
    assert_eq!(
        counts(&closed),
        (Some(138), Some(138), Some(36), Some(102), Some(0))
    );
    assert_eq!(not_attempted(&closed).len(), 1);
    assert!(not_attempted(&closed)[0].starts_with("102 of 138 policies"));
    let rec = closed.reconciliation().unwrap();
    assert_eq!(rec["adapter"], "admin_force_close");
    assert_eq!(rec["by"], "user:admin");
    assert_eq!(rec["related_artifact"]["items"], 36);
    assert_eq!(closed.context["backup_set"]["items"], 36);
    assert_eq!(closed.context["backup_set"]["failed"], 102);

    // A completed run cannot be force-closed again.
    assert!(matches!(
        force_close(&store, &reg, &closed, Outcome::Failed, "x", "user:admin").await,
        Err(ForceCloseError::AlreadyCompleted(_))
    ));
});

both_backends!(
    force_close_succeeds_only_on_full_proof,
    |store: Store| async move {
        let (ws, tenant) = scope(&store).await;
        let reg = registry();
        // Every unit captured, the parent never completed (worker died).
        let id = backup_in_progress(&store, &ws, &tenant, 5, 5).await;
        let seen = run(&store, &id).await;
        assert!(!seen.is_completed());
        let closed = force_close(&store, &reg, &seen, Outcome::Succeeded, "verified", "user:a")
            .await
            .unwrap();
        assert_eq!(
            (closed.outcome, counts(&closed)),
            (Outcome::Succeeded, (Some(5), Some(5), Some(5), Some(0), Some(0)))
        );
        // A type without an adapter never has proof of success.
        let p = start(&store, &ws, &tenant, RunType::PolicySync).await;
        let seen = run(&store, &p).await;
        for o in [Outcome::Succeeded, Outcome::PartiallySucceeded] {
            match force_close(&store, &reg, &seen, o, "x", "user:a").await {
                Err(ForceCloseError::Refused(r)) => assert_eq!(r.code(), "no_proof_for_outcome"),
                other => panic!("{other:?}"),
            }
        }
        // Blocked while nothing was recorded is allowed; it carries no counts.
        let closed = force_close(&store, &reg, &seen, Outcome::Blocked, "offboarding", "user:a")
            .await
            .unwrap();
        assert_eq!(closed.outcome, Outcome::Blocked);
        assert_eq!(counts(&closed), (None, None, None, None, None));
        assert_eq!(closed.failures[0].code, "force_closed");
    }
);

both_backends!(
    force_close_failed_and_cancelled_explain_the_remainder,
    |store: Store| async move {
        let (ws, tenant) = scope(&store).await;
        let reg = registry();
        let id = backup_in_progress(&store, &ws, &tenant, 10, 4).await;
        let seen = run(&store, &id).await;
        let closed = force_close(&store, &reg, &seen, Outcome::Failed, "tenant gone", "user:a")
            .await
            .unwrap();
        assert_eq!(counts(&closed), (Some(10), Some(10), Some(4), Some(6), Some(0)));
        assert_eq!(not_attempted(&closed).len(), 1);

        let id = backup_in_progress(&store, &ws, &tenant, 10, 4).await;
        let seen = run(&store, &id).await;
        let closed = force_close(&store, &reg, &seen, Outcome::Cancelled, "not needed", "user:a")
            .await
            .unwrap();
        assert_eq!(counts(&closed), (Some(10), Some(10), Some(4), Some(0), Some(6)));
        assert!(
            not_attempted(&closed).is_empty(),
            "skipped units are not failures"
        );
    }
);

both_backends!(
    a_cancelled_fan_out_counts_its_remainder_as_skipped,
    |store: Store| async move {
        let (ws, tenant) = scope(&store).await;
        let id = backup_in_progress(&store, &ws, &tenant, 20, 7).await;
        let closed = store
            .complete_run(&id, Completion::new(Outcome::Cancelled))
            .await
            .unwrap();
        let closed = closed.run();
        assert_eq!(counts(closed), (Some(20), Some(20), Some(7), Some(0), Some(13)));
        assert_eq!(closed.context["backup_set"]["items"], 7);
    }
);

// The case: a reconciled inventory sync at 3 of 14 types.
both_backends!(
    a_reconciled_sync_counts_its_unattempted_types,
    |store: Store| async move {
        let (ws, tenant) = scope(&store).await;
        let id = start(&store, &ws, &tenant, RunType::InventorySync).await;
        let job = store.claim_jobs("dead", 1, 60_000).await.unwrap().pop().unwrap();
        let types: Vec<String> = opsledger_core::policy_types::POLICY_TYPES
            .iter()
            .take(14)
            .map(|t| t.key.to_owned())
            .collect();
        store
            .patch_context(
                &id,
                &[ContextPatch::new(["inventory", "attempted_types"], json!(types))],
            )
            .await
            .unwrap();
        store.init_total(&id, 14).await.unwrap();
        for t in &types[..3] {
            let items = vec![ItemSnapshot {
                external_id: format!("{t}-1"),
                display_name: "x".into(),
                payload: json!({}),
            }];
            let coverage = TypeCoverage {
                status: CoverageStatus::Covered,
                item_count: 1,
                failure_code: None,
                unreadable_count: 0,
                unreadable: Vec::new(),
            };
            let unit = UnitRecord {
                context_patch: Some(ContextPatch::new(
                    ["inventory", "coverage", t.as_str()],
                    serde_json::to_value(coverage).unwrap(),
                )),
                ..UnitRecord::new(t.as_str(), UnitOutcome::Succeeded)
            };
            let unit = unit.with_artifact(UnitArtifact::InventoryItems {
                policy_type: t.to_string(),
                items,
            });
            lease(&store, &job.fence, &id)
                .await
                .record_units(&[unit])
                .await
                .unwrap();
        }
        opsledger_store::testing::exhaust_jobs(&store, &id).await.unwrap();
        let seen = run(&store, &id).await;
        let d = reconcile_run(&store, &registry(), &seen, Some("system"))
            .await
            .unwrap();
        assert_eq!(d.applied, "applied");
        let closed = run(&store, &id).await;
        assert_eq!(closed.outcome, Outcome::PartiallySucceeded);
        assert_eq!(counts(&closed), (Some(14), Some(14), Some(3), Some(11), Some(0)));
        assert!(not_attempted(&closed)[0].starts_with("11 of 14 policy types"));
    }
);

both_backends!(
    runs_closed_before_total_carry_no_counts,
    |store: Store| async move {
        let (ws, tenant) = scope(&store).await;
        let id = start(&store, &ws, &tenant, RunType::InventorySync).await;
        let closed = store
            .complete_run(&id, Completion::new(Outcome::Cancelled))
            .await
            .unwrap();
        assert_eq!(counts(closed.run()), (None, None, None, None, None));
    }
);

both_backends!(
    the_schema_refuses_a_completed_run_whose_counts_do_not_add_up,
    |store: Store| async move {
        let (ws, tenant) = scope(&store).await;
        let id = start(&store, &ws, &tenant, RunType::BackupSetAddPolicies).await;
        store.claim_run(&id).await.unwrap();
        store.init_total(&id, 5).await.unwrap();
        // A hand-written close that forgets the remainder is refused by the
        // database itself, not only by the writer path.
        let refused = raw_on_pool!(&store, pool => {
            sqlx::query(
                "UPDATE operation_runs SET status = 'completed', outcome = 'failed', completed_at = 1, \
                 active_key = NULL WHERE id = $1",
            )
            .bind(&id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        });
        let e = refused.unwrap_err().to_string();
        assert!(e.contains("completed_counts_explain_outcome"), "{e}");
        // The same close with counts that add up is accepted.
        raw_on_pool!(&store, pool => {
            sqlx::query(
                "UPDATE operation_runs SET status = 'completed', outcome = 'failed', completed_at = 1, \
                 active_key = NULL, processed = 5, failed = 5 WHERE id = $1",
            )
            .bind(&id)
            .execute(pool)
            .await
            .unwrap()
            .rows_affected()
        });
    }
);

both_backends!(
    force_close_rechecks_inside_the_closing_transaction,
    |store: Store| async move {
        use opsledger_core::reconcile::{AdapterResult, Verdict};
        use opsledger_store::stale::{ForceClose, ForceCloseResult};
        let (ws, tenant) = scope(&store).await;
        // Seen with nothing recorded; a unit lands before the close.
        let id = start(&store, &ws, &tenant, RunType::InventorySync).await;
        store.claim_run(&id).await.unwrap();
        store.init_total(&id, 2).await.unwrap();
        let seen = run(&store, &id).await;
        store
            .record_unit(
                &id,
                UnitRecord::new("deviceConfigurations", UnitOutcome::Succeeded),
            )
            .await
            .unwrap();
        let blocked = ForceClose {
            outcome: Outcome::Blocked,
            reason: "x",
            by: "user:a",
            proof: None,
        };
        match store.apply_force_close(&seen, blocked).await.unwrap() {
            ForceCloseResult::Refused(r, _) => assert_eq!(r.code(), "units_already_recorded"),
            other => panic!("blocked after work must be refused: {other:?}"),
        }
        // A proof read against an older state of the run is not applied.
        let proof = AdapterResult::new(Verdict::Succeeded, "x_proof", "all done");
        let seen = run(&store, &id).await;
        store
            .record_unit(&id, UnitRecord::new("namedLocations", UnitOutcome::Succeeded))
            .await
            .unwrap();
        let succeeded = ForceClose {
            outcome: Outcome::Succeeded,
            reason: "x",
            by: "user:a",
            proof: Some(&proof),
        };
        match store.apply_force_close(&seen, succeeded).await.unwrap() {
            ForceCloseResult::Moved(r) => assert!(!r.is_completed()),
            other => panic!("a proof of another state must not close the run: {other:?}"),
        }
    }
);

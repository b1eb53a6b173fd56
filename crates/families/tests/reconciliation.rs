//! Reconciliation matrix (OPERATIONS.md §8, the seeds' acceptance
//! scenarios), on both databases, with proof produced through the real
//! writer path and decisions applied through the real closing write.

use opsledger_core::inventory::{CoverageStatus, TypeCoverage};
use opsledger_core::{Outcome, Run, RunType, UnitOutcome};
use opsledger_engine::reconciler::reconcile_run;
use opsledger_engine::{Registry, SweepConfig};
use opsledger_providers::ProviderSettings;
use opsledger_store::inventory::{ItemScope, ItemSnapshot};
use opsledger_store::jobs::Fence;
use opsledger_store::{ContextPatch, NewRun, Store, UnitRecord, both_backends};
use serde_json::json;

fn registry() -> Registry {
    opsledger_families::registry(ProviderSettings::default())
}

struct Fixture {
    ws: String,
    tenant: String,
    other_tenant: String,
}

async fn fixture(store: &Store) -> Fixture {
    let ws = store.create_workspace("ws").await.unwrap();
    let t = store
        .create_tenant(&ws.id, "contoso", "demo:healthy")
        .await
        .unwrap();
    let o = store
        .create_tenant(&ws.id, "fabrikam", "demo:healthy")
        .await
        .unwrap();
    Fixture {
        ws: ws.id,
        tenant: t.id,
        other_tenant: o.id,
    }
}

async fn start(store: &Store, f: &Fixture, t: RunType) -> String {
    let new = NewRun::on_tenant(&f.ws, &f.tenant, t, "test", json!({}));
    store.create_run(new).await.unwrap().into_run().id
}

/// A running inventory sync that attempted `types`, holding its job's lease.
async fn sync_in_progress(store: &Store, f: &Fixture, types: &[&str]) -> (String, Fence) {
    let id = start(store, f, RunType::InventorySync).await;
    let job = store
        .claim_jobs("w", 10, 60_000)
        .await
        .unwrap()
        .into_iter()
        .find(|j| j.run_id == id)
        .unwrap();
    store
        .patch_context(
            &id,
            &[ContextPatch::new(["inventory", "attempted_types"], json!(types))],
        )
        .await
        .unwrap();
    store.init_total(&id, types.len() as u64).await.unwrap();
    (id, job.fence)
}

fn coverage_unit(t: &str, status: CoverageStatus, items: u64) -> UnitRecord {
    let outcome = if status == CoverageStatus::Covered {
        UnitOutcome::Succeeded
    } else {
        UnitOutcome::Failed
    };
    let c = TypeCoverage {
        status,
        item_count: items,
        failure_code: None,
        unreadable_count: 0,
        unreadable: Vec::new(),
    };
    UnitRecord {
        key: t.into(),
        outcome,
        failure: None,
        context_patch: Some(ContextPatch::new(
            ["inventory", "coverage", t],
            serde_json::to_value(c).unwrap(),
        )),
        artifact: None,
    }
}

async fn covered(store: &Store, run: &str, fence: &Fence, ws: &str, tenant: &str, t: &str, n: usize) {
    let items: Vec<ItemSnapshot> = (0..n)
        .map(|i| ItemSnapshot {
            external_id: format!("{t}-{i}"),
            display_name: format!("{t} {i}"),
            payload: json!({"i": i}),
        })
        .collect();
    let scope = ItemScope {
        workspace_id: ws,
        tenant_id: tenant,
        policy_type: t,
    };
    store
        .record_inventory_unit(
            Some(fence),
            run,
            scope,
            &items,
            coverage_unit(t, CoverageStatus::Covered, n as u64),
        )
        .await
        .unwrap();
}

/// The run's workers died on every attempt; then its proof decides.
async fn reconcile(store: &Store, id: &str) -> Run {
    opsledger_store::testing::exhaust_jobs(store, id).await.unwrap();
    let run = store.get_run(id).await.unwrap().unwrap();
    let d = reconcile_run(store, &registry(), &run, Some("system"))
        .await
        .unwrap();
    assert_eq!(d.applied, "applied", "{d:?}");
    store.get_run(id).await.unwrap().unwrap()
}

fn reason(run: &Run) -> &str {
    run.reconciliation().unwrap()["reason_code"].as_str().unwrap()
}

both_backends!(full_coverage_reconciles_to_succeeded, |store: Store| async move {
    let f = fixture(&store).await;
    let (id, fence) = sync_in_progress(&store, &f, &["a", "b"]).await;
    covered(&store, &id, &fence, &f.ws, &f.tenant, "a", 3).await;
    covered(&store, &id, &fence, &f.ws, &f.tenant, "b", 2).await;
    let run = reconcile(&store, &id).await;
    assert_eq!(
        (run.outcome, reason(&run)),
        (Outcome::Succeeded, "inventory_fully_covered")
    );
    let rec = run.reconciliation().unwrap();
    assert_eq!(rec["adapter"], "inventory_sync");
    assert_eq!(rec["previous_status"], "running");
    assert_eq!(rec["related_artifact"]["count"], 5);
    assert!(rec["reconciled_at"].as_str().is_some());
});

both_backends!(
    mixed_coverage_reconciles_to_partially_succeeded,
    |store: Store| async move {
        let f = fixture(&store).await;
        let (id, fence) = sync_in_progress(&store, &f, &["a", "b", "c"]).await;
        covered(&store, &id, &fence, &f.ws, &f.tenant, "a", 3).await;
        opsledger_store::testing::lease(&store, &fence, &id)
            .await
            .record_units(&[coverage_unit("b", CoverageStatus::Failed, 0)])
            .await
            .unwrap();
        // "c" never got coverage: the worker died before it.
        let run = reconcile(&store, &id).await;
        assert_eq!(
            (run.outcome, reason(&run)),
            (Outcome::PartiallySucceeded, "inventory_partially_covered")
        );
    }
);

both_backends!(
    only_blocked_reasons_reconcile_to_blocked,
    |store: Store| async move {
        let f = fixture(&store).await;
        let (id, fence) = sync_in_progress(&store, &f, &["a", "b"]).await;
        let units = [
            coverage_unit("a", CoverageStatus::Blocked, 0),
            coverage_unit("b", CoverageStatus::Skipped, 0),
        ];
        opsledger_store::testing::lease(&store, &fence, &id)
            .await
            .record_units(&units)
            .await
            .unwrap();
        let run = reconcile(&store, &id).await;
        assert_eq!(
            (run.outcome, reason(&run)),
            (Outcome::Blocked, "inventory_blocked")
        );
    }
);

both_backends!(no_coverage_never_succeeds, |store: Store| async move {
    let f = fixture(&store).await;
    let (id, _) = sync_in_progress(&store, &f, &["a", "b"]).await;
    let run = reconcile(&store, &id).await;
    assert_eq!(
        (run.outcome, reason(&run)),
        (Outcome::Failed, "inventory_no_coverage")
    );
    // Never even started: no attempted types, no proof.
    let queued = start(&store, &f, RunType::InventorySync).await;
    let run = reconcile(&store, &queued).await;
    assert_eq!((run.outcome, reason(&run)), (Outcome::Failed, "stale_no_proof"));
    assert_eq!(run.reconciliation().unwrap()["previous_status"], "queued");
});

both_backends!(wrong_scope_proof_never_succeeds, |store: Store| async move {
    let f = fixture(&store).await;
    let (id, fence) = sync_in_progress(&store, &f, &["a"]).await;
    covered(&store, &id, &fence, &f.ws, &f.tenant, "a", 2).await;
    // Items of another tenant claim this run as their last sighting.
    let scope = ItemScope {
        workspace_id: &f.ws,
        tenant_id: &f.other_tenant,
        policy_type: "a",
    };
    let foreign = [ItemSnapshot {
        external_id: "x".into(),
        display_name: "x".into(),
        payload: json!({}),
    }];
    store
        .record_inventory_unit(
            None,
            &id,
            scope,
            &foreign,
            UnitRecord::new("a", UnitOutcome::Succeeded),
        )
        .await
        .unwrap();
    let run = reconcile(&store, &id).await;
    assert_eq!(
        (run.outcome, reason(&run)),
        (Outcome::Failed, "proof_wrong_scope")
    );
});

both_backends!(ambiguous_proof_never_succeeds, |store: Store| async move {
    let f = fixture(&store).await;
    let (id, fence) = sync_in_progress(&store, &f, &["a", "b"]).await;
    covered(&store, &id, &fence, &f.ws, &f.tenant, "a", 2).await;
    // Coverage that claims 4 items of "b" while no item names this run.
    opsledger_store::testing::lease(&store, &fence, &id)
        .await
        .record_units(&[coverage_unit("b", CoverageStatus::Covered, 4)])
        .await
        .unwrap();
    let run = reconcile(&store, &id).await;
    assert_eq!(
        (run.outcome, reason(&run)),
        (Outcome::PartiallySucceeded, "inventory_proof_ambiguous")
    );
});

both_backends!(
    stale_policy_sync_fails_closed_despite_inventory,
    |store: Store| async move {
        let f = fixture(&store).await;
        // The tenant has a fully covered inventory…
        let (sync, fence) = sync_in_progress(&store, &f, &["a"]).await;
        covered(&store, &sync, &fence, &f.ws, &f.tenant, "a", 3).await;
        assert_eq!(reconcile(&store, &sync).await.outcome, Outcome::Succeeded);
        // …which is no proof for a stale policy.sync of the same tenant.
        let id = start(&store, &f, RunType::PolicySync).await;
        store.claim_jobs("w", 10, 60_000).await.unwrap();
        let run = reconcile(&store, &id).await;
        assert_eq!((run.outcome, reason(&run)), (Outcome::Failed, "stale_no_proof"));
        assert_eq!(run.reconciliation().unwrap()["adapter"], "generic_fail_closed");
    }
);

both_backends!(
    reconciling_a_completed_run_changes_nothing,
    |store: Store| async move {
        let f = fixture(&store).await;
        let (id, fence) = sync_in_progress(&store, &f, &["a"]).await;
        covered(&store, &id, &fence, &f.ws, &f.tenant, "a", 1).await;
        let done = reconcile(&store, &id).await;
        let d = reconcile_run(&store, &registry(), &done, Some("system"))
            .await
            .unwrap();
        assert_eq!(d.applied, "already_completed");
        let after = store.get_run(&id).await.unwrap().unwrap();
        assert_eq!(
            (after.context, after.completed_at, after.failures),
            (done.context, done.completed_at, done.failures)
        );
    }
);

both_backends!(
    the_sweep_finds_and_reconciles_a_dead_sync,
    |store: Store| async move {
        // Leases and heartbeats age by the store's clock, moved rather than slept.
        let clock = opsledger_store::clock::ManualClock::new();
        let store = store.with_clock(std::sync::Arc::new(clock.clone()));
        let f = fixture(&store).await;
        let id = start(&store, &f, RunType::InventorySync).await;
        // The worker claimed the job with a short lease and died after two types.
        let job = store.claim_jobs("dead", 1, 50).await.unwrap().pop().unwrap();
        store
            .patch_context(
                &id,
                &[ContextPatch::new(
                    ["inventory", "attempted_types"],
                    json!(["a", "b", "c"]),
                )],
            )
            .await
            .unwrap();
        store.init_total(&id, 3).await.unwrap();
        covered(&store, &id, &job.fence, &f.ws, &f.tenant, "a", 2).await;
        covered(&store, &id, &job.fence, &f.ws, &f.tenant, "b", 1).await;
        clock.advance(80);
        let config = SweepConfig {
            heartbeat_timeout_ms: Some(60),
            queue_timeout_ms: None,
            batch: 100,
            job_retention_ms: None,
        };
        // First pass: the lease is rescued for another attempt; the run is not stale.
        let r = opsledger_engine::sweep_once(&store, &registry(), &config)
            .await
            .unwrap();
        assert_eq!((r.rescued_for_retry, r.decisions.len()), (1, 0));
        // Every attempt dies the same way.
        for _ in 0..2 {
            store.claim_jobs("dead", 1, 1).await.unwrap().pop().unwrap();
            clock.advance(5);
            store.rescue_expired_jobs(10).await.unwrap();
        }
        clock.advance(80);
        let r = opsledger_engine::sweep_once(&store, &registry(), &config)
            .await
            .unwrap();
        assert_eq!(r.decisions.len(), 1, "{r:?}");
        let run = store.get_run(&id).await.unwrap().unwrap();
        assert_eq!(
            (run.outcome, reason(&run)),
            (Outcome::PartiallySucceeded, "inventory_partially_covered")
        );
        // The two recorded types are not counted again; the third, never
        // attempted, is counted by the closing write as failed.
        let c = run.summary_counts;
        assert_eq!((c.processed, c.succeeded, c.failed), (Some(3), Some(2), Some(1)));
        assert!(run.failures.iter().any(|f| f.code == "not_attempted"));
    }
);

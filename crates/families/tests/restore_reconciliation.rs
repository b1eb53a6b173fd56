//! The reconciliation matrix of `backup_set.restore` (OPERATIONS.md §8) on
//! both databases: a stale restore is closed from its **own** per-item
//! results on its target, written through the real writer path; another
//! run's results, or a complete backup set of the tenant, are never proof.

use opsledger_core::{Outcome, Run, RunType, UnitOutcome};
use opsledger_engine::reconciler::reconcile_run;
use opsledger_engine::{Registry, Runner, RunnerConfig};
use opsledger_providers::ProviderSettings;
use opsledger_store::artifacts::UnitArtifact;
use opsledger_store::jobs::Fence;
use opsledger_store::restores::{RestoreOutcome, RestoreResult};
use opsledger_store::{NewRun, Store, UnitRecord, both_backends};
use serde_json::json;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn registry() -> Registry {
    opsledger_families::registry(ProviderSettings::default())
}

async fn run_to_end(store: &Store, ws: &str, tenant: &str, t: RunType) -> Run {
    let new = NewRun::on_tenant(ws, tenant, t, "test", json!({}));
    let id = store.create_run(new).await.unwrap().into_run().id;
    let config = RunnerConfig {
        concurrency: 8,
        poll_interval: Duration::from_millis(10),
        ..Default::default()
    };
    let shutdown = CancellationToken::new();
    let runner = tokio::spawn(Runner::new(store.clone(), registry(), config).run(shutdown.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let done = loop {
        let r = store.get_run(&id).await.unwrap().unwrap();
        if r.is_completed() {
            break r;
        }
        assert!(tokio::time::Instant::now() < deadline, "{r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    shutdown.cancel();
    runner.await.unwrap();
    done
}

struct Fixture {
    ws: String,
    target: String,
    set: String,
    items: Vec<String>,
}

/// A complete backup set of a healthy demo tenant, and a second tenant to restore into.
async fn fixture(store: &Store) -> Fixture {
    let ws = store.create_workspace("ws").await.unwrap().id;
    let source = store
        .create_tenant(&ws, "contoso", "demo:healthy")
        .await
        .unwrap()
        .id;
    let target = store
        .create_tenant(&ws, "fabrikam", "demo:healthy")
        .await
        .unwrap()
        .id;
    run_to_end(store, &ws, &source, RunType::InventorySync).await;
    let backup = run_to_end(store, &ws, &source, RunType::BackupSetAddPolicies).await;
    assert_eq!(backup.outcome, Outcome::Succeeded);
    let set = backup.context["backup_set"]["id"].as_str().unwrap().to_owned();
    let items = store
        .backup_item_heads(&set)
        .await
        .unwrap()
        .into_iter()
        .take(4)
        .map(|i| i.id)
        .collect();
    Fixture {
        ws,
        target,
        set,
        items,
    }
}

/// A restore of the fixture's four items into its target, planned, whose
/// worker holds the parent's lease (and is about to die).
async fn restore_in_progress(store: &Store, f: &Fixture) -> (String, Fence) {
    let params = json!({"backup_set_id": f.set, "item_ids": f.items});
    let new = NewRun::on_tenant(&f.ws, &f.target, RunType::BackupSetRestore, "test", params);
    let id = store.create_run(new).await.unwrap().into_run().id;
    let job = store
        .claim_jobs("w", 10, 60_000)
        .await
        .unwrap()
        .into_iter()
        .find(|j| j.run_id == id)
        .unwrap();
    store.init_total(&id, f.items.len() as u64).await.unwrap();
    (id, job.fence)
}

fn result(f: &Fixture, item: &str, outcome: RestoreOutcome) -> UnitRecord {
    let unit = if outcome == RestoreOutcome::Failed {
        UnitOutcome::Failed
    } else {
        UnitOutcome::Succeeded
    };
    let mut r = UnitRecord::new(format!("item/{item}"), unit);
    r.artifact = Some(UnitArtifact::RestoreResult(RestoreResult {
        backup_set_id: f.set.clone(),
        backup_item_id: Some(item.to_owned()),
        outcome,
        dry_run: false,
        target_id: Some(format!("target-{item}")),
        detail: json!({}),
    }));
    r
}

async fn record(store: &Store, fence: &Fence, id: &str, units: &[UnitRecord]) {
    opsledger_store::testing::lease(store, fence, id)
        .await
        .record_units(units)
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

both_backends!(
    every_item_restored_reconciles_to_succeeded,
    |store: Store| async move {
        let f = fixture(&store).await;
        let (id, fence) = restore_in_progress(&store, &f).await;
        let units: Vec<UnitRecord> = f
            .items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let o = [
                    RestoreOutcome::Created,
                    RestoreOutcome::Unchanged,
                    RestoreOutcome::Updated,
                ][i % 3];
                result(&f, item, o)
            })
            .collect();
        record(&store, &fence, &id, &units).await;
        let run = reconcile(&store, &id).await;
        assert_eq!(
            (run.outcome, reason(&run)),
            (Outcome::Succeeded, "restore_complete")
        );
        let rec = run.reconciliation().unwrap();
        assert_eq!(rec["adapter"], "backup_set_restore");
        assert_eq!(rec["related_artifact"]["id"], f.set.as_str());
        let c = run.summary_counts;
        assert_eq!((c.processed, c.succeeded, c.failed), (Some(4), Some(4), Some(0)));
        // What the units wrote is counted once: two created, one updated.
        assert_eq!((c.created, c.updated), (Some(2), Some(1)));
    }
);

both_backends!(
    some_items_failed_or_missing_reconcile_to_partially_succeeded,
    |store: Store| async move {
        let f = fixture(&store).await;
        let (id, fence) = restore_in_progress(&store, &f).await;
        record(
            &store,
            &fence,
            &id,
            &[
                result(&f, &f.items[0], RestoreOutcome::Created),
                result(&f, &f.items[1], RestoreOutcome::Failed),
            ],
        )
        .await;
        // Items 2 and 3 never ran: the worker died first.
        let run = reconcile(&store, &id).await;
        assert_eq!(
            (run.outcome, reason(&run)),
            (Outcome::PartiallySucceeded, "restore_incomplete")
        );
        let c = run.summary_counts;
        assert_eq!((c.processed, c.succeeded, c.failed), (Some(4), Some(1), Some(3)));
        assert!(run.failures.iter().any(|f| f.code == "not_attempted"));
    }
);

both_backends!(
    no_result_of_its_own_never_succeeds_whatever_else_exists,
    |store: Store| async move {
        let f = fixture(&store).await;
        // A restore of the same set into the same target that completed
        // every item, and the tenant's complete backup set: neither is
        // proof for another restore.
        let (done, fence) = restore_in_progress(&store, &f).await;
        let units: Vec<UnitRecord> = f
            .items
            .iter()
            .map(|i| result(&f, i, RestoreOutcome::Created))
            .collect();
        record(&store, &fence, &done, &units).await;
        assert_eq!(reconcile(&store, &done).await.outcome, Outcome::Succeeded);
        let (id, _) = restore_in_progress(&store, &f).await;
        let run = reconcile(&store, &id).await;
        assert_eq!((run.outcome, reason(&run)), (Outcome::Failed, "stale_no_proof"));

        // Every item failed: nothing restored, never succeeded.
        let (id, fence) = restore_in_progress(&store, &f).await;
        let units: Vec<UnitRecord> = f
            .items
            .iter()
            .map(|i| result(&f, i, RestoreOutcome::Failed))
            .collect();
        record(&store, &fence, &id, &units).await;
        let run = reconcile(&store, &id).await;
        assert_eq!(
            (run.outcome, reason(&run)),
            (Outcome::Failed, "restore_nothing_restored")
        );
        // Queued and never picked up: no proof.
        let params = json!({"backup_set_id": f.set});
        let new = NewRun::on_tenant(&f.ws, &f.target, RunType::BackupSetRestore, "test", params);
        let queued = store.create_run(new).await.unwrap().into_run().id;
        let run = reconcile(&store, &queued).await;
        assert_eq!((run.outcome, reason(&run)), (Outcome::Failed, "stale_no_proof"));
    }
);

both_backends!(
    a_result_names_its_run_target_and_a_set_of_its_workspace,
    |store: Store| async move {
        let f = fixture(&store).await;
        let (id, fence) = restore_in_progress(&store, &f).await;
        // A set of another workspace cannot be named by a result of this run.
        let other_ws = store.create_workspace("other").await.unwrap().id;
        let other_tenant = store
            .create_tenant(&other_ws, "x", "demo:healthy")
            .await
            .unwrap()
            .id;
        run_to_end(&store, &other_ws, &other_tenant, RunType::InventorySync).await;
        let backup = run_to_end(&store, &other_ws, &other_tenant, RunType::BackupSetAddPolicies).await;
        let mut foreign = result(&f, &f.items[0], RestoreOutcome::Created);
        if let Some(UnitArtifact::RestoreResult(r)) = &mut foreign.artifact {
            r.backup_set_id = backup.context["backup_set"]["id"].as_str().unwrap().to_owned();
        }
        let refused = opsledger_store::testing::lease(&store, &fence, &id)
            .await
            .record_units(&[foreign])
            .await;
        assert!(refused.is_err(), "{refused:?}");
        // Nothing of it landed: the unit is not counted.
        assert_eq!(
            store
                .get_run(&id)
                .await
                .unwrap()
                .unwrap()
                .summary_counts
                .processed,
            Some(0)
        );
        // Every stored result names this run's own tenant as its target.
        record(
            &store,
            &fence,
            &id,
            &[result(&f, &f.items[0], RestoreOutcome::Created)],
        )
        .await;
        let stored = store.restore_results_of(&id).await.unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(
            (
                stored[0].target_tenant_id.as_str(),
                stored[0].workspace_id.as_str()
            ),
            (f.target.as_str(), f.ws.as_str())
        );
    }
);

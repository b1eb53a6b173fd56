//! Regression (hostile review): policy.sync (deduplicated per policy, so it runs beside an
//! inventory.sync of the same tenant) re-stamps an inventory item's
//! `last_seen_operation_run_id`, taking it out of the inventory sync's proof.

use opsledger_core::inventory::{CoverageStatus, TypeCoverage};
use opsledger_core::{Outcome, RunType, UnitOutcome};
use opsledger_engine::reconciler::reconcile_run;
use opsledger_providers::ProviderSettings;
use opsledger_store::artifacts::UnitArtifact;
use opsledger_store::inventory::{ItemScope, ItemSnapshot};
use opsledger_store::{Completion, ContextPatch, NewRun, Store, UnitRecord, both_backends, testing};
use serde_json::json;

const T: &str = "deviceConfigurations";

fn item(i: usize) -> ItemSnapshot {
    ItemSnapshot {
        external_id: format!("policy-{i}"),
        display_name: format!("policy {i}"),
        payload: json!({"i": i}),
    }
}

both_backends!(
    a_policy_sync_beside_an_inventory_sync_does_not_undo_its_proof,
    |store: Store| async move {
        let ws = store.create_workspace("ws").await.unwrap().id;
        let tenant = store
            .create_tenant(&ws, "contoso", "demo:healthy")
            .await
            .unwrap()
            .id;
        // An inventory sync covers its one type (2 items), then its worker dies.
        let sync = NewRun::on_tenant(&ws, &tenant, RunType::InventorySync, "u", json!({}));
        let sync = store.create_run(sync).await.unwrap().into_run().id;
        let job = store.claim_jobs("w", 10, 60_000).await.unwrap().pop().unwrap();
        assert_eq!(job.run_id, sync);
        store
            .patch_context(
                &sync,
                &[ContextPatch::new(["inventory", "attempted_types"], json!([T]))],
            )
            .await
            .unwrap();
        store.init_total(&sync, 1).await.unwrap();
        let coverage = TypeCoverage {
            status: CoverageStatus::Covered,
            item_count: 2,
            failure_code: None,
            unreadable_count: 0,
            unreadable: Vec::new(),
        };
        let unit = UnitRecord {
            key: T.into(),
            outcome: UnitOutcome::Succeeded,
            failure: None,
            context_patch: Some(ContextPatch::new(
                ["inventory", "coverage", T],
                serde_json::to_value(coverage).unwrap(),
            )),
            artifact: None,
        };
        let scope = ItemScope {
            workspace_id: &ws,
            tenant_id: &tenant,
            policy_type: T,
        };
        store
            .record_inventory_unit(Some(&job.fence), &sync, scope, &[item(0), item(1)], unit)
            .await
            .unwrap();
        // Meanwhile an operator re-reads one of those policies: another key, so it runs.
        let params = opsledger_core::params::validate(
            RunType::PolicySync,
            &json!({"policy_id": format!("{T}/policy-0")}),
        )
        .unwrap();
        let ps = NewRun::on_tenant(&ws, &tenant, RunType::PolicySync, "u", params);
        let ps = store.create_run(ps).await.unwrap().into_run().id;
        let pjob = store.claim_jobs("w", 10, 60_000).await.unwrap().pop().unwrap();
        assert_eq!(pjob.run_id, ps);
        let lease = testing::lease(&store, &pjob.fence, &ps).await;
        // What policy_sync.rs commits with its close.
        lease
            .complete(
                Completion::new(Outcome::Succeeded).with_artifact(UnitArtifact::InventoryItemReread {
                    policy_type: T.into(),
                    item: item(0),
                }),
            )
            .await
            .unwrap();
        // The dead inventory sync is reconciled from its proof.
        testing::exhaust_jobs(&store, &sync).await.unwrap();
        let run = store.get_run(&sync).await.unwrap().unwrap();
        let registry = opsledger_families::registry(ProviderSettings::default());
        let d = reconcile_run(&store, &registry, &run, Some("system"))
            .await
            .unwrap();
        let run = store.get_run(&sync).await.unwrap().unwrap();
        assert_eq!(
            run.outcome,
            Outcome::Succeeded,
            "the sync covered every type it attempted, yet: {:?}",
            d.result
        );
    }
);

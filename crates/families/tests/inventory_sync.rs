//! `inventory.sync` end to end through the runner on both databases, one
//! test per demo profile.

use opsledger_core::inventory::CoverageStatus;
use opsledger_core::{Outcome, Run, RunStatus, RunType};
use opsledger_engine::{Handler, RunContext, Runner, RunnerConfig};
use opsledger_families::inventory_sync::{InventorySync, coverage_of};
use opsledger_providers::ProviderSettings;
use opsledger_store::{NewRun, Store, both_backends};
use serde_json::json;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

async fn tenant(store: &Store, profile: &str) -> (String, String) {
    let ws = store.create_workspace("ws").await.unwrap();
    let t = store
        .create_tenant(&ws.id, profile, &format!("demo:{profile}"))
        .await
        .unwrap();
    (ws.id, t.id)
}

async fn start(store: &Store, ws: &str, tenant: &str, params: serde_json::Value) -> String {
    let new = NewRun::on_tenant(ws, tenant, RunType::InventorySync, "test", params);
    store.create_run(new).await.unwrap().into_run().id
}

/// Runs the runner until the run completes.
async fn run_to_completion(store: &Store, id: &str) -> Run {
    let registry = opsledger_families::registry(ProviderSettings::default());
    let config = RunnerConfig {
        poll_interval: Duration::from_millis(20),
        ..Default::default()
    };
    let shutdown = CancellationToken::new();
    let runner = tokio::spawn(Runner::new(store.clone(), registry, config).run(shutdown.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let run = loop {
        let run = store.get_run(id).await.unwrap().unwrap();
        if run.is_completed() {
            break run;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run did not complete: {run:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    shutdown.cancel();
    runner.await.unwrap();
    run
}

both_backends!(
    healthy_tenant_succeeds_with_full_coverage,
    |store: Store| async move {
        let (ws, t) = tenant(&store, "healthy").await;
        let id = start(&store, &ws, &t, json!({})).await;
        let run = run_to_completion(&store, &id).await;
        assert_eq!(
            (run.status, run.outcome),
            (RunStatus::Completed, Outcome::Succeeded)
        );
        let c = run.summary_counts;
        // The demo's 15 policy types, one unit each.
        assert_eq!(c.total, Some(15));
        assert_eq!(
            (c.processed, c.succeeded, c.failed),
            (Some(15), Some(15), Some(0))
        );
        let coverage = coverage_of(&run.context);
        assert_eq!(coverage.len(), 15);
        assert!(coverage.values().all(|c| c.status == CoverageStatus::Covered));
        // Every type has policies but `intents`, which demo tenants generate
        // empty: read whole, and covered with none.
        for (t, c) in &coverage {
            if t == "intents" {
                assert_eq!(c.item_count, 0, "{t}");
            } else {
                assert!(c.item_count > 0, "{t}");
            }
        }
        let items: u64 = coverage.values().map(|c| c.item_count).sum();
        assert!(items >= 100, "{items}");
        assert_eq!(store.count_inventory_items(&t).await.unwrap(), items);
        let seen = store.items_last_seen_by(&id).await.unwrap();
        assert_eq!(
            seen.values().sum::<u64>(),
            items,
            "every item names this run as last seen"
        );
        assert_eq!(run.context["inventory"]["reason_code"], "inventory_fully_covered");
        assert!(run.failures.is_empty());
    }
);

both_backends!(
    throttled_tenant_recovers_and_succeeds,
    |store: Store| async move {
        let (ws, t) = tenant(&store, "throttled").await;
        let id = start(&store, &ws, &t, json!({})).await;
        let run = run_to_completion(&store, &id).await;
        assert_eq!(run.outcome, Outcome::Succeeded, "{:?}", run.failures);
        assert_eq!(run.summary_counts.processed, run.summary_counts.total);
    }
);

both_backends!(partial_tenant_is_partially_succeeded, |store: Store| async move {
    let (ws, t) = tenant(&store, "partial").await;
    let id = start(&store, &ws, &t, json!({})).await;
    let run = run_to_completion(&store, &id).await;
    assert_eq!(run.outcome, Outcome::PartiallySucceeded);
    let c = run.summary_counts;
    assert_eq!(
        (c.total, c.processed, c.succeeded, c.failed),
        (Some(15), Some(15), Some(12), Some(3))
    );
    let coverage = coverage_of(&run.context);
    assert_eq!(
        coverage["conditionalAccessPolicies"].status,
        CoverageStatus::Blocked
    );
    // `intents` is readable in the partial tenant too (empty, but covered).
    assert_eq!(
        (coverage["intents"].status, coverage["intents"].item_count),
        (CoverageStatus::Covered, 0)
    );
    let scripts = &coverage["deviceManagementScripts"];
    assert_eq!(scripts.status, CoverageStatus::Failed);
    assert_eq!(scripts.item_count, 0, "a type not fully read writes no items");
    assert_eq!(scripts.failure_code.as_deref(), Some("provider_service_error"));
    let seen = store.items_last_seen_by(&id).await.unwrap();
    assert!(
        !seen.contains_key("deviceManagementScripts"),
        "no items of a half-read type"
    );
    let codes: Vec<_> = run
        .failures
        .iter()
        .map(|f| (f.code.as_str(), f.unit.as_deref().unwrap()))
        .collect();
    assert!(
        codes.contains(&("provider_forbidden", "namedLocations")),
        "{codes:?}"
    );
    assert_eq!(run.failures.len(), 3);
});

both_backends!(
    blocked_tenant_is_blocked_without_a_total,
    |store: Store| async move {
        let (ws, t) = tenant(&store, "blocked").await;
        let id = start(&store, &ws, &t, json!({})).await;
        let run = run_to_completion(&store, &id).await;
        assert_eq!(run.outcome, Outcome::Blocked);
        assert_eq!(run.summary_counts.total, None);
        assert_eq!(run.summary_counts.processed, None);
        assert_eq!(run.failures[0].code, "provider_permission_missing");
        assert_eq!(store.count_inventory_items(&t).await.unwrap(), 0);
    }
);

both_backends!(requested_types_limit_the_units, |store: Store| async move {
    let (ws, t) = tenant(&store, "healthy").await;
    let id = start(
        &store,
        &ws,
        &t,
        json!({"policy_types": ["deviceConfigurations", "noSuchType"]}),
    )
    .await;
    let run = run_to_completion(&store, &id).await;
    assert_eq!(run.summary_counts.total, Some(2));
    assert_eq!(run.outcome, Outcome::PartiallySucceeded);
    assert_eq!(run.failures[0].code, "provider_unknown_type");
});

both_backends!(
    an_interrupted_sync_resumes_without_recounting,
    |store: Store| async move {
        let (ws, t) = tenant(&store, "healthy").await;
        let id = start(&store, &ws, &t, json!({})).await;
        let job = store.claim_jobs("first", 1, 60_000).await.unwrap().pop().unwrap();
        let run = store.get_run(&id).await.unwrap().unwrap();
        let slow = InventorySync::new(ProviderSettings {
            demo_latency: Duration::from_millis(15),
            ..ProviderSettings::default()
        });
        let cancel = CancellationToken::new();
        let lease = opsledger_store::testing::lease(&store, &job.fence, &id).await;
        let ctx = RunContext::new(run.clone(), lease.clone(), 1, cancel.clone());
        let first = tokio::spawn(async move { slow.execute(ctx).await });
        // Stop the first attempt part way through (as a shutdown would).
        loop {
            let r = store.get_run(&id).await.unwrap().unwrap();
            if r.summary_counts.processed.unwrap_or(0) >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cancel.cancel();
        first.await.unwrap().unwrap();
        assert!(store.release_job(&job.fence).await.unwrap());
        let mid = store.get_run(&id).await.unwrap().unwrap();
        let done_before = mid.summary_counts.processed.unwrap();
        assert!(mid.status == RunStatus::Running && done_before < 15, "{mid:?}");
        // The first worker's lease is gone: its writes are refused.
        let stale = RunContext::new(run.clone(), lease, 1, CancellationToken::new());
        assert!(
            InventorySync::new(ProviderSettings::default())
                .execute(stale)
                .await
                .is_err()
        );
        // A second attempt finishes the rest, counting each type once.
        let job = store
            .claim_jobs("second", 1, 60_000)
            .await
            .unwrap()
            .pop()
            .unwrap();
        let lease = opsledger_store::testing::lease(&store, &job.fence, &id).await;
        let ctx = RunContext::new(run, lease, 1, CancellationToken::new());
        InventorySync::new(ProviderSettings::default())
            .execute(ctx)
            .await
            .unwrap();
        let run = store.get_run(&id).await.unwrap().unwrap();
        assert_eq!(run.outcome, Outcome::Succeeded);
        assert_eq!(
            (run.summary_counts.processed, run.summary_counts.succeeded),
            (Some(15), Some(15))
        );
        assert_eq!(store.recorded_units(&id).await.unwrap().len(), 15);
    }
);

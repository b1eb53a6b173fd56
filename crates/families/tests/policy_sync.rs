//! `policy.sync` end to end through the runner on both databases: one policy
//! re-read into the inventory, its proof committed with its close.

use opsledger_core::params::validate;
use opsledger_core::{Outcome, ProgressMode, Run, RunType};
use opsledger_engine::{Runner, RunnerConfig};
use opsledger_providers::ProviderSettings;
use opsledger_store::{CreateResult, NewRun, Store, both_backends};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

async fn tenant(store: &Store, profile: &str) -> (String, String) {
    let ws = store.create_workspace("ws").await.unwrap();
    let t = store
        .create_tenant(&ws.id, "contoso", &format!("demo:{profile}"))
        .await
        .unwrap();
    (ws.id, t.id)
}

/// A start as the API makes it: parameters validated, then the run created.
async fn start(store: &Store, ws: &str, tenant: &str, policy: &str) -> CreateResult {
    let params = validate(RunType::PolicySync, &json!({ "policy_id": policy })).unwrap();
    let new = NewRun::on_tenant(ws, tenant, RunType::PolicySync, "test", params);
    store.create_run(new).await.unwrap()
}

/// A policy the demo tenant `contoso` holds.
async fn some_policy() -> String {
    let provider =
        opsledger_providers::open("demo:healthy", "contoso", "contoso", &ProviderSettings::default())
            .unwrap();
    let page = provider.list_page("deviceConfigurations", None).await.unwrap();
    format!("deviceConfigurations/{}", page.items[0].id)
}

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

#[test]
fn policy_id_is_required_and_strict() {
    let e = validate(RunType::PolicySync, &json!({})).unwrap_err();
    assert_eq!(e.code(), "missing_param");
    assert!(e.to_string().contains("`policy_id`"), "{e}");
    assert_eq!(
        validate(RunType::PolicySync, &Value::Null).unwrap_err().code(),
        "missing_param"
    );
    for bad in [
        json!("nope"),
        json!("deviceConfigurations/a b"),
        json!(["deviceConfigurations/a"]),
        json!(1),
    ] {
        let e = validate(RunType::PolicySync, &json!({ "policy_id": bad })).unwrap_err();
        assert_eq!(e.code(), "invalid_params", "{bad}: {e}");
    }
    let e = validate(
        RunType::PolicySync,
        &json!({"policy_id": "deviceConfigurations/a", "policy_ids": []}),
    )
    .unwrap_err();
    assert_eq!(e.code(), "unknown_param");
}

both_backends!(
    one_policy_is_reread_into_the_inventory,
    |store: Store| async move {
        let (ws, t) = tenant(&store, "healthy").await;
        let policy = some_policy().await;
        let id = start(&store, &ws, &t, &policy).await.into_run().id;
        let run = run_to_completion(&store, &id).await;
        assert_eq!(run.outcome, Outcome::Succeeded, "{:?}", run.failures);
        // Activity: no units, no counts, no percentage ever.
        assert_eq!(run.summary_counts.total, None);
        assert_eq!(
            opsledger_core::progress::progress_of(&run, &[]).mode,
            ProgressMode::None
        );
        let (_, external_id) = policy.split_once('/').unwrap();
        assert_eq!(run.context["policy_sync"]["policy_id"], external_id);
        // The item is in the inventory, last seen by this run: the proof.
        let seen = store.items_last_seen_by(&id).await.unwrap();
        assert_eq!(seen.get("deviceConfigurations"), Some(&1), "{seen:?}");
        assert_eq!(store.count_inventory_items(&t).await.unwrap(), 1);
    }
);

both_backends!(
    a_reread_shows_the_new_content_and_this_run_as_last_seen,
    |store: Store| async move {
        // A folder tenant: its file is the policy, so the test can change it.
        let folder = tempfile::tempdir().unwrap();
        let dir = folder.path().join("DeviceConfigurations");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("baseline.json");
        let policy = |len: u32| {
            json!({
                "id": "p-1",
                "displayName": "Baseline",
                "@odata.type": "#microsoft.graph.windows10GeneralConfiguration",
                "passwordMinimumLength": len,
            })
        };
        std::fs::write(&file, policy(8).to_string()).unwrap();
        let ws = store.create_workspace("ws").await.unwrap();
        let t = store
            .create_tenant(&ws.id, "folder", &format!("folder:{}", folder.path().display()))
            .await
            .unwrap();
        let params = validate(RunType::InventorySync, &json!({})).unwrap();
        let sync = store
            .create_run(NewRun::on_tenant(
                &ws.id,
                &t.id,
                RunType::InventorySync,
                "test",
                params,
            ))
            .await
            .unwrap()
            .into_run()
            .id;
        let run = run_to_completion(&store, &sync).await;
        assert_eq!(run.outcome, Outcome::Succeeded, "{:?}", run.failures);
        let (payload, seen_by) = store
            .inventory_item(&t.id, "deviceConfigurations", "p-1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (payload["passwordMinimumLength"].as_u64(), seen_by.as_str()),
            (Some(8), sync.as_str())
        );

        std::fs::write(&file, policy(14).to_string()).unwrap();
        let id = start(&store, &ws.id, &t.id, "deviceConfigurations/p-1")
            .await
            .into_run()
            .id;
        let run = run_to_completion(&store, &id).await;
        assert_eq!(run.outcome, Outcome::Succeeded, "{:?}", run.failures);
        let (payload, seen_by) = store
            .inventory_item(&t.id, "deviceConfigurations", "p-1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            payload["passwordMinimumLength"].as_u64(),
            Some(14),
            "the new content"
        );
        assert_eq!(seen_by, id, "last seen by the policy.sync run");
        assert_eq!(store.count_inventory_items(&t.id).await.unwrap(), 1);
    }
);

both_backends!(
    a_policy_gone_from_the_tenant_fails_and_writes_nothing,
    |store: Store| async move {
        let (ws, t) = tenant(&store, "healthy").await;
        let id = start(&store, &ws, &t, "deviceConfigurations/not-there")
            .await
            .into_run()
            .id;
        let run = run_to_completion(&store, &id).await;
        assert_eq!(run.outcome, Outcome::Failed);
        assert_eq!(run.failures[0].code, "policy_not_found");
        assert!(run.failures[0].message.contains("deviceConfigurations/not-there"));
        assert_eq!(store.count_inventory_items(&t).await.unwrap(), 0);
    }
);

both_backends!(a_tenant_without_consent_is_blocked, |store: Store| async move {
    let (ws, t) = tenant(&store, "blocked").await;
    let id = start(&store, &ws, &t, "deviceConfigurations/x")
        .await
        .into_run()
        .id;
    let run = run_to_completion(&store, &id).await;
    assert_eq!(run.outcome, Outcome::Blocked);
    assert_eq!(run.failures[0].code, "provider_permission_missing");
    assert_eq!(
        run.context["policy_sync"]["reason_code"],
        "provider_permission_missing"
    );
});

both_backends!(starts_are_deduplicated_per_policy, |store: Store| async move {
    let (ws, t) = tenant(&store, "healthy").await;
    let first = start(&store, &ws, &t, "deviceConfigurations/a").await;
    assert!(matches!(first, CreateResult::Created(_)));
    // The same policy: the running sync is the answer.
    let again = start(&store, &ws, &t, "deviceConfigurations/a").await;
    assert!(matches!(&again, CreateResult::AlreadyActive(r) if r.id == first.run().id));
    // Another policy is other work, never answered with the sync of the first.
    let other = start(&store, &ws, &t, "deviceConfigurations/b").await;
    assert!(matches!(other, CreateResult::Created(_)), "{other:?}");
    assert_ne!(other.run().id, first.run().id);
});

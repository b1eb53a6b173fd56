//! `backup_set.add_policies` end to end through two in-process runners on
//! both databases: inventory first, then one unit job per policy.

use opsledger_core::{Outcome, Run, RunType};
use opsledger_engine::{Runner, RunnerConfig};
use opsledger_providers::ProviderSettings;
use opsledger_store::{NewRun, Store, both_backends};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

async fn run(store: &Store, ws: &str, tenant: &str, t: RunType, params: Value) -> Run {
    let new = NewRun::on_tenant(ws, tenant, t, "test", params);
    let id = store.create_run(new).await.unwrap().into_run().id;
    let registry = opsledger_families::registry(ProviderSettings::default());
    let config = RunnerConfig {
        concurrency: 8,
        poll_interval: Duration::from_millis(10),
        ..Default::default()
    };
    let shutdown = CancellationToken::new();
    let a = tokio::spawn(Runner::new(store.clone(), registry.clone(), config.clone()).run(shutdown.clone()));
    let b = tokio::spawn(Runner::new(store.clone(), registry, config).run(shutdown.clone()));
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
    a.await.unwrap();
    b.await.unwrap();
    done
}

both_backends!(
    backs_up_every_inventoried_policy_once,
    |store: Store| async move {
        let ws = store.create_workspace("ws").await.unwrap().id;
        let t = store
            .create_tenant(&ws, "contoso", "demo:throttled")
            .await
            .unwrap()
            .id;
        let sync = run(&store, &ws, &t, RunType::InventorySync, json!({})).await;
        assert_eq!(sync.outcome, Outcome::Succeeded);
        let items = store.count_inventory_items(&t).await.unwrap();
        let backup = run(&store, &ws, &t, RunType::BackupSetAddPolicies, json!({})).await;
        assert_eq!(backup.outcome, Outcome::Succeeded, "{:?}", backup.failures);
        let c = backup.summary_counts;
        assert_eq!(
            (c.total, c.processed, c.succeeded),
            (Some(items), Some(items), Some(items))
        );
        let set = backup.context["backup_set"]["id"].as_str().unwrap();
        assert_eq!(store.count_backup_items(set).await.unwrap(), items);
    }
);

both_backends!(unreadable_policies_are_failed_units, |store: Store| async move {
    let ws = store.create_workspace("ws").await.unwrap().id;
    let t = store
        .create_tenant(&ws, "northwind", "demo:partial")
        .await
        .unwrap()
        .id;
    let keys = json!(["deviceConfigurations/nope", "conditionalAccessPolicies/x"]);
    let mut ids: Vec<String> = store
        .inventory_refs(&t)
        .await
        .unwrap()
        .into_iter()
        .map(|(a, b)| format!("{a}/{b}"))
        .collect();
    assert!(ids.is_empty());
    ids.extend(
        keys.as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned()),
    );
    let backup = run(
        &store,
        &ws,
        &t,
        RunType::BackupSetAddPolicies,
        json!({ "policy_ids": ids }),
    )
    .await;
    assert_eq!(backup.outcome, Outcome::Failed);
    let codes: Vec<&str> = backup.failures.iter().map(|f| f.code.as_str()).collect();
    assert!(
        codes.contains(&"provider_not_found") && codes.contains(&"provider_forbidden"),
        "{codes:?}"
    );
    assert_eq!(backup.summary_counts.failed, Some(2));
});

both_backends!(
    a_tenant_without_inventory_is_blocked_not_backed_up_empty,
    |store: Store| async move {
        let ws = store.create_workspace("ws").await.unwrap().id;
        let t = store
            .create_tenant(&ws, "contoso", "demo:healthy")
            .await
            .unwrap()
            .id;
        let backup = run(&store, &ws, &t, RunType::BackupSetAddPolicies, json!({})).await;
        assert_eq!(backup.outcome, Outcome::Blocked);
        assert_eq!(backup.failures[0].code, "no_inventory");
        assert_eq!(backup.summary_counts.total, None, "no plan, no percentage");
        assert!(
            backup.context.get("backup_set").is_none(),
            "no empty set was created"
        );
        // Naming nothing on purpose is a truthful zero-unit run.
        let none = run(
            &store,
            &ws,
            &t,
            RunType::BackupSetAddPolicies,
            json!({"policy_ids": []}),
        )
        .await;
        assert_eq!(
            (none.outcome, none.summary_counts.total),
            (Outcome::Succeeded, Some(0))
        );
    }
);

both_backends!(
    items_name_what_their_references_point_to,
    |store: Store| async move {
        // The real Conditional Access export: its policies exclude groups by id.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/ca-baseline");
        let ws = store.create_workspace("ws").await.unwrap().id;
        let t = store
            .create_tenant(&ws, "export", &format!("folder:{}", path.display()))
            .await
            .unwrap()
            .id;
        let sync = run(&store, &ws, &t, RunType::InventorySync, json!({})).await;
        assert_eq!(sync.outcome, Outcome::Succeeded, "{:?}", sync.failures);
        let backup = run(&store, &ws, &t, RunType::BackupSetAddPolicies, json!({})).await;
        assert_eq!(backup.outcome, Outcome::Succeeded, "{:?}", backup.failures);
        let set = backup.context["backup_set"]["id"].as_str().unwrap();
        let items = store.backup_item_hashes(set).await.unwrap();
        assert_eq!(items.len(), 39);
        // The directory was stored with the set, and every CA policy's
        // excluded groups are named in its item.
        let (_, directory) = store
            .backup_set_directory_of_run(&backup.id)
            .await
            .unwrap()
            .unwrap();
        let directory: opsledger_providers::Directory = serde_json::from_value(directory.unwrap()).unwrap();
        assert_eq!(directory.entries.len(), 34 + 3);
        let named: usize = items
            .iter()
            .filter(|(_, refs, _)| {
                refs.as_object().is_some_and(|r| {
                    r.values()
                        .any(|n| n.as_str().is_some_and(|n| n.starts_with("group:CA")))
                })
            })
            .count();
        assert!(named >= 30, "{named} of 39 items name a CA exclusion group");
        // The hash is the normalizer's, over the references resolved by name:
        // the same policy re-read from another copy hashes the same.
        let provider = opsledger_providers::open(
            &format!("folder:{}", path.display()),
            &t,
            "export",
            &ProviderSettings::default(),
        )
        .unwrap();
        let names = directory.names();
        for (id, _, sha) in items.iter().take(5) {
            let p = match provider.get_policy("conditionalAccessPolicies", id).await {
                Ok(p) => p,
                Err(_) => provider.get_policy("namedLocations", id).await.unwrap(),
            };
            assert_eq!(&opsledger_core::normalize::content_hash(&p.payload, &names), sha);
        }
    }
);

both_backends!(
    each_demo_profile_ends_as_its_backup_does,
    |store: Store| async move {
        let ws = store.create_workspace("ws").await.unwrap().id;
        // Partial: its readable types inventoried, then a backup of them and
        // of one Conditional Access policy it may not read → partially
        // succeeded, the readable ones in the set, the other a failed unit.
        let partial = store
            .create_tenant(&ws, "northwind", "demo:partial")
            .await
            .unwrap()
            .id;
        let sync = run(&store, &ws, &partial, RunType::InventorySync, json!({})).await;
        assert_eq!(sync.outcome, Outcome::PartiallySucceeded, "{:?}", sync.failures);
        let mut ids: Vec<String> = store
            .inventory_refs(&partial)
            .await
            .unwrap()
            .into_iter()
            .map(|(a, b)| format!("{a}/{b}"))
            .collect();
        let readable = ids.len() as u64;
        assert!(readable > 0);
        ids.push("conditionalAccessPolicies/00000000-0000-0000-0000-000000000001".into());
        let backup = run(
            &store,
            &ws,
            &partial,
            RunType::BackupSetAddPolicies,
            json!({ "policy_ids": ids }),
        )
        .await;
        assert_eq!(
            backup.outcome,
            Outcome::PartiallySucceeded,
            "{:?}",
            backup.failures
        );
        let c = &backup.summary_counts;
        assert_eq!(
            (c.total, c.succeeded, c.failed),
            (Some(readable + 1), Some(readable), Some(1))
        );
        assert_eq!(backup.failures[0].code, "provider_forbidden");
        let set = backup.context["backup_set"]["id"].as_str().unwrap();
        assert_eq!(store.count_backup_items(set).await.unwrap(), readable);

        // Blocked: no consent → blocked before any work, no set created.
        let blocked = store
            .create_tenant(&ws, "tailspin", "demo:blocked")
            .await
            .unwrap()
            .id;
        let backup = run(
            &store,
            &ws,
            &blocked,
            RunType::BackupSetAddPolicies,
            json!({ "policy_ids": ["deviceConfigurations/x"] }),
        )
        .await;
        assert_eq!(backup.outcome, Outcome::Blocked, "{:?}", backup.failures);
        assert_eq!(backup.summary_counts.total, None, "no plan, no percentage");
        assert!(backup.context.get("backup_set").is_none(), "{}", backup.context);
    }
);

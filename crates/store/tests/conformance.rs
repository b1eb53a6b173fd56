//! The store conformance suite: every test runs against SQLite and PostgreSQL.

mod common;

use common::{new_run, queued_run, running_run, scope};
use opsledger_core::{Failure, Outcome, RunStatus, RunType, UnitOutcome};
use opsledger_store::inventory::{ItemScope, ItemSnapshot};
use opsledger_store::{
    CompleteResult, Completion, ContextPatch, CreateResult, RunFilter, Store, StoreError, UnitRecord,
    Visibility, both_backends, raw_on_pool,
};
use serde_json::json;

/// Everything in the workspace.
fn all(workspace_id: &str) -> Visibility {
    Visibility {
        workspace_id: workspace_id.to_owned(),
        tenants: None,
    }
}

both_backends!(
    start_is_deduplicated_per_type_and_scope,
    |store: Store| async move {
        let s = scope(&store).await;
        let first = store
            .create_run(new_run(&s, RunType::InventorySync))
            .await
            .unwrap();
        assert!(matches!(first, CreateResult::Created(_)));
        let second = store
            .create_run(new_run(&s, RunType::InventorySync))
            .await
            .unwrap();
        let CreateResult::AlreadyActive(active) = second else {
            panic!("expected the active run")
        };
        assert_eq!(active.id, first.run().id);
        // Another type on the same tenant is independent.
        let other = store.create_run(new_run(&s, RunType::PolicySync)).await.unwrap();
        assert!(matches!(other, CreateResult::Created(_)));
        // Once completed, a new start creates a new run.
        store
            .complete_run(&active.id, Completion::new(Outcome::Cancelled))
            .await
            .unwrap();
        let third = store
            .create_run(new_run(&s, RunType::InventorySync))
            .await
            .unwrap();
        assert!(matches!(third, CreateResult::Created(_)));
        assert_ne!(third.run().id, active.id);
    }
);

both_backends!(
    a_start_with_the_same_key_but_other_params_is_refused_naming_the_active_run,
    |store: Store| async move {
        let s = scope(&store).await;
        let with = |params: serde_json::Value, t: RunType| {
            let mut n = new_run(&s, t);
            n.context = json!({ "params": params });
            n
        };
        let first = store
            .create_run(with(
                json!({"policy_types": ["namedLocations"]}),
                RunType::InventorySync,
            ))
            .await
            .unwrap()
            .into_run();
        // The same parameters: the active run is the answer.
        let same = store
            .create_run(with(
                json!({"policy_types": ["namedLocations"]}),
                RunType::InventorySync,
            ))
            .await
            .unwrap();
        assert!(
            matches!(&same, CreateResult::AlreadyActive(r) if r.id == first.id),
            "{same:?}"
        );
        // Other parameters under the same key (inventory.sync: the tenant):
        // refused, naming the run that holds the key — never answered with it.
        for other in [
            json!({"policy_types": ["deviceConfigurations"]}),
            json!({}),
            serde_json::Value::Null,
        ] {
            let r = store
                .create_run(with(other.clone(), RunType::InventorySync))
                .await
                .unwrap();
            assert!(
                matches!(&r, CreateResult::ActiveRunDiffers(a) if a.id == first.id),
                "{other}: {r:?}"
            );
        }
        // A type whose key names a parameter: other values are other work.
        let set_a = store
            .create_run(with(json!({"backup_set_id": "a"}), RunType::BackupSetUpdate))
            .await
            .unwrap();
        let set_b = store
            .create_run(with(json!({"backup_set_id": "b"}), RunType::BackupSetUpdate))
            .await
            .unwrap();
        assert!(matches!(set_a, CreateResult::Created(_)));
        assert!(
            matches!(set_b, CreateResult::Created(_)),
            "another set is another key"
        );
        let again = store
            .create_run(with(json!({"backup_set_id": "a"}), RunType::BackupSetUpdate))
            .await
            .unwrap();
        assert!(matches!(&again, CreateResult::AlreadyActive(r) if r.id == set_a.run().id));
    }
);

both_backends!(
    a_completions_artifacts_land_with_the_close_or_not_at_all,
    |store: Store| async move {
        use opsledger_store::artifacts::UnitArtifact;
        let s = scope(&store).await;
        let id = queued_run(&store, &s, RunType::PolicySync).await;
        store.claim_run(&id).await.unwrap().expect("claim");
        let items = |name: &str| UnitArtifact::InventoryItems {
            policy_type: "deviceConfigurations".into(),
            items: vec![ItemSnapshot {
                external_id: "p1".into(),
                display_name: name.into(),
                payload: json!({"id": "p1"}),
            }],
        };
        let closed = store
            .complete_run(
                &id,
                Completion::new(Outcome::Succeeded).with_artifact(items("first")),
            )
            .await
            .unwrap();
        assert!(matches!(closed, CompleteResult::Completed(_)));
        assert_eq!(
            store
                .items_last_seen_by(&id)
                .await
                .unwrap()
                .get("deviceConfigurations"),
            Some(&1)
        );
        // A second completion changes nothing, its artifacts included.
        let again = store
            .complete_run(
                &id,
                Completion::new(Outcome::Failed).with_artifact(items("second")),
            )
            .await
            .unwrap();
        assert!(matches!(again, CompleteResult::AlreadyCompleted(_)));
        let names: Vec<(String,)> = raw_on_pool!(&store, pool => sqlx::query_as(
            "SELECT display_name FROM inventory_items WHERE external_id = 'p1'"
        )
        .fetch_all(pool)
        .await
        .unwrap());
        assert_eq!(names, vec![("first".to_owned(),)]);
    }
);

both_backends!(
    concurrent_starts_create_exactly_one_run,
    |store: Store| async move {
        let s = scope(&store).await;
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let store = store.clone();
            let new = new_run(&s, RunType::InventorySync);
            tasks.push(tokio::spawn(async move { store.create_run(new).await.unwrap() }));
        }
        let mut created = 0;
        let mut ids = std::collections::HashSet::new();
        for t in tasks {
            let r = t.await.unwrap();
            created += matches!(r, CreateResult::Created(_)) as usize;
            ids.insert(r.run().id.clone());
        }
        assert_eq!((created, ids.len()), (1, 1));
    }
);

both_backends!(scope_must_match_the_catalog, |store: Store| async move {
    let s = scope(&store).await;
    let mut bad = new_run(&s, RunType::WorkspaceInventorySyncAll);
    assert!(matches!(
        store.create_run(bad.clone()).await,
        Err(StoreError::ScopeMismatch { .. })
    ));
    bad.tenant_id = None;
    assert!(store.create_run(bad).await.is_ok());
    let mut no_tenant = new_run(&s, RunType::InventorySync);
    no_tenant.tenant_id = None;
    assert!(matches!(
        store.create_run(no_tenant).await,
        Err(StoreError::ScopeMismatch { .. })
    ));
});

both_backends!(claim_is_compare_and_set, |store: Store| async move {
    let s = scope(&store).await;
    let id = queued_run(&store, &s, RunType::InventorySync).await;
    let fresh = store.get_run(&id).await.unwrap().unwrap();
    assert_eq!(
        (fresh.status, fresh.outcome, fresh.started_at),
        (RunStatus::Queued, Outcome::Pending, None)
    );
    let claimed = store.claim_run(&id).await.unwrap().expect("first claim wins");
    assert_eq!(claimed.status, RunStatus::Running);
    assert!(claimed.started_at.is_some() && claimed.heartbeat_at.is_some());
    assert!(
        store.claim_run(&id).await.unwrap().is_none(),
        "second claim loses"
    );
    assert!(store.heartbeat(&id).await.unwrap());
});

both_backends!(total_is_initialized_once, |store: Store| async move {
    let s = scope(&store).await;
    let id = running_run(&store, &s, 5).await;
    store.init_total(&id, 5).await.expect("same total is a no-op");
    let err = store.init_total(&id, 6).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::TotalAlreadySet {
                existing: 5,
                requested: 6,
                ..
            }
        ),
        "{err}"
    );
    let run = store.get_run(&id).await.unwrap().unwrap();
    let c = run.summary_counts;
    assert_eq!(
        (c.total, c.processed, c.succeeded, c.failed, c.skipped),
        (Some(5), Some(0), Some(0), Some(0), Some(0))
    );
    assert_eq!(c.created, None, "unknown counts stay absent");
});

both_backends!(units_count_exactly_once, |store: Store| async move {
    let s = scope(&store).await;
    let id = running_run(&store, &s, 3).await;
    let fail = UnitRecord {
        key: "b".into(),
        outcome: UnitOutcome::Failed,
        failure: Some(Failure::new("graph_forbidden", "403 on b")),
        context_patch: Some(ContextPatch::new(["units", "b"], json!("failed"))),
        artifact: None,
    };
    assert!(
        store
            .record_unit(&id, UnitRecord::new("a", UnitOutcome::Succeeded))
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_unit(&id, UnitRecord::new("a", UnitOutcome::Failed))
            .await
            .unwrap(),
        "replay"
    );
    let summary = store
        .record_units(
            &id,
            &[
                fail.clone(),
                fail.clone(),
                UnitRecord::new("a", UnitOutcome::Skipped),
            ],
        )
        .await
        .unwrap();
    assert_eq!((summary.recorded, summary.duplicates), (1, 2));
    assert!(!store.record_unit(&id, fail).await.unwrap());
    let run = store.get_run(&id).await.unwrap().unwrap();
    let c = run.summary_counts;
    assert_eq!(
        (c.processed, c.succeeded, c.failed, c.skipped),
        (Some(2), Some(1), Some(1), Some(0))
    );
    assert_eq!(
        run.failures,
        vec![Failure::new("graph_forbidden", "403 on b").for_unit("b")]
    );
    assert_eq!(run.context, json!({"units": {"b": "failed"}}));
    let ledger = store.recorded_units(&id).await.unwrap();
    assert_eq!(
        ledger.get("a"),
        Some(&UnitOutcome::Succeeded),
        "first recording wins"
    );
});

both_backends!(units_beyond_total_are_refused_whole, |store: Store| async move {
    let s = scope(&store).await;
    let id = running_run(&store, &s, 2).await;
    store
        .record_unit(&id, UnitRecord::new("a", UnitOutcome::Succeeded))
        .await
        .unwrap();
    let batch = [
        UnitRecord::new("b", UnitOutcome::Succeeded),
        UnitRecord::new("c", UnitOutcome::Succeeded),
    ];
    let err = store.record_units(&id, &batch).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::UnitsExceedTotal {
                new: 2,
                processed: 1,
                total: 2,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        store.recorded_units(&id).await.unwrap().len(),
        1,
        "the refused batch left no ledger rows"
    );
    assert!(
        store
            .record_unit(&id, UnitRecord::new("b", UnitOutcome::Succeeded))
            .await
            .unwrap()
    );
});

both_backends!(units_need_a_running_run_with_a_total, |store: Store| async move {
    let s = scope(&store).await;
    let id = queued_run(&store, &s, RunType::InventorySync).await;
    let unit = || UnitRecord::new("a", UnitOutcome::Succeeded);
    assert!(matches!(
        store.record_unit(&id, unit()).await,
        Err(StoreError::RunNotRunning { .. })
    ));
    store.claim_run(&id).await.unwrap();
    assert!(matches!(
        store.record_unit(&id, unit()).await,
        Err(StoreError::TotalNotSet { .. })
    ));
    store.init_total(&id, 1).await.unwrap();
    store
        .complete_run(&id, Completion::new(Outcome::Cancelled))
        .await
        .unwrap();
    assert!(matches!(
        store.record_unit(&id, unit()).await,
        Err(StoreError::RunNotRunning {
            status: RunStatus::Completed,
            ..
        })
    ));
    assert!(matches!(store.init_total(&id, 1).await, Ok(())));
    assert!(store.recorded_units(&id).await.unwrap().is_empty());
});

both_backends!(the_database_refuses_invalid_states, |store: Store| async move {
    let s = scope(&store).await;
    let id = running_run(&store, &s, 2).await;
    // Each write must be refused by one of the rules named: PostgreSQL names
    // the constraint; SQLite names it when it has a name, else quotes its
    // expression (a column CHECK), and its triggers raise with the name.
    // Where several rules forbid the row, the databases may report different
    // ones (SQLite's BEFORE UPDATE trigger runs before the CHECKs).
    let refused = |sql: &'static str, rules: &'static [&'static str]| {
        let store = store.clone();
        let id = id.clone();
        async move {
            let r = raw_on_pool!(&store, pool => sqlx::query(sql).bind(&id).execute(pool).await.map(|r| r.rows_affected()));
            let e = r.expect_err(&format!("the database accepted: {sql}"));
            let d = e.as_database_error().expect("a database error");
            let fired = match d.constraint() {
                Some(name) => name.to_owned(),
                None => d
                    .message()
                    .split_once("constraint failed: ")
                    .map(|(_, rule)| rule.to_owned())
                    .unwrap_or_else(|| d.message().to_owned()),
            };
            assert!(
                rules.contains(&fired.as_str()),
                "{sql}: refused by `{fired}`, expected one of {rules:?}"
            );
        }
    };
    refused(
        "UPDATE operation_runs SET processed = 3 WHERE id = $1",
        &["processed_within_total"],
    )
    .await;
    refused(
        "UPDATE operation_runs SET processed = total + 1 WHERE id = $1",
        &["processed_within_total"],
    )
    .await;
    refused(
        "UPDATE operation_runs SET total = NULL WHERE id = $1",
        &["processed_within_total"],
    )
    .await;
    refused(
        "UPDATE operation_runs SET processed = -1 WHERE id = $1",
        &["operation_runs_processed_check", "processed >= 0"],
    )
    .await;
    refused(
        "UPDATE operation_runs SET succeeded = 1 WHERE id = $1",
        &["unit_outcomes_within_processed"],
    )
    .await;
    refused(
        "UPDATE operation_runs SET status = 'completed' WHERE id = $1",
        &[
            "active_key_only_while_active",
            "outcome_pending_iff_not_completed",
            "completed_counts_explain_outcome",
        ],
    )
    .await;
    refused(
        "UPDATE operation_runs SET outcome = 'succeeded' WHERE id = $1",
        &["outcome_pending_iff_not_completed"],
    )
    .await;
    refused(
        "UPDATE operation_runs SET status = 'done' WHERE id = $1",
        &[
            "operation_runs_status_check",
            "status IN ('queued', 'running', 'completed')",
        ],
    )
    .await;
    refused(
        "INSERT INTO run_units (run_id, unit_key, outcome, recorded_at) VALUES ($1, 'x', 'succeeded', 0), ($1, 'x', 'failed', 0)",
        &["run_units_pkey", "run_units.run_id, run_units.unit_key"],
    )
    .await;
    let run = store.get_run(&id).await.unwrap().unwrap();
    assert_eq!(run.summary_counts.processed, Some(0));
});

both_backends!(completion_is_compare_and_set, |store: Store| async move {
    let s = scope(&store).await;
    let id = running_run(&store, &s, 1).await;
    let done = store
        .complete_run(
            &id,
            Completion::new(Outcome::Failed).with_failure(Failure::new("boom", "it broke")),
        )
        .await
        .unwrap();
    let CompleteResult::Completed(run) = done else {
        panic!("first completion applies")
    };
    assert_eq!((run.status, run.outcome), (RunStatus::Completed, Outcome::Failed));
    assert!(run.completed_at.is_some());
    let again = store
        .complete_run(&id, Completion::new(Outcome::Succeeded))
        .await
        .unwrap();
    let CompleteResult::AlreadyCompleted(run) = again else {
        panic!("second completion is a no-op")
    };
    assert_eq!(run.outcome, Outcome::Failed);
    // Its one planned unit was never recorded: counted by the first close.
    let codes: Vec<_> = run.failures.iter().map(|f| f.code.as_str()).collect();
    assert_eq!(codes, ["boom", "not_attempted"]);
    assert_eq!(
        (run.summary_counts.processed, run.summary_counts.failed),
        (Some(1), Some(1))
    );
    assert!(
        !store
            .patch_context(&id, &[ContextPatch::new(["x"], json!(1))])
            .await
            .unwrap()
    );
    assert!(!store.heartbeat(&id).await.unwrap());
});

both_backends!(
    bulk_runs_complete_once_with_derived_outcome,
    |store: Store| async move {
        let s = scope(&store).await;
        for (outcomes, expected) in [
            (
                vec![UnitOutcome::Succeeded, UnitOutcome::Skipped],
                Outcome::Succeeded,
            ),
            (
                vec![UnitOutcome::Succeeded, UnitOutcome::Failed],
                Outcome::PartiallySucceeded,
            ),
            (vec![UnitOutcome::Failed, UnitOutcome::Failed], Outcome::Failed),
        ] {
            let id = running_run(&store, &s, 2).await;
            store
                .record_unit(&id, UnitRecord::new("u0", outcomes[0]))
                .await
                .unwrap();
            assert!(matches!(
                store.maybe_complete_bulk_run(&id).await.unwrap(),
                CompleteResult::NotReady(_)
            ));
            store
                .record_unit(&id, UnitRecord::new("u1", outcomes[1]))
                .await
                .unwrap();
            let mut tasks = Vec::new();
            for _ in 0..8 {
                let store = store.clone();
                let id = id.clone();
                tasks.push(tokio::spawn(async move {
                    store.maybe_complete_bulk_run(&id).await.unwrap()
                }));
            }
            let mut completed = 0;
            for t in tasks {
                match t.await.unwrap() {
                    CompleteResult::Completed(r) => {
                        completed += 1;
                        assert_eq!(r.outcome, expected);
                    }
                    CompleteResult::AlreadyCompleted(r) => assert_eq!(r.outcome, expected),
                    CompleteResult::NotReady(_) => panic!("all units are processed"),
                }
            }
            assert_eq!(completed, 1, "exactly one completer");
        }
    }
);

both_backends!(zero_units_complete_at_once, |store: Store| async move {
    let s = scope(&store).await;
    let id = running_run(&store, &s, 0).await;
    let r = store.maybe_complete_bulk_run(&id).await.unwrap();
    assert!(matches!(&r, CompleteResult::Completed(run) if run.outcome == Outcome::Succeeded));
    assert_eq!(r.run().summary_counts.total, Some(0));
});

both_backends!(
    listing_filters_and_pages_newest_first,
    |store: Store| async move {
        let s = scope(&store).await;
        let other_ws = store.create_workspace("other").await.unwrap();
        let mut ids = Vec::new();
        for t in [
            RunType::InventorySync,
            RunType::PolicySync,
            RunType::BackupSetUpdate,
            RunType::ReviewPackGenerate,
        ] {
            ids.push(store.create_run(new_run(&s, t)).await.unwrap().into_run().id);
        }
        store
            .complete_run(&ids[1], Completion::new(Outcome::Failed))
            .await
            .unwrap();
        let mut foreign = new_run(&s, RunType::WorkspaceInventorySyncAll);
        foreign.workspace_id = other_ws.id.clone();
        foreign.tenant_id = None;
        let foreign_id = store.create_run(foreign).await.unwrap().into_run().id;

        let page1 = store
            .list_runs(
                &all(&s.workspace_id),
                &RunFilter {
                    limit: 3,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let got: Vec<_> = page1.0.iter().map(|r| r.id.clone()).collect();
        assert_eq!(got, vec![ids[3].clone(), ids[2].clone(), ids[1].clone()]);
        let cursor = page1.1.expect("a next page");
        let page2 = store
            .list_runs(
                &all(&s.workspace_id),
                &RunFilter {
                    limit: 3,
                    cursor: Some(cursor),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            page2.0.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
            vec![ids[0].clone()]
        );
        assert_eq!(page2.1, None);

        let failed = RunFilter {
            outcome: Some(Outcome::Failed),
            limit: 50,
            ..Default::default()
        };
        assert_eq!(
            store
                .list_runs(&all(&s.workspace_id), &failed)
                .await
                .unwrap()
                .0
                .len(),
            1
        );
        let by_type = RunFilter {
            run_type: Some(RunType::PolicySync),
            limit: 50,
            ..Default::default()
        };
        assert_eq!(
            store.list_runs(&all(&s.workspace_id), &by_type).await.unwrap().0[0].id,
            ids[1]
        );
        let queued = RunFilter {
            status: Some(RunStatus::Queued),
            limit: 50,
            ..Default::default()
        };
        assert_eq!(
            store
                .list_runs(&all(&s.workspace_id), &queued)
                .await
                .unwrap()
                .0
                .len(),
            3
        );
        assert!(
            store
                .visible_run(&all(&s.workspace_id), &foreign_id)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .visible_run(&all(&other_ws.id), &foreign_id)
                .await
                .unwrap()
                .is_some()
        );
    }
);

both_backends!(inventory_items_land_with_their_unit, |store: Store| async move {
    let s = scope(&store).await;
    let id = queued_run(&store, &s, RunType::InventorySync).await;
    store.claim_run(&id).await.unwrap();
    store.init_total(&id, 2).await.unwrap();
    let item = |n: u32| ItemSnapshot {
        external_id: format!("p{n}"),
        display_name: format!("Policy {n}"),
        payload: json!({"id": format!("p{n}")}),
    };
    let scope = ItemScope {
        workspace_id: &s.workspace_id,
        tenant_id: &s.tenant_id,
        policy_type: "deviceConfigurations",
    };
    let items = [item(1), item(2), item(1)];
    let unit = || UnitRecord::new("deviceConfigurations", UnitOutcome::Succeeded);
    let r = store
        .record_inventory_unit(None, &id, scope, &items, unit())
        .await
        .unwrap();
    assert_eq!(r.recorded, 1);
    let r = store
        .record_inventory_unit(None, &id, scope, &items, unit())
        .await
        .unwrap();
    assert_eq!((r.recorded, r.duplicates), (0, 1));
    assert_eq!(store.count_inventory_items(&s.tenant_id).await.unwrap(), 2);
    let seen = store.items_last_seen_by(&id).await.unwrap();
    assert_eq!(seen.get("deviceConfigurations"), Some(&2));
    assert_eq!(
        store
            .get_run(&id)
            .await
            .unwrap()
            .unwrap()
            .summary_counts
            .processed,
        Some(1)
    );
});

both_backends!(tokens_and_memberships, |store: Store| async move {
    let s = scope(&store).await;
    let user = store.upsert_user("a@demo.test", "hash").await.unwrap();
    assert_eq!(store.upsert_user("a@demo.test", "hash2").await.unwrap(), user);
    store
        .set_membership(&s.workspace_id, &user, opsledger_core::access::Role::Operator)
        .await
        .unwrap();
    let token = store.issue_token(&user, "demo").await.unwrap();
    assert_eq!(store.user_for_token(&token).await.unwrap(), Some(user.clone()));
    assert_eq!(store.user_for_token("olt_nope").await.unwrap(), None);
    assert_eq!(
        store
            .membership(&s.workspace_id, &user)
            .await
            .unwrap()
            .map(|m| m.role),
        Some(opsledger_core::access::Role::Operator)
    );
    assert_eq!(store.revoke_tokens(&user, "demo").await.unwrap(), 1);
    assert_eq!(store.user_for_token(&token).await.unwrap(), None);
});

both_backends!(run_head_agrees_with_the_run, |store: Store| async move {
    let s = scope(&store).await;
    let id = running_run(&store, &s, 3).await;
    let units = [
        UnitRecord::new("a", UnitOutcome::Succeeded),
        UnitRecord::new("b", UnitOutcome::Skipped),
    ];
    store.record_units(&id, &units).await.unwrap();
    let run = store.get_run(&id).await.unwrap().unwrap();
    let head = store.run_head(&id).await.unwrap().unwrap();
    assert_eq!(
        (&head.id, &head.workspace_id, &head.tenant_id),
        (&run.id, &run.workspace_id, &run.tenant_id)
    );
    assert_eq!(
        (head.run_type, head.status, head.outcome, head.summary_counts),
        (run.run_type, run.status, run.outcome, run.summary_counts)
    );
    assert_eq!(head.summary_counts.processed, Some(2));
    assert!(store.run_head("no-such-run").await.unwrap().is_none());
});

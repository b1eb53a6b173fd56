//! Starts of `backup_set.update` and `backup_set.delete` through the real
//! router, on both databases: the set they name is checked before any run
//! exists — `404` (one body, whatever the reason) for a set that does not
//! exist for the caller, `409` for a delete of a set that is locked or in
//! use — and a refused start changes nothing. The sets are written through
//! the store's writer path by hand (claimed jobs, leased writes).

use axum::body::Body;
use axum::http::{Request, header};
use opsledger_core::access::Role;
use opsledger_core::{Outcome, RunType, UnitOutcome};
use opsledger_server::AppState;
use opsledger_store::artifacts::UnitArtifact;
use opsledger_store::backup_set_writes::SetUpdate;
use opsledger_store::backups::BackupItem;
use opsledger_store::testing;
use opsledger_store::{Completion, NewRun, Store, UnitRecord, both_backends, raw_on_pool};
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

struct World {
    state: AppState,
    ws: String,
    tenant_a: String,
    tenant_b: String,
    admin: String,
    operator: String,
    /// An admin restricted to tenant A.
    restricted: String,
    /// A set of each tenant, and one of another workspace.
    set_a: String,
    set_b: String,
    foreign_set: String,
}

async fn user(store: &Store, ws: &str, email: &str, role: Role, tenants: &[String]) -> String {
    let id = store.upsert_user(email, "unused").await.unwrap();
    store.add_member(ws, &id, role, tenants).await.unwrap();
    store.issue_token(&id, "test").await.unwrap()
}

async fn start(store: &Store, ws: &str, tenant: &str, t: RunType, params: Value) -> String {
    let new = NewRun::on_tenant(ws, tenant, t, "test", params);
    store.create_run(new).await.unwrap().into_run().id
}

/// The run job of `id`, claimed (nothing else is queued when this is called).
async fn claim(store: &Store, id: &str) -> opsledger_store::jobs::ClaimedJob {
    let job = store.claim_jobs("test", 1, 600_000).await.unwrap().pop().unwrap();
    assert_eq!(job.run_id, id);
    job
}

/// A complete backup set of `n` items of `tenant`, written as a backup's units would.
async fn set(store: &Store, ws: &str, tenant: &str, n: usize) -> String {
    let id = start(store, ws, tenant, RunType::BackupSetAddPolicies, json!({})).await;
    let job = claim(store, &id).await;
    let lease = testing::lease(store, &job.fence, &id).await;
    let set = lease.backup_set("fixture", None).await.unwrap();
    lease.init_total(n as u64).await.unwrap();
    let units: Vec<UnitRecord> = (0..n)
        .map(|i| {
            UnitRecord::new(format!("deviceConfigurations/p{i}"), UnitOutcome::Succeeded).with_artifact(
                UnitArtifact::BackupItem(BackupItem {
                    policy_type: "deviceConfigurations".into(),
                    external_id: format!("p{i}"),
                    display_name: format!("Policy {i}"),
                    payload: json!({"displayName": format!("Policy {i}")}),
                    refs: json!({}),
                    content_sha256: format!("{i:064x}"),
                }),
            )
        })
        .collect();
    lease.record_units(&units).await.unwrap();
    store.maybe_complete_bulk_run(&id).await.unwrap();
    store.complete_job(&job.fence).await.unwrap();
    set
}

/// Locks `set` as a `backup_set.update` run's close would.
async fn lock(store: &Store, ws: &str, tenant: &str, set: &str) {
    let id = start(
        store,
        ws,
        tenant,
        RunType::BackupSetUpdate,
        json!({"backup_set_id": set, "retention_locked": true}),
    )
    .await;
    let job = claim(store, &id).await;
    let update = SetUpdate {
        backup_set_id: set.to_owned(),
        name: None,
        label: None,
        retention_locked: Some(true),
    };
    testing::lease(store, &job.fence, &id)
        .await
        .complete(Completion::new(Outcome::Succeeded).with_artifact(UnitArtifact::BackupSetUpdated(update)))
        .await
        .unwrap();
    store.complete_job(&job.fence).await.unwrap();
}

/// Deletes `removed` of the items of `set` as a `backup_set.delete` would,
/// then closes it (the rest, if any, left: a delete that ended part-way).
async fn delete(store: &Store, ws: &str, tenant: &str, set: &str, removed: usize) {
    let id = start(
        store,
        ws,
        tenant,
        RunType::BackupSetDelete,
        json!({"backup_set_id": set}),
    )
    .await;
    let job = claim(store, &id).await;
    let lease = testing::lease(store, &job.fence, &id).await;
    let items = store.backup_item_ids(ws, set).await.unwrap();
    lease.init_total(items.len() as u64).await.unwrap();
    let units: Vec<UnitRecord> = items[..removed]
        .iter()
        .map(|item| {
            UnitRecord::new(format!("item/{item}"), UnitOutcome::Succeeded).with_artifact(
                UnitArtifact::BackupItemDeleted {
                    backup_set_id: set.to_owned(),
                    item_id: item.clone(),
                },
            )
        })
        .collect();
    lease.record_units(&units).await.unwrap();
    let outcome = if removed == items.len() {
        Outcome::Succeeded
    } else {
        Outcome::Failed
    };
    lease.complete(Completion::new(outcome)).await.unwrap();
    store.complete_job(&job.fence).await.unwrap();
}

async fn world(store: Store) -> World {
    let ws = store.create_workspace("msp").await.unwrap().id;
    let other = store.create_workspace("other").await.unwrap().id;
    let tenant = |ws: String, name: &'static str| {
        let store = store.clone();
        async move { store.create_tenant(&ws, name, "demo:healthy").await.unwrap().id }
    };
    let tenant_a = tenant(ws.clone(), "contoso").await;
    let tenant_b = tenant(ws.clone(), "fabrikam").await;
    let tenant_o = tenant(other.clone(), "woodgrove").await;
    let admin = user(&store, &ws, "admin@t", Role::Admin, &[]).await;
    let operator = user(&store, &ws, "operator@t", Role::Operator, &[]).await;
    let restricted = user(
        &store,
        &ws,
        "restricted@t",
        Role::Admin,
        std::slice::from_ref(&tenant_a),
    )
    .await;
    let set_a = set(&store, &ws, &tenant_a, 3).await;
    let set_b = set(&store, &ws, &tenant_b, 3).await;
    let foreign_set = set(&store, &other, &tenant_o, 1).await;
    World {
        state: AppState {
            files: None,
            evidence_key: None,
            store: store.clone(),
            registry: opsledger_families::registry(Default::default()),
            wake: Arc::new(tokio::sync::Notify::new()),
            providers: Default::default(),
        },
        ws,
        tenant_a,
        tenant_b,
        admin,
        operator,
        restricted,
        set_a,
        set_b,
        foreign_set,
    }
}

impl World {
    /// `POST …/operations` with `body`: status, JSON and raw body.
    async fn start(&self, token: &str, body: Value) -> (u16, Value, String) {
        let req = Request::builder()
            .method("POST")
            .uri(format!("/api/v1/workspaces/{}/operations", self.ws))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap();
        let res = opsledger_server::router(self.state.clone())
            .oneshot(req)
            .await
            .unwrap();
        let status = res.status().as_u16();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
        let raw = String::from_utf8_lossy(&bytes).into_owned();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null), raw)
    }

    async fn delete(&self, token: &str, tenant: &str, set: &str) -> (u16, Value, String) {
        self.start(
            token,
            json!({"type": "backup_set.delete", "tenant_id": tenant, "params": {"backup_set_id": set}}),
        )
        .await
    }

    async fn update(&self, token: &str, tenant: &str, params: Value) -> (u16, Value, String) {
        self.start(
            token,
            json!({"type": "backup_set.update", "tenant_id": tenant, "params": params}),
        )
        .await
    }
}

/// The rows a start could touch, as text: "nothing changed" means equal.
async fn snapshot(store: &Store) -> Vec<String> {
    let mut out = Vec::new();
    for t in ["operation_runs", "jobs", "backup_sets", "backup_items"] {
        let mut rows: Vec<String> = raw_on_pool!(store, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM {t}")))
                .fetch_all(pool)
                .await
                .unwrap();
            rows.iter()
                .map(|r| {
                    use sqlx::Row;
                    (0..r.len())
                        .map(|i| {
                            r.try_get::<Option<String>, _>(i)
                                .map(|v| format!("{v:?}"))
                                .or_else(|_| r.try_get::<Option<i64>, _>(i).map(|v| format!("{v:?}")))
                                .unwrap_or_else(|_| "?".into())
                        })
                        .collect::<Vec<_>>()
                        .join("|")
                })
                .collect()
        });
        rows.sort();
        out.push(format!("{t}: {}", rows.join("\n")));
    }
    out
}

const NOT_FOUND: &str = r#"{"error":{"code":"not_found","message":"backup set not found"}}"#;

both_backends!(
    a_set_that_does_not_exist_for_the_caller_is_one_404,
    |store: Store| async move {
        let w = world(store.clone()).await;
        let nowhere = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
        // Deleted whole, and deleted part-way (items left).
        let gone = set(&store, &w.ws, &w.tenant_a, 2).await;
        delete(&store, &w.ws, &w.tenant_a, &gone, 2).await;
        let part = set(&store, &w.ws, &w.tenant_a, 2).await;
        delete(&store, &w.ws, &w.tenant_a, &part, 1).await;
        let before = snapshot(&store).await;
        let refused = [
            // Exists nowhere; of another workspace.
            w.delete(&w.admin, &w.tenant_a, nowhere).await,
            w.delete(&w.admin, &w.tenant_a, &w.foreign_set).await,
            w.update(&w.admin, &w.tenant_a, json!({"backup_set_id": nowhere, "name": "x"})).await,
            w.update(&w.admin, &w.tenant_a, json!({"backup_set_id": w.foreign_set, "name": "x"})).await,
            // Of a tenant the member may not see.
            w.delete(&w.restricted, &w.tenant_a, &w.set_b).await,
            w.update(&w.restricted, &w.tenant_a, json!({"backup_set_id": w.set_b, "label": ""})).await,
            // Deleted: nothing left to delete, nothing to update or restore.
            w.delete(&w.admin, &w.tenant_a, &gone).await,
            w.update(&w.admin, &w.tenant_a, json!({"backup_set_id": gone, "retention_locked": false})).await,
            w.update(&w.admin, &w.tenant_a, json!({"backup_set_id": part, "name": "x"})).await,
            w.start(
                &w.admin,
                json!({"type": "backup_set.restore", "tenant_id": w.tenant_a, "params": {"backup_set_id": part}}),
            )
            .await,
        ];
        for (i, (status, _, raw)) in refused.iter().enumerate() {
            assert_eq!((*status, raw.as_str()), (404, NOT_FOUND), "case {i}");
        }
        assert_eq!(snapshot(&store).await, before, "a refused start changes nothing");
        // A delete that ended part-way is finished by another.
        let (status, body, _) = w.delete(&w.admin, &w.tenant_a, &part).await;
        assert_eq!((status, body["status"].as_str()), (202, Some("queued")), "{body}");
    }
);

both_backends!(
    deleting_a_locked_or_used_set_is_409_before_any_run,
    |store: Store| async move {
        let w = world(store.clone()).await;
        lock(&store, &w.ws, &w.tenant_a, &w.set_a).await;
        let used = set(&store, &w.ws, &w.tenant_a, 2).await;
        // Still being written by its backup.
        let writing = start(
            &store,
            &w.ws,
            &w.tenant_b,
            RunType::BackupSetAddPolicies,
            json!({}),
        )
        .await;
        let job = claim(&store, &writing).await;
        let open = testing::lease(&store, &job.fence, &writing)
            .await
            .backup_set("open", None)
            .await
            .unwrap();
        // Read by a queued restore (into another tenant: restores read any set).
        start(
            &store,
            &w.ws,
            &w.tenant_b,
            RunType::BackupSetRestore,
            json!({"backup_set_id": used}),
        )
        .await;
        let before = snapshot(&store).await;
        let (status, body, _) = w.delete(&w.admin, &w.tenant_a, &w.set_a).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (409, Some("backup_set_locked")),
            "{body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("retention_locked: false"),
            "{body}"
        );
        let (status, body, _) = w.delete(&w.admin, &w.tenant_a, &used).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (409, Some("backup_set_in_use")),
            "{body}"
        );
        let (status, body, _) = w.delete(&w.admin, &w.tenant_b, &open).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (409, Some("backup_set_in_use")),
            "{body}"
        );
        assert!(
            body["error"]["message"].as_str().unwrap().contains(&writing),
            "{body}"
        );
        assert_eq!(
            snapshot(&store).await,
            before,
            "no run exists for a refused delete"
        );

        // An update that only unlocks the locked set is how it becomes deletable.
        let (status, body, _) = w
            .update(
                &w.admin,
                &w.tenant_a,
                json!({"backup_set_id": w.set_a, "retention_locked": false}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["type"], "backup_set.update");
        assert_eq!(
            body["context"]["params"],
            json!({"backup_set_id": w.set_a, "retention_locked": false}),
            "false is kept: it is the change"
        );
    }
);

both_backends!(
    starts_that_pass_the_checks_create_one_run,
    |store: Store| async move {
        let w = world(store.clone()).await;
        let (status, first, _) = w.delete(&w.admin, &w.tenant_b, &w.set_b).await;
        assert_eq!(
            (status, first["status"].as_str()),
            (202, Some("queued")),
            "{first}"
        );
        assert_eq!(first["type"], "backup_set.delete");
        // Its dedup key is the set: the same delete again is the same run.
        let (status, again, _) = w.delete(&w.admin, &w.tenant_b, &w.set_b).await;
        assert_eq!((status, &again["id"]), (202, &first["id"]));

        let before = snapshot(&store).await;
        // Deleting needs the admin capability; updating, an operator's.
        let (status, body, _) = w.delete(&w.operator, &w.tenant_b, &w.set_b).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{body}"
        );
        for (params, code) in [
            (json!({"backup_set_id": w.set_b}), "missing_param"),
            (json!({"name": "x"}), "missing_param"),
            (json!({"backup_set_id": w.set_b, "name": ""}), "invalid_params"),
            (
                json!({"backup_set_id": w.set_b, "name": "a\u{202e}b"}),
                "invalid_params",
            ),
            (
                json!({"backup_set_id": w.set_b, "name": "x".repeat(201)}),
                "invalid_params",
            ),
            (
                json!({"backup_set_id": w.set_b, "retention_locked": "yes"}),
                "invalid_params",
            ),
            (
                json!({"backup_set_id": w.set_b.to_uppercase(), "name": "x"}),
                "invalid_params",
            ),
            (
                json!({"backup_set_id": w.set_b, "colour": "red"}),
                "unknown_param",
            ),
        ] {
            let (status, body, _) = w.update(&w.operator, &w.tenant_b, params.clone()).await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (400, Some(code)),
                "{params}: {body}"
            );
        }
        // Locking or unlocking is an admin's: it decides what may be deleted.
        for locked in [true, false] {
            let (status, body, _) = w
                .update(
                    &w.operator,
                    &w.tenant_b,
                    json!({"backup_set_id": w.set_b, "retention_locked": locked}),
                )
                .await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (403, Some("forbidden")),
                "{body}"
            );
        }
        assert_eq!(snapshot(&store).await, before);
        let (status, body, _) = w
            .update(
                &w.operator,
                &w.tenant_a,
                json!({"backup_set_id": w.set_a, "name": "  Weekly  ", "label": ""}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(
            body["context"]["params"],
            json!({"backup_set_id": w.set_a, "name": "Weekly", "label": ""})
        );
        // A restricted admin deletes a set of their tenant.
        let (status, body, _) = w.delete(&w.restricted, &w.tenant_a, &w.set_a).await;
        assert_eq!(status, 202, "{body}");
    }
);

/// A set of another tenant than the run's is `400 backup_set_other_tenant`
/// — once the start passes the run's tenant to the check
/// (`named_artifacts::check_start`); until then the run is created and its
/// family ends it `blocked` with the same code (`backup_set_lifecycle.rs`).
async fn a_set_of_another_tenant_is_400(store: Store) {
    let w = world(store.clone()).await;
    let before = snapshot(&store).await;
    let (status, body, _) = w.delete(&w.admin, &w.tenant_a, &w.set_b).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("backup_set_other_tenant")),
        "{body}"
    );
    let (status, body, _) = w
        .update(
            &w.admin,
            &w.tenant_a,
            json!({"backup_set_id": w.set_b, "name": "x"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("backup_set_other_tenant")),
        "{body}"
    );
    assert_eq!(snapshot(&store).await, before);
}

both_backends!(
    a_set_of_another_tenant_is_refused_at_start,
    |store: Store| async move {
        a_set_of_another_tenant_is_400(store).await;
    }
);

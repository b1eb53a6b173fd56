//! Starting `backup_set.restore` over the API, on both databases: the named
//! backup set must exist in the workspace and be visible to the caller
//! (else `404`, the same body as for a set that exists nowhere), the named
//! items must be in it (`400`), and a refused start creates no run.

use axum::body::Body;
use axum::http::{Request, header};
use opsledger_core::access::Role;
use opsledger_core::{Outcome, RunType};
use opsledger_engine::{Runner, RunnerConfig};
use opsledger_server::AppState;
use opsledger_store::{NewRun, Store, both_backends};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

struct World {
    state: AppState,
    ws: String,
    tenant_b: String,
    set_a: String,
    item_a: String,
    foreign_set: String,
    admin: String,
    operator: String,
    restricted_admin: String,
    outsider: String,
}

async fn user(store: &Store, ws: &str, email: &str, role: Role) -> String {
    let id = store.upsert_user(email, "unused").await.unwrap();
    store.set_membership(ws, &id, role).await.unwrap();
    store.issue_token(&id, "test").await.unwrap()
}

/// Inventory and a backup of `tenant`, through the real runner: the set's id.
async fn backup(store: &Store, ws: &str, tenant: &str) -> String {
    let registry = opsledger_families::registry(Default::default());
    let shutdown = CancellationToken::new();
    let config = RunnerConfig {
        poll_interval: Duration::from_millis(10),
        ..Default::default()
    };
    let runner = tokio::spawn(Runner::new(store.clone(), registry, config).run(shutdown.clone()));
    let mut last = None;
    for t in [RunType::InventorySync, RunType::BackupSetAddPolicies] {
        let new = NewRun::on_tenant(ws, tenant, t, "test", json!({}));
        let id = store.create_run(new).await.unwrap().into_run().id;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let run = loop {
            let r = store.get_run(&id).await.unwrap().unwrap();
            if r.is_completed() {
                break r;
            }
            assert!(tokio::time::Instant::now() < deadline, "{r:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(run.outcome, Outcome::Succeeded, "{run:?}");
        last = Some(run);
    }
    shutdown.cancel();
    runner.await.unwrap();
    last.unwrap().context["backup_set"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn world(store: Store) -> World {
    let ws = store.create_workspace("msp").await.unwrap().id;
    let other = store.create_workspace("other").await.unwrap().id;
    let tenant_a = store
        .create_tenant(&ws, "contoso", "demo:healthy")
        .await
        .unwrap()
        .id;
    let tenant_b = store
        .create_tenant(&ws, "fabrikam", "demo:healthy")
        .await
        .unwrap()
        .id;
    let tenant_o = store
        .create_tenant(&other, "woodgrove", "demo:healthy")
        .await
        .unwrap()
        .id;
    let set_a = backup(&store, &ws, &tenant_a).await;
    let foreign_set = backup(&store, &other, &tenant_o).await;
    let item_a = store.backup_item_heads(&set_a).await.unwrap()[0].id.clone();
    let admin = user(&store, &ws, "admin@t", Role::Admin).await;
    let operator = user(&store, &ws, "operator@t", Role::Operator).await;
    let outsider = user(&store, &other, "outsider@t", Role::Admin).await;
    let restricted_id = store.upsert_user("restricted@t", "unused").await.unwrap();
    store
        .add_member(&ws, &restricted_id, Role::Admin, std::slice::from_ref(&tenant_b))
        .await
        .unwrap();
    let restricted_admin = store.issue_token(&restricted_id, "test").await.unwrap();
    World {
        state: AppState {
            files: None,
            evidence_key: None,
            store,
            registry: opsledger_families::registry(Default::default()),
            wake: Arc::new(tokio::sync::Notify::new()),
            providers: Default::default(),
        },
        ws,
        tenant_b,
        set_a,
        item_a,
        foreign_set,
        admin,
        operator,
        restricted_admin,
        outsider,
    }
}

async fn start(w: &World, token: &str, params: Value) -> (u16, Value, String) {
    let body = json!({"type": "backup_set.restore", "tenant_id": w.tenant_b, "params": params});
    let req = Request::builder()
        .method("POST")
        .uri(format!("/api/v1/workspaces/{}/operations", w.ws))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap();
    let res = opsledger_server::router(w.state.clone())
        .oneshot(req)
        .await
        .unwrap();
    let status = res.status().as_u16();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
    let raw = String::from_utf8_lossy(&bytes).into_owned();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null), raw)
}

async fn runs(w: &World) -> usize {
    let filter = opsledger_store::RunFilter {
        limit: 500,
        ..Default::default()
    };
    let v = opsledger_store::Visibility {
        workspace_id: w.ws.clone(),
        tenants: None,
    };
    w.state.store.list_runs(&v, &filter).await.unwrap().0.len()
}

both_backends!(
    a_named_set_must_be_the_callers_to_see,
    |store: Store| async move {
        let w = world(store).await;
        let before = runs(&w).await;
        let missing = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
        let (s1, _, nowhere) = start(&w, &w.admin, json!({"backup_set_id": missing})).await;
        let (s2, _, foreign) = start(&w, &w.admin, json!({"backup_set_id": w.foreign_set})).await;
        // A member restricted to the target cannot restore another tenant's set.
        let (s3, _, hidden) = start(&w, &w.restricted_admin, json!({"backup_set_id": w.set_a})).await;
        assert_eq!((s1, s2, s3), (404, 404, 404));
        assert_eq!(nowhere, foreign, "no existence leak");
        assert_eq!(nowhere, hidden, "no existence leak");
        let (s, body, _) = start(
            &w,
            &w.admin,
            json!({"backup_set_id": w.set_a, "item_ids": [missing]}),
        )
        .await;
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (400, Some("unknown_backup_item"))
        );
        let (s, body, _) = start(&w, &w.admin, json!({"item_ids": [w.item_a]})).await;
        assert_eq!((s, body["error"]["code"].as_str()), (400, Some("missing_param")));
        for bad in [
            json!({"backup_set_id": "not-an-id"}),
            json!({"backup_set_id": w.set_a.to_uppercase()}),
            json!({"dry_run": "yes"}),
            json!({"item_ids": []}),
        ] {
            let (s, body, raw) = start(&w, &w.admin, bad.clone()).await;
            assert_eq!(s, 400, "{bad}: {raw}");
            assert!(body["error"]["code"].as_str().is_some(), "{raw}");
        }
        let (s, _, _) = start(&w, &w.operator, json!({"backup_set_id": w.set_a})).await;
        assert_eq!(s, 403, "restoring is an admin's");
        let (s, _, _) = start(&w, &w.outsider, json!({"backup_set_id": w.set_a})).await;
        assert_eq!(s, 404);
        assert_eq!(runs(&w).await, before, "no refused start created a run");

        // Another tenant's set of the workspace restores into the target.
        let (s, body, raw) = start(
            &w,
            &w.admin,
            json!({"backup_set_id": w.set_a, "item_ids": [w.item_a], "dry_run": true}),
        )
        .await;
        assert_eq!(s, 202, "{raw}");
        assert_eq!(body["type"], "backup_set.restore");
        assert_eq!(body["tenant_id"], w.tenant_b.as_str());
        assert_eq!(runs(&w).await, before + 1);
    }
);

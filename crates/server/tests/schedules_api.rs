//! `…/schedules` through the real router on both databases: admins manage,
//! members read, outsiders and restricted members see only what is theirs
//! (`404` alike), and every bad input is a precise `400` that stores nothing.

use axum::body::Body;
use axum::http::{Request, header};
use opsledger_core::access::Role;
use opsledger_server::AppState;
use opsledger_store::{Store, both_backends};
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

struct World {
    state: AppState,
    ws: String,
    tenant_a: String,
    tenant_b: String,
    foreign_tenant: String,
    admin: String,
    viewer: String,
    restricted_admin: String,
    outsider: String,
}

async fn user(store: &Store, ws: &str, email: &str, role: Role) -> String {
    let id = store.upsert_user(email, "unused").await.unwrap();
    store.set_membership(ws, &id, role).await.unwrap();
    store.issue_token(&id, "test").await.unwrap()
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
    let foreign_tenant = store
        .create_tenant(&other, "woodgrove", "demo:healthy")
        .await
        .unwrap()
        .id;
    let admin = user(&store, &ws, "admin@t", Role::Admin).await;
    let viewer = user(&store, &ws, "viewer@t", Role::Viewer).await;
    let outsider = user(&store, &other, "outsider@t", Role::Admin).await;
    let rid = store.upsert_user("restricted@t", "unused").await.unwrap();
    store
        .add_member(&ws, &rid, Role::Admin, std::slice::from_ref(&tenant_b))
        .await
        .unwrap();
    let restricted_admin = store.issue_token(&rid, "test").await.unwrap();
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
        tenant_a,
        tenant_b,
        foreign_tenant,
        admin,
        viewer,
        restricted_admin,
        outsider,
    }
}

async fn call(w: &World, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("/api/v1/workspaces/{}/schedules{path}", w.ws))
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    if body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let body = body.map(|b| serde_json::to_vec(&b).unwrap()).unwrap_or_default();
    let res = opsledger_server::router(w.state.clone())
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn nightly(tenant: Option<&str>) -> Value {
    json!({"name": "nightly", "run_type": "backup.schedule.execute", "tenant_id": tenant,
           "cron": "0 2 * * *", "timezone": "Europe/Brussels",
           "params": {"policy_types": ["deviceConfigurations", "namedLocations"]}, "retention_keep": 7})
}

both_backends!(admins_manage_members_read, |store: Store| async move {
    let w = world(store).await;
    let (s, created) = call(&w, &w.admin, "POST", "", Some(nightly(Some(&w.tenant_a)))).await;
    assert_eq!(s, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["enabled"], true);
    assert!(created["next_due_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        created["params"]["policy_types"],
        json!(["deviceConfigurations", "namedLocations"])
    );
    assert_eq!(created["retention_keep"], 7);

    let (s, list) = call(&w, &w.viewer, "GET", "", None).await;
    assert_eq!((s, list["items"].as_array().unwrap().len()), (200, 1));
    let (s, one) = call(&w, &w.viewer, "GET", &format!("/{id}"), None).await;
    assert_eq!((s, one["history"].as_array().map(Vec::len)), (200, Some(0)));
    let (s, _) = call(&w, &w.viewer, "POST", "", Some(nightly(None))).await;
    assert_eq!(s, 403);
    let (s, _) = call(&w, &w.viewer, "DELETE", &format!("/{id}"), None).await;
    assert_eq!(s, 403);

    let (s, off) = call(
        &w,
        &w.admin,
        "PATCH",
        &format!("/{id}"),
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(
        (s, off["enabled"].clone(), off["next_due_at"].clone()),
        (200, json!(false), Value::Null)
    );
    let (s, _) = call(
        &w,
        &w.admin,
        "PATCH",
        &format!("/{id}"),
        Some(json!({"run_type": "baseline.compare"})),
    )
    .await;
    assert_eq!(s, 400);
    let (s, dup) = call(&w, &w.admin, "POST", "", Some(nightly(Some(&w.tenant_b)))).await;
    assert_eq!((s, dup["error"]["code"].as_str()), (409, Some("schedule_exists")));

    // Outsiders and a member restricted to another tenant: 404 alike.
    let (s1, a) = call(&w, &w.outsider, "GET", &format!("/{id}"), None).await;
    let (s2, b) = call(&w, &w.restricted_admin, "GET", &format!("/{id}"), None).await;
    let (s3, c) = call(&w, &w.admin, "GET", "/0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", None).await;
    assert_eq!((s1, s2, s3), (404, 404, 404));
    assert_eq!(b, c, "no existence leak");
    assert_eq!(a["error"]["code"], "not_found");
    let (s, list) = call(&w, &w.restricted_admin, "GET", "", None).await;
    assert_eq!((s, list["items"].as_array().unwrap().len()), (200, 0));
    // A restricted admin manages their own tenant's schedules, never all-tenant ones.
    let mut own = nightly(Some(&w.tenant_b));
    own["name"] = json!("theirs");
    let (s, _) = call(&w, &w.restricted_admin, "POST", "", Some(own)).await;
    assert_eq!(s, 201);
    let mut all = nightly(None);
    all["name"] = json!("everyone");
    let (s, _) = call(&w, &w.restricted_admin, "POST", "", Some(all)).await;
    assert_eq!(s, 403);
    // …nor compares their tenant against what they cannot see: another
    // tenant's profile, snapshot or backup set is not found, as it would be
    // at a start (and a name or id that exists nowhere likewise).
    w.state
        .store
        .create_baseline_profile(&w.ws, "golden", &w.tenant_a, None, "test")
        .await
        .unwrap();
    for (params, code) in [
        (json!({"profile": "golden"}), "profile_not_found"),
        (json!({"profile": "nowhere"}), "profile_not_found"),
        (
            json!({"baseline_snapshot_id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"}),
            "baseline_snapshot_not_found",
        ),
        (
            json!({"backup_set_id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"}),
            "backup_set_not_found",
        ),
    ] {
        let compare = json!({"name": "drift", "run_type": "baseline.compare", "tenant_id": w.tenant_b,
                             "cron": "0 6 * * *", "timezone": "UTC", "params": params});
        let (s, body) = call(&w, &w.restricted_admin, "POST", "", Some(compare)).await;
        assert_eq!((s, body["error"]["code"].as_str()), (404, Some(code)), "{params}");
    }
    // The workspace admin sees the golden profile: the same schedule is made.
    let compare = json!({"name": "drift", "run_type": "baseline.compare", "tenant_id": w.tenant_b,
                         "cron": "0 6 * * *", "timezone": "UTC", "params": {"profile": "golden"}});
    let (s, body) = call(&w, &w.admin, "POST", "", Some(compare)).await;
    assert_eq!(s, 201, "{body}");

    let (s, _) = call(&w, &w.admin, "DELETE", &format!("/{id}"), None).await;
    assert_eq!(s, 204);
    let (s, _) = call(&w, &w.admin, "GET", &format!("/{id}"), None).await;
    assert_eq!(s, 404);
});

both_backends!(bad_input_is_named_and_stores_nothing, |store: Store| async move {
    let w = world(store).await;
    let with = |k: &str, v: Value| {
        let mut b = nightly(Some(&w.tenant_a));
        b[k] = v;
        b
    };
    for (body, status, code) in [
        (with("cron", json!("61 * * * *")), 400, "invalid_schedule"),
        (with("cron", json!("0 2 * *")), 400, "invalid_schedule"),
        (with("cron", json!("0 0 31 2 *")), 400, "invalid_schedule"),
        (with("timezone", json!("Mars/Olympus")), 400, "invalid_schedule"),
        (with("run_type", json!("inventory.sync")), 400, "invalid_run_type"),
        // A compare schedule's runs take a compare's parameters, not a backup's.
        (with("run_type", json!("baseline.compare")), 400, "unknown_param"),
        (
            with("params", json!({"policy_types": ["nope"]})),
            400,
            "invalid_params",
        ),
        (with("params", json!({"schedule_id": "x"})), 400, "invalid_params"),
        (with("params", json!({"bogus": 1})), 400, "unknown_param"),
        (with("retention_keep", json!(0)), 400, "invalid_retention"),
        (with("retention_keep", json!(-1)), 400, "invalid_body"),
        (with("name", json!("")), 400, "invalid_name"),
        (with("name", json!("a\u{0}b")), 400, "invalid_name"),
        (with("extra", json!(1)), 400, "invalid_body"),
        (with("tenant_id", json!(w.foreign_tenant)), 404, "not_found"),
        (with("tenant_id", json!("not-an-id")), 400, "invalid_id"),
        (json!({"name": "x", "cron": "0 2 * * *"}), 400, "missing_field"),
    ] {
        let (s, answer) = call(&w, &w.admin, "POST", "", Some(body.clone())).await;
        assert_eq!(
            (s, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {answer}"
        );
    }
    let (s, list) = call(&w, &w.admin, "GET", "", None).await;
    assert_eq!(
        (s, list["items"].as_array().unwrap().len()),
        (200, 0),
        "nothing was stored"
    );
    let _ = &w.tenant_b;
});

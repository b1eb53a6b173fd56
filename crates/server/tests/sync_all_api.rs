//! `workspace.inventory.sync_all` through the real router, on both
//! databases: started by an operator; while running, its detail shows the
//! composite progress with each child's own progress and no top-level
//! percentage; the children are in the operations list with `parent_id`;
//! it ends `partially_succeeded` over demo tenants healthy + partial +
//! blocked. A member restricted to some tenants may not start it (`403`,
//! nothing created) nor see it (`404`), and sees only their tenant's child.
//!
//! The parent's plan is executed by hand (its job claimed like a runner's)
//! so the running state is observed without depending on timing; the
//! children then run in an in-process runner.

use axum::body::Body;
use axum::http::{Request, header};
use opsledger_core::Run;
use opsledger_core::access::Role;
use opsledger_engine::{Handler, RunContext, Runner, RunnerConfig};
use opsledger_families::workspace_inventory_sync_all::SyncAll;
use opsledger_server::AppState;
use opsledger_store::{Store, both_backends};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

struct World {
    state: AppState,
    ws: String,
    /// demo:healthy, demo:partial, demo:blocked.
    tenants: Vec<String>,
    operator: String,
    /// An operator restricted to the healthy tenant.
    restricted: String,
}

async fn user(store: &Store, ws: &str, email: &str, role: Role, tenants: &[String]) -> String {
    let id = store.upsert_user(email, "unused").await.unwrap();
    store.add_member(ws, &id, role, tenants).await.unwrap();
    store.issue_token(&id, "test").await.unwrap()
}

async fn world(store: Store) -> World {
    let ws = store.create_workspace("msp").await.unwrap().id;
    let mut tenants = Vec::new();
    for profile in ["healthy", "partial", "blocked"] {
        let t = store
            .create_tenant(&ws, profile, &format!("demo:{profile}"))
            .await
            .unwrap();
        tenants.push(t.id);
    }
    let operator = user(&store, &ws, "operator@t", Role::Operator, &[]).await;
    let restricted = user(
        &store,
        &ws,
        "restricted@t",
        Role::Operator,
        std::slice::from_ref(&tenants[0]),
    )
    .await;
    World {
        state: AppState {
            store,
            registry: opsledger_families::registry(opsledger_providers::ProviderSettings::default()),
            wake: Arc::new(tokio::sync::Notify::new()),
            providers: Default::default(),
            files: None,
            evidence_key: None,
        },
        ws,
        tenants,
        operator,
        restricted,
    }
}

/// One request through the real router; the status and the JSON body.
async fn call(w: &World, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
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

/// The parent's run job, claimed and executed by hand (one runner attempt).
async fn plan_by_hand(store: &Store, parent: &str) {
    let job = store
        .claim_jobs("by-hand", 100, 60_000)
        .await
        .unwrap()
        .into_iter()
        .find(|j| j.run_id == parent)
        .expect("the parent's job");
    let run = store.get_run(parent).await.unwrap().unwrap();
    let lease = opsledger_store::testing::lease(store, &job.fence, parent).await;
    SyncAll
        .execute(RunContext::new(run, lease, job.attempt, CancellationToken::new()))
        .await
        .unwrap();
    assert!(store.complete_job(&job.fence).await.unwrap());
}

/// Runs the runner until run `id` completes.
async fn run_to_end(store: &Store, id: &str) -> Run {
    let config = RunnerConfig {
        concurrency: 4,
        poll_interval: Duration::from_millis(10),
        ..Default::default()
    };
    let shutdown = CancellationToken::new();
    let registry = opsledger_families::registry(opsledger_providers::ProviderSettings::default());
    let runner = tokio::spawn(Runner::new(store.clone(), registry, config).run(shutdown.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let run = loop {
        let r = store.get_run(id).await.unwrap().unwrap();
        if r.is_completed() {
            break r;
        }
        assert!(tokio::time::Instant::now() < deadline, "still not done: {r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    shutdown.cancel();
    runner.await.unwrap();
    run
}

fn items(list: &Value) -> &Vec<Value> {
    list["items"].as_array().unwrap()
}

both_backends!(
    sync_all_shows_its_children_and_composite_progress,
    |store: Store| async move {
        let w = world(store).await;
        let store = w.state.store.clone();
        let ops = format!("/api/v1/workspaces/{}/operations", w.ws);
        let start = json!({"type": "workspace.inventory.sync_all"});

        // Not for a member restricted to some tenants: 403, nothing created.
        let (status, body) = call(&w, &w.restricted, "POST", &ops, Some(start.clone())).await;
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")));
        let (_, list) = call(&w, &w.operator, "GET", &ops, None).await;
        assert!(items(&list).is_empty(), "{list}");

        let (status, started) = call(&w, &w.operator, "POST", &ops, Some(start.clone())).await;
        assert_eq!(status, 202, "{started}");
        assert_eq!(started["type"], "workspace.inventory.sync_all");
        assert_eq!(started["tenant_id"], Value::Null);
        let parent = started["id"].as_str().unwrap().to_owned();
        // A second start while it is active is the same run.
        let (status, again) = call(&w, &w.operator, "POST", &ops, Some(start)).await;
        assert_eq!((status, &again["id"]), (202, &started["id"]));

        plan_by_hand(&store, &parent).await;
        let detail_path = format!("{ops}/{parent}");
        let (status, detail) = call(&w, &w.operator, "GET", &detail_path, None).await;
        assert_eq!(status, 200, "{detail}");
        assert_eq!(detail["status"], "running");
        let progress = &detail["progress"];
        assert_eq!(progress["mode"], "composite", "{progress}");
        assert_eq!(progress["percent"], Value::Null, "{progress}");
        assert_eq!(progress["total"], Value::Null, "{progress}");
        assert_eq!(progress["children"]["total"], 3, "{progress}");
        assert_eq!(progress["children"]["completed"], 0, "{progress}");
        let active = progress["children"]["active"].as_array().unwrap();
        assert_eq!(active.len(), 3);
        let mut tenants: Vec<&str> = active.iter().map(|a| a["tenant_id"].as_str().unwrap()).collect();
        tenants.sort();
        let mut expected: Vec<&str> = w.tenants.iter().map(String::as_str).collect();
        expected.sort();
        assert_eq!(tenants, expected);
        for a in active {
            assert_eq!(a["type"], "inventory.sync");
            assert_eq!(a["progress"]["mode"], "none", "queued: {a}");
            assert_eq!(a["progress"]["label"], "Queued");
        }

        // The children, in the list with their parent.
        let (_, list) = call(
            &w,
            &w.operator,
            "GET",
            &format!("{ops}?type=inventory.sync"),
            None,
        )
        .await;
        assert_eq!(items(&list).len(), 3, "{list}");
        assert!(items(&list).iter().all(|r| r["parent_id"] == parent.as_str()));

        let done = run_to_end(&store, &parent).await;
        assert_eq!(done.outcome, opsledger_core::Outcome::PartiallySucceeded);
        let (_, detail) = call(&w, &w.operator, "GET", &detail_path, None).await;
        assert_eq!(
            (detail["status"].as_str(), detail["outcome"].as_str()),
            (Some("completed"), Some("partially_succeeded"))
        );
        let progress = &detail["progress"];
        assert_eq!(progress["mode"], "composite", "{progress}");
        assert_eq!(progress["percent"], Value::Null);
        assert_eq!(
            (&progress["children"]["completed"], &progress["children"]["total"]),
            (&json!(3), &json!(3))
        );
        assert_eq!(progress["label"], "3 of 3 completed");
        let (_, list) = call(&w, &w.operator, "GET", &ops, None).await;
        let outcomes: Vec<(&str, &str)> = items(&list)
            .iter()
            .filter(|r| r["parent_id"] == parent.as_str())
            .map(|r| (r["tenant_id"].as_str().unwrap(), r["outcome"].as_str().unwrap()))
            .collect();
        assert_eq!(outcomes.len(), 3);
        for (tenant, outcome) in [
            (&w.tenants[0], "succeeded"),
            (&w.tenants[1], "partially_succeeded"),
            (&w.tenants[2], "blocked"),
        ] {
            assert!(outcomes.contains(&(tenant.as_str(), outcome)), "{outcomes:?}");
        }

        // The restricted member: the parent is not theirs to see; of its
        // children, only their tenant's.
        let (status, _) = call(&w, &w.restricted, "GET", &detail_path, None).await;
        assert_eq!(status, 404);
        let (_, list) = call(&w, &w.restricted, "GET", &ops, None).await;
        let seen: Vec<&str> = items(&list)
            .iter()
            .map(|r| r["tenant_id"].as_str().unwrap())
            .collect();
        assert_eq!(seen, [w.tenants[0].as_str()], "{list}");
    }
);

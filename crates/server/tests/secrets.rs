//! The Graph client secret never reaches the database, an API answer or a
//! run's failures — even when the token endpoint quotes it back in an error
//! (the fake's hostile mode) — on both databases.

use axum::body::Body;
use axum::http::{Request, header};
use opsledger_core::RunType;
use opsledger_core::access::Role;
use opsledger_engine::{Runner, RunnerConfig};
use opsledger_fakegraph::{FakeGraph, Fault, Model, Tenant};
use opsledger_providers::{GraphSettings, ProviderSettings, Secret};
use opsledger_server::AppState;
use opsledger_store::{NewRun, Store, both_backends, raw_on_pool};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const SECRET: &str = "S3cr3t~never-leak~7f1e";
const TENANT: &str = "contoso.onmicrosoft.com";

fn settings(fake: &FakeGraph) -> ProviderSettings {
    ProviderSettings {
        graph: GraphSettings {
            client_id: Some("app".into()),
            client_secret: Some(Secret::new(SECRET)),
            authority: fake.authority(),
            graph_url: fake.graph_url(),
            ..GraphSettings::default()
        },
        ..ProviderSettings::default()
    }
}

/// Every text cell of every table.
async fn database_text(store: &Store) -> String {
    let tables = [
        "workspaces",
        "tenants",
        "users",
        "memberships",
        "api_tokens",
        "operation_runs",
        "run_units",
        "run_failures",
        "jobs",
        "inventory_items",
        "backup_sets",
        "backup_items",
        "request_budget",
        "demo_objects",
    ];
    let mut out = String::new();
    for t in tables {
        let cells: Vec<String> = raw_on_pool!(store, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM {t}")))
                .fetch_all(pool)
                .await
                .unwrap();
            rows.iter()
                .flat_map(|r| {
                    use sqlx::Row;
                    (0..r.len())
                        .filter_map(|i| r.try_get::<Option<String>, _>(i).ok().flatten())
                        .collect::<Vec<_>>()
                })
                .collect()
        });
        out.push_str(&cells.join("\n"));
    }
    out
}

async fn sync(store: &Store, settings: ProviderSettings, ws: &str, tenant: &str) -> opsledger_core::Run {
    let new = NewRun::on_tenant(ws, tenant, RunType::InventorySync, "test", json!({}));
    let id = store.create_run(new).await.unwrap().into_run().id;
    let registry = opsledger_families::registry(settings);
    let config = RunnerConfig {
        poll_interval: Duration::from_millis(10),
        ..Default::default()
    };
    let shutdown = CancellationToken::new();
    let runner = tokio::spawn(Runner::new(store.clone(), registry, config).run(shutdown.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let run = loop {
        let r = store.get_run(&id).await.unwrap().unwrap();
        if r.is_completed() {
            break r;
        }
        assert!(tokio::time::Instant::now() < deadline, "{r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    shutdown.cancel();
    runner.await.unwrap();
    run
}

both_backends!(
    the_client_secret_is_never_stored_or_answered,
    |store: Store| async move {
        // One fake accepts our secret; the other wants another one and quotes
        // what it was sent in its error.
        let good = FakeGraph::start(
            Model::new("app", SECRET).tenant(
                TENANT,
                Tenant::default()
                    .with(
                        "deviceManagement/deviceConfigurations",
                        vec![json!({"id": "d1", "displayName": "D"})],
                    )
                    .with(
                        "deviceManagement/deviceCompliancePolicies",
                        vec![json!({"id": "c1", "displayName": "C"})],
                    ),
            ),
        )
        .await
        .unwrap();
        good.add_fault(Fault::always("deviceCompliancePolicies", 403));
        let mut hostile = Model::new("app", "another-secret").tenant(TENANT, Tenant::default());
        hostile.echo_secret_in_errors = true;
        let hostile = FakeGraph::start(hostile).await.unwrap();

        let ws = store.create_workspace("msp").await.unwrap().id;
        let t = store
            .create_tenant(&ws, "contoso", &format!("graph:{TENANT}"))
            .await
            .unwrap()
            .id;
        let partial = sync(&store, settings(&good), &ws, &t).await;
        assert_eq!(
            partial.outcome,
            opsledger_core::Outcome::PartiallySucceeded,
            "{partial:?}"
        );
        let refused = sync(&store, settings(&hostile), &ws, &t).await;
        assert_eq!(refused.outcome, opsledger_core::Outcome::Blocked, "{refused:?}");
        assert_eq!(refused.failures[0].code, "provider_auth_failed");

        // The API: the runs as shown, and a tenant add the hostile endpoint refuses.
        let admin = store.upsert_user("admin@t", "unused").await.unwrap();
        store.set_membership(&ws, &admin, Role::Admin).await.unwrap();
        let token = store.issue_token(&admin, "test").await.unwrap();
        let state = AppState {
            files: None,
            evidence_key: None,
            store: store.clone(),
            registry: opsledger_families::registry(settings(&hostile)),
            wake: Arc::new(tokio::sync::Notify::new()),
            providers: settings(&hostile),
        };
        let mut answers = String::new();
        for (method, path, body) in [
            (
                "GET",
                format!("/api/v1/workspaces/{ws}/operations/{}", partial.id),
                None,
            ),
            (
                "GET",
                format!("/api/v1/workspaces/{ws}/operations/{}", refused.id),
                None,
            ),
            ("GET", format!("/api/v1/workspaces/{ws}/tenants"), None),
            (
                "POST",
                format!("/api/v1/workspaces/{ws}/tenants"),
                Some(json!({"name": "other", "provider": format!("graph:{TENANT}")}).to_string()),
            ),
        ] {
            let req = Request::builder()
                .method(method)
                .uri(&path)
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.unwrap_or_default()))
                .unwrap();
            let res = opsledger_server::router(state.clone())
                .oneshot(req)
                .await
                .unwrap();
            let status = res.status().as_u16();
            let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if method == "POST" {
                assert_eq!(status, 422, "{text}");
            }
            answers.push_str(&text);
        }
        assert!(answers.contains("provider_auth_failed"), "{answers}");
        assert!(
            !answers.contains(SECRET),
            "an API answer holds the secret: {answers}"
        );
        let db = database_text(&store).await;
        assert!(db.contains("provider_auth_failed"), "the refusal is recorded");
        assert!(!db.contains(SECRET), "the database holds the secret");
    }
);

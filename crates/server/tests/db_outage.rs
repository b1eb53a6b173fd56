//! PostgreSQL connections terminated under a stream of API calls: reads are
//! retried once and otherwise answered `503` with `Retry-After`; no call is
//! ever a `500` (the tester saw 7 of 1 037 reads answer `500`).

use axum::body::Body;
use axum::http::{Request, header};
use opsledger_core::RunType;
use opsledger_core::access::Role;
use opsledger_server::AppState;
use opsledger_store::{NewRun, Store, testing};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tower::ServiceExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_connections_never_answer_500() {
    let Some(db) = testing::postgres().await else {
        return;
    };
    // The server's own pool, named so that only its connections are killed.
    let app_name = format!("olt_outage_{}", std::process::id());
    let store = Store::connect(&format!("{}&application_name={app_name}", db.url))
        .await
        .unwrap();
    let ws = store.create_workspace("msp").await.unwrap().id;
    let tenant = store
        .create_tenant(&ws, "contoso", "demo:healthy")
        .await
        .unwrap()
        .id;
    let user = store.upsert_user("op@t", "unused").await.unwrap();
    store.set_membership(&ws, &user, Role::Admin).await.unwrap();
    let token = store.issue_token(&user, "t").await.unwrap();
    let new = NewRun::on_tenant(&ws, &tenant, RunType::InventorySync, "test", json!({}));
    let run = store.create_run(new).await.unwrap().into_run().id;
    let state = AppState {
        files: None,
        evidence_key: None,
        store,
        registry: opsledger_families::registry(Default::default()),
        wake: Arc::new(tokio::sync::Notify::new()),
        providers: Default::default(),
    };

    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let stop = stop.clone();
        let admin = db.store.clone();
        let app_name = app_name.clone();
        tokio::spawn(async move {
            let mut killed = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let n: Vec<(bool,)> = match opsledger_store::testing::raw_pool(&admin) {
                    opsledger_store::testing::RawPool::Postgres(pool) => sqlx::query_as(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                    )
                    .bind(&app_name)
                    .fetch_all(pool)
                    .await
                    .unwrap(),
                    opsledger_store::testing::RawPool::Sqlite(_) => unreachable!(),
                };
                killed += n.len() as u64;
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            killed
        })
    };

    let ops = format!("/api/v1/workspaces/{ws}/operations");
    let paths = [
        ops.clone(),
        format!("{ops}/{run}"),
        format!("{ops}?status=queued"),
    ];
    let (mut ok, mut unavailable) = (0, 0);
    for i in 0..600 {
        let req = Request::builder()
            .uri(&paths[i % paths.len()])
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let res = opsledger_server::router(state.clone())
            .oneshot(req)
            .await
            .unwrap();
        match res.status().as_u16() {
            200 => ok += 1,
            503 => {
                assert_eq!(res.headers()[header::RETRY_AFTER], "1");
                let body = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
                let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(body["error"]["code"], "database_unavailable");
                unavailable += 1;
            }
            other => {
                let body = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
                panic!("request {i} answered {other}: {}", String::from_utf8_lossy(&body));
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let killed = killer.await.unwrap();
    eprintln!("600 reads while {killed} server connections were terminated: {ok} × 200, {unavailable} × 503");
    assert!(killed > 0, "the test must actually terminate connections");
    assert!(ok > 300, "most reads are answered despite the outage ({ok})");
}

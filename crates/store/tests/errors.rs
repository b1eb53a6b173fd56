//! Which database errors are transient (a retry may succeed) and which
//! writes may be retried, on real errors from both databases (OPERATIONS.md
//! never lets a database hiccup become a `500` or a write applied twice).

use opsledger_store::{StoreError, testing};
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use std::str::FromStr;
use std::time::Duration;

#[tokio::test]
async fn sqlite_busy_is_transient_and_a_constraint_violation_is_not() {
    let db = testing::sqlite().await;
    let opts = SqliteConnectOptions::from_str(&db.url)
        .unwrap()
        .busy_timeout(Duration::ZERO);
    let mut holder = SqliteConnection::connect_with(&opts).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut holder).await.unwrap();
    let mut other = SqliteConnection::connect_with(&opts).await.unwrap();
    let busy = sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap_err();
    let busy = StoreError::Database(busy);
    assert!(busy.is_transient(), "{busy}");
    assert!(
        busy.write_may_be_retried(),
        "a refused BEGIN never reached commit"
    );
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();

    let ws = db.store.create_workspace("w").await.unwrap();
    let dup = sqlx::query("INSERT INTO workspaces (id, name, created_at) VALUES ($1, 'x', 0)")
        .bind(&ws.id)
        .execute(&mut other)
        .await
        .unwrap_err();
    let dup = StoreError::Database(dup);
    assert!(
        !dup.is_transient(),
        "a unique violation will not change on retry: {dup}"
    );
    assert!(!dup.write_may_be_retried());
}

#[tokio::test]
async fn postgres_terminated_connection_is_transient() {
    let Some(db) = testing::postgres().await else {
        return;
    };
    let url = testing::postgres_url();
    let mut victim = PgConnection::connect(&url).await.unwrap();
    let (pid,): (i32,) = sqlx::query_as("SELECT pg_backend_pid()")
        .fetch_one(&mut victim)
        .await
        .unwrap();
    let mut killer = PgConnection::connect(&url).await.unwrap();
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&mut killer)
        .await
        .unwrap();
    let lost = sqlx::query("SELECT 1").execute(&mut victim).await.unwrap_err();
    let lost = StoreError::Database(lost);
    assert!(lost.is_transient(), "{lost}");

    let ws = db.store.create_workspace("w").await.unwrap();
    let dup = sqlx::query("INSERT INTO workspaces (id, name, created_at) VALUES ($1, 'x', 0)")
        .bind(&ws.id)
        .execute(&mut killer)
        .await;
    // The test schema is on the store's search_path, not this connection's:
    // a missing table or a duplicate, neither is transient.
    let e = StoreError::Database(dup.unwrap_err());
    assert!(!e.is_transient(), "{e}");
}

#[test]
fn a_failed_commit_is_never_retried_blindly() {
    let e = StoreError::CommitOutcomeUnknown(sqlx::Error::PoolTimedOut);
    assert!(e.is_transient(), "answered 503, not 500");
    assert!(!e.write_may_be_retried(), "the write may have been applied");
    let e = StoreError::Database(sqlx::Error::PoolTimedOut).after_commit();
    assert!(e.is_transient());
    assert!(!e.write_may_be_retried());
    assert!(StoreError::Database(sqlx::Error::PoolTimedOut).write_may_be_retried());
    assert!(!StoreError::RunNotFound("x".into()).is_transient());
}

opsledger_store::both_backends!(
    a_context_cannot_grow_without_bound,
    |store: opsledger_store::Store| async move {
        use opsledger_core::RunType;
        use opsledger_store::runs::MAX_CONTEXT_BYTES;
        use opsledger_store::{ContextPatch, NewRun};
        use serde_json::json;
        let ws = store.create_workspace("w").await.unwrap().id;
        let t = store.create_tenant(&ws, "t", "demo:healthy").await.unwrap().id;
        let huge = "x".repeat(MAX_CONTEXT_BYTES);
        let new = NewRun::on_tenant(&ws, &t, RunType::InventorySync, "test", json!({ "x": huge }));
        match store.create_run(new).await {
            Err(StoreError::ContextTooLarge { limit, .. }) => assert_eq!(limit, MAX_CONTEXT_BYTES),
            other => panic!("{other:?}"),
        }
        let new = NewRun::on_tenant(&ws, &t, RunType::InventorySync, "test", json!({}));
        let id = store.create_run(new).await.unwrap().into_run().id;
        let patch = ContextPatch::new(["x"], json!(huge));
        assert!(matches!(
            store.patch_context(&id, &[patch]).await,
            Err(StoreError::ContextTooLarge { .. })
        ));
        assert_eq!(
            store.get_run(&id).await.unwrap().unwrap().context,
            json!({"params": {}})
        );
    }
);

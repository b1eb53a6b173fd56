//! The runner on both databases: every claimed run is executed once and
//! reaches a terminal outcome even when its handler misbehaves.

use async_trait::async_trait;
use opsledger_core::{Outcome, Run, RunType};
use opsledger_engine::{Handler, HandlerError, HandlerRegistry, RunContext, Runner, RunnerConfig};
use opsledger_store::{Completion, NewRun, Store, both_backends};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Completes its run as succeeded and counts executions per run.
struct Counting(Arc<Mutex<HashMap<String, u32>>>);

#[async_trait]
impl Handler for Counting {
    async fn execute(&self, ctx: RunContext) -> Result<(), HandlerError> {
        *self.0.lock().unwrap().entry(ctx.run.id.clone()).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
        ctx.store
            .complete_run(&ctx.run.id, Completion::new(Outcome::Succeeded))
            .await?;
        Ok(())
    }
}

struct LeavesOpen;
#[async_trait]
impl Handler for LeavesOpen {
    async fn execute(&self, _: RunContext) -> Result<(), HandlerError> {
        Ok(())
    }
}

struct Panics;
#[async_trait]
impl Handler for Panics {
    async fn execute(&self, _: RunContext) -> Result<(), HandlerError> {
        panic!("handler bug")
    }
}

struct Errors;
#[async_trait]
impl Handler for Errors {
    async fn execute(&self, _: RunContext) -> Result<(), HandlerError> {
        Err(HandlerError::Failed {
            code: "provider_unavailable",
            message: "no provider".into(),
        })
    }
}

async fn start(store: &Store, ws: &str, tenants: &[String], t: RunType, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let new = NewRun {
            workspace_id: ws.into(),
            tenant_id: Some(tenants[i % tenants.len()].clone()),
            parent_id: None,
            run_type: t,
            initiator: "test".into(),
            context: json!({}),
        };
        ids.push(store.create_run(new).await.unwrap().into_run().id);
    }
    ids
}

async fn wait_all(store: &Store, ids: &[String]) -> Vec<Run> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut runs = Vec::new();
        for id in ids {
            runs.push(store.get_run(id).await.unwrap().unwrap());
        }
        if runs.iter().all(Run::is_completed) {
            return runs;
        }
        assert!(tokio::time::Instant::now() < deadline, "runs did not complete");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn config() -> RunnerConfig {
    RunnerConfig {
        concurrency: 4,
        poll_interval: Duration::from_millis(10),
        heartbeat_interval: Duration::from_millis(50),
    }
}

both_backends!(two_runners_execute_each_run_once, |store: Store| async move {
    let ws = store.create_workspace("ws").await.unwrap();
    let mut tenants = Vec::new();
    for i in 0..30 {
        tenants.push(
            store
                .create_tenant(&ws.id, &format!("t{i}"), "demo:healthy")
                .await
                .unwrap()
                .id,
        );
    }
    let counts = Arc::new(Mutex::new(HashMap::new()));
    let mut registry = HandlerRegistry::new();
    registry.register(RunType::PolicySync, Arc::new(Counting(counts.clone())));
    let shutdown = CancellationToken::new();
    let a = tokio::spawn(Runner::new(store.clone(), registry.clone(), config()).run(shutdown.clone()));
    let b = tokio::spawn(Runner::new(store.clone(), registry, config()).run(shutdown.clone()));
    let ids = start(&store, &ws.id, &tenants, RunType::PolicySync, 30).await;
    let runs = wait_all(&store, &ids).await;
    shutdown.cancel();
    a.await.unwrap();
    b.await.unwrap();
    assert!(runs.iter().all(|r| r.outcome == Outcome::Succeeded));
    let counts = counts.lock().unwrap();
    assert_eq!(counts.len(), 30);
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
});

both_backends!(
    misbehaving_handlers_still_close_their_runs,
    |store: Store| async move {
        let ws = store.create_workspace("ws").await.unwrap();
        let t = vec![store.create_tenant(&ws.id, "t", "demo:healthy").await.unwrap().id];
        let mut registry = HandlerRegistry::new();
        registry.register(RunType::PolicySync, Arc::new(LeavesOpen));
        registry.register(RunType::BackupSetUpdate, Arc::new(Panics));
        registry.register(RunType::ReviewPackGenerate, Arc::new(Errors));
        let shutdown = CancellationToken::new();
        let runner = tokio::spawn(Runner::new(store.clone(), registry, config()).run(shutdown.clone()));
        let mut ids = Vec::new();
        for ty in [
            RunType::PolicySync,
            RunType::BackupSetUpdate,
            RunType::ReviewPackGenerate,
            RunType::BackupSetDelete,
        ] {
            ids.extend(start(&store, &ws.id, &t, ty, 1).await);
        }
        let runs = wait_all(&store, &ids).await;
        shutdown.cancel();
        runner.await.unwrap();
        let codes: Vec<_> = runs
            .iter()
            .map(|r| (r.outcome, r.failures[0].code.as_str()))
            .collect();
        assert_eq!(
            codes,
            vec![
                (Outcome::Failed, "handler_left_run_open"),
                (Outcome::Failed, "handler_panicked"),
                (Outcome::Failed, "provider_unavailable"),
                (Outcome::Failed, "no_handler"),
            ]
        );
    }
);

//! Fixtures shared by the store's test files.
#![allow(dead_code)]

use opsledger_core::RunType;
use opsledger_store::{NewRun, Store};
use serde_json::json;

pub struct Scope {
    pub workspace_id: String,
    pub tenant_id: String,
}

pub async fn scope(store: &Store) -> Scope {
    let ws = store.create_workspace("ws").await.unwrap();
    let t = store
        .create_tenant(&ws.id, "contoso", "demo:healthy")
        .await
        .unwrap();
    Scope {
        workspace_id: ws.id,
        tenant_id: t.id,
    }
}

pub fn new_run(scope: &Scope, t: RunType) -> NewRun {
    NewRun {
        workspace_id: scope.workspace_id.clone(),
        tenant_id: Some(scope.tenant_id.clone()),
        parent_id: None,
        run_type: t,
        initiator: "system".into(),
        context: json!({}),
    }
}

/// A new (queued) run of type `t` on `scope`; its id.
pub async fn queued_run(store: &Store, scope: &Scope, t: RunType) -> String {
    store.create_run(new_run(scope, t)).await.unwrap().into_run().id
}

/// A run that is running with `total` set.
pub async fn running_run(store: &Store, scope: &Scope, total: u64) -> String {
    let id = queued_run(store, scope, RunType::BackupSetAddPolicies).await;
    store.claim_run(&id).await.unwrap().expect("claim");
    store.init_total(&id, total).await.unwrap();
    id
}

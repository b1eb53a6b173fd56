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

/// A workspace and its tenants (composite fixtures).
pub struct World {
    pub ws: String,
    pub tenants: Vec<String>,
}

pub async fn world(store: &Store, n: usize) -> World {
    let ws = store.create_workspace("msp").await.unwrap().id;
    let mut tenants = Vec::new();
    for i in 0..n {
        tenants.push(
            store
                .create_tenant(&ws, &format!("t{i}"), "demo:healthy")
                .await
                .unwrap()
                .id,
        );
    }
    World { ws, tenants }
}

pub async fn standalone(store: &Store, w: &World, tenant: usize, params: serde_json::Value) -> String {
    let new = opsledger_store::NewRun::on_tenant(
        &w.ws,
        &w.tenants[tenant],
        RunType::InventorySync,
        "user:u",
        params,
    );
    let opsledger_store::CreateResult::Created(run) = store.create_run(new).await.unwrap() else {
        panic!("expected a new run")
    };
    run.id
}

/// A started composite, claimed: its run job's lease.
pub async fn composite(store: &Store, w: &World) -> opsledger_store::lease::LeasedRun {
    let new = opsledger_store::NewRun {
        workspace_id: w.ws.clone(),
        tenant_id: None,
        parent_id: None,
        run_type: RunType::WorkspaceInventorySyncAll,
        initiator: "user:u".into(),
        context: json!({"params": {}}),
    };
    let id = store.create_run(new).await.unwrap().into_run().id;
    let job = store
        .claim_jobs("w", 100, 60_000)
        .await
        .unwrap()
        .into_iter()
        .find(|j| j.run_id == id)
        .expect("the composite's job");
    opsledger_store::testing::lease(store, &job.fence, &id).await
}

pub fn sync_of(w: &World, tenant: usize, params: serde_json::Value) -> opsledger_store::children::NewChild {
    opsledger_store::children::NewChild {
        run_type: RunType::InventorySync,
        tenant_id: Some(w.tenants[tenant].clone()),
        params,
    }
}

pub async fn close(store: &Store, id: &str, outcome: opsledger_core::Outcome) {
    let r = store
        .complete_run(id, opsledger_store::Completion::new(outcome))
        .await
        .unwrap();
    assert!(
        matches!(r, opsledger_store::CompleteResult::Completed(_)),
        "{r:?}"
    );
}

pub async fn status(store: &Store, id: &str) -> (opsledger_core::RunStatus, opsledger_core::Outcome) {
    let r = store.get_run(id).await.unwrap().unwrap();
    (r.status, r.outcome)
}

/// A planned fan-out of `n` units `u0000…` (max 3 attempts), its run job
/// completed through a real claim.
pub async fn fan_out(store: &Store, n: usize) -> String {
    let s = scope(store).await;
    let id = queued_run(store, &s, RunType::BackupSetAddPolicies).await;
    let run_job = store
        .claim_jobs("w", 1, 60_000)
        .await
        .unwrap()
        .pop()
        .expect("the run's job");
    assert_eq!(
        (run_job.kind, run_job.run_id.as_str()),
        (opsledger_store::jobs::JobKind::Run, id.as_str())
    );
    let keys: Vec<String> = (0..n).map(|i| format!("u{i:04}")).collect();
    assert_eq!(store.enqueue_units(&id, &keys, 3).await.unwrap(), n as u64);
    assert!(store.complete_job(&run_job.fence).await.unwrap());
    id
}

/// A batch completer's result for `job`: its unit with `outcome`, the job
/// ended accordingly.
pub fn finish(
    job: &opsledger_store::jobs::ClaimedJob,
    outcome: opsledger_core::UnitOutcome,
) -> opsledger_store::job_batches::UnitFinish {
    opsledger_store::job_batches::UnitFinish {
        fence: job.fence.clone(),
        run_id: job.run_id.clone(),
        unit: opsledger_store::UnitRecord::new(job.unit_key.clone(), outcome),
        end: match outcome {
            opsledger_core::UnitOutcome::Failed => opsledger_store::jobs::JobEnd::Failed,
            _ => opsledger_store::jobs::JobEnd::Completed,
        },
    }
}

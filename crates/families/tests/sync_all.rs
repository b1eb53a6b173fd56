//! `workspace.inventory.sync_all` on both databases: one `inventory.sync`
//! child per tenant of the workspace, through the real registry, runner and
//! stale sweep, over demo tenants (healthy, partial, blocked).
//!
//! Where an interleaving matters (a standalone sync active before the plan,
//! a child half way, a retried parent job, a stale child) the jobs are
//! claimed and executed by hand through the families' own handlers, and time
//! is moved on a manual clock, so no assertion rests on timing.

mod common;

use common::run_to_end;
use opsledger_core::progress::progress_of;
use opsledger_core::{Outcome, ProgressMode, Run, RunStatus, RunType, UnitOutcome};
use opsledger_engine::{Handler, HandlerError, RunContext, SweepConfig, sweep_once};
use opsledger_families::inventory_sync::InventorySync;
use opsledger_families::workspace_inventory_sync_all::{SyncAll, child_params};
use opsledger_providers::ProviderSettings;
use opsledger_store::children::ChildStart;
use opsledger_store::clock::ManualClock;
use opsledger_store::jobs::ClaimedJob;
use opsledger_store::{
    Completion, CreateResult, NewRun, RunFilter, Store, UnitRecord, Visibility, both_backends, testing,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

const LEASE_MS: u64 = 60_000;

/// A workspace with one demo tenant per profile, named after it.
async fn workspace(store: &Store, profiles: &[&str]) -> (String, Vec<String>) {
    let ws = store.create_workspace("msp").await.unwrap().id;
    let mut tenants = Vec::new();
    for (i, profile) in profiles.iter().enumerate() {
        let t = store
            .create_tenant(&ws, &format!("{profile}-{i}"), &format!("demo:{profile}"))
            .await
            .unwrap();
        tenants.push(t.id);
    }
    (ws, tenants)
}

async fn start_sync_all(store: &Store, ws: &str) -> String {
    let new = NewRun {
        workspace_id: ws.to_owned(),
        tenant_id: None,
        parent_id: None,
        run_type: RunType::WorkspaceInventorySyncAll,
        initiator: "user:test".into(),
        context: json!({"params": {}}),
    };
    match store.create_run(new).await.unwrap() {
        CreateResult::Created(run) => run.id,
        other => panic!("{other:?}"),
    }
}

/// A standalone `inventory.sync` of `tenant`, as the API would start it.
async fn start_sync(store: &Store, ws: &str, tenant: &str, params: serde_json::Value) -> String {
    let params = opsledger_core::params::validate(RunType::InventorySync, &params).unwrap();
    let new = NewRun::on_tenant(ws, tenant, RunType::InventorySync, "user:test", params);
    match store.create_run(new).await.unwrap() {
        CreateResult::Created(run) => run.id,
        other => panic!("{other:?}"),
    }
}

/// Claims every claimable job; keeps those of `runs`, gives the others back.
async fn claim_only(store: &Store, runs: &[&str]) -> Vec<ClaimedJob> {
    let mut kept = Vec::new();
    for job in store.claim_jobs("by-hand", 1000, LEASE_MS).await.unwrap() {
        if runs.contains(&job.run_id.as_str()) {
            kept.push(job);
        } else {
            assert!(store.release_job(&job.fence).await.unwrap());
        }
    }
    assert_eq!(kept.len(), runs.len(), "a job of each of {runs:?}");
    kept
}

/// The context a runner would give `handler` for `job`.
async fn context(store: &Store, job: &ClaimedJob) -> RunContext {
    let run = store.get_run(&job.run_id).await.unwrap().unwrap();
    let lease = testing::lease(store, &job.fence, &job.run_id).await;
    RunContext::new(run, lease, job.attempt, CancellationToken::new())
}

/// The parent's run job, claimed and executed by hand like one attempt of
/// the runner (its job ended as the runner ends a planning job).
async fn plan_by_hand(store: &Store, parent: &str) {
    let job = claim_only(store, &[parent]).await.pop().unwrap();
    SyncAll.execute(context(store, &job).await).await.unwrap();
    assert!(store.complete_job(&job.fence).await.unwrap());
}

/// The workspace's `inventory.sync` runs (all tenants).
async fn syncs(store: &Store, ws: &str) -> Vec<Run> {
    let vis = Visibility {
        workspace_id: ws.to_owned(),
        tenants: None,
    };
    let filter = RunFilter {
        run_type: Some(RunType::InventorySync),
        limit: 500,
        ..Default::default()
    };
    store.list_runs(&vis, &filter).await.unwrap().0
}

fn by_tenant(children: &[Run]) -> BTreeMap<String, Run> {
    children
        .iter()
        .map(|c| (c.tenant_id.clone().unwrap(), c.clone()))
        .collect()
}

/// The parent's progress never carries a top-level percentage or count.
fn assert_composite_without_percentage(parent: &Run, children: &[Run]) -> opsledger_core::Progress {
    let p = progress_of(parent, children);
    assert_eq!(p.mode, ProgressMode::Composite, "{p:?}");
    assert_eq!((p.percent, p.processed, p.total), (None, None, None), "{p:?}");
    assert_eq!(parent.summary_counts.total, None, "{parent:?}");
    p
}

both_backends!(
    healthy_partial_and_blocked_tenants_make_a_partially_succeeded_parent,
    |store: Store| async move {
        let (ws, tenants) = workspace(&store, &["healthy", "partial", "blocked"]).await;
        let parent = start_sync_all(&store, &ws).await;
        let done = run_to_end(&store, &parent).await;
        assert_eq!(
            (done.status, done.outcome),
            (RunStatus::Completed, Outcome::PartiallySucceeded),
            "{done:?}"
        );
        let children = store.children_of(&parent).await.unwrap();
        let children = by_tenant(&children);
        let outcomes: Vec<Outcome> = tenants.iter().map(|t| children[t].outcome).collect();
        assert_eq!(
            outcomes,
            [Outcome::Succeeded, Outcome::PartiallySucceeded, Outcome::Blocked]
        );
        // Ordinary runs of their type, each naming the parent.
        for c in children.values() {
            assert_eq!(c.run_type, RunType::InventorySync);
            assert_eq!(c.parent_id.as_deref(), Some(parent.as_str()));
            assert_eq!(c.initiator, format!("run:{parent}"));
        }
        // In the operations list, with their parent.
        let listed = syncs(&store, &ws).await;
        assert_eq!(listed.len(), 3);
        assert!(
            listed
                .iter()
                .all(|r| r.parent_id.as_deref() == Some(parent.as_str()))
        );
        let all: Vec<Run> = children.values().cloned().collect();
        let p = assert_composite_without_percentage(&done, &all);
        let c = p.children.unwrap();
        assert_eq!((c.completed, c.total, c.active.len()), (3, 3, 0));
        assert!(done.failures.is_empty(), "{:?}", done.failures);
        assert_eq!(done.context["sync_all"]["tenant_count"], 3);
    }
);

both_backends!(all_healthy_tenants_succeed, |store: Store| async move {
    let (ws, tenants) = workspace(&store, &["healthy", "healthy"]).await;
    let parent = start_sync_all(&store, &ws).await;
    let done = run_to_end(&store, &parent).await;
    assert_eq!(done.outcome, Outcome::Succeeded, "{done:?}");
    let children = store.children_of(&parent).await.unwrap();
    assert_eq!(children.len(), tenants.len());
    assert!(children.iter().all(|c| c.outcome == Outcome::Succeeded));
    assert_eq!(syncs(&store, &ws).await.len(), 2);
});

both_backends!(
    a_workspace_without_tenants_succeeds_at_once,
    |store: Store| async move {
        let (ws, _) = workspace(&store, &[]).await;
        let parent = start_sync_all(&store, &ws).await;
        plan_by_hand(&store, &parent).await;
        // Closed by the plan itself, without a runner.
        let done = store.get_run(&parent).await.unwrap().unwrap();
        assert_eq!(
            (done.status, done.outcome),
            (RunStatus::Completed, Outcome::Succeeded)
        );
        assert!(store.children_of(&parent).await.unwrap().is_empty());
        let p = progress_of(&done, &[]);
        assert_eq!((p.mode, p.percent), (ProgressMode::None, None));
    }
);

both_backends!(
    an_active_sync_of_a_tenant_is_adopted_not_started_twice,
    |store: Store| async move {
        let (ws, tenants) = workspace(&store, &["healthy", "healthy"]).await;
        // Started from the API before the sync of all tenants.
        let standalone = start_sync(&store, &ws, &tenants[0], json!({})).await;
        let parent = start_sync_all(&store, &ws).await;
        plan_by_hand(&store, &parent).await;
        let links = store.child_links(&parent).await.unwrap();
        assert_eq!(links.len(), 2);
        assert!(
            links.contains(&ChildStart::Adopted(standalone.clone())),
            "{links:?}"
        );
        // One sync per tenant: the standalone one was not started again.
        assert_eq!(syncs(&store, &ws).await.len(), 2);
        let done = run_to_end(&store, &parent).await;
        assert_eq!(done.outcome, Outcome::Succeeded, "{done:?}");
        let runs = syncs(&store, &ws).await;
        assert_eq!(runs.len(), 2, "{runs:?}");
        let children = by_tenant(&store.children_of(&parent).await.unwrap());
        // The adopted run is the child of tenant 0; it keeps its own origin.
        assert_eq!(children[&tenants[0]].id, standalone);
        assert_eq!(children[&tenants[0]].parent_id, None);
        assert_eq!(children[&tenants[0]].initiator, "user:test");
        assert_eq!(children[&tenants[0]].outcome, Outcome::Succeeded);
        assert_eq!(children[&tenants[1]].parent_id.as_deref(), Some(parent.as_str()));
        // The child's parameters are those of a standalone start.
        assert_eq!(children[&tenants[1]].context["params"], child_params().unwrap());
    }
);

both_backends!(
    a_tenant_synced_with_other_parameters_is_named_and_counted_blocked,
    |store: Store| async move {
        let (ws, tenants) = workspace(&store, &["healthy", "healthy"]).await;
        let other = start_sync(
            &store,
            &ws,
            &tenants[1],
            json!({"policy_types": ["namedLocations"]}),
        )
        .await;
        let parent = start_sync_all(&store, &ws).await;
        plan_by_hand(&store, &parent).await;
        let planned = store.get_run(&parent).await.unwrap().unwrap();
        assert_eq!(
            planned.context["sync_all"]["held_by_other_work"],
            json!([{"tenant_id": tenants[1], "run_id": other}])
        );
        assert_eq!(planned.context["composite"]["held_by_other_work"], json!([other]));
        let children = store.children_of(&parent).await.unwrap();
        assert_eq!(children.len(), 1, "the other work is not a child");
        assert_eq!(children[0].tenant_id.as_deref(), Some(tenants[0].as_str()));
        let done = run_to_end(&store, &parent).await;
        // Tenant 0 synced, tenant 1 not by this run: counted blocked.
        assert_eq!(done.outcome, Outcome::PartiallySucceeded, "{done:?}");

        // Every tenant held by other work: blocked at once, by the plan.
        let (ws, tenants) = workspace(&store, &["healthy"]).await;
        start_sync(
            &store,
            &ws,
            &tenants[0],
            json!({"policy_types": ["namedLocations"]}),
        )
        .await;
        let parent = start_sync_all(&store, &ws).await;
        plan_by_hand(&store, &parent).await;
        let done = store.get_run(&parent).await.unwrap().unwrap();
        assert_eq!(
            (done.status, done.outcome),
            (RunStatus::Completed, Outcome::Blocked)
        );
    }
);

both_backends!(
    the_parents_progress_is_the_composite_view_of_its_children,
    |store: Store| async move {
        let (ws, tenants) = workspace(&store, &["healthy", "healthy", "healthy"]).await;
        let parent = start_sync_all(&store, &ws).await;
        plan_by_hand(&store, &parent).await;
        let planned = store.get_run(&parent).await.unwrap().unwrap();
        assert_eq!(planned.status, RunStatus::Running);
        let children = by_tenant(&store.children_of(&parent).await.unwrap());
        let ids: Vec<&str> = tenants.iter().map(|t| children[t].id.as_str()).collect();
        // Every child queued: 0 of 3, each shown as queued.
        let p = assert_composite_without_percentage(&planned, &store.children_of(&parent).await.unwrap());
        assert_eq!(p.label, "0 of 3 completed");
        let c = p.children.unwrap();
        assert_eq!((c.completed, c.total, c.active.len()), (0, 3, 3));
        assert!(c.active.iter().all(|a| a.progress.label == "Queued"));

        let mut jobs: BTreeMap<String, ClaimedJob> = claim_only(&store, &ids)
            .await
            .into_iter()
            .map(|j| (j.run_id.clone(), j))
            .collect();
        // Child 0 runs to its end (the real handler); child 1 is half way
        // through counted units; child 2 is given back, still to run.
        let job0 = jobs.remove(ids[0]).unwrap();
        InventorySync::new(ProviderSettings::default())
            .execute(context(&store, &job0).await)
            .await
            .unwrap();
        assert!(store.complete_job(&job0.fence).await.unwrap());
        let job1 = jobs.remove(ids[1]).unwrap();
        let ctx1 = context(&store, &job1).await;
        ctx1.init_total(4).await.unwrap();
        ctx1.record_units(&[UnitRecord::new("u1", UnitOutcome::Succeeded)])
            .await
            .unwrap();
        let job2 = jobs.remove(ids[2]).unwrap();
        assert!(store.release_job(&job2.fence).await.unwrap());

        let running = store.get_run(&parent).await.unwrap().unwrap();
        assert_eq!(running.status, RunStatus::Running);
        let all = store.children_of(&parent).await.unwrap();
        let p = assert_composite_without_percentage(&running, &all);
        assert_eq!(p.label, "1 of 3 completed");
        let c = p.children.unwrap();
        assert_eq!((c.completed, c.total), (1, 3));
        // Each active child with its own progress, from the same function.
        let active: BTreeMap<&str, &opsledger_core::Progress> =
            c.active.iter().map(|a| (a.id.as_str(), &*a.progress)).collect();
        assert_eq!(active.len(), 2);
        assert!(!active.contains_key(ids[0]));
        let half = active[ids[1]];
        assert_eq!(half.mode, ProgressMode::Counted);
        assert_eq!(
            (half.percent, half.processed, half.total),
            (Some(25), Some(1), Some(4))
        );
        let waiting = all.iter().find(|r| r.id == ids[2]).unwrap();
        assert_eq!(*active[ids[2]], progress_of(waiting, &[]));
        assert_eq!(active[ids[2]].percent, None);

        // The rest: child 1 finishes its units by hand, child 2 through the runner.
        ctx1.record_units(&[
            UnitRecord::new("u2", UnitOutcome::Succeeded),
            UnitRecord::new("u3", UnitOutcome::Succeeded),
            UnitRecord::new("u4", UnitOutcome::Succeeded),
        ])
        .await
        .unwrap();
        ctx1.complete(Completion::new(Outcome::Succeeded)).await.unwrap();
        assert!(store.complete_job(&job1.fence).await.unwrap());
        let done = run_to_end(&store, &parent).await;
        assert_eq!(done.outcome, Outcome::Succeeded, "{done:?}");
        let p = assert_composite_without_percentage(&done, &store.children_of(&parent).await.unwrap());
        assert_eq!(p.label, "3 of 3 completed");
    }
);

both_backends!(
    a_retried_parent_job_does_not_start_children_twice,
    |store: Store| async move {
        let clock = ManualClock::new();
        let store = store.with_clock(Arc::new(clock.clone()));
        let (ws, _) = workspace(&store, &["healthy", "healthy", "healthy"]).await;
        let parent = start_sync_all(&store, &ws).await;
        // The first attempt plans, then its worker dies before ending the job.
        let first = claim_only(&store, &[&parent]).await.pop().unwrap();
        let first_ctx = context(&store, &first).await;
        SyncAll.execute(first_ctx.clone()).await.unwrap();
        let planned = store.child_links(&parent).await.unwrap();
        assert_eq!(planned.len(), 3);
        assert!(planned.iter().all(|s| matches!(s, ChildStart::Started(_))));
        // Its lease expires; the rescuer gives the job another attempt.
        clock.advance(LEASE_MS as i64 + 1);
        let rescued = store.rescue_expired_jobs(100).await.unwrap();
        assert_eq!(rescued.retried, 1, "{rescued:?}");
        clock.advance(3_600_000);
        let second = claim_only(&store, &[&parent]).await.pop().unwrap();
        assert_eq!(second.attempt, 2);
        // The dead attempt's lease writes nothing any more.
        assert!(matches!(
            SyncAll.execute(first_ctx).await,
            Err(HandlerError::Store(_))
        ));
        // The retry gets the first plan back: nothing new is started.
        SyncAll.execute(context(&store, &second).await).await.unwrap();
        assert!(store.complete_job(&second.fence).await.unwrap());
        assert_eq!(store.child_links(&parent).await.unwrap(), planned);
        assert_eq!(syncs(&store, &ws).await.len(), 3);
        let done = run_to_end(&store, &parent).await;
        assert_eq!(done.outcome, Outcome::Succeeded, "{done:?}");
        assert_eq!(syncs(&store, &ws).await.len(), 3);
    }
);

both_backends!(
    a_stale_parent_gets_its_outcome_once_its_children_are_reconciled,
    |store: Store| async move {
        let clock = ManualClock::new();
        let store = store.with_clock(Arc::new(clock.clone()));
        let (ws, tenants) = workspace(&store, &["healthy", "healthy", "healthy"]).await;
        let parent = start_sync_all(&store, &ws).await;
        plan_by_hand(&store, &parent).await;
        let children = by_tenant(&store.children_of(&parent).await.unwrap());
        let ids: Vec<&str> = tenants.iter().map(|t| children[t].id.as_str()).collect();
        let mut jobs: BTreeMap<String, ClaimedJob> = claim_only(&store, &ids)
            .await
            .into_iter()
            .map(|j| (j.run_id.clone(), j))
            .collect();
        // Child 0 finishes; the workers of children 1 and 2 die on every attempt.
        let job0 = jobs.remove(ids[0]).unwrap();
        InventorySync::new(ProviderSettings::default())
            .execute(context(&store, &job0).await)
            .await
            .unwrap();
        assert!(store.complete_job(&job0.fence).await.unwrap());
        for id in &ids[1..] {
            testing::exhaust_jobs(&store, id).await.unwrap();
        }
        // Long past every timeout: the parent has no job and no heartbeat,
        // but open children, so it is not a stale candidate itself.
        clock.advance(30 * 24 * 3_600_000);
        let far = store.now_ms();
        let page = store.stale_run_candidates(far, far, None, 100).await.unwrap();
        let candidates: Vec<&str> = page.runs.iter().map(|r| r.id.as_str()).collect();
        assert!(!candidates.contains(&parent.as_str()), "{candidates:?}");
        assert!(candidates.contains(&ids[1]) && candidates.contains(&ids[2]));

        // The sweep reconciles the children; the last one's close closes the parent.
        let registry = common::registry();
        let report = sweep_once(&store, &registry, &SweepConfig::default())
            .await
            .unwrap();
        let reconciled: Vec<&str> = report.decisions.iter().map(|d| d.run_id.as_str()).collect();
        assert_eq!(reconciled.len(), 2, "{:?}", report.decisions);
        assert!(reconciled.contains(&ids[1]) && reconciled.contains(&ids[2]));
        let done = store.get_run(&parent).await.unwrap().unwrap();
        assert_eq!(done.status, RunStatus::Completed, "{done:?}");
        let children = store.children_of(&parent).await.unwrap();
        assert!(children.iter().all(Run::is_completed));
        let outcomes: Vec<Outcome> = children.iter().map(|c| c.outcome).collect();
        assert!(outcomes.contains(&Outcome::Succeeded), "{outcomes:?}");
        assert_eq!(
            Some(done.outcome),
            opsledger_core::outcome::derive_composite_outcome(&outcomes)
        );
        assert_eq!(done.outcome, Outcome::PartiallySucceeded, "{outcomes:?}");
        // Derived from its children, not failed closed by a generic adapter.
        assert!(done.reconciliation().is_none(), "{:#}", done.context);
        // A second pass changes nothing.
        let again = sweep_once(&store, &registry, &SweepConfig::default())
            .await
            .unwrap();
        assert!(again.decisions.is_empty(), "{:?}", again.decisions);
        assert_eq!(store.get_run(&parent).await.unwrap().unwrap(), done);
    }
);

//! Regression tests from a hostile review of the engine's primitives, on
//! SQLite and PostgreSQL: each failed on the code as first written (the
//! comment above each says what it found) and passes on the fix.

mod common;

use common::{composite, queued_run, scope, status, sync_of, world};
use opsledger_core::phases::PhasePlan;
use opsledger_core::{Outcome, PhaseState, RunStatus, RunType, UnitOutcome};
use opsledger_store::artifacts::UnitArtifact;
use opsledger_store::children::{ChildStart, NewChild};
use opsledger_store::files::FileStore;
use opsledger_store::stale::{ForceClose, ForceCloseResult};
use opsledger_store::{
    Completion, ContextPatch, CreateResult, NewRun, Store, UnitRecord, both_backends, testing,
};
use serde_json::json;
use std::io::Write;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// F1: a composite whose every requested child is held by other work is
// closed `succeeded` at once, having done none of the work.
both_backends!(
    a_composite_whose_children_are_all_held_by_other_work_does_not_succeed,
    |store: Store| async move {
        let w = world(&store, 1).await;
        let other = NewRun::on_tenant(
            &w.ws,
            &w.tenants[0],
            RunType::InventorySync,
            "user:u",
            json!({"policy_types": ["namedLocations"]}),
        );
        let other = store.create_run(other).await.unwrap().into_run().id;
        let parent = composite(&store, &w).await;
        let id = parent.reads().head().id.clone();
        let starts = parent
            .enqueue_child_runs(&[sync_of(&w, 0, json!({}))])
            .await
            .unwrap();
        assert_eq!(starts, vec![ChildStart::HeldByOtherWork(other)]);
        // Nothing synced every policy type of t0: "succeeded" would be a lie.
        assert_ne!(
            status(&store, &id).await,
            (RunStatus::Completed, Outcome::Succeeded),
            "the composite claims success for work no run did"
        );
    }
);

// F2: children are inserted without the scope checks create_run applies:
// a tenant-scoped child with no tenant, or with a tenant of another workspace.
both_backends!(
    child_runs_get_the_scope_checks_of_a_start,
    |store: Store| async move {
        let w = world(&store, 1).await;
        let foreign = world(&store, 1).await;
        let parent = composite(&store, &w).await;
        let no_tenant = NewChild {
            run_type: RunType::InventorySync,
            tenant_id: None,
            params: json!({}),
        };
        let foreign_tenant = NewChild {
            run_type: RunType::InventorySync,
            tenant_id: Some(foreign.tenants[0].clone()),
            params: json!({}),
        };
        let r = parent.enqueue_child_runs(&[no_tenant, foreign_tenant]).await;
        if let Ok(starts) = &r {
            for s in starts {
                let child = store.get_run(s.run_id()).await.unwrap().unwrap();
                eprintln!(
                    "child {} workspace={} tenant={:?}",
                    child.id, child.workspace_id, child.tenant_id
                );
            }
        }
        assert!(
            r.is_err(),
            "children outside the parent's scope were started: {r:?}"
        );
    }
);

// F3 (PostgreSQL): cancelling a composite locks parent → child; the last
// child's close locks child → parent. Interleaved, PostgreSQL aborts one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_of_a_composite_and_its_last_childs_close_do_not_deadlock() {
    let Some(db) = testing::postgres().await else {
        return;
    };
    let store = db.store.clone();
    let w = world(&store, 1).await;
    let parent = composite(&store, &w).await;
    let parent_id = parent.reads().head().id.clone();
    let starts = parent
        .enqueue_child_runs(&[sync_of(&w, 0, json!({}))])
        .await
        .unwrap();
    let child = starts[0].run_id().to_owned();
    // Widen the window inside the child's closing transaction: after it
    // locked and updated the child's row, before it locks the parent.
    let testing::RawPool::Postgres(pool) = testing::raw_pool(&store) else {
        unreachable!()
    };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE FUNCTION slow_child() RETURNS trigger AS $$ BEGIN \
           IF NEW.id = '{child}' AND NEW.outcome = 'succeeded' THEN PERFORM pg_sleep(1.5); END IF; \
           RETURN NEW; END $$ LANGUAGE plpgsql"
    )))
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "CREATE TRIGGER slow_child BEFORE UPDATE ON operation_runs FOR EACH ROW EXECUTE FUNCTION slow_child()",
    )
    .execute(pool)
    .await
    .unwrap();
    let closing = {
        let store = store.clone();
        let child = child.clone();
        tokio::spawn(async move {
            store
                .complete_run(&child, Completion::new(Outcome::Succeeded))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cancel = store
        .cancel_run(&parent_id, ContextPatch::new(["cancelled_by"], json!("user:u")))
        .await;
    let closed = closing.await.unwrap();
    let dead = |e: &opsledger_store::StoreError| e.to_string();
    assert!(
        cancel.is_ok() && closed.is_ok(),
        "cancel: {:?}\nchild close: {:?}",
        cancel.as_ref().map(|_| ()).map_err(dead),
        closed.as_ref().map(|_| ()).map_err(dead)
    );
}

// F4: a force-close to `cancelled` of a composite leaves the children it
// started running (only cancel_run cancels them).
both_backends!(
    force_closing_a_composite_as_cancelled_cancels_the_children_it_started,
    |store: Store| async move {
        let w = world(&store, 1).await;
        let parent = composite(&store, &w).await;
        let id = parent.reads().head().id.clone();
        let starts = parent
            .enqueue_child_runs(&[sync_of(&w, 0, json!({}))])
            .await
            .unwrap();
        let started = starts[0].run_id().to_owned();
        let seen = store.get_run(&id).await.unwrap().unwrap();
        let r = store
            .apply_force_close(
                &seen,
                ForceClose {
                    outcome: Outcome::Cancelled,
                    reason: "stop it",
                    by: "user:admin",
                    proof: None,
                },
            )
            .await
            .unwrap();
        assert!(matches!(r, ForceCloseResult::Closed(_)), "{r:?}");
        assert_eq!(
            status(&store, &started).await.0,
            RunStatus::Completed,
            "the child the cancelled composite started runs on"
        );
    }
);

// F5: params compared as JSON values: the same set of policy types in
// another order is "other work" (409), though validation made it a set.
both_backends!(
    the_same_policy_types_in_another_order_are_the_same_work,
    |store: Store| async move {
        let s = scope(&store).await;
        let start = |types: serde_json::Value| {
            let p =
                opsledger_core::params::validate(RunType::InventorySync, &json!({ "policy_types": types }))
                    .unwrap();
            NewRun::on_tenant(&s.workspace_id, &s.tenant_id, RunType::InventorySync, "user:u", p)
        };
        let first = store
            .create_run(start(json!(["namedLocations", "deviceConfigurations"])))
            .await
            .unwrap();
        assert!(matches!(first, CreateResult::Created(_)));
        let again = store
            .create_run(start(json!(["deviceConfigurations", "namedLocations"])))
            .await
            .unwrap();
        assert!(
            matches!(&again, CreateResult::AlreadyActive(r) if r.id == first.run().id),
            "same work refused as other work: {again:?}"
        );
    }
);

// F6: policy.sync's dedup key is case-sensitive while validation itself says
// Graph ids compare without case: two active runs re-read one policy.
both_backends!(
    policy_sync_of_one_policy_in_two_letter_cases_is_one_run,
    |store: Store| async move {
        let s = scope(&store).await;
        let start = |policy: &str| {
            let p = opsledger_core::params::validate(RunType::PolicySync, &json!({ "policy_id": policy }))
                .unwrap();
            NewRun::on_tenant(&s.workspace_id, &s.tenant_id, RunType::PolicySync, "user:u", p)
        };
        let id = "1b2c3d4e-aaaa-bbbb-cccc-0123456789ab";
        let first = store
            .create_run(start(&format!("deviceConfigurations/{id}")))
            .await
            .unwrap();
        assert!(matches!(first, CreateResult::Created(_)));
        let upper = store
            .create_run(start(&format!("deviceConfigurations/{}", id.to_uppercase())))
            .await
            .unwrap();
        assert!(
            !matches!(upper, CreateResult::Created(_)),
            "a second active policy.sync of the same policy: {} and {}",
            first.run().id,
            upper.run().id
        );
    }
);

// F7: a counted phase is marked `done` when the run moves on (or closes
// succeeded) with its units unprocessed: "done" with 1 of 3.
both_backends!(
    a_counted_phase_is_not_done_before_its_units_are,
    |store: Store| async move {
        let s = scope(&store).await;
        let id = queued_run(&store, &s, RunType::BaselineCapture).await;
        let job = store.claim_jobs("w", 1, 60_000).await.unwrap().pop().unwrap();
        let run = testing::lease(&store, &job.fence, &id).await;
        run.plan_phases(&[
            PhasePlan::new("capture", "Capture evidence"),
            PhasePlan::new("persist", "Persist snapshot"),
        ])
        .await
        .unwrap();
        run.set_phase("capture", Some(3)).await.unwrap();
        run.record_phase_units("capture", &[UnitRecord::new("a", UnitOutcome::Succeeded)])
            .await
            .unwrap();
        let moved = run.set_phase("persist", None).await;
        let phases = store.get_run(&id).await.unwrap().unwrap().phases.unwrap();
        let capture = &phases[0];
        assert!(
            moved.is_err() || capture.state != PhaseState::Done || capture.processed == capture.total,
            "phase `capture` is {:?} with {:?} of {:?} units",
            capture.state,
            capture.processed,
            capture.total
        );
    }
);

// F8: a file drafted for one run and committed by another: the row names a
// file that is not where path_of says it is.
both_backends!(
    a_committed_file_is_where_its_row_says,
    |store: Store| async move {
        let dir = tempfile::tempdir().unwrap();
        let files = FileStore::new(dir.path()).unwrap();
        let s = scope(&store).await;
        let id = common::running_run(&store, &s, 1).await;
        let mut draft = files.begin("some-other-run", "pack.zip").unwrap();
        draft.write_all(b"PK bytes").unwrap();
        let staged = draft.finish().await.unwrap();
        let r = store
            .record_units(
                &id,
                &[UnitRecord::new("pack", UnitOutcome::Succeeded).with_artifact(UnitArtifact::File(staged))],
            )
            .await;
        if r.is_ok() {
            for row in store.run_files(&id).await.unwrap() {
                let path = files.path_of(&id, &row).unwrap();
                assert!(
                    path.exists(),
                    "row {row:?} names {} which does not exist",
                    path.display()
                );
            }
        }
    }
);

// F9 (PostgreSQL): the wave gate is a per-candidate correlated subquery
// over the run's jobs: a large blocked wave ahead in claim order makes each
// claim quadratic, and starves every other run's units behind it.
both_backends!(
    a_blocked_wave_does_not_make_claims_quadratic,
    |store: Store| async move {
        let n: usize = std::env::var("WAVE_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000);
        let s = scope(&store).await;
        let big = queued_run(&store, &s, RunType::BackupSetAddPolicies).await;
        let job = store.claim_jobs("w", 1, 60_000).await.unwrap().pop().unwrap();
        let lease = testing::lease(&store, &job.fence, &big).await;
        // Wave 1 sorts before wave 0, and the unit in flight sorts last.
        let w0: Vec<String> = (0..n).map(|i| format!("b/{i:06}")).collect();
        let last = format!("b/{:06}", n - 1);
        let w1: Vec<String> = (0..n).map(|i| format!("a/{i:06}")).collect();
        lease.enqueue_unit_waves(&[&w0, &w1], 3).await.unwrap();
        assert!(store.complete_job(&job.fence).await.unwrap());
        // Wave 0 done but for one unit still in flight.
        let q = "UPDATE jobs SET state = CASE WHEN unit_key = $2 THEN 'running' ELSE 'completed' END, \
         lease_expires_at = CASE WHEN unit_key = $2 THEN 9000000000000 END, \
         lease_token = CASE WHEN unit_key = $2 THEN 'tok' END, attempt = 1 \
         WHERE run_id = $1 AND wave = 0";
        opsledger_store::raw_on_pool!(&store, pool => {
            sqlx::query(q).bind(&big).bind(&last).execute(pool).await.unwrap();
            sqlx::query("ANALYZE").execute(pool).await.unwrap();
        });
        // Another tenant's small fan-out, planned later.
        let t2 = store
            .create_tenant(&s.workspace_id, "fabrikam", "demo:healthy")
            .await
            .unwrap();
        let small = store
            .create_run(NewRun::on_tenant(
                &s.workspace_id,
                &t2.id,
                RunType::BackupSetAddPolicies,
                "u",
                json!({}),
            ))
            .await
            .unwrap()
            .into_run()
            .id;
        let job = store.claim_jobs("w", 1, 60_000).await.unwrap().pop().unwrap();
        assert_eq!(job.run_id, small);
        let lease = testing::lease(&store, &job.fence, &small).await;
        lease.enqueue_units(&["x".to_string()], 3).await.unwrap();
        assert!(store.complete_job(&job.fence).await.unwrap());
        let t = Instant::now();
        let claimed = store.claim_jobs("w", 1, 60_000).await.unwrap();
        let took = t.elapsed();
        eprintln!("n = {n}: one claim took {took:?}");
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].run_id, small);
        assert!(
            // Quadratic, it took 1.8 s (PostgreSQL) at n = 2000; an index probe per candidate, milliseconds.
            took < Duration::from_millis(1000),
            "one claim took {took:?} behind a blocked wave of {n}"
        );
    }
);

// F10: force-close `blocked` is allowed "only if no unit was recorded"; the
// check reads the run's own `processed`, which a phased run never sets, so a
// phased run with phase units recorded can still be force-closed blocked.
both_backends!(
    a_phased_run_with_recorded_phase_units_cannot_be_force_closed_blocked,
    |store: Store| async move {
        let s = scope(&store).await;
        let id = queued_run(&store, &s, RunType::BaselineCapture).await;
        let job = store.claim_jobs("w", 1, 60_000).await.unwrap().pop().unwrap();
        let run = testing::lease(&store, &job.fence, &id).await;
        run.plan_phases(&[PhasePlan::new("capture", "Capture evidence")])
            .await
            .unwrap();
        run.set_phase("capture", Some(2)).await.unwrap();
        run.record_phase_units("capture", &[UnitRecord::new("a", UnitOutcome::Succeeded)])
            .await
            .unwrap();
        assert_eq!(store.recorded_units(&id).await.unwrap().len(), 1);
        let seen = store.get_run(&id).await.unwrap().unwrap();
        let r = store
            .apply_force_close(
                &seen,
                ForceClose {
                    outcome: Outcome::Blocked,
                    reason: "no consent",
                    by: "user:admin",
                    proof: None,
                },
            )
            .await
            .unwrap();
        assert!(
            matches!(r, ForceCloseResult::Refused(..)),
            "blocked although a unit was recorded: {:?}",
            status(&store, &id).await
        );
    }
);

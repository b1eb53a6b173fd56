//! Job runtime conformance, on SQLite and PostgreSQL: claims are exclusive,
//! every write is fenced by the lease, rescue is state-guarded and
//! idempotent, and a unit's job finish and its recording commit together.

mod common;

use common::{fan_out, queued_run, scope};
use opsledger_core::reconcile::{AdapterResult, Verdict};
use opsledger_core::{Outcome, RunStatus, RunType, UnitOutcome};
use opsledger_store::clock::ManualClock;
use opsledger_store::jobs::{Heartbeat, JobEnd, JobKind};
use opsledger_store::testing;
use opsledger_store::{CompleteResult, Completion, Store, StoreError, UnitRecord, both_backends};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

both_backends!(
    a_start_enqueues_its_job_and_claim_starts_the_run,
    |store: Store| async move {
        let s = scope(&store).await;
        let id = queued_run(&store, &s, RunType::InventorySync).await;
        assert_eq!(store.job_tally(&id).await.unwrap().available, 1);
        let jobs = store.claim_jobs("w1", 10, 60_000).await.unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!((jobs[0].attempt, jobs[0].max_attempts), (1, 3));
        let run = store.get_run(&id).await.unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Running);
        assert!(
            store.claim_jobs("w2", 10, 60_000).await.unwrap().is_empty(),
            "a held job is not claimed again"
        );
    }
);

both_backends!(concurrent_claims_never_share_a_job, |store: Store| async move {
    let id = fan_out(&store, 300).await;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store.claim_jobs(&format!("w{w}"), 7, 60_000).await.unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|j| j.fence.job_id));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!((all.len(), unique.len()), (300, 300));
    assert_eq!(store.job_tally(&id).await.unwrap().running, 300);
});

both_backends!(
    a_new_run_is_picked_up_before_a_backlog_of_units,
    |store: Store| async move {
        let backlog = fan_out(&store, 50).await;
        let s = common::scope(&store).await;
        let later = queued_run(&store, &s, RunType::InventorySync).await;
        let first = store.claim_jobs("w", 1, 60_000).await.unwrap().pop().unwrap();
        assert_eq!(
            (first.kind, first.run_id.as_str()),
            (JobKind::Run, later.as_str()),
            "the new run waits behind no unit"
        );
        let next = store.claim_jobs("w", 3, 60_000).await.unwrap();
        let mut keys: Vec<&str> = next.iter().map(|j| j.unit_key.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["u0000", "u0001", "u0002"],
            "units stay first-in, first-out"
        );
        assert!(next.iter().all(|j| j.run_id == backlog));
    }
);

both_backends!(
    unit_finish_is_fenced_and_counted_once,
    |store: Store| async move {
        let id = fan_out(&store, 2).await;
        let job = store.claim_jobs("w", 1, 60_000).await.unwrap().pop().unwrap();
        let unit = || UnitRecord::new(job.unit_key.clone(), UnitOutcome::Succeeded);
        let r = store
            .finish_unit_job(&job.fence, &id, unit(), JobEnd::Completed)
            .await
            .unwrap();
        assert_eq!(r.recorded, 1);
        assert!(!r.all_processed);
        // The same finish again (a duplicate delivery) is refused by the fence.
        let again = store
            .finish_unit_job(&job.fence, &id, unit(), JobEnd::Completed)
            .await;
        assert!(matches!(again, Err(StoreError::LeaseLost { .. })), "{again:?}");
        assert_eq!(
            store
                .get_run(&id)
                .await
                .unwrap()
                .unwrap()
                .summary_counts
                .processed,
            Some(1)
        );
        assert_eq!(
            store.heartbeat_job(&job.fence, &id, 1000).await.unwrap(),
            Heartbeat::LeaseLost
        );
    }
);

both_backends!(
    rescue_is_state_guarded_and_idempotent,
    |store: Store| async move {
        let clock = ManualClock::new();
        let store = store.with_clock(Arc::new(clock.clone()));
        let id = fan_out(&store, 3).await;
        // Three jobs with leases that expire at once.
        let jobs = store.claim_jobs("dead", 3, 1).await.unwrap();
        assert_eq!(jobs.len(), 3);
        clock.advance(5);
        // One finishes just before the rescuer runs: the rescuer must not touch it.
        let done = &jobs[0];
        store
            .finish_unit_job(
                &done.fence,
                &id,
                UnitRecord::new(done.unit_key.clone(), UnitOutcome::Succeeded),
                JobEnd::Completed,
            )
            .await
            .unwrap();
        let r = store.rescue_expired_jobs(100).await.unwrap();
        assert_eq!(r.retried, 2);
        assert!(
            store.rescue_expired_jobs(100).await.unwrap() == Default::default(),
            "a second pass changes nothing"
        );
        let tally = store.job_tally(&id).await.unwrap();
        assert_eq!(
            (tally.completed, tally.available, tally.running),
            (2, 2, 0),
            "the run job and one unit"
        );
        // The rescued workers are fenced out: no write of theirs lands.
        let zombie = &jobs[1];
        let late = store
            .finish_unit_job(
                &zombie.fence,
                &id,
                UnitRecord::new(zombie.unit_key.clone(), UnitOutcome::Succeeded),
                JobEnd::Completed,
            )
            .await;
        assert!(matches!(late, Err(StoreError::LeaseLost { .. })));
        let fenced = opsledger_store::testing::lease(&store, &zombie.fence, &id)
            .await
            .record_units(&[UnitRecord::new("x", UnitOutcome::Succeeded)])
            .await;
        assert!(matches!(fenced, Err(StoreError::LeaseLost { .. })));
        // The retry, by a live worker, records the unit once.
        let retry = store.claim_jobs("live", 10, 60_000).await.unwrap();
        assert_eq!(retry.len(), 2);
        assert!(retry.iter().all(|j| j.attempt == 2));
        assert_eq!(
            store
                .get_run(&id)
                .await
                .unwrap()
                .unwrap()
                .summary_counts
                .processed,
            Some(1)
        );
    }
);

both_backends!(
    rescue_without_attempts_left_finishes_the_unit_as_failed,
    |store: Store| async move {
        let clock = ManualClock::new();
        let store = store.with_clock(Arc::new(clock.clone()));
        let s = scope(&store).await;
        let id = queued_run(&store, &s, RunType::BackupSetAddPolicies).await;
        let run_job = store.claim_jobs("w", 1, 60_000).await.unwrap().pop().unwrap();
        store.enqueue_units(&id, &["only".to_owned()], 1).await.unwrap();
        store.complete_job(&run_job.fence).await.unwrap();
        let job = store.claim_jobs("dead", 1, 1).await.unwrap().pop().unwrap();
        assert!(job.is_last_attempt());
        clock.advance(5);
        let r = store.rescue_expired_jobs(100).await.unwrap();
        assert_eq!(r.failed_units.get(&id), Some(&1));
        let run = store.get_run(&id).await.unwrap().unwrap();
        assert_eq!(
            (run.summary_counts.processed, run.summary_counts.failed),
            (Some(1), Some(1))
        );
        assert_eq!(run.failures[0].code, "unit_lease_expired");
        let done = store.maybe_complete_bulk_run(&id).await.unwrap();
        assert!(matches!(done, CompleteResult::Completed(r) if r.outcome == Outcome::Failed));
    }
);

both_backends!(retry_release_and_backoff, |store: Store| async move {
    let id = fan_out(&store, 1).await;
    let job = store.claim_jobs("w", 1, 60_000).await.unwrap().pop().unwrap();
    assert!(store.retry_job(&job.fence, "throttled", 60_000).await.unwrap());
    assert!(
        store.claim_jobs("w", 1, 60_000).await.unwrap().is_empty(),
        "not before its backoff"
    );
    assert!(
        !store.retry_job(&job.fence, "again", 0).await.unwrap(),
        "the old lease is gone"
    );
    let id2 = fan_out(&store, 1).await;
    let job = store.claim_jobs("w", 1, 60_000).await.unwrap().pop().unwrap();
    assert_eq!(job.run_id, id2);
    assert!(store.release_job(&job.fence).await.unwrap());
    let again = store.claim_jobs("w", 1, 60_000).await.unwrap().pop().unwrap();
    assert_eq!(again.attempt, 1, "a graceful release spends no attempt");
    let _ = id;
});

both_backends!(
    enqueue_is_idempotent_and_completion_cancels_waiting_jobs,
    |store: Store| async move {
        let id = fan_out(&store, 5).await;
        let keys: Vec<String> = (0..5).map(|i| format!("u{i:04}")).collect();
        assert_eq!(
            store.enqueue_units(&id, &keys, 3).await.unwrap(),
            5,
            "a retried parent plans the same units"
        );
        // A retried parent that now sees another unit set (more units, or as
        // many but other keys) keeps the first plan: no job is added.
        let more: Vec<String> = (0..6).map(|i| format!("u{i:04}")).collect();
        assert_eq!(store.enqueue_units(&id, &more, 3).await.unwrap(), 5);
        let other: Vec<String> = (1..6).map(|i| format!("u{i:04}")).collect();
        assert_eq!(store.enqueue_units(&id, &other, 3).await.unwrap(), 5);
        assert_eq!(store.job_tally(&id).await.unwrap().available, 5);
        let held = store.claim_jobs("w", 1, 60_000).await.unwrap().pop().unwrap();
        store
            .complete_run(&id, Completion::new(Outcome::Cancelled))
            .await
            .unwrap();
        let t = store.job_tally(&id).await.unwrap();
        assert_eq!((t.cancelled, t.running), (4, 1));
        assert_eq!(
            store.heartbeat_job(&held.fence, &id, 1000).await.unwrap(),
            Heartbeat::RunClosed
        );
        let late = store
            .finish_unit_job(
                &held.fence,
                &id,
                UnitRecord::new(held.unit_key.clone(), UnitOutcome::Succeeded),
                JobEnd::Completed,
            )
            .await;
        assert!(matches!(late, Err(StoreError::RunNotRunning { .. })));
        assert_eq!(
            store.job_tally(&id).await.unwrap().cancelled,
            5,
            "the closed run's job is cancelled"
        );
    }
);

both_backends!(stale_candidates_respect_live_leases, |store: Store| async move {
    let s = scope(&store).await;
    let queued = queued_run(&store, &s, RunType::InventorySync).await;
    let far_future = opsledger_store::now_ms() + 1_000_000;
    let c = store
        .stale_run_candidates(far_future, far_future, None, 100)
        .await
        .unwrap()
        .runs;
    assert_eq!(
        c.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        vec![queued.clone()],
        "queued past its timeout"
    );
    let job = store.claim_jobs("w", 1, 60_000).await.unwrap().pop().unwrap();
    assert!(
        store
            .stale_run_candidates(far_future, far_future, None, 100)
            .await
            .unwrap()
            .runs
            .is_empty(),
        "a live lease is never stale"
    );
    let _ = store.claim_jobs("x", 1, 60_000).await.unwrap();
    assert!(store.retry_job(&job.fence, "boom", 1_000_000).await.unwrap());
    assert!(
        store
            .stale_run_candidates(far_future, far_future, None, 100)
            .await
            .unwrap()
            .runs
            .is_empty(),
        "a pending retry is not stale"
    );
});

both_backends!(
    reconciliation_applies_once_and_only_to_the_state_it_saw,
    |store: Store| async move {
        let s = scope(&store).await;
        let id = queued_run(&store, &s, RunType::PolicySync).await;
        let seen = store.get_run(&id).await.unwrap().unwrap();
        let result = AdapterResult::stale_no_proof("x");
        // The run moved (claimed) since it was seen: nothing is applied.
        let job = store.claim_jobs("w", 1, 60_000).await.unwrap().pop().unwrap();
        let r = store
            .apply_reconciliation(&seen, "generic_fail_closed", &result, Some("system"))
            .await
            .unwrap();
        assert!(matches!(r, CompleteResult::NotReady(_)));
        // Seen anew, but its job still holds a live lease: still nothing.
        let seen = store.get_run(&id).await.unwrap().unwrap();
        let r = store
            .apply_reconciliation(&seen, "generic_fail_closed", &result, Some("system"))
            .await
            .unwrap();
        assert!(matches!(r, CompleteResult::NotReady(_)), "not under a live lease");
        // The job ended for good: now the proof (none) decides.
        assert!(store.fail_job(&job.fence, "worker gave up").await.unwrap());
        let r = store
            .apply_reconciliation(&seen, "generic_fail_closed", &result, Some("system"))
            .await
            .unwrap();
        let CompleteResult::Completed(run) = r else {
            panic!("applied")
        };
        assert_eq!(run.outcome, Outcome::Failed);
        let rec = run.reconciliation().unwrap();
        assert_eq!(rec["reason_code"], "stale_no_proof");
        assert_eq!(rec["previous_status"], "running");
        assert_eq!(rec["adapter"], "generic_fail_closed");
        let again = store
            .apply_reconciliation(&seen, "generic_fail_closed", &result, None)
            .await
            .unwrap();
        assert!(
            matches!(again, CompleteResult::AlreadyCompleted(r) if r.context == run.context),
            "rerun changes nothing"
        );
        let not = AdapterResult::new(Verdict::NotReconciled, "waiting", "x");
        let id2 = queued_run(&store, &s, RunType::InventorySync).await;
        let seen2 = store.get_run(&id2).await.unwrap().unwrap();
        assert!(matches!(
            store.apply_reconciliation(&seen2, "a", &not, None).await.unwrap(),
            CompleteResult::NotReady(_)
        ));
    }
);

both_backends!(force_close_records_who_and_why, |store: Store| async move {
    use opsledger_store::stale::{ForceClose, ForceCloseResult};
    let s = scope(&store).await;
    let id = queued_run(&store, &s, RunType::InventorySync).await;
    let seen = store.get_run(&id).await.unwrap().unwrap();
    let request = ForceClose {
        outcome: Outcome::Failed,
        reason: "tenant offboarded",
        by: "user:admin",
        proof: None,
    };
    let ForceCloseResult::Closed(run) = store.apply_force_close(&seen, request).await.unwrap() else {
        panic!()
    };
    let rec = run.reconciliation().unwrap();
    assert_eq!(
        (rec["adapter"].as_str(), rec["by"].as_str()),
        (Some("admin_force_close"), Some("user:admin"))
    );
    assert_eq!(rec["explanation"], "tenant offboarded");
    assert!(matches!(
        store.apply_force_close(&seen, request).await.unwrap(),
        ForceCloseResult::AlreadyCompleted(_)
    ));
});

both_backends!(
    a_rescued_and_reclaimed_run_is_not_reconciled_on_what_the_sweep_saw,
    |store: Store| async move {
        let s = scope(&store).await;
        let id = queued_run(&store, &s, RunType::InventorySync).await;
        // Worker A's lease expires with attempts left: not stale, the rescuer retries it.
        store.claim_jobs("A", 1, 1).await.unwrap().pop().unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = opsledger_store::now_ms();
        assert!(
            store
                .stale_run_candidates(now, now, None, 10)
                .await
                .unwrap()
                .runs
                .is_empty(),
            "an expired lease with attempts left is not stale"
        );
        // Even a decision taken on such a read is not applied once B holds the job.
        let seen = store.get_run(&id).await.unwrap().unwrap();
        assert_eq!(store.rescue_expired_jobs(100).await.unwrap().retried, 1);
        let b = store.claim_jobs("B", 1, 60_000).await.unwrap().pop().unwrap();
        let result = store
            .apply_reconciliation(
                &seen,
                "generic_fail_closed",
                &AdapterResult::stale_no_proof("x"),
                Some("system"),
            )
            .await
            .unwrap();
        assert!(matches!(result, CompleteResult::NotReady(_)), "{result:?}");
        assert!(store.job_is_held(&b.fence).await.unwrap());
        assert_eq!(
            store.get_run(&id).await.unwrap().unwrap().status,
            RunStatus::Running
        );
    }
);

both_backends!(
    a_lost_lease_can_neither_close_nor_patch_the_run,
    |store: Store| async move {
        let s = scope(&store).await;
        let id = queued_run(&store, &s, RunType::InventorySync).await;
        let a = store.claim_jobs("A", 1, 1).await.unwrap().pop().unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        store.rescue_expired_jobs(10).await.unwrap();
        let b = store.claim_jobs("B", 1, 60_000).await.unwrap().pop().unwrap();
        let patch = [opsledger_store::ContextPatch::new(["x"], serde_json::json!(1))];
        assert!(matches!(
            opsledger_store::testing::lease(&store, &a.fence, &id)
                .await
                .patch_context(&patch)
                .await,
            Err(StoreError::LeaseLost { .. })
        ));
        assert!(matches!(
            opsledger_store::testing::lease(&store, &a.fence, &id)
                .await
                .complete(Completion::new(Outcome::Failed))
                .await,
            Err(StoreError::LeaseLost { .. })
        ));
        assert!(!store.get_run(&id).await.unwrap().unwrap().is_completed());
        assert!(
            opsledger_store::testing::lease(&store, &b.fence, &id)
                .await
                .patch_context(&patch)
                .await
                .unwrap()
        );
        let done = opsledger_store::testing::lease(&store, &b.fence, &id)
            .await
            .complete(Completion::new(Outcome::Succeeded))
            .await
            .unwrap();
        assert_eq!(done.run().outcome, Outcome::Succeeded);
    }
);

/// A close and a claim of the same queued run at once: the claim locks the
/// job then waits for the run; the close holds the run and must not then wait
/// for the job (PostgreSQL would abort one as a deadlock).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closing_a_run_while_its_job_is_claimed_does_not_deadlock() {
    let Some(db) = opsledger_store::testing::postgres().await else {
        return;
    };
    let store = db.store.clone();
    let opsledger_store::testing::RawPool::Postgres(pool) = opsledger_store::testing::raw_pool(&store) else {
        unreachable!()
    };
    let s = scope(&store).await;
    let id = queued_run(&store, &s, RunType::InventorySync).await;
    // Hold the run row so that the close, then the claim, queue behind it.
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM operation_runs WHERE id = $1 FOR UPDATE")
        .bind(&id)
        .execute(&mut *holder)
        .await
        .unwrap();
    let (st, rid) = (store.clone(), id.clone());
    let closer =
        tokio::spawn(async move { st.complete_run(&rid, Completion::new(Outcome::Cancelled)).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let st = store.clone();
    let claimer = tokio::spawn(async move { st.claim_jobs("w", 1, 60_000).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    holder.commit().await.unwrap();
    let closed = closer.await.unwrap().expect("the close is not a deadlock victim");
    assert_eq!(closed.run().outcome, Outcome::Cancelled);
    let claimed = claimer
        .await
        .unwrap()
        .expect("the claim is not a deadlock victim");
    // The claimer got the job of a closed run: its runner cancels it on sight.
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        store.get_run(&id).await.unwrap().unwrap().outcome,
        Outcome::Cancelled
    );
}

both_backends!(
    a_run_this_node_cannot_read_does_not_stop_the_sweep,
    |store: Store| async move {
        let a = scope(&store).await;
        let b = scope(&store).await;
        let mut ids = Vec::new();
        for s in [&a, &b] {
            ids.push(queued_run(&store, s, RunType::PolicySync).await);
        }
        ids.sort();
        // A newer node's type, unknown here, on the first run by id.
        opsledger_store::raw_on_pool!(&store, pool => {
            sqlx::query("UPDATE operation_runs SET type = 'future.type' WHERE id = $1")
                .bind(&ids[0])
                .execute(pool)
                .await
                .unwrap();
        });
        let far_future = opsledger_store::now_ms() + 3_600_000;
        let first = store
            .stale_run_candidates(far_future, far_future, None, 1)
            .await
            .unwrap();
        assert!(first.runs.is_empty(), "the unreadable run is skipped");
        let second = store
            .stale_run_candidates(far_future, far_future, first.next_after.as_deref(), 1)
            .await
            .unwrap();
        assert_eq!(second.runs.len(), 1, "the next page is still reached");
        assert_eq!(second.runs[0].id, ids[1]);
        // A job given back after a delay is not claimable before it, and no attempt was spent.
        let job = store.claim_jobs("w", 1, 60_000).await.unwrap().pop().unwrap();
        assert!(store.release_job_after(&job.fence, 60_000).await.unwrap());
        let other = store.claim_jobs("w", 1, 60_000).await.unwrap().pop().unwrap();
        assert_ne!(other.fence.job_id, job.fence.job_id);
        assert_eq!(other.attempt, 1);
        assert!(store.claim_jobs("w", 1, 60_000).await.unwrap().is_empty());
    }
);

/// A unit job whose lease has expired by the store's clock (moved, not slept).
async fn expired_unit(store: &Store) -> (Store, String, opsledger_store::jobs::ClaimedJob) {
    let clock = ManualClock::new();
    let store = store.with_clock(Arc::new(clock.clone()));
    let id = fan_out(&store, 1).await;
    let job = store
        .claim_jobs("stalled", 1, 1_000)
        .await
        .unwrap()
        .pop()
        .unwrap();
    clock.advance(1_001);
    (store, id, job)
}

both_backends!(
    a_finish_that_holds_its_job_while_the_rescuer_runs_is_not_overwritten,
    |store: Store| async move {
        // River #1302: a job completing while the rescuer works. The finish
        // has ended the job and recorded its unit but not committed; the
        // rescuer runs now (PostgreSQL: it skips the locked row; SQLite: it
        // waits for the write lock, then finds the job completed).
        let (store, id, job) = expired_unit(&store).await;
        let unit = UnitRecord::new(job.unit_key.clone(), UnitOutcome::Succeeded);
        let (held, summary) = testing::begin_finish_unit(&store, &job.fence, &id, unit, JobEnd::Completed)
            .await
            .unwrap();
        assert!(summary.all_processed);
        let rescuer = {
            let store = store.clone();
            tokio::spawn(async move { store.rescue_expired_jobs(10).await.unwrap() })
        };
        // Let the rescuer reach the job (or the lock) before the finish commits.
        tokio::time::sleep(Duration::from_millis(100)).await;
        held.commit().await.unwrap();
        let report = rescuer.await.unwrap();
        assert_eq!(report, Default::default(), "the rescuer touched a finished job");
        let tally = store.job_tally(&id).await.unwrap();
        assert_eq!((tally.completed, tally.available, tally.running), (2, 0, 0));
        let run = store.get_run(&id).await.unwrap().unwrap();
        assert_eq!(
            (run.summary_counts.processed, run.summary_counts.succeeded),
            (Some(1), Some(1))
        );
    }
);

both_backends!(
    a_rescue_that_holds_the_job_while_the_worker_finishes_fences_the_worker_out,
    |store: Store| async move {
        // The other order: the rescuer has taken the expired lease back but
        // not committed; the stalled worker's finish runs now and must land
        // nothing once the rescue commits.
        let (store, id, job) = expired_unit(&store).await;
        let (held, report) = testing::begin_rescue(&store, 10).await.unwrap();
        assert_eq!((report.rescued, report.retried), (1, 1));
        let worker = {
            let (store, fence, key, id) =
                (store.clone(), job.fence.clone(), job.unit_key.clone(), id.clone());
            tokio::spawn(async move {
                let unit = UnitRecord::new(key, UnitOutcome::Succeeded);
                store.finish_unit_job(&fence, &id, unit, JobEnd::Completed).await
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        held.commit().await.unwrap();
        let finished = worker.await.unwrap();
        assert!(
            matches!(finished, Err(StoreError::LeaseLost { .. })),
            "{finished:?}"
        );
        let tally = store.job_tally(&id).await.unwrap();
        assert_eq!(
            (tally.completed, tally.available, tally.running),
            (1, 1, 0),
            "run job + the unit, retriable"
        );
        let run = store.get_run(&id).await.unwrap().unwrap();
        assert_eq!(run.summary_counts.processed, Some(0), "nothing counted");
        assert!(store.recorded_units(&id).await.unwrap().is_empty());
    }
);

both_backends!(
    a_rescued_parent_can_neither_plan_units_nor_create_its_artifact,
    |store: Store| async move {
        let clock = ManualClock::new();
        let store = store.with_clock(Arc::new(clock.clone()));
        let s = scope(&store).await;
        let id = queued_run(&store, &s, RunType::BackupSetAddPolicies).await;
        let a = store.claim_jobs("A", 1, 1_000).await.unwrap().pop().unwrap();
        clock.advance(1_001);
        assert_eq!(store.rescue_expired_jobs(10).await.unwrap().retried, 1);
        let b = store.claim_jobs("B", 1, 60_000).await.unwrap().pop().unwrap();
        let stalled = testing::lease(&store, &a.fence, &id).await;
        let keys = vec!["deviceConfigurations/x".to_owned()];
        assert!(matches!(
            stalled.enqueue_units(&keys, 3).await,
            Err(StoreError::LeaseLost { .. })
        ));
        assert!(matches!(
            stalled.backup_set("Backup", None).await,
            Err(StoreError::LeaseLost { .. })
        ));
        assert!(matches!(
            stalled.init_total(1).await,
            Err(StoreError::LeaseLost { .. })
        ));
        let run = store.get_run(&id).await.unwrap().unwrap();
        assert_eq!(
            run.summary_counts.total, None,
            "the stalled attempt planned nothing"
        );
        assert_eq!(store.backup_set_of_run(&id).await.unwrap(), None);
        // The holder plans once.
        let live = testing::lease(&store, &b.fence, &id).await;
        live.backup_set("Backup", None).await.unwrap();
        assert_eq!(live.enqueue_units(&keys, 3).await.unwrap(), 1);
    }
);

both_backends!(
    a_stalled_worker_cannot_finish_a_unit_another_worker_reclaimed,
    |store: Store| async move {
        // The job is running again, under B's lease: only the lease token
        // tells the stalled worker A from B.
        let (store, id, a) = expired_unit(&store).await;
        assert_eq!(store.rescue_expired_jobs(10).await.unwrap().retried, 1);
        let b = store.claim_jobs("B", 1, 60_000).await.unwrap().pop().unwrap();
        assert_eq!(b.fence.job_id, a.fence.job_id);
        let unit = |k: &str| UnitRecord::new(k.to_owned(), UnitOutcome::Succeeded);
        let late = store
            .finish_unit_job(&a.fence, &id, unit(&a.unit_key), JobEnd::Completed)
            .await;
        assert!(matches!(late, Err(StoreError::LeaseLost { .. })), "{late:?}");
        assert!(
            store.job_is_held(&b.fence).await.unwrap(),
            "B still holds the job"
        );
        let done = store
            .finish_unit_job(&b.fence, &id, unit(&b.unit_key), JobEnd::Completed)
            .await
            .unwrap();
        assert_eq!((done.recorded, done.all_processed), (1, true));
    }
);

both_backends!(
    a_lease_fences_only_its_own_run_and_unit,
    |store: Store| async move {
        // A valid lease of one run's unit job writes nothing to another run,
        // nor records another unit key.
        let first = fan_out(&store, 2).await;
        let other = fan_out(&store, 1).await;
        let job = store.claim_jobs("w", 1, 60_000).await.unwrap().pop().unwrap();
        assert_eq!(job.run_id, first);
        let unit = |k: &str| UnitRecord::new(k.to_owned(), UnitOutcome::Succeeded);
        let elsewhere = store
            .finish_unit_job(&job.fence, &other, unit(&job.unit_key), JobEnd::Completed)
            .await;
        assert!(
            matches!(elsewhere, Err(StoreError::LeaseLost { .. })),
            "{elsewhere:?}"
        );
        let sibling = if job.unit_key == "u0000" { "u0001" } else { "u0000" };
        let wrong_unit = store
            .finish_unit_job(&job.fence, &first, unit(sibling), JobEnd::Completed)
            .await;
        assert!(
            matches!(wrong_unit, Err(StoreError::LeaseLost { .. })),
            "{wrong_unit:?}"
        );
        let leased_elsewhere = testing::lease(&store, &job.fence, &other).await;
        assert!(matches!(
            leased_elsewhere.record_units(&[unit("u0000")]).await,
            Err(StoreError::LeaseLost { .. })
        ));
        assert_eq!(
            store
                .get_run(&other)
                .await
                .unwrap()
                .unwrap()
                .summary_counts
                .processed,
            Some(0)
        );
        assert_eq!(
            store
                .get_run(&first)
                .await
                .unwrap()
                .unwrap()
                .summary_counts
                .processed,
            Some(0)
        );
    }
);

both_backends!(
    a_unit_wave_is_claimable_only_when_every_earlier_unit_is_recorded,
    |store: Store| async move {
        let clock = ManualClock::new();
        let store = store.with_clock(Arc::new(clock.clone()));
        let s = scope(&store).await;
        let id = queued_run(&store, &s, RunType::BackupSetAddPolicies).await;
        let run_job = store.claim_jobs("w", 1, 60_000).await.unwrap().pop().unwrap();
        let run = testing::lease(&store, &run_job.fence, &id).await;
        let keys = |ks: &[&str]| ks.iter().map(|k| k.to_string()).collect::<Vec<_>>();
        let (w0, w1, w2) = (
            keys(&["dir/a", "dir/b"]),
            keys(&["policy/c"]),
            keys(&["assign/d"]),
        );
        // A unit in two waves is refused, and nothing is planned.
        assert!(matches!(
            run.enqueue_unit_waves(&[&w0, &keys(&["dir/a"])], 3).await,
            Err(StoreError::UnitInTwoWaves {
                first: 0,
                second: 1,
                ..
            })
        ));
        assert_eq!(run.enqueue_unit_waves(&[&w0, &w1, &w2], 3).await.unwrap(), 4);
        assert!(store.complete_job(&run_job.fence).await.unwrap());
        let claimed = |jobs: &[opsledger_store::jobs::ClaimedJob]| {
            let mut k: Vec<String> = jobs.iter().map(|j| j.unit_key.clone()).collect();
            k.sort();
            k
        };
        // Wave 0 only.
        let first = store.claim_jobs("w", 10, 1_000).await.unwrap();
        assert_eq!(claimed(&first), w0);
        assert!(store.claim_jobs("w", 10, 1_000).await.unwrap().is_empty());
        // One of wave 0 finishes; the other's worker dies and its job is
        // retried: wave 1 still waits for it.
        let (a, b) = (&first[0], &first[1]);
        let done = |j: &opsledger_store::jobs::ClaimedJob, o: UnitOutcome, end: JobEnd| {
            let store = store.clone();
            let (fence, key, id) = (j.fence.clone(), j.unit_key.clone(), id.clone());
            async move {
                store
                    .finish_unit_job(&fence, &id, UnitRecord::new(key, o), end)
                    .await
                    .unwrap()
            }
        };
        done(a, UnitOutcome::Succeeded, JobEnd::Completed).await;
        clock.advance(1_001);
        assert_eq!(store.rescue_expired_jobs(10).await.unwrap().retried, 1);
        let retried = store.claim_jobs("w", 10, 1_000).await.unwrap();
        assert_eq!(
            claimed(&retried),
            vec![b.unit_key.clone()],
            "the retry, not wave 1"
        );
        // A unit that fails for good is recorded too: the next wave opens.
        done(&retried[0], UnitOutcome::Failed, JobEnd::Failed).await;
        let second = store.claim_jobs("w", 10, 1_000).await.unwrap();
        assert_eq!(claimed(&second), w1);
        assert!(store.claim_jobs("w", 10, 1_000).await.unwrap().is_empty());
        done(&second[0], UnitOutcome::Succeeded, JobEnd::Completed).await;
        let third = store.claim_jobs("w", 10, 1_000).await.unwrap();
        assert_eq!(claimed(&third), w2);
        let r = done(&third[0], UnitOutcome::Succeeded, JobEnd::Completed).await;
        assert!(r.all_processed);
        let run = store.get_run(&id).await.unwrap().unwrap();
        assert_eq!(
            (run.summary_counts.processed, run.summary_counts.failed),
            (Some(4), Some(1))
        );
    }
);

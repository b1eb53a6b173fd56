//! The job cleaner: finished jobs past their retention are deleted, a
//! bounded batch per call; live jobs never; the unit ledger and the runs
//! stay as they were (they are the proof). An injected clock, no sleeps.

mod common;
use common::{queued_run, scope};
use opsledger_core::{Outcome, RunType, UnitOutcome};
use opsledger_store::clock::ManualClock;
use opsledger_store::jobs::{JobEnd, JobKind, JobTally};
use opsledger_store::{CompleteResult, Store, UnitRecord, both_backends};
use std::sync::Arc;

const RETENTION: i64 = 60_000;

/// A fan-out run with `n` unit jobs planned; its run job completed.
async fn fan_out(store: &Store, n: usize) -> (String, Vec<String>) {
    let s = scope(store).await;
    let id = queued_run(store, &s, RunType::BackupSetAddPolicies).await;
    let run_job = store.claim_jobs("w", 1, 60_000).await.unwrap().pop().unwrap();
    assert_eq!(
        (run_job.kind, run_job.run_id.as_str()),
        (JobKind::Run, id.as_str())
    );
    let keys: Vec<String> = (0..n).map(|i| format!("u{i:04}")).collect();
    assert_eq!(store.enqueue_units(&id, &keys, 3).await.unwrap(), n as u64);
    assert!(store.complete_job(&run_job.fence).await.unwrap());
    (id, keys)
}

fn tally(t: &JobTally) -> (u64, u64, u64, u64, u64) {
    (t.available, t.running, t.completed, t.failed, t.cancelled)
}

both_backends!(
    only_finished_jobs_past_retention_are_deleted_a_bounded_batch_at_a_time,
    |store: Store| async move {
        let clock = ManualClock::new();
        let store = store.with_clock(Arc::new(clock.clone()));
        // A fan-out that finished: its run job and four unit jobs ended.
        let (done, _) = fan_out(&store, 4).await;
        let units = store.claim_jobs("w", 4, 60_000).await.unwrap();
        assert_eq!(units.len(), 4);
        for (i, j) in units.iter().enumerate() {
            let (outcome, end) = if i == 0 {
                (UnitOutcome::Failed, JobEnd::Failed)
            } else {
                (UnitOutcome::Succeeded, JobEnd::Completed)
            };
            store
                .finish_unit_job(&j.fence, &done, UnitRecord::new(j.unit_key.clone(), outcome), end)
                .await
                .unwrap();
        }
        let CompleteResult::Completed(closed) = store.maybe_complete_bulk_run(&done).await.unwrap() else {
            panic!("every unit processed")
        };
        assert_eq!(closed.outcome, Outcome::PartiallySucceeded);
        // A fan-out still going: one unit finished, one running, one waiting.
        let (live, live_keys) = fan_out(&store, 3).await;
        let claimed = store.claim_jobs("w", 2, 60_000).await.unwrap();
        assert_eq!(claimed.len(), 2);
        store
            .finish_unit_job(
                &claimed[0].fence,
                &live,
                UnitRecord::new(claimed[0].unit_key.clone(), UnitOutcome::Succeeded),
                JobEnd::Completed,
            )
            .await
            .unwrap();
        // Past the retention (the running job's lease long expired: it is
        // still not finished, so it stays). Then a job that ends just now.
        clock.advance(2 * RETENTION);
        let s = scope(&store).await;
        let fresh = queued_run(&store, &s, RunType::PolicySync).await;
        let job = store.claim_jobs("w", 1, 60_000).await.unwrap().pop().unwrap();
        assert_eq!((job.kind, job.run_id.as_str()), (JobKind::Run, fresh.as_str()));
        assert!(store.complete_job(&job.fence).await.unwrap());

        let ledger_done = store.recorded_units(&done).await.unwrap();
        let ledger_live = store.recorded_units(&live).await.unwrap();
        let run_done = store.get_run(&done).await.unwrap().unwrap();
        let run_live = store.get_run(&live).await.unwrap().unwrap();

        // Seven finished jobs are past the retention (done: 1 + 4, live: 1 + 1).
        let cutoff = store.now_ms() - RETENTION;
        assert_eq!(store.delete_finished_jobs(cutoff, 3).await.unwrap(), 3, "bounded");
        assert_eq!(store.delete_finished_jobs(cutoff, 3).await.unwrap(), 3, "bounded");
        assert_eq!(store.delete_finished_jobs(cutoff, 3).await.unwrap(), 1);
        assert_eq!(
            store.delete_finished_jobs(cutoff, 3).await.unwrap(),
            0,
            "nothing left"
        );
        assert_eq!(tally(&store.job_tally(&done).await.unwrap()), (0, 0, 0, 0, 0));
        assert_eq!(
            tally(&store.job_tally(&live).await.unwrap()),
            (1, 1, 0, 0, 0),
            "the waiting and the running job stay"
        );
        assert_eq!(
            tally(&store.job_tally(&fresh).await.unwrap()),
            (0, 0, 1, 0, 0),
            "inside its retention"
        );
        // The proof is untouched: ledger, outcome, counts, context, failures.
        assert_eq!(store.recorded_units(&done).await.unwrap(), ledger_done);
        assert_eq!(store.recorded_units(&live).await.unwrap(), ledger_live);
        assert_eq!(ledger_done.len(), 4);
        for (before, id) in [(&run_done, &done), (&run_live, &live)] {
            let after = store.get_run(id).await.unwrap().unwrap();
            assert_eq!(
                (
                    after.status,
                    after.outcome,
                    after.summary_counts,
                    &after.context,
                    &after.failures
                ),
                (
                    before.status,
                    before.outcome,
                    before.summary_counts,
                    &before.context,
                    &before.failures
                )
            );
        }
        // A retried parent planning again after its finished jobs went
        // enqueues nothing: the first plan stands (`total` is set once).
        assert_eq!(store.enqueue_units(&live, &live_keys, 3).await.unwrap(), 3);
        assert_eq!(tally(&store.job_tally(&live).await.unwrap()), (1, 1, 0, 0, 0));
        // The live run finishes normally, its unit counted once.
        let rest = store.claim_jobs("w", 10, 60_000).await.unwrap();
        assert_eq!(rest.len(), 1);
        store
            .finish_unit_job(
                &rest[0].fence,
                &live,
                UnitRecord::new(rest[0].unit_key.clone(), UnitOutcome::Succeeded),
                JobEnd::Completed,
            )
            .await
            .unwrap();
        assert_eq!(
            store
                .get_run(&live)
                .await
                .unwrap()
                .unwrap()
                .summary_counts
                .processed,
            Some(2)
        );
        // One pass of the cleaner (the sweep's), once the fresh job is old too.
        clock.advance(2 * RETENTION);
        assert_eq!(
            store.clean_finished_jobs(RETENTION as u64, 1, 10).await.unwrap(),
            2,
            "the fresh run job and the live run's last unit"
        );
        assert_eq!(tally(&store.job_tally(&fresh).await.unwrap()), (0, 0, 0, 0, 0));
        assert_eq!(
            tally(&store.job_tally(&live).await.unwrap()),
            (0, 1, 0, 0, 0),
            "the expired running job is never deleted"
        );
        assert_eq!(
            store.clean_finished_jobs(RETENTION as u64, 1, 10).await.unwrap(),
            0
        );
    }
);

both_backends!(
    a_cleaner_pass_is_bounded_by_its_batches,
    |store: Store| async move {
        let clock = ManualClock::new();
        let store = store.with_clock(Arc::new(clock.clone()));
        let mut ids = Vec::new();
        for _ in 0..5 {
            let s = scope(&store).await;
            let id = queued_run(&store, &s, RunType::PolicySync).await;
            let job = store.claim_jobs("w", 1, 60_000).await.unwrap().pop().unwrap();
            assert!(store.complete_job(&job.fence).await.unwrap());
            ids.push(id);
        }
        assert_eq!(
            store.clean_finished_jobs(RETENTION as u64, 2, 10).await.unwrap(),
            0,
            "inside retention"
        );
        clock.advance(2 * RETENTION);
        assert_eq!(
            store.clean_finished_jobs(RETENTION as u64, 2, 2).await.unwrap(),
            4,
            "two batches of two"
        );
        assert_eq!(
            store.clean_finished_jobs(RETENTION as u64, 2, 2).await.unwrap(),
            1
        );
        for id in &ids {
            assert!(store.get_run(id).await.unwrap().is_some(), "runs stay");
        }
    }
);

//! The batch completer's write and the node's heartbeat, on SQLite and
//! PostgreSQL: many unit results commit in one transaction, each job end
//! still fenced on its own (a lost lease drops that result only), a closed
//! run's jobs end cancelled with nothing recorded, replays count nothing,
//! and one heartbeat statement tells each job's fate apart.

mod common;

use common::{fan_out, finish};
use opsledger_core::{Outcome, UnitOutcome};
use opsledger_store::clock::ManualClock;
use opsledger_store::job_batches::{HeldJob, UnitFinish, UnitFinished};
use opsledger_store::jobs::Heartbeat;
use opsledger_store::{Completion, ContextPatch, Store, UnitRecord, both_backends};
use std::sync::Arc;

async fn counts(store: &Store, id: &str) -> (Option<u64>, Option<u64>, Option<u64>) {
    let c = store.get_run(id).await.unwrap().unwrap().summary_counts;
    (c.processed, c.succeeded, c.failed)
}

both_backends!(
    a_batch_commits_every_held_result_and_drops_only_the_lost_ones,
    |store: Store| async move {
        let clock = ManualClock::new();
        let store = store.with_clock(Arc::new(clock.clone()));
        let a = fan_out(&store, 3).await;
        let b = fan_out(&store, 2).await;
        let jobs = store.claim_jobs("w", 10, 1_000).await.unwrap();
        assert_eq!(jobs.len(), 5);
        // One lease expires and is rescued before the batch lands: its
        // result must be dropped, the others written.
        let lost = jobs.iter().find(|j| j.run_id == a).unwrap().clone();
        let keep: Vec<_> = jobs.iter().filter(|j| j.fence != lost.fence).collect();
        assert_eq!(
            store
                .heartbeat_jobs(
                    &keep
                        .iter()
                        .map(|j| HeldJob {
                            fence: j.fence.clone(),
                            run_id: j.run_id.clone()
                        })
                        .collect::<Vec<_>>(),
                    60_000
                )
                .await
                .unwrap(),
            vec![Heartbeat::Alive; 4]
        );
        clock.advance(2_000);
        assert_eq!(store.rescue_expired_jobs(100).await.unwrap().retried, 1);
        let mut batch: Vec<UnitFinish> = keep
            .iter()
            .map(|j| {
                finish(
                    j,
                    if j.unit_key == "u0001" {
                        UnitOutcome::Failed
                    } else {
                        UnitOutcome::Succeeded
                    },
                )
            })
            .collect();
        batch.push(finish(&lost, UnitOutcome::Succeeded));
        let results = store.finish_unit_jobs(&batch).await.unwrap();
        assert_eq!(results.len(), 5);
        assert_eq!(results[4], UnitFinished::LeaseLost);
        for (f, r) in batch.iter().zip(&results).take(4) {
            let done = f.run_id == b;
            assert_eq!(*r, UnitFinished::Recorded { all_processed: done }, "{f:?}");
        }
        // b: both units, one failed (u0001). a: two of three.
        assert_eq!(counts(&store, &b).await, (Some(2), Some(1), Some(1)));
        assert_eq!(counts(&store, &a).await.0, Some(2));
        let tally = store.job_tally(&a).await.unwrap();
        assert_eq!(tally.available, 1, "the rescued job runs again: {tally:?}");
        // The same batch again: every fence is spent, nothing moves.
        let again = store.finish_unit_jobs(&batch).await.unwrap();
        assert!(again.iter().all(|r| *r == UnitFinished::LeaseLost), "{again:?}");
        assert_eq!(counts(&store, &b).await, (Some(2), Some(1), Some(1)));
    }
);

both_backends!(
    a_closed_runs_results_end_their_jobs_cancelled_and_count_nothing,
    |store: Store| async move {
        let open = fan_out(&store, 1).await;
        let closed = fan_out(&store, 2).await;
        let jobs = store.claim_jobs("w", 10, 60_000).await.unwrap();
        store
            .cancel_run(
                &closed,
                ContextPatch::new(["cancelled_by"], serde_json::json!("user:u")),
            )
            .await
            .unwrap();
        let batch: Vec<UnitFinish> = jobs.iter().map(|j| finish(j, UnitOutcome::Succeeded)).collect();
        let results = store.finish_unit_jobs(&batch).await.unwrap();
        for (f, r) in batch.iter().zip(&results) {
            if f.run_id == closed {
                assert_eq!(*r, UnitFinished::RunClosed);
            } else {
                assert_eq!(*r, UnitFinished::Recorded { all_processed: true });
            }
        }
        let tally = store.job_tally(&closed).await.unwrap();
        assert_eq!(tally.running, 0, "{tally:?}");
        // Cancelling accounted for its open units; the results added none.
        let after = counts(&store, &closed).await;
        assert!(after.1.unwrap_or(0) == 0, "{after:?}");
        assert_eq!(
            store.maybe_complete_bulk_run(&open).await.unwrap().run().outcome,
            Outcome::Succeeded
        );
    }
);

both_backends!(
    a_unit_already_in_the_ledger_is_a_replay_and_counts_nothing,
    |store: Store| async move {
        let id = fan_out(&store, 2).await;
        let jobs = store.claim_jobs("w", 10, 60_000).await.unwrap();
        // Both units reached the ledger another way (a rescue's last
        // attempt, a reconciler) while their jobs still ran.
        store
            .record_units(
                &id,
                &[
                    UnitRecord::new("u0000", UnitOutcome::Succeeded),
                    UnitRecord::new("u0001", UnitOutcome::Succeeded),
                ],
            )
            .await
            .unwrap();
        let batch: Vec<UnitFinish> = jobs.iter().map(|j| finish(j, UnitOutcome::Failed)).collect();
        let results = store.finish_unit_jobs(&batch).await.unwrap();
        assert!(
            results
                .iter()
                .all(|r| *r == UnitFinished::Recorded { all_processed: true }),
            "{results:?}"
        );
        assert_eq!(counts(&store, &id).await, (Some(2), Some(2), Some(0)));
    }
);

both_backends!(
    one_heartbeat_statement_tells_alive_lost_and_closed_apart,
    |store: Store| async move {
        let a = fan_out(&store, 2).await;
        let b = fan_out(&store, 1).await;
        let jobs = store.claim_jobs("w", 10, 60_000).await.unwrap();
        let held: Vec<HeldJob> = jobs
            .iter()
            .map(|j| HeldJob {
                fence: j.fence.clone(),
                run_id: j.run_id.clone(),
            })
            .collect();
        // One of a's jobs finished (its fence is spent); b was closed.
        let done = jobs.iter().find(|j| j.run_id == a).unwrap();
        store
            .finish_unit_jobs(&[finish(done, UnitOutcome::Succeeded)])
            .await
            .unwrap();
        store
            .complete_run(&b, Completion::new(Outcome::Cancelled))
            .await
            .unwrap();
        let beats = store.heartbeat_jobs(&held, 60_000).await.unwrap();
        for (j, beat) in jobs.iter().zip(beats) {
            let expected = if j.fence == done.fence {
                Heartbeat::LeaseLost
            } else if j.run_id == b {
                Heartbeat::RunClosed
            } else {
                Heartbeat::Alive
            };
            assert_eq!(beat, expected, "{j:?}");
        }
    }
);

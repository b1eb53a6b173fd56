//! Edges of the claim cursor, the claim-time run heads and the PostgreSQL
//! array binds, on both databases (from a hostile review): the wave gate,
//! retries, several producers, a clock stepped back, odd unit keys in big
//! batches, and a stale result beside the current one for the same job.

mod common;

use common::{fan_out, finish, queued_run, scope};
use opsledger_core::{RunType, UnitOutcome};
use opsledger_store::claims::{CURSOR_RESCAN_MS, ClaimCursor};
use opsledger_store::clock::ManualClock;
use opsledger_store::job_batches::UnitFinished;
use opsledger_store::jobs::JobKind;
use opsledger_store::{Store, both_backends, testing};
use std::collections::HashSet;
use std::sync::Arc;

const LEASE: u64 = 600_000;

fn keys(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A run planned in `waves` through a real run-job claim.
async fn waved(store: &Store, waves: &[&[String]]) -> String {
    let s = scope(store).await;
    let id = queued_run(store, &s, RunType::BackupSetAddPolicies).await;
    let job = store.claim_jobs("w", 1, 60_000).await.unwrap().pop().unwrap();
    assert_eq!(job.kind, JobKind::Run);
    let lease = testing::lease(store, &job.fence, &id).await;
    lease.enqueue_unit_waves(waves, 3).await.unwrap();
    assert!(store.complete_job(&job.fence).await.unwrap());
    id
}

// The wave gate holds with the cursor, and a later wave that sorts behind
// the cursor (keys sort before the earlier wave's) is claimed as soon as the
// earlier wave ends, without waiting for the rescan.
both_backends!(
    the_wave_gate_holds_with_a_cursor_and_a_later_wave_behind_it_is_claimed,
    |store: Store| async move {
        let clock = ManualClock::new();
        let store = store.with_clock(Arc::new(clock.clone()));
        let w0 = keys(&["m1", "m2", "m3", "m4"]);
        let w1 = keys(&["a1", "a2", "z1"]);
        let id = waved(&store, &[&w0, &w1]).await;
        let mut cursor = ClaimCursor::default();
        let mut held = Vec::new();
        for limit in [1u32, 2, 10, 10] {
            let got = store
                .claim_jobs_from(&mut cursor, "w", limit, LEASE)
                .await
                .unwrap();
            for j in &got {
                assert!(
                    w0.contains(&j.unit_key),
                    "wave 1 unit {} claimed before wave 0 ended",
                    j.unit_key
                );
            }
            held.extend(got);
        }
        assert_eq!(held.len(), 4);
        // End wave 0 but one, then check again.
        let last = held.pop().unwrap();
        let batch: Vec<_> = held.iter().map(|j| finish(j, UnitOutcome::Succeeded)).collect();
        store.finish_unit_jobs(&batch).await.unwrap();
        assert!(
            store
                .claim_jobs_from(&mut cursor, "w", 10, LEASE)
                .await
                .unwrap()
                .is_empty()
        );
        store
            .finish_unit_jobs(&[finish(&last, UnitOutcome::Succeeded)])
            .await
            .unwrap();
        let got = store.claim_jobs_from(&mut cursor, "w", 10, LEASE).await.unwrap();
        let got: HashSet<String> = got.into_iter().map(|j| j.unit_key).collect();
        assert_eq!(got, w1.iter().cloned().collect::<HashSet<_>>());
        assert_eq!(store.job_tally(&id).await.unwrap().available, 0);
    }
);

// A retried job (backoff) is claimable exactly when its delay ends, through
// a cursor that moved on meanwhile.
both_backends!(
    a_retried_job_is_found_after_its_backoff_through_the_cursor,
    |store: Store| async move {
        let clock = ManualClock::new();
        let store = store.with_clock(Arc::new(clock.clone()));
        fan_out(&store, 30).await;
        let mut cursor = ClaimCursor::default();
        let first = store.claim_jobs_from(&mut cursor, "w", 3, LEASE).await.unwrap();
        assert!(store.retry_job(&first[0].fence, "boom", 500).await.unwrap());
        clock.advance(100);
        let a = store.claim_jobs_from(&mut cursor, "w", 3, LEASE).await.unwrap();
        assert!(a.iter().all(|j| j.unit_key != first[0].unit_key));
        clock.advance(500);
        // A new fan-out after the retry's time: its units sort after it.
        fan_out(&store, 5).await;
        // Claim everything in small claims without passing the rescan time.
        let mut seen = false;
        for _ in 0..40 {
            let got = store.claim_jobs_from(&mut cursor, "w", 2, LEASE).await.unwrap();
            if got
                .iter()
                .any(|j| j.unit_key == first[0].unit_key && j.run_id == first[0].run_id)
            {
                seen = true;
                break;
            }
        }
        assert!(seen, "the retried job was not claimed");
    }
);

// A rescued job (expired lease) sorts at `now`; and many producers with
// their own cursors lose nothing: every job is claimed exactly once.
both_backends!(
    several_producers_with_cursors_claim_every_job_once,
    |store: Store| async move {
        let clock = ManualClock::new();
        let store = store.with_clock(Arc::new(clock.clone()));
        let a = fan_out(&store, 40).await;
        let mut cursors = vec![ClaimCursor::default(); 3];
        let mut seen: HashSet<(String, String)> = HashSet::new();
        let mut released = 0;
        for round in 0..200 {
            let c = &mut cursors[round % 3];
            let got = store
                .claim_jobs_from(c, &format!("w{}", round % 3), 3, 1_000)
                .await
                .unwrap();
            for j in got {
                if round % 5 == 0 && released < 10 {
                    // Give some back at once: they sort behind every cursor.
                    released += 1;
                    assert!(store.release_job(&j.fence).await.unwrap());
                    continue;
                }
                store
                    .finish_unit_jobs(&[finish(&j, UnitOutcome::Succeeded)])
                    .await
                    .unwrap();
                assert!(
                    seen.insert((j.run_id.clone(), j.unit_key.clone())),
                    "claimed twice {}",
                    j.unit_key
                );
            }
        }
        assert_eq!(seen.len(), 40, "lost behind the cursors");
        assert_eq!(store.job_tally(&a).await.unwrap().available, 0);
    }
);

// A run job created while units flood, with every claim full from the
// cursor: still claimed first.
both_backends!(
    a_run_job_is_claimed_first_under_a_full_hinted_claim,
    |store: Store| async move {
        let clock = ManualClock::new();
        let store = store.with_clock(Arc::new(clock.clone()));
        fan_out(&store, 20).await;
        let mut cursor = ClaimCursor::default();
        store.claim_jobs_from(&mut cursor, "w", 2, LEASE).await.unwrap();
        clock.advance(-5_000); // a clock stepped back: the run sorts before everything
        let s = scope(&store).await;
        let later = queued_run(&store, &s, RunType::InventorySync).await;
        clock.advance(5_000);
        let got = store.claim_jobs_from(&mut cursor, "w", 1, LEASE).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].run_id, later);
    }
);

// A clock stepped back must not disable the head rescan forever: with the
// queue after the cursor full, a job behind it is claimed within
// CURSOR_RESCAN_MS of clock time.
both_backends!(
    a_clock_stepped_back_does_not_suppress_the_rescan,
    |store: Store| async move {
        let clock = ManualClock::new();
        let store = store.with_clock(Arc::new(clock.clone()));
        clock.advance(10_000);
        fan_out(&store, 5).await;
        let mut cursor = ClaimCursor::default();
        let first = store.claim_jobs_from(&mut cursor, "w", 2, LEASE).await.unwrap();
        // The clock steps back 60 s; a big fan-out planned now sorts before
        // the cursor, then the clock comes back to +0.
        clock.advance(-60_000);
        let b = fan_out(&store, 20).await;
        clock.advance(60_000);
        let _ = first;
        let mut claimed_b = 0;
        for _ in 0..4 {
            clock.advance(CURSOR_RESCAN_MS / 2);
            let got = store.claim_jobs_from(&mut cursor, "w", 1, LEASE).await.unwrap();
            claimed_b += got.iter().filter(|j| j.run_id == b).count();
        }
        assert!(
            claimed_b > 0,
            "no job behind the cursor claimed in 2 rescan intervals"
        );
    }
);

// The array binds on PostgreSQL: odd unit keys, more rows than one
// statement, a batch that spans the statement boundary.
both_backends!(
    odd_unit_keys_and_big_batches_round_trip_through_the_batch_end,
    |store: Store| async move {
        let s = scope(&store).await;
        let id = queued_run(&store, &s, RunType::BackupSetAddPolicies).await;
        let job = store.claim_jobs("w", 1, 60_000).await.unwrap().pop().unwrap();
        let lease = testing::lease(&store, &job.fence, &id).await;
        let mut ks: Vec<String> = vec![
            "a,b".into(),
            "{x}".into(),
            "\"q\"".into(),
            "it's".into(),
            "back\\slash".into(),
            "NULL".into(),
            "é🙂日本".into(),
            " lead".into(),
            "tab\tnl\n".into(),
        ];
        ks.extend((0..1200).map(|i| format!("k{i:05}")));
        let n = ks.len();
        lease.enqueue_units(&ks, 3).await.unwrap();
        assert!(store.complete_job(&job.fence).await.unwrap());
        let mut jobs = Vec::new();
        loop {
            let got = store.claim_jobs("w", 500, LEASE).await.unwrap();
            if got.is_empty() {
                break;
            }
            jobs.extend(got);
        }
        assert_eq!(jobs.len(), n);
        let batch: Vec<_> = jobs.iter().map(|j| finish(j, UnitOutcome::Succeeded)).collect();
        let res = store.finish_unit_jobs(&batch).await.unwrap();
        assert!(
            res.iter().all(|r| matches!(r, UnitFinished::Recorded { .. })),
            "{res:?}"
        );
        assert!(matches!(
            res.last(),
            Some(UnitFinished::Recorded { all_processed: true })
        ));
        let c = store.get_run(&id).await.unwrap().unwrap().summary_counts;
        assert_eq!(c.processed, Some(n as u64));
        assert_eq!(c.succeeded, Some(n as u64));
        let t = store.job_tally(&id).await.unwrap();
        assert_eq!((t.available, t.running), (0, 0));
        // A replay of the whole batch: every fence is gone.
        let res = store.finish_unit_jobs(&batch).await.unwrap();
        assert!(res.iter().all(|r| *r == UnitFinished::LeaseLost));
    }
);

// One job's stale result (an old lease, rescued and re-claimed on the same
// node) in the same batch as its current result: the stale one's fence does
// not hold, so it must be LeaseLost and must not decide the ledger outcome.
both_backends!(
    a_stale_result_beside_the_current_one_for_the_same_job_is_lease_lost,
    |store: Store| async move {
        let clock = ManualClock::new();
        let store = store.with_clock(Arc::new(clock.clone()));
        let id = fan_out(&store, 1).await;
        let old = store.claim_jobs("w", 1, 1_000).await.unwrap().pop().unwrap();
        clock.advance(2_000);
        assert_eq!(store.rescue_expired_jobs(10).await.unwrap().retried, 1);
        let new = store.claim_jobs("w", 1, LEASE).await.unwrap().pop().unwrap();
        assert_eq!(new.fence.job_id, old.fence.job_id);
        assert_ne!(new.fence.lease_token, old.fence.lease_token);
        let res = store
            .finish_unit_jobs(&[
                finish(&old, UnitOutcome::Failed),
                finish(&new, UnitOutcome::Succeeded),
            ])
            .await
            .unwrap();
        let c = store.get_run(&id).await.unwrap().unwrap().summary_counts;
        assert_eq!(
            (c.processed, c.succeeded),
            (Some(1), Some(1)),
            "the stale result was recorded: {res:?}"
        );
        assert_eq!(res[0], UnitFinished::LeaseLost);
    }
);

// The head a unit job carries: a run closed after the claim.
both_backends!(
    a_head_is_absent_for_a_deleted_or_closed_run_only_when_read,
    |store: Store| async move {
        let id = fan_out(&store, 2).await;
        let got = store.claim_jobs("w", 2, LEASE).await.unwrap();
        assert!(
            got.iter()
                .all(|j| j.head.as_ref().is_some_and(|h| h.id == id && !h.is_completed()))
        );
    }
);

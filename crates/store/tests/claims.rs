//! The claim cursor, on SQLite and PostgreSQL: a producer's claims start
//! where its last one ended, and no job is lost behind the cursor — a short
//! claim falls back to the head of the queue, and the head is scanned again
//! at least every `CURSOR_RESCAN_MS`.

mod common;

use common::fan_out;
use opsledger_core::RunType;
use opsledger_store::claims::{CURSOR_RESCAN_MS, ClaimCursor};
use opsledger_store::clock::ManualClock;
use opsledger_store::{Store, both_backends};
use std::collections::HashSet;
use std::sync::Arc;

const LEASE: u64 = 600_000;

both_backends!(
    a_short_claim_after_the_cursor_falls_back_to_the_head,
    |store: Store| async move {
        let clock = ManualClock::new();
        let store = store.with_clock(Arc::new(clock.clone()));
        let id = fan_out(&store, 10).await;
        let mut cursor = ClaimCursor::default();
        let first = store.claim_jobs_from(&mut cursor, "w", 4, LEASE).await.unwrap();
        assert_eq!(first.len(), 4);
        // Given back at the same instant: it sorts behind the cursor.
        assert!(store.release_job(&first[0].fence).await.unwrap());
        let rest = store.claim_jobs_from(&mut cursor, "w", 10, LEASE).await.unwrap();
        let keys: HashSet<&str> = rest.iter().map(|j| j.unit_key.as_str()).collect();
        assert_eq!(rest.len(), 7, "the six after the cursor and the one behind it");
        assert!(keys.contains(first[0].unit_key.as_str()));
        assert_eq!(store.job_tally(&id).await.unwrap().available, 0);
    }
);

both_backends!(
    a_job_behind_the_cursor_waits_at_most_the_rescan_interval,
    |store: Store| async move {
        let clock = ManualClock::new();
        let store = store.with_clock(Arc::new(clock.clone()));
        fan_out(&store, 20).await;
        let mut cursor = ClaimCursor::default();
        let first = store.claim_jobs_from(&mut cursor, "w", 5, LEASE).await.unwrap();
        assert!(store.release_job(&first[0].fence).await.unwrap());
        let behind = first[0].unit_key.clone();
        // The queue after the cursor is long enough: the claim starts there.
        let next = store.claim_jobs_from(&mut cursor, "w", 3, LEASE).await.unwrap();
        assert_eq!(next.len(), 3);
        assert!(
            next.iter().all(|j| j.unit_key != behind),
            "claimed from the cursor on"
        );
        clock.advance(CURSOR_RESCAN_MS);
        let after_rescan = store.claim_jobs_from(&mut cursor, "w", 1, LEASE).await.unwrap();
        assert_eq!(
            after_rescan
                .iter()
                .map(|j| j.unit_key.as_str())
                .collect::<Vec<_>>(),
            vec![behind.as_str()],
            "a scan from the head takes the oldest job"
        );
    }
);

both_backends!(
    run_jobs_are_claimed_before_units_whatever_the_cursor,
    |store: Store| async move {
        let clock = ManualClock::new();
        let store = store.with_clock(Arc::new(clock.clone()));
        fan_out(&store, 10).await;
        let mut cursor = ClaimCursor::default();
        assert_eq!(
            store
                .claim_jobs_from(&mut cursor, "w", 3, LEASE)
                .await
                .unwrap()
                .len(),
            3
        );
        let s = common::scope(&store).await;
        let later = common::queued_run(&store, &s, opsledger_core::RunType::InventorySync).await;
        let got = store.claim_jobs_from(&mut cursor, "w", 2, LEASE).await.unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].run_id, later, "the new run's job first");
        assert_eq!(got[0].kind, opsledger_store::jobs::JobKind::Run);
    }
);

both_backends!(
    a_claimed_unit_job_carries_its_runs_head,
    |store: Store| async move {
        let id = fan_out(&store, 3).await;
        let s = common::scope(&store).await;
        let later = common::queued_run(&store, &s, opsledger_core::RunType::InventorySync).await;
        let got = store.claim_jobs("w", 10, LEASE).await.unwrap();
        assert_eq!(got.len(), 4);
        let (runs, units): (Vec<_>, Vec<_>) = got
            .iter()
            .partition(|j| j.kind == opsledger_store::jobs::JobKind::Run);
        assert_eq!(runs[0].run_id, later);
        assert!(runs[0].head.is_none(), "a run job's executor reads the whole run");
        let head = store.run_head(&id).await.unwrap().unwrap();
        for unit in units {
            assert_eq!(unit.head.as_ref(), Some(&head), "read in the claim's transaction");
        }
    }
);

both_backends!(
    a_cursor_skipping_types_passes_over_their_run_and_unit_jobs,
    |store: Store| async move {
        // Unit jobs of a backup fan-out, and the run job of a policy sync.
        let units = fan_out(&store, 3).await;
        let s = common::scope(&store).await;
        let sync = common::queued_run(&store, &s, RunType::PolicySync).await;
        let mut cursor = ClaimCursor::skipping([RunType::BackupSetAddPolicies, RunType::PolicySync]);
        assert!(
            store
                .claim_jobs_from(&mut cursor, "w", 10, LEASE)
                .await
                .unwrap()
                .is_empty(),
            "nothing of a skipped type is claimed"
        );
        let mut cursor = ClaimCursor::skipping([RunType::BackupSetAddPolicies]);
        let claimed = store.claim_jobs_from(&mut cursor, "w", 10, LEASE).await.unwrap();
        assert_eq!(
            claimed.iter().map(|j| j.run_id.as_str()).collect::<Vec<_>>(),
            vec![sync.as_str()]
        );
        let mut cursor = ClaimCursor::skipping([]);
        let claimed = store.claim_jobs_from(&mut cursor, "w", 10, LEASE).await.unwrap();
        assert_eq!(claimed.len(), 3);
        assert!(claimed.iter().all(|j| j.run_id == units));
    }
);

//! Property: for random interleavings of unit recordings, retries and replays
//! (8 concurrent writers, 10 000 units, each delivered 1–3 times, in batches of
//! random size), the final `processed == total`, the outcome counters sum to
//! `processed` and match the unit ledger, and no concurrent read ever sees
//! `processed > total` or counters out of step — on both databases.
//!
//! Cases default to 3 per backend (each is ~20 000 deliveries); raise with
//! `PROPTEST_CASES`.

mod common;

use opsledger_core::{Outcome, RunStatus, UnitOutcome};
use opsledger_store::testing::TestStore;
use opsledger_store::{CompleteResult, Store, UnitRecord};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const UNITS: usize = 10_000;
const WRITERS: usize = 8;

fn outcome_of(delivery: u8) -> UnitOutcome {
    match delivery % 3 {
        0 => UnitOutcome::Succeeded,
        1 => UnitOutcome::Failed,
        _ => UnitOutcome::Skipped,
    }
}

async fn check(store: Store, multiplicity: Vec<u8>, seed: u64) {
    let s = common::scope(&store).await;
    let run_id = common::running_run(&store, &s, UNITS as u64).await;

    // Every delivery of every unit, shuffled; replays may carry another outcome.
    let mut rng = StdRng::seed_from_u64(seed);
    let mut deliveries: Vec<(usize, u8)> = Vec::new();
    for (unit, m) in multiplicity.iter().enumerate() {
        for d in 0..*m {
            deliveries.push((unit, rng.random_range(0..3u8).wrapping_add(d)));
        }
    }
    deliveries.shuffle(&mut rng);
    let total_deliveries = deliveries.len();

    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (store, run_id, done, reads) = (store.clone(), run_id.clone(), done.clone(), reads.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let run = store.get_run(&run_id).await.unwrap().unwrap();
                let c = run.summary_counts;
                let (total, processed) = (c.total.unwrap(), c.processed.unwrap());
                assert!(processed <= total, "read processed {processed} > total {total}");
                assert_eq!(
                    c.unit_outcomes_sum(),
                    processed,
                    "counters out of step with processed"
                );
                reads.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        })
    };

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mine: Vec<(usize, u8)> = deliveries.iter().skip(w).step_by(WRITERS).copied().collect();
        let (store, run_id) = (store.clone(), run_id.clone());
        let mut rng = StdRng::seed_from_u64(seed ^ (w as u64 + 1));
        writers.push(tokio::spawn(async move {
            let mut rest = &mine[..];
            while !rest.is_empty() {
                let n = rng.random_range(1..=64).min(rest.len());
                let (batch, tail) = rest.split_at(n);
                rest = tail;
                let units: Vec<UnitRecord> = batch
                    .iter()
                    .map(|(u, d)| UnitRecord::new(format!("unit-{u:05}"), outcome_of(*d)))
                    .collect();
                store.record_units(&run_id, &units).await.unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    reader.await.unwrap();
    assert!(
        reads.load(Ordering::Relaxed) > 0,
        "the reader observed the run while writers ran"
    );

    let run = store.get_run(&run_id).await.unwrap().unwrap();
    let c = run.summary_counts;
    assert_eq!(c.total, Some(UNITS as u64));
    assert_eq!(c.processed, Some(UNITS as u64), "{total_deliveries} deliveries");
    assert_eq!(c.unit_outcomes_sum(), UNITS as u64);
    let ledger = store.recorded_units(&run_id).await.unwrap();
    assert_eq!(ledger.len(), UNITS);
    let tally = |o: UnitOutcome| Some(ledger.values().filter(|v| **v == o).count() as u64);
    assert_eq!(
        (c.succeeded, c.failed, c.skipped),
        (
            tally(UnitOutcome::Succeeded),
            tally(UnitOutcome::Failed),
            tally(UnitOutcome::Skipped)
        )
    );

    let first = store.maybe_complete_bulk_run(&run_id).await.unwrap();
    let CompleteResult::Completed(done_run) = first else {
        panic!("completes once all units are processed")
    };
    assert_eq!(done_run.status, RunStatus::Completed);
    assert_eq!(done_run.outcome, Outcome::PartiallySucceeded);
    assert!(matches!(
        store.maybe_complete_bulk_run(&run_id).await.unwrap(),
        CompleteResult::AlreadyCompleted(_)
    ));
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

fn run_case(backend: Backend, multiplicity: Vec<u8>, seed: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db: Option<TestStore> = match backend {
            Backend::Sqlite => Some(opsledger_store::testing::sqlite().await),
            Backend::Postgres => opsledger_store::testing::postgres().await,
        };
        if let Some(db) = db {
            check(db.store.clone(), multiplicity, seed).await;
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn exactly_once_under_replays_sqlite(multiplicity in prop::collection::vec(1u8..=3, UNITS), seed in any::<u64>()) {
        run_case(Backend::Sqlite, multiplicity, seed);
    }

    #[test]
    fn exactly_once_under_replays_postgres(multiplicity in prop::collection::vec(1u8..=3, UNITS), seed in any::<u64>()) {
        run_case(Backend::Postgres, multiplicity, seed);
    }
}

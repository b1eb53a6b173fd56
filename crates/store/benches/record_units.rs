//! Unit recordings per second through the real writer path,
//! [`Store::record_units`], on SQLite and PostgreSQL.
//!
//! For each backend, with 1 and 4 concurrent writers, and with 1 and 100
//! units per transaction, a fresh running run (with `total = N`) receives N
//! distinct units; afterwards the run must report `processed == N`. One
//! "replay" configuration then re-delivers every unit of a batch-100 run (all
//! duplicates) and reports duplicates per second.
//!
//! ```text
//! cargo bench -p opsledger-store --bench record_units
//! OPSLEDGER_BENCH_SCALE=0.05 cargo bench -p opsledger-store --bench record_units   # quick
//! ```
//!
//! `OPSLEDGER_BENCH_SCALE` (float, default 1.0; when the binary is run
//! without `--bench`, e.g. by `cargo test --benches`, the default is 0.01)
//! scales every N. PostgreSQL is the server of
//! `OPSLEDGER_TEST_POSTGRES_URL` (see `opsledger_store::testing`); when it is
//! unreachable its rows are skipped with a loud line (a failure under
//! `CI=true`).

use opsledger_core::{RunType, UnitOutcome};
use opsledger_store::testing::{self, TestStore};
use opsledger_store::{NewRun, PoolSettings, RecordSummary, Store, UnitRecord};
use serde_json::json;
use std::time::{Duration, Instant};

/// Pool size used for both backends (SQLite caps its pool at 8 anyway).
const POOL: PoolSettings = PoolSettings { max_connections: 8 };

const WRITERS: [usize; 2] = [1, 4];

/// Units per transaction, and the unscaled number of units per configuration
/// on SQLite and on PostgreSQL (sized for roughly 2–4 s per configuration on
/// a 2-core machine; PostgreSQL commits durably, hence its smaller N).
const BATCHES: [(usize, u64, u64); 2] = [(1, 8_000, 4_000), (100, 200_000, 100_000)];

/// Writers re-delivering the batch-100 run in the replay configuration.
const REPLAY_WRITERS: usize = 4;
const REPLAY_BATCH: usize = 100;

struct Row {
    backend: &'static str,
    writers: String,
    units_per_txn: String,
    units: String,
    seconds: String,
    rate: String,
}

impl Row {
    fn measured(
        backend: &'static str,
        writers: usize,
        batch: usize,
        label: &str,
        units: u64,
        elapsed: Duration,
    ) -> Row {
        let secs = elapsed.as_secs_f64();
        Row {
            backend,
            writers: writers.to_string(),
            units_per_txn: format!("{batch}{label}"),
            units: units.to_string(),
            seconds: format!("{secs:.2}"),
            rate: format!("{:.0}", units as f64 / secs),
        }
    }

    fn skipped(backend: &'static str) -> Row {
        Row {
            backend,
            writers: "—".into(),
            units_per_txn: "—".into(),
            units: "—".into(),
            seconds: "—".into(),
            rate: "SKIPPED (unreachable)".into(),
        }
    }
}

/// Units per writer: N scaled, split evenly, in whole batches (at least one).
fn per_writer(n: u64, scale: f64, writers: usize, batch: usize) -> usize {
    let wanted = (n as f64 * scale).round().max(1.0) as usize;
    let batches = wanted.div_ceil(writers * batch).max(1);
    batches * batch
}

/// A running run with `total` set, on a scope of its own (at most one run of
/// a type is active per scope), like `tests/common.rs`.
async fn running_run(store: &Store, label: &str, total: u64) -> String {
    let ws = store
        .create_workspace(&format!("bench-{label}"))
        .await
        .expect("workspace");
    let tenant = store
        .create_tenant(&ws.id, "contoso", "demo:healthy")
        .await
        .expect("tenant");
    let id = store
        .create_run(NewRun::on_tenant(
            ws.id,
            tenant.id,
            RunType::BackupSetAddPolicies,
            "system",
            json!({}),
        ))
        .await
        .expect("create run")
        .into_run()
        .id;
    store.claim_run(&id).await.expect("claim").expect("claimed");
    store.init_total(&id, total).await.expect("init total");
    id
}

/// The batches of each writer: distinct keys `w{w}-u{i}`, one in ten skipped.
fn workload(writers: usize, per_writer: usize, batch: usize) -> Vec<Vec<Vec<UnitRecord>>> {
    (0..writers)
        .map(|w| {
            let units: Vec<UnitRecord> = (0..per_writer)
                .map(|i| {
                    let outcome = if i % 10 == 9 {
                        UnitOutcome::Skipped
                    } else {
                        UnitOutcome::Succeeded
                    };
                    UnitRecord::new(format!("w{w}-u{i}"), outcome)
                })
                .collect();
            units.chunks(batch).map(<[UnitRecord]>::to_vec).collect()
        })
        .collect()
}

/// Runs every writer's batches concurrently; the summed summaries and the
/// wall time from first call to last commit.
async fn drive(store: &Store, run_id: &str, work: Vec<Vec<Vec<UnitRecord>>>) -> (RecordSummary, Duration) {
    let start = Instant::now();
    let handles: Vec<_> =
        work.into_iter()
            .map(|batches| {
                let store = store.clone();
                let run_id = run_id.to_owned();
                tokio::spawn(async move {
                    let mut total = RecordSummary::default();
                    for batch in &batches {
                        let s = store.record_units(&run_id, batch).await.unwrap_or_else(|e| {
                            panic!("record_units on {} failed: {e}", store.backend_name())
                        });
                        total.recorded += s.recorded;
                        total.duplicates += s.duplicates;
                    }
                    total
                })
            })
            .collect();
    let mut sum = RecordSummary::default();
    for h in handles {
        let s = h.await.expect("writer task panicked");
        sum.recorded += s.recorded;
        sum.duplicates += s.duplicates;
    }
    (sum, start.elapsed())
}

async fn check_processed(store: &Store, run_id: &str, n: u64, what: &str) {
    let run = store.get_run(run_id).await.expect("get run").expect("run exists");
    let c = &run.summary_counts;
    assert_eq!(
        c.processed,
        Some(n),
        "!!! {} {what}: run {run_id} reports processed = {:?}, expected {n} !!!",
        store.backend_name(),
        c.processed
    );
    let skipped = c.skipped.unwrap_or(0);
    assert_eq!(
        c.succeeded.unwrap_or(0) + skipped,
        n,
        "!!! {} {what}: outcome counters {c:?} do not add up to {n} !!!",
        store.backend_name()
    );
}

async fn bench_backend(db: TestStore, scale: f64, rows: &mut Vec<Row>) {
    let store = &db.store;
    let backend = store.backend_name();
    for (batch, sqlite_n, postgres_n) in BATCHES {
        let base_n = match backend {
            "sqlite" => sqlite_n,
            _ => postgres_n,
        };
        for writers in WRITERS {
            let per = per_writer(base_n, scale, writers, batch);
            let n = (per * writers) as u64;
            let label = format!("{backend}-w{writers}-b{batch}");
            let run_id = running_run(store, &label, n).await;
            let (summary, elapsed) = drive(store, &run_id, workload(writers, per, batch)).await;
            assert_eq!(
                (summary.recorded, summary.duplicates),
                (n, 0),
                "!!! {label}: record_units summaries disagree with the {n} distinct units sent !!!"
            );
            check_processed(store, &run_id, n, &label).await;
            eprintln!("{label}: {n} units in {:.2}s", elapsed.as_secs_f64());
            rows.push(Row::measured(backend, writers, batch, "", n, elapsed));

            if batch == REPLAY_BATCH && writers == REPLAY_WRITERS {
                let (summary, elapsed) = drive(store, &run_id, workload(writers, per, batch)).await;
                assert_eq!(
                    (summary.recorded, summary.duplicates),
                    (0, n),
                    "!!! {label} replay: a re-delivered unit was counted again !!!"
                );
                check_processed(store, &run_id, n, &format!("{label} replay")).await;
                eprintln!("{label} replay: {n} duplicates in {:.2}s", elapsed.as_secs_f64());
                rows.push(Row::measured(
                    backend,
                    writers,
                    batch,
                    " (replay, all duplicates)",
                    n,
                    elapsed,
                ));
            }
        }
    }
    db.drop_now().await;
}

#[tokio::main]
async fn main() {
    let scale = testing::bench_scale();
    eprintln!(
        "record_units benchmark: scale {scale}, {} worker threads",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut rows = Vec::new();

    bench_backend(testing::sqlite_with(POOL).await, scale, &mut rows).await;

    match testing::postgres_with(POOL).await {
        Some(db) => bench_backend(db, scale, &mut rows).await,
        None => {
            println!(
                "!!! SKIPPED: PostgreSQL at {} is unreachable; NO PostgreSQL numbers were measured !!!",
                testing::postgres_url()
            );
            rows.push(Row::skipped("postgres"));
        }
    }

    println!();
    println!("| backend | writers | units/txn | units | seconds | units/s |");
    println!("|---|---:|---|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.backend, r.writers, r.units_per_txn, r.units, r.seconds, r.rate
        );
    }
}

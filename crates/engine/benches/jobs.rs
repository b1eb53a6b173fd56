//! Jobs claimed and completed per second by the real [`Runner`] (claim with
//! `SKIP LOCKED` / `BEGIN IMMEDIATE`, lease, per-job heartbeat task, fenced
//! finish), on SQLite and PostgreSQL, with 1, 4 and 16 concurrent workers.
//!
//! Two kinds of job, each timed from the runner's start until every job is
//! ended, and checked afterwards (every run completed once, every job
//! `completed`, `processed == total`):
//!
//! - **run**: N independent `policy.sync` runs, one job each; the handler
//!   completes its run (the closing compare-and-set) and the job ends.
//! - **unit**: one fan-out of N units; each unit job records its unit and ends
//!   in one transaction that bumps the parent's counters — the parent row is
//!   the hot spot, as in every real fan-out.
//!
//! ```text
//! cargo bench -p opsledger-engine --bench jobs
//! OPSLEDGER_BENCH_SCALE=0.1 cargo bench -p opsledger-engine --bench jobs   # quick
//! ```
//!
//! Without `--bench` (e.g. `cargo test --benches`) the default scale is 0.01.

use async_trait::async_trait;
use opsledger_core::{Outcome, RunType};
use opsledger_engine::{
    Handler, HandlerError, Registry, RunContext, Runner, RunnerConfig, UnitContext, UnitHandler, UnitResult,
};
use opsledger_store::testing::{self, TestStore};
use opsledger_store::{Completion, NewRun, PoolSettings, Store};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const WORKERS: [usize; 3] = [1, 4, 16];

/// Unscaled jobs per configuration: (kind, SQLite, PostgreSQL).
const SIZES: [(Kind, u64, u64); 2] = [(Kind::Run, 3_000, 2_000), (Kind::Unit, 10_000, 5_000)];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Run,
    Unit,
}

/// Completes its run.
struct CompleteRun;

#[async_trait]
impl Handler for CompleteRun {
    async fn execute(&self, ctx: RunContext) -> Result<(), HandlerError> {
        ctx.complete(Completion::new(Outcome::Succeeded)).await?;
        Ok(())
    }
}

/// Plans the fan-out's units.
struct PlanUnits(Arc<Vec<String>>);

#[async_trait]
impl Handler for PlanUnits {
    async fn execute(&self, ctx: RunContext) -> Result<(), HandlerError> {
        ctx.enqueue_units(&self.0, 3).await?;
        Ok(())
    }
}

/// Its unit succeeded (the runtime records it and ends its job, in one transaction).
struct RecordUnit;

#[async_trait]
impl UnitHandler for RecordUnit {
    async fn execute(&self, _: UnitContext) -> Result<UnitResult, HandlerError> {
        Ok(UnitResult::succeeded())
    }
}

async fn new_run(store: &Store, ws: &str, tenant: &str, t: RunType) -> String {
    store
        .create_run(NewRun::on_tenant(ws, tenant, t, "bench", json!({})))
        .await
        .expect("create run")
        .into_run()
        .id
}

/// Creates the work (not timed); returns the run ids to wait for.
async fn prepare(store: &Store, label: &str, kind: Kind, n: u64, registry: &mut Registry) -> Vec<String> {
    let ws = store.create_workspace(label).await.expect("workspace").id;
    match kind {
        Kind::Run => {
            registry.handler(RunType::PolicySync, Arc::new(CompleteRun));
            let mut ids = Vec::with_capacity(n as usize);
            // One tenant per run: concurrent starts on one scope are deduplicated.
            for i in 0..n {
                let t = store
                    .create_tenant(&ws, &format!("t{i}"), "demo:healthy")
                    .await
                    .expect("tenant")
                    .id;
                ids.push(new_run(store, &ws, &t, RunType::PolicySync).await);
            }
            ids
        }
        Kind::Unit => {
            let keys: Vec<String> = (0..n).map(|i| format!("u{i:07}")).collect();
            registry
                .handler(RunType::BackupSetAddPolicies, Arc::new(PlanUnits(Arc::new(keys))))
                .unit_handler(RunType::BackupSetAddPolicies, Arc::new(RecordUnit));
            let t = store
                .create_tenant(&ws, "contoso", "demo:healthy")
                .await
                .expect("tenant")
                .id;
            vec![new_run(store, &ws, &t, RunType::BackupSetAddPolicies).await]
        }
    }
}

/// Every run completed, every job of theirs completed: the jobs ended is the
/// measured count.
async fn ended_jobs(store: &Store, ids: &[String]) -> Option<u64> {
    let mut ended = 0;
    for id in ids {
        let run = store.run_head(id).await.expect("run")?;
        let tally = store.job_tally(id).await.expect("tally");
        if !run.is_completed() || tally.available + tally.running > 0 {
            return None;
        }
        ended += tally.completed;
    }
    Some(ended)
}

async fn measure(store: &Store, kind: Kind, workers: usize, n: u64) -> (u64, Duration) {
    let label = format!("{}-{kind:?}-w{workers}", store.backend_name());
    let mut registry = Registry::new();
    let ids = prepare(store, &label, kind, n, &mut registry).await;
    let config = RunnerConfig {
        concurrency: workers,
        poll_interval: Duration::from_millis(50),
        heartbeat_interval: Duration::from_secs(5),
        lease: Duration::from_secs(60),
        worker_id: label.clone(),
        ..RunnerConfig::default()
    };
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let runner = tokio::spawn(Runner::new(store.clone(), registry, config).run(shutdown.clone()));
    // The last run's completion is cheap to watch; the full check follows.
    let last = ids.last().expect("work");
    loop {
        if store
            .run_head(last)
            .await
            .expect("run")
            .expect("exists")
            .is_completed()
            && let Some(ended) = ended_jobs(store, &ids).await
        {
            let elapsed = started.elapsed();
            shutdown.cancel();
            runner.await.expect("runner");
            for id in &ids {
                let run = store.get_run(id).await.expect("run").expect("exists");
                assert_eq!(run.outcome, Outcome::Succeeded, "{label}: {run:?}");
                if kind == Kind::Unit {
                    let c = run.summary_counts;
                    assert_eq!((c.total, c.processed), (Some(n), Some(n)), "{label}");
                }
            }
            // The fan-out's own planning job is not counted.
            let jobs = if kind == Kind::Unit { ended - 1 } else { ended };
            assert_eq!(jobs, n, "{label}: every job ended exactly once");
            return (jobs, elapsed);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn bench_backend(db: TestStore, scale: f64, rows: &mut Vec<String>) {
    let store = db.store.clone();
    for (kind, sqlite_n, postgres_n) in SIZES {
        let base = match store.backend_name() {
            "sqlite" => sqlite_n,
            _ => postgres_n,
        };
        let n = ((base as f64 * scale).round() as u64).max(1);
        for workers in WORKERS {
            let (jobs, elapsed) = measure(&store, kind, workers, n).await;
            let secs = elapsed.as_secs_f64();
            eprintln!(
                "{} {kind:?} w{workers}: {jobs} jobs in {secs:.2}s",
                store.backend_name()
            );
            rows.push(format!(
                "| {} | {} | {workers} | {jobs} | {secs:.2} | {:.0} |",
                store.backend_name(),
                match kind {
                    Kind::Run => "run (own run each)",
                    Kind::Unit => "unit (one fan-out)",
                },
                jobs as f64 / secs
            ));
        }
    }
    db.drop_now().await;
}

#[tokio::main]
async fn main() {
    let scale = testing::bench_scale();
    eprintln!(
        "jobs benchmark: scale {scale}, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // Room for 16 workers plus the claim loop and heartbeats.
    let pool = PoolSettings { max_connections: 24 };
    let mut rows = Vec::new();
    bench_backend(testing::sqlite_with(pool).await, scale, &mut rows).await;
    match testing::postgres_with(pool).await {
        Some(db) => bench_backend(db, scale, &mut rows).await,
        None => rows.push("| postgres | SKIPPED (unreachable) | | | | |".into()),
    }
    println!();
    println!("| backend | job | workers | jobs | seconds | jobs/s |");
    println!("|---|---|---:|---:|---:|---:|");
    for r in rows {
        println!("{r}");
    }
}

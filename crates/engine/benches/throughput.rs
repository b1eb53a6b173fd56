//! Unit throughput of one fan-out, side by side in one run, on SQLite and
//! PostgreSQL (`BENCHMARKS.md` reports its figures):
//!
//! - **runner**: unit jobs of one fan-out through the real [`Runner`]
//!   (batched claims, batch completer, node heartbeat), with 1, 4 and 16
//!   workers — a worker is one runner, as one node would run it, with
//!   [`SLOTS`] job slots — timed from the units' planning (the run's total
//!   visible; the planning itself, inserting every unit job, is reported
//!   beside it) until the run is completed, then checked (`processed == total`, every job completed once);
//! - **runner, flush 1**: the same with the batch completer committing each
//!   result on its own (the per-unit commit the batching replaces);
//! - **raw database**: the same work — claim N jobs, insert N unit-ledger
//!   rows, end N jobs, bump the run's counters — written here once with plain
//!   statements (not the runtime's SQL), one transaction per batch of
//!   [`RAW_BATCH`], issued back to back by as many connections as workers;
//! - **row lock per unit**: the pattern of Laravel's batch repository —
//!   `SELECT … FOR UPDATE` the parent, bump its counter, commit — per unit;
//! - **calibration**: single-row commits per second from one connection: the
//!   disk's flush rate, which these machines vary tenfold from day to day.
//!
//! It prints every rate and the ratios the bar asks for, and the p95 from a
//! unit's result (its handler returning) to its count being visible in the
//! run (a watcher reads the run every 2 ms: the k-th result returned is
//! visible once `processed >= k`).
//!
//! ```text
//! cargo bench -p opsledger-engine --bench throughput
//! OPSLEDGER_BENCH_SCALE=0.1 cargo bench -p opsledger-engine --bench throughput   # quick
//! ```
//!
//! Without `--bench` (e.g. `cargo test --benches`) the default scale is 0.01.

use async_trait::async_trait;
use opsledger_core::RunType;
use opsledger_engine::{
    FlushPolicy, Handler, HandlerError, Registry, RunContext, Runner, RunnerConfig, UnitContext, UnitHandler,
    UnitResult,
};
use opsledger_store::testing::{self, TestStore};
use opsledger_store::{NewRun, PoolSettings, Store, raw_on_pool};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const WORKERS: [usize; 3] = [1, 4, 16];
/// Job slots of one worker (runner).
const SLOTS: usize = 32;
/// Units per transaction of the raw baseline (the completer's default flush size).
const RAW_BATCH: usize = 100;

/// Unscaled sizes: (runner units, raw units, row-lock units, calibration commits).
const SQLITE: Sizes = Sizes {
    runner: 60_000,
    flush_one: 10_000,
    raw: 200_000,
    row_lock: 10_000,
    calibration: 10_000,
};
const POSTGRES: Sizes = Sizes {
    runner: 60_000,
    flush_one: 6_000,
    raw: 200_000,
    row_lock: 4_000,
    calibration: 4_000,
};

#[derive(Clone, Copy)]
struct Sizes {
    runner: u64,
    flush_one: u64,
    raw: u64,
    row_lock: u64,
    calibration: u64,
}

impl Sizes {
    fn scaled(self, scale: f64) -> Sizes {
        let s = |n: u64| ((n as f64 * scale).round() as u64).max(RAW_BATCH as u64);
        Sizes {
            runner: s(self.runner),
            flush_one: s(self.flush_one),
            raw: s(self.raw),
            row_lock: s(self.row_lock),
            calibration: s(self.calibration),
        }
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

/// Succeeds at once, noting when its result was handed back.
struct RecordUnit(Arc<Mutex<Vec<Instant>>>);

#[async_trait]
impl UnitHandler for RecordUnit {
    async fn execute(&self, _: UnitContext) -> Result<UnitResult, HandlerError> {
        self.0.lock().expect("lock").push(Instant::now());
        Ok(UnitResult::succeeded())
    }
}

async fn fan_out_run(store: &Store, label: &str) -> String {
    let ws = store.create_workspace(label).await.expect("workspace").id;
    let t = store
        .create_tenant(&ws, "contoso", "demo:healthy")
        .await
        .expect("tenant")
        .id;
    store
        .create_run(NewRun::on_tenant(
            &ws,
            &t,
            RunType::BackupSetAddPolicies,
            "bench",
            json!({}),
        ))
        .await
        .expect("create run")
        .into_run()
        .id
}

struct RunnerFigures {
    /// Units per second from the units' planning to the run's completion.
    rate: f64,
    /// From the runners' start until the units were planned (the parent's
    /// job inserting every unit job), not counted in `rate`.
    planning_ms: f64,
    p95_visible_ms: f64,
}

/// One fan-out of `n` units through `workers` runners.
async fn runner(store: &Store, workers: usize, n: u64, flush: FlushPolicy) -> RunnerFigures {
    let label = format!("{}-w{workers}-f{}", store.backend_name(), flush.max_results);
    let keys: Vec<String> = (0..n).map(|i| format!("u{i:07}")).collect();
    let returned = Arc::new(Mutex::new(Vec::with_capacity(n as usize)));
    let mut registry = Registry::new();
    registry
        .handler(RunType::BackupSetAddPolicies, Arc::new(PlanUnits(Arc::new(keys))))
        .unit_handler(
            RunType::BackupSetAddPolicies,
            Arc::new(RecordUnit(returned.clone())),
        );
    let id = fan_out_run(store, &label).await;
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let mut runners = Vec::new();
    for w in 0..workers {
        let config = RunnerConfig {
            concurrency: SLOTS,
            poll_interval: Duration::from_millis(50),
            heartbeat_interval: Duration::from_secs(5),
            lease: Duration::from_secs(60),
            worker_id: format!("{label}-{w}"),
            flush,
            ..RunnerConfig::default()
        };
        runners.push(tokio::spawn(
            Runner::new(store.clone(), registry.clone(), config).run(shutdown.clone()),
        ));
    }
    // The watcher: when each count became visible, and when the units were
    // planned (their total is set with their jobs, in one transaction).
    let mut seen: Vec<(Instant, u64)> = Vec::new();
    let mut planned_at: Option<Instant> = None;
    let (planning, elapsed) = loop {
        let run = store.run_head(&id).await.expect("run").expect("exists");
        let now = Instant::now();
        seen.push((now, run.summary_counts.processed.unwrap_or(0)));
        if planned_at.is_none() && run.summary_counts.total.is_some() {
            planned_at = Some(now);
        }
        if run.is_completed() {
            let planned_at = planned_at.expect("a completed fan-out was planned");
            break (planned_at - started, now - planned_at);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    shutdown.cancel();
    for r in runners {
        r.await.expect("runner");
    }
    let run = store.get_run(&id).await.expect("run").expect("exists");
    let c = run.summary_counts;
    assert_eq!(
        (c.total, c.processed, c.succeeded),
        (Some(n), Some(n), Some(n)),
        "{label}"
    );
    let tally = store.job_tally(&id).await.expect("tally");
    assert_eq!(tally.completed, n + 1, "{label}: every job ended once");
    let mut returned = returned.lock().expect("lock").clone();
    returned.sort();
    assert_eq!(returned.len() as u64, n, "{label}: each unit executed once");
    let mut latencies: Vec<f64> = Vec::with_capacity(returned.len());
    let mut at = 0;
    for (k, t) in returned.iter().enumerate() {
        while seen[at].1 < (k + 1) as u64 {
            at += 1;
        }
        latencies.push(seen[at].0.saturating_duration_since(*t).as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    RunnerFigures {
        rate: n as f64 / elapsed.as_secs_f64(),
        planning_ms: planning.as_secs_f64() * 1000.0,
        p95_visible_ms: latencies[(latencies.len() * 95 / 100).min(latencies.len() - 1)],
    }
}

/// Plain statements on the real schema, `workers` connections back to back.
async fn raw(store: &Store, workers: usize, n: u64) -> f64 {
    let id = planned_run(store, "raw", n).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let store = store.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let got: u64 = raw_on_pool!(&store, pool => {
                    let mut tx = pool.begin_with(begin_statement(&store)).await.expect("begin");
                    let claimed: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                        "UPDATE jobs SET state = 'running', lease_token = 't', lease_expires_at = 1 \
                         WHERE id IN (SELECT id FROM jobs WHERE run_id = $1 AND state = 'available' LIMIT {RAW_BATCH}{}) \
                         RETURNING id, unit_key",
                        if store.backend_name() == "postgres" { " FOR UPDATE SKIP LOCKED" } else { "" }
                    )))
                    .bind(&id)
                    .fetch_all(&mut *tx)
                    .await
                    .expect("claim");
                    if !claimed.is_empty() {
                        let mut insert = String::from("INSERT INTO run_units (run_id, unit_key, outcome, recorded_at) VALUES ");
                        let mut end = String::from("UPDATE jobs SET state = 'completed', lease_token = NULL, lease_expires_at = NULL WHERE id IN (");
                        for (i, (job, key)) in claimed.iter().enumerate() {
                            let sep = if i == 0 { "" } else { ", " };
                            insert.push_str(&format!("{sep}('{id}', '{key}', 'succeeded', 1)"));
                            end.push_str(&format!("{sep}'{job}'"));
                        }
                        end.push(')');
                        sqlx::query(sqlx::AssertSqlSafe(insert)).execute(&mut *tx).await.expect("ledger");
                        sqlx::query(sqlx::AssertSqlSafe(end)).execute(&mut *tx).await.expect("end");
                        sqlx::query("UPDATE operation_runs SET processed = processed + $2, succeeded = COALESCE(succeeded, 0) + $2 WHERE id = $1")
                            .bind(&id)
                            .bind(claimed.len() as i64)
                            .execute(&mut *tx)
                            .await
                            .expect("counters");
                    }
                    tx.commit().await.expect("commit");
                    claimed.len() as u64
                });
                if got == 0 {
                    return;
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("raw worker");
    }
    // Every statement text is the bench's own (ids and keys it generated).
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let c = store
        .get_run(&id)
        .await
        .expect("run")
        .expect("exists")
        .summary_counts;
    assert_eq!(c.processed, Some(n), "raw: every unit once");
    rate
}

/// Laravel's batch repository: lock the parent, bump it, commit — per unit.
async fn row_lock_per_unit(store: &Store, workers: usize, n: u64) -> f64 {
    let id = planned_run(store, "row-lock", 0).await;
    let per_worker = n / workers as u64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let store = store.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let lock = if store.backend_name() == "postgres" { " FOR UPDATE" } else { "" };
            let select = format!("SELECT processed FROM operation_runs WHERE id = $1{lock}");
            for _ in 0..per_worker {
                raw_on_pool!(&store, pool => {
                    let mut tx = pool.begin_with(begin_statement(&store)).await.expect("begin");
                    let _: (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(select.clone())).bind(&id).fetch_one(&mut *tx).await.expect("lock");
                    sqlx::query("UPDATE operation_runs SET heartbeat_at = COALESCE(heartbeat_at, 0) + 1 WHERE id = $1")
                        .bind(&id)
                        .execute(&mut *tx)
                        .await
                        .expect("bump");
                    tx.commit().await.expect("commit");
                });
            }
        }));
    }
    for t in tasks {
        t.await.expect("row-lock worker");
    }
    (per_worker * workers as u64) as f64 / started.elapsed().as_secs_f64()
}

/// SQLite takes its write lock up front, as the store does (a deferred
/// transaction that reads then writes fails to upgrade under contention).
fn begin_statement(store: &Store) -> &'static str {
    match store.backend_name() {
        "sqlite" => "BEGIN IMMEDIATE",
        _ => "BEGIN",
    }
}

/// Single-row commits per second from one connection.
async fn calibration(store: &Store, n: u64) -> f64 {
    let id = planned_run(store, "calibration", 0).await;
    let started = Instant::now();
    for _ in 0..n {
        raw_on_pool!(store, pool => {
            sqlx::query("UPDATE operation_runs SET heartbeat_at = COALESCE(heartbeat_at, 0) + 1 WHERE id = $1")
                .bind(&id)
                .execute(pool)
                .await
                .expect("commit");
        });
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// A running fan-out with `n` unit jobs planned through the store (not timed).
async fn planned_run(store: &Store, label: &str, n: u64) -> String {
    let id = fan_out_run(store, label).await;
    let job = store
        .claim_jobs("bench", 1, 60_000)
        .await
        .expect("claim")
        .pop()
        .expect("the run's job");
    let keys: Vec<String> = (0..n).map(|i| format!("u{i:07}")).collect();
    store.enqueue_units(&id, &keys, 3).await.expect("plan");
    store.complete_job(&job.fence).await.expect("end the run's job");
    id
}

async fn bench_backend(db: TestStore, sizes: Sizes, out: &mut Vec<String>) {
    let store = db.store.clone();
    let backend = store.backend_name();
    let calib = calibration(&store, sizes.calibration).await;
    eprintln!("{backend}: calibration {calib:.0} single-row commits/s");
    let mut row = |what: &str, workers: String, rate: f64, extra: String| {
        out.push(format!(
            "| {backend} | {what} | {workers} | {rate:.0} | {:.1}× | {extra} |",
            rate / calib
        ));
    };
    row("calibration: single-row commit", "1".into(), calib, String::new());
    for workers in worker_counts() {
        let raw_rate = raw(&store, workers, sizes.raw).await;
        let lock_rate = row_lock_per_unit(&store, workers, sizes.row_lock).await;
        let batched = runner(&store, workers, sizes.runner, FlushPolicy::default()).await;
        let single = runner(
            &store,
            workers,
            sizes.flush_one,
            FlushPolicy {
                max_results: 1,
                ..FlushPolicy::default()
            },
        )
        .await;
        eprintln!(
            "{backend} w{workers}: runner {:.0}/s (p95 visible {:.0} ms), flush-1 {:.0}/s, raw {raw_rate:.0}/s, row-lock {lock_rate:.0}/s",
            batched.rate, batched.p95_visible_ms, single.rate
        );
        row(
            "raw database, 100/txn",
            workers.to_string(),
            raw_rate,
            String::new(),
        );
        row("row lock per unit", workers.to_string(), lock_rate, String::new());
        row(
            "runner, flush 1",
            workers.to_string(),
            single.rate,
            format!("p95 visible {:.0} ms", single.p95_visible_ms),
        );
        row(
            "**runner**",
            workers.to_string(),
            batched.rate,
            format!(
                "p95 visible {:.0} ms; {:.2}× raw, {:.1}× row lock, {:.1}× flush 1; planning {:.0} ms",
                batched.p95_visible_ms,
                batched.rate / raw_rate,
                batched.rate / lock_rate,
                batched.rate / single.rate,
                batched.planning_ms
            ),
        );
    }
    db.drop_now().await;
}

/// The worker counts to run: [`WORKERS`], or `OPSLEDGER_BENCH_WORKERS=4`
/// (a comma-separated list) to look at one of them.
fn worker_counts() -> Vec<usize> {
    match std::env::var("OPSLEDGER_BENCH_WORKERS") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|w| {
                w.trim()
                    .parse()
                    .ok()
                    .filter(|&n: &usize| (1..=64).contains(&n))
                    .unwrap_or_else(|| {
                        panic!("OPSLEDGER_BENCH_WORKERS: {w:?} is not a worker count of 1 to 64")
                    })
            })
            .collect(),
        _ => WORKERS.to_vec(),
    }
}

#[tokio::main]
async fn main() {
    let scale = testing::bench_scale();
    eprintln!(
        "throughput benchmark: scale {scale}, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // Room for 16 runners' claims, batches and heartbeats plus the raw workers.
    let pool = PoolSettings { max_connections: 40 };
    let mut out = Vec::new();
    // `OPSLEDGER_BENCH_BACKENDS=postgres` (or `sqlite`) runs one of them.
    let only = std::env::var("OPSLEDGER_BENCH_BACKENDS").unwrap_or_default();
    if only.is_empty() || only.contains("sqlite") {
        bench_backend(testing::sqlite_with(pool).await, SQLITE.scaled(scale), &mut out).await;
    }
    if only.is_empty() || only.contains("postgres") {
        match testing::postgres_with(pool).await {
            Some(db) => bench_backend(db, POSTGRES.scaled(scale), &mut out).await,
            None => out.push("| postgres | SKIPPED (unreachable) | | | | |".into()),
        }
    }
    println!();
    println!("| backend | what | workers | units/s | × single-row commit | notes |");
    println!("|---|---|---:|---:|---:|---|");
    for r in out {
        println!("{r}");
    }
}

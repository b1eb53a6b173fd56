//! The stale sweep's time over a large run history: 1 000 000 runs of which
//! 10 000 are stale, on SQLite and PostgreSQL, with the real families
//! registry (the `inventory.sync` adapter reads each run's proof; `policy.sync`
//! has none and fails closed).
//!
//! The history is 989 000 completed runs, 1 000 live running runs (fresh
//! heartbeats: they must not be touched), 5 000 stale `inventory.sync` runs
//! with attempted types but no coverage, and 5 000 stale `policy.sync` runs.
//! Three passes are timed:
//!
//! 1. **nothing stale** (timeouts longer than any age): the cost of looking;
//! 2. **10 000 stale**: every stale run decided and closed; checked after;
//! 3. **again**: nothing left to do (idempotence).
//!
//! ```text
//! cargo bench -p opsledger-families --bench stale_sweep
//! OPSLEDGER_BENCH_SCALE=0.1 cargo bench -p opsledger-families --bench stale_sweep   # quick
//! ```
//!
//! Without `--bench` (e.g. `cargo test --benches`) the default scale is 0.01.

use opsledger_core::{Outcome, RunStatus, RunType};
use opsledger_engine::{SweepConfig, sweep_once};
use opsledger_providers::ProviderSettings;
use opsledger_store::testing::{self, SeedRuns, TestStore};
use opsledger_store::{Store, now_ms};
use serde_json::json;
use std::time::{Duration, Instant};

const HISTORY: u64 = 1_000_000;
const STALE: u64 = 10_000;
const LIVE: u64 = 1_000;
const HOUR: i64 = 3_600_000;
/// Seed blocks (they tell the seeded ids apart).
const COMPLETED: u16 = 1;
const LIVE_BLOCK: u16 = 2;
const STALE_INVENTORY: u16 = 3;
const STALE_POLICY: u16 = 4;

async fn seed(store: &Store, scale: f64) -> (u64, u64, [String; 3]) {
    let n = |v: u64| ((v as f64 * scale).round() as u64).max(2);
    let (history, stale, live) = (n(HISTORY), n(STALE), n(LIVE));
    let ws = store.create_workspace("bench").await.expect("workspace").id;
    let t = store
        .create_tenant(&ws, "contoso", "demo:healthy")
        .await
        .expect("tenant")
        .id;
    let now = now_ms();
    let block = |block, count, run_type, completed, at, context| SeedRuns {
        block,
        count,
        workspace_id: &ws,
        tenant_id: Some(&t),
        run_type,
        status: if completed {
            RunStatus::Completed
        } else {
            RunStatus::Running
        },
        outcome: if completed {
            Outcome::Succeeded
        } else {
            Outcome::Pending
        },
        at,
        every_ms: 0,
        context,
    };
    let started = Instant::now();
    let attempted = json!({"inventory": {"attempted_types": ["deviceConfigurations", "namedLocations"]}});
    let blocks = [
        block(
            COMPLETED,
            history - stale - live,
            RunType::InventorySync,
            true,
            now - 2 * HOUR,
            json!({}),
        ),
        block(LIVE_BLOCK, live, RunType::PolicySync, false, now, json!({})),
        block(
            STALE_INVENTORY,
            stale / 2,
            RunType::InventorySync,
            false,
            now - HOUR,
            attempted,
        ),
        block(
            STALE_POLICY,
            stale - stale / 2,
            RunType::PolicySync,
            false,
            now - HOUR,
            json!({}),
        ),
    ];
    testing::seed_runs(store, &blocks).await.expect("seed");
    let ids = [blocks[1].id(0), blocks[2].id(0), blocks[3].id(0)];
    eprintln!(
        "{}: seeded {history} runs in {:.1}s",
        store.backend_name(),
        started.elapsed().as_secs_f64()
    );
    (history, stale, ids)
}

async fn pass(store: &Store, timeout_ms: u64) -> (usize, Duration) {
    let registry = opsledger_families::registry(ProviderSettings::default());
    let config = SweepConfig {
        queue_timeout_ms: Some(timeout_ms),
        heartbeat_timeout_ms: Some(timeout_ms),
        batch: 1000,
        job_retention_ms: None,
    };
    let started = Instant::now();
    let report = sweep_once(store, &registry, &config).await.expect("sweep");
    (report.decisions.len(), started.elapsed())
}

async fn bench_backend(db: TestStore, scale: f64, rows: &mut Vec<String>) {
    let store = db.store.clone();
    let backend = store.backend_name();
    let (history, stale, [live_id, stale_inventory_id, stale_policy_id]) = seed(&store, scale).await;
    let ten_minutes = 600_000;
    let (found, quiet) = pass(&store, 100 * HOUR as u64).await;
    assert_eq!(found, 0, "{backend}: nothing is stale under a 100 h timeout");
    let (decided, busy) = pass(&store, ten_minutes).await;
    assert_eq!(decided as u64, stale, "{backend}: every stale run decided once");
    let (again, idle) = pass(&store, ten_minutes).await;
    assert_eq!(again, 0, "{backend}: a second pass finds nothing");
    // Stale runs closed as their proof says; live runs untouched.
    for (id, outcome, reason) in [
        (&stale_inventory_id, Outcome::Failed, "inventory_no_coverage"),
        (&stale_policy_id, Outcome::Failed, "stale_no_proof"),
    ] {
        let run = store.get_run(id).await.expect("run").expect("exists");
        assert_eq!(run.outcome, outcome, "{backend} {id}");
        assert_eq!(run.reconciliation().expect("recorded")["reason_code"], reason);
    }
    let live = store.get_run(&live_id).await.expect("run").expect("exists");
    assert!(!live.is_completed(), "{backend}: a live run was closed");
    for (what, n, d) in [
        ("nothing stale", 0, quiet),
        ("stale runs decided and closed", decided, busy),
        ("second pass (idempotent)", again, idle),
    ] {
        let secs = d.as_secs_f64();
        eprintln!("{backend} {what}: {n} decisions in {secs:.3}s");
        rows.push(format!(
            "| {backend} | {history} | {stale} | {what} | {n} | {secs:.3} | {} |",
            if n > 0 {
                format!("{:.0}", n as f64 / secs)
            } else {
                "—".into()
            }
        ));
    }
    db.drop_now().await;
}

#[tokio::main]
async fn main() {
    let scale = testing::bench_scale();
    eprintln!("stale sweep benchmark: scale {scale}");
    let mut rows = Vec::new();
    bench_backend(testing::sqlite().await, scale, &mut rows).await;
    match testing::postgres().await {
        Some(db) => bench_backend(db, scale, &mut rows).await,
        None => rows.push("| postgres | SKIPPED (unreachable) | | | | | |".into()),
    }
    println!();
    println!("| backend | runs | stale | pass | decisions | seconds | decisions/s |");
    println!("|---|---:|---:|---|---:|---:|---:|");
    for r in rows {
        println!("{r}");
    }
}

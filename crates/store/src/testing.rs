//! Real databases for tests: a fresh SQLite file, or a fresh PostgreSQL
//! schema on the server named by `OPSLEDGER_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). When PostgreSQL does not
//! answer, PostgreSQL tests are skipped with a loud line, except under
//! `CI=true`, where that is a failure. No mocks: every storage test runs the
//! real SQL on both backends.
//!
//! Behind the `test-support` feature, with the one door to raw SQL
//! ([`raw_pool`]): tests that must write what the writer path never would
//! (a constraint probe, a broken row) and benchmark fixtures use it; no
//! normal build has it.

use crate::db::{Dialect, Pool};
use crate::{PoolSettings, Store};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::sqlite::SqliteConnectOptions;
use std::str::FromStr;

pub const DEFAULT_TEST_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Schemas older than this are left over from crashed test runs and dropped.
const STALE_SCHEMA_MS: i64 = 2 * 60 * 60 * 1000;

/// A migrated store that lives as long as this value (SQLite's folder is
/// removed on drop; PostgreSQL schemas are swept by later runs).
pub struct TestStore {
    pub store: Store,
    /// For SQLite, the database URL, so a test can hand it to a child process.
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

pub fn postgres_url() -> String {
    std::env::var("OPSLEDGER_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_TEST_POSTGRES_URL.to_owned())
}

fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

pub async fn sqlite() -> TestStore {
    sqlite_with(PoolSettings::default()).await
}

pub async fn sqlite_with(settings: PoolSettings) -> TestStore {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("opsledger.db");
    let url = format!("sqlite://{}", path.display());
    let store = Store::connect_sqlite(SqliteConnectOptions::from_str(&url).expect("url"), settings)
        .await
        .expect("open sqlite");
    store.migrate().await.expect("migrate sqlite");
    TestStore {
        store,
        url,
        _dir: Some(dir),
    }
}

/// A store on a new schema of the test PostgreSQL, or `None` (with a loud
/// line) when PostgreSQL is unreachable outside CI.
pub async fn postgres() -> Option<TestStore> {
    postgres_with(PoolSettings::default()).await
}

pub async fn postgres_with(settings: PoolSettings) -> Option<TestStore> {
    let base = postgres_url();
    let opts = PgConnectOptions::from_str(&base).expect("OPSLEDGER_TEST_POSTGRES_URL");
    let mut admin = match PgConnection::connect_with(&opts).await {
        Ok(c) => c,
        Err(e) if !in_ci() => {
            eprintln!(
                "!!! SKIPPED: PostgreSQL at {base} is unreachable ({e}); PostgreSQL tests did not run !!!"
            );
            return None;
        }
        Err(e) => panic!("CI=true and PostgreSQL at {base} is unreachable: {e}"),
    };
    let now = crate::now_ms();
    let schema = format!("olt_{}_{}", now, &{
        let mut b = [0u8; 6];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut b);
        hex::encode(b)
    });
    sweep_stale_schemas(&mut admin, now).await;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .expect("create schema");
    let _ = admin.close().await;
    let store = Store::connect_postgres(opts.options([("search_path", schema.as_str())]), settings)
        .await
        .expect("connect postgres");
    store.migrate().await.expect("migrate postgres");
    let url = format!(
        "{base}{}options=-csearch_path%3D{schema}",
        if base.contains('?') { "&" } else { "?" }
    );
    Some(TestStore {
        store,
        url,
        _dir: None,
    })
}

async fn sweep_stale_schemas(admin: &mut PgConnection, now: i64) {
    let names: Vec<(String,)> =
        sqlx::query_as("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'olt\\_%'")
            .fetch_all(&mut *admin)
            .await
            .unwrap_or_default();
    for (name,) in names {
        let created: Option<i64> = name.split('_').nth(1).and_then(|s| s.parse().ok());
        if created.is_some_and(|c| now - c > STALE_SCHEMA_MS) {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {name} CASCADE"
            )))
            .execute(&mut *admin)
            .await;
        }
    }
}

/// Runs a test body against SQLite and, when reachable, PostgreSQL:
/// `both_backends!(name, |store| async move { … });` defines `name::sqlite`
/// and `name::postgres` tests.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let db = $crate::testing::sqlite().await;
                ($body)(db.store.clone()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let Some(db) = $crate::testing::postgres().await else {
                    return;
                };
                ($body)(db.store.clone()).await;
            }
        }
    };
}

/// How much work a benchmark does: `OPSLEDGER_BENCH_SCALE` (float > 0),
/// default 1.0 under `cargo bench` (which passes `--bench`) and 0.01
/// otherwise (e.g. `cargo test --benches`, which only checks that the
/// benchmark still runs).
pub fn bench_scale() -> f64 {
    match std::env::var("OPSLEDGER_BENCH_SCALE") {
        Ok(s) => {
            let v: f64 = s
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("OPSLEDGER_BENCH_SCALE={s:?} is not a number: {e}"));
            assert!(
                v.is_finite() && v > 0.0,
                "OPSLEDGER_BENCH_SCALE must be > 0, got {v}"
            );
            v
        }
        Err(_) if std::env::args().any(|a| a == "--bench") => 1.0,
        Err(_) => 0.01,
    }
}

impl TestStore {
    /// Drops a PostgreSQL test schema now (otherwise later runs sweep it
    /// after hours; benchmark schemas are large) and closes the pool.
    pub async fn drop_now(self) {
        if let Pool::Postgres(pool) = &self.store.pool {
            let schema: Result<(String,), _> = sqlx::query_as("SELECT current_schema()::text")
                .fetch_one(pool)
                .await;
            if let Ok((schema,)) = schema
                && schema.starts_with("olt_")
            {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                    .execute(pool)
                    .await;
            }
        }
        self.store.close().await;
    }
}

/// A block of runs for benchmarks, inserted by [`seed_runs`]: run `i`
/// (0-based) is created at `at + i * every_ms`, and its id is a UUIDv7
/// carrying that time, as [`Store::create_run`]'s ids do (so id order is
/// creation order and time filters work on it). Blocks spread over the same
/// span with different `block` numbers interleave without colliding.
pub struct SeedRuns<'a> {
    /// Tells this block's ids from other blocks' (0 to 4095; see [`seed_run_id`]).
    pub block: u16,
    pub count: u64,
    pub workspace_id: &'a str,
    /// `None` for workspace-level runs.
    pub tenant_id: Option<&'a str>,
    pub run_type: opsledger_core::RunType,
    pub status: opsledger_core::RunStatus,
    /// `Pending` unless `status` is `Completed`.
    pub outcome: opsledger_core::Outcome,
    /// When the block's first run was created (ms). A run is started (unless
    /// queued), last heartbeaten and completed (if completed) when it was created.
    pub at: i64,
    /// Time between two consecutive runs of the block (ms); 0 = all at `at`.
    pub every_ms: i64,
    pub context: serde_json::Value,
}

impl SeedRuns<'_> {
    /// The id of the block's run `i` (0-based).
    pub fn id(&self, i: u64) -> String {
        seed_run_id(self.block, self.at + i as i64 * self.every_ms, i)
    }
}

/// The id [`seed_runs`] gives run `i` of block `block`, created at `at_ms`:
/// a UUIDv7 whose 48-bit time is `at_ms`, `block` in its 12 `rand_a` bits and
/// `i` in its `rand_b` bits.
pub fn seed_run_id(block: u16, at_ms: i64, i: u64) -> String {
    assert!(block < 4096 && i < 1 << 48 && (0..1 << 48).contains(&at_ms));
    format!(
        "{:08x}-{:04x}-7{block:03x}-8000-{i:012x}",
        at_ms >> 16,
        at_ms & 0xffff
    )
}

/// Inserts blocks of runs, one statement per block, then refreshes the
/// planner's statistics (and vacuums, on PostgreSQL). For benchmark
/// fixtures only: it writes rows directly, bypassing the writer path,
/// because building a million-run history through it would take longer
/// than the measurement. The rows satisfy every CHECK constraint of the
/// schema; they have no jobs.
pub async fn seed_runs(store: &Store, blocks: &[SeedRuns<'_>]) -> Result<(), crate::StoreError> {
    // The id's hex digits: the one expression the two databases spell differently.
    let hex = |v: &str, digits: u8| match store.pool.dialect() {
        Dialect::Sqlite => format!("printf('%0{digits}x', {v})"),
        Dialect::Postgres => format!("lpad(to_hex({v}), {digits}, '0')"),
    };
    let sql = format!(
        "WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i + 1 < $1), \
         r(i, ms) AS (SELECT i, CAST($8 AS BIGINT) + i * CAST($9 AS BIGINT) FROM s) \
         INSERT INTO operation_runs (id, workspace_id, tenant_id, type, status, outcome, context, \
           initiator, created_at, started_at, heartbeat_at, completed_at) \
         SELECT {} || '-' || {} || '-7' || {} || '-8000-' || {}, $2, $3, $4, $5, $6, $7, 'bench', ms, \
           CASE WHEN $5 = 'queued' THEN NULL ELSE ms END, CASE WHEN $5 = 'queued' THEN NULL ELSE ms END, \
           CASE WHEN $5 = 'completed' THEN ms END \
         FROM r",
        hex("ms >> 16", 8),
        hex("ms & 65535", 4),
        hex("CAST($10 AS BIGINT)", 3),
        hex("i", 12)
    );
    for seed in blocks {
        assert_eq!(
            seed.status == opsledger_core::RunStatus::Completed,
            seed.outcome.is_terminal(),
            "a completed run has a terminal outcome, any other is pending"
        );
        if seed.count == 0 {
            continue;
        }
        // Checks that the last run's time and number fit the id.
        seed.id(seed.count - 1);
        store
            .pool
            .execute(
                crate::db::sql_owned(sql.clone())
                    .bind(seed.count as i64)
                    .bind(seed.workspace_id)
                    .bind(seed.tenant_id)
                    .bind(seed.run_type.as_str())
                    .bind(seed.status.as_str())
                    .bind(seed.outcome.as_str())
                    .bind(seed.context.to_string())
                    .bind(seed.at)
                    .bind(seed.every_ms)
                    .bind(i64::from(seed.block)),
            )
            .await?;
    }
    // What a long-lived table looks like: statistics current and, on
    // PostgreSQL, old pages vacuumed (so index-only scans skip the heap);
    // it also keeps autovacuum from doing it in the middle of a measurement.
    let analyze = match store.pool.dialect() {
        Dialect::Sqlite => "ANALYZE operation_runs",
        Dialect::Postgres => "VACUUM (ANALYZE) operation_runs",
    };
    store.pool.execute(crate::db::sql(analyze)).await?;
    Ok(())
}

/// Puts a run's jobs in the state they reach when every attempt's worker
/// died and the rescuer gave up: `failed`, no lease, no attempts left. For
/// tests that start from that state (reconciliation); the path that gets
/// there — leases expiring, rescue, retries — has tests of its own.
pub async fn exhaust_jobs(store: &Store, run_id: &str) -> Result<u64, crate::StoreError> {
    Ok(store
        .pool
        .execute(
            crate::db::sql(
                "UPDATE jobs SET state = 'failed', lease_token = NULL, lease_expires_at = NULL, \
                 attempt = max_attempts, finalized_at = $2, last_error = 'worker died (test)' \
                 WHERE run_id = $1 AND state IN ('available', 'running')",
            )
            .bind(run_id)
            .bind(store.now_ms()),
        )
        .await?)
}

/// A store's pool, for tests only (see the module's doc).
pub enum RawPool<'a> {
    Sqlite(&'a sqlx::SqlitePool),
    Postgres(&'a sqlx::PgPool),
}

/// The pool behind `store`, for tests that must run SQL the writer path
/// never would. Use [`raw_on_pool!`](crate::raw_on_pool) to write the body once.
pub fn raw_pool(store: &Store) -> RawPool<'_> {
    match &store.pool {
        Pool::Sqlite(p) => RawPool::Sqlite(p),
        Pool::Postgres(p) => RawPool::Postgres(p),
    }
}

/// `raw_on_pool!(&store, pool => body)`: `body` once per backend with `pool`
/// the concrete pool. Tests only.
#[macro_export]
macro_rules! raw_on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $crate::testing::raw_pool($store) {
            $crate::testing::RawPool::Sqlite($pool) => $body,
            $crate::testing::RawPool::Postgres($pool) => $body,
        }
    };
}

/// The run `run_id` as held by `fence` (a job claimed through
/// [`Store::claim_jobs`]): the handle a handler writes through.
pub async fn lease(store: &Store, fence: &crate::jobs::Fence, run_id: &str) -> crate::lease::LeasedRun {
    let head = store
        .run_head(run_id)
        .await
        .expect("read run head")
        .unwrap_or_else(|| panic!("run {run_id} not found"));
    crate::lease::LeasedRun::new(store, fence.clone(), head)
}

/// One of the store's own transactions, held open after its work so a test
/// can interleave another writer with it (a finish racing a rescue).
/// Dropped without [`HeldTx::commit`], it rolls back.
pub struct HeldTx(crate::db::Tx);

impl HeldTx {
    pub async fn commit(self) -> Result<(), crate::StoreError> {
        self.0.commit().await
    }
}

/// [`Store::finish_unit_job`]'s transaction, not yet committed.
pub async fn begin_finish_unit(
    store: &Store,
    fence: &crate::jobs::Fence,
    run_id: &str,
    unit: crate::UnitRecord,
    end: crate::jobs::JobEnd,
) -> Result<(HeldTx, crate::RecordSummary), crate::StoreError> {
    let mut tx = store.begin_write().await?;
    let summary = crate::jobs::finish_unit_job_in(&mut tx, fence, run_id, &unit, end).await?;
    Ok((HeldTx(tx), summary))
}

/// [`Store::rescue_expired_jobs`]'s transaction, not yet committed.
pub async fn begin_rescue(
    store: &Store,
    limit: u32,
) -> Result<(HeldTx, crate::jobs::RescueReport), crate::StoreError> {
    let mut tx = store.begin_write().await?;
    let report = crate::jobs::rescue_in(&mut tx, limit).await?;
    Ok((HeldTx(tx), report))
}

//! Storage for opsledger on SQLite (embedded default) and PostgreSQL
//! (multi-node), and the **one writer path** for operation runs.
//!
//! Every mutation of a run goes through the domain verbs of [`runs`]
//! (`create_run`, `claim_run`, `init_total`, `record_units`,
//! `complete_run`, `maybe_complete_bulk_run`, …). Invariants are enforced
//! twice on purpose: by the writer path, and by CHECK/UNIQUE constraints in
//! the schema, so that no bug or hand-written `UPDATE` can store
//! `processed > total`, count a unit twice, or complete a run twice.
//!
//! Both backends run the same SQL: each statement is written once and run
//! through the crate-private `db` module, which dispatches it to the
//! concrete driver, so a query cannot silently differ between the two.
//! Transaction bodies are plain functions over that module's transaction
//! type. Only the transaction opening and the row-locking clauses differ:
//! SQLite takes its write lock up front (`BEGIN IMMEDIATE`) so that two
//! writers never deadlock upgrading a read lock.

pub mod artifacts;
pub mod backup_reads;
pub mod backup_set_writes;
pub mod backups;
pub mod baselines;
pub mod budget;
pub mod children;
pub mod claims;
pub mod clock;
mod closing;
mod db;
pub mod demo_objects;
pub mod directory;
mod error;
pub mod evidence;
pub mod files;
pub mod inventory;
pub mod job_batches;
pub mod job_cleaner;
pub mod jobs;
pub mod lease;
mod ledger;
mod phases;
pub mod proof;
pub mod restores;
mod row;
pub mod runs;
pub mod schedules;
pub mod stale;
#[cfg(feature = "test-support")]
pub mod testing;

pub use error::StoreError;
pub use row::LIST_CONTEXT_MAX_CHARS;
pub use runs::{
    CompleteResult, Completion, ContextPatch, CreateResult, NewRun, RecordSummary, RunFilter, RunHead,
    UnitRecord, Visibility,
};

use clock::{Clock, SystemClock};
use db::Pool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The ledger's database: SQLite or PostgreSQL. Its connections are private
/// to this crate — no other crate can run SQL on them — and every write goes
/// through the domain verbs of its modules.
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    clock: Arc<dyn Clock>,
}

/// How a pool is sized; the defaults suit a server with embedded workers.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    pub max_connections: u32,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings { max_connections: 16 }
    }
}

impl Store {
    fn on(pool: Pool) -> Store {
        Store {
            pool,
            clock: Arc::new(SystemClock),
        }
    }

    /// The same database, read and written with `clock`'s time (tests move
    /// a [`clock::ManualClock`] instead of sleeping).
    pub fn with_clock(&self, clock: Arc<dyn Clock>) -> Store {
        Store {
            pool: self.pool.clone(),
            clock,
        }
    }

    /// The store's time now (ms since the Unix epoch).
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Opens a write transaction carrying the store's clock.
    pub(crate) async fn begin_write(&self) -> Result<db::Tx, sqlx::Error> {
        self.pool.begin_write(self.clock.clone()).await
    }

    /// Connects to `sqlite://PATH` (created if missing) or `postgres://…`.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Store::connect_with(url, PoolSettings::default()).await
    }

    pub async fn connect_with(url: &str, settings: PoolSettings) -> Result<Store, StoreError> {
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?;
            Store::connect_sqlite(opts, settings).await
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Store::connect_postgres(PgConnectOptions::from_str(url)?, settings).await
        } else {
            Err(StoreError::UnsupportedUrl(url.to_owned()))
        }
    }

    pub async fn connect_sqlite(
        opts: SqliteConnectOptions,
        settings: PoolSettings,
    ) -> Result<Store, StoreError> {
        create_private_file(opts.get_filename())?;
        let opts = opts
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30))
            // Rows the connection's worker reads ahead of the caller (default
            // 50): a 500-run list page otherwise stalls ten times on the hand-off.
            .row_buffer_size(1024);
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.max_connections.min(8))
            .connect_with(opts)
            .await?;
        Ok(Store::on(Pool::Sqlite(pool)))
    }

    pub async fn connect_postgres(
        opts: PgConnectOptions,
        settings: PoolSettings,
    ) -> Result<Store, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await?;
        Ok(Store::on(Pool::Postgres(pool)))
    }

    /// Applies the backend's migrations (idempotent).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Sqlite(pool) => sqlx::migrate!("./migrations/sqlite").run(pool).await?,
            Pool::Postgres(pool) => sqlx::migrate!("./migrations/postgres").run(pool).await?,
        }
        Ok(())
    }

    pub fn backend_name(&self) -> &'static str {
        match self.pool.dialect() {
            db::Dialect::Sqlite => "sqlite",
            db::Dialect::Postgres => "postgres",
        }
    }

    /// Write transactions on disjoint rows worth running at once: SQLite has
    /// one writer at a time (more would only wait on its lock); PostgreSQL
    /// commits them in parallel.
    pub fn parallel_writers(&self) -> usize {
        match self.pool.dialect() {
            db::Dialect::Sqlite => 1,
            db::Dialect::Postgres => 4,
        }
    }

    pub async fn close(&self) {
        self.pool.close().await
    }
}

/// Creates the database file readable by its owner only (0600) unless it
/// exists: it holds password hashes and tenants' policies. SQLite gives its
/// `-wal` and `-shm` files the database file's permissions.
fn create_private_file(path: &std::path::Path) -> Result<(), StoreError> {
    if path.as_os_str().is_empty() || path.as_os_str() == ":memory:" || path.exists() {
        return Ok(());
    }
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    match open.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Database(sqlx::Error::Io(e))),
    }
}

/// Milliseconds since the Unix epoch by the system clock (the store's own
/// time is [`Store::now_ms`]).
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A new sortable id (UUIDv7).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

//! What differs between the two backends, and nothing else.

use sqlx::{PgPool, Postgres, Sqlite, SqlitePool, Transaction};

/// Opening a write transaction.
pub trait WritePool {
    type Db: sqlx::Database;
    fn begin_write(&self)
    -> impl Future<Output = Result<Transaction<'static, Self::Db>, sqlx::Error>> + Send;
}

impl WritePool for SqlitePool {
    type Db = Sqlite;
    /// `BEGIN IMMEDIATE` takes SQLite's write lock at once (waiting up to the
    /// busy timeout), so a transaction that reads then writes can never fail
    /// on a lock upgrade with `SQLITE_BUSY`.
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl WritePool for PgPool {
    type Db = Postgres;
    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.begin().await
    }
}

/// Row locking for read-modify-write inside a write transaction. PostgreSQL
/// needs `FOR UPDATE`; SQLite already holds the database write lock since
/// `BEGIN IMMEDIATE` and has no such clause.
pub trait RowLock {
    const FOR_UPDATE: &'static str;
    /// Shared lock that keeps a row from changing until commit (a lease check).
    const FOR_SHARE: &'static str;
    /// Claim without waiting on rows other claimers hold.
    const SKIP_LOCKED: &'static str;
}

impl RowLock for SqlitePool {
    const FOR_UPDATE: &'static str = "";
    const FOR_SHARE: &'static str = "";
    const SKIP_LOCKED: &'static str = "";
}

impl RowLock for PgPool {
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const FOR_SHARE: &'static str = " FOR SHARE";
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";
}

pub fn for_update<P: RowLock>(_: &P) -> &'static str {
    P::FOR_UPDATE
}

pub fn for_share<P: RowLock>(_: &P) -> &'static str {
    P::FOR_SHARE
}

pub fn skip_locked<P: RowLock>(_: &P) -> &'static str {
    P::SKIP_LOCKED
}

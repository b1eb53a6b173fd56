//! The one place that knows there are two databases.
//!
//! Every statement of the store is written once, as a [`Sql`] (text with
//! `$1…` placeholders, which both SQLite and PostgreSQL accept, and its
//! arguments as data), and run on a [`Pool`] or inside a [`Tx`], each of which
//! dispatches to the concrete sqlx driver. Transaction bodies are therefore
//! plain `async fn`s over `&mut Tx` — an early `?` leaves the body, never its
//! caller — and a query cannot drift between the backends.
//!
//! Why a dispatching type rather than sqlx's `Any` driver: `Any` decodes every
//! row into owned `AnyValue`s and knows neither SQLite's `BEGIN IMMEDIATE` nor
//! the connect options we set per backend; dispatching keeps the native
//! drivers (their statement caches, their row decoding) at the cost of one
//! `match` per statement.
//!
//! What differs between the backends is named here and nowhere else: opening
//! a write transaction ([`Pool::begin_write`]) and the row-locking clauses of
//! [`Dialect`].

use crate::clock::Clock;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool, PgRow};
use sqlx::sqlite::{SqliteConnection, SqlitePool, SqliteRow};
use sqlx::{AssertSqlSafe, Decode, Encode, FromRow, Postgres, Sqlite, Type};
use std::borrow::Cow;
use std::sync::Arc;

/// The two databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Row lock for a read-modify-write inside a write transaction.
    /// PostgreSQL needs `FOR UPDATE`; SQLite already holds the database's
    /// write lock since `BEGIN IMMEDIATE` and has no such clause.
    pub fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    /// A shared lock that keeps a row from changing until commit (a lease check).
    pub fn for_share(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR SHARE",
        }
    }

    /// Claim without waiting on rows other claimers hold.
    pub fn skip_locked(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }
}

/// One bound argument.
#[derive(Debug, Clone)]
pub(crate) enum Arg<'a> {
    I64(Option<i64>),
    Str(Option<&'a str>),
    String(Option<String>),
    /// A `text[]` on PostgreSQL (`UNNEST($n::text[])`, `= ANY($n)`): a batch
    /// statement whose text does not change with its size stays prepared
    /// (one text per batch size was parsed and planned per batch: measured
    /// 1.3 ms of planning for a 100-row job end that ran in 2 ms). Never
    /// bound on SQLite, whose statements take the rows as `VALUES`.
    Texts(Vec<String>),
}

/// Values a statement can bind.
pub(crate) trait IntoArg<'a> {
    fn into_arg(self) -> Arg<'a>;
}

impl<'a> IntoArg<'a> for i64 {
    fn into_arg(self) -> Arg<'a> {
        Arg::I64(Some(self))
    }
}
impl<'a> IntoArg<'a> for Option<i64> {
    fn into_arg(self) -> Arg<'a> {
        Arg::I64(self)
    }
}
impl<'a> IntoArg<'a> for &'a str {
    fn into_arg(self) -> Arg<'a> {
        Arg::Str(Some(self))
    }
}
impl<'a> IntoArg<'a> for &'a String {
    fn into_arg(self) -> Arg<'a> {
        Arg::Str(Some(self.as_str()))
    }
}
impl<'a> IntoArg<'a> for Option<&'a str> {
    fn into_arg(self) -> Arg<'a> {
        Arg::Str(self)
    }
}
impl<'a> IntoArg<'a> for &'a Option<String> {
    fn into_arg(self) -> Arg<'a> {
        Arg::Str(self.as_deref())
    }
}
impl<'a> IntoArg<'a> for Vec<String> {
    fn into_arg(self) -> Arg<'a> {
        Arg::Texts(self)
    }
}
impl<'a> IntoArg<'a> for String {
    fn into_arg(self) -> Arg<'a> {
        Arg::String(Some(self))
    }
}
impl<'a> IntoArg<'a> for Option<String> {
    fn into_arg(self) -> Arg<'a> {
        Arg::String(self)
    }
}

/// A statement: SQL text with `$n` placeholders and its arguments.
#[derive(Debug, Clone)]
pub(crate) struct Sql<'a> {
    text: Cow<'static, str>,
    args: Vec<Arg<'a>>,
    /// Kept prepared by the connection (the default) or planned anew each time.
    persistent: bool,
    /// How [`Sql::push_bind`] writes a placeholder: `$n` by default, `?` for a
    /// statement built for SQLite by [`sql_built`] (see there).
    anonymous: bool,
}

/// A statement assembled placeholder by placeholder with [`Sql::push_bind`]
/// (multi-row inserts, `IN` lists, list walks) for `dialect`. On SQLite its
/// placeholders are anonymous `?`: sqlx binds a numbered one (`$n`) by
/// looking its name up, which SQLite does by a scan of the statement's
/// parameter names — quadratic in a 400-parameter batch insert, which
/// measured 20–40 % slower. Such a statement must take every argument
/// through `push_bind`, in order.
pub(crate) fn sql_built<'a>(dialect: Dialect, text: &str) -> Sql<'a> {
    Sql {
        text: Cow::Owned(text.to_owned()),
        args: Vec::new(),
        persistent: true,
        anonymous: dialect == Dialect::Sqlite,
    }
}

/// A statement whose text is a literal.
pub(crate) fn sql<'a>(text: &'static str) -> Sql<'a> {
    Sql {
        text: Cow::Borrowed(text),
        args: Vec::new(),
        persistent: true,
        anonymous: false,
    }
}

/// A statement whose text is assembled from the store's own fragments
/// (column lists, dialect clauses) — never from input, which is always bound.
pub(crate) fn sql_owned<'a>(text: String) -> Sql<'a> {
    Sql {
        text: Cow::Owned(text),
        args: Vec::new(),
        persistent: true,
        anonymous: false,
    }
}

impl<'a> Sql<'a> {
    /// Binds the next `$n`.
    pub fn bind(mut self, value: impl IntoArg<'a>) -> Self {
        debug_assert!(
            !self.anonymous,
            "a statement of sql_built takes its arguments by push_bind"
        );
        self.args.push(value.into_arg());
        self
    }

    /// Planned anew with its values each time instead of kept prepared (a
    /// generic plan cannot see how wide a bound range is).
    pub fn not_persistent(mut self) -> Self {
        self.persistent = false;
        self
    }

    /// Appends SQL text (the store's own fragments only).
    pub fn push(&mut self, text: &str) -> &mut Self {
        debug_assert!(
            !self.anonymous || !text.contains('$'),
            "a numbered placeholder in a statement of anonymous ones: {text}"
        );
        self.text.to_mut().push_str(text);
        self
    }

    /// Appends a placeholder for `value` (`$n`, numbered in order; `?` in a
    /// statement of [`sql_built`] for SQLite).
    pub fn push_bind(&mut self, value: impl IntoArg<'a>) -> &mut Self {
        self.args.push(value.into_arg());
        let text = self.text.to_mut();
        if self.anonymous {
            text.push('?');
        } else {
            use std::fmt::Write;
            write!(text, "${}", self.args.len()).expect("write to a String");
        }
        self
    }

    /// Appends `, `-separated placeholders, one per value, in parentheses.
    pub fn push_list<I, V>(&mut self, values: I) -> &mut Self
    where
        I: IntoIterator<Item = V>,
        V: IntoArg<'a>,
    {
        self.push("(");
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.push_bind(v);
        }
        self.push(")")
    }
}

/// Binds a statement's arguments to a query of database `DB`.
fn prepare<'q, DB>(stmt: Sql<'q>) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>
where
    DB: BindTexts + sqlx::database::HasStatementCache,
    Option<i64>: Encode<'q, DB> + Type<DB>,
    Option<&'q str>: Encode<'q, DB> + Type<DB>,
    Option<String>: Encode<'q, DB> + Type<DB>,
{
    // An anonymous statement binds its arguments in order: a count that
    // differs would bind silently wrong on SQLite, so it is refused here.
    assert!(
        !stmt.anonymous || stmt.text.matches('?').count() == stmt.args.len(),
        "a statement of sql_built with {} placeholders and {} arguments: {}",
        stmt.text.matches('?').count(),
        stmt.args.len(),
        stmt.text
    );
    let mut query = sqlx::query(AssertSqlSafe(stmt.text)).persistent(stmt.persistent);
    for arg in stmt.args {
        query = match arg {
            Arg::I64(v) => query.bind(v),
            Arg::Str(v) => query.bind(v),
            Arg::String(v) => query.bind(v),
            Arg::Texts(v) => DB::bind_texts(query, v),
        };
    }
    query
}

/// How a database binds [`Arg::Texts`].
pub(crate) trait BindTexts: sqlx::Database {
    fn bind_texts<'q>(
        query: sqlx::query::Query<'q, Self, <Self as sqlx::Database>::Arguments>,
        texts: Vec<String>,
    ) -> sqlx::query::Query<'q, Self, <Self as sqlx::Database>::Arguments>;
}

impl BindTexts for Postgres {
    fn bind_texts<'q>(
        query: sqlx::query::Query<'q, Self, <Self as sqlx::Database>::Arguments>,
        texts: Vec<String>,
    ) -> sqlx::query::Query<'q, Self, <Self as sqlx::Database>::Arguments> {
        query.bind(texts)
    }
}

impl BindTexts for Sqlite {
    fn bind_texts<'q>(
        _: sqlx::query::Query<'q, Self, <Self as sqlx::Database>::Arguments>,
        _: Vec<String>,
    ) -> sqlx::query::Query<'q, Self, <Self as sqlx::Database>::Arguments> {
        unreachable!("a text array is bound on PostgreSQL only; SQLite statements take VALUES rows")
    }
}

/// Rows decodable from both databases (tuples of `i64`, `String`, options…).
pub(crate) trait FromBoth:
    for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}
impl<T> FromBoth for T where T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin {}

/// Column values decodable from both databases.
pub(crate) trait ValueFromBoth:
    for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}
impl<T> ValueFromBoth for T where
    T: for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}

/// A row of either database, read by column name.
pub(crate) enum DbRow {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

impl DbRow {
    pub fn get<T: ValueFromBoth>(&self, column: &str) -> Result<T, sqlx::Error> {
        use sqlx::Row;
        match self {
            DbRow::Sqlite(r) => r.try_get(column),
            DbRow::Postgres(r) => r.try_get(column),
        }
    }
}

/// A connection pool on one of the two databases.
#[derive(Debug, Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// An open write transaction on one of the two databases, with the store's
/// clock. Dropped without [`Tx::commit`], it rolls back.
pub(crate) struct Tx {
    inner: TxInner,
    clock: Arc<dyn Clock>,
}

enum TxInner {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

/// A connection taken from the pool for statements outside a transaction.
pub(crate) enum Conn {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
}

/// The connection a statement runs on, borrowed from a [`Tx`] or a [`Conn`]:
/// the statement verbs are written once, here.
enum ConnRef<'c> {
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConnection),
}

impl ConnRef<'_> {
    async fn execute(self, stmt: Sql<'_>) -> Result<u64, sqlx::Error> {
        Ok(match self {
            ConnRef::Sqlite(c) => prepare::<Sqlite>(stmt).execute(c).await?.rows_affected(),
            ConnRef::Postgres(c) => prepare::<Postgres>(stmt).execute(c).await?.rows_affected(),
        })
    }

    async fn fetch_optional<T: FromBoth>(self, stmt: Sql<'_>) -> Result<Option<T>, sqlx::Error> {
        match self {
            ConnRef::Sqlite(c) => prepare::<Sqlite>(stmt)
                .fetch_optional(c)
                .await?
                .map(|r| T::from_row(&r))
                .transpose(),
            ConnRef::Postgres(c) => prepare::<Postgres>(stmt)
                .fetch_optional(c)
                .await?
                .map(|r| T::from_row(&r))
                .transpose(),
        }
    }

    async fn fetch_all<T: FromBoth>(self, stmt: Sql<'_>) -> Result<Vec<T>, sqlx::Error> {
        match self {
            ConnRef::Sqlite(c) => prepare::<Sqlite>(stmt)
                .fetch_all(c)
                .await?
                .iter()
                .map(|r| T::from_row(r))
                .collect(),
            ConnRef::Postgres(c) => prepare::<Postgres>(stmt)
                .fetch_all(c)
                .await?
                .iter()
                .map(|r| T::from_row(r))
                .collect(),
        }
    }

    async fn rows(self, stmt: Sql<'_>) -> Result<Vec<DbRow>, sqlx::Error> {
        Ok(match self {
            ConnRef::Sqlite(c) => prepare::<Sqlite>(stmt)
                .fetch_all(c)
                .await?
                .into_iter()
                .map(DbRow::Sqlite)
                .collect(),
            ConnRef::Postgres(c) => prepare::<Postgres>(stmt)
                .fetch_all(c)
                .await?
                .into_iter()
                .map(DbRow::Postgres)
                .collect(),
        })
    }

    async fn row(self, stmt: Sql<'_>) -> Result<Option<DbRow>, sqlx::Error> {
        Ok(match self {
            ConnRef::Sqlite(c) => prepare::<Sqlite>(stmt)
                .fetch_optional(c)
                .await?
                .map(DbRow::Sqlite),
            ConnRef::Postgres(c) => prepare::<Postgres>(stmt)
                .fetch_optional(c)
                .await?
                .map(DbRow::Postgres),
        })
    }
}

/// The statement verbs of [`ConnRef`] on a type that lends one (not every
/// verb is used on both, hence `dead_code` allowed).
macro_rules! statement_verbs {
    () => {
        /// Runs a statement; the number of rows it changed.
        pub async fn execute(&mut self, stmt: Sql<'_>) -> Result<u64, sqlx::Error> {
            self.conn().execute(stmt).await
        }

        /// At most one row, decoded as `T`.
        pub async fn fetch_optional<T: FromBoth>(&mut self, stmt: Sql<'_>) -> Result<Option<T>, sqlx::Error> {
            self.conn().fetch_optional(stmt).await
        }

        /// Exactly one row, decoded as `T` (`RowNotFound` otherwise).
        pub async fn fetch_one<T: FromBoth>(&mut self, stmt: Sql<'_>) -> Result<T, sqlx::Error> {
            self.conn()
                .fetch_optional(stmt)
                .await?
                .ok_or(sqlx::Error::RowNotFound)
        }

        /// Every row, decoded as `T`.
        pub async fn fetch_all<T: FromBoth>(&mut self, stmt: Sql<'_>) -> Result<Vec<T>, sqlx::Error> {
            self.conn().fetch_all(stmt).await
        }

        /// Every row, for decoders that read columns by name ([`DbRow::get`]).
        #[allow(dead_code)]
        pub async fn rows(&mut self, stmt: Sql<'_>) -> Result<Vec<DbRow>, sqlx::Error> {
            self.conn().rows(stmt).await
        }

        /// At most one row, for decoders that read columns by name.
        pub async fn row(&mut self, stmt: Sql<'_>) -> Result<Option<DbRow>, sqlx::Error> {
            self.conn().row(stmt).await
        }
    };
}

impl Tx {
    fn conn(&mut self) -> ConnRef<'_> {
        match &mut self.inner {
            TxInner::Sqlite(tx) => ConnRef::Sqlite(tx),
            TxInner::Postgres(tx) => ConnRef::Postgres(tx),
        }
    }

    statement_verbs!();

    pub fn dialect(&self) -> Dialect {
        match self.inner {
            TxInner::Sqlite(_) => Dialect::Sqlite,
            TxInner::Postgres(_) => Dialect::Postgres,
        }
    }

    /// The store clock's time now (ms).
    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Commits, telling a failure of the commit itself apart
    /// ([`crate::StoreError::CommitOutcomeUnknown`]): the transaction may
    /// have been applied, so the caller must not run it again blindly.
    pub async fn commit(self) -> Result<(), crate::StoreError> {
        match self.inner {
            TxInner::Sqlite(tx) => tx.commit().await,
            TxInner::Postgres(tx) => tx.commit().await,
        }
        .map_err(crate::StoreError::CommitOutcomeUnknown)
    }
}

impl Conn {
    fn conn(&mut self) -> ConnRef<'_> {
        match self {
            Conn::Sqlite(c) => ConnRef::Sqlite(c),
            Conn::Postgres(c) => ConnRef::Postgres(c),
        }
    }

    statement_verbs!();
}

impl Pool {
    pub fn dialect(&self) -> Dialect {
        match self {
            Pool::Sqlite(_) => Dialect::Sqlite,
            Pool::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Opens a write transaction. SQLite's `BEGIN IMMEDIATE` takes the write
    /// lock at once (waiting up to the busy timeout), so a transaction that
    /// reads then writes can never fail on a lock upgrade with `SQLITE_BUSY`.
    pub async fn begin_write(&self, clock: Arc<dyn Clock>) -> Result<Tx, sqlx::Error> {
        let inner = match self {
            Pool::Sqlite(p) => TxInner::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
            Pool::Postgres(p) => TxInner::Postgres(p.begin().await?),
        };
        Ok(Tx { inner, clock })
    }

    /// A connection for statements outside a transaction.
    pub async fn acquire(&self) -> Result<Conn, sqlx::Error> {
        Ok(match self {
            Pool::Sqlite(p) => Conn::Sqlite(p.acquire().await?),
            Pool::Postgres(p) => Conn::Postgres(p.acquire().await?),
        })
    }

    /// One statement on a connection of its own (reads, and writes whose
    /// single statement is their whole transaction).
    pub async fn execute(&self, stmt: Sql<'_>) -> Result<u64, sqlx::Error> {
        self.acquire().await?.execute(stmt).await
    }

    pub async fn fetch_optional<T: FromBoth>(&self, stmt: Sql<'_>) -> Result<Option<T>, sqlx::Error> {
        self.acquire().await?.fetch_optional(stmt).await
    }

    pub async fn fetch_one<T: FromBoth>(&self, stmt: Sql<'_>) -> Result<T, sqlx::Error> {
        self.acquire().await?.fetch_one(stmt).await
    }

    pub async fn fetch_all<T: FromBoth>(&self, stmt: Sql<'_>) -> Result<Vec<T>, sqlx::Error> {
        self.acquire().await?.fetch_all(stmt).await
    }

    pub async fn rows(&self, stmt: Sql<'_>) -> Result<Vec<DbRow>, sqlx::Error> {
        self.acquire().await?.rows(stmt).await
    }

    pub async fn row(&self, stmt: Sql<'_>) -> Result<Option<DbRow>, sqlx::Error> {
        self.acquire().await?.row(stmt).await
    }

    pub async fn close(&self) {
        match self {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }
}

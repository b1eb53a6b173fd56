use opsledger_core::RunStatus;

/// Errors of the store. Refusals of the writer path are typed so callers can
/// tell "already done" from "broken".
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database failed while committing: the transaction may or may not
    /// have been applied. Never retried blindly.
    #[error("database error while committing (the write may or may not have been applied): {0}")]
    CommitOutcomeUnknown(sqlx::Error),
    /// The write committed; reading its result back failed.
    #[error("the write was applied, but reading its result failed: {0}")]
    AfterCommit(Box<StoreError>),
    #[error("unsupported database url `{0}` (use sqlite://PATH or postgres://…)")]
    UnsupportedUrl(String),
    #[error("run {0} not found")]
    RunNotFound(String),
    #[error("run {id} is {status}, not running")]
    RunNotRunning { id: String, status: RunStatus },
    #[error("run {id} already has total {existing}; refusing to set {requested}")]
    TotalAlreadySet {
        id: String,
        existing: u64,
        requested: u64,
    },
    #[error("run {id} has no total: initialize it before recording units")]
    TotalNotSet { id: String },
    #[error(
        "recording {new} more units on run {id} would exceed its total ({processed} of {total} processed)"
    )]
    UnitsExceedTotal {
        id: String,
        new: u64,
        processed: u64,
        total: u64,
    },
    #[error("{run_type} is a {expected}-level operation")]
    ScopeMismatch {
        run_type: opsledger_core::RunType,
        expected: &'static str,
    },
    /// A phase move or plan the rules of [`opsledger_core::phases`] refuse.
    #[error("run {id}: {error}")]
    Phase {
        id: String,
        error: opsledger_core::phases::PhaseError,
    },
    /// Phases written for a run whose type's progress mode is not `phased`.
    #[error("{run_type} is not a phased operation")]
    NotPhased { run_type: opsledger_core::RunType },
    /// Units recorded against a phase that cannot take them now.
    #[error("run {id}: phase {phase:?} cannot record {new} more units: {reason}")]
    PhaseUnitsRefused {
        id: String,
        phase: String,
        new: u64,
        reason: String,
    },
    /// A file artifact could not be written, moved or named.
    #[error("file artifact: {0}")]
    Files(String),
    /// A committed file whose bytes this node cannot reach (another node's
    /// local disk, an unreachable bucket): the API answers `503`, never
    /// another file.
    #[error("file artifact unavailable on this node: {0}")]
    FileUnavailable(String),
    /// Child runs enqueued by a run whose type is not composite.
    #[error("{run_type} is not a composite operation")]
    NotComposite { run_type: opsledger_core::RunType },
    #[error("a composite may have at most {limit} children, got {got}")]
    TooManyChildren { got: usize, limit: usize },
    /// A fan-out planned one unit in two waves.
    #[error("unit `{key}` is planned in wave {first} and wave {second}; a unit belongs to one wave")]
    UnitInTwoWaves { key: String, first: u64, second: u64 },
    #[error("job {job_id} is no longer leased by this worker")]
    LeaseLost { job_id: String },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A named thing (workspace, user, tenant, run…) does not exist.
    #[error("{what} `{id}` not found")]
    NotFound { what: &'static str, id: String },
    /// The write would duplicate something unique (a user's email, a
    /// tenant's name in its workspace); the message says what.
    #[error("{0}")]
    Conflict(String),
    /// A tenant named for a membership restriction belongs to another workspace.
    #[error("tenant `{tenant_id}` does not belong to workspace `{workspace_id}`")]
    TenantOutsideWorkspace { tenant_id: String, workspace_id: String },
    /// A value the caller gave cannot be stored as it is (a schedule's
    /// cron pattern or time zone); the message says why.
    #[error("{0}")]
    Invalid(String),
    /// A run's context would grow past [`crate::runs::MAX_CONTEXT_BYTES`].
    #[error("run context of {bytes} bytes exceeds the limit of {limit} bytes")]
    ContextTooLarge { bytes: usize, limit: usize },
}

impl StoreError {
    /// Whether trying again soon may succeed: the connection, the pool or the
    /// server had a problem (connection lost, pool exhausted, SQLite busy or
    /// locked, PostgreSQL serialization failure, deadlock, shutdown, too many
    /// connections). A refusal — a constraint violation, data this node
    /// cannot decode, a typed writer-path error — will not change and is
    /// never transient.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(e) | StoreError::CommitOutcomeUnknown(e) => sqlx_is_transient(e),
            StoreError::AfterCommit(inner) => inner.is_transient(),
            _ => false,
        }
    }

    /// Whether a write that failed with this error may be run again: only
    /// when the error is transient and its transaction provably never
    /// reached commit (a failure of the commit itself, or after it, leaves
    /// the write possibly applied).
    pub fn write_may_be_retried(&self) -> bool {
        matches!(self, StoreError::Database(e) if sqlx_is_transient(e))
    }

    /// Marks an error that happened after a write committed.
    pub fn after_commit(self) -> StoreError {
        StoreError::AfterCommit(Box::new(self))
    }
}

/// SQLSTATE classes and codes of PostgreSQL that a retry can get past.
const PG_TRANSIENT: &[&str] = &[
    "40001", // serialization_failure
    "40P01", // deadlock_detected
    "57P01", // admin_shutdown (e.g. pg_terminate_backend)
    "57P02", // crash_shutdown
    "57P03", // cannot_connect_now
    "53300", // too_many_connections
];

fn sqlx_is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                let code = pg.code();
                code.starts_with("08") || PG_TRANSIENT.contains(&code)
            } else if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // Extended result codes keep the primary code in the low byte:
                // SQLITE_BUSY (5) and SQLITE_LOCKED (6) and their variants.
                db.code()
                    .and_then(|c| c.parse::<i32>().ok())
                    .is_some_and(|c| matches!(c & 0xff, 5 | 6))
            } else {
                false
            }
        }
        _ => false,
    }
}

use opsledger_core::RunStatus;

/// Errors of the store. Refusals of the writer path are typed so callers can
/// tell "already done" from "broken".
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
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
    #[error("job {job_id} is no longer leased by this worker")]
    LeaseLost { job_id: String },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether trying again soon may succeed (the connection, the pool or the
    /// server had a problem), as opposed to an answer that will not change
    /// (a refusal, or data this node cannot decode).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Database(
                sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::Protocol(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
                    | sqlx::Error::Database(_)
            )
        )
    }
}

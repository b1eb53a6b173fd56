//! Database errors at the API's edge (INTERFACE.md: never a `500` for a
//! database hiccup). A read that meets a transient error (connection lost,
//! pool exhausted, SQLite busy, serialization failure) is tried once more; a
//! write only when its transaction provably never reached commit
//! ([`StoreError::write_may_be_retried`]). What still fails transiently is
//! answered `503` with `Retry-After` (see [`crate::error`]).

use crate::error::ApiError;
use opsledger_store::StoreError;

/// Runs a read, once more after a transient error. `f` makes one attempt
/// (a `move` closure over references, so its future is `Send`).
pub async fn read<T, F, Fut>(f: F) -> Result<T, ApiError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    match f().await {
        Err(e) if e.is_transient() => {
            tracing::warn!(error = %e, "transient database error on a read; trying once more");
            Ok(f().await?)
        }
        other => Ok(other?),
    }
}

/// Runs a write, once more only when the failed attempt cannot have committed.
pub async fn write<T, F, Fut>(f: F) -> Result<T, ApiError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    match f().await {
        Err(e) if e.write_may_be_retried() => {
            tracing::warn!(error = %e, "transient database error before commit; trying the write once more");
            Ok(f().await?)
        }
        other => Ok(other?),
    }
}

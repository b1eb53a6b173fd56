//! The job cleaner: finished jobs are deleted after a retention, in bounded
//! batches (River's `job_cleaner`), so a history of millions of unit jobs
//! does not weigh on the job table every claim, rescue and stale check reads.
//!
//! Only the queue's rows go. The unit ledger (`run_units`), the runs, their
//! failures and artifacts stay: they are the proof (OPERATIONS.md §3, §8).
//! Nothing reads a finished job for correctness:
//! - claims, rescue, heartbeats and fenced writes touch only `available` or
//!   `running` jobs (a fence names a running job);
//! - "can a job still move this run" (§7) counts only `available` and
//!   `running` jobs, and the wave gate only open ones;
//! - a fan-out is planned once: `plan_units` sets `total` and inserts the
//!   unit jobs in one transaction, guarded by `total IS NULL`, so a retried
//!   parent planning again after its jobs were deleted enqueues nothing; the
//!   only other job insert is a new run's own run job;
//! - `job_tally` / `job_workers` are observations of the queue, not proof.

use crate::db::sql_owned;
use crate::{Store, StoreError};

/// Default retention of finished jobs (`OPSLEDGER_JOB_RETENTION_MS`): one day.
pub const DEFAULT_JOB_RETENTION_MS: u64 = 24 * 60 * 60 * 1000;

/// Default most rows one cleaner call deletes.
pub const DEFAULT_JOB_CLEANER_BATCH: u32 = 1000;

impl Store {
    /// Deletes at most `limit` finished jobs (`completed`, `failed`,
    /// `cancelled`) finalized before `older_than_ms`, oldest first; returns
    /// how many went. Bounded, so one call holds the write lock briefly and
    /// a node catching up on a large backlog never stalls claims: call again
    /// while it returns `limit`. Jobs that are `available` or `running` are
    /// never deleted, whatever their age.
    pub async fn delete_finished_jobs(&self, older_than_ms: i64, limit: u32) -> Result<u64, StoreError> {
        if limit == 0 {
            return Ok(0);
        }
        let mut tx = self.begin_write().await?;
        let dialect = tx.dialect();
        let n = tx
            .execute(
                // Rows another node's cleaner is deleting are skipped, not waited for.
                sql_owned(format!(
                    "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs \
                     WHERE state IN ('completed', 'failed', 'cancelled') AND finalized_at < $1 \
                     ORDER BY finalized_at LIMIT $2{})",
                    dialect.skip_locked()
                ))
                .bind(older_than_ms)
                .bind(i64::from(limit)),
            )
            .await?;
        tx.commit().await?;
        Ok(n)
    }

    /// One cleaner pass: deletes finished jobs older than `retention_ms`
    /// (by the store's clock), `batch` at a time, at most `max_batches`
    /// batches. Returns how many went.
    pub async fn clean_finished_jobs(
        &self,
        retention_ms: u64,
        batch: u32,
        max_batches: u32,
    ) -> Result<u64, StoreError> {
        let cutoff = self
            .now_ms()
            .saturating_sub(i64::try_from(retention_ms).unwrap_or(i64::MAX));
        let mut deleted = 0;
        for _ in 0..max_batches {
            let n = self.delete_finished_jobs(cutoff, batch).await?;
            deleted += n;
            if n < u64::from(batch) {
                break;
            }
        }
        Ok(deleted)
    }
}

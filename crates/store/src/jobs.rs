//! Durable jobs on the ledger's database: claim, lease, heartbeat, finish,
//! retry, release and rescue. The engine drives these; the guarantees live
//! here, in single statements and transactions:
//!
//! - **claim** picks available jobs with `FOR UPDATE SKIP LOCKED` on
//!   PostgreSQL (inside `BEGIN IMMEDIATE` on SQLite), gives them a fresh
//!   lease token, and moves their runs `queued → running` in the same
//!   transaction;
//! - every **heartbeat and finish is fenced** by `(job id, lease token,
//!   state = running)`: a worker whose lease was rescued writes nothing;
//! - a unit job's **finish commits with its unit** (and its artifact), so a
//!   unit is recorded if and only if its job completed;
//! - **rescue** is one state-guarded `UPDATE`: a job that completed after the
//!   rescuer looked is not touched (the River #1302 lesson); a unit job
//!   rescued with no attempts left finishes its unit as failed in the same
//!   transaction — rescue, cancel, reconcile and normal finish share one
//!   "unit finished" path.

use crate::db::{Tx, sql, sql_built, sql_owned};
use crate::ledger::record_units_in;
use crate::runs::{RecordSummary, UnitRecord};
use crate::{Store, StoreError, new_id};
use opsledger_core::{Failure, UnitOutcome};
use std::collections::BTreeMap;

/// Proof that a worker holds a job's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub job_id: String,
    pub lease_token: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// Executes the run's handler.
    Run,
    /// Executes one unit of a fan-out.
    Unit,
}

/// A job this worker now holds.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub fence: Fence,
    pub run_id: String,
    pub kind: JobKind,
    pub unit_key: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub max_attempts: u32,
    /// A unit job's run as the claim read it, in the claim's transaction:
    /// one read per claim instead of one per unit job (`None` for run jobs,
    /// whose executor reads the whole run).
    pub head: Option<crate::runs::RunHead>,
}

impl ClaimedJob {
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }
}

/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// Lease extended; the run is still running.
    Alive,
    /// The job is no longer ours (rescued, or finished elsewhere): stop.
    LeaseLost,
    /// The run was closed (cancelled, reconciled, force-closed): stop.
    RunClosed,
}

/// How a unit job ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEnd {
    Completed,
    Failed,
}

/// What a rescue pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RescueReport {
    /// Expired leases taken back, whatever became of them.
    pub rescued: u64,
    /// Jobs made available again for another attempt.
    pub retried: u64,
    /// Unit jobs out of attempts, whose units were finished as failed, per run.
    pub failed_units: BTreeMap<String, u64>,
    /// Run jobs out of attempts (their runs go to reconciliation).
    pub failed_run_jobs: u64,
}

/// Job states of one run, for tests and diagnostics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobTally {
    pub available: u64,
    pub running: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
}

/// Inside an open transaction: proceed only while `fence` still holds its
/// job's lease. The row stays share-locked until commit on PostgreSQL (SQLite
/// holds the write lock already), so a rescue cannot slip in between this
/// check and the commit.
pub(crate) async fn check_fence(tx: &mut Tx, fence: &Fence, run_id: &str) -> Result<(), StoreError> {
    let held: Option<(String,)> = tx
        .fetch_optional(
            sql_owned(format!(
                "SELECT id FROM jobs WHERE id = $1 AND lease_token = $2 AND state = 'running' AND run_id = $3{}",
                tx.dialect().for_share()
            ))
            .bind(&fence.job_id)
            .bind(&fence.lease_token)
            .bind(run_id),
        )
        .await?;
    match held {
        Some(_) => Ok(()),
        None => Err(StoreError::LeaseLost {
            job_id: fence.job_id.clone(),
        }),
    }
}

/// Inside an open transaction: enqueue a job (`kind` run or unit) unless the
/// same `(run_id, kind, unit_key)` exists. Returns the rows inserted.
pub(crate) async fn insert_job(
    tx: &mut Tx,
    run_id: &str,
    kind: &str,
    unit_key: &str,
    max_attempts: u32,
) -> Result<u64, StoreError> {
    Ok(tx
        .execute(
            sql("INSERT INTO jobs (id, run_id, kind, unit_key, state, attempt, max_attempts, run_after, created_at) \
                 VALUES ($1, $2, $3, $4, 'available', 0, $5, $6, $6) ON CONFLICT (run_id, kind, unit_key) DO NOTHING")
            .bind(new_id())
            .bind(run_id)
            .bind(kind)
            .bind(unit_key)
            .bind(i64::from(max_attempts))
            .bind(tx.now()),
        )
        .await?)
}

/// Inside an open transaction: end a leased unit job as completed or failed
/// and record its unit — the one "unit finished" step. Fails with
/// [`StoreError::LeaseLost`] when the fence no longer holds (nothing is
/// written: the caller drops the transaction).
pub(crate) async fn finish_unit_job_in(
    tx: &mut Tx,
    fence: &Fence,
    run_id: &str,
    unit: &UnitRecord,
    end: JobEnd,
) -> Result<RecordSummary, StoreError> {
    let state = match end {
        JobEnd::Completed => "completed",
        JobEnd::Failed => "failed",
    };
    let ended = tx
        .execute(
            sql(
                "UPDATE jobs SET state = $3, lease_token = NULL, lease_expires_at = NULL, finalized_at = $4 \
                 WHERE id = $1 AND lease_token = $2 AND state = 'running' AND run_id = $5 AND kind = 'unit' \
                 AND unit_key = $6",
            )
            .bind(&fence.job_id)
            .bind(&fence.lease_token)
            .bind(state)
            .bind(tx.now())
            .bind(run_id)
            .bind(unit.key.as_str()),
        )
        .await?;
    if ended != 1 {
        return Err(StoreError::LeaseLost {
            job_id: fence.job_id.clone(),
        });
    }
    record_units_in(tx, run_id, std::slice::from_ref(unit)).await
}

/// The rescue pass inside `tx` (see [`Store::rescue_expired_jobs`]).
pub(crate) async fn rescue_in(tx: &mut Tx, limit: u32) -> Result<RescueReport, StoreError> {
    let now = tx.now();
    let rows: Vec<(String, String, String, String)> = tx
        .fetch_all(
            sql_owned(format!(
                "UPDATE jobs SET \
                   state = CASE WHEN attempt < max_attempts THEN 'available' ELSE 'failed' END, \
                   finalized_at = CASE WHEN attempt < max_attempts THEN NULL ELSE $1 END, \
                   run_after = $1, lease_token = NULL, lease_expires_at = NULL, worker_id = NULL, \
                   last_error = 'lease expired without a heartbeat' \
                 WHERE id IN (SELECT id FROM jobs WHERE state = 'running' AND lease_expires_at < $1 \
                              ORDER BY lease_expires_at LIMIT $2{}) \
                   AND state = 'running' AND lease_expires_at < $1 \
                 RETURNING run_id, kind, unit_key, state",
                tx.dialect().skip_locked()
            ))
            .bind(now)
            .bind(i64::from(limit)),
        )
        .await?;
    let mut report = RescueReport {
        rescued: rows.len() as u64,
        ..RescueReport::default()
    };
    let mut failed_units: BTreeMap<String, Vec<UnitRecord>> = BTreeMap::new();
    for (run_id, kind, unit_key, state) in rows {
        match (kind.as_str(), state.as_str()) {
            (_, "available") => report.retried += 1,
            ("unit", _) => failed_units.entry(run_id).or_default().push(UnitRecord {
                failure: Some(
                    Failure::new(
                        "unit_lease_expired",
                        "the worker stopped heartbeating and no attempts remain",
                    )
                    .for_unit(unit_key.clone()),
                ),
                ..UnitRecord::new(unit_key, UnitOutcome::Failed)
            }),
            _ => report.failed_run_jobs += 1,
        }
    }
    for (run_id, units) in failed_units {
        // Locked, so the run cannot close between this read and the
        // recording (which would refuse, and roll back the whole batch).
        let status: Option<(String,)> = tx
            .fetch_optional(
                sql_owned(format!(
                    "SELECT status FROM operation_runs WHERE id = $1{}",
                    tx.dialect().for_update()
                ))
                .bind(&run_id),
            )
            .await?;
        // A closed run's units are no longer counted.
        if status.is_some_and(|(s,)| s == "running") {
            let summary = record_units_in(tx, &run_id, &units).await?;
            report.failed_units.insert(run_id, summary.recorded);
        }
    }
    Ok(report)
}

impl Store {
    /// Extends the lease and records a heartbeat on the job and its run
    /// (one job of [`Store::heartbeat_jobs`]).
    pub async fn heartbeat_job(
        &self,
        fence: &Fence,
        run_id: &str,
        lease_ms: u64,
    ) -> Result<Heartbeat, StoreError> {
        let job = crate::job_batches::HeldJob {
            fence: fence.clone(),
            run_id: run_id.to_owned(),
        };
        let beats = self.heartbeat_jobs(std::slice::from_ref(&job), lease_ms).await?;
        Ok(beats.into_iter().next().unwrap_or(Heartbeat::LeaseLost))
    }

    /// Whether `fence` still holds its job (a read; no lock).
    pub async fn job_is_held(&self, fence: &Fence) -> Result<bool, StoreError> {
        let row: Option<(String,)> = self
            .pool
            .fetch_optional(
                sql("SELECT id FROM jobs WHERE id = $1 AND lease_token = $2 AND state = 'running'")
                    .bind(&fence.job_id)
                    .bind(&fence.lease_token),
            )
            .await?;
        Ok(row.is_some())
    }

    /// Marks a run job completed. `false` when the lease was lost.
    pub async fn complete_job(&self, fence: &Fence) -> Result<bool, StoreError> {
        self.end_job(fence, "completed", None).await
    }

    /// Ends a job as `state` (`completed`, `failed` or `cancelled`), fenced.
    async fn end_job(&self, fence: &Fence, state: &str, error: Option<&str>) -> Result<bool, StoreError> {
        let n = self
            .pool
            .execute(
                sql("UPDATE jobs SET state = $3, lease_token = NULL, lease_expires_at = NULL, finalized_at = $4, \
                     last_error = COALESCE($5, last_error) WHERE id = $1 AND lease_token = $2 AND state = 'running'")
                .bind(&fence.job_id)
                .bind(&fence.lease_token)
                .bind(state)
                .bind(self.now_ms())
                .bind(error),
            )
            .await?;
        Ok(n == 1)
    }

    /// Marks a job cancelled (its run closed while it worked). `false` when the lease was lost.
    pub async fn cancel_job(&self, fence: &Fence) -> Result<bool, StoreError> {
        self.end_job(fence, "cancelled", None).await
    }

    /// Marks a run job failed for good. `false` when the lease was lost.
    pub async fn fail_job(&self, fence: &Fence, error: &str) -> Result<bool, StoreError> {
        self.end_job(fence, "failed", Some(error)).await
    }

    /// Schedules another attempt after `delay_ms`. `false` when the lease was lost.
    /// The caller checks [`ClaimedJob::is_last_attempt`] first.
    pub async fn retry_job(&self, fence: &Fence, error: &str, delay_ms: u64) -> Result<bool, StoreError> {
        let n = self
            .pool
            .execute(
                sql("UPDATE jobs SET state = 'available', lease_token = NULL, lease_expires_at = NULL, worker_id = NULL, \
                     run_after = $3, last_error = $4 \
                     WHERE id = $1 AND lease_token = $2 AND state = 'running' AND attempt < max_attempts")
                .bind(&fence.job_id)
                .bind(&fence.lease_token)
                .bind(self.now_ms().saturating_add(i64::try_from(delay_ms).unwrap_or(i64::MAX)))
                .bind(error),
            )
            .await?;
        Ok(n == 1)
    }

    /// Gives a job back on graceful shutdown without spending an attempt.
    pub async fn release_job(&self, fence: &Fence) -> Result<bool, StoreError> {
        self.release_job_after(fence, 0).await
    }

    /// Gives a job back without spending an attempt, claimable again after
    /// `delay_ms` (e.g. for a node that cannot read the job's run: another
    /// node, or this one later, may).
    pub async fn release_job_after(&self, fence: &Fence, delay_ms: u64) -> Result<bool, StoreError> {
        let n = self
            .pool
            .execute(
                sql(
                    "UPDATE jobs SET state = 'available', attempt = attempt - 1, lease_token = NULL, \
                     lease_expires_at = NULL, worker_id = NULL, run_after = $3 \
                     WHERE id = $1 AND lease_token = $2 AND state = 'running'",
                )
                .bind(&fence.job_id)
                .bind(&fence.lease_token)
                .bind(self.now_ms() + delay_ms as i64),
            )
            .await?;
        Ok(n == 1)
    }

    /// Finishes a unit job and records its unit in one transaction. Refused
    /// with [`StoreError::LeaseLost`] when the fence no longer holds; when the
    /// run is already closed the job is cancelled and
    /// [`StoreError::RunNotRunning`] returned.
    pub async fn finish_unit_job(
        &self,
        fence: &Fence,
        run_id: &str,
        unit: UnitRecord,
        end: JobEnd,
    ) -> Result<RecordSummary, StoreError> {
        let result = async {
            let mut tx = self.begin_write().await?;
            let summary = finish_unit_job_in(&mut tx, fence, run_id, &unit, end).await?;
            tx.commit().await?;
            Ok(summary)
        }
        .await;
        if let Err(StoreError::RunNotRunning { .. }) = &result {
            self.cancel_job(fence).await?;
        }
        result
    }

    /// Plans a fan-out: sets the run's `total` to the number of distinct
    /// keys (once) and enqueues one unit job per key, in one transaction.
    /// A run already planned keeps its first plan: nothing is enqueued again
    /// and its `total` is returned.
    #[cfg(feature = "test-support")]
    pub async fn enqueue_units(
        &self,
        run_id: &str,
        unit_keys: &[String],
        max_attempts: u32,
    ) -> Result<u64, StoreError> {
        self.plan_units(None, run_id, &[unit_keys], max_attempts).await
    }

    /// [`Store::enqueue_units`] for the run job holding `fence` (refused with
    /// [`StoreError::LeaseLost`] once it no longer does).
    pub(crate) async fn enqueue_units_fenced(
        &self,
        fence: &Fence,
        run_id: &str,
        waves: &[&[String]],
        max_attempts: u32,
    ) -> Result<u64, StoreError> {
        self.plan_units(Some(fence), run_id, waves, max_attempts).await
    }

    /// Plans a fan-out in `waves` (wave k claimable once every unit of the
    /// waves before it is recorded): `total` = distinct keys, one job each.
    async fn plan_units(
        &self,
        fence: Option<&Fence>,
        run_id: &str,
        waves: &[&[String]],
        max_attempts: u32,
    ) -> Result<u64, StoreError> {
        let mut keys: Vec<(&str, i64)> = Vec::new();
        for (wave, unit_keys) in waves.iter().enumerate() {
            keys.extend(unit_keys.iter().map(|k| (k.as_str(), wave as i64)));
        }
        keys.sort_unstable();
        keys.dedup();
        if let Some(w) = keys.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(StoreError::UnitInTwoWaves {
                key: w[0].0.chars().take(200).collect(),
                first: w[0].1 as u64,
                second: w[1].1 as u64,
            });
        }
        let total = keys.len() as i64;
        let now = self.now_ms();
        let mut tx = self.begin_write().await?;
        if let Some(fence) = fence {
            check_fence(&mut tx, fence, run_id).await?;
        }
        let n = tx
            .execute(
                sql("UPDATE operation_runs SET total = $2, processed = 0, succeeded = 0, failed = 0, skipped = 0 \
                     WHERE id = $1 AND status = 'running' AND total IS NULL")
                .bind(run_id)
                .bind(total),
            )
            .await?;
        if n == 0 {
            let row: Option<(String, Option<i64>)> = tx
                .fetch_optional(sql("SELECT status, total FROM operation_runs WHERE id = $1").bind(run_id))
                .await?;
            return match row {
                None => Err(StoreError::RunNotFound(run_id.to_owned())),
                // Already planned: its jobs were enqueued in the transaction
                // that set `total`. The first plan stands, even if a retried
                // parent now sees another unit set.
                Some((_, Some(t))) => {
                    if t != total {
                        tracing::warn!(run = %run_id, planned = t, requested = total, "a fan-out was planned again with another unit set; keeping the first plan");
                    }
                    Ok(t as u64)
                }
                Some((status, None)) => Err(StoreError::RunNotRunning {
                    id: run_id.to_owned(),
                    status: status.parse().map_err(|e| StoreError::Corrupt(format!("{e}")))?,
                }),
            };
        }
        for chunk in keys.chunks(1000) {
            let mut stmt = sql_built(
                tx.dialect(),
                "INSERT INTO jobs (id, run_id, kind, unit_key, wave, state, attempt, max_attempts, run_after, created_at) VALUES ",
            );
            for (i, (k, wave)) in chunk.iter().enumerate() {
                stmt.push(if i == 0 { "(" } else { ", (" });
                stmt.push_bind(new_id())
                    .push(", ")
                    .push_bind(run_id)
                    .push(", 'unit', ")
                    .push_bind(*k)
                    .push(", ")
                    .push_bind(*wave)
                    .push(", 'available', 0, ")
                    .push_bind(i64::from(max_attempts))
                    .push(", ")
                    .push_bind(now)
                    .push(", ")
                    .push_bind(now)
                    .push(")");
            }
            stmt.push(" ON CONFLICT (run_id, kind, unit_key) DO NOTHING");
            tx.execute(stmt).await?;
        }
        tx.commit().await?;
        Ok(total as u64)
    }

    /// Rescues jobs whose lease expired: back to `available` while attempts
    /// remain, else `failed` — and a failed unit job finishes its unit as
    /// failed in the same transaction. Idempotent; safe on every node at once.
    pub async fn rescue_expired_jobs(&self, limit: u32) -> Result<RescueReport, StoreError> {
        let mut tx = self.begin_write().await?;
        let report = rescue_in(&mut tx, limit).await?;
        tx.commit().await?;
        Ok(report)
    }

    /// Counts a run's jobs by state.
    pub async fn job_tally(&self, run_id: &str) -> Result<JobTally, StoreError> {
        let rows: Vec<(String, i64)> = self
            .pool
            .fetch_all(sql("SELECT state, COUNT(*) FROM jobs WHERE run_id = $1 GROUP BY state").bind(run_id))
            .await?;
        let mut t = JobTally::default();
        for (state, n) in rows {
            let n = n as u64;
            match state.as_str() {
                "available" => t.available = n,
                "running" => t.running = n,
                "completed" => t.completed = n,
                "failed" => t.failed = n,
                _ => t.cancelled = n,
            }
        }
        Ok(t)
    }

    /// How many jobs of a run each worker process ended (diagnostics, tests).
    pub async fn job_workers(&self, run_id: &str) -> Result<BTreeMap<String, u64>, StoreError> {
        let rows: Vec<(Option<String>, i64)> = self
            .pool
            .fetch_all(
                sql("SELECT worker_id, COUNT(*) FROM jobs WHERE run_id = $1 GROUP BY worker_id").bind(run_id),
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|(w, n)| (w.unwrap_or_default(), n as u64))
            .collect())
    }
}

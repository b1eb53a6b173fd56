//! The one writer path for operation runs (OPERATIONS.md §2, §3, §5), and the
//! reads that go with it.
//!
//! Guarantees, each backed by the schema as well as by this code:
//! - a unit is counted exactly once: its `(run_id, unit_key)` row in the unit
//!   ledger and the counter increment commit in one transaction, and only a
//!   newly inserted row increments (`ON CONFLICT DO NOTHING … RETURNING`);
//! - `processed <= total` (guarded update here, CHECK constraint in storage);
//! - `total` is set once;
//! - completion is a compare-and-set on status: a second completion is
//!   reported as [`CompleteResult::AlreadyCompleted`], never applied;
//! - at most one active run per type and scope (unique `active_key`): a second
//!   start returns the active run ([`CreateResult::AlreadyActive`]).

use crate::backend::{WritePool, for_update, skip_locked};
use crate::row::{RUN_COLUMNS, RUN_HEAD_COLUMNS, failure_from_row, run_from_row, run_head_from_row};
use crate::{Store, StoreError, new_id, now_ms, on_pool};
use opsledger_core::outcome::derive_bulk_outcome;
use opsledger_core::{Failure, Outcome, Run, RunStatus, RunType, Scope, UnitOutcome};
use serde_json::{Map, Value};
use sqlx::{AssertSqlSafe, QueryBuilder, Row};
use std::collections::BTreeMap;

/// Failures returned with a run; the `failed` count says how many there are in all.
pub const FAILURES_PER_RUN: i64 = 100;

/// Rows per multi-row insert into the unit ledger (4 bind parameters each).
pub(crate) const UNIT_INSERT_CHUNK: usize = 1000;

/// What to start.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub workspace_id: String,
    pub tenant_id: Option<String>,
    pub parent_id: Option<String>,
    pub run_type: RunType,
    pub initiator: String,
    /// Initial context, typically `{"params": {…}}`.
    pub context: Value,
}

impl NewRun {
    /// A top-level run on one tenant, started by `initiator` with `params`
    /// (stored as `context.params`).
    pub fn on_tenant(
        workspace_id: impl Into<String>,
        tenant_id: impl Into<String>,
        run_type: RunType,
        initiator: impl Into<String>,
        params: Value,
    ) -> NewRun {
        NewRun {
            workspace_id: workspace_id.into(),
            tenant_id: Some(tenant_id.into()),
            parent_id: None,
            run_type,
            initiator: initiator.into(),
            context: serde_json::json!({ "params": params }),
        }
    }
}

/// Result of a start: a new run, or the run already active on that scope.
#[derive(Debug, Clone)]
pub enum CreateResult {
    Created(Run),
    AlreadyActive(Run),
}

impl CreateResult {
    pub fn run(&self) -> &Run {
        match self {
            CreateResult::Created(r) | CreateResult::AlreadyActive(r) => r,
        }
    }
    pub fn into_run(self) -> Run {
        match self {
            CreateResult::Created(r) | CreateResult::AlreadyActive(r) => r,
        }
    }
}

/// Sets `context[path[0]][path[1]]… = value`, creating objects on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextPatch {
    pub path: Vec<String>,
    pub value: Value,
}

impl ContextPatch {
    pub fn new<S: Into<String>>(path: impl IntoIterator<Item = S>, value: Value) -> ContextPatch {
        ContextPatch {
            path: path.into_iter().map(Into::into).collect(),
            value,
        }
    }

    /// Applies the patch to a context value.
    pub fn apply(&self, context: &mut Value) {
        let Some((last, parents)) = self.path.split_last() else {
            *context = self.value.clone();
            return;
        };
        let mut node = context;
        for key in parents {
            node = object_mut(node)
                .entry(key.clone())
                .or_insert_with(|| Value::Object(Map::new()));
        }
        object_mut(node).insert(last.clone(), self.value.clone());
    }
}

fn object_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    v.as_object_mut().expect("just made an object")
}

/// One unit reaching its terminal per-unit outcome.
#[derive(Debug, Clone)]
pub struct UnitRecord {
    pub key: String,
    pub outcome: UnitOutcome,
    pub failure: Option<Failure>,
    /// Proof written with the unit, in the same transaction (e.g. coverage of
    /// one policy type). Applied only if the unit is newly recorded.
    pub context_patch: Option<ContextPatch>,
}

impl UnitRecord {
    pub fn new(key: impl Into<String>, outcome: UnitOutcome) -> UnitRecord {
        UnitRecord {
            key: key.into(),
            outcome,
            failure: None,
            context_patch: None,
        }
    }
}

/// How many of the submitted units were new, and how many were already recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordSummary {
    pub recorded: u64,
    pub duplicates: u64,
    /// This call brought `processed` to `total` (the run may now complete).
    pub all_processed: bool,
}

/// A terminal outcome to apply.
#[derive(Debug, Clone)]
pub struct Completion {
    pub outcome: Outcome,
    pub failure: Option<Failure>,
    pub context_patches: Vec<ContextPatch>,
}

impl Completion {
    pub fn new(outcome: Outcome) -> Completion {
        assert!(outcome.is_terminal(), "a completion needs a terminal outcome");
        Completion {
            outcome,
            failure: None,
            context_patches: Vec::new(),
        }
    }
    pub fn with_failure(mut self, failure: Failure) -> Completion {
        self.failure = Some(failure);
        self
    }
    pub fn with_patch(mut self, patch: ContextPatch) -> Completion {
        self.context_patches.push(patch);
        self
    }
}

/// Result of a completion attempt.
#[derive(Debug, Clone)]
pub enum CompleteResult {
    /// This call completed the run.
    Completed(Run),
    /// The run was already completed; nothing was changed.
    AlreadyCompleted(Run),
    /// A conditional completion found the run not ready (units remain).
    NotReady(Run),
}

impl CompleteResult {
    pub fn run(&self) -> &Run {
        match self {
            CompleteResult::Completed(r)
            | CompleteResult::AlreadyCompleted(r)
            | CompleteResult::NotReady(r) => r,
        }
    }
}

/// A run without its context, phases and failures: what hot paths (one unit
/// job of a fan-out) need, without reading a context that may hold large
/// parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct RunHead {
    pub id: String,
    pub workspace_id: String,
    pub tenant_id: Option<String>,
    pub run_type: RunType,
    pub status: RunStatus,
    pub outcome: Outcome,
    pub summary_counts: opsledger_core::SummaryCounts,
}

impl RunHead {
    pub fn is_completed(&self) -> bool {
        self.status == RunStatus::Completed
    }
}

/// Filters of the operations hub; all optional.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub tenant_id: Option<String>,
    pub run_type: Option<RunType>,
    pub status: Option<RunStatus>,
    pub outcome: Option<Outcome>,
    /// Only runs created at or after this time (ms).
    pub created_after: Option<i64>,
    /// Only runs created before this time (ms).
    pub created_before: Option<i64>,
    /// Return runs older than this id (the previous page's `next_cursor`).
    pub cursor: Option<String>,
    pub limit: u32,
}

fn active_key(t: RunType, workspace_id: &str, tenant_id: Option<&str>) -> String {
    format!("{}|{}|{}", t.as_str(), workspace_id, tenant_id.unwrap_or("*"))
}

impl Store {
    /// Starts a run in `queued`, or returns the run already active for the
    /// same type and scope (deduplicated start, OPERATIONS.md §2).
    pub async fn create_run(&self, new: NewRun) -> Result<CreateResult, StoreError> {
        let scope_ok = match new.run_type.scope() {
            Scope::Tenant => new.tenant_id.is_some(),
            Scope::Workspace => new.tenant_id.is_none(),
        };
        if !scope_ok {
            let expected = match new.run_type.scope() {
                Scope::Tenant => "tenant",
                Scope::Workspace => "workspace",
            };
            return Err(StoreError::ScopeMismatch {
                run_type: new.run_type,
                expected,
            });
        }
        // Child runs of a composite are scoped by their parent, not deduplicated.
        let key = new
            .parent_id
            .is_none()
            .then(|| active_key(new.run_type, &new.workspace_id, new.tenant_id.as_deref()));
        let context = serde_json::to_string(&new.context).expect("json");
        // The active run may complete between a refused insert and the read
        // of it; then the insert is simply tried again.
        for _ in 0..5 {
            let id = new_id();
            let inserted = on_pool!(self, pool => {
                // The run and the job that will execute it commit together:
                // a queued run always has its job (queue truth).
                let mut tx = pool.begin_write().await?;
                let n = sqlx::query(
                    "INSERT INTO operation_runs (id, workspace_id, tenant_id, parent_id, type, status, outcome, \
                     active_key, context, initiator, created_at) \
                     VALUES ($1, $2, $3, $4, $5, 'queued', 'pending', $6, $7, $8, $9) \
                     ON CONFLICT (active_key) DO NOTHING",
                )
                .bind(&id)
                .bind(&new.workspace_id)
                .bind(&new.tenant_id)
                .bind(&new.parent_id)
                .bind(new.run_type.as_str())
                .bind(&key)
                .bind(&context)
                .bind(&new.initiator)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n == 1 {
                    insert_job!(&mut tx, &id, "run", "", new.run_type.max_attempts());
                }
                tx.commit().await?;
                n
            });
            if inserted == 1 {
                return Ok(CreateResult::Created(self.require_run(&id).await?));
            }
            let Some(key) = &key else { continue };
            let active = on_pool!(self, pool => {
                sqlx::query(AssertSqlSafe(format!("SELECT {RUN_COLUMNS} FROM operation_runs WHERE active_key = $1")))
                    .bind(key)
                    .fetch_optional(pool)
                    .await?
                    .map(|r| run_from_row(&r))
                    .transpose()?
            });
            if let Some(mut run) = active {
                run.failures = self.failures_of(&run.id).await?;
                return Ok(CreateResult::AlreadyActive(run));
            }
        }
        Err(StoreError::Database(sqlx::Error::Protocol(
            "start kept conflicting with a vanishing active run".into(),
        )))
    }

    /// Moves a queued run to running (compare-and-set). `None` when another
    /// worker claimed it first or it is no longer queued.
    pub async fn claim_run(&self, id: &str) -> Result<Option<Run>, StoreError> {
        let now = now_ms();
        let run = on_pool!(self, pool => {
            sqlx::query(AssertSqlSafe(format!(
                "UPDATE operation_runs SET status = 'running', started_at = $2, heartbeat_at = $2 \
                 WHERE id = $1 AND status = 'queued' RETURNING {RUN_COLUMNS}"
            )))
            .bind(id)
            .bind(now)
            .fetch_optional(pool)
            .await?
            .map(|r| run_from_row(&r))
            .transpose()?
        });
        Ok(run)
    }

    /// Records that the run's worker is alive. `false` when the run is not running.
    pub async fn heartbeat(&self, id: &str) -> Result<bool, StoreError> {
        let n = on_pool!(self, pool => {
            sqlx::query("UPDATE operation_runs SET heartbeat_at = $2 WHERE id = $1 AND status = 'running'")
                .bind(id)
                .bind(now_ms())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }

    /// Sets `total` once (OPERATIONS.md §3) and starts `processed` and the unit
    /// outcome counters at 0. Setting the same total again is a no-op; a
    /// different one is [`StoreError::TotalAlreadySet`].
    pub async fn init_total(&self, id: &str, total: u64) -> Result<(), StoreError> {
        self.init_total_fenced(None, id, total).await
    }

    /// [`Store::init_total`] by a job's worker: refused with
    /// [`StoreError::LeaseLost`] unless `fence` still holds the job's lease
    /// (a stalled attempt cannot set a plan over its successor's).
    pub async fn init_total_fenced(
        &self,
        fence: Option<&crate::jobs::Fence>,
        id: &str,
        total: u64,
    ) -> Result<(), StoreError> {
        let total_i =
            i64::try_from(total).map_err(|_| StoreError::Corrupt(format!("total {total} too large")))?;
        let n = on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            check_fence!(&mut tx, pool, fence);
            let n = sqlx::query(
                "UPDATE operation_runs SET total = $2, processed = 0, succeeded = 0, failed = 0, skipped = 0, \
                 heartbeat_at = CASE WHEN status = 'running' THEN $3 ELSE heartbeat_at END \
                 WHERE id = $1 AND status <> 'completed' AND total IS NULL",
            )
            .bind(id)
            .bind(total_i)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            n
        });
        if n == 1 {
            return Ok(());
        }
        let run = self.require_run(id).await?;
        match run.summary_counts.total {
            Some(existing) if existing == total => Ok(()),
            Some(existing) => Err(StoreError::TotalAlreadySet {
                id: id.to_owned(),
                existing,
                requested: total,
            }),
            None => Err(StoreError::RunNotRunning {
                id: id.to_owned(),
                status: run.status,
            }),
        }
    }

    /// Records units reaching their terminal outcome: each newly seen unit key
    /// increments `processed` and its outcome counter exactly once, with its
    /// failure and context patch, all in one transaction. Units already in the
    /// ledger (retries, replays, duplicate deliveries) change nothing.
    pub async fn record_units(
        &self,
        run_id: &str,
        units: &[UnitRecord],
    ) -> Result<RecordSummary, StoreError> {
        self.record_units_fenced(None, run_id, units).await
    }

    /// [`Store::record_units`] by a job's worker: refused with
    /// [`StoreError::LeaseLost`] unless `fence` still holds the job's lease.
    pub async fn record_units_fenced(
        &self,
        fence: Option<&crate::jobs::Fence>,
        run_id: &str,
        units: &[UnitRecord],
    ) -> Result<RecordSummary, StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            check_fence!(&mut tx, pool, fence);
            let summary = record_units_tx!(&mut tx, pool, run_id, units);
            tx.commit().await?;
            Ok(summary)
        })
    }

    /// [`Store::record_units`] for one unit; `true` when it was newly recorded.
    pub async fn record_unit(&self, run_id: &str, unit: UnitRecord) -> Result<bool, StoreError> {
        Ok(self
            .record_units(run_id, std::slice::from_ref(&unit))
            .await?
            .recorded
            == 1)
    }

    /// Completes the run with `completion` unless it is already completed.
    pub async fn complete_run(&self, id: &str, completion: Completion) -> Result<CompleteResult, StoreError> {
        self.complete_when(id, |_| Some(completion)).await
    }

    /// Completes a bulk run once every unit is processed, deriving its outcome
    /// from its unit counters (OPERATIONS.md §5). The only completer of bulk
    /// parents; safe to call after every unit and from several workers.
    pub async fn maybe_complete_bulk_run(&self, id: &str) -> Result<CompleteResult, StoreError> {
        self.complete_when(id, |run| {
            derive_bulk_outcome(&run.summary_counts).map(Completion::new)
        })
        .await
    }

    /// The single closing write: locks the run, asks `decide` for a
    /// completion given its current state, and applies it only if the run is
    /// not completed (compare-and-set). Every completion, cancellation,
    /// reconciliation and force-close goes through here.
    pub async fn complete_when<F>(&self, id: &str, decide: F) -> Result<CompleteResult, StoreError>
    where
        F: FnOnce(&Run) -> Option<Completion>,
    {
        self.close_run(id, CloseGuard::None, decide).await
    }

    /// Completes the run only while `fence` still holds its job's lease: a
    /// handler whose lease was rescued cannot close a run another worker now
    /// holds ([`StoreError::LeaseLost`]).
    pub async fn complete_run_fenced(
        &self,
        fence: &crate::jobs::Fence,
        id: &str,
        completion: Completion,
    ) -> Result<CompleteResult, StoreError> {
        self.close_run(id, CloseGuard::Fence(fence), |_| Some(completion))
            .await
    }

    /// Completes the run unless a job can still move it (a live lease, an
    /// expired one with attempts left, or one waiting to be claimed): for
    /// closing a run whose own attempt has ended, without closing it under
    /// work that is still going on.
    pub async fn complete_run_if_idle(
        &self,
        id: &str,
        completion: Completion,
    ) -> Result<CompleteResult, StoreError> {
        self.close_run(id, CloseGuard::NoLiveJobs, |_| Some(completion))
            .await
    }

    /// The closing write with a guard checked inside its transaction.
    pub(crate) async fn close_run<F>(
        &self,
        id: &str,
        guard: CloseGuard<'_>,
        decide: F,
    ) -> Result<CompleteResult, StoreError>
    where
        F: FnOnce(&Run) -> Option<Completion>,
    {
        let fence = match guard {
            CloseGuard::Fence(f) => Some(f),
            _ => None,
        };
        let result = on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            // The job row before the run row: the order every job writer uses.
            check_fence!(&mut tx, pool, fence);
            let row = sqlx::query(AssertSqlSafe(format!(
                "SELECT {RUN_COLUMNS} FROM operation_runs WHERE id = $1{}", for_update(pool)
            )))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else { return Err(StoreError::RunNotFound(id.to_owned())) };
            let run = run_from_row(&row)?;
            let busy = if matches!(guard, CloseGuard::NoLiveJobs) && run.status == RunStatus::Running {
                // A job that holds a live lease, will be retried, or waits to
                // be claimed can still move this run: it is not stale.
                let live: Option<(String,)> = sqlx::query_as(AssertSqlSafe(format!(
                    "SELECT j.id FROM jobs j WHERE j.run_id = $1 AND {} LIMIT 1",
                    crate::stale::job_can_move_run("j", "$2")
                )))
                .bind(id)
                .bind(now_ms())
                .fetch_optional(&mut *tx)
                .await?;
                live.is_some()
            } else {
                false
            };
            if run.is_completed() {
                tx.commit().await?;
                ClosingStep::AlreadyCompleted
            } else if busy {
                tx.commit().await?;
                ClosingStep::NotReady
            } else if let Some(completion) = decide(&run) {
                let mut context = run.context.clone();
                for patch in &completion.context_patches {
                    patch.apply(&mut context);
                }
                let now = now_ms();
                let n = sqlx::query(
                    "UPDATE operation_runs SET status = 'completed', outcome = $2, completed_at = $3, \
                     active_key = NULL, context = $4 WHERE id = $1 AND status <> 'completed'",
                )
                .bind(id)
                .bind(completion.outcome.as_str())
                .bind(now)
                .bind(serde_json::to_string(&context).expect("json"))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n != 1 {
                    return Err(StoreError::Corrupt(format!("run {id} changed under its row lock")));
                }
                if let Some(f) = &completion.failure {
                    insert_failure!(&mut tx, id, f, now);
                }
                // Work not started yet will never be needed; running jobs are
                // fenced out by the run's status.
                // Jobs a claimer is taking right now are skipped, not waited
                // for (a claim locks its job, then the run: waiting here would
                // deadlock); the runner cancels them when it sees the run closed.
                sqlx::query(AssertSqlSafe(format!(
                    "UPDATE jobs SET state = 'cancelled', finalized_at = $2 \
                     WHERE id IN (SELECT id FROM jobs WHERE run_id = $1 AND state = 'available'{})",
                    skip_locked(pool)
                )))
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                ClosingStep::Completed
            } else {
                tx.commit().await?;
                ClosingStep::NotReady
            }
        });
        let run = self.require_run(id).await?;
        Ok(match result {
            ClosingStep::Completed => CompleteResult::Completed(run),
            ClosingStep::AlreadyCompleted => CompleteResult::AlreadyCompleted(run),
            ClosingStep::NotReady => CompleteResult::NotReady(run),
        })
    }

    /// Applies context patches to a run that is not completed. `false` when
    /// the run is completed (its proof is frozen).
    pub async fn patch_context(&self, id: &str, patches: &[ContextPatch]) -> Result<bool, StoreError> {
        self.patch_context_fenced(None, id, patches).await
    }

    /// [`Store::patch_context`], refused with [`StoreError::LeaseLost`] when
    /// `fence` no longer holds its job.
    pub async fn patch_context_fenced(
        &self,
        fence: Option<&crate::jobs::Fence>,
        id: &str,
        patches: &[ContextPatch],
    ) -> Result<bool, StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            check_fence!(&mut tx, pool, fence);
            let row = sqlx::query(AssertSqlSafe(format!(
                "SELECT status, context FROM operation_runs WHERE id = $1{}", for_update(pool)
            )))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else { return Err(StoreError::RunNotFound(id.to_owned())) };
            let status: String = row.try_get("status")?;
            if status == "completed" {
                return Ok(false);
            }
            let context: String = row.try_get("context")?;
            let mut context: Value = serde_json::from_str(&context)
                .map_err(|e| StoreError::Corrupt(format!("run {id} context: {e}")))?;
            for p in patches {
                p.apply(&mut context);
            }
            sqlx::query("UPDATE operation_runs SET context = $2 WHERE id = $1")
                .bind(id)
                .bind(serde_json::to_string(&context).expect("json"))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    // ----- reads -------------------------------------------------------------

    /// A run with its first failures, or `None`.
    pub async fn get_run(&self, id: &str) -> Result<Option<Run>, StoreError> {
        let run = on_pool!(self, pool => {
            sqlx::query(AssertSqlSafe(format!("SELECT {RUN_COLUMNS} FROM operation_runs WHERE id = $1")))
                .bind(id)
                .fetch_optional(pool)
                .await?
                .map(|r| run_from_row(&r))
                .transpose()?
        });
        match run {
            Some(mut run) => {
                run.failures = self.failures_of(&run.id).await?;
                Ok(Some(run))
            }
            None => Ok(None),
        }
    }

    /// A run only if it belongs to `workspace_id` (so a foreign id reads as absent).
    pub async fn get_run_in_workspace(
        &self,
        workspace_id: &str,
        id: &str,
    ) -> Result<Option<Run>, StoreError> {
        Ok(self.get_run(id).await?.filter(|r| r.workspace_id == workspace_id))
    }

    /// The run's head (no context, phases or failures), or `None`.
    pub async fn run_head(&self, id: &str) -> Result<Option<RunHead>, StoreError> {
        on_pool!(self, pool => {
            sqlx::query(AssertSqlSafe(format!("SELECT {RUN_HEAD_COLUMNS} FROM operation_runs WHERE id = $1")))
                .bind(id)
                .fetch_optional(pool)
                .await?
                .as_ref()
                .map(run_head_from_row)
                .transpose()
        })
    }

    async fn require_run(&self, id: &str) -> Result<Run, StoreError> {
        self.get_run(id)
            .await?
            .ok_or_else(|| StoreError::RunNotFound(id.to_owned()))
    }

    async fn failures_of(&self, run_id: &str) -> Result<Vec<Failure>, StoreError> {
        on_pool!(self, pool => {
            sqlx::query("SELECT code, message, unit_key FROM run_failures WHERE run_id = $1 ORDER BY id LIMIT $2")
                .bind(run_id)
                .bind(FAILURES_PER_RUN)
                .fetch_all(pool)
                .await?
                .iter()
                .map(failure_from_row)
                .collect()
        })
    }

    /// The workspace's runs, newest first, filtered; with the cursor of the next page.
    pub async fn list_runs(
        &self,
        workspace_id: &str,
        filter: &RunFilter,
    ) -> Result<(Vec<Run>, Option<String>), StoreError> {
        let limit = filter.limit.clamp(1, 500) as i64;
        let mut runs = on_pool!(self, pool => {
            let mut qb = QueryBuilder::new(format!("SELECT {RUN_COLUMNS} FROM operation_runs WHERE workspace_id = "));
            qb.push_bind(workspace_id);
            if let Some(t) = &filter.tenant_id {
                qb.push(" AND tenant_id = ").push_bind(t.clone());
            }
            if let Some(t) = filter.run_type {
                qb.push(" AND type = ").push_bind(t.as_str());
            }
            if let Some(s) = filter.status {
                qb.push(" AND status = ").push_bind(s.as_str());
            }
            if let Some(o) = filter.outcome {
                qb.push(" AND outcome = ").push_bind(o.as_str());
            }
            if let Some(t) = filter.created_after {
                qb.push(" AND created_at >= ").push_bind(t);
            }
            if let Some(t) = filter.created_before {
                qb.push(" AND created_at < ").push_bind(t);
            }
            if let Some(c) = &filter.cursor {
                qb.push(" AND id < ").push_bind(c.clone());
            }
            qb.push(" ORDER BY id DESC LIMIT ").push_bind(limit + 1);
            qb.build().fetch_all(pool).await?.iter().map(run_from_row).collect::<Result<Vec<_>, _>>()?
        });
        let next = if runs.len() as i64 > limit {
            runs.truncate(limit as usize);
            runs.last().map(|r| r.id.clone())
        } else {
            None
        };
        for run in &mut runs {
            run.failures = self.failures_of(&run.id).await?;
        }
        Ok((runs, next))
    }

    /// Child runs of a composite parent, oldest first.
    pub async fn children_of(&self, parent_id: &str) -> Result<Vec<Run>, StoreError> {
        on_pool!(self, pool => {
            sqlx::query(AssertSqlSafe(format!(
                "SELECT {RUN_COLUMNS} FROM operation_runs WHERE parent_id = $1 ORDER BY id"
            )))
            .bind(parent_id)
            .fetch_all(pool)
            .await?
            .iter()
            .map(run_from_row)
            .collect()
        })
    }

    /// Ids of queued runs, oldest first (the minimal runner's pickup list).
    pub async fn queued_run_ids(&self, limit: u32) -> Result<Vec<String>, StoreError> {
        on_pool!(self, pool => {
            sqlx::query("SELECT id FROM operation_runs WHERE status = 'queued' ORDER BY created_at, id LIMIT $1")
                .bind(limit as i64)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| r.try_get("id").map_err(StoreError::from))
                .collect()
        })
    }

    /// The unit ledger of a run: unit key → outcome.
    pub async fn recorded_units(&self, run_id: &str) -> Result<BTreeMap<String, UnitOutcome>, StoreError> {
        let rows: Vec<(String, String)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT unit_key, outcome FROM run_units WHERE run_id = $1")
                .bind(run_id)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter()
            .map(|(k, o)| Ok((k, o.parse().map_err(|e| StoreError::Corrupt(format!("{e}")))?)))
            .collect()
    }
}

/// What the closing write checks inside its transaction besides "not completed".
#[derive(Clone, Copy)]
pub(crate) enum CloseGuard<'a> {
    None,
    /// The caller must still hold this job's lease.
    Fence(&'a crate::jobs::Fence),
    /// A running run must have no job that can still move it (reconciliation).
    NoLiveJobs,
}

enum ClosingStep {
    Completed,
    AlreadyCompleted,
    NotReady,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn context_patch_creates_nested_objects() {
        let mut ctx = json!({"params": {"x": 1}});
        ContextPatch::new(["inventory", "coverage", "a"], json!({"status": "covered"})).apply(&mut ctx);
        ContextPatch::new(["inventory", "coverage", "b"], json!({"status": "failed"})).apply(&mut ctx);
        assert_eq!(
            ctx,
            json!({"params": {"x": 1}, "inventory": {"coverage": {"a": {"status": "covered"}, "b": {"status": "failed"}}}})
        );
    }

    #[test]
    fn context_patch_replaces_non_objects_on_the_path() {
        let mut ctx = json!({"inventory": 3});
        ContextPatch::new(["inventory", "x"], json!(1)).apply(&mut ctx);
        assert_eq!(ctx, json!({"inventory": {"x": 1}}));
    }
}

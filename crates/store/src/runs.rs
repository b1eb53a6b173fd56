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

use crate::artifacts::UnitArtifact;
use crate::db::{DbRow, Dialect, Sql, Tx, sql, sql_built, sql_owned};
use crate::jobs::{check_fence, insert_job};
use crate::ledger::record_units_in;
use crate::row::{
    LIST_RUN_COLUMNS, RUN_COLUMNS, RUN_HEAD_COLUMNS, failure_from_row, run_from_row, run_head_from_row,
};
use crate::{Store, StoreError};
use opsledger_core::outcome::derive_bulk_outcome;
use opsledger_core::{Failure, Outcome, Run, RunStatus, RunType, Scope, UnitOutcome};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The largest context a run may hold (serialized JSON): starts are bounded
/// by their parameter limits far below it, and proof written by families
/// (coverage per type, a backup set's first failures) is small; this is the
/// writer path's own guard against a context that grows without bound.
pub const MAX_CONTEXT_BYTES: usize = 4 * 1024 * 1024;

/// `context` serialized, refused past [`MAX_CONTEXT_BYTES`].
pub(crate) fn context_text(context: &Value) -> Result<String, StoreError> {
    let text = serde_json::to_string(context).expect("json");
    if text.len() > MAX_CONTEXT_BYTES {
        return Err(StoreError::ContextTooLarge {
            bytes: text.len(),
            limit: MAX_CONTEXT_BYTES,
        });
    }
    Ok(text)
}

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

/// Result of a start: a new run, the run already doing this work, or the
/// run that holds the dedup key for other work (OPERATIONS.md §2).
#[derive(Debug, Clone)]
pub enum CreateResult {
    Created(Run),
    /// A run with the same dedup key and the same parameters is active: it is the answer.
    AlreadyActive(Run),
    /// A run with the same dedup key but other parameters is active: the
    /// start is refused (`409 active_run_differs`), never answered with a
    /// run that will not do the work asked.
    ActiveRunDiffers(Run),
}

impl CreateResult {
    pub fn run(&self) -> &Run {
        match self {
            CreateResult::Created(r) | CreateResult::AlreadyActive(r) | CreateResult::ActiveRunDiffers(r) => {
                r
            }
        }
    }
    pub fn into_run(self) -> Run {
        match self {
            CreateResult::Created(r) | CreateResult::AlreadyActive(r) | CreateResult::ActiveRunDiffers(r) => {
                r
            }
        }
    }
}

/// Inside `tx`: inserts `new` as `queued` holding dedup key `key`, with the
/// job that will execute it (a queued run always has its job: queue truth),
/// unless an active run holds the key. The new run's id when inserted.
pub(crate) async fn insert_queued_in(
    tx: &mut Tx,
    new: &NewRun,
    key: &str,
    context: &str,
) -> Result<Option<String>, StoreError> {
    let (id, created_at) = new_run_id();
    let inserted = tx
        .execute(
            sql(
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
            .bind(key)
            .bind(context)
            .bind(&new.initiator)
            .bind(created_at),
        )
        .await?;
    if inserted == 0 {
        return Ok(None);
    }
    insert_job(tx, &id, "run", "", new.run_type.max_attempts()).await?;
    Ok(Some(id))
}

/// A run's start parameters (`context.params`), absent ones as an empty object.
pub(crate) fn params_of(context: &Value) -> Value {
    match context.get("params") {
        Some(p) if !p.is_null() => p.clone(),
        _ => Value::Object(Map::new()),
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
    /// The artifact the unit wrote, committed with it (see [`crate::artifacts`]).
    pub artifact: Option<crate::artifacts::UnitArtifact>,
}

impl UnitRecord {
    pub fn new(key: impl Into<String>, outcome: UnitOutcome) -> UnitRecord {
        UnitRecord {
            key: key.into(),
            outcome,
            failure: None,
            context_patch: None,
            artifact: None,
        }
    }

    pub fn with_failure(mut self, failure: Failure) -> UnitRecord {
        self.failure = Some(failure);
        self
    }

    pub fn with_artifact(mut self, artifact: crate::artifacts::UnitArtifact) -> UnitRecord {
        self.artifact = Some(artifact);
        self
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
    /// How many of the run's units a proof read for this completion shows
    /// done, in all: the closing write counts unrecorded units it covers as
    /// `succeeded` (OPERATIONS.md §3, [`opsledger_core::closing`]).
    pub proven_succeeded: Option<u64>,
    /// What the closing work wrote, committed with the close or not at all:
    /// an activity run (one piece of work, no units) proves itself this way.
    pub artifacts: Vec<UnitArtifact>,
}

impl Completion {
    pub fn new(outcome: Outcome) -> Completion {
        assert!(outcome.is_terminal(), "a completion needs a terminal outcome");
        Completion {
            outcome,
            failure: None,
            context_patches: Vec::new(),
            proven_succeeded: None,
            artifacts: Vec::new(),
        }
    }
    /// Writes `artifact` in the closing transaction, if this completion closes the run.
    pub fn with_artifact(mut self, artifact: UnitArtifact) -> Completion {
        self.artifacts.push(artifact);
        self
    }
    /// The proof read for this completion shows `n` units done, in all.
    pub fn with_proven_succeeded(mut self, n: Option<u64>) -> Completion {
        self.proven_succeeded = n;
        self
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
    /// Runs per page, 1 to 500 (clamped).
    pub limit: u32,
}

/// What a caller may see: one workspace, and within it every tenant (`tenants: None`)
/// or only these tenants (workspace-level runs, tenant_id NULL, are then hidden).
#[derive(Debug, Clone)]
pub struct Visibility {
    pub workspace_id: String,
    pub tenants: Option<Vec<String>>,
}

/// The most index entries one page of [`Store::list_runs`] examines when a
/// filter is not served by the index it walks; such a page may come back
/// short, with a cursor where the walk stopped.
pub const LIST_SCAN_BUDGET: i64 = 1000;

/// Up to this many tenants are listed as one index range each, merged; a
/// larger set is checked on the rows of another index.
const TENANT_RANGES_MAX: usize = 4;

/// How one page of [`Store::list_runs`] reads: the index ranges it walks,
/// newest first (merged when several), and the filters checked on their rows.
struct ListPlan<'a> {
    workspace_id: &'a str,
    /// One range per value of the walked column, on its `(workspace_id,
    /// column, id)` index; `None`: the whole workspace, `(workspace_id, id)`.
    ranges: Vec<Option<(&'static str, &'a str)>>,
    /// Filters the walked index does not serve: `column IN (values)`.
    residual: Vec<(&'static str, Vec<&'a str>)>,
    /// `id >= from`: `created_after` as an id.
    from: Option<String>,
    /// `id < below`: the cursor, or `created_before` as an id if lower.
    below: Option<String>,
    /// Checked exactly as well: an id and its run's `created_at` agree for
    /// ids made by [`new_run_id`], which only runs from before it may not.
    created_after: Option<i64>,
    created_before: Option<i64>,
}

impl<'a> ListPlan<'a> {
    /// `None` when nothing can match: a tenant the caller may not see, or a
    /// status and an outcome that exclude each other.
    fn new(vis: &'a Visibility, filter: &'a RunFilter) -> Option<ListPlan<'a>> {
        let mut tenants: Option<Vec<&'a str>> = match (&filter.tenant_id, &vis.tenants) {
            (Some(t), Some(visible)) => {
                Some(visible.iter().filter(|v| *v == t).map(String::as_str).collect())
            }
            (Some(t), None) => Some(vec![t.as_str()]),
            (None, visible) => visible.as_ref().map(|v| v.iter().map(String::as_str).collect()),
        };
        if let Some(t) = &mut tenants {
            t.sort_unstable();
            t.dedup();
            if t.is_empty() {
                return None;
            }
        }
        let (mut status, mut outcome) = (filter.status, filter.outcome);
        if let (Some(s), Some(o)) = (status, outcome) {
            if (s == RunStatus::Completed) != o.is_terminal() {
                return None;
            }
            // One implies the other: keep the one that says more.
            if o.is_terminal() {
                status = None;
            } else {
                outcome = None;
            }
        }
        // The filters, most selective first in a typical history: few runs
        // are not completed, few completed runs did not succeed, and each
        // tenant or type holds a share of the rest. The first one walkable is
        // walked; the others are checked on its rows.
        const UNWALKABLE: u8 = u8::MAX;
        let mut terms: Vec<(u8, &'static str, Vec<&'a str>)> = Vec::new();
        if let Some(s) = status {
            let rank = if s == RunStatus::Completed { 4 } else { 0 };
            terms.push((rank, "status", vec![s.as_str()]));
        }
        if let Some(o) = outcome {
            let rank = if o == Outcome::Succeeded { 5 } else { 1 };
            terms.push((rank, "outcome", vec![o.as_str()]));
        }
        if let Some(t) = tenants {
            let rank = if t.len() <= TENANT_RANGES_MAX {
                2
            } else {
                UNWALKABLE
            };
            terms.push((rank, "tenant_id", t));
        }
        if let Some(t) = filter.run_type {
            terms.push((3, "type", vec![t.as_str()]));
        }
        terms.sort_by_key(|t| t.0);
        let walked = terms.first().is_some_and(|t| t.0 != UNWALKABLE);
        let mut residual: Vec<_> = terms
            .into_iter()
            .map(|(_, column, values)| (column, values))
            .collect();
        let ranges = if walked {
            let (column, values) = residual.remove(0);
            values.into_iter().map(|v| Some((column, v))).collect()
        } else {
            vec![None]
        };
        let before = filter.created_before.filter(|t| *t < 1 << 48).map(first_id_at);
        Some(ListPlan {
            workspace_id: &vis.workspace_id,
            ranges,
            residual,
            from: filter.created_after.map(first_id_at),
            // Ids are lowercase; a cursor in capitals must not compare below them.
            below: [filter.cursor.as_ref().map(|c| c.to_ascii_lowercase()), before]
                .into_iter()
                .flatten()
                .min(),
            created_after: filter.created_after,
            created_before: filter.created_before,
        })
    }

    /// `SELECT columns` of the walk's first `limit` rows, newest first, not
    /// below `floor`; with `checks`, only rows that pass the time window and
    /// the residual filters.
    fn push_walk(&self, stmt: &mut Sql<'a>, columns: &str, floor: Option<&'a str>, checks: bool, limit: i64) {
        let merged = self.ranges.len() > 1;
        for (i, range) in self.ranges.iter().enumerate() {
            if merged {
                stmt.push(if i == 0 {
                    "SELECT * FROM ("
                } else {
                    " UNION ALL SELECT * FROM ("
                });
            }
            stmt.push(&format!(
                "SELECT {columns} FROM operation_runs WHERE workspace_id = "
            ))
            .push_bind(self.workspace_id);
            if let Some((column, value)) = range {
                stmt.push(&format!(" AND {column} = ")).push_bind(*value);
            }
            if let Some(below) = &self.below {
                stmt.push(" AND id < ").push_bind(below.clone());
            }
            if let Some(from) = self.from.as_deref().max(floor) {
                stmt.push(" AND id >= ").push_bind(from.to_owned());
            }
            if checks {
                if let Some(t) = self.created_after {
                    stmt.push(" AND created_at >= ").push_bind(t);
                }
                if let Some(t) = self.created_before {
                    stmt.push(" AND created_at < ").push_bind(t);
                }
                for (column, values) in &self.residual {
                    // `|| ''` keeps the column's own index out of the plan:
                    // the walk must stay on its range, which the floor bounds.
                    push_in(stmt, &format!("({column} || '')"), values.iter().copied());
                }
            }
            stmt.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
            if merged {
                stmt.push(&format!(") AS r{i}"));
            }
        }
        if merged {
            stmt.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
        }
    }
}

/// ` AND expr IN (values…)`; `values` must not be empty.
fn push_in<'v>(stmt: &mut Sql<'v>, expr: &str, values: impl IntoIterator<Item = &'v str>) {
    stmt.push(&format!(" AND {expr} IN ")).push_list(values);
}

/// `(run_id, failure)` of each row.
fn failures_by_run(rows: Vec<DbRow>) -> Result<Vec<(String, Failure)>, StoreError> {
    rows.iter()
        .map(|r| Ok((r.get("run_id")?, failure_from_row(r)?)))
        .collect()
}

/// A new run's id and creation time (ms), from one instant: the id is a
/// UUIDv7 whose first 48 bits are `created_at`, so that id order is creation
/// order and a time window is an id range ([`Store::list_runs`]).
fn new_run_id() -> (String, i64) {
    // Monotonic within the process (the crate's shared v7 context); the time
    // is read back from the id, so the two cannot differ.
    let id = uuid::Uuid::now_v7();
    let (secs, nanos) = id.get_timestamp().expect("a v7 id has a time").to_unix();
    (id.to_string(), secs as i64 * 1000 + i64::from(nanos / 1_000_000))
}

/// The smallest run id created at `ms` or later (the time clamped to what
/// an id can hold): `created_at >= ms` is `id >= first_id_at(ms)` for ids
/// made by [`new_run_id`].
fn first_id_at(ms: i64) -> String {
    let ms = ms.clamp(0, (1 << 48) - 1);
    format!("{:08x}-{:04x}-0000-0000-000000000000", ms >> 16, ms & 0xffff)
}

impl Store {
    /// Starts a run in `queued`, or returns the run already active for the
    /// same dedup key (deduplicated start, OPERATIONS.md §2): as the answer
    /// when its parameters are the new start's, as a refusal when not.
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
        // A child run holds its own key too: a composite adopts an active run.
        let params = params_of(&new.context);
        let key = new
            .run_type
            .dedup_key(&new.workspace_id, new.tenant_id.as_deref(), &params);
        let context = context_text(&new.context)?;
        // The active run may complete between a refused insert and the read
        // of it; then the insert is simply tried again.
        for _ in 0..5 {
            let mut tx = self.begin_write().await?;
            let inserted = insert_queued_in(&mut tx, &new, &key, &context).await?;
            tx.commit().await?;
            if let Some(id) = inserted {
                return Ok(CreateResult::Created(
                    self.require_run(&id).await.map_err(StoreError::after_commit)?,
                ));
            }
            let active = self
                .pool
                .row(
                    sql_owned(format!(
                        "SELECT {RUN_COLUMNS} FROM operation_runs WHERE active_key = $1"
                    ))
                    .bind(&key),
                )
                .await?
                .map(|r| run_from_row(&r))
                .transpose()?;
            if let Some(mut run) = active {
                run.failures = self.failures_of(&run.id).await?;
                return Ok(if params_of(&run.context) == params {
                    CreateResult::AlreadyActive(run)
                } else {
                    CreateResult::ActiveRunDiffers(run)
                });
            }
        }
        Err(StoreError::Database(sqlx::Error::Protocol(
            "start kept conflicting with a vanishing active run".into(),
        )))
    }

    #[cfg(feature = "test-support")]
    /// Moves a queued run to running (compare-and-set). `None` when another
    /// worker claimed it first or it is no longer queued.
    pub async fn claim_run(&self, id: &str) -> Result<Option<Run>, StoreError> {
        let now = self.now_ms();
        let run = self
            .pool
            .row(
                sql_owned(format!(
                    "UPDATE operation_runs SET status = 'running', started_at = $2, heartbeat_at = $2 \
                     WHERE id = $1 AND status = 'queued' RETURNING {RUN_COLUMNS}"
                ))
                .bind(id)
                .bind(now),
            )
            .await?
            .map(|r| run_from_row(&r))
            .transpose()?;
        Ok(run)
    }

    #[cfg(feature = "test-support")]
    /// Records that the run's worker is alive. `false` when the run is not running.
    pub async fn heartbeat(&self, id: &str) -> Result<bool, StoreError> {
        let n = self
            .pool
            .execute(
                sql("UPDATE operation_runs SET heartbeat_at = $2 WHERE id = $1 AND status = 'running'")
                    .bind(id)
                    .bind(self.now_ms()),
            )
            .await?;
        Ok(n == 1)
    }

    #[cfg(feature = "test-support")]
    /// Sets `total` once (OPERATIONS.md §3) and starts `processed` and the unit
    /// outcome counters at 0. Setting the same total again is a no-op; a
    /// different one is [`StoreError::TotalAlreadySet`].
    pub async fn init_total(&self, id: &str, total: u64) -> Result<(), StoreError> {
        self.init_total_fenced(None, id, total).await
    }

    /// [`Store::init_total`] by a job's worker: refused with
    /// [`StoreError::LeaseLost`] unless `fence` still holds the job's lease
    /// (a stalled attempt cannot set a plan over its successor's).
    pub(crate) async fn init_total_fenced(
        &self,
        fence: Option<&crate::jobs::Fence>,
        id: &str,
        total: u64,
    ) -> Result<(), StoreError> {
        let total_i =
            i64::try_from(total).map_err(|_| StoreError::Corrupt(format!("total {total} too large")))?;
        let mut tx = self.begin_write().await?;
        if let Some(fence) = fence {
            check_fence(&mut tx, fence, id).await?;
        }
        let n = tx
            .execute(
                sql("UPDATE operation_runs SET total = $2, processed = 0, succeeded = 0, failed = 0, skipped = 0, \
                     heartbeat_at = CASE WHEN status = 'running' THEN $3 ELSE heartbeat_at END \
                     WHERE id = $1 AND status <> 'completed' AND total IS NULL")
                .bind(id)
                .bind(total_i)
                .bind(self.now_ms()),
            )
            .await?;
        tx.commit().await?;
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

    #[cfg(feature = "test-support")]
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
    pub(crate) async fn record_units_fenced(
        &self,
        fence: Option<&crate::jobs::Fence>,
        run_id: &str,
        units: &[UnitRecord],
    ) -> Result<RecordSummary, StoreError> {
        let mut tx = self.begin_write().await?;
        if let Some(fence) = fence {
            check_fence(&mut tx, fence, run_id).await?;
        }
        let summary = record_units_in(&mut tx, run_id, units).await?;
        tx.commit().await?;
        Ok(summary)
    }

    #[cfg(feature = "test-support")]
    /// [`Store::record_units`] for one unit; `true` when it was newly recorded.
    pub async fn record_unit(&self, run_id: &str, unit: UnitRecord) -> Result<bool, StoreError> {
        Ok(self
            .record_units(run_id, std::slice::from_ref(&unit))
            .await?
            .recorded
            == 1)
    }

    #[cfg(feature = "test-support")]
    /// Completes the run with `completion` unless it is already completed.
    pub async fn complete_run(&self, id: &str, completion: Completion) -> Result<CompleteResult, StoreError> {
        self.complete_when(id, |_| Some(completion)).await
    }

    /// Completes a bulk run once every unit is processed, deriving its outcome
    /// from its unit counters (OPERATIONS.md §5). The only completer of bulk
    /// parents; safe to call after every unit and from several workers.
    pub async fn maybe_complete_bulk_run(&self, id: &str) -> Result<CompleteResult, StoreError> {
        self.close_run(id, CloseGuard::None, |run| {
            derive_bulk_outcome(&run.summary_counts).map(Completion::new)
        })
        .await
    }

    #[cfg(feature = "test-support")]
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

    /// Cancels a queued or running run (an operator's request): closed as
    /// `cancelled` through the single closing write, with `patch` (who asked,
    /// when) in its context; units never recorded count as skipped.
    /// A composite's children it started are cancelled with it, in the same
    /// transaction; children it adopted run on (OPERATIONS.md §5).
    pub async fn cancel_run(&self, id: &str, patch: ContextPatch) -> Result<CompleteResult, StoreError> {
        let completion = Completion::new(Outcome::Cancelled).with_patch(patch.clone());
        let mut tx = self.begin_write().await?;
        crate::children::lock_started_children_in(&mut tx, id).await?;
        let step = close_run_in(&mut tx, id, CloseGuard::None, |_| Some(completion)).await?;
        if matches!(step, ClosingStep::Completed) {
            crate::children::cancel_started_children_in(&mut tx, id, &patch).await?;
        }
        tx.commit().await?;
        self.closed_result(id, step).await
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
        let mut tx = self.begin_write().await?;
        let result = close_run_in(&mut tx, id, guard, decide).await?;
        tx.commit().await?;
        self.closed_result(id, result).await
    }

    /// The run after a closing step committed, as the caller reports it.
    pub(crate) async fn closed_result(
        &self,
        id: &str,
        step: ClosingStep,
    ) -> Result<CompleteResult, StoreError> {
        let run = self.require_run(id).await.map_err(|e| match step {
            ClosingStep::Completed => e.after_commit(),
            _ => e,
        })?;
        Ok(match step {
            ClosingStep::Completed => CompleteResult::Completed(run),
            ClosingStep::AlreadyCompleted => CompleteResult::AlreadyCompleted(run),
            ClosingStep::NotReady => CompleteResult::NotReady(run),
        })
    }

    #[cfg(feature = "test-support")]
    /// Applies context patches to a run that is not completed. `false` when
    /// the run is completed (its proof is frozen).
    pub async fn patch_context(&self, id: &str, patches: &[ContextPatch]) -> Result<bool, StoreError> {
        self.patch_context_fenced(None, id, patches).await
    }

    /// [`Store::patch_context`], refused with [`StoreError::LeaseLost`] when
    /// `fence` no longer holds its job.
    pub(crate) async fn patch_context_fenced(
        &self,
        fence: Option<&crate::jobs::Fence>,
        id: &str,
        patches: &[ContextPatch],
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        if let Some(fence) = fence {
            check_fence(&mut tx, fence, id).await?;
        }
        let patched = patch_context_in(&mut tx, id, patches).await?;
        tx.commit().await?;
        Ok(patched)
    }

    // ----- reads -------------------------------------------------------------

    /// A run with its first failures, or `None`.
    pub async fn get_run(&self, id: &str) -> Result<Option<Run>, StoreError> {
        let run = self
            .pool
            .row(sql_owned(format!("SELECT {RUN_COLUMNS} FROM operation_runs WHERE id = $1")).bind(id))
            .await?
            .map(|r| run_from_row(&r))
            .transpose()?;
        match run {
            Some(mut run) => {
                run.failures = self.failures_of(&run.id).await?;
                Ok(Some(run))
            }
            None => Ok(None),
        }
    }

    /// The run `id` with its first failures if `vis` may see it, else `None`.
    ///
    /// One statement keyed by the id *and* the visibility (workspace, and
    /// tenants when restricted) decides, and failures are read only for a run
    /// it returned. So a run of another workspace (or of a hidden tenant) and
    /// an id that does not exist take the same path: the same statements,
    /// returning the same rows (none). Neither the answer nor the work done
    /// tells a caller that the id exists elsewhere.
    pub async fn visible_run(&self, vis: &Visibility, id: &str) -> Result<Option<Run>, StoreError> {
        if vis.tenants.as_ref().is_some_and(Vec::is_empty) {
            return Ok(None);
        }
        let mut stmt = sql_built(
            self.pool.dialect(),
            &format!("SELECT {RUN_COLUMNS} FROM operation_runs WHERE id = "),
        );
        stmt.push_bind(id)
            .push(" AND workspace_id = ")
            .push_bind(vis.workspace_id.as_str());
        if let Some(tenants) = &vis.tenants {
            push_in(&mut stmt, "tenant_id", tenants.iter().map(String::as_str));
        }
        let run = self.pool.row(stmt).await?.map(|r| run_from_row(&r)).transpose()?;
        let Some(mut run) = run else {
            return Ok(None);
        };
        run.failures = self.failures_of(&run.id).await?;
        Ok(Some(run))
    }

    /// The run's head (no context, phases or failures), or `None`.
    pub async fn run_head(&self, id: &str) -> Result<Option<RunHead>, StoreError> {
        self.pool
            .row(
                sql_owned(format!(
                    "SELECT {RUN_HEAD_COLUMNS} FROM operation_runs WHERE id = $1"
                ))
                .bind(id),
            )
            .await?
            .as_ref()
            .map(run_head_from_row)
            .transpose()
    }

    pub(crate) async fn require_run(&self, id: &str) -> Result<Run, StoreError> {
        self.get_run(id)
            .await?
            .ok_or_else(|| StoreError::RunNotFound(id.to_owned()))
    }

    async fn failures_of(&self, run_id: &str) -> Result<Vec<Failure>, StoreError> {
        self.pool
            .rows(
                sql(
                    "SELECT code, message, unit_key FROM run_failures WHERE run_id = $1 ORDER BY id LIMIT $2",
                )
                .bind(run_id)
                .bind(FAILURES_PER_RUN),
            )
            .await?
            .iter()
            .map(failure_from_row)
            .collect()
    }

    /// The first [`FAILURES_PER_RUN`] failures of each run, in one statement
    /// that reads at most that many failures per run (a window over the runs'
    /// failures would read every failure of a run that has thousands).
    async fn failures_of_runs(
        &self,
        run_ids: &[&str],
    ) -> Result<std::collections::HashMap<String, Vec<Failure>>, StoreError> {
        let mut by_run = std::collections::HashMap::<String, Vec<Failure>>::new();
        if run_ids.is_empty() {
            return Ok(by_run);
        }
        // "Each run's first N" is spelled differently by the two databases: a
        // LATERAL join on PostgreSQL, a correlated list of rowids on SQLite.
        // Both walk the (run_id, id) index N entries per run, no further.
        // The ids travel as one JSON array on both databases.
        let stmt = match self.pool.dialect() {
            Dialect::Postgres => sql(
                "SELECT f.run_id, f.code, f.message, f.unit_key FROM json_array_elements_text(CAST($1 AS json)) AS r(id) \
                 CROSS JOIN LATERAL (SELECT id, run_id, code, message, unit_key FROM run_failures \
                   WHERE run_id = r.id ORDER BY id LIMIT $2) AS f \
                 ORDER BY f.id",
            ),
            Dialect::Sqlite => sql(
                "SELECT f.run_id, f.code, f.message, f.unit_key FROM json_each($1) AS r \
                 JOIN run_failures f ON f.id IN (SELECT g.id FROM run_failures g \
                   WHERE g.run_id = r.value ORDER BY g.id LIMIT $2) \
                 ORDER BY f.id",
            ),
        }
        .bind(serde_json::to_string(run_ids).expect("json"));
        let rows = failures_by_run(self.pool.rows(stmt.bind(FAILURES_PER_RUN)).await?)?;
        for (run_id, failure) in rows {
            by_run.entry(run_id).or_default().push(failure);
        }
        Ok(by_run)
    }

    /// The runs `vis` may see, newest first, filtered; with the cursor of the
    /// next page (`None` on the last).
    ///
    /// Every page reads a bounded number of rows, whatever the filters and
    /// the size of the history:
    /// - one filter (`status`, `outcome`, `type`, `tenant_id`, or up to four
    ///   visible tenants, merged) walks its index newest first and stops
    ///   after `limit + 1` rows: a full page. Ids are UUIDv7, so the time
    ///   window and the cursor are bounds of that walk, with any index;
    /// - several filters walk the index of the most selective one (in a
    ///   typical history: a status before completion, an outcome other than
    ///   success, tenants, type, then the rest) and check the others on at
    ///   most [`LIST_SCAN_BUDGET`] of its entries. The page may then be short
    ///   (even empty) with `next_cursor` where the walk stopped, so a client
    ///   paging on always makes progress and visits every match exactly once.
    ///
    /// Failures of the listed runs are read in one statement for the page.
    pub async fn list_runs(
        &self,
        vis: &Visibility,
        filter: &RunFilter,
    ) -> Result<(Vec<Run>, Option<String>), StoreError> {
        let limit = i64::from(filter.limit.clamp(1, 500));
        let Some(plan) = ListPlan::new(vis, filter) else {
            return Ok((Vec::new(), None));
        };
        // Both statements are planned anew with their values (not kept
        // prepared): a generic plan of a cached statement cannot see how wide
        // the id range is, and PostgreSQL's may then walk the primary key
        // across the history instead of the filter's index (250 ms, not 1).
        //
        // Where a bounded walk stops: its LIST_SCAN_BUDGET-th entry, if it has
        // that many. Found first, so the page below reads exactly that range.
        let floor = if plan.residual.is_empty() {
            None
        } else {
            let mut stmt = sql_built(self.pool.dialect(), "SELECT MIN(id), COUNT(*) FROM (").not_persistent();
            plan.push_walk(&mut stmt, "id", None, false, LIST_SCAN_BUDGET);
            stmt.push(") AS walked");
            let (floor, walked): (Option<String>, i64) = self.pool.fetch_one(stmt).await?;
            floor.filter(|_| walked >= LIST_SCAN_BUDGET)
        };
        let mut stmt = sql_built(self.pool.dialect(), "").not_persistent();
        plan.push_walk(&mut stmt, LIST_RUN_COLUMNS, floor.as_deref(), true, limit + 1);
        let mut runs = self
            .pool
            .rows(stmt)
            .await?
            .iter()
            .map(run_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next = if runs.len() as i64 > limit {
            runs.truncate(limit as usize);
            runs.last().map(|r| r.id.clone())
        } else {
            floor
        };
        let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
        let mut failures = self.failures_of_runs(&ids).await?;
        for run in &mut runs {
            run.failures = failures.remove(&run.id).unwrap_or_default();
        }
        Ok((runs, next))
    }

    /// Child runs of a composite parent, oldest first.
    pub async fn children_of(&self, parent_id: &str) -> Result<Vec<Run>, StoreError> {
        self.pool
            .rows(
                sql_owned(format!(
                    "SELECT {RUN_COLUMNS} FROM operation_runs \
                     WHERE id IN (SELECT child_id FROM run_children WHERE parent_id = $1) ORDER BY id"
                ))
                .bind(parent_id),
            )
            .await?
            .iter()
            .map(run_from_row)
            .collect()
    }

    #[cfg(feature = "test-support")]
    /// Ids of queued runs, oldest first (the minimal runner's pickup list).
    pub async fn queued_run_ids(&self, limit: u32) -> Result<Vec<String>, StoreError> {
        let ids: Vec<(String,)> = self
            .pool
            .fetch_all(
                sql("SELECT id FROM operation_runs WHERE status = 'queued' ORDER BY created_at, id LIMIT $1")
                    .bind(i64::from(limit)),
            )
            .await?;
        Ok(ids.into_iter().map(|(id,)| id).collect())
    }

    /// The unit ledger of a run: unit key → outcome.
    pub async fn recorded_units(&self, run_id: &str) -> Result<BTreeMap<String, UnitOutcome>, StoreError> {
        let rows: Vec<(String, String)> = self
            .pool
            .fetch_all(sql("SELECT unit_key, outcome FROM run_units WHERE run_id = $1").bind(run_id))
            .await?;
        rows.into_iter()
            .map(|(k, o)| Ok((k, o.parse().map_err(|e| StoreError::Corrupt(format!("{e}")))?)))
            .collect()
    }
}

/// Applies context patches to a run that is not completed, inside `tx`
/// (the row locked for the read-modify-write); `false` when the run is
/// completed (its proof is frozen). The one context patch of the writer path:
/// a unit's proof patch and a handler's patch both come here.
pub(crate) async fn patch_context_in(
    tx: &mut Tx,
    id: &str,
    patches: &[ContextPatch],
) -> Result<bool, StoreError> {
    let row: Option<(String, String)> = tx
        .fetch_optional(
            sql_owned(format!(
                "SELECT status, context FROM operation_runs WHERE id = $1{}",
                tx.dialect().for_update()
            ))
            .bind(id),
        )
        .await?;
    let Some((status, context)) = row else {
        return Err(StoreError::RunNotFound(id.to_owned()));
    };
    if status == "completed" {
        return Ok(false);
    }
    let mut context: Value =
        serde_json::from_str(&context).map_err(|e| StoreError::Corrupt(format!("run {id} context: {e}")))?;
    for p in patches {
        p.apply(&mut context);
    }
    tx.execute(
        sql("UPDATE operation_runs SET context = $2 WHERE id = $1")
            .bind(id)
            .bind(context_text(&context)?),
    )
    .await?;
    Ok(true)
}

/// The closing write, inside `tx` (see [`Store::close_run`]): closes run
/// `id`, then every composite parent its close leaves with no open child
/// (OPERATIONS.md §5: in the last child's closing transaction).
pub(crate) async fn close_run_in<F>(
    tx: &mut Tx,
    id: &str,
    guard: CloseGuard<'_>,
    decide: F,
) -> Result<ClosingStep, StoreError>
where
    F: FnOnce(&Run) -> Option<Completion>,
{
    let step = close_one_in(tx, id, guard, decide).await?;
    if matches!(step, ClosingStep::Completed) {
        crate::children::close_parents_in(tx, id).await?;
    }
    Ok(step)
}

/// The closing write's body for one run, inside `tx`: the page-wise body
/// ([`crate::closing::close_many_in`]) with one id, after the fence check.
pub(crate) async fn close_one_in<F>(
    tx: &mut Tx,
    id: &str,
    guard: CloseGuard<'_>,
    decide: F,
) -> Result<ClosingStep, StoreError>
where
    F: FnOnce(&Run) -> Option<Completion>,
{
    // The job row before the run row: the order every job writer uses.
    if let CloseGuard::Fence(fence) = guard {
        check_fence(tx, fence, id).await?;
    }
    let mut decide = Some(decide);
    let closed = crate::closing::close_many_in(tx, &[id], matches!(guard, CloseGuard::NoLiveJobs), |run| {
        decide.take().and_then(|d| d(run))
    })
    .await?;
    Ok(closed[0].step)
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClosingStep {
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

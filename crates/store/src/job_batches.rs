//! Many jobs per statement: the batch completer's write and the node's
//! heartbeat (OPERATIONS.md §3, ARCHITECTURE.md "Throughput facts").
//!
//! A unit job's own commit is bounded by the disk's flush time; a hundred
//! unit results committed together share one flush. Batching changes none of
//! the guarantees of [`crate::jobs`]:
//!
//! - every job end is still **fenced** by `(job id, lease token, run, unit,
//!   state = running)`, per job, inside the batch statement: a result whose
//!   lease was lost is dropped, not written, and the rest of the batch lands;
//! - a unit is still counted by the ledger's unique key, so a batch replayed
//!   after a crash (its leases expired, its units ran again) counts nothing
//!   twice;
//! - a run's counters are bumped once per run per batch, guarded by
//!   `processed + n <= total`, and a run that closed meanwhile gets its jobs
//!   ended `cancelled` and nothing recorded.
//!
//! A batch that fails as a whole (a refused artifact, a deadlock) rolls back
//! entirely; the engine then finishes its units one by one, so one bad
//! result cannot hold the others back.

use crate::db::{Dialect, Sql, Tx, sql_built};
use crate::jobs::{Fence, Heartbeat, JobEnd};
use crate::ledger::record_units_in;
use crate::runs::UnitRecord;
use crate::{Store, StoreError};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Rows per statement: at most 6 arguments a row stays far below both databases'
/// argument limits (SQLite 32 766, PostgreSQL 65 535).
const ROWS_PER_STATEMENT: usize = 1000;

/// One unit job's result, to be committed with others.
#[derive(Debug, Clone)]
pub struct UnitFinish {
    pub fence: Fence,
    pub run_id: String,
    pub unit: UnitRecord,
    pub end: JobEnd,
}

/// What became of one result of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitFinished {
    /// Its job ended and its unit is in the ledger (new, or already there:
    /// a replay counts nothing). `all_processed`: its run's `processed`
    /// reached `total` in this batch or before.
    Recorded { all_processed: bool },
    /// The fence no longer held: nothing of it was written.
    LeaseLost,
    /// Its run was no longer running: its job was ended `cancelled`, its
    /// unit not recorded.
    RunClosed,
}

/// A job this node is executing, for [`Store::heartbeat_jobs`].
#[derive(Debug, Clone)]
pub struct HeldJob {
    pub fence: Fence,
    pub run_id: String,
}

/// Appends `(VALUES (…), (…)) AS v` with one row per item, each of `cells`
/// values; its columns are `v.column1 …` on both databases.
fn push_values<'a, T>(stmt: &mut Sql<'a>, items: &[T], cells: impl Fn(&T) -> Vec<String>) {
    stmt.push("(VALUES ");
    for (i, item) in items.iter().enumerate() {
        stmt.push(if i == 0 { "(" } else { ", (" });
        for (j, cell) in cells(item).into_iter().enumerate() {
            if j > 0 {
                stmt.push(", ");
            }
            stmt.push_bind(cell);
        }
        stmt.push(")");
    }
    stmt.push(") AS v");
}

/// Inside `tx`: ends the jobs of `items` fenced, as `state_of` says, and
/// returns the ids of those whose fence held.
async fn end_jobs_fenced(
    tx: &mut Tx,
    items: &[&UnitFinish],
    state_of: impl Fn(&UnitFinish) -> &'static str,
) -> Result<HashSet<String>, StoreError> {
    let mut ended = HashSet::new();
    for chunk in items.chunks(ROWS_PER_STATEMENT) {
        let stmt = match tx.dialect() {
            // One statement text whatever the batch's size: it stays
            // prepared (see `Arg::Texts`). The fence's `state = 'running'`
            // is the lease token's match (CHECK `lease_iff_running`): spelt
            // out, it let the planner scan the partial index of running jobs
            // — every dead entry a fan-out left there — instead of the
            // primary key (measured: 6 ms for a 10-job batch).
            Dialect::Postgres => {
                let column =
                    |f: fn(&UnitFinish) -> String| chunk.iter().map(|u| f(u)).collect::<Vec<String>>();
                let states: Vec<String> = chunk.iter().map(|u| state_of(u).to_owned()).collect();
                crate::db::sql(
                    "UPDATE jobs SET state = v.state, lease_token = NULL, lease_expires_at = NULL, finalized_at = $1 \
                     FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) AS v(id, token, run_id, unit_key, state) \
                     WHERE jobs.id = v.id AND jobs.lease_token = v.token AND jobs.run_id = v.run_id \
                     AND jobs.unit_key = v.unit_key AND jobs.kind = 'unit' \
                     AND jobs.id = ANY($2::text[]) RETURNING jobs.id",
                )
                .bind(tx.now())
                .bind(column(|u| u.fence.job_id.clone()))
                .bind(column(|u| u.fence.lease_token.clone()))
                .bind(column(|u| u.run_id.clone()))
                .bind(column(|u| u.unit.key.clone()))
                .bind(states)
            }
            Dialect::Sqlite => {
                let mut stmt = sql_built(
                    tx.dialect(),
                    "UPDATE jobs SET state = v.column5, lease_token = NULL, ",
                );
                stmt.push("lease_expires_at = NULL, finalized_at = ")
                    .push_bind(tx.now())
                    .push(" FROM ");
                push_values(&mut stmt, chunk, |f| {
                    vec![
                        f.fence.job_id.clone(),
                        f.fence.lease_token.clone(),
                        f.run_id.clone(),
                        f.unit.key.clone(),
                        state_of(f).to_owned(),
                    ]
                });
                stmt.push(
                    " WHERE jobs.id = v.column1 AND jobs.lease_token = v.column2 AND jobs.run_id = v.column3 \
                     AND jobs.unit_key = v.column4 AND jobs.kind = 'unit' AND jobs.state = 'running' AND jobs.id IN ",
                );
                // The id list drives the primary key (joined with the VALUES
                // list alone, PostgreSQL planned a scan of the whole table).
                stmt.push_list(chunk.iter().map(|f| f.fence.job_id.as_str()));
                stmt.push(" RETURNING id");
                stmt
            }
        };
        let rows: Vec<(String,)> = tx.fetch_all(stmt).await?;
        ended.extend(rows.into_iter().map(|(id,)| id));
    }
    Ok(ended)
}

/// Inside `tx`: the statuses of `run_ids` (absent ids are not returned).
async fn run_statuses(tx: &mut Tx, run_ids: &[&str]) -> Result<HashMap<String, String>, StoreError> {
    let mut statuses = HashMap::new();
    for chunk in run_ids.chunks(ROWS_PER_STATEMENT) {
        let stmt = match tx.dialect() {
            Dialect::Postgres => {
                crate::db::sql("SELECT id, status FROM operation_runs WHERE id = ANY($1::text[])")
                    .bind(chunk.iter().map(|r| (*r).to_owned()).collect::<Vec<String>>())
            }
            Dialect::Sqlite => {
                let mut stmt = sql_built(tx.dialect(), "SELECT id, status FROM operation_runs WHERE id IN ");
                stmt.push_list(chunk.iter().copied());
                stmt
            }
        };
        let rows: Vec<(String, String)> = tx.fetch_all(stmt).await?;
        statuses.extend(rows);
    }
    Ok(statuses)
}

/// The batch completer's transaction body: see the module docs. Results are
/// returned in the order of `items`. An error means nothing was written (the
/// caller drops the transaction).
pub(crate) async fn finish_unit_jobs_in(
    tx: &mut Tx,
    items: &[UnitFinish],
) -> Result<Vec<UnitFinished>, StoreError> {
    let mut run_ids: Vec<&str> = items.iter().map(|f| f.run_id.as_str()).collect();
    run_ids.sort_unstable();
    run_ids.dedup();
    let statuses = run_statuses(tx, &run_ids).await?;
    // The statements return the ids of the jobs they ended, so a job named
    // by two results with different leases (one stale: rescued and claimed
    // again on this node) would count both as ended, and the stale one could
    // decide the ledger's outcome. Only such a job's current lease goes on.
    let stale = stale_fences(tx, items).await?;
    let running = |f: &UnitFinish| statuses.get(&f.run_id).is_some_and(|s| s == "running");
    let (open, closed): (Vec<&UnitFinish>, Vec<&UnitFinish>) = items
        .iter()
        .filter(|f| !stale.contains(&f.fence))
        .partition(|f| running(f));
    let cancelled = end_jobs_fenced(tx, &closed, |_| "cancelled").await?;
    let ended = end_jobs_fenced(tx, &open, |f| match f.end {
        JobEnd::Completed => "completed",
        JobEnd::Failed => "failed",
    })
    .await?;
    // The units whose job this batch ended, per run; runs in id order, so
    // two batches lock the runs' rows in one order.
    let mut per_run: BTreeMap<&str, Vec<UnitRecord>> = BTreeMap::new();
    for f in open.iter().filter(|f| ended.contains(&f.fence.job_id)) {
        per_run.entry(f.run_id.as_str()).or_default().push(f.unit.clone());
    }
    let mut all_processed: HashMap<&str, bool> = HashMap::new();
    let mut unread: Vec<&str> = Vec::new();
    for (run_id, units) in &per_run {
        let summary = record_units_in(tx, run_id, units).await?;
        all_processed.insert(run_id, summary.all_processed);
        if summary.recorded == 0 {
            unread.push(run_id);
        }
    }
    // A run whose every unit in this batch was a replay: its counters did not
    // move (the bump that tells whether it is done did not run), so that is
    // read. A run whose counters moved knows from its bump.
    for run_id in unread {
        all_processed.insert(run_id, is_all_processed(tx, run_id).await?);
    }
    Ok(items
        .iter()
        .map(|f| {
            if stale.contains(&f.fence) {
                UnitFinished::LeaseLost
            } else if cancelled.contains(&f.fence.job_id) {
                UnitFinished::RunClosed
            } else if ended.contains(&f.fence.job_id) {
                UnitFinished::Recorded {
                    all_processed: all_processed.get(f.run_id.as_str()).copied().unwrap_or(false),
                }
            } else {
                UnitFinished::LeaseLost
            }
        })
        .collect())
}

/// The fences of `items` that name a job another item of `items` names too
/// and that do not hold its current lease (read only when a job is named twice).
async fn stale_fences(tx: &mut Tx, items: &[UnitFinish]) -> Result<Vec<Fence>, StoreError> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut twice: Vec<&str> = items
        .iter()
        .map(|f| f.fence.job_id.as_str())
        .filter(|id| !seen.insert(id))
        .collect();
    twice.sort_unstable();
    twice.dedup();
    let mut stale = Vec::new();
    for chunk in twice.chunks(ROWS_PER_STATEMENT) {
        let mut stmt = sql_built(tx.dialect(), "SELECT id, lease_token FROM jobs WHERE id IN ");
        stmt.push_list(chunk.iter().copied());
        let rows: Vec<(String, Option<String>)> = tx.fetch_all(stmt).await?;
        let current: HashMap<String, Option<String>> = rows.into_iter().collect();
        for f in items.iter().filter(|f| chunk.contains(&f.fence.job_id.as_str())) {
            if current.get(&f.fence.job_id).and_then(|t| t.as_deref()) != Some(f.fence.lease_token.as_str()) {
                stale.push(f.fence.clone());
            }
        }
    }
    Ok(stale)
}

async fn is_all_processed(tx: &mut Tx, run_id: &str) -> Result<bool, StoreError> {
    let row: Option<(Option<i64>, Option<i64>)> = tx
        .fetch_optional(
            crate::db::sql("SELECT processed, total FROM operation_runs WHERE id = $1").bind(run_id),
        )
        .await?;
    Ok(matches!(row, Some((Some(p), Some(t))) if p >= t))
}

/// Inside `tx`: renews the leases of `jobs` still held, and the heartbeat of
/// their runs still running; one [`Heartbeat`] per job, in order.
pub(crate) async fn heartbeat_jobs_in(
    tx: &mut Tx,
    jobs: &[HeldJob],
    lease_ms: u64,
) -> Result<Vec<Heartbeat>, StoreError> {
    let now = tx.now();
    let mut held: HashSet<String> = HashSet::new();
    for chunk in jobs.chunks(ROWS_PER_STATEMENT) {
        let mut stmt = sql_built(tx.dialect(), "UPDATE jobs SET heartbeat_at = ");
        stmt.push_bind(now)
            .push(", lease_expires_at = ")
            .push_bind(now + lease_ms as i64)
            .push(" FROM ");
        push_values(&mut stmt, chunk, |j| {
            vec![j.fence.job_id.clone(), j.fence.lease_token.clone()]
        });
        stmt.push(" WHERE jobs.id = v.column1 AND jobs.lease_token = v.column2 AND jobs.state = 'running' AND jobs.id IN ");
        stmt.push_list(chunk.iter().map(|j| j.fence.job_id.as_str()));
        stmt.push(" RETURNING id");
        let rows: Vec<(String,)> = tx.fetch_all(stmt).await?;
        held.extend(rows.into_iter().map(|(id,)| id));
    }
    let mut run_ids: Vec<&str> = jobs
        .iter()
        .filter(|j| held.contains(&j.fence.job_id))
        .map(|j| j.run_id.as_str())
        .collect();
    run_ids.sort_unstable();
    run_ids.dedup();
    let mut alive: HashSet<String> = HashSet::new();
    for chunk in run_ids.chunks(ROWS_PER_STATEMENT) {
        // The runs' rows are locked in id order, as a batch's counter bumps
        // take them: two nodes' heartbeat and batch cannot deadlock.
        let mut stmt = sql_built(tx.dialect(), "UPDATE operation_runs SET heartbeat_at = ");
        stmt.push_bind(now)
            .push(" WHERE status = 'running' AND id IN (SELECT id FROM operation_runs WHERE id IN ")
            .push_list(chunk.iter().copied())
            .push(" ORDER BY id")
            .push(tx.dialect().for_update())
            .push(") RETURNING id");
        let rows: Vec<(String,)> = tx.fetch_all(stmt).await?;
        alive.extend(rows.into_iter().map(|(id,)| id));
    }
    Ok(jobs
        .iter()
        .map(|j| {
            if !held.contains(&j.fence.job_id) {
                Heartbeat::LeaseLost
            } else if alive.contains(&j.run_id) {
                Heartbeat::Alive
            } else {
                Heartbeat::RunClosed
            }
        })
        .collect())
}

impl Store {
    /// Commits many unit jobs' results in one transaction (the batch
    /// completer's write; see the module docs). On error nothing was
    /// written — [`StoreError::CommitOutcomeUnknown`] excepted, where the
    /// commit may have landed: finishing the units again is safe (their
    /// fences no longer hold if it did).
    pub async fn finish_unit_jobs(&self, items: &[UnitFinish]) -> Result<Vec<UnitFinished>, StoreError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let results = finish_unit_jobs_in(&mut tx, items).await?;
        tx.commit().await?;
        Ok(results)
    }

    /// Renews, in one transaction, the leases of the jobs this node is
    /// executing and their runs' heartbeats. A heartbeat lost in a crash
    /// costs nothing, so on PostgreSQL it does not wait for the disk's flush
    /// (`synchronous_commit = off`; a later durable commit flushes it).
    pub async fn heartbeat_jobs(
        &self,
        jobs: &[HeldJob],
        lease_ms: u64,
    ) -> Result<Vec<Heartbeat>, StoreError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        relax_durability(&mut tx).await?;
        let beats = heartbeat_jobs_in(&mut tx, jobs, lease_ms).await?;
        tx.commit().await?;
        Ok(beats)
    }
}

/// Inside `tx`: on PostgreSQL, commit without waiting for the WAL flush. Only
/// for writes whose loss in a crash is harmless because every later write
/// is fenced (a claim: its lease token never reaches the database, the
/// worker's writes are refused, the job is claimable again; a heartbeat).
/// A later durable commit flushes them anyway, in order.
pub(crate) async fn relax_durability(tx: &mut Tx) -> Result<(), StoreError> {
    if tx.dialect() == Dialect::Postgres {
        tx.execute(crate::db::sql("SET LOCAL synchronous_commit TO OFF"))
            .await?;
    }
    Ok(())
}

//! The closing write's body, for one run or a page of runs in one
//! transaction (OPERATIONS.md §3, §7).
//!
//! There is one closing write: [`crate::runs::close_one_in`] is this with a
//! single id, so a worker closing its run and the stale sweep closing a
//! thousand go through the same code. Per page the write costs a bounded
//! number of statements (lock and read, the live-job and open-child
//! rechecks, the probes for backup sets and phases, one multi-row update,
//! one multi-row failure insert, one job cancellation), not a number per
//! run: the sweep must close 10 000 stale runs among a million in under a
//! second. The rare per-run extras (artifacts, a backup set's summary,
//! phases, composite parents) are still written run by run, only for the
//! runs that have them.
//!
//! Every run is a compare-and-set on its locked row: `decide` sees the run
//! as it is now, inside the transaction, and a completed run is never
//! closed again.

use crate::db::{Tx, sql, sql_built};
use crate::ledger::insert_failure;
use crate::row::{RUN_COLUMNS, run_from_row};
use crate::runs::{ClosingStep, Completion, FAILURES_PER_RUN};
use crate::{Store, StoreError};
use opsledger_core::closing::{counts_at_close, not_attempted_failure, remainder_at_close};
use opsledger_core::{Failure, Outcome, Run, RunStatus};
use std::collections::{BTreeMap, BTreeSet};

/// Rows per multi-row statement: 7 arguments a row stays far below either
/// database's limit on bound parameters (SQLite 32 766, PostgreSQL 65 535).
const ROWS_PER_STATEMENT: usize = 500;

/// What the closing write did to one run of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed {
    pub step: ClosingStep,
    /// The outcome the run closed with (`Completed`), or had already
    /// (`AlreadyCompleted`); `None` when not ready.
    pub outcome: Option<Outcome>,
}

/// Closes `ids` inside `tx` (the body of the closing write, without the
/// composite parents — see [`close_runs_in`]). The runs are locked in id
/// order (two pages, or a page and a worker's single close, never wait on
/// each other in opposite orders). With `no_live_jobs`, a running run that
/// a job can still move, or that has an open child, is not ready (§7).
/// `decide` is asked once per run still open, with the run as locked.
/// Results come back in the order of `ids`. A missing run fails the whole
/// page with [`StoreError::RunNotFound`].
pub(crate) async fn close_many_in<F>(
    tx: &mut Tx,
    ids: &[&str],
    no_live_jobs: bool,
    mut decide: F,
) -> Result<Vec<Closed>, StoreError>
where
    F: FnMut(&Run) -> Option<Completion>,
{
    let dialect = tx.dialect();
    let mut sorted: Vec<&str> = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut runs: BTreeMap<String, Run> = BTreeMap::new();
    for chunk in sorted.chunks(ROWS_PER_STATEMENT) {
        let mut stmt = sql_built(
            dialect,
            &format!("SELECT {RUN_COLUMNS} FROM operation_runs WHERE id IN "),
        );
        stmt.push_list(chunk.iter().copied());
        stmt.push(" ORDER BY id").push(dialect.for_update());
        for row in tx.rows(stmt).await? {
            let run = run_from_row(&row)?;
            runs.insert(run.id.clone(), run);
        }
    }
    if let Some(missing) = sorted.iter().find(|id| !runs.contains_key(**id)) {
        return Err(StoreError::RunNotFound((*missing).to_owned()));
    }
    let open: Vec<&str> = sorted
        .iter()
        .copied()
        .filter(|id| !runs[*id].is_completed())
        .collect();
    let held = if no_live_jobs {
        held_by_work_in(tx, &runs, &open).await?
    } else {
        BTreeSet::new()
    };
    // Decide, under the locks, for every open run nothing can still move.
    let mut steps: BTreeMap<&str, Closed> = BTreeMap::new();
    let mut closing: Vec<(&Run, Completion)> = Vec::new();
    for id in &sorted {
        let run = &runs[*id];
        if run.is_completed() {
            steps.insert(
                id,
                Closed {
                    step: ClosingStep::AlreadyCompleted,
                    outcome: Some(run.outcome),
                },
            );
            continue;
        }
        if held.contains(*id) {
            steps.insert(
                id,
                Closed {
                    step: ClosingStep::NotReady,
                    outcome: None,
                },
            );
            continue;
        }
        match decide(run) {
            Some(c) => {
                steps.insert(
                    id,
                    Closed {
                        step: ClosingStep::Completed,
                        outcome: Some(c.outcome),
                    },
                );
                closing.push((run, c));
            }
            None => {
                steps.insert(
                    id,
                    Closed {
                        step: ClosingStep::NotReady,
                        outcome: None,
                    },
                );
            }
        }
    }
    if !closing.is_empty() {
        write_closes_in(tx, &closing).await?;
    }
    Ok(ids.iter().map(|id| steps[id]).collect())
}

/// The open running runs among `open` that a job or an open child can still
/// move: one query for the jobs, one for the children.
async fn held_by_work_in(
    tx: &mut Tx,
    runs: &BTreeMap<String, Run>,
    open: &[&str],
) -> Result<BTreeSet<String>, StoreError> {
    let dialect = tx.dialect();
    let running: Vec<&str> = open
        .iter()
        .copied()
        .filter(|id| runs[*id].status == RunStatus::Running)
        .collect();
    let mut held = BTreeSet::new();
    let now = tx.now();
    for chunk in running.chunks(ROWS_PER_STATEMENT) {
        // `job_can_move_run` takes the placeholder of `now`; it is spliced in
        // where the fragment names it, so the statement's arguments stay in order.
        let live = crate::stale::job_can_move_run("j", "\u{0}");
        let (before, after) = live.split_once('\u{0}').expect("the fragment uses now once");
        let mut stmt = sql_built(dialect, "SELECT DISTINCT j.run_id FROM jobs j WHERE ");
        stmt.push(before)
            .push_bind(now)
            .push(after)
            .push(" AND j.run_id IN ");
        stmt.push_list(chunk.iter().copied());
        let rows: Vec<(String,)> = tx.fetch_all(stmt).await?;
        held.extend(rows.into_iter().map(|(id,)| id));
        let mut stmt = sql_built(
            dialect,
            &format!(
                "SELECT r.id FROM operation_runs r WHERE {} AND r.id IN ",
                crate::stale::child_can_move_run("r")
            ),
        );
        stmt.push_list(chunk.iter().copied());
        let rows: Vec<(String,)> = tx.fetch_all(stmt).await?;
        held.extend(rows.into_iter().map(|(id,)| id));
    }
    Ok(held)
}

/// Writes the closes decided for a page, in id order.
async fn write_closes_in(tx: &mut Tx, closing: &[(&Run, Completion)]) -> Result<(), StoreError> {
    let dialect = tx.dialect();
    let ids: Vec<&str> = closing.iter().map(|(r, _)| r.id.as_str()).collect();
    // Under the run's row lock, before anything reads what the run wrote.
    for (run, completion) in closing {
        for artifact in &completion.artifacts {
            crate::artifacts::write_in(tx, &run.id, None, artifact).await?;
        }
    }
    // A run that wrote a backup set states it as closed (INTERFACE.md
    // `context.backup_set`): id, items, failures. Rare: one probe per page.
    let mut sets: BTreeMap<String, (String, i64)> = BTreeMap::new();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let mut stmt = sql_built(
            dialect,
            "SELECT s.created_by_run_id, s.id, \
             (SELECT COUNT(*) FROM backup_items i WHERE i.backup_set_id = s.id) \
             FROM backup_sets s WHERE s.created_by_run_id IN ",
        );
        stmt.push_list(chunk.iter().copied());
        let rows: Vec<(String, String, i64)> = tx.fetch_all(stmt).await?;
        for (run_id, set_id, items) in rows {
            sets.entry(run_id).or_insert((set_id, items));
        }
    }
    // The active phase ends with the run, phases not reached are skipped (§5).
    // Rare among stale runs: one probe per page, then each phased run.
    let mut phased: BTreeSet<String> = BTreeSet::new();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let mut stmt = sql_built(dialect, "SELECT DISTINCT run_id FROM run_phases WHERE run_id IN ");
        stmt.push_list(chunk.iter().copied());
        let rows: Vec<(String,)> = tx.fetch_all(stmt).await?;
        phased.extend(rows.into_iter().map(|(id,)| id));
    }
    let now = tx.now();
    let mut updates: Vec<(&str, &'static str, String, [Option<i64>; 4])> = Vec::with_capacity(closing.len());
    let mut failures: Vec<(&str, Failure)> = Vec::new();
    for (run, completion) in closing {
        let id = run.id.as_str();
        let mut context = run.context.clone();
        for patch in &completion.context_patches {
            patch.apply(&mut context);
        }
        // Units never recorded are counted now, in this transaction, so the
        // closed run's counts explain its outcome (§3).
        let remainder = remainder_at_close(
            &run.summary_counts,
            completion.outcome,
            completion.proven_succeeded,
        );
        let closed = counts_at_close(&run.summary_counts, remainder);
        if let Some((set_id, items)) = sets.get(id) {
            let failed_items: Vec<(String,)> = tx
                .fetch_all(
                    sql(
                        "SELECT unit_key FROM run_units WHERE run_id = $1 AND outcome = 'failed' \
                         ORDER BY unit_key LIMIT $2",
                    )
                    .bind(id)
                    .bind(FAILURES_PER_RUN),
                )
                .await?;
            crate::runs::ContextPatch::new(
                ["backup_set"],
                serde_json::json!({
                    "id": set_id,
                    "items": items,
                    "failed": closed.failed.unwrap_or(0),
                    "failed_items": failed_items.into_iter().map(|(k,)| k).collect::<Vec<_>>(),
                }),
            )
            .apply(&mut context);
        }
        if phased.contains(id) {
            crate::phases::close_in(tx, id, completion.outcome).await?;
        }
        let count = |c: Option<u64>| c.map(|n| n as i64);
        updates.push((
            id,
            completion.outcome.as_str(),
            // Never refused for its size: a run must always be able to close.
            serde_json::to_string(&context).expect("json"),
            [
                count(closed.processed),
                count(closed.succeeded),
                count(closed.failed),
                count(closed.skipped),
            ],
        ));
        if let Some(f) = &completion.failure {
            failures.push((id, f.clone()));
        }
        if let (Some(r), Some(total)) = (remainder, run.summary_counts.total)
            && let Some(f) = not_attempted_failure(&r, total, run.run_type.unit_noun())
        {
            failures.push((id, f));
        }
    }
    for chunk in updates.chunks(ROWS_PER_STATEMENT) {
        let n = if let [(id, outcome, context, [processed, succeeded, failed, skipped])] = chunk {
            // One run (a worker's own close): the plain statement, kept prepared.
            tx.execute(
                sql("UPDATE operation_runs SET status = 'completed', outcome = $2, completed_at = $3, \
                     active_key = NULL, context = $4, processed = $5, succeeded = $6, failed = $7, skipped = $8 \
                     WHERE id = $1 AND status <> 'completed'")
                .bind(*id)
                .bind(*outcome)
                .bind(now)
                .bind(context.as_str())
                .bind(*processed)
                .bind(*succeeded)
                .bind(*failed)
                .bind(*skipped),
            )
            .await?
        } else {
            let mut stmt = sql_built(
                dialect,
                "WITH v (id, outcome, context, processed, succeeded, failed, skipped) AS (VALUES ",
            );
            for (i, (id, outcome, context, [processed, succeeded, failed, skipped])) in
                chunk.iter().enumerate()
            {
                stmt.push(if i == 0 { "(" } else { ", (" });
                stmt.push_bind(*id).push(", ").push_bind(*outcome).push(", ");
                stmt.push_bind(context.as_str())
                    .push(", ")
                    .push_bind(*processed)
                    .push(", ");
                stmt.push_bind(*succeeded)
                    .push(", ")
                    .push_bind(*failed)
                    .push(", ");
                stmt.push_bind(*skipped).push(")");
            }
            stmt.push(
                ") UPDATE operation_runs SET status = 'completed', outcome = v.outcome, completed_at = ",
            )
            .push_bind(now)
            .push(
                ", active_key = NULL, context = v.context, processed = v.processed, \
                 succeeded = v.succeeded, failed = v.failed, skipped = v.skipped \
                 FROM v WHERE operation_runs.id = v.id AND operation_runs.status <> 'completed'",
            );
            tx.execute(stmt).await?
        };
        if n != chunk.len() as u64 {
            return Err(StoreError::Corrupt(format!(
                "{} of {} runs changed under their row locks",
                chunk.len() as u64 - n.min(chunk.len() as u64),
                chunk.len()
            )));
        }
    }
    insert_failures_in(tx, &failures, now).await?;
    // Work not started yet will never be needed; running jobs are fenced out
    // by the run's status. Jobs a claimer is taking right now are skipped, not
    // waited for (a claim locks its job, then the run: waiting here would
    // deadlock); the runner cancels them when it sees the run closed.
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let mut stmt = sql_built(dialect, "UPDATE jobs SET state = 'cancelled', finalized_at = ");
        stmt.push_bind(now)
            .push(" WHERE id IN (SELECT id FROM jobs WHERE state = 'available' AND run_id IN ");
        stmt.push_list(chunk.iter().copied());
        stmt.push(dialect.skip_locked()).push(")");
        tx.execute(stmt).await?;
    }
    Ok(())
}

/// The failures of a page's closes, in order (a run's own failure before its
/// "not attempted" one), in multi-row inserts.
async fn insert_failures_in(tx: &mut Tx, failures: &[(&str, Failure)], now: i64) -> Result<(), StoreError> {
    if let [(id, f)] = failures {
        return insert_failure(tx, id, f, now).await;
    }
    for chunk in failures.chunks(ROWS_PER_STATEMENT) {
        let mut stmt = sql_built(
            tx.dialect(),
            "INSERT INTO run_failures (run_id, code, message, unit_key, recorded_at) VALUES ",
        );
        for (i, (id, f)) in chunk.iter().enumerate() {
            stmt.push(if i == 0 { "(" } else { ", (" });
            stmt.push_bind(*id)
                .push(", ")
                .push_bind(f.code.as_str())
                .push(", ");
            stmt.push_bind(f.message.as_str())
                .push(", ")
                .push_bind(f.unit.as_deref());
            stmt.push(", ").push_bind(now).push(")");
        }
        tx.execute(stmt).await?;
    }
    Ok(())
}

/// [`close_many_in`], then every composite parent the page's closes leave
/// with no open child (OPERATIONS.md §5: in the last child's closing
/// transaction). One probe finds the closed runs that are children at all.
pub(crate) async fn close_runs_in<F>(
    tx: &mut Tx,
    ids: &[&str],
    no_live_jobs: bool,
    decide: F,
) -> Result<Vec<Closed>, StoreError>
where
    F: FnMut(&Run) -> Option<Completion>,
{
    let closed = close_many_in(tx, ids, no_live_jobs, decide).await?;
    let done: Vec<&str> = ids
        .iter()
        .zip(&closed)
        .filter(|(_, c)| c.step == ClosingStep::Completed)
        .map(|(id, _)| *id)
        .collect();
    let mut children: Vec<String> = Vec::new();
    for chunk in done.chunks(ROWS_PER_STATEMENT) {
        let mut stmt = sql_built(
            tx.dialect(),
            "SELECT DISTINCT child_id FROM run_children WHERE child_id IN ",
        );
        stmt.push_list(chunk.iter().copied());
        let rows: Vec<(String,)> = tx.fetch_all(stmt).await?;
        children.extend(rows.into_iter().map(|(id,)| id));
    }
    children.sort();
    for child in children {
        crate::children::close_parents_in(tx, &child).await?;
    }
    Ok(closed)
}

impl Store {
    /// Completes the given running fan-out parents whose units are all
    /// processed, in one transaction, each with the outcome its unit counters
    /// derive (OPERATIONS.md §5; the rule of [`Store::maybe_complete_bulk_run`]).
    /// Returns how many this call completed.
    pub async fn complete_finished_bulk_runs(&self, ids: &[String]) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut tx = self.begin_write().await?;
        let closed = close_runs_in(&mut tx, &ids, false, |run| {
            opsledger_core::outcome::derive_bulk_outcome(&run.summary_counts).map(Completion::new)
        })
        .await?;
        tx.commit().await?;
        Ok(closed.iter().filter(|c| c.step == ClosingStep::Completed).count() as u64)
    }
}

//! Queue truth (OPERATIONS.md §7): finding stale runs, and applying a
//! reconciliation or an admin force-close through the single closing write.

use crate::db::{sql, sql_built, sql_owned};
use crate::row::{RUN_COLUMNS, run_from_row};
use crate::runs::{CloseGuard, ClosingStep, CompleteResult, Completion, ContextPatch};
use crate::{Store, StoreError};
use chrono::{SecondsFormat, Utc};
use opsledger_core::closing::{ForceCloseRefusal, decide_force_close};
use opsledger_core::reconcile::{AdapterResult, ReconciliationRecord};
use opsledger_core::{Failure, Outcome, Run, RunStatus};
use std::collections::BTreeMap;

/// One page of stale candidates.
#[derive(Debug)]
pub struct CandidatePage {
    /// The candidates this node could read (others are logged and skipped).
    pub runs: Vec<Run>,
    /// Where the next page starts; `None` when this was the last.
    pub next_after: Option<String>,
}

/// The SQL condition "job `alias` can still move its running run"
/// (OPERATIONS.md §7), with `now` the parameter holding the current time: a
/// live lease, an expired lease with attempts left (the rescuer will retry
/// it), or a job waiting to be claimed. A running run with such a job is
/// never stale; the sweep's candidate query and the closing write's recheck
/// both use this one definition. (A queued run's only job is its waiting run
/// job, so for queued runs the queue timeout alone decides.)
pub(crate) fn job_can_move_run(alias: &str, now: &str) -> String {
    format!(
        "({alias}.state = 'available' OR ({alias}.state = 'running' \
         AND ({alias}.lease_expires_at >= {now} OR {alias}.attempt < {alias}.max_attempts)))"
    )
}

/// SQL: run `{alias}` has a child run that is not completed — a composite
/// parent has no job of its own while its children run, and is alive while
/// any of them is (OPERATIONS.md §7).
pub(crate) fn child_can_move_run(alias: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM run_children c JOIN operation_runs k ON k.id = c.child_id \
         WHERE c.parent_id = {alias}.id AND k.status <> 'completed')"
    )
}

impl Store {
    /// Runs that may be stale: queued since before `queued_before`, or
    /// running with no heartbeat since `heartbeat_before` — and in both cases
    /// with no job that can still move them: a live lease, an expired lease
    /// with attempts left (the rescuer will retry it), or for a running run a
    /// job waiting to be claimed. Age alone never qualifies a run that has a
    /// live lease. The engine applies per-type timeouts on top.
    /// Ordered by id; `after` continues from the previous page's `next_after`.
    pub async fn stale_run_candidates(
        &self,
        queued_before: i64,
        heartbeat_before: i64,
        after: Option<&str>,
        limit: u32,
    ) -> Result<CandidatePage, StoreError> {
        let now = self.now_ms();
        let rows = self
            .pool
            .rows(
                sql_owned(format!(
                    "SELECT {RUN_COLUMNS} FROM operation_runs r \
                     WHERE r.status <> 'completed' AND r.id > $5 \
                       AND ((r.status = 'queued' AND r.created_at < $1) \
                         OR (r.status = 'running' AND COALESCE(r.heartbeat_at, r.started_at, r.created_at) < $2)) \
                       AND NOT (r.status = 'running' AND EXISTS (SELECT 1 FROM jobs j WHERE j.run_id = r.id AND {live})) \
                       AND NOT (r.status = 'running' AND {children}) \
                     ORDER BY r.id LIMIT $4",
                    live = job_can_move_run("j", "$3"),
                    children = child_can_move_run("r")
                ))
                .bind(queued_before)
                .bind(heartbeat_before)
                .bind(now)
                .bind(i64::from(limit))
                .bind(after.unwrap_or("")),
            )
            .await?
            .iter()
            .map(|row| {
                let id: String = row.get("id")?;
                Ok((id, run_from_row(row)))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let next_after = (rows.len() as u64 == limit as u64)
            .then(|| rows.last().map(|(id, _)| id.clone()))
            .flatten();
        let runs = rows
            .into_iter()
            .filter_map(|(id, run)| match run {
                Ok(run) => Some(run),
                // One row this node cannot read (e.g. a type a newer node
                // added) must not stop the sweep for every other run.
                Err(e) => {
                    tracing::error!(run = %id, error = %e, "skipping a stale candidate this node cannot read");
                    None
                }
            })
            .collect();
        Ok(CandidatePage { runs, next_after })
    }

    /// Running fan-out parents whose units are all processed but which are
    /// not completed (e.g. a worker died between a unit and the completion).
    pub async fn finished_bulk_run_ids(
        &self,
        fan_out_types: &[&str],
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        if fan_out_types.is_empty() {
            return Ok(Vec::new());
        }
        let mut stmt = sql_built(
            self.pool.dialect(),
            // `status <> 'completed'` lets SQLite use the open-runs partial
            // index (it does not infer it from `status = 'running'`): without
            // it every pass scanned the whole run history.
            "SELECT id FROM operation_runs WHERE status <> 'completed' AND status = 'running' \
             AND total IS NOT NULL AND processed >= total AND type IN ",
        );
        stmt.push_list(fan_out_types.iter().copied())
            .push(" LIMIT ")
            .push_bind(i64::from(limit));
        let rows: Vec<(String,)> = self.pool.fetch_all(stmt).await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// Applies an adapter's result to `seen`, the run as the sweep read it:
    /// [`Store::apply_reconciliations`] with one run, returning the run as it
    /// is after. A `not_reconciled` result changes nothing.
    pub async fn apply_reconciliation(
        &self,
        seen: &Run,
        adapter: &str,
        result: &AdapterResult,
        by: Option<&str>,
    ) -> Result<CompleteResult, StoreError> {
        let [applied] = self
            .apply_reconciliations(
                &[ToReconcile {
                    seen,
                    adapter,
                    result,
                }],
                by,
            )
            .await?[..]
        else {
            unreachable!("one result per run");
        };
        let run = self.require_run(&seen.id).await.map_err(|e| match applied {
            Applied::Closed(_) => e.after_commit(),
            _ => e,
        })?;
        Ok(match applied {
            Applied::Closed(_) => CompleteResult::Completed(run),
            Applied::AlreadyCompleted(_) => CompleteResult::AlreadyCompleted(run),
            Applied::Skipped => CompleteResult::NotReady(run),
        })
    }

    /// Applies a page of adapter results in one transaction, each to its
    /// `seen` run (the run as the sweep read it, before its proof was read)
    /// and only if that run is still in that state — status, heartbeat and
    /// processed unchanged — and (if running) no job or open child can still
    /// move it: a run that completed, got a heartbeat or recorded a unit
    /// since the read is not closed on stale information (a compare-and-set
    /// per run, on its locked row). Records `context.reconciliation` and, for
    /// an outcome other than `succeeded`, the reason as the run's failure.
    /// A `not_reconciled` result changes nothing. A child the page closes
    /// closes its composite parents in the same transaction. Results come
    /// back in the order of `page`.
    pub async fn apply_reconciliations(
        &self,
        page: &[ToReconcile<'_>],
        by: Option<&str>,
    ) -> Result<Vec<Applied>, StoreError> {
        let reconciled_at = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        let mut wanted: BTreeMap<&str, (&ToReconcile<'_>, Outcome)> = BTreeMap::new();
        for item in page {
            if let Some(outcome) = item.result.verdict.outcome() {
                wanted.insert(item.seen.id.as_str(), (item, outcome));
            }
        }
        let mut by_id: BTreeMap<&str, Applied> = BTreeMap::new();
        if !wanted.is_empty() {
            let ids: Vec<&str> = wanted.keys().copied().collect();
            let mut tx = self.begin_write().await?;
            let closed = crate::closing::close_runs_in(&mut tx, &ids, true, |now| {
                let (item, outcome) = wanted.get(now.id.as_str())?;
                let seen = item.seen;
                // Inside the closing transaction: the run is as the sweep saw
                // it, and (if running) no job can still move it — a rescue and
                // a new claim since the sweep looked would touch neither the
                // run's status nor its heartbeat.
                let unchanged = now.status == seen.status
                    && now.heartbeat_at == seen.heartbeat_at
                    && now.summary_counts.processed == seen.summary_counts.processed;
                unchanged.then(|| reconciliation_completion(item, *outcome, &reconciled_at, by))
            })
            .await?;
            tx.commit().await?;
            for (id, c) in ids.iter().zip(closed) {
                by_id.insert(
                    id,
                    match (c.step, c.outcome) {
                        (ClosingStep::Completed, Some(o)) => Applied::Closed(o),
                        (ClosingStep::AlreadyCompleted, Some(o)) => Applied::AlreadyCompleted(o),
                        _ => Applied::Skipped,
                    },
                );
            }
        }
        Ok(page
            .iter()
            .map(|item| {
                by_id
                    .get(item.seen.id.as_str())
                    .copied()
                    .unwrap_or(Applied::Skipped)
            })
            .collect())
    }

    /// An admin's force-close of `seen` (the run as the caller read it),
    /// applied by the single closing write and recorded like a
    /// reconciliation (`adapter = "admin_force_close"`). The rule of
    /// [`decide_force_close`] is checked again on the locked row: `blocked`
    /// only while no unit is recorded; a success outcome only with `proof`
    /// (the adapter's result, read just before) for exactly that outcome,
    /// and only if the run has not moved since the proof was read.
    pub async fn apply_force_close(
        &self,
        seen: &Run,
        request: ForceClose<'_>,
    ) -> Result<ForceCloseResult, StoreError> {
        let now_s = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        let mut refused = None;
        let mut moved = false;
        let mut tx = self.begin_write().await?;
        if request.outcome == Outcome::Cancelled {
            // Child before parent, the order of a child's own close.
            crate::children::lock_started_children_in(&mut tx, &seen.id).await?;
        }
        // A run without a `total` (phased) counts its recorded units in the
        // ledger only: they too forbid `blocked` ("nothing was done").
        let (recorded,): (i64,) = tx
            .fetch_one(sql("SELECT COUNT(*) FROM run_units WHERE run_id = $1").bind(&seen.id))
            .await?;
        let step = crate::runs::close_run_in(&mut tx, &seen.id, CloseGuard::None, |now| {
            let mut counts = now.summary_counts;
            if counts.total.is_none() && recorded > 0 {
                counts.processed = Some(recorded as u64);
            }
            let proven = match decide_force_close(request.outcome, &counts, request.proof) {
                Ok(p) => p,
                Err(e) => {
                    refused = Some(e);
                    return None;
                }
            };
            if request.proof.is_some()
                && (now.status != seen.status
                    || now.heartbeat_at != seen.heartbeat_at
                    || now.summary_counts.processed != seen.summary_counts.processed)
            {
                // The proof was read against another state of the run.
                moved = true;
                return None;
            }
            let record = ReconciliationRecord {
                adapter: "admin_force_close".into(),
                reason_code: "force_closed".into(),
                explanation: request.reason.to_owned(),
                previous_status: now.status,
                previous_outcome: now.outcome,
                related_artifact: request.proof.and_then(|p| p.related_artifact.clone()),
                reconciled_at: now_s,
                by: Some(request.by.to_owned()),
            };
            let mut c = Completion::new(request.outcome)
                .with_proven_succeeded(proven)
                .with_patch(ContextPatch::new(
                    ["reconciliation"],
                    serde_json::to_value(&record).expect("json"),
                ));
            if request.outcome != Outcome::Succeeded {
                c = c.with_failure(Failure::new("force_closed", request.reason));
            }
            Some(c)
        })
        .await?;
        if matches!(step, crate::runs::ClosingStep::Completed) && request.outcome == Outcome::Cancelled {
            let patch = ContextPatch::new(["cancelled_by"], serde_json::json!(request.by));
            crate::children::cancel_started_children_in(&mut tx, &seen.id, &patch).await?;
        }
        tx.commit().await?;
        let result = self.closed_result(&seen.id, step).await?;
        Ok(match result {
            CompleteResult::Completed(run) => ForceCloseResult::Closed(run),
            CompleteResult::AlreadyCompleted(run) => ForceCloseResult::AlreadyCompleted(run),
            CompleteResult::NotReady(run) => match refused {
                Some(refusal) => ForceCloseResult::Refused(refusal, run),
                None => {
                    debug_assert!(moved);
                    ForceCloseResult::Moved(run)
                }
            },
        })
    }
}

/// One run of a reconciliation page: the run as the sweep read it, and what
/// its adapter decided from its proof.
#[derive(Debug, Clone, Copy)]
pub struct ToReconcile<'a> {
    pub seen: &'a Run,
    /// Recorded as `context.reconciliation.adapter`.
    pub adapter: &'a str,
    pub result: &'a AdapterResult,
}

/// What applying a reconciliation did to one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// This call closed the run with this outcome.
    Closed(Outcome),
    /// The run was already completed (with this outcome); nothing changed.
    AlreadyCompleted(Outcome),
    /// Not reconciled, or the run moved since it was read, or a job or an
    /// open child can still move it: nothing changed.
    Skipped,
}

/// The closing write's completion for a reconciliation: the record in
/// `context.reconciliation`, the proven units, and the reason as a failure
/// unless the run succeeded.
fn reconciliation_completion(
    item: &ToReconcile<'_>,
    outcome: Outcome,
    reconciled_at: &str,
    by: Option<&str>,
) -> Completion {
    let (seen, result) = (item.seen, item.result);
    let record = ReconciliationRecord {
        adapter: item.adapter.to_owned(),
        reason_code: result.reason_code.clone(),
        explanation: result.explanation.clone(),
        previous_status: seen.status,
        previous_outcome: seen.outcome,
        related_artifact: result.related_artifact.clone(),
        reconciled_at: reconciled_at.to_owned(),
        by: by.map(str::to_owned),
    };
    let mut completion = Completion::new(outcome)
        .with_proven_succeeded(result.units_succeeded)
        .with_patch(ContextPatch::new(
            ["reconciliation"],
            serde_json::to_value(&record).expect("json"),
        ));
    if outcome != Outcome::Succeeded {
        completion = completion.with_failure(Failure {
            code: result.reason_code.clone(),
            message: result.explanation.clone(),
            unit: None,
        });
    }
    completion
}

/// What an admin asks of a force-close.
#[derive(Debug, Clone, Copy)]
pub struct ForceClose<'a> {
    pub outcome: Outcome,
    /// The admin's reason, recorded as the explanation.
    pub reason: &'a str,
    /// Who asked (`user:ID`, `cli:NAME`).
    pub by: &'a str,
    /// The run's adapter result, read just now (needed for a success outcome).
    pub proof: Option<&'a AdapterResult>,
}

/// What a force-close did.
#[derive(Debug, Clone)]
pub enum ForceCloseResult {
    Closed(Run),
    AlreadyCompleted(Run),
    /// The rule refused the outcome asked for; nothing changed.
    Refused(ForceCloseRefusal, Run),
    /// The run moved after its proof was read; nothing changed (ask again).
    Moved(Run),
}

/// Whether a run counts as stale under per-type timeouts, given `now`.
pub fn is_stale(run: &Run, now: i64, queue_timeout_ms: u64, heartbeat_timeout_ms: u64) -> bool {
    match run.status {
        RunStatus::Queued => now - run.created_at > queue_timeout_ms as i64,
        RunStatus::Running => {
            let last = run.heartbeat_at.or(run.started_at).unwrap_or(run.created_at);
            now - last > heartbeat_timeout_ms as i64
        }
        RunStatus::Completed => false,
    }
}

//! The stale sweep (OPERATIONS.md §7): one pass rescues expired leases,
//! completes fan-out parents whose units are all processed, and reconciles
//! runs that are stale under their type's timeouts, a page at a time, then
//! deletes finished jobs past their retention (the job cleaner). Runs periodically on
//! every node (`OPSLEDGER_RECONCILE_INTERVAL_MS`) and once via
//! `opsledger reconcile`. Every step is idempotent and state-guarded, so any
//! number of nodes may sweep at once.

use crate::Registry;
use crate::reconciler::{ReconcileDecision, reconcile_page};
use opsledger_core::RunType;
use opsledger_store::jobs::RescueReport;
use opsledger_store::stale::is_stale;
use opsledger_store::{Store, StoreError};
use serde::Serialize;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Timeouts; `None` uses each type's catalog default.
#[derive(Debug, Clone, Default)]
pub struct SweepConfig {
    /// `OPSLEDGER_QUEUE_TIMEOUT_MS`: overrides every type's queue timeout.
    pub queue_timeout_ms: Option<u64>,
    /// `OPSLEDGER_HEARTBEAT_TIMEOUT_MS`: overrides every type's heartbeat timeout.
    pub heartbeat_timeout_ms: Option<u64>,
    /// Rows read per query (rescue, bulk completion, stale candidates); a
    /// pass goes on page by page until nothing is left.
    pub batch: u32,
    /// `OPSLEDGER_JOB_RETENTION_MS`: finished jobs older than this are
    /// deleted by the pass (the job cleaner), at most
    /// [`JOB_CLEANER_BATCHES`] batches of `batch` per pass; `None` keeps
    /// them. The unit ledger is never deleted.
    pub job_retention_ms: Option<u64>,
}

/// Most cleaner batches one pass runs: a large backlog is worked off over
/// several passes, so one pass never holds up the sweep's other steps.
pub const JOB_CLEANER_BATCHES: u32 = 10;

impl SweepConfig {
    fn queue_timeout(&self, t: RunType) -> u64 {
        self.queue_timeout_ms.unwrap_or_else(|| t.queue_timeout_ms())
    }
    fn heartbeat_timeout(&self, t: RunType) -> u64 {
        self.heartbeat_timeout_ms
            .unwrap_or_else(|| t.heartbeat_timeout_ms())
    }
    fn batch(&self) -> u32 {
        if self.batch == 0 { 1000 } else { self.batch }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SweepReport {
    pub rescued_for_retry: u64,
    pub units_failed_by_rescue: u64,
    pub run_jobs_exhausted: u64,
    pub bulk_runs_completed: u64,
    pub decisions: Vec<ReconcileDecision>,
    /// Finished jobs the job cleaner deleted (past their retention).
    pub jobs_deleted: u64,
    /// Pages of stale candidates whose closing transaction failed (left to the next pass).
    pub pages_failed: u64,
}

/// One sweep pass.
pub async fn sweep_once(
    store: &Store,
    registry: &Registry,
    config: &SweepConfig,
) -> Result<SweepReport, StoreError> {
    let mut report = SweepReport::default();
    loop {
        let r: RescueReport = store.rescue_expired_jobs(config.batch()).await?;
        report.rescued_for_retry += r.retried;
        report.units_failed_by_rescue += r.failed_units.values().sum::<u64>();
        report.run_jobs_exhausted += r.failed_run_jobs;
        if r.rescued < config.batch() as u64 {
            break;
        }
    }
    let fan_out: Vec<&str> = RunType::ALL
        .iter()
        .filter(|t| t.is_fan_out())
        .map(|t| t.as_str())
        .collect();
    // One bounded page per pass, completed in one transaction (a run it
    // cannot complete would be found again: the next pass takes it up).
    let finished = store.finished_bulk_run_ids(&fan_out, config.batch()).await?;
    report.bulk_runs_completed += store.complete_finished_bulk_runs(&finished).await?;
    // Candidates by the shortest timeouts of any type, then each type's own.
    let now = store.now_ms();
    let min_queue = RunType::ALL
        .iter()
        .map(|t| config.queue_timeout(*t))
        .min()
        .unwrap_or(0);
    let min_beat = RunType::ALL
        .iter()
        .map(|t| config.heartbeat_timeout(*t))
        .min()
        .unwrap_or(0);
    // Every candidate, a page at a time (a run the adapters leave open stays
    // a candidate, so pages continue after the last id rather than restart).
    // Pages hold disjoint runs, so on PostgreSQL a few are closed at once:
    // one page's multi-row close is bound by index maintenance, not by the
    // database's capacity (measured in BENCHMARKS.md).
    let parallel = store.parallel_writers().max(1);
    let mut after: Option<String> = None;
    let mut exhausted = false;
    while !exhausted {
        let mut pages = Vec::with_capacity(parallel);
        while pages.len() < parallel && !exhausted {
            let page = store
                .stale_run_candidates(
                    now - min_queue as i64,
                    now - min_beat as i64,
                    after.as_deref(),
                    config.batch(),
                )
                .await?;
            // The page's stale runs: their proof read per adapter in a few
            // queries, their closes committed in one transaction.
            let stale: Vec<_> = page
                .runs
                .into_iter()
                .filter(|run| {
                    let t = run.run_type;
                    is_stale(run, now, config.queue_timeout(t), config.heartbeat_timeout(t))
                })
                .collect();
            if !stale.is_empty() {
                pages.push(stale);
            }
            after = page.next_after;
            exhausted = after.is_none();
        }
        let closed = futures::future::join_all(
            pages
                .iter()
                .map(|stale| reconcile_page(store, registry, stale, Some("system"))),
        )
        .await;
        // A page that failed (a deadlock with a child's close, a lost
        // connection) is found again by the next pass; the others stand.
        let mut failed = None;
        for decisions in closed {
            match decisions {
                Ok(d) => report.decisions.extend(d),
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            tracing::warn!(error = %e, "a page of the stale sweep failed; the next pass takes it up");
            report.pages_failed += 1;
        }
    }
    if let Some(retention) = config.job_retention_ms {
        report.jobs_deleted = store
            .clean_finished_jobs(retention, config.batch(), JOB_CLEANER_BATCHES)
            .await?;
    }
    Ok(report)
}

/// Sweeps every `interval` until `shutdown`.
pub async fn run_periodically(
    store: Store,
    registry: Registry,
    config: SweepConfig,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        match sweep_once(&store, &registry, &config).await {
            Ok(r)
                if r.rescued_for_retry
                    + r.units_failed_by_rescue
                    + r.bulk_runs_completed
                    + r.jobs_deleted
                    > 0
                    || !r.decisions.is_empty() =>
            {
                tracing::info!(
                    rescued = r.rescued_for_retry,
                    units_failed = r.units_failed_by_rescue,
                    bulk_completed = r.bulk_runs_completed,
                    reconciled = r.decisions.len(),
                    jobs_deleted = r.jobs_deleted,
                    "stale sweep"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "stale sweep failed"),
        }
    }
}

//! The batch completer (after River's): unit results are committed many per
//! transaction, so a hundred units share one flush of the disk instead of
//! paying one each.
//!
//! Executors hand a unit's result here and free their slot at once; this
//! task commits what it holds when it holds [`FlushPolicy::max_results`]
//! results, or [`FlushPolicy::max_wait`] after the oldest arrived, whichever
//! comes first, so progress stays live. Nothing here weakens a guarantee:
//!
//! - a result not yet flushed is only work: if the node dies, the job's
//!   lease expires, the unit runs again, and the ledger's unique key counts
//!   it once (the crash test kills a worker between results and flush). A
//!   waiting result is not heartbeaten, so the flush wait is capped at a
//!   quarter of the lease (the node refuses more);
//! - every job end in the batch is fenced on its own by the store, so a
//!   result whose lease was lost is dropped and the rest land;
//! - a fan-out parent is completed by `maybe_complete_bulk_run`, once per
//!   run per batch, after the batch committed (a compare-and-set: exactly once
//!   however many batches or nodes try);
//! - a batch refused as a whole (one result's artifact refused, a deadlock,
//!   a commit of unknown outcome) is finished again one result at a time by
//!   the [`Completer`], whose per-unit rules (retry, fail the unit) apply.
//!
//! On shutdown the task drains what it holds before the runner returns.

use crate::Registry;
use crate::completer::Completer;
use crate::handler::UnitResult;
use crate::runner::RunnerConfig;
use opsledger_core::UnitOutcome;
use opsledger_store::Store;
use opsledger_store::job_batches::{UnitFinish, UnitFinished};
use opsledger_store::jobs::{ClaimedJob, JobEnd};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// When a batch is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushPolicy {
    /// Commit at this many results (`OPSLEDGER_FLUSH_MAX_RESULTS`); 1 commits
    /// each result on its own.
    pub max_results: usize,
    /// Commit this long after the oldest result held arrived
    /// (`OPSLEDGER_FLUSH_MAX_WAIT_MS`): what batching adds to how stale a
    /// run's counters are (batches queued behind a slow commit add more).
    pub max_wait: Duration,
}

impl Default for FlushPolicy {
    /// 100 results share one flush a hundred ways (9–11× the per-result
    /// commit on PostgreSQL in `BENCHMARKS.md`); 20 ms is the wait a result
    /// adds at low load. Under load a result also waits for the batches
    /// ahead of it (the p95 figures there).
    fn default() -> FlushPolicy {
        FlushPolicy {
            max_results: 100,
            max_wait: Duration::from_millis(20),
        }
    }
}

/// One unit job's result, waiting for its batch.
pub(crate) struct PendingUnit {
    pub job: ClaimedJob,
    pub result: UnitResult,
}

/// Where executors hand their unit results.
#[derive(Clone)]
pub(crate) struct ResultSink(mpsc::Sender<PendingUnit>);

impl ResultSink {
    /// Queues a result; waits while the completer is a full buffer behind
    /// (backpressure: the executor keeps its slot meanwhile).
    pub async fn send(&self, pending: PendingUnit) -> Result<(), PendingUnit> {
        self.0.send(pending).await.map_err(|e| e.0)
    }
}

pub(crate) struct BatchCompleter {
    pub store: Store,
    pub registry: Registry,
    pub config: RunnerConfig,
}

impl BatchCompleter {
    /// Starts the task; it ends once every sink is dropped and its last
    /// batch is committed.
    pub fn spawn(self) -> (ResultSink, tokio::task::JoinHandle<()>) {
        let policy = self.config.flush;
        let (tx, rx) = mpsc::channel(policy.max_results.max(1) * 4);
        (ResultSink(tx), tokio::spawn(self.run(rx, policy)))
    }

    async fn run(self, mut rx: mpsc::Receiver<PendingUnit>, policy: FlushPolicy) {
        let max = policy.max_results.max(1);
        while let Some(first) = rx.recv().await {
            let deadline = Instant::now() + policy.max_wait;
            let mut batch = vec![first];
            while batch.len() < max {
                tokio::select! {
                    biased;
                    next = rx.recv() => match next {
                        Some(p) => batch.push(p),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            self.flush(batch).await;
        }
    }

    async fn flush(&self, batch: Vec<PendingUnit>) {
        let items: Vec<UnitFinish> = batch
            .iter()
            .map(|p| UnitFinish {
                fence: p.job.fence.clone(),
                run_id: p.job.run_id.clone(),
                unit: p.result.clone().into_record(&p.job.unit_key),
                end: match p.result.outcome {
                    UnitOutcome::Failed => JobEnd::Failed,
                    UnitOutcome::Succeeded | UnitOutcome::Skipped => JobEnd::Completed,
                },
            })
            .collect();
        match self.store.finish_unit_jobs(&items).await {
            Ok(results) => {
                let done: BTreeSet<&str> = items
                    .iter()
                    .zip(&results)
                    .filter(|(_, r)| matches!(r, UnitFinished::Recorded { all_processed: true }))
                    .map(|(f, _)| f.run_id.as_str())
                    .collect();
                for run_id in done {
                    if let Err(e) = self.store.maybe_complete_bulk_run(run_id).await {
                        // The sweep completes a parent whose units are all processed.
                        tracing::warn!(run = %run_id, error = %e, "completing a fan-out after its last unit failed; the sweep will");
                    }
                }
            }
            Err(e) => {
                tracing::info!(results = batch.len(), error = %e, "a batch of unit results was refused; finishing them one by one");
                for p in batch {
                    let completer = Completer {
                        store: &self.store,
                        registry: &self.registry,
                        config: &self.config,
                        job: &p.job,
                    };
                    if let Err(e) = completer.commit_unit(p.result).await {
                        tracing::warn!(job = %p.job.fence.job_id, error = %e, "finishing a unit failed; the rescuer will take it");
                    }
                }
            }
        }
    }
}

//! The scheduler: on every node, every `interval`, one tick that starts the
//! due slots of the workspace's schedules (`Store::fire_due_schedules`:
//! each slot once across nodes, one late run after downtime, a slot whose
//! previous run is still active skipped and recorded). Its clock is the
//! store's, so a test moves time per process instead of waiting for it.

use opsledger_store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Schedules decided per tick at most (the rest are due at the next tick).
pub const TICK_BATCH: u32 = 200;

/// Runs scheduler ticks until `shutdown`; wakes this node's runner when a
/// tick started runs.
pub async fn run_periodically(
    store: Store,
    interval: Duration,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        match store.fire_due_schedules(TICK_BATCH).await {
            Ok(tick) if !tick.started.is_empty() || tick.skipped_active > 0 => {
                tracing::info!(
                    started = tick.started.len(),
                    skipped_active = tick.skipped_active,
                    "schedules fired"
                );
                wake.notify_waiters();
            }
            Ok(_) => {}
            // The next tick tries again: a due slot stays due until decided.
            Err(e) => tracing::warn!(error = %e, "scheduler tick failed"),
        }
        match store.enforce_retention().await {
            Ok(r) if !r.deletes_started.is_empty() => {
                tracing::info!(deletes = r.deletes_started.len(), "retention started deletes");
                wake.notify_waiters();
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention pass failed"),
        }
    }
}

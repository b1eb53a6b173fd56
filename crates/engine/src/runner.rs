//! The job runner: claims jobs, executes them with per-job heartbeats, and
//! ends every job it claimed — completed, retried with backoff, failed, or
//! (on graceful shutdown) released without spending an attempt.
//!
//! Hand-written on sqlx on purpose, after River, Oban and graphile-worker:
//! a unit job's completion must commit in the same transaction as its unit
//! recording (exactly-once counting), and heartbeats must be per job (not per
//! worker process) so that staleness is decided per job. Queue crates we
//! looked at (apalis) heartbeat per worker and complete in their own
//! transaction.
//!
//! Pickup is woken at once by [`Runner::notifier`] for work started in this
//! process, and by polling for work started elsewhere.
//!
//! Roles, one module each: this one is the producer (claims jobs into free
//! slots); [`crate::executor`] runs one job's handler; [`crate::heartbeat`]
//! renews its lease and notices a closed run; [`crate::finish`] decides how
//! the job ends (pure); [`crate::completer`] carries that out.

use crate::Registry;
use crate::batch_completer::{BatchCompleter, FlushPolicy};
use crate::claim_pacing::{CLAIM_COOLDOWN, ClaimPace, pace};
use crate::executor::Execution;
use crate::heartbeat::InFlight;
use opsledger_core::RunType;
use opsledger_store::Store;
use opsledger_store::claims::ClaimCursor;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Jobs executed at once by this process.
    pub concurrency: usize,
    /// How often to look for jobs when not woken.
    pub poll_interval: Duration,
    /// How often a job's heartbeat is written (`OPSLEDGER_HEARTBEAT_INTERVAL_MS`).
    pub heartbeat_interval: Duration,
    /// Lease length: a job not heartbeaten for this long may be rescued
    /// (`OPSLEDGER_HEARTBEAT_TIMEOUT_MS`).
    pub lease: Duration,
    /// First retry delay; doubles per attempt, capped at [`MAX_BACKOFF`].
    pub retry_base: Duration,
    /// Names this process in `jobs.worker_id`.
    pub worker_id: String,
    /// When unit results are committed together.
    pub flush: FlushPolicy,
    /// Overrides every type's stall timeout (tests; `None`: the catalog's).
    pub stall_timeout: Option<Duration>,
    /// How long a handler may go on after its cancel token fired before its
    /// task is aborted.
    pub cancel_grace: Duration,
    /// With fewer than half the slots free, the least time between two
    /// claims ([`crate::claim_pacing`]).
    pub claim_cooldown: Duration,
}

pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// How long a job whose run this node cannot read waits before it is claimable again.
pub const UNREADABLE_RUN_DELAY: Duration = Duration::from_secs(60);

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            concurrency: 4,
            poll_interval: Duration::from_millis(500),
            heartbeat_interval: Duration::from_secs(5),
            lease: Duration::from_secs(30),
            retry_base: Duration::from_secs(1),
            worker_id: format!("{}:{}", hostname(), std::process::id()),
            flush: FlushPolicy::default(),
            stall_timeout: None,
            cancel_grace: Duration::from_secs(30),
            claim_cooldown: CLAIM_COOLDOWN,
        }
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "node".into())
}

/// Delay before attempt `attempt + 1`: `base · 2^(attempt-1)`, capped, and
/// never shorter than what the failure asked for.
pub fn backoff(base: Duration, attempt: u32, asked: Option<Duration>) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    // A source may ask for any delay; past a day it is a broken header, not advice.
    exp.min(MAX_BACKOFF)
        .max(asked.unwrap_or_default().min(MAX_ASKED_DELAY))
}

/// The longest `Retry-After` a retry honours.
pub const MAX_ASKED_DELAY: Duration = Duration::from_secs(24 * 3600);

pub struct Runner {
    store: Store,
    registry: Registry,
    config: RunnerConfig,
    wake: Arc<Notify>,
}

impl Runner {
    pub fn new(store: Store, registry: Registry, config: RunnerConfig) -> Runner {
        Runner {
            store,
            registry,
            config,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Notify this after starting a run to have it picked up without waiting for a poll.
    pub fn notifier(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Runs until `shutdown` is cancelled; then in-flight handlers are
    /// cancelled, their jobs released, and this returns.
    pub async fn run(self, shutdown: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let mut in_flight = JoinSet::new();
        let (results, completer) = BatchCompleter {
            store: self.store.clone(),
            registry: self.registry.clone(),
            config: self.config.clone(),
        }
        .spawn();
        let held = InFlight::default();
        let heartbeat = tokio::spawn(held.clone().beat(
            self.store.clone(),
            self.config.heartbeat_interval,
            self.config.lease,
            shutdown.clone(),
        ));
        let slots = self.config.concurrency.max(1);
        let mut last_claim: Option<Instant> = None;
        // Types this node has no handler for are left to nodes that have one.
        let mut cursor = ClaimCursor::skipping(
            RunType::ALL
                .iter()
                .copied()
                .filter(|t| !self.registry.supports(*t)),
        );
        loop {
            while in_flight.try_join_next().is_some() {}
            let free = permits.available_permits();
            let mut claimed_any = false;
            let mut next_claim = None;
            match pace(
                free,
                slots,
                last_claim.map(|t| t.elapsed()),
                self.config.claim_cooldown,
            ) {
                ClaimPace::Now if !shutdown.is_cancelled() => {
                    last_claim = Some(Instant::now());
                    match self
                        .store
                        .claim_jobs_from(&mut cursor, &self.config.worker_id, free as u32, self.lease_ms())
                        .await
                    {
                        Ok(jobs) => {
                            claimed_any = !jobs.is_empty();
                            for job in jobs {
                                let permit = permits
                                    .clone()
                                    .try_acquire_owned()
                                    .expect("claimed within free permits");
                                let exec = Execution {
                                    store: self.store.clone(),
                                    registry: self.registry.clone(),
                                    config: self.config.clone(),
                                    in_flight: held.clone(),
                                    results: results.clone(),
                                };
                                in_flight.spawn(async move {
                                    exec.execute(job).await;
                                    drop(permit);
                                });
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "claiming jobs failed"),
                    }
                }
                ClaimPace::After(wait) => next_claim = Some(wait),
                ClaimPace::Now | ClaimPace::Full => {}
            }
            if claimed_any && permits.available_permits() > 0 {
                continue; // more may be waiting
            }
            // A few free slots wait out the cooldown (or more slots freeing);
            // otherwise the poll interval, a wake-up or a freed slot.
            let wait = next_claim.unwrap_or(self.config.poll_interval);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            }
        }
        while in_flight.join_next().await.is_some() {}
        // Every executor handed its result over: the last batch is committed
        // before the runner returns.
        drop(results);
        let _ = completer.await;
        let _ = heartbeat.await;
    }

    fn lease_ms(&self) -> u64 {
        self.config.lease.as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_honours_retry_after() {
        let base = Duration::from_secs(1);
        assert_eq!(backoff(base, 1, Some(Duration::MAX)), MAX_ASKED_DELAY);
        assert_eq!(backoff(base, 1, None), Duration::from_secs(1));
        assert_eq!(backoff(base, 3, None), Duration::from_secs(4));
        assert_eq!(backoff(base, 30, None), MAX_BACKOFF);
        assert_eq!(
            backoff(base, 1, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
    }
}

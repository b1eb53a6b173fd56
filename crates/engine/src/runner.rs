//! The background runner: picks up queued runs, claims each with a
//! compare-and-set (`queued → running`, so two runners never execute one
//! run), executes its handler while heartbeating, and closes runs the handler
//! left open.
//!
//! Pickup is woken at once by [`Runner::notifier`] for runs started in this
//! process, and by polling for runs started elsewhere (the CLI, another node).

use crate::{HandlerError, HandlerRegistry, RunContext};
use opsledger_core::{Failure, Outcome};
use opsledger_store::{Completion, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Runs executed at once by this process.
    pub concurrency: usize,
    /// How often to look for queued runs when not woken.
    pub poll_interval: Duration,
    /// How often a running run's heartbeat is written (`OPSLEDGER_HEARTBEAT_INTERVAL_MS`).
    pub heartbeat_interval: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            concurrency: 4,
            poll_interval: Duration::from_millis(500),
            heartbeat_interval: Duration::from_secs(5),
        }
    }
}

pub struct Runner {
    store: Store,
    registry: HandlerRegistry,
    config: RunnerConfig,
    wake: Arc<Notify>,
}

impl Runner {
    pub fn new(store: Store, registry: HandlerRegistry, config: RunnerConfig) -> Runner {
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

    /// Runs until `shutdown` is cancelled, then waits for in-flight runs'
    /// handlers to observe the cancellation and return.
    pub async fn run(self, shutdown: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let mut in_flight = JoinSet::new();
        loop {
            while in_flight.try_join_next().is_some() {}
            let free = permits.available_permits();
            if free > 0 {
                match self.store.queued_run_ids(free as u32).await {
                    Ok(ids) => {
                        for id in ids {
                            let Ok(permit) = permits.clone().try_acquire_owned() else {
                                break;
                            };
                            match self.store.claim_run(&id).await {
                                Ok(Some(run)) => {
                                    let exec = Execution {
                                        store: self.store.clone(),
                                        registry: self.registry.clone(),
                                        heartbeat_interval: self.config.heartbeat_interval,
                                        shutdown: shutdown.clone(),
                                    };
                                    in_flight.spawn(async move {
                                        exec.execute(run).await;
                                        drop(permit);
                                    });
                                }
                                Ok(None) => {} // another runner claimed it
                                Err(e) => tracing::warn!(run = %id, error = %e, "claim failed"),
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "looking for queued runs failed"),
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.config.poll_interval) => {}
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            }
        }
        while in_flight.join_next().await.is_some() {}
    }
}

struct Execution {
    store: Store,
    registry: HandlerRegistry,
    heartbeat_interval: Duration,
    shutdown: CancellationToken,
}

impl Execution {
    async fn execute(self, run: opsledger_core::Run) {
        let id = run.id.clone();
        let run_type = run.run_type;
        let Some(handler) = self.registry.get(run_type) else {
            self.close_failed(
                &id,
                Failure::new("no_handler", format!("this node cannot execute {run_type} runs")),
            )
            .await;
            return;
        };
        let ctx = RunContext {
            run,
            store: self.store.clone(),
            shutdown: self.shutdown.clone(),
        };
        let heartbeat = {
            let store = self.store.clone();
            let id = id.clone();
            let every = self.heartbeat_interval;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    match store.heartbeat(&id).await {
                        Ok(true) => {}
                        Ok(false) => break, // completed
                        Err(e) => tracing::warn!(run = %id, error = %e, "heartbeat failed"),
                    }
                }
            })
        };
        let span = tracing::info_span!("run", id = %id, r#type = %run_type);
        // Spawned, so that a panicking handler is contained and reported.
        let task = async move { handler.execute(ctx).await };
        let result = tokio::spawn(tracing::Instrument::instrument(task, span)).await;
        heartbeat.abort();
        let failure = match result {
            Ok(Ok(())) => Failure::new(
                "handler_left_run_open",
                "the handler returned without completing the run",
            ),
            Ok(Err(HandlerError::Failed { code, message })) => Failure::new(code, message),
            Ok(Err(HandlerError::Store(e))) => Failure::new("store_error", e.to_string()),
            Err(join) if join.is_panic() => Failure::new("handler_panicked", "the handler panicked"),
            Err(_) => Failure::new("handler_aborted", "the handler was aborted"),
        };
        if self.shutdown.is_cancelled() {
            // Shutting down: leave an open run to be resumed or reconciled,
            // rather than failing work that another node can finish.
            return;
        }
        self.close_failed(&id, failure).await;
    }

    /// Closes the run as failed unless it is already completed (compare-and-set).
    async fn close_failed(&self, id: &str, failure: Failure) {
        let completion = Completion::new(Outcome::Failed).with_failure(failure.clone());
        match self.store.complete_run(id, completion).await {
            Ok(opsledger_store::CompleteResult::Completed(_)) => {
                tracing::warn!(run = %id, code = %failure.code, "{}", failure.message)
            }
            Ok(_) => {}
            Err(e) => tracing::error!(run = %id, error = %e, "could not close run"),
        }
    }
}

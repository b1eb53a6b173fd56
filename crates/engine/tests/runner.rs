//! The runner on both databases: every claimed job is executed and ended;
//! every run reaches a terminal outcome even when its handler misbehaves;
//! transient failures are retried with backoff; fan-out units are counted
//! once and complete their parent; a stale run is reconciled.

use async_trait::async_trait;
use opsledger_core::{Outcome, Run, RunStatus, RunType};
use opsledger_engine::{
    Handler, HandlerError, Registry, RunContext, Runner, RunnerConfig, SweepConfig, UnitContext, UnitHandler,
    UnitResult,
};
use opsledger_store::{Completion, NewRun, Store, both_backends};
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Completes its run as succeeded and counts executions per run.
struct Counting(Arc<Mutex<HashMap<String, u32>>>);

#[async_trait]
impl Handler for Counting {
    async fn execute(&self, ctx: RunContext) -> Result<(), HandlerError> {
        *self.0.lock().unwrap().entry(ctx.run.id.clone()).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
        ctx.complete(Completion::new(Outcome::Succeeded)).await?;
        Ok(())
    }
}

struct LeavesOpen;
#[async_trait]
impl Handler for LeavesOpen {
    async fn execute(&self, _: RunContext) -> Result<(), HandlerError> {
        Ok(())
    }
}

struct Panics;
#[async_trait]
impl Handler for Panics {
    async fn execute(&self, _: RunContext) -> Result<(), HandlerError> {
        panic!("handler bug")
    }
}

struct Errors;
#[async_trait]
impl Handler for Errors {
    async fn execute(&self, _: RunContext) -> Result<(), HandlerError> {
        Err(HandlerError::permanent("provider_unavailable", "no provider"))
    }
}

/// Fails transiently until its third attempt.
struct Flaky(Arc<AtomicU32>);
#[async_trait]
impl Handler for Flaky {
    async fn execute(&self, ctx: RunContext) -> Result<(), HandlerError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        if ctx.attempt < 3 {
            return Err(HandlerError::transient(
                "provider_throttled",
                "429",
                Duration::from_millis(5),
            ));
        }
        ctx.complete(Completion::new(Outcome::Succeeded)).await?;
        Ok(())
    }
}

/// A fan-out parent planning `n` units.
struct Plan(usize);
#[async_trait]
impl Handler for Plan {
    async fn execute(&self, ctx: RunContext) -> Result<(), HandlerError> {
        let keys: Vec<String> = (0..self.0).map(|i| format!("u{i}")).collect();
        ctx.enqueue_units(&keys, 2).await?;
        Ok(())
    }
}

/// Units: every 5th fails permanently, every 7th fails once transiently.
struct Units(Arc<Mutex<HashMap<String, u32>>>);
#[async_trait]
impl UnitHandler for Units {
    async fn execute(&self, ctx: UnitContext) -> Result<UnitResult, HandlerError> {
        *self.0.lock().unwrap().entry(ctx.unit_key.clone()).or_default() += 1;
        let i: usize = ctx.unit_key[1..].parse().unwrap();
        if i.is_multiple_of(5) {
            return Err(HandlerError::permanent("policy_gone", "gone"));
        }
        if i.is_multiple_of(7) && ctx.attempt == 1 {
            return Err(HandlerError::transient(
                "provider_throttled",
                "429",
                Duration::ZERO,
            ));
        }
        Ok(UnitResult::succeeded())
    }
}

async fn start(store: &Store, ws: &str, tenants: &[String], t: RunType, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let new = NewRun::on_tenant(ws, &tenants[i % tenants.len()], t, "test", json!({}));
        ids.push(store.create_run(new).await.unwrap().into_run().id);
    }
    ids
}

async fn wait_all(store: &Store, ids: &[String]) -> Vec<Run> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut runs = Vec::new();
        for id in ids {
            runs.push(store.get_run(id).await.unwrap().unwrap());
        }
        if runs.iter().all(Run::is_completed) {
            return runs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "runs did not complete: {runs:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn config() -> RunnerConfig {
    RunnerConfig {
        concurrency: 4,
        poll_interval: Duration::from_millis(10),
        heartbeat_interval: Duration::from_millis(50),
        retry_base: Duration::from_millis(10),
        ..RunnerConfig::default()
    }
}

async fn workspace(store: &Store, tenants: usize) -> (String, Vec<String>) {
    let ws = store.create_workspace("ws").await.unwrap();
    let mut ids = Vec::new();
    for i in 0..tenants {
        ids.push(
            store
                .create_tenant(&ws.id, &format!("t{i}"), "demo:healthy")
                .await
                .unwrap()
                .id,
        );
    }
    (ws.id, ids)
}

fn spawn(store: &Store, registry: &Registry, shutdown: &CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(Runner::new(store.clone(), registry.clone(), config()).run(shutdown.clone()))
}

both_backends!(two_runners_execute_each_run_once, |store: Store| async move {
    let (ws, tenants) = workspace(&store, 30).await;
    let counts = Arc::new(Mutex::new(HashMap::new()));
    let mut registry = Registry::new();
    registry.handler(RunType::PolicySync, Arc::new(Counting(counts.clone())));
    let shutdown = CancellationToken::new();
    let a = spawn(&store, &registry, &shutdown);
    let b = spawn(&store, &registry, &shutdown);
    let ids = start(&store, &ws, &tenants, RunType::PolicySync, 30).await;
    let runs = wait_all(&store, &ids).await;
    shutdown.cancel();
    a.await.unwrap();
    b.await.unwrap();
    assert!(runs.iter().all(|r| r.outcome == Outcome::Succeeded));
    let counts = counts.lock().unwrap().clone();
    assert_eq!(counts.len(), 30);
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    for id in &ids {
        assert_eq!(store.job_tally(id).await.unwrap().completed, 1);
    }
});

both_backends!(
    misbehaving_handlers_still_close_their_runs,
    |store: Store| async move {
        let (ws, t) = workspace(&store, 1).await;
        let mut registry = Registry::new();
        registry.handler(RunType::PolicySync, Arc::new(LeavesOpen));
        registry.handler(RunType::BackupSetUpdate, Arc::new(Panics));
        registry.handler(RunType::ReviewPackGenerate, Arc::new(Errors));
        let shutdown = CancellationToken::new();
        let runner = spawn(&store, &registry, &shutdown);
        let mut ids = Vec::new();
        for ty in [
            RunType::PolicySync,
            RunType::BackupSetUpdate,
            RunType::ReviewPackGenerate,
        ] {
            ids.extend(start(&store, &ws, &t, ty, 1).await);
        }
        let runs = wait_all(&store, &ids).await;
        shutdown.cancel();
        runner.await.unwrap();
        let codes: Vec<_> = runs
            .iter()
            .map(|r| (r.outcome, r.failures[0].code.as_str()))
            .collect();
        assert_eq!(
            codes,
            vec![
                (Outcome::Failed, "handler_left_run_open"),
                (Outcome::Failed, "handler_panicked"),
                (Outcome::Failed, "provider_unavailable"),
            ]
        );
    }
);

both_backends!(
    a_type_this_node_cannot_run_waits_for_one_that_can,
    |store: Store| async move {
        let (ws, t) = workspace(&store, 1).await;
        // A node without the review pack family (no file store): it runs
        // its policy syncs and never claims the pack.
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let mut partial = Registry::new();
        partial.handler(RunType::PolicySync, Arc::new(Counting(counts.clone())));
        let shutdown = CancellationToken::new();
        let runner = spawn(&store, &partial, &shutdown);
        let pack = start(&store, &ws, &t, RunType::ReviewPackGenerate, 1).await;
        let syncs = start(&store, &ws, &t, RunType::PolicySync, 3).await;
        wait_all(&store, &syncs).await;
        let waiting = store.get_run(&pack[0]).await.unwrap().unwrap();
        assert_eq!(
            (waiting.status, waiting.outcome),
            (RunStatus::Queued, Outcome::Pending),
            "claimed past the syncs started after it: {waiting:?}"
        );
        shutdown.cancel();
        runner.await.unwrap();
        // A node that can run it does.
        let mut full = Registry::new();
        full.handler(RunType::ReviewPackGenerate, Arc::new(Counting(counts.clone())));
        let shutdown = CancellationToken::new();
        let runner = spawn(&store, &full, &shutdown);
        let done = wait_all(&store, &pack).await;
        shutdown.cancel();
        runner.await.unwrap();
        assert_eq!(done[0].outcome, Outcome::Succeeded, "{:?}", done[0].failures);
    }
);

both_backends!(
    transient_failures_are_retried_with_backoff,
    |store: Store| async move {
        let (ws, t) = workspace(&store, 1).await;
        let calls = Arc::new(AtomicU32::new(0));
        let mut registry = Registry::new();
        registry.handler(RunType::PolicySync, Arc::new(Flaky(calls.clone())));
        let shutdown = CancellationToken::new();
        let runner = spawn(&store, &registry, &shutdown);
        let ids = start(&store, &ws, &t, RunType::PolicySync, 1).await;
        let runs = wait_all(&store, &ids).await;
        shutdown.cancel();
        runner.await.unwrap();
        assert_eq!(runs[0].outcome, Outcome::Succeeded);
        assert_eq!(calls.load(Ordering::SeqCst), 3, "max_attempts is 3");
    }
);

both_backends!(
    fan_out_counts_each_unit_once_and_completes_the_parent,
    |store: Store| async move {
        let (ws, t) = workspace(&store, 1).await;
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let mut registry = Registry::new();
        registry
            .handler(RunType::BackupSetAddPolicies, Arc::new(Plan(70)))
            .unit_handler(RunType::BackupSetAddPolicies, Arc::new(Units(seen.clone())));
        let shutdown = CancellationToken::new();
        let a = spawn(&store, &registry, &shutdown);
        let b = spawn(&store, &registry, &shutdown);
        let ids = start(&store, &ws, &t, RunType::BackupSetAddPolicies, 1).await;
        let run = wait_all(&store, &ids).await.pop().unwrap();
        shutdown.cancel();
        a.await.unwrap();
        b.await.unwrap();
        let c = run.summary_counts;
        // 14 of 70 are multiples of 5 (permanent failures); multiples of 7 succeed on retry.
        assert_eq!(
            (c.total, c.processed, c.succeeded, c.failed),
            (Some(70), Some(70), Some(56), Some(14))
        );
        assert_eq!(run.outcome, Outcome::PartiallySucceeded);
        assert_eq!(store.recorded_units(&run.id).await.unwrap().len(), 70);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.get("u7"), Some(&2), "retried once");
        assert_eq!(seen.get("u5"), Some(&1), "a permanent failure is not retried");
        let tally = store.job_tally(&run.id).await.unwrap();
        assert_eq!(
            (tally.completed, tally.failed, tally.available, tally.running),
            (57, 14, 0, 0)
        );
    }
);

both_backends!(zero_unit_fan_out_succeeds_at_once, |store: Store| async move {
    let (ws, t) = workspace(&store, 1).await;
    let mut registry = Registry::new();
    registry
        .handler(RunType::BackupSetAddPolicies, Arc::new(Plan(0)))
        .unit_handler(RunType::BackupSetAddPolicies, Arc::new(Units(Default::default())));
    let shutdown = CancellationToken::new();
    let runner = spawn(&store, &registry, &shutdown);
    let ids = start(&store, &ws, &t, RunType::BackupSetAddPolicies, 1).await;
    let run = wait_all(&store, &ids).await.pop().unwrap();
    shutdown.cancel();
    runner.await.unwrap();
    assert_eq!(
        (run.outcome, run.summary_counts.total),
        (Outcome::Succeeded, Some(0))
    );
});

both_backends!(
    graceful_shutdown_releases_without_spending_an_attempt,
    |store: Store| async move {
        struct Slow;
        #[async_trait]
        impl Handler for Slow {
            async fn execute(&self, ctx: RunContext) -> Result<(), HandlerError> {
                ctx.cancel.cancelled().await;
                Ok(())
            }
        }
        let (ws, t) = workspace(&store, 1).await;
        let mut registry = Registry::new();
        registry.handler(RunType::PolicySync, Arc::new(Slow));
        let shutdown = CancellationToken::new();
        let runner = spawn(&store, &registry, &shutdown);
        let ids = start(&store, &ws, &t, RunType::PolicySync, 1).await;
        while store.job_tally(&ids[0]).await.unwrap().running == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        shutdown.cancel();
        runner.await.unwrap();
        let tally = store.job_tally(&ids[0]).await.unwrap();
        assert_eq!(
            (tally.available, tally.running),
            (1, 0),
            "released for another node"
        );
        let job = store.claim_jobs("next", 1, 60_000).await.unwrap().pop().unwrap();
        assert_eq!(job.attempt, 1);
        assert!(!store.get_run(&ids[0]).await.unwrap().unwrap().is_completed());
    }
);

both_backends!(
    sweep_reconciles_stale_runs_fail_closed,
    |store: Store| async move {
        let (ws, t) = workspace(&store, 1).await;
        // A policy.sync whose worker died: its job leased and expired, no attempts left.
        let id = start(&store, &ws, &t, RunType::PolicySync, 1)
            .await
            .pop()
            .unwrap();
        for _ in 0..3 {
            let job = store.claim_jobs("dead", 1, 1).await.unwrap().pop().unwrap();
            tokio::time::sleep(Duration::from_millis(3)).await;
            if !job.is_last_attempt() {
                store.rescue_expired_jobs(10).await.unwrap();
            }
        }
        let config = SweepConfig {
            heartbeat_timeout_ms: Some(1),
            queue_timeout_ms: Some(60_000),
            batch: 100,
            job_retention_ms: None,
        };
        let registry = Registry::new();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let report = opsledger_engine::sweep_once(&store, &registry, &config)
            .await
            .unwrap();
        assert_eq!(report.run_jobs_exhausted, 1);
        assert_eq!(report.decisions.len(), 1);
        assert_eq!(report.decisions[0].result.reason_code, "stale_no_proof");
        let run = store.get_run(&id).await.unwrap().unwrap();
        assert_eq!(run.outcome, Outcome::Failed);
        let again = opsledger_engine::sweep_once(&store, &registry, &config)
            .await
            .unwrap();
        assert!(again.decisions.is_empty(), "a second pass finds nothing");
        assert_eq!(store.get_run(&id).await.unwrap().unwrap().context, run.context);
    }
);

/// An adapter that never decides: its runs stay candidates.
struct Undecided;

#[async_trait]
impl opsledger_engine::ReconciliationAdapter for Undecided {
    fn name(&self) -> &'static str {
        "undecided"
    }
    async fn reconcile(
        &self,
        _: &Run,
        _: &opsledger_store::proof::ProofReader,
    ) -> Result<opsledger_core::reconcile::AdapterResult, opsledger_store::StoreError> {
        Ok(opsledger_core::reconcile::AdapterResult::new(
            opsledger_core::reconcile::Verdict::NotReconciled,
            "undecided",
            "no decision",
        ))
    }
}

both_backends!(
    one_sweep_pass_reaches_every_stale_run_page_by_page,
    |store: Store| async move {
        let (ws, tenants) = workspace(&store, 7).await;
        // Seven runs queued past the timeout; the inventory syncs stay open
        // (their adapter cannot decide), which must not stop the pages.
        let mut open = start(&store, &ws, &tenants[..2], RunType::InventorySync, 2).await;
        let closed = start(&store, &ws, &tenants[2..], RunType::PolicySync, 5).await;
        open.sort();
        let mut registry = Registry::new();
        registry.adapter(RunType::InventorySync, Arc::new(Undecided));
        let config = SweepConfig {
            heartbeat_timeout_ms: Some(60_000),
            queue_timeout_ms: Some(1),
            batch: 2,
            job_retention_ms: None,
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let report = opsledger_engine::sweep_once(&store, &registry, &config)
            .await
            .unwrap();
        assert_eq!(report.decisions.len(), 7, "{report:?}");
        for id in &closed {
            let run = store.get_run(id).await.unwrap().unwrap();
            assert_eq!(run.outcome, Outcome::Failed);
        }
        for id in &open {
            assert!(!store.get_run(id).await.unwrap().unwrap().is_completed());
        }
        let again = opsledger_engine::sweep_once(&store, &registry, &config)
            .await
            .unwrap();
        let mut seen: Vec<String> = again.decisions.iter().map(|d| d.run_id.clone()).collect();
        seen.sort();
        assert_eq!(seen, open, "only the undecided runs remain candidates");
    }
);

both_backends!(
    cancelling_a_run_stops_its_running_handler,
    |store: Store| async move {
        /// Counts its start (0 → 1), waits for its cancel token, and counts
        /// that it saw it (1 → 2).
        struct UntilCancelled(Arc<AtomicU32>);
        #[async_trait]
        impl Handler for UntilCancelled {
            async fn execute(&self, ctx: RunContext) -> Result<(), HandlerError> {
                self.0.fetch_add(1, Ordering::SeqCst);
                ctx.cancel.cancelled().await;
                self.0.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        }
        let (ws, t) = workspace(&store, 1).await;
        let seen = Arc::new(AtomicU32::new(0));
        let mut registry = Registry::new();
        registry.handler(RunType::PolicySync, Arc::new(UntilCancelled(seen.clone())));
        let shutdown = CancellationToken::new();
        let runner = spawn(&store, &registry, &shutdown);
        let id = start(&store, &ws, &t, RunType::PolicySync, 1)
            .await
            .pop()
            .unwrap();
        while seen.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The handler is running. An operator cancels through the closing
        // write, as the API does.
        let cancelled = store
            .complete_run(&id, Completion::new(Outcome::Cancelled))
            .await
            .unwrap();
        assert!(matches!(cancelled, opsledger_store::CompleteResult::Completed(_)));
        // The next heartbeat (50 ms here) delivers it to the handler.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while store.job_tally(&id).await.unwrap().cancelled == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the job was not cancelled"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(seen.load(Ordering::SeqCst), 2, "the handler saw the cancellation");
        shutdown.cancel();
        runner.await.unwrap();
        let run = store.get_run(&id).await.unwrap().unwrap();
        assert_eq!(
            run.outcome,
            Outcome::Cancelled,
            "nothing overwrote the cancellation"
        );
        let tally = store.job_tally(&id).await.unwrap();
        assert_eq!((tally.running, tally.available, tally.cancelled), (0, 0, 1));
    }
);

both_backends!(
    a_stalled_attempt_cannot_close_a_run_another_worker_holds,
    |store: Store| async move {
        /// Attempt 1 stalls past its lease; meanwhile its job is rescued and
        /// claimed by worker B; then attempt 1 fails permanently.
        struct StallsThenFails(Arc<Mutex<Option<opsledger_store::jobs::Fence>>>, Store);
        #[async_trait]
        impl Handler for StallsThenFails {
            async fn execute(&self, _: RunContext) -> Result<(), HandlerError> {
                tokio::time::sleep(Duration::from_millis(300)).await; // lease is 100 ms
                assert_eq!(self.1.rescue_expired_jobs(10).await.unwrap().retried, 1);
                let b = self.1.claim_jobs("B", 1, 60_000).await.unwrap().pop().unwrap();
                *self.0.lock().unwrap() = Some(b.fence);
                Err(HandlerError::permanent(
                    "provider_gone",
                    "the tenant answered 404",
                ))
            }
        }
        let (ws, t) = workspace(&store, 1).await;
        let b = Arc::new(Mutex::new(None));
        let mut registry = Registry::new();
        registry.handler(
            RunType::PolicySync,
            Arc::new(StallsThenFails(b.clone(), store.clone())),
        );
        let config = RunnerConfig {
            concurrency: 1,
            poll_interval: Duration::from_millis(10),
            heartbeat_interval: Duration::from_secs(10),
            lease: Duration::from_millis(100),
            ..RunnerConfig::default()
        };
        let shutdown = CancellationToken::new();
        let runner = tokio::spawn(Runner::new(store.clone(), registry, config).run(shutdown.clone()));
        let id = start(&store, &ws, &t, RunType::PolicySync, 1)
            .await
            .pop()
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let fence = loop {
            if let Some(f) = b.lock().unwrap().clone() {
                break f;
            }
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        // Give attempt 1's failure time to be handled.
        tokio::time::sleep(Duration::from_millis(200)).await;
        shutdown.cancel();
        runner.await.unwrap();
        let run = store.get_run(&id).await.unwrap().unwrap();
        assert!(!run.is_completed(), "closed under B's live lease: {run:?}");
        assert!(store.job_is_held(&fence).await.unwrap(), "B still holds the job");
        // B's outcome is the one that counts.
        let done = opsledger_store::testing::lease(&store, &fence, &id)
            .await
            .complete(Completion::new(Outcome::Succeeded))
            .await
            .unwrap();
        assert_eq!(done.run().outcome, Outcome::Succeeded);
    }
);

both_backends!(
    work_done_before_a_shutdown_is_finished_not_given_back,
    |store: Store| async move {
        /// Completes its run, then is still around when the shutdown comes.
        struct CompletesThenLingers(Arc<AtomicU32>);
        #[async_trait]
        impl Handler for CompletesThenLingers {
            async fn execute(&self, ctx: RunContext) -> Result<(), HandlerError> {
                ctx.complete(Completion::new(Outcome::Succeeded)).await?;
                self.0.fetch_add(1, Ordering::SeqCst);
                ctx.cancel.cancelled().await;
                Ok(())
            }
        }
        let (ws, t) = workspace(&store, 1).await;
        let done = Arc::new(AtomicU32::new(0));
        let mut registry = Registry::new();
        registry.handler(RunType::PolicySync, Arc::new(CompletesThenLingers(done.clone())));
        let config = RunnerConfig {
            heartbeat_interval: Duration::from_secs(10),
            ..config()
        };
        let shutdown = CancellationToken::new();
        let runner = tokio::spawn(Runner::new(store.clone(), registry, config).run(shutdown.clone()));
        let id = start(&store, &ws, &t, RunType::PolicySync, 1)
            .await
            .pop()
            .unwrap();
        while done.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        shutdown.cancel();
        runner.await.unwrap();
        let tally = store.job_tally(&id).await.unwrap();
        assert_eq!(
            (tally.completed, tally.available),
            (1, 0),
            "a finished job is completed, not released: {tally:?}"
        );
    }
);

both_backends!(
    a_heartbeat_that_finds_the_run_closed_by_its_own_handler_does_not_cancel_the_job,
    |store: Store| async move {
        /// Completes its run, then lingers past several heartbeats.
        struct CompletesThenLingers;
        #[async_trait]
        impl Handler for CompletesThenLingers {
            async fn execute(&self, ctx: RunContext) -> Result<(), HandlerError> {
                ctx.complete(Completion::new(Outcome::Succeeded)).await?;
                ctx.cancel.cancelled().await; // the next heartbeat finds the run closed
                Ok(())
            }
        }
        let (ws, t) = workspace(&store, 1).await;
        let mut registry = Registry::new();
        registry.handler(RunType::PolicySync, Arc::new(CompletesThenLingers));
        let config = RunnerConfig {
            heartbeat_interval: Duration::from_millis(20),
            ..config()
        };
        let shutdown = CancellationToken::new();
        let runner = tokio::spawn(Runner::new(store.clone(), registry, config).run(shutdown.clone()));
        let id = start(&store, &ws, &t, RunType::PolicySync, 1)
            .await
            .pop()
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let tally = loop {
            let tally = store.job_tally(&id).await.unwrap();
            if tally.running + tally.available == 0 && tally.completed + tally.cancelled > 0 {
                break tally;
            }
            assert!(tokio::time::Instant::now() < deadline, "{tally:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        shutdown.cancel();
        runner.await.unwrap();
        assert_eq!((tally.completed, tally.cancelled), (1, 0), "{tally:?}");
        assert_eq!(
            store.get_run(&id).await.unwrap().unwrap().outcome,
            Outcome::Succeeded
        );
    }
);

/// A composite's run job: one `inventory.sync` child per tenant.
struct SyncEveryTenant(Vec<String>);
#[async_trait]
impl Handler for SyncEveryTenant {
    async fn execute(&self, ctx: RunContext) -> Result<(), HandlerError> {
        let children: Vec<_> = self
            .0
            .iter()
            .map(|t| opsledger_store::children::NewChild {
                run_type: RunType::InventorySync,
                tenant_id: Some(t.clone()),
                params: json!({}),
            })
            .collect();
        ctx.enqueue_child_runs(&children).await?;
        Ok(())
    }
}

/// Succeeds on every tenant but the last, which it blocks.
struct BlocksTenant(String);
#[async_trait]
impl Handler for BlocksTenant {
    async fn execute(&self, ctx: RunContext) -> Result<(), HandlerError> {
        let outcome = if ctx.run.tenant_id.as_deref() == Some(self.0.as_str()) {
            Outcome::Blocked
        } else {
            Outcome::Succeeded
        };
        ctx.complete(Completion::new(outcome)).await?;
        Ok(())
    }
}

both_backends!(
    a_composite_is_closed_by_its_last_child_through_the_runner,
    |store: Store| async move {
        let (ws, tenants) = workspace(&store, 3).await;
        let mut registry = Registry::new();
        registry.handler(
            RunType::WorkspaceInventorySyncAll,
            Arc::new(SyncEveryTenant(tenants.clone())),
        );
        registry.handler(RunType::InventorySync, Arc::new(BlocksTenant(tenants[2].clone())));
        let parent = store
            .create_run(NewRun {
                workspace_id: ws.clone(),
                tenant_id: None,
                parent_id: None,
                run_type: RunType::WorkspaceInventorySyncAll,
                initiator: "test".into(),
                context: json!({"params": {}}),
            })
            .await
            .unwrap()
            .into_run()
            .id;
        let shutdown = CancellationToken::new();
        let runner = spawn(&store, &registry, &shutdown);
        let done = wait_all(&store, std::slice::from_ref(&parent)).await;
        shutdown.cancel();
        runner.await.unwrap();
        // The parent's job ended without closing it; its children did.
        assert_eq!(done[0].outcome, Outcome::PartiallySucceeded, "{:?}", done[0]);
        let children = store.children_of(&parent).await.unwrap();
        assert_eq!(children.len(), 3);
        assert!(children.iter().all(Run::is_completed));
        let tally = store.job_tally(&parent).await.unwrap();
        assert_eq!((tally.completed, tally.failed), (1, 0), "{tally:?}");
        let progress = opsledger_core::progress::progress_of(&done[0], &children);
        assert_eq!(progress.mode, opsledger_core::ProgressMode::Composite);
    }
);

/// `u1` hangs in a call that never returns and ignores its cancel token;
/// `u2` is slow (longer than the stall timeout in all) but shows progress;
/// the rest succeed at once.
struct HungAndSlow;
#[async_trait]
impl UnitHandler for HungAndSlow {
    async fn execute(&self, ctx: UnitContext) -> Result<UnitResult, HandlerError> {
        match ctx.unit_key.as_str() {
            "u1" => std::future::pending().await,
            "u2" => {
                for _ in 0..12 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    ctx.liveness.mark();
                }
                Ok(UnitResult::succeeded())
            }
            _ => Ok(UnitResult::succeeded()),
        }
    }
}

both_backends!(
    a_hung_handler_is_cancelled_and_retried_but_a_slow_working_one_is_left_alone,
    |store: Store| async move {
        let (ws, t) = workspace(&store, 1).await;
        let mut registry = Registry::new();
        registry
            .handler(RunType::BackupSetAddPolicies, Arc::new(Plan(4)))
            .unit_handler(RunType::BackupSetAddPolicies, Arc::new(HungAndSlow));
        let shutdown = CancellationToken::new();
        let config = RunnerConfig {
            stall_timeout: Some(Duration::from_millis(250)),
            cancel_grace: Duration::from_millis(50),
            ..config()
        };
        let runner = tokio::spawn(Runner::new(store.clone(), registry, config).run(shutdown.clone()));
        let ids = start(&store, &ws, &t, RunType::BackupSetAddPolicies, 1).await;
        let runs = wait_all(&store, &ids).await;
        shutdown.cancel();
        runner.await.unwrap();
        let run = &runs[0];
        assert_eq!(run.outcome, Outcome::PartiallySucceeded, "{run:?}");
        let c = run.summary_counts;
        assert_eq!(
            (c.processed, c.succeeded, c.failed),
            (Some(4), Some(3), Some(1)),
            "{run:?}"
        );
        let stalled: Vec<_> = run
            .failures
            .iter()
            .filter(|f| f.code == "handler_stalled")
            .collect();
        assert_eq!(stalled.len(), 1, "{:?}", run.failures);
        assert_eq!(stalled[0].unit.as_deref(), Some("u1"));
        // Both of u1's attempts were spent; u2 needed one.
        let tally = store.job_tally(&run.id).await.unwrap();
        assert_eq!((tally.completed, tally.failed), (4, 1), "{tally:?}");
    }
);

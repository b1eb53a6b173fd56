//! `backup_set.update` and `backup_set.delete` end to end on both databases:
//! through in-process runners for what a run does, and by hand (claimed
//! jobs, handlers called with their leases) where a test must stop a worker
//! at a precise point — a crash between a unit's work and its commit, a
//! restore appearing after a delete planned its units.

use opsledger_core::{Outcome, Run, RunStatus, RunType, UnitOutcome};
use opsledger_engine::reconciler::reconcile_run;
use opsledger_engine::{Liveness, RunContext, Runner, RunnerConfig, UnitContext};
use opsledger_providers::ProviderSettings;
use opsledger_store::artifacts::UnitArtifact;
use opsledger_store::backups::BackupItem;
use opsledger_store::jobs::{ClaimedJob, JobEnd};
use opsledger_store::testing;
use opsledger_store::{ContextPatch, NewRun, Store, StoreError, UnitRecord, both_backends};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Runners executing every family, until stopped.
struct Runners {
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Runners {
    fn start(store: &Store, settings: &ProviderSettings, count: usize) -> Runners {
        let registry = opsledger_families::registry(settings.clone());
        let config = RunnerConfig {
            concurrency: 4,
            poll_interval: Duration::from_millis(10),
            ..Default::default()
        };
        let shutdown = CancellationToken::new();
        let tasks = (0..count)
            .map(|_| {
                tokio::spawn(
                    Runner::new(store.clone(), registry.clone(), config.clone()).run(shutdown.clone()),
                )
            })
            .collect();
        Runners { shutdown, tasks }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            t.await.unwrap();
        }
    }
}

async fn wait(store: &Store, id: &str) -> Run {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let r = store.get_run(id).await.unwrap().unwrap();
        if r.is_completed() {
            return r;
        }
        assert!(tokio::time::Instant::now() < deadline, "{r:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Env {
    store: Store,
    ws: String,
    tenant: String,
}

async fn env(store: Store) -> Env {
    let ws = store.create_workspace("ws").await.unwrap().id;
    let tenant = store
        .create_tenant(&ws, "contoso", "demo:healthy")
        .await
        .unwrap()
        .id;
    Env { store, ws, tenant }
}

impl Env {
    async fn start(&self, tenant: &str, t: RunType, params: Value) -> String {
        let new = NewRun::on_tenant(&self.ws, tenant, t, "test", params);
        self.store.create_run(new).await.unwrap().into_run().id
    }

    /// Starts a run and executes it (and whatever else is queued) to its end.
    async fn run(&self, tenant: &str, t: RunType, params: Value) -> Run {
        let id = self.start(tenant, t, params).await;
        let runners = Runners::start(&self.store, &ProviderSettings::default(), 2);
        let run = wait(&self.store, &id).await;
        runners.stop().await;
        run
    }

    /// Inventory, then a backup of every policy of the tenant: the set's id.
    async fn backup(&self) -> String {
        let sync = self.run(&self.tenant, RunType::InventorySync, json!({})).await;
        assert_eq!(sync.outcome, Outcome::Succeeded, "{:?}", sync.failures);
        let backup = self
            .run(&self.tenant, RunType::BackupSetAddPolicies, json!({}))
            .await;
        assert_eq!(backup.outcome, Outcome::Succeeded, "{:?}", backup.failures);
        backup.context["backup_set"]["id"].as_str().unwrap().to_owned()
    }

    /// A complete set of `n` items written through the writer path by hand
    /// (no provider): for tests about the set's lifecycle, not its content.
    async fn small_set(&self, n: usize) -> String {
        let id = self
            .start(&self.tenant, RunType::BackupSetAddPolicies, json!({}))
            .await;
        let job = claim_run_job(&self.store, &id).await;
        let lease = testing::lease(&self.store, &job.fence, &id).await;
        let set = lease.backup_set("fixture", None).await.unwrap();
        lease.init_total(n as u64).await.unwrap();
        let units: Vec<UnitRecord> = (0..n)
            .map(|i| {
                let payload = json!({"displayName": format!("Policy {i}"), "i": i});
                UnitRecord::new(format!("deviceConfigurations/p{i}"), UnitOutcome::Succeeded).with_artifact(
                    UnitArtifact::BackupItem(BackupItem {
                        policy_type: "deviceConfigurations".into(),
                        external_id: format!("p{i}"),
                        display_name: format!("Policy {i}"),
                        content_sha256: opsledger_core::normalize::content_hash(
                            &payload,
                            &Default::default(),
                        ),
                        refs: json!({}),
                        payload,
                    }),
                )
            })
            .collect();
        lease.record_units(&units).await.unwrap();
        let done = self.store.maybe_complete_bulk_run(&id).await.unwrap();
        assert_eq!(done.run().outcome, Outcome::Succeeded);
        self.store.complete_job(&job.fence).await.unwrap();
        set
    }

    async fn lifecycle(&self, set: &str) -> opsledger_store::backup_set_writes::SetLifecycle {
        self.store
            .backup_set_lifecycle(&self.ws, set)
            .await
            .unwrap()
            .unwrap()
    }

    async fn latest_complete(&self) -> Option<String> {
        self.store
            .latest_complete_backup_set(&self.tenant)
            .await
            .unwrap()
            .map(|s| s.id)
    }

    /// A restore of `params` held by a worker elsewhere: queued or running,
    /// never finishing while the test looks.
    async fn active_restore(&self, params: Value) -> String {
        let id = self.start(&self.tenant, RunType::BackupSetRestore, params).await;
        claim_run_job(&self.store, &id).await;
        id
    }
}

/// The run job of `id`, claimed by a worker that will never finish it.
async fn claim_run_job(store: &Store, id: &str) -> ClaimedJob {
    let jobs = store.claim_jobs("elsewhere", 1, 600_000).await.unwrap();
    let job = jobs.into_iter().next().expect("a job to claim");
    assert_eq!(job.run_id, id, "the run job claimed is the run's");
    job
}

/// Executes the run handler of `id` as the holder of `job` would.
async fn execute_parent(store: &Store, job: &ClaimedJob) {
    let registry = opsledger_families::registry(ProviderSettings::default());
    let run = store.get_run(&job.run_id).await.unwrap().unwrap();
    let run_type = run.run_type;
    let lease = testing::lease(store, &job.fence, &job.run_id).await;
    let ctx = RunContext::new(run, lease, job.attempt, CancellationToken::new());
    registry.get(run_type).unwrap().execute(ctx).await.unwrap();
}

fn counts(run: &Run) -> (Option<u64>, Option<u64>, Option<u64>, Option<u64>) {
    let c = &run.summary_counts;
    (c.total, c.processed, c.succeeded, c.failed)
}

fn reason(run: &Run) -> &str {
    run.failures.first().map_or("", |f| f.code.as_str())
}

both_backends!(an_update_renames_labels_and_locks, |store: Store| async move {
    let e = env(store).await;
    let set = e.small_set(3).await;
    let run = e
        .run(
            &e.tenant,
            RunType::BackupSetUpdate,
            json!({"backup_set_id": set, "name": "Quarterly", "label": "audit 2024"}),
        )
        .await;
    assert_eq!(run.outcome, Outcome::Succeeded, "{:?}", run.failures);
    assert_eq!(
        counts(&run),
        (None, None, None, None),
        "an activity: no total, no units"
    );
    assert_eq!(
        run.context["backup_set"],
        json!({"id": set, "name": "Quarterly", "label": "audit 2024", "retention_locked": false})
    );
    let s = e.lifecycle(&set).await;
    assert_eq!(
        (s.name.as_str(), s.label.as_deref()),
        ("Quarterly", Some("audit 2024"))
    );
    assert!(s.complete && !s.retention_locked, "{s:?}");

    // Lock alone: the rest stays.
    let run = e
        .run(
            &e.tenant,
            RunType::BackupSetUpdate,
            json!({"backup_set_id": set, "retention_locked": true}),
        )
        .await;
    assert_eq!(run.outcome, Outcome::Succeeded, "{:?}", run.failures);
    assert_eq!(run.context["backup_set"]["retention_locked"], true);
    assert_eq!(run.context["backup_set"]["name"], "Quarterly");
    let s = e.lifecycle(&set).await;
    assert!(
        s.retention_locked && s.complete,
        "a locked set is still complete: {s:?}"
    );

    // "" clears the label; a locked set may be renamed.
    let run = e
        .run(
            &e.tenant,
            RunType::BackupSetUpdate,
            json!({"backup_set_id": set, "label": "", "name": "Q3"}),
        )
        .await;
    assert_eq!(run.outcome, Outcome::Succeeded, "{:?}", run.failures);
    let s = e.lifecycle(&set).await;
    assert_eq!((s.name.as_str(), s.label, s.retention_locked), ("Q3", None, true));
    assert_eq!(run.context["backup_set"]["label"], Value::Null);

    // Started directly on another tenant (the API refuses it earlier): blocked, nothing written.
    let other = e
        .store
        .create_tenant(&e.ws, "fabrikam", "demo:healthy")
        .await
        .unwrap()
        .id;
    let run = e
        .run(
            &other,
            RunType::BackupSetUpdate,
            json!({"backup_set_id": set, "name": "stolen"}),
        )
        .await;
    assert_eq!(
        (run.outcome, reason(&run)),
        (Outcome::Blocked, "backup_set_other_tenant")
    );
    assert_eq!(e.lifecycle(&set).await.name, "Q3");
});

both_backends!(
    a_delete_is_counted_item_by_item_and_the_set_is_gone,
    |store: Store| async move {
        let e = env(store).await;
        let older = e.backup().await;
        let set = e.backup().await;
        let items = e.store.count_backup_items(&set).await.unwrap();
        // 138 generated, and 3 planted secret-bearing ones (providers/src/demo/planted.rs).
        assert_eq!(items, 141, "the healthy demo tenant's policies");
        assert_eq!(e.latest_complete().await.as_deref(), Some(set.as_str()));
        // Restore history of the set's items (a dry run records a result per item).
        let dry = e
            .run(
                &e.tenant,
                RunType::BackupSetRestore,
                json!({"backup_set_id": set, "dry_run": true}),
            )
            .await;
        assert!(
            matches!(dry.outcome, Outcome::Succeeded | Outcome::PartiallySucceeded),
            "{:?}",
            dry.failures
        );
        assert_eq!(
            e.store.restore_results_of(&dry.id).await.unwrap().len() as u64,
            items
        );

        // The delete, paced like a demo tenant's provider calls so it can be watched.
        let id = e
            .start(&e.tenant, RunType::BackupSetDelete, json!({"backup_set_id": set}))
            .await;
        let paced = ProviderSettings {
            demo_latency: Duration::from_millis(15),
            ..Default::default()
        };
        let runners = Runners::start(&e.store, &paced, 1);
        let (mut counting, mut hidden_while_running) = (None, None);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        let run = loop {
            let r = e.store.get_run(&id).await.unwrap().unwrap();
            if r.is_completed() {
                break r;
            }
            let c = &r.summary_counts;
            if r.status == RunStatus::Running
                && let (Some(total), Some(processed)) = (c.total, c.processed)
                && 0 < processed
                && processed < total
            {
                counting.get_or_insert((processed, total));
                // Being deleted: no restore is offered the set any more.
                if hidden_while_running.is_none() {
                    hidden_while_running = Some(e.latest_complete().await);
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "{r:?}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        runners.stop().await;
        let (processed, total) = counting.expect("observed while counting: 0 < processed < total");
        assert!(0 < processed && processed < total && total == items);
        assert_eq!(hidden_while_running, Some(Some(older.clone())));
        assert_eq!(run.outcome, Outcome::Succeeded, "{:?}", run.failures);
        assert_eq!(counts(&run), (Some(items), Some(items), Some(items), Some(0)));
        assert_eq!(run.context["backup_set_delete"]["items"], items);

        // The set and its items are gone; its tombstone names the run.
        assert_eq!(e.store.count_backup_items(&set).await.unwrap(), 0);
        let s = e.lifecycle(&set).await;
        assert!(s.deleted && !s.complete && !s.has_items, "{s:?}");
        assert_eq!(s.deleted_by_run_id.as_deref(), Some(id.as_str()));
        assert!(s.deleted_at.is_some());
        // Restore history is kept, without the items.
        let history = e.store.restore_results_of(&dry.id).await.unwrap();
        assert_eq!(history.len() as u64, items);
        assert!(
            history
                .iter()
                .all(|r| r.backup_item_id.is_none() && r.backup_set_id == set)
        );

        // A later restore without `backup_set_id` takes the older set.
        assert_eq!(e.latest_complete().await.as_deref(), Some(older.as_str()));
        let restore = e
            .run(&e.tenant, RunType::BackupSetRestore, json!({"dry_run": true}))
            .await;
        assert!(restore.summary_counts.total.is_some(), "{:?}", restore.failures);
        assert_eq!(restore.context["restore"]["backup_set_id"], older.as_str());
    }
);

both_backends!(
    a_locked_set_is_not_deleted_until_unlocked,
    |store: Store| async move {
        let e = env(store).await;
        let set = e.small_set(4).await;
        let lock = e
            .run(
                &e.tenant,
                RunType::BackupSetUpdate,
                json!({"backup_set_id": set, "retention_locked": true}),
            )
            .await;
        assert_eq!(lock.outcome, Outcome::Succeeded, "{:?}", lock.failures);
        // Started directly through the store (the API answers 409 first).
        let run = e
            .run(&e.tenant, RunType::BackupSetDelete, json!({"backup_set_id": set}))
            .await;
        assert_eq!(
            (run.outcome, reason(&run)),
            (Outcome::Blocked, "backup_set_locked")
        );
        assert_eq!(run.summary_counts.total, None, "refused before any plan");
        assert_eq!(e.store.count_backup_items(&set).await.unwrap(), 4);
        let s = e.lifecycle(&set).await;
        assert!(!s.deleted && s.complete && s.deleted_at.is_none(), "{s:?}");

        // An update that only unlocks, then the delete goes through.
        let unlock = e
            .run(
                &e.tenant,
                RunType::BackupSetUpdate,
                json!({"backup_set_id": set, "retention_locked": false}),
            )
            .await;
        assert_eq!(unlock.outcome, Outcome::Succeeded, "{:?}", unlock.failures);
        let run = e
            .run(&e.tenant, RunType::BackupSetDelete, json!({"backup_set_id": set}))
            .await;
        assert_eq!(run.outcome, Outcome::Succeeded, "{:?}", run.failures);
        assert_eq!(counts(&run), (Some(4), Some(4), Some(4), Some(0)));
        assert!(e.lifecycle(&set).await.deleted);
        // A deleted set is not updated (nor locked) any more.
        let late = e
            .run(
                &e.tenant,
                RunType::BackupSetUpdate,
                json!({"backup_set_id": set, "retention_locked": true}),
            )
            .await;
        assert_eq!(
            (late.outcome, reason(&late)),
            (Outcome::Blocked, "backup_set_not_found")
        );
    }
);

both_backends!(
    a_set_an_active_restore_reads_is_not_deleted,
    |store: Store| async move {
        let e = env(store).await;
        let set = e.small_set(3).await;
        // A restore that named the set at start, running on another worker.
        let named = e.active_restore(json!({"backup_set_id": set})).await;
        let run = e
            .run(&e.tenant, RunType::BackupSetDelete, json!({"backup_set_id": set}))
            .await;
        assert_eq!(
            (run.outcome, reason(&run)),
            (Outcome::Blocked, "backup_set_in_use")
        );
        assert!(run.failures[0].message.contains(&named), "{:?}", run.failures);
        assert_eq!(e.store.count_backup_items(&set).await.unwrap(), 3);
        e.store
            .cancel_run(&named, ContextPatch::new(["cancelled_by"], json!("test")))
            .await
            .unwrap();

        // One that resolved it as the tenant's latest complete set.
        let resolved = e.active_restore(json!({})).await;
        e.store
            .patch_context(
                &resolved,
                &[ContextPatch::new(["restore", "backup_set_id"], json!(set))],
            )
            .await
            .unwrap();
        let run = e
            .run(&e.tenant, RunType::BackupSetDelete, json!({"backup_set_id": set}))
            .await;
        assert_eq!(
            (run.outcome, reason(&run)),
            (Outcome::Blocked, "backup_set_in_use")
        );
        e.store
            .cancel_run(&resolved, ContextPatch::new(["cancelled_by"], json!("test")))
            .await
            .unwrap();

        // A restore of another set does not hold this one.
        let other = e.small_set(1).await;
        e.active_restore(json!({"backup_set_id": other})).await;
        let run = e
            .run(&e.tenant, RunType::BackupSetDelete, json!({"backup_set_id": set}))
            .await;
        assert_eq!(run.outcome, Outcome::Succeeded, "{:?}", run.failures);
        assert_eq!(e.store.count_backup_items(&other).await.unwrap(), 1);
    }
);

both_backends!(
    a_restore_started_after_the_plan_keeps_every_item,
    |store: Store| async move {
        let e = env(store).await;
        let set = e.small_set(5).await;
        let id = e
            .start(&e.tenant, RunType::BackupSetDelete, json!({"backup_set_id": set}))
            .await;
        let parent = claim_run_job(&e.store, &id).await;
        execute_parent(&e.store, &parent).await;
        assert_eq!(
            e.store.get_run(&id).await.unwrap().unwrap().summary_counts.total,
            Some(5)
        );
        // Planned: the set is being deleted, before any item is removed.
        let s = e.lifecycle(&set).await;
        assert!(s.deleted && s.deleted_at.is_none() && !s.complete, "{s:?}");
        assert_eq!(e.latest_complete().await, None);
        // An update of a set being deleted is refused.
        let update = e
            .start(
                &e.tenant,
                RunType::BackupSetUpdate,
                json!({"backup_set_id": set, "retention_locked": true}),
            )
            .await;
        let update_job = claim_run_job(&e.store, &update).await;
        execute_parent(&e.store, &update_job).await;
        let update = e.store.get_run(&update).await.unwrap().unwrap();
        assert_eq!(
            (update.outcome, reason(&update)),
            (Outcome::Blocked, "backup_set_not_found")
        );

        // A restore naming the set appears (its start raced the plan).
        e.active_restore(json!({"backup_set_id": set})).await;
        // The unit's own transaction refuses the deletion…
        let item = e.store.backup_item_ids(&e.ws, &set).await.unwrap().remove(0);
        let unit = UnitRecord::new(format!("item/{item}"), UnitOutcome::Succeeded).with_artifact(
            UnitArtifact::BackupItemDeleted {
                backup_set_id: set.clone(),
                item_id: item.clone(),
            },
        );
        let refused = testing::lease(&e.store, &parent.fence, &id)
            .await
            .record_units(&[unit])
            .await;
        assert!(matches!(refused, Err(StoreError::Conflict(_))), "{refused:?}");
        assert_eq!(e.store.count_backup_items(&set).await.unwrap(), 5);
        e.store.complete_job(&parent.fence).await.unwrap();

        // …and the units, run by the runtime, fail without removing anything.
        let runners = Runners::start(&e.store, &ProviderSettings::default(), 1);
        let run = wait(&e.store, &id).await;
        runners.stop().await;
        assert_eq!(run.outcome, Outcome::Failed, "{:?}", run.failures);
        assert_eq!(counts(&run), (Some(5), Some(5), Some(0), Some(5)));
        assert!(
            run.failures.iter().all(|f| f.code == "backup_set_in_use"),
            "{:?}",
            run.failures
        );
        assert_eq!(e.store.count_backup_items(&set).await.unwrap(), 5);
        // Nothing removed, the delete over: the set is as it was.
        let s = e.lifecycle(&set).await;
        assert!(!s.deleted && s.complete && s.deleted_at.is_none(), "{s:?}");
    }
);

both_backends!(
    a_delete_retried_after_a_crash_counts_each_item_once,
    |store: Store| async move {
        // Leases expire because the store's clock passes them, not by sleeping.
        let clock = opsledger_store::clock::ManualClock::new();
        let e = env(store.with_clock(Arc::new(clock.clone()))).await;
        let set = e.small_set(40).await;
        let registry = opsledger_families::registry(ProviderSettings::default());
        let id = e
            .start(&e.tenant, RunType::BackupSetDelete, json!({"backup_set_id": set}))
            .await;
        // A worker plans the units, takes 25 of them and dies: 15 committed,
        // 10 done in memory and lost before their commit.
        let parent = claim_run_job(&e.store, &id).await;
        execute_parent(&e.store, &parent).await;
        let units = e.store.claim_jobs("doomed", 25, 60_000).await.unwrap();
        assert_eq!(units.len(), 25);
        let mut committed = Vec::new();
        for (i, job) in units.iter().enumerate() {
            let lease = testing::lease(&e.store, &job.fence, &id).await;
            let ctx = UnitContext {
                run: job.head.clone().unwrap(),
                unit_key: job.unit_key.clone(),
                attempt: job.attempt,
                cancel: CancellationToken::new(),
                liveness: Liveness::default(),
                reads: lease.reads().clone(),
            };
            let result = registry
                .get_unit(RunType::BackupSetDelete)
                .unwrap()
                .execute(ctx)
                .await
                .unwrap();
            if i >= 15 {
                continue; // crashed before the flush
            }
            let record = UnitRecord {
                key: job.unit_key.clone(),
                outcome: result.outcome,
                failure: result.failure,
                context_patch: None,
                artifact: result.artifact,
            };
            e.store
                .finish_unit_job(&job.fence, &id, record.clone(), JobEnd::Completed)
                .await
                .unwrap();
            committed.push(record);
        }
        let run = e.store.get_run(&id).await.unwrap().unwrap();
        assert_eq!(counts(&run), (Some(40), Some(15), Some(15), Some(0)));
        assert_eq!(
            e.store.count_backup_items(&set).await.unwrap(),
            25,
            "a unit's work is its commit: the 10 lost results removed nothing"
        );
        // A duplicate delivery of a committed unit is not counted, and its
        // deletion is not written again (it would be refused: the item is gone).
        let again = testing::lease(&e.store, &parent.fence, &id)
            .await
            .record_units(&committed[..3])
            .await
            .unwrap();
        assert_eq!((again.recorded, again.duplicates), (0, 3));

        // The leases expire; the rescuer hands the jobs back; a new worker finishes.
        clock.advance(600_001);
        let rescued = e.store.rescue_expired_jobs(100).await.unwrap();
        assert_eq!(
            rescued.retried, 11,
            "the parent and the 10 lost units: {rescued:?}"
        );
        let runners = Runners::start(&e.store, &ProviderSettings::default(), 2);
        let run = wait(&e.store, &id).await;
        runners.stop().await;
        assert_eq!(run.outcome, Outcome::Succeeded, "{:?}", run.failures);
        assert_eq!(counts(&run), (Some(40), Some(40), Some(40), Some(0)));
        let ledger = e.store.recorded_units(&id).await.unwrap();
        assert_eq!(ledger.len(), 40);
        assert!(ledger.values().all(|o| *o == UnitOutcome::Succeeded));
        assert_eq!(e.store.count_backup_items(&set).await.unwrap(), 0);
        assert!(e.lifecycle(&set).await.deleted);
    }
);

both_backends!(
    an_emptied_set_is_deleted_by_the_close,
    |store: Store| async move {
        let e = env(store).await;
        let set = e.small_set(0).await;
        assert_eq!(
            e.latest_complete().await.as_deref(),
            Some(set.as_str()),
            "empty and complete"
        );
        let run = e
            .run(&e.tenant, RunType::BackupSetDelete, json!({"backup_set_id": set}))
            .await;
        assert_eq!(run.outcome, Outcome::Succeeded, "{:?}", run.failures);
        assert_eq!(run.summary_counts.total, None, "no unit, no plan");
        let s = e.lifecycle(&set).await;
        assert!(s.deleted && s.deleted_at.is_some(), "{s:?}");
        assert_eq!(e.latest_complete().await, None);
    }
);

both_backends!(
    stale_updates_and_deletes_fail_closed_despite_a_backup_set,
    |store: Store| async move {
        let e = env(store).await;
        let set = e.small_set(5).await;
        let registry = opsledger_families::registry(ProviderSettings::default());
        let stale = |id: String| {
            let (store, registry) = (e.store.clone(), registry.clone());
            async move {
                testing::exhaust_jobs(&store, &id).await.unwrap();
                let run = store.get_run(&id).await.unwrap().unwrap();
                let d = reconcile_run(&store, &registry, &run, Some("system"))
                    .await
                    .unwrap();
                assert_eq!(d.applied, "applied", "{d:?}");
                store.get_run(&id).await.unwrap().unwrap()
            }
        };
        let code = |r: &Run| {
            r.reconciliation().unwrap()["reason_code"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        let adapter = |r: &Run| {
            r.reconciliation().unwrap()["adapter"]
                .as_str()
                .unwrap()
                .to_owned()
        };

        // An update whose worker died: the complete set of its tenant is no proof.
        let update = e
            .start(
                &e.tenant,
                RunType::BackupSetUpdate,
                json!({"backup_set_id": set, "name": "renamed"}),
            )
            .await;
        claim_run_job(&e.store, &update).await;
        let run = stale(update).await;
        assert_eq!(
            (run.outcome, code(&run).as_str()),
            (Outcome::Failed, "stale_no_proof")
        );
        assert_eq!(adapter(&run), "generic_fail_closed");
        assert_eq!(e.lifecycle(&set).await.name, "fixture", "nothing was written");

        // A policy.sync whose worker died: the same complete set is no proof.
        let sync = e
            .start(
                &e.tenant,
                RunType::PolicySync,
                json!({"policy_id": "deviceConfigurations/x"}),
            )
            .await;
        claim_run_job(&e.store, &sync).await;
        let run = stale(sync).await;
        assert_eq!(
            (run.outcome, code(&run).as_str()),
            (Outcome::Failed, "stale_no_proof")
        );
        assert_eq!(adapter(&run), "generic_fail_closed");

        // A delete never started, and one that removed 2 of 5 items before dying.
        let queued = e
            .start(&e.tenant, RunType::BackupSetDelete, json!({"backup_set_id": set}))
            .await;
        let run = stale(queued).await;
        assert_eq!(
            (run.outcome, code(&run).as_str()),
            (Outcome::Failed, "stale_no_proof")
        );
        assert!(
            e.lifecycle(&set).await.complete,
            "a delete that removed nothing leaves the set"
        );

        let id = e
            .start(&e.tenant, RunType::BackupSetDelete, json!({"backup_set_id": set}))
            .await;
        let parent = claim_run_job(&e.store, &id).await;
        execute_parent(&e.store, &parent).await;
        let lease = testing::lease(&e.store, &parent.fence, &id).await;
        let items = e.store.backup_item_ids(&e.ws, &set).await.unwrap();
        let removed: Vec<UnitRecord> = items[..2]
            .iter()
            .map(|item| {
                UnitRecord::new(format!("item/{item}"), UnitOutcome::Succeeded).with_artifact(
                    UnitArtifact::BackupItemDeleted {
                        backup_set_id: set.clone(),
                        item_id: item.clone(),
                    },
                )
            })
            .collect();
        lease.record_units(&removed).await.unwrap();
        let run = stale(id).await;
        assert_eq!(
            (run.outcome, code(&run).as_str()),
            (Outcome::Failed, "stale_no_proof")
        );
        assert_eq!(adapter(&run), "generic_fail_closed");
        // What was removed stays removed and counted; the rest never attempted.
        assert_eq!(counts(&run), (Some(5), Some(5), Some(2), Some(3)));
        assert!(run.failures.iter().any(|f| f.code == "not_attempted"));
        assert_eq!(e.store.count_backup_items(&set).await.unwrap(), 3);
        let s = e.lifecycle(&set).await;
        assert!(
            s.deleted && s.has_items,
            "part-deleted: gone, its leftovers for another delete: {s:?}"
        );
    }
);

//! `backup.schedule.execute` on both databases: slots started by the
//! scheduler (its clock moved, not waited for) and executed by the runner on
//! each demo profile, counted by policy types into the run's own backup set;
//! and its reconciliation matrix, whose only proof is the run's own set.

use opsledger_core::{Outcome, Run, RunType, UnitOutcome};
use opsledger_engine::reconciler::reconcile_run;
use opsledger_engine::{Registry, Runner, RunnerConfig};
use opsledger_providers::ProviderSettings;
use opsledger_store::artifacts::UnitArtifact;
use opsledger_store::backups::BackupItem;
use opsledger_store::clock::ManualClock;
use opsledger_store::schedules::{Schedule, ScheduleSpec};
use opsledger_store::{ContextPatch, NewRun, Store, UnitRecord, both_backends, raw_on_pool};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn registry() -> Registry {
    opsledger_families::registry(ProviderSettings::default())
}

async fn run_until_done(store: &Store, id: &str) -> Run {
    let config = RunnerConfig {
        concurrency: 4,
        poll_interval: Duration::from_millis(10),
        ..Default::default()
    };
    let shutdown = CancellationToken::new();
    let runner = tokio::spawn(Runner::new(store.clone(), registry(), config).run(shutdown.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let done = loop {
        let r = store.get_run(id).await.unwrap().unwrap();
        if r.is_completed() {
            break r;
        }
        assert!(tokio::time::Instant::now() < deadline, "{r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    shutdown.cancel();
    runner.await.unwrap();
    done
}

async fn schedule(store: &Store, ws: &str, tenant: &str, name: &str) -> Schedule {
    let spec = ScheduleSpec {
        name: name.into(),
        run_type: RunType::BackupScheduleExecute,
        tenant_id: Some(tenant.into()),
        cron: "0 2 * * *".into(),
        timezone: "Europe/Brussels".into(),
        params: json!({}),
        retention_keep: None,
        enabled: true,
    };
    store.create_schedule(ws, &spec, "test").await.unwrap()
}

/// The store at a moved clock; the schedule's slot falls due and is started.
async fn fire(store: &Store, clock: &ManualClock) -> String {
    clock.advance(25 * 3_600_000);
    let tick = store.fire_due_schedules(10).await.unwrap();
    assert_eq!(tick.started.len(), 1, "{tick:?}");
    tick.started[0].clone()
}

both_backends!(each_profile_ends_as_its_backup_does, |store: Store| async move {
    let clock = ManualClock::new();
    let store = store.with_clock(Arc::new(clock.clone()));
    let ws = store.create_workspace("msp").await.unwrap().id;
    let profiles = [
        ("healthy", Outcome::Succeeded),
        ("partial", Outcome::PartiallySucceeded),
        ("blocked", Outcome::Blocked),
    ];
    let mut tenants = Vec::new();
    for (profile, _) in profiles {
        let tenant = store
            .create_tenant(&ws, profile, &format!("demo:{profile}"))
            .await
            .unwrap()
            .id;
        let s = schedule(&store, &ws, &tenant, profile).await;
        tenants.push((tenant, s));
    }
    clock.advance(25 * 3_600_000);
    let tick = store.fire_due_schedules(10).await.unwrap();
    assert_eq!(tick.started.len(), 3, "one slot, one run per schedule: {tick:?}");
    for ((profile, outcome), (tenant, s)) in profiles.into_iter().zip(&tenants) {
        let mut id = None;
        for r in &tick.started {
            if store.get_run(r).await.unwrap().unwrap().tenant_id.as_ref() == Some(tenant) {
                id = Some(r.clone());
            }
        }
        let run = run_until_done(&store, &id.unwrap()).await;
        assert_eq!(run.outcome, outcome, "{profile}: {:?}", run.failures);
        if profile == "blocked" {
            assert_eq!(
                run.context["backup_schedule"]["skipped"],
                "provider_permission_missing"
            );
            assert_eq!(run.summary_counts.total, None, "blocked before any plan");
            continue;
        }
        assert_eq!(run.context["backup_schedule_id"], s.id.as_str());
        let set = run.context["backup_set"]["id"].as_str().unwrap();
        let c = &run.summary_counts;
        let types = run.context["backup_schedule"]["types"].as_array().unwrap().len() as u64;
        assert_eq!(
            (c.total, c.processed),
            (Some(types), Some(types)),
            "counted by policy types"
        );
        let items = store.count_backup_items(set).await.unwrap();
        assert_eq!(run.context["backup_set"]["items"], items);
        assert!(items > 0);
        let latest = store.latest_complete_backup_set(tenant).await.unwrap();
        if profile == "healthy" {
            assert_eq!(latest.unwrap().id, set, "a complete set");
        } else {
            assert!(latest.is_none(), "a partial set is not complete");
            assert!(c.failed.unwrap() > 0);
        }
    }
});

both_backends!(
    a_schedule_disabled_before_its_run_works_blocks_it,
    |store: Store| async move {
        let clock = ManualClock::new();
        let store = store.with_clock(Arc::new(clock.clone()));
        let ws = store.create_workspace("msp").await.unwrap().id;
        let tenant = store
            .create_tenant(&ws, "contoso", "demo:healthy")
            .await
            .unwrap()
            .id;
        let s = schedule(&store, &ws, &tenant, "nightly").await;
        let id = fire(&store, &clock).await;
        let mut spec = ScheduleSpec {
            name: s.name.clone(),
            run_type: s.run_type,
            tenant_id: s.tenant_id.clone(),
            cron: s.cron.clone(),
            timezone: s.timezone.clone(),
            params: s.params.clone(),
            retention_keep: None,
            enabled: false,
        };
        store.update_schedule(&ws, &s.id, &spec).await.unwrap();
        let run = run_until_done(&store, &id).await;
        assert_eq!(run.outcome, Outcome::Blocked);
        assert_eq!(run.failures[0].code, "schedule_disabled");
        assert!(
            store.backup_set_of_run(&id).await.unwrap().is_none(),
            "no set: no work"
        );
        spec.enabled = true;
        store.update_schedule(&ws, &s.id, &spec).await.unwrap();
    }
);

// ---- reconciliation ------------------------------------------------------

struct Stale {
    store: Store,
    ws: String,
    tenant: String,
    schedule: String,
}

async fn stale_fixture(store: Store) -> Stale {
    let ws = store.create_workspace("msp").await.unwrap().id;
    let tenant = store
        .create_tenant(&ws, "contoso", "demo:healthy")
        .await
        .unwrap()
        .id;
    let schedule = schedule(&store, &ws, &tenant, "nightly").await.id;
    Stale {
        store,
        ws,
        tenant,
        schedule,
    }
}

impl Stale {
    /// A scheduled backup whose worker planned `types` into its own set and died.
    async fn started(&self, types: &[&str]) -> (String, opsledger_store::jobs::Fence) {
        let params = json!({"schedule_id": self.schedule});
        let new = NewRun::on_tenant(
            &self.ws,
            &self.tenant,
            RunType::BackupScheduleExecute,
            "test",
            params,
        );
        let id = self.store.create_run(new).await.unwrap().into_run().id;
        let job = self
            .store
            .claim_jobs("w", 10, 60_000)
            .await
            .unwrap()
            .into_iter()
            .find(|j| j.run_id == id)
            .unwrap();
        let lease = opsledger_store::testing::lease(&self.store, &job.fence, &id).await;
        lease
            .backup_set("nightly", Some(&json!({"entries": []})))
            .await
            .unwrap();
        lease.init_total(types.len() as u64).await.unwrap();
        (id, job.fence)
    }

    async fn captured(&self, id: &str, fence: &opsledger_store::jobs::Fence, t: &str, ok: bool) {
        let item = BackupItem {
            policy_type: t.into(),
            external_id: format!("{t}-1"),
            display_name: format!("{t} one"),
            payload: json!({"displayName": "x"}),
            refs: json!({}),
            content_sha256: "0".repeat(64),
        };
        let outcome = if ok {
            UnitOutcome::Succeeded
        } else {
            UnitOutcome::Failed
        };
        let unit = UnitRecord::new(t, outcome).with_artifact(UnitArtifact::BackupItems(vec![item]));
        opsledger_store::testing::lease(&self.store, fence, id)
            .await
            .record_units(&[unit])
            .await
            .unwrap();
    }

    async fn reconcile(&self, id: &str) -> Run {
        opsledger_store::testing::exhaust_jobs(&self.store, id)
            .await
            .unwrap();
        let run = self.store.get_run(id).await.unwrap().unwrap();
        let d = reconcile_run(&self.store, &registry(), &run, Some("system"))
            .await
            .unwrap();
        assert_eq!(d.applied, "applied", "{d:?}");
        self.store.get_run(id).await.unwrap().unwrap()
    }
}

fn reason(run: &Run) -> &str {
    run.reconciliation().unwrap()["reason_code"].as_str().unwrap()
}

both_backends!(
    its_own_complete_set_reconciles_to_succeeded,
    |store: Store| async move {
        let f = stale_fixture(store).await;
        let (id, fence) = f.started(&["a", "b"]).await;
        f.captured(&id, &fence, "a", true).await;
        f.captured(&id, &fence, "b", true).await;
        let run = f.reconcile(&id).await;
        assert_eq!(
            (run.outcome, reason(&run)),
            (Outcome::Succeeded, "backup_set_complete")
        );
        assert_eq!(
            run.reconciliation().unwrap()["adapter"],
            "backup_schedule_execute"
        );
    }
);

both_backends!(
    failures_reconcile_to_partially_succeeded,
    |store: Store| async move {
        let f = stale_fixture(store).await;
        let (id, fence) = f.started(&["a", "b", "c"]).await;
        f.captured(&id, &fence, "a", true).await;
        f.captured(&id, &fence, "b", false).await;
        let run = f.reconcile(&id).await;
        assert_eq!(
            (run.outcome, reason(&run)),
            (Outcome::PartiallySucceeded, "backup_set_incomplete")
        );
        let c = run.summary_counts;
        assert_eq!((c.processed, c.succeeded, c.failed), (Some(3), Some(1), Some(2)));
    }
);

both_backends!(
    skipped_before_work_reconciles_to_blocked,
    |store: Store| async move {
        let f = stale_fixture(store).await;
        let params = json!({"schedule_id": f.schedule});
        let new = NewRun::on_tenant(&f.ws, &f.tenant, RunType::BackupScheduleExecute, "test", params);
        let id = f.store.create_run(new).await.unwrap().into_run().id;
        f.store.claim_jobs("w", 10, 60_000).await.unwrap();
        f.store
            .patch_context(
                &id,
                &[ContextPatch::new(
                    ["backup_schedule", "skipped"],
                    json!("schedule_disabled"),
                )],
            )
            .await
            .unwrap();
        let run = f.reconcile(&id).await;
        assert_eq!(
            (run.outcome, reason(&run)),
            (Outcome::Blocked, "backup_schedule_skipped")
        );
    }
);

both_backends!(
    no_set_of_its_own_never_succeeds_even_beside_a_complete_one,
    |store: Store| async move {
        let f = stale_fixture(store).await;
        // A complete scheduled backup of the same tenant exists…
        let (done, fence) = f.started(&["a"]).await;
        f.captured(&done, &fence, "a", true).await;
        assert_eq!(f.reconcile(&done).await.outcome, Outcome::Succeeded);
        assert!(
            f.store
                .latest_complete_backup_set(&f.tenant)
                .await
                .unwrap()
                .is_some()
        );
        // …and is no proof for another run that never made its own set.
        let params = json!({"schedule_id": f.schedule});
        let new = NewRun::on_tenant(&f.ws, &f.tenant, RunType::BackupScheduleExecute, "test", params);
        let id = f.store.create_run(new).await.unwrap().into_run().id;
        f.store.claim_jobs("w", 10, 60_000).await.unwrap();
        let run = f.reconcile(&id).await;
        assert_eq!((run.outcome, reason(&run)), (Outcome::Failed, "stale_no_proof"));
        // A run has at most one set of its own (the schema's unique index):
        // two candidates cannot arise; a second set for a run is refused.
        let (id, fence) = f.started(&["a"]).await;
        let lease = opsledger_store::testing::lease(&f.store, &fence, &id).await;
        let first = lease.backup_set("one", None).await.unwrap();
        let again = lease.backup_set("two", None).await.unwrap();
        assert_eq!(first, again, "one set per run, whatever is asked");
    }
);

/// Runs SQL the writer path never would (tests only).
async fn sql(store: &Store, q: String) {
    raw_on_pool!(store, pool => {
        sqlx::query(sqlx::AssertSqlSafe(q)).execute(pool).await.unwrap();
    });
}

fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

both_backends!(
    another_tenants_set_or_two_sets_are_never_proof,
    |store: Store| async move {
        let f = stale_fixture(store).await;
        let other = f
            .store
            .create_tenant(&f.ws, "fabrikam", "demo:healthy")
            .await
            .unwrap()
            .id;

        // Its own set, complete, but of another tenant (moved there behind
        // the writer's back): the proof cannot be trusted at all.
        let (id, fence) = f.started(&["a"]).await;
        f.captured(&id, &fence, "a", true).await;
        sql(
            &f.store,
            format!(
                "UPDATE backup_sets SET tenant_id = {} WHERE created_by_run_id = {}",
                quoted(&other),
                quoted(&id)
            ),
        )
        .await;
        let run = f.reconcile(&id).await;
        assert_eq!(
            (run.outcome, reason(&run)),
            (Outcome::Failed, "proof_wrong_scope")
        );

        // Two sets naming the run as their creator. The schema's unique
        // index forbids it (the writer returns the run's one set, see
        // `no_set_of_its_own_never_succeeds_even_beside_a_complete_one`); with
        // the index dropped, a second row is planted: neither is trusted,
        // though the first is complete.
        let (id, fence) = f.started(&["a"]).await;
        f.captured(&id, &fence, "a", true).await;
        sql(&f.store, "DROP INDEX backup_sets_created_by_run".to_owned()).await;
        sql(
            &f.store,
            format!(
                "INSERT INTO backup_sets (id, workspace_id, tenant_id, name, created_by_run_id, created_at) \
                 VALUES ('planted-second-set', {}, {}, 'second', {}, 0)",
                quoted(&f.ws),
                quoted(&f.tenant),
                quoted(&id)
            ),
        )
        .await;
        let run = f.reconcile(&id).await;
        assert_eq!((run.outcome, reason(&run)), (Outcome::Failed, "proof_ambiguous"));
    }
);

both_backends!(
    retention_leaves_exactly_the_last_n_complete_sets,
    |store: Store| async move {
        let clock = ManualClock::new();
        let store = store.with_clock(Arc::new(clock.clone()));
        let ws = store.create_workspace("msp").await.unwrap().id;
        let tenant = store
            .create_tenant(&ws, "contoso", "demo:healthy")
            .await
            .unwrap()
            .id;
        let spec = ScheduleSpec {
            name: "nightly".into(),
            run_type: RunType::BackupScheduleExecute,
            tenant_id: Some(tenant.clone()),
            cron: "0 2 * * *".into(),
            timezone: "UTC".into(),
            params: json!({"policy_types": ["deviceConfigurations", "namedLocations"]}),
            retention_keep: Some(2),
            enabled: true,
        };
        let s = store.create_schedule(&ws, &spec, "test").await.unwrap();
        // An older slot of the schedule left its set incomplete (one of two
        // types failed): past the two newest complete sets, it goes too.
        let params = json!({"schedule_id": s.id});
        let initiator = format!("schedule:{}", s.id);
        let new = NewRun::on_tenant(&ws, &tenant, RunType::BackupScheduleExecute, &initiator, params);
        let partial = store.create_run(new).await.unwrap().into_run().id;
        let job = store
            .claim_jobs("w", 10, 60_000)
            .await
            .unwrap()
            .into_iter()
            .find(|j| j.run_id == partial)
            .unwrap();
        let lease = opsledger_store::testing::lease(&store, &job.fence, &partial).await;
        let incomplete = lease.backup_set("nightly", None).await.unwrap();
        lease.init_total(2).await.unwrap();
        let item = BackupItem {
            policy_type: "deviceConfigurations".into(),
            external_id: "p1".into(),
            display_name: "Policy 1".into(),
            payload: json!({"displayName": "Policy 1"}),
            refs: json!({}),
            content_sha256: "0".repeat(64),
        };
        lease
            .record_units(&[
                UnitRecord::new("deviceConfigurations", UnitOutcome::Succeeded)
                    .with_artifact(UnitArtifact::BackupItems(vec![item])),
                UnitRecord::new("namedLocations", UnitOutcome::Failed),
            ])
            .await
            .unwrap();
        lease
            .complete(opsledger_store::Completion::new(Outcome::PartiallySucceeded))
            .await
            .unwrap();
        store.complete_job(&job.fence).await.unwrap();
        let mut sets = Vec::new();
        for _ in 0..4 {
            let id = fire(&store, &clock).await;
            let run = run_until_done(&store, &id).await;
            assert_eq!(run.outcome, Outcome::Succeeded, "{:?}", run.failures);
            sets.push(run.context["backup_set"]["id"].as_str().unwrap().to_owned());
        }
        let r = store.enforce_retention().await.unwrap();
        assert_eq!(r.deletes_started.len(), 3, "{r:?}");
        for id in &r.deletes_started {
            let run = run_until_done(&store, id).await;
            assert_eq!(run.outcome, Outcome::Succeeded, "{:?}", run.failures);
            assert_eq!(run.initiator, format!("schedule:{}", s.id));
        }
        // Exactly the two newest complete sets are left.
        let left: Vec<&String> = {
            let mut left = Vec::new();
            for set in &sets {
                if store
                    .backup_set_head(&ws, set)
                    .await
                    .unwrap()
                    .is_some_and(|h| h.complete)
                {
                    left.push(set);
                }
            }
            left
        };
        assert_eq!(left, vec![&sets[2], &sets[3]]);
        assert!(
            store.backup_set_head(&ws, &incomplete).await.unwrap().is_none(),
            "the older incomplete set is gone"
        );
        // A second pass removes nothing more.
        assert!(
            store
                .enforce_retention()
                .await
                .unwrap()
                .deletes_started
                .is_empty()
        );
    }
);

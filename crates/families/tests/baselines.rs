//! `baseline.capture` and `baseline.compare` end to end through the runner,
//! on both databases: demo tenants of each profile, folder tenants made from
//! the real exports (zero findings on a copy; exactly one finding per
//! change), the backup → restore → compare round trip, and the
//! reconciliation matrix from each run's own proof.

mod common;

use common::*;

use opsledger_core::{Outcome, PhaseState, Run, RunType};
use opsledger_store::baselines::PlannedPolicy;
use opsledger_store::{NewRun, Store, both_backends, raw_on_pool};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

struct Env {
    store: Store,
    ws: String,
}

impl Env {
    async fn new(store: Store) -> Env {
        let ws = store.create_workspace("ws").await.unwrap().id;
        Env { store, ws }
    }

    async fn tenant(&self, name: &str, spec: &str) -> String {
        self.store.create_tenant(&self.ws, name, spec).await.unwrap().id
    }

    async fn folder(&self, name: &str, root: &Path) -> String {
        self.tenant(name, &format!("folder:{}", root.display())).await
    }

    async fn run(&self, tenant: &str, t: RunType, params: Value) -> Run {
        let params = opsledger_core::params::validate(t, &params).unwrap();
        let new = NewRun::on_tenant(&self.ws, tenant, t, "test", params);
        let id = self.store.create_run(new).await.unwrap().into_run().id;
        run_to_end(&self.store, &id).await
    }

    async fn capture(&self, tenant: &str) -> Run {
        self.run(tenant, RunType::BaselineCapture, json!({})).await
    }

    async fn compare_with(&self, tenant: &str, snapshot: &str) -> Run {
        self.run(
            tenant,
            RunType::BaselineCompare,
            json!({ "baseline_snapshot_id": snapshot }),
        )
        .await
    }

    async fn findings(&self, run: &Run) -> Vec<opsledger_core::drift::Finding> {
        self.store
            .findings_page(&run.id, None, 200)
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.finding)
            .collect()
    }
}

/// A phased run's phases all ended, none counted at the top level.
fn assert_phased(run: &Run, keys: &[&str]) {
    let phases = run.phases.as_ref().expect("a phased run");
    assert_eq!(phases.iter().map(|p| p.key.as_str()).collect::<Vec<_>>(), keys);
    assert_eq!(run.summary_counts.total, None, "never counted at the top level");
    assert_eq!(run.summary_counts.processed, None);
}

both_backends!(
    demo_profiles_capture_and_compare_truthfully,
    |store: Store| async move {
        let e = Env::new(store).await;
        let healthy = e.tenant("contoso", "demo:healthy").await;
        let capture = e.capture(&healthy).await;
        assert_eq!(
            capture.outcome,
            Outcome::Succeeded,
            "{:?} {:#}",
            capture.failures,
            capture.context
        );
        assert_phased(&capture, &["resolve", "capture", "classify", "persist"]);
        let phases = capture.phases.clone().unwrap();
        assert!(phases.iter().all(|p| p.state == PhaseState::Done), "{phases:?}");
        let captured = &phases[1];
        assert!(captured.total.unwrap() > 0);
        assert_eq!(
            captured.processed, captured.total,
            "every resolved policy captured once"
        );
        let snapshot = snapshot_of(&capture);
        assert_eq!(capture.context["baseline_snapshot"]["gaps"]["count"], 0);
        let head = e
            .store
            .baseline_snapshot(&e.ws, &snapshot)
            .await
            .unwrap()
            .unwrap();
        assert!(head.sealed_at.is_some());
        assert_eq!(head.policy_count, captured.total);
        // The default profile was made by this first capture.
        let profile = e.store.default_baseline_profile(&healthy).await.unwrap().unwrap();
        assert_eq!(head.profile_id, profile.id);

        // The tenant against its own baseline: no drift.
        let compare = e.run(&healthy, RunType::BaselineCompare, json!({})).await;
        assert_eq!(compare.outcome, Outcome::Succeeded, "{:?}", compare.failures);
        assert_phased(&compare, &["load", "read", "diff", "record"]);
        assert_eq!(
            compare.context["compare"]["baseline_snapshot_id"],
            snapshot.as_str()
        );
        assert_eq!(compare.context["compare"]["findings"], 0);
        assert_eq!(compare.context["compare"]["drift_found"], false);
        let read = &compare.phases.as_ref().unwrap()[1];
        assert_eq!(
            (read.processed, read.total),
            (head.policy_count, head.policy_count)
        );

        // Partial: the capture has gaps per type and says so.
        let partial = e.tenant("partial", "demo:partial").await;
        let run = e.capture(&partial).await;
        assert_eq!(run.outcome, Outcome::PartiallySucceeded, "{:#}", run.context);
        let by_type = run.context["baseline_snapshot"]["gaps"]["by_type"]
            .as_object()
            .unwrap();
        assert!(!by_type.is_empty());
        let gaps = e.store.snapshot_gaps(&snapshot_of(&run)).await.unwrap();
        assert_eq!(
            gaps.len() as u64,
            run.context["baseline_snapshot"]["gaps"]["count"]
                .as_u64()
                .unwrap()
        );

        // Blocked: nothing captured, no snapshot, and the context says why.
        let blocked = e.tenant("blocked", "demo:blocked").await;
        let run = e.capture(&blocked).await;
        assert_eq!(run.outcome, Outcome::Blocked, "{:?}", run.failures);
        assert!(run.context["baseline_capture"]["reason_code"].is_string());
        assert!(e.store.snapshots_of_run(&run.id).await.unwrap().is_empty());
        let run = e.run(&blocked, RunType::BaselineCompare, json!({})).await;
        assert_eq!(run.outcome, Outcome::Blocked);
        assert_eq!(run.failures[0].code, "no_baseline_snapshot");
    }
);

/// The file of policy `external_id` of `policy_type` under `root`, as the
/// folder provider read it.
fn file_of(root: &Path, policy_type: &str, external_id: &str) -> PathBuf {
    let scan = opsledger_providers::folder::scan::scan(root).unwrap();
    let item = scan.items[policy_type]
        .iter()
        .find(|i| i.id == external_id)
        .unwrap_or_else(|| panic!("no file for {policy_type}/{external_id}"));
    root.join(&item.path)
}

both_backends!(
    a_copy_of_an_export_compares_clean_and_each_change_is_exactly_one_finding,
    |store: Store| async move {
        let e = Env::new(store).await;
        let golden = e.folder("golden", &testdata("acsc-intune-hardening")).await;
        let capture = e.capture(&golden).await;
        assert_eq!(capture.outcome, Outcome::Succeeded, "{:#}", capture.context);
        let snapshot = snapshot_of(&capture);

        let copy = tempfile::tempdir().unwrap();
        copy_tree(&testdata("acsc-intune-hardening"), copy.path());
        let tenant = e.folder("copy", copy.path()).await;
        let run = e.compare_with(&tenant, &snapshot).await;
        assert_eq!(run.outcome, Outcome::Succeeded, "{:#}", run.context);
        assert_eq!(e.findings(&run).await, vec![], "a copy has no drift");

        // Re-encoding one file as UTF-16LE changes nothing.
        let policies = e.store.snapshot_policies(&snapshot).await.unwrap();
        let victim = policies
            .iter()
            .find(|p| {
                p.policy_type == "deviceConfigurations" && has_scalar_setting(p.payload.as_ref().unwrap())
            })
            .or_else(|| policies.iter().find(|p| p.policy_type == "configurationPolicies"))
            .expect("a policy with a setting to change");
        let path = file_of(copy.path(), &victim.policy_type, &victim.external_id);
        let text = decode_file(&path);
        let mut utf16 = vec![0xFF, 0xFE];
        for unit in text.trim_start_matches('\u{feff}').encode_utf16() {
            utf16.extend(unit.to_le_bytes());
        }
        std::fs::write(&path, &utf16).unwrap();
        let run = e.compare_with(&tenant, &snapshot).await;
        // Read whole and the same: no gap, nothing withheld, no drift.
        assert_eq!(run.outcome, Outcome::Succeeded, "{:#}", run.context);
        assert_eq!(run.context["compare"]["drift_found"], false, "{:#}", run.context);
        assert_eq!(run.context["compare"]["other_gaps"], json!([]));
        assert_eq!(e.findings(&run).await, vec![], "UTF-16LE reads the same");
        std::fs::write(&path, &text).unwrap();

        // One setting value changed: exactly one `changed`, naming the
        // policy and the path, with both values.
        let mut v: Value = serde_json::from_str(text.trim_start_matches('\u{feff}')).unwrap();
        let (path_changed, before) = change_one_setting(&mut v);
        std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
        let run = e.compare_with(&tenant, &snapshot).await;
        let found = e.findings(&run).await;
        assert_eq!(found.len(), 1, "{found:#?}");
        let f = &found[0];
        assert_eq!(f.kind, opsledger_core::drift::FindingKind::Changed);
        assert_eq!(f.display_name.trim(), victim.display_name.trim());
        assert_eq!(f.changes.len(), 1, "{:?}", f.changes);
        assert!(
            f.changes[0].path.ends_with(&path_changed),
            "{} vs {path_changed}",
            f.changes[0].path
        );
        assert_eq!(f.changes[0].baseline.as_ref(), Some(&before));
        assert_ne!(f.changes[0].current.as_ref(), Some(&before));
        assert!(f.changes[0].current.is_some());
        assert_eq!(run.context["compare"]["drift_found"], true);
        std::fs::write(&path, &text).unwrap();

        // One file removed: exactly one `missing`.
        std::fs::remove_file(&path).unwrap();
        let run = e.compare_with(&tenant, &snapshot).await;
        let found = e.findings(&run).await;
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].kind, opsledger_core::drift::FindingKind::Missing);
        assert_eq!(found[0].display_name.trim(), victim.display_name.trim());
        std::fs::write(&path, &text).unwrap();

        // One file added: exactly one `unexpected`.
        let mut extra = v.clone();
        extra["displayName"] = json!("Added after the baseline");
        extra["id"] = json!("00000000-0000-0000-0000-00000000abcd");
        let extra_path = path.with_file_name("Added after the baseline.json");
        std::fs::write(&extra_path, serde_json::to_string(&extra).unwrap()).unwrap();
        let run = e.compare_with(&tenant, &snapshot).await;
        let found = e.findings(&run).await;
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].kind, opsledger_core::drift::FindingKind::Unexpected);
        assert_eq!(found[0].display_name, "Added after the baseline");
    }
);

fn decode_file(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    opsledger_providers::folder::decode::decode(&bytes).unwrap().0
}

const NOT_SETTINGS: [&str; 7] = [
    "id",
    "displayName",
    "description",
    "version",
    "name",
    "createdDateTime",
    "lastModifiedDateTime",
];

fn has_scalar_setting(v: &Value) -> bool {
    v.as_object().unwrap().iter().any(|(k, v)| {
        !NOT_SETTINGS.contains(&k.as_str()) && !k.contains('@') && (v.is_boolean() || v.is_i64())
    })
}

/// Changes one scalar setting of a policy as exported; returns the tail of
/// its drift path and the value before.
fn change_one_setting(v: &mut Value) -> (String, Value) {
    let obj = v.as_object_mut().unwrap();
    // A top-level scalar setting (device configurations, compliance).
    let key = obj
        .iter()
        .find(|(k, v)| {
            !NOT_SETTINGS.contains(&k.as_str()) && !k.contains('@') && (v.is_boolean() || v.is_i64())
        })
        .map(|(k, _)| k.clone());
    if let Some(k) = key {
        let before = obj[&k].clone();
        obj[&k] = match &before {
            Value::Bool(b) => json!(!b),
            Value::Number(n) => json!(n.as_i64().unwrap() + 1),
            _ => unreachable!(),
        };
        return (k, before);
    }
    // A settings catalog policy: its first simple setting's value.
    for s in obj
        .get_mut("settings")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        for kind in ["simpleSettingValue", "choiceSettingValue"] {
            if let Some(value) = s.pointer_mut(&format!("/settingInstance/{kind}/value")) {
                let before = value.clone();
                *value = match &before {
                    Value::String(x) => json!(format!("{x}-changed")),
                    Value::Number(n) => json!(n.as_i64().unwrap_or(0) + 1),
                    _ => json!("changed"),
                };
                return (format!("{kind}/value"), before);
            }
        }
    }
    panic!("no scalar setting to change in {v:#}");
}

both_backends!(
    a_backup_restored_into_an_empty_tenant_compares_clean,
    |store: Store| async move {
        let e = Env::new(store).await;
        let source = e.folder("ca", &testdata("ca-baseline")).await;
        let capture = e.capture(&source).await;
        let snapshot = snapshot_of(&capture);
        e.run(&source, RunType::InventorySync, json!({})).await;
        let backup = e.run(&source, RunType::BackupSetAddPolicies, json!({})).await;
        assert_eq!(backup.outcome, Outcome::Succeeded, "{:?}", backup.failures);
        let set = backup.context["backup_set"]["id"].as_str().unwrap().to_owned();
        let empty = tempfile::tempdir().unwrap();
        let target = e.folder("fresh", empty.path()).await;
        let restore = e
            .run(
                &target,
                RunType::BackupSetRestore,
                json!({ "backup_set_id": set, "create_missing_groups": true }),
            )
            .await;
        assert_eq!(restore.outcome, Outcome::Succeeded, "{:?}", restore.failures);
        // New ids and timestamps on the target are not drift.
        let run = e.compare_with(&target, &snapshot).await;
        assert_eq!(run.outcome, Outcome::Succeeded, "{:#}", run.context);
        assert_eq!(e.findings(&run).await, vec![]);
        // And against the backup itself ("what changed since the backup").
        let run = e
            .run(&target, RunType::BaselineCompare, json!({ "backup_set_id": set }))
            .await;
        assert_eq!(run.outcome, Outcome::Succeeded, "{:#}", run.context);
        assert_eq!(run.context["compare"]["backup_set_id"], set.as_str());
        assert_eq!(e.findings(&run).await, vec![]);
    }
);

// ---------------------------------------------------------------------------
// Reconciliation: a stale capture or compare is closed from its own proof.

/// A run claimed by a worker that is about to die.
async fn claimed(e: &Env, tenant: &str, t: RunType) -> (String, opsledger_store::jobs::Fence) {
    let new = NewRun::on_tenant(&e.ws, tenant, t, "test", json!({}));
    let id = e.store.create_run(new).await.unwrap().into_run().id;
    let job = e
        .store
        .claim_jobs("w", 10, 60_000)
        .await
        .unwrap()
        .into_iter()
        .find(|j| j.run_id == id)
        .unwrap();
    (id, job.fence)
}

/// Runs SQL the writer path never would (tests only).
async fn sql(store: &Store, q: String) {
    raw_on_pool!(store, pool => {
        sqlx::query(sqlx::AssertSqlSafe(q)).execute(pool).await.unwrap();
    });
}

fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn reason(run: &Run) -> String {
    run.reconciliation().unwrap()["reason_code"]
        .as_str()
        .unwrap()
        .to_owned()
}

both_backends!(
    a_stale_capture_is_decided_by_its_own_snapshot_only,
    |store: Store| async move {
        let e = Env::new(store).await;
        let t = e.tenant("contoso", "demo:healthy").await;
        // A sealed snapshot of another run of the tenant is no proof.
        let done = e.capture(&t).await;
        assert_eq!(done.outcome, Outcome::Succeeded);

        // No snapshot of its own → failed, stale_no_proof.
        let (id, _) = claimed(&e, &t, RunType::BaselineCapture).await;
        let run = reconcile(&e.store, &id).await;
        assert_eq!(
            (run.outcome, reason(&run).as_str()),
            (Outcome::Failed, "stale_no_proof")
        );

        // A snapshot planned, never sealed → never succeeded.
        let (id, fence) = claimed(&e, &t, RunType::BaselineCapture).await;
        let lease = opsledger_store::testing::lease(&e.store, &fence, &id).await;
        let profile = e.store.default_baseline_profile(&t).await.unwrap().unwrap();
        let planned = [PlannedPolicy {
            policy_type: "deviceConfigurations".into(),
            external_id: "x".into(),
            display_name: "X".into(),
        }];
        lease
            .baseline_snapshot(&profile.id, &["deviceConfigurations".into()], &planned)
            .await
            .unwrap();
        let run = reconcile(&e.store, &id).await;
        assert_eq!(
            (run.outcome, reason(&run).as_str()),
            (Outcome::Failed, "snapshot_unsealed")
        );

        // Sealed with no gap (its worker died before closing) → succeeded;
        // sealed with gaps, or with fallback (metadata-only) evidence →
        // partially succeeded.
        use opsledger_core::baseline::GapReason;
        for (gaps, why, outcome) in [
            (0usize, GapReason::AmbiguousMatch, Outcome::Succeeded),
            (1, GapReason::AmbiguousMatch, Outcome::PartiallySucceeded),
            (1, GapReason::SettingsUnreadable, Outcome::PartiallySucceeded),
        ] {
            let (id, fence) = claimed(&e, &t, RunType::BaselineCapture).await;
            let lease = opsledger_store::testing::lease(&e.store, &fence, &id).await;
            lease
                .baseline_snapshot(&profile.id, &["deviceConfigurations".into()], &[])
                .await
                .unwrap();
            let gap = opsledger_core::baseline::Gap {
                policy_type: "deviceConfigurations".into(),
                external_id: Some("x".into()),
                reason: why,
                message: "two share the name, or its settings could not be read".into(),
            };
            lease.seal_baseline_snapshot(&vec![gap; gaps], &[]).await.unwrap();
            let run = reconcile(&e.store, &id).await;
            assert_eq!(run.outcome, outcome, "{why:?}: {:?}", run.reconciliation());
        }

        // Its own sealed snapshot, moved to another tenant behind the
        // writer's back: wrong scope, never succeeded.
        let other = e.tenant("fabrikam", "demo:healthy").await;
        let (id, fence) = claimed(&e, &t, RunType::BaselineCapture).await;
        let lease = opsledger_store::testing::lease(&e.store, &fence, &id).await;
        let own = lease
            .baseline_snapshot(&profile.id, &["deviceConfigurations".into()], &[])
            .await
            .unwrap();
        lease.seal_baseline_snapshot(&[], &[]).await.unwrap();
        sql(
            &e.store,
            format!(
                "UPDATE baseline_snapshots SET tenant_id = {} WHERE id = {}",
                quoted(&other),
                quoted(&own.id)
            ),
        )
        .await;
        let run = reconcile(&e.store, &id).await;
        assert_eq!(
            (run.outcome, reason(&run).as_str()),
            (Outcome::Failed, "proof_wrong_scope")
        );

        // Two candidates: a run has one snapshot (the schema's unique key;
        // the writer hands a retry the same one)…
        let (id, fence) = claimed(&e, &t, RunType::BaselineCapture).await;
        let lease = opsledger_store::testing::lease(&e.store, &fence, &id).await;
        let first = lease
            .baseline_snapshot(&profile.id, &["deviceConfigurations".into()], &[])
            .await
            .unwrap();
        let again = lease
            .baseline_snapshot(&profile.id, &["deviceCompliancePolicies".into()], &[])
            .await
            .unwrap();
        assert_eq!(first.id, again.id, "one snapshot per run, whatever is asked");
        lease.seal_baseline_snapshot(&[], &[]).await.unwrap();
        // …and where the key can be dropped (PostgreSQL; SQLite cannot drop
        // a table's UNIQUE), a second one planted makes neither trusted.
        let planted = matches!(
            opsledger_store::testing::raw_pool(&e.store),
            opsledger_store::testing::RawPool::Postgres(_)
        );
        if planted {
            sql(
                &e.store,
                "ALTER TABLE baseline_snapshots DROP CONSTRAINT baseline_snapshots_created_by_run_id_key"
                    .to_owned(),
            )
            .await;
            sql(
                &e.store,
                format!(
                    "INSERT INTO baseline_snapshots (id, workspace_id, tenant_id, profile_id, created_by_run_id, \
                     created_at, policy_types, sealed_at, policy_count, gap_count) \
                     VALUES ('planted-second', {}, {}, {}, {}, 0, '[]', 0, 0, 0)",
                    quoted(&e.ws),
                    quoted(&t),
                    quoted(&profile.id),
                    quoted(&id)
                ),
            )
            .await;
        }
        let run = reconcile(&e.store, &id).await;
        if planted {
            assert_eq!(
                (run.outcome, reason(&run).as_str()),
                (Outcome::Failed, "proof_ambiguous")
            );
        } else {
            assert_eq!(run.outcome, Outcome::Succeeded, "{:?}", run.reconciliation());
        }

        // A stop the context proves (the tenant without consent) → blocked.
        let (id, fence) = claimed(&e, &t, RunType::BaselineCapture).await;
        opsledger_store::testing::lease(&e.store, &fence, &id)
            .await
            .patch_context(&[opsledger_store::ContextPatch::new(
                ["baseline_capture", "reason_code"],
                json!("provider_permission_missing"),
            )])
            .await
            .unwrap();
        let run = reconcile(&e.store, &id).await;
        assert_eq!(run.outcome, Outcome::Blocked);
    }
);

both_backends!(
    a_stale_compare_is_decided_by_its_own_record_only,
    |store: Store| async move {
        let e = Env::new(store).await;
        let t = e.tenant("contoso", "demo:healthy").await;
        let capture = e.capture(&t).await;
        let snapshot = snapshot_of(&capture);
        // Another compare's record is no proof.
        let done = e.compare_with(&t, &snapshot).await;
        assert_eq!(done.outcome, Outcome::Succeeded);
        let (id, _) = claimed(&e, &t, RunType::BaselineCompare).await;
        let run = reconcile(&e.store, &id).await;
        assert_eq!(
            (run.outcome, reason(&run).as_str()),
            (Outcome::Failed, "stale_no_proof")
        );

        // Its own record, written before the worker died: decides.
        for (unreadable, outcome) in [
            (json!({}), Outcome::Succeeded),
            (
                json!({"deviceConfigurations": "type_unreadable"}),
                Outcome::PartiallySucceeded,
            ),
        ] {
            let (id, fence) = claimed(&e, &t, RunType::BaselineCompare).await;
            let record = opsledger_store::baselines::CompareRecord {
                baseline_snapshot_id: Some(snapshot.clone()),
                backup_set_id: None,
                findings: 0,
                summary: json!({"types": 3, "unreadable_types": unreadable}),
            };
            opsledger_store::testing::lease(&e.store, &fence, &id)
                .await
                .record_compare(&record, &[], &[])
                .await
                .unwrap();
            let run = reconcile(&e.store, &id).await;
            assert_eq!(run.outcome, outcome, "{:?}", run.reconciliation());
        }

        // Its own record, moved to another tenant: wrong scope.
        let other = e.tenant("fabrikam", "demo:healthy").await;
        let (id, fence) = claimed(&e, &t, RunType::BaselineCompare).await;
        let record = opsledger_store::baselines::CompareRecord {
            baseline_snapshot_id: Some(snapshot.clone()),
            backup_set_id: None,
            findings: 0,
            summary: json!({"types": 3, "unreadable_types": {}}),
        };
        let lease = opsledger_store::testing::lease(&e.store, &fence, &id).await;
        lease.record_compare(&record, &[], &[]).await.unwrap();
        sql(
            &e.store,
            format!(
                "UPDATE baseline_compares SET tenant_id = {} WHERE run_id = {}",
                quoted(&other),
                quoted(&id)
            ),
        )
        .await;
        let run = reconcile(&e.store, &id).await;
        assert_eq!(
            (run.outcome, reason(&run).as_str()),
            (Outcome::Failed, "proof_wrong_scope")
        );

        // Two candidates cannot arise: the record is keyed by its run, and a
        // second write (a retry) leaves the first as it was.
        let (id, fence) = claimed(&e, &t, RunType::BaselineCompare).await;
        let lease = opsledger_store::testing::lease(&e.store, &fence, &id).await;
        lease.record_compare(&record, &[], &[]).await.unwrap();
        let second = opsledger_store::baselines::CompareRecord {
            findings: 7,
            summary: json!({"types": 3, "unreadable_types": {"deviceConfigurations": "type_unreadable"}}),
            ..record.clone()
        };
        lease.record_compare(&second, &[], &[]).await.unwrap();
        let kept = e.store.compare_of_run(&id).await.unwrap().unwrap();
        assert_eq!(kept.findings, 0, "the first record stands");
        let run = reconcile(&e.store, &id).await;
        assert_eq!(run.outcome, Outcome::Succeeded, "{:?}", run.reconciliation());

        // No baseline, proven by the context → blocked.
        let (id, fence) = claimed(&e, &t, RunType::BaselineCompare).await;
        opsledger_store::testing::lease(&e.store, &fence, &id)
            .await
            .patch_context(&[opsledger_store::ContextPatch::new(
                ["compare", "reason_code"],
                json!("no_baseline_snapshot"),
            )])
            .await
            .unwrap();
        let run = reconcile(&e.store, &id).await;
        assert_eq!(run.outcome, Outcome::Blocked);
    }
);

both_backends!(
    a_scheduled_compare_against_a_golden_profile_says_whether_drift_was_found,
    |store: Store| async move {
        let e = Env::new(store.clone()).await;
        // The golden tenant, captured into the workspace's "standard".
        let golden = e.folder("golden", &testdata("acsc-intune-hardening")).await;
        e.store
            .create_baseline_profile(&e.ws, "standard", &golden, None, "test")
            .await
            .unwrap();
        let capture = e
            .run(&golden, RunType::BaselineCapture, json!({"profile": "standard"}))
            .await;
        assert_eq!(capture.outcome, Outcome::Succeeded, "{:#}", capture.context);
        // One customer in line with it, one that lost a policy.
        let same = tempfile::tempdir().unwrap();
        copy_tree(&testdata("acsc-intune-hardening"), same.path());
        let drifted = tempfile::tempdir().unwrap();
        copy_tree(&testdata("acsc-intune-hardening"), drifted.path());
        let scan = opsledger_providers::folder::scan::scan(drifted.path()).unwrap();
        let gone = scan.items.values().flatten().next().unwrap();
        std::fs::remove_file(drifted.path().join(&gone.path)).unwrap();
        let in_line = e.folder("in line", same.path()).await;
        let off = e.folder("off", drifted.path()).await;

        let clock = opsledger_store::clock::ManualClock::new();
        let node = e.store.with_clock(std::sync::Arc::new(clock.clone()));
        for (name, tenant) in [("in line", &in_line), ("off", &off)] {
            let spec = opsledger_store::schedules::ScheduleSpec {
                name: format!("compare {name}"),
                run_type: RunType::BaselineCompare,
                tenant_id: Some(tenant.clone()),
                cron: "*/5 * * * *".into(),
                timezone: "Europe/Brussels".into(),
                params: json!({"profile": "standard"}),
                retention_keep: None,
                enabled: true,
            };
            node.create_schedule(&e.ws, &spec, "test").await.unwrap();
        }
        // Nothing is due until the slot comes.
        assert!(node.fire_due_schedules(10).await.unwrap().started.is_empty());
        clock.advance(5 * 60_000);
        let tick = node.fire_due_schedules(10).await.unwrap();
        assert_eq!(tick.started.len(), 2, "{tick:?}");
        for id in &tick.started {
            // The runs are due at the node's time: a worker on that clock.
            let run = run_to_end(&node, id).await;
            assert_eq!(run.run_type, RunType::BaselineCompare);
            assert_eq!(run.outcome, Outcome::Succeeded, "{:#}", run.context);
            let expected = run.tenant_id.as_deref() == Some(off.as_str());
            assert_eq!(
                run.context["compare"]["drift_found"], expected,
                "{:#}",
                run.context
            );
            assert_eq!(
                run.context["compare"]["baseline_snapshot_id"],
                capture.context["baseline_snapshot"]["id"]
            );
            if expected {
                assert_eq!(run.context["compare"]["findings"], 1);
            }
        }
    }
);

both_backends!(
    a_capture_into_a_new_name_makes_the_profile_and_never_into_another_tenants,
    |store: Store| async move {
        let e = Env::new(store).await;
        let golden = e.tenant("contoso", "demo:healthy").await;
        let other = e.tenant("fabrikam", "demo:healthy").await;
        let run = e
            .run(&golden, RunType::BaselineCapture, json!({"profile": "standard"}))
            .await;
        assert_eq!(run.outcome, Outcome::Succeeded, "{:?}", run.failures);
        let profile = e
            .store
            .baseline_profile_by_name(&e.ws, "standard")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(profile.source_tenant_id, golden);
        assert!(!profile.is_default);
        assert_eq!(profile.policy_types, None, "every type the tenant exposes");
        let head = e
            .store
            .baseline_snapshot(&e.ws, &snapshot_of(&run))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(head.profile_id, profile.id);
        // Another tenant cannot capture into it: blocked, nothing captured.
        let run = e
            .run(&other, RunType::BaselineCapture, json!({"profile": "standard"}))
            .await;
        assert_eq!(run.outcome, Outcome::Blocked);
        assert_eq!(run.failures[0].code, "profile_other_tenant");
        assert!(e.store.snapshots_of_run(&run.id).await.unwrap().is_empty());
    }
);

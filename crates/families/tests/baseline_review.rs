//! Regression tests from a hostile review of `baseline.capture` /
//! `baseline.compare`: each failed on the code as first written (the comment
//! above each says what it found) and passes on the fix.
//! End-to-end tests run on both databases (`both_backends!`); the pure
//! normalizer/drift tests need no database.

mod common;

use common::*;

use opsledger_core::drift::{Evidence, FindingKind, compare};
use opsledger_core::normalize::{Names, normalize};
use opsledger_core::phases::PhasePlan;
use opsledger_core::{Outcome, Run, RunType, UnitOutcome};
use opsledger_store::{NewRun, Store, UnitRecord, both_backends};
use serde_json::{Value, json};
use std::collections::BTreeSet;
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

    fn new_run(&self, tenant: &str, t: RunType, params: Value) -> NewRun {
        let params = opsledger_core::params::validate(t, &params).unwrap();
        NewRun::on_tenant(&self.ws, tenant, t, "test", params)
    }

    async fn run(&self, tenant: &str, t: RunType, params: Value) -> Run {
        let id = self
            .store
            .create_run(self.new_run(tenant, t, params))
            .await
            .unwrap()
            .into_run()
            .id;
        run_to_end(&self.store, &id).await
    }

    async fn capture(&self, tenant: &str, params: Value) -> Run {
        self.run(tenant, RunType::BaselineCapture, params).await
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

    /// A run claimed by a worker that is about to die (or give the job back).
    async fn claimed(
        &self,
        tenant: &str,
        t: RunType,
        params: Value,
    ) -> (String, opsledger_store::jobs::Fence) {
        let id = self
            .store
            .create_run(self.new_run(tenant, t, params))
            .await
            .unwrap()
            .into_run()
            .id;
        let job = self
            .store
            .claim_jobs("w", 10, 60_000)
            .await
            .unwrap()
            .into_iter()
            .find(|j| j.run_id == id)
            .unwrap();
        (id, job.fence)
    }
}

fn kinds(found: &[opsledger_core::drift::Finding]) -> Vec<(FindingKind, String)> {
    found.iter().map(|f| (f.kind, f.display_name.clone())).collect()
}

/// The file of one settings-catalog policy of the ACSC export.
fn one_acsc_file(root: &Path) -> (PathBuf, String) {
    let scan = opsledger_providers::folder::scan::scan(root).unwrap();
    let item = &scan.items["configurationPolicies"][0];
    (root.join(&item.path), item.display_name.clone())
}

// ---------------------------------------------------------------------------
// 1. A file the folder provider cannot read (type unknown: an "unattributed"
//    failure) is invisible to capture and compare: the compare reports the
//    policy `missing` and ends `succeeded`; the capture ends `succeeded` with
//    zero gaps. inventory.sync reads `unattributed_failures()`; these don't.

both_backends!(
    an_unreadable_file_is_not_a_missing_policy,
    |store: Store| async move {
        let e = Env::new(store).await;
        let golden = e.folder("golden", &testdata("acsc-intune-hardening")).await;
        let capture = e.capture(&golden, json!({})).await;
        assert_eq!(capture.outcome, Outcome::Succeeded, "{:#}", capture.context);
        let snapshot = snapshot_of(&capture);

        // The customer: the same export, one file unreadable (truncated JSON).
        let copy = copy_of("acsc-intune-hardening");
        let (path, name) = one_acsc_file(copy.path());
        std::fs::write(&path, b"{ \"displayName\": ").unwrap();
        let customer = e.folder("customer", copy.path()).await;
        let run = e
            .run(
                &customer,
                RunType::BaselineCompare,
                json!({ "baseline_snapshot_id": snapshot }),
            )
            .await;
        let found = e.findings(&run).await;
        assert!(
            !found
                .iter()
                .any(|f| f.kind == FindingKind::Missing && f.display_name.trim() == name.trim()),
            "a policy whose file could not be read is reported missing (false drift): {:?}; outcome {:?}",
            kinds(&found),
            run.outcome
        );
        assert_ne!(
            run.outcome,
            Outcome::Succeeded,
            "a compare that could not read part of the tenant ends succeeded: {:#}",
            run.context["compare"]
        );
    }
);

both_backends!(
    a_capture_that_could_not_read_a_file_is_not_complete,
    |store: Store| async move {
        let e = Env::new(store).await;
        let copy = copy_of("acsc-intune-hardening");
        let (path, _) = one_acsc_file(copy.path());
        std::fs::write(&path, b"{ \"displayName\": ").unwrap();
        let golden = e.folder("golden", copy.path()).await;
        let capture = e.capture(&golden, json!({})).await;
        assert_ne!(
            capture.outcome,
            Outcome::Succeeded,
            "a capture that could not read one of the tenant's files claims full fidelity: {:#}",
            capture.context["baseline_snapshot"]
        );
    }
);

// ---------------------------------------------------------------------------
// 2. Missed drift: the compared types are the baseline's types only. A
//    folder golden tenant without a type (no file of it: not exposed) gives
//    a snapshot without that type, so every policy of that type a customer
//    has is never reported (`unexpected`), and the compare says no drift.

both_backends!(
    a_policy_of_a_type_the_golden_tenant_lacks_is_unexpected,
    |store: Store| async move {
        let e = Env::new(store).await;
        let golden = e.folder("golden", &testdata("ca-baseline")).await;
        let capture = e.capture(&golden, json!({})).await;
        assert_eq!(capture.outcome, Outcome::Succeeded, "{:#}", capture.context);
        let snapshot = snapshot_of(&capture);

        // The customer: the golden tenant plus one settings catalog policy.
        let copy = copy_of("ca-baseline");
        let acsc = testdata("acsc-intune-hardening");
        let (extra, name) = one_acsc_file(&acsc);
        std::fs::create_dir_all(copy.path().join("extra")).unwrap();
        std::fs::copy(&extra, copy.path().join("extra/added.json")).unwrap();
        let customer = e.folder("customer", copy.path()).await;
        let run = e
            .run(
                &customer,
                RunType::BaselineCompare,
                json!({ "baseline_snapshot_id": snapshot }),
            )
            .await;
        let found = e.findings(&run).await;
        assert_eq!(
            kinds(&found),
            vec![(FindingKind::Unexpected, name)],
            "a policy added to the customer is not drift because the golden had none of its type; \
             outcome {:?}, drift_found {}",
            run.outcome,
            run.context["compare"]["drift_found"]
        );
    }
);

// ---------------------------------------------------------------------------
// 3. False drift: a backup set as the baseline. "What changed since the
//    backup" on an unchanged tenant must be nothing; a set that holds some
//    policies (policy_ids) makes every other policy `unexpected`.

both_backends!(
    an_unchanged_tenant_has_no_drift_since_its_backup,
    |store: Store| async move {
        let e = Env::new(store).await;
        let copy = copy_of("acsc-intune-hardening");
        let tenant = e.folder("t", copy.path()).await;
        let scan = opsledger_providers::folder::scan::scan(copy.path()).unwrap();
        let one = &scan.items["configurationPolicies"][0];
        let backup = e
            .run(
                &tenant,
                RunType::BackupSetAddPolicies,
                json!({ "policy_ids": [format!("configurationPolicies/{}", one.id)] }),
            )
            .await;
        assert_eq!(backup.outcome, Outcome::Succeeded, "{:?}", backup.failures);
        let set = backup.context["backup_set"]["id"].as_str().unwrap().to_owned();
        // Nothing changed in the tenant since.
        let run = e
            .run(&tenant, RunType::BaselineCompare, json!({ "backup_set_id": set }))
            .await;
        let found = e.findings(&run).await;
        assert_eq!(
            kinds(&found),
            vec![],
            "an unchanged tenant drifted since its backup (outcome {:?})",
            run.outcome
        );
    }
);

// ---------------------------------------------------------------------------
// 4. A capture that ends `failed` (baseline_no_evidence) still seals its
//    snapshot, and that snapshot becomes the profile's latest baseline:
//    every later compare against the profile reads the failed run's
//    artifact instead of the last good one.

both_backends!(
    a_failed_capture_does_not_replace_the_baseline,
    |store: Store| async move {
        let e = Env::new(store).await;
        let golden_dir = copy_of("acsc-intune-hardening");
        let golden = e.folder("golden", golden_dir.path()).await;
        e.store
            .create_baseline_profile(
                &e.ws,
                "standard",
                &golden,
                Some(&["configurationPolicies".to_owned()]),
                "test",
            )
            .await
            .unwrap();
        let good = e.capture(&golden, json!({"profile": "standard"})).await;
        assert_eq!(good.outcome, Outcome::Succeeded, "{:#}", good.context);

        // The golden tenant cannot be read any more (its files are gone).
        for entry in std::fs::read_dir(golden_dir.path()).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                std::fs::remove_dir_all(p).unwrap();
            }
        }
        let bad = e.capture(&golden, json!({"profile": "standard"})).await;
        assert_eq!(bad.outcome, Outcome::Failed, "{:#}", bad.context);

        // A customer in line with the standard.
        let customer_dir = copy_of("acsc-intune-hardening");
        let customer = e.folder("customer", customer_dir.path()).await;
        let run = e
            .run(
                &customer,
                RunType::BaselineCompare,
                json!({"profile": "standard"}),
            )
            .await;
        assert_eq!(
            (
                run.outcome,
                run.context["compare"]["baseline_snapshot_id"].clone()
            ),
            (Outcome::Succeeded, json!(snapshot_of(&good))),
            "the compare used the snapshot of a FAILED capture as the baseline: {:#}",
            run.context
        );
    }
);

// ---------------------------------------------------------------------------
// 5. Reconciliation gives a better outcome than the run would have ended
//    with: a capture with nothing but type gaps ends `failed`
//    (baseline_no_evidence) when it runs, but `partially_succeeded` when
//    its worker dies after sealing and the run is reconciled.

both_backends!(
    a_stale_capture_reconciles_to_what_it_would_have_ended,
    |store: Store| async move {
        let e = Env::new(store).await;
        let t = e.tenant("contoso", "demo:partial").await;
        let ca = vec!["conditionalAccessPolicies".to_owned()];
        let profile = e
            .store
            .create_baseline_profile(&e.ws, "ca", &t, Some(&ca), "test")
            .await
            .unwrap();
        let live = e.capture(&t, json!({"profile": "ca"})).await;
        assert_eq!(
            live.outcome,
            Outcome::Failed,
            "{:?} {:#}",
            live.failures,
            live.context
        );
        // A failed capture is never sealed; its type gap, sealed by hand:
        assert!(
            e.store
                .baseline_snapshot(&e.ws, &snapshot_of(&live))
                .await
                .unwrap()
                .unwrap()
                .sealed_at
                .is_none()
        );
        let gaps = vec![opsledger_core::baseline::Gap {
            policy_type: "conditionalAccessPolicies".into(),
            external_id: None,
            reason: opsledger_core::baseline::GapReason::TypeUnreadable,
            message: "forbidden".into(),
        }];

        // The same state, its worker dead after sealing.
        let (id, fence) = e
            .claimed(&t, RunType::BaselineCapture, json!({"profile": "ca"}))
            .await;
        let lease = opsledger_store::testing::lease(&e.store, &fence, &id).await;
        lease.baseline_snapshot(&profile.id, &ca, &[]).await.unwrap();
        lease.seal_baseline_snapshot(&gaps, &[]).await.unwrap();
        let run = reconcile(&e.store, &id).await;
        assert_eq!(
            run.outcome,
            live.outcome,
            "reconciled {:?} from the same proof the live run ended {:?} with",
            run.reconciliation(),
            live.outcome
        );
    }
);

// ---------------------------------------------------------------------------
// 6. A retried compare whose tenant changed between attempts cannot finish
//    (fixed: it fails closed, `tenant_changed_during_compare`, not stale):
//    the read list is not planned once (as the capture's is), so attempt 2
//    asks for another total of the active "read" phase (TotalDiffers) or
//    records more units than attempt 1's total.

both_backends!(
    a_retried_compare_finishes_when_the_tenant_changed_between_attempts,
    |store: Store| async move {
        let e = Env::new(store).await;
        let golden = e.folder("golden", &testdata("acsc-intune-hardening")).await;
        let capture = e.capture(&golden, json!({})).await;
        let snapshot = snapshot_of(&capture);
        let copy = copy_of("acsc-intune-hardening");
        let customer = e.folder("customer", copy.path()).await;
        let scan = opsledger_providers::folder::scan::scan(copy.path()).unwrap();
        let listed = &scan.items["configurationPolicies"];

        // Attempt 1: entered "read" with the tenant's policies, read two, died.
        let params = json!({ "baseline_snapshot_id": snapshot });
        let (id, fence) = e.claimed(&customer, RunType::BaselineCompare, params).await;
        let lease = opsledger_store::testing::lease(&e.store, &fence, &id).await;
        let plan: Vec<PhasePlan> = opsledger_core::baseline::COMPARE_PHASES
            .iter()
            .map(|(k, l)| PhasePlan::new(*k, *l))
            .collect();
        lease.plan_phases(&plan).await.unwrap();
        lease.set_phase("load", None).await.unwrap();
        lease.set_phase("read", None).await.unwrap();
        // What attempt 1 listed: every policy of the baseline's types.
        let head = e
            .store
            .baseline_snapshot(&e.ws, &snapshot)
            .await
            .unwrap()
            .unwrap();
        let total: usize = head
            .policy_types
            .iter()
            .map(|t| scan.items.get(t.as_str()).map_or(0, Vec::len))
            .sum();
        lease.set_phase("read", Some(total as u64)).await.unwrap();
        let units: Vec<UnitRecord> = listed[..2]
            .iter()
            .map(|i| UnitRecord::new(format!("configurationPolicies/{}", i.id), UnitOutcome::Succeeded))
            .collect();
        lease.record_phase_units("read", &units).await.unwrap();
        assert!(e.store.release_job(&fence).await.unwrap());

        // Meanwhile a policy is added to the tenant.
        let (file, _) = one_acsc_file(copy.path());
        let mut v: Value = serde_json::from_str(
            opsledger_providers::folder::decode::decode(&std::fs::read(&file).unwrap())
                .unwrap()
                .0
                .trim_start_matches('\u{feff}'),
        )
        .unwrap();
        v["name"] = json!("Added between attempts");
        v["id"] = json!("00000000-0000-0000-0000-00000000beef");
        std::fs::write(
            file.with_file_name("Added between attempts.json"),
            serde_json::to_string(&v).unwrap(),
        )
        .unwrap();

        // Attempt 2.
        let run = run_to_end(&e.store, &id).await;
        let q = "SELECT COALESCE(last_error, '') FROM jobs WHERE run_id = $1";
        let errors: Vec<(String,)> = opsledger_store::raw_on_pool!(&e.store, pool => {
            sqlx::query_as(q).bind(&id).fetch_all(pool).await.unwrap()
        });
        // The phase's total cannot be both: the run fails closed, saying
        // why, instead of going stale (or counting past its total).
        assert_eq!(run.outcome, Outcome::Failed, "{:?} jobs {errors:?}", run.failures);
        assert_eq!(run.failures[0].code, "tenant_changed_during_compare");
        assert!(
            run.reconciliation().is_none(),
            "closed by its own attempt, not as stale"
        );
    }
);

// ---------------------------------------------------------------------------
// 7. Store: a capture's snapshot may be filed under ANOTHER tenant's profile
//    (no check in snapshot_for_run_fenced, no constraint in 0020): it then
//    reconciles `succeeded` and becomes that other tenant's default
//    baseline.

both_backends!(
    a_snapshot_cannot_be_filed_under_another_tenants_profile,
    |store: Store| async move {
        let e = Env::new(store).await;
        let a = e.tenant("a", "demo:healthy").await;
        let b = e.tenant("b", "demo:healthy").await;
        let b_capture = e.capture(&b, json!({})).await;
        assert_eq!(b_capture.outcome, Outcome::Succeeded);
        let b_default = e.store.default_baseline_profile(&b).await.unwrap().unwrap();

        let (id, fence) = e.claimed(&a, RunType::BaselineCapture, json!({})).await;
        let lease = opsledger_store::testing::lease(&e.store, &fence, &id).await;
        let made = lease
            .baseline_snapshot(&b_default.id, &["deviceConfigurations".to_owned()], &[])
            .await;
        assert!(
            made.is_err(),
            "tenant a's capture run filed its snapshot under tenant b's default profile"
        );
    }
);

// ---------------------------------------------------------------------------
// 8. Pure: references. Restore maps a reference by the target group's name
//    trimmed and case-insensitive (`Directory::by_name`); the normalizer
//    keeps the name's case, so a restored (or hand-aligned) tenant whose
//    group reads `ALL STAFF` drifts from `All Staff` on every reference.

fn ev(policy_type: &str, id: &str, payload: &Value, names: &Names) -> Evidence {
    Evidence {
        policy_type: policy_type.into(),
        external_id: id.into(),
        display_name: payload["displayName"].as_str().unwrap_or_default().into(),
        normalized: normalize(payload, names),
    }
}

fn one_type(t: &str) -> BTreeSet<String> {
    [t.to_owned()].into()
}

#[test]
fn a_group_whose_name_differs_only_in_case_is_the_same_group() {
    use opsledger_providers::{Directory, DirectoryEntry, DirectoryKind};
    let dir = |id: &str, name: &str| {
        let mut d = Directory::default();
        d.insert(DirectoryEntry {
            kind: DirectoryKind::Group,
            id: id.into(),
            display_name: name.into(),
        });
        d
    };
    let (golden, customer) = (dir("g-1", "All Staff"), dir("c-9", "ALL STAFF"));
    // Restore considers them one group.
    assert_eq!(customer.by_name(DirectoryKind::Group, "All Staff").len(), 1);
    let policy = |group: &str| {
        json!({"displayName": "Compliance", "passwordRequired": true,
               "assignments": [{"target": {"@odata.type": "#microsoft.graph.groupAssignmentTarget", "groupId": group}}]})
    };
    let t = "deviceCompliancePolicies";
    let cmp = compare(
        &[ev(t, "1", &policy("g-1"), &golden.names())],
        &[ev(t, "2", &policy("c-9"), &customer.names())],
        &one_type(t),
    );
    assert_eq!(
        cmp.findings,
        vec![],
        "the same group, named in another case, is drift"
    );
}

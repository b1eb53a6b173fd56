//! `evidence.snapshot.generate` end to end through the runner, on both
//! databases: the items every evidence source yields (an empty tenant's
//! included), counted exactly once with `processed == total == items`; a
//! retried run recording its first plan without recounting; tampering in
//! the database (an item altered, with and without its stored hash
//! recomputed; another snapshot's items and signature swapped in; items
//! reordered) failing verification; and the reconciliation matrix from the
//! run's own proof.

mod common;

use opsledger_core::evidence::{
    EvidenceKey, Signed, Source, StoredSnapshot, VerifyFailure, item_sha256, items_of, sign, signing_message,
    verify,
};
use opsledger_core::{Outcome, Run, RunType, UnitOutcome};
use opsledger_engine::Registry;
use opsledger_families::Services;
use opsledger_store::artifacts::UnitArtifact;
use opsledger_store::evidence::{RecordedItem, SnapshotHead, SnapshotItem};
use opsledger_store::jobs::Fence;
use opsledger_store::{ContextPatch, NewRun, Store, UnitRecord, both_backends, raw_on_pool};
use serde_json::{Value, json};
use std::collections::BTreeMap;

fn key() -> EvidenceKey {
    EvidenceKey::new(b"the evidence key of every node, 41 bytes".to_vec()).unwrap()
}

fn registry() -> Registry {
    opsledger_families::registry_with(Services {
        evidence_key: Some(key()),
        ..Services::default()
    })
}

struct Env {
    store: Store,
    ws: String,
}

impl Env {
    async fn new(store: Store) -> Env {
        let ws = store.create_workspace("ws").await.unwrap().id;
        Env { store, ws }
    }

    async fn tenant(&self, name: &str) -> String {
        self.store
            .create_tenant(&self.ws, name, "demo:healthy")
            .await
            .unwrap()
            .id
    }

    async fn create(&self, tenant: &str, t: RunType) -> String {
        let params = opsledger_core::params::validate(t, &json!({})).unwrap();
        let new = NewRun::on_tenant(&self.ws, tenant, t, "test", params);
        self.store.create_run(new).await.unwrap().into_run().id
    }

    async fn run(&self, tenant: &str, t: RunType) -> Run {
        let id = self.create(tenant, t).await;
        run_to_end(&self.store, &id).await
    }

    async fn head(&self, id: &str) -> SnapshotHead {
        self.store.evidence_snapshot(&self.ws, id).await.unwrap().unwrap()
    }

    async fn stored(&self, id: &str) -> StoredSnapshot {
        let head = self.head(id).await;
        self.store.stored_evidence_snapshot(&head).await.unwrap()
    }

    async fn verified(&self, id: &str) -> Result<(), VerifyFailure> {
        verify(&key(), &self.stored(id).await)
    }

    async fn sql(&self, q: String) {
        raw_on_pool!(&self.store, pool => {
            sqlx::query(sqlx::AssertSqlSafe(q)).execute(pool).await.unwrap();
        });
    }
}

/// Runs a runner (with the evidence key) until run `id` completes.
async fn run_to_end(store: &Store, id: &str) -> Run {
    common::run_to_end_with(store, registry(), id).await
}

/// The run's workers died on every attempt; then its proof decides.
async fn reconcile(store: &Store, id: &str) -> Run {
    common::reconcile_with(store, &registry(), id).await
}

fn reason(run: &Run) -> String {
    run.reconciliation().unwrap()["reason_code"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn snapshot_of(run: &Run) -> String {
    run.context["evidence_snapshot"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no snapshot in {:#}", run.context))
        .to_owned()
}

/// A succeeded run counted every item once: `processed == total == items`.
fn assert_counted(run: &Run) -> u64 {
    assert_eq!(
        run.outcome,
        Outcome::Succeeded,
        "{:?} {:#}",
        run.failures,
        run.context
    );
    let items = run.context["evidence_snapshot"]["items"].as_u64().unwrap();
    let c = &run.summary_counts;
    assert_eq!(
        (c.total, c.processed, c.succeeded),
        (Some(items), Some(items), Some(items))
    );
    assert!(items > 0, "never an empty snapshot");
    items
}

fn by_key(s: &StoredSnapshot) -> BTreeMap<&str, &Value> {
    s.items
        .iter()
        .map(|i| (i.key.as_str(), i.payload.as_ref().unwrap()))
        .collect()
}

fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

both_backends!(
    a_snapshot_states_every_source_signed_and_verifiable,
    |store: Store| async move {
        let e = Env::new(store).await;
        let t = e.tenant("contoso").await;

        // Nothing yet: every source still says so.
        let first = e.run(&t, RunType::EvidenceSnapshotGenerate).await;
        let n = assert_counted(&first);
        let id = snapshot_of(&first);
        let s = e.stored(&id).await;
        assert_eq!(s.items.len() as u64, n);
        assert_eq!(e.head(&id).await.created_by_run_id, first.id);
        let items = by_key(&s);
        assert_eq!(items["backup/latest"]["status"], "no_backup");
        assert_eq!(items["backup/latest_complete"]["status"], "no_complete_backup");
        assert_eq!(items["baseline_compare/latest"]["status"], "never_compared");
        assert_eq!(items["conditional_access/summary"]["status"], "no_policies");
        assert_eq!(items["inventory/latest_sync"]["status"], "never_synced");
        assert_eq!(
            items["inventory/deviceConfigurations"]["read_by_inventory_run"],
            false
        );
        assert_eq!(e.verified(&id).await, Ok(()));
        // Each item a unit of the ledger, once.
        let ledger = e.store.recorded_units(&first.id).await.unwrap();
        assert_eq!(ledger.len() as u64, n);
        assert!(s.items.iter().all(|i| ledger[&i.key] == UnitOutcome::Succeeded));

        // After an inventory, a backup and a compare.
        let inv = e.run(&t, RunType::InventorySync).await;
        assert_eq!(inv.outcome, Outcome::Succeeded);
        let backup = e.run(&t, RunType::BackupSetAddPolicies).await;
        assert_eq!(backup.outcome, Outcome::Succeeded, "{:?}", backup.failures);
        let capture = e.run(&t, RunType::BaselineCapture).await;
        assert_eq!(capture.outcome, Outcome::Succeeded);
        let compare = e.run(&t, RunType::BaselineCompare).await;
        assert_eq!(compare.outcome, Outcome::Succeeded);

        let second = e.run(&t, RunType::EvidenceSnapshotGenerate).await;
        let n2 = assert_counted(&second);
        let id2 = snapshot_of(&second);
        assert_ne!(id, id2);
        let s2 = e.stored(&id2).await;
        let items = by_key(&s2);
        let dc = items["inventory/deviceConfigurations"];
        assert_eq!(dc["read_by_inventory_run"], true);
        assert_eq!(dc["read_by_run_id"], inv.id.as_str());
        assert!(dc["items"].as_u64().unwrap() > 0);
        assert_eq!(items["inventory/latest_sync"]["run_id"], inv.id.as_str());
        assert_eq!(
            items["inventory/conditionalAccessPolicies"]["latest_sync_status"],
            "covered"
        );
        assert_eq!(items["backup/latest"]["complete"], true);
        assert_eq!(
            items["backup/latest_complete"]["backup_set_id"],
            items["backup/latest"]["backup_set_id"]
        );
        assert!(items["backup/latest"]["items"].as_u64().unwrap() > 0);
        assert_eq!(items["baseline_compare/latest"]["run_id"], compare.id.as_str());
        assert_eq!(items["baseline_compare/latest"]["findings"], 0);
        // Conditional Access: a summary and each policy with its state.
        let ca: Vec<&StoredItemRef> = s2
            .items
            .iter()
            .filter(|i| i.key.starts_with("conditional_access/policy/"))
            .collect();
        let summary = items["conditional_access/summary"];
        assert_eq!(summary["policies"].as_u64(), Some(ca.len() as u64));
        assert!(!ca.is_empty());
        for p in &ca {
            let state = p.payload.as_ref().unwrap()["state"].as_str().unwrap();
            assert!(
                ["enabled", "disabled", "enabledForReportingButNotEnforced"].contains(&state),
                "{state}"
            );
            assert_eq!(p.source, "conditional_access");
        }
        let states: u64 = summary["by_state"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(states, ca.len() as u64);
        // Assignment coverage of an assignable type adds up.
        let a = items["assignments/deviceConfigurations"];
        let (p, yes, no, unknown) = (
            a["policies"].as_u64().unwrap(),
            a["assigned"].as_u64().unwrap(),
            a["unassigned"].as_u64().unwrap(),
            a["unknown"].as_u64().unwrap(),
        );
        assert_eq!(p, dc["items"].as_u64().unwrap());
        assert_eq!(yes + no + unknown, p);
        assert!(yes > 0);
        assert!(!items.contains_key("assignments/conditionalAccessPolicies"));
        assert_eq!(
            n2,
            n + ca.len() as u64,
            "one item per CA policy more, nothing else"
        );
        // Both snapshots still verify.
        assert_eq!(e.verified(&id).await, Ok(()));
        assert_eq!(e.verified(&id2).await, Ok(()));
    }
);

type StoredItemRef = opsledger_core::evidence::StoredItem;

both_backends!(
    altering_the_database_fails_verification_even_with_hashes_recomputed,
    |store: Store| async move {
        let e = Env::new(store).await;
        let t = e.tenant("contoso").await;
        assert_eq!(
            e.run(&t, RunType::InventorySync).await.outcome,
            Outcome::Succeeded
        );
        let a = snapshot_of(&e.run(&t, RunType::EvidenceSnapshotGenerate).await);
        let b = snapshot_of(&e.run(&t, RunType::EvidenceSnapshotGenerate).await);
        let c = snapshot_of(&e.run(&t, RunType::EvidenceSnapshotGenerate).await);
        for s in [&a, &b, &c] {
            assert_eq!(e.verified(s).await, Ok(()));
        }

        // One item's payload edited: its hash no longer matches.
        let target = e.stored(&a).await.items[3].clone();
        let mut altered = target.payload.clone().unwrap();
        altered["items"] = json!(999);
        let text = serde_json::to_string(&altered).unwrap();
        e.sql(format!(
            "UPDATE evidence_snapshot_items SET payload = {} WHERE snapshot_id = {} AND item_key = {}",
            quoted(&text),
            quoted(&a),
            quoted(&target.key)
        ))
        .await;
        assert_eq!(
            e.verified(&a).await,
            Err(VerifyFailure::ItemAltered {
                key: target.key.clone()
            })
        );
        // ...and its stored hash recomputed to match: the signature fails.
        let source = Source::parse(&target.source).unwrap();
        e.sql(format!(
            "UPDATE evidence_snapshot_items SET sha256 = {} WHERE snapshot_id = {} AND item_key = {}",
            quoted(&item_sha256(&target.key, source, &altered)),
            quoted(&a),
            quoted(&target.key)
        ))
        .await;
        assert_eq!(e.verified(&a).await, Err(VerifyFailure::SignatureMismatch));

        // Another snapshot's items and signature swapped into `b`.
        e.sql(format!(
            "DELETE FROM evidence_snapshot_items WHERE snapshot_id = {}",
            quoted(&b)
        ))
        .await;
        e.sql(format!(
            "INSERT INTO evidence_snapshot_items (snapshot_id, seq, item_key, source, payload, sha256, recorded_at) \
             SELECT {}, seq, item_key, source, payload, sha256, recorded_at FROM evidence_snapshot_items \
             WHERE snapshot_id = {}",
            quoted(&b),
            quoted(&c)
        ))
        .await;
        let c_head = e.head(&c).await;
        e.sql(format!(
            "UPDATE evidence_snapshots SET signature = {}, item_count = {} WHERE id = {}",
            quoted(c_head.signature.as_deref().unwrap()),
            c_head.item_count,
            quoted(&b)
        ))
        .await;
        assert_eq!(e.verified(&b).await, Err(VerifyFailure::SignatureMismatch));
        assert_eq!(e.verified(&c).await, Ok(()), "the original still holds");

        // Two items of `c` swapped in order.
        let q = |from: i64, to: i64| {
            format!(
                "UPDATE evidence_snapshot_items SET seq = {to} WHERE snapshot_id = {} AND seq = {from}",
                quoted(&c)
            )
        };
        e.sql(q(0, 100_000)).await;
        e.sql(q(1, 0)).await;
        e.sql(q(100_000, 1)).await;
        assert_eq!(e.verified(&c).await, Err(VerifyFailure::SignatureMismatch));
        e.sql(q(0, 100_000)).await;
        e.sql(q(1, 0)).await;
        e.sql(q(100_000, 1)).await;
        assert_eq!(e.verified(&c).await, Ok(()), "put back, it holds again");

        // The time edited.
        e.sql(format!(
            "UPDATE evidence_snapshots SET generated_at = generated_at + 1 WHERE id = {}",
            quoted(&c)
        ))
        .await;
        assert_eq!(e.verified(&c).await, Err(VerifyFailure::SignatureMismatch));

        // A key other than the one it was signed with.
        let other = EvidenceKey::new(vec![9u8; 32]).unwrap();
        let d = snapshot_of(&e.run(&t, RunType::EvidenceSnapshotGenerate).await);
        assert_eq!(
            verify(&other, &e.stored(&d).await),
            Err(VerifyFailure::SignatureMismatch)
        );
        assert_eq!(e.verified(&d).await, Ok(()));
    }
);

/// A run claimed by a worker (lease `lease_ms`), about to die.
async fn claimed(e: &Env, tenant: &str, lease_ms: u64) -> (String, Fence) {
    let id = e.create(tenant, RunType::EvidenceSnapshotGenerate).await;
    let job = e
        .store
        .claim_jobs("w", 10, lease_ms)
        .await
        .unwrap()
        .into_iter()
        .find(|j| j.run_id == id)
        .unwrap();
    (id, job.fence)
}

/// The run's lease expired and its job was rescued for a retry.
async fn rescued(e: &Env, id: &str) {
    e.sql(format!(
        "UPDATE jobs SET lease_expires_at = 0 WHERE run_id = {}",
        quoted(id)
    ))
    .await;
    e.store.rescue_expired_jobs(10).await.unwrap();
}

/// Signs a plan as the family does, under the test key.
fn plan_signer(head: Signed<'_>, items: &[opsledger_core::evidence::Item]) -> String {
    opsledger_core::evidence::plan_signature(&key(), head, items)
}

/// The unit recording `item` with its (true) hash.
fn unit(snapshot: &str, item: &SnapshotItem) -> UnitRecord {
    let sha256 = item_sha256(
        &item.item.key,
        Source::parse(&item.item.source).unwrap(),
        item.item.payload.as_ref().unwrap(),
    );
    UnitRecord::new(item.item.key.clone(), UnitOutcome::Succeeded).with_artifact(UnitArtifact::EvidenceItem(
        RecordedItem {
            snapshot_id: snapshot.to_owned(),
            item_key: item.item.key.clone(),
            sha256,
        },
    ))
}

/// The signature of `head` over `items` under `k`, as the family makes it.
fn signature(k: &EvidenceKey, head: &SnapshotHead, items: &[SnapshotItem]) -> String {
    let hashes: Vec<String> = items.iter().map(|i| i.item.sha256.clone().unwrap()).collect();
    sign(
        k,
        &signing_message(
            Signed {
                snapshot_id: &head.id,
                workspace_id: &head.workspace_id,
                tenant_id: &head.tenant_id,
                generated_at: head.generated_at,
            },
            items
                .iter()
                .zip(&hashes)
                .map(|(i, h)| (i.item.key.as_str(), h.as_str())),
        ),
    )
}

/// A claimed run whose snapshot is planned and `recorded` items recorded
/// (all of them when `None`); the lease, the head and its items.
async fn planned(
    e: &Env,
    tenant: &str,
    recorded: Option<usize>,
) -> (String, opsledger_store::lease::LeasedRun, SnapshotHead) {
    let (id, fence) = claimed(e, tenant, 60_000).await;
    let lease = opsledger_store::testing::lease(&e.store, &fence, &id).await;
    let sources = e.store.evidence_sources(&e.ws, tenant).await.unwrap();
    let head = lease
        .evidence_snapshot(&items_of(&sources).unwrap(), &plan_signer)
        .await
        .unwrap();
    lease.init_total(head.item_count).await.unwrap();
    let items = e.store.evidence_items(&head.id).await.unwrap();
    let n = recorded.unwrap_or(items.len());
    let units: Vec<UnitRecord> = items[..n].iter().map(|i| unit(&head.id, i)).collect();
    let summary = lease.record_units(&units).await.unwrap();
    assert_eq!(summary.recorded, n as u64);
    (id, lease, head)
}

both_backends!(
    a_retried_run_records_its_first_plan_once,
    |store: Store| async move {
        let e = Env::new(store).await;
        let t = e.tenant("contoso").await;
        // The first attempt plans, records three items (twice: a duplicate
        // delivery writes nothing), and its worker dies.
        let (id, fence) = claimed(&e, &t, 60_000).await;
        let lease = opsledger_store::testing::lease(&e.store, &fence, &id).await;
        let sources = e.store.evidence_sources(&e.ws, &t).await.unwrap();
        let head = lease
            .evidence_snapshot(&items_of(&sources).unwrap(), &plan_signer)
            .await
            .unwrap();
        lease.init_total(head.item_count).await.unwrap();
        let items = e.store.evidence_items(&head.id).await.unwrap();
        let units: Vec<UnitRecord> = items[..3].iter().map(|i| unit(&head.id, i)).collect();
        assert_eq!(lease.record_units(&units).await.unwrap().recorded, 3);
        let again = lease.record_units(&units).await.unwrap();
        assert_eq!((again.recorded, again.duplicates), (0, 3));
        let recorded_at: Vec<Option<i64>> = e.store.evidence_items(&head.id).await.unwrap()[..3]
            .iter()
            .map(|i| i.recorded_at)
            .collect();

        // The tenant changes (its lease still held), then the lease expires
        // and the job is rescued for a retry: the plan does not change.
        assert_eq!(
            e.run(&t, RunType::InventorySync).await.outcome,
            Outcome::Succeeded
        );
        rescued(&e, &id).await;
        let replanned = items_of(&e.store.evidence_sources(&e.ws, &t).await.unwrap()).unwrap();
        assert!(
            replanned.len() > items.len(),
            "a new plan would hold the CA policies"
        );
        let run = run_to_end(&e.store, &id).await;
        let n = assert_counted(&run);
        assert_eq!(snapshot_of(&run), head.id, "the first attempt's snapshot");
        assert_eq!(n, head.item_count);
        let after = e.store.evidence_items(&head.id).await.unwrap();
        assert_eq!(
            after.iter().map(|i| &i.item.key).collect::<Vec<_>>(),
            items.iter().map(|i| &i.item.key).collect::<Vec<_>>()
        );
        assert_eq!(
            after[..3].iter().map(|i| i.recorded_at).collect::<Vec<_>>(),
            recorded_at,
            "items recorded by the first attempt were not recorded again"
        );
        assert_eq!(e.store.recorded_units(&id).await.unwrap().len() as u64, n);
        assert_eq!(e.verified(&head.id).await, Ok(()));
        assert_eq!(e.store.evidence_snapshots_of_run(&id).await.unwrap().len(), 1);
    }
);

both_backends!(
    a_unit_cannot_record_an_item_with_another_hash_or_an_unplanned_item,
    |store: Store| async move {
        let e = Env::new(store).await;
        let t = e.tenant("contoso").await;
        let (id, lease, head) = planned(&e, &t, Some(0)).await;
        let items = e.store.evidence_items(&head.id).await.unwrap();
        let mut wrong = unit(&head.id, &items[0]);
        if let Some(UnitArtifact::EvidenceItem(r)) = &mut wrong.artifact {
            r.sha256 = "0".repeat(64);
        }
        assert!(lease.record_units(&[wrong]).await.is_err());
        let mut unplanned = unit(&head.id, &items[0]);
        unplanned.key = "inventory/notPlanned".into();
        if let Some(UnitArtifact::EvidenceItem(r)) = &mut unplanned.artifact {
            r.item_key = "inventory/notPlanned".into();
        }
        assert!(lease.record_units(&[unplanned]).await.is_err());
        // Under another unit's key.
        let mut misfiled = unit(&head.id, &items[0]);
        misfiled.key = items[1].item.key.clone();
        assert!(lease.record_units(&[misfiled]).await.is_err());
        // Nothing was counted, nothing recorded.
        assert!(e.store.recorded_units(&id).await.unwrap().is_empty());
        let now = e.store.evidence_items(&head.id).await.unwrap();
        assert!(now.iter().all(|i| i.item.sha256.is_none()));
        // Sealing an incomplete snapshot is refused.
        assert!(lease.seal_evidence_snapshot("00", &[]).await.is_err());
        assert!(e.head(&head.id).await.sealed_at.is_none());
    }
);

both_backends!(
    a_stale_run_is_decided_by_its_own_signed_snapshot_only,
    |store: Store| async move {
        let e = Env::new(store).await;
        let t = e.tenant("contoso").await;
        let t2 = e.tenant("fabrikam").await;
        // Another run's complete, verified snapshot is no proof.
        let done = e.run(&t, RunType::EvidenceSnapshotGenerate).await;
        assert_counted(&done);
        let done_snapshot = snapshot_of(&done);

        // No snapshot of its own.
        let (id, _) = claimed(&e, &t, 60_000).await;
        let run = reconcile(&e.store, &id).await;
        assert_eq!(
            (run.outcome, reason(&run).as_str()),
            (Outcome::Failed, "stale_no_proof")
        );

        // Incomplete: never succeeded, the unrecorded items `not_attempted`.
        let (id, _, head) = planned(&e, &t, Some(2)).await;
        let run = reconcile(&e.store, &id).await;
        assert_eq!(
            (run.outcome, reason(&run).as_str()),
            (Outcome::Failed, "snapshot_incomplete")
        );
        let c = &run.summary_counts;
        assert_eq!(
            (c.total, c.processed),
            (Some(head.item_count), Some(head.item_count))
        );
        assert_eq!(c.succeeded, Some(2));
        assert_eq!(c.failed, Some(head.item_count - 2));

        // Every item recorded, never signed.
        let (id, _, _) = planned(&e, &t, None).await;
        let run = reconcile(&e.store, &id).await;
        assert_eq!(
            (run.outcome, reason(&run).as_str()),
            (Outcome::Failed, "snapshot_unsigned")
        );

        // Complete and signed (its worker died before closing): succeeded.
        let (id, lease, head) = planned(&e, &t, None).await;
        let items = e.store.evidence_items(&head.id).await.unwrap();
        let patch = ContextPatch::new(
            ["evidence_snapshot"],
            json!({"id": head.id, "items": head.item_count}),
        );
        lease
            .seal_evidence_snapshot(&signature(&key(), &head, &items), &[patch])
            .await
            .unwrap();
        let run = reconcile(&e.store, &id).await;
        assert_eq!(
            (run.outcome, reason(&run).as_str()),
            (Outcome::Succeeded, "snapshot_verified")
        );
        assert_eq!(run.summary_counts.processed, Some(head.item_count));
        assert_eq!(run.summary_counts.succeeded, Some(head.item_count));

        // Signed with a key that is not the node's.
        let (id, lease, head) = planned(&e, &t, None).await;
        let items = e.store.evidence_items(&head.id).await.unwrap();
        let forged = EvidenceKey::new(vec![3u8; 32]).unwrap();
        lease
            .seal_evidence_snapshot(&signature(&forged, &head, &items), &[])
            .await
            .unwrap();
        let run = reconcile(&e.store, &id).await;
        assert_eq!(
            (run.outcome, reason(&run).as_str()),
            (Outcome::Failed, "signature_mismatch")
        );

        // Complete and signed, but moved to another tenant: wrong scope.
        let (id, lease, head) = planned(&e, &t, None).await;
        let items = e.store.evidence_items(&head.id).await.unwrap();
        lease
            .seal_evidence_snapshot(&signature(&key(), &head, &items), &[])
            .await
            .unwrap();
        e.sql(format!(
            "UPDATE evidence_snapshots SET tenant_id = {} WHERE id = {}",
            quoted(&t2),
            quoted(&head.id)
        ))
        .await;
        let run = reconcile(&e.store, &id).await;
        assert_eq!(
            (run.outcome, reason(&run).as_str()),
            (Outcome::Failed, "proof_wrong_scope")
        );

        // Two candidates: its own verified snapshot, and another run's its
        // context names.
        let (id, lease, head) = planned(&e, &t, None).await;
        let items = e.store.evidence_items(&head.id).await.unwrap();
        lease
            .seal_evidence_snapshot(&signature(&key(), &head, &items), &[])
            .await
            .unwrap();
        lease
            .patch_context(&[ContextPatch::new(
                ["evidence_snapshot", "id"],
                json!(done_snapshot),
            )])
            .await
            .unwrap();
        let run = reconcile(&e.store, &id).await;
        assert_eq!(
            (run.outcome, reason(&run).as_str()),
            (Outcome::Failed, "proof_ambiguous")
        );

        // Only another run's snapshot, named by its context.
        let (id, fence) = claimed(&e, &t, 60_000).await;
        opsledger_store::testing::lease(&e.store, &fence, &id)
            .await
            .patch_context(&[ContextPatch::new(
                ["evidence_snapshot", "id"],
                json!(done_snapshot),
            )])
            .await
            .unwrap();
        let run = reconcile(&e.store, &id).await;
        assert_eq!(
            (run.outcome, reason(&run).as_str()),
            (Outcome::Failed, "proof_not_linked")
        );

        // A snapshot named that exists nowhere.
        let (id, fence) = claimed(&e, &t, 60_000).await;
        opsledger_store::testing::lease(&e.store, &fence, &id)
            .await
            .patch_context(&[ContextPatch::new(
                ["evidence_snapshot", "id"],
                json!("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"),
            )])
            .await
            .unwrap();
        let run = reconcile(&e.store, &id).await;
        assert_eq!(
            (run.outcome, reason(&run).as_str()),
            (Outcome::Failed, "proof_missing")
        );

        // The other run's snapshot is untouched by all of it.
        assert_eq!(e.verified(&done_snapshot).await, Ok(()));
    }
);

#[test]
fn without_a_key_the_type_is_not_executable_on_the_node() {
    let without = opsledger_families::registry(opsledger_providers::ProviderSettings::default());
    assert!(!without.supports(RunType::EvidenceSnapshotGenerate));
    assert!(registry().supports(RunType::EvidenceSnapshotGenerate));
}

both_backends!(
    content_altered_in_the_database_before_the_seal_is_never_signed,
    |store: Store| async move {
        let e = Env::new(store).await;
        let t = e.tenant("contoso").await;
        for recorded_first in [false, true] {
            // An attempt plans and records some items, and its worker dies.
            let (id, _lease, head) = planned(&e, &t, Some(2)).await;
            let items = e.store.evidence_items(&head.id).await.unwrap();
            // Someone with the database edits one item (a recorded one with
            // its hash recomputed, or one not recorded yet) before the retry.
            let target = if recorded_first {
                &items[0]
            } else {
                &items[items.len() - 1]
            };
            let mut altered = target.item.payload.clone().unwrap();
            altered["forged"] = json!(true);
            e.sql(format!(
                "UPDATE evidence_snapshot_items SET payload = {} WHERE snapshot_id = {} AND item_key = {}",
                quoted(&serde_json::to_string(&altered).unwrap()),
                quoted(&head.id),
                quoted(&target.item.key)
            ))
            .await;
            if recorded_first {
                let source = Source::parse(&target.item.source).unwrap();
                e.sql(format!(
                    "UPDATE evidence_snapshot_items SET sha256 = {} WHERE snapshot_id = {} AND item_key = {}",
                    quoted(&item_sha256(&target.item.key, source, &altered)),
                    quoted(&head.id),
                    quoted(&target.item.key)
                ))
                .await;
            }
            e.sql(format!(
                "UPDATE jobs SET lease_expires_at = 0 WHERE run_id = {}",
                quoted(&id)
            ))
            .await;
            e.store.rescue_expired_jobs(10).await.unwrap();
            let run = run_to_end(&e.store, &id).await;
            assert_eq!(
                run.outcome,
                Outcome::Failed,
                "{recorded_first}: {:?}",
                run.failures
            );
            assert_eq!(
                run.failures[0].code, "evidence_plan_altered",
                "{:?}",
                run.failures
            );
            let stored = e.store.evidence_snapshot(&e.ws, &head.id).await.unwrap().unwrap();
            assert_eq!(stored.signature, None, "the key never signed the altered content");
            assert!(e.verified(&head.id).await.is_err());
        }
    }
);

//! `opsledger reconcile` and `opsledger runs force-close`, as an operator
//! runs them against a database: per stale run the decision, reason code and
//! proof are printed, a second pass finds nothing, and a force-close is
//! recorded like a reconciliation.

use opsledger_core::inventory::{CoverageStatus, TypeCoverage};
use opsledger_core::{Outcome, RunType, UnitOutcome};
use opsledger_store::inventory::{ItemScope, ItemSnapshot};
use opsledger_store::testing;
use opsledger_store::{ContextPatch, NewRun, Store, UnitRecord};
use serde_json::{Value, json};
use std::process::Output;
use std::time::Duration;

async fn start(store: &Store, ws: &str, tenant: &str, t: RunType) -> String {
    let new = NewRun::on_tenant(ws, tenant, t, "test", json!({}));
    store.create_run(new).await.unwrap().into_run().id
}

/// An inventory sync whose worker covered both its types and then died on
/// every attempt: the run is `running`, its job failed, its proof complete.
async fn dead_sync_with_full_coverage(store: &Store, ws: &str, tenant: &str) -> String {
    let id = start(store, ws, tenant, RunType::InventorySync).await;
    let types = ["deviceConfigurations", "namedLocations"];
    let mut job = store.claim_jobs("dead", 1, 60_000).await.unwrap().pop().unwrap();
    store
        .patch_context(
            &id,
            &[ContextPatch::new(["inventory", "attempted_types"], json!(types))],
        )
        .await
        .unwrap();
    store.init_total(&id, 2).await.unwrap();
    for (n, t) in types.iter().enumerate() {
        let items: Vec<ItemSnapshot> = (0..=n)
            .map(|i| ItemSnapshot {
                external_id: format!("{t}-{i}"),
                display_name: format!("{t} {i}"),
                payload: json!({"i": i}),
            })
            .collect();
        let coverage = TypeCoverage {
            status: CoverageStatus::Covered,
            item_count: items.len() as u64,
            failure_code: None,
            unreadable_count: 0,
            unreadable: Vec::new(),
        };
        let unit = UnitRecord {
            context_patch: Some(ContextPatch::new(
                ["inventory", "coverage", t],
                serde_json::to_value(coverage).unwrap(),
            )),
            ..UnitRecord::new(*t, UnitOutcome::Succeeded)
        };
        let scope = ItemScope {
            workspace_id: ws,
            tenant_id: tenant,
            policy_type: t,
        };
        store
            .record_inventory_unit(Some(&job.fence), &id, scope, &items, unit)
            .await
            .unwrap();
    }
    // Every attempt's lease expires without a heartbeat.
    loop {
        store.heartbeat_job(&job.fence, &id, 1).await.unwrap();
        tokio::time::sleep(Duration::from_millis(3)).await;
        store.rescue_expired_jobs(10).await.unwrap();
        if job.is_last_attempt() {
            break;
        }
        job = store.claim_jobs("dead", 1, 1).await.unwrap().pop().unwrap();
    }
    id
}

fn opsledger(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_opsledger"))
        .args(args)
        .env("OPSLEDGER_QUEUE_TIMEOUT_MS", "1")
        .env("OPSLEDGER_HEARTBEAT_TIMEOUT_MS", "1000")
        .env("OPSLEDGER_HEARTBEAT_INTERVAL_MS", "100")
        .env("OPSLEDGER_LOG", "warn")
        .output()
        .expect("run opsledger")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_prints_decision_reason_and_proof_per_run() {
    let db = testing::sqlite().await;
    let store = db.store.clone();
    let ws = store.create_workspace("ws").await.unwrap().id;
    let a = store
        .create_tenant(&ws, "contoso", "demo:healthy")
        .await
        .unwrap()
        .id;
    let b = store
        .create_tenant(&ws, "fabrikam", "demo:healthy")
        .await
        .unwrap()
        .id;
    let sync = dead_sync_with_full_coverage(&store, &ws, &a).await;
    // Queued and never picked up; no adapter for its type.
    let policy = start(&store, &ws, &b, RunType::PolicySync).await;
    // Its heartbeat is older than the 1 s timeout only after a while.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let out = stdout(&opsledger(&["reconcile", "--db", &db.url]));
    let line = |id: &str| {
        out.lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("no line for {id} in:\n{out}"))
            .to_owned()
    };
    let s = line(&sync);
    for part in [
        "inventory.sync (running): succeeded via inventory_sync",
        "inventory_fully_covered",
        "[applied]",
        "\"count\":3",
        "outcome: succeeded",
        "units proven done: 2",
    ] {
        assert!(s.contains(part), "`{part}` missing from: {s}");
    }
    let p = line(&policy);
    for part in [
        "policy.sync (queued): failed via generic_fail_closed",
        "stale_no_proof",
        "proof: none",
        "outcome: failed",
    ] {
        assert!(p.contains(part), "`{part}` missing from: {p}");
    }
    assert_eq!(
        store.get_run(&sync).await.unwrap().unwrap().outcome,
        Outcome::Succeeded
    );
    assert_eq!(
        store.get_run(&policy).await.unwrap().unwrap().outcome,
        Outcome::Failed
    );

    // A second pass decides nothing; --json says so to scripts.
    let again: Value =
        serde_json::from_str(&stdout(&opsledger(&["reconcile", "--db", &db.url, "--json"]))).unwrap();
    assert_eq!(again["decisions"], json!([]), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_close_records_the_reason_and_refuses_a_closed_run() {
    let db = testing::sqlite().await;
    let store = db.store.clone();
    let ws = store.create_workspace("ws").await.unwrap().id;
    let t = store
        .create_tenant(&ws, "contoso", "demo:healthy")
        .await
        .unwrap()
        .id;
    let id = start(&store, &ws, &t, RunType::PolicySync).await;
    let close = |outcome: &str| {
        opsledger(&[
            "runs",
            "force-close",
            "--db",
            &db.url,
            &id,
            "--outcome",
            outcome,
            "--reason",
            "tenant offboarded",
        ])
    };
    let bad = close("pending");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a terminal outcome"));
    let no_reason = opsledger(&[
        "runs",
        "force-close",
        "--db",
        &db.url,
        &id,
        "--outcome",
        "failed",
        "--reason",
        "  ",
    ]);
    assert!(!no_reason.status.success());
    assert!(String::from_utf8_lossy(&no_reason.stderr).contains("needs a reason"));
    let unproven = close("succeeded");
    assert!(!unproven.status.success(), "no proof, no success");
    let err = String::from_utf8_lossy(&unproven.stderr);
    assert!(err.contains("no proof for `succeeded`"), "{err}");
    assert!(stdout(&close("blocked")).contains("closed as blocked"));
    let run = store.get_run(&id).await.unwrap().unwrap();
    let rec = run.reconciliation().unwrap();
    assert_eq!(
        (run.outcome, rec["adapter"].as_str(), rec["explanation"].as_str()),
        (
            Outcome::Blocked,
            Some("admin_force_close"),
            Some("tenant offboarded")
        )
    );
    assert_eq!(rec["previous_status"], "queued");
    let again = close("failed");
    assert!(
        !again.status.success(),
        "a closed run cannot be force-closed again"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("already completed as blocked"));
}

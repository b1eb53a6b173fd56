//! A `backup_set.restore` whose worker process is SIGKILLed between a
//! unit's provider create and that unit's commit, on SQLite and PostgreSQL:
//! the unit re-run by a restarted worker finds the object the dead attempt
//! created (by type and display name) and finishes it, so the target tenant
//! ends with exactly one policy per restored item — no duplicate — and the
//! run succeeds with exactly one restore result per selected item.
//!
//! **Why the kill lands in the window.** A restore unit of a policy with
//! assignments calls `create_policy`, then `assign`, and only then returns
//! its result, which the runner commits with the unit's ledger row. The
//! killed worker runs with a large `OPSLEDGER_DEMO_LATENCY_MS`: every demo
//! provider call waits that long *before* doing anything, so once the
//! created policy is in the database (the demo provider keeps a demo
//! tenant's writes in the ledger's `demo_objects` table), the unit still has
//! a whole latency to wait in `assign` before it can commit. The test polls
//! the target's demo objects and kills the worker as soon as one appears.
//! It then checks, from the database, that the kill really landed there (an
//! object exists whose unit has no ledger row): had it missed, the test
//! fails rather than passing without having proved anything.

use opsledger_core::{Outcome, Run, RunType};
use opsledger_engine::{Runner, RunnerConfig};
use opsledger_families::backup_set_restore::match_name;
use opsledger_families::demo_state::provider_settings;
use opsledger_providers::Provider;
use opsledger_providers::demo::{DemoProvider, Profile};
use opsledger_store::demo_objects::DemoObject;
use opsledger_store::restores::{RestoreOutcome, StoredRestoreResult};
use opsledger_store::testing::{self, TestStore};
use opsledger_store::{NewRun, Store};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// The source tenant (backed up) and the target tenant (restored into).
const SOURCE: &str = "contoso";
const TARGET: &str = "fabrikam";

/// Types whose restore unit creates the policy and then assigns it: the
/// gap between those two calls is the window the kill aims at.
const ASSIGNED_TYPES: [&str; 2] = ["deviceConfigurations", "deviceCompliancePolicies"];

/// Items restored.
const ITEMS: usize = 3;

/// Demo latency of the worker that is killed: every provider call waits
/// this long first, so a created policy's unit is at least this far from its
/// commit (its `assign` is still to come). Far longer than the polling loop
/// takes to see the object and send SIGKILL.
const KILL_WINDOW_LATENCY_MS: u64 = 1000;

/// An `opsledger worker` on the test database; short heartbeat and lease so
/// a dead worker's leases expire within a second and a restarted worker
/// rescues its jobs (the knobs of `review_pack_crash.rs`).
fn worker(url: &str, data: &Path, demo_latency_ms: u64) -> Child {
    Command::new(env!("CARGO_BIN_EXE_opsledger"))
        .args(["worker", "--db", url, "--data"])
        .arg(data)
        .envs([
            ("OPSLEDGER_WORKERS", "2"),
            ("OPSLEDGER_HEARTBEAT_INTERVAL_MS", "100"),
            ("OPSLEDGER_HEARTBEAT_TIMEOUT_MS", "800"),
            ("OPSLEDGER_RECONCILE_INTERVAL_MS", "200"),
            ("OPSLEDGER_POLL_INTERVAL_MS", "20"),
            ("OPSLEDGER_RETRY_BASE_MS", "20"),
            ("OPSLEDGER_LOG", "warn"),
        ])
        .env("OPSLEDGER_DEMO_LATENCY_MS", demo_latency_ms.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn worker")
}

fn sigkill(child: &Child) {
    let pid = child.id().expect("running") as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)
        .expect("SIGKILL");
}

async fn wait_until(store: &Store, id: &str, limit: Duration, done: impl Fn(&Run) -> bool) -> Run {
    let deadline = Instant::now() + limit;
    loop {
        let run = store.get_run(id).await.unwrap().unwrap();
        if done(&run) {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "run {id} ({}) never reached the awaited state: {:?} {:?}",
            run.run_type,
            run.summary_counts,
            run.failures
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `t` on `tenant` to its end with an in-process runner (no latency):
/// the setup, which is not what this test is about.
async fn run_in_process(store: &Store, ws: &str, tenant: &str, t: RunType) -> Run {
    let new = NewRun::on_tenant(ws, tenant, t, "test", json!({}));
    let id = store.create_run(new).await.unwrap().into_run().id;
    // Demo writes in the database, as the worker binary keeps them.
    let registry = opsledger_families::registry(provider_settings(store, Duration::ZERO));
    let config = RunnerConfig {
        concurrency: 4,
        poll_interval: Duration::from_millis(10),
        ..Default::default()
    };
    let shutdown = CancellationToken::new();
    let runner = tokio::spawn(Runner::new(store.clone(), registry, config).run(shutdown.clone()));
    let run = wait_until(store, &id, Duration::from_secs(120), Run::is_completed).await;
    shutdown.cancel();
    runner.await.unwrap();
    run
}

/// A backup item chosen for the restore.
#[derive(Debug, Clone)]
struct Picked {
    id: String,
    policy_type: String,
    /// Its display name as the restore matches it ([`match_name`]).
    name: String,
    /// Assignments in its backup: what the restored policy must end with.
    assignments: usize,
}

impl Picked {
    /// The restore's unit key of this item (`item/<backup item id>`, see
    /// `crates/families/src/backup_set_restore.rs`).
    fn unit_key(&self) -> String {
        format!("item/{}", self.id)
    }
}

/// `ITEMS` policies of the set with assignments, so their unit creates and
/// then assigns. Each is assigned to groups only (every demo tenant has the
/// same group names, so the references map into the target; filters and
/// named locations are named per tenant and might not), and its name is
/// none of the target's own generated policies (so the target starts with
/// no policy of that name: any one found later is the restore's).
async fn pick_items(store: &Store, set: &str) -> Vec<Picked> {
    let target = DemoProvider::new(TARGET, Profile::Healthy, Duration::ZERO);
    let mut taken: BTreeSet<(String, String)> = ASSIGNED_TYPES
        .iter()
        .flat_map(|t| {
            target
                .policies(t)
                .expect("a demo type")
                .into_iter()
                .map(move |p| (t.to_string(), match_name(&p.display_name)))
        })
        .collect();
    let mut picked = Vec::new();
    for head in store.backup_item_heads(set).await.unwrap() {
        if picked.len() == ITEMS {
            break;
        }
        let key = (head.policy_type.clone(), match_name(&head.display_name));
        if !ASSIGNED_TYPES.contains(&head.policy_type.as_str())
            || head.refs.is_empty()
            || !head.refs.values().all(|n| n.starts_with("group:"))
            || taken.contains(&key)
        {
            continue;
        }
        let item = store.backup_item(set, &head.id).await.unwrap().unwrap();
        let assignments = item.payload["assignments"].as_array().map_or(0, Vec::len);
        if assignments == 0 {
            continue;
        }
        taken.insert(key.clone());
        picked.push(Picked {
            id: head.id.clone(),
            policy_type: key.0,
            name: key.1,
            assignments,
        });
    }
    assert_eq!(
        picked.len(),
        ITEMS,
        "the source has too few policies assigned to groups only: {picked:?}"
    );
    picked
}

/// Every object written into the target's policy collections of the picked
/// types (the demo provider's database state): created policies, each
/// overwritten in place by its `assign`.
async fn written_into(store: &Store, tenant: &str) -> Vec<(String, DemoObject)> {
    let mut out = Vec::new();
    for t in ASSIGNED_TYPES {
        for o in store.demo_objects(tenant, t).await.unwrap() {
            out.push((t.to_owned(), o));
        }
    }
    out
}

fn name_of(o: &DemoObject) -> String {
    match_name(o.body["displayName"].as_str().unwrap_or_default())
}

fn assignments_of(o: &DemoObject) -> usize {
    o.body["assignments"].as_array().map_or(0, Vec::len)
}

/// The picked item an object of the target was written for; any other
/// write is a bug of its own.
fn item_of<'a>(picked: &'a [Picked], t: &str, o: &DemoObject) -> &'a Picked {
    picked
        .iter()
        .find(|p| p.policy_type == t && p.name == name_of(o))
        .unwrap_or_else(|| {
            panic!(
                "the restore wrote a {t} that is none of the selected items: {:?}",
                o.body
            )
        })
}

/// Every policy of type `t` the target serves (its generated ones and the
/// written ones), as a reader of the tenant sees them.
async fn served(p: &dyn Provider, t: &str) -> Vec<opsledger_providers::Policy> {
    let (mut items, mut page) = (Vec::new(), None);
    loop {
        let got = p.list_page(t, page.as_deref()).await.unwrap();
        items.extend(got.items);
        match got.next {
            Some(n) => page = Some(n),
            None => return items,
        }
    }
}

async fn killed_between_create_and_commit(db: TestStore) {
    let store = db.store.clone();
    let data = tempfile::tempdir().unwrap();
    let ws = store.create_workspace("ws").await.unwrap().id;
    let source = store.create_tenant(&ws, SOURCE, "demo:healthy").await.unwrap().id;
    let target = store.create_tenant(&ws, TARGET, "demo:healthy").await.unwrap().id;

    // Setup: a complete backup set of the source.
    let sync = run_in_process(&store, &ws, &source, RunType::InventorySync).await;
    assert!(
        matches!(sync.outcome, Outcome::Succeeded | Outcome::PartiallySucceeded),
        "{:?} {:?}",
        sync.outcome,
        sync.failures
    );
    let backup = run_in_process(&store, &ws, &source, RunType::BackupSetAddPolicies).await;
    assert_eq!(backup.outcome, Outcome::Succeeded, "{:?}", backup.failures);
    let set = backup.context["backup_set"]["id"]
        .as_str()
        .expect("the backup names its set")
        .to_owned();
    let picked = pick_items(&store, &set).await;
    let ids: Vec<&str> = picked.iter().map(|p| p.id.as_str()).collect();
    assert!(
        written_into(&store, &target).await.is_empty(),
        "nothing written into the target before the restore"
    );

    let restore = NewRun::on_tenant(
        &ws,
        &target,
        RunType::BackupSetRestore,
        "test",
        json!({"backup_set_id": set, "item_ids": ids}),
    );
    let restore = store.create_run(restore).await.unwrap().into_run().id;

    // The slow worker: kill it the moment a created policy is in the target.
    let mut node = worker(&db.url, data.path(), KILL_WINDOW_LATENCY_MS);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if !written_into(&store, &target).await.is_empty() {
            break;
        }
        if let Some(status) = node.try_wait().unwrap() {
            panic!("the worker exited on its own before any create: {status}");
        }
        let run = store.get_run(&restore).await.unwrap().unwrap();
        assert!(
            !run.is_completed(),
            "the restore ended before any create was seen: {:?} {:?} {:?}",
            run.outcome,
            run.summary_counts,
            run.failures
        );
        assert!(
            Instant::now() < deadline,
            "no create reached the target in time: {:?}",
            run.summary_counts
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sigkill(&node);
    let _ = node.wait().await;

    // The worker is dead: what the database holds now is what it left.
    let at_kill = store.get_run(&restore).await.unwrap().unwrap();
    assert!(!at_kill.is_completed(), "the restore finished before the kill");
    let recorded = store.recorded_units(&restore).await.unwrap();
    let results_at_kill = store.restore_results_of(&restore).await.unwrap();
    let written_at_kill = written_into(&store, &target).await;
    // The units cut between create and commit: object in the target, no ledger row.
    let mut cut: BTreeMap<String, String> = BTreeMap::new(); // item id → id of the object it created
    let mut per_item: BTreeMap<String, usize> = BTreeMap::new();
    for (t, o) in &written_at_kill {
        let item = item_of(&picked, t, o);
        *per_item.entry(item.id.clone()).or_default() += 1;
        if !recorded.contains_key(&item.unit_key()) {
            assert!(
                !results_at_kill
                    .iter()
                    .any(|r| r.backup_item_id.as_deref() == Some(item.id.as_str())),
                "a restore result without its unit's ledger row: {results_at_kill:?}"
            );
            cut.insert(item.id.clone(), o.id.clone());
        }
    }
    assert!(
        per_item.values().all(|n| *n == 1),
        "the first attempt itself created a duplicate: {per_item:?}"
    );
    assert!(
        !cut.is_empty(),
        "the kill missed the window: every created policy's unit was already committed \
         ({} written, units recorded: {recorded:?}, processed {:?}); raise KILL_WINDOW_LATENCY_MS",
        written_at_kill.len(),
        at_kill.summary_counts.processed
    );
    assert!(
        at_kill.summary_counts.processed.unwrap_or(0) < written_at_kill.len() as u64,
        "every created policy was already counted as processed: the kill missed the window: {:?}",
        at_kill.summary_counts
    );

    // A restarted worker (same database and data directory) rescues the dead
    // leases once they expire and finishes the restore.
    let _node = worker(&db.url, data.path(), 0);
    let run = wait_until(&store, &restore, Duration::from_secs(120), Run::is_completed).await;
    assert_eq!(
        run.outcome,
        Outcome::Succeeded,
        "{:?} {:?}",
        run.summary_counts,
        run.failures
    );
    let n = ITEMS as u64;
    assert_eq!(
        (run.summary_counts.total, run.summary_counts.processed),
        (Some(n), Some(n)),
        "{:?}",
        run.summary_counts
    );

    // Exactly one result per selected item, none failed.
    let results = store.restore_results_of(&restore).await.unwrap();
    assert_eq!(results.len(), ITEMS, "{results:?}");
    let by_item: BTreeMap<&str, &StoredRestoreResult> = results
        .iter()
        .map(|r| (r.backup_item_id.as_deref().expect("an item's result"), r))
        .collect();
    assert_eq!(
        by_item.keys().copied().collect::<BTreeSet<_>>(),
        ids.iter().copied().collect::<BTreeSet<_>>(),
        "one result for each selected item"
    );
    assert_eq!(store.recorded_units(&restore).await.unwrap().len(), ITEMS);
    for r in &results {
        assert_ne!(r.outcome, RestoreOutcome::Failed, "{r:?}");
    }

    // A cut unit found the policy its dead attempt created, and did not create another.
    for (item, created_id) in &cut {
        let r = by_item[item.as_str()];
        assert!(
            matches!(r.outcome, RestoreOutcome::Updated | RestoreOutcome::Unchanged),
            "the re-run unit of {item} must find what its first attempt created: {r:?}"
        );
        assert_eq!(
            r.target_id.as_deref(),
            Some(created_id.as_str()),
            "the re-run unit of {item} names the object its first attempt created"
        );
    }
    // Created once overall: every other unit created its own policy, once.
    let created = results
        .iter()
        .filter(|r| r.outcome == RestoreOutcome::Created)
        .count();
    assert_eq!(created, ITEMS - cut.len(), "{results:?}");
    assert_eq!(run.summary_counts.created.unwrap_or(0), created as u64);

    // The target's database state: one written policy per item, no more,
    // each the result's object, with its assignments written.
    let written = written_into(&store, &target).await;
    assert_eq!(
        written.len(),
        ITEMS,
        "as many policies written as items restored: {:?}",
        written.iter().map(|(t, o)| (t, name_of(o))).collect::<Vec<_>>()
    );
    for (t, o) in &written {
        let item = item_of(&picked, t, o);
        assert_eq!(
            by_item[item.id.as_str()].target_id.as_deref(),
            Some(o.id.as_str())
        );
        assert_eq!(
            assignments_of(o),
            item.assignments,
            "{} ended with its assignments",
            item.name
        );
    }

    // And as the tenant serves it: exactly one policy of each restored name.
    let p = opsledger_providers::open(
        "demo:healthy",
        &target,
        TARGET,
        &provider_settings(&store, Duration::ZERO),
    )
    .unwrap();
    for item in &picked {
        let same_name: Vec<String> = served(p.as_ref(), &item.policy_type)
            .await
            .into_iter()
            .filter(|pol| match_name(&pol.display_name) == item.name)
            .map(|pol| pol.id)
            .collect();
        assert_eq!(
            same_name.len(),
            1,
            "exactly one {} named `{}` in the target: {same_name:?}",
            item.policy_type,
            item.name
        );
        assert_eq!(
            by_item[item.id.as_str()].target_id.as_deref(),
            Some(same_name[0].as_str())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_unit_killed_after_its_create_makes_no_duplicate_sqlite() {
    killed_between_create_and_commit(testing::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_unit_killed_after_its_create_makes_no_duplicate_postgres() {
    let Some(db) = testing::postgres().await else {
        return;
    };
    killed_between_create_and_commit(db).await;
}

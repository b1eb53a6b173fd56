//! Worker processes against one database, as operators run them.
//!
//! - `crash_*`: a real `opsledger worker` child is SIGKILLed at random points
//!   of a 2 000-unit fan-out, 20 times, restarted each time; at the end every
//!   unit is recorded exactly once and the parent completed once with the
//!   outcome its units call for. On SQLite and PostgreSQL.
//! - `two_workers_and_a_server_share_a_fan_out`: two `opsledger worker`
//!   processes plus one `opsledger serve` on one PostgreSQL finish a
//!   10 000-unit fan-out started through the API, each job completed once.

use opsledger_core::outcome::derive_bulk_outcome;
use opsledger_core::{Outcome, Run, RunStatus, RunType};
use opsledger_providers::demo::{DemoProvider, Profile};
use opsledger_store::testing::{self, TestStore};
use opsledger_store::{NewRun, Store};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

const TYPES: &[&str] = &[
    "deviceConfigurations",
    "deviceCompliancePolicies",
    "configurationPolicies",
    "groupPolicyConfigurations",
    "deviceManagementScripts",
    "deviceHealthScripts",
    "windowsAutopilotDeploymentProfiles",
    "deviceEnrollmentConfigurations",
    "windowsFeatureUpdateProfiles",
    "managedAppPolicies",
    "mobileAppConfigurations",
    "conditionalAccessPolicies",
    "namedLocations",
    "assignmentFilters",
];

/// `TYPE/ID` keys of the first `n` policies of a scaled demo tenant.
fn policy_keys(tenant: &str, scale: usize, n: usize) -> Vec<String> {
    let p = DemoProvider::new(tenant, Profile::Healthy, Duration::ZERO).with_scale(scale);
    let keys: Vec<String> = TYPES
        .iter()
        .flat_map(|t| {
            p.policies(t)
                .unwrap()
                .into_iter()
                .map(move |pol| format!("{t}/{}", pol.id))
        })
        .take(n)
        .collect();
    assert_eq!(keys.len(), n, "the demo tenant is too small");
    keys
}

async fn fan_out(store: &Store, scale: usize, n: usize) -> (String, String, String) {
    let ws = store.create_workspace("ws").await.unwrap().id;
    let tenant = store
        .create_tenant(&ws, "contoso", &format!("demo:healthy:{scale}"))
        .await
        .unwrap()
        .id;
    let params = json!({"policy_ids": policy_keys("contoso", scale, n)});
    let new = NewRun::on_tenant(&ws, &tenant, RunType::BackupSetAddPolicies, "test", params);
    let id = store.create_run(new).await.unwrap().into_run().id;
    (ws, tenant, id)
}

fn worker(url: &str, latency_ms: u64) -> Child {
    worker_with(url, node_env(latency_ms))
}

fn worker_with(url: &str, env: Vec<(&'static str, String)>) -> Child {
    Command::new(env!("CARGO_BIN_EXE_opsledger"))
        .args(["worker", "--db", url])
        .envs(env)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn worker")
}

/// A worker whose runner is claiming: spawned logging at `info`, returned
/// once it said "worker started" (its later output is drained, so a full
/// pipe never blocks it).
async fn ready_worker(url: &str) -> Child {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut env = shared_fan_out_env();
    env.retain(|(k, _)| *k != "OPSLEDGER_LOG");
    env.push(("OPSLEDGER_LOG", "info".into()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_opsledger"))
        .args(["worker", "--db", url])
        .envs(env)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn worker");
    let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
    let started = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.expect("read the worker's log") {
            if line.contains("worker started") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(started, Ok(true), "the worker did not start");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

/// The nodes of the shared fan-out: nobody is killed there, so leases
/// need not expire fast; a short one only measured how starved the machine
/// was (a CI box compiling beside the test let 600 ms leases lapse).
fn shared_fan_out_env() -> Vec<(&'static str, String)> {
    let mut env = node_env(0);
    env.retain(|(k, _)| *k != "OPSLEDGER_HEARTBEAT_TIMEOUT_MS");
    env.push(("OPSLEDGER_HEARTBEAT_TIMEOUT_MS", "5000".into()));
    env
}

fn node_env(latency_ms: u64) -> Vec<(&'static str, String)> {
    vec![
        ("OPSLEDGER_WORKERS", "8".into()),
        ("OPSLEDGER_HEARTBEAT_INTERVAL_MS", "100".into()),
        ("OPSLEDGER_HEARTBEAT_TIMEOUT_MS", "600".into()),
        ("OPSLEDGER_RECONCILE_INTERVAL_MS", "200".into()),
        ("OPSLEDGER_POLL_INTERVAL_MS", "20".into()),
        ("OPSLEDGER_RETRY_BASE_MS", "20".into()),
        ("OPSLEDGER_DEMO_LATENCY_MS", latency_ms.to_string()),
        ("OPSLEDGER_LOG", "warn".into()),
    ]
}

fn sigkill(child: &Child) {
    let pid = child.id().expect("running child") as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)
        .expect("SIGKILL");
}

async fn wait_completed(store: &Store, id: &str, limit: Duration) -> Run {
    let deadline = Instant::now() + limit;
    loop {
        let run = store.get_run(id).await.unwrap().unwrap();
        if run.is_completed() {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "run did not complete: {:?}",
            run.summary_counts
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The end state every run of the fan-out must reach, however it was interrupted.
async fn assert_exactly_once(store: &Store, run: &Run, n: u64) {
    let c = run.summary_counts;
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!((c.total, c.processed), (Some(n), Some(n)), "{c:?}");
    assert_eq!(c.unit_outcomes_sum(), n);
    let ledger = store.recorded_units(&run.id).await.unwrap();
    assert_eq!(ledger.len() as u64, n, "every unit recorded exactly once");
    assert_eq!(
        Some(run.outcome),
        derive_bulk_outcome(&c),
        "the outcome its units call for"
    );
    let set = run.context["backup_set"]["id"].as_str().expect("backup set");
    assert_eq!(
        Some(store.count_backup_items(set).await.unwrap()),
        c.succeeded,
        "one item per succeeded unit"
    );
    for f in &run.failures {
        assert_eq!(
            f.code, "unit_lease_expired",
            "only repeated kills may fail a unit: {f:?}"
        );
    }
    let jobs = store.job_tally(&run.id).await.unwrap();
    assert_eq!((jobs.available, jobs.running), (0, 0), "{jobs:?}");
    assert_eq!(
        jobs.completed + jobs.failed,
        n + 1,
        "each unit job (and the parent's) ended once: {jobs:?}"
    );
}

async fn crash_test(db: TestStore) {
    const UNITS: usize = 2000;
    const KILLS: usize = 20;
    let store = db.store.clone();
    let (_, _, id) = fan_out(&store, 20, UNITS).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut mid_run_kills = 0;
    for _ in 0..KILLS {
        let child = worker(&db.url, 25);
        tokio::time::sleep(Duration::from_millis(rng.random_range(150..600))).await;
        sigkill(&child);
        let mut child = child;
        child.wait().await.unwrap();
        let run = store.get_run(&id).await.unwrap().unwrap();
        if !run.is_completed() {
            mid_run_kills += 1;
        }
        let c = run.summary_counts;
        assert!(c.processed <= c.total, "{c:?}");
    }
    eprintln!("{mid_run_kills} of {KILLS} kills landed mid-run");
    assert!(
        mid_run_kills >= KILLS / 2,
        "the fan-out finished too early to test crashes: {mid_run_kills}"
    );
    let survivor = worker(&db.url, 0);
    let run = wait_completed(&store, &id, Duration::from_secs(120)).await;
    drop(survivor);
    assert_exactly_once(&store, &run, UNITS as u64).await;
    assert_ne!(run.outcome, Outcome::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_sqlite_sigkill_twenty_times() {
    crash_test(testing::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_postgres_sigkill_twenty_times() {
    let Some(db) = testing::postgres().await else {
        return;
    };
    crash_test(db).await;
}

/// A worker whose batch completer holds results for 4 s (and up to 100 000
/// of them) executes every unit and hands every result over, and is killed
/// with all of them unflushed; a second worker must redo them once their
/// leases (16 s) expire, none lost, none twice.
async fn kill_between_results_and_flush(db: TestStore) {
    const UNITS: usize = 300;
    let store = db.store.clone();
    let (_, _, id) = fan_out(&store, 5, UNITS).await;
    let mut env = node_env(0);
    env.retain(|(k, _)| *k != "OPSLEDGER_HEARTBEAT_TIMEOUT_MS");
    env.extend([
        ("OPSLEDGER_HEARTBEAT_TIMEOUT_MS", "16000".to_owned()),
        ("OPSLEDGER_FLUSH_MAX_RESULTS", "100000".to_owned()),
        ("OPSLEDGER_FLUSH_MAX_WAIT_MS", "4000".to_owned()),
    ]);
    let mut holder = worker_with(&db.url, env);
    // Every unit job claimed, its slot freed (so its result was handed
    // over), and none counted: every result is waiting for the flush.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let tally = store.job_tally(&id).await.unwrap();
        let processed = store
            .run_head(&id)
            .await
            .unwrap()
            .unwrap()
            .summary_counts
            .processed;
        assert_eq!(processed.unwrap_or(0), 0, "nothing may flush before the kill");
        if tally.running == UNITS as u64 && tally.completed == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not take every unit: {tally:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // 8 slots for 300 units: at least 292 results were handed over.
    sigkill(&holder);
    holder.wait().await.unwrap();
    assert_eq!(
        store
            .run_head(&id)
            .await
            .unwrap()
            .unwrap()
            .summary_counts
            .processed
            .unwrap_or(0),
        0,
        "the kill lost the unflushed results, and only them"
    );
    let survivor = worker(&db.url, 0);
    let run = wait_completed(&store, &id, Duration::from_secs(120)).await;
    drop(survivor);
    assert_exactly_once(&store, &run, UNITS as u64).await;
    assert_eq!(run.outcome, Outcome::Succeeded, "{:?}", run.failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_between_results_and_flush_sqlite() {
    kill_between_results_and_flush(testing::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_between_results_and_flush_postgres() {
    let Some(db) = testing::postgres().await else {
        return;
    };
    kill_between_results_and_flush(db).await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_and_a_server_share_a_fan_out() {
    const UNITS: usize = 10_000;
    let Some(db) = testing::postgres().await else {
        return;
    };
    let store = db.store.clone();
    let ws = store.create_workspace("ws").await.unwrap().id;
    let tenant = store
        .create_tenant(&ws, "contoso", "demo:healthy:100")
        .await
        .unwrap()
        .id;
    let user = store.upsert_user("op@test", "x").await.unwrap();
    store
        .set_membership(&ws, &user, opsledger_core::access::Role::Operator)
        .await
        .unwrap();
    let token = store.issue_token(&user, "test").await.unwrap();

    let port = free_port();
    let _server = Command::new(env!("CARGO_BIN_EXE_opsledger"))
        .args(["serve", "--db", &db.url, "--listen", &format!("127.0.0.1:{port}")])
        .envs(shared_fan_out_env())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Each worker must be polling before the fan-out starts: at full speed
    // it is over in seconds, before a worker started late on a loaded
    // machine (CI) would claim its share.
    let _w1 = ready_worker(&db.url).await;
    let _w2 = ready_worker(&db.url).await;

    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{base}/health")).send().await.is_err() {
        assert!(Instant::now() < deadline, "server did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = json!({
        "type": "backup_set.add_policies",
        "tenant_id": tenant,
        "params": {"policy_ids": policy_keys("contoso", 100, UNITS)},
    });
    let r = http
        .post(format!("{base}/workspaces/{ws}/operations"))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let started = Instant::now();
    let run = wait_completed(&store, &id, Duration::from_secs(600)).await;
    eprintln!(
        "{UNITS} units across 3 processes in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_exactly_once(&store, &run, UNITS as u64).await;
    assert_eq!(
        run.outcome,
        Outcome::Succeeded,
        "{} failures, first: {:?}",
        run.failures.len(),
        &run.failures[..run.failures.len().min(3)]
    );
    let workers = store.job_workers(&id).await.unwrap();
    assert!(workers.len() >= 3, "every process took a share: {workers:?}");
}

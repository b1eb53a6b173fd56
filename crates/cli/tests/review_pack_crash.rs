//! A review pack whose node is SIGKILLed while it writes the ZIP, on SQLite
//! and PostgreSQL: after the kill no ZIP is committed (nothing is
//! downloadable), no half-written file sits where a committed one would;
//! the run, finished by a restarted node, is `succeeded` only with one
//! committed ZIP whose bytes match its row and whose manifest lists `total`
//! files, and its progress never went backwards.

use opsledger_core::{Outcome, Run, RunType};
use opsledger_store::testing::{self, TestStore};
use opsledger_store::{NewRun, Store};
use serde_json::{Value, json};
use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

fn worker(url: &str, data: &Path) -> Child {
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
            "run {id} ({}) never reached the awaited state: {:?}",
            run.run_type,
            run.summary_counts
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every file under `dir/artifacts/RUN` (committed places), by name.
fn placed_files(data: &Path, run: &str) -> Vec<String> {
    match std::fs::read_dir(data.join("artifacts").join(run)) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

async fn killed_mid_write(db: TestStore) {
    let store = db.store.clone();
    let data = tempfile::tempdir().unwrap();
    let ws = store.create_workspace("ws").await.unwrap().id;
    // A tenant large enough that writing its pack takes a while.
    let tenant = store
        .create_tenant(&ws, "contoso", "demo:healthy:40")
        .await
        .unwrap()
        .id;
    let mut node = worker(&db.url, data.path());
    let sync = NewRun::on_tenant(&ws, &tenant, RunType::InventorySync, "test", json!({}));
    let sync = store.create_run(sync).await.unwrap().into_run().id;
    let sync = wait_until(&store, &sync, Duration::from_secs(120), Run::is_completed).await;
    assert_eq!(sync.outcome, Outcome::Succeeded);

    let pack = NewRun::on_tenant(&ws, &tenant, RunType::ReviewPackGenerate, "test", json!({}));
    let id = store.create_run(pack).await.unwrap().into_run().id;
    let mid = wait_until(&store, &id, Duration::from_secs(120), |r| {
        r.summary_counts.processed.unwrap_or(0) > 0 || r.is_completed()
    })
    .await;
    sigkill(&node);
    let _ = node.wait().await;
    assert!(
        !mid.is_completed(),
        "the pack finished before the kill: make the tenant larger"
    );
    let total = mid.summary_counts.total.expect("total set before the first file");
    let processed_at_kill = store
        .get_run(&id)
        .await
        .unwrap()
        .unwrap()
        .summary_counts
        .processed
        .unwrap();
    assert!(processed_at_kill < total, "{processed_at_kill} of {total}");

    // Killed mid-write: nothing committed, nothing in a committed place.
    assert!(
        store.run_files(&id).await.unwrap().is_empty(),
        "no ZIP row after the kill"
    );
    assert!(
        placed_files(data.path(), &id).is_empty(),
        "no half-written ZIP in place"
    );

    // A restarted node finishes it: the retry rewrites the ZIP from the start.
    let _node = worker(&db.url, data.path());
    let mut last_processed = processed_at_kill;
    let run = loop {
        let run = store.get_run(&id).await.unwrap().unwrap();
        let processed = run.summary_counts.processed.unwrap_or(0);
        assert!(
            processed >= last_processed,
            "progress went backwards: {processed} < {last_processed}"
        );
        assert_eq!(run.summary_counts.total, Some(total), "the total never changes");
        last_processed = processed;
        if run.is_completed() {
            break run;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let files = store.run_files(&id).await.unwrap();
    if run.outcome != Outcome::Succeeded {
        // Never succeeded without its proof; whatever it says, nothing half-written is served.
        for f in &files {
            assert_ne!(f.name, "review-pack.zip", "a failed pack committed a ZIP: {f:?}");
        }
        panic!(
            "the retried pack should complete: {:?} {:?}",
            run.outcome, run.failures
        );
    }
    assert_eq!(run.summary_counts.processed, Some(total));
    assert_eq!(files.len(), 1, "{files:?}");
    let zip_row = &files[0];
    let path = data.path().join("artifacts").join(&id).join(&zip_row.sha256);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len() as u64, zip_row.size);
    assert_eq!(
        opsledger_store_sha256(&bytes),
        zip_row.sha256,
        "the committed bytes are the ones the row names"
    );
    assert_eq!(run.context["review_pack"]["sha256"], json!(zip_row.sha256));
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut manifest = String::new();
    archive
        .by_name("manifest.json")
        .unwrap()
        .read_to_string(&mut manifest)
        .unwrap();
    let manifest: Value = serde_json::from_str(&manifest).unwrap();
    let listed = manifest["files"].as_array().expect("manifest.files");
    assert_eq!(listed.len() as u64, total, "the manifest lists `total` files");
    for f in listed {
        let mut entry = Vec::new();
        archive
            .by_name(f["path"].as_str().unwrap())
            .unwrap()
            .read_to_end(&mut entry)
            .unwrap();
        assert_eq!(json!(opsledger_store_sha256(&entry)), f["sha256"], "{f}");
        assert_eq!(json!(entry.len()), f["size"], "{f}");
    }
    assert_eq!(
        archive.len() as u64,
        total + 1,
        "exactly `total` files besides the manifest"
    );
    assert_eq!(placed_files(data.path(), &id), vec![zip_row.sha256.clone()]);
}

fn opsledger_store_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pack_killed_mid_write_is_never_half_served_sqlite() {
    killed_mid_write(testing::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pack_killed_mid_write_is_never_half_served_postgres() {
    let Some(db) = testing::postgres().await else {
        return;
    };
    killed_mid_write(db).await;
}

//! What the families' end-to-end tests share: the real registry and runner
//! driving a run to its end, the stale path (every attempt used up, then the
//! reconciler), and the exports under `testdata/`.
// Each test binary uses part of it.
#![allow(dead_code)]

use opsledger_core::Run;
use opsledger_engine::reconciler::reconcile_run;
use opsledger_engine::{Registry, Runner, RunnerConfig};
use opsledger_providers::ProviderSettings;
use opsledger_store::Store;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub fn registry() -> Registry {
    opsledger_families::registry(ProviderSettings::default())
}

/// An export of `testdata/` (from `../shared/data/`).
pub fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(name)
}

pub fn copy_tree(from: &Path, to: &Path) {
    for e in walkdir::WalkDir::new(from) {
        let e = e.unwrap();
        let dest = to.join(e.path().strip_prefix(from).unwrap());
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// A copy of export `name` in a temporary folder.
pub fn copy_of(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&testdata(name), dir.path());
    dir
}

/// Runs a runner on `store` until run `id` completes (60 s at most).
pub async fn run_to_end(store: &Store, id: &str) -> Run {
    run_to_end_with(store, registry(), id).await
}

/// [`run_to_end`] with the families of `registry` (e.g. with a file store
/// or an evidence key).
pub async fn run_to_end_with(store: &Store, registry: Registry, id: &str) -> Run {
    follow_with(store, registry, id, Duration::from_millis(20))
        .await
        .0
}

/// Runs a runner with `registry` until run `id` completes (120 s at most),
/// recording every state of it seen, polled every `poll`.
pub async fn follow_with(store: &Store, registry: Registry, id: &str, poll: Duration) -> (Run, Vec<Run>) {
    let config = RunnerConfig {
        concurrency: 8,
        poll_interval: Duration::from_millis(10),
        ..Default::default()
    };
    let shutdown = CancellationToken::new();
    let runner = tokio::spawn(Runner::new(store.clone(), registry, config).run(shutdown.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    let done = loop {
        let r = store.get_run(id).await.unwrap().unwrap();
        seen.push(r.clone());
        if r.is_completed() {
            break r;
        }
        assert!(tokio::time::Instant::now() < deadline, "{r:?}");
        tokio::time::sleep(poll).await;
    };
    shutdown.cancel();
    runner.await.unwrap();
    (done, seen)
}

/// The run's workers died on every attempt; then its proof decides.
pub async fn reconcile(store: &Store, id: &str) -> Run {
    reconcile_with(store, &registry(), id).await
}

/// [`reconcile`] with the adapters of `registry`.
pub async fn reconcile_with(store: &Store, registry: &Registry, id: &str) -> Run {
    opsledger_store::testing::exhaust_jobs(store, id).await.unwrap();
    let run = store.get_run(id).await.unwrap().unwrap();
    let d = reconcile_run(store, registry, &run, Some("system"))
        .await
        .unwrap();
    assert_eq!(d.applied, "applied", "{d:?}");
    store.get_run(id).await.unwrap().unwrap()
}

/// The snapshot a capture sealed (its context says which).
pub fn snapshot_of(run: &Run) -> String {
    run.context["baseline_snapshot"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no snapshot in {:#}", run.context))
        .to_owned()
}

//! `inventory.sync` of folder tenants made from the real exports in
//! `testdata/`, through the runner on both databases: every file is read or
//! reported, and the items per type equal the readable policy files.

use opsledger_core::inventory::CoverageStatus;
use opsledger_core::{Outcome, Run, RunStatus, RunType};
use opsledger_engine::{Runner, RunnerConfig};
use opsledger_families::inventory_sync::coverage_of;
use opsledger_providers::ProviderSettings;
use opsledger_store::{NewRun, Store, both_backends};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(name)
}

fn copy_tree(from: &Path, to: &Path) {
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

async fn sync_folder(store: &Store, path: &Path) -> (Run, String) {
    let ws = store.create_workspace("ws").await.unwrap();
    let t = store
        .create_tenant(&ws.id, "export", &format!("folder:{}", path.display()))
        .await
        .unwrap();
    let new = NewRun::on_tenant(&ws.id, &t.id, RunType::InventorySync, "test", json!({}));
    let id = store.create_run(new).await.unwrap().into_run().id;
    let registry = opsledger_families::registry(ProviderSettings::default());
    let config = RunnerConfig {
        poll_interval: Duration::from_millis(20),
        ..Default::default()
    };
    let shutdown = CancellationToken::new();
    let runner = tokio::spawn(Runner::new(store.clone(), registry, config).run(shutdown.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let run = loop {
        let run = store.get_run(&id).await.unwrap().unwrap();
        if run.is_completed() {
            break run;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run did not complete: {run:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    shutdown.cancel();
    runner.await.unwrap();
    (run, t.id)
}

fn counts(run: &Run) -> Vec<(String, CoverageStatus, u64)> {
    coverage_of(&run.context)
        .into_iter()
        .map(|(t, c)| (t, c.status, c.item_count))
        .collect()
}

both_backends!(the_acsc_export_syncs_whole, |store: Store| async move {
    let (run, tenant) = sync_folder(&store, &testdata("acsc-intune-hardening")).await;
    assert_eq!(
        (run.status, run.outcome),
        (RunStatus::Completed, Outcome::Succeeded),
        "{run:?}"
    );
    assert_eq!(
        counts(&run),
        [
            ("configurationPolicies".to_owned(), CoverageStatus::Covered, 6),
            ("intents".to_owned(), CoverageStatus::Covered, 1),
        ]
    );
    assert_eq!(store.count_inventory_items(&tenant).await.unwrap(), 7);
    assert!(run.failures.is_empty());
});

both_backends!(
    the_conditional_access_export_syncs_whole,
    |store: Store| async move {
        let (run, tenant) = sync_folder(&store, &testdata("ca-baseline")).await;
        assert_eq!(
            (run.status, run.outcome),
            (RunStatus::Completed, Outcome::Succeeded),
            "{run:?}"
        );
        assert_eq!(
            counts(&run),
            [
                (
                    "conditionalAccessPolicies".to_owned(),
                    CoverageStatus::Covered,
                    36
                ),
                ("namedLocations".to_owned(), CoverageStatus::Covered, 3),
            ]
        );
        assert_eq!(store.count_inventory_items(&tenant).await.unwrap(), 39);
    }
);

both_backends!(
    unreadable_files_make_the_sync_partial_and_are_each_named,
    |store: Store| async move {
        let tmp = tempfile::tempdir().unwrap();
        copy_tree(&testdata("ca-baseline"), tmp.path());
        let ca = tmp.path().join("Config/ConditionalAccess");
        std::fs::write(ca.join("CA999-truncated.json"), b"{\"displayName\": \"CA999").unwrap();
        std::fs::write(tmp.path().join("tooling.json"), b"{\"name\": \"not a policy\"}").unwrap();
        let (run, tenant) = sync_folder(&store, tmp.path()).await;
        assert_eq!(
            (run.status, run.outcome),
            (RunStatus::Completed, Outcome::PartiallySucceeded),
            "{run:?}"
        );
        assert_eq!(
            counts(&run),
            [
                (
                    "conditionalAccessPolicies".to_owned(),
                    CoverageStatus::Partial,
                    36
                ),
                ("namedLocations".to_owned(), CoverageStatus::Covered, 3),
            ]
        );
        assert_eq!(store.count_inventory_items(&tenant).await.unwrap(), 39);
        let ca = &coverage_of(&run.context)["conditionalAccessPolicies"];
        assert_eq!(ca.unreadable_count, 1);
        assert_eq!(
            ca.unreadable[0].source,
            "Config/ConditionalAccess/CA999-truncated.json"
        );
        assert_eq!(ca.unreadable[0].code, "file_json_invalid");
        let messages: Vec<&str> = run.failures.iter().map(|f| f.message.as_str()).collect();
        assert_eq!(run.failures.len(), 2, "{messages:?}");
        assert!(
            messages
                .iter()
                .any(|m| m.contains("Config/ConditionalAccess/CA999-truncated.json")),
            "{messages:?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m.contains("tooling.json") && m.contains("file_type_unknown")),
            "{messages:?}"
        );
        assert_eq!(
            run.context["inventory"]["reason_code"],
            "inventory_items_unreadable"
        );
        let c = run.summary_counts;
        assert_eq!((c.total, c.succeeded, c.failed), (Some(2), Some(2), Some(0)));
    }
);

both_backends!(
    a_folder_that_is_gone_blocks_before_any_total,
    |store: Store| async move {
        let (run, _) = sync_folder(&store, Path::new("/nonexistent/opsledger-export")).await;
        assert_eq!(
            (run.status, run.outcome),
            (RunStatus::Completed, Outcome::Blocked),
            "{run:?}"
        );
        assert_eq!(run.summary_counts.total, None);
        assert!(run.failures[0].message.contains("/nonexistent/opsledger-export"));
    }
);

// Review: a policy file the walk does not read (a symbolic link, a folder
// past the depth limit) makes the sync partial and is named, never a
// `succeeded` run with a policy missing.
both_backends!(
    files_the_walk_does_not_read_make_the_sync_partial,
    |store: Store| async move {
        let tmp = tempfile::tempdir().unwrap();
        copy_tree(&testdata("ca-baseline"), tmp.path());
        let outside = tempfile::tempdir().unwrap();
        let ca = tmp.path().join("Config/ConditionalAccess");
        let first = std::fs::read_dir(&ca).unwrap().next().unwrap().unwrap().path();
        let moved = outside.path().join("moved.json");
        std::fs::rename(&first, &moved).unwrap();
        std::os::unix::fs::symlink(&moved, &first).unwrap();
        let mut deep = tmp.path().join("Config/NamedLocations");
        for n in 0..40 {
            deep = deep.join(format!("d{n}"));
        }
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("x.json"), b"{\"displayName\": \"deep\"}").unwrap();
        let (run, _) = sync_folder(&store, tmp.path()).await;
        assert_eq!(
            (run.status, run.outcome),
            (RunStatus::Completed, Outcome::PartiallySucceeded),
            "{run:?}"
        );
        assert_eq!(
            counts(&run),
            [
                (
                    "conditionalAccessPolicies".to_owned(),
                    CoverageStatus::Partial,
                    35
                ),
                ("namedLocations".to_owned(), CoverageStatus::Partial, 3),
            ]
        );
        let ca = &coverage_of(&run.context)["conditionalAccessPolicies"];
        assert_eq!(ca.unreadable[0].code, "file_unreadable");
        assert!(ca.unreadable[0].message.contains("symbolic link"));
    }
);

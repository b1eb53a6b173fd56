//! File artifacts, on SQLite and PostgreSQL and on both file backends
//! (local files, and the local S3-compatible server CI starts): a file
//! committed with its unit (or its run's close) is in place with the size
//! and SHA-256 its row names; a draft never committed, a duplicate delivery
//! or a refused unit leaves no row; a commit retried after a rollback finds
//! its file; a file this node cannot reach is unavailable, never another.

mod common;

use common::{queued_run, running_run, scope};
use opsledger_core::{Outcome, RunType, UnitOutcome};
use opsledger_store::artifacts::UnitArtifact;
use opsledger_store::files::{FileStore, StagedFile};
use opsledger_store::{Completion, Store, StoreError, UnitRecord, both_backends};
use sha2::{Digest, Sha256};
use std::io::Write;

async fn staged(files: &FileStore, run: &str, name: &str, bytes: &[u8]) -> StagedFile {
    let mut draft = files.begin(run, name).unwrap();
    // Written in pieces, as a ZIP writer streams.
    for chunk in bytes.chunks(3) {
        draft.write_all(chunk).unwrap();
    }
    draft.finish().await.unwrap()
}

fn with_file(key: &str, file: StagedFile) -> UnitRecord {
    UnitRecord::new(key, UnitOutcome::Succeeded).with_artifact(UnitArtifact::File(file))
}

fn tmp_entries(root: &std::path::Path) -> usize {
    std::fs::read_dir(root.join("tmp")).unwrap().count()
}

/// The local S3-compatible server (`OPSLEDGER_TEST_S3_ENDPOINT`, e.g. moto
/// started by `.ci/run`, holding bucket `opsledger-test`): a fresh prefix
/// per call, so tests never see each other's objects. Under CI its absence
/// fails the test: the bucket backend is tested, never assumed.
fn test_bucket(scratch: &std::path::Path) -> Option<FileStore> {
    let Ok(endpoint) = std::env::var("OPSLEDGER_TEST_S3_ENDPOINT") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must test the bucket backend: set OPSLEDGER_TEST_S3_ENDPOINT (see .ci/run)"
        );
        eprintln!("OPSLEDGER_TEST_S3_ENDPOINT unset: bucket backend not tested here");
        return None;
    };
    let url = format!("s3://opsledger-test/{}", uuid::Uuid::now_v7());
    Some(bucket_at(&url, &endpoint, scratch))
}

fn bucket_at(url: &str, endpoint: &str, scratch: &std::path::Path) -> FileStore {
    FileStore::bucket(
        url,
        &[
            ("aws_endpoint", endpoint),
            ("aws_allow_http", "true"),
            ("aws_region", "us-east-1"),
            ("aws_access_key_id", "test"),
            ("aws_secret_access_key", "test"),
        ],
        scratch,
    )
    .unwrap()
}

/// Local files under `dir`, and the test bucket when there is one.
fn file_stores(dir: &std::path::Path) -> Vec<FileStore> {
    let mut stores = vec![FileStore::new(dir.join("local")).unwrap()];
    stores.extend(test_bucket(&dir.join("bucket-scratch")));
    stores
}

async fn bytes_of(files: &FileStore, run: &str, row: &opsledger_store::files::RunFile) -> Vec<u8> {
    use futures::TryStreamExt;
    let chunks: Vec<bytes::Bytes> = files.read(run, row).await.unwrap().try_collect().await.unwrap();
    chunks.concat()
}

both_backends!(
    a_file_lands_with_its_unit_named_by_size_and_hash,
    |store: Store| async move {
        let dir = tempfile::tempdir().unwrap();
        for files in file_stores(dir.path()) {
            let s = scope(&store).await;
            let id = running_run(&store, &s, 3).await;
            let bytes = b"PK\x03\x04 a review pack entry";
            let file = staged(&files, &id, "policies.json", bytes).await;
            let local = (!files.is_shared()).then(|| dir.path().join("local"));
            if let Some(root) = &local {
                assert_eq!(tmp_entries(root), 1, "a draft waits in tmp/");
            }
            store
                .record_units(&id, &[with_file("policies.json", file.clone())])
                .await
                .unwrap();
            let rows = store.run_files(&id).await.unwrap();
            assert_eq!(rows.len(), 1);
            let row = &rows[0];
            assert_eq!(
                (row.name.as_str(), row.unit_key.as_deref(), row.size),
                ("policies.json", Some("policies.json"), bytes.len() as u64)
            );
            assert_eq!(row.sha256, hex::encode(Sha256::digest(bytes)));
            assert_eq!(bytes_of(&files, &id, row).await, bytes);
            if let Some(root) = &local {
                assert_eq!(tmp_entries(root), 0, "moved, not copied");
            }
            // A duplicate delivery of the unit writes nothing, whatever it carries.
            let other = staged(&files, &id, "policies.json", b"other bytes").await;
            let r = store
                .record_units(&id, &[with_file("policies.json", other)])
                .await
                .unwrap();
            assert_eq!(r.duplicates, 1);
            assert_eq!(store.run_files(&id).await.unwrap(), rows);
            // A draft dropped unfinished leaves nothing behind, and neither
            // did the duplicate's finished one, dropped uncommitted.
            let mut abandoned = files.begin(&id, "findings.json").unwrap();
            abandoned.write_all(b"half").unwrap();
            drop(abandoned);
            if let Some(root) = &local {
                assert_eq!(tmp_entries(root), 0, "no draft remains");
            }
            // Names are strict.
            for bad in ["", ".hidden", "a/b", "../x", "a b"] {
                assert!(
                    matches!(files.begin(&id, bad), Err(StoreError::Files(_))),
                    "{bad:?}"
                );
            }
        }
    }
);

both_backends!(
    a_commit_retried_after_a_rollback_finds_its_file,
    |store: Store| async move {
        let dir = tempfile::tempdir().unwrap();
        for files in file_stores(dir.path()) {
            let s = scope(&store).await;
            let id = running_run(&store, &s, 2).await;
            let file = staged(&files, &id, "evidence.json", b"{\"items\": 3}").await;
            // Refused whole (past the total): the file was moved, the row rolled back.
            let refused = store
                .record_units(
                    &id,
                    &[
                        with_file("evidence", file.clone()),
                        UnitRecord::new("b", UnitOutcome::Succeeded),
                        UnitRecord::new("c", UnitOutcome::Succeeded),
                    ],
                )
                .await;
            assert!(
                matches!(refused, Err(StoreError::UnitsExceedTotal { .. })),
                "{refused:?}"
            );
            assert!(
                store.run_files(&id).await.unwrap().is_empty(),
                "no row for a refused unit"
            );
            // The retry commits: the file is found in place, its hash checked.
            store
                .record_units(&id, &[with_file("evidence", file.clone())])
                .await
                .unwrap();
            let rows = store.run_files(&id).await.unwrap();
            assert_eq!(rows[0].sha256, file.sha256);
            assert_eq!(bytes_of(&files, &id, &rows[0]).await, b"{\"items\": 3}");
        }
    }
);

both_backends!(
    a_run_streams_one_file_and_commits_it_with_its_close,
    |store: Store| async move {
        let dir = tempfile::tempdir().unwrap();
        for files in file_stores(dir.path()) {
            let s = scope(&store).await;
            let id = queued_run(&store, &s, RunType::ReviewPackGenerate).await;
            store.claim_run(&id).await.unwrap().unwrap();
            store.init_total(&id, 2).await.unwrap();
            // The first attempt wrote its entries (units counted) and died before closing.
            let _lost = staged(&files, &id, "review-pack.zip", b"entry-a").await;
            store
                .record_units(&id, &[UnitRecord::new("entry-a", UnitOutcome::Succeeded)])
                .await
                .unwrap();
            assert!(store.run_files(&id).await.unwrap().is_empty());
            // The retry rewrites the whole file; the entry already counted is not counted again.
            let again = store
                .record_units(
                    &id,
                    &[
                        UnitRecord::new("entry-a", UnitOutcome::Succeeded),
                        UnitRecord::new("entry-b", UnitOutcome::Succeeded),
                    ],
                )
                .await
                .unwrap();
            assert_eq!((again.recorded, again.duplicates), (1, 1));
            let pack = staged(&files, &id, "review-pack.zip", b"entry-a entry-b").await;
            store
                .complete_run(
                    &id,
                    Completion::new(Outcome::Succeeded).with_artifact(UnitArtifact::File(pack.clone())),
                )
                .await
                .unwrap();
            let rows = store.run_files(&id).await.unwrap();
            assert_eq!(
                (rows.len(), rows[0].unit_key.as_deref(), rows[0].sha256.as_str()),
                (1, None, pack.sha256.as_str())
            );
            let run = store.get_run(&id).await.unwrap().unwrap();
            assert_eq!(
                (run.summary_counts.processed, run.summary_counts.total),
                (Some(2), Some(2))
            );
        }
    }
);

both_backends!(
    a_file_this_node_cannot_reach_is_unavailable_never_another,
    |store: Store| async move {
        let dir = tempfile::tempdir().unwrap();
        let s = scope(&store).await;
        let id = running_run(&store, &s, 1).await;
        let node_a = FileStore::new(dir.path().join("node-a")).unwrap();
        let file = staged(&node_a, &id, "review-pack.zip", b"PK whole pack").await;
        store.record_units(&id, &[with_file("pack", file)]).await.unwrap();
        let row = store.run_files(&id).await.unwrap().remove(0);
        // Another node's local disk does not hold it: unavailable (the API's 503).
        let node_b = FileStore::new(dir.path().join("node-b")).unwrap();
        assert!(matches!(
            node_b.read(&id, &row).await,
            Err(StoreError::FileUnavailable(_))
        ));
        assert_eq!(node_b.checksum(&id, &row).await.unwrap(), None);
        assert_eq!(
            node_a.checksum(&id, &row).await.unwrap(),
            Some((row.size, row.sha256.clone()))
        );
        // A bucket is shared: what one node committed, another reads.
        if let Ok(endpoint) = std::env::var("OPSLEDGER_TEST_S3_ENDPOINT") {
            let url = format!("s3://opsledger-test/{}", uuid::Uuid::now_v7());
            let bucket_a = bucket_at(&url, &endpoint, &dir.path().join("scratch-a"));
            let bucket_b = bucket_at(&url, &endpoint, &dir.path().join("scratch-b"));
            bucket_a.probe().await.unwrap();
            let id = running_run(&store, &scope(&store).await, 1).await;
            let file = staged(&bucket_a, &id, "review-pack.zip", b"PK shared pack").await;
            store.record_units(&id, &[with_file("pack", file)]).await.unwrap();
            let row = store.run_files(&id).await.unwrap().remove(0);
            assert_eq!(bytes_of(&bucket_b, &id, &row).await, b"PK shared pack");
            assert_eq!(
                bucket_b.checksum(&id, &row).await.unwrap(),
                Some((row.size, row.sha256.clone()))
            );
            // A bucket nobody listens on: unavailable, after bounded retries.
            let gone = bucket_at(&url, "http://127.0.0.1:9", &dir.path().join("scratch-c"));
            assert!(matches!(
                gone.read(&id, &row).await,
                Err(StoreError::FileUnavailable(_))
            ));
        }
    }
);

#[test]
fn a_bucket_url_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [
        "",
        "s3://",
        "https://bucket",
        "file:///etc",
        "s3:///prefix",
        "s3://user:secret@bucket",
        "s3://my bucket",
        "s3://Upper",
        "s3://ab",
        "s3://bucket/pre fix",
        "s3://bucket/p?x=1",
    ] {
        assert!(
            matches!(FileStore::bucket(bad, &[], dir.path()), Err(StoreError::Files(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn drafts_abandoned_long_ago_are_removed_when_a_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    let files = FileStore::new(dir.path()).unwrap();
    let mut fresh = files.begin("run-1", "pack.zip").unwrap();
    fresh.write_all(b"in progress").unwrap();
    let old = dir.path().join("tmp").join("left-by-a-killed-node");
    std::fs::write(&old, b"half a zip").unwrap();
    let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(48 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(long_ago)
        .unwrap();
    let _reopened = FileStore::new(dir.path()).unwrap();
    assert!(!old.exists(), "an abandoned draft is removed");
    assert_eq!(tmp_entries(dir.path()), 1, "a draft being written is kept");
    drop(fresh);
}

/// A pack finished but never committed (its run cancelled or closed under
/// it) leaves nothing behind once every copy of it is dropped; a committed
/// one is in place and its draft gone.
#[tokio::test]
async fn a_staged_file_dropped_uncommitted_leaves_no_draft() {
    let dir = tempfile::tempdir().unwrap();
    let files = FileStore::new(dir.path()).unwrap();
    let file = staged(&files, "run-1", "pack.zip", b"a whole pack").await;
    let copy = file.clone();
    assert_eq!(tmp_entries(dir.path()), 1);
    drop(file);
    assert_eq!(tmp_entries(dir.path()), 1, "a copy still waits for its commit");
    drop(copy);
    assert_eq!(tmp_entries(dir.path()), 0, "the draft is removed");
}

#[tokio::test]
async fn a_row_naming_no_valid_place_is_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let files = FileStore::new(dir.path()).unwrap();
    std::fs::write(dir.path().join("secret"), b"not a pack").unwrap();
    for sha256 in [
        "../secret".to_owned(),
        format!("{}/../../secret", "a".repeat(54)),
        "A".repeat(64),
    ] {
        let row = opsledger_store::files::RunFile {
            name: "review-pack.zip".into(),
            unit_key: None,
            size: 10,
            sha256,
        };
        assert!(matches!(
            files.read("run-1", &row).await,
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            files.checksum("run-1", &row).await,
            Err(StoreError::Corrupt(_))
        ));
        assert_eq!(files.path_of("run-1", &row), None);
    }
}

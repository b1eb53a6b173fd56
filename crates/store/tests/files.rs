//! File artifacts, on SQLite and PostgreSQL: a file committed with its unit
//! (or its run's close) is in place with the size and SHA-256 its row
//! names; a draft never committed, a duplicate delivery or a refused unit
//! leaves no row; a commit retried after a rollback finds its file moved.

mod common;

use common::{queued_run, running_run, scope};
use opsledger_core::{Outcome, RunType, UnitOutcome};
use opsledger_store::artifacts::UnitArtifact;
use opsledger_store::files::{FileStore, StagedFile};
use opsledger_store::{Completion, Store, StoreError, UnitRecord, both_backends};
use sha2::{Digest, Sha256};
use std::io::Write;

fn staged(files: &FileStore, run: &str, name: &str, bytes: &[u8]) -> StagedFile {
    let mut draft = files.begin(run, name).unwrap();
    // Written in pieces, as a ZIP writer streams.
    for chunk in bytes.chunks(3) {
        draft.write_all(chunk).unwrap();
    }
    draft.finish().unwrap()
}

fn with_file(key: &str, file: StagedFile) -> UnitRecord {
    UnitRecord::new(key, UnitOutcome::Succeeded).with_artifact(UnitArtifact::File(file))
}

fn tmp_entries(root: &std::path::Path) -> usize {
    std::fs::read_dir(root.join("tmp")).unwrap().count()
}

both_backends!(
    a_file_lands_with_its_unit_named_by_size_and_hash,
    |store: Store| async move {
        let dir = tempfile::tempdir().unwrap();
        let files = FileStore::new(dir.path()).unwrap();
        let s = scope(&store).await;
        let id = running_run(&store, &s, 3).await;
        let bytes = b"PK\x03\x04 a review pack entry";
        let file = staged(&files, &id, "policies.json", bytes);
        assert_eq!(tmp_entries(dir.path()), 1, "a draft waits in tmp/");
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
        assert_eq!(std::fs::read(files.path_of(&id, row)).unwrap(), bytes);
        assert_eq!(tmp_entries(dir.path()), 0, "moved, not copied");
        // A duplicate delivery of the unit writes nothing, whatever it carries.
        let other = staged(&files, &id, "policies.json", b"other bytes");
        let r = store
            .record_units(&id, &[with_file("policies.json", other)])
            .await
            .unwrap();
        assert_eq!(r.duplicates, 1);
        assert_eq!(store.run_files(&id).await.unwrap(), rows);
        // A draft dropped unfinished leaves nothing behind.
        let mut abandoned = files.begin(&id, "findings.json").unwrap();
        abandoned.write_all(b"half").unwrap();
        drop(abandoned);
        assert_eq!(
            tmp_entries(dir.path()),
            1,
            "only the duplicate's finished draft remains"
        );
        // Names are strict.
        for bad in ["", ".hidden", "a/b", "../x", "a b"] {
            assert!(
                matches!(files.begin(&id, bad), Err(StoreError::Files(_))),
                "{bad:?}"
            );
        }
    }
);

both_backends!(
    a_commit_retried_after_a_rollback_finds_its_file,
    |store: Store| async move {
        let dir = tempfile::tempdir().unwrap();
        let files = FileStore::new(dir.path()).unwrap();
        let s = scope(&store).await;
        let id = running_run(&store, &s, 2).await;
        let file = staged(&files, &id, "evidence.json", b"{\"items\": 3}");
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
        assert_eq!(
            std::fs::read(files.path_of(&id, &rows[0])).unwrap(),
            b"{\"items\": 3}"
        );
    }
);

both_backends!(
    a_run_streams_one_file_and_commits_it_with_its_close,
    |store: Store| async move {
        let dir = tempfile::tempdir().unwrap();
        let files = FileStore::new(dir.path()).unwrap();
        let s = scope(&store).await;
        let id = queued_run(&store, &s, RunType::ReviewPackGenerate).await;
        store.claim_run(&id).await.unwrap().unwrap();
        store.init_total(&id, 2).await.unwrap();
        // The first attempt wrote its entries (units counted) and died before closing.
        let _lost = staged(&files, &id, "review-pack.zip", b"entry-a");
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
        let pack = staged(&files, &id, "review-pack.zip", b"entry-a entry-b");
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
);

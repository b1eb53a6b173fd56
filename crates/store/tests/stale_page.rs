//! The stale sweep's page-wise closing write (OPERATIONS.md §7, §8): a page
//! of reconciliations commits in one transaction, and each run is still a
//! compare-and-set on the state the sweep read — a run that got a heartbeat
//! or completed between the read and the write is never overwritten (the
//! lesson of River #1302).

mod common;
use common::{composite, queued_run, scope, sync_of, world};
use opsledger_core::reconcile::AdapterResult;
use opsledger_core::{Outcome, RunStatus, RunType};
use opsledger_store::clock::ManualClock;
use opsledger_store::stale::{Applied, ToReconcile};
use opsledger_store::{Completion, Store, both_backends};
use std::sync::Arc;

/// A running `policy.sync` whose only job ended for good: stale once old enough.
async fn abandoned_run(store: &Store) -> String {
    let s = scope(store).await;
    let id = queued_run(store, &s, RunType::PolicySync).await;
    opsledger_store::testing::exhaust_jobs(store, &id).await.unwrap();
    store.claim_run(&id).await.unwrap();
    id
}

both_backends!(
    a_page_closes_only_the_runs_still_as_the_sweep_read_them,
    |store: Store| async move {
        let clock = ManualClock::new();
        let store = store.with_clock(Arc::new(clock.clone()));
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.push(abandoned_run(&store).await);
        }
        let mut seen = Vec::new();
        for id in &ids {
            seen.push(store.get_run(id).await.unwrap().unwrap());
        }
        assert!(seen.iter().all(|r| r.status == RunStatus::Running), "{seen:?}");
        // Between the sweep's read and its write: run 1 gets a fresh
        // heartbeat (its worker is alive after all), run 2 completes.
        clock.advance(1_000);
        assert!(store.heartbeat(&ids[1]).await.unwrap());
        store
            .complete_when(&ids[2], |_| Some(Completion::new(Outcome::Succeeded)))
            .await
            .unwrap();
        let result = AdapterResult::stale_no_proof("This policy.sync run");
        let page: Vec<ToReconcile<'_>> = seen
            .iter()
            .map(|seen| ToReconcile {
                seen,
                adapter: "generic_fail_closed",
                result: &result,
            })
            .collect();
        let applied = store.apply_reconciliations(&page, Some("system")).await.unwrap();
        assert_eq!(
            applied,
            vec![
                Applied::Closed(Outcome::Failed),
                Applied::Skipped,
                Applied::AlreadyCompleted(Outcome::Succeeded),
                Applied::Closed(Outcome::Failed),
            ]
        );
        // The heartbeat won: still running, nothing recorded.
        let alive = store.get_run(&ids[1]).await.unwrap().unwrap();
        assert_eq!(
            (alive.status, alive.outcome),
            (RunStatus::Running, Outcome::Pending)
        );
        assert!(alive.reconciliation().is_none() && alive.failures.is_empty());
        // The completion won: its outcome and context are its own.
        let done = store.get_run(&ids[2]).await.unwrap().unwrap();
        assert_eq!(done.outcome, Outcome::Succeeded);
        assert!(done.reconciliation().is_none() && done.failures.is_empty());
        // The others carry the audit record and the reason as their failure.
        for id in [&ids[0], &ids[3]] {
            let run = store.get_run(id).await.unwrap().unwrap();
            assert_eq!((run.status, run.outcome), (RunStatus::Completed, Outcome::Failed));
            let rec = run.reconciliation().unwrap();
            assert_eq!(rec["adapter"], "generic_fail_closed");
            assert_eq!(rec["reason_code"], "stale_no_proof");
            assert_eq!(rec["previous_status"], "running");
            assert_eq!(rec["previous_outcome"], "pending");
            assert_eq!(rec["by"], "system");
            assert!(rec["reconciled_at"].is_string());
            assert_eq!(
                run.failures.iter().map(|f| f.code.as_str()).collect::<Vec<_>>(),
                vec!["stale_no_proof"]
            );
        }
        // Idempotent: the same page again changes nothing.
        let before = store.get_run(&ids[0]).await.unwrap().unwrap();
        let again = store.apply_reconciliations(&page, Some("system")).await.unwrap();
        assert_eq!(
            again,
            vec![
                Applied::AlreadyCompleted(Outcome::Failed),
                Applied::Skipped,
                Applied::AlreadyCompleted(Outcome::Succeeded),
                Applied::AlreadyCompleted(Outcome::Failed),
            ]
        );
        let after = store.get_run(&ids[0]).await.unwrap().unwrap();
        assert_eq!(
            (after.context, after.failures.len()),
            (before.context, before.failures.len())
        );
    }
);

both_backends!(
    a_child_closed_by_a_page_closes_its_composite_parent,
    |store: Store| async move {
        let w = world(&store, 2).await;
        let parent = composite(&store, &w).await;
        let plan = [
            sync_of(&w, 0, serde_json::json!({})),
            sync_of(&w, 1, serde_json::json!({})),
        ];
        let children = parent.enqueue_child_runs(&plan).await.unwrap();
        assert!(store.complete_job(parent.fence()).await.unwrap());
        // Both children queued past their timeout, never picked up.
        let mut seen = Vec::new();
        for c in &children {
            seen.push(store.get_run(c.run_id()).await.unwrap().unwrap());
        }
        let result = AdapterResult::stale_no_proof("This inventory sync");
        let page: Vec<ToReconcile<'_>> = seen
            .iter()
            .map(|seen| ToReconcile {
                seen,
                adapter: "inventory_sync",
                result: &result,
            })
            .collect();
        let applied = store.apply_reconciliations(&page, Some("system")).await.unwrap();
        assert_eq!(applied, vec![Applied::Closed(Outcome::Failed); 2]);
        let p = store.get_run(&parent.reads().head().id).await.unwrap().unwrap();
        assert_eq!(
            (p.status, p.outcome),
            (RunStatus::Completed, Outcome::Failed),
            "{p:?}"
        );
    }
);

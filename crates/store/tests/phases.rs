//! Phases of a phased run, on SQLite and PostgreSQL: a plan declared once,
//! forward moves only, a phase's units counted exactly once against its own
//! total (checked by the schema too), phases ended by the run's close, and
//! every write fenced by the run job's lease. Fixtures through real claims.

mod common;

use common::{queued_run, scope};
use opsledger_core::phases::{PhaseError, PhasePlan};
use opsledger_core::progress::{ProgressMode, progress_of};
use opsledger_core::{Outcome, PhaseState, RunType, UnitOutcome};
use opsledger_store::lease::LeasedRun;
use opsledger_store::{Completion, Store, StoreError, UnitRecord, both_backends, raw_on_pool, testing};

/// A claimed run of `t`, as its run job's handler holds it.
async fn leased(store: &Store, t: RunType) -> LeasedRun {
    let s = scope(store).await;
    let id = queued_run(store, &s, t).await;
    let job = store
        .claim_jobs("w", 1, 60_000)
        .await
        .unwrap()
        .pop()
        .expect("the run's job");
    assert_eq!(job.run_id, id);
    testing::lease(store, &job.fence, &id).await
}

fn plan() -> Vec<PhasePlan> {
    vec![
        PhasePlan::new("resolve", "Resolve scope"),
        PhasePlan::new("capture", "Capture evidence"),
        PhasePlan::new("persist", "Persist snapshot"),
    ]
}

fn units(keys: &[&str]) -> Vec<UnitRecord> {
    keys.iter()
        .map(|k| UnitRecord::new(*k, UnitOutcome::Succeeded))
        .collect()
}

both_backends!(
    a_phased_run_counts_each_phase_unit_once_against_the_phase_total,
    |store: Store| async move {
        let run = leased(&store, RunType::BaselineCapture).await;
        let id = run.reads().head().id.clone();
        run.plan_phases(&plan()).await.unwrap();
        // A retried attempt re-declares the same plan: kept; another: refused.
        run.plan_phases(&plan()).await.unwrap();
        assert!(matches!(
            run.plan_phases(&plan()[..2]).await,
            Err(StoreError::Phase {
                error: PhaseError::PlanDiffers,
                ..
            })
        ));
        run.set_phase("resolve", None).await.unwrap();
        run.set_phase("capture", Some(3)).await.unwrap();
        let r = run
            .record_phase_units("capture", &units(&["a", "b", "a"]))
            .await
            .unwrap();
        assert_eq!((r.recorded, r.duplicates, r.all_processed), (2, 1, false));
        // A replay of a recorded unit counts nothing.
        let r = run.record_phase_units("capture", &units(&["b"])).await.unwrap();
        assert_eq!((r.recorded, r.duplicates), (0, 1));
        // Past the phase's total: refused whole, nothing written.
        let over = run.record_phase_units("capture", &units(&["c", "d"])).await;
        assert!(
            matches!(over, Err(StoreError::PhaseUnitsRefused { .. })),
            "{over:?}"
        );
        let r = run.record_phase_units("capture", &units(&["c"])).await.unwrap();
        assert!(r.all_processed);
        let stored = store.get_run(&id).await.unwrap().unwrap();
        let phases = stored.phases.clone().unwrap();
        assert_eq!(
            phases.iter().map(|p| p.state).collect::<Vec<_>>(),
            vec![PhaseState::Done, PhaseState::Active, PhaseState::Pending]
        );
        assert_eq!((phases[1].processed, phases[1].total), (Some(3), Some(3)));
        // The run's own counters stay unset: its progress is its phases'.
        assert_eq!(stored.summary_counts.total, None);
        let progress = progress_of(&stored, &[]);
        assert_eq!(
            (progress.mode, progress.label.as_str()),
            (ProgressMode::Phased, "Capture evidence")
        );
        // Ledger keys carry the phase.
        let recorded = store.recorded_units(&id).await.unwrap();
        assert_eq!(
            recorded.keys().cloned().collect::<Vec<_>>(),
            vec!["capture/a", "capture/b", "capture/c"]
        );
        // Phases move forward only.
        assert!(matches!(
            run.set_phase("resolve", None).await,
            Err(StoreError::Phase {
                error: PhaseError::NotAhead { .. },
                ..
            })
        ));
        // Closing early fails the active phase and skips the rest (§5).
        run.complete(Completion::new(Outcome::Failed)).await.unwrap();
        let closed = store.get_run(&id).await.unwrap().unwrap().phases.unwrap();
        assert_eq!(
            closed.iter().map(|p| p.state).collect::<Vec<_>>(),
            vec![PhaseState::Done, PhaseState::Failed, PhaseState::Skipped]
        );
    }
);

both_backends!(
    phase_writes_are_fenced_and_only_for_phased_types,
    |store: Store| async move {
        let counted = leased(&store, RunType::InventorySync).await;
        assert!(matches!(
            counted.plan_phases(&plan()).await,
            Err(StoreError::NotPhased {
                run_type: RunType::InventorySync
            })
        ));
        let run = leased(&store, RunType::BaselineCompare).await;
        run.plan_phases(&plan()).await.unwrap();
        run.set_phase("capture", Some(2)).await.unwrap();
        // The lease ends (the job finished); a stalled handler writes nothing more.
        assert!(store.complete_job(run.fence()).await.unwrap());
        let id = run.reads().head().id.clone();
        assert!(matches!(
            run.set_phase("persist", None).await,
            Err(StoreError::LeaseLost { .. })
        ));
        assert!(matches!(
            run.record_phase_units("capture", &units(&["a"])).await,
            Err(StoreError::LeaseLost { .. })
        ));
        assert!(matches!(
            run.plan_phases(&plan()).await,
            Err(StoreError::LeaseLost { .. })
        ));
        let phases = store.get_run(&id).await.unwrap().unwrap().phases.unwrap();
        assert_eq!(phases[1].processed, Some(0));
        assert_eq!(phases[2].state, PhaseState::Pending);
    }
);

both_backends!(
    the_schema_refuses_a_phase_past_its_total,
    |store: Store| async move {
        let run = leased(&store, RunType::BaselineCapture).await;
        let id = run.reads().head().id.clone();
        run.plan_phases(&plan()).await.unwrap();
        run.set_phase("capture", Some(2)).await.unwrap();
        for (sql, rule) in [
            (
                "UPDATE run_phases SET processed = 3 WHERE run_id = $1 AND phase_key = 'capture'",
                "phase_processed_within_total",
            ),
            (
                "UPDATE run_phases SET state = 'later' WHERE run_id = $1",
                "phase_state_known",
            ),
            (
                "UPDATE run_phases SET total = NULL WHERE run_id = $1 AND phase_key = 'capture'",
                "phase_processed_within_total",
            ),
        ] {
            let r = raw_on_pool!(&store, pool => sqlx::query(sql).bind(&id).execute(pool).await.map(|r| r.rows_affected()));
            let e = r.expect_err(sql);
            let d = e.as_database_error().expect("a database error");
            let fired = d
                .constraint()
                .map(str::to_owned)
                .or_else(|| {
                    d.message()
                        .split_once("constraint failed: ")
                        .map(|(_, r)| r.to_owned())
                })
                .unwrap_or_else(|| d.message().to_owned());
            assert_eq!(fired, rule, "{sql}");
        }
    }
);

//! Phases of a phased run, stored: one `run_phases` row per phase (the truth
//! the schema checks: known states, `processed <= total`), rendered into
//! `operation_runs.phases` in the same transaction so a run reads in one
//! row. The rules of a move are [`opsledger_core::phases`]; this module
//! applies them under the run's row lock, fenced by the caller.

use crate::StoreError;
use crate::db::{Tx, sql};
use crate::ledger::{Fresh, ledger_in};
use crate::runs::{ContextPatch, RecordSummary, UnitRecord};
use opsledger_core::phases::{self, PhaseError, PhasePlan};
use opsledger_core::{Outcome, Phase, PhaseState, ProgressKind, RunType};

fn state_str(s: PhaseState) -> &'static str {
    match s {
        PhaseState::Pending => "pending",
        PhaseState::Active => "active",
        PhaseState::Done => "done",
        PhaseState::Skipped => "skipped",
        PhaseState::Failed => "failed",
    }
}

fn parse_state(s: &str) -> Result<PhaseState, StoreError> {
    Ok(match s {
        "pending" => PhaseState::Pending,
        "active" => PhaseState::Active,
        "done" => PhaseState::Done,
        "skipped" => PhaseState::Skipped,
        "failed" => PhaseState::Failed,
        other => return Err(StoreError::Corrupt(format!("phase state `{other}`"))),
    })
}

/// Locks the run's row; the run must be running and phased.
async fn lock_running_phased(tx: &mut Tx, run_id: &str) -> Result<(), StoreError> {
    let row: Option<(String, String)> = tx
        .fetch_optional(
            crate::db::sql_owned(format!(
                "SELECT status, type FROM operation_runs WHERE id = $1{}",
                tx.dialect().for_update()
            ))
            .bind(run_id),
        )
        .await?;
    let Some((status, run_type)) = row else {
        return Err(StoreError::RunNotFound(run_id.to_owned()));
    };
    let run_type: RunType = run_type
        .parse()
        .map_err(|e| StoreError::Corrupt(format!("{e}")))?;
    if run_type.progress_kind() != ProgressKind::Phased {
        return Err(StoreError::NotPhased { run_type });
    }
    if status != "running" {
        return Err(StoreError::RunNotRunning {
            id: run_id.to_owned(),
            status: status.parse().map_err(|e| StoreError::Corrupt(format!("{e}")))?,
        });
    }
    Ok(())
}

/// The run's phases, in plan order.
pub(crate) async fn phases_in(tx: &mut Tx, run_id: &str) -> Result<Vec<Phase>, StoreError> {
    type Row = (String, String, String, Option<i64>, Option<i64>);
    let rows: Vec<Row> = tx
        .fetch_all(
            sql(
                "SELECT phase_key, label, state, total, processed FROM run_phases \
                 WHERE run_id = $1 ORDER BY position",
            )
            .bind(run_id),
        )
        .await?;
    rows.into_iter()
        .map(|(key, label, state, total, processed)| {
            Ok(Phase {
                key,
                label,
                state: parse_state(&state)?,
                total: total.map(|n| n as u64),
                processed: processed.map(|n| n as u64),
            })
        })
        .collect()
}

/// Writes the phases that changed from `before` to `after` and renders them into the run.
async fn store_in(tx: &mut Tx, run_id: &str, before: &[Phase], after: &[Phase]) -> Result<(), StoreError> {
    for (i, p) in after.iter().enumerate() {
        if before.get(i) == Some(p) {
            continue;
        }
        let n = |v: Option<u64>| v.map(|n| n as i64);
        if before.get(i).is_some() {
            tx.execute(
                sql("UPDATE run_phases SET state = $3, total = $4, processed = $5 \
                     WHERE run_id = $1 AND phase_key = $2")
                .bind(run_id)
                .bind(p.key.as_str())
                .bind(state_str(p.state))
                .bind(n(p.total))
                .bind(n(p.processed)),
            )
            .await?;
        } else {
            tx.execute(
                sql(
                    "INSERT INTO run_phases (run_id, position, phase_key, label, state, total, processed) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(run_id)
                .bind(i as i64)
                .bind(p.key.as_str())
                .bind(p.label.as_str())
                .bind(state_str(p.state))
                .bind(n(p.total))
                .bind(n(p.processed)),
            )
            .await?;
        }
    }
    render_in(tx, run_id, after).await
}

async fn render_in(tx: &mut Tx, run_id: &str, phases: &[Phase]) -> Result<(), StoreError> {
    tx.execute(
        sql("UPDATE operation_runs SET phases = $2 WHERE id = $1")
            .bind(run_id)
            .bind(serde_json::to_string(phases).expect("json")),
    )
    .await?;
    Ok(())
}

fn refused(run_id: &str) -> impl Fn(PhaseError) -> StoreError + '_ {
    move |error| StoreError::Phase {
        id: run_id.to_owned(),
        error,
    }
}

/// Declares the run's phases, all pending. A run that already declared the
/// same plan (a retried attempt) keeps it; another plan is refused.
pub(crate) async fn plan_in(tx: &mut Tx, run_id: &str, plan: &[PhasePlan]) -> Result<(), StoreError> {
    lock_running_phased(tx, run_id).await?;
    let existing = phases_in(tx, run_id).await?;
    if !existing.is_empty() {
        return if phases::same_plan(&existing, plan) {
            Ok(())
        } else {
            Err(refused(run_id)(PhaseError::PlanDiffers))
        };
    }
    let planned = phases::planned(plan).map_err(refused(run_id))?;
    store_in(tx, run_id, &[], &planned).await
}

/// Makes `key` the run's active phase, counting `total` units when given.
pub(crate) async fn activate_in(
    tx: &mut Tx,
    run_id: &str,
    key: &str,
    total: Option<u64>,
) -> Result<(), StoreError> {
    lock_running_phased(tx, run_id).await?;
    let before = phases_in(tx, run_id).await?;
    let after = phases::activate(&before, key, total).map_err(refused(run_id))?;
    store_in(tx, run_id, &before, &after).await
}

/// Records units of the active phase `phase` exactly once each, under the
/// ledger keys `phase/unit`: each new key advances the phase's `processed`
/// (never past its `total`, which the schema checks too). The run's own
/// counters are not touched: a phased run's progress is its phases'.
pub(crate) async fn record_phase_units_in(
    tx: &mut Tx,
    run_id: &str,
    phase: &str,
    units: &[UnitRecord],
) -> Result<RecordSummary, StoreError> {
    lock_running_phased(tx, run_id).await?;
    let before = phases_in(tx, run_id).await?;
    let refuse = |reason: &str, new: u64| StoreError::PhaseUnitsRefused {
        id: run_id.to_owned(),
        phase: phase.chars().take(80).collect(),
        new,
        reason: reason.to_owned(),
    };
    let Some(at) = before.iter().position(|p| p.key == phase) else {
        return Err(refuse("the run planned no such phase", units.len() as u64));
    };
    let keyed: Vec<UnitRecord> = units
        .iter()
        .map(|u| UnitRecord {
            key: format!("{phase}/{}", u.key),
            ..u.clone()
        })
        .collect();
    let Fresh {
        units: fresh,
        mut summary,
    } = ledger_in(tx, run_id, &keyed).await?;
    if fresh.is_empty() {
        return Ok(summary);
    }
    let n = fresh.len() as u64;
    let p = &before[at];
    let (Some(total), PhaseState::Active) = (p.total, p.state) else {
        return Err(refuse("it is not the active phase with a total", n));
    };
    let processed = p.processed.unwrap_or(0) + n;
    if processed > total {
        return Err(refuse(
            &format!("{} of its {total} units are already processed", processed - n),
            n,
        ));
    }
    let mut after = before.clone();
    after[at].processed = Some(processed);
    summary.all_processed = processed == total;
    store_in(tx, run_id, &before, &after).await?;
    let patches: Vec<ContextPatch> = fresh.iter().filter_map(|u| u.context_patch.clone()).collect();
    if !patches.is_empty() {
        crate::runs::patch_context_in(tx, run_id, &patches).await?;
    }
    Ok(summary)
}

/// Ends the phases of a run closing with `outcome`, inside its closing transaction.
pub(crate) async fn close_in(tx: &mut Tx, run_id: &str, outcome: Outcome) -> Result<(), StoreError> {
    let before = phases_in(tx, run_id).await?;
    if before.is_empty() {
        return Ok(());
    }
    let after = phases::closed(&before, outcome);
    store_in(tx, run_id, &before, &after).await
}

//! Decoding stored rows into core types. Stored values that are not valid are
//! reported as [`StoreError::Corrupt`], except counts, which go through the
//! core normalizer (invalid values dropped and logged, never fatal).

use crate::StoreError;
use crate::db::DbRow;
use crate::runs::RunHead;
use opsledger_core::counts::{CountKey, SummaryCounts};
use opsledger_core::{Failure, Phase, Run};

/// The columns [`run_from_row`] reads, in `SELECT` order.
pub const RUN_COLUMNS: &str = "id, workspace_id, tenant_id, parent_id, type, status, outcome, \
     total, processed, succeeded, failed, skipped, created, updated, \
     phases, context, initiator, created_at, started_at, heartbeat_at, completed_at";

/// Longest context (in characters) a listed run carries whole: a list reads
/// up to 501 runs, and a start may hold thousands of policy ids, so a larger
/// context is replaced in list items by `{"omitted": {…}}` saying so (the
/// run itself, `GET …/operations/{id}`, has it whole). Bounds a list's memory.
pub const LIST_CONTEXT_MAX_CHARS: usize = 16 * 1024;

/// [`RUN_COLUMNS`] for lists: the same, with a context over
/// [`LIST_CONTEXT_MAX_CHARS`] replaced by a note naming its size (written
/// once for both databases: `CASE`, `LENGTH` and `||` mean the same on both).
pub const LIST_RUN_COLUMNS: &str = "id, workspace_id, tenant_id, parent_id, type, status, outcome, \
     total, processed, succeeded, failed, skipped, created, updated, phases, \
     CASE WHEN LENGTH(context) <= 16384 THEN context ELSE \
       '{\"omitted\":{\"reason\":\"context too large for a list item; read the run for all of it\",\"characters\":' \
       || LENGTH(context) || '}}' END AS context, \
     initiator, created_at, started_at, heartbeat_at, completed_at";

/// The columns [`run_head_from_row`] reads.
pub const RUN_HEAD_COLUMNS: &str = "id, workspace_id, tenant_id, type, status, outcome, \
     total, processed, succeeded, failed, skipped, created, updated";

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// The whitelisted count columns; a negative stored value is dropped and logged.
fn counts_from_row(row: &DbRow, id: &str) -> Result<SummaryCounts, StoreError> {
    let mut counts = SummaryCounts::default();
    for key in CountKey::ALL {
        let v: Option<i64> = row.get(key.as_str())?;
        match v.map(u64::try_from) {
            None => {}
            Some(Ok(n)) => counts.set(key, Some(n)),
            Some(Err(_)) => tracing::warn!(run = %id, key = key.as_str(), "dropping negative stored count"),
        }
    }
    Ok(counts)
}

pub(crate) fn run_head_from_row(row: &DbRow) -> Result<RunHead, StoreError> {
    let id: String = row.get("id")?;
    let run_type: String = row.get("type")?;
    let status: String = row.get("status")?;
    let outcome: String = row.get("outcome")?;
    Ok(RunHead {
        summary_counts: counts_from_row(row, &id)?,
        workspace_id: row.get("workspace_id")?,
        tenant_id: row.get("tenant_id")?,
        run_type: run_type.parse().map_err(corrupt)?,
        status: status.parse().map_err(corrupt)?,
        outcome: outcome.parse().map_err(corrupt)?,
        id,
    })
}

pub(crate) fn run_from_row(row: &DbRow) -> Result<Run, StoreError> {
    // A run is its head plus the rest.
    let RunHead {
        id,
        workspace_id,
        tenant_id,
        run_type,
        status,
        outcome,
        summary_counts,
    } = run_head_from_row(row)?;
    let phases: Option<String> = row.get("phases")?;
    let phases: Option<Vec<Phase>> = match phases {
        Some(p) => Some(serde_json::from_str(&p).map_err(|e| corrupt(format!("run {id} phases: {e}")))?),
        None => None,
    };
    let context: String = row.get("context")?;
    let context = serde_json::from_str(&context).map_err(|e| corrupt(format!("run {id} context: {e}")))?;
    Ok(Run {
        workspace_id,
        tenant_id,
        parent_id: row.get("parent_id")?,
        run_type,
        status,
        outcome,
        summary_counts,
        phases,
        context,
        failures: Vec::new(),
        initiator: row.get("initiator")?,
        created_at: row.get("created_at")?,
        started_at: row.get("started_at")?,
        heartbeat_at: row.get("heartbeat_at")?,
        completed_at: row.get("completed_at")?,
        id,
    })
}

pub(crate) fn failure_from_row(row: &DbRow) -> Result<Failure, StoreError> {
    Ok(Failure {
        code: row.get("code")?,
        message: row.get("message")?,
        unit: row.get("unit_key")?,
    })
}

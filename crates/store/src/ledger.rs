//! The unit ledger (OPERATIONS.md §3): the transaction step that counts units
//! exactly once, shared by the writer path, the job runtime and every artifact
//! writer, so that an artifact and the unit it proves commit together.
//!
//! A unit is counted by inserting `(run_id, unit_key)` into `run_units` with
//! `ON CONFLICT DO NOTHING … RETURNING`: only the keys returned (new) bump
//! `processed` and their outcome counter, in the same transaction, guarded by
//! `processed + n <= total` (and the schema's CHECK constraint).

use crate::StoreError;
use crate::db::{Dialect, Tx, sql, sql_built};
use crate::runs::{ContextPatch, RecordSummary, UNIT_INSERT_CHUNK, UnitRecord};
use opsledger_core::{Failure, UnitOutcome};
use std::collections::HashSet;

/// Inserts one failure row.
pub(crate) async fn insert_failure(
    tx: &mut Tx,
    run_id: &str,
    failure: &Failure,
    now: i64,
) -> Result<(), StoreError> {
    tx.execute(
        sql("INSERT INTO run_failures (run_id, code, message, unit_key, recorded_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(run_id)
            .bind(&failure.code)
            .bind(&failure.message)
            .bind(&failure.unit)
            .bind(now),
    )
    .await?;
    Ok(())
}

/// Units new to the ledger after [`ledger_in`], with what a recording call reports.
pub(crate) struct Fresh<'a> {
    pub units: Vec<&'a UnitRecord>,
    pub summary: RecordSummary,
}

/// The ledger step every recording shares, inside `tx`: inserts each unit
/// key once (`ON CONFLICT DO NOTHING … RETURNING`), and for the keys new to
/// the ledger writes their artifacts (never for a failed unit) and failures.
/// The caller bumps the counters the fresh units count against.
pub(crate) async fn ledger_in<'a>(
    tx: &mut Tx,
    run_id: &str,
    units: &'a [UnitRecord],
) -> Result<Fresh<'a>, StoreError> {
    // Sorted, so that concurrent batches take unit-ledger locks in one order.
    let mut sorted: Vec<&UnitRecord> = units.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    sorted.dedup_by(|a, b| a.key == b.key);
    let now = tx.now();
    let mut new_keys: HashSet<String> = HashSet::new();
    for chunk in sorted.chunks(UNIT_INSERT_CHUNK) {
        let stmt = match tx.dialect() {
            // One statement text whatever the batch's size: it stays
            // prepared (see `Arg::Texts`). UNNEST keeps the sorted order.
            Dialect::Postgres => sql(
                "INSERT INTO run_units (run_id, unit_key, outcome, recorded_at) \
                 SELECT $1, v.unit_key, v.outcome, $2 FROM UNNEST($3::text[], $4::text[]) AS v(unit_key, outcome) \
                 ON CONFLICT (run_id, unit_key) DO NOTHING RETURNING unit_key",
            )
            .bind(run_id)
            .bind(now)
            .bind(chunk.iter().map(|u| u.key.clone()).collect::<Vec<String>>())
            .bind(chunk.iter().map(|u| u.outcome.as_str().to_owned()).collect::<Vec<String>>()),
            Dialect::Sqlite => {
                let mut stmt = sql_built(
                    tx.dialect(),
                    "INSERT INTO run_units (run_id, unit_key, outcome, recorded_at) VALUES ",
                );
                for (i, u) in chunk.iter().enumerate() {
                    stmt.push(if i == 0 { "(" } else { ", (" });
                    stmt.push_bind(run_id)
                        .push(", ")
                        .push_bind(u.key.as_str())
                        .push(", ")
                        .push_bind(u.outcome.as_str())
                        .push(", ")
                        .push_bind(now)
                        .push(")");
                }
                stmt.push(" ON CONFLICT (run_id, unit_key) DO NOTHING RETURNING unit_key");
                stmt
            }
        };
        let inserted: Vec<(String,)> = tx.fetch_all(stmt).await?;
        new_keys.extend(inserted.into_iter().map(|(k,)| k));
    }
    let fresh: Vec<&UnitRecord> = sorted
        .iter()
        .copied()
        .filter(|u| new_keys.contains(&u.key))
        .collect();
    let summary = RecordSummary {
        recorded: fresh.len() as u64,
        duplicates: (units.len() - fresh.len()) as u64,
        all_processed: false,
    };
    // Everything but the counter bump: the bump locks the run's row (hot
    // under a fan-out) until commit, so the caller makes it last. Artifacts
    // are written for units new to the ledger only (a duplicate delivery
    // writes nothing), and never for a failed unit; a refused bump (run
    // closed, total passed) rolls them back with the rest.
    for u in &fresh {
        if let Some(artifact) = u
            .artifact
            .as_ref()
            .filter(|a| u.outcome != UnitOutcome::Failed || a.kept_when_failed())
        {
            crate::artifacts::write_in(tx, run_id, Some(&u.key), artifact).await?;
        }
    }
    for u in &fresh {
        if let Some(f) = &u.failure {
            let mut f = f.clone();
            f.unit.get_or_insert_with(|| u.key.clone());
            insert_failure(tx, run_id, &f, now).await?;
        }
    }
    Ok(Fresh {
        units: fresh,
        summary,
    })
}

/// Records units reaching their terminal outcome, inside `tx`: each unit key
/// new to the ledger increments `processed` and its outcome counter once, with
/// its failure and context patch. Keys already recorded change nothing. A run
/// that is not running, has no total, or would pass its total refuses the
/// whole call (typed error; the caller's transaction is dropped).
pub(crate) async fn record_units_in(
    tx: &mut Tx,
    run_id: &str,
    units: &[UnitRecord],
) -> Result<RecordSummary, StoreError> {
    let Fresh {
        units: fresh,
        mut summary,
    } = ledger_in(tx, run_id, units).await?;
    if fresh.is_empty() {
        return Ok(summary);
    }
    let now = tx.now();
    let count = |o: UnitOutcome| fresh.iter().filter(|u| u.outcome == o).count() as i64;
    let n = fresh.len() as i64;
    // `created` / `updated` (OPERATIONS.md §3) count what the fresh units'
    // artifacts wrote; a run that writes nothing keeps them unset.
    let (created, updated) = fresh
        .iter()
        .filter_map(|u| u.artifact.as_ref())
        .map(|a| a.counters())
        .fold((0i64, 0i64), |(c, u), (dc, du)| (c + dc, u + du));
    let bumped: Option<(i64, i64)> = tx
        .fetch_optional(
            sql("UPDATE operation_runs SET processed = processed + $2, \
                 succeeded = COALESCE(succeeded, 0) + $3, failed = COALESCE(failed, 0) + $4, \
                 skipped = COALESCE(skipped, 0) + $5, heartbeat_at = $6, \
                 created = CASE WHEN $7 > 0 THEN COALESCE(created, 0) + $7 ELSE created END, \
                 updated = CASE WHEN $8 > 0 THEN COALESCE(updated, 0) + $8 ELSE updated END \
                 WHERE id = $1 AND status = 'running' AND total IS NOT NULL AND processed + $2 <= total \
                 RETURNING processed, total")
            .bind(run_id)
            .bind(n)
            .bind(count(UnitOutcome::Succeeded))
            .bind(count(UnitOutcome::Failed))
            .bind(count(UnitOutcome::Skipped))
            .bind(now)
            .bind(created)
            .bind(updated),
        )
        .await?;
    let Some((processed, total)) = bumped else {
        return Err(refusal(tx, run_id, n as u64).await);
    };
    summary.all_processed = processed >= total;
    let patches: Vec<ContextPatch> = fresh.iter().filter_map(|u| u.context_patch.clone()).collect();
    if !patches.is_empty() {
        // The run is running (its counters were just bumped): the patch applies.
        crate::runs::patch_context_in(tx, run_id, &patches).await?;
    }
    Ok(summary)
}

/// Why the counter bump matched no row, as a typed error.
async fn refusal(tx: &mut Tx, run_id: &str, new: u64) -> StoreError {
    type Head = (String, Option<i64>, Option<i64>);
    let row: Result<Option<Head>, _> = tx
        .fetch_optional(sql("SELECT status, total, processed FROM operation_runs WHERE id = $1").bind(run_id))
        .await;
    match row {
        Err(e) => e.into(),
        Ok(None) => StoreError::RunNotFound(run_id.to_owned()),
        Ok(Some((status, _, _))) if status != "running" => match status.parse() {
            Ok(status) => StoreError::RunNotRunning {
                id: run_id.to_owned(),
                status,
            },
            Err(e) => StoreError::Corrupt(format!("{e}")),
        },
        Ok(Some((_, None, _))) => StoreError::TotalNotSet {
            id: run_id.to_owned(),
        },
        Ok(Some((_, Some(total), processed))) => StoreError::UnitsExceedTotal {
            id: run_id.to_owned(),
            new,
            processed: processed.unwrap_or(0) as u64,
            total: total as u64,
        },
    }
}

//! Transaction bodies shared by the writer path and artifact writers, written
//! once and expanded per backend (see `on_pool!`).

/// Inserts one failure row inside an open transaction.
macro_rules! insert_failure {
    ($tx:expr, $run_id:expr, $f:expr, $now:expr) => {
        sqlx::query(
            "INSERT INTO run_failures (run_id, code, message, unit_key, recorded_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind($run_id)
        .bind(&$f.code)
        .bind(&$f.message)
        .bind(&$f.unit)
        .bind($now)
        .execute(&mut **$tx)
        .await?
    };
}

/// The body of unit recording inside an open write transaction; a macro so
/// that artifact writers (e.g. inventory items) can commit their artifacts
/// and the unit in one transaction, on either backend.
macro_rules! record_units_tx {
    ($tx:expr, $pool:expr, $run_id:expr, $units:expr) => {{
        let tx = $tx;
        let run_id: &str = $run_id;
        let units: &[$crate::runs::UnitRecord] = $units;
        // Sorted, so that concurrent batches take unit-ledger locks in one order.
        let mut sorted: Vec<&$crate::runs::UnitRecord> = units.iter().collect();
        sorted.sort_by(|a, b| a.key.cmp(&b.key));
        sorted.dedup_by(|a, b| a.key == b.key);
        let now = $crate::now_ms();
        let mut new_keys: std::collections::HashSet<String> = std::collections::HashSet::new();
        for chunk in sorted.chunks($crate::runs::UNIT_INSERT_CHUNK) {
            let mut qb =
                sqlx::QueryBuilder::new("INSERT INTO run_units (run_id, unit_key, outcome, recorded_at) ");
            qb.push_values(chunk.iter(), |mut b, u| {
                b.push_bind(run_id)
                    .push_bind(u.key.as_str())
                    .push_bind(u.outcome.as_str())
                    .push_bind(now);
            });
            qb.push(" ON CONFLICT (run_id, unit_key) DO NOTHING RETURNING unit_key");
            for row in qb.build().fetch_all(&mut **tx).await? {
                new_keys.insert(sqlx::Row::try_get::<String, _>(&row, "unit_key")?);
            }
        }
        let fresh: Vec<&$crate::runs::UnitRecord> = sorted
            .iter()
            .copied()
            .filter(|u| new_keys.contains(&u.key))
            .collect();
        let mut summary = $crate::runs::RecordSummary {
            recorded: fresh.len() as u64,
            duplicates: (units.len() - fresh.len()) as u64,
            all_processed: false,
        };
        if !fresh.is_empty() {
            // Everything but the counter bump first: the bump locks the run's
            // row (hot under a fan-out) until commit, so it comes last.
            for u in &fresh {
                if let Some(f) = &u.failure {
                    let mut f = f.clone();
                    f.unit.get_or_insert_with(|| u.key.clone());
                    insert_failure!(tx, run_id, f, now);
                }
            }
            let count =
                |o: opsledger_core::UnitOutcome| fresh.iter().filter(|u| u.outcome == o).count() as i64;
            let n = fresh.len() as i64;
            let updated: Option<(i64, i64)> = sqlx::query_as(
                "UPDATE operation_runs SET processed = processed + $2, \
                 succeeded = COALESCE(succeeded, 0) + $3, failed = COALESCE(failed, 0) + $4, \
                 skipped = COALESCE(skipped, 0) + $5, heartbeat_at = $6 \
                 WHERE id = $1 AND status = 'running' AND total IS NOT NULL AND processed + $2 <= total \
                 RETURNING processed, total",
            )
            .bind(run_id)
            .bind(n)
            .bind(count(opsledger_core::UnitOutcome::Succeeded))
            .bind(count(opsledger_core::UnitOutcome::Failed))
            .bind(count(opsledger_core::UnitOutcome::Skipped))
            .bind(now)
            .fetch_optional(&mut **tx)
            .await?;
            if let Some((processed, total)) = updated {
                summary.all_processed = processed >= total;
            }
            if updated.is_none() {
                // Say why; the caller's transaction is dropped, so nothing lands.
                let row: Option<(String, Option<i64>, Option<i64>)> =
                    sqlx::query_as("SELECT status, total, processed FROM operation_runs WHERE id = $1")
                        .bind(run_id)
                        .fetch_optional(&mut **tx)
                        .await?;
                return Err(match row {
                    None => $crate::StoreError::RunNotFound(run_id.to_owned()),
                    Some((status, _, _)) if status != "running" => $crate::StoreError::RunNotRunning {
                        id: run_id.to_owned(),
                        status: status
                            .parse()
                            .map_err(|e| $crate::StoreError::Corrupt(format!("{e}")))?,
                    },
                    Some((_, None, _)) => $crate::StoreError::TotalNotSet {
                        id: run_id.to_owned(),
                    },
                    Some((_, Some(total), processed)) => $crate::StoreError::UnitsExceedTotal {
                        id: run_id.to_owned(),
                        new: n as u64,
                        processed: processed.unwrap_or(0) as u64,
                        total: total as u64,
                    },
                });
            }
            let patches: Vec<&$crate::runs::ContextPatch> =
                fresh.iter().filter_map(|u| u.context_patch.as_ref()).collect();
            if !patches.is_empty() {
                let (ctx,): (String,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT context FROM operation_runs WHERE id = $1{}",
                    $crate::backend::for_update($pool)
                )))
                .bind(run_id)
                .fetch_one(&mut **tx)
                .await?;
                let mut ctx: serde_json::Value = serde_json::from_str(&ctx)
                    .map_err(|e| $crate::StoreError::Corrupt(format!("run {run_id} context: {e}")))?;
                for p in patches {
                    p.apply(&mut ctx);
                }
                sqlx::query("UPDATE operation_runs SET context = $2 WHERE id = $1")
                    .bind(run_id)
                    .bind(serde_json::to_string(&ctx).expect("json"))
                    .execute(&mut **tx)
                    .await?;
            }
        }
        summary
    }};
}

/// Inside an open transaction: proceed only while `$fence` still holds its
/// job's lease; the row stays share-locked until commit on PostgreSQL, so a
/// rescue cannot slip in between this check and the commit.
macro_rules! check_fence {
    ($tx:expr, $pool:expr, $fence:expr) => {
        if let Some(fence) = $fence {
            let fence: &$crate::jobs::Fence = fence;
            let held: Option<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT id FROM jobs WHERE id = $1 AND lease_token = $2 AND state = 'running'{}",
                $crate::backend::for_share($pool)
            )))
            .bind(&fence.job_id)
            .bind(&fence.lease_token)
            .fetch_optional(&mut **$tx)
            .await?;
            if held.is_none() {
                return Err($crate::StoreError::LeaseLost {
                    job_id: fence.job_id.clone(),
                });
            }
        }
    };
}

/// Inside an open transaction: enqueue a job (`kind` run or unit) unless the
/// same `(run_id, kind, unit_key)` exists. Evaluates to rows inserted.
macro_rules! insert_job {
    ($tx:expr, $run_id:expr, $kind:expr, $unit_key:expr, $max_attempts:expr) => {
        sqlx::query(
            "INSERT INTO jobs (id, run_id, kind, unit_key, state, attempt, max_attempts, run_after, created_at) \
             VALUES ($1, $2, $3, $4, 'available', 0, $5, $6, $6) ON CONFLICT (run_id, kind, unit_key) DO NOTHING",
        )
        .bind($crate::new_id())
        .bind($run_id)
        .bind($kind)
        .bind($unit_key)
        .bind($max_attempts as i64)
        .bind($crate::now_ms())
        .execute(&mut **$tx)
        .await?
        .rows_affected()
    };
}

/// Inside an open transaction: end a leased unit job as completed or failed
/// and record its unit — the one "unit finished" step. Fails with
/// `LeaseLost` when the fence no longer holds (nothing is written).
macro_rules! finish_unit_job_tx {
    ($tx:expr, $pool:expr, $fence:expr, $run_id:expr, $unit:expr, $end:expr) => {{
        let fence: &$crate::jobs::Fence = $fence;
        let state = match $end {
            $crate::jobs::JobEnd::Completed => "completed",
            $crate::jobs::JobEnd::Failed => "failed",
        };
        let ended = sqlx::query(
            "UPDATE jobs SET state = $3, lease_token = NULL, lease_expires_at = NULL, finalized_at = $4 \
             WHERE id = $1 AND lease_token = $2 AND state = 'running'",
        )
        .bind(&fence.job_id)
        .bind(&fence.lease_token)
        .bind(state)
        .bind($crate::now_ms())
        .execute(&mut **$tx)
        .await?
        .rows_affected();
        if ended != 1 {
            return Err($crate::StoreError::LeaseLost {
                job_id: fence.job_id.clone(),
            });
        }
        let unit: $crate::runs::UnitRecord = $unit;
        record_units_tx!($tx, $pool, $run_id, std::slice::from_ref(&unit))
    }};
}

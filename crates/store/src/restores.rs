//! What `backup_set.restore` reads and writes: the backup set it restores
//! (named, or the target's latest complete set), the set's items, and one
//! [`RestoreResult`] per unit, written with the unit's ledger row (so a unit
//! is counted if and only if its result landed, even a failed one: the
//! result is the proof the restore's reconciliation reads).

use crate::backups::{SET_IS_COMPLETE, SET_IS_DELETED};
use crate::db::{Tx, sql, sql_built, sql_owned};
use crate::{Store, StoreError};
use serde_json::Value;
use std::collections::BTreeMap;

/// What a restore unit did to its target (in a dry run: would have done).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreOutcome {
    Created,
    Updated,
    Unchanged,
    Failed,
}

impl RestoreOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RestoreOutcome::Created => "created",
            RestoreOutcome::Updated => "updated",
            RestoreOutcome::Unchanged => "unchanged",
            RestoreOutcome::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<RestoreOutcome, StoreError> {
        Ok(match s {
            "created" => RestoreOutcome::Created,
            "updated" => RestoreOutcome::Updated,
            "unchanged" => RestoreOutcome::Unchanged,
            "failed" => RestoreOutcome::Failed,
            other => return Err(StoreError::Corrupt(format!("restore result `{other}`"))),
        })
    }
}

/// One restore unit's result, the artifact of its unit.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoreResult {
    pub backup_set_id: String,
    /// The item restored; `None` for a group the restore created.
    pub backup_item_id: Option<String>,
    pub outcome: RestoreOutcome,
    pub dry_run: bool,
    /// The target's object written or found (a later restore looks it up first).
    pub target_id: Option<String>,
    /// What the unit saw: mapped references, the failure, the match.
    pub detail: Value,
}

impl RestoreResult {
    /// The counters of OPERATIONS.md §3 this result adds to (`created`,
    /// `updated`): what was written to the tenant, so never in a dry run —
    /// and also when the unit failed after writing its policy (its
    /// assignments refused): `detail.written` says what it wrote.
    pub fn counters(&self) -> (i64, i64) {
        let written = || self.detail.get("written").and_then(Value::as_str);
        match (self.dry_run, self.outcome) {
            (true, _) => (0, 0),
            (false, RestoreOutcome::Created) => (1, 0),
            (false, RestoreOutcome::Updated) => (0, 1),
            (false, RestoreOutcome::Failed) => match written() {
                Some("created") => (1, 0),
                Some("updated") => (0, 1),
                _ => (0, 0),
            },
            (false, RestoreOutcome::Unchanged) => (0, 0),
        }
    }
}

/// Writes `result` for unit `unit_key` of run `run_id` inside `tx`; the
/// target is the run's tenant, and the set must be of the run's workspace.
pub(crate) async fn insert_result_in(
    tx: &mut Tx,
    run_id: &str,
    unit_key: Option<&str>,
    result: &RestoreResult,
) -> Result<(), StoreError> {
    let Some(unit_key) = unit_key else {
        return Err(StoreError::Corrupt("a restore result belongs to a unit".into()));
    };
    let run: Option<(String, Option<String>)> = tx
        .fetch_optional(sql("SELECT workspace_id, tenant_id FROM operation_runs WHERE id = $1").bind(run_id))
        .await?;
    let Some((workspace_id, Some(tenant_id))) = run else {
        return Err(StoreError::RunNotFound(run_id.to_owned()));
    };
    // The set is one of the run's workspace (a restore may read another
    // tenant's set, never another workspace's).
    let set: Option<(String,)> = tx
        .fetch_optional(
            sql("SELECT id FROM backup_sets WHERE id = $1 AND workspace_id = $2")
                .bind(&result.backup_set_id)
                .bind(&workspace_id),
        )
        .await?;
    if set.is_none() {
        return Err(StoreError::NotFound {
            what: "backup set",
            id: result.backup_set_id.clone(),
        });
    }
    tx.execute(
        sql(
            "INSERT INTO restore_results (run_id, unit_key, workspace_id, target_tenant_id, backup_set_id, \
             backup_item_id, result, dry_run, target_id, detail, recorded_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (run_id, unit_key) DO NOTHING",
        )
        .bind(run_id)
        .bind(unit_key)
        .bind(workspace_id.as_str())
        .bind(tenant_id.as_str())
        .bind(&result.backup_set_id)
        .bind(&result.backup_item_id)
        .bind(result.outcome.as_str())
        .bind(i64::from(result.dry_run))
        .bind(&result.target_id)
        .bind(serde_json::to_string(&result.detail).expect("json"))
        .bind(tx.now()),
    )
    .await?;
    Ok(())
}

/// A backup set as a restore sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SetHead {
    pub id: String,
    pub workspace_id: String,
    pub tenant_id: String,
    pub name: String,
    pub complete: bool,
    /// The source tenant's directory when the set was taken (`None`: taken
    /// without one, so its references cannot be mapped by name).
    pub directory: Option<Value>,
}

/// An item of a set, without its payload (a plan needs thousands of these).
#[derive(Debug, Clone, PartialEq)]
pub struct ItemHead {
    pub id: String,
    pub policy_type: String,
    pub external_id: String,
    pub display_name: String,
    /// Source id → `"<kind>:<display name>"` of what its references point to.
    pub refs: BTreeMap<String, String>,
}

/// An item whole.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemWhole {
    pub head: ItemHead,
    pub payload: Value,
    pub content_sha256: String,
    pub backup_set_id: String,
}

/// A restore result as stored, for proof and history.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRestoreResult {
    pub run_id: String,
    pub unit_key: String,
    pub workspace_id: String,
    pub target_tenant_id: String,
    pub backup_set_id: String,
    pub backup_item_id: Option<String>,
    pub outcome: RestoreOutcome,
    pub dry_run: bool,
    pub target_id: Option<String>,
    /// What the unit saw (see [`RestoreResult::detail`]).
    pub detail: Value,
}

type SetRow = (String, String, String, String, i64, Option<String>);

fn set_head((id, workspace_id, tenant_id, name, complete, directory): SetRow) -> SetHead {
    SetHead {
        id,
        workspace_id,
        tenant_id,
        name,
        complete: complete != 0,
        directory: directory.and_then(|d| serde_json::from_str(&d).ok()),
    }
}

fn refs_of(refs: &str) -> BTreeMap<String, String> {
    serde_json::from_str(refs).unwrap_or_default()
}

type ResultRow = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    i64,
    Option<String>,
    String,
);

const RESULT_COLUMNS: &str = "run_id, unit_key, workspace_id, target_tenant_id, backup_set_id, backup_item_id, \
     result, dry_run, target_id, detail";

fn stored(row: ResultRow) -> Result<StoredRestoreResult, StoreError> {
    let (
        run_id,
        unit_key,
        workspace_id,
        target_tenant_id,
        backup_set_id,
        backup_item_id,
        result,
        dry,
        target_id,
        detail,
    ) = row;
    Ok(StoredRestoreResult {
        run_id,
        unit_key,
        workspace_id,
        target_tenant_id,
        backup_set_id,
        backup_item_id,
        outcome: RestoreOutcome::parse(&result)?,
        dry_run: dry != 0,
        target_id,
        detail: serde_json::from_str(&detail).unwrap_or(Value::Null),
    })
}

impl Store {
    /// Backup set `id` of workspace `workspace_id`; another workspace's set,
    /// and a set deleted or being deleted (`SET_IS_DELETED`), is `None`.
    pub async fn backup_set_head(&self, workspace_id: &str, id: &str) -> Result<Option<SetHead>, StoreError> {
        let q = format!(
            "SELECT s.id, s.workspace_id, s.tenant_id, s.name, CAST(CASE WHEN {SET_IS_COMPLETE} THEN 1 ELSE 0 END AS BIGINT), \
             s.directory FROM backup_sets s WHERE s.id = $1 AND s.workspace_id = $2 AND NOT {SET_IS_DELETED}"
        );
        let row: Option<SetRow> = self
            .pool
            .fetch_optional(sql_owned(q).bind(id).bind(workspace_id))
            .await?;
        Ok(row.map(set_head))
    }

    /// The tenant's newest complete backup set, if any.
    pub async fn latest_complete_backup_set(&self, tenant_id: &str) -> Result<Option<SetHead>, StoreError> {
        let q = format!(
            "SELECT s.id, s.workspace_id, s.tenant_id, s.name, CAST(1 AS BIGINT), s.directory FROM backup_sets s \
             WHERE s.tenant_id = $1 AND {SET_IS_COMPLETE} ORDER BY s.created_at DESC, s.id DESC LIMIT 1"
        );
        let row: Option<SetRow> = self.pool.fetch_optional(sql_owned(q).bind(tenant_id)).await?;
        Ok(row.map(set_head))
    }

    /// Every item of a set without its payload, by type and name.
    pub async fn backup_item_heads(&self, set_id: &str) -> Result<Vec<ItemHead>, StoreError> {
        let rows: Vec<(String, String, String, String, String)> = self
            .pool
            .fetch_all(
                sql(
                    "SELECT id, policy_type, external_id, display_name, refs FROM backup_items \
                     WHERE backup_set_id = $1 ORDER BY policy_type, display_name, id",
                )
                .bind(set_id),
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, policy_type, external_id, display_name, refs)| ItemHead {
                id,
                policy_type,
                external_id,
                display_name,
                refs: refs_of(&refs),
            })
            .collect())
    }

    /// Item `item_id` of set `set_id`, whole.
    pub async fn backup_item(&self, set_id: &str, item_id: &str) -> Result<Option<ItemWhole>, StoreError> {
        let row: Option<(String, String, String, String, String, String, String)> = self
            .pool
            .fetch_optional(
                sql(
                    "SELECT id, policy_type, external_id, display_name, refs, payload, payload_sha256 \
                     FROM backup_items WHERE backup_set_id = $1 AND id = $2",
                )
                .bind(set_id)
                .bind(item_id),
            )
            .await?;
        row.map(
            |(id, policy_type, external_id, display_name, refs, payload, sha)| {
                Ok(ItemWhole {
                    head: ItemHead {
                        id,
                        policy_type,
                        external_id,
                        display_name,
                        refs: refs_of(&refs),
                    },
                    payload: serde_json::from_str(&payload)
                        .map_err(|e| StoreError::Corrupt(format!("backup item payload: {e}")))?,
                    content_sha256: sha,
                    backup_set_id: set_id.to_owned(),
                })
            },
        )
        .transpose()
    }

    /// The target object an earlier restore of item `item_id` into tenant
    /// `tenant_id` wrote or found (its newest result that names one, dry
    /// runs aside: a dry run found, it did not write).
    pub async fn restored_target_of(
        &self,
        item_id: &str,
        tenant_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let row: Option<(Option<String>,)> = self
            .pool
            .fetch_optional(
                sql(
                    "SELECT target_id FROM restore_results WHERE backup_item_id = $1 AND target_tenant_id = $2 \
                     AND target_id IS NOT NULL AND dry_run = 0 ORDER BY recorded_at DESC LIMIT 1",
                )
                .bind(item_id)
                .bind(tenant_id),
            )
            .await?;
        Ok(row.and_then(|(t,)| t))
    }

    /// The restore results run `run_id` recorded.
    pub async fn restore_results_of(&self, run_id: &str) -> Result<Vec<StoredRestoreResult>, StoreError> {
        let q = format!("SELECT {RESULT_COLUMNS} FROM restore_results WHERE run_id = $1 ORDER BY unit_key");
        let rows: Vec<ResultRow> = self.pool.fetch_all(sql_owned(q).bind(run_id)).await?;
        rows.into_iter().map(stored).collect()
    }

    /// Restore results of many runs, grouped by run (the sweep's page).
    pub async fn restore_results_of_runs(
        &self,
        run_ids: &[&str],
    ) -> Result<BTreeMap<String, Vec<StoredRestoreResult>>, StoreError> {
        let mut out: BTreeMap<String, Vec<StoredRestoreResult>> = BTreeMap::new();
        for chunk in run_ids.chunks(500) {
            let mut stmt = sql_built(
                self.pool.dialect(),
                &format!("SELECT {RESULT_COLUMNS} FROM restore_results WHERE run_id IN "),
            );
            stmt.push_list(chunk.iter().copied());
            let rows: Vec<ResultRow> = self.pool.fetch_all(stmt).await?;
            for row in rows {
                let r = stored(row)?;
                out.entry(r.run_id.clone()).or_default().push(r);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn result(outcome: RestoreOutcome, dry_run: bool, detail: Value) -> RestoreResult {
        RestoreResult {
            backup_set_id: "s".into(),
            backup_item_id: Some("i".into()),
            outcome,
            dry_run,
            target_id: None,
            detail,
        }
    }

    #[test]
    fn counters_say_what_was_written_even_by_a_failed_unit() {
        use RestoreOutcome::*;
        assert_eq!(result(Created, false, json!({})).counters(), (1, 0));
        assert_eq!(result(Updated, false, json!({})).counters(), (0, 1));
        assert_eq!(result(Unchanged, false, json!({})).counters(), (0, 0));
        assert_eq!(result(Failed, false, json!({})).counters(), (0, 0));
        // The policy written, its assignments refused.
        assert_eq!(
            result(Failed, false, json!({"written": "created"})).counters(),
            (1, 0)
        );
        assert_eq!(
            result(Failed, false, json!({"written": "updated"})).counters(),
            (0, 1)
        );
        // A dry run writes nothing, whatever it says it would.
        assert_eq!(result(Created, true, json!({})).counters(), (0, 0));
        assert_eq!(
            result(Failed, true, json!({"written": "created"})).counters(),
            (0, 0)
        );
    }
}

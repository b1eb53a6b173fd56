//! What `backup_set.update` and `backup_set.delete` read and write (schema:
//! migration 0018). Nothing here is written outside a leased run's own
//! transactions: each write is an [`crate::artifacts::UnitArtifact`] the
//! run hands to the writer path, so it commits with what proves it.
//!
//! - **Update** ([`SetUpdate`], a close's artifact): name, label and
//!   retention lock change in the run's closing transaction (fenced by its
//!   lease), so the set changed if and only if the run closed `succeeded`.
//! - **Delete of an item** (`delete_item_in`, a unit's artifact): the item's
//!   row goes in its unit's ledger transaction, so an item is counted deleted
//!   if and only if it is gone, once, whatever the retries (the ledger writes
//!   a unit's artifact only when the unit is new to it). The same
//!   transaction marks the set deleted (its tombstone, the first item on) —
//!   unless the set is locked or an active restore reads it: then nothing
//!   is written and the unit is refused.
//! - **Delete of an emptied set** (`delete_set_in`, a close's artifact): a
//!   set with no item left has no unit to mark it; the close does.
//!
//! Restore history is kept: a removed item's restore results stay, with
//! their `backup_item_id` set to NULL (migration 0018 says why).
//!
//! Every writer checks that the run writing it is the family's, of the
//! set's workspace and tenant, and names that set in its parameters: an
//! artifact cannot reach a set its run was not started on.

use crate::backups::{SET_IS_COMPLETE, SET_IS_DELETED};
use crate::db::{Tx, sql, sql_owned};
use crate::{Store, StoreError};
use opsledger_core::RunType;
use serde_json::Value;

/// A backup set with what its lifecycle depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetLifecycle {
    pub id: String,
    pub workspace_id: String,
    pub tenant_id: String,
    pub name: String,
    pub label: Option<String>,
    /// Deletion is refused until an update unlocks it.
    pub retention_locked: bool,
    /// Every planned item was captured and the set is not gone ([`SET_IS_COMPLETE`]).
    pub complete: bool,
    /// Gone, or being deleted ([`SET_IS_DELETED`]): no read offers it.
    pub deleted: bool,
    /// When its first item was removed (its tombstone), and by which run.
    pub deleted_at: Option<i64>,
    pub deleted_by_run_id: Option<String>,
    /// The run creating the set, while it is still open (items may still land).
    pub writing_run_id: Option<String>,
    /// At least one item is left.
    pub has_items: bool,
}

/// What a `backup_set.update` changes; `None`: left as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetUpdate {
    pub backup_set_id: String,
    pub name: Option<String>,
    /// `Some(None)` clears the label.
    pub label: Option<Option<String>>,
    pub retention_locked: Option<bool>,
}

impl SetUpdate {
    /// Whether it changes nothing (an update with nothing to do is refused at start).
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.label.is_none() && self.retention_locked.is_none()
    }
}

/// The runs that read set `set_id`, among `rows` of `(id, context)` of
/// active restores: by `context.params.backup_set_id` (named at start) or
/// `context.restore.backup_set_id` (resolved by the restore's parent).
fn restores_reading(set_id: &str, rows: Vec<(String, String)>) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for (id, context) in rows {
        let context: Value = serde_json::from_str(&context)
            .map_err(|e| StoreError::Corrupt(format!("context of run {id}: {e}")))?;
        let names = |pointer: &str| context.pointer(pointer).and_then(Value::as_str) == Some(set_id);
        if names("/params/backup_set_id") || names("/restore/backup_set_id") {
            out.push(id);
        }
    }
    Ok(out)
}

/// Active restores of the workspace, by a text match on the set's id first
/// (few rows: at most two active restores per target tenant), then exactly.
const ACTIVE_RESTORES: &str = "SELECT id, context FROM operation_runs WHERE workspace_id = $1 \
     AND type = 'backup_set.restore' AND status <> 'completed' AND context LIKE $2 ORDER BY id";

fn mentions(set_id: &str) -> String {
    format!("%{set_id}%")
}

/// The run writing a lifecycle artifact, checked: of type `family`, on a
/// tenant, naming `set_id` in its parameters. Its `(workspace, tenant)`.
async fn acting_run_in(
    tx: &mut Tx,
    run_id: &str,
    family: RunType,
    set_id: &str,
) -> Result<(String, String), StoreError> {
    let row: Option<(String, Option<String>, String, String)> = tx
        .fetch_optional(
            sql("SELECT workspace_id, tenant_id, type, context FROM operation_runs WHERE id = $1")
                .bind(run_id),
        )
        .await?;
    let Some((workspace_id, tenant_id, run_type, context)) = row else {
        return Err(StoreError::RunNotFound(run_id.to_owned()));
    };
    let Some(tenant_id) = tenant_id else {
        return Err(StoreError::ScopeMismatch {
            run_type: family,
            expected: "tenant",
        });
    };
    let context: Value = serde_json::from_str(&context)
        .map_err(|e| StoreError::Corrupt(format!("context of run {run_id}: {e}")))?;
    let named = context.pointer("/params/backup_set_id").and_then(Value::as_str);
    // Another family's run, or one started on another set, has no business
    // changing this set: refused as a set it does not have.
    if run_type != family.as_str() || named != Some(set_id) {
        return Err(StoreError::NotFound {
            what: "backup set of this run",
            id: set_id.to_owned(),
        });
    }
    Ok((workspace_id, tenant_id))
}

/// Marks set `set_id` deleted by `run_id` (its first deletion keeps the
/// mark), locking its row; refused when it is locked or an active restore
/// reads it.
async fn mark_deleted_in(
    tx: &mut Tx,
    run_id: &str,
    workspace_id: &str,
    tenant_id: &str,
    set_id: &str,
) -> Result<(), StoreError> {
    let now = tx.now();
    let marked = tx
        .execute(
            sql("UPDATE backup_sets SET deleted_at = COALESCE(deleted_at, $4), \
                 deleted_by_run_id = COALESCE(deleted_by_run_id, $5) \
                 WHERE id = $1 AND workspace_id = $2 AND tenant_id = $3 AND retention_locked = 0")
            .bind(set_id)
            .bind(workspace_id)
            .bind(tenant_id)
            .bind(now)
            .bind(run_id),
        )
        .await?;
    if marked == 0 {
        let locked: Option<(i64,)> = tx
            .fetch_optional(
                sql("SELECT retention_locked FROM backup_sets WHERE id = $1 AND workspace_id = $2 AND tenant_id = $3")
                    .bind(set_id)
                    .bind(workspace_id)
                    .bind(tenant_id),
            )
            .await?;
        return Err(match locked {
            Some(_) => StoreError::Conflict(format!(
                "backup set {set_id} is retention-locked: nothing of it is deleted until it is unlocked"
            )),
            None => StoreError::NotFound {
                what: "backup set",
                id: set_id.to_owned(),
            },
        });
    }
    // Inside the transaction that deletes: a restore that started reading
    // the set since the delete was planned keeps every item it may read.
    let rows: Vec<(String, String)> = tx
        .fetch_all(sql(ACTIVE_RESTORES).bind(workspace_id).bind(mentions(set_id)))
        .await?;
    if let Some(restore) = restores_reading(set_id, rows)?.first() {
        return Err(StoreError::Conflict(format!(
            "backup set {set_id} is read by active restore {restore}: nothing of it is deleted while it runs"
        )));
    }
    Ok(())
}

/// Deletes item `item_id` of set `set_id`, the artifact of a unit of
/// `backup_set.delete` run `run_id`, inside the unit's ledger transaction.
/// An item that is not (or no longer) in the set is refused: the unit is
/// then not counted as a deletion it did not do.
pub(crate) async fn delete_item_in(
    tx: &mut Tx,
    run_id: &str,
    set_id: &str,
    item_id: &str,
) -> Result<(), StoreError> {
    let (workspace_id, tenant_id) = acting_run_in(tx, run_id, RunType::BackupSetDelete, set_id).await?;
    mark_deleted_in(tx, run_id, &workspace_id, &tenant_id, set_id).await?;
    // The item's restore history stays, pointing at no item.
    tx.execute(
        sql("UPDATE restore_results SET backup_item_id = NULL WHERE backup_item_id = $1").bind(item_id),
    )
    .await?;
    let removed = tx
        .execute(
            sql("DELETE FROM backup_items WHERE id = $1 AND backup_set_id = $2")
                .bind(item_id)
                .bind(set_id),
        )
        .await?;
    if removed == 0 {
        return Err(StoreError::NotFound {
            what: "backup item",
            id: item_id.to_owned(),
        });
    }
    Ok(())
}

/// Marks set `set_id`, with no item left, deleted: the artifact of the close
/// of a `backup_set.delete` run that had no unit to do it.
pub(crate) async fn delete_set_in(tx: &mut Tx, run_id: &str, set_id: &str) -> Result<(), StoreError> {
    let (workspace_id, tenant_id) = acting_run_in(tx, run_id, RunType::BackupSetDelete, set_id).await?;
    mark_deleted_in(tx, run_id, &workspace_id, &tenant_id, set_id).await?;
    let (left,): (i64,) = tx
        .fetch_one(sql("SELECT COUNT(*) FROM backup_items WHERE backup_set_id = $1").bind(set_id))
        .await?;
    if left > 0 {
        return Err(StoreError::Conflict(format!(
            "backup set {set_id} still has {left} items: each is deleted by a unit of its own"
        )));
    }
    Ok(())
}

/// Applies `update`, the artifact of the close of `backup_set.update` run
/// `run_id`. A set that is gone or being deleted is refused (not found).
pub(crate) async fn update_set_in(tx: &mut Tx, run_id: &str, update: &SetUpdate) -> Result<(), StoreError> {
    let set_id = update.backup_set_id.as_str();
    let (workspace_id, tenant_id) = acting_run_in(tx, run_id, RunType::BackupSetUpdate, set_id).await?;
    let q = format!(
        "SELECT s.name, s.label, s.retention_locked, CAST(CASE WHEN {SET_IS_DELETED} THEN 1 ELSE 0 END AS BIGINT) \
         FROM backup_sets s WHERE s.id = $1 AND s.workspace_id = $2 AND s.tenant_id = $3{}",
        tx.dialect().for_update()
    );
    let row: Option<(String, Option<String>, i64, i64)> = tx
        .fetch_optional(sql_owned(q).bind(set_id).bind(&workspace_id).bind(&tenant_id))
        .await?;
    let Some((name, label, locked, _)) = row.filter(|(.., deleted)| *deleted == 0) else {
        return Err(StoreError::NotFound {
            what: "backup set",
            id: set_id.to_owned(),
        });
    };
    let name = update.name.clone().unwrap_or(name);
    let label = update.label.clone().unwrap_or(label);
    let locked = update.retention_locked.map_or(locked, i64::from);
    tx.execute(
        sql("UPDATE backup_sets SET name = $2, label = $3, retention_locked = $4 WHERE id = $1")
            .bind(set_id)
            .bind(name)
            .bind(label)
            .bind(locked),
    )
    .await?;
    Ok(())
}

impl Store {
    /// Backup set `id` of workspace `workspace_id` with its lifecycle (another
    /// workspace's set is `None`, as one that exists nowhere).
    pub async fn backup_set_lifecycle(
        &self,
        workspace_id: &str,
        id: &str,
    ) -> Result<Option<SetLifecycle>, StoreError> {
        let q = format!(
            "SELECT s.id, s.workspace_id, s.tenant_id, s.name, s.label, s.retention_locked, \
             CAST(CASE WHEN {SET_IS_COMPLETE} THEN 1 ELSE 0 END AS BIGINT) AS complete, \
             CAST(CASE WHEN {SET_IS_DELETED} THEN 1 ELSE 0 END AS BIGINT) AS deleted, \
             s.deleted_at, s.deleted_by_run_id, \
             (SELECT w.id FROM operation_runs w WHERE w.id = s.created_by_run_id AND w.status <> 'completed') \
               AS writing_run_id, \
             CAST(CASE WHEN EXISTS (SELECT 1 FROM backup_items i WHERE i.backup_set_id = s.id) THEN 1 ELSE 0 END \
               AS BIGINT) AS has_items \
             FROM backup_sets s WHERE s.id = $1 AND s.workspace_id = $2"
        );
        let Some(row) = self.pool.row(sql_owned(q).bind(id).bind(workspace_id)).await? else {
            return Ok(None);
        };
        Ok(Some(SetLifecycle {
            id: row.get("id")?,
            workspace_id: row.get("workspace_id")?,
            tenant_id: row.get("tenant_id")?,
            name: row.get("name")?,
            label: row.get("label")?,
            retention_locked: row.get::<i64>("retention_locked")? != 0,
            complete: row.get::<i64>("complete")? != 0,
            deleted: row.get::<i64>("deleted")? != 0,
            deleted_at: row.get("deleted_at")?,
            deleted_by_run_id: row.get("deleted_by_run_id")?,
            writing_run_id: row.get("writing_run_id")?,
            has_items: row.get::<i64>("has_items")? != 0,
        }))
    }

    /// The queued or running `backup_set.restore` runs of workspace
    /// `workspace_id` that read set `set_id` (named at start, or resolved by
    /// the restore's parent), by id.
    pub async fn active_restores_of_set(
        &self,
        workspace_id: &str,
        set_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String, String)> = self
            .pool
            .fetch_all(sql(ACTIVE_RESTORES).bind(workspace_id).bind(mentions(set_id)))
            .await?;
        restores_reading(set_id, rows)
    }

    /// The ids of the items of set `set_id` of workspace `workspace_id`, in order.
    pub async fn backup_item_ids(&self, workspace_id: &str, set_id: &str) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = self
            .pool
            .fetch_all(
                sql(
                    "SELECT i.id FROM backup_items i JOIN backup_sets s ON s.id = i.backup_set_id \
                     WHERE s.id = $1 AND s.workspace_id = $2 ORDER BY i.id",
                )
                .bind(set_id)
                .bind(workspace_id),
            )
            .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_deletion_mark_finds_the_delete_by_its_dedup_key() {
        // SET_IS_DELETED rebuilds a delete's `active_key` from the set's
        // columns; this is the key `create_run` stores for such a delete.
        let (ws, tenant, set) = (
            "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
            "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c",
            "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5d",
        );
        let key = RunType::BackupSetDelete.dedup_key(ws, Some(tenant), &json!({ "backup_set_id": set }));
        assert_eq!(key, format!("backup_set.delete|{ws}|{tenant}|[\"{set}\"]"));
        assert!(SET_IS_DELETED.contains(
            "d.active_key = 'backup_set.delete|' || s.workspace_id || '|' || s.tenant_id || '|[\"' || s.id || '\"]'"
        ));
        // Planned only: a delete still deciding (or refused) hides nothing.
        assert!(SET_IS_DELETED.contains("d.total IS NOT NULL"));
        assert!(SET_IS_COMPLETE.contains(SET_IS_DELETED));
    }

    #[test]
    fn restores_read_a_set_by_name_or_by_plan() {
        let rows = vec![
            (
                "a".to_owned(),
                json!({"params": {"backup_set_id": "s"}}).to_string(),
            ),
            (
                "b".to_owned(),
                json!({"params": {}, "restore": {"backup_set_id": "s"}}).to_string(),
            ),
            (
                "c".to_owned(),
                json!({"params": {"item_ids": ["s"]}, "restore": {"backup_set_id": "t"}}).to_string(),
            ),
            (
                "d".to_owned(),
                json!({"params": {"backup_set_id": "s2"}}).to_string(),
            ),
        ];
        assert_eq!(restores_reading("s", rows).unwrap(), vec!["a", "b"]);
        let broken = vec![("x".to_owned(), "{".to_owned())];
        assert!(matches!(
            restores_reading("s", broken),
            Err(StoreError::Corrupt(_))
        ));
    }
}

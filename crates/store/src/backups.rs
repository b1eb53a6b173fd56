//! Backup sets and items: the artifacts of `backup_set.add_policies`. An item
//! is written in the same transaction as its unit job's finish, so a unit is
//! counted if and only if its item landed.

use crate::db::{Tx, sql};
use crate::jobs::{Fence, check_fence};
use crate::{Store, StoreError, new_id};
use serde_json::Value;

/// A policy captured into a backup set.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupItem {
    pub policy_type: String,
    pub external_id: String,
    pub display_name: String,
    /// The policy whole, as read.
    pub payload: Value,
    /// What its references point to: directory id → `"<kind>:<display name>"`.
    pub refs: Value,
    /// SHA-256 of its normalized content (`opsledger_core::normalize::content_hash`).
    pub content_sha256: String,
}

/// The condition of [`SET_IS_DELETED`], as a literal (shared by the consts below).
macro_rules! set_is_deleted {
    () => {
        "(s.deleted_at IS NOT NULL OR EXISTS (SELECT 1 FROM operation_runs d \
         WHERE d.active_key = 'backup_set.delete|' || s.workspace_id || '|' || s.tenant_id || '|[\"' || s.id || '\"]' \
         AND d.total IS NOT NULL))"
    };
}

/// When a backup set is **gone** (deleted, or being deleted), as a SQL
/// condition on `backup_sets s`: its tombstone is set (the first item a
/// `backup_set.delete` removed set it, migration 0018), or an active
/// `backup_set.delete` of it has planned its units. The second part is the
/// delete's own planning write — `total` and the unit jobs, one fenced
/// transaction — found through the run's dedup key (its `active_key`,
/// [`opsledger_core::RunType::dedup_key`]: type, workspace, tenant, set id),
/// so from the moment a delete commits to its plan no read offers the set,
/// before any item is removed. A delete that ends without removing anything
/// (refused, cancelled, every unit failed) leaves the set as it was.
pub const SET_IS_DELETED: &str = set_is_deleted!();

/// When a backup set is **complete** (every planned item captured), as a SQL
/// condition on `backup_sets s`: the run that created it closed `succeeded`
/// (its bulk outcome says every planned unit landed), and it is not gone
/// ([`SET_IS_DELETED`]: a set losing its items is complete no more). Derived,
/// never stored, so it cannot disagree with the runs; the one definition
/// every read uses.
pub const SET_IS_COMPLETE: &str = concat!(
    "(EXISTS (SELECT 1 FROM operation_runs r WHERE r.id = s.created_by_run_id \
     AND r.status = 'completed' AND r.outcome = 'succeeded') AND NOT ",
    set_is_deleted!(),
    ")"
);

/// The backup set a run created (unique per run, see migration 0003).
const SET_OF_RUN: &str = "SELECT id FROM backup_sets WHERE created_by_run_id = $1";

/// Writes `item` into `run_id`'s own backup set. The unit ledger step calls
/// this for a unit newly recorded with
/// [`crate::artifacts::UnitArtifact::BackupItem`]; a run without a backup set
/// refuses the unit ([`StoreError::NotFound`]).
pub(crate) async fn insert_item_in(tx: &mut Tx, run_id: &str, item: &BackupItem) -> Result<(), StoreError> {
    let set: Option<(String,)> = tx.fetch_optional(sql(SET_OF_RUN).bind(run_id)).await?;
    let Some((set_id,)) = set else {
        return Err(StoreError::NotFound {
            what: "backup set of run",
            id: run_id.to_owned(),
        });
    };
    let payload = serde_json::to_string(&item.payload).expect("json");
    tx.execute(
        sql(
            "INSERT INTO backup_items (id, backup_set_id, policy_type, external_id, display_name, payload, \
             payload_sha256, captured_by_run_id, captured_at, refs) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (backup_set_id, policy_type, external_id) DO NOTHING",
        )
        .bind(new_id())
        .bind(set_id.as_str())
        .bind(&item.policy_type)
        .bind(&item.external_id)
        .bind(&item.display_name)
        .bind(payload.as_str())
        .bind(&item.content_sha256)
        .bind(run_id)
        .bind(tx.now())
        .bind(serde_json::to_string(&item.refs).expect("json")),
    )
    .await?;
    Ok(())
}

impl Store {
    /// The backup set created by `run_id`, creating it on first call
    /// (idempotent, so a retried parent does not create a second set);
    /// fenced by the parent job's lease.
    pub(crate) async fn backup_set_for_run(
        &self,
        fence: &Fence,
        run_id: &str,
        workspace_id: &str,
        tenant_id: &str,
        name: &str,
        directory: Option<&Value>,
    ) -> Result<String, StoreError> {
        let mut tx = self.begin_write().await?;
        check_fence(&mut tx, fence, run_id).await?;
        // Insert-if-absent, then read: two executions of one parent (a
        // rescued lease) race on the unique index, not on a read.
        tx.execute(
            sql(
                "INSERT INTO backup_sets (id, workspace_id, tenant_id, name, created_by_run_id, created_at, directory) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (created_by_run_id) DO NOTHING",
            )
            .bind(new_id())
            .bind(workspace_id)
            .bind(tenant_id)
            .bind(name)
            .bind(run_id)
            .bind(self.now_ms())
            .bind(directory.map(|d| serde_json::to_string(d).expect("json"))),
        )
        .await?;
        let (id,): (String,) = tx.fetch_one(sql(SET_OF_RUN).bind(run_id)).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The backup set created by `run_id`, if any (a read).
    pub async fn backup_set_of_run(&self, run_id: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> = self.pool.fetch_optional(sql(SET_OF_RUN).bind(run_id)).await?;
        Ok(row.map(|(id,)| id))
    }

    /// The backup set created by `run_id` and the directory stored with it.
    pub async fn backup_set_directory_of_run(
        &self,
        run_id: &str,
    ) -> Result<Option<(String, Option<Value>)>, StoreError> {
        let row: Option<(String, Option<String>)> = self
            .pool
            .fetch_optional(
                sql("SELECT id, directory FROM backup_sets WHERE created_by_run_id = $1").bind(run_id),
            )
            .await?;
        Ok(row.map(|(id, d)| (id, d.and_then(|d| serde_json::from_str(&d).ok()))))
    }

    /// `(external_id, refs, payload_sha256)` of every item of a backup set, by type and id.
    pub async fn backup_item_hashes(
        &self,
        backup_set_id: &str,
    ) -> Result<Vec<(String, Value, String)>, StoreError> {
        let rows: Vec<(String, String, String)> = self
            .pool
            .fetch_all(
                sql(
                    "SELECT external_id, refs, payload_sha256 FROM backup_items WHERE backup_set_id = $1 \
                     ORDER BY policy_type, external_id",
                )
                .bind(backup_set_id),
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, refs, sha)| (id, serde_json::from_str(&refs).unwrap_or(Value::Null), sha))
            .collect())
    }

    /// Number of items in a backup set.
    pub async fn count_backup_items(&self, backup_set_id: &str) -> Result<u64, StoreError> {
        let (n,): (i64,) = self
            .pool
            .fetch_one(sql("SELECT COUNT(*) FROM backup_items WHERE backup_set_id = $1").bind(backup_set_id))
            .await?;
        Ok(n as u64)
    }

    /// `(policy_type, external_id)` of every inventory item of a tenant, ordered.
    pub async fn inventory_refs(&self, tenant_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self
            .pool
            .fetch_all(
                sql(
                    "SELECT policy_type, external_id FROM inventory_items WHERE tenant_id = $1 \
                     ORDER BY policy_type, external_id",
                )
                .bind(tenant_id),
            )
            .await?)
    }
}

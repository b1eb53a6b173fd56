//! Inventory items: the artifacts of `inventory.sync`. Items of one policy
//! type are written in the same transaction as that type's unit, so a type is
//! counted as covered if and only if its items landed.

use crate::db::{Tx, sql, sql_built};
use crate::{Store, StoreError, new_id};
use serde_json::Value;
use std::collections::BTreeMap;

/// Rows per multi-row upsert (10 bind parameters each).
const ITEM_UPSERT_CHUNK: usize = 500;

/// One policy as read from a provider.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemSnapshot {
    pub external_id: String,
    pub display_name: String,
    pub payload: Value,
}

/// Upserts the items of one policy type of `run_id`'s tenant, marking them
/// last seen by the run (the unit ledger step calls this for a unit carrying
/// [`crate::artifacts::UnitArtifact::InventoryItems`]).
pub(crate) async fn upsert_items_in(
    tx: &mut Tx,
    run_id: &str,
    policy_type: &str,
    items: &[ItemSnapshot],
    whole_type: bool,
) -> Result<(), StoreError> {
    let scope: Option<(String, Option<String>)> = tx
        .fetch_optional(sql("SELECT workspace_id, tenant_id FROM operation_runs WHERE id = $1").bind(run_id))
        .await?;
    let (workspace_id, tenant_id) = match scope {
        None => return Err(StoreError::RunNotFound(run_id.to_owned())),
        Some((w, Some(t))) => (w, t),
        Some((_, None)) => {
            return Err(StoreError::Corrupt(format!(
                "run {run_id} is workspace-level and cannot hold inventory items"
            )));
        }
    };
    let scope = ItemScope {
        workspace_id: &workspace_id,
        tenant_id: &tenant_id,
        policy_type,
    };
    upsert_scoped_in(tx, run_id, scope, items, whole_type).await
}

/// Where items belong.
#[derive(Debug, Clone, Copy)]
pub struct ItemScope<'a> {
    pub workspace_id: &'a str,
    pub tenant_id: &'a str,
    pub policy_type: &'a str,
}

/// Every item is linked to this run as the run that last saw it
/// (`last_seen_operation_run_id`); with `whole_type` (an inventory sync's
/// unit) also as the run that last read its whole type
/// (`type_read_by_run_id`, that sync's reconciliation proof), which a
/// `policy.sync` re-reading one policy leaves alone.
async fn upsert_scoped_in(
    tx: &mut Tx,
    run_id: &str,
    scope: ItemScope<'_>,
    items: &[ItemSnapshot],
    whole_type: bool,
) -> Result<(), StoreError> {
    // One row per external id: a provider that pages badly may repeat one.
    let mut by_id: BTreeMap<&str, &ItemSnapshot> = BTreeMap::new();
    for item in items {
        by_id.entry(item.external_id.as_str()).or_insert(item);
    }
    let rows: Vec<(&ItemSnapshot, String, String)> = by_id
        .into_values()
        .map(|i| {
            let payload = serde_json::to_string(&i.payload).expect("json");
            // The content hash of the normalized policy (no directory here:
            // references stay ids), so a re-read that changed nothing but
            // timestamps, annotations or order keeps its hash.
            let digest = opsledger_core::normalize::content_hash(&i.payload, &Default::default());
            (i, payload, digest)
        })
        .collect();
    let now = tx.now();
    for chunk in rows.chunks(ITEM_UPSERT_CHUNK) {
        let mut stmt = sql_built(
            tx.dialect(),
            "INSERT INTO inventory_items (id, workspace_id, tenant_id, policy_type, external_id, display_name, \
             payload, payload_sha256, first_seen_at, last_seen_at, last_seen_operation_run_id, \
             type_read_by_run_id) VALUES ",
        );
        for (i, (item, payload, digest)) in chunk.iter().enumerate() {
            stmt.push(if i == 0 { "(" } else { ", (" });
            stmt.push_bind(new_id())
                .push(", ")
                .push_bind(scope.workspace_id)
                .push(", ")
                .push_bind(scope.tenant_id)
                .push(", ")
                .push_bind(scope.policy_type)
                .push(", ")
                .push_bind(item.external_id.as_str())
                .push(", ")
                .push_bind(item.display_name.as_str())
                .push(", ")
                .push_bind(payload.as_str())
                .push(", ")
                .push_bind(digest.as_str())
                .push(", ")
                .push_bind(now)
                .push(", ")
                .push_bind(now)
                .push(", ")
                .push_bind(run_id)
                .push(", ")
                .push_bind(whole_type.then_some(run_id))
                .push(")");
        }
        stmt.push(
            " ON CONFLICT (tenant_id, policy_type, external_id) DO UPDATE SET \
             display_name = excluded.display_name, payload = excluded.payload, \
             payload_sha256 = excluded.payload_sha256, last_seen_at = excluded.last_seen_at, \
             last_seen_operation_run_id = excluded.last_seen_operation_run_id",
        );
        if whole_type {
            stmt.push(", type_read_by_run_id = excluded.type_read_by_run_id");
        }
        tx.execute(stmt).await?;
    }
    Ok(())
}

impl Store {
    /// Test fixtures: items of any scope (another tenant's, to test that
    /// reconciliation refuses proof of the wrong scope) upserted as last seen
    /// by `run_id`, with `unit` recorded, in one transaction.
    #[cfg(feature = "test-support")]
    pub async fn record_inventory_unit(
        &self,
        fence: Option<&crate::jobs::Fence>,
        run_id: &str,
        scope: ItemScope<'_>,
        items: &[ItemSnapshot],
        unit: crate::UnitRecord,
    ) -> Result<crate::RecordSummary, StoreError> {
        let mut tx = self.begin_write().await?;
        if let Some(fence) = fence {
            crate::jobs::check_fence(&mut tx, fence, run_id).await?;
        }
        upsert_scoped_in(&mut tx, run_id, scope, items, true).await?;
        let summary = crate::ledger::record_units_in(&mut tx, run_id, std::slice::from_ref(&unit)).await?;
        tx.commit().await?;
        Ok(summary)
    }

    /// How many items of each policy type were last seen by `run_id`.
    pub async fn items_last_seen_by(&self, run_id: &str) -> Result<BTreeMap<String, u64>, StoreError> {
        let rows: Vec<(String, i64)> = self
            .pool
            .fetch_all(
                sql(
                    "SELECT policy_type, COUNT(*) FROM inventory_items WHERE last_seen_operation_run_id = $1 \
                     GROUP BY policy_type",
                )
                .bind(run_id),
            )
            .await?;
        Ok(rows.into_iter().map(|(t, n)| (t, n as u64)).collect())
    }

    /// One inventory item of a tenant: its payload as last read, and the run
    /// that last saw it.
    pub async fn inventory_item(
        &self,
        tenant_id: &str,
        policy_type: &str,
        external_id: &str,
    ) -> Result<Option<(Value, String)>, StoreError> {
        let row: Option<(String, String)> = self
            .pool
            .fetch_optional(
                sql("SELECT payload, last_seen_operation_run_id FROM inventory_items \
                     WHERE tenant_id = $1 AND policy_type = $2 AND external_id = $3")
                .bind(tenant_id)
                .bind(policy_type)
                .bind(external_id),
            )
            .await?;
        row.map(|(payload, run)| {
            serde_json::from_str(&payload)
                .map(|p| (p, run))
                .map_err(|e| StoreError::Corrupt(format!("inventory item payload: {e}")))
        })
        .transpose()
    }

    /// Number of inventory items of a tenant.
    pub async fn count_inventory_items(&self, tenant_id: &str) -> Result<u64, StoreError> {
        let (n,): (i64,) = self
            .pool
            .fetch_one(sql("SELECT COUNT(*) FROM inventory_items WHERE tenant_id = $1").bind(tenant_id))
            .await?;
        Ok(n as u64)
    }
}

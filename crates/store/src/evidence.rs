//! Evidence snapshots: what an `evidence.snapshot.generate` run reads (the
//! evidence sources of its tenant), the snapshot it plans and seals (its
//! proof, by causal link: `created_by_run_id`), and the reads of the API.
//!
//! A snapshot's items are planned whole — key, source, payload, order — in
//! one fenced transaction when the run starts, so a retried run records the
//! very items its first attempt planned, however the tenant changed since.
//! Each item's SHA-256 is then written by its unit as a unit artifact
//! ([`crate::artifacts::UnitArtifact::EvidenceItem`]), committed with the
//! unit's ledger row exactly once; the write recomputes the hash from the
//! stored payload, so no item is recorded with a hash it does not have.
//! The signature is computed by the family (the key is never here) and
//! stored by [`Store::seal_evidence_snapshot_fenced`] with the run's
//! context patch, once every item is recorded.
//!
//! Reads for the API take a [`Visibility`]: a snapshot of a tenant the
//! caller may not see is `None` (a 404).

use crate::backups::{SET_IS_COMPLETE, SET_IS_DELETED};
use crate::db::{Tx, sql, sql_built, sql_owned};
use crate::jobs::{Fence, check_fence};
use crate::runs::ContextPatch;
use crate::{Store, StoreError, Visibility, new_id};
use opsledger_core::evidence::{
    AssignmentTally, BackupFact, CONDITIONAL_ACCESS, CaPolicy, CompareFact, InventoryRun, InventoryType,
    Item, MAX_ITEMS, Source, Sources, StoredItem, StoredSnapshot, UNASSIGNED_TYPES, assignment_of, ca_state,
    item_sha256,
};
use serde_json::Value;
use std::collections::BTreeMap;

/// Items per page of the API.
pub const ITEMS_PER_PAGE: u32 = 500;
/// Inventory payloads read at once while tallying assignment coverage.
const PAYLOADS_PER_READ: i64 = 500;
/// Items inserted per statement when a snapshot is planned.
const ITEMS_PER_INSERT: usize = 200;

/// A snapshot without its items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotHead {
    pub id: String,
    pub workspace_id: String,
    pub tenant_id: String,
    pub created_by_run_id: String,
    /// ms since the Unix epoch; signed with the items.
    pub generated_at: i64,
    pub item_count: u64,
    /// HMAC-SHA256 (hex) over the items as planned, written with the plan.
    pub plan_signature: String,
    /// HMAC-SHA256 (hex), set with `sealed_at`.
    pub signature: Option<String>,
    pub sealed_at: Option<i64>,
}

/// An item as stored, with its position and when its unit recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotItem {
    pub seq: i64,
    pub item: StoredItem,
    pub recorded_at: Option<i64>,
}

/// The artifact of one unit: item `item_key` of `snapshot_id` recorded
/// with `sha256` (which must be the hash of its planned content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedItem {
    pub snapshot_id: String,
    pub item_key: String,
    pub sha256: String,
}

/// Signs a plan: the snapshot's signed fields and its planned items.
pub type PlanSigner<'a> = &'a (dyn Fn(opsledger_core::evidence::Signed<'_>, &[Item]) -> String + Send + Sync);

type SnapshotRow = (
    String,
    String,
    String,
    String,
    i64,
    i64,
    String,
    Option<String>,
    Option<i64>,
);
const SNAPSHOT_COLUMNS: &str = "id, workspace_id, tenant_id, created_by_run_id, generated_at, item_count, plan_signature, signature, sealed_at";

fn head(
    (id, workspace_id, tenant_id, run, generated_at, count, plan_signature, signature, sealed_at): SnapshotRow,
) -> SnapshotHead {
    SnapshotHead {
        plan_signature,
        id,
        workspace_id,
        tenant_id,
        created_by_run_id: run,
        generated_at,
        item_count: count.max(0) as u64,
        signature,
        sealed_at,
    }
}

type ItemRow = (i64, String, String, String, Option<String>, Option<i64>);
const ITEM_COLUMNS: &str = "seq, item_key, source, payload, sha256, recorded_at";

fn item((seq, key, source, payload, sha256, recorded_at): ItemRow) -> SnapshotItem {
    SnapshotItem {
        seq,
        item: StoredItem {
            key,
            source,
            // Text that is not JSON is no item a run wrote: verification
            // reports it altered rather than the read failing.
            payload: serde_json::from_str(&payload).ok(),
            sha256,
        },
        recorded_at,
    }
}

fn visible(vis: &Visibility, tenant_id: &str) -> bool {
    vis.tenants
        .as_ref()
        .is_none_or(|t| t.iter().any(|v| v == tenant_id))
}

type BackupRow = (String, String, i64, i64, i64);
type CompareRow = (String, i64, i64, Option<String>, Option<String>, String);

fn backup((id, name, created_at, complete, items): BackupRow) -> BackupFact {
    BackupFact {
        id,
        name,
        created_at,
        complete: complete != 0,
        items: items.max(0) as u64,
    }
}

/// Records one item of run `run_id`'s unsealed snapshot (the unit's
/// artifact): the unit is the item (`unit_key == item_key`), the item was
/// planned and not yet recorded, and `sha256` is the hash of its planned
/// content — anything else is refused and the unit is not recorded.
pub(crate) async fn record_item_in(
    tx: &mut Tx,
    run_id: &str,
    unit_key: Option<&str>,
    r: &RecordedItem,
) -> Result<(), StoreError> {
    if unit_key != Some(r.item_key.as_str()) {
        return Err(StoreError::Corrupt(format!(
            "evidence item `{}` must be recorded by its own unit",
            r.item_key
        )));
    }
    let row: Option<(String, String, Option<String>)> = tx
        .fetch_optional(
            sql(
                "SELECT i.source, i.payload, i.sha256 FROM evidence_snapshot_items i \
                 JOIN evidence_snapshots s ON s.id = i.snapshot_id \
                 WHERE i.snapshot_id = $1 AND i.item_key = $2 AND s.created_by_run_id = $3 \
                 AND s.sealed_at IS NULL",
            )
            .bind(r.snapshot_id.as_str())
            .bind(r.item_key.as_str())
            .bind(run_id),
        )
        .await?;
    let Some((source, payload, recorded)) = row else {
        return Err(StoreError::NotFound {
            what: "planned evidence item",
            id: format!("{}/{}", r.snapshot_id, r.item_key),
        });
    };
    if recorded.is_some() {
        return Err(StoreError::Corrupt(format!(
            "evidence item `{}` is recorded already",
            r.item_key
        )));
    }
    let source = Source::parse(&source)
        .ok_or_else(|| StoreError::Corrupt(format!("evidence item source `{source}`")))?;
    let payload: Value = serde_json::from_str(&payload)
        .map_err(|e| StoreError::Corrupt(format!("evidence item `{}` payload: {e}", r.item_key)))?;
    if item_sha256(&r.item_key, source, &payload) != r.sha256 {
        return Err(StoreError::Corrupt(format!(
            "evidence item `{}`: the hash recorded is not the hash of its planned content",
            r.item_key
        )));
    }
    tx.execute(
        sql(
            "UPDATE evidence_snapshot_items SET sha256 = $1, recorded_at = $2 \
             WHERE snapshot_id = $3 AND item_key = $4 AND sha256 IS NULL",
        )
        .bind(r.sha256.as_str())
        .bind(tx.now())
        .bind(r.snapshot_id.as_str())
        .bind(r.item_key.as_str()),
    )
    .await?;
    Ok(())
}

impl Store {
    /// The evidence sources of tenant `tenant_id` of workspace
    /// `workspace_id`, read now: inventory per type, the newest backup set
    /// and the newest complete one, the newest compare, the Conditional
    /// Access policies and assignment coverage per type. Bounded: at most
    /// [`MAX_ITEMS`]` + 1` Conditional Access policies are read (more can
    /// never be a snapshot), payloads [`PAYLOADS_PER_READ`] at a time.
    pub async fn evidence_sources(&self, workspace_id: &str, tenant_id: &str) -> Result<Sources, StoreError> {
        let inventory: Vec<(String, i64, Option<String>, Option<i64>)> = self
            .pool
            .fetch_all(
                sql(
                    "SELECT policy_type, COUNT(*), MAX(type_read_by_run_id), MAX(last_seen_at) \
                     FROM inventory_items WHERE workspace_id = $1 AND tenant_id = $2 \
                     GROUP BY policy_type ORDER BY policy_type",
                )
                .bind(workspace_id)
                .bind(tenant_id),
            )
            .await?;
        let inventory = inventory
            .into_iter()
            .map(|(policy_type, n, read_by_run_id, last_seen_at)| InventoryType {
                policy_type,
                items: n.max(0) as u64,
                read_by_run_id,
                last_seen_at,
            })
            .collect();

        let sync: Option<(String, Option<i64>, String)> = self
            .pool
            .fetch_optional(
                sql("SELECT id, completed_at, context FROM operation_runs \
                     WHERE workspace_id = $1 AND tenant_id = $2 AND type = 'inventory.sync' \
                     AND status = 'completed' ORDER BY completed_at DESC, id DESC LIMIT 1")
                .bind(workspace_id)
                .bind(tenant_id),
            )
            .await?;
        let latest_inventory_sync = sync.map(|(run_id, completed_at, context)| {
            let context: Value = serde_json::from_str(&context).unwrap_or(Value::Null);
            let coverage = context
                .pointer("/inventory/coverage")
                .and_then(Value::as_object)
                .map(|types| {
                    types
                        .iter()
                        .filter_map(|(t, c)| Some((t.clone(), c.get("status")?.as_str()?.to_owned())))
                        .collect()
                })
                .unwrap_or_default();
            InventoryRun {
                run_id,
                completed_at,
                coverage,
            }
        });

        let sets = |complete_only: bool| {
            format!(
                "SELECT s.id, s.name, s.created_at, \
                 CAST(CASE WHEN {SET_IS_COMPLETE} THEN 1 ELSE 0 END AS BIGINT), \
                 (SELECT COUNT(*) FROM backup_items i WHERE i.backup_set_id = s.id) \
                 FROM backup_sets s WHERE s.workspace_id = $1 AND s.tenant_id = $2 AND NOT {SET_IS_DELETED}{} \
                 ORDER BY s.created_at DESC, s.id DESC LIMIT 1",
                if complete_only {
                    format!(" AND {SET_IS_COMPLETE}")
                } else {
                    String::new()
                }
            )
        };
        let latest_backup: Option<BackupRow> = self
            .pool
            .fetch_optional(sql_owned(sets(false)).bind(workspace_id).bind(tenant_id))
            .await?;
        let latest_complete: Option<BackupRow> = self
            .pool
            .fetch_optional(sql_owned(sets(true)).bind(workspace_id).bind(tenant_id))
            .await?;

        let compare: Option<CompareRow> = self
            .pool
            .fetch_optional(
                sql(
                    "SELECT run_id, recorded_at, findings, baseline_snapshot_id, backup_set_id, summary \
                     FROM baseline_compares WHERE workspace_id = $1 AND tenant_id = $2 \
                     ORDER BY recorded_at DESC, run_id DESC LIMIT 1",
                )
                .bind(workspace_id)
                .bind(tenant_id),
            )
            .await?;

        let ca: Vec<(String, String, String)> = self
            .pool
            .fetch_all(
                sql("SELECT external_id, display_name, payload FROM inventory_items \
                     WHERE workspace_id = $1 AND tenant_id = $2 AND policy_type = $3 \
                     ORDER BY external_id LIMIT $4")
                .bind(workspace_id)
                .bind(tenant_id)
                .bind(CONDITIONAL_ACCESS)
                .bind(MAX_ITEMS as i64 + 1),
            )
            .await?;
        let conditional_access = ca
            .into_iter()
            .map(|(external_id, display_name, payload)| CaPolicy {
                external_id,
                display_name,
                state: serde_json::from_str::<Value>(&payload)
                    .ok()
                    .and_then(|p| ca_state(&p)),
            })
            .collect();

        let mut assignments: BTreeMap<String, AssignmentTally> = BTreeMap::new();
        let mut after = String::new();
        loop {
            let page: Vec<(String, String, String)> = self
                .pool
                .fetch_all(
                    sql("SELECT id, policy_type, payload FROM inventory_items \
                         WHERE workspace_id = $1 AND tenant_id = $2 AND id > $3 ORDER BY id LIMIT $4")
                    .bind(workspace_id)
                    .bind(tenant_id)
                    .bind(after.as_str())
                    .bind(PAYLOADS_PER_READ),
                )
                .await?;
            let full = page.len() as i64 == PAYLOADS_PER_READ;
            for (id, policy_type, payload) in page {
                if !UNASSIGNED_TYPES.contains(&policy_type.as_str()) {
                    let a = serde_json::from_str::<Value>(&payload)
                        .map(|p| assignment_of(&p))
                        .unwrap_or(opsledger_core::evidence::Assignment::Unknown);
                    assignments.entry(policy_type).or_default().add(a);
                }
                after = id;
            }
            if !full {
                break;
            }
        }

        Ok(Sources {
            inventory,
            latest_inventory_sync,
            latest_backup: latest_backup.map(backup),
            latest_complete_backup: latest_complete.map(backup),
            latest_compare: compare.map(
                |(run_id, recorded_at, findings, baseline_snapshot_id, backup_set_id, summary)| {
                    let findings = findings.max(0) as u64;
                    let summary = serde_json::from_str::<Value>(&summary).unwrap_or(Value::Null);
                    CompareFact {
                        run_id,
                        recorded_at,
                        findings,
                        drift_found: opsledger_core::baseline::recorded_drift_found(findings, &summary),
                        baseline_snapshot_id,
                        backup_set_id,
                    }
                },
            ),
            conditional_access,
            assignments,
        })
    }

    /// The snapshot of run `run_id`, made on first call with `items` planned
    /// in order and `plan_signer`'s signature of them (a retried run gets
    /// its first plan back, whatever `items` it passes now); fenced.
    pub(crate) async fn evidence_snapshot_for_run_fenced(
        &self,
        fence: &Fence,
        run_id: &str,
        items: &[Item],
        plan_signer: PlanSigner<'_>,
    ) -> Result<SnapshotHead, StoreError> {
        opsledger_core::evidence::check_items(items).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut tx = self.begin_write().await?;
        check_fence(&mut tx, fence, run_id).await?;
        let q = format!("SELECT {SNAPSHOT_COLUMNS} FROM evidence_snapshots WHERE created_by_run_id = $1");
        if let Some(row) = tx
            .fetch_optional::<SnapshotRow>(sql_owned(q.clone()).bind(run_id))
            .await?
        {
            tx.commit().await?;
            return Ok(head(row));
        }
        let (workspace_id, tenant_id): (String, Option<String>) = tx
            .fetch_one(sql("SELECT workspace_id, tenant_id FROM operation_runs WHERE id = $1").bind(run_id))
            .await?;
        let tenant_id =
            tenant_id.ok_or_else(|| StoreError::Corrupt(format!("run {run_id} has no tenant")))?;
        let id = new_id();
        let generated_at = tx.now();
        let plan_signature = plan_signer(
            opsledger_core::evidence::Signed {
                snapshot_id: &id,
                workspace_id: &workspace_id,
                tenant_id: &tenant_id,
                generated_at,
            },
            items,
        );
        tx.execute(
            sql(
                "INSERT INTO evidence_snapshots (id, workspace_id, tenant_id, created_by_run_id, generated_at, \
                 item_count, plan_signature) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(id.as_str())
            .bind(workspace_id.as_str())
            .bind(tenant_id.as_str())
            .bind(run_id)
            .bind(generated_at)
            .bind(items.len() as i64)
            .bind(plan_signature.as_str()),
        )
        .await?;
        for (c, chunk) in items.chunks(ITEMS_PER_INSERT).enumerate() {
            let mut stmt = sql_built(
                tx.dialect(),
                "INSERT INTO evidence_snapshot_items (snapshot_id, seq, item_key, source, payload) VALUES ",
            );
            for (i, it) in chunk.iter().enumerate() {
                stmt.push(if i == 0 { "(" } else { ", (" })
                    .push_bind(id.as_str())
                    .push(", ")
                    .push_bind((c * ITEMS_PER_INSERT + i) as i64)
                    .push(", ")
                    .push_bind(it.key.as_str())
                    .push(", ")
                    .push_bind(it.source.as_str())
                    .push(", ")
                    .push_bind(serde_json::to_string(&it.payload).expect("json"))
                    .push(")");
            }
            tx.execute(stmt).await?;
        }
        let row: SnapshotRow = tx.fetch_one(sql_owned(q).bind(run_id)).await?;
        tx.commit().await?;
        Ok(head(row))
    }

    /// Seals run `run_id`'s snapshot with `signature` and patches the run's
    /// context, in one fenced transaction, once every planned item is
    /// recorded; sealing a sealed snapshot again changes nothing.
    pub(crate) async fn seal_evidence_snapshot_fenced(
        &self,
        fence: &Fence,
        run_id: &str,
        signature: &str,
        patches: &[ContextPatch],
    ) -> Result<SnapshotHead, StoreError> {
        let mut tx = self.begin_write().await?;
        check_fence(&mut tx, fence, run_id).await?;
        let q = format!("SELECT {SNAPSHOT_COLUMNS} FROM evidence_snapshots WHERE created_by_run_id = $1");
        let Some(row) = tx
            .fetch_optional::<SnapshotRow>(sql_owned(q.clone()).bind(run_id))
            .await?
        else {
            return Err(StoreError::NotFound {
                what: "evidence snapshot of run",
                id: run_id.to_owned(),
            });
        };
        let snapshot = head(row);
        if snapshot.sealed_at.is_some() {
            tx.commit().await?;
            return Ok(snapshot);
        }
        let (items, recorded): (i64, i64) = tx
            .fetch_one(
                sql("SELECT COUNT(*), COUNT(sha256) FROM evidence_snapshot_items WHERE snapshot_id = $1")
                    .bind(snapshot.id.as_str()),
            )
            .await?;
        if items as u64 != snapshot.item_count || recorded != items {
            return Err(StoreError::Corrupt(format!(
                "evidence snapshot {} has {recorded} of {} items recorded: it cannot be sealed",
                snapshot.id, snapshot.item_count
            )));
        }
        tx.execute(
            sql("UPDATE evidence_snapshots SET signature = $1, sealed_at = $2 WHERE id = $3 AND sealed_at IS NULL")
                .bind(signature)
                .bind(tx.now())
                .bind(snapshot.id.as_str()),
        )
        .await?;
        crate::runs::patch_context_in(&mut tx, run_id, patches).await?;
        let row: SnapshotRow = tx.fetch_one(sql_owned(q).bind(run_id)).await?;
        tx.commit().await?;
        Ok(head(row))
    }

    /// The snapshots linked to run `run_id` (its proof: at most one).
    pub async fn evidence_snapshots_of_run(&self, run_id: &str) -> Result<Vec<SnapshotHead>, StoreError> {
        let q = format!("SELECT {SNAPSHOT_COLUMNS} FROM evidence_snapshots WHERE created_by_run_id = $1");
        let rows: Vec<SnapshotRow> = self.pool.fetch_all(sql_owned(q).bind(run_id)).await?;
        Ok(rows.into_iter().map(head).collect())
    }

    /// Snapshot `id`, whatever its workspace: for a proof read, which must
    /// see a snapshot of another scope to refuse it.
    pub async fn evidence_snapshot_by_id(&self, id: &str) -> Result<Option<SnapshotHead>, StoreError> {
        let q = format!("SELECT {SNAPSHOT_COLUMNS} FROM evidence_snapshots WHERE id = $1");
        let row: Option<SnapshotRow> = self.pool.fetch_optional(sql_owned(q).bind(id)).await?;
        Ok(row.map(head))
    }

    /// Snapshot `id` of workspace `workspace_id`.
    pub async fn evidence_snapshot(
        &self,
        workspace_id: &str,
        id: &str,
    ) -> Result<Option<SnapshotHead>, StoreError> {
        Ok(self
            .evidence_snapshot_by_id(id)
            .await?
            .filter(|s| s.workspace_id == workspace_id))
    }

    /// Snapshot `id` of the workspace, if `vis` may see its tenant.
    pub async fn visible_evidence_snapshot(
        &self,
        vis: &Visibility,
        id: &str,
    ) -> Result<Option<SnapshotHead>, StoreError> {
        Ok(self
            .evidence_snapshot(&vis.workspace_id, id)
            .await?
            .filter(|s| visible(vis, &s.tenant_id)))
    }

    /// Every item of a snapshot, in order (at most [`MAX_ITEMS`] exist).
    pub async fn evidence_items(&self, snapshot_id: &str) -> Result<Vec<SnapshotItem>, StoreError> {
        let q = format!(
            "SELECT {ITEM_COLUMNS} FROM evidence_snapshot_items WHERE snapshot_id = $1 ORDER BY seq LIMIT $2"
        );
        let rows: Vec<ItemRow> = self
            .pool
            .fetch_all(sql_owned(q).bind(snapshot_id).bind(MAX_ITEMS as i64 + 1))
            .await?;
        Ok(rows.into_iter().map(item).collect())
    }

    /// One page of a snapshot's items after position `after`.
    pub async fn evidence_items_page(
        &self,
        snapshot_id: &str,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<SnapshotItem>, StoreError> {
        let q = format!(
            "SELECT {ITEM_COLUMNS} FROM evidence_snapshot_items WHERE snapshot_id = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3"
        );
        let rows: Vec<ItemRow> = self
            .pool
            .fetch_all(
                sql_owned(q)
                    .bind(snapshot_id)
                    .bind(after.unwrap_or(-1))
                    .bind(i64::from(limit.clamp(1, ITEMS_PER_PAGE))),
            )
            .await?;
        Ok(rows.into_iter().map(item).collect())
    }

    /// Snapshot `head` with every stored item, as verification reads it.
    pub async fn stored_evidence_snapshot(&self, head: &SnapshotHead) -> Result<StoredSnapshot, StoreError> {
        let items = self.evidence_items(&head.id).await?;
        Ok(stored(head, items))
    }
}

/// `head` and its `items` as [`opsledger_core::evidence::verify`] takes them.
pub fn stored(head: &SnapshotHead, items: Vec<SnapshotItem>) -> StoredSnapshot {
    StoredSnapshot {
        id: head.id.clone(),
        workspace_id: head.workspace_id.clone(),
        tenant_id: head.tenant_id.clone(),
        generated_at: head.generated_at,
        item_count: head.item_count,
        signature: head.signature.clone(),
        items: items.into_iter().map(|i| i.item).collect(),
    }
}

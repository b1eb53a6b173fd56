//! What a job's handler may do to its run: [`LeasedRun`], whose every write
//! is fenced by the job's lease, and [`RunReads`], reads scoped to the run.
//!
//! Handlers never get a [`Store`]: a run handler gets a `LeasedRun`, a unit
//! handler only `RunReads` (its unit's result is data the runtime commits).
//! So fencing is not a convention a family must remember — there is no
//! unfenced write within reach:
//!
//! ```compile_fail
//! # async fn handler(run: &opsledger_store::lease::LeasedRun) {
//! let store: &opsledger_store::Store = run.store(); // private: no way back to the store
//! # }
//! ```
//!
//! ```compile_fail
//! # async fn unit(reads: &opsledger_store::lease::RunReads) {
//! reads.complete(todo!()).await; // reads only
//! # }
//! ```

use crate::directory::Tenant;
use crate::jobs::{Fence, check_fence};
use crate::runs::{CloseGuard, CompleteResult, Completion, ContextPatch, RecordSummary, RunHead, UnitRecord};
use crate::{Store, StoreError};
use opsledger_core::phases::PhasePlan;
use opsledger_core::{Run, UnitOutcome};
use std::collections::BTreeMap;

/// A run held by a job's lease. Every write checks, inside its transaction,
/// that the lease still holds: a worker whose lease was rescued (and maybe
/// re-claimed by another) writes nothing ([`StoreError::LeaseLost`]).
#[derive(Clone, Debug)]
pub struct LeasedRun {
    reads: RunReads,
    fence: Fence,
}

impl LeasedRun {
    /// The run `run` as held by the job of `fence` (as claimed by
    /// [`Store::claim_jobs`]). A fence that does not hold makes every write fail.
    pub fn new(store: &Store, fence: Fence, run: RunHead) -> LeasedRun {
        LeasedRun {
            reads: RunReads {
                store: store.clone(),
                run,
            },
            fence,
        }
    }

    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// The run's reads.
    pub fn reads(&self) -> &RunReads {
        &self.reads
    }

    fn id(&self) -> &str {
        &self.reads.run.id
    }

    fn store(&self) -> &Store {
        &self.reads.store
    }

    /// Sets the run's `total` once (OPERATIONS.md §3).
    pub async fn init_total(&self, total: u64) -> Result<(), StoreError> {
        self.store()
            .init_total_fenced(Some(&self.fence), self.id(), total)
            .await
    }

    /// Records units (and the artifacts they carry) exactly once each.
    pub async fn record_units(&self, units: &[UnitRecord]) -> Result<RecordSummary, StoreError> {
        self.store()
            .record_units_fenced(Some(&self.fence), self.id(), units)
            .await
    }

    /// Patches the run's context; `false` when the run is completed.
    pub async fn patch_context(&self, patches: &[ContextPatch]) -> Result<bool, StoreError> {
        self.store()
            .patch_context_fenced(Some(&self.fence), self.id(), patches)
            .await
    }

    /// Starts (or adopts) the children of a composite run, once: a retried
    /// parent gets its first plan back. No child to wait for closes the
    /// parent `succeeded` at once; otherwise the last child's close does.
    pub async fn enqueue_child_runs(
        &self,
        children: &[crate::children::NewChild],
    ) -> Result<Vec<crate::children::ChildStart>, StoreError> {
        self.store()
            .enqueue_children_fenced(&self.fence, self.id(), children)
            .await
    }

    /// Declares the run's phases (OPERATIONS.md §4), all pending; a retried
    /// run re-declaring the same plan keeps its phases as they are.
    pub async fn plan_phases(&self, plan: &[PhasePlan]) -> Result<(), StoreError> {
        let mut tx = self.store().begin_write().await?;
        check_fence(&mut tx, &self.fence, self.id()).await?;
        crate::phases::plan_in(&mut tx, self.id(), plan).await?;
        tx.commit().await
    }

    /// Enters phase `key` (the active phase before it is done, phases passed
    /// over are skipped), with `total` units when the phase counts them.
    pub async fn set_phase(&self, key: &str, total: Option<u64>) -> Result<(), StoreError> {
        let mut tx = self.store().begin_write().await?;
        check_fence(&mut tx, &self.fence, self.id()).await?;
        crate::phases::activate_in(&mut tx, self.id(), key, total).await?;
        tx.commit().await
    }

    /// Records units of the active phase `phase` exactly once each (ledger
    /// keys `phase/unit`), advancing the phase's own `processed`.
    pub async fn record_phase_units(
        &self,
        phase: &str,
        units: &[UnitRecord],
    ) -> Result<RecordSummary, StoreError> {
        let mut tx = self.store().begin_write().await?;
        check_fence(&mut tx, &self.fence, self.id()).await?;
        let summary = crate::phases::record_phase_units_in(&mut tx, self.id(), phase, units).await?;
        tx.commit().await?;
        Ok(summary)
    }

    /// Plans a fan-out: `total` = distinct keys, one unit job each, in one
    /// transaction; a run already planned keeps its first plan.
    pub async fn enqueue_units(&self, unit_keys: &[String], max_attempts: u32) -> Result<u64, StoreError> {
        self.enqueue_unit_waves(&[unit_keys], max_attempts).await
    }

    /// Plans a fan-out in waves: the units of `waves[k]` become claimable
    /// only when every unit of the waves before it is recorded (a restore
    /// writes what is referred to before what refers to it). `total` counts
    /// every wave; a key in two waves is refused.
    pub async fn enqueue_unit_waves(
        &self,
        waves: &[&[String]],
        max_attempts: u32,
    ) -> Result<u64, StoreError> {
        self.store()
            .enqueue_units_fenced(&self.fence, self.id(), waves, max_attempts)
            .await
    }

    /// The run's tenant; a workspace-level run has none to write under.
    fn tenant_id(&self) -> Result<&str, StoreError> {
        let run = &self.reads.run;
        run.tenant_id.as_deref().ok_or(StoreError::ScopeMismatch {
            run_type: run.run_type,
            expected: "tenant",
        })
    }

    /// The run's backup set, created on first call (a retried parent gets
    /// the same set), with the tenant's directory when one was read.
    pub async fn backup_set(
        &self,
        name: &str,
        directory: Option<&serde_json::Value>,
    ) -> Result<String, StoreError> {
        let run = &self.reads.run;
        let tenant = self.tenant_id()?;
        self.store()
            .backup_set_for_run(&self.fence, &run.id, &run.workspace_id, tenant, name, directory)
            .await
    }

    /// The run's tenant's default baseline profile, made on first call.
    pub async fn default_baseline_profile(&self) -> Result<crate::baselines::Profile, StoreError> {
        let run = &self.reads.run;
        let tenant = self.tenant_id()?;
        self.store()
            .default_profile_fenced(&self.fence, &run.id, &run.workspace_id, tenant)
            .await
    }

    /// Profile `name` of the run's workspace, made with the run's tenant as
    /// source when no profile has that name yet.
    pub async fn named_baseline_profile(&self, name: &str) -> Result<crate::baselines::Profile, StoreError> {
        let run = &self.reads.run;
        let tenant = self.tenant_id()?;
        self.store()
            .named_profile_fenced(&self.fence, &run.id, &run.workspace_id, tenant, name)
            .await
    }

    /// The run's baseline snapshot, made on first call with its planned
    /// policies (a retried capture gets its first plan back).
    pub async fn baseline_snapshot(
        &self,
        profile_id: &str,
        policy_types: &[String],
        planned: &[crate::baselines::PlannedPolicy],
    ) -> Result<crate::baselines::SnapshotHead, StoreError> {
        self.store()
            .snapshot_for_run_fenced(&self.fence, self.id(), profile_id, policy_types, planned)
            .await
    }

    /// Seals the run's snapshot with its gaps and patches the context, at once.
    pub async fn seal_baseline_snapshot(
        &self,
        gaps: &[opsledger_core::baseline::Gap],
        patches: &[ContextPatch],
    ) -> Result<crate::baselines::SnapshotHead, StoreError> {
        self.store()
            .seal_snapshot_fenced(&self.fence, self.id(), gaps, patches)
            .await
    }

    /// Records the run's compare and findings and patches the context, at once.
    pub async fn record_compare(
        &self,
        record: &crate::baselines::CompareRecord,
        findings: &[opsledger_core::drift::Finding],
        patches: &[ContextPatch],
    ) -> Result<(), StoreError> {
        self.store()
            .record_compare_fenced(&self.fence, self.id(), record, findings, patches)
            .await
    }

    /// The run's evidence snapshot, made on first call with `items` planned
    /// in order (a retried run gets its first plan back).
    pub async fn evidence_snapshot(
        &self,
        items: &[opsledger_core::evidence::Item],
        plan_signer: crate::evidence::PlanSigner<'_>,
    ) -> Result<crate::evidence::SnapshotHead, StoreError> {
        self.store()
            .evidence_snapshot_for_run_fenced(&self.fence, self.id(), items, plan_signer)
            .await
    }

    /// Seals the run's evidence snapshot with `signature` (every item
    /// recorded) and patches the context, at once.
    pub async fn seal_evidence_snapshot(
        &self,
        signature: &str,
        patches: &[ContextPatch],
    ) -> Result<crate::evidence::SnapshotHead, StoreError> {
        self.store()
            .seal_evidence_snapshot_fenced(&self.fence, self.id(), signature, patches)
            .await
    }

    /// Closes the run with `completion` (compare-and-set on status).
    pub async fn complete(&self, completion: Completion) -> Result<CompleteResult, StoreError> {
        self.store()
            .close_run(self.id(), CloseGuard::Fence(&self.fence), |_| Some(completion))
            .await
    }
}

/// Reads scoped to one run: its own state, its tenant, its artifacts.
#[derive(Clone, Debug)]
pub struct RunReads {
    store: Store,
    run: RunHead,
}

impl RunReads {
    /// The run's head as it was when the job was claimed.
    pub fn head(&self) -> &RunHead {
        &self.run
    }

    /// The run as stored now (context, phases and first failures included).
    pub async fn reload(&self) -> Result<Option<Run>, StoreError> {
        self.store.get_run(&self.run.id).await
    }

    /// The run's tenant; `None` for a workspace-level run or a tenant deleted since.
    pub async fn tenant(&self) -> Result<Option<Tenant>, StoreError> {
        match &self.run.tenant_id {
            Some(t) => self.store.get_tenant(t).await,
            None => Ok(None),
        }
    }

    /// `(policy_type, external_id)` of every inventory item of the run's tenant.
    pub async fn tenant_inventory_refs(&self) -> Result<Vec<(String, String)>, StoreError> {
        match &self.run.tenant_id {
            Some(t) => self.store.inventory_refs(t).await,
            None => Ok(Vec::new()),
        }
    }

    /// The run's unit ledger: unit key → outcome.
    pub async fn recorded_units(&self) -> Result<BTreeMap<String, UnitOutcome>, StoreError> {
        self.store.recorded_units(&self.run.id).await
    }

    /// The backup set this run created, if any.
    pub async fn backup_set_id(&self) -> Result<Option<String>, StoreError> {
        self.store.backup_set_of_run(&self.run.id).await
    }

    /// Backup set `set_id` if it is of the run's workspace (a restore may
    /// read any tenant's set of its workspace, never another workspace's).
    pub async fn backup_set(&self, set_id: &str) -> Result<Option<crate::restores::SetHead>, StoreError> {
        self.store.backup_set_head(&self.run.workspace_id, set_id).await
    }

    /// The run's tenant's newest complete backup set.
    pub async fn latest_complete_backup_set(&self) -> Result<Option<crate::restores::SetHead>, StoreError> {
        match &self.run.tenant_id {
            Some(t) => self.store.latest_complete_backup_set(t).await,
            None => Ok(None),
        }
    }

    /// The items of set `set_id` (of the run's workspace) without payloads.
    pub async fn backup_item_heads(
        &self,
        set_id: &str,
    ) -> Result<Vec<crate::restores::ItemHead>, StoreError> {
        if self.backup_set(set_id).await?.is_none() {
            return Ok(Vec::new());
        }
        self.store.backup_item_heads(set_id).await
    }

    /// Item `item_id` of set `set_id` (of the run's workspace), whole.
    pub async fn backup_item(
        &self,
        set_id: &str,
        item_id: &str,
    ) -> Result<Option<crate::restores::ItemWhole>, StoreError> {
        if self.backup_set(set_id).await?.is_none() {
            return Ok(None);
        }
        self.store.backup_item(set_id, item_id).await
    }

    /// The object of the run's tenant an earlier restore of `item_id` wrote or found.
    pub async fn restored_target_of(&self, item_id: &str) -> Result<Option<String>, StoreError> {
        match &self.run.tenant_id {
            Some(t) => self.store.restored_target_of(item_id, t).await,
            None => Ok(None),
        }
    }

    /// How many items this run's backup set holds (0 without a set).
    pub async fn backup_set_items(&self) -> Result<u64, StoreError> {
        match self.store.backup_set_of_run(&self.run.id).await? {
            Some(set) => self.store.count_backup_items(&set).await,
            None => Ok(0),
        }
    }

    /// Schedule `id` if it is of the run's workspace.
    pub async fn schedule(&self, id: &str) -> Result<Option<crate::schedules::Schedule>, StoreError> {
        self.store.schedule(&self.run.workspace_id, id).await
    }

    /// The directory stored with this run's backup set: `(set id, directory)`;
    /// the directory is `None` when the set was taken without one.
    pub async fn backup_set_directory(
        &self,
    ) -> Result<Option<(String, Option<serde_json::Value>)>, StoreError> {
        self.store.backup_set_directory_of_run(&self.run.id).await
    }

    /// Backup set `set_id` of the run's workspace with its lifecycle (label,
    /// lock, deletion), or `None`.
    pub async fn backup_set_lifecycle(
        &self,
        set_id: &str,
    ) -> Result<Option<crate::backup_set_writes::SetLifecycle>, StoreError> {
        self.store
            .backup_set_lifecycle(&self.run.workspace_id, set_id)
            .await
    }

    /// The active restores of the run's workspace that read set `set_id`.
    pub async fn active_restores_of_set(&self, set_id: &str) -> Result<Vec<String>, StoreError> {
        self.store
            .active_restores_of_set(&self.run.workspace_id, set_id)
            .await
    }

    /// Baseline profile `name` of the run's workspace.
    pub async fn baseline_profile_named(
        &self,
        name: &str,
    ) -> Result<Option<crate::baselines::Profile>, StoreError> {
        self.store
            .baseline_profile_by_name(&self.run.workspace_id, name)
            .await
    }

    /// The default baseline profile of tenant `tenant_id` (of the run's workspace).
    pub async fn default_baseline_profile_of(
        &self,
        tenant_id: &str,
    ) -> Result<Option<crate::baselines::Profile>, StoreError> {
        Ok(self
            .store
            .default_baseline_profile(tenant_id)
            .await?
            .filter(|p| p.workspace_id == self.run.workspace_id))
    }

    /// Snapshot `id` of the run's workspace.
    pub async fn baseline_snapshot(
        &self,
        id: &str,
    ) -> Result<Option<crate::baselines::SnapshotHead>, StoreError> {
        self.store.baseline_snapshot(&self.run.workspace_id, id).await
    }

    /// The gaps of snapshot `snapshot_id` (of the run's workspace).
    pub async fn baseline_snapshot_gaps(
        &self,
        snapshot_id: &str,
    ) -> Result<Vec<opsledger_core::baseline::Gap>, StoreError> {
        if self.baseline_snapshot(snapshot_id).await?.is_none() {
            return Ok(Vec::new());
        }
        self.store.snapshot_gaps(snapshot_id).await
    }

    /// Baseline profile `id` of the run's workspace.
    pub async fn baseline_profile(&self, id: &str) -> Result<Option<crate::baselines::Profile>, StoreError> {
        self.store.baseline_profile(&self.run.workspace_id, id).await
    }

    /// Whether backup set `set_id` holds only policies its run named.
    pub async fn backup_set_named_policies(&self, set_id: &str) -> Result<bool, StoreError> {
        self.store
            .backup_set_named_policies(&self.run.workspace_id, set_id)
            .await
    }

    /// The snapshot this run made, if any.
    pub async fn own_baseline_snapshot(&self) -> Result<Option<crate::baselines::SnapshotHead>, StoreError> {
        Ok(self
            .store
            .snapshots_of_run(&self.run.id)
            .await?
            .into_iter()
            .next())
    }

    /// The newest sealed snapshot of profile `profile_id` (of the run's workspace).
    pub async fn latest_sealed_snapshot(
        &self,
        profile_id: &str,
    ) -> Result<Option<crate::baselines::SnapshotHead>, StoreError> {
        Ok(self
            .store
            .latest_sealed_snapshot(profile_id)
            .await?
            .filter(|s| s.workspace_id == self.run.workspace_id))
    }

    /// Every policy of snapshot `snapshot_id` (of the run's workspace).
    pub async fn snapshot_policies(
        &self,
        snapshot_id: &str,
    ) -> Result<Vec<crate::baselines::SnapshotPolicy>, StoreError> {
        if self.baseline_snapshot(snapshot_id).await?.is_none() {
            return Ok(Vec::new());
        }
        self.store.snapshot_policies(snapshot_id).await
    }

    /// The evidence sources of the run's tenant, read now.
    pub async fn evidence_sources(&self) -> Result<opsledger_core::evidence::Sources, StoreError> {
        match &self.run.tenant_id {
            Some(t) => self.store.evidence_sources(&self.run.workspace_id, t).await,
            None => Ok(Default::default()),
        }
    }

    /// The evidence snapshot this run made, if any.
    pub async fn own_evidence_snapshot(&self) -> Result<Option<crate::evidence::SnapshotHead>, StoreError> {
        Ok(self
            .store
            .evidence_snapshots_of_run(&self.run.id)
            .await?
            .into_iter()
            .next())
    }

    /// Every item of evidence snapshot `snapshot_id` (of the run's workspace).
    pub async fn evidence_items(
        &self,
        snapshot_id: &str,
    ) -> Result<Vec<crate::evidence::SnapshotItem>, StoreError> {
        if self
            .store
            .evidence_snapshot(&self.run.workspace_id, snapshot_id)
            .await?
            .is_none()
        {
            return Ok(Vec::new());
        }
        self.store.evidence_items(snapshot_id).await
    }

    /// The compare this run recorded, if any.
    pub async fn own_compare(&self) -> Result<Option<crate::baselines::StoredCompare>, StoreError> {
        self.store.compare_of_run(&self.run.id).await
    }

    /// The ids of the items of set `set_id` (of the run's workspace).
    pub async fn backup_item_ids(&self, set_id: &str) -> Result<Vec<String>, StoreError> {
        self.store.backup_item_ids(&self.run.workspace_id, set_id).await
    }

    /// The tenants of the run's workspace, by id, `limit` at most (a
    /// workspace-level run plans over them; ask one more than it may take
    /// to tell a workspace that is too large).
    pub async fn workspace_tenants(&self, limit: usize) -> Result<Vec<Tenant>, StoreError> {
        let rows: Vec<(String, String, String, String)> = self
            .store
            .pool
            .fetch_all(
                crate::db::sql(
                    "SELECT id, workspace_id, name, provider FROM tenants WHERE workspace_id = $1 \
                     ORDER BY id LIMIT $2",
                )
                .bind(&self.run.workspace_id)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX)),
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, workspace_id, name, provider)| Tenant {
                id,
                workspace_id,
                name,
                provider,
            })
            .collect())
    }
}

/// One inventory item as a review pack reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct InventoryRow {
    pub policy_type: String,
    pub external_id: String,
    pub display_name: String,
    pub payload: serde_json::Value,
    /// Milliseconds since the Unix epoch.
    pub last_seen_at: i64,
}

/// The newest complete backup set of a tenant, for a review pack's index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub items: u64,
}

/// Reads of `review_pack.generate`: the run's tenant's inventory as it was
/// at a cutoff (items are never deleted and their first sighting never
/// changes, so the set of items first seen by then is the same on every
/// attempt), its newest compare by then, and its newest complete backup.
impl RunReads {
    fn tenant_or_none(&self) -> Option<&str> {
        self.run.tenant_id.as_deref()
    }

    /// `(policy_type, external_id, display_name)` of every item of the run's
    /// tenant first seen at or before `cutoff`, by type and id.
    pub async fn inventory_heads_before(
        &self,
        cutoff: i64,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let Some(tenant) = self.tenant_or_none() else {
            return Ok(Vec::new());
        };
        let rows: Vec<(String, String, String)> = self
            .store
            .pool
            .fetch_all(
                crate::db::sql(
                    "SELECT policy_type, external_id, display_name FROM inventory_items \
                     WHERE tenant_id = $1 AND workspace_id = $2 AND first_seen_at <= $3 \
                     ORDER BY policy_type, external_id",
                )
                .bind(tenant)
                .bind(self.run.workspace_id.as_str())
                .bind(cutoff),
            )
            .await?;
        Ok(rows)
    }

    /// Up to `limit` items of `policy_type` of the run's tenant first seen at
    /// or before `cutoff`, after id `after`, by id, with their payloads.
    pub async fn inventory_page_before(
        &self,
        policy_type: &str,
        after: Option<&str>,
        limit: u32,
        cutoff: i64,
    ) -> Result<Vec<InventoryRow>, StoreError> {
        let Some(tenant) = self.tenant_or_none() else {
            return Ok(Vec::new());
        };
        let rows: Vec<(String, String, String, i64)> = self
            .store
            .pool
            .fetch_all(
                crate::db::sql(
                    "SELECT external_id, display_name, payload, last_seen_at FROM inventory_items \
                     WHERE tenant_id = $1 AND workspace_id = $2 AND policy_type = $3 AND first_seen_at <= $4 \
                     AND ($5 = 0 OR external_id > $6) ORDER BY external_id LIMIT $7",
                )
                .bind(tenant)
                .bind(self.run.workspace_id.as_str())
                .bind(policy_type)
                .bind(cutoff)
                .bind(i64::from(after.is_some()))
                .bind(after.unwrap_or(""))
                .bind(i64::from(limit.clamp(1, 1000))),
            )
            .await?;
        rows.into_iter()
            .map(|(external_id, display_name, payload, last_seen_at)| {
                Ok(InventoryRow {
                    policy_type: policy_type.to_owned(),
                    payload: serde_json::from_str(&payload)
                        .map_err(|e| StoreError::Corrupt(format!("inventory item payload: {e}")))?,
                    external_id,
                    display_name,
                    last_seen_at,
                })
            })
            .collect()
    }

    /// The newest compare of the run's tenant recorded at or before `cutoff`.
    pub async fn latest_compare_before(
        &self,
        cutoff: i64,
    ) -> Result<Option<crate::baselines::StoredCompare>, StoreError> {
        let Some(tenant) = self.tenant_or_none() else {
            return Ok(None);
        };
        let run_id: Option<(String,)> = self
            .store
            .pool
            .fetch_optional(
                crate::db::sql(
                    "SELECT run_id FROM baseline_compares WHERE tenant_id = $1 AND workspace_id = $2 \
                     AND recorded_at <= $3 ORDER BY recorded_at DESC, run_id DESC LIMIT 1",
                )
                .bind(tenant)
                .bind(self.run.workspace_id.as_str())
                .bind(cutoff),
            )
            .await?;
        match run_id {
            Some((id,)) => self.store.compare_of_run(&id).await,
            None => Ok(None),
        }
    }

    /// A page of the findings of compare run `compare_run_id`, if that
    /// compare is of the run's tenant (none otherwise).
    pub async fn compare_findings_page(
        &self,
        compare_run_id: &str,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<crate::baselines::StoredFinding>, StoreError> {
        let ours = self.store.compare_of_run(compare_run_id).await?.is_some_and(|c| {
            Some(c.tenant_id.as_str()) == self.tenant_or_none() && c.workspace_id == self.run.workspace_id
        });
        if !ours {
            return Ok(Vec::new());
        }
        self.store.findings_page(compare_run_id, after, limit).await
    }

    /// The run's tenant's newest complete backup set, with its item count.
    pub async fn latest_backup_summary(&self) -> Result<Option<BackupSummary>, StoreError> {
        let Some(tenant) = self.tenant_or_none() else {
            return Ok(None);
        };
        let q = format!(
            "SELECT s.id, s.name, s.created_at, (SELECT COUNT(*) FROM backup_items i WHERE i.backup_set_id = s.id) \
             FROM backup_sets s WHERE s.tenant_id = $1 AND {} ORDER BY s.created_at DESC, s.id DESC LIMIT 1",
            crate::backups::SET_IS_COMPLETE
        );
        let row: Option<(String, String, i64, i64)> = self
            .store
            .pool
            .fetch_optional(crate::db::sql_owned(q).bind(tenant))
            .await?;
        Ok(row.map(|(id, name, created_at, items)| BackupSummary {
            id,
            name,
            created_at,
            items: items as u64,
        }))
    }
}

impl RunReads {
    /// The run's tenant's newest sealed evidence snapshot:
    /// `(id, item count, sealed at)`.
    pub async fn latest_sealed_evidence(&self) -> Result<Option<(String, u64, i64)>, StoreError> {
        let Some(tenant) = self.tenant_or_none() else {
            return Ok(None);
        };
        let row: Option<(String, i64, i64)> = self
            .store
            .pool
            .fetch_optional(
                crate::db::sql(
                    "SELECT id, item_count, sealed_at FROM evidence_snapshots WHERE tenant_id = $1 \
                     AND workspace_id = $2 AND sealed_at IS NOT NULL ORDER BY sealed_at DESC, id DESC LIMIT 1",
                )
                .bind(tenant)
                .bind(self.run.workspace_id.as_str()),
            )
            .await?;
        Ok(row.map(|(id, items, at)| (id, items as u64, at)))
    }
}

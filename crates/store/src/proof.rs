//! Read-only access to the proof a run produced, for reconciliation adapters.
//!
//! [`ProofReader`] wraps the store privately and exposes reads only, so an
//! adapter handed a `&ProofReader` cannot write — the type system enforces
//! it, not a convention:
//!
//! ```compile_fail
//! # async fn adapter(proof: &opsledger_store::proof::ProofReader) {
//! proof.record_units("run", &[]).await; // no such method: adapters cannot write
//! # }
//! ```
//!
//! ```compile_fail
//! # fn adapter(proof: &opsledger_store::proof::ProofReader) {
//! let store: &opsledger_store::Store = &proof.store; // private: no way back to the writer
//! # }
//! ```

use crate::db::{sql, sql_built};
use crate::{Store, StoreError};
use opsledger_core::inventory::LinkedItems;
use std::collections::BTreeMap;

pub struct ProofReader {
    store: Store,
}

impl ProofReader {
    pub fn new(store: &Store) -> ProofReader {
        ProofReader { store: store.clone() }
    }

    /// The baseline snapshots linked to run `run_id` (a capture's proof).
    pub async fn snapshots_of_run(
        &self,
        run_id: &str,
    ) -> Result<Vec<crate::baselines::SnapshotHead>, StoreError> {
        self.store.snapshots_of_run(run_id).await
    }

    /// The gaps a snapshot was sealed with.
    pub async fn snapshot_gaps(
        &self,
        snapshot_id: &str,
    ) -> Result<Vec<opsledger_core::baseline::Gap>, StoreError> {
        self.store.snapshot_gaps(snapshot_id).await
    }

    /// The compare record of run `run_id` (a compare's proof).
    pub async fn compare_of_run(
        &self,
        run_id: &str,
    ) -> Result<Option<crate::baselines::StoredCompare>, StoreError> {
        self.store.compare_of_run(run_id).await
    }

    /// The files run `run_id` committed (name, unit, size, SHA-256).
    pub async fn files_of(&self, run_id: &str) -> Result<Vec<crate::files::RunFile>, StoreError> {
        self.store.run_files(run_id).await
    }

    /// Inventory items whose type `run_id` read whole last (`type_read_by_run_id`),
    /// grouped by workspace, tenant and policy type.
    pub async fn inventory_items_linked_to(&self, run_id: &str) -> Result<Vec<LinkedItems>, StoreError> {
        let rows: Vec<(String, String, String, i64)> = self
            .store
            .pool
            .fetch_all(
                sql(
                    "SELECT workspace_id, tenant_id, policy_type, COUNT(*) FROM inventory_items \
                     WHERE type_read_by_run_id = $1 GROUP BY workspace_id, tenant_id, policy_type",
                )
                .bind(run_id),
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|(workspace_id, tenant_id, policy_type, count)| LinkedItems {
                workspace_id,
                tenant_id,
                policy_type,
                count: count as u64,
            })
            .collect())
    }

    /// Backup sets created by `run_id`: `(id, workspace_id, tenant_id, item count)`.
    pub async fn backup_sets_created_by(
        &self,
        run_id: &str,
    ) -> Result<Vec<(String, String, String, u64)>, StoreError> {
        let rows: Vec<(String, String, String, i64)> = self
            .store
            .pool
            .fetch_all(
                sql("SELECT s.id, s.workspace_id, s.tenant_id, \
                     (SELECT COUNT(*) FROM backup_items i WHERE i.backup_set_id = s.id) \
                     FROM backup_sets s WHERE s.created_by_run_id = $1")
                .bind(run_id),
            )
            .await?;
        Ok(rows.into_iter().map(|(a, b, c, n)| (a, b, c, n as u64)).collect())
    }

    /// [`ProofReader::inventory_items_linked_to`] for a page of runs, in one
    /// query per 500 runs: run id → its linked items (runs with none absent).
    pub async fn inventory_items_linked_to_runs(
        &self,
        run_ids: &[&str],
    ) -> Result<BTreeMap<String, Vec<LinkedItems>>, StoreError> {
        let mut out: BTreeMap<String, Vec<LinkedItems>> = BTreeMap::new();
        for chunk in run_ids.chunks(PROOF_IDS_PER_QUERY) {
            let mut stmt = sql_built(
                self.store.pool.dialect(),
                "SELECT type_read_by_run_id, workspace_id, tenant_id, policy_type, COUNT(*) \
                 FROM inventory_items WHERE type_read_by_run_id IN ",
            );
            stmt.push_list(chunk.iter().copied())
                .push(" GROUP BY type_read_by_run_id, workspace_id, tenant_id, policy_type");
            let rows: Vec<(String, String, String, String, i64)> = self.store.pool.fetch_all(stmt).await?;
            for (run_id, workspace_id, tenant_id, policy_type, count) in rows {
                out.entry(run_id).or_default().push(LinkedItems {
                    workspace_id,
                    tenant_id,
                    policy_type,
                    count: count as u64,
                });
            }
        }
        Ok(out)
    }

    /// [`ProofReader::backup_sets_created_by`] for a page of runs, in one
    /// query per 500 runs: run id → its sets (runs with none absent).
    pub async fn backup_sets_created_by_runs(
        &self,
        run_ids: &[&str],
    ) -> Result<BTreeMap<String, Vec<(String, String, String, u64)>>, StoreError> {
        let mut out: BTreeMap<String, Vec<(String, String, String, u64)>> = BTreeMap::new();
        for chunk in run_ids.chunks(PROOF_IDS_PER_QUERY) {
            let mut stmt = sql_built(
                self.store.pool.dialect(),
                "SELECT s.created_by_run_id, s.id, s.workspace_id, s.tenant_id, \
                 (SELECT COUNT(*) FROM backup_items i WHERE i.backup_set_id = s.id) \
                 FROM backup_sets s WHERE s.created_by_run_id IN ",
            );
            stmt.push_list(chunk.iter().copied());
            let rows: Vec<(String, String, String, String, i64)> = self.store.pool.fetch_all(stmt).await?;
            for (run_id, id, ws, tenant, n) in rows {
                out.entry(run_id).or_default().push((id, ws, tenant, n as u64));
            }
        }
        Ok(out)
    }
}

impl ProofReader {
    /// The run's unit ledger: unit key → outcome.
    pub async fn recorded_units(
        &self,
        run_id: &str,
    ) -> Result<BTreeMap<String, opsledger_core::UnitOutcome>, StoreError> {
        self.store.recorded_units(run_id).await
    }

    /// The restore results run `run_id` recorded (one per unit).
    pub async fn restore_results_of(
        &self,
        run_id: &str,
    ) -> Result<Vec<crate::restores::StoredRestoreResult>, StoreError> {
        self.store.restore_results_of(run_id).await
    }

    /// The evidence snapshots linked to run `run_id` (its proof).
    pub async fn evidence_snapshots_of_run(
        &self,
        run_id: &str,
    ) -> Result<Vec<crate::evidence::SnapshotHead>, StoreError> {
        self.store.evidence_snapshots_of_run(run_id).await
    }

    /// Evidence snapshot `id`, whatever its scope (a run's context may name
    /// one of another scope: the adapter must see it to refuse it).
    pub async fn evidence_snapshot(
        &self,
        id: &str,
    ) -> Result<Option<crate::evidence::SnapshotHead>, StoreError> {
        self.store.evidence_snapshot_by_id(id).await
    }

    /// Snapshot `head` with its stored items, as verification reads it.
    pub async fn stored_evidence_snapshot(
        &self,
        head: &crate::evidence::SnapshotHead,
    ) -> Result<opsledger_core::evidence::StoredSnapshot, StoreError> {
        self.store.stored_evidence_snapshot(head).await
    }

    /// The restore results of many runs, grouped by run.
    pub async fn restore_results_of_runs(
        &self,
        run_ids: &[&str],
    ) -> Result<BTreeMap<String, Vec<crate::restores::StoredRestoreResult>>, StoreError> {
        self.store.restore_results_of_runs(run_ids).await
    }
}

/// Run ids per batched proof query (bound parameters stay far below either
/// database's limit).
const PROOF_IDS_PER_QUERY: usize = 500;

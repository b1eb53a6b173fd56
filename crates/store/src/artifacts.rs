//! Artifacts a unit writes with its recording, as data: a unit's result
//! names them ([`crate::UnitRecord::artifact`]) and the unit ledger step
//! writes them in the same transaction as the unit, for a unit new to the
//! ledger and not failed (so a unit is counted as done if and only if its
//! artifact landed, and a duplicate delivery writes nothing). Each kind lives in its own module
//! ([`crate::inventory`], [`crate::backups`], [`crate::restores`],
//! [`crate::backup_set_writes`]); this enum is the one list of kinds, matched
//! exhaustively where they are written.

use crate::StoreError;
use crate::backup_set_writes::SetUpdate;
use crate::backups::BackupItem;
use crate::db::Tx;
use crate::files::StagedFile;
use crate::inventory::ItemSnapshot;
use crate::restores::RestoreResult;

/// What a unit writes besides its ledger row.
#[derive(Debug, Clone, PartialEq)]
pub enum UnitArtifact {
    /// The items of one policy type as read by `inventory.sync`: upserted
    /// into the tenant's inventory, marked last seen by the run.
    InventoryItems {
        policy_type: String,
        items: Vec<ItemSnapshot>,
    },
    /// One policy re-read by `policy.sync`: its item's content refreshed and
    /// linked to this run as the run that last saw it
    /// (`last_seen_operation_run_id`); the inventory sync that last read its
    /// whole type (`type_read_by_run_id`, that sync's proof) is kept.
    InventoryItemReread { policy_type: String, item: ItemSnapshot },
    /// A policy captured into the run's own backup set.
    BackupItem(BackupItem),
    /// The policies of one type captured into the run's own backup set
    /// (`backup.schedule.execute` counts policy types, not policies).
    BackupItems(Vec<BackupItem>),
    /// A policy captured into the run's baseline snapshot (planned when the
    /// scope was resolved; [`crate::baselines`]).
    BaselinePolicy(crate::baselines::CapturedPolicy),
    /// A file written under a temporary name ([`crate::files`]), moved into
    /// place with its row (size, SHA-256).
    File(StagedFile),
    /// What a restore unit did to its target, failures included.
    RestoreResult(RestoreResult),
    /// The change of a `backup_set.update`, written by its close.
    BackupSetUpdated(SetUpdate),
    /// An item removed by a unit of `backup_set.delete`; the set is marked
    /// deleted with it ([`crate::backup_set_writes`]).
    BackupItemDeleted { backup_set_id: String, item_id: String },
    /// A set with no item left marked deleted, by the close of a
    /// `backup_set.delete` that had no unit to do it.
    BackupSetDeleted { backup_set_id: String },
    /// An item of the run's evidence snapshot recorded with its SHA-256
    /// (planned when the snapshot was; [`crate::evidence`]).
    EvidenceItem(crate::evidence::RecordedItem),
}

impl UnitArtifact {
    /// Whether the artifact is written for a unit that failed: a restore's
    /// failed result is proof of what was attempted (and its history);
    /// every other artifact exists only for work that was done.
    pub fn kept_when_failed(&self) -> bool {
        // A type whose every policy could not be read is failed, and the
        // policies that were read are still captured (a partial backup).
        // A baseline policy whose settings could not be read is failed, and
        // its listed metadata is still its (fallback) evidence.
        matches!(
            self,
            UnitArtifact::RestoreResult(_) | UnitArtifact::BackupItems(_) | UnitArtifact::BaselinePolicy(_)
        )
    }

    /// What the artifact adds to the run's `created` / `updated` counters.
    pub fn counters(&self) -> (i64, i64) {
        match self {
            UnitArtifact::RestoreResult(r) => r.counters(),
            _ => (0, 0),
        }
    }
}

/// Writes `artifact` of run `run_id` inside `tx`: of its unit `unit_key`, or
/// of its close (`None`).
pub(crate) async fn write_in(
    tx: &mut Tx,
    run_id: &str,
    unit_key: Option<&str>,
    artifact: &UnitArtifact,
) -> Result<(), StoreError> {
    match artifact {
        UnitArtifact::File(file) => crate::files::commit_in(tx, run_id, unit_key, file).await,
        UnitArtifact::InventoryItems { policy_type, items } => {
            crate::inventory::upsert_items_in(tx, run_id, policy_type, items, true).await
        }
        UnitArtifact::InventoryItemReread { policy_type, item } => {
            crate::inventory::upsert_items_in(tx, run_id, policy_type, std::slice::from_ref(item), false)
                .await
        }
        UnitArtifact::BackupItem(item) => crate::backups::insert_item_in(tx, run_id, item).await,
        UnitArtifact::BaselinePolicy(policy) => crate::baselines::capture_policy_in(tx, run_id, policy).await,
        UnitArtifact::EvidenceItem(item) => crate::evidence::record_item_in(tx, run_id, unit_key, item).await,
        UnitArtifact::BackupItems(items) => {
            for item in items {
                crate::backups::insert_item_in(tx, run_id, item).await?;
            }
            Ok(())
        }
        UnitArtifact::RestoreResult(result) => {
            crate::restores::insert_result_in(tx, run_id, unit_key, result).await
        }
        // A set's own changes belong to a run's close, an item's to its unit.
        UnitArtifact::BackupSetUpdated(update) => match unit_key {
            None => crate::backup_set_writes::update_set_in(tx, run_id, update).await,
            Some(_) => Err(StoreError::Corrupt(
                "a backup set update belongs to its run's close".into(),
            )),
        },
        UnitArtifact::BackupSetDeleted { backup_set_id } => match unit_key {
            None => crate::backup_set_writes::delete_set_in(tx, run_id, backup_set_id).await,
            Some(_) => Err(StoreError::Corrupt(
                "a backup set's deletion belongs to its run's close".into(),
            )),
        },
        UnitArtifact::BackupItemDeleted {
            backup_set_id,
            item_id,
        } => match unit_key {
            Some(_) => crate::backup_set_writes::delete_item_in(tx, run_id, backup_set_id, item_id).await,
            None => Err(StoreError::Corrupt(
                "a backup item's deletion belongs to a unit".into(),
            )),
        },
    }
}

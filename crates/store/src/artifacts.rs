//! Artifacts a unit writes with its recording, as data: a unit's result
//! names them ([`crate::UnitRecord::artifact`]) and the unit ledger step
//! writes them in the same transaction as the unit, for a unit new to the
//! ledger and not failed (so a unit is counted as done if and only if its
//! artifact landed, and a duplicate delivery writes nothing). Each kind lives in its own module
//! ([`crate::inventory`], [`crate::backups`]); this enum is the one list of
//! kinds, matched exhaustively where they are written.

use crate::StoreError;
use crate::backups::BackupItem;
use crate::db::Tx;
use crate::inventory::ItemSnapshot;

/// What a unit writes besides its ledger row.
#[derive(Debug, Clone, PartialEq)]
pub enum UnitArtifact {
    /// The items of one policy type as read by `inventory.sync`: upserted
    /// into the tenant's inventory, marked last seen by the run.
    InventoryItems {
        policy_type: String,
        items: Vec<ItemSnapshot>,
    },
    /// A policy captured into the run's own backup set.
    BackupItem(BackupItem),
}

/// Writes `artifact` of a unit of `run_id` inside `tx`.
pub(crate) async fn write_in(tx: &mut Tx, run_id: &str, artifact: &UnitArtifact) -> Result<(), StoreError> {
    match artifact {
        UnitArtifact::InventoryItems { policy_type, items } => {
            crate::inventory::upsert_items_in(tx, run_id, policy_type, items).await
        }
        UnitArtifact::BackupItem(item) => crate::backups::insert_item_in(tx, run_id, item).await,
    }
}

//! Run families: each module holds one family whole — its parameters, its
//! handler(s), its units, the proof it writes and its reconciliation adapter
//! — so a reader sees it in one place. The rest of the catalog lands family
//! by family (ROADMAP.md).

pub mod backup_set_add_policies;
pub mod inventory_sync;
pub mod params;

use opsledger_core::RunType;
use opsledger_engine::Registry;
use opsledger_providers::ProviderSettings;
use std::sync::Arc;

/// Every family this build can execute, with its handlers and adapter.
pub fn registry(providers: ProviderSettings) -> Registry {
    let mut r = Registry::new();
    r.handler(
        RunType::InventorySync,
        Arc::new(inventory_sync::InventorySync::new(providers.clone())),
    )
    .adapter(
        RunType::InventorySync,
        Arc::new(inventory_sync::InventorySyncAdapter),
    );
    r.handler(
        RunType::BackupSetAddPolicies,
        Arc::new(backup_set_add_policies::AddPolicies {
            providers: providers.clone(),
        }),
    )
    .unit_handler(
        RunType::BackupSetAddPolicies,
        Arc::new(backup_set_add_policies::AddPolicyUnit { providers }),
    )
    .adapter(
        RunType::BackupSetAddPolicies,
        Arc::new(backup_set_add_policies::AddPoliciesAdapter),
    );
    r
}

//! Run families: each module holds one family whole — its parameters, its
//! handler(s), its units, the proof it writes and its reconciliation adapter
//! — so a reader sees it in one place. The rest of the catalog lands family
//! by family (ROADMAP.md).

pub mod backup_schedule_execute;
pub mod backup_set_add_policies;
pub mod backup_set_delete;
pub mod backup_set_restore;
pub mod backup_set_update;
pub mod baseline_capture;
pub mod baseline_compare;
pub mod demo_state;
pub mod evidence_snapshot_generate;
pub mod inventory_sync;
pub mod kit;
pub mod policy_sync;
pub mod request_budget;
pub mod review_pack_generate;
pub mod workspace_inventory_sync_all;

use opsledger_core::RunType;
use opsledger_core::evidence::EvidenceKey;
use opsledger_engine::{Family, Registry};
use opsledger_providers::ProviderSettings;
use opsledger_store::files::FileStore;

/// What the families of one node are built with, beside the database.
#[derive(Clone, Default)]
pub struct Services {
    pub providers: ProviderSettings,
    /// Where file artifacts (review-pack ZIPs) are kept; `None`: the families
    /// that write files are not executable on this node.
    pub files: Option<FileStore>,
    /// The evidence signing key; `None`: evidence snapshots are not
    /// executable on this node.
    pub evidence_key: Option<EvidenceKey>,
}

impl From<ProviderSettings> for Services {
    fn from(providers: ProviderSettings) -> Services {
        Services {
            providers,
            ..Services::default()
        }
    }
}

/// The family executing `t` in this build, or `None` for a type of the
/// catalog not built yet (the API refuses to start it). The one place a
/// family is registered; the match is exhaustive, so a new catalog entry
/// makes the compiler ask whether this build executes it.
pub fn family(t: RunType, services: &Services) -> Option<Family> {
    let providers = &services.providers;
    match t {
        RunType::InventorySync => Some(inventory_sync::family(providers)),
        RunType::BackupSetAddPolicies => Some(backup_set_add_policies::family(providers)),
        RunType::PolicySync => Some(policy_sync::family(providers)),
        RunType::BackupSetRestore => Some(backup_set_restore::family(providers)),
        RunType::BackupScheduleExecute => Some(backup_schedule_execute::family(providers)),
        RunType::BackupSetUpdate => Some(backup_set_update::family(providers)),
        RunType::BackupSetDelete => Some(backup_set_delete::family(providers)),
        RunType::BaselineCapture => Some(baseline_capture::family(providers)),
        RunType::BaselineCompare => Some(baseline_compare::family(providers)),
        RunType::WorkspaceInventorySyncAll => Some(workspace_inventory_sync_all::family()),
        RunType::EvidenceSnapshotGenerate => services
            .evidence_key
            .clone()
            .map(evidence_snapshot_generate::family),
        RunType::ReviewPackGenerate => services.files.clone().map(review_pack_generate::family),
    }
}

/// Every family this build can execute with `providers` alone (no file
/// store, no evidence key: review packs and evidence snapshots are not).
pub fn registry(providers: ProviderSettings) -> Registry {
    registry_with(providers.into())
}

/// Every family this build can execute with `services`, with its handlers and adapter.
pub fn registry_with(services: Services) -> Registry {
    let mut r = Registry::new();
    for &t in RunType::ALL {
        if let Some(family) = family(t, &services) {
            r.register(t, family);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_family_agrees_with_its_catalog_entry() {
        // `register` checks each family against the catalog.
        let r = super::registry(Default::default());
        assert!(r.supports(opsledger_core::RunType::InventorySync));
        assert!(r.supports(opsledger_core::RunType::BackupSetAddPolicies));
    }
}

//! Run families: each module holds one family whole — its parameters, its
//! handler, its units and the proof it writes — so a reader sees it in one
//! place. Only `inventory.sync` exists so far; the rest of the catalog lands
//! family by family (ROADMAP.md).

pub mod inventory_sync;
pub mod params;

use opsledger_core::RunType;
use opsledger_engine::HandlerRegistry;
use opsledger_providers::ProviderSettings;
use std::sync::Arc;

/// Every family this build can execute, registered with its handler.
pub fn registry(providers: ProviderSettings) -> HandlerRegistry {
    let mut r = HandlerRegistry::new();
    r.register(
        RunType::InventorySync,
        Arc::new(inventory_sync::InventorySync::new(providers)),
    );
    r
}

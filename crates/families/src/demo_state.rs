//! The demo provider's state kept in the ledger's database: what is written
//! into a demo tenant (a restore's policies, assignments, groups) survives a
//! restart and is seen by every node sharing the database, as it would be
//! in a real tenant. Lives here because providers must not depend on the
//! store; the binary puts it in its [`ProviderSettings`].

use async_trait::async_trait;
use opsledger_providers::ProviderSettings;
use opsledger_providers::demo::{DemoState, DemoStateError};
use opsledger_store::Store;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// [`DemoState`] over the store's `demo_objects` table; the tenant key is
/// the tenant's ledger id.
#[derive(Debug, Clone)]
pub struct StoreDemoState {
    store: Store,
}

impl StoreDemoState {
    pub fn new(store: Store) -> StoreDemoState {
        StoreDemoState { store }
    }
}

fn failed(e: opsledger_store::StoreError) -> DemoStateError {
    DemoStateError(e.to_string())
}

#[async_trait]
impl DemoState for StoreDemoState {
    async fn put(
        &self,
        tenant: &str,
        collection: &str,
        id: &str,
        body: &Value,
    ) -> Result<(), DemoStateError> {
        self.store
            .put_demo_object(tenant, collection, id, body)
            .await
            .map_err(failed)
    }

    async fn get(&self, tenant: &str, collection: &str, id: &str) -> Result<Option<Value>, DemoStateError> {
        self.store
            .demo_object(tenant, collection, id)
            .await
            .map_err(failed)
    }

    async fn list(&self, tenant: &str, collection: &str) -> Result<Vec<(String, Value)>, DemoStateError> {
        Ok(self
            .store
            .demo_objects(tenant, collection)
            .await
            .map_err(failed)?
            .into_iter()
            .map(|o| (o.id, o.body))
            .collect())
    }
}

/// The provider settings of a node on `store`: demo tenants keep their
/// writes in its database.
pub fn provider_settings(store: &Store, demo_latency: Duration) -> ProviderSettings {
    // The rest (other providers' settings) at their defaults, whatever they are.
    #[allow(clippy::needless_update)]
    ProviderSettings {
        demo_latency,
        demo_state: Some(Arc::new(StoreDemoState::new(store.clone()))),
        ..ProviderSettings::default()
    }
}

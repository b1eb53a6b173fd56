//! The store's request budget as the providers' [`RequestBudget`]: every
//! node of one database takes its slices of a tenant's Graph budget from the
//! same rows, so together they stay under Microsoft's per-app, per-tenant
//! limits. (Providers cannot depend on the store; this adapter joins them.)

use async_trait::async_trait;
use opsledger_providers::{BudgetError, Grant, RequestBudget};
use opsledger_store::Store;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct StoreBudget {
    store: Store,
}

impl StoreBudget {
    pub fn new(store: Store) -> StoreBudget {
        StoreBudget { store }
    }
}

#[async_trait]
impl RequestBudget for StoreBudget {
    async fn take(&self, key: &str, window: Duration, limit: u32, want: u32) -> Result<Grant, BudgetError> {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let slice = self
            .store
            .take_request_budget(key, window_ms, limit, want)
            .await
            .map_err(|e| BudgetError(e.to_string()))?;
        Ok(Grant {
            granted: slice.granted,
            window_left: Duration::from_millis(
                u64::try_from(slice.window_end_ms.saturating_sub(slice.now_ms)).unwrap_or(0),
            ),
        })
    }
}

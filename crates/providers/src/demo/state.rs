//! Where the demo keeps what was written into its tenants.
//!
//! A demo tenant is generated, but a restore into it must stick: it must
//! survive a restart and be seen by every node. So the demo's writes go to a
//! [`DemoState`], which the binary backs with its database (the store
//! implements it; an adapter in `opsledger-families` wires it in, because
//! providers must not depend on the store). Without one — unit tests, a
//! provider opened with default settings — writes go to [`MemoryDemoState`],
//! a map shared by the whole process and lost with it.
//!
//! Objects are kept per tenant key (the tenant's unique identity: its id in
//! the ledger) and collection (a policy type key, or [`GROUPS`] for created
//! groups), by object id, as the JSON the demo serves.

use async_trait::async_trait;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::sync::{LazyLock, Mutex};

/// The collection created groups are kept in (no policy type has this key).
pub const GROUPS: &str = "#groups";

/// The demo's state could not be read or written (the database behind it failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("demo state: {0}")]
pub struct DemoStateError(pub String);

/// Objects written into demo tenants, per (tenant key, collection).
#[async_trait]
pub trait DemoState: Send + Sync {
    /// Inserts or replaces an object. A replaced object keeps its place in
    /// [`DemoState::list`] (the order of first writes), so pages stay stable.
    async fn put(&self, tenant: &str, collection: &str, id: &str, body: &Value)
    -> Result<(), DemoStateError>;
    /// One object, as last written.
    async fn get(&self, tenant: &str, collection: &str, id: &str) -> Result<Option<Value>, DemoStateError>;
    /// Every object of a collection, `(id, body)`, in the order they were first written.
    async fn list(&self, tenant: &str, collection: &str) -> Result<Vec<(String, Value)>, DemoStateError>;
}

/// Settings print whether a state is present, never what it holds.
impl fmt::Debug for dyn DemoState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("present")
    }
}

/// (tenant key, collection) → objects in the order of first write.
type Objects = HashMap<(String, String), Vec<(String, Value)>>;

/// Every [`MemoryDemoState`] of the process shares this map, as every node
/// of a database shares its table: two providers opened for one tenant see
/// each other's writes.
static MEMORY: LazyLock<Mutex<Objects>> = LazyLock::new(Default::default);

/// The process-wide in-memory [`DemoState`], used when no database backs the demo.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryDemoState;

#[async_trait]
impl DemoState for MemoryDemoState {
    async fn put(
        &self,
        tenant: &str,
        collection: &str,
        id: &str,
        body: &Value,
    ) -> Result<(), DemoStateError> {
        let mut map = MEMORY.lock().expect("demo state lock");
        let objects = map.entry((tenant.to_owned(), collection.to_owned())).or_default();
        match objects.iter_mut().find(|(i, _)| i == id) {
            Some((_, b)) => *b = body.clone(),
            None => objects.push((id.to_owned(), body.clone())),
        }
        Ok(())
    }

    async fn get(&self, tenant: &str, collection: &str, id: &str) -> Result<Option<Value>, DemoStateError> {
        let map = MEMORY.lock().expect("demo state lock");
        Ok(map
            .get(&(tenant.to_owned(), collection.to_owned()))
            .and_then(|objects| objects.iter().find(|(i, _)| i == id))
            .map(|(_, b)| b.clone()))
    }

    async fn list(&self, tenant: &str, collection: &str) -> Result<Vec<(String, Value)>, DemoStateError> {
        let map = MEMORY.lock().expect("demo state lock");
        Ok(map
            .get(&(tenant.to_owned(), collection.to_owned()))
            .cloned()
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn memory_state_replaces_in_place_and_is_shared_by_instances() {
        let (a, b) = (MemoryDemoState, MemoryDemoState);
        a.put("state-test", "t", "1", &json!({"v": 1})).await.unwrap();
        a.put("state-test", "t", "2", &json!({"v": 2})).await.unwrap();
        b.put("state-test", "t", "1", &json!({"v": 3})).await.unwrap();
        let listed = b.list("state-test", "t").await.unwrap();
        assert_eq!(
            listed,
            vec![("1".into(), json!({"v": 3})), ("2".into(), json!({"v": 2}))]
        );
        assert_eq!(
            a.get("state-test", "t", "2").await.unwrap(),
            Some(json!({"v": 2}))
        );
        assert_eq!(a.get("state-test", "other", "2").await.unwrap(), None);
        assert!(a.list("state-test-2", "t").await.unwrap().is_empty());
        let dynamic: std::sync::Arc<dyn DemoState> = std::sync::Arc::new(a);
        assert_eq!(format!("{:?}", Some(dynamic)), "Some(present)");
    }
}

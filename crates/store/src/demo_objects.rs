//! Objects written into demo tenants: the database side of the demo
//! provider's state (`opsledger_providers::demo::DemoState`, implemented over
//! these verbs in `opsledger-families`, since providers do not depend on the
//! store). A restore into a demo tenant writes here, so it survives a
//! restart and every node reads the same tenant.
//!
//! The store does not interpret the objects: a collection is a policy type
//! key (or the demo's group collection), a body is the JSON the demo serves.

use crate::db::sql;
use crate::{Store, StoreError};
use serde_json::Value;
use sqlx::error::ErrorKind;

/// One object written into a demo tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoObject {
    pub id: String,
    pub body: Value,
}

impl Store {
    /// Inserts or replaces an object of a demo tenant's collection. A
    /// replaced object keeps its place in [`Store::demo_objects`]. An
    /// unknown tenant is refused as `NotFound`.
    pub async fn put_demo_object(
        &self,
        tenant_id: &str,
        collection: &str,
        object_id: &str,
        body: &Value,
    ) -> Result<(), StoreError> {
        let now = self.now_ms();
        // One statement, so it is its own transaction on both databases.
        let written = self
            .pool
            .execute(
                sql(
                    "INSERT INTO demo_objects (tenant_id, collection, object_id, body, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (tenant_id, collection, object_id) \
                     DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
                )
                .bind(tenant_id)
                .bind(collection)
                .bind(object_id)
                .bind(body.to_string())
                .bind(now)
                .bind(now),
            )
            .await;
        match written {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(d)) if d.kind() == ErrorKind::ForeignKeyViolation => {
                Err(StoreError::NotFound {
                    what: "tenant",
                    id: tenant_id.to_owned(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// One object of a demo tenant's collection, as last written.
    pub async fn demo_object(
        &self,
        tenant_id: &str,
        collection: &str,
        object_id: &str,
    ) -> Result<Option<Value>, StoreError> {
        let row: Option<(String,)> = self
            .pool
            .fetch_optional(
                sql("SELECT body FROM demo_objects \
                     WHERE tenant_id = $1 AND collection = $2 AND object_id = $3")
                .bind(tenant_id)
                .bind(collection)
                .bind(object_id),
            )
            .await?;
        row.map(|(body,)| parse(object_id, &body)).transpose()
    }

    /// Every object of a demo tenant's collection, in first-write order.
    pub async fn demo_objects(
        &self,
        tenant_id: &str,
        collection: &str,
    ) -> Result<Vec<DemoObject>, StoreError> {
        let rows: Vec<(String, String)> = self
            .pool
            .fetch_all(
                sql(
                    "SELECT object_id, body FROM demo_objects WHERE tenant_id = $1 AND collection = $2 \
                     ORDER BY created_at, object_id",
                )
                .bind(tenant_id)
                .bind(collection),
            )
            .await?;
        rows.into_iter()
            .map(|(id, body)| {
                let body = parse(&id, &body)?;
                Ok(DemoObject { id, body })
            })
            .collect()
    }
}

/// A stored body is JSON the store wrote itself; anything else is corruption.
fn parse(object_id: &str, body: &str) -> Result<Value, StoreError> {
    serde_json::from_str(body)
        .map_err(|e| StoreError::Corrupt(format!("demo object {object_id} is not JSON: {e}")))
}

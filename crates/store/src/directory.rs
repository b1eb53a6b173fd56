//! Workspaces, tenants, users, memberships and API tokens: who exists and who
//! belongs where. Tokens are stored only as SHA-256 digests.

use crate::{Store, StoreError, new_id, now_ms, on_pool};
use opsledger_core::access::Role;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workspace {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    /// `demo:PROFILE`, `folder:PATH` or `graph:TENANT_ID`.
    pub provider: String,
}

fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Store {
    pub async fn create_workspace(&self, name: &str) -> Result<Workspace, StoreError> {
        let ws = Workspace {
            id: new_id(),
            name: name.to_owned(),
        };
        on_pool!(self, pool => {
            sqlx::query("INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3)")
                .bind(&ws.id)
                .bind(&ws.name)
                .bind(now_ms())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(ws)
    }

    pub async fn find_workspace_by_name(&self, name: &str) -> Result<Option<Workspace>, StoreError> {
        let row: Option<(String, String)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT id, name FROM workspaces WHERE name = $1 ORDER BY id LIMIT 1")
                .bind(name)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|(id, name)| Workspace { id, name }))
    }

    pub async fn create_tenant(
        &self,
        workspace_id: &str,
        name: &str,
        provider: &str,
    ) -> Result<Tenant, StoreError> {
        let t = Tenant {
            id: new_id(),
            workspace_id: workspace_id.to_owned(),
            name: name.to_owned(),
            provider: provider.to_owned(),
        };
        on_pool!(self, pool => {
            sqlx::query("INSERT INTO tenants (id, workspace_id, name, provider, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(&t.id)
                .bind(&t.workspace_id)
                .bind(&t.name)
                .bind(&t.provider)
                .bind(now_ms())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(t)
    }

    pub async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>, StoreError> {
        let row: Option<(String, String, String, String)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT id, workspace_id, name, provider FROM tenants WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|(id, workspace_id, name, provider)| Tenant {
            id,
            workspace_id,
            name,
            provider,
        }))
    }

    pub async fn list_tenants(&self, workspace_id: &str) -> Result<Vec<Tenant>, StoreError> {
        let rows: Vec<(String, String, String, String)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT id, workspace_id, name, provider FROM tenants WHERE workspace_id = $1 ORDER BY name")
                .bind(workspace_id)
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .map(|(id, workspace_id, name, provider)| Tenant {
                id,
                workspace_id,
                name,
                provider,
            })
            .collect())
    }

    /// Creates the user, or updates the password hash of an existing email. Returns the user id.
    pub async fn upsert_user(&self, email: &str, password_hash: &str) -> Result<String, StoreError> {
        let (id,): (String,) = on_pool!(self, pool => {
            sqlx::query_as(
                "INSERT INTO users (id, email, password_hash, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (email) DO UPDATE SET password_hash = excluded.password_hash RETURNING id",
            )
            .bind(new_id())
            .bind(email)
            .bind(password_hash)
            .bind(now_ms())
            .fetch_one(pool)
            .await?
        });
        Ok(id)
    }

    pub async fn set_membership(
        &self,
        workspace_id: &str,
        user_id: &str,
        role: Role,
    ) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO memberships (workspace_id, user_id, role) VALUES ($1, $2, $3) \
                 ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = excluded.role",
            )
            .bind(workspace_id)
            .bind(user_id)
            .bind(role.as_str())
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// The user's role in the workspace, or `None` for a non-member.
    pub async fn membership(&self, workspace_id: &str, user_id: &str) -> Result<Option<Role>, StoreError> {
        let row: Option<(String,)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT role FROM memberships WHERE workspace_id = $1 AND user_id = $2")
                .bind(workspace_id)
                .bind(user_id)
                .fetch_optional(pool)
                .await?
        });
        row.map(|(r,)| Role::parse(&r).ok_or_else(|| StoreError::Corrupt(format!("role `{r}`"))))
            .transpose()
    }

    /// Issues a new random bearer token for the user and returns it; only its digest is stored.
    pub async fn issue_token(&self, user_id: &str, label: &str) -> Result<String, StoreError> {
        let mut bytes = [0u8; 24];
        rand::rng().fill_bytes(&mut bytes);
        let token = format!("olt_{}", hex::encode(bytes));
        on_pool!(self, pool => {
            sqlx::query("INSERT INTO api_tokens (token_sha256, user_id, label, created_at) VALUES ($1, $2, $3, $4)")
                .bind(token_digest(&token))
                .bind(user_id)
                .bind(label)
                .bind(now_ms())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(token)
    }

    /// Revokes every token of the user carrying `label`.
    pub async fn revoke_tokens(&self, user_id: &str, label: &str) -> Result<u64, StoreError> {
        Ok(on_pool!(self, pool => {
            sqlx::query("DELETE FROM api_tokens WHERE user_id = $1 AND label = $2")
                .bind(user_id)
                .bind(label)
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }

    /// The user a bearer token belongs to.
    pub async fn user_for_token(&self, token: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT user_id FROM api_tokens WHERE token_sha256 = $1")
                .bind(token_digest(token))
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|(u,)| u))
    }
}

//! Workspaces, tenants, users, memberships and API tokens: who exists and who
//! belongs where. Tokens are stored only as SHA-256 digests.

use crate::db::{Tx, sql, sql_owned};
use crate::{Store, StoreError, new_id};
use opsledger_core::access::Role;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::error::ErrorKind;

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: String,
    pub email: String,
}

/// Who a bearer token belongs to, and the one workspace it may act in
/// (`None`: every workspace of its user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOwner {
    pub user_id: String,
    pub workspace_id: Option<String>,
}

/// A user's place in a workspace (OPERATIONS.md §9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Membership {
    pub role: Role,
    /// The tenants the member is restricted to (sorted by id), or `None`
    /// when the member may see and act on every tenant of the workspace.
    pub tenants: Option<Vec<String>>,
}

fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A refused write in words: a unique or foreign-key violation becomes the
/// typed error the caller names; any other error is passed on unchanged.
fn refused(
    e: sqlx::Error,
    unique: impl FnOnce() -> StoreError,
    foreign_key: impl FnOnce() -> StoreError,
) -> StoreError {
    match violation(&e) {
        Some(ErrorKind::UniqueViolation) => unique(),
        Some(ErrorKind::ForeignKeyViolation) => foreign_key(),
        _ => e.into(),
    }
}

fn violation(e: &sqlx::Error) -> Option<ErrorKind> {
    match e {
        sqlx::Error::Database(d) => Some(d.kind()),
        _ => None,
    }
}

fn not_found(what: &'static str, id: &str) -> StoreError {
    StoreError::NotFound {
        what,
        id: id.to_owned(),
    }
}

fn duplicate_tenant(workspace_id: &str, name: &str) -> StoreError {
    StoreError::Conflict(format!(
        "workspace `{workspace_id}` already has a tenant named `{name}`"
    ))
}

fn duplicate_email(email: &str) -> StoreError {
    StoreError::Conflict(format!("a user with email `{email}` already exists"))
}

/// Makes the user a member with `role`, or changes an existing member's role.
async fn upsert_role_in(
    tx: &mut Tx,
    workspace_id: &str,
    user_id: &str,
    role: Role,
) -> Result<(), StoreError> {
    tx.execute(
        sql(
            "INSERT INTO memberships (workspace_id, user_id, role) VALUES ($1, $2, $3) \
             ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = excluded.role",
        )
        .bind(workspace_id)
        .bind(user_id)
        .bind(role.as_str()),
    )
    .await?;
    Ok(())
}

impl Store {
    pub async fn create_workspace(&self, name: &str) -> Result<Workspace, StoreError> {
        let ws = Workspace {
            id: new_id(),
            name: name.to_owned(),
        };
        self.pool
            .execute(
                sql("INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3)")
                    .bind(&ws.id)
                    .bind(&ws.name)
                    .bind(self.now_ms()),
            )
            .await?;
        Ok(ws)
    }

    pub async fn get_workspace(&self, id: &str) -> Result<Option<Workspace>, StoreError> {
        self.workspace_where("id = $1", id).await
    }

    pub async fn find_workspace_by_name(&self, name: &str) -> Result<Option<Workspace>, StoreError> {
        self.workspace_where("name = $1 ORDER BY id LIMIT 1", name).await
    }

    /// The first workspace matching `condition` on the one parameter `value`.
    async fn workspace_where(
        &self,
        condition: &'static str,
        value: &str,
    ) -> Result<Option<Workspace>, StoreError> {
        let row: Option<(String, String)> = self
            .pool
            .fetch_optional(
                sql_owned(format!("SELECT id, name FROM workspaces WHERE {condition}")).bind(value),
            )
            .await?;
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
        let mut tx = self.begin_write().await?;
        let ws: Option<(String,)> = tx
            .fetch_optional(sql("SELECT id FROM workspaces WHERE id = $1").bind(workspace_id))
            .await?;
        if ws.is_none() {
            return Err(not_found("workspace", workspace_id));
        }
        let taken: Option<(String,)> = tx
            .fetch_optional(
                sql("SELECT id FROM tenants WHERE workspace_id = $1 AND name = $2")
                    .bind(workspace_id)
                    .bind(name),
            )
            .await?;
        if taken.is_some() {
            return Err(duplicate_tenant(workspace_id, name));
        }
        // The checks above answer the common case in words; a concurrent
        // insert of the same name still meets the UNIQUE constraint.
        tx.execute(
            sql("INSERT INTO tenants (id, workspace_id, name, provider, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(&t.id)
                .bind(&t.workspace_id)
                .bind(&t.name)
                .bind(&t.provider)
                .bind(self.now_ms()),
        )
        .await
        .map_err(|e| {
            refused(
                e,
                || duplicate_tenant(workspace_id, name),
                || not_found("workspace", workspace_id),
            )
        })?;
        tx.commit().await?;
        Ok(t)
    }

    pub async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>, StoreError> {
        let row: Option<(String, String, String, String)> = self
            .pool
            .fetch_optional(
                sql("SELECT id, workspace_id, name, provider FROM tenants WHERE id = $1").bind(id),
            )
            .await?;
        Ok(row.map(|(id, workspace_id, name, provider)| Tenant {
            id,
            workspace_id,
            name,
            provider,
        }))
    }

    pub async fn list_tenants(&self, workspace_id: &str) -> Result<Vec<Tenant>, StoreError> {
        let rows: Vec<(String, String, String, String)> = self
            .pool
            .fetch_all(
                sql("SELECT id, workspace_id, name, provider FROM tenants WHERE workspace_id = $1 ORDER BY name")
                    .bind(workspace_id),
            )
            .await?;
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

    /// Creates a user; an email already taken is a [`StoreError::Conflict`].
    pub async fn create_user(&self, email: &str, password_hash: &str) -> Result<User, StoreError> {
        let user = User {
            id: new_id(),
            email: email.to_owned(),
        };
        let mut tx = self.begin_write().await?;
        let taken: Option<(String,)> = tx
            .fetch_optional(sql("SELECT id FROM users WHERE email = $1").bind(email))
            .await?;
        if taken.is_some() {
            return Err(duplicate_email(email));
        }
        tx.execute(
            sql("INSERT INTO users (id, email, password_hash, created_at) VALUES ($1, $2, $3, $4)")
                .bind(&user.id)
                .bind(email)
                .bind(password_hash)
                .bind(self.now_ms()),
        )
        .await
        .map_err(|e| match violation(&e) {
            Some(ErrorKind::UniqueViolation) => duplicate_email(email),
            _ => e.into(),
        })?;
        tx.commit().await?;
        Ok(user)
    }

    pub async fn find_user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let row: Option<(String, String)> = self
            .pool
            .fetch_optional(sql("SELECT id, email FROM users WHERE email = $1").bind(email))
            .await?;
        Ok(row.map(|(id, email)| User { id, email }))
    }

    /// Creates the user, or updates the password hash of an existing email. Returns the user id.
    pub async fn upsert_user(&self, email: &str, password_hash: &str) -> Result<String, StoreError> {
        let (id,): (String,) = self
            .pool
            .fetch_one(
                sql(
                    "INSERT INTO users (id, email, password_hash, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (email) DO UPDATE SET password_hash = excluded.password_hash RETURNING id",
                )
                .bind(new_id())
                .bind(email)
                .bind(password_hash)
                .bind(self.now_ms()),
            )
            .await?;
        Ok(id)
    }

    pub async fn set_membership(
        &self,
        workspace_id: &str,
        user_id: &str,
        role: Role,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        upsert_role_in(&mut tx, workspace_id, user_id, role).await?;
        tx.commit().await
    }

    /// Makes the user a member of the workspace with `role`, restricted to
    /// `tenants` (ids of tenants of that workspace; empty = every tenant).
    /// Replaces an existing membership's role and restriction, in one
    /// transaction. An unknown workspace, user or tenant is a
    /// [`StoreError::NotFound`]; a tenant of another workspace is a
    /// [`StoreError::TenantOutsideWorkspace`].
    pub async fn add_member(
        &self,
        workspace_id: &str,
        user_id: &str,
        role: Role,
        tenants: &[String],
    ) -> Result<Membership, StoreError> {
        let mut wanted = tenants.to_vec();
        wanted.sort();
        wanted.dedup();
        let mut tx = self.begin_write().await?;
        let ws: Option<(String,)> = tx
            .fetch_optional(sql("SELECT id FROM workspaces WHERE id = $1").bind(workspace_id))
            .await?;
        if ws.is_none() {
            return Err(not_found("workspace", workspace_id));
        }
        let user: Option<(String,)> = tx
            .fetch_optional(sql("SELECT id FROM users WHERE id = $1").bind(user_id))
            .await?;
        if user.is_none() {
            return Err(not_found("user", user_id));
        }
        for t in &wanted {
            let of: Option<(String,)> = tx
                .fetch_optional(sql("SELECT workspace_id FROM tenants WHERE id = $1").bind(t))
                .await?;
            match of {
                None => return Err(not_found("tenant", t)),
                Some((w,)) if w != workspace_id => {
                    return Err(StoreError::TenantOutsideWorkspace {
                        tenant_id: t.clone(),
                        workspace_id: workspace_id.to_owned(),
                    });
                }
                Some(_) => {}
            }
        }
        upsert_role_in(&mut tx, workspace_id, user_id, role).await?;
        tx.execute(
            sql("DELETE FROM membership_tenants WHERE workspace_id = $1 AND user_id = $2")
                .bind(workspace_id)
                .bind(user_id),
        )
        .await?;
        for t in &wanted {
            tx.execute(
                sql("INSERT INTO membership_tenants (workspace_id, user_id, tenant_id) VALUES ($1, $2, $3)")
                    .bind(workspace_id)
                    .bind(user_id)
                    .bind(t),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Membership {
            role,
            tenants: (!wanted.is_empty()).then_some(wanted),
        })
    }

    /// The user's membership of the workspace, or `None` for a non-member.
    /// One statement, so role and restriction are read from one state.
    pub async fn membership(
        &self,
        workspace_id: &str,
        user_id: &str,
    ) -> Result<Option<Membership>, StoreError> {
        let rows: Vec<(String, Option<String>)> = self
            .pool
            .fetch_all(
                sql("SELECT m.role, mt.tenant_id FROM memberships m \
                     LEFT JOIN membership_tenants mt ON mt.workspace_id = m.workspace_id AND mt.user_id = m.user_id \
                     WHERE m.workspace_id = $1 AND m.user_id = $2 ORDER BY mt.tenant_id")
                .bind(workspace_id)
                .bind(user_id),
            )
            .await?;
        let Some((r, _)) = rows.first() else {
            return Ok(None);
        };
        let role = Role::parse(r).ok_or_else(|| StoreError::Corrupt(format!("role `{r}`")))?;
        let tenants: Vec<String> = rows.into_iter().filter_map(|(_, t)| t).collect();
        Ok(Some(Membership {
            role,
            tenants: (!tenants.is_empty()).then_some(tenants),
        }))
    }

    /// Issues a new random bearer token for the user and returns it; only its digest is stored.
    /// The token does not expire.
    pub async fn issue_token(&self, user_id: &str, label: &str) -> Result<String, StoreError> {
        self.issue_token_expiring(user_id, label, None).await
    }

    /// [`Store::issue_token`] with an expiry (ms since the Unix epoch; `None`
    /// = never): from then on [`Store::user_for_token`] no longer knows it.
    pub async fn issue_token_expiring(
        &self,
        user_id: &str,
        label: &str,
        expires_at: Option<i64>,
    ) -> Result<String, StoreError> {
        self.issue_token_with(user_id, label, None, expires_at).await
    }

    /// A token that acts in `workspace_id` only (what `admin create-token
    /// --workspace` issues): every other workspace is a `404` to it.
    pub async fn issue_workspace_token(
        &self,
        user_id: &str,
        label: &str,
        workspace_id: &str,
        expires_at: Option<i64>,
    ) -> Result<String, StoreError> {
        self.issue_token_with(user_id, label, Some(workspace_id), expires_at)
            .await
    }

    async fn issue_token_with(
        &self,
        user_id: &str,
        label: &str,
        workspace_id: Option<&str>,
        expires_at: Option<i64>,
    ) -> Result<String, StoreError> {
        let mut bytes = [0u8; 24];
        rand::rng().fill_bytes(&mut bytes);
        let token = format!("olt_{}", hex::encode(bytes));
        self.pool
            .execute(
                sql("INSERT INTO api_tokens (token_sha256, user_id, label, created_at, expires_at, workspace_id) \
                     VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(token_digest(&token))
                .bind(user_id)
                .bind(label)
                .bind(self.now_ms())
                .bind(expires_at)
                .bind(workspace_id),
            )
            .await
            .map_err(|e| {
                refused(
                    e,
                    || StoreError::Conflict("token collision".into()),
                    || not_found("user", user_id),
                )
            })?;
        Ok(token)
    }

    /// Revokes every token of the user carrying `label`.
    pub async fn revoke_tokens(&self, user_id: &str, label: &str) -> Result<u64, StoreError> {
        Ok(self
            .pool
            .execute(
                sql("DELETE FROM api_tokens WHERE user_id = $1 AND label = $2")
                    .bind(user_id)
                    .bind(label),
            )
            .await?)
    }

    /// The user a bearer token belongs to; `None` for an unknown, revoked or expired token.
    pub async fn user_for_token(&self, token: &str) -> Result<Option<String>, StoreError> {
        Ok(self.token_owner(token).await?.map(|o| o.user_id))
    }

    /// Whose a bearer token is and where it may act; `None` for an unknown,
    /// revoked or expired token.
    pub async fn token_owner(&self, token: &str) -> Result<Option<TokenOwner>, StoreError> {
        let row: Option<(String, Option<String>)> = self
            .pool
            .fetch_optional(
                sql("SELECT user_id, workspace_id FROM api_tokens \
                     WHERE token_sha256 = $1 AND (expires_at IS NULL OR expires_at > $2)")
                .bind(token_digest(token))
                .bind(self.now_ms()),
            )
            .await?;
        Ok(row.map(|(user_id, workspace_id)| TokenOwner {
            user_id,
            workspace_id,
        }))
    }
}

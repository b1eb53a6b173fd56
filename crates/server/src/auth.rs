//! Who is calling, and may they act here (OPERATIONS.md §9).
//! No or unknown token → 401; not a member of the workspace → 404 (the
//! workspace might as well not exist); member without the capability → 403.

use crate::AppState;
use crate::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use opsledger_core::access::{Capability, Role, role_has};

/// An authenticated caller.
pub struct Caller {
    pub user_id: String,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "missing bearer token",
                )
            })?;
        let token = header.strip_prefix("Bearer ").ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "expected `Bearer TOKEN`",
            )
        })?;
        let user_id = state.store.user_for_token(token.trim()).await?.ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "unknown or revoked token",
            )
        })?;
        Ok(Caller { user_id })
    }
}

impl Caller {
    /// The caller's role in `workspace_id`, requiring `cap`.
    pub async fn require(
        &self,
        state: &AppState,
        workspace_id: &str,
        cap: Capability,
    ) -> Result<Role, ApiError> {
        let role = state
            .store
            .membership(workspace_id, &self.user_id)
            .await?
            .ok_or_else(|| ApiError::not_found("workspace not found"))?;
        if !role_has(role, cap) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("role `{}` lacks the capability {cap:?}", role.as_str()),
            ));
        }
        Ok(role)
    }
}

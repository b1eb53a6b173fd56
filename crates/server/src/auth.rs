//! Who is calling, and may they act here (OPERATIONS.md §9).
//! No or unknown token → 401; not a member of the workspace → 404 (the
//! workspace might as well not exist); member without the capability → 403.

use crate::AppState;
use crate::error::ApiError;
use crate::retry;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use opsledger_core::access::{Capability, Role, role_has};
use opsledger_store::Visibility;

/// An authenticated caller.
pub struct Caller {
    pub user_id: String,
    /// The one workspace the caller's token may act in (`None`: any of the
    /// user's); every other workspace is a `404` to it.
    pub token_workspace: Option<String>,
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
        let token = bearer_token(header).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "expected `Bearer TOKEN`",
            )
        })?;
        let owner = retry::read(move || state.store.token_owner(token))
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "unknown or revoked token",
                )
            })?;
        Ok(Caller {
            user_id: owner.user_id,
            token_workspace: owner.workspace_id,
        })
    }
}

/// The token of an `Authorization: Bearer TOKEN` value. The scheme is
/// case-insensitive (RFC 9110 §11.1: `bearer`, `BEARER`); the token is not.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// What a member may see and do in one workspace: the one access check of
/// every route (OPERATIONS.md §9).
#[derive(Debug, Clone)]
pub struct Access {
    pub role: Role,
    /// The runs the member may see: the workspace, restricted to some of its
    /// tenants for a restricted member (their other runs are `404`).
    pub visibility: Visibility,
}

impl Access {
    /// Whether the member may see and act on `tenant_id` (`None`: a
    /// workspace-level run, which a restricted member may not start).
    pub fn covers_tenant(&self, tenant_id: Option<&str>) -> bool {
        match (&self.visibility.tenants, tenant_id) {
            (None, _) => true,
            (Some(allowed), Some(t)) => allowed.iter().any(|a| a == t),
            (Some(_), None) => false,
        }
    }

    /// `403` unless the role has `cap`.
    /// Whether the caller holds `cap` (for what a response shows, not
    /// whether it is given: that is [`Access::require`]).
    pub fn has(&self, cap: Capability) -> bool {
        role_has(self.role, cap)
    }

    pub fn require(&self, cap: Capability) -> Result<(), ApiError> {
        if role_has(self.role, cap) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("role `{}` lacks the capability {cap:?}", self.role.as_str()),
            ))
        }
    }
}

/// `400 invalid_id` unless `id` is a UUID (every id opsledger issues is one):
/// a malformed id is refused before any lookup.
pub fn check_id(what: &str, id: &str) -> Result<(), ApiError> {
    // Only the form opsledger writes, lower-case and hyphenated: the uuid
    // crate also takes capitals, braces, URNs and bare hex, none of which
    // would match a stored id, so they are refused alike rather than 404.
    let shape_ok = uuid::Uuid::try_parse(id).is_ok_and(|u| u.hyphenated().to_string() == id);
    if shape_ok {
        Ok(())
    } else {
        let shown: String = id.chars().take(40).collect();
        Err(ApiError::bad_request(
            "invalid_id",
            format!(
                "{what} {shown:?} is not a valid id (a lower-case hyphenated UUID, as opsledger issues them)"
            ),
        ))
    }
}

impl Caller {
    /// The caller's access to `workspace_id`, requiring `cap`: `404` for a
    /// non-member (the workspace might as well not exist), `403` for a
    /// member without the capability.
    pub async fn require(
        &self,
        state: &AppState,
        workspace_id: &str,
        cap: Capability,
    ) -> Result<Access, ApiError> {
        check_id("workspace id", workspace_id)?;
        if self.token_workspace.as_deref().is_some_and(|w| w != workspace_id) {
            return Err(ApiError::not_found("workspace not found"));
        }
        let user = &self.user_id;
        let membership = retry::read(move || state.store.membership(workspace_id, user))
            .await?
            .ok_or_else(|| ApiError::not_found("workspace not found"))?;
        let access = Access {
            role: membership.role,
            visibility: Visibility {
                workspace_id: workspace_id.to_owned(),
                tenants: membership.tenants,
            },
        };
        access.require(cap)?;
        Ok(access)
    }
}

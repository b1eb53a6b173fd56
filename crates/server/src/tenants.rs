//! `GET/POST /api/v1/workspaces/{ws}/tenants`: the tenants of a workspace,
//! with their provider kind (a spec holds no secret: Graph credentials come
//! from the environment), and adding one (admin) after its provider is
//! validated — a folder that exists and can be read, Graph credentials that
//! obtain a token.

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::retry;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use opsledger_core::access::Capability;
use opsledger_store::StoreError;
use opsledger_store::directory::Tenant;
use serde::Deserialize;
use serde_json::{Value, json};

/// Longest tenant name accepted, in characters.
pub const MAX_TENANT_NAME_CHARS: usize = 200;

fn tenant_json(t: &Tenant) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "provider": t.provider,
        "provider_kind": opsledger_providers::kind_of(&t.provider),
    })
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let access = caller.require(&state, &ws, Capability::OperationsView).await?;
    let (store, ws_id) = (&state.store, &ws);
    let tenants = retry::read(move || store.list_tenants(ws_id)).await?;
    let items: Vec<Value> = tenants
        .iter()
        .filter(|t| access.covers_tenant(Some(&t.id)))
        .map(tenant_json)
        .collect();
    Ok(Json(json!({ "items": items })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    name: String,
    provider: String,
}

/// A tenant name people can read: 1 to [`MAX_TENANT_NAME_CHARS`]
/// characters, no control characters, not blank.
pub fn check_tenant_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("a tenant needs a name".into());
    }
    if name.chars().count() > MAX_TENANT_NAME_CHARS {
        return Err(format!(
            "a tenant name is at most {MAX_TENANT_NAME_CHARS} characters"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("a tenant name cannot hold control characters".into());
    }
    // Invisible and direction-changing characters make look-alike names.
    let invisible = |c: char| {
        matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}' | '\u{FEFF}' | '\u{00AD}')
    };
    if name.chars().any(invisible) {
        return Err("a tenant name cannot hold invisible or direction-changing characters".into());
    }
    Ok(())
}

pub async fn add(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let access = caller.require(&state, &ws, Capability::OperationsView).await?;
    access.require(Capability::OperationsAdmin)?;
    let body: AddBody = serde_json::from_slice(&body).map_err(|e| {
        let message: String = e.to_string().chars().take(300).collect();
        ApiError::bad_request("invalid_body", format!("invalid request body: {message}"))
    })?;
    check_tenant_name(&body.name).map_err(|m| ApiError::bad_request("invalid_name", m))?;
    opsledger_providers::validate(&body.provider, &body.name, &state.providers)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "provider_invalid",
                format!("provider `{}` cannot be used: {e}", shown(&body.provider)),
            )
        })?;
    let create = || state.store.create_tenant(&ws, &body.name, &body.provider);
    let created = match create().await {
        Err(e) if e.write_may_be_retried() => create().await,
        other => other,
    };
    let tenant = created.map_err(|e| match e {
        StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "tenant_exists", m),
        other => ApiError::from(other),
    })?;
    Ok((StatusCode::CREATED, Json(tenant_json(&tenant))))
}

/// A spec as echoed in an error: at most 200 characters.
fn shown(spec: &str) -> String {
    spec.chars().take(200).collect()
}

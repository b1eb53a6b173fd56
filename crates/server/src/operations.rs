//! `/api/v1/workspaces/{ws}/operations…` and `/api/v1/operation-types`.

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::render::run_json;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use opsledger_core::access::{Capability, capability_to_start};
use opsledger_core::catalog::Reconciliation;
use opsledger_core::{Outcome, ProgressKind, Run, RunStatus, RunType, Scope};
use opsledger_store::{CompleteResult, Completion, CreateResult, NewRun, RunFilter};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;

/// Body of a start. Unknown fields (e.g. `summary_counts`) are refused by name:
/// counts are written only by the work itself.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    #[serde(rename = "type")]
    run_type: String,
    #[serde(default)]
    tenant_id: Option<String>,
    #[serde(default)]
    params: Value,
}

async fn render(state: &AppState, run: &Run) -> Result<Value, ApiError> {
    let children = if run.run_type.progress_kind() == ProgressKind::Composite {
        state.store.children_of(&run.id).await?
    } else {
        Vec::new()
    };
    Ok(serde_json::to_value(run_json(run, &children)).expect("json"))
}

pub async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(&state, &ws, Capability::OperationsView).await?;
    let body: StartBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("invalid request body: {e}")))?;
    let run_type: RunType = body
        .run_type
        .parse()
        .map_err(|e| ApiError::bad_request("unknown_operation_type", format!("{e}")))?;
    caller.require(&state, &ws, capability_to_start(run_type)).await?;
    match (run_type.scope(), &body.tenant_id) {
        (Scope::Tenant, None) => {
            return Err(ApiError::bad_request(
                "tenant_required",
                format!("{run_type} needs `tenant_id`"),
            ));
        }
        (Scope::Workspace, Some(_)) => {
            return Err(ApiError::bad_request(
                "tenant_not_allowed",
                format!("{run_type} is workspace-level; omit `tenant_id`"),
            ));
        }
        _ => {}
    }
    if let Some(tenant_id) = &body.tenant_id {
        let tenant = state.store.get_tenant(tenant_id).await?;
        if tenant.is_none_or(|t| t.workspace_id != ws) {
            return Err(ApiError::not_found("tenant not found"));
        }
    }
    if !state.registry.supports(run_type) {
        return Err(ApiError::bad_request(
            "operation_type_unavailable",
            format!("{run_type} cannot be executed by this deployment yet"),
        ));
    }
    let params = opsledger_families::params::validate(run_type, &body.params)
        .map_err(|e| ApiError::bad_request("invalid_params", e.to_string()))?;
    let created = state
        .store
        .create_run(NewRun {
            workspace_id: ws,
            tenant_id: body.tenant_id,
            parent_id: None,
            run_type,
            initiator: format!("user:{}", caller.user_id),
            context: json!({ "params": params }),
        })
        .await?;
    if matches!(created, CreateResult::Created(_)) {
        state.wake.notify_one();
    }
    let run = created.into_run();
    Ok((StatusCode::ACCEPTED, Json(render(&state, &run).await?)).into_response())
}

fn parse_filter(q: &HashMap<String, String>) -> Result<RunFilter, ApiError> {
    let bad = |k: &str, v: &str, e: String| ApiError::bad_request("invalid_query", format!("`{k}={v}`: {e}"));
    let mut f = RunFilter {
        limit: 50,
        ..Default::default()
    };
    for (k, v) in q {
        match k.as_str() {
            "tenant_id" => f.tenant_id = Some(v.clone()),
            "type" => f.run_type = Some(v.parse().map_err(|e| bad(k, v, format!("{e}")))?),
            "status" => f.status = Some(v.parse::<RunStatus>().map_err(|e| bad(k, v, e.to_string()))?),
            "outcome" => f.outcome = Some(v.parse::<Outcome>().map_err(|e| bad(k, v, e.to_string()))?),
            "limit" => {
                f.limit = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=500).contains(n))
                    .ok_or_else(|| bad(k, v, "must be 1 to 500".into()))?
            }
            "cursor" => f.cursor = Some(v.clone()),
            "created_after" | "created_before" => {
                let t = chrono::DateTime::parse_from_rfc3339(v)
                    .map_err(|e| bad(k, v, format!("not an RFC 3339 time: {e}")))?
                    .timestamp_millis();
                if k == "created_after" {
                    f.created_after = Some(t)
                } else {
                    f.created_before = Some(t)
                }
            }
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!(
                        "unknown query parameter `{k}` (tenant_id, type, status, outcome, created_after, created_before, limit, cursor)"
                    ),
                ));
            }
        }
    }
    Ok(f)
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&state, &ws, Capability::OperationsView).await?;
    let filter = parse_filter(&q)?;
    let (runs, next) = state.store.list_runs(&ws, &filter).await?;
    let mut items = Vec::with_capacity(runs.len());
    for run in &runs {
        items.push(render(&state, run).await?);
    }
    Ok(Json(json!({ "items": items, "next_cursor": next })))
}

pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&state, &ws, Capability::OperationsView).await?;
    let run = state
        .store
        .get_run_in_workspace(&ws, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("run not found"))?;
    Ok(Json(render(&state, &run).await?))
}

pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&state, &ws, Capability::OperationsView).await?;
    let run = state
        .store
        .get_run_in_workspace(&ws, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("run not found"))?;
    caller
        .require(&state, &ws, capability_to_start(run.run_type))
        .await?;
    let completion = Completion::new(Outcome::Cancelled).with_patch(opsledger_store::ContextPatch::new(
        ["cancellation"],
        json!({"by": format!("user:{}", caller.user_id), "at": opsledger_store::now_ms()}),
    ));
    match state.store.complete_run(&id, completion).await? {
        CompleteResult::Completed(run) => Ok(Json(render(&state, &run).await?)),
        CompleteResult::AlreadyCompleted(run) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_completed",
            format!("run {} already completed as {}", run.id, run.outcome),
        )),
        CompleteResult::NotReady(_) => unreachable!("an unconditional completion is always ready"),
    }
}

pub async fn operation_types(State(state): State<AppState>) -> Json<Value> {
    let types: Vec<Value> = RunType::ALL
        .iter()
        .map(|t| {
            json!({
                "type": t.as_str(),
                "scope": t.scope(),
                "progress": t.progress_kind(),
                "params": opsledger_families::params::specs(*t),
                "reconciliation_adapter": t.reconciliation() == Reconciliation::Adapter,
                "available": state.registry.supports(*t),
            })
        })
        .collect();
    Json(json!({ "items": types }))
}

/// Body of an admin force-close.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForceCloseBody {
    outcome: String,
    reason: String,
}

/// An admin closes a non-terminal run with an outcome and a reason, recorded
/// in `context.reconciliation` like a reconciliation.
pub async fn force_close(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    caller.require(&state, &ws, Capability::OperationsView).await?;
    state
        .store
        .get_run_in_workspace(&ws, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("run not found"))?;
    caller.require(&state, &ws, Capability::OperationsAdmin).await?;
    let body: ForceCloseBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("invalid request body: {e}")))?;
    let outcome = body
        .outcome
        .parse::<Outcome>()
        .ok()
        .filter(|o| o.is_terminal())
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_outcome",
                format!(
                    "`{}` is not a terminal outcome (succeeded, partially_succeeded, blocked, failed, cancelled)",
                    body.outcome
                ),
            )
        })?;
    if body.reason.trim().is_empty() {
        return Err(ApiError::bad_request(
            "reason_required",
            "a force-close needs a reason",
        ));
    }
    let by = format!("user:{}", caller.user_id);
    match state
        .store
        .force_close(&id, outcome, body.reason.trim(), &by)
        .await?
    {
        CompleteResult::Completed(run) => Ok(Json(render(&state, &run).await?)),
        CompleteResult::AlreadyCompleted(run) | CompleteResult::NotReady(run) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_completed",
            format!("run {} already completed as {}", run.id, run.outcome),
        )),
    }
}

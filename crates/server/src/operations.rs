//! `/api/v1/workspaces/{ws}/operations…` and `/api/v1/operation-types`.
//!
//! Every handler checks access first ([`Caller::require`]: `404` outside the
//! workspace, `403` without the capability), looks runs up only through the
//! caller's [`Visibility`] (a restricted member's other tenants are `404`),
//! and validates its input before any run exists. Store calls go through
//! [`retry`]: a transient database error is retried once (writes only when
//! they cannot have committed), else `503`.

use crate::AppState;
use crate::auth::{Access, Caller, check_id};
use crate::error::ApiError;
use crate::render::run_json;
use crate::retry;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use opsledger_core::access::{Capability, capability_to_start};
use opsledger_core::catalog::Reconciliation;
use opsledger_core::{Outcome, ProgressKind, Run, RunStatus, RunType, Scope};
use opsledger_engine::ForceCloseError;
use opsledger_store::{CompleteResult, CreateResult, NewRun, RunFilter};
use serde::Deserialize;
use serde_json::{Value, json};

/// Largest list response body (bytes of JSON items): a page stops early,
/// with its `next_cursor`, rather than grow past it.
pub const MAX_LIST_BYTES: usize = 4 * 1024 * 1024;
/// Default and largest `limit` of a list.
pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;

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

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let message: String = e.to_string().chars().take(300).collect();
        ApiError::bad_request("invalid_body", format!("invalid request body: {message}"))
    })
}

/// A composite run's children (progress is computed from them); none otherwise.
async fn children_of(state: &AppState, run: &Run) -> Result<Vec<Run>, ApiError> {
    if run.run_type.progress_kind() == ProgressKind::Composite {
        retry::read(move || state.store.children_of(&run.id)).await
    } else {
        Ok(Vec::new())
    }
}

async fn render(state: &AppState, run: &Run) -> Result<Value, ApiError> {
    let children = children_of(state, run).await?;
    Ok(serde_json::to_value(run_json(run, &children)).expect("json"))
}

/// The run `id` if the caller may see it, else `404` — one lookup keyed by
/// the caller's visibility and the id, so an id of another workspace or
/// tenant and an id that exists nowhere take the same path.
pub(crate) async fn visible_run(state: &AppState, access: &Access, id: &str) -> Result<Run, ApiError> {
    check_id("run id", id)?;
    retry::read(move || state.store.visible_run(&access.visibility, id))
        .await?
        .ok_or_else(|| ApiError::not_found("run not found"))
}

pub async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let access = caller.require(&state, &ws, Capability::OperationsView).await?;
    let body: StartBody = parse_body(&body)?;
    let run_type: RunType = body.run_type.parse().map_err(|_| {
        let shown: String = body.run_type.chars().take(64).collect();
        ApiError::bad_request(
            "unknown_operation_type",
            format!("unknown operation type {shown:?} (GET /api/v1/operation-types lists them)"),
        )
    })?;
    access.require(capability_to_start(run_type))?;
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
        (Scope::Workspace, None) if !access.covers_tenant(None) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "{run_type} acts on every tenant; a member restricted to some tenants cannot start it"
                ),
            ));
        }
        _ => {}
    }
    if let Some(tenant_id) = &body.tenant_id {
        check_id("tenant_id", tenant_id)?;
        let store = &state.store;
        let tenant = retry::read(move || store.get_tenant(tenant_id)).await?;
        if tenant.is_none_or(|t| t.workspace_id != ws) || !access.covers_tenant(Some(tenant_id)) {
            return Err(ApiError::not_found("tenant not found"));
        }
    }
    if !state.registry.supports(run_type) {
        return Err(ApiError::bad_request(
            "operation_type_unavailable",
            format!("{run_type} cannot be executed by this deployment yet"),
        ));
    }
    let params = opsledger_core::params::validate(run_type, &body.params)
        .map_err(|e| ApiError::bad_request(e.code(), e.to_string()))?;
    crate::named_artifacts::check_start(&state, &access, run_type, body.tenant_id.as_deref(), &params)
        .await?;
    let new = NewRun {
        workspace_id: ws,
        tenant_id: body.tenant_id,
        parent_id: None,
        run_type,
        initiator: format!("user:{}", caller.user_id),
        context: json!({ "params": params }),
    };
    let store = &state.store;
    let created = retry::write(|| store.create_run(new.clone())).await?;
    let run = match created {
        CreateResult::Created(run) => {
            state.wake.notify_one();
            run
        }
        CreateResult::AlreadyActive(run) => run,
        CreateResult::ActiveRunDiffers(active) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "active_run_differs",
                format!(
                    "run {} ({run_type}) is already active here with other parameters; wait for it \
                     to finish or cancel it, then start again",
                    active.id
                ),
            ));
        }
    };
    Ok((StatusCode::ACCEPTED, Json(render(&state, &run).await?)).into_response())
}

const QUERY_KEYS: &str = "tenant_id, type, status, outcome, created_after, created_before, limit, cursor";

/// The list's query string, strictly: every key known and given once.
fn parse_filter(query: Option<&str>) -> Result<RunFilter, ApiError> {
    let shown = |v: &str| v.chars().take(64).collect::<String>();
    let bad = |k: &str, v: &str, e: String| {
        ApiError::bad_request("invalid_query", format!("`{k}={}`: {e}", shown(v)))
    };
    let mut f = RunFilter {
        limit: DEFAULT_LIMIT,
        ..Default::default()
    };
    let mut seen: Vec<String> = Vec::new();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if seen.iter().any(|s| *s == k) {
            return Err(ApiError::bad_request(
                "duplicate_query_param",
                format!("query parameter `{}` is given more than once", shown(&k)),
            ));
        }
        seen.push(k.to_string());
        match k.as_ref() {
            "tenant_id" => {
                check_id("tenant_id", &v).map_err(|e| bad(&k, &v, e.message))?;
                f.tenant_id = Some(v.to_string())
            }
            "type" => f.run_type = Some(v.parse().map_err(|e| bad(&k, &v, format!("{e}")))?),
            "status" => f.status = Some(v.parse::<RunStatus>().map_err(|e| bad(&k, &v, e.to_string()))?),
            "outcome" => f.outcome = Some(v.parse::<Outcome>().map_err(|e| bad(&k, &v, e.to_string()))?),
            "limit" => {
                f.limit = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| bad(&k, &v, format!("must be 1 to {MAX_LIMIT}")))?
            }
            "cursor" => f.cursor = Some(crate::paging::id_cursor(&v)?),
            "created_after" | "created_before" => {
                let t = chrono::DateTime::parse_from_rfc3339(&v)
                    .map_err(|e| bad(&k, &v, format!("not an RFC 3339 time: {e}")))?
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
                    format!("unknown query parameter `{}` ({QUERY_KEYS})", shown(&k)),
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
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let access = caller.require(&state, &ws, Capability::OperationsView).await?;
    let filter = parse_filter(query.as_deref())?;
    let (runs, mut next) = {
        let (store, vis, filter) = (&state.store, &access.visibility, &filter);
        retry::read(move || store.list_runs(vis, filter)).await?
    };
    // Each item is serialized once, straight into the body, which stops
    // growing (a short page with its cursor) before it passes the limit.
    let mut body = Vec::with_capacity(64 * 1024);
    body.extend_from_slice(b"{\"items\":[");
    for (i, run) in runs.iter().enumerate() {
        let children = children_of(&state, run).await?;
        let item = serde_json::to_vec(&run_json(run, &children)).expect("json");
        if i > 0 && body.len() + item.len() > MAX_LIST_BYTES {
            // The client continues after the last item sent.
            next = Some(runs[i - 1].id.clone());
            break;
        }
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&item);
    }
    body.extend_from_slice(b"],\"next_cursor\":");
    body.extend_from_slice(&serde_json::to_vec(&next).expect("json"));
    body.push(b'}');
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let access = caller.require(&state, &ws, Capability::OperationsView).await?;
    let run = visible_run(&state, &access, &id).await?;
    Ok(Json(render(&state, &run).await?))
}

pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let access = caller.require(&state, &ws, Capability::OperationsView).await?;
    let run = visible_run(&state, &access, &id).await?;
    access.require(capability_to_start(run.run_type))?;
    let by = format!("user:{}", caller.user_id);
    let (store, id, by) = (&state.store, id.as_str(), by.as_str());
    let result = retry::write(move || {
        let patch = opsledger_store::ContextPatch::new(
            ["cancellation"],
            json!({"by": by, "at": opsledger_store::now_ms()}),
        );
        store.cancel_run(id, patch)
    })
    .await?;
    match result {
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
                "params": opsledger_core::params::specs(*t),
                "reconciliation_adapter": t.reconciliation() == Reconciliation::Adapter,
                "available": state.registry.supports(*t),
            })
        })
        .collect();
    let policy_types: Vec<Value> = opsledger_core::policy_types::POLICY_TYPES
        .iter()
        .map(|t| json!({"key": t.key, "label": t.label, "graph_path": t.graph_path}))
        .collect();
    Json(json!({ "items": types, "policy_types": policy_types }))
}

/// Body of an admin force-close.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForceCloseBody {
    outcome: String,
    reason: String,
}

/// An admin closes a non-terminal run (OPERATIONS.md §8): `failed` or
/// `cancelled` with a reason, `blocked` only before any unit was recorded,
/// a success only on the proof its adapter finds now; recorded in
/// `context.reconciliation` like a reconciliation.
pub async fn force_close(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let access = caller.require(&state, &ws, Capability::OperationsView).await?;
    let run = visible_run(&state, &access, &id).await?;
    access.require(Capability::OperationsAdmin)?;
    let body: ForceCloseBody = parse_body(&body)?;
    let outcome = body
        .outcome
        .parse::<Outcome>()
        .ok()
        .filter(|o| o.is_terminal())
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_outcome",
                format!(
                    "{:?} is not a terminal outcome (succeeded, partially_succeeded, blocked, failed, cancelled)",
                    body.outcome.chars().take(64).collect::<String>()
                ),
            )
        })?;
    let reason = body.reason.as_str();
    let by = format!("user:{}", caller.user_id);
    // A write that reads its proof first: not retried (the close may have
    // committed); a transient failure is a 503 the admin can retry.
    match opsledger_engine::force_close(&state.store, &state.registry, &run, outcome, reason, &by).await {
        Ok(run) => Ok(Json(render(&state, &run).await?)),
        Err(e) => Err(force_close_error(e)),
    }
}

fn force_close_error(e: ForceCloseError) -> ApiError {
    match e {
        ForceCloseError::NotFound(_) => ApiError::not_found("run not found"),
        ForceCloseError::AlreadyCompleted(run) => ApiError::new(
            StatusCode::CONFLICT,
            "already_completed",
            format!("run {} already completed as {}", run.id, run.outcome),
        ),
        ForceCloseError::Refused(r) => {
            let status = if r.is_bad_request() {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::CONFLICT
            };
            ApiError::new(status, r.code(), r.to_string())
        }
        ForceCloseError::Moved(id) => ApiError::new(
            StatusCode::CONFLICT,
            "run_changed",
            format!("run {id} moved while its proof was being read; look at it again and retry"),
        ),
        ForceCloseError::Store(e) => e.into(),
    }
}

//! `/api/v1/workspaces/{ws}/schedules…`: a run type started on a cron slot,
//! for one tenant or for every tenant of the workspace. Reading needs view;
//! creating, changing and deleting need admin. A member restricted to some
//! tenants sees and manages only the schedules of those tenants (an
//! all-tenant schedule acts on tenants they cannot see: it is a `404` to
//! them, as is a schedule of another workspace).
//!
//! Everything is checked before anything is stored: the pattern and its
//! time zone (`core/src/schedule.rs`), the run type (one this deployment
//! executes), the runs' parameters (the type's catalog entry), the tenant.

use crate::AppState;
use crate::auth::{Access, Caller, check_id};
use crate::error::ApiError;
use crate::render::ts;
use crate::retry;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use opsledger_core::RunType;
use opsledger_core::access::Capability;
use opsledger_core::schedule::Slots;
use opsledger_store::StoreError;
use opsledger_store::schedules::{Schedule, ScheduleSpec, SlotRecord};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The run types a schedule may start.
pub const SCHEDULABLE: [RunType; 2] = [RunType::BackupScheduleExecute, RunType::BaselineCompare];
/// Largest `retention_keep`.
pub const MAX_RETENTION: u64 = 1000;
/// Slots of history shown with a schedule.
pub const HISTORY: u32 = 50;

/// A create's body; a change's body is the same with every field optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    name: Option<String>,
    run_type: Option<String>,
    /// `null` (or absent at create): every tenant of the workspace.
    #[serde(default, deserialize_with = "present")]
    tenant_id: Option<Option<String>>,
    cron: Option<String>,
    timezone: Option<String>,
    params: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    retention_keep: Option<Option<u64>>,
    enabled: Option<bool>,
}

/// A field given as `null` is `Some(None)`, absent is `None`.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Some(Option::deserialize(d)?))
}

fn parse_body(body: &[u8]) -> Result<Body, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let message: String = e.to_string().chars().take(300).collect();
        ApiError::bad_request("invalid_body", format!("invalid request body: {message}"))
    })
}

fn schedule_json(s: &Schedule, history: Option<&[SlotRecord]>) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(s.id));
    m.insert("name".into(), json!(s.name));
    m.insert("run_type".into(), json!(s.run_type.as_str()));
    m.insert("tenant_id".into(), json!(s.tenant_id));
    m.insert("cron".into(), json!(s.cron));
    m.insert("timezone".into(), json!(s.timezone));
    m.insert("params".into(), s.params.clone());
    m.insert("retention_keep".into(), json!(s.retention_keep));
    m.insert("enabled".into(), json!(s.enabled));
    m.insert("next_due_at".into(), json!(s.next_due_at.map(ts)));
    m.insert("created_by".into(), json!(s.created_by));
    m.insert("created_at".into(), json!(ts(s.created_at)));
    m.insert("updated_at".into(), json!(ts(s.updated_at)));
    if let Some(history) = history {
        let slots: Vec<Value> = history
            .iter()
            .map(|h| {
                json!({"slot_at": ts(h.slot_at), "tenant_id": h.tenant_id, "decision": h.decision,
                       "run_id": h.run_id, "missed": h.missed, "decided_at": ts(h.decided_at)})
            })
            .collect();
        m.insert("history".into(), Value::Array(slots));
    }
    Value::Object(m)
}

/// Whether the caller may see `s`: every tenant it acts on must be theirs.
fn visible(access: &Access, s: &Schedule) -> bool {
    access.covers_tenant(s.tenant_id.as_deref())
}

async fn visible_schedule(state: &AppState, access: &Access, id: &str) -> Result<Schedule, ApiError> {
    check_id("schedule id", id)?;
    let (store, ws) = (&state.store, access.visibility.workspace_id.as_str());
    retry::read(move || store.schedule(ws, id))
        .await?
        .filter(|s| visible(access, s))
        .ok_or_else(|| ApiError::not_found("schedule not found"))
}

/// Checks a complete spec as it would be stored; the run parameters come
/// back normalized.
async fn checked(
    state: &AppState,
    access: &Access,
    mut spec: ScheduleSpec,
) -> Result<ScheduleSpec, ApiError> {
    let name = spec.name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(|c| c.is_control()) {
        return Err(ApiError::bad_request(
            "invalid_name",
            "`name` must be 1 to 200 characters without control characters",
        ));
    }
    spec.name = name.to_owned();
    if !state.registry.supports(spec.run_type) {
        return Err(ApiError::bad_request(
            "operation_type_unavailable",
            format!("{} cannot be executed by this deployment yet", spec.run_type),
        ));
    }
    Slots::parse(&spec.cron, &spec.timezone)
        .map_err(|e| ApiError::bad_request("invalid_schedule", e.to_string()))?;
    // The runs' parameters, as a start of the type would have them (the
    // schedule's own id is added to each run by the scheduler).
    let mut params = match &spec.params {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_params",
                "`params` must be a JSON object",
            ));
        }
    };
    if params.contains_key("schedule_id") {
        return Err(ApiError::bad_request(
            "invalid_params",
            "`params.schedule_id` is the schedule's own id; leave it out",
        ));
    }
    let names_schedule = opsledger_core::params::specs(spec.run_type)
        .iter()
        .any(|p| p.name == "schedule_id");
    if names_schedule {
        params.insert(
            "schedule_id".into(),
            json!("00000000-0000-0000-0000-000000000000"),
        );
    }
    let mut normalized = opsledger_core::params::validate(spec.run_type, &Value::Object(params))
        .map_err(|e| ApiError::bad_request(e.code(), e.to_string()))?;
    if let Value::Object(m) = &mut normalized {
        m.remove("schedule_id");
    }
    spec.params = normalized;
    match spec.retention_keep {
        Some(_) if spec.run_type != RunType::BackupScheduleExecute => {
            return Err(ApiError::bad_request(
                "invalid_retention",
                "`retention_keep` applies to backup schedules only",
            ));
        }
        Some(n) if !(1..=MAX_RETENTION).contains(&n) => {
            return Err(ApiError::bad_request(
                "invalid_retention",
                format!("`retention_keep` must be 1 to {MAX_RETENTION} (leave it out to keep every set)"),
            ));
        }
        _ => {}
    }
    match &spec.tenant_id {
        Some(t) => {
            check_id("tenant_id", t)?;
            let store = &state.store;
            let tenant = retry::read(move || store.get_tenant(t)).await?;
            if tenant.is_none_or(|x| x.workspace_id != access.visibility.workspace_id)
                || !access.covers_tenant(Some(t))
            {
                return Err(ApiError::not_found("tenant not found"));
            }
        }
        None if !access.covers_tenant(None) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "a schedule of every tenant acts on tenants a restricted member cannot see; name a `tenant_id`",
            ));
        }
        None => {}
    }
    // What the runs will name (a compare's snapshot, profile or backup set)
    // is checked as a start by this caller would be: a schedule must not
    // reach what its author cannot see. A backup schedule names only itself.
    if spec.run_type != RunType::BackupScheduleExecute {
        crate::named_artifacts::check_start(
            state,
            access,
            spec.run_type,
            spec.tenant_id.as_deref(),
            &spec.params,
        )
        .await?;
    }
    Ok(spec)
}

fn stored(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "schedule_exists", m),
        StoreError::Invalid(m) => ApiError::bad_request("invalid_schedule", m),
        other => ApiError::from(other),
    }
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let access = caller.require(&state, &ws, Capability::OperationsAdmin).await?;
    let b = parse_body(&body)?;
    let missing = |f: &str| ApiError::bad_request("missing_field", format!("`{f}` is required"));
    let run_type_name = b.run_type.ok_or_else(|| missing("run_type"))?;
    let run_type: RunType = run_type_name
        .parse()
        .ok()
        .filter(|t| SCHEDULABLE.contains(t))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_run_type",
                format!(
                    "`run_type` {:?} cannot be scheduled (backup.schedule.execute, baseline.compare)",
                    run_type_name.chars().take(64).collect::<String>()
                ),
            )
        })?;
    let spec = ScheduleSpec {
        name: b.name.ok_or_else(|| missing("name"))?,
        run_type,
        tenant_id: b.tenant_id.flatten(),
        cron: b.cron.ok_or_else(|| missing("cron"))?,
        timezone: b.timezone.unwrap_or_else(|| "UTC".into()),
        params: b.params.unwrap_or(Value::Null),
        retention_keep: b.retention_keep.flatten(),
        enabled: b.enabled.unwrap_or(true),
    };
    let spec = checked(&state, &access, spec).await?;
    let by = format!("user:{}", caller.user_id);
    let create = || state.store.create_schedule(&ws, &spec, &by);
    let created = match create().await {
        Err(e) if e.write_may_be_retried() => create().await,
        other => other,
    }
    .map_err(stored)?;
    Ok((StatusCode::CREATED, Json(schedule_json(&created, Some(&[])))).into_response())
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let access = caller.require(&state, &ws, Capability::OperationsView).await?;
    let (store, ws) = (&state.store, ws.as_str());
    let all = retry::read(move || store.list_schedules(ws)).await?;
    let items: Vec<Value> = all
        .iter()
        .filter(|s| visible(&access, s))
        .map(|s| schedule_json(s, None))
        .collect();
    Ok(Json(json!({ "items": items })))
}

pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let access = caller.require(&state, &ws, Capability::OperationsView).await?;
    let s = visible_schedule(&state, &access, &id).await?;
    let (store, sid) = (&state.store, s.id.as_str());
    let mut history = retry::read(move || store.schedule_history(sid, HISTORY)).await?;
    // A schedule moved from every tenant to one keeps the history of the
    // others: a restricted member sees only their tenants' slots.
    history.retain(|h| access.covers_tenant(Some(&h.tenant_id)));
    Ok(Json(schedule_json(&s, Some(&history))))
}

pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let access = caller.require(&state, &ws, Capability::OperationsAdmin).await?;
    let current = visible_schedule(&state, &access, &id).await?;
    let b = parse_body(&body)?;
    if b.run_type
        .as_deref()
        .is_some_and(|t| t != current.run_type.as_str())
    {
        return Err(ApiError::bad_request(
            "invalid_run_type",
            "a schedule's run type cannot change: create another schedule",
        ));
    }
    let spec = ScheduleSpec {
        name: b.name.unwrap_or(current.name),
        run_type: current.run_type,
        tenant_id: b.tenant_id.unwrap_or(current.tenant_id),
        cron: b.cron.unwrap_or(current.cron),
        timezone: b.timezone.unwrap_or(current.timezone),
        params: b.params.unwrap_or(current.params),
        retention_keep: b.retention_keep.unwrap_or(current.retention_keep),
        enabled: b.enabled.unwrap_or(current.enabled),
    };
    let spec = checked(&state, &access, spec).await?;
    let update = || state.store.update_schedule(&ws, &id, &spec);
    let updated = match update().await {
        Err(e) if e.write_may_be_retried() => update().await,
        other => other,
    }
    .map_err(stored)?
    .ok_or_else(|| ApiError::not_found("schedule not found"))?;
    Ok(Json(schedule_json(&updated, None)))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let access = caller.require(&state, &ws, Capability::OperationsAdmin).await?;
    let s = visible_schedule(&state, &access, &id).await?;
    let (store, ws, sid) = (&state.store, ws.as_str(), s.id.as_str());
    let deleted = retry::write(move || store.delete_schedule(ws, sid)).await?;
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("schedule not found"))
    }
}

//! Artifacts a start names in its parameters (OPERATIONS.md §2): one that
//! does not exist, or lies outside what the caller may see, is refused at
//! start and creates nothing — `404` for the artifact (as for a run: a set
//! of another workspace or of a tenant the member cannot see answers like
//! one that exists nowhere), `400` for a part of it that is not there or a
//! set of another tenant than the run's, `409` for a set that exists but
//! cannot be deleted now. A **default** artifact that is missing is not
//! refused here: the run is created and ends `blocked`, naming what is missing.
//!
//! A backup set that is deleted or being deleted (`SET_IS_DELETED`) does not
//! exist for a restore or an update. For a delete it does while items are
//! left (a delete that ended part-way is finished by another), and a delete
//! of a set whose delete is running returns that run (its dedup key).
//! A baseline named by `baseline.capture` or `baseline.compare` (a profile,
//! a snapshot, a backup set) is likewise the caller's to see or a `404`
//! with a code naming it; a capture into another tenant's profile is a
//! `400 profile_other_tenant` (a new name is made by the capture).
//!
//! These checks answer at once; the families check the same again when
//! their run executes, and the writes check inside their transactions.

use crate::AppState;
use crate::auth::Access;
use crate::error::ApiError;
use crate::retry;
use axum::http::StatusCode;
use opsledger_core::RunType;
use opsledger_store::backup_set_writes::SetLifecycle;
use serde_json::Value;
use std::collections::BTreeSet;

/// Checks the artifacts `params` (validated) name for a start of `run_type`
/// on `tenant_id` (the run's tenant; `None` skips only the check that a set
/// acted on is of that tenant, which the family then ends `blocked`).
pub async fn check_start(
    state: &AppState,
    access: &Access,
    run_type: RunType,
    tenant_id: Option<&str>,
    params: &Value,
) -> Result<(), ApiError> {
    match run_type {
        RunType::BackupSetRestore => check_restore(state, access, params).await,
        RunType::BackupSetUpdate | RunType::BackupSetDelete => {
            check_set_acted_on(state, access, run_type, tenant_id, params).await
        }
        RunType::BackupScheduleExecute => check_schedule(state, access, tenant_id, params).await,
        RunType::BaselineCapture => check_capture(state, access, tenant_id, params).await,
        RunType::BaselineCompare => check_compare(state, access, params).await,
        // A pack without redaction holds the tenant's secrets in clear
        // (Wi-Fi keys, certificates, OMA-URI passwords): an admin's act,
        // and an admin's download (`review_packs::download`).
        RunType::ReviewPackGenerate if params.get("redact") == Some(&Value::Bool(false)) => {
            access.require(opsledger_core::access::Capability::OperationsAdmin)?;
            Ok(())
        }
        _ => Ok(()),
    }
}

fn set_not_found() -> ApiError {
    ApiError::not_found("backup set not found")
}

/// Backup set `set_id` as the caller may see it: of the workspace, of a
/// tenant the caller sees; else `404`, the same for every reason.
async fn visible_set(state: &AppState, access: &Access, set_id: &str) -> Result<SetLifecycle, ApiError> {
    let store = &state.store;
    let ws = access.visibility.workspace_id.as_str();
    let set = retry::read(move || store.backup_set_lifecycle(ws, set_id)).await?;
    set.filter(|s| access.covers_tenant(Some(&s.tenant_id)))
        .ok_or_else(set_not_found)
}

async fn check_restore(state: &AppState, access: &Access, params: &Value) -> Result<(), ApiError> {
    let set_id = params.get("backup_set_id").and_then(Value::as_str);
    let item_ids: Option<BTreeSet<&str>> = params
        .get("item_ids")
        .and_then(Value::as_array)
        .map(|ids| ids.iter().filter_map(Value::as_str).collect());
    let Some(set_id) = set_id else {
        if item_ids.is_some() {
            return Err(ApiError::bad_request(
                "missing_param",
                "`item_ids` names items of one backup set: name that set in `backup_set_id` too",
            ));
        }
        return Ok(());
    };
    let set = visible_set(state, access, set_id).await?;
    // Being deleted: its items are going, nothing is restored from it.
    if set.deleted {
        return Err(set_not_found());
    }
    if let Some(named) = item_ids {
        let store = &state.store;
        let set_id = set.id.as_str();
        let items = retry::read(move || store.backup_item_heads(set_id)).await?;
        let present: BTreeSet<&str> = items.iter().map(|i| i.id.as_str()).collect();
        if let Some(missing) = named.iter().find(|id| !present.contains(**id)) {
            return Err(ApiError::bad_request(
                "unknown_backup_item",
                format!("`item_ids`: {missing} is not an item of backup set {}", set.id),
            ));
        }
    }
    Ok(())
}

/// `backup_set.update` and `backup_set.delete`: the set exists for the
/// caller, is of the run's tenant, and (for a delete) may be deleted now.
async fn check_set_acted_on(
    state: &AppState,
    access: &Access,
    run_type: RunType,
    tenant_id: Option<&str>,
    params: &Value,
) -> Result<(), ApiError> {
    // Locking or unlocking decides whether a set may be deleted (and
    // retention deletes unlocked sets on its own): an admin's act, as
    // deleting is, though renaming and labelling are an operator's.
    if run_type == RunType::BackupSetUpdate && params.get("retention_locked").is_some() {
        access.require(opsledger_core::access::Capability::OperationsAdmin)?;
    }
    // Required by the type's parameters (validated before this check).
    let Some(set_id) = params.get("backup_set_id").and_then(Value::as_str) else {
        return Err(ApiError::bad_request(
            "missing_param",
            format!("{run_type} needs `backup_set_id`"),
        ));
    };
    let set = visible_set(state, access, set_id).await?;
    let gone = match run_type {
        RunType::BackupSetDelete => set.deleted_at.is_some() && !set.has_items,
        _ => set.deleted,
    };
    if gone {
        return Err(set_not_found());
    }
    if let Some(tenant) = tenant_id
        && tenant != set.tenant_id
    {
        return Err(ApiError::bad_request(
            "backup_set_other_tenant",
            format!(
                "backup set {set_id} belongs to another tenant than `tenant_id`: start {run_type} on the set's tenant"
            ),
        ));
    }
    if run_type != RunType::BackupSetDelete {
        // An update is never refused for the set's state: unlocking a
        // locked set is how it becomes deletable.
        return Ok(());
    }
    if set.retention_locked {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "backup_set_locked",
            format!(
                "backup set {set_id} is retention-locked: unlock it first \
                 (backup_set.update with `retention_locked: false`)"
            ),
        ));
    }
    if let Some(writer) = &set.writing_run_id {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "backup_set_in_use",
            format!(
                "backup set {set_id} is still being written by run {writer}; delete it when that run ends"
            ),
        ));
    }
    let store = &state.store;
    let ws = access.visibility.workspace_id.as_str();
    let restores = retry::read(move || store.active_restores_of_set(ws, set_id)).await?;
    // The restore is not named: its target may be a tenant the caller
    // does not see (a restore reads sets of any tenant of the workspace).
    if !restores.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "backup_set_in_use",
            format!(
                "backup set {set_id} is read by an active backup_set.restore; delete it when the restore \
                 ends, or cancel the restore"
            ),
        ));
    }
    Ok(())
}

/// A scheduled backup started by hand names a schedule of the workspace
/// the caller may see, of the run's tenant (or of every tenant).
async fn check_schedule(
    state: &AppState,
    access: &Access,
    tenant_id: Option<&str>,
    params: &Value,
) -> Result<(), ApiError> {
    let Some(id) = params.get("schedule_id").and_then(Value::as_str) else {
        return Ok(());
    };
    let (store, ws) = (&state.store, access.visibility.workspace_id.as_str());
    let schedule = retry::read(move || store.schedule(ws, id))
        .await?
        .filter(|s| access.covers_tenant(s.tenant_id.as_deref()))
        .ok_or_else(|| ApiError::not_found("schedule not found"))?;
    if schedule.run_type != RunType::BackupScheduleExecute {
        return Err(ApiError::bad_request(
            "invalid_params",
            format!(
                "schedule {id} starts {}, not backup.schedule.execute",
                schedule.run_type
            ),
        ));
    }
    if schedule.tenant_id.is_some() && schedule.tenant_id.as_deref() != tenant_id {
        return Err(ApiError::bad_request(
            "schedule_other_tenant",
            format!("schedule {id} backs up another tenant"),
        ));
    }
    Ok(())
}

/// The profile named `name` in the caller's workspace, if its source
/// tenant is one the caller may see; else `404 profile_not_found` (the
/// same for a profile that exists nowhere).
async fn visible_profile(
    state: &AppState,
    access: &Access,
    name: &str,
) -> Result<opsledger_store::baselines::Profile, ApiError> {
    let (store, ws) = (&state.store, access.visibility.workspace_id.as_str());
    retry::read(move || store.baseline_profile_by_name(ws, name))
        .await?
        .filter(|p| access.covers_tenant(Some(&p.source_tenant_id)))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "profile_not_found",
                "baseline profile not found (GET …/baseline-profiles lists them)",
            )
        })
}

/// `baseline.capture` into a named profile: a profile of that name that
/// exists captures the run's tenant (its source), else `400
/// profile_other_tenant`; a name that exists nowhere is made by the capture
/// (INTERFACE.md), its source the run's tenant.
async fn check_capture(
    state: &AppState,
    access: &Access,
    tenant_id: Option<&str>,
    params: &Value,
) -> Result<(), ApiError> {
    let Some(name) = params.get("profile").and_then(Value::as_str) else {
        return Ok(());
    };
    let (store, ws) = (&state.store, access.visibility.workspace_id.as_str());
    let Some(profile) = retry::read(move || store.baseline_profile_by_name(ws, name)).await? else {
        return Ok(());
    };
    if let Some(tenant) = tenant_id
        && tenant != profile.source_tenant_id
    {
        // Not its tenant, whoever may see it: the name is taken.
        return Err(ApiError::bad_request(
            "profile_other_tenant",
            format!(
                "baseline profile `{}` captures another tenant than `tenant_id`: start baseline.capture \
                 on its source tenant, or name a profile of this tenant (or a new name)",
                profile.name
            ),
        ));
    }
    Ok(())
}

/// `baseline.compare` against a named baseline: a snapshot, a profile or a
/// backup set of the workspace the caller may see (of any of their tenants:
/// a golden tenant's baseline compares with another tenant).
async fn check_compare(state: &AppState, access: &Access, params: &Value) -> Result<(), ApiError> {
    if let Some(id) = params.get("baseline_snapshot_id").and_then(Value::as_str) {
        let (store, vis) = (&state.store, &access.visibility);
        retry::read(move || store.visible_baseline_snapshot(vis, id))
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "baseline_snapshot_not_found",
                    "baseline snapshot not found",
                )
            })?;
    }
    if let Some(name) = params.get("profile").and_then(Value::as_str) {
        visible_profile(state, access, name).await?;
    }
    if let Some(set_id) = params.get("backup_set_id").and_then(Value::as_str) {
        let not_found = || {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "backup_set_not_found",
                "backup set not found",
            )
        };
        let (store, ws) = (&state.store, access.visibility.workspace_id.as_str());
        let set = retry::read(move || store.backup_set_lifecycle(ws, set_id)).await?;
        // Being deleted: its items are going, nothing is compared with it.
        if !set.is_some_and(|s| !s.deleted && access.covers_tenant(Some(&s.tenant_id))) {
            return Err(not_found());
        }
    }
    Ok(())
}

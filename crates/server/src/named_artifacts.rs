//! Artifacts a start names in its parameters (OPERATIONS.md §2): one that
//! does not exist, or lies outside what the caller may see, is refused at
//! start and creates nothing — `404` for the artifact (as for a run: a set
//! of another workspace or of a tenant the member cannot see answers like
//! one that exists nowhere), `400` for a part of it that is not there.
//! A **default** artifact that is missing is not refused here: the run is
//! created and ends `blocked`, naming what is missing.

use crate::AppState;
use crate::auth::Access;
use crate::error::ApiError;
use crate::retry;
use opsledger_core::RunType;
use serde_json::Value;
use std::collections::BTreeSet;

/// Checks the artifacts `params` (validated) name for a start of `run_type`.
pub async fn check(
    state: &AppState,
    access: &Access,
    run_type: RunType,
    params: &Value,
) -> Result<(), ApiError> {
    if run_type != RunType::BackupSetRestore {
        return Ok(());
    }
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
    let store = &state.store;
    let ws = access.visibility.workspace_id.as_str();
    let set = retry::read(move || store.backup_set_head(ws, set_id)).await?;
    let Some(set) = set.filter(|s| access.covers_tenant(Some(&s.tenant_id))) else {
        return Err(ApiError::not_found("backup set not found"));
    };
    if let Some(named) = item_ids {
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

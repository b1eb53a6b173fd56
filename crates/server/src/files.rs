//! `GET …/operations/{id}/files`: the files a run committed (name, unit,
//! size, SHA-256), under the run's own access rules, a page at a time.

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::operations::visible_run;
use crate::retry;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use opsledger_core::access::Capability;
use opsledger_store::files::is_valid_file_name;
use serde_json::{Value, json};

/// Files per page.
pub const FILES_PER_PAGE: u32 = 500;

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let access = caller.require(&state, &ws, Capability::OperationsView).await?;
    let run = visible_run(&state, &access, &id).await?;
    let mut cursor: Option<String> = None;
    for (k, v) in form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "cursor" if cursor.is_none() && is_valid_file_name(&v) => cursor = Some(v.into_owned()),
            "cursor" if cursor.is_some() => {
                return Err(ApiError::bad_request(
                    "duplicate_query_param",
                    "`cursor` is given twice",
                ));
            }
            "cursor" => {
                return Err(ApiError::bad_request(
                    "invalid_cursor",
                    "cursor is not one this API issued: pass `next_cursor` of the previous page as it is",
                ));
            }
            other => {
                let shown: String = other.chars().take(64).collect();
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("unknown query parameter {shown:?} (accepted: cursor)"),
                ));
            }
        }
    }
    let store = &state.store;
    let (run_id, after) = (&run.id, cursor.as_deref());
    let page = retry::read(move || store.run_files_page(run_id, after, FILES_PER_PAGE)).await?;
    let next_cursor = (page.len() as u32 == FILES_PER_PAGE)
        .then(|| page.last().map(|f| f.name.clone()))
        .flatten();
    let items: Vec<Value> = page
        .into_iter()
        .map(|f| json!({"name": f.name, "unit_key": f.unit_key, "size_bytes": f.size, "sha256": f.sha256}))
        .collect();
    Ok(Json(json!({ "items": items, "next_cursor": next_cursor })))
}

//! Evidence snapshots over the API: `…/evidence-snapshots/{id}` (the
//! snapshot, its signature and a page of its items) and
//! `…/evidence-snapshots/{id}/verify` (whether the signature still holds
//! over the items as stored now).
//!
//! Access is a run's (OPERATIONS.md §9): [`Caller::require`] first (`404`
//! outside the workspace, `403` without the capability), then the lookup
//! through the caller's [`Visibility`](opsledger_store::Visibility): a
//! snapshot of a tenant a restricted member may not see is a `404` byte for
//! byte the same as for an id that exists nowhere. A malformed id is a
//! `400 invalid_id`, as on every route.
//!
//! Verification needs the evidence key, which is never in the database: a
//! node started without it answers `503 evidence_key_missing` rather than
//! guess. It recomputes every item's hash from the stored content and the
//! signature from those hashes, so an item edited in the database fails
//! even when its stored hash was edited to match.

use crate::AppState;
use crate::MAX_LIST_BYTES;
use crate::auth::{Caller, check_id};
use crate::error::ApiError;
use crate::paging::{head_bytes, limit_param, paged_body, position_cursor, query_pairs, within_budget};
use crate::render::ts;
use crate::retry;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use opsledger_core::access::Capability;
use opsledger_store::evidence::{ITEMS_PER_PAGE, SnapshotHead, SnapshotItem, stored};
use serde_json::{Map, Value, json};

fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "evidence_snapshot_not_found",
        "evidence snapshot not found",
    )
}

/// The snapshot `id` of `ws` as the caller may see it, or `404`.
async fn visible(state: &AppState, caller: &Caller, ws: &str, id: &str) -> Result<SnapshotHead, ApiError> {
    let access = caller.require(state, ws, Capability::OperationsView).await?;
    check_id("evidence snapshot id", id)?;
    let (store, vis) = (&state.store, &access.visibility);
    retry::read(move || store.visible_evidence_snapshot(vis, id))
        .await?
        .ok_or_else(not_found)
}

fn item_json(i: &SnapshotItem) -> Value {
    json!({
        "seq": i.seq,
        "key": i.item.key,
        "source": i.item.source,
        "payload": i.item.payload,
        "sha256": i.item.sha256,
        "recorded_at": i.recorded_at.map(ts),
    })
}

/// `GET …/evidence-snapshots/{id}?cursor=&limit=`: the snapshot (run,
/// tenant, time, signature) and one page of its items in signed order. A
/// page stops early, with its `next_cursor`, rather than grow past
/// [`MAX_LIST_BYTES`].
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let snapshot = visible(&state, &caller, &ws, &id).await?;
    let mut limit = ITEMS_PER_PAGE;
    let mut after = None;
    for (k, v) in query_pairs(query.as_deref(), &["cursor", "limit"])? {
        match k.as_str() {
            "limit" => limit = limit_param(&v, ITEMS_PER_PAGE)?,
            _ => after = Some(position_cursor(&v)?),
        }
    }
    let (store, sid) = (&state.store, snapshot.id.as_str());
    let page = retry::read(move || store.evidence_items_page(sid, after, limit)).await?;

    let mut head = Map::new();
    head.insert("id".into(), json!(snapshot.id));
    head.insert("tenant_id".into(), json!(snapshot.tenant_id));
    head.insert("run_id".into(), json!(snapshot.created_by_run_id));
    head.insert("generated_at".into(), json!(ts(snapshot.generated_at)));
    head.insert("item_count".into(), json!(snapshot.item_count));
    head.insert("sealed".into(), json!(snapshot.sealed_at.is_some()));
    head.insert("sealed_at".into(), json!(snapshot.sealed_at.map(ts)));
    head.insert("signature".into(), json!(snapshot.signature));
    head.insert("signature_algorithm".into(), json!("HMAC-SHA256"));
    let items = within_budget(&page, item_json, MAX_LIST_BYTES.saturating_sub(head_bytes(&head)));
    let next = (items.len() < page.len() || page.len() == limit as usize)
        .then(|| items.len().checked_sub(1).map(|i| page[i].seq.to_string()))
        .flatten();
    Ok(paged_body(head, "items", &items, next))
}

/// `GET …/evidence-snapshots/{id}/verify`: `{"valid", "reason_code",
/// "message", …}` — whether the snapshot is complete, signed, every item
/// still hashes to what was recorded, and the signature holds under this
/// node's key. `503 evidence_key_missing` without a key.
pub async fn verify(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let snapshot = visible(&state, &caller, &ws, &id).await?;
    query_pairs(query.as_deref(), &[])?;
    let Some(key) = state.evidence_key.as_ref() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "evidence_key_missing",
            "this node has no evidence key (OPSLEDGER_EVIDENCE_KEY or OPSLEDGER_EVIDENCE_KEY_FILE): it cannot verify",
        ));
    };
    let (store, sid) = (&state.store, snapshot.id.as_str());
    let items = retry::read(move || store.evidence_items(sid)).await?;
    let result = opsledger_core::evidence::verify(key, &stored(&snapshot, items));
    let (code, message) = match &result {
        Ok(()) => (
            None,
            format!(
                "all {} items match their recorded hashes and the signature holds",
                snapshot.item_count
            ),
        ),
        Err(f) => (Some(f.code()), f.to_string()),
    };
    Ok(Json(json!({
        "snapshot_id": snapshot.id,
        "valid": result.is_ok(),
        "reason_code": code,
        "message": message,
        "item_count": snapshot.item_count,
        "sealed": snapshot.sealed_at.is_some(),
    }))
    .into_response())
}

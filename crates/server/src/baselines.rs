//! Baselines over the API: `…/baseline-profiles` (list; create, admin),
//! `…/baseline-snapshots/{id}` (a snapshot with its gaps and a page of its
//! policies) and `…/operations/{id}/findings` (a `baseline.compare` run's
//! compare record and a page of its findings).
//!
//! Access is a run's (OPERATIONS.md §9): [`Caller::require`] first (`404`
//! outside the workspace, `403` without the capability), then every lookup
//! through the caller's [`Visibility`](opsledger_store::Visibility): a
//! profile or snapshot of a tenant a restricted member may not see is
//! missing to them — hidden from the list, a `404` byte for byte the same as
//! for an id that exists nowhere. Findings are as visible as their run
//! (the same lookup as `GET …/operations/{id}`).
//!
//! Pages: snapshot policies by `(policy_type, external_id)`, findings by
//! their position; each page stops early (with its `next_cursor`) rather
//! than let the body grow past [`MAX_LIST_BYTES`].

use crate::AppState;
use crate::MAX_LIST_BYTES;
use crate::auth::{Access, Caller, check_id};
use crate::error::ApiError;
use crate::paging::{
    head_bytes, id_cursor, invalid_cursor, limit_param, paged_body, position_cursor, query_pairs,
    within_budget,
};
use crate::render::ts;
use crate::retry;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use opsledger_core::RunType;
use opsledger_core::access::Capability;
use opsledger_core::baseline::Gap;
use opsledger_store::StoreError;
use opsledger_store::baselines::{
    FINDINGS_PER_PAGE, MAX_PROFILE_NAME, POLICIES_PER_PAGE, Profile, SnapshotHead, SnapshotPolicy,
    StoredCompare, StoredFinding,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::fmt::Write as _;

/// Default and largest `limit` of the profile list.
pub const DEFAULT_PROFILE_LIMIT: u32 = 50;
pub const MAX_PROFILE_LIMIT: u32 = 200;
/// Longest `cursor` accepted (an issued one is far shorter).
const MAX_CURSOR_CHARS: usize = 2048;

// ---------------------------------------------------------------- inputs

/// The cursor of a snapshot policy: its `(policy_type, external_id)`,
/// hex-encoded (opaque to clients, and safe in a query string as it is).
fn policy_cursor(policy_type: &str, external_id: &str) -> String {
    let mut s = String::with_capacity(2 * (policy_type.len() + 1 + external_id.len()));
    for b in policy_type.bytes().chain([b'/']).chain(external_id.bytes()) {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A cursor of [`policy_cursor`], decoded; `None` for anything else.
fn parse_policy_cursor(v: &str) -> Option<(String, String)> {
    if v.is_empty() || v.len() > MAX_CURSOR_CHARS || !v.len().is_multiple_of(2) {
        return None;
    }
    if !v
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let bytes: Vec<u8> = (0..v.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&v[i..i + 2], 16))
        .collect::<Result<_, _>>()
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (policy_type, external_id) = text.split_once('/')?;
    (!policy_type.is_empty() && !external_id.is_empty())
        .then(|| (policy_type.to_owned(), external_id.to_owned()))
}

// ---------------------------------------------------------------- rendering

fn profile_json(p: &Profile, latest: Option<&SnapshotHead>) -> Value {
    json!({
        "id": p.id,
        "name": p.name,
        // INTERFACE.md: the source tenant, as `tenant_id`.
        "tenant_id": p.source_tenant_id,
        "policy_types": p.policy_types,
        "is_default": p.is_default,
        "created_at": ts(p.created_at),
        "created_by": p.created_by,
        "latest_snapshot": latest.map(|s| json!({
            "id": s.id,
            "sealed_at": s.sealed_at.map(ts),
            "policy_count": s.policy_count,
            "gap_count": s.gap_count,
        })),
    })
}

fn gap_json(g: &Gap) -> Value {
    json!({
        "policy_type": g.policy_type,
        "external_id": g.external_id,
        "reason": g.reason.as_str(),
        "message": g.message,
    })
}

fn policy_json(p: &SnapshotPolicy) -> Value {
    json!({
        "type": p.policy_type,
        "external_id": p.external_id,
        "name": p.display_name,
        "evidence": p.evidence.as_str(),
        "sha256": p.payload_sha256,
        "payload": p.payload,
    })
}

fn finding_json(f: &StoredFinding) -> Value {
    let changes: Vec<Value> = f
        .finding
        .changes
        .iter()
        .map(|c| json!({"path": c.path, "baseline": c.baseline, "current": c.current}))
        .collect();
    json!({
        "kind": f.finding.kind.as_str(),
        "policy_type": f.finding.policy_type,
        "policy_name": f.finding.display_name,
        "baseline_external_id": f.finding.baseline_external_id,
        "current_external_id": f.finding.current_external_id,
        "changes": changes,
    })
}

fn compare_json(c: &StoredCompare) -> Value {
    json!({
        "baseline_snapshot_id": c.baseline_snapshot_id,
        "backup_set_id": c.backup_set_id,
        "findings": c.findings,
        "recorded_at": ts(c.recorded_at),
        "summary": c.summary,
    })
}

// ---------------------------------------------------------------- profiles

/// `GET …/baseline-profiles?limit=&cursor=`: the profiles of tenants the
/// caller may see, by name, each with its latest sealed snapshot.
pub async fn list_profiles(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let access = caller.require(&state, &ws, Capability::OperationsView).await?;
    let mut limit = DEFAULT_PROFILE_LIMIT;
    let mut cursor = None;
    for (k, v) in query_pairs(query.as_deref(), &["limit", "cursor"])? {
        match k.as_str() {
            "limit" => limit = limit_param(&v, MAX_PROFILE_LIMIT)?,
            _ => {
                cursor = Some(id_cursor(&v)?);
            }
        }
    }
    let (store, vis) = (&state.store, &access.visibility);
    let profiles = retry::read(move || store.visible_baseline_profiles(vis)).await?;
    // The cursor is the last profile sent; the list continues after it.
    let start = match &cursor {
        None => 0,
        Some(c) => {
            profiles
                .iter()
                .position(|p| p.id == *c)
                .ok_or_else(|| invalid_cursor(c))?
                + 1
        }
    };
    let page = profiles.iter().skip(start).take(limit as usize);
    let mut items = Vec::new();
    for p in page {
        let pid = p.id.as_str();
        let latest = retry::read(move || store.latest_sealed_snapshot(pid))
            .await?
            .filter(|s| access.covers_tenant(Some(&s.tenant_id)));
        items.push(profile_json(p, latest.as_ref()));
    }
    let end = start + items.len();
    let next = (end > start && end < profiles.len()).then(|| profiles[end - 1].id.clone());
    Ok(Json(json!({ "items": items, "next_cursor": next })))
}

/// A create's body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateProfile {
    name: Option<String>,
    /// The source tenant.
    tenant_id: Option<String>,
    /// `null` or absent: every type the tenant exposes.
    #[serde(default)]
    policy_types: Option<Value>,
}

/// `policy_types` as a start's `policy_types` parameter takes it: a
/// non-empty list of distinct catalog keys (sorted, exact repeats dropped).
fn checked_policy_types(v: Value) -> Result<Option<Vec<String>>, ApiError> {
    if v.is_null() {
        return Ok(None);
    }
    // The one rule of the catalog's `policy_types` parameter (core
    // params.rs), applied through a type that takes it.
    let normalized = opsledger_core::params::validate(RunType::InventorySync, &json!({ "policy_types": v }))
        .map_err(|e| ApiError::bad_request("invalid_policy_types", e.to_string()))?;
    let list = normalized["policy_types"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    Ok(Some(list))
}

fn tenant_not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "tenant_not_found", "tenant not found")
}

/// `POST …/baseline-profiles` (admin): `{name, tenant_id, policy_types?}` → `201`.
pub async fn create_profile(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let access = caller.require(&state, &ws, Capability::OperationsAdmin).await?;
    let b: CreateProfile = serde_json::from_slice(&body).map_err(|e| {
        let message: String = e.to_string().chars().take(300).collect();
        ApiError::bad_request("invalid_body", format!("invalid request body: {message}"))
    })?;
    let missing = |f: &str| ApiError::bad_request("missing_field", format!("`{f}` is required"));
    let name = b.name.ok_or_else(|| missing("name"))?;
    let name = opsledger_core::params::check_display_text(&name, 1, MAX_PROFILE_NAME)
        .map_err(|e| ApiError::bad_request("invalid_name", format!("`name` {e}")))?;
    let tenant_id = b.tenant_id.ok_or_else(|| missing("tenant_id"))?;
    check_id("tenant_id", &tenant_id)?;
    let policy_types = checked_policy_types(b.policy_types.unwrap_or(Value::Null))?;
    let store = &state.store;
    let tid = tenant_id.as_str();
    let tenant = retry::read(move || store.get_tenant(tid)).await?;
    if tenant.is_none_or(|t| t.workspace_id != ws) || !access.covers_tenant(Some(&tenant_id)) {
        return Err(tenant_not_found());
    }
    let by = format!("user:{}", caller.user_id);
    let create = || store.create_baseline_profile(&ws, &name, &tenant_id, policy_types.as_deref(), &by);
    let profile = match create().await {
        Err(e) if e.write_may_be_retried() => create().await,
        other => other,
    }
    .map_err(profile_store_error)?;
    Ok((StatusCode::CREATED, Json(profile_json(&profile, None))).into_response())
}

// ---------------------------------------------------------------- snapshots

fn snapshot_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "baseline_snapshot_not_found",
        "baseline snapshot not found",
    )
}

/// `GET …/baseline-snapshots/{id}?cursor=&limit=`: the snapshot, its gaps,
/// and one page of its policies (payloads included: the normalized policy).
pub async fn show_snapshot(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let access = caller.require(&state, &ws, Capability::OperationsView).await?;
    check_id("baseline snapshot id", &id)?;
    let mut limit = POLICIES_PER_PAGE;
    let mut after = None;
    for (k, v) in query_pairs(query.as_deref(), &["cursor", "limit"])? {
        match k.as_str() {
            "limit" => limit = limit_param(&v, POLICIES_PER_PAGE)?,
            _ => after = Some(parse_policy_cursor(&v).ok_or_else(|| invalid_cursor(&v))?),
        }
    }
    let (store, vis, sid) = (&state.store, &access.visibility, id.as_str());
    let snapshot = retry::read(move || store.visible_baseline_snapshot(vis, sid))
        .await?
        .ok_or_else(snapshot_not_found)?;
    let sid = snapshot.id.as_str();
    let gaps = retry::read(move || store.snapshot_gaps(sid)).await?;
    let after_ref = after.as_ref().map(|(t, e)| (t.as_str(), e.as_str()));
    let mut page = retry::read(move || store.snapshot_policies_page(sid, after_ref, limit)).await?;
    // Secrets in clear (Wi-Fi keys, OMA-URI passwords) are an admin's to
    // read, as in a review pack made without redaction.
    let redacted = !access.has(Capability::OperationsAdmin);
    if redacted {
        for p in &mut page {
            if let Some(v) = p.payload.as_mut() {
                opsledger_core::review_pack::redact(v);
            }
        }
    }

    let mut head = Map::new();
    head.insert("id".into(), json!(snapshot.id));
    head.insert("tenant_id".into(), json!(snapshot.tenant_id));
    head.insert("profile_id".into(), json!(snapshot.profile_id));
    head.insert("created_by_run_id".into(), json!(snapshot.created_by_run_id));
    head.insert("created_at".into(), json!(ts(snapshot.created_at)));
    head.insert("sealed_at".into(), json!(snapshot.sealed_at.map(ts)));
    head.insert("policy_types".into(), json!(snapshot.policy_types));
    head.insert("policy_count".into(), json!(snapshot.policy_count));
    head.insert("gap_count".into(), json!(snapshot.gap_count));
    head.insert("sealed".into(), json!(snapshot.sealed_at.is_some()));
    head.insert("gaps".into(), Value::Array(gaps.iter().map(gap_json).collect()));
    head.insert("secrets_redacted".into(), json!(redacted));
    let items = within_budget(
        &page,
        policy_json,
        MAX_LIST_BYTES.saturating_sub(head_bytes(&head)),
    );
    let next = if items.len() < page.len() || page.len() == limit as usize {
        items
            .len()
            .checked_sub(1)
            .map(|i| policy_cursor(&page[i].policy_type, &page[i].external_id))
    } else {
        None
    };
    Ok(paged_body(head, "policies", &items, next))
}

// ---------------------------------------------------------------- findings

/// `GET …/operations/{id}/findings?cursor=&limit=`: a `baseline.compare`
/// run's compare record (`null` until recorded) and one page of its findings.
pub async fn findings(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let access = caller.require(&state, &ws, Capability::OperationsView).await?;
    let mut limit = FINDINGS_PER_PAGE;
    let mut after = None;
    for (k, v) in query_pairs(query.as_deref(), &["cursor", "limit"])? {
        match k.as_str() {
            "limit" => limit = limit_param(&v, FINDINGS_PER_PAGE)?,
            _ => after = Some(position_cursor(&v)?),
        }
    }
    let run = visible_compare_run(&state, &access, &id).await?;
    let (store, rid) = (&state.store, run.as_str());
    let compare = retry::read(move || store.compare_of_run(rid)).await?;
    let mut page = retry::read(move || store.findings_page(rid, after, limit)).await?;
    // A changed secret shows neither value but to an admin.
    let redacted = !access.has(Capability::OperationsAdmin);
    if redacted {
        for f in &mut page {
            for c in &mut f.finding.changes {
                opsledger_core::review_pack::redact_change(c);
            }
        }
    }

    let mut head = Map::new();
    head.insert("run_id".into(), json!(run));
    head.insert("secrets_redacted".into(), json!(redacted));
    head.insert(
        "compare".into(),
        compare.as_ref().map_or(Value::Null, compare_json),
    );
    let items = within_budget(
        &page,
        finding_json,
        MAX_LIST_BYTES.saturating_sub(head_bytes(&head)),
    );
    let last = items.len().checked_sub(1).map(|i| page[i].seq);
    // Positions run 0..findings: a full page ending on the last one is the end.
    let more = items.len() < page.len()
        || (page.len() == limit as usize
            && compare
                .as_ref()
                .is_none_or(|c| last.is_some_and(|s| s + 1 < c.findings as i64)));
    let next = last.filter(|_| more).map(|s| s.to_string());
    Ok(paged_body(head, "items", &items, next))
}

/// The id of run `id` if the caller may see it (as `GET …/operations/{id}`
/// decides) and it is a `baseline.compare`; else `404`.
async fn visible_compare_run(state: &AppState, access: &Access, id: &str) -> Result<String, ApiError> {
    let run = crate::operations::visible_run(state, access, id).await?;
    if run.run_type != RunType::BaselineCompare {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "findings_not_found",
            format!(
                "run {} is a {}: only baseline.compare runs have findings",
                run.id, run.run_type
            ),
        ));
    }
    Ok(run.id)
}

/// A store error of a profile create: a taken name is `409`, a tenant gone
/// since it was checked `404`.
fn profile_store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "profile_exists", m),
        StoreError::NotFound { what: "tenant", .. } => tenant_not_found(),
        other => ApiError::from(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_cursors_round_trip_and_refuse_anything_else() {
        let c = policy_cursor("deviceConfigurations", "0a1b-2c3d_x.y");
        assert!(c.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            parse_policy_cursor(&c),
            Some(("deviceConfigurations".into(), "0a1b-2c3d_x.y".into()))
        );
        // An external id holding the separator still round-trips.
        let c = policy_cursor("namedLocations", "a/b");
        assert_eq!(
            parse_policy_cursor(&c),
            Some(("namedLocations".into(), "a/b".into()))
        );
        for bad in [
            "",
            "0",
            "zz",
            "2F",
            "2f61",
            "612f",
            "ff2f61",
            &"61".repeat(MAX_CURSOR_CHARS),
        ] {
            assert_eq!(parse_policy_cursor(bad), None, "{bad}");
        }
    }

    #[test]
    fn profile_policy_types_follow_the_start_parameter_rule() {
        // The carrier type takes `policy_types` as the catalog's parameter.
        let spec = opsledger_core::params::specs(RunType::InventorySync)
            .iter()
            .find(|s| s.name == "policy_types")
            .expect("inventory.sync takes policy_types");
        assert_eq!(spec.kind, opsledger_core::params::ParamKind::PolicyTypes);
        assert_eq!(checked_policy_types(Value::Null).unwrap(), None);
        assert_eq!(
            checked_policy_types(json!([
                "namedLocations",
                "deviceConfigurations",
                "namedLocations"
            ]))
            .unwrap(),
            Some(vec![
                "deviceConfigurations".to_owned(),
                "namedLocations".to_owned()
            ])
        );
        for bad in [
            json!([]),
            json!(["nope"]),
            json!(["DeviceConfigurations"]),
            json!("deviceConfigurations"),
            json!([1]),
        ] {
            let e = checked_policy_types(bad.clone()).unwrap_err();
            assert_eq!(
                (e.status, e.code),
                (StatusCode::BAD_REQUEST, "invalid_policy_types"),
                "{bad}"
            );
        }
    }
}

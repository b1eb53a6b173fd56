//! `GET …/review-packs/{id}/download`: a review pack's ZIP, streamed. A
//! pack's id is the id of the `review_pack.generate` run that wrote it
//! (`context.review_pack.id`), so the run's access rules are the pack's: a
//! non-member, a member restricted to other tenants and a missing id get
//! the same `404`. Only a committed file of a run that closed `succeeded`
//! is ever served: a draft being written, or left by a worker that died,
//! has no row and is never reachable; a pack whose run did not succeed
//! (reconciled as failed, say) is `409 review_pack_unavailable`. A pack
//! made with `redact: false` holds secrets in clear: only an admin
//! downloads it (only an admin can start one).

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::operations::visible_run;
use crate::paging::query_pairs;
use crate::retry;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use opsledger_core::access::Capability;
use opsledger_core::review_pack::PACK_FILE_NAME;
use opsledger_core::{Outcome, RunType};

pub async fn download(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let access = caller.require(&state, &ws, Capability::OperationsView).await?;
    query_pairs(query.as_deref(), &[])?;
    // A missing id, a hidden run and a run that is no pack: one `404`.
    let pack_not_found = || ApiError::not_found("review pack not found");
    let run = match visible_run(&state, &access, &id).await {
        Err(e) if e.status == StatusCode::NOT_FOUND => return Err(pack_not_found()),
        other => other?,
    };
    if run.run_type != RunType::ReviewPackGenerate {
        return Err(pack_not_found());
    }
    let unavailable = |why: &str| {
        ApiError::new(
            StatusCode::CONFLICT,
            "review_pack_unavailable",
            format!("review pack {} {why}", run.id),
        )
    };
    if !run.is_completed() {
        return Err(unavailable("is still being generated"));
    }
    if run.outcome != Outcome::Succeeded {
        return Err(unavailable(&format!(
            "was not generated: its run ended {}",
            run.outcome.as_str()
        )));
    }
    if run.context.pointer("/params/redact") == Some(&serde_json::Value::Bool(false)) {
        access.require(Capability::OperationsAdmin)?;
    }
    let Some(files) = state.files.as_ref() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "artifact_unavailable",
            "this node has no file store configured, so it cannot serve review packs",
        ));
    };
    let store = &state.store;
    let run_id = run.id.as_str();
    let file = retry::read(move || store.run_files(run_id))
        .await?
        .into_iter()
        .find(|f| f.name == PACK_FILE_NAME)
        .ok_or_else(|| unavailable("has no committed file"))?;
    let bytes = files.read(&run.id, &file).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"review-pack-{}.zip\"", run.id),
            ),
            (header::CONTENT_LENGTH, file.size.to_string()),
            (header::ETAG, format!("\"{}\"", file.sha256)),
        ],
        Body::from_stream(bytes),
    )
        .into_response())
}

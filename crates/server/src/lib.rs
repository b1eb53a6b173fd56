//! The HTTP API (`/api/v1`, INTERFACE.md). Thin on purpose: each handler
//! parses, checks access ([`auth`]), calls the store's verbs and renders
//! ([`render`]). Progress is never computed here: it comes from the core
//! progress contract.

pub mod auth;
mod backup_sets;
mod baselines;
pub mod error;
mod evidence;
mod files;
pub mod http;
mod named_artifacts;
mod operations;
mod paging;
pub mod render;
pub mod retry;
mod review_packs;
mod schedules;
mod tenants;

pub use http::HttpLimits;
pub use operations::MAX_LIST_BYTES;

use axum::Router;
use axum::http::{Method, Uri};
use axum::routing::{get, post};
use opsledger_engine::Registry;
use opsledger_store::Store;
use std::sync::Arc;
use tokio::sync::Notify;

/// Shared state of the API.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    /// Which types this deployment can execute (a start of any other is refused).
    pub registry: Registry,
    /// Wakes the local runner after a start.
    pub wake: Arc<Notify>,
    /// What adding a tenant validates its provider with (Graph endpoints and
    /// credentials from the environment).
    pub providers: opsledger_providers::ProviderSettings,
    /// Where this node reads file artifacts (review-pack downloads); `None`:
    /// downloads answer `503`.
    pub files: Option<opsledger_store::files::FileStore>,
    /// The evidence signing key (`…/evidence-snapshots/{id}/verify`); `None`:
    /// verification answers `503`.
    pub evidence_key: Option<opsledger_core::evidence::EvidenceKey>,
}

/// Largest request body accepted, on every route (`413 body_too_large` past it).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The API with its edge layers ([`http::with_edge`]) at the default limits.
pub fn router(state: AppState) -> Router {
    app(state, &HttpLimits::default())
}

/// The API with its edge layers, its request timeout from `limits`.
pub fn app(state: AppState, limits: &HttpLimits) -> Router {
    http::with_edge(routes(state), limits)
}

fn routes(state: AppState) -> Router {
    Router::new()
        .route(
            "/api/v1/health",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/api/v1/operation-types", get(operations::operation_types))
        .route(
            "/api/v1/workspaces/{ws}/tenants",
            get(tenants::list).post(tenants::add),
        )
        .route(
            "/api/v1/workspaces/{ws}/operations",
            post(operations::start).get(operations::list),
        )
        .route("/api/v1/workspaces/{ws}/operations/{id}", get(operations::show))
        .route(
            "/api/v1/workspaces/{ws}/operations/{id}/cancel",
            post(operations::cancel),
        )
        .route("/api/v1/workspaces/{ws}/operations/{id}/files", get(files::list))
        .route(
            "/api/v1/workspaces/{ws}/operations/{id}/force-close",
            post(operations::force_close),
        )
        .route(
            "/api/v1/workspaces/{ws}/schedules",
            get(schedules::list).post(schedules::create),
        )
        .route(
            "/api/v1/workspaces/{ws}/schedules/{id}",
            get(schedules::show)
                .patch(schedules::update)
                .delete(schedules::delete),
        )
        .route(
            "/api/v1/workspaces/{ws}/operations/{id}/findings",
            get(baselines::findings),
        )
        .route(
            "/api/v1/workspaces/{ws}/baseline-profiles",
            get(baselines::list_profiles).post(baselines::create_profile),
        )
        .route(
            "/api/v1/workspaces/{ws}/baseline-snapshots/{id}",
            get(baselines::show_snapshot),
        )
        .route(
            "/api/v1/workspaces/{ws}/evidence-snapshots/{id}",
            get(evidence::show),
        )
        .route(
            "/api/v1/workspaces/{ws}/evidence-snapshots/{id}/verify",
            get(evidence::verify),
        )
        .route("/api/v1/workspaces/{ws}/backup-sets", get(backup_sets::list))
        .route("/api/v1/workspaces/{ws}/backup-sets/{id}", get(backup_sets::show))
        .route(
            "/api/v1/workspaces/{ws}/backup-sets/{id}/export",
            get(backup_sets::export),
        )
        .route(
            "/api/v1/workspaces/{ws}/review-packs/{id}/download",
            get(review_packs::download),
        )
        .fallback(
            |uri: Uri| async move { error::ApiError::not_found(format!("no such route: {}", uri.path())) },
        )
        // Last: it applies to the routes registered before it.
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            error::ApiError::method_not_allowed(&method, uri.path())
        })
        .with_state(state)
}

/// Serves the API on `listener` under `limits` until `shutdown` is
/// cancelled, then lets the requests in progress finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    limits: HttpLimits,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let service = app(state, &limits);
    http::serve_app(listener, service, limits, shutdown, Default::default()).await
}

//! The HTTP API (`/api/v1`, INTERFACE.md). Thin on purpose: each handler
//! parses, checks access ([`auth`]), calls the store's verbs and renders
//! ([`render`]). Progress is never computed here: it comes from the core
//! progress contract.

pub mod auth;
pub mod error;
mod operations;
pub mod render;

use axum::Router;
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
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/api/v1/health",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/api/v1/operation-types", get(operations::operation_types))
        .route(
            "/api/v1/workspaces/{ws}/operations",
            post(operations::start).get(operations::list),
        )
        .route("/api/v1/workspaces/{ws}/operations/{id}", get(operations::show))
        .route(
            "/api/v1/workspaces/{ws}/operations/{id}/cancel",
            post(operations::cancel),
        )
        .route(
            "/api/v1/workspaces/{ws}/operations/{id}/force-close",
            post(operations::force_close),
        )
        .fallback(|| async { error::ApiError::not_found("no such route") })
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

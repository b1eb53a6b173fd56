//! API errors: `{"error": {"code", "message"}}` with the status INTERFACE.md names.

use axum::Json;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::time::Duration;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }
    /// Also what a non-member gets for anything in a workspace: no existence leak.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    /// A failure of ours; the detail belongs in the log, not the answer.
    pub fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see server log",
        )
    }
    pub fn method_not_allowed(method: &Method, path: &str) -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on {path}"),
        )
    }
    pub fn body_too_large(limit_bytes: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body exceeds the limit of {limit_bytes} bytes"),
        )
    }
    pub fn request_timeout(timeout: Duration) -> ApiError {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request was not completed within {} ms; a start, cancel or force-close may still have been applied, so look at the run before retrying",
                timeout.as_millis()
            ),
        )
    }

    /// An error that a layer below the handlers answered as plain text
    /// (axum's extractor rejections and routing, tower-http): the code from
    /// the status and, for a `400`, from which extractor refused, whose text
    /// becomes the message. Server errors keep their detail to the log.
    pub fn from_plain(status: StatusCode, text: &str) -> ApiError {
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), detail = text, "internal error response");
            return ApiError::new(status, code_for_status(status), "internal error; see server log");
        }
        let code = match status {
            StatusCode::BAD_REQUEST => rejection_code(text),
            _ => code_for_status(status),
        };
        let message = if text.is_empty() {
            status
                .canonical_reason()
                .unwrap_or("request refused")
                .to_lowercase()
        } else {
            text.chars().take(1000).collect()
        };
        ApiError::new(status, code, message)
    }

    /// The `{"error": {"code", "message"}}` document.
    pub fn body(&self) -> Value {
        json!({"error": {"code": self.code, "message": self.message}})
    }
}

/// Which of axum's extractors wrote this `400` text (their messages are
/// fixed prefixes in axum 0.8): the path, the query string, or the body.
fn rejection_code(text: &str) -> &'static str {
    const PATH: [&str; 2] = ["Invalid URL", "Invalid UTF-8 in `"];
    const QUERY: [&str; 1] = ["Failed to deserialize query string"];
    const BODY: [&str; 5] = [
        "Failed to buffer the request body",
        "Failed to parse the request body",
        "Failed to deserialize the JSON body",
        "Request body didn't contain valid UTF-8",
        "Failed to deserialize form",
    ];
    let starts = |prefixes: &[&str]| prefixes.iter().any(|p| text.starts_with(p));
    if starts(&PATH) {
        "invalid_path"
    } else if starts(&QUERY) {
        "invalid_query"
    } else if starts(&BODY) {
        "invalid_body"
    } else {
        "bad_request"
    }
}

/// The envelope's code for a status, when nothing more precise is known.
pub fn code_for_status(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthenticated",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::NOT_ACCEPTABLE => "not_acceptable",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::CONFLICT => "conflict",
        StatusCode::LENGTH_REQUIRED => "length_required",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
        StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    }
}

/// What a `503` asks the client to wait before trying again (seconds).
pub const RETRY_AFTER_SECS: u64 = 1;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, RETRY_AFTER_SECS.into());
        }
        response
    }
}

impl From<opsledger_store::StoreError> for ApiError {
    /// A transient database error (after the retry of [`crate::retry`]) is
    /// `503 database_unavailable` with `Retry-After`; anything else is a
    /// fault of ours, `500`, with the detail in the log only.
    fn from(e: opsledger_store::StoreError) -> ApiError {
        if let opsledger_store::StoreError::ContextTooLarge { .. } = &e {
            return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "context_too_large", e.to_string());
        }
        if let opsledger_store::StoreError::FileUnavailable(_) = &e {
            // Never another file, and no path or bucket in the message.
            tracing::warn!(error = %e, "file artifact unavailable");
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "artifact_unavailable",
                "this file is not reachable from this node; retry on the node that wrote it, or configure shared artifact storage (OPSLEDGER_ARTIFACTS_URL)",
            );
        }
        if e.is_transient() {
            tracing::warn!(error = %e, "database unavailable");
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "the database is unavailable for a moment; retry shortly",
            );
        }
        tracing::error!(error = %e, "store error");
        ApiError::internal()
    }
}

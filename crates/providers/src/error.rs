//! Provider errors: a stable code for every way a source can fail, whether a
//! retry can help, and the `Retry-After` the source asked for.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The tenant as a whole lacks consent or permission: nothing can be read.
    #[error("permission missing for the tenant: {0}")]
    PermissionMissing(String),
    /// The credentials were refused (no token could be obtained).
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    /// This one type or object is forbidden (a scope missing for it), or a
    /// write the tenant refuses.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Throttled (HTTP 429, or 503 with `Retry-After`); retry after the delay
    /// the source gave, or after a backoff when it gave none.
    #[error("throttled: {message}")]
    Throttled {
        retry_after: Option<Duration>,
        message: String,
    },
    /// The service answered an error status.
    #[error("service error {status}: {message}")]
    Service {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    /// The request did not get an answer (connection refused or reset, timeout).
    #[error("transient failure: {0}")]
    Transient(String),
    /// The policy or object does not exist (any more).
    #[error("not found: {0}")]
    NotFound(String),
    /// An answer or a file that does not parse as what it should be.
    #[error("malformed: {0}")]
    Malformed(String),
    /// A type this provider knows but cannot do this with (e.g. write).
    #[error("unsupported: {0}")]
    UnsupportedType(String),
    /// The policy type is unknown to this provider.
    #[error("unknown policy type `{0}`")]
    UnknownType(String),
    /// The provider could not be set up (bad spec, missing configuration).
    #[error("provider unavailable: {0}")]
    Unavailable(String),
}

impl ProviderError {
    /// A 429-style answer.
    pub fn throttled(retry_after: Option<Duration>, message: impl Into<String>) -> ProviderError {
        ProviderError::Throttled {
            retry_after,
            message: message.into(),
        }
    }

    /// An error status without `Retry-After`.
    pub fn service(status: u16, message: impl Into<String>) -> ProviderError {
        ProviderError::Service {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Stable snake_case code recorded in a run's failures and coverage.
    pub fn code(&self) -> &'static str {
        match self {
            ProviderError::PermissionMissing(_) => "provider_permission_missing",
            ProviderError::AuthFailed(_) => "provider_auth_failed",
            ProviderError::Forbidden(_) => "provider_forbidden",
            ProviderError::Throttled { .. } => "provider_throttled",
            ProviderError::Service { .. } => "provider_service_error",
            ProviderError::Transient(_) => "provider_transient",
            ProviderError::NotFound(_) => "provider_not_found",
            ProviderError::Malformed(_) => "provider_malformed",
            ProviderError::UnsupportedType(_) => "provider_unsupported_type",
            ProviderError::UnknownType(_) => "provider_unknown_type",
            ProviderError::Unavailable(_) => "provider_unavailable",
        }
    }

    /// The delay the source asked for before a retry, if it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Throttled { retry_after, .. } | ProviderError::Service { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// Whether a later attempt may succeed: throttling, 5xx, no answer.
    pub fn is_transient(&self) -> bool {
        match self {
            ProviderError::Throttled { .. } | ProviderError::Transient(_) => true,
            ProviderError::Service { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// Whether this is a precondition stop (permission, credentials,
    /// configuration) rather than a failure of the read itself.
    pub fn is_precondition(&self) -> bool {
        matches!(
            self,
            ProviderError::PermissionMissing(_)
                | ProviderError::AuthFailed(_)
                | ProviderError::Unavailable(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_retry_and_preconditions() {
        let t = ProviderError::throttled(Some(Duration::from_secs(1)), "429");
        assert_eq!(t.code(), "provider_throttled");
        assert_eq!(t.retry_after(), Some(Duration::from_secs(1)));
        assert!(t.is_transient());
        assert!(ProviderError::service(503, "x").is_transient());
        assert!(!ProviderError::service(400, "x").is_transient());
        assert!(ProviderError::Transient("reset".into()).is_transient());
        assert!(ProviderError::PermissionMissing("x".into()).is_precondition());
        assert!(ProviderError::AuthFailed("x".into()).is_precondition());
        assert!(!ProviderError::Forbidden("x".into()).is_precondition());
        assert!(!ProviderError::Malformed("x".into()).is_transient());
    }
}

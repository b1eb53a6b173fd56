//! Providers: where a tenant's Intune-shaped data comes from.
//!
//! A provider answers three questions — may we read this tenant at all
//! ([`Provider::check_access`]), which policy types exist
//! ([`Provider::policy_types`]), and one page of one type
//! ([`Provider::list_page`]). Paging is explicit so that callers can prove a
//! type was read to its last page: a type whose pages did not all arrive is
//! not "empty", it is failed.
//!
//! Errors carry a stable code and say whether a retry can help, so families
//! can retry throttling (honouring `Retry-After`) and record everything else.

pub mod demo;

use async_trait::async_trait;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// A policy type the provider exposes, e.g. `deviceConfigurations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyType {
    /// Stable key, the unit key of an inventory sync.
    pub key: String,
    /// The Graph collection it lives in, e.g. `deviceManagement/deviceConfigurations`.
    pub graph_path: String,
    pub label: String,
}

/// One policy as read.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub id: String,
    pub display_name: String,
    pub payload: Value,
}

/// One page of a policy type; `next` is the token of the following page.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub items: Vec<Policy>,
    pub next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The tenant as a whole lacks consent or permission: nothing can be read.
    #[error("permission missing for the tenant: {0}")]
    PermissionMissing(String),
    /// This one type is forbidden (a scope missing for it).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Throttled (HTTP 429); retry after the given delay.
    #[error("throttled; retry after {0:?}")]
    Throttled(Duration),
    /// The service failed (5xx) or answered something unusable.
    #[error("service error {status}: {message}")]
    Service { status: u16, message: String },
    /// The policy does not exist (any more).
    #[error("not found: {0}")]
    NotFound(String),
    /// The policy type is unknown to this provider.
    #[error("unknown policy type `{0}`")]
    UnknownType(String),
    /// The provider could not be set up (bad spec, missing configuration).
    #[error("provider unavailable: {0}")]
    Unavailable(String),
}

impl ProviderError {
    /// Stable snake_case code recorded in a run's failures and coverage.
    pub fn code(&self) -> &'static str {
        match self {
            ProviderError::PermissionMissing(_) => "provider_permission_missing",
            ProviderError::Forbidden(_) => "provider_forbidden",
            ProviderError::Throttled(_) => "provider_throttled",
            ProviderError::Service { .. } => "provider_service_error",
            ProviderError::NotFound(_) => "provider_not_found",
            ProviderError::UnknownType(_) => "provider_unknown_type",
            ProviderError::Unavailable(_) => "provider_unavailable",
        }
    }

    /// The delay after which a retry may succeed, for transient errors.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Throttled(d) => Some(*d),
            _ => None,
        }
    }

    /// Whether this is a precondition stop (permission, configuration) rather
    /// than a failure of the read itself.
    pub fn is_precondition(&self) -> bool {
        matches!(
            self,
            ProviderError::PermissionMissing(_) | ProviderError::Unavailable(_)
        )
    }
}

#[async_trait]
pub trait Provider: Send + Sync {
    /// A preflight that fails when the tenant cannot be read at all.
    async fn check_access(&self) -> Result<(), ProviderError>;
    /// Every policy type this provider exposes, in a stable order.
    async fn policy_types(&self) -> Result<Vec<PolicyType>, ProviderError>;
    /// One page of a policy type; `page` is `None` for the first page.
    async fn list_page(&self, policy_type: &str, page: Option<&str>) -> Result<Page, ProviderError>;
    /// One policy by id, as it is now (what a backup captures).
    async fn get_policy(&self, policy_type: &str, id: &str) -> Result<Policy, ProviderError>;
}

/// Settings that apply to every provider built by [`open`].
#[derive(Debug, Clone, Default)]
pub struct ProviderSettings {
    /// Added to every demo provider call (`OPSLEDGER_DEMO_LATENCY_MS`).
    pub demo_latency: Duration,
}

/// Builds the provider named by a tenant's provider spec: `demo:PROFILE`,
/// `folder:PATH` or `graph:TENANT_ID`.
pub fn open(
    spec: &str,
    tenant_name: &str,
    settings: &ProviderSettings,
) -> Result<Arc<dyn Provider>, ProviderError> {
    let (kind, arg) = spec
        .split_once(':')
        .ok_or_else(|| ProviderError::Unavailable(format!("provider spec `{spec}` is not KIND:ARG")))?;
    match kind {
        "demo" => {
            // `demo:PROFILE` or `demo:PROFILE:SCALE` (SCALE multiplies the policy counts).
            let (profile, scale) = match arg.split_once(':') {
                Some((p, s)) => {
                    let scale = s
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=1000).contains(n))
                        .ok_or_else(|| {
                            ProviderError::Unavailable(format!(
                                "demo scale `{s}` must be a whole number from 1 to 1000"
                            ))
                        })?;
                    (p, scale)
                }
                None => (arg, 1),
            };
            let profile: demo::Profile = profile.parse()?;
            Ok(Arc::new(
                demo::DemoProvider::new(tenant_name, profile, settings.demo_latency).with_scale(scale),
            ))
        }
        "folder" | "graph" => Err(ProviderError::Unavailable(format!(
            "the `{kind}` provider is not available in this build (planned; see ROADMAP.md)"
        ))),
        other => Err(ProviderError::Unavailable(format!(
            "unknown provider kind `{other}` (demo, folder, graph)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        assert_eq!(
            ProviderError::Throttled(Duration::from_secs(1)).code(),
            "provider_throttled"
        );
        assert!(ProviderError::PermissionMissing("x".into()).is_precondition());
        assert!(!ProviderError::Forbidden("x".into()).is_precondition());
    }

    #[test]
    fn open_parses_specs() {
        let s = ProviderSettings::default();
        assert!(open("demo:healthy", "contoso", &s).is_ok());
        assert!(open("demo:healthy:20", "contoso", &s).is_ok());
        assert!(matches!(
            open("demo:healthy:0", "c", &s),
            Err(ProviderError::Unavailable(_))
        ));
        assert!(matches!(
            open("demo:nope", "c", &s),
            Err(ProviderError::Unavailable(_))
        ));
        assert!(matches!(
            open("healthy", "c", &s),
            Err(ProviderError::Unavailable(_))
        ));
        assert!(matches!(
            open("graph:abc", "c", &s),
            Err(ProviderError::Unavailable(_))
        ));
    }
}

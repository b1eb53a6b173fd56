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
pub mod directory;
mod error;
pub mod folder;
pub mod graph;

use async_trait::async_trait;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

pub use directory::{Directory, DirectoryEntry, DirectoryKind, NameDecision};
pub use error::ProviderError;
pub use graph::budget::{BudgetError, BudgetLimits, Grant, RequestBudget};
pub use graph::{GraphSettings, Secret};

/// A policy type the provider exposes, e.g. `deviceConfigurations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyType {
    /// Stable key, the unit key of an inventory sync.
    pub key: String,
    /// The Graph collection it lives in, e.g. `deviceManagement/deviceConfigurations`.
    pub graph_path: String,
    pub label: String,
}

impl PolicyType {
    /// The catalog's description of a type.
    pub fn from_info(info: &opsledger_core::policy_types::PolicyTypeInfo) -> PolicyType {
        PolicyType {
            key: info.key.to_owned(),
            graph_path: info.graph_path.to_owned(),
            label: info.label.to_owned(),
        }
    }
}

/// One policy as read. From [`Provider::get_policy`] the payload is the
/// policy **whole**: its own properties, plus `settings` (settings catalog),
/// `definitionValues` with their `presentationValues` (Administrative
/// Templates) and `assignments`, each read to its last page. From
/// [`Provider::list_page`] it is what the collection answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub id: String,
    pub display_name: String,
    pub payload: Value,
}

pub use opsledger_core::inventory::ItemFailure;

/// One page of a policy type; `next` is the token of the following page.
/// `failures` are items of this type that could not be read: the type is
/// still read to its end, but it is not complete.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Page {
    pub items: Vec<Policy>,
    pub next: Option<String>,
    pub failures: Vec<ItemFailure>,
}

/// Reads and writes of one tenant. Every collection is read to its last page
/// (a provider that cannot must fail, never answer fewer items); errors carry
/// a stable code and a `Retry-After` when the source gave one.
#[async_trait]
pub trait Provider: Send + Sync {
    /// A preflight that fails when the tenant cannot be read at all.
    async fn check_access(&self) -> Result<(), ProviderError>;
    /// Every policy type this tenant exposes, in a stable order. A type the
    /// tenant has no source for is not listed (it is not "covered with 0").
    async fn policy_types(&self) -> Result<Vec<PolicyType>, ProviderError>;
    /// Source items that belong to no type (a file that is not JSON of a
    /// known type, or cannot be decoded far enough to tell): reported once
    /// per read of the tenant. Services have none.
    async fn unattributed_failures(&self) -> Result<Vec<ItemFailure>, ProviderError> {
        Ok(Vec::new())
    }
    /// One page of a policy type; `page` is `None` for the first page.
    async fn list_page(&self, policy_type: &str, page: Option<&str>) -> Result<Page, ProviderError>;
    /// One policy by id, whole and as it is now (what a backup captures).
    async fn get_policy(&self, policy_type: &str, id: &str) -> Result<Policy, ProviderError>;
    /// The tenant's directory, read whole: groups, named locations and
    /// assignment filters, by id and display name.
    async fn directory(&self) -> Result<Directory, ProviderError>;
    /// Creates a directory object (a group; named locations and filters are
    /// policy types, created with [`Provider::create_policy`]).
    async fn create_directory_object(
        &self,
        kind: DirectoryKind,
        display_name: &str,
    ) -> Result<DirectoryEntry, ProviderError>;
    /// Creates a policy from a body (its own `id` and annotations ignored;
    /// `settings`/`definitionValues` written with it; `assignments` are not:
    /// [`Provider::assign`] writes them once the policy exists).
    async fn create_policy(&self, policy_type: &str, body: &Value) -> Result<Policy, ProviderError>;
    /// Replaces an existing policy's properties and settings with the body's.
    async fn update_policy(&self, policy_type: &str, id: &str, body: &Value)
    -> Result<Policy, ProviderError>;
    /// Replaces a policy's assignments (Graph's `POST …/{id}/assign`).
    async fn assign(&self, policy_type: &str, id: &str, assignments: &[Value]) -> Result<(), ProviderError>;
}

/// Settings that apply to every provider built by [`open`].
#[derive(Debug, Clone, Default)]
pub struct ProviderSettings {
    /// Added to every demo provider call (`OPSLEDGER_DEMO_LATENCY_MS`).
    pub demo_latency: Duration,
    /// How `graph:` tenants are reached, and this node's request budget.
    pub graph: GraphSettings,
    /// Where demo tenants keep what is written into them (the binary's
    /// database, so writes survive restarts and every node sees them);
    /// `None`: the process-wide [`demo::MemoryDemoState`].
    pub demo_state: Option<Arc<dyn demo::DemoState>>,
    /// The folders a `folder:` tenant may be added under ([`validate`]):
    /// `None` accepts any path (the CLI, run by whoever owns the machine);
    /// `Some` (the API: `OPSLEDGER_FOLDER_ROOTS`, none by default) accepts
    /// only paths that resolve inside one of them, so a workspace admin
    /// cannot point a tenant at the server's own files.
    pub folder_roots: Option<Vec<std::path::PathBuf>>,
}

/// Builds the provider named by a tenant's provider spec: `demo:PROFILE`,
/// `folder:PATH` or `graph:TENANT_ID`. `tenant_id` is the tenant's unique
/// identity (its ledger id), which a demo tenant keeps its writes under;
/// `tenant_name` is what its generated content derives from.
pub fn open(
    spec: &str,
    tenant_id: &str,
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
            let state: Arc<dyn demo::DemoState> = match &settings.demo_state {
                Some(state) => state.clone(),
                None => Arc::new(demo::MemoryDemoState),
            };
            Ok(Arc::new(
                demo::DemoProvider::new(tenant_name, profile, settings.demo_latency)
                    .with_scale(scale)
                    .with_state(tenant_id, state),
            ))
        }
        "folder" => {
            if arg.trim().is_empty() {
                return Err(ProviderError::Unavailable(
                    "folder provider needs a path: folder:PATH".into(),
                ));
            }
            Ok(Arc::new(folder::FolderProvider::new(arg)))
        }
        "graph" => Ok(Arc::new(graph::GraphProvider::open(arg, &settings.graph)?)),
        other => Err(ProviderError::Unavailable(format!(
            "unknown provider kind `{other}` (demo, folder, graph)"
        ))),
    }
}

/// How long validating a provider may take (a token request, a folder check).
pub const VALIDATE_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest provider spec accepted (a folder path, a tenant id).
pub const MAX_SPEC_BYTES: usize = 4096;

/// Checks that a provider spec names a tenant opsledger can use, before the
/// tenant is stored: the spec parses; a folder exists and is readable; Graph
/// credentials obtain a token. Demo tenants are generated, so their spec is
/// the whole check (a `demo:blocked` tenant is valid: it shows a blocked tenant).
pub async fn validate(
    spec: &str,
    tenant_name: &str,
    settings: &ProviderSettings,
) -> Result<(), ProviderError> {
    if spec.len() > MAX_SPEC_BYTES {
        return Err(ProviderError::Unavailable(format!(
            "provider spec is {} bytes, over the limit of {MAX_SPEC_BYTES}",
            spec.len()
        )));
    }
    if let (Some(("folder", path)), Some(roots)) = (spec.split_once(':'), &settings.folder_roots) {
        check_folder_root(path, roots).await?;
    }
    // The tenant has no id yet: nothing is written through this provider.
    let provider = open(spec, "", tenant_name, settings)?;
    if spec.starts_with("demo:") {
        return Ok(());
    }
    match tokio::time::timeout(VALIDATE_TIMEOUT, provider.check_access()).await {
        Ok(result) => result,
        Err(_) => Err(ProviderError::Transient(format!(
            "no answer within {}s while checking the provider",
            VALIDATE_TIMEOUT.as_secs()
        ))),
    }
}

/// Refuses a folder that does not resolve (symlinks and `..` followed)
/// inside one of `roots`. A folder that does not exist gets the same answer
/// as one outside, so the answer says nothing of what exists elsewhere.
async fn check_folder_root(path: &str, roots: &[std::path::PathBuf]) -> Result<(), ProviderError> {
    let (path, roots) = (std::path::PathBuf::from(path), roots.to_vec());
    let inside = tokio::task::spawn_blocking(move || {
        let Ok(resolved) = std::fs::canonicalize(&path) else {
            return false;
        };
        roots
            .iter()
            .filter_map(|r| std::fs::canonicalize(r).ok())
            .any(|root| resolved.starts_with(root))
    })
    .await
    .unwrap_or(false);
    if inside {
        Ok(())
    } else {
        Err(ProviderError::Unavailable(
            "the folder is not an existing folder inside the folder roots this server allows \
             (OPSLEDGER_FOLDER_ROOTS on the server; none are allowed by default)"
                .into(),
        ))
    }
}

/// The kind of a provider spec (`demo`, `folder`, `graph`), for listings.
pub fn kind_of(spec: &str) -> &str {
    spec.split_once(':').map_or(spec, |(k, _)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_parses_specs() {
        let s = ProviderSettings::default();
        assert!(open("demo:healthy", "t1", "contoso", &s).is_ok());
        assert!(open("demo:healthy:20", "t1", "contoso", &s).is_ok());
        assert!(matches!(
            open("demo:healthy:0", "t1", "c", &s),
            Err(ProviderError::Unavailable(_))
        ));
        assert!(matches!(
            open("demo:nope", "t1", "c", &s),
            Err(ProviderError::Unavailable(_))
        ));
        assert!(matches!(
            open("healthy", "t1", "c", &s),
            Err(ProviderError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn validation_checks_what_the_spec_names() {
        let s = ProviderSettings::default();
        validate("demo:blocked", "t", &s).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        validate(&format!("folder:{}", dir.path().display()), "t", &s)
            .await
            .unwrap();
        let e = validate("folder:/nonexistent/export", "t", &s).await.unwrap_err();
        assert!(e.to_string().contains("/nonexistent/export"), "{e}");
        assert!(validate("folder:", "t", &s).await.is_err());
        assert!(
            validate(&format!("folder:{}", "x".repeat(5000)), "t", &s)
                .await
                .is_err()
        );
        assert_eq!(kind_of("folder:/a:b"), "folder");
        // Confined to roots: inside passes; outside, `..` out, a symlink out
        // and a folder that does not exist get one answer.
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("export")).unwrap();
        std::os::unix::fs::symlink("/etc", root.path().join("escape")).unwrap();
        let confined = ProviderSettings {
            folder_roots: Some(vec![root.path().to_owned()]),
            ..ProviderSettings::default()
        };
        let r = root.path().display();
        validate(&format!("folder:{r}/export"), "t", &confined)
            .await
            .unwrap();
        let mut answers = Vec::new();
        for spec in [
            "folder:/".to_owned(),
            format!("folder:{r}/export/../.."),
            format!("folder:{r}/escape"),
            format!("folder:{r}/missing"),
            format!("folder:{}", dir.path().display()),
        ] {
            answers.push(validate(&spec, "t", &confined).await.unwrap_err().to_string());
        }
        assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
        let none = ProviderSettings {
            folder_roots: Some(Vec::new()),
            ..ProviderSettings::default()
        };
        assert!(validate(&format!("folder:{r}/export"), "t", &none).await.is_err());
    }
}

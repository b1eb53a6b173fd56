//! The demo provider: a tenant generated in-process, deterministic per tenant
//! name, with Intune-shaped policy JSON across 15 policy types (120+
//! policies; `intents`, the Endpoint security / security baseline intents,
//! is generated empty and holds what is written into it), served in pages
//! like Microsoft Graph, with a directory the policies are assigned to, and
//! writes that stick.
//!
//! Profiles reproduce what real tenants do to a sync or a restore:
//! - `healthy`: every type readable and writable;
//! - `throttled`: the first page (and every policy) of every third type
//!   answers 429 with a `Retry-After` on every other call, and so does every
//!   write of an object of those types (counted per object, so units writing
//!   side by side cannot use up each other's retries); a caller that
//!   honours it reads and writes everything;
//! - `partial`: the Conditional Access types are forbidden (a permission
//!   missing for them), and `deviceManagementScripts` fails on its second page
//!   every time, so that type is never fully read; writes of those three
//!   types are forbidden too, so a restore into it partially succeeds;
//! - `blocked`: the tenant's consent is missing; nothing can be read or written.
//!
//! **Directory.** Every demo tenant has the same groups by name
//! ([`GROUP_NAMES`]) under ids of its own, so references can be mapped
//! between tenants by name; its named locations and assignment filters are
//! its `namedLocations` and `assignmentFilters` policies. Generated policies
//! are assigned to the tenant's own groups (with filters on some targets),
//! and Conditional Access policies name its groups and named locations in
//! their conditions.
//!
//! **Writes** (create, update, assign, new groups) are kept in a
//! [`DemoState`] per tenant key — the tenant's identity, its id in the
//! ledger — and overlaid on the generated tenant by every read: an update
//! replaces a generated policy where it stands, a create is listed after
//! the generated ones. The binary backs the state with its database, so a
//! restore survives a restart and every node sees it; without one, writes
//! go to [`MemoryDemoState`], shared by the process and lost with it.
//!
//! Every call waits `latency` first (`OPSLEDGER_DEMO_LATENCY_MS`), so progress
//! can be watched.

mod planted;
mod state;

pub use planted::{CERTIFICATE_BLOB, OMA_ADMIN_PASSWORD, OMA_WIFI_KEY_MATERIAL, WIFI_PRE_SHARED_KEY};
pub use state::{DemoState, DemoStateError, GROUPS, MemoryDemoState};

use crate::{Directory, DirectoryEntry, DirectoryKind, Page, Policy, PolicyType, Provider, ProviderError};
use async_trait::async_trait;
use opsledger_core::policy_types;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

/// Items per page, as Graph's `$top`.
pub const PAGE_SIZE: usize = 10;

/// The delay a throttled answer asks for.
pub const THROTTLE_RETRY_AFTER: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Healthy,
    Throttled,
    Partial,
    Blocked,
}

impl Profile {
    pub const ALL: [Profile; 4] = [
        Profile::Healthy,
        Profile::Throttled,
        Profile::Partial,
        Profile::Blocked,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Healthy => "healthy",
            Profile::Throttled => "throttled",
            Profile::Partial => "partial",
            Profile::Blocked => "blocked",
        }
    }
}

impl FromStr for Profile {
    type Err = ProviderError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Profile::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| {
            ProviderError::Unavailable(format!(
                "unknown demo profile `{s}` (healthy, throttled, partial, blocked)"
            ))
        })
    }
}

/// (key in the policy type catalog, base count, @odata.type variants).
/// A base count of 0 generates none of the type at any scale: the tenant
/// has the collection, empty until something is written into it. New types
/// go last: a type's index is in its generated policies and decides which
/// types the `throttled` profile throttles.
const TYPES: &[(&str, usize, &[&str])] = &[
    (
        "deviceConfigurations",
        18,
        &[
            "windows10GeneralConfiguration",
            "windows10EndpointProtectionConfiguration",
            "iosGeneralDeviceConfiguration",
            "androidWorkProfileGeneralDeviceConfiguration",
        ],
    ),
    (
        "deviceCompliancePolicies",
        14,
        &[
            "windows10CompliancePolicy",
            "iosCompliancePolicy",
            "androidWorkProfileCompliancePolicy",
            "macOSCompliancePolicy",
        ],
    ),
    (
        "configurationPolicies",
        16,
        &["deviceManagementConfigurationPolicy"],
    ),
    ("groupPolicyConfigurations", 8, &["groupPolicyConfiguration"]),
    ("deviceManagementScripts", 12, &["deviceManagementScript"]),
    ("deviceHealthScripts", 6, &["deviceHealthScript"]),
    (
        "windowsAutopilotDeploymentProfiles",
        5,
        &[
            "azureADWindowsAutopilotDeploymentProfile",
            "activeDirectoryWindowsAutopilotDeploymentProfile",
        ],
    ),
    (
        "deviceEnrollmentConfigurations",
        7,
        &[
            "windows10EnrollmentCompletionPageConfiguration",
            "deviceEnrollmentLimitConfiguration",
            "deviceEnrollmentPlatformRestrictionConfiguration",
        ],
    ),
    (
        "windowsFeatureUpdateProfiles",
        4,
        &["windowsFeatureUpdateProfile"],
    ),
    (
        "managedAppPolicies",
        10,
        &[
            "androidManagedAppProtection",
            "iosManagedAppProtection",
            "windowsInformationProtectionPolicy",
        ],
    ),
    (
        "mobileAppConfigurations",
        6,
        &["iosMobileAppConfiguration", "androidManagedStoreAppConfiguration"],
    ),
    ("conditionalAccessPolicies", 12, &["conditionalAccessPolicy"]),
    ("namedLocations", 3, &["ipNamedLocation", "countryNamedLocation"]),
    (
        "assignmentFilters",
        6,
        &["deviceAndAppManagementAssignmentFilter"],
    ),
    // Endpoint security / security baseline intents: none generated (the
    // generated counts stay what they were); created ones keep their
    // `settings`, as Graph's get_policy reads them (graph/mod.rs).
    ("intents", 0, &["deviceManagementIntent"]),
];

/// Types forbidden in the `partial` profile (they need Policy.Read.All).
const PARTIAL_FORBIDDEN: &[&str] = &["conditionalAccessPolicies", "namedLocations"];
/// The type whose second page always fails in the `partial` profile.
const PARTIAL_BROKEN_PAGING: &str = "deviceManagementScripts";
/// Types the `partial` profile refuses to write, with the permission it lacks.
const PARTIAL_READ_ONLY: &[(&str, &str)] = &[
    ("conditionalAccessPolicies", "Policy.ReadWrite.ConditionalAccess"),
    ("namedLocations", "Policy.ReadWrite.ConditionalAccess"),
    ("deviceManagementScripts", "DeviceManagementScripts.ReadWrite.All"),
];

/// Types with no `assignments` collection: Conditional Access is targeted by
/// its conditions; named locations and filters are what others refer to.
const UNASSIGNED: &[&str] = &["conditionalAccessPolicies", "namedLocations", "assignmentFilters"];

/// The groups of every demo tenant, by name (their ids differ per tenant).
pub const GROUP_NAMES: &[&str] = &[
    "All Staff",
    "All Corporate Devices",
    "Pilot Devices",
    "Finance Users",
    "Executives",
    "Contractors",
    "Frontline Workers",
    "Developers",
    "Kiosk Devices",
    "Break Glass Accounts",
];

/// The group Conditional Access policies exclude (last of [`GROUP_NAMES`]);
/// assignments target the others.
const BREAK_GLASS: &str = "Break Glass Accounts";

/// Named locations and filters generated at every scale (their types' base
/// counts), so references to them hold whatever the tenant's scale.
const REFERENCED_LOCATIONS: usize = 3;
const REFERENCED_FILTERS: usize = 6;

/// The id of a tenant's group: derived from the tenant and the group's name,
/// as policy ids are, so a tenant is the same every run and two tenants
/// share names, not ids.
pub fn group_id(tenant: &str, name: &str) -> String {
    guid(&digest(&[tenant, "#group", name]))
}

/// The generated policies of one type, with an index by id (a unit job
/// reading one policy of thousands must not scan them).
struct Generated {
    policies: Vec<Policy>,
    by_id: HashMap<String, usize>,
}

impl Generated {
    fn get(&self, id: &str) -> Option<&Policy> {
        self.by_id.get(id).map(|&i| &self.policies[i])
    }
}

/// The written objects of one type as a read sees them: updates of
/// generated policies by id, and created policies in creation order.
struct Overlay {
    replaced: HashMap<String, Policy>,
    created: Vec<Policy>,
}

pub struct DemoProvider {
    /// The tenant's name: what its generated content is derived from.
    tenant: String,
    /// The tenant's identity, which its writes are kept under.
    key: String,
    profile: Profile,
    scale: usize,
    latency: Duration,
    state: Arc<dyn DemoState>,
}

impl DemoProvider {
    /// A demo tenant whose writes are kept under its name, in the
    /// process-wide [`MemoryDemoState`]; see [`DemoProvider::with_state`].
    pub fn new(tenant: &str, profile: Profile, latency: Duration) -> DemoProvider {
        DemoProvider {
            tenant: tenant.to_owned(),
            key: tenant.to_owned(),
            profile,
            scale: 1,
            latency,
            state: Arc::new(MemoryDemoState),
        }
    }

    /// Multiplies every type's policy count (large tenants for fan-out tests).
    pub fn with_scale(mut self, scale: usize) -> DemoProvider {
        self.scale = scale.max(1);
        self
    }

    /// Keeps writes in `state` under `key`, the tenant's unique identity
    /// (its ledger id: names are unique only within a workspace).
    pub fn with_state(mut self, key: &str, state: Arc<dyn DemoState>) -> DemoProvider {
        self.key = key.to_owned();
        self.state = state;
        self
    }

    /// Every generated policy of a type, as the generator made it (writes
    /// are not overlaid: [`Provider::list_page`] reads those too).
    pub fn policies(&self, type_key: &str) -> Option<Vec<Policy>> {
        self.generated(type_key).map(|g| g.policies.clone())
    }

    /// The generated tenant, shared by every instance of the process: the
    /// "service side" of the demo, generated once per tenant, type and scale
    /// (a unit job reading one policy must not regenerate thousands).
    fn generated(&self, type_key: &str) -> Option<Arc<Generated>> {
        /// (tenant, policy type, scale) → the generated policies.
        type Cache = HashMap<(String, String, usize), Arc<Generated>>;
        static TENANTS: LazyLock<Mutex<Cache>> = LazyLock::new(Default::default);
        let (idx, (key, base, variants)) = TYPES.iter().enumerate().find(|(_, t)| t.0 == type_key)?;
        let cache_key = (self.tenant.clone(), type_key.to_owned(), self.scale);
        if let Some(hit) = TENANTS.lock().expect("lock").get(&cache_key) {
            return Some(hit.clone());
        }
        // A type with base count 0 stays empty (no random extra ones either).
        let count = if *base == 0 {
            0
        } else {
            (base + (digest(&[&self.tenant, key])[0] % 3) as usize) * self.scale
        };
        let mut policies: Vec<Policy> = (0..count)
            .map(|i| generate(&self.tenant, key, variants, idx, i))
            .collect();
        // Secret-bearing policies every tenant holds once (demo/planted.rs).
        policies.extend(planted::policies(&self.tenant, key));
        let by_id = policies
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id.clone(), i))
            .collect();
        let all = Arc::new(Generated { policies, by_id });
        TENANTS.lock().expect("lock").insert(cache_key, all.clone());
        Some(all)
    }

    fn generated_or_unknown(&self, type_key: &str) -> Result<Arc<Generated>, ProviderError> {
        self.generated(type_key)
            .ok_or_else(|| ProviderError::UnknownType(type_key.to_owned()))
    }

    /// What was written into a type, split against the generated policies.
    async fn overlay(&self, type_key: &str, generated: &Generated) -> Result<Overlay, ProviderError> {
        let mut overlay = Overlay {
            replaced: HashMap::new(),
            created: Vec::new(),
        };
        for (id, body) in self.state.list(&self.key, type_key).await.map_err(state_failed)? {
            let policy = policy_of(id, body);
            if generated.get(&policy.id).is_some() {
                overlay.replaced.insert(policy.id.clone(), policy);
            } else {
                overlay.created.push(policy);
            }
        }
        Ok(overlay)
    }

    /// Every policy of a type as it is now: generated ones (updated where
    /// written) and then created ones.
    async fn current_all(&self, type_key: &str) -> Result<Vec<Policy>, ProviderError> {
        let generated = self.generated_or_unknown(type_key)?;
        let mut overlay = self.overlay(type_key, &generated).await?;
        let mut all: Vec<Policy> = generated
            .policies
            .iter()
            .map(|p| overlay.replaced.remove(&p.id).unwrap_or_else(|| p.clone()))
            .collect();
        all.append(&mut overlay.created);
        Ok(all)
    }

    /// One policy as it is now (written, else generated).
    async fn current(&self, type_key: &str, id: &str) -> Result<Policy, ProviderError> {
        let generated = self.generated_or_unknown(type_key)?;
        if let Some(body) = self
            .state
            .get(&self.key, type_key, id)
            .await
            .map_err(state_failed)?
        {
            return Ok(policy_of(id.to_owned(), body));
        }
        generated
            .get(id)
            .cloned()
            .ok_or_else(|| ProviderError::NotFound(format!("{type_key}/{id}")))
    }

    /// The directory as it is now (no latency, no profile check: callers do those).
    async fn read_directory(&self) -> Result<Directory, ProviderError> {
        let mut directory = Directory::default();
        for name in GROUP_NAMES {
            directory.insert(DirectoryEntry {
                kind: DirectoryKind::Group,
                id: group_id(&self.tenant, name),
                display_name: (*name).to_owned(),
            });
        }
        for (id, body) in self.state.list(&self.key, GROUPS).await.map_err(state_failed)? {
            let display_name = body["displayName"].as_str().unwrap_or_default().to_owned();
            directory.insert(DirectoryEntry {
                kind: DirectoryKind::Group,
                id,
                display_name,
            });
        }
        for kind in [DirectoryKind::NamedLocation, DirectoryKind::AssignmentFilter] {
            let type_key = kind.policy_type().expect("a policy-type kind");
            for p in self.current_all(type_key).await? {
                directory.insert(DirectoryEntry {
                    kind,
                    id: p.id,
                    display_name: p.display_name,
                });
            }
        }
        Ok(directory)
    }

    /// The throttled profile's 429 for `resource` of an every-third type.
    fn throttle(&self, type_key: &str, resource: &str) -> Result<(), ProviderError> {
        if self.profile == Profile::Throttled {
            let idx = TYPES.iter().position(|t| t.0 == type_key).unwrap_or(0);
            if idx % 3 == 0 && self.throttle_now(resource) {
                return Err(ProviderError::throttled(
                    Some(THROTTLE_RETRY_AFTER),
                    format!("429 Too Many Requests on {type_key}"),
                ));
            }
        }
        Ok(())
    }

    /// Whether the tenant takes a write of this type: a known type, consent
    /// given, and (in `partial`) not one of the types it lacks a permission for.
    fn check_write(&self, type_key: &str) -> Result<Arc<Generated>, ProviderError> {
        let generated = self.generated_or_unknown(type_key)?;
        match self.profile {
            Profile::Blocked => Err(ProviderError::PermissionMissing(format!(
                "tenant `{}` has no consent",
                self.tenant
            ))),
            Profile::Partial => match PARTIAL_READ_ONLY.iter().find(|(t, _)| *t == type_key) {
                Some((_, permission)) => Err(ProviderError::Forbidden(format!(
                    "403 Forbidden: writing {type_key} requires {permission}, which tenant `{}` has not granted",
                    self.tenant
                ))),
                None => Ok(generated),
            },
            _ => Ok(generated),
        }
    }

    async fn wait(&self) {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }
}

#[async_trait]
impl Provider for DemoProvider {
    async fn check_access(&self) -> Result<(), ProviderError> {
        self.wait().await;
        if self.profile == Profile::Blocked {
            return Err(ProviderError::PermissionMissing(format!(
                "admin consent for tenant `{}` is missing (DeviceManagementConfiguration.Read.All not granted)",
                self.tenant
            )));
        }
        Ok(())
    }

    async fn policy_types(&self) -> Result<Vec<PolicyType>, ProviderError> {
        self.wait().await;
        Ok(TYPES
            .iter()
            .map(|(key, _, _)| {
                let info = policy_types::lookup(key).expect("every demo type is in the catalog");
                PolicyType {
                    key: info.key.to_owned(),
                    graph_path: info.graph_path.to_owned(),
                    label: info.label.to_owned(),
                }
            })
            .collect())
    }

    async fn list_page(&self, type_key: &str, page: Option<&str>) -> Result<Page, ProviderError> {
        self.wait().await;
        let generated = self.generated_or_unknown(type_key)?;
        let offset: usize = match page {
            None => 0,
            Some(token) => token
                .parse()
                .map_err(|_| ProviderError::service(400, format!("bad page token `{token}`")))?,
        };
        self.check_type(type_key)?;
        match self.profile {
            Profile::Partial if type_key == PARTIAL_BROKEN_PAGING && offset > 0 => {
                return Err(ProviderError::service(
                    503,
                    format!(
                        "503 Service Unavailable on page {} of {type_key}",
                        offset / (PAGE_SIZE * self.scale) + 1
                    ),
                ));
            }
            Profile::Throttled if offset == 0 => self.throttle(type_key, type_key)?,
            _ => {}
        }
        // The generated policies (updated ones where they stand), then the
        // created ones: offsets into that sequence are the page tokens.
        let mut overlay = self.overlay(type_key, &generated).await?;
        let total = generated.policies.len() + overlay.created.len();
        let end = (offset + PAGE_SIZE * self.scale).min(total);
        let items = (offset.min(end)..end)
            .map(|i| match generated.policies.get(i) {
                Some(p) => overlay.replaced.remove(&p.id).unwrap_or_else(|| p.clone()),
                None => overlay.created[i - generated.policies.len()].clone(),
            })
            .collect();
        Ok(Page {
            items,
            next: (end < total).then(|| end.to_string()),
            failures: Vec::new(),
        })
    }

    async fn get_policy(&self, type_key: &str, id: &str) -> Result<Policy, ProviderError> {
        self.wait().await;
        self.check_type(type_key)?;
        self.generated_or_unknown(type_key)?;
        self.throttle(type_key, &format!("{type_key}/{id}"))?;
        self.current(type_key, id).await
    }

    /// Groups, named locations and assignment filters, read whole. The
    /// `partial` profile reads its directory too: its missing permissions
    /// are about policy types, and a restore into it must be able to map
    /// the references it can write.
    async fn directory(&self) -> Result<Directory, ProviderError> {
        self.wait().await;
        if self.profile == Profile::Blocked {
            return Err(ProviderError::PermissionMissing(format!(
                "tenant `{}` has no consent",
                self.tenant
            )));
        }
        self.read_directory().await
    }

    async fn create_directory_object(
        &self,
        kind: DirectoryKind,
        display_name: &str,
    ) -> Result<DirectoryEntry, ProviderError> {
        self.wait().await;
        if self.profile == Profile::Blocked {
            return Err(ProviderError::PermissionMissing(format!(
                "tenant `{}` has no consent",
                self.tenant
            )));
        }
        if kind != DirectoryKind::Group {
            return Err(ProviderError::UnsupportedType(format!(
                "a {} is a policy type ({}): create it with create_policy",
                kind.as_str(),
                kind.policy_type().unwrap_or_default()
            )));
        }
        let display_name = display_name.trim();
        if display_name.is_empty() {
            return Err(ProviderError::Malformed("a group needs a display name".into()));
        }
        let id = uuid::Uuid::now_v7().to_string();
        let body = json!({"id": id, "displayName": display_name});
        self.state
            .put(&self.key, GROUPS, &id, &body)
            .await
            .map_err(state_failed)?;
        Ok(DirectoryEntry {
            kind,
            id,
            display_name: display_name.to_owned(),
        })
    }

    async fn create_policy(&self, type_key: &str, body: &Value) -> Result<Policy, ProviderError> {
        self.wait().await;
        self.check_write(type_key)?;
        let name = ["displayName", "name"]
            .iter()
            .find_map(|k| body.get(*k).and_then(Value::as_str))
            .unwrap_or_default();
        self.throttle(type_key, &format!("create/{type_key}/{name}"))?;
        let id = uuid::Uuid::now_v7().to_string();
        let mut payload = writable(type_key, body)?;
        if !UNASSIGNED.contains(&type_key) {
            // Created unassigned: `assign` writes the targets once the policy exists.
            payload.insert("assignments".into(), json!([]));
        }
        self.store(type_key, id, payload).await
    }

    async fn update_policy(&self, type_key: &str, id: &str, body: &Value) -> Result<Policy, ProviderError> {
        self.wait().await;
        self.check_write(type_key)?;
        self.throttle(type_key, &format!("update/{type_key}/{id}"))?;
        let existing = self.current(type_key, id).await?;
        let mut payload = writable(type_key, body)?;
        // An update replaces properties and settings; the type and the
        // assignments stay what they were unless the body names a type.
        if !payload.contains_key("@odata.type")
            && let Some(t) = existing.payload.get("@odata.type")
        {
            payload.insert("@odata.type".into(), t.clone());
        }
        if let Some(a) = existing.payload.get("assignments") {
            payload.insert("assignments".into(), a.clone());
        }
        self.store(type_key, id.to_owned(), payload).await
    }

    async fn assign(&self, type_key: &str, id: &str, assignments: &[Value]) -> Result<(), ProviderError> {
        self.wait().await;
        self.check_write(type_key)?;
        if UNASSIGNED.contains(&type_key) {
            return Err(ProviderError::UnsupportedType(format!(
                "{type_key} has no assignments (Conditional Access is targeted by its conditions)"
            )));
        }
        self.throttle(type_key, &format!("assign/{type_key}/{id}"))?;
        let existing = self.current(type_key, id).await?;
        let directory = self.read_directory().await?;
        let written = assignments
            .iter()
            .map(|a| assignment(id, a, &directory))
            .collect::<Result<Vec<Value>, ProviderError>>()?;
        let mut payload = match existing.payload {
            Value::Object(m) => m,
            _ => {
                return Err(ProviderError::Malformed(format!(
                    "{type_key}/{id} is not an object"
                )));
            }
        };
        payload.insert("assignments".into(), Value::Array(written));
        self.store(type_key, id.to_owned(), payload).await?;
        Ok(())
    }
}

impl DemoProvider {
    /// Writes a policy's payload into the state; the policy as now read.
    async fn store(
        &self,
        type_key: &str,
        id: String,
        mut payload: Map<String, Value>,
    ) -> Result<Policy, ProviderError> {
        payload.insert("id".into(), Value::String(id.clone()));
        if !payload.contains_key("@odata.type") {
            let variant = TYPES
                .iter()
                .find(|t| t.0 == type_key)
                .map(|t| t.2[0])
                .unwrap_or("entity");
            payload.insert("@odata.type".into(), json!(format!("#microsoft.graph.{variant}")));
        }
        let payload = Value::Object(payload);
        self.state
            .put(&self.key, type_key, &id, &payload)
            .await
            .map_err(state_failed)?;
        Ok(policy_of(id, payload))
    }
}

/// A body's writable properties: its own id, OData annotations other than
/// `@odata.type`, and `assignments` (written by `assign` only) are not.
fn writable(type_key: &str, body: &Value) -> Result<Map<String, Value>, ProviderError> {
    let Value::Object(body) = body else {
        return Err(ProviderError::Malformed(format!(
            "a {type_key} body must be a JSON object"
        )));
    };
    let payload: Map<String, Value> = body
        .iter()
        .filter(|(k, _)| {
            let k = k.as_str();
            k != "id" && k != "assignments" && (k == "@odata.type" || !k.contains("@odata."))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let named = ["displayName", "name"].iter().any(|k| {
        payload
            .get(*k)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.trim().is_empty())
    });
    if !named {
        return Err(ProviderError::Malformed(format!(
            "a {type_key} body needs a `displayName` (or `name`)"
        )));
    }
    Ok(payload)
}

/// One assignment as the tenant keeps it: its target's group and filter
/// must be the tenant's own (an id from another tenant is refused, as Graph
/// refuses it: a restore must map references by name first).
fn assignment(policy_id: &str, a: &Value, directory: &Directory) -> Result<Value, ProviderError> {
    let target = a
        .get("target")
        .and_then(Value::as_object)
        .ok_or_else(|| ProviderError::Malformed("an assignment needs a `target` object".into()))?;
    let known = |field: &str, kind: DirectoryKind| -> Result<Option<String>, ProviderError> {
        match target.get(field).and_then(Value::as_str) {
            None | Some("") | Some("00000000-0000-0000-0000-000000000000") => Ok(None),
            Some(id) => match directory.by_id(id) {
                Some(e) if e.kind == kind => Ok(Some(e.id.clone())),
                _ => Err(ProviderError::NotFound(format!(
                    "{} `{id}` (in an assignment's {field}) is not in the tenant's directory",
                    kind.as_str()
                ))),
            },
        }
    };
    let group = known("groupId", DirectoryKind::Group)?;
    known(
        "deviceAndAppManagementAssignmentFilterId",
        DirectoryKind::AssignmentFilter,
    )?;
    let suffix = match &group {
        Some(g) => g.clone(),
        None => target
            .get("@odata.type")
            .and_then(Value::as_str)
            .unwrap_or("target")
            .trim_start_matches("#microsoft.graph.")
            .to_owned(),
    };
    let mut out = a.as_object().cloned().unwrap_or_default();
    out.retain(|k, _| !k.contains("@odata.") || k == "@odata.type");
    out.insert("id".into(), json!(format!("{policy_id}_{suffix}")));
    Ok(Value::Object(out))
}

/// A policy from its payload (ids of written objects are their keys).
fn policy_of(id: String, payload: Value) -> Policy {
    let display_name = payload
        .get("displayName")
        .or_else(|| payload.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Policy {
        id,
        display_name,
        payload,
    }
}

/// The demo's state failed: to the caller, the service did not answer.
fn state_failed(e: DemoStateError) -> ProviderError {
    ProviderError::Transient(e.to_string())
}

/// Calls per `tenant/resource`, shared by every provider instance of the
/// process, because throttling is the service's state, not the client's:
/// a worker that opens a new provider for its retry must not be throttled
/// forever.
static CALLS: LazyLock<Mutex<HashMap<String, u64>>> = LazyLock::new(Default::default);

impl DemoProvider {
    /// The `throttled` profile answers 429 to every other call of a resource,
    /// so one retry after `Retry-After` always gets through.
    fn throttle_now(&self, resource: &str) -> bool {
        let mut calls = CALLS.lock().expect("lock");
        let n = calls.entry(format!("{}/{resource}", self.tenant)).or_default();
        *n += 1;
        *n % 2 == 1
    }

    /// The policy-level view of a profile's failures, shared by list and get.
    fn check_type(&self, type_key: &str) -> Result<(), ProviderError> {
        match self.profile {
            Profile::Blocked => Err(ProviderError::PermissionMissing(format!(
                "tenant `{}` has no consent",
                self.tenant
            ))),
            Profile::Partial if PARTIAL_FORBIDDEN.contains(&type_key) => Err(ProviderError::Forbidden(
                format!("403 Forbidden: {type_key} requires Policy.Read.All"),
            )),
            _ => Ok(()),
        }
    }
}

fn digest(parts: &[&str]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.finalize().into()
}

/// A GUID derived from the tenant, type and index, so a tenant is the same every run.
fn guid(bytes: &[u8; 32]) -> String {
    let h = hex::encode(&bytes[..16]);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

const NAMES: &[&str] = &[
    "Baseline",
    "Finance",
    "Kiosk",
    "Executives",
    "Contractors",
    "Frontline",
    "Developers",
    "Shared devices",
    "Pilot ring",
    "Broad ring",
    "BYOD",
    "Corporate",
];

fn generate(tenant: &str, type_key: &str, variants: &[&str], type_idx: usize, i: usize) -> Policy {
    let d = digest(&[tenant, type_key, &i.to_string()]);
    let id = guid(&d);
    let variant = variants[d[16] as usize % variants.len()];
    let audience = NAMES[(d[17] as usize + i) % NAMES.len()];
    let display_name = format!("{} - {audience} {}", short(type_key), i + 1);
    let day = 1 + d[18] as u32 % 28;
    let modified = format!(
        "2026-{:02}-{day:02}T{:02}:{:02}:00Z",
        1 + d[19] % 10,
        d[20] % 24,
        d[21] % 60
    );
    let created = format!("2025-{:02}-{day:02}T08:00:00Z", 1 + d[22] % 12);
    let flag = |n: usize| d[n].is_multiple_of(2);
    let mut payload = json!({
        "@odata.type": format!("#microsoft.graph.{variant}"),
        "id": id,
        "createdDateTime": created,
        "lastModifiedDateTime": modified,
        "description": format!("{audience} policy managed by the MSP (type {type_idx})"),
        "roleScopeTagIds": ["0"],
    });
    let extra: Value = match type_key {
        "deviceConfigurations" => json!({
            "displayName": display_name, "version": 1 + d[23] % 9,
            "passwordRequired": flag(24), "passwordMinimumLength": 8 + d[25] % 8,
            "defenderMonitorFileActivity": "monitorAllFiles", "firewallBlockAllIncoming": flag(26),
            "bitLockerEncryptDevice": flag(27), "storageRequireMobileDeviceEncryption": true,
        }),
        "deviceCompliancePolicies" => json!({
            "displayName": display_name, "version": 1 + d[23] % 5,
            "passwordRequired": true, "passwordMinimumLength": 6 + d[24] % 10,
            "osMinimumVersion": format!("10.0.{}", 19045 + d[25] as u32 % 3000),
            "secureBootEnabled": flag(26), "bitLockerEnabled": flag(27), "deviceThreatProtectionEnabled": flag(28),
            "scheduledActionsForRule": [{"ruleName": "PasswordRequired", "scheduledActionConfigurations": [
                {"actionType": "block", "gracePeriodHours": 12 * (d[29] % 4) as u32}]}],
        }),
        "configurationPolicies" => {
            let settings: Vec<Value> = (0..(3 + d[23] % 12))
                .map(|n| json!({
                    "id": n.to_string(),
                    "settingInstance": {
                        "@odata.type": "#microsoft.graph.deviceManagementConfigurationChoiceSettingInstance",
                        "settingDefinitionId": format!("device_vendor_msft_policy_config_defender_setting{n}"),
                        "choiceSettingValue": {"value": format!("device_vendor_msft_policy_config_defender_setting{n}_{}", d[(n as usize) % 32] % 2), "children": []}
                    }
                }))
                .collect();
            json!({"name": display_name, "platforms": "windows10", "technologies": "mdm",
                   "settingCount": settings.len(), "settings": settings,
                   "templateReference": {"templateId": "", "templateFamily": "none"}})
        }
        "groupPolicyConfigurations" => {
            json!({"displayName": display_name, "policyConfigurationIngestionType": "builtIn"})
        }
        "deviceManagementScripts" | "deviceHealthScripts" => json!({
            "displayName": display_name, "fileName": format!("script{}.ps1", i + 1), "runAsAccount": if flag(23) { "system" } else { "user" },
            "enforceSignatureCheck": flag(24), "runAs32Bit": false,
            "scriptContent": "V3JpdGUtT3V0cHV0ICJvcHNsZWRnZXIgZGVtbyI=",
        }),
        "windowsAutopilotDeploymentProfiles" => json!({
            "displayName": display_name, "language": "os-default", "deviceNameTemplate": format!("{}-%SERIAL%", &tenant.to_uppercase()[..tenant.len().min(4)]),
            "outOfBoxExperienceSettings": {"hidePrivacySettings": true, "hideEULA": true, "userType": "standard", "deviceUsageType": "singleUser"},
        }),
        "deviceEnrollmentConfigurations" => {
            json!({"displayName": display_name, "priority": i, "limit": 5 + d[23] % 10})
        }
        "windowsFeatureUpdateProfiles" => {
            json!({"displayName": display_name, "featureUpdateVersion": (["Windows 11, version 23H2", "Windows 11, version 24H2"][d[23] as usize % 2])})
        }
        "managedAppPolicies" => json!({
            "displayName": display_name, "version": format!("\"{}\"", d[23]),
            "pinRequired": true, "minimumPinLength": 4 + d[24] % 4, "dataBackupBlocked": flag(25),
            "allowedOutboundDataTransferDestinations": "managedApps", "periodOfflineBeforeAccessCheck": "PT12H",
        }),
        "mobileAppConfigurations" => {
            json!({"displayName": display_name, "targetedMobileApps": [guid(&digest(&[&id, "app"]))], "version": 1})
        }
        "conditionalAccessPolicies" => json!({
            "displayName": format!("CA{:03} - {audience}", i + 1), "state": (["enabled", "enabledForReportingButNotEnforced", "disabled"][d[23] as usize % 3]),
            "conditions": ca_conditions(tenant, &d),
            "grantControls": {"operator": "OR", "builtInControls": ["mfa"]},
        }),
        "namedLocations" => {
            json!({"displayName": format!("{audience} office {}", i + 1), "isTrusted": flag(23),
                                   "ipRanges": [{"@odata.type": "#microsoft.graph.iPv4CidrRange", "cidrAddress": format!("203.0.113.{}/32", d[24])}]})
        }
        "assignmentFilters" => json!({"displayName": display_name, "platform": "windows10AndLater",
                                      "rule": format!("(device.deviceOwnership -eq \"Corporate\") and (device.osVersion -startsWith \"10.0.{}\")", 19000 + d[23] as u32 * 10)}),
        _ => json!({"displayName": display_name}),
    };
    let obj = payload.as_object_mut().expect("object");
    for (k, v) in extra.as_object().expect("object") {
        obj.insert(k.clone(), v.clone());
    }
    if !UNASSIGNED.contains(&type_key) {
        obj.insert("assignments".into(), assignments(tenant, &id, &d));
    }
    let display = obj
        .get("displayName")
        .or_else(|| obj.get("name"))
        .and_then(Value::as_str)
        .unwrap_or(&display_name)
        .to_owned();
    Policy {
        id,
        display_name: display,
        payload,
    }
}

/// The id the generator gives policy `i` of a type.
fn generated_id(tenant: &str, type_key: &str, i: usize) -> String {
    guid(&digest(&[tenant, type_key, &i.to_string()]))
}

/// The groups assignments target: every group but the break-glass one.
fn assignable_group(tenant: &str, n: usize) -> String {
    let targets: Vec<&str> = GROUP_NAMES
        .iter()
        .copied()
        .filter(|g| *g != BREAK_GLASS)
        .collect();
    group_id(tenant, targets[n % targets.len()])
}

/// 0 to 3 group targets of a policy, deterministic per tenant and policy:
/// the first two include (one in three with an assignment filter, either
/// way), the third excludes; the groups are distinct.
fn assignments(tenant: &str, policy_id: &str, d: &[u8; 32]) -> Value {
    let count = d[30] as usize % 4;
    let first = d[31] as usize;
    let targets: Vec<Value> = (0..count)
        .map(|k| {
            let b = digest(&[policy_id, "assignment", &k.to_string()]);
            // Strides of 3 over the 9 assignable groups never repeat one.
            let group = assignable_group(tenant, first + 3 * k);
            let target = if k == 2 {
                json!({"@odata.type": "#microsoft.graph.exclusionGroupAssignmentTarget", "groupId": group})
            } else if b[0].is_multiple_of(3) {
                json!({"@odata.type": "#microsoft.graph.groupAssignmentTarget", "groupId": group,
                       "deviceAndAppManagementAssignmentFilterId": generated_id(tenant, "assignmentFilters", b[1] as usize % REFERENCED_FILTERS),
                       "deviceAndAppManagementAssignmentFilterType": if b[2].is_multiple_of(2) { "include" } else { "exclude" }})
            } else {
                json!({"@odata.type": "#microsoft.graph.groupAssignmentTarget", "groupId": group,
                       "deviceAndAppManagementAssignmentFilterId": null,
                       "deviceAndAppManagementAssignmentFilterType": "none"})
            };
            json!({"id": format!("{policy_id}_{group}"), "target": target})
        })
        .collect();
    Value::Array(targets)
}

/// A Conditional Access policy's conditions: all users or one or two of the
/// tenant's groups, the break-glass group excluded, and one of its named
/// locations included (or excluded from "All").
fn ca_conditions(tenant: &str, d: &[u8; 32]) -> Value {
    let (include_users, include_groups): (Vec<&str>, Vec<String>) = if d[24].is_multiple_of(3) {
        (vec!["All"], Vec::new())
    } else {
        let groups = (0..1 + d[25] as usize % 2)
            .map(|k| assignable_group(tenant, d[26] as usize + 3 * k))
            .collect();
        (Vec::new(), groups)
    };
    let location = generated_id(tenant, "namedLocations", d[27] as usize % REFERENCED_LOCATIONS);
    let locations = if d[28].is_multiple_of(2) {
        json!({"includeLocations": [location], "excludeLocations": []})
    } else {
        json!({"includeLocations": ["All"], "excludeLocations": [location]})
    };
    json!({
        "users": {"includeUsers": include_users, "includeGroups": include_groups,
                  "excludeGroups": [group_id(tenant, BREAK_GLASS)]},
        "applications": {"includeApplications": ["All"]},
        "clientAppTypes": ["all"],
        "locations": locations,
    })
}

fn short(type_key: &str) -> &'static str {
    match type_key {
        "deviceConfigurations" => "DC",
        "deviceCompliancePolicies" => "COMP",
        "configurationPolicies" => "SC",
        "groupPolicyConfigurations" => "ADMX",
        "deviceManagementScripts" => "PS",
        "deviceHealthScripts" => "REM",
        "windowsAutopilotDeploymentProfiles" => "AP",
        "deviceEnrollmentConfigurations" => "ENR",
        "windowsFeatureUpdateProfiles" => "FU",
        "managedAppPolicies" => "APP",
        "mobileAppConfigurations" => "ACP",
        "intents" => "ES",
        _ => "POL",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    async fn read_all(p: &DemoProvider, t: &str) -> Result<Vec<Policy>, ProviderError> {
        let mut items = Vec::new();
        let mut page = None;
        loop {
            let got = p.list_page(t, page.as_deref()).await?;
            items.extend(got.items);
            match got.next {
                Some(n) => page = Some(n),
                None => return Ok(items),
            }
        }
    }

    #[tokio::test]
    async fn healthy_tenant_has_ten_plus_types_and_a_hundred_plus_policies() {
        let p = DemoProvider::new("contoso", Profile::Healthy, Duration::ZERO);
        p.check_access().await.unwrap();
        let types = p.policy_types().await.unwrap();
        assert!(types.len() >= 10);
        let mut total = 0;
        let mut ids = HashSet::new();
        for t in &types {
            let items = read_all(&p, &t.key).await.unwrap();
            assert_eq!(items.len(), p.policies(&t.key).unwrap().len());
            for i in &items {
                assert!(
                    i.payload["@odata.type"]
                        .as_str()
                        .unwrap()
                        .starts_with("#microsoft.graph.")
                );
                assert_eq!(i.payload["id"], i.id.as_str());
                assert!(ids.insert(i.id.clone()), "ids are unique");
            }
            total += items.len();
        }
        assert!(total >= 100, "{total}");
    }

    #[tokio::test]
    async fn tenants_are_deterministic_and_distinct() {
        let a = DemoProvider::new("contoso", Profile::Healthy, Duration::ZERO);
        let b = DemoProvider::new("contoso", Profile::Healthy, Duration::ZERO);
        let c = DemoProvider::new("fabrikam", Profile::Healthy, Duration::ZERO);
        assert_eq!(
            a.policies("deviceConfigurations"),
            b.policies("deviceConfigurations")
        );
        assert_ne!(
            a.policies("deviceConfigurations"),
            c.policies("deviceConfigurations")
        );
    }

    #[tokio::test]
    async fn throttled_answers_429_once_then_reads() {
        let p = DemoProvider::new("fabrikam", Profile::Throttled, Duration::ZERO);
        let err = p.list_page("deviceConfigurations", None).await.unwrap_err();
        assert_eq!(err.retry_after(), Some(THROTTLE_RETRY_AFTER));
        assert!(read_all(&p, "deviceConfigurations").await.is_ok());
        assert!(
            read_all(&p, "deviceCompliancePolicies").await.is_ok(),
            "not every type is throttled"
        );
    }

    #[tokio::test]
    async fn partial_fails_some_types_permanently() {
        let p = DemoProvider::new("northwind", Profile::Partial, Duration::ZERO);
        p.check_access().await.unwrap();
        assert!(matches!(
            read_all(&p, "conditionalAccessPolicies").await,
            Err(ProviderError::Forbidden(_))
        ));
        assert!(matches!(
            read_all(&p, "deviceManagementScripts").await,
            Err(ProviderError::Service { status: 503, .. })
        ));
        assert!(read_all(&p, "deviceConfigurations").await.is_ok());
    }

    #[tokio::test]
    async fn blocked_cannot_read_anything() {
        let p = DemoProvider::new("tailspin", Profile::Blocked, Duration::ZERO);
        assert!(matches!(
            p.check_access().await,
            Err(ProviderError::PermissionMissing(_))
        ));
        assert!(p.list_page("deviceConfigurations", None).await.is_err());
    }

    fn names(d: &Directory, kind: DirectoryKind) -> Vec<String> {
        let mut n: Vec<String> = d
            .entries
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| e.display_name.clone())
            .collect();
        n.sort();
        n
    }

    #[tokio::test]
    async fn directories_share_group_names_across_tenants_but_not_ids() {
        let a = DemoProvider::new("contoso", Profile::Healthy, Duration::ZERO);
        let b = DemoProvider::new("fabrikam", Profile::Healthy, Duration::ZERO);
        let (da, db) = (a.directory().await.unwrap(), b.directory().await.unwrap());
        let groups = names(&da, DirectoryKind::Group);
        assert_eq!(groups.len(), GROUP_NAMES.len());
        assert_eq!(groups, names(&db, DirectoryKind::Group));
        for e in &da.entries {
            assert!(db.by_id(&e.id).is_none(), "{} shared by two tenants", e.id);
        }
        // Named locations and filters are the tenant's policies of those types.
        for kind in [DirectoryKind::NamedLocation, DirectoryKind::AssignmentFilter] {
            let policies = read_all(&a, kind.policy_type().unwrap()).await.unwrap();
            let entries: Vec<_> = da.entries.iter().filter(|e| e.kind == kind).collect();
            assert_eq!(entries.len(), policies.len());
            for p in &policies {
                let e = da
                    .by_id(&p.id)
                    .expect("every policy of the type is in the directory");
                assert_eq!((e.kind, e.display_name.as_str()), (kind, p.display_name.as_str()));
            }
        }
        assert!(matches!(
            DemoProvider::new("tailspin", Profile::Blocked, Duration::ZERO)
                .directory()
                .await,
            Err(ProviderError::PermissionMissing(_))
        ));
    }

    #[tokio::test]
    async fn assignments_and_conditions_point_at_the_tenants_own_objects() {
        let p = DemoProvider::new("contoso", Profile::Healthy, Duration::ZERO);
        let own = p.directory().await.unwrap();
        let other = DemoProvider::new("fabrikam", Profile::Healthy, Duration::ZERO)
            .directory()
            .await
            .unwrap();
        let is = |id: &str, kind: DirectoryKind| {
            assert_eq!(own.by_id(id).map(|e| e.kind), Some(kind), "{id}");
            assert!(other.by_id(id).is_none());
        };
        let (mut targets, mut filtered, mut excluded, mut unassigned) = (0, 0, 0, 0);
        for t in p.policy_types().await.unwrap() {
            for listed in read_all(&p, &t.key).await.unwrap() {
                let whole = p.get_policy(&t.key, &listed.id).await.unwrap();
                assert_eq!(whole, listed);
                if t.key == "configurationPolicies" {
                    assert!(!whole.payload["settings"].as_array().unwrap().is_empty());
                }
                if t.key == "conditionalAccessPolicies" {
                    let c = &whole.payload["conditions"];
                    for g in c["users"]["includeGroups"].as_array().unwrap() {
                        is(g.as_str().unwrap(), DirectoryKind::Group);
                    }
                    for g in c["users"]["excludeGroups"].as_array().unwrap() {
                        is(g.as_str().unwrap(), DirectoryKind::Group);
                    }
                    for l in ["includeLocations", "excludeLocations"] {
                        for id in c["locations"][l].as_array().unwrap() {
                            if id != "All" {
                                is(id.as_str().unwrap(), DirectoryKind::NamedLocation);
                            }
                        }
                    }
                    assert!(whole.payload.get("assignments").is_none());
                    continue;
                }
                let Some(assignments) = whole.payload.get("assignments") else {
                    assert!(UNASSIGNED.contains(&t.key.as_str()), "{}", t.key);
                    continue;
                };
                let assignments = assignments.as_array().unwrap();
                assert!(assignments.len() <= 3);
                unassigned += usize::from(assignments.is_empty());
                for a in assignments {
                    targets += 1;
                    let target = &a["target"];
                    is(target["groupId"].as_str().unwrap(), DirectoryKind::Group);
                    if let Some(f) = target["deviceAndAppManagementAssignmentFilterId"].as_str() {
                        is(f, DirectoryKind::AssignmentFilter);
                        filtered += 1;
                    }
                    excluded += usize::from(
                        target["@odata.type"] == "#microsoft.graph.exclusionGroupAssignmentTarget",
                    );
                }
            }
        }
        assert!(
            targets > 50 && filtered > 5 && excluded > 5 && unassigned > 5,
            "{targets} {filtered} {excluded} {unassigned}"
        );
    }

    #[tokio::test]
    async fn writes_overlay_reads_and_are_seen_by_another_instance() {
        // A tenant name of its own: the in-memory state is shared by the process.
        let name = "overlay-test";
        let p = DemoProvider::new(name, Profile::Healthy, Duration::ZERO);
        let t = "deviceConfigurations";
        let before = read_all(&p, t).await.unwrap();
        let target = before[3].clone();

        let mut body = target.payload.clone();
        body["displayName"] = json!("Updated by a restore");
        body["passwordMinimumLength"] = json!(14);
        let updated = p.update_policy(t, &target.id, &body).await.unwrap();
        assert_eq!(updated.id, target.id);
        assert_eq!(
            updated.payload["assignments"], target.payload["assignments"],
            "kept"
        );

        let created = p
            .create_policy(
                t,
                &json!({"id": "ignored", "@odata.context": "x", "displayName": "New one",
                                      "@odata.type": "#microsoft.graph.windows10GeneralConfiguration",
                                      "assignments": [{"target": {}}]}),
            )
            .await
            .unwrap();
        assert_ne!(created.id, "ignored");
        assert_eq!(created.payload["assignments"], json!([]));
        assert!(created.payload.get("@odata.context").is_none());

        // A second instance (another worker, another node in one process) sees both.
        let q = DemoProvider::new(name, Profile::Healthy, Duration::ZERO);
        let after = read_all(&q, t).await.unwrap();
        assert_eq!(after.len(), before.len() + 1);
        assert_eq!(after[3].display_name, "Updated by a restore");
        assert_eq!(after[3].payload["passwordMinimumLength"], 14);
        assert_eq!(after.last().unwrap().id, created.id);
        assert_eq!(&after[..3], &before[..3]);
        assert_eq!(q.get_policy(t, &created.id).await.unwrap(), created);

        // Assign to the tenant's own groups (one created now); another tenant's id is refused.
        let group = q
            .create_directory_object(DirectoryKind::Group, "Restored Group")
            .await
            .unwrap();
        let directory = p.directory().await.unwrap();
        assert_eq!(directory.by_name(DirectoryKind::Group, "restored group").len(), 1);
        let filter = directory
            .entries
            .iter()
            .find(|e| e.kind == DirectoryKind::AssignmentFilter)
            .unwrap();
        let assignments = vec![
            json!({"target": {"@odata.type": "#microsoft.graph.groupAssignmentTarget", "groupId": group.id,
                              "deviceAndAppManagementAssignmentFilterId": filter.id,
                              "deviceAndAppManagementAssignmentFilterType": "include"}}),
            json!({"target": {"@odata.type": "#microsoft.graph.allDevicesAssignmentTarget"}}),
        ];
        p.assign(t, &created.id, &assignments).await.unwrap();
        let read = q.get_policy(t, &created.id).await.unwrap();
        let written = read.payload["assignments"].as_array().unwrap();
        assert_eq!(written.len(), 2);
        assert_eq!(written[0]["target"]["groupId"], group.id.as_str());
        assert_eq!(written[0]["id"], format!("{}_{}", created.id, group.id));
        let foreign = group_id("fabrikam", "All Staff");
        let refused = p
            .assign(t, &created.id, &[json!({"target": {"groupId": foreign}})])
            .await
            .unwrap_err();
        assert!(matches!(refused, ProviderError::NotFound(_)), "{refused}");
        assert_eq!(
            q.get_policy(t, &created.id).await.unwrap(),
            read,
            "a refused assign wrote nothing"
        );

        // Writes are kept under the tenant's key: a tenant of the same name elsewhere does not see them.
        let elsewhere = DemoProvider::new(name, Profile::Healthy, Duration::ZERO)
            .with_state("another-tenant-id", Arc::new(MemoryDemoState));
        assert_eq!(read_all(&elsewhere, t).await.unwrap(), before);

        // Unknown ids, unnamed bodies, directory kinds that are policy types.
        assert!(matches!(
            p.update_policy(t, "nope", &body).await,
            Err(ProviderError::NotFound(_))
        ));
        assert!(matches!(
            p.create_policy(t, &json!({"x": 1})).await,
            Err(ProviderError::Malformed(_))
        ));
        assert!(matches!(
            p.create_directory_object(DirectoryKind::NamedLocation, "HQ")
                .await,
            Err(ProviderError::UnsupportedType(_))
        ));
        assert!(matches!(
            p.assign("conditionalAccessPolicies", "x", &[]).await,
            Err(ProviderError::UnsupportedType(_))
        ));
    }

    #[tokio::test]
    async fn intents_are_an_empty_type_whose_created_policies_are_read_back_whole() {
        // A tenant name of its own: the in-memory state is shared by the process.
        let p = DemoProvider::new("intents-test", Profile::Healthy, Duration::ZERO);
        let types = p.policy_types().await.unwrap();
        assert_eq!(types.len(), 15);
        let intents = types.iter().find(|t| t.key == "intents").unwrap();
        assert_eq!(intents.graph_path, "deviceManagement/intents");
        // None generated, at any scale: the generated counts are unchanged.
        assert!(p.policies("intents").unwrap().is_empty());
        let scaled = DemoProvider::new("intents-test", Profile::Healthy, Duration::ZERO).with_scale(5);
        assert!(scaled.policies("intents").unwrap().is_empty());
        let empty = p.list_page("intents", None).await.unwrap();
        assert!(empty.items.is_empty() && empty.next.is_none());

        let settings = json!([
            {"@odata.type": "#microsoft.graph.deviceManagementConfigurationSetting",
             "settingInstance": {
                "@odata.type": "#microsoft.graph.deviceManagementConfigurationChoiceSettingInstance",
                "settingDefinitionId": "device_vendor_msft_policy_config_defender_allowrealtimemonitoring",
                "choiceSettingValue": {"value": "device_vendor_msft_policy_config_defender_allowrealtimemonitoring_1", "children": []}}},
            {"@odata.type": "#microsoft.graph.deviceManagementConfigurationSetting",
             "settingInstance": {
                "@odata.type": "#microsoft.graph.deviceManagementConfigurationSimpleSettingInstance",
                "settingDefinitionId": "device_vendor_msft_policy_config_defender_avgcpuloadfactor",
                "simpleSettingValue": {"@odata.type": "#microsoft.graph.deviceManagementConfigurationIntegerSettingValue", "value": 50}}}
        ]);
        let body = json!({
            "id": "source-id", "@odata.context": "x",
            "name": "Windows Security Baseline", "description": "", "platforms": "windows10",
            "technologies": "mdm", "roleScopeTagIds": ["0"], "settings": settings,
            "templateReference": {"templateId": "034ccd46-190c-4afc-adf1-ad7cc11262eb_1"},
            "settingsDelta": [{"definitionId": "x", "valueJson": "true"}],
            "assignments": [{"target": {}}],
        });
        let created = p.create_policy("intents", &body).await.unwrap();
        assert_ne!(created.id, "source-id");
        assert_eq!(created.display_name, "Windows Security Baseline");
        assert_eq!(
            created.payload["@odata.type"],
            "#microsoft.graph.deviceManagementIntent"
        );
        assert_eq!(created.payload["settings"], settings, "settings kept whole");
        assert_eq!(created.payload["settingsDelta"], body["settingsDelta"]);
        assert_eq!(
            created.payload["assignments"],
            json!([]),
            "assigned by `assign` only"
        );
        assert!(created.payload.get("@odata.context").is_none());

        // Read back whole, and listed (a second instance sees it too).
        assert_eq!(p.get_policy("intents", &created.id).await.unwrap(), created);
        let q = DemoProvider::new("intents-test", Profile::Healthy, Duration::ZERO);
        assert_eq!(read_all(&q, "intents").await.unwrap(), vec![created.clone()]);

        // Intents have assignments, to the tenant's own groups.
        let group = group_id("intents-test", "Pilot Devices");
        let target =
            json!({"target": {"@odata.type": "#microsoft.graph.groupAssignmentTarget", "groupId": group}});
        p.assign("intents", &created.id, std::slice::from_ref(&target))
            .await
            .unwrap();
        let assigned = q.get_policy("intents", &created.id).await.unwrap();
        assert_eq!(
            assigned.payload["assignments"][0]["target"]["groupId"],
            group.as_str()
        );
        assert_eq!(assigned.payload["settings"], settings);

        // An update replaces the settings and keeps type and assignments.
        let mut changed = body.clone();
        changed["settings"] = json!([settings[0].clone()]);
        let updated = p.update_policy("intents", &created.id, &changed).await.unwrap();
        assert_eq!(updated.payload["settings"], json!([settings[0].clone()]));
        assert_eq!(updated.payload["assignments"], assigned.payload["assignments"]);
        assert_eq!(
            updated.payload["@odata.type"],
            "#microsoft.graph.deviceManagementIntent"
        );
        assert_eq!(read_all(&q, "intents").await.unwrap(), vec![updated]);

        // The partial and throttled profiles read and write it like the rest.
        let partial = DemoProvider::new("intents-partial", Profile::Partial, Duration::ZERO);
        assert!(read_all(&partial, "intents").await.unwrap().is_empty());
        let made = partial.create_policy("intents", &body).await.unwrap();
        assert_eq!(partial.get_policy("intents", &made.id).await.unwrap(), made);
        let throttled = DemoProvider::new("intents-throttled", Profile::Throttled, Duration::ZERO);
        assert!(
            throttled.list_page("intents", None).await.is_ok(),
            "not a throttled type"
        );
    }

    #[tokio::test]
    async fn a_created_named_location_joins_the_directory() {
        let p = DemoProvider::new("location-test", Profile::Healthy, Duration::ZERO);
        let created = p
            .create_policy(
                "namedLocations",
                &json!({"@odata.type": "#microsoft.graph.ipNamedLocation", "displayName": "New HQ"}),
            )
            .await
            .unwrap();
        let d = p.directory().await.unwrap();
        assert_eq!(d.by_id(&created.id).unwrap().kind, DirectoryKind::NamedLocation);
        assert!(created.payload.get("assignments").is_none());
    }

    #[tokio::test]
    async fn partial_refuses_writes_of_some_types_and_blocked_all() {
        let p = DemoProvider::new("partial-writes", Profile::Partial, Duration::ZERO);
        let body = json!({"displayName": "x"});
        for t in [
            "conditionalAccessPolicies",
            "namedLocations",
            "deviceManagementScripts",
        ] {
            let e = p.create_policy(t, &body).await.unwrap_err();
            assert!(matches!(e, ProviderError::Forbidden(_)), "{t}: {e}");
            assert!(e.to_string().contains("writing"), "{e}");
        }
        let script = p.policies("deviceManagementScripts").unwrap()[0].id.clone();
        assert!(matches!(
            p.update_policy("deviceManagementScripts", &script, &body).await,
            Err(ProviderError::Forbidden(_))
        ));
        assert!(matches!(
            p.assign("deviceManagementScripts", &script, &[]).await,
            Err(ProviderError::Forbidden(_))
        ));
        assert_eq!(
            read_all(&p, "deviceManagementScripts")
                .await
                .map(|_| ())
                .unwrap_err()
                .code(),
            "provider_service_error"
        );
        // The rest is writable, so a restore into it partially succeeds.
        let created = p.create_policy("deviceConfigurations", &body).await.unwrap();
        assert_eq!(
            p.get_policy("deviceConfigurations", &created.id).await.unwrap(),
            created
        );
        p.assign("deviceConfigurations", &created.id, &[]).await.unwrap();
        assert!(p.directory().await.is_ok());

        let blocked = DemoProvider::new("blocked-writes", Profile::Blocked, Duration::ZERO);
        assert!(matches!(
            blocked.create_policy("deviceConfigurations", &body).await,
            Err(ProviderError::PermissionMissing(_))
        ));
        assert!(matches!(
            blocked.create_directory_object(DirectoryKind::Group, "g").await,
            Err(ProviderError::PermissionMissing(_))
        ));
    }

    /// Units restoring side by side: each object's write is throttled once
    /// and its own retry gets through, whatever the others do in between
    /// (counted per type, one unit's retry could land on every odd call).
    #[tokio::test]
    async fn throttled_writes_are_counted_per_object() {
        let p = DemoProvider::new("throttled-side-by-side", Profile::Throttled, Duration::ZERO);
        let (a, b) = (json!({"displayName": "a"}), json!({"displayName": "b"}));
        assert!(p.create_policy("deviceConfigurations", &a).await.is_err());
        assert!(p.create_policy("deviceConfigurations", &b).await.is_err());
        let a = p.create_policy("deviceConfigurations", &a).await.unwrap();
        let b = p.create_policy("deviceConfigurations", &b).await.unwrap();
        assert!(p.assign("deviceConfigurations", &a.id, &[]).await.is_err());
        assert!(p.assign("deviceConfigurations", &b.id, &[]).await.is_err());
        p.assign("deviceConfigurations", &a.id, &[]).await.unwrap();
        p.assign("deviceConfigurations", &b.id, &[]).await.unwrap();
    }

    #[tokio::test]
    async fn throttled_writes_answer_429_once_then_write() {
        let p = DemoProvider::new("throttled-writes", Profile::Throttled, Duration::ZERO);
        let body = json!({"displayName": "x"});
        let err = p.create_policy("deviceConfigurations", &body).await.unwrap_err();
        assert_eq!(err.retry_after(), Some(THROTTLE_RETRY_AFTER));
        let created = p.create_policy("deviceConfigurations", &body).await.unwrap();
        assert_eq!(
            p.current_all("deviceConfigurations")
                .await
                .unwrap()
                .last()
                .unwrap()
                .id,
            created.id,
            "only the answered call wrote"
        );
        assert_eq!(
            p.current_all("deviceConfigurations")
                .await
                .unwrap()
                .iter()
                .filter(|x| x.display_name == "x")
                .count(),
            1
        );
    }
}

//! The demo provider: a tenant generated in-process, deterministic per tenant
//! name, with Intune-shaped policy JSON across 14 policy types (120+
//! policies), served in pages like Microsoft Graph.
//!
//! Profiles reproduce what real tenants do to a sync:
//! - `healthy`: every type readable;
//! - `throttled`: the first page (and every policy) of every third type answers
//!   429 with a `Retry-After` on every other call; a caller that honours it
//!   reads everything;
//! - `partial`: the Conditional Access types are forbidden (a permission
//!   missing for them), and `deviceManagementScripts` fails on its second page
//!   every time, so that type is never fully read;
//! - `blocked`: the tenant's consent is missing; nothing can be read.
//!
//! Every call waits `latency` first (`OPSLEDGER_DEMO_LATENCY_MS`), so progress
//! can be watched.

use crate::{Page, Policy, PolicyType, Provider, ProviderError};
use async_trait::async_trait;
use opsledger_core::policy_types;
use serde_json::{Value, json};
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

/// (key in the policy type catalog, base count, @odata.type variants)
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
];

/// Types forbidden in the `partial` profile (they need Policy.Read.All).
const PARTIAL_FORBIDDEN: &[&str] = &["conditionalAccessPolicies", "namedLocations"];
/// The type whose second page always fails in the `partial` profile.
const PARTIAL_BROKEN_PAGING: &str = "deviceManagementScripts";

pub struct DemoProvider {
    tenant: String,
    profile: Profile,
    scale: usize,
    latency: Duration,
}

impl DemoProvider {
    pub fn new(tenant: &str, profile: Profile, latency: Duration) -> DemoProvider {
        DemoProvider {
            tenant: tenant.to_owned(),
            profile,
            scale: 1,
            latency,
        }
    }

    /// Multiplies every type's policy count (large tenants for fan-out tests).
    pub fn with_scale(mut self, scale: usize) -> DemoProvider {
        self.scale = scale.max(1);
        self
    }

    /// Every policy of a type, as the tenant holds it.
    pub fn policies(&self, type_key: &str) -> Option<Vec<Policy>> {
        self.tenant_policies(type_key).map(|p| p.as_ref().clone())
    }

    /// The generated tenant, shared by every instance of the process: the
    /// "service side" of the demo, generated once per tenant, type and scale
    /// (a unit job reading one policy must not regenerate thousands).
    fn tenant_policies(&self, type_key: &str) -> Option<Arc<Vec<Policy>>> {
        /// (tenant, policy type, scale) → the generated policies.
        type Generated = HashMap<(String, String, usize), Arc<Vec<Policy>>>;
        static TENANTS: LazyLock<Mutex<Generated>> = LazyLock::new(Default::default);
        let (idx, (key, base, variants)) = TYPES.iter().enumerate().find(|(_, t)| t.0 == type_key)?;
        let cache_key = (self.tenant.clone(), type_key.to_owned(), self.scale);
        if let Some(hit) = TENANTS.lock().expect("lock").get(&cache_key) {
            return Some(hit.clone());
        }
        let count = (base + (digest(&[&self.tenant, key])[0] % 3) as usize) * self.scale;
        let all: Arc<Vec<Policy>> = Arc::new(
            (0..count)
                .map(|i| generate(&self.tenant, key, variants, idx, i))
                .collect(),
        );
        TENANTS.lock().expect("lock").insert(cache_key, all.clone());
        Some(all)
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
        let all = self
            .tenant_policies(type_key)
            .ok_or_else(|| ProviderError::UnknownType(type_key.to_owned()))?;
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
            Profile::Throttled if offset == 0 => {
                let idx = TYPES.iter().position(|t| t.0 == type_key).unwrap_or(0);
                if idx % 3 == 0 && self.throttle_now(type_key) {
                    return Err(ProviderError::throttled(
                        Some(THROTTLE_RETRY_AFTER),
                        format!("429 Too Many Requests on {type_key}"),
                    ));
                }
            }
            _ => {}
        }
        let page_size = PAGE_SIZE * self.scale;
        let end = (offset + page_size).min(all.len());
        let items = all.get(offset..end).map(<[Policy]>::to_vec).unwrap_or_default();
        Ok(Page {
            items,
            next: (end < all.len()).then(|| end.to_string()),
            failures: Vec::new(),
        })
    }

    async fn get_policy(&self, type_key: &str, id: &str) -> Result<Policy, ProviderError> {
        self.wait().await;
        self.check_type(type_key)?;
        let all = self
            .tenant_policies(type_key)
            .ok_or_else(|| ProviderError::UnknownType(type_key.to_owned()))?;
        if self.profile == Profile::Throttled {
            let idx = TYPES.iter().position(|t| t.0 == type_key).unwrap_or(0);
            if idx % 3 == 0 && self.throttle_now(&format!("{type_key}/{id}")) {
                return Err(ProviderError::throttled(
                    Some(THROTTLE_RETRY_AFTER),
                    format!("429 Too Many Requests on {type_key}"),
                ));
            }
        }
        all.iter()
            .find(|p| p.id == id)
            .cloned()
            .ok_or_else(|| ProviderError::NotFound(format!("{type_key}/{id}")))
    }

    async fn directory(&self) -> Result<crate::Directory, ProviderError> {
        Err(ProviderError::UnsupportedType(
            "demo directory: in progress".into(),
        ))
    }

    async fn create_directory_object(
        &self,
        _kind: crate::DirectoryKind,
        _display_name: &str,
    ) -> Result<crate::DirectoryEntry, ProviderError> {
        Err(ProviderError::UnsupportedType("demo writes: in progress".into()))
    }

    async fn create_policy(&self, _policy_type: &str, _body: &Value) -> Result<Policy, ProviderError> {
        Err(ProviderError::UnsupportedType("demo writes: in progress".into()))
    }

    async fn update_policy(
        &self,
        _policy_type: &str,
        _id: &str,
        _body: &Value,
    ) -> Result<Policy, ProviderError> {
        Err(ProviderError::UnsupportedType("demo writes: in progress".into()))
    }

    async fn assign(
        &self,
        _policy_type: &str,
        _id: &str,
        _assignments: &[Value],
    ) -> Result<(), ProviderError> {
        Err(ProviderError::UnsupportedType("demo writes: in progress".into()))
    }
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
            "conditions": {"users": {"includeUsers": ["All"], "excludeGroups": [guid(&digest(&[&id, "breakglass"]))]},
                           "applications": {"includeApplications": ["All"]}, "clientAppTypes": ["all"]},
            "grantControls": {"operator": "OR", "builtInControls": ["mfa"]},
        }),
        "namedLocations" => json!({"displayName": format!("{audience} office"), "isTrusted": flag(23),
                                   "ipRanges": [{"@odata.type": "#microsoft.graph.iPv4CidrRange", "cidrAddress": format!("203.0.113.{}/32", d[24])}]}),
        "assignmentFilters" => json!({"displayName": display_name, "platform": "windows10AndLater",
                                      "rule": format!("(device.deviceOwnership -eq \"Corporate\") and (device.osVersion -startsWith \"10.0.{}\")", 19000 + d[23] as u32 * 10)}),
        _ => json!({"displayName": display_name}),
    };
    let obj = payload.as_object_mut().expect("object");
    for (k, v) in extra.as_object().expect("object") {
        obj.insert(k.clone(), v.clone());
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
}

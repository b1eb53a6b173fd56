//! What an exported file holds, decided from where it is and what it says —
//! in this order (the README states it): its type folder's name, else its
//! `@odata.type`, else its `@odata.context`, else its shape.

use opsledger_core::policy_types::{self, POLICY_TYPES};
use serde_json::Value;

/// What a file (or one element of a Graph collection file) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A policy of this type (a key of the policy type catalog).
    Policy(&'static str),
    /// An Entra group: the directory only.
    Group,
}

/// IntuneManagement's folder names (and a few other exporters'), beside
/// each type's own key and its catalog export folder, which also count.
const FOLDER_ALIASES: &[(&str, &str)] = &[
    ("DeviceConfigurations", "deviceConfigurations"),
    ("Compliance", "deviceCompliancePolicies"),
    ("CompliancePolicy", "deviceCompliancePolicies"),
    ("SettingsCatalogs", "configurationPolicies"),
    ("ConfigurationPolicies", "configurationPolicies"),
    ("ADMXFiles", "groupPolicyConfigurations"),
    ("GroupPolicyConfigurations", "groupPolicyConfigurations"),
    ("PowerShellScripts", "deviceManagementScripts"),
    ("Remediations", "deviceHealthScripts"),
    ("HealthScripts", "deviceHealthScripts"),
    ("Autopilot", "windowsAutopilotDeploymentProfiles"),
    ("AutopilotProfiles", "windowsAutopilotDeploymentProfiles"),
    ("EnrollmentConfigurations", "deviceEnrollmentConfigurations"),
    ("EnrollmentStatusPage", "deviceEnrollmentConfigurations"),
    ("FeatureUpdateProfiles", "windowsFeatureUpdateProfiles"),
    ("AppProtectionPolicies", "managedAppPolicies"),
    ("AppConfigurationManagedApp", "managedAppPolicies"),
    ("AppConfigurationManagedDevice", "mobileAppConfigurations"),
    ("ConditionalAccessPolicies", "conditionalAccessPolicies"),
    ("Filters", "assignmentFilters"),
    ("Intents", "intents"),
];

/// The kind a folder of this name holds, if it is a type folder
/// (ASCII case-insensitive).
pub fn folder_kind(name: &str) -> Option<Kind> {
    if name.eq_ignore_ascii_case("Groups") {
        return Some(Kind::Group);
    }
    POLICY_TYPES
        .iter()
        .find(|t| t.export_folder.eq_ignore_ascii_case(name) || t.key.eq_ignore_ascii_case(name))
        .map(|t| Kind::Policy(t.key))
        .or_else(|| {
            FOLDER_ALIASES
                .iter()
                .find(|(alias, _)| alias.eq_ignore_ascii_case(name))
                .map(|(_, key)| Kind::Policy(policy_types::lookup(key).expect("alias of a known type").key))
        })
}

/// The kind an `@odata.type` (`#microsoft.graph.windows10GeneralConfiguration`) names.
pub fn odata_type_kind(odata_type: &str) -> Option<Kind> {
    let t = odata_type.trim_start_matches('#');
    let t = t.strip_prefix("microsoft.graph.").unwrap_or(t);
    let policy = |key: &str| Some(Kind::Policy(policy_types::lookup(key).expect("known type").key));
    match t {
        "group" => Some(Kind::Group),
        "conditionalAccessPolicy" => policy("conditionalAccessPolicies"),
        "deviceAndAppManagementAssignmentFilter" | "payloadCompatibleAssignmentFilter" => {
            policy("assignmentFilters")
        }
        "deviceManagementConfigurationPolicy" => policy("configurationPolicies"),
        "groupPolicyConfiguration" => policy("groupPolicyConfigurations"),
        "deviceManagementScript" => policy("deviceManagementScripts"),
        "deviceHealthScript" => policy("deviceHealthScripts"),
        "windowsFeatureUpdateProfile" => policy("windowsFeatureUpdateProfiles"),
        "deviceManagementIntent" => policy("intents"),
        "windowsInformationProtectionPolicy"
        | "mdmWindowsInformationProtectionPolicy"
        | "targetedManagedAppConfiguration" => policy("managedAppPolicies"),
        "androidManagedStoreAppConfiguration" => policy("mobileAppConfigurations"),
        _ if t.ends_with("NamedLocation") => policy("namedLocations"),
        _ if t.ends_with("WindowsAutopilotDeploymentProfile") || t == "windowsAutopilotDeploymentProfile" => {
            policy("windowsAutopilotDeploymentProfiles")
        }
        _ if t.ends_with("CompliancePolicy") => policy("deviceCompliancePolicies"),
        _ if t.ends_with("ManagedAppProtection") => policy("managedAppPolicies"),
        _ if t.ends_with("MobileAppConfiguration") => policy("mobileAppConfigurations"),
        _ if t.contains("Enrollment") && t.ends_with("Configuration") => {
            policy("deviceEnrollmentConfigurations")
        }
        _ if t.ends_with("Configuration") => policy("deviceConfigurations"),
        _ => None,
    }
}

/// What an `@odata.context` names, and whether it is one entity (`/$entity`,
/// or a single item of a collection) or a whole collection.
pub fn odata_context_kind(context: &str) -> Option<(Kind, bool)> {
    let (_, path) = context.split_once("$metadata#")?;
    let (path, entity) = match path.strip_suffix("/$entity") {
        Some(p) => (p, true),
        None => (path, false),
    };
    // `groups(id,displayName)`: a `$select` projection of a collection;
    // `…/policies('id')`: one entity; `…('id')/settings`: not a policy at all.
    let (path, entity) = match path.split_once('(') {
        None => (path, entity),
        Some((head, rest)) => {
            let (inside, after) = rest.split_once(')')?;
            if !after.is_empty() {
                return None;
            }
            (head, entity || inside.starts_with('\''))
        }
    };
    if path == "groups" {
        return Some((Kind::Group, entity));
    }
    POLICY_TYPES
        .iter()
        .find(|t| t.graph_path == path)
        .map(|t| (Kind::Policy(t.key), entity))
}

/// The kind a policy's shape implies when nothing names it.
pub fn shape_kind(v: &Value) -> Option<Kind> {
    let has = |k: &str| v.get(k).is_some();
    if has("settings") && (has("technologies") || has("platforms")) {
        return Some(Kind::Policy("configurationPolicies"));
    }
    if has("settingsDelta") && has("TemplateId") {
        return Some(Kind::Policy("intents"));
    }
    None
}

/// The kind of one item: its folder's, else what it says about itself.
pub fn item_kind(folder: Option<Kind>, v: &Value) -> Option<Kind> {
    folder
        .or_else(|| {
            v.get("@odata.type")
                .and_then(Value::as_str)
                .and_then(odata_type_kind)
        })
        .or_else(|| {
            v.get("@odata.context")
                .and_then(Value::as_str)
                .and_then(odata_context_kind)
                .map(|(k, _)| k)
        })
        .or_else(|| shape_kind(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn folders_are_matched_by_export_name_key_or_alias_in_any_case() {
        assert_eq!(
            folder_kind("SettingsCatalog"),
            Some(Kind::Policy("configurationPolicies"))
        );
        assert_eq!(
            folder_kind("settingscatalog"),
            Some(Kind::Policy("configurationPolicies"))
        );
        assert_eq!(
            folder_kind("conditionalAccessPolicies"),
            Some(Kind::Policy("conditionalAccessPolicies"))
        );
        assert_eq!(
            folder_kind("ConditionalAccess"),
            Some(Kind::Policy("conditionalAccessPolicies"))
        );
        assert_eq!(folder_kind("Groups"), Some(Kind::Group));
        assert_eq!(folder_kind("policies"), None);
        assert_eq!(folder_kind("Config"), None);
    }

    #[test]
    fn odata_types_map_to_their_collection() {
        for (t, key) in [
            (
                "#microsoft.graph.windows10GeneralConfiguration",
                "deviceConfigurations",
            ),
            (
                "#microsoft.graph.windows10EnrollmentCompletionPageConfiguration",
                "deviceEnrollmentConfigurations",
            ),
            (
                "#microsoft.graph.deviceEnrollmentLimitConfiguration",
                "deviceEnrollmentConfigurations",
            ),
            ("#microsoft.graph.iosCompliancePolicy", "deviceCompliancePolicies"),
            ("#microsoft.graph.compliantNetworkNamedLocation", "namedLocations"),
            ("#microsoft.graph.countryNamedLocation", "namedLocations"),
            (
                "#microsoft.graph.azureADWindowsAutopilotDeploymentProfile",
                "windowsAutopilotDeploymentProfiles",
            ),
            ("#microsoft.graph.iosManagedAppProtection", "managedAppPolicies"),
            (
                "#microsoft.graph.iosMobileAppConfiguration",
                "mobileAppConfigurations",
            ),
            (
                "#microsoft.graph.conditionalAccessPolicy",
                "conditionalAccessPolicies",
            ),
        ] {
            assert_eq!(odata_type_kind(t), Some(Kind::Policy(key)), "{t}");
        }
        assert_eq!(odata_type_kind("#microsoft.graph.group"), Some(Kind::Group));
        assert_eq!(odata_type_kind("#microsoft.graph.user"), None);
    }

    #[test]
    fn contexts_name_entities_and_collections() {
        let c = "https://graph.microsoft.com/beta/$metadata#deviceManagement/configurationPolicies/$entity";
        assert_eq!(
            odata_context_kind(c),
            Some((Kind::Policy("configurationPolicies"), true))
        );
        let c = "https://graph.microsoft.com/beta/$metadata#deviceManagement/deviceConfigurations";
        assert_eq!(
            odata_context_kind(c),
            Some((Kind::Policy("deviceConfigurations"), false))
        );
        let c = "https://graph.microsoft.com/v1.0/$metadata#groups(id,displayName)";
        assert_eq!(odata_context_kind(c), Some((Kind::Group, false)));
        let c =
            "https://graph.microsoft.com/beta/$metadata#deviceManagement/configurationPolicies('x')/settings";
        assert_eq!(odata_context_kind(c), None);
    }

    #[test]
    fn the_folder_wins_then_odata_type_then_context_then_shape() {
        let v = json!({"@odata.type": "#microsoft.graph.iosCompliancePolicy",
                       "@odata.context": "https://x/$metadata#deviceManagement/deviceConfigurations/$entity",
                       "settings": [], "platforms": "windows10"});
        assert_eq!(item_kind(Some(Kind::Group), &v), Some(Kind::Group));
        assert_eq!(
            item_kind(None, &v),
            Some(Kind::Policy("deviceCompliancePolicies"))
        );
        let v = json!({"@odata.context": "https://x/$metadata#deviceManagement/deviceConfigurations/$entity",
                       "settings": [], "platforms": "windows10"});
        assert_eq!(item_kind(None, &v), Some(Kind::Policy("deviceConfigurations")));
        assert_eq!(
            item_kind(None, &json!({"settings": [], "technologies": "mdm"})),
            Some(Kind::Policy("configurationPolicies"))
        );
        assert_eq!(
            item_kind(None, &json!({"settingsDelta": [], "TemplateId": "x"})),
            Some(Kind::Policy("intents"))
        );
        assert_eq!(item_kind(None, &json!({"name": "package"})), None);
    }
}

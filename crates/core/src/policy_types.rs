//! The policy types opsledger knows (the Intune / Entra collections it can
//! read), in one place: start parameters are validated against this list
//! without calling a provider, and providers describe their types from it.
//! A provider may expose fewer; the providers issue extends the list.

/// One policy type: its stable key (a unit key of an inventory sync, the
/// `TYPE` of a `TYPE/ID` policy reference), its Microsoft Graph collection
/// and a label for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyTypeInfo {
    pub key: &'static str,
    pub graph_path: &'static str,
    pub label: &'static str,
    /// The folder an IntuneManagement export keeps the type in (what a
    /// folder tenant reads, and writes as a restore target).
    pub export_folder: &'static str,
}

/// Every policy type opsledger knows, in a stable order.
pub const POLICY_TYPES: &[PolicyTypeInfo] = &[
    PolicyTypeInfo {
        key: "deviceConfigurations",
        graph_path: "deviceManagement/deviceConfigurations",
        label: "Device configuration profiles",
        export_folder: "DeviceConfiguration",
    },
    PolicyTypeInfo {
        key: "deviceCompliancePolicies",
        graph_path: "deviceManagement/deviceCompliancePolicies",
        label: "Compliance policies",
        export_folder: "CompliancePolicies",
    },
    PolicyTypeInfo {
        key: "configurationPolicies",
        graph_path: "deviceManagement/configurationPolicies",
        label: "Settings catalog policies",
        export_folder: "SettingsCatalog",
    },
    PolicyTypeInfo {
        key: "groupPolicyConfigurations",
        graph_path: "deviceManagement/groupPolicyConfigurations",
        label: "Administrative templates",
        export_folder: "AdministrativeTemplates",
    },
    PolicyTypeInfo {
        key: "deviceManagementScripts",
        graph_path: "deviceManagement/deviceManagementScripts",
        label: "PowerShell scripts",
        export_folder: "Scripts",
    },
    PolicyTypeInfo {
        key: "deviceHealthScripts",
        graph_path: "deviceManagement/deviceHealthScripts",
        label: "Remediations",
        export_folder: "ProactiveRemediations",
    },
    PolicyTypeInfo {
        key: "windowsAutopilotDeploymentProfiles",
        graph_path: "deviceManagement/windowsAutopilotDeploymentProfiles",
        label: "Autopilot profiles",
        export_folder: "AutoPilot",
    },
    PolicyTypeInfo {
        key: "deviceEnrollmentConfigurations",
        graph_path: "deviceManagement/deviceEnrollmentConfigurations",
        label: "Enrollment configurations",
        export_folder: "EnrollmentRestrictions",
    },
    PolicyTypeInfo {
        key: "windowsFeatureUpdateProfiles",
        graph_path: "deviceManagement/windowsFeatureUpdateProfiles",
        label: "Feature update profiles",
        export_folder: "FeatureUpdates",
    },
    PolicyTypeInfo {
        key: "managedAppPolicies",
        graph_path: "deviceAppManagement/managedAppPolicies",
        label: "App protection policies",
        export_folder: "AppProtection",
    },
    PolicyTypeInfo {
        key: "mobileAppConfigurations",
        graph_path: "deviceAppManagement/mobileAppConfigurations",
        label: "App configuration policies",
        export_folder: "AppConfiguration",
    },
    PolicyTypeInfo {
        key: "conditionalAccessPolicies",
        graph_path: "identity/conditionalAccess/policies",
        label: "Conditional Access policies",
        export_folder: "ConditionalAccess",
    },
    PolicyTypeInfo {
        key: "namedLocations",
        graph_path: "identity/conditionalAccess/namedLocations",
        label: "Named locations",
        export_folder: "NamedLocations",
    },
    PolicyTypeInfo {
        key: "assignmentFilters",
        graph_path: "deviceManagement/assignmentFilters",
        label: "Assignment filters",
        export_folder: "AssignmentFilters",
    },
    PolicyTypeInfo {
        key: "intents",
        graph_path: "deviceManagement/intents",
        label: "Endpoint security policies (templates)",
        export_folder: "EndpointSecurity",
    },
];

/// The type with this key (exact, case-sensitive: Graph's keys are camelCase).
pub fn lookup(key: &str) -> Option<&'static PolicyTypeInfo> {
    POLICY_TYPES.iter().find(|t| t.key == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_case_sensitive() {
        for (i, t) in POLICY_TYPES.iter().enumerate() {
            assert!(
                POLICY_TYPES[..i]
                    .iter()
                    .all(|o| !o.key.eq_ignore_ascii_case(t.key)),
                "{}",
                t.key
            );
            assert_eq!(lookup(t.key), Some(t));
        }
        assert!(lookup("DeviceConfigurations").is_none());
        assert!(lookup("deviceConfigurations").is_some());
    }
}

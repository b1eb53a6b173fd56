//! Roles and capabilities (OPERATIONS.md §9): the one table of who may do what.
//! Membership itself (404 for non-members) is checked by the server against
//! the store; this module answers "may this role do that" (403 when not).

use crate::RunType;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        [Role::Viewer, Role::Operator, Role::Admin]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// See runs, tenants and artifacts of the workspace.
    OperationsView,
    /// Start sync, backup, review-pack and evidence runs; cancel runs.
    OperationsStart,
    /// Start restores, baselines and schedules; force-close runs; manage members.
    OperationsAdmin,
}

/// The role → capability table.
pub fn role_has(role: Role, cap: Capability) -> bool {
    match cap {
        Capability::OperationsView => true,
        Capability::OperationsStart => role >= Role::Operator,
        Capability::OperationsAdmin => role == Role::Admin,
    }
}

/// The capability needed to start a run of `t` (its catalog entry decides).
pub fn capability_to_start(t: RunType) -> Capability {
    t.spec().capability
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        assert!(role_has(Role::Viewer, Capability::OperationsView));
        assert!(!role_has(Role::Viewer, Capability::OperationsStart));
        assert!(role_has(Role::Operator, Capability::OperationsStart));
        assert!(!role_has(Role::Operator, Capability::OperationsAdmin));
        assert!(role_has(Role::Admin, Capability::OperationsAdmin));
        assert_eq!(
            capability_to_start(RunType::InventorySync),
            Capability::OperationsStart
        );
        assert_eq!(
            capability_to_start(RunType::BackupSetRestore),
            Capability::OperationsAdmin
        );
    }
}

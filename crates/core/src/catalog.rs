//! The catalog of run families (OPERATIONS.md §6): the one place that says
//! which types exist, their scope, their progress mode and whether a
//! reconciliation adapter exists for them.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Whether a run belongs to one tenant or to the whole workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Tenant,
    Workspace,
}

/// How a family measures its progress (the input to the progress contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgressKind {
    /// One indivisible piece of work: indeterminate while running.
    Activity,
    /// `total` planned units, `processed` advancing per unit.
    Counted,
    /// An ordered list of phases.
    Phased,
    /// Child runs.
    Composite,
}

/// How a stale run of this type is closed (OPERATIONS.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reconciliation {
    /// An adapter reads the run's proof.
    Adapter,
    /// Derived from the run's children.
    FromChildren,
    /// No adapter: a stale run fails closed with `stale_no_proof`.
    Unsupported,
}

macro_rules! catalog {
    ($( $variant:ident => $name:literal, $scope:ident, $progress:ident, $recon:ident, $units:literal; )*) => {
        /// A canonical dotted run type.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum RunType { $($variant),* }

        impl RunType {
            pub const ALL: &'static [RunType] = &[$(RunType::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $(RunType::$variant => $name),* }
            }
            pub fn scope(self) -> Scope {
                match self { $(RunType::$variant => Scope::$scope),* }
            }
            pub fn progress_kind(self) -> ProgressKind {
                match self { $(RunType::$variant => ProgressKind::$progress),* }
            }
            pub fn reconciliation(self) -> Reconciliation {
                match self { $(RunType::$variant => Reconciliation::$recon),* }
            }
            /// What one counted unit of this type is, for labels ("5 of 12 policy types").
            pub fn unit_noun(self) -> &'static str {
                match self { $(RunType::$variant => $units),* }
            }
        }
    };
}

catalog! {
    InventorySync          => "inventory.sync",               Tenant,    Counted,   Adapter,      "policy types";
    PolicySync             => "policy.sync",                  Tenant,    Activity,  Unsupported,  "policies";
    BackupSetAddPolicies   => "backup_set.add_policies",      Tenant,    Counted,   Adapter,      "policies";
    BackupSetRestore       => "backup_set.restore",           Tenant,    Counted,   Adapter,      "backup items";
    BackupSetUpdate        => "backup_set.update",            Tenant,    Activity,  Unsupported,  "backup sets";
    BackupSetDelete        => "backup_set.delete",            Tenant,    Counted,   Unsupported,  "backup items";
    BackupScheduleExecute  => "backup.schedule.execute",      Tenant,    Counted,   Adapter,      "policy types";
    BaselineCapture        => "baseline.capture",             Tenant,    Phased,    Adapter,      "phases";
    BaselineCompare        => "baseline.compare",             Tenant,    Phased,    Adapter,      "phases";
    ReviewPackGenerate     => "review_pack.generate",         Tenant,    Counted,   Adapter,      "files";
    EvidenceSnapshotGenerate => "evidence.snapshot.generate", Tenant,    Counted,   Adapter,      "evidence items";
    WorkspaceInventorySyncAll => "workspace.inventory.sync_all", Workspace, Composite, FromChildren, "tenants";
}

/// Default time a run may wait in `queued` before it is stale (OPERATIONS.md §7).
pub const DEFAULT_QUEUE_TIMEOUT_MS: u64 = 15 * 60 * 1000;
/// Default time a running run may go without a heartbeat before it is stale.
pub const DEFAULT_HEARTBEAT_TIMEOUT_MS: u64 = 2 * 60 * 1000;

impl RunType {
    /// Fan-out families: the parent plans units and one job per unit records
    /// it; `maybe_complete_bulk_run` completes the parent (OPERATIONS.md §5).
    pub fn is_fan_out(self) -> bool {
        matches!(
            self,
            RunType::BackupSetAddPolicies | RunType::BackupSetRestore | RunType::BackupSetDelete
        )
    }

    /// Attempts of one job of this type (the first run plus retries).
    pub fn max_attempts(self) -> u32 {
        match self {
            // A restore writes to a tenant: retry less eagerly.
            RunType::BackupSetRestore => 2,
            _ => 3,
        }
    }

    /// How long a run of this type may stay queued before it is stale.
    pub fn queue_timeout_ms(self) -> u64 {
        DEFAULT_QUEUE_TIMEOUT_MS
    }

    /// How long a running run of this type may go without a heartbeat.
    pub fn heartbeat_timeout_ms(self) -> u64 {
        match self {
            // A compare may sit in one long provider read between heartbeats.
            RunType::BaselineCompare | RunType::BaselineCapture => 2 * DEFAULT_HEARTBEAT_TIMEOUT_MS,
            _ => DEFAULT_HEARTBEAT_TIMEOUT_MS,
        }
    }
}

impl fmt::Display for RunType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A type name that is not in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown operation type `{0}`")]
pub struct UnknownRunType(pub String);

impl FromStr for RunType {
    type Err = UnknownRunType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunType::ALL
            .iter()
            .copied()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownRunType(s.to_owned()))
    }
}

impl Serialize for RunType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RunType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips_and_names_are_unique() {
        let mut names: Vec<_> = RunType::ALL.iter().map(|t| t.as_str()).collect();
        for t in RunType::ALL {
            assert_eq!(t.as_str().parse::<RunType>().unwrap(), *t);
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), RunType::ALL.len());
        assert_eq!(RunType::ALL.len(), 12);
    }

    #[test]
    fn catalog_matches_operations_md() {
        assert_eq!(RunType::InventorySync.progress_kind(), ProgressKind::Counted);
        assert_eq!(RunType::BaselineCapture.progress_kind(), ProgressKind::Phased);
        assert_eq!(RunType::BaselineCompare.progress_kind(), ProgressKind::Phased);
        assert_eq!(RunType::WorkspaceInventorySyncAll.scope(), Scope::Workspace);
        for unsupported in [
            RunType::PolicySync,
            RunType::BackupSetUpdate,
            RunType::BackupSetDelete,
        ] {
            assert_eq!(unsupported.reconciliation(), Reconciliation::Unsupported);
        }
    }

    #[test]
    fn unknown_type_is_named_in_error() {
        let err = "inventory.synk".parse::<RunType>().unwrap_err();
        assert_eq!(err.to_string(), "unknown operation type `inventory.synk`");
    }
}

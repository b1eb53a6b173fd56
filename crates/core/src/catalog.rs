//! The catalog of run families (OPERATIONS.md §6): the one place that says
//! which types exist, their scope, their progress mode and whether a
//! reconciliation adapter exists for them.

use crate::access::Capability;
use crate::params::{ParamKind, ParamSpec, catalog as p};
use serde::{Deserialize, Serialize};
use serde_json::Value;
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

/// What identifies "the same work" for deduplicated starts (OPERATIONS.md §2,
/// §6): the run's scope, plus the values of the parameters that name what it
/// acts on. While a run with the key is active, a start with the same
/// parameters returns it and one with other parameters is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DedupKey {
    /// The scope alone: one active run per tenant (or per workspace).
    Scope,
    /// The scope and these parameters' values (an absent one counts as its default).
    ScopeAnd(&'static [&'static str]),
}

/// Everything the engine, the store and the server need to know about a run
/// type, decided in one place. Every field is required, so a new entry makes
/// the compiler ask for each decision.
#[derive(Debug)]
pub struct TypeSpec {
    /// The canonical dotted name.
    pub name: &'static str,
    pub scope: Scope,
    pub progress: ProgressKind,
    pub reconciliation: Reconciliation,
    /// Who may start (and cancel) it (OPERATIONS.md §9).
    pub capability: Capability,
    pub dedup: DedupKey,
    /// The parameters a start accepts, validated before any run exists.
    pub params: &'static [ParamSpec],
    /// What one counted unit is, for labels ("5 of 12 policy types").
    pub unit_noun: &'static str,
    /// The parent plans units and one job per unit records it; the last
    /// unit's job completes the parent (OPERATIONS.md §5).
    pub fan_out: bool,
    /// Attempts of one job (the first run plus retries).
    pub max_attempts: u32,
    /// How long a run may stay queued before it is stale (OPERATIONS.md §7).
    pub queue_timeout_ms: u64,
    /// How long a running run may go without a heartbeat before it is stale.
    pub heartbeat_timeout_ms: u64,
    /// How long a job's handler may show no progress (no provider call
    /// completed, no write) before the runner cancels it as hung and retries
    /// it: a hung handler would otherwise hold its lease forever, since the
    /// node's heartbeat keeps renewing it. Longer than any wait a working
    /// handler makes (a honoured `Retry-After`, one slow provider read).
    pub stall_timeout_ms: u64,
}

/// Default time a run may wait in `queued` before it is stale (OPERATIONS.md §7).
pub const DEFAULT_QUEUE_TIMEOUT_MS: u64 = 15 * 60 * 1000;
/// Default time a running run may go without a heartbeat before it is stale.
pub const DEFAULT_HEARTBEAT_TIMEOUT_MS: u64 = 2 * 60 * 1000;
/// Default time a handler may show no progress before it is cancelled as hung.
pub const DEFAULT_STALL_TIMEOUT_MS: u64 = 10 * 60 * 1000;
/// Attempts of a job unless its type says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

macro_rules! run_types {
    ($( $variant:ident ),* $(,)?) => {
        /// A canonical dotted run type; [`RunType::spec`] says everything about it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum RunType { $($variant),* }

        impl RunType {
            /// Every type, in catalog order.
            pub const ALL: &'static [RunType] = &[$(RunType::$variant),*];
        }
    };
}

run_types! {
    InventorySync,
    PolicySync,
    BackupSetAddPolicies,
    BackupSetRestore,
    BackupSetUpdate,
    BackupSetDelete,
    BackupScheduleExecute,
    BaselineCapture,
    BaselineCompare,
    ReviewPackGenerate,
    EvidenceSnapshotGenerate,
    WorkspaceInventorySyncAll,
}

const Q: u64 = DEFAULT_QUEUE_TIMEOUT_MS;
const H: u64 = DEFAULT_HEARTBEAT_TIMEOUT_MS;
const A: u32 = DEFAULT_MAX_ATTEMPTS;
const S: u64 = DEFAULT_STALL_TIMEOUT_MS;

impl RunType {
    /// The catalog entry of this type (OPERATIONS.md §6).
    pub const fn spec(self) -> &'static TypeSpec {
        use Capability::{OperationsAdmin as Admin, OperationsStart as Start};
        use DedupKey::{Scope as ByScope, ScopeAnd};
        use ProgressKind::*;
        use Reconciliation::*;
        use Scope::*;
        match self {
            RunType::InventorySync => &TypeSpec {
                name: "inventory.sync",
                scope: Tenant,
                progress: Counted,
                reconciliation: Adapter,
                capability: Start,
                dedup: ByScope,
                params: &[p::POLICY_TYPES],
                unit_noun: "policy types",
                fan_out: false,
                max_attempts: A,
                queue_timeout_ms: Q,
                heartbeat_timeout_ms: H,
                stall_timeout_ms: S,
            },
            RunType::PolicySync => &TypeSpec {
                name: "policy.sync",
                scope: Tenant,
                progress: Activity,
                reconciliation: Unsupported,
                capability: Start,
                dedup: ScopeAnd(&["policy_id"]),
                params: &[ParamSpec {
                    name: "policy_id",
                    kind: ParamKind::PolicyRef,
                    required: true,
                    default: None,
                    description: "the policy to re-read, as `TYPE/ID`, e.g. \"deviceConfigurations/1b2c…\"",
                }],
                unit_noun: "policies",
                fan_out: false,
                max_attempts: A,
                queue_timeout_ms: Q,
                heartbeat_timeout_ms: H,
                stall_timeout_ms: S,
            },
            RunType::BackupSetAddPolicies => &TypeSpec {
                name: "backup_set.add_policies",
                scope: Tenant,
                progress: Counted,
                reconciliation: Adapter,
                capability: Start,
                dedup: ByScope,
                params: &[p::POLICY_IDS],
                unit_noun: "policies",
                fan_out: true,
                max_attempts: A,
                queue_timeout_ms: Q,
                heartbeat_timeout_ms: H,
                stall_timeout_ms: S,
            },
            RunType::BackupSetRestore => &TypeSpec {
                name: "backup_set.restore",
                scope: Tenant,
                progress: Counted,
                reconciliation: Adapter,
                capability: Admin,
                dedup: ScopeAnd(&["dry_run"]),
                params: &[
                    p::BACKUP_SET_ID,
                    p::ITEM_IDS,
                    p::DRY_RUN,
                    p::CREATE_MISSING_GROUPS,
                ],
                unit_noun: "backup items",
                fan_out: true,
                // A restore writes to a tenant: retry less eagerly.
                max_attempts: 2,
                queue_timeout_ms: Q,
                heartbeat_timeout_ms: H,
                stall_timeout_ms: S,
            },
            RunType::BackupSetUpdate => &TypeSpec {
                name: "backup_set.update",
                scope: Tenant,
                progress: Activity,
                reconciliation: Unsupported,
                capability: Start,
                dedup: ScopeAnd(&["backup_set_id"]),
                params: &[
                    p::BACKUP_SET_OF_TENANT,
                    p::SET_NAME,
                    p::SET_LABEL,
                    p::RETENTION_LOCKED,
                ],
                unit_noun: "backup sets",
                fan_out: false,
                max_attempts: A,
                queue_timeout_ms: Q,
                heartbeat_timeout_ms: H,
                stall_timeout_ms: S,
            },
            RunType::BackupSetDelete => &TypeSpec {
                name: "backup_set.delete",
                scope: Tenant,
                progress: Counted,
                reconciliation: Unsupported,
                capability: Admin,
                dedup: ScopeAnd(&["backup_set_id"]),
                params: &[p::BACKUP_SET_OF_TENANT],
                unit_noun: "backup items",
                fan_out: true,
                max_attempts: A,
                queue_timeout_ms: Q,
                heartbeat_timeout_ms: H,
                stall_timeout_ms: S,
            },
            RunType::BackupScheduleExecute => &TypeSpec {
                name: "backup.schedule.execute",
                scope: Tenant,
                progress: Counted,
                reconciliation: Adapter,
                capability: Admin,
                dedup: ScopeAnd(&["schedule_id"]),
                params: &[p::SCHEDULE_ID, p::POLICY_TYPES],
                unit_noun: "policy types",
                fan_out: false,
                max_attempts: A,
                queue_timeout_ms: Q,
                heartbeat_timeout_ms: H,
                stall_timeout_ms: S,
            },
            RunType::BaselineCapture => &TypeSpec {
                name: "baseline.capture",
                scope: Tenant,
                progress: Phased,
                reconciliation: Adapter,
                capability: Admin,
                dedup: ScopeAnd(&["profile"]),
                params: &[p::PROFILE],
                unit_noun: "phases",
                fan_out: false,
                max_attempts: A,
                queue_timeout_ms: Q,
                // A capture may sit in one long provider read between heartbeats.
                heartbeat_timeout_ms: 2 * H,
                stall_timeout_ms: S,
            },
            RunType::BaselineCompare => &TypeSpec {
                name: "baseline.compare",
                scope: Tenant,
                progress: Phased,
                reconciliation: Adapter,
                capability: Admin,
                dedup: ScopeAnd(&["baseline_snapshot_id", "profile", "backup_set_id"]),
                params: &[p::BASELINE_SNAPSHOT_ID, p::PROFILE, p::COMPARE_BACKUP_SET_ID],
                unit_noun: "phases",
                fan_out: false,
                max_attempts: A,
                queue_timeout_ms: Q,
                // A compare may sit in one long provider read between heartbeats.
                heartbeat_timeout_ms: 2 * H,
                stall_timeout_ms: S,
            },
            RunType::ReviewPackGenerate => &TypeSpec {
                name: "review_pack.generate",
                scope: Tenant,
                progress: Counted,
                reconciliation: Adapter,
                capability: Start,
                dedup: ByScope,
                params: &[
                    p::PACK_TYPES,
                    p::PACK_INCLUDE_POLICIES,
                    p::PACK_INCLUDE_ASSIGNMENTS,
                    p::PACK_INCLUDE_FINDINGS,
                    p::PACK_REDACT,
                ],
                unit_noun: "files",
                fan_out: false,
                max_attempts: A,
                queue_timeout_ms: Q,
                heartbeat_timeout_ms: H,
                stall_timeout_ms: S,
            },
            RunType::EvidenceSnapshotGenerate => &TypeSpec {
                name: "evidence.snapshot.generate",
                scope: Tenant,
                progress: Counted,
                reconciliation: Adapter,
                capability: Start,
                dedup: ByScope,
                params: &[],
                unit_noun: "evidence items",
                fan_out: false,
                max_attempts: A,
                queue_timeout_ms: Q,
                heartbeat_timeout_ms: H,
                stall_timeout_ms: S,
            },
            RunType::WorkspaceInventorySyncAll => &TypeSpec {
                name: "workspace.inventory.sync_all",
                scope: Workspace,
                progress: Composite,
                reconciliation: FromChildren,
                capability: Start,
                dedup: ByScope,
                params: &[],
                unit_noun: "tenants",
                fan_out: false,
                max_attempts: A,
                queue_timeout_ms: Q,
                heartbeat_timeout_ms: H,
                stall_timeout_ms: S,
            },
        }
    }

    pub fn as_str(self) -> &'static str {
        self.spec().name
    }
    pub fn scope(self) -> Scope {
        self.spec().scope
    }
    pub fn progress_kind(self) -> ProgressKind {
        self.spec().progress
    }
    pub fn reconciliation(self) -> Reconciliation {
        self.spec().reconciliation
    }
    /// What one counted unit of this type is, for labels ("5 of 12 policy types").
    pub fn unit_noun(self) -> &'static str {
        self.spec().unit_noun
    }
    /// Fan-out families: the parent plans units and one job per unit records
    /// it; the last unit's job completes the parent (OPERATIONS.md §5).
    pub fn is_fan_out(self) -> bool {
        self.spec().fan_out
    }
    /// Attempts of one job of this type (the first run plus retries).
    pub fn max_attempts(self) -> u32 {
        self.spec().max_attempts
    }
    /// How long a run of this type may stay queued before it is stale.
    pub fn queue_timeout_ms(self) -> u64 {
        self.spec().queue_timeout_ms
    }
    /// How long a running run of this type may go without a heartbeat.
    pub fn heartbeat_timeout_ms(self) -> u64 {
        self.spec().heartbeat_timeout_ms
    }

    pub fn stall_timeout_ms(self) -> u64 {
        self.spec().stall_timeout_ms
    }

    /// The dedup key of a start of this type on `workspace_id` / `tenant_id`
    /// with (validated) `params`: unique among active runs. A parameter left
    /// out and one given as JSON `null` are the same (its default).
    pub fn dedup_key(self, workspace_id: &str, tenant_id: Option<&str>, params: &Value) -> String {
        let mut key = format!("{}|{}|{}", self.as_str(), workspace_id, tenant_id.unwrap_or("*"));
        if let DedupKey::ScopeAnd(names) = self.spec().dedup {
            // Ids are compared without letter case (as Microsoft Graph does;
            // type keys cannot differ by case alone, validation is exact).
            let values: Vec<Value> = names
                .iter()
                .map(|n| match params.get(n) {
                    Some(Value::String(s)) => Value::String(s.to_lowercase()),
                    Some(v) => v.clone(),
                    None => Value::Null,
                })
                .collect();
            // JSON-encoded, so no value can forge a boundary between two.
            key.push('|');
            key.push_str(&serde_json::to_string(&values).expect("json values serialize"));
        }
        key
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
    use serde_json::json;

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
    fn dedup_key_is_the_scope_plus_the_named_parameters() {
        let t = RunType::InventorySync;
        assert_eq!(
            t.dedup_key("w", Some("t"), &json!({"policy_types": ["a"]})),
            "inventory.sync|w|t"
        );
        assert_eq!(
            RunType::WorkspaceInventorySyncAll.dedup_key("w", None, &json!({})),
            "workspace.inventory.sync_all|w|*"
        );
        let update = RunType::BackupSetUpdate;
        let a = update.dedup_key("w", Some("t"), &json!({"backup_set_id": "a"}));
        assert_ne!(
            a,
            update.dedup_key("w", Some("t"), &json!({"backup_set_id": "b"}))
        );
        assert_ne!(
            a,
            update.dedup_key("w", Some("u"), &json!({"backup_set_id": "a"}))
        );
        // Absent and null are the same default; other parameters do not enter the key.
        assert_eq!(
            update.dedup_key("w", Some("t"), &json!({})),
            update.dedup_key("w", Some("t"), &json!({"backup_set_id": null, "x": 1}))
        );
        // No value can forge the boundary between two parameter values.
        let compare = RunType::BaselineCompare;
        assert_ne!(
            compare.dedup_key("w", Some("t"), &json!({"baseline_snapshot_id": "a\",\"b"})),
            compare.dedup_key(
                "w",
                Some("t"),
                &json!({"baseline_snapshot_id": "a", "profile": "b"})
            )
        );
    }

    #[test]
    fn every_entry_is_consistent() {
        for t in RunType::ALL {
            let s = t.spec();
            assert!(s.max_attempts >= 1, "{t}");
            assert!(s.heartbeat_timeout_ms > 0 && s.queue_timeout_ms > 0, "{t}");
            if let DedupKey::ScopeAnd(names) = s.dedup {
                assert!(!names.is_empty(), "{t}");
            }
            // Fan-out types count units; a composite's parent has no unit jobs.
            if s.fan_out {
                assert_eq!(s.progress, ProgressKind::Counted, "{t}");
            }
        }
        assert_eq!(
            crate::access::capability_to_start(RunType::BackupSetRestore),
            Capability::OperationsAdmin
        );
    }

    #[test]
    fn unknown_type_is_named_in_error() {
        let err = "inventory.synk".parse::<RunType>().unwrap_err();
        assert_eq!(err.to_string(), "unknown operation type `inventory.synk`");
    }
}

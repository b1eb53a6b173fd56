//! Baselines: profiles, the snapshot a `baseline.capture` run builds (its
//! proof, by causal link: `created_by_run_id`), and what a `baseline.compare`
//! run records (its findings and one compare row, in one transaction).
//!
//! Writes of a leased run go through [`crate::lease::LeasedRun`] (fenced);
//! a captured policy is a unit artifact ([`crate::artifacts`]) committed
//! with its ledger row. Reads for the API take a [`Visibility`]: a profile
//! or snapshot of a tenant the caller may not see is `None` (a 404).

use crate::db::{Tx, sql, sql_built, sql_owned};
use crate::jobs::{Fence, check_fence};
use crate::runs::ContextPatch;
use crate::{Store, StoreError, Visibility, new_id};
use opsledger_core::baseline::{Gap, GapReason};
use opsledger_core::drift::Finding;
use serde_json::Value;

/// Profiles per workspace listed at most (a workspace has a handful).
pub const MAX_PROFILES: i64 = 1000;
/// Snapshot policies per page of the API.
pub const POLICIES_PER_PAGE: u32 = 200;
/// Findings per page of the API.
pub const FINDINGS_PER_PAGE: u32 = 200;
/// Longest profile name.
pub const MAX_PROFILE_NAME: usize = 200;

/// What a baseline covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub source_tenant_id: String,
    /// `None`: every type the tenant exposes.
    pub policy_types: Option<Vec<String>>,
    pub is_default: bool,
    pub created_by: String,
    pub created_at: i64,
}

/// A snapshot without its policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotHead {
    pub id: String,
    pub workspace_id: String,
    pub tenant_id: String,
    pub profile_id: String,
    pub created_by_run_id: String,
    pub created_at: i64,
    pub policy_types: Vec<String>,
    /// Set when its evidence was persisted whole; only then is it a baseline.
    pub sealed_at: Option<i64>,
    pub policy_count: Option<u64>,
    pub gap_count: Option<u64>,
}

/// A policy planned into a snapshot when the scope was resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedPolicy {
    pub policy_type: String,
    pub external_id: String,
    pub display_name: String,
}

/// How much of a policy a snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// Planned, not captured yet.
    Planned,
    /// Settings and assignments as read.
    Full,
    /// The listed metadata only: its settings could not be read.
    MetadataOnly,
}

impl Evidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Evidence::Planned => "planned",
            Evidence::Full => "full",
            Evidence::MetadataOnly => "metadata_only",
        }
    }

    fn parse(s: &str) -> Result<Evidence, StoreError> {
        Ok(match s {
            "planned" => Evidence::Planned,
            "full" => Evidence::Full,
            "metadata_only" => Evidence::MetadataOnly,
            other => return Err(StoreError::Corrupt(format!("snapshot evidence `{other}`"))),
        })
    }
}

/// One policy of a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotPolicy {
    pub policy_type: String,
    pub external_id: String,
    pub display_name: String,
    pub evidence: Evidence,
    /// Normalized with the source tenant's directory; `None` while planned.
    pub payload: Option<Value>,
    pub payload_sha256: Option<String>,
}

/// A policy captured into a snapshot: a unit artifact of the capture phase.
#[derive(Debug, Clone, PartialEq)]
pub struct CapturedPolicy {
    pub snapshot_id: String,
    pub policy_type: String,
    pub external_id: String,
    pub evidence: Evidence,
    pub payload: Value,
    pub payload_sha256: String,
}

/// What a compare concluded, written with its findings.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareRecord {
    pub baseline_snapshot_id: Option<String>,
    pub backup_set_id: Option<String>,
    pub findings: u64,
    /// `context.compare` as recorded (per-type counts, unreadable types…).
    pub summary: Value,
}

/// A compare record as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCompare {
    pub run_id: String,
    pub workspace_id: String,
    pub tenant_id: String,
    pub baseline_snapshot_id: Option<String>,
    pub backup_set_id: Option<String>,
    pub findings: u64,
    pub summary: Value,
    pub recorded_at: i64,
}

/// A finding as stored, with its position in the run's list.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredFinding {
    pub seq: i64,
    pub finding: Finding,
}

type CompareRow = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    i64,
    String,
    i64,
);
type FindingRow = (
    i64,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
);
type ProfileRow = (String, String, String, String, Option<String>, i64, String, i64);
const PROFILE_COLUMNS: &str =
    "id, workspace_id, name, source_tenant_id, policy_types, is_default, created_by, created_at";

fn profile(
    (id, workspace_id, name, source_tenant_id, types, is_default, created_by, created_at): ProfileRow,
) -> Profile {
    Profile {
        id,
        workspace_id,
        name,
        source_tenant_id,
        policy_types: types.and_then(|t| serde_json::from_str(&t).ok()),
        is_default: is_default != 0,
        created_by,
        created_at,
    }
}

type SnapshotRow = (
    String,
    String,
    String,
    String,
    String,
    i64,
    String,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);
const SNAPSHOT_COLUMNS: &str = "id, workspace_id, tenant_id, profile_id, created_by_run_id, created_at, \
     policy_types, sealed_at, policy_count, gap_count";

fn snapshot(row: SnapshotRow) -> SnapshotHead {
    let (id, workspace_id, tenant_id, profile_id, run, created_at, types, sealed_at, policies, gaps) = row;
    SnapshotHead {
        id,
        workspace_id,
        tenant_id,
        profile_id,
        created_by_run_id: run,
        created_at,
        policy_types: serde_json::from_str(&types).unwrap_or_default(),
        sealed_at,
        policy_count: policies.map(|n| n as u64),
        gap_count: gaps.map(|n| n as u64),
    }
}

type PolicyRow = (String, String, String, String, Option<String>, Option<String>);
const POLICY_COLUMNS: &str = "policy_type, external_id, display_name, evidence, payload, payload_sha256";

fn policy(
    (policy_type, external_id, display_name, evidence, payload, sha): PolicyRow,
) -> Result<SnapshotPolicy, StoreError> {
    Ok(SnapshotPolicy {
        policy_type,
        external_id,
        display_name,
        evidence: Evidence::parse(&evidence)?,
        payload: payload
            .map(|p| serde_json::from_str(&p))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("snapshot policy payload: {e}")))?,
        payload_sha256: sha,
    })
}

fn visible(vis: &Visibility, tenant_id: &str) -> bool {
    vis.tenants
        .as_ref()
        .is_none_or(|t| t.iter().any(|v| v == tenant_id))
}

/// Writes a captured policy into its run's snapshot (the unit's artifact).
pub(crate) async fn capture_policy_in(
    tx: &mut Tx,
    run_id: &str,
    p: &CapturedPolicy,
) -> Result<(), StoreError> {
    if p.evidence == Evidence::Planned {
        return Err(StoreError::Corrupt("a captured policy has evidence".into()));
    }
    let n = tx
        .execute(
            sql(
                "UPDATE baseline_snapshot_policies SET evidence = $1, payload = $2, payload_sha256 = $3 \
                 WHERE snapshot_id = $4 AND policy_type = $5 AND external_id = $6 AND EXISTS (\
                 SELECT 1 FROM baseline_snapshots s WHERE s.id = $4 AND s.created_by_run_id = $7 \
                 AND s.sealed_at IS NULL)",
            )
            .bind(p.evidence.as_str())
            .bind(serde_json::to_string(&p.payload).expect("json"))
            .bind(&p.payload_sha256)
            .bind(&p.snapshot_id)
            .bind(&p.policy_type)
            .bind(&p.external_id)
            .bind(run_id),
        )
        .await?;
    if n != 1 {
        return Err(StoreError::NotFound {
            what: "planned snapshot policy",
            id: format!("{}/{}/{}", p.snapshot_id, p.policy_type, p.external_id),
        });
    }
    Ok(())
}

impl Store {
    /// Creates a profile; its name is unique in the workspace (`Conflict`).
    pub async fn create_baseline_profile(
        &self,
        workspace_id: &str,
        name: &str,
        source_tenant_id: &str,
        policy_types: Option<&[String]>,
        created_by: &str,
    ) -> Result<Profile, StoreError> {
        let mut tx = self.begin_write().await?;
        let tenant: Option<(String,)> = tx
            .fetch_optional(
                sql("SELECT id FROM tenants WHERE id = $1 AND workspace_id = $2")
                    .bind(source_tenant_id)
                    .bind(workspace_id),
            )
            .await?;
        if tenant.is_none() {
            return Err(StoreError::NotFound {
                what: "tenant",
                id: source_tenant_id.to_owned(),
            });
        }
        let taken: Option<(String,)> = tx
            .fetch_optional(
                sql("SELECT id FROM baseline_profiles WHERE workspace_id = $1 AND name = $2")
                    .bind(workspace_id)
                    .bind(name),
            )
            .await?;
        if taken.is_some() {
            return Err(StoreError::Conflict(format!(
                "a baseline profile named `{name}` already exists in this workspace"
            )));
        }
        let id = new_id();
        let now = tx.now();
        tx.execute(
            sql(
                "INSERT INTO baseline_profiles (id, workspace_id, name, source_tenant_id, policy_types, \
                 is_default, created_by, created_at) VALUES ($1, $2, $3, $4, $5, 0, $6, $7)",
            )
            .bind(id.as_str())
            .bind(workspace_id)
            .bind(name)
            .bind(source_tenant_id)
            .bind(policy_types.map(|t| serde_json::to_string(t).expect("json")))
            .bind(created_by)
            .bind(now),
        )
        .await?;
        tx.commit().await?;
        Ok(Profile {
            id,
            workspace_id: workspace_id.to_owned(),
            name: name.to_owned(),
            source_tenant_id: source_tenant_id.to_owned(),
            policy_types: policy_types.map(<[String]>::to_vec),
            is_default: false,
            created_by: created_by.to_owned(),
            created_at: now,
        })
    }

    /// The profiles of tenants `vis` may see, by name.
    pub async fn visible_baseline_profiles(&self, vis: &Visibility) -> Result<Vec<Profile>, StoreError> {
        let q = format!(
            "SELECT {PROFILE_COLUMNS} FROM baseline_profiles WHERE workspace_id = $1 ORDER BY name LIMIT {MAX_PROFILES}"
        );
        let rows: Vec<ProfileRow> = self
            .pool
            .fetch_all(sql_owned(q).bind(vis.workspace_id.as_str()))
            .await?;
        Ok(rows
            .into_iter()
            .map(profile)
            .filter(|p| visible(vis, &p.source_tenant_id))
            .collect())
    }

    /// A profile of the workspace by name (exact).
    pub async fn baseline_profile_by_name(
        &self,
        workspace_id: &str,
        name: &str,
    ) -> Result<Option<Profile>, StoreError> {
        let q =
            format!("SELECT {PROFILE_COLUMNS} FROM baseline_profiles WHERE workspace_id = $1 AND name = $2");
        let row: Option<ProfileRow> = self
            .pool
            .fetch_optional(sql_owned(q).bind(workspace_id).bind(name))
            .await?;
        Ok(row.map(profile))
    }

    /// A tenant's default profile, if its first capture made one.
    pub async fn default_baseline_profile(&self, tenant_id: &str) -> Result<Option<Profile>, StoreError> {
        let q = format!(
            "SELECT {PROFILE_COLUMNS} FROM baseline_profiles WHERE source_tenant_id = $1 AND is_default = 1"
        );
        let row: Option<ProfileRow> = self.pool.fetch_optional(sql_owned(q).bind(tenant_id)).await?;
        Ok(row.map(profile))
    }

    /// A profile by id, in its workspace.
    pub async fn baseline_profile(
        &self,
        workspace_id: &str,
        id: &str,
    ) -> Result<Option<Profile>, StoreError> {
        let q =
            format!("SELECT {PROFILE_COLUMNS} FROM baseline_profiles WHERE id = $1 AND workspace_id = $2");
        let row: Option<ProfileRow> = self
            .pool
            .fetch_optional(sql_owned(q).bind(id).bind(workspace_id))
            .await?;
        Ok(row.map(profile))
    }

    /// The tenant's default profile, made on first call (fenced: a capture
    /// without `profile` makes it). Its name is `<tenant name> default`, or
    /// with the tenant id appended when a profile already has that name.
    pub(crate) async fn default_profile_fenced(
        &self,
        fence: &Fence,
        run_id: &str,
        workspace_id: &str,
        tenant_id: &str,
    ) -> Result<Profile, StoreError> {
        if let Some(p) = self.default_baseline_profile(tenant_id).await? {
            return Ok(p);
        }
        let mut tx = self.begin_write().await?;
        check_fence(&mut tx, fence, run_id).await?;
        let (tenant_name,): (String,) = tx
            .fetch_one(sql("SELECT name FROM tenants WHERE id = $1").bind(tenant_id))
            .await?;
        let now = tx.now();
        for name in [
            format!("{tenant_name} default"),
            format!("{tenant_name} default ({tenant_id})"),
        ] {
            // No conflict target: the name's key and the one-default key
            // both turn a second insert into nothing.
            tx.execute(
                sql(
                    "INSERT INTO baseline_profiles (id, workspace_id, name, source_tenant_id, policy_types, \
                     is_default, created_by, created_at) VALUES ($1, $2, $3, $4, NULL, 1, $5, $6) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(new_id())
                .bind(workspace_id)
                .bind(name.as_str())
                .bind(tenant_id)
                .bind(format!("run:{run_id}"))
                .bind(now),
            )
            .await?;
            let q = format!(
                "SELECT {PROFILE_COLUMNS} FROM baseline_profiles WHERE source_tenant_id = $1 AND is_default = 1"
            );
            let row: Option<ProfileRow> = tx.fetch_optional(sql_owned(q).bind(tenant_id)).await?;
            if let Some(row) = row {
                tx.commit().await?;
                return Ok(profile(row));
            }
        }
        Err(StoreError::Conflict(format!(
            "no name is free for tenant {tenant_id}'s default baseline profile"
        )))
    }

    /// Profile `name` of the run's workspace, made on first call with the
    /// run's tenant as its source and every type in scope (INTERFACE.md: a
    /// capture into a new name creates it); fenced.
    pub(crate) async fn named_profile_fenced(
        &self,
        fence: &Fence,
        run_id: &str,
        workspace_id: &str,
        tenant_id: &str,
        name: &str,
    ) -> Result<Profile, StoreError> {
        let q =
            format!("SELECT {PROFILE_COLUMNS} FROM baseline_profiles WHERE workspace_id = $1 AND name = $2");
        if let Some(row) = self
            .pool
            .fetch_optional::<ProfileRow>(sql_owned(q.clone()).bind(workspace_id).bind(name))
            .await?
        {
            return Ok(profile(row));
        }
        let mut tx = self.begin_write().await?;
        check_fence(&mut tx, fence, run_id).await?;
        tx.execute(
            sql(
                "INSERT INTO baseline_profiles (id, workspace_id, name, source_tenant_id, policy_types, \
                 is_default, created_by, created_at) VALUES ($1, $2, $3, $4, NULL, 0, $5, $6) \
                 ON CONFLICT (workspace_id, name) DO NOTHING",
            )
            .bind(new_id())
            .bind(workspace_id)
            .bind(name)
            .bind(tenant_id)
            .bind(format!("run:{run_id}"))
            .bind(tx.now()),
        )
        .await?;
        let row: ProfileRow = tx.fetch_one(sql_owned(q).bind(workspace_id).bind(name)).await?;
        tx.commit().await?;
        Ok(profile(row))
    }

    /// The snapshot of capture run `run_id`, made on first call with its
    /// planned policies (a retried capture gets the first plan back).
    pub(crate) async fn snapshot_for_run_fenced(
        &self,
        fence: &Fence,
        run_id: &str,
        profile_id: &str,
        policy_types: &[String],
        planned: &[PlannedPolicy],
    ) -> Result<SnapshotHead, StoreError> {
        let mut tx = self.begin_write().await?;
        check_fence(&mut tx, fence, run_id).await?;
        let q = format!("SELECT {SNAPSHOT_COLUMNS} FROM baseline_snapshots WHERE created_by_run_id = $1");
        if let Some(row) = tx
            .fetch_optional::<SnapshotRow>(sql_owned(q.clone()).bind(run_id))
            .await?
        {
            tx.commit().await?;
            return Ok(snapshot(row));
        }
        let (workspace_id, tenant_id): (String, Option<String>) = tx
            .fetch_one(sql("SELECT workspace_id, tenant_id FROM operation_runs WHERE id = $1").bind(run_id))
            .await?;
        let tenant_id =
            tenant_id.ok_or_else(|| StoreError::Corrupt(format!("run {run_id} has no tenant")))?;
        // A snapshot is of its profile's source tenant, in its workspace.
        let source: Option<(String,)> = tx
            .fetch_optional(
                sql("SELECT source_tenant_id FROM baseline_profiles WHERE id = $1 AND workspace_id = $2")
                    .bind(profile_id)
                    .bind(workspace_id.as_str()),
            )
            .await?;
        if source.as_ref().map(|(t,)| t.as_str()) != Some(tenant_id.as_str()) {
            return Err(StoreError::Conflict(format!(
                "baseline profile {profile_id} is not a profile of run {run_id}'s tenant"
            )));
        }
        let id = new_id();
        tx.execute(
            sql(
                "INSERT INTO baseline_snapshots (id, workspace_id, tenant_id, profile_id, created_by_run_id, \
                 created_at, policy_types) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(id.as_str())
            .bind(workspace_id.as_str())
            .bind(tenant_id.as_str())
            .bind(profile_id)
            .bind(run_id)
            .bind(tx.now())
            .bind(serde_json::to_string(policy_types).expect("json")),
        )
        .await?;
        for chunk in planned.chunks(200) {
            let mut stmt = sql_built(
                tx.dialect(),
                "INSERT INTO baseline_snapshot_policies (snapshot_id, policy_type, external_id, display_name, \
                 evidence) VALUES ",
            );
            for (i, p) in chunk.iter().enumerate() {
                stmt.push(if i == 0 { "(" } else { ", (" })
                    .push_bind(id.as_str())
                    .push(", ")
                    .push_bind(p.policy_type.as_str())
                    .push(", ")
                    .push_bind(p.external_id.as_str())
                    .push(", ")
                    .push_bind(p.display_name.as_str())
                    .push(", 'planned')");
            }
            stmt.push(" ON CONFLICT DO NOTHING");
            tx.execute(stmt).await?;
        }
        let row: SnapshotRow = tx.fetch_one(sql_owned(q).bind(run_id)).await?;
        tx.commit().await?;
        Ok(snapshot(row))
    }

    /// Seals run `run_id`'s snapshot with its gaps and counts, and patches
    /// the run's context, in one fenced transaction; sealing twice is a no-op.
    pub(crate) async fn seal_snapshot_fenced(
        &self,
        fence: &Fence,
        run_id: &str,
        gaps: &[Gap],
        patches: &[ContextPatch],
    ) -> Result<SnapshotHead, StoreError> {
        let mut tx = self.begin_write().await?;
        check_fence(&mut tx, fence, run_id).await?;
        let q = format!("SELECT {SNAPSHOT_COLUMNS} FROM baseline_snapshots WHERE created_by_run_id = $1");
        let Some(row) = tx
            .fetch_optional::<SnapshotRow>(sql_owned(q.clone()).bind(run_id))
            .await?
        else {
            return Err(StoreError::NotFound {
                what: "snapshot of run",
                id: run_id.to_owned(),
            });
        };
        let head = snapshot(row);
        if head.sealed_at.is_some() {
            tx.commit().await?;
            return Ok(head);
        }
        let (planned,): (i64,) = tx
            .fetch_one(
                sql("SELECT COUNT(*) FROM baseline_snapshot_policies WHERE snapshot_id = $1 AND evidence = 'planned'")
                    .bind(head.id.as_str()),
            )
            .await?;
        if planned > 0 {
            return Err(StoreError::Corrupt(format!(
                "snapshot {} has {planned} policies not captured: it cannot be sealed",
                head.id
            )));
        }
        for (seq, chunk) in gaps.chunks(200).enumerate() {
            let mut stmt = sql_built(
                tx.dialect(),
                "INSERT INTO baseline_snapshot_gaps (snapshot_id, seq, policy_type, external_id, reason, message) VALUES ",
            );
            for (i, g) in chunk.iter().enumerate() {
                stmt.push(if i == 0 { "(" } else { ", (" })
                    .push_bind(head.id.as_str())
                    .push(", ")
                    .push_bind((seq * 200 + i) as i64)
                    .push(", ")
                    .push_bind(g.policy_type.as_str())
                    .push(", ")
                    .push_bind(g.external_id.as_deref())
                    .push(", ")
                    .push_bind(g.reason.as_str())
                    .push(", ")
                    .push_bind(g.message.as_str())
                    .push(")");
            }
            tx.execute(stmt).await?;
        }
        let (policies,): (i64,) = tx
            .fetch_one(
                sql("SELECT COUNT(*) FROM baseline_snapshot_policies WHERE snapshot_id = $1")
                    .bind(head.id.as_str()),
            )
            .await?;
        tx.execute(
            sql("UPDATE baseline_snapshots SET sealed_at = $1, policy_count = $2, gap_count = $3 WHERE id = $4")
                .bind(tx.now())
                .bind(policies)
                .bind(gaps.len() as i64)
                .bind(head.id.as_str()),
        )
        .await?;
        crate::runs::patch_context_in(&mut tx, run_id, patches).await?;
        let row: SnapshotRow = tx.fetch_one(sql_owned(q).bind(run_id)).await?;
        tx.commit().await?;
        Ok(snapshot(row))
    }

    /// Records run `run_id`'s compare and its findings, and patches its
    /// context, in one fenced transaction; recording twice is a no-op.
    pub(crate) async fn record_compare_fenced(
        &self,
        fence: &Fence,
        run_id: &str,
        record: &CompareRecord,
        findings: &[Finding],
        patches: &[ContextPatch],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        check_fence(&mut tx, fence, run_id).await?;
        let (workspace_id, tenant_id): (String, Option<String>) = tx
            .fetch_one(sql("SELECT workspace_id, tenant_id FROM operation_runs WHERE id = $1").bind(run_id))
            .await?;
        let n = tx
            .execute(
                sql(
                    "INSERT INTO baseline_compares (run_id, workspace_id, tenant_id, baseline_snapshot_id, \
                     backup_set_id, findings, summary, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (run_id) DO NOTHING",
                )
                .bind(run_id)
                .bind(workspace_id.as_str())
                .bind(tenant_id.as_deref())
                .bind(record.baseline_snapshot_id.as_deref())
                .bind(record.backup_set_id.as_deref())
                .bind(record.findings as i64)
                .bind(serde_json::to_string(&record.summary).expect("json"))
                .bind(tx.now()),
            )
            .await?;
        if n == 0 {
            tx.commit().await?;
            return Ok(());
        }
        for (c, chunk) in findings.chunks(200).enumerate() {
            let mut stmt = sql_built(
                tx.dialect(),
                "INSERT INTO baseline_findings (run_id, seq, finding_key, kind, policy_type, display_name, \
                 baseline_external_id, current_external_id, changes) VALUES ",
            );
            for (i, f) in chunk.iter().enumerate() {
                let kind = serde_json::to_value(f.kind).expect("json");
                stmt.push(if i == 0 { "(" } else { ", (" })
                    .push_bind(run_id)
                    .push(", ")
                    .push_bind((c * 200 + i) as i64)
                    .push(", ")
                    .push_bind(f.key())
                    .push(", ")
                    .push_bind(kind.as_str().unwrap_or_default().to_owned())
                    .push(", ")
                    .push_bind(f.policy_type.as_str())
                    .push(", ")
                    .push_bind(f.display_name.as_str())
                    .push(", ")
                    .push_bind(f.baseline_external_id.as_deref())
                    .push(", ")
                    .push_bind(f.current_external_id.as_deref())
                    .push(", ")
                    .push_bind(serde_json::to_string(&f.changes).expect("json"))
                    .push(")");
            }
            tx.execute(stmt).await?;
        }
        crate::runs::patch_context_in(&mut tx, run_id, patches).await?;
        tx.commit().await
    }

    /// Whether backup set `set_id` (of workspace `workspace_id`) holds only
    /// the policies its creating run named (`params.policy_ids`), not
    /// whole policy types: as a baseline, a policy it lacks is no drift.
    pub async fn backup_set_named_policies(
        &self,
        workspace_id: &str,
        set_id: &str,
    ) -> Result<bool, StoreError> {
        let row: Option<(String,)> = self
            .pool
            .fetch_optional(
                sql(
                    "SELECT r.context FROM backup_sets s JOIN operation_runs r ON r.id = s.created_by_run_id \
                     WHERE s.id = $1 AND s.workspace_id = $2",
                )
                .bind(set_id)
                .bind(workspace_id),
            )
            .await?;
        Ok(row
            .and_then(|(c,)| serde_json::from_str::<Value>(&c).ok())
            .is_some_and(|c| c.pointer("/params/policy_ids").is_some_and(|v| !v.is_null())))
    }

    /// Snapshot `id` of the workspace, if `vis` may see its tenant.
    pub async fn visible_baseline_snapshot(
        &self,
        vis: &Visibility,
        id: &str,
    ) -> Result<Option<SnapshotHead>, StoreError> {
        Ok(self
            .baseline_snapshot(&vis.workspace_id, id)
            .await?
            .filter(|s| visible(vis, &s.tenant_id)))
    }

    /// Snapshot `id` of workspace `workspace_id`.
    pub async fn baseline_snapshot(
        &self,
        workspace_id: &str,
        id: &str,
    ) -> Result<Option<SnapshotHead>, StoreError> {
        let q =
            format!("SELECT {SNAPSHOT_COLUMNS} FROM baseline_snapshots WHERE id = $1 AND workspace_id = $2");
        let row: Option<SnapshotRow> = self
            .pool
            .fetch_optional(sql_owned(q).bind(id).bind(workspace_id))
            .await?;
        Ok(row.map(snapshot))
    }

    /// The snapshots linked to run `run_id` (a capture's proof: at most one).
    pub async fn snapshots_of_run(&self, run_id: &str) -> Result<Vec<SnapshotHead>, StoreError> {
        let q = format!("SELECT {SNAPSHOT_COLUMNS} FROM baseline_snapshots WHERE created_by_run_id = $1");
        let rows: Vec<SnapshotRow> = self.pool.fetch_all(sql_owned(q).bind(run_id)).await?;
        Ok(rows.into_iter().map(snapshot).collect())
    }

    /// The newest sealed snapshot of a profile.
    pub async fn latest_sealed_snapshot(&self, profile_id: &str) -> Result<Option<SnapshotHead>, StoreError> {
        let q = format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM baseline_snapshots WHERE profile_id = $1 AND sealed_at IS NOT NULL \
             ORDER BY sealed_at DESC, id DESC LIMIT 1"
        );
        let row: Option<SnapshotRow> = self.pool.fetch_optional(sql_owned(q).bind(profile_id)).await?;
        Ok(row.map(snapshot))
    }

    /// Every policy of a snapshot, by type and external id.
    pub async fn snapshot_policies(&self, snapshot_id: &str) -> Result<Vec<SnapshotPolicy>, StoreError> {
        let q = format!(
            "SELECT {POLICY_COLUMNS} FROM baseline_snapshot_policies WHERE snapshot_id = $1 \
             ORDER BY policy_type, external_id"
        );
        let rows: Vec<PolicyRow> = self.pool.fetch_all(sql_owned(q).bind(snapshot_id)).await?;
        rows.into_iter().map(policy).collect()
    }

    /// One page of a snapshot's policies after `(policy_type, external_id)`.
    pub async fn snapshot_policies_page(
        &self,
        snapshot_id: &str,
        after: Option<(&str, &str)>,
        limit: u32,
    ) -> Result<Vec<SnapshotPolicy>, StoreError> {
        let mut stmt = sql_built(
            self.pool.dialect(),
            &format!("SELECT {POLICY_COLUMNS} FROM baseline_snapshot_policies WHERE snapshot_id = "),
        );
        stmt.push_bind(snapshot_id);
        if let Some((t, e)) = after {
            stmt.push(" AND (policy_type > ")
                .push_bind(t)
                .push(" OR (policy_type = ")
                .push_bind(t)
                .push(" AND external_id > ")
                .push_bind(e)
                .push("))");
        }
        stmt.push(" ORDER BY policy_type, external_id LIMIT ")
            .push_bind(i64::from(limit.clamp(1, POLICIES_PER_PAGE)));
        let rows: Vec<PolicyRow> = self.pool.fetch_all(stmt).await?;
        rows.into_iter().map(policy).collect()
    }

    /// A snapshot's gaps, in the order recorded.
    pub async fn snapshot_gaps(&self, snapshot_id: &str) -> Result<Vec<Gap>, StoreError> {
        let rows: Vec<(String, Option<String>, String, String)> = self
            .pool
            .fetch_all(
                sql(
                    "SELECT policy_type, external_id, reason, message FROM baseline_snapshot_gaps \
                     WHERE snapshot_id = $1 ORDER BY seq",
                )
                .bind(snapshot_id),
            )
            .await?;
        rows.into_iter()
            .map(|(policy_type, external_id, reason, message)| {
                Ok(Gap {
                    policy_type,
                    external_id,
                    reason: GapReason::parse(&reason)
                        .ok_or_else(|| StoreError::Corrupt(format!("gap reason `{reason}`")))?,
                    message,
                })
            })
            .collect()
    }

    /// The compare run `run_id` recorded, if any.
    pub async fn compare_of_run(&self, run_id: &str) -> Result<Option<StoredCompare>, StoreError> {
        let row: Option<CompareRow> = self
            .pool
            .fetch_optional(
                sql(
                    "SELECT run_id, workspace_id, tenant_id, baseline_snapshot_id, backup_set_id, findings, \
                     summary, recorded_at FROM baseline_compares WHERE run_id = $1",
                )
                .bind(run_id),
            )
            .await?;
        Ok(row.map(
            |(
                run_id,
                workspace_id,
                tenant_id,
                baseline_snapshot_id,
                backup_set_id,
                findings,
                summary,
                recorded_at,
            )| {
                StoredCompare {
                    run_id,
                    workspace_id,
                    tenant_id,
                    baseline_snapshot_id,
                    backup_set_id,
                    findings: findings as u64,
                    summary: serde_json::from_str(&summary).unwrap_or(Value::Null),
                    recorded_at,
                }
            },
        ))
    }

    /// One page of run `run_id`'s findings after position `after`.
    pub async fn findings_page(
        &self,
        run_id: &str,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredFinding>, StoreError> {
        let rows: Vec<FindingRow> = self
            .pool
            .fetch_all(
                sql(
                    "SELECT seq, kind, policy_type, display_name, baseline_external_id, current_external_id, \
                     changes FROM baseline_findings WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                )
                .bind(run_id)
                .bind(after.unwrap_or(-1))
                .bind(i64::from(limit.clamp(1, FINDINGS_PER_PAGE))),
            )
            .await?;
        rows.into_iter()
            .map(
                |(
                    seq,
                    kind,
                    policy_type,
                    display_name,
                    baseline_external_id,
                    current_external_id,
                    changes,
                )| {
                    Ok(StoredFinding {
                        seq,
                        finding: Finding {
                            kind: serde_json::from_value(Value::String(kind.clone()))
                                .map_err(|_| StoreError::Corrupt(format!("finding kind `{kind}`")))?,
                            policy_type,
                            display_name,
                            baseline_external_id,
                            current_external_id,
                            changes: serde_json::from_str(&changes)
                                .map_err(|e| StoreError::Corrupt(format!("finding changes: {e}")))?,
                        },
                    })
                },
            )
            .collect()
    }
}

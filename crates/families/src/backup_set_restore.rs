//! `backup_set.restore`: writes the items of a backup set into the run's
//! tenant (the **target**), one unit job per item, in dependency waves
//! (OPERATIONS.md §5, §6, §8).
//!
//! - **Parent** (run job): resolves the set (the one named, of any tenant of
//!   the workspace, or the target's latest complete set — none ends
//!   `blocked`, `no_backup_set`), checks the target can be read and written
//!   at all (a blocked target ends `blocked` before any write), reads the
//!   target's directory, and plans the units in waves: groups to create
//!   (only with `create_missing_groups`), named locations and assignment
//!   filters, then every other policy — so nothing is written before what it
//!   refers to. The plan (`context.restore`) and `total` are written once; a
//!   retried parent keeps them.
//! - **Unit** (unit job, one per item): maps every reference the item makes
//!   (the names its backup recorded) to the target's own ids through the
//!   target's directory — a reference that cannot be mapped fails the unit
//!   (`reference_unmapped`, naming it), it is never dropped or left pointing
//!   at the source tenant. Restored into another tenant than the set's own,
//!   an id in a reference position of the body ([`reference_positions`]:
//!   assignment groups and filters, Conditional Access users, groups and
//!   named locations) that the backup's directory did not know — a user, a
//!   group deleted in the source or missed by its directory read — has no
//!   name to be mapped by: it fails the unit the same way
//!   ([`stray_references`]), in a dry run too, and nothing of the item is
//!   written. It then looks the object up in the target (by the
//!   id an earlier restore recorded, else by type and display name) before
//!   creating it, so a unit re-run after a crash never creates a duplicate;
//!   compares normalized content (`unchanged`: nothing written), else writes
//!   the policy and then its assignments (`created` / `updated`). A dry run
//!   writes nothing and records what would change. Each unit's result is a
//!   [`RestoreResult`] committed with its ledger row, failures included.
//! - **Outcome** by `maybe_complete_bulk_run` (all items restored →
//!   succeeded; some failed → partially_succeeded; all failed → failed);
//!   **proof** for reconciliation is this run's own per-item results on
//!   this target ([`reconcile_from_results`]).

use crate::kit::{OpenFailed, RunCache, Stopped, open_provider, provider_error, with_retries};
use async_trait::async_trait;
use opsledger_core::normalize::{Names, content_hash, sha256_hex};
use opsledger_core::reconcile::{AdapterResult, Verdict};
use opsledger_core::{Failure, Outcome, Run, RunType, UnitOutcome};
use opsledger_engine::{Family, Handler, HandlerError, RunContext, UnitContext, UnitHandler, UnitResult};
use opsledger_providers::{
    Directory, DirectoryKind, NameDecision, Policy, Provider, ProviderError, ProviderSettings,
};
use opsledger_store::artifacts::UnitArtifact;
use opsledger_store::lease::RunReads;
use opsledger_store::proof::ProofReader;
use opsledger_store::restores::{ItemHead, RestoreOutcome, RestoreResult, StoredRestoreResult};
use opsledger_store::{Completion, ContextPatch, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The family's descriptor.
pub fn family(providers: &ProviderSettings) -> Family {
    Family {
        run: Arc::new(Restore {
            providers: providers.clone(),
        }),
        units: Some(Arc::new(RestoreUnit {
            providers: providers.clone(),
        })),
        adapter: Some(Arc::new(RestoreAdapter)),
    }
}

/// The policy types written in the first wave: what other policies refer to.
pub const FIRST_WAVE_TYPES: [&str; 2] = ["namedLocations", "assignmentFilters"];

/// Unit keys: `item/<backup item id>` or `group/<hash of the group's name>`.
const ITEM: &str = "item/";
const GROUP: &str = "group/";

/// The restore's plan, written once by the parent into `context.restore`
/// and read by every unit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    pub backup_set_id: String,
    pub source_tenant_id: String,
    #[serde(default)]
    pub dry_run: bool,
    /// Unit key → name of each group the restore creates (wave 1).
    #[serde(default)]
    pub groups: BTreeMap<String, String>,
    /// Items that share their type and display name with another item of the
    /// restore: which target object each is cannot be told, so they fail.
    #[serde(default)]
    pub ambiguous: BTreeSet<String>,
    /// Ids the source named twice, with the name its export decided on
    /// (`MigrationTable.json`): references to them are mapped by that name,
    /// and the units naming them say so.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub name_decisions: Vec<NameDecision>,
    pub items: u64,
}

pub struct Restore {
    pub providers: ProviderSettings,
}

fn blocked(code: &str, message: impl Into<String>) -> Completion {
    Completion::new(Outcome::Blocked).with_failure(Failure::new(code, message))
}

/// `displayName`, or `name` (the settings catalog), trimmed and without case:
/// how a policy is matched in the target.
pub fn match_name(name: &str) -> String {
    name.trim().to_lowercase()
}

fn group_key(name: &str) -> String {
    format!("{GROUP}{}", &sha256_hex(match_name(name).as_bytes())[..32])
}

/// The waves of a restore's units: groups to create, then named locations
/// and assignment filters, then every other policy. Pure: the plan's shape.
pub fn waves(items: &[ItemHead], groups: &BTreeMap<String, String>) -> Vec<Vec<String>> {
    let first: Vec<String> = groups
        .keys()
        .cloned()
        .chain(
            items
                .iter()
                .filter(|i| FIRST_WAVE_TYPES.contains(&i.policy_type.as_str()))
                .map(|i| format!("{ITEM}{}", i.id)),
        )
        .collect();
    let second: Vec<String> = items
        .iter()
        .filter(|i| !FIRST_WAVE_TYPES.contains(&i.policy_type.as_str()))
        .map(|i| format!("{ITEM}{}", i.id))
        .collect();
    [first, second].into_iter().filter(|w| !w.is_empty()).collect()
}

/// Items sharing type and match name with another selected item.
pub fn ambiguous_items(items: &[ItemHead]) -> BTreeSet<String> {
    let mut by_name: BTreeMap<(String, String), Vec<&str>> = BTreeMap::new();
    for i in items {
        by_name
            .entry((i.policy_type.clone(), match_name(&i.display_name)))
            .or_default()
            .push(&i.id);
    }
    by_name
        .into_values()
        .filter(|ids| ids.len() > 1)
        .flatten()
        .map(str::to_owned)
        .collect()
}

/// The groups the items refer to (`group:<name>` references) that the
/// target's directory has no group of that name for, by unit key.
pub fn missing_groups(items: &[ItemHead], target: &Directory) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for item in items {
        for named in item.refs.values() {
            if let Some(name) = named.strip_prefix("group:")
                && target.by_name(DirectoryKind::Group, name).is_empty()
            {
                out.entry(group_key(name))
                    .or_insert_with(|| name.trim().to_owned());
            }
        }
    }
    out
}

#[async_trait]
impl Handler for Restore {
    async fn execute(&self, ctx: RunContext) -> Result<(), HandlerError> {
        let run = &ctx.run;
        if run.tenant_id.is_none() {
            return Err(HandlerError::permanent(
                "tenant_missing",
                "a restore needs a target tenant",
            ));
        }
        if let Some(total) = run.summary_counts.total {
            tracing::info!(run = %run.id, total, "restore units already planned");
            return Ok(());
        }
        let params = run.context.get("params").cloned().unwrap_or(Value::Null);
        let flag = |name: &str| params.get(name).and_then(Value::as_bool).unwrap_or(false);
        let (dry_run, create_groups) = (flag("dry_run"), flag("create_missing_groups"));
        let reads = ctx.reads();
        let set = match params.get("backup_set_id").and_then(Value::as_str) {
            Some(id) => match reads.backup_set(id).await? {
                Some(set) => set,
                None => {
                    ctx.complete(blocked(
                        "backup_set_not_found",
                        format!("backup set {id} no longer exists in this workspace"),
                    ))
                    .await?;
                    return Ok(());
                }
            },
            None => match reads.latest_complete_backup_set().await? {
                Some(set) => set,
                None => {
                    ctx.complete(blocked(
                        "no_backup_set",
                        "this tenant has no complete backup set: name one in `backup_set_id`, or back the tenant up first",
                    ))
                    .await?;
                    return Ok(());
                }
            },
        };
        let cross_tenant = Some(&set.tenant_id) != run.tenant_id.as_ref();
        if set.directory.is_none() && cross_tenant {
            // Its references are bare ids of the source tenant: restored
            // elsewhere they would point at nothing, or at the wrong object.
            ctx.complete(blocked(
                "backup_set_without_directory",
                format!(
                    "backup set {} was taken without its tenant's directory, so its references cannot be \
                     mapped to another tenant; restore it into its own tenant, or take a new backup",
                    set.id
                ),
            ))
            .await?;
            return Ok(());
        }
        // The target first: a blocked target ends blocked before any write.
        let provider = match open_provider(reads, &self.providers).await {
            Ok(p) => p,
            Err(OpenFailed::Unavailable(failure)) => {
                ctx.complete(Completion::new(Outcome::Blocked).with_failure(failure))
                    .await?;
                return Ok(());
            }
            Err(OpenFailed::Store(e)) => return Err(e.into()),
        };
        let directory = match with_retries(&ctx.cancel, &ctx.liveness, || async {
            provider.check_access().await?;
            provider.directory().await
        })
        .await
        {
            Ok(d) => d,
            Err(Err(Stopped)) => return Ok(()),
            Err(Ok(e)) if e.is_precondition() => {
                ctx.complete(
                    Completion::new(Outcome::Blocked).with_failure(Failure::new(e.code(), e.to_string())),
                )
                .await?;
                return Ok(());
            }
            Err(Ok(e)) if e.is_transient() => return Err(provider_error(e, None)),
            Err(Ok(e)) => {
                ctx.complete(Completion::new(Outcome::Failed).with_failure(Failure::new(
                    "target_directory_unreadable",
                    format!("the target's directory cannot be read, so no reference can be mapped: {e}"),
                )))
                .await?;
                return Ok(());
            }
        };
        let mut items = reads.backup_item_heads(&set.id).await?;
        if items.is_empty() {
            // Complete but empty (a tenant with no policy, a capture of no
            // type): restoring it writes nothing, and `succeeded` would say
            // a restore happened.
            ctx.complete(blocked(
                "backup_set_empty",
                format!(
                    "backup set {} holds no policy, so there is nothing to restore; name a set with policies in `backup_set_id`",
                    set.id
                ),
            ))
            .await?;
            return Ok(());
        }
        if let Some(named) = params.get("item_ids").and_then(Value::as_array) {
            let named: BTreeSet<&str> = named.iter().filter_map(Value::as_str).collect();
            let found: BTreeSet<&str> = items.iter().map(|i| i.id.as_str()).collect();
            if let Some(missing) = named.iter().find(|id| !found.contains(**id)) {
                ctx.complete(blocked(
                    "backup_item_not_found",
                    format!("backup item {missing} is not in backup set {}", set.id),
                ))
                .await?;
                return Ok(());
            }
            items.retain(|i| named.contains(i.id.as_str()));
        }
        let groups = if create_groups {
            missing_groups(&items, &directory)
        } else {
            BTreeMap::new()
        };
        let name_decisions = set
            .directory
            .as_ref()
            .and_then(|d| serde_json::from_value::<Directory>(d.clone()).ok())
            .map(|d| d.name_decisions)
            .unwrap_or_default()
            .into_iter()
            .filter(|d| {
                items
                    .iter()
                    .any(|i| i.refs.keys().any(|id| id.eq_ignore_ascii_case(&d.id)))
            })
            .collect();
        let plan = Plan {
            backup_set_id: set.id.clone(),
            source_tenant_id: set.tenant_id.clone(),
            dry_run,
            ambiguous: ambiguous_items(&items),
            name_decisions,
            items: items.len() as u64,
            groups,
        };
        let waves = waves(&items, &plan.groups);
        ctx.patch_context(&[ContextPatch::new(
            ["restore"],
            serde_json::to_value(&plan).expect("json"),
        )])
        .await?;
        let waves: Vec<&[String]> = waves.iter().map(Vec::as_slice).collect();
        let total = ctx
            .enqueue_unit_waves(&waves, RunType::BackupSetRestore.max_attempts())
            .await?;
        tracing::info!(run = %run.id, total, set = %set.id, dry_run, "planned restore units");
        Ok(())
    }
}

pub struct RestoreUnit {
    pub providers: ProviderSettings,
}

/// The plan of a run, read once per run and process (a fan-out's units
/// share it, and the run's context can hold 10 000 item ids).
async fn plan_of(reads: &RunReads) -> Result<Arc<Plan>, HandlerError> {
    static CACHE: RunCache<Plan> = RunCache::new(16);
    let run_id = &reads.head().id;
    if let Some(plan) = CACHE.get(run_id) {
        return Ok(plan);
    }
    let run = reads
        .reload()
        .await?
        .ok_or_else(|| StoreError::RunNotFound(run_id.clone()))?;
    let plan: Plan = run
        .context
        .get("restore")
        .cloned()
        .and_then(|p| serde_json::from_value(p).ok())
        .ok_or_else(|| {
            HandlerError::permanent("restore_plan_missing", "the restore's plan was never recorded")
        })?;
    let plan = Arc::new(plan);
    CACHE.put(run_id, plan.clone());
    Ok(plan)
}

/// What one unit concluded, before it becomes a [`UnitResult`].
struct Done {
    outcome: RestoreOutcome,
    target_id: Option<String>,
    detail: Value,
    failure: Option<Failure>,
}

impl Done {
    fn ok(outcome: RestoreOutcome, target_id: Option<String>, detail: Value) -> Done {
        Done {
            outcome,
            target_id,
            detail,
            failure: None,
        }
    }

    fn failed(code: &str, message: String, target_id: Option<String>, detail: Value) -> Done {
        Done {
            outcome: RestoreOutcome::Failed,
            target_id,
            detail,
            failure: Some(Failure::new(code, message)),
        }
    }
}

/// A provider call inside a unit: throttling retried in place; a stop or a
/// transient error that outlasted the retries goes back to the runner (the
/// unit is retried whole, which is safe: it looks before it writes).
async fn call<T, F, Fut>(ctx: &UnitContext, f: F) -> Result<Result<T, ProviderError>, HandlerError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    match with_retries(&ctx.cancel, &ctx.liveness, f).await {
        Ok(v) => Ok(Ok(v)),
        Err(Err(Stopped)) => Err(HandlerError::Stopped),
        // Not the unit's last attempt: the runner retries it after backoff.
        // On its last, the failure is the unit's result like any other, so
        // every unit that ends has its restore result.
        Err(Ok(e)) if e.is_transient() && ctx.attempt < RunType::BackupSetRestore.max_attempts() => {
            Err(provider_error(e, Some(&ctx.unit_key)))
        }
        Err(Ok(e)) => Ok(Err(e)),
    }
}

/// A create, never sent twice after an answer that leaves it unknown:
/// after a timeout or a 5xx the object may exist, and sending the request
/// again could make a second one — such an error goes back to the runner,
/// whose retry of the unit looks the object up by name before creating it
/// (on the unit's last attempt it is the result). A `429` says the request
/// was not processed, so throttling is waited out and retried here.
async fn call_once<T, F, Fut>(
    ctx: &UnitContext,
    mut create: F,
) -> Result<Result<T, ProviderError>, HandlerError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let r = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => return Err(HandlerError::Stopped),
            r = create() => r,
        };
        ctx.liveness.mark();
        match r {
            Err(ProviderError::Throttled { retry_after, .. }) if attempt < crate::kit::MAX_ATTEMPTS => {
                let wait = retry_after
                    .filter(|w| *w <= crate::kit::MAX_RETRY_AFTER)
                    .unwrap_or(std::time::Duration::from_millis(100 << attempt.min(6)));
                tokio::select! {
                    _ = ctx.cancel.cancelled() => return Err(HandlerError::Stopped),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            Err(e) if e.is_transient() && ctx.attempt < RunType::BackupSetRestore.max_attempts() => {
                return Err(provider_error(e, Some(&ctx.unit_key)));
            }
            other => return Ok(other),
        }
    }
}

#[async_trait]
impl UnitHandler for RestoreUnit {
    async fn execute(&self, ctx: UnitContext) -> Result<UnitResult, HandlerError> {
        let plan = plan_of(&ctx.reads).await?;
        let provider = open_provider(&ctx.reads, &self.providers).await?;
        let (item_id, done) = if ctx.unit_key.starts_with(GROUP) {
            (None, restore_group(&ctx, &plan, provider.as_ref()).await?)
        } else if let Some(id) = ctx.unit_key.strip_prefix(ITEM) {
            (
                Some(id.to_owned()),
                restore_item(&ctx, &plan, provider.as_ref(), id).await?,
            )
        } else {
            return Err(HandlerError::permanent(
                "invalid_unit_key",
                format!("unit `{}` is not a restore unit", ctx.unit_key),
            ));
        };
        let result = RestoreResult {
            backup_set_id: plan.backup_set_id.clone(),
            backup_item_id: item_id,
            outcome: done.outcome,
            dry_run: plan.dry_run,
            target_id: done.target_id,
            detail: done.detail,
        };
        Ok(UnitResult {
            outcome: if done.failure.is_some() {
                UnitOutcome::Failed
            } else {
                UnitOutcome::Succeeded
            },
            failure: done.failure.map(|f| f.for_unit(ctx.unit_key.clone())),
            artifact: Some(UnitArtifact::RestoreResult(result)),
        })
    }
}

async fn restore_group(
    ctx: &UnitContext,
    plan: &Plan,
    provider: &dyn Provider,
) -> Result<Done, HandlerError> {
    let Some(name) = plan.groups.get(&ctx.unit_key) else {
        return Err(HandlerError::permanent(
            "invalid_unit_key",
            format!("unit `{}` is not a group of the plan", ctx.unit_key),
        ));
    };
    let detail = json!({"kind": "group", "name": name});
    let directory = match call(ctx, || provider.directory()).await? {
        Ok(d) => d,
        Err(e) => return Ok(Done::failed(e.code(), e.to_string(), None, detail)),
    };
    // Looked up by name first: a unit re-run after its create finds it.
    match directory.by_name(DirectoryKind::Group, name).as_slice() {
        [one] => return Ok(Done::ok(RestoreOutcome::Unchanged, Some(one.id.clone()), detail)),
        [] => {}
        many => {
            return Ok(Done::failed(
                "ambiguous_target",
                format!("the target has {} groups named `{name}`", many.len()),
                None,
                detail,
            ));
        }
    }
    if plan.dry_run {
        return Ok(Done::ok(RestoreOutcome::Created, None, detail));
    }
    match call_once(ctx, || {
        provider.create_directory_object(DirectoryKind::Group, name)
    })
    .await?
    {
        Ok(entry) => Ok(Done::ok(RestoreOutcome::Created, Some(entry.id), detail)),
        Err(e) => Ok(Done::failed(e.code(), e.to_string(), None, detail)),
    }
}

/// The target's directory for second-wave units, read once per run and
/// process: the second wave starts only when the first (which creates groups
/// and named locations) is recorded, so the directory no longer changes
/// under the restore. First-wave units read it fresh.
async fn second_wave_directory(
    ctx: &UnitContext,
    provider: &dyn Provider,
) -> Result<Result<Arc<Directory>, ProviderError>, HandlerError> {
    static CACHE: RunCache<Directory> = RunCache::new(8);
    let run_id = &ctx.run.id;
    if let Some(d) = CACHE.get(run_id) {
        return Ok(Ok(d));
    }
    let d = match call(ctx, || provider.directory()).await? {
        Ok(d) => Arc::new(d),
        Err(e) => return Ok(Err(e)),
    };
    CACHE.put(run_id, d.clone());
    Ok(Ok(d))
}

/// How an item's references map to the target: source id → target id, or
/// the references that cannot be mapped, each named.
pub fn map_references(
    refs: &BTreeMap<String, String>,
    target: &Directory,
    groups_to_create: &BTreeMap<String, String>,
    dry_run: bool,
) -> Result<BTreeMap<String, String>, Vec<String>> {
    let mut mapped = BTreeMap::new();
    let mut unmapped = Vec::new();
    for (source_id, named) in refs {
        let (kind, name) = named.split_once(':').unwrap_or(("", named));
        let kind = DirectoryKind::ALL.into_iter().find(|k| k.as_str() == kind);
        let Some(kind) = kind else {
            unmapped.push(format!(
                "`{named}` (id {source_id}): not a directory object opsledger maps"
            ));
            continue;
        };
        match target.by_name(kind, name).as_slice() {
            [one] => {
                mapped.insert(source_id.clone(), one.id.clone());
            }
            [] if dry_run
                && kind == DirectoryKind::Group
                && groups_to_create
                    .values()
                    .any(|g| match_name(g) == match_name(name)) =>
            {
                // A dry run created nothing: the group it would create maps.
                // A real run maps only what the target has (a group whose
                // creation failed leaves its references unmapped).
                mapped.insert(
                    source_id.clone(),
                    format!("(group `{}` to be created)", name.trim()),
                );
            }
            [] => unmapped.push(format!(
                "{} `{}` (id {source_id} in the backup) is not in the target's directory",
                kind.as_str(),
                name.trim()
            )),
            many => unmapped.push(format!(
                "{} `{}` (id {source_id} in the backup) names {} objects in the target; none is chosen",
                kind.as_str(),
                name.trim(),
                many.len()
            )),
        }
    }
    if unmapped.is_empty() {
        Ok(mapped)
    } else {
        Err(unmapped)
    }
}

/// What the unit says of each reference whose source id the source named
/// twice: the name it was mapped by, the names passed over, what decided,
/// and the target's object it now points to.
pub fn decisions_used(
    decisions: &[NameDecision],
    refs: &BTreeMap<String, String>,
    mapped: &BTreeMap<String, String>,
) -> Vec<Value> {
    refs.keys()
        .filter_map(|id| {
            let d = decisions.iter().find(|d| d.id.eq_ignore_ascii_case(id))?;
            Some(json!({
                "source_id": id,
                "mapped_by_name": d.chosen,
                "passed_over": d.passed_over,
                "decided_by": d.decided_by,
                "target_id": mapped.get(id),
                "message": format!(
                    "the source names {} id {id} both `{}` and {}; {} gives it to `{}`, so it is mapped by that name",
                    d.kind.as_str(),
                    d.chosen,
                    d.passed_over.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "),
                    d.decided_by,
                    d.chosen
                ),
            }))
        })
        .collect()
}

/// `value` with every string that is a mapped source id (any case) replaced
/// by the target's id.
pub fn remap(value: &Value, mapped: &BTreeMap<String, String>) -> Value {
    if mapped.is_empty() {
        return value.clone();
    }
    let lower: BTreeMap<String, &String> = mapped.iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
    fn walk(v: &Value, lower: &BTreeMap<String, &String>) -> Value {
        match v {
            Value::String(s) => match lower.get(&s.to_ascii_lowercase()) {
                Some(to) => Value::String((*to).clone()),
                None => v.clone(),
            },
            Value::Array(a) => Value::Array(a.iter().map(|x| walk(x, lower)).collect()),
            Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), walk(x, lower))).collect()),
            other => other.clone(),
        }
    }
    walk(value, &lower)
}

/// What an id in a reference position of a policy body points to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferenceKind {
    Group,
    /// A user: never in a directory opsledger maps (users are not mapped
    /// between tenants).
    User,
    NamedLocation,
    AssignmentFilter,
}

impl ReferenceKind {
    /// As [`DirectoryKind::as_str`] names the same objects (`user` aside).
    pub fn as_str(self) -> &'static str {
        match self {
            ReferenceKind::Group => "group",
            ReferenceKind::User => "user",
            ReferenceKind::NamedLocation => "named_location",
            ReferenceKind::AssignmentFilter => "assignment_filter",
        }
    }

    /// The directory objects of this kind; `None` for a user.
    pub fn directory_kind(self) -> Option<DirectoryKind> {
        match self {
            ReferenceKind::Group => Some(DirectoryKind::Group),
            ReferenceKind::User => None,
            ReferenceKind::NamedLocation => Some(DirectoryKind::NamedLocation),
            ReferenceKind::AssignmentFilter => Some(DirectoryKind::AssignmentFilter),
        }
    }
}

/// One id in a reference position of a policy body: where it is (a JSON
/// path, `conditions.users.includeGroups[1]`), the id as written, and what
/// it points to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferencePosition {
    pub path: String,
    pub id: String,
    pub kind: ReferenceKind,
}

/// Ids that are the same in every tenant, so never a reference to map: the
/// all-zero GUID (no filter; the legacy "MFA trusted IPs" location) and
/// Intune's virtual "all users" / "all devices" groups.
const TENANT_INDEPENDENT_IDS: [&str; 3] = [
    "00000000-0000-0000-0000-000000000000",
    "acacacac-9df4-4c7d-9d50-4ef0226f57a9",
    "adadadad-808e-44e2-905a-0b7873a8a531",
];

/// `8-4-4-4-12` hex digits.
fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The ids in the reference positions of a policy body, in body order:
/// each assignment's `target.groupId` and
/// `target.deviceAndAppManagementAssignmentFilterId` (null, empty and the
/// all-zero GUID are none), and Conditional Access
/// `conditions.users.{include,exclude}Users` (GUIDs only: `All`, `None`,
/// `GuestsOrExternalUsers` are not ids), `conditions.users.{include,exclude}Groups`
/// and `conditions.locations.{include,exclude}Locations` (GUIDs only: `All`,
/// `AllTrusted` are not ids). `conditions.devices.deviceFilter` is a rule,
/// not a reference; role ids (`includeRoles`) are the same in every tenant.
/// Pure: what a restore must be able to map.
pub fn reference_positions(body: &Value) -> Vec<ReferencePosition> {
    let mut out = Vec::new();
    let mut take = |path: String, v: Option<&Value>, kind: ReferenceKind, guid_only: bool| {
        let Some(id) = v.and_then(Value::as_str) else {
            return;
        };
        let bare = id.trim();
        if bare.is_empty()
            || TENANT_INDEPENDENT_IDS
                .iter()
                .any(|t| t.eq_ignore_ascii_case(bare))
            || (guid_only && !is_guid(bare))
        {
            return;
        }
        out.push(ReferencePosition {
            path,
            id: id.to_owned(),
            kind,
        });
    };
    if let Some(assignments) = body.get("assignments").and_then(Value::as_array) {
        for (i, a) in assignments.iter().enumerate() {
            let Some(target) = a.get("target") else {
                continue;
            };
            for (field, kind) in [
                ("groupId", ReferenceKind::Group),
                (
                    "deviceAndAppManagementAssignmentFilterId",
                    ReferenceKind::AssignmentFilter,
                ),
            ] {
                take(
                    format!("assignments[{i}].target.{field}"),
                    target.get(field),
                    kind,
                    false,
                );
            }
        }
    }
    let lists: [(&str, &str, ReferenceKind, bool); 6] = [
        ("users", "includeUsers", ReferenceKind::User, true),
        ("users", "excludeUsers", ReferenceKind::User, true),
        ("users", "includeGroups", ReferenceKind::Group, false),
        ("users", "excludeGroups", ReferenceKind::Group, false),
        (
            "locations",
            "includeLocations",
            ReferenceKind::NamedLocation,
            true,
        ),
        (
            "locations",
            "excludeLocations",
            ReferenceKind::NamedLocation,
            true,
        ),
    ];
    if let Some(conditions) = body.get("conditions") {
        for (section, field, kind, guid_only) in lists {
            let Some(ids) = conditions
                .get(section)
                .and_then(|s| s.get(field))
                .and_then(Value::as_array)
            else {
                continue;
            };
            for (i, id) in ids.iter().enumerate() {
                take(
                    format!("conditions.{section}.{field}[{i}]"),
                    Some(id),
                    kind,
                    guid_only,
                );
            }
        }
    }
    out
}

/// The reference positions of `body` (a backup item's payload) whose id
/// nothing maps into another tenant: not a reference the backup recorded
/// (`refs`, the ids its directory knew; those are mapped by name, or named
/// unmapped by [`map_references`]), nor an object of that kind the target's
/// own directory holds. Written as they are, they would point at the source
/// tenant. Pure.
pub fn stray_references(
    body: &Value,
    refs: &BTreeMap<String, String>,
    target: &Directory,
) -> Vec<ReferencePosition> {
    reference_positions(body)
        .into_iter()
        .filter(|p| {
            // Compared as written, as `remap` replaces them: an id with
            // spaces around it is not replaced, so it is not mapped either.
            let recorded = refs.keys().any(|k| k.eq_ignore_ascii_case(&p.id));
            let targets_own = p
                .kind
                .directory_kind()
                .is_some_and(|k| target.by_id(&p.id).is_some_and(|e| e.kind == k));
            !recorded && !targets_own
        })
        .collect()
}

/// What a restore says of a reference it cannot map: where, what and why.
pub fn stray_message(p: &ReferencePosition, target_tenant: &str) -> String {
    let why = match p.kind {
        ReferenceKind::User => "users are not mapped between tenants".to_owned(),
        kind => format!(
            "the source had no such {} when it was backed up (deleted, or missed by its directory read), \
             so there is no name to map it by",
            kind.as_str()
        ),
    };
    format!(
        "{}: {} {} is not in the backup's directory and cannot be mapped to tenant {target_tenant}; {why}",
        p.path,
        p.kind.as_str(),
        p.id.trim()
    )
}

/// The target's policy of `policy_type` this item is: the one an earlier
/// restore recorded, else the one with its display name. `Err` names why
/// none can be chosen (two of that name).
async fn find_existing(
    ctx: &UnitContext,
    provider: &dyn Provider,
    policy_type: &str,
    item_id: &str,
    name: &str,
) -> Result<Result<Option<(Policy, &'static str)>, ProviderError>, HandlerError> {
    if let Some(target_id) = ctx.reads.restored_target_of(item_id).await? {
        match call(ctx, || provider.get_policy(policy_type, &target_id)).await? {
            Ok(p) => return Ok(Ok(Some((p, "earlier_restore")))),
            // Deleted in the target since: look it up by name.
            Err(ProviderError::NotFound(_)) => {}
            Err(e) => return Ok(Err(e)),
        }
    }
    let wanted = match_name(name);
    let mut matches: Vec<String> = Vec::new();
    let mut page: Option<String> = None;
    let mut pages = 0u32;
    loop {
        let p = match call(ctx, || provider.list_page(policy_type, page.as_deref())).await? {
            Ok(p) => p,
            // A tenant without the type has none of it (an empty folder).
            Err(ProviderError::UnknownType(_)) => break,
            Err(e) => return Ok(Err(e)),
        };
        matches.extend(
            p.items
                .iter()
                .filter(|i| match_name(&i.display_name) == wanted)
                .map(|i| i.id.clone()),
        );
        pages += 1;
        match p.next {
            Some(next) if pages < 100_000 => page = Some(next),
            _ => break,
        }
    }
    match matches.as_slice() {
        [] => Ok(Ok(None)),
        [id] => match call(ctx, || provider.get_policy(policy_type, id)).await? {
            Ok(p) => Ok(Ok(Some((p, "name")))),
            Err(e) => Ok(Err(e)),
        },
        many => Ok(Err(ProviderError::Malformed(format!(
            "the target has {} {policy_type} policies named `{}`; none is chosen",
            many.len(),
            name.trim()
        )))),
    }
}

/// The body a restore writes: the item as backed up, references mapped,
/// without what the source service kept about its own copy — its
/// annotations (`@odata.type` aside: it says what the object is) and the
/// operations it advertised (`#microsoft.graph.restore`, whose URL names the
/// source's id) — nor its assignments (written after the policy exists).
pub fn writable_body(desired: &Value) -> Value {
    fn strip(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(k, _)| {
                        !opsledger_core::normalize::is_operation_advertisement(k)
                            && (k.as_str() == "@odata.type"
                                || !k.contains("@odata.")
                                || k.ends_with("@odata.bind"))
                    })
                    .map(|(k, x)| (k.clone(), strip(x)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(strip).collect()),
            other => other.clone(),
        }
    }
    let mut body = strip(desired);
    if let Value::Object(m) = &mut body {
        m.remove("assignments");
    }
    body
}

fn assignments_of(v: &Value) -> Option<&Vec<Value>> {
    v.get("assignments").and_then(Value::as_array)
}

async fn restore_item(
    ctx: &UnitContext,
    plan: &Plan,
    provider: &dyn Provider,
    item_id: &str,
) -> Result<Done, HandlerError> {
    let Some(item) = ctx.reads.backup_item(&plan.backup_set_id, item_id).await? else {
        return Ok(Done::failed(
            "backup_item_not_found",
            format!(
                "backup item {item_id} is no longer in backup set {}",
                plan.backup_set_id
            ),
            None,
            json!({}),
        ));
    };
    let head = &item.head;
    let mut detail = Map::new();
    detail.insert("policy_type".into(), json!(head.policy_type));
    detail.insert("display_name".into(), json!(head.display_name));
    if plan.ambiguous.contains(item_id) {
        return Ok(Done::failed(
            "ambiguous_source_name",
            format!(
                "another item of this restore is also a {} named `{}`: which target object each is cannot be told",
                head.policy_type, head.display_name
            ),
            None,
            Value::Object(detail),
        ));
    }
    let directory = if FIRST_WAVE_TYPES.contains(&head.policy_type.as_str()) {
        call(ctx, || provider.directory()).await?.map(Arc::new)
    } else {
        second_wave_directory(ctx, provider).await?
    };
    let directory = match directory {
        Ok(d) => d,
        Err(e) => return Ok(Done::failed(e.code(), e.to_string(), None, Value::Object(detail))),
    };
    // A named location or filter is in the directory itself: its own id is
    // not a reference (the target gives it an id of its own).
    let mut refs = head.refs.clone();
    refs.retain(|id, _| !id.eq_ignore_ascii_case(&head.external_id));
    let mapping = map_references(&refs, &directory, &plan.groups, plan.dry_run);
    // Ids in the body's reference positions that the backup's directory did
    // not know are not in `refs`, so nothing would remap them: into another
    // tenant they would be written still naming the source's objects. Into
    // the set's own tenant they are still valid, as they are.
    let cross_tenant = ctx.run.tenant_id.as_deref() != Some(plan.source_tenant_id.as_str());
    let strays = if cross_tenant {
        stray_references(&item.payload, &refs, &directory)
    } else {
        Vec::new()
    };
    let mapped = match mapping {
        Ok(m) if strays.is_empty() => m,
        mapping => {
            let mut unmapped = mapping.err().unwrap_or_default();
            if !strays.is_empty() {
                let target = match ctx.reads.tenant().await? {
                    Some(t) => format!("`{}`", t.name),
                    None => ctx.run.tenant_id.clone().unwrap_or_default(),
                };
                unmapped.extend(strays.iter().map(|p| stray_message(p, &target)));
                detail.insert("unmapped_positions".into(), json!(strays));
            }
            detail.insert("unmapped".into(), json!(unmapped));
            return Ok(Done::failed(
                "reference_unmapped",
                format!(
                    "{} cannot be restored: {}",
                    head.display_name,
                    unmapped.join("; ")
                ),
                None,
                Value::Object(detail),
            ));
        }
    };
    detail.insert("mapped".into(), json!(mapped));
    let decided = decisions_used(&plan.name_decisions, &refs, &mapped);
    if !decided.is_empty() {
        detail.insert("name_decisions".into(), Value::Array(decided));
    }
    let desired = remap(&item.payload, &mapped);
    let names: Names = directory.names();
    let existing = match find_existing(ctx, provider, &head.policy_type, item_id, &head.display_name).await? {
        Ok(e) => e,
        Err(e) => {
            let code = if matches!(e, ProviderError::Malformed(_)) {
                "ambiguous_target"
            } else {
                e.code()
            };
            return Ok(Done::failed(code, e.to_string(), None, Value::Object(detail)));
        }
    };
    let assignments = assignments_of(&desired).cloned();
    let body = writable_body(&desired);
    let Some((existing, matched_by)) = existing else {
        detail.insert("matched_by".into(), json!("none"));
        if plan.dry_run {
            return Ok(Done::ok(RestoreOutcome::Created, None, Value::Object(detail)));
        }
        let created = match call_once(ctx, || provider.create_policy(&head.policy_type, &body)).await? {
            Ok(p) => p,
            Err(e) => return Ok(Done::failed(e.code(), e.to_string(), None, Value::Object(detail))),
        };
        if let Some(a) = assignments.filter(|a| !a.is_empty())
            && let Err(e) = call(ctx, || provider.assign(&head.policy_type, &created.id, &a)).await?
        {
            // The policy exists (its id is recorded, so the next restore
            // finds it, and `created` counts it); its assignments did not land.
            detail.insert("written".into(), json!("created"));
            return Ok(Done::failed(
                e.code(),
                format!("created, but its assignments were not written: {e}"),
                Some(created.id),
                Value::Object(detail),
            ));
        }
        return Ok(Done::ok(
            RestoreOutcome::Created,
            Some(created.id),
            Value::Object(detail),
        ));
    };
    detail.insert("matched_by".into(), json!(matched_by));
    let target_id = Some(existing.id.clone());
    if content_hash(&existing.payload, &names) == content_hash(&desired, &names) {
        return Ok(Done::ok(
            RestoreOutcome::Unchanged,
            target_id,
            Value::Object(detail),
        ));
    }
    if plan.dry_run {
        return Ok(Done::ok(
            RestoreOutcome::Updated,
            target_id,
            Value::Object(detail),
        ));
    }
    // Written only where it differs: the body, then the assignments.
    let without = |v: &Value| {
        let mut v = v.clone();
        if let Value::Object(m) = &mut v {
            m.remove("assignments");
        }
        content_hash(&v, &names)
    };
    let body_differs = without(&existing.payload) != without(&desired);
    if body_differs
        && let Err(e) = call(ctx, || {
            provider.update_policy(&head.policy_type, &existing.id, &body)
        })
        .await?
    {
        return Ok(Done::failed(
            e.code(),
            e.to_string(),
            target_id,
            Value::Object(detail),
        ));
    }
    let current = assignments_of(&existing.payload).cloned().unwrap_or_default();
    if let Some(a) = assignments
        && content_hash(&Value::Array(a.clone()), &names) != content_hash(&Value::Array(current), &names)
        && let Err(e) = call(ctx, || provider.assign(&head.policy_type, &existing.id, &a)).await?
    {
        if body_differs {
            // The body was written (`updated` counts it); its assignments not.
            detail.insert("written".into(), json!("updated"));
        }
        return Ok(Done::failed(
            e.code(),
            format!("updated, but its assignments were not written: {e}"),
            target_id,
            Value::Object(detail),
        ));
    }
    Ok(Done::ok(
        RestoreOutcome::Updated,
        target_id,
        Value::Object(detail),
    ))
}

/// Reconciles a stale restore from its own per-item results on its target.
pub struct RestoreAdapter;

#[async_trait]
impl opsledger_engine::ReconciliationAdapter for RestoreAdapter {
    fn name(&self) -> &'static str {
        "backup_set_restore"
    }

    async fn reconcile(&self, run: &Run, proof: &ProofReader) -> Result<AdapterResult, StoreError> {
        let results = proof.restore_results_of(&run.id).await?;
        Ok(reconcile_from_results(run, &results))
    }

    async fn reconcile_page(
        &self,
        runs: &[&Run],
        proof: &ProofReader,
    ) -> Result<Vec<AdapterResult>, StoreError> {
        let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
        let results = proof.restore_results_of_runs(&ids).await?;
        Ok(runs
            .iter()
            .map(|run| reconcile_from_results(run, results.get(&run.id).map_or(&[][..], Vec::as_slice)))
            .collect())
    }
}

/// The restore rule on one run's proof: its per-unit results. Every planned
/// unit with a result and none failed → succeeded; some restored → partially
/// succeeded; none restored → failed; a result of another scope → failed.
/// Pure: the adapter reads, this decides.
pub fn reconcile_from_results(run: &Run, results: &[StoredRestoreResult]) -> AdapterResult {
    if let Some(r) = results.iter().find(|r| {
        r.workspace_id != run.workspace_id
            || Some(&r.target_tenant_id) != run.tenant_id.as_ref()
            || r.run_id != run.id
    }) {
        return AdapterResult::new(
            Verdict::Failed,
            "proof_wrong_scope",
            format!("restore result {} names another target", r.unit_key),
        );
    }
    if results.is_empty() {
        return AdapterResult::stale_no_proof("This restore");
    }
    let restored = results
        .iter()
        .filter(|r| r.outcome != RestoreOutcome::Failed)
        .count() as u64;
    let failed = results.len() as u64 - restored;
    let sets: BTreeSet<&str> = results.iter().map(|r| r.backup_set_id.as_str()).collect();
    let artifact =
        json!({"kind": "backup_set", "id": sets.iter().next(), "restored": restored, "failed": failed});
    let planned = run.summary_counts.total;
    let (verdict, code, line) = match planned {
        Some(p) if restored == p && failed == 0 => (
            Verdict::Succeeded,
            "restore_complete",
            format!("all {p} planned items have their restore result"),
        ),
        _ if restored > 0 => (
            Verdict::PartiallySucceeded,
            "restore_incomplete",
            match planned {
                Some(p) => format!("{restored} of {p} planned items were restored ({failed} failed)"),
                None => format!("{restored} items were restored but the plan was never recorded"),
            },
        ),
        _ => (
            Verdict::Failed,
            "restore_nothing_restored",
            format!("none of the items was restored ({failed} failed)"),
        ),
    };
    AdapterResult::new(verdict, code, line)
        .with_artifact(artifact)
        .with_units_succeeded(restored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opsledger_providers::DirectoryEntry;

    fn head(id: &str, t: &str, name: &str, refs: &[(&str, &str)]) -> ItemHead {
        ItemHead {
            id: id.into(),
            policy_type: t.into(),
            external_id: id.into(),
            display_name: name.into(),
            refs: refs.iter().map(|(a, b)| ((*a).into(), (*b).into())).collect(),
        }
    }

    fn dir(entries: &[(DirectoryKind, &str, &str)]) -> Directory {
        Directory {
            entries: entries
                .iter()
                .map(|(kind, id, name)| DirectoryEntry {
                    kind: *kind,
                    id: (*id).into(),
                    display_name: (*name).into(),
                })
                .collect(),
            name_decisions: Vec::new(),
        }
    }

    #[test]
    fn a_reference_to_an_id_the_source_named_twice_says_which_name_mapped_it() {
        let decisions = [NameDecision {
            kind: DirectoryKind::Group,
            id: "G1".into(),
            chosen: "Pilot".into(),
            passed_over: vec!["Pilot old".into()],
            decided_by: "MigrationTable.json".into(),
        }];
        let refs: BTreeMap<String, String> = [
            ("g1".to_owned(), "group:Pilot".to_owned()),
            ("g2".to_owned(), "group:Other".to_owned()),
        ]
        .into();
        let mapped: BTreeMap<String, String> = [
            ("g1".to_owned(), "T1".to_owned()),
            ("g2".to_owned(), "T2".to_owned()),
        ]
        .into();
        let said = decisions_used(&decisions, &refs, &mapped);
        assert_eq!(said.len(), 1, "only the id named twice is reported");
        assert_eq!(said[0]["source_id"], "g1");
        assert_eq!(said[0]["mapped_by_name"], "Pilot");
        assert_eq!(said[0]["target_id"], "T1");
        assert_eq!(said[0]["decided_by"], "MigrationTable.json");
        let message = said[0]["message"].as_str().unwrap();
        assert!(
            message.contains("`Pilot old`") && message.contains("MigrationTable.json"),
            "{message}"
        );
        assert!(decisions_used(&[], &refs, &mapped).is_empty());
    }

    #[test]
    fn what_others_refer_to_comes_first() {
        let items = [
            head("1", "deviceConfigurations", "A", &[]),
            head("2", "namedLocations", "Office", &[]),
            head("3", "conditionalAccessPolicies", "CA", &[]),
            head("4", "assignmentFilters", "Win", &[]),
        ];
        let groups = BTreeMap::from([(group_key("Pilot"), "Pilot".to_owned())]);
        let w = waves(&items, &groups);
        assert_eq!(w.len(), 2);
        assert_eq!(w[0], vec![group_key("Pilot"), "item/2".into(), "item/4".into()]);
        assert_eq!(w[1], vec!["item/1".to_owned(), "item/3".into()]);
        // No first-wave unit: one wave.
        assert_eq!(waves(&items[..1], &BTreeMap::new()).len(), 1);
        assert!(waves(&[], &BTreeMap::new()).is_empty());
    }

    #[test]
    fn references_map_by_name_or_are_named_unmapped() {
        let target = dir(&[
            (DirectoryKind::Group, "T-1", "All Staff"),
            (DirectoryKind::NamedLocation, "T-2", "Office"),
            (DirectoryKind::Group, "T-3", "Twice"),
            (DirectoryKind::Group, "T-4", "twice "),
        ]);
        let refs = BTreeMap::from([
            ("S-1".to_owned(), "group: all staff".to_owned()),
            ("S-2".to_owned(), "named_location:Office".to_owned()),
        ]);
        let m = map_references(&refs, &target, &BTreeMap::new(), false).unwrap();
        assert_eq!(m["S-1"], "T-1");
        assert_eq!(m["S-2"], "T-2");
        let refs = BTreeMap::from([
            ("S-9".to_owned(), "group:Finance".to_owned()),
            ("S-8".to_owned(), "group:Twice".to_owned()),
        ]);
        let e = map_references(&refs, &target, &BTreeMap::new(), false).unwrap_err();
        assert_eq!(e.len(), 2);
        assert!(
            e.iter().any(|m| m.contains("`Finance`") && m.contains("S-9")),
            "{e:?}"
        );
        assert!(e.iter().any(|m| m.contains("2 objects")), "{e:?}");
        // A group this run creates maps.
        let creating = BTreeMap::from([(group_key("Finance"), "Finance".to_owned())]);
        let refs = BTreeMap::from([("S-9".to_owned(), "group:Finance".to_owned())]);
        assert!(map_references(&refs, &target, &creating, true).is_ok());
        // A real run maps only what the target has: never a placeholder.
        assert!(map_references(&refs, &target, &creating, false).is_err());
    }

    #[test]
    fn remap_replaces_every_mapped_id_and_nothing_else() {
        let body = json!({"displayName": "S-1", "id": "keep", "conditions": {"users": {"includeGroups": ["s-1", "x"]}},
                          "assignments": [{"target": {"groupId": "S-1", "deviceAndAppManagementAssignmentFilterId": "S-2"}}]});
        let mapped = BTreeMap::from([
            ("S-1".to_owned(), "T-1".to_owned()),
            ("S-2".to_owned(), "T-2".to_owned()),
        ]);
        let out = remap(&body, &mapped);
        let text = out.to_string();
        assert!(
            !text.contains("S-1") && !text.contains("s-1") && !text.contains("S-2"),
            "{text}"
        );
        assert_eq!(out["conditions"]["users"]["includeGroups"], json!(["T-1", "x"]));
        assert_eq!(out["id"], "keep");
    }

    const G1: &str = "abcd1111-1111-4111-8111-11111111abcd";
    const G2: &str = "22222222-2222-4222-8222-222222222222";
    const U1: &str = "33333333-3333-4333-8333-333333333333";
    const U2: &str = "44444444-4444-4444-8444-444444444444";
    const L1: &str = "55555555-5555-4555-8555-555555555555";
    const F1: &str = "66666666-6666-4666-8666-666666666666";
    const ZERO: &str = "00000000-0000-0000-0000-000000000000";

    fn position(path: &str, id: &str, kind: ReferenceKind) -> ReferencePosition {
        ReferencePosition {
            path: path.into(),
            id: id.into(),
            kind,
        }
    }

    #[test]
    fn reference_positions_are_the_ids_a_body_points_at() {
        let body = json!({
            "id": "99999999-9999-4999-8999-999999999999",
            "displayName": G1,
            "assignments": [
                {"target": {"@odata.type": "#microsoft.graph.groupAssignmentTarget", "groupId": G1,
                            "deviceAndAppManagementAssignmentFilterId": F1,
                            "deviceAndAppManagementAssignmentFilterType": "include"}},
                {"target": {"@odata.type": "#microsoft.graph.exclusionGroupAssignmentTarget", "groupId": G2,
                            "deviceAndAppManagementAssignmentFilterId": null}},
                {"target": {"@odata.type": "#microsoft.graph.allDevicesAssignmentTarget",
                            "deviceAndAppManagementAssignmentFilterId": ZERO}},
                {"target": {"@odata.type": "#microsoft.graph.allLicensedUsersAssignmentTarget",
                            "groupId": "", "deviceAndAppManagementAssignmentFilterId": ""}},
                {"target": {"groupId": "acacacac-9df4-4c7d-9d50-4ef0226f57a9"}}
            ],
            "conditions": {
                "users": {
                    "includeUsers": ["All", U1],
                    "excludeUsers": ["GuestsOrExternalUsers", "None", U2],
                    "includeGroups": [G1, G2],
                    "excludeGroups": [G2],
                    "includeRoles": ["62e90394-69f5-4237-9190-012177145e10"]
                },
                "locations": {
                    "includeLocations": ["All", L1],
                    "excludeLocations": ["AllTrusted", ZERO]
                },
                "devices": {"deviceFilter": {"mode": "include", "rule": format!("device.deviceId -eq \"{G1}\"")}}
            }
        });
        use ReferenceKind::*;
        assert_eq!(
            reference_positions(&body),
            vec![
                position("assignments[0].target.groupId", G1, Group),
                position(
                    "assignments[0].target.deviceAndAppManagementAssignmentFilterId",
                    F1,
                    AssignmentFilter
                ),
                position("assignments[1].target.groupId", G2, Group),
                position("conditions.users.includeUsers[1]", U1, User),
                position("conditions.users.excludeUsers[2]", U2, User),
                position("conditions.users.includeGroups[0]", G1, Group),
                position("conditions.users.includeGroups[1]", G2, Group),
                position("conditions.users.excludeGroups[0]", G2, Group),
                position("conditions.locations.includeLocations[1]", L1, NamedLocation),
            ]
        );
        // No reference position: nothing, whatever strings the body holds.
        assert!(reference_positions(&json!({"displayName": G1, "settings": [{"value": U1}]})).is_empty());
        assert!(reference_positions(&json!({"assignments": [], "conditions": {"users": null}})).is_empty());
        assert!(reference_positions(&Value::Null).is_empty());
    }

    #[test]
    fn an_id_the_backup_never_named_is_stray_unless_the_target_holds_it() {
        let body = json!({
            "assignments": [{"target": {"groupId": G1.to_uppercase(), "deviceAndAppManagementAssignmentFilterId": F1}}],
            "conditions": {"users": {"includeUsers": [U1], "excludeGroups": [G2]},
                           "locations": {"includeLocations": [L1]}}
        });
        // The backup recorded G1 (any case) and the filter; the target holds
        // L1 as a named location, and U1 as a group: a user is never mapped.
        let refs = BTreeMap::from([
            (G1.to_owned(), "group:Pilot".to_owned()),
            (F1.to_owned(), "assignment_filter:Win".to_owned()),
        ]);
        let target = dir(&[
            (DirectoryKind::NamedLocation, L1, "Office"),
            (DirectoryKind::Group, U1, "Not a user"),
        ]);
        let strays = stray_references(&body, &refs, &target);
        assert_eq!(
            strays,
            vec![
                position("conditions.users.includeUsers[0]", U1, ReferenceKind::User),
                position("conditions.users.excludeGroups[0]", G2, ReferenceKind::Group),
            ]
        );
        // The target holding G2 as a named location does not make it a group.
        let target = dir(&[
            (DirectoryKind::NamedLocation, L1, "Office"),
            (DirectoryKind::NamedLocation, G2, "Elsewhere"),
        ]);
        assert_eq!(stray_references(&body, &refs, &target).len(), 2);
        let user = stray_message(&strays[0], "`fabrikam`");
        assert_eq!(
            user,
            format!(
                "conditions.users.includeUsers[0]: user {U1} is not in the backup's directory and cannot be \
                 mapped to tenant `fabrikam`; users are not mapped between tenants"
            )
        );
        let group = stray_message(&strays[1], "`fabrikam`");
        assert!(
            group.starts_with(&format!(
                "conditions.users.excludeGroups[0]: group {G2} is not in the backup's directory and cannot be \
                 mapped to tenant `fabrikam`; the source had no such group"
            )),
            "{group}"
        );
    }

    #[test]
    fn missing_groups_and_ambiguous_names() {
        let target = dir(&[(DirectoryKind::Group, "T-1", "All Staff")]);
        let items = [
            head(
                "1",
                "deviceConfigurations",
                "A",
                &[("S-1", "group:All Staff"), ("S-2", "group:Pilot")],
            ),
            head(
                "2",
                "deviceConfigurations",
                " a ",
                &[("S-3", "group:pilot"), ("S-4", "named_location:X")],
            ),
            head("3", "deviceCompliancePolicies", "A", &[]),
        ];
        let missing = missing_groups(&items, &target);
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert_eq!(missing.values().next().unwrap(), "Pilot");
        assert_eq!(
            ambiguous_items(&items),
            BTreeSet::from(["1".to_owned(), "2".to_owned()])
        );
    }

    fn run(total: Option<u64>) -> Run {
        Run {
            id: "r".into(),
            workspace_id: "w".into(),
            tenant_id: Some("t".into()),
            parent_id: None,
            run_type: opsledger_core::RunType::BackupSetRestore,
            status: opsledger_core::RunStatus::Running,
            outcome: Outcome::Pending,
            summary_counts: opsledger_core::SummaryCounts {
                total,
                ..Default::default()
            },
            phases: None,
            context: json!({}),
            failures: Vec::new(),
            initiator: "test".into(),
            created_at: 0,
            started_at: None,
            heartbeat_at: None,
            completed_at: None,
        }
    }

    fn result(key: &str, outcome: RestoreOutcome, tenant: &str) -> StoredRestoreResult {
        StoredRestoreResult {
            run_id: "r".into(),
            unit_key: key.into(),
            workspace_id: "w".into(),
            target_tenant_id: tenant.into(),
            backup_set_id: "s".into(),
            backup_item_id: Some(key.into()),
            outcome,
            dry_run: false,
            target_id: None,
            detail: Value::Null,
        }
    }

    #[test]
    fn reconciliation_needs_this_runs_results_on_this_target() {
        use RestoreOutcome::*;
        let all = [result("a", Created, "t"), result("b", Unchanged, "t")];
        let v = |r: AdapterResult| r.verdict;
        assert_eq!(v(reconcile_from_results(&run(Some(2)), &all)), Verdict::Succeeded);
        let some = [result("a", Created, "t"), result("b", Failed, "t")];
        assert_eq!(
            v(reconcile_from_results(&run(Some(2)), &some)),
            Verdict::PartiallySucceeded
        );
        assert_eq!(
            v(reconcile_from_results(&run(Some(3)), &all)),
            Verdict::PartiallySucceeded
        );
        let none = [result("a", Failed, "t")];
        assert_eq!(v(reconcile_from_results(&run(Some(2)), &none)), Verdict::Failed);
        assert_eq!(v(reconcile_from_results(&run(Some(2)), &[])), Verdict::Failed);
        let elsewhere = [result("a", Created, "t"), result("b", Created, "other")];
        let r = reconcile_from_results(&run(Some(2)), &elsewhere);
        assert_eq!(
            (r.verdict, r.reason_code.as_str()),
            (Verdict::Failed, "proof_wrong_scope")
        );
    }
}

//! Child runs of a composite (OPERATIONS.md §5): started or adopted by the
//! parent's run job in one fenced transaction, each holding its own dedup
//! key; the parent's outcome derived from its children's in the last
//! child's closing transaction ([`close_parents_in`], called by the closing
//! write); a cancelled parent cancels the children it started.

use crate::db::{Tx, sql, sql_owned};
use crate::jobs::{Fence, check_fence};
use crate::row::{RUN_COLUMNS, run_from_row};
use crate::runs::{
    CloseGuard, ClosingStep, Completion, ContextPatch, NewRun, close_one_in, context_text, insert_queued_in,
    params_of,
};
use crate::{Store, StoreError};
use opsledger_core::outcome::derive_composite_outcome;
use opsledger_core::{Outcome, ProgressKind, RunType};
use serde_json::Value;

/// Most children one composite may have.
pub const MAX_CHILDREN: usize = 10_000;

/// A child run to start (or adopt) under a composite.
#[derive(Debug, Clone, PartialEq)]
pub struct NewChild {
    pub run_type: RunType,
    pub tenant_id: Option<String>,
    /// Validated start parameters (`context.params` of the child).
    pub params: Value,
}

/// What became of one requested child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildStart {
    /// A new run, started by the parent (cancelled with it).
    Started(String),
    /// A run already doing this work (same dedup key, same parameters): the
    /// parent waits for it, and does not cancel it.
    Adopted(String),
    /// A run holding the child's dedup key for other work (other parameters):
    /// not a child — it will not do the work asked. The family decides.
    HeldByOtherWork(String),
}

impl ChildStart {
    pub fn run_id(&self) -> &str {
        match self {
            ChildStart::Started(id) | ChildStart::Adopted(id) | ChildStart::HeldByOtherWork(id) => id,
        }
    }
}

const LINKS: &str = "SELECT child_id, origin FROM run_children WHERE parent_id = $1 ORDER BY child_id";

/// Link rows as child starts (a retried parent gets its first plan back).
fn as_starts(rows: Vec<(String, String)>) -> Vec<ChildStart> {
    rows.into_iter()
        .map(|(id, origin)| match origin.as_str() {
            "adopted" => ChildStart::Adopted(id),
            _ => ChildStart::Started(id),
        })
        .collect()
}

async fn link_in(tx: &mut Tx, parent_id: &str, child_id: &str, origin: &str) -> Result<(), StoreError> {
    tx.execute(
        sql(
            "INSERT INTO run_children (parent_id, child_id, origin) VALUES ($1, $2, $3) \
             ON CONFLICT (parent_id, child_id) DO NOTHING",
        )
        .bind(parent_id)
        .bind(child_id)
        .bind(origin),
    )
    .await?;
    Ok(())
}

/// Starts or adopts `children` of composite `parent_id`, inside `tx`.
async fn enqueue_in(
    tx: &mut Tx,
    parent_id: &str,
    children: &[NewChild],
) -> Result<Vec<ChildStart>, StoreError> {
    let dialect = tx.dialect();
    let parent: Option<(String, String, String, String)> = tx
        .fetch_optional(
            sql_owned(format!(
                "SELECT status, type, workspace_id, context FROM operation_runs WHERE id = $1{}",
                dialect.for_update()
            ))
            .bind(parent_id),
        )
        .await?;
    let Some((status, run_type, workspace_id, context)) = parent else {
        return Err(StoreError::RunNotFound(parent_id.to_owned()));
    };
    let run_type: RunType = run_type
        .parse()
        .map_err(|e| StoreError::Corrupt(format!("{e}")))?;
    if run_type.progress_kind() != ProgressKind::Composite {
        return Err(StoreError::NotComposite { run_type });
    }
    if status != "running" {
        return Err(StoreError::RunNotRunning {
            id: parent_id.to_owned(),
            status: status.parse().map_err(|e| StoreError::Corrupt(format!("{e}")))?,
        });
    }
    if children.len() > MAX_CHILDREN {
        return Err(StoreError::TooManyChildren {
            got: children.len(),
            limit: MAX_CHILDREN,
        });
    }
    // Planned once: a retried parent keeps the children it has.
    let context: Value = serde_json::from_str(&context)
        .map_err(|e| StoreError::Corrupt(format!("run {parent_id} context: {e}")))?;
    if context.pointer("/composite/children_planned") == Some(&Value::Bool(true)) {
        let rows: Vec<(String, String)> = tx.fetch_all(sql(LINKS).bind(parent_id)).await?;
        return Ok(as_starts(rows));
    }
    let mut out = Vec::with_capacity(children.len());
    for child in children {
        // The checks of a start: the catalog's scope, a tenant of the parent's workspace.
        match (child.run_type.scope(), child.tenant_id.as_deref()) {
            (opsledger_core::Scope::Tenant, Some(tenant)) => {
                let home: Option<(String,)> = tx
                    .fetch_optional(sql("SELECT workspace_id FROM tenants WHERE id = $1").bind(tenant))
                    .await?;
                if home.as_ref().map(|(w,)| w.as_str()) != Some(workspace_id.as_str()) {
                    return Err(StoreError::TenantOutsideWorkspace {
                        tenant_id: tenant.chars().take(80).collect(),
                        workspace_id: workspace_id.clone(),
                    });
                }
            }
            (opsledger_core::Scope::Workspace, None) => {}
            (scope, _) => {
                return Err(StoreError::ScopeMismatch {
                    run_type: child.run_type,
                    expected: match scope {
                        opsledger_core::Scope::Tenant => "tenant",
                        opsledger_core::Scope::Workspace => "workspace",
                    },
                });
            }
        }
        let new = NewRun {
            workspace_id: workspace_id.clone(),
            tenant_id: child.tenant_id.clone(),
            parent_id: Some(parent_id.to_owned()),
            run_type: child.run_type,
            initiator: format!("run:{parent_id}"),
            context: serde_json::json!({ "params": child.params }),
        };
        let params = params_of(&new.context);
        let key = new
            .run_type
            .dedup_key(&new.workspace_id, new.tenant_id.as_deref(), &params);
        let context = context_text(&new.context)?;
        let mut started = None;
        for _ in 0..5 {
            if let Some(id) = insert_queued_in(tx, &new, &key, &context).await? {
                link_in(tx, parent_id, &id, "started").await?;
                started = Some(ChildStart::Started(id));
                break;
            }
            // Locked, so it cannot close unseen between this read and the
            // link: its closing write will find the parent.
            let holder = tx
                .row(
                    sql_owned(format!(
                        "SELECT {RUN_COLUMNS} FROM operation_runs WHERE active_key = $1{}",
                        dialect.for_update()
                    ))
                    .bind(&key),
                )
                .await?
                .map(|r| run_from_row(&r))
                .transpose()?;
            match holder {
                Some(run) if !run.is_completed() => {
                    if params_of(&run.context) == params {
                        link_in(tx, parent_id, &run.id, "adopted").await?;
                        started = Some(ChildStart::Adopted(run.id));
                    } else {
                        started = Some(ChildStart::HeldByOtherWork(run.id));
                    }
                    break;
                }
                // It closed meanwhile: the key is free, try again.
                _ => continue,
            }
        }
        out.push(started.ok_or_else(|| {
            StoreError::Database(sqlx::Error::Protocol(
                "a child start kept conflicting with a vanishing active run".into(),
            ))
        })?);
    }
    // A child slot held by a run doing other work was not done by this
    // parent: it counts as a blocked child in the parent's outcome.
    let held: Vec<&str> = out
        .iter()
        .filter_map(|c| match c {
            ChildStart::HeldByOtherWork(id) => Some(id.as_str()),
            _ => None,
        })
        .collect();
    crate::runs::patch_context_in(
        tx,
        parent_id,
        &[
            ContextPatch::new(["composite", "children_planned"], Value::Bool(true)),
            ContextPatch::new(["composite", "held_by_other_work"], serde_json::json!(held)),
        ],
    )
    .await?;
    // No child to wait for: the parent closes now.
    if out.len() == held.len() {
        let outcome = derive_composite_outcome(&vec![Outcome::Blocked; held.len()]).expect("all terminal");
        close_one_in(tx, parent_id, CloseGuard::None, |_| {
            Some(Completion::new(outcome))
        })
        .await?;
    }
    Ok(out)
}

/// After run `child_id` closed, inside its closing transaction: closes each
/// composite parent that now has no open child, with the outcome its
/// children's outcomes derive, then that parent's parents in turn.
pub(crate) async fn close_parents_in(tx: &mut Tx, child_id: &str) -> Result<(), StoreError> {
    let mut closed = vec![child_id.to_owned()];
    while let Some(id) = closed.pop() {
        let parents: Vec<(String,)> = tx
            .fetch_all(
                sql("SELECT parent_id FROM run_children WHERE child_id = $1 ORDER BY parent_id").bind(&id),
            )
            .await?;
        for (parent,) in parents {
            // Lock the parent before reading its children: two children
            // closing at once on PostgreSQL (READ COMMITTED) would each read
            // the other as still open and neither would close the parent.
            // The second waits here and its next read sees the first's commit.
            // Parents are locked in id order so two children sharing them
            // cannot deadlock.
            let _: Vec<(String,)> = tx
                .fetch_all(
                    sql_owned(format!(
                        "SELECT id FROM operation_runs WHERE id = $1{}",
                        tx.dialect().for_update()
                    ))
                    .bind(&parent),
                )
                .await?;
            let outcomes: Vec<(String,)> = tx
                .fetch_all(
                    sql(
                        "SELECT r.outcome FROM run_children c JOIN operation_runs r ON r.id = c.child_id \
                         WHERE c.parent_id = $1",
                    )
                    .bind(&parent),
                )
                .await?;
            let mut outcomes: Vec<Outcome> = outcomes
                .iter()
                .map(|(o,)| o.parse().map_err(|e| StoreError::Corrupt(format!("{e}"))))
                .collect::<Result<_, _>>()?;
            let (context,): (String,) = tx
                .fetch_one(sql("SELECT context FROM operation_runs WHERE id = $1").bind(&parent))
                .await?;
            let context: Value = serde_json::from_str(&context).unwrap_or(Value::Null);
            let held = context
                .pointer("/composite/held_by_other_work")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            outcomes.extend(std::iter::repeat_n(Outcome::Blocked, held));
            let Some(outcome) = derive_composite_outcome(&outcomes) else {
                continue;
            };
            let step = close_one_in(tx, &parent, CloseGuard::None, |run| {
                // Only a running composite is closed by its children.
                (run.run_type.progress_kind() == ProgressKind::Composite).then(|| Completion::new(outcome))
            })
            .await?;
            if matches!(step, ClosingStep::Completed) {
                closed.push(parent);
            }
        }
    }
    Ok(())
}

/// Locks the open children `parent_id` started, in id order, before the
/// parent is closed: a child's own close locks child then parent, so
/// cancelling takes the same order and the two cannot deadlock.
pub(crate) async fn lock_started_children_in(tx: &mut Tx, parent_id: &str) -> Result<(), StoreError> {
    let dialect = tx.dialect();
    let _: Vec<(String,)> = tx
        .fetch_all(
            sql_owned(format!(
                "SELECT id FROM operation_runs WHERE status <> 'completed' AND id IN \
                 (SELECT child_id FROM run_children WHERE parent_id = $1 AND origin = 'started') \
                 ORDER BY id{}",
                dialect.for_update()
            ))
            .bind(parent_id),
        )
        .await?;
    Ok(())
}

/// After composite `parent_id` was cancelled, inside that transaction: the
/// children it started and that are still open are cancelled too (adopted
/// ones are left to run).
pub(crate) async fn cancel_started_children_in(
    tx: &mut Tx,
    parent_id: &str,
    patch: &ContextPatch,
) -> Result<(), StoreError> {
    let open: Vec<(String,)> = tx
        .fetch_all(
            sql(
                "SELECT c.child_id FROM run_children c JOIN operation_runs r ON r.id = c.child_id \
                 WHERE c.parent_id = $1 AND c.origin = 'started' AND r.status <> 'completed' \
                 ORDER BY c.child_id",
            )
            .bind(parent_id),
        )
        .await?;
    for (child,) in open {
        let completion = Completion::new(Outcome::Cancelled).with_patch(patch.clone());
        close_one_in(tx, &child, CloseGuard::None, |_| Some(completion)).await?;
    }
    Ok(())
}

impl Store {
    pub(crate) async fn enqueue_children_fenced(
        &self,
        fence: &Fence,
        parent_id: &str,
        children: &[NewChild],
    ) -> Result<Vec<ChildStart>, StoreError> {
        let mut tx = self.begin_write().await?;
        check_fence(&mut tx, fence, parent_id).await?;
        let out = enqueue_in(&mut tx, parent_id, children).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// The children of composite `parent_id` and how each was linked.
    pub async fn child_links(&self, parent_id: &str) -> Result<Vec<ChildStart>, StoreError> {
        let rows: Vec<(String, String)> = self.pool.fetch_all(sql(LINKS).bind(parent_id)).await?;
        Ok(as_starts(rows))
    }
}

//! Schedules and the scheduler's write: each due slot started **exactly once
//! across nodes**. A node's tick reads the due schedules, and per schedule,
//! in one transaction: moves `next_due_at` forward with a compare-and-set
//! (a node that lost the race changes nothing), records the slot per tenant
//! under its unique key `(schedule, slot, tenant)`, and creates the slot's
//! runs with their jobs — or, when the schedule's previous run of that
//! tenant is still active (its dedup key is held), records the slot as
//! skipped. A crash before the commit leaves the slot due; after it, the
//! slot is decided. The slot decision itself (which slot, how many missed)
//! is `opsledger_core::schedule::due`, pure.

use crate::db::{Tx, sql};
use crate::runs::{NewRun, insert_queued_in};
use crate::{Store, StoreError, new_id};
use opsledger_core::RunType;
use opsledger_core::schedule::{Due, Slots, due};
use serde_json::{Value, json};

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub run_type: RunType,
    /// `None`: every tenant of the workspace, one run each per slot.
    pub tenant_id: Option<String>,
    pub cron: String,
    pub timezone: String,
    /// The runs' parameters (the schedule's id is added to each run's).
    pub params: Value,
    /// Keep the last N complete backup sets the schedule took.
    pub retention_keep: Option<u64>,
    pub enabled: bool,
    /// The slot the schedule waits for (epoch ms); `None` when disabled.
    pub next_due_at: Option<i64>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What a create or an update writes.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSpec {
    pub name: String,
    pub run_type: RunType,
    pub tenant_id: Option<String>,
    pub cron: String,
    pub timezone: String,
    pub params: Value,
    pub retention_keep: Option<u64>,
    pub enabled: bool,
}

/// One slot of the history.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotRecord {
    pub slot_at: i64,
    pub tenant_id: String,
    /// `started` or `skipped_active`.
    pub decision: String,
    /// The run started, or the active run the slot was skipped for.
    pub run_id: Option<String>,
    /// Slots that passed unstarted (downtime) before this one.
    pub missed: u64,
    pub decided_at: i64,
}

/// What one tick did, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tick {
    pub started: Vec<String>,
    pub skipped_active: u64,
    /// Due schedules another node decided first (its compare-and-set won).
    pub lost_races: u64,
}

const COLUMNS: &str = "id, workspace_id, name, run_type, tenant_id, cron, timezone, params, retention_keep, \
     enabled, next_due_at, created_by, created_at, updated_at";

type Row = (
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    String,
    String,
    Option<i64>,
    i64,
    Option<i64>,
    String,
    i64,
    i64,
);

fn schedule_of(row: Row) -> Result<Schedule, StoreError> {
    let (
        id,
        workspace_id,
        name,
        run_type,
        tenant_id,
        cron,
        timezone,
        params,
        keep,
        enabled,
        next,
        by,
        at,
        up,
    ) = row;
    Ok(Schedule {
        id,
        workspace_id,
        name,
        run_type: run_type
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("schedule run type: {e}")))?,
        tenant_id,
        cron,
        timezone,
        params: serde_json::from_str(&params)
            .map_err(|e| StoreError::Corrupt(format!("schedule params: {e}")))?,
        retention_keep: keep.map(|k| k as u64),
        enabled: enabled != 0,
        next_due_at: next,
        created_by: by,
        created_at: at,
        updated_at: up,
    })
}

/// The slot a schedule waits for from `now`, or `None` when it is disabled.
fn next_slot(spec: &ScheduleSpec, now: i64) -> Result<Option<i64>, StoreError> {
    if !spec.enabled {
        return Ok(None);
    }
    let slots = Slots::parse(&spec.cron, &spec.timezone).map_err(|e| StoreError::Invalid(e.to_string()))?;
    Ok(slots.next_after(now))
}

impl Store {
    /// Creates a schedule (its name unique in the workspace: `Conflict`).
    pub async fn create_schedule(
        &self,
        workspace_id: &str,
        spec: &ScheduleSpec,
        created_by: &str,
    ) -> Result<Schedule, StoreError> {
        let now = self.now_ms();
        let next = next_slot(spec, now)?;
        let id = new_id();
        let mut tx = self.begin_write().await?;
        let taken: Option<(String,)> = tx
            .fetch_optional(
                sql("SELECT id FROM schedules WHERE workspace_id = $1 AND name = $2")
                    .bind(workspace_id)
                    .bind(&spec.name),
            )
            .await?;
        if taken.is_some() {
            return Err(StoreError::Conflict(format!(
                "a schedule named `{}` already exists in this workspace",
                spec.name
            )));
        }
        tx.execute(
            sql(
                "INSERT INTO schedules (id, workspace_id, name, run_type, tenant_id, cron, timezone, params, \
                 retention_keep, enabled, next_due_at, created_by, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)",
            )
            .bind(id.as_str())
            .bind(workspace_id)
            .bind(&spec.name)
            .bind(spec.run_type.as_str())
            .bind(&spec.tenant_id)
            .bind(&spec.cron)
            .bind(&spec.timezone)
            .bind(serde_json::to_string(&spec.params).expect("json"))
            .bind(spec.retention_keep.map(|k| k as i64))
            .bind(i64::from(spec.enabled))
            .bind(next)
            .bind(created_by)
            .bind(now),
        )
        .await?;
        tx.commit().await?;
        self.schedule(workspace_id, &id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("schedule vanished after insert".into()))
    }

    /// Schedule `id` of workspace `workspace_id`.
    pub async fn schedule(&self, workspace_id: &str, id: &str) -> Result<Option<Schedule>, StoreError> {
        let row: Option<Row> = self
            .pool
            .fetch_optional(
                crate::db::sql_owned(format!(
                    "SELECT {COLUMNS} FROM schedules WHERE id = $1 AND workspace_id = $2"
                ))
                .bind(id)
                .bind(workspace_id),
            )
            .await?;
        row.map(schedule_of).transpose()
    }

    /// The schedules of a workspace, by name (at most 1 000: a workspace's
    /// schedules are configuration, not data).
    pub async fn list_schedules(&self, workspace_id: &str) -> Result<Vec<Schedule>, StoreError> {
        let rows: Vec<Row> = self
            .pool
            .fetch_all(
                crate::db::sql_owned(format!(
                    "SELECT {COLUMNS} FROM schedules WHERE workspace_id = $1 ORDER BY name, id LIMIT 1000"
                ))
                .bind(workspace_id),
            )
            .await?;
        rows.into_iter().map(schedule_of).collect()
    }

    /// Replaces a schedule's settings; the slot it waits for is computed
    /// anew from now (a changed pattern, or a schedule enabled again, does
    /// not start the slots it passed while disabled).
    pub async fn update_schedule(
        &self,
        workspace_id: &str,
        id: &str,
        spec: &ScheduleSpec,
    ) -> Result<Option<Schedule>, StoreError> {
        let now = self.now_ms();
        let mut next = next_slot(spec, now)?;
        // A change that leaves the timing alone (a rename, new params) keeps
        // the slot the schedule waits for: one due now is not lost to an edit.
        if let Some(current) = self.schedule(workspace_id, id).await?
            && current.enabled == spec.enabled
            && current.cron == spec.cron
            && current.timezone == spec.timezone
        {
            next = current.next_due_at;
        }
        let mut tx = self.begin_write().await?;
        let taken: Option<(String,)> = tx
            .fetch_optional(
                sql("SELECT id FROM schedules WHERE workspace_id = $1 AND name = $2 AND id <> $3")
                    .bind(workspace_id)
                    .bind(&spec.name)
                    .bind(id),
            )
            .await?;
        if taken.is_some() {
            return Err(StoreError::Conflict(format!(
                "a schedule named `{}` already exists in this workspace",
                spec.name
            )));
        }
        let n = tx
            .execute(
                sql(
                    "UPDATE schedules SET name = $3, run_type = $4, tenant_id = $5, cron = $6, timezone = $7, \
                     params = $8, retention_keep = $9, enabled = $10, next_due_at = $11, updated_at = $12 \
                     WHERE id = $1 AND workspace_id = $2",
                )
                .bind(id)
                .bind(workspace_id)
                .bind(&spec.name)
                .bind(spec.run_type.as_str())
                .bind(&spec.tenant_id)
                .bind(&spec.cron)
                .bind(&spec.timezone)
                .bind(serde_json::to_string(&spec.params).expect("json"))
                .bind(spec.retention_keep.map(|k| k as i64))
                .bind(i64::from(spec.enabled))
                .bind(next)
                .bind(now),
            )
            .await?;
        tx.commit().await?;
        if n == 0 {
            return Ok(None);
        }
        self.schedule(workspace_id, id).await
    }

    /// Deletes a schedule and its history; its runs stay. `false`: no such schedule.
    pub async fn delete_schedule(&self, workspace_id: &str, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let found: Option<(String,)> = tx
            .fetch_optional(
                sql("SELECT id FROM schedules WHERE id = $1 AND workspace_id = $2")
                    .bind(id)
                    .bind(workspace_id),
            )
            .await?;
        if found.is_none() {
            return Ok(false);
        }
        tx.execute(sql("DELETE FROM schedule_slots WHERE schedule_id = $1").bind(id))
            .await?;
        tx.execute(sql("DELETE FROM schedules WHERE id = $1").bind(id))
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The newest `limit` slots of a schedule's history.
    pub async fn schedule_history(&self, id: &str, limit: u32) -> Result<Vec<SlotRecord>, StoreError> {
        let rows: Vec<(i64, String, String, Option<String>, i64, i64)> = self
            .pool
            .fetch_all(
                sql(
                    "SELECT slot_at, tenant_id, decision, run_id, missed, decided_at FROM schedule_slots \
                     WHERE schedule_id = $1 ORDER BY slot_at DESC, tenant_id LIMIT $2",
                )
                .bind(id)
                .bind(i64::from(limit)),
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |(slot_at, tenant_id, decision, run_id, missed, decided_at)| SlotRecord {
                    slot_at,
                    tenant_id,
                    decision,
                    run_id,
                    missed: missed as u64,
                    decided_at,
                },
            )
            .collect())
    }

    /// One scheduler tick at the store's clock: starts every due slot of up
    /// to `limit` schedules (see the module docs).
    pub async fn fire_due_schedules(&self, limit: u32) -> Result<Tick, StoreError> {
        let now = self.now_ms();
        let due_rows: Vec<Row> = self
            .pool
            .fetch_all(
                crate::db::sql_owned(format!(
                    "SELECT {COLUMNS} FROM schedules WHERE enabled = 1 AND next_due_at <= $1 \
                     ORDER BY next_due_at, id LIMIT $2"
                ))
                .bind(now)
                .bind(i64::from(limit)),
            )
            .await?;
        let mut tick = Tick::default();
        for row in due_rows {
            // One schedule that cannot be decided now (a row this node cannot
            // read, a conflict) does not hold the others back: it stays due.
            let schedule = match schedule_of(row) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "a due schedule cannot be read");
                    continue;
                }
            };
            let mut tx = self.begin_write().await?;
            match fire_in(&mut tx, &schedule, now).await {
                Ok(Some((started, skipped))) => {
                    tx.commit().await?;
                    tick.started.extend(started);
                    tick.skipped_active += skipped;
                }
                Ok(None) => tick.lost_races += 1,
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => {
                    tracing::warn!(schedule = %schedule.id, error = %e, "a due schedule was not decided")
                }
            }
        }
        Ok(tick)
    }
}

/// One retention pass's work: the `backup_set.delete` runs it started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Retention {
    pub deletes_started: Vec<String>,
}

/// Which of a schedule's sets of one tenant retention removes, newest first
/// in `sets` as `(id, complete, locked)`: every set older than the
/// `keep`-th newest complete one, complete or not, but a locked one. Pure.
pub fn beyond_retention(sets: &[(String, bool, bool)], keep: u64) -> Vec<String> {
    let mut complete = 0u64;
    let mut out = Vec::new();
    for (id, is_complete, locked) in sets {
        if complete >= keep && !locked {
            out.push(id.clone());
        }
        if *is_complete {
            complete += 1;
        }
    }
    out
}

impl Store {
    /// Retention of every schedule that keeps the last N complete sets: the
    /// older sets its runs took (complete or not; never a locked one) are
    /// removed through `backup_set.delete` runs, started here once each
    /// (their dedup key is the set). Only sets of finished runs count.
    pub async fn enforce_retention(&self) -> Result<Retention, StoreError> {
        let schedules: Vec<Row> = self
            .pool
            .fetch_all(crate::db::sql_owned(format!(
                "SELECT {COLUMNS} FROM schedules WHERE retention_keep IS NOT NULL \
                 AND run_type = 'backup.schedule.execute' ORDER BY id LIMIT 1000"
            )))
            .await?;
        let mut out = Retention::default();
        for row in schedules {
            let schedule = schedule_of(row)?;
            let Some(keep) = schedule.retention_keep else {
                continue;
            };
            let q = format!(
                // Complete and not empty: an empty capture (a wiped tenant, an
                // unmounted folder) must not push real backups out.
                "SELECT s.id, s.tenant_id, CAST(CASE WHEN {complete} AND EXISTS (SELECT 1 FROM backup_items i \
                 WHERE i.backup_set_id = s.id) THEN 1 ELSE 0 END AS BIGINT), s.retention_locked \
                 FROM backup_sets s JOIN operation_runs r ON r.id = s.created_by_run_id \
                 WHERE s.workspace_id = $1 AND r.type = 'backup.schedule.execute' AND r.initiator = $2 \
                 AND (s.tenant_id = $3 OR $3 = '*') \
                 AND r.status = 'completed' AND NOT {deleted} ORDER BY s.tenant_id, s.created_at DESC, s.id DESC",
                complete = crate::backups::SET_IS_COMPLETE,
                deleted = crate::backups::SET_IS_DELETED,
            );
            let rows: Vec<(String, String, i64, i64)> = self
                .pool
                .fetch_all(
                    crate::db::sql_owned(q)
                        .bind(&schedule.workspace_id)
                        .bind(format!("schedule:{}", schedule.id))
                        // A schedule of one tenant prunes that tenant's sets only,
                        // whatever tenants it covered before an edit.
                        .bind(schedule.tenant_id.clone().unwrap_or_else(|| "*".into())),
                )
                .await?;
            let mut by_tenant: std::collections::BTreeMap<String, Vec<(String, bool, bool)>> =
                Default::default();
            for (id, tenant, complete, locked) in rows {
                by_tenant
                    .entry(tenant)
                    .or_default()
                    .push((id, complete != 0, locked != 0));
            }
            for (tenant, sets) in by_tenant {
                for set in beyond_retention(&sets, keep) {
                    // A set a restore is reading: its delete would only end
                    // blocked; the next pass after the restore removes it.
                    if !self
                        .active_restores_of_set(&schedule.workspace_id, &set)
                        .await?
                        .is_empty()
                    {
                        continue;
                    }
                    let params = json!({"backup_set_id": set});
                    let new = NewRun::on_tenant(
                        &schedule.workspace_id,
                        &tenant,
                        RunType::BackupSetDelete,
                        format!("schedule:{}", schedule.id),
                        params.clone(),
                    );
                    let key =
                        RunType::BackupSetDelete.dedup_key(&schedule.workspace_id, Some(&tenant), &params);
                    let context =
                        json!({"params": params, "retention": {"schedule_id": schedule.id, "keep": keep}});
                    let mut tx = self.begin_write().await?;
                    if let Some(id) = insert_queued_in(&mut tx, &new, &key, &context.to_string()).await? {
                        tx.commit().await?;
                        out.deletes_started.push(id);
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Inside `tx`: decides `schedule`'s due slot at `now`. `None` when another
/// node moved the schedule first (nothing written).
async fn fire_in(
    tx: &mut Tx,
    schedule: &Schedule,
    now: i64,
) -> Result<Option<(Vec<String>, u64)>, StoreError> {
    let Some(waiting) = schedule.next_due_at else {
        return Ok(None);
    };
    let slots = match Slots::parse(&schedule.cron, &schedule.timezone) {
        Ok(s) => s,
        Err(e) => {
            // Stored before a stricter parser: stop it rather than spin on it.
            tracing::warn!(schedule = %schedule.id, error = %e, "schedule disabled: its pattern no longer parses");
            tx.execute(
                sql(
                    "UPDATE schedules SET enabled = 0, next_due_at = NULL WHERE id = $1 AND next_due_at = $2",
                )
                .bind(&schedule.id)
                .bind(waiting),
            )
            .await?;
            return Ok(Some((Vec::new(), 0)));
        }
    };
    let Due::Start { slot, missed, next } = due(&slots, waiting, now) else {
        return Ok(None);
    };
    // The compare-and-set: only the node that moves `next_due_at` from the
    // value it read decides this slot.
    let moved = tx
        .execute(
            // `updated_at` too: a schedule edited since it was read (another
            // tenant, other params) is decided at the next tick, as edited.
            sql(
                "UPDATE schedules SET next_due_at = $3 WHERE id = $1 AND enabled = 1 AND next_due_at = $2 \
                 AND updated_at = $4",
            )
            .bind(&schedule.id)
            .bind(waiting)
            .bind(next)
            .bind(schedule.updated_at),
        )
        .await?;
    if moved == 0 {
        return Ok(None);
    }
    let tenants: Vec<(String,)> = match &schedule.tenant_id {
        Some(t) => {
            tx.fetch_all(
                sql("SELECT id FROM tenants WHERE id = $1 AND workspace_id = $2")
                    .bind(t)
                    .bind(&schedule.workspace_id),
            )
            .await?
        }
        None => {
            tx.fetch_all(
                sql("SELECT id FROM tenants WHERE workspace_id = $1 ORDER BY id")
                    .bind(&schedule.workspace_id),
            )
            .await?
        }
    };
    let mut started = Vec::new();
    let mut skipped = 0;
    for (tenant,) in tenants {
        // The slot's unique key: decided once, whatever else happens.
        let fresh = tx
            .execute(
                sql(
                    "INSERT INTO schedule_slots (schedule_id, slot_at, tenant_id, decision, missed, decided_at) \
                     VALUES ($1, $2, $3, 'started', $4, $5) ON CONFLICT (schedule_id, slot_at, tenant_id) DO NOTHING",
                )
                .bind(&schedule.id)
                .bind(slot)
                .bind(tenant.as_str())
                .bind(missed as i64)
                .bind(now),
            )
            .await?;
        if fresh == 0 {
            continue;
        }
        let mut params = match &schedule.params {
            Value::Object(m) => m.clone(),
            _ => Default::default(),
        };
        params.insert("schedule_id".into(), json!(schedule.id));
        let params = Value::Object(params);
        let new = NewRun::on_tenant(
            &schedule.workspace_id,
            &tenant,
            schedule.run_type,
            format!("schedule:{}", schedule.id),
            params.clone(),
        );
        let key = schedule
            .run_type
            .dedup_key(&schedule.workspace_id, Some(&tenant), &params);
        let context = json!({"params": params, "schedule": {"id": schedule.id, "slot_at": slot}}).to_string();
        let (decision, run_id) = match insert_queued_in(tx, &new, &key, &context).await? {
            Some(id) => {
                started.push(id.clone());
                ("started", Some(id))
            }
            None => {
                // The schedule's previous run of this tenant is still active.
                skipped += 1;
                // (`None`: it closed meanwhile; the slot was still skipped.)
                let active: Option<(String,)> = tx
                    .fetch_optional(
                        sql("SELECT id FROM operation_runs WHERE active_key = $1").bind(key.as_str()),
                    )
                    .await?;
                // (An empty id would break the slot's foreign key and the
                // tick's transaction with it: the slot names no run.)
                ("skipped_active", active.map(|(id,)| id))
            }
        };
        tx.execute(
            sql("UPDATE schedule_slots SET decision = $4, run_id = $5 WHERE schedule_id = $1 AND slot_at = $2 AND tenant_id = $3")
                .bind(&schedule.id)
                .bind(slot)
                .bind(tenant.as_str())
                .bind(decision)
                .bind(run_id.as_deref()),
        )
        .await?;
    }
    Ok(Some((started, skipped)))
}

#[cfg(test)]
mod tests {
    use super::beyond_retention;

    #[test]
    fn retention_keeps_the_last_complete_sets_and_what_is_newer() {
        let s = |id: &str, complete: bool, locked: bool| (id.to_owned(), complete, locked);
        // Newest first: a partial set newer than the kept ones stays too.
        let sets = [
            s("p1", false, false),
            s("c1", true, false),
            s("c2", true, false),
            s("p2", false, false),
            s("c3", true, true),
            s("c4", true, false),
        ];
        assert_eq!(beyond_retention(&sets, 2), vec!["p2".to_owned(), "c4".to_owned()]);
        assert_eq!(beyond_retention(&sets, 10), Vec::<String>::new());
        assert_eq!(
            beyond_retention(&sets, 1),
            vec!["c2".to_owned(), "p2".to_owned(), "c4".to_owned()]
        );
    }
}

//! Reads of backup sets for the API: the sets of a workspace, one set with
//! its items (a page at a time) and each item's restore history, and the
//! items' payloads for an export (a page at a time).
//!
//! Every read is keyed by the caller's [`Visibility`] inside its statement
//! (the set's workspace, and its tenant for a tenant-restricted member), so
//! a set of another workspace, one of a tenant the member may not see and an
//! id that exists nowhere take the same path and return the same nothing.
//! Whether a set is complete is [`SET_IS_COMPLETE`], never restated here.
//!
//! Nothing here reads without bound: sets and items come in pages, each
//! item carries at most [`RESTORES_PER_ITEM`] restore results, and payloads
//! come [`PAYLOADS_PER_PAGE`] at a time.

use crate::backups::SET_IS_COMPLETE;
use crate::db::{DbRow, Sql, sql_built};
use crate::{Store, StoreError, Visibility};
use serde_json::Value;
use std::collections::HashMap;

/// Sets per page of [`Store::list_backup_sets`] unless asked otherwise, and the most.
pub const DEFAULT_SET_LIMIT: u32 = 50;
pub const MAX_SET_LIMIT: u32 = 500;
/// Items per page of [`Store::visible_backup_set_items`]: a 10 000-item set
/// is 20 pages, never one body.
pub const ITEMS_PER_PAGE: u32 = 500;
/// The newest restore results shown per item; older ones are flagged
/// (`restores_more`), not read.
pub const RESTORES_PER_ITEM: u32 = 20;
/// Items per page of [`Store::visible_backup_set_payloads`]: what an export
/// holds in memory at once is this many payloads.
pub const PAYLOADS_PER_PAGE: u32 = 50;

/// Which sets to list; all optional.
#[derive(Debug, Clone, Default)]
pub struct BackupSetFilter {
    pub tenant_id: Option<String>,
    /// Sets older than this set id (the previous page's `next_cursor`).
    pub cursor: Option<String>,
    /// Sets per page, 1 to [`MAX_SET_LIMIT`] (clamped; 0 is the default).
    pub limit: u32,
}

/// A backup set without its items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSetSummary {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    /// ms since the Unix epoch.
    pub created_at: i64,
    pub created_by_run_id: String,
    pub item_count: u64,
    /// Every planned item was captured ([`SET_IS_COMPLETE`]).
    pub complete: bool,
    /// The source tenant's directory was stored with the set.
    pub has_directory: bool,
}

/// One restore of an item, as the item's history shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoreRecord {
    pub run_id: String,
    pub target_tenant_id: String,
    /// `created`, `updated`, `unchanged` or `failed`.
    pub result: String,
    pub dry_run: bool,
    pub target_id: Option<String>,
    /// What the unit saw: the references it mapped (and by which name,
    /// where the source named an id twice), the match, what failed.
    pub detail: Value,
    /// ms since the Unix epoch.
    pub recorded_at: i64,
}

/// An item of a set, without its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupItemSummary {
    pub id: String,
    pub policy_type: String,
    pub external_id: String,
    pub display_name: String,
    /// SHA-256 of its normalized content.
    pub payload_sha256: String,
    pub captured_by_run_id: String,
    /// ms since the Unix epoch.
    pub captured_at: i64,
    /// Directory id → `"<kind>:<display name>"` of what its references point to.
    pub refs: Value,
    /// Its newest restores (at most [`RESTORES_PER_ITEM`]) into tenants the
    /// caller may see, newest first.
    pub restores: Vec<RestoreRecord>,
    /// More restores exist than are shown.
    pub restores_more: bool,
}

/// One page of a set's items, by type and external id.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupItemsPage {
    pub items: Vec<BackupItemSummary>,
    /// The last item's id when more may follow.
    pub next_cursor: Option<String>,
}

/// Where a page of payloads starts: after this `(policy_type, external_id)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadCursor {
    pub policy_type: String,
    pub external_id: String,
}

/// An item with its payload, for an export.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportItem {
    pub id: String,
    pub policy_type: String,
    pub external_id: String,
    pub display_name: String,
    pub payload: Value,
    pub payload_sha256: String,
}

impl ExportItem {
    /// Where the next page starts.
    pub fn cursor(&self) -> PayloadCursor {
        PayloadCursor {
            policy_type: self.policy_type.clone(),
            external_id: self.external_id.clone(),
        }
    }
}

/// The tenants a caller may see, narrowed by a tenant filter: `None` = every
/// tenant of the workspace; `Some(empty)` = nothing can match.
fn tenants_in_view<'a>(vis: &'a Visibility, tenant_id: Option<&'a str>) -> Option<Vec<&'a str>> {
    let mut tenants: Vec<&str> = match (tenant_id, &vis.tenants) {
        (Some(t), Some(visible)) => visible.iter().map(String::as_str).filter(|v| *v == t).collect(),
        (Some(t), None) => vec![t],
        (None, Some(visible)) => visible.iter().map(String::as_str).collect(),
        (None, None) => return None,
    };
    tenants.sort_unstable();
    tenants.dedup();
    Some(tenants)
}

/// ` AND s.workspace_id = ? [AND s.tenant_id IN (…)]`: the set `s` is one
/// `vis` may see. `tenants` must not be empty when given.
fn push_set_scope<'a>(stmt: &mut Sql<'a>, vis: &'a Visibility, tenants: &Option<Vec<&'a str>>) {
    // A set deleted, or being deleted, is gone for every read of the API.
    stmt.push(" AND NOT ")
        .push(crate::backups::SET_IS_DELETED)
        .push(" AND s.workspace_id = ")
        .push_bind(vis.workspace_id.as_str());
    if let Some(tenants) = tenants {
        stmt.push(" AND s.tenant_id IN ")
            .push_list(tenants.iter().copied());
    }
}

/// The columns of a [`BackupSetSummary`], from `backup_sets s`. Integers
/// are cast to BIGINT so both databases decode them as `i64`.
fn summary_columns() -> String {
    format!(
        "s.id, s.tenant_id, s.name, s.created_at, s.created_by_run_id, \
         (SELECT COUNT(*) FROM backup_items i WHERE i.backup_set_id = s.id) AS item_count, \
         CAST(CASE WHEN {SET_IS_COMPLETE} THEN 1 ELSE 0 END AS BIGINT) AS complete, \
         CAST(CASE WHEN s.directory IS NULL THEN 0 ELSE 1 END AS BIGINT) AS has_directory"
    )
}

fn summary_from_row(r: &DbRow) -> Result<BackupSetSummary, StoreError> {
    Ok(BackupSetSummary {
        id: r.get("id")?,
        tenant_id: r.get("tenant_id")?,
        name: r.get("name")?,
        created_at: r.get("created_at")?,
        created_by_run_id: r.get("created_by_run_id")?,
        item_count: r.get::<i64>("item_count")?.max(0) as u64,
        complete: r.get::<i64>("complete")? != 0,
        has_directory: r.get::<i64>("has_directory")? != 0,
    })
}

fn json_column(r: &DbRow, column: &str, what: &str) -> Result<Value, StoreError> {
    let text: String = r.get(column)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

impl Store {
    /// The backup sets `vis` may see, newest first (ids are UUIDv7, so id
    /// order is creation order), optionally of one tenant; with the cursor
    /// of the next page (`None` on the last). A tenant filter naming a
    /// tenant the caller may not see answers an empty list, as one naming
    /// no tenant at all does.
    pub async fn list_backup_sets(
        &self,
        vis: &Visibility,
        filter: &BackupSetFilter,
    ) -> Result<(Vec<BackupSetSummary>, Option<String>), StoreError> {
        let limit = match filter.limit {
            0 => DEFAULT_SET_LIMIT,
            n => n.min(MAX_SET_LIMIT),
        };
        let tenants = tenants_in_view(vis, filter.tenant_id.as_deref());
        if tenants.as_ref().is_some_and(Vec::is_empty) {
            return Ok((Vec::new(), None));
        }
        // Ids are lower case; a cursor in capitals must not compare below them.
        let cursor = filter.cursor.as_ref().map(|c| c.to_ascii_lowercase());
        let mut stmt = sql_built(
            self.pool.dialect(),
            &format!("SELECT {} FROM backup_sets s WHERE 1 = 1", summary_columns()),
        );
        push_set_scope(&mut stmt, vis, &tenants);
        if let Some(cursor) = cursor {
            stmt.push(" AND s.id < ").push_bind(cursor);
        }
        stmt.push(" ORDER BY s.id DESC LIMIT ")
            .push_bind(i64::from(limit) + 1);
        let mut sets = self
            .pool
            .rows(stmt)
            .await?
            .iter()
            .map(summary_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next = if sets.len() > limit as usize {
            sets.truncate(limit as usize);
            sets.last().map(|s| s.id.clone())
        } else {
            None
        };
        Ok((sets, next))
    }

    /// Backup set `id` if `vis` may see it, else `None`: one statement keyed
    /// by the id and the visibility, so a set elsewhere and a missing id
    /// take the same path.
    pub async fn visible_backup_set(
        &self,
        vis: &Visibility,
        id: &str,
    ) -> Result<Option<BackupSetSummary>, StoreError> {
        let tenants = tenants_in_view(vis, None);
        if tenants.as_ref().is_some_and(Vec::is_empty) {
            return Ok(None);
        }
        let mut stmt = sql_built(
            self.pool.dialect(),
            &format!("SELECT {} FROM backup_sets s WHERE s.id = ", summary_columns()),
        );
        stmt.push_bind(id);
        push_set_scope(&mut stmt, vis, &tenants);
        self.pool
            .row(stmt)
            .await?
            .as_ref()
            .map(summary_from_row)
            .transpose()
    }

    /// The directory stored with set `id` if `vis` may see the set: `None`
    /// for a set it may not see, `Some(None)` for a set taken without one.
    pub async fn visible_backup_set_directory(
        &self,
        vis: &Visibility,
        id: &str,
    ) -> Result<Option<Option<Value>>, StoreError> {
        let tenants = tenants_in_view(vis, None);
        if tenants.as_ref().is_some_and(Vec::is_empty) {
            return Ok(None);
        }
        let mut stmt = sql_built(
            self.pool.dialect(),
            "SELECT s.directory FROM backup_sets s WHERE s.id = ",
        );
        stmt.push_bind(id);
        push_set_scope(&mut stmt, vis, &tenants);
        let Some(row) = self.pool.row(stmt).await? else {
            return Ok(None);
        };
        let text: Option<String> = row.get("directory")?;
        text.map(|t| {
            serde_json::from_str(&t)
                .map_err(|e| StoreError::Corrupt(format!("backup set {id} directory: {e}")))
        })
        .transpose()
        .map(Some)
    }

    /// One page of the items of set `set_id` (if `vis` may see the set;
    /// else an empty page), by type and external id, starting after item
    /// `cursor`; each with its newest restores into tenants `vis` may see.
    /// A cursor that is not an item of the set gives an empty page.
    pub async fn visible_backup_set_items(
        &self,
        vis: &Visibility,
        set_id: &str,
        cursor: Option<&str>,
    ) -> Result<BackupItemsPage, StoreError> {
        let empty = BackupItemsPage {
            items: Vec::new(),
            next_cursor: None,
        };
        let tenants = tenants_in_view(vis, None);
        if tenants.as_ref().is_some_and(Vec::is_empty) {
            return Ok(empty);
        }
        let after = match cursor {
            None => None,
            Some(c) => match self.item_key(set_id, &c.to_ascii_lowercase()).await? {
                Some(key) => Some(key),
                None => return Ok(empty),
            },
        };
        let mut stmt = sql_built(
            self.pool.dialect(),
            "SELECT i.id, i.policy_type, i.external_id, i.display_name, i.payload_sha256, \
             i.captured_by_run_id, i.captured_at, i.refs \
             FROM backup_items i JOIN backup_sets s ON s.id = i.backup_set_id WHERE i.backup_set_id = ",
        );
        stmt.push_bind(set_id);
        push_set_scope(&mut stmt, vis, &tenants);
        push_after(&mut stmt, after.as_ref());
        stmt.push(" ORDER BY i.policy_type, i.external_id LIMIT ")
            .push_bind(i64::from(ITEMS_PER_PAGE) + 1);
        let rows = self.pool.rows(stmt).await?;
        let mut items = rows
            .iter()
            .map(|r| {
                Ok(BackupItemSummary {
                    id: r.get("id")?,
                    policy_type: r.get("policy_type")?,
                    external_id: r.get("external_id")?,
                    display_name: r.get("display_name")?,
                    payload_sha256: r.get("payload_sha256")?,
                    captured_by_run_id: r.get("captured_by_run_id")?,
                    captured_at: r.get("captured_at")?,
                    refs: json_column(r, "refs", "backup item refs")?,
                    restores: Vec::new(),
                    restores_more: false,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let next_cursor = if items.len() > ITEMS_PER_PAGE as usize {
            items.truncate(ITEMS_PER_PAGE as usize);
            items.last().map(|i| i.id.clone())
        } else {
            None
        };
        let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
        let mut history = self.restore_history(vis, set_id, &ids).await?;
        for item in &mut items {
            if let Some(mut restores) = history.remove(&item.id) {
                item.restores_more = restores.len() > RESTORES_PER_ITEM as usize;
                restores.truncate(RESTORES_PER_ITEM as usize);
                item.restores = restores;
            }
        }
        Ok(BackupItemsPage { items, next_cursor })
    }

    /// Up to `limit` (at most [`PAYLOADS_PER_PAGE`]) items of set `set_id`
    /// with their payloads, by type and external id, after `after` (if `vis`
    /// may see the set; else none). An export reads the set page by page,
    /// so it holds one page of payloads at a time, whatever the set's size.
    pub async fn visible_backup_set_payloads(
        &self,
        vis: &Visibility,
        set_id: &str,
        after: Option<&PayloadCursor>,
        limit: u32,
    ) -> Result<Vec<ExportItem>, StoreError> {
        let tenants = tenants_in_view(vis, None);
        if tenants.as_ref().is_some_and(Vec::is_empty) {
            return Ok(Vec::new());
        }
        let mut stmt = sql_built(
            self.pool.dialect(),
            "SELECT i.id, i.policy_type, i.external_id, i.display_name, i.payload, i.payload_sha256 \
             FROM backup_items i JOIN backup_sets s ON s.id = i.backup_set_id WHERE i.backup_set_id = ",
        );
        stmt.push_bind(set_id);
        push_set_scope(&mut stmt, vis, &tenants);
        push_after(&mut stmt, after);
        stmt.push(" ORDER BY i.policy_type, i.external_id LIMIT ")
            .push_bind(i64::from(limit.clamp(1, PAYLOADS_PER_PAGE)));
        self.pool
            .rows(stmt)
            .await?
            .iter()
            .map(|r| {
                Ok(ExportItem {
                    id: r.get("id")?,
                    policy_type: r.get("policy_type")?,
                    external_id: r.get("external_id")?,
                    display_name: r.get("display_name")?,
                    payload: json_column(r, "payload", "backup item payload")?,
                    payload_sha256: r.get("payload_sha256")?,
                })
            })
            .collect()
    }

    /// `(policy_type, external_id)` of item `item_id` of set `set_id`.
    async fn item_key(&self, set_id: &str, item_id: &str) -> Result<Option<PayloadCursor>, StoreError> {
        let mut stmt = sql_built(
            self.pool.dialect(),
            "SELECT policy_type, external_id FROM backup_items WHERE backup_set_id = ",
        );
        stmt.push_bind(set_id).push(" AND id = ").push_bind(item_id);
        let row: Option<(String, String)> = self.pool.fetch_optional(stmt).await?;
        Ok(row.map(|(policy_type, external_id)| PayloadCursor {
            policy_type,
            external_id,
        }))
    }

    /// Per item of `item_ids` (of set `set_id`), its newest restore results
    /// into tenants `vis` may see, newest first: at most
    /// [`RESTORES_PER_ITEM`] + 1 each (the extra one says "more"). One
    /// statement for the page; the window reads the history of the page's
    /// items only (through the `(backup_item_id, …)` index).
    async fn restore_history(
        &self,
        vis: &Visibility,
        set_id: &str,
        item_ids: &[&str],
    ) -> Result<HashMap<String, Vec<RestoreRecord>>, StoreError> {
        let mut by_item: HashMap<String, Vec<RestoreRecord>> = HashMap::new();
        let tenants = tenants_in_view(vis, None);
        if item_ids.is_empty() || tenants.as_ref().is_some_and(Vec::is_empty) {
            return Ok(by_item);
        }
        let mut stmt = sql_built(
            self.pool.dialect(),
            "SELECT backup_item_id, run_id, target_tenant_id, result, dry_run, target_id, detail, recorded_at FROM (\
             SELECT backup_item_id, run_id, target_tenant_id, result, CAST(dry_run AS BIGINT) AS dry_run, \
             target_id, detail, recorded_at, ROW_NUMBER() OVER (PARTITION BY backup_item_id \
             ORDER BY recorded_at DESC, run_id DESC) AS n \
             FROM restore_results WHERE backup_set_id = ",
        );
        stmt.push_bind(set_id)
            .push(" AND workspace_id = ")
            .push_bind(vis.workspace_id.as_str())
            .push(" AND backup_item_id IN ")
            .push_list(item_ids.iter().copied());
        if let Some(tenants) = &tenants {
            stmt.push(" AND target_tenant_id IN ")
                .push_list(tenants.iter().copied());
        }
        stmt.push(") AS h WHERE n <= ")
            .push_bind(i64::from(RESTORES_PER_ITEM) + 1)
            .push(" ORDER BY backup_item_id, recorded_at DESC, run_id DESC");
        for r in self.pool.rows(stmt).await? {
            let item: String = r.get("backup_item_id")?;
            by_item.entry(item).or_default().push(RestoreRecord {
                run_id: r.get("run_id")?,
                target_tenant_id: r.get("target_tenant_id")?,
                result: r.get("result")?,
                dry_run: r.get::<i64>("dry_run")? != 0,
                target_id: r.get("target_id")?,
                detail: serde_json::from_str(&r.get::<String>("detail")?).unwrap_or(Value::Null),
                recorded_at: r.get("recorded_at")?,
            });
        }
        Ok(by_item)
    }
}

/// ` AND (i.policy_type, i.external_id) > after`, spelled out (the
/// `(backup_set_id, policy_type, external_id)` index serves it).
fn push_after<'a>(stmt: &mut Sql<'a>, after: Option<&PayloadCursor>) {
    if let Some(after) = after {
        stmt.push(" AND (i.policy_type > ")
            .push_bind(after.policy_type.clone())
            .push(" OR (i.policy_type = ")
            .push_bind(after.policy_type.clone())
            .push(" AND i.external_id > ")
            .push_bind(after.external_id.clone())
            .push("))");
    }
}

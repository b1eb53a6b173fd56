//! `GET /api/v1/workspaces/{ws}/backup-sets…`: the backup sets of a
//! workspace, one set with its items (a page at a time, each item with its
//! restore history), and a set exported as a ZIP in the IntuneManagement
//! layout.
//!
//! Access is exactly a run's: [`Caller::require`] with `OperationsView`
//! (`404` outside the workspace, `403` without the capability), and every
//! set is looked up through the caller's [`Visibility`](opsledger_store::Visibility),
//! so a set of another workspace, one of a tenant a restricted member may
//! not see and an id that exists nowhere get the same `404`, byte for byte.
//! Store calls go through [`retry::read`].

use crate::AppState;
use crate::auth::{Access, Caller, check_id};
use crate::error::ApiError;
use crate::paging::{id_cursor, limit_param, query_pairs, shown};
use crate::retry;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Datelike, Timelike, Utc};
use opsledger_core::access::Capability;
use opsledger_providers::folder::write::{GROUPS_FOLDER, file_stem, free_stem, group_file, policy_files};
use opsledger_providers::{Directory, DirectoryKind};
use opsledger_store::backup_reads::{
    BackupItemSummary, BackupSetFilter, BackupSetSummary, DEFAULT_SET_LIMIT, ExportItem, MAX_SET_LIMIT,
    PAYLOADS_PER_PAGE, PayloadCursor,
};
use serde_json::{Map, Value, json};
use std::collections::HashSet;
use std::io::{Seek, Write};

fn list_filter(query: Option<&str>) -> Result<BackupSetFilter, ApiError> {
    let mut f = BackupSetFilter {
        limit: DEFAULT_SET_LIMIT,
        ..Default::default()
    };
    for (k, v) in query_pairs(query, &["tenant_id", "limit", "cursor"])? {
        match k.as_str() {
            "tenant_id" => {
                check_id("tenant_id", &v).map_err(|e| {
                    ApiError::bad_request(
                        "invalid_query",
                        format!("`tenant_id={}`: {}", shown(&v), e.message),
                    )
                })?;
                f.tenant_id = Some(v);
            }
            "limit" => f.limit = limit_param(&v, MAX_SET_LIMIT)?,
            _ => f.cursor = Some(id_cursor(&v)?),
        }
    }
    Ok(f)
}

use crate::render::ts;

fn set_json(s: &BackupSetSummary) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(s.id));
    m.insert("tenant_id".into(), json!(s.tenant_id));
    m.insert("name".into(), json!(s.name));
    m.insert("created_at".into(), json!(ts(s.created_at)));
    m.insert("created_by_run_id".into(), json!(s.created_by_run_id));
    m.insert("item_count".into(), json!(s.item_count));
    m.insert("complete".into(), json!(s.complete));
    m.insert("has_directory".into(), json!(s.has_directory));
    m
}

fn item_json(i: &BackupItemSummary) -> Value {
    let restores: Vec<Value> = i
        .restores
        .iter()
        .map(|r| {
            json!({
                "run_id": r.run_id,
                "target_tenant_id": r.target_tenant_id,
                "result": r.result,
                "dry_run": r.dry_run,
                "target_id": r.target_id,
                "detail": r.detail,
                "recorded_at": ts(r.recorded_at),
            })
        })
        .collect();
    json!({
        "id": i.id,
        "type": i.policy_type,
        "external_id": i.external_id,
        "name": i.display_name,
        "sha256": i.payload_sha256,
        "captured_by_run_id": i.captured_by_run_id,
        "captured_at": ts(i.captured_at),
        "refs": i.refs,
        "restores": restores,
        "restores_more": i.restores_more,
    })
}

/// The set `id` if the caller may see it, else `404` — one lookup keyed by
/// the caller's visibility and the id.
async fn visible_set(state: &AppState, access: &Access, id: &str) -> Result<BackupSetSummary, ApiError> {
    retry::read(move || state.store.visible_backup_set(&access.visibility, id))
        .await?
        .ok_or_else(not_found)
}

fn not_found() -> ApiError {
    ApiError::not_found("backup set not found")
}

/// `GET …/backup-sets?tenant_id=&limit=&cursor=`: newest first, `{"items", "next_cursor"}`.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let access = caller.require(&state, &ws, Capability::OperationsView).await?;
    let filter = list_filter(query.as_deref())?;
    let (store, vis, filter) = (&state.store, &access.visibility, &filter);
    let (sets, next) = retry::read(move || store.list_backup_sets(vis, filter)).await?;
    let items: Vec<Value> = sets.iter().map(|s| Value::Object(set_json(s))).collect();
    Ok(Json(json!({ "items": items, "next_cursor": next })))
}

/// `GET …/backup-sets/{id}?cursor=`: the set and one page of its items.
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let access = caller.require(&state, &ws, Capability::OperationsView).await?;
    check_id("backup set id", &id)?;
    let mut cursor = None;
    for (_, v) in query_pairs(query.as_deref(), &["cursor"])? {
        cursor = Some(id_cursor(&v)?);
    }
    let set = visible_set(&state, &access, &id).await?;
    let (store, vis, set_id, cursor) = (
        &state.store,
        &access.visibility,
        set.id.as_str(),
        cursor.as_deref(),
    );
    let page = retry::read(move || store.visible_backup_set_items(vis, set_id, cursor)).await?;
    let mut body = set_json(&set);
    body.insert(
        "items".into(),
        Value::Array(page.items.iter().map(item_json).collect()),
    );
    body.insert("next_cursor".into(), json!(page.next_cursor));
    Ok(Json(Value::Object(body)))
}

/// Why an export could not be built (each is ours, answered `500` and logged).
#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("writing the archive: {0}")]
    Io(#[from] std::io::Error),
    #[error("writing the archive: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("the archive's writer stopped: {0}")]
    Interrupted(#[from] tokio::task::JoinError),
    #[error("stored data: {0}")]
    Corrupt(String),
}

impl From<ExportError> for ApiError {
    fn from(e: ExportError) -> ApiError {
        tracing::error!(error = %e, "backup set export failed");
        ApiError::internal()
    }
}

/// File names of an export, in the layout the folder provider writes and
/// reads (`providers/src/folder/write.rs` names them): every path once,
/// compared without letter case, so the archive unpacks whole on Windows
/// and macOS too; and no policy named `X_Settings` beside an Administrative
/// Template `X`, whose values file that is.
#[derive(Default)]
struct Layout {
    /// Lower-cased relative paths already used.
    taken: HashSet<String>,
}

impl Layout {
    fn stem_taken(&self, folder: &str, stem: &str) -> bool {
        let lower = format!("{folder}/{stem}").to_lowercase();
        self.taken.contains(&format!("{lower}.json"))
            || self.taken.contains(&format!("{lower}_settings.json"))
            || lower
                .strip_suffix("_settings")
                .is_some_and(|base| self.taken.contains(&format!("{base}.json")))
    }

    /// A free stem in `folder` for an object named `name` with id `id`.
    fn stem(&self, folder: &str, name: &str, id: &str) -> String {
        free_stem(&file_stem(name), id, |s| self.stem_taken(folder, s))
    }

    fn take(&mut self, path: &str) {
        self.taken.insert(path.to_lowercase());
    }

    /// `Groups/<name>.json` of a directory group.
    fn group(&mut self, id: &str, name: &str) -> (String, Vec<u8>) {
        let path = format!("{GROUPS_FOLDER}/{}.json", self.stem(GROUPS_FOLDER, name, id));
        self.take(&path);
        (path, group_file(id, name))
    }

    /// The file(s) of a captured policy: its payload as captured (its
    /// assignments included), in its type's export folder.
    fn policy(&mut self, item: ExportItem) -> Result<Vec<(String, Vec<u8>)>, ExportError> {
        let folder = match opsledger_core::policy_types::lookup(&item.policy_type) {
            Some(info) => info.export_folder.to_owned(),
            // Not in this build's catalog: the type's key, which the scan
            // also reads as a type folder.
            None => file_stem(&item.policy_type),
        };
        let Value::Object(mut body) = item.payload else {
            return Err(ExportError::Corrupt(format!(
                "backup item {} holds a payload that is not an object",
                item.id
            )));
        };
        // The item's id travels in its file: read back, it is the same
        // policy, and its file is never mistaken for a saved collection.
        if !body.contains_key("id") && !body.is_empty() {
            body.insert("id".into(), Value::String(item.external_id.clone()));
        }
        let stem = self.stem(&folder, &item.display_name, &item.external_id);
        let files: Vec<(String, Vec<u8>)> = policy_files(&item.policy_type, &stem, body)
            .into_iter()
            .map(|(name, bytes)| (format!("{folder}/{name}"), bytes))
            .collect();
        for (path, _) in &files {
            self.take(path);
        }
        Ok(files)
    }
}

/// An archive being written to a temporary file (on blocking threads only).
struct ExportWriter {
    zip: zip::ZipWriter<std::fs::File>,
    layout: Layout,
    options: zip::write::SimpleFileOptions,
}

impl ExportWriter {
    fn new(created_at: i64) -> Result<ExportWriter, ExportError> {
        // Unlinked at once on Unix (gone when the response is sent or dropped);
        // removed on close elsewhere.
        let file = tempfile::tempfile()?;
        let time = DateTime::<Utc>::from_timestamp_millis(created_at)
            .and_then(|t| {
                zip::DateTime::from_date_and_time(
                    u16::try_from(t.year()).ok()?,
                    t.month() as u8,
                    t.day() as u8,
                    t.hour() as u8,
                    t.minute() as u8,
                    t.second() as u8,
                )
                .ok()
            })
            .unwrap_or_default();
        Ok(ExportWriter {
            zip: zip::ZipWriter::new(file),
            layout: Layout::default(),
            options: zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .last_modified_time(time)
                .unix_permissions(0o644),
        })
    }

    fn add(&mut self, path: &str, bytes: &[u8]) -> Result<(), ExportError> {
        self.zip.start_file(path, self.options)?;
        self.zip.write_all(bytes)?;
        Ok(())
    }

    /// The set's directory: its groups as `Groups/` files, and every object
    /// (groups, named locations, assignment filters) in `MigrationTable.json`,
    /// IntuneManagement's id ↔ name table, so a reference to an object the
    /// set did not capture (a named location left out) still reads back by name.
    fn directory(&mut self, directory: &Directory) -> Result<(), ExportError> {
        let mut objects = Vec::with_capacity(directory.entries.len());
        for e in &directory.entries {
            let kind = match e.kind {
                DirectoryKind::Group => {
                    let (path, bytes) = self.layout.group(&e.id, &e.display_name);
                    self.add(&path, &bytes)?;
                    "Group"
                }
                DirectoryKind::NamedLocation => "NamedLocation",
                DirectoryKind::AssignmentFilter => "AssignmentFilter",
            };
            objects.push(json!({"Id": e.id, "DisplayName": e.display_name, "Type": kind}));
        }
        if !objects.is_empty() {
            let table = serde_json::to_vec_pretty(&json!({ "Objects": objects })).expect("json");
            self.layout.take("MigrationTable.json");
            self.add("MigrationTable.json", &table)?;
        }
        Ok(())
    }

    fn items(&mut self, page: Vec<ExportItem>) -> Result<(), ExportError> {
        for item in page {
            for (path, bytes) in self.layout.policy(item)? {
                self.add(&path, &bytes)?;
            }
        }
        Ok(())
    }

    /// The finished archive, read from its start, and its size.
    fn finish(self) -> Result<(std::fs::File, u64), ExportError> {
        let mut file = self.zip.finish()?;
        let size = file.stream_position()?;
        file.rewind()?;
        Ok((file, size))
    }
}

/// Runs `f` on `writer` on a blocking thread (compression and file writes
/// must not hold an async worker), giving the writer back.
async fn on_writer(
    mut writer: ExportWriter,
    f: impl FnOnce(&mut ExportWriter) -> Result<(), ExportError> + Send + 'static,
) -> Result<ExportWriter, ExportError> {
    tokio::task::spawn_blocking(move || f(&mut writer).map(|()| writer)).await?
}

/// `GET …/backup-sets/{id}/export`: the set as a ZIP in the folder layout.
///
/// What bounds memory: the archive is written to an anonymous temporary
/// file, a page of [`PAYLOADS_PER_PAGE`] payloads at a time (each page read,
/// then compressed on a blocking thread, then dropped), and the response
/// streams that file. The server holds one page of payloads, plus a name
/// and a few numbers per file written (the layout's used names and the ZIP's
/// central directory) — never the archive or the whole set.
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let access = caller.require(&state, &ws, Capability::OperationsView).await?;
    check_id("backup set id", &id)?;
    query_pairs(query.as_deref(), &[])?;
    let set = visible_set(&state, &access, &id).await?;
    // The export is the set whole, secrets in clear (it must re-import as
    // it was taken): an admin's, as an unredacted review pack is.
    access.require(Capability::OperationsAdmin)?;
    let (store, vis, set_id) = (&state.store, &access.visibility, set.id.as_str());
    let directory = retry::read(move || store.visible_backup_set_directory(vis, set_id))
        .await?
        .ok_or_else(not_found)?;
    let directory: Directory = match directory {
        None => Directory::default(),
        Some(d) => serde_json::from_value(d)
            .map_err(|e| ExportError::Corrupt(format!("backup set {} directory: {e}", set.id)))?,
    };
    let created_at = set.created_at;
    let mut writer = tokio::task::spawn_blocking(move || ExportWriter::new(created_at))
        .await
        .map_err(ExportError::from)??;
    writer = on_writer(writer, move |w| w.directory(&directory)).await?;
    let mut after: Option<PayloadCursor> = None;
    loop {
        let cursor = after.as_ref();
        let page =
            retry::read(move || store.visible_backup_set_payloads(vis, set_id, cursor, PAYLOADS_PER_PAGE))
                .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.cursor());
        let full = page.len() == PAYLOADS_PER_PAGE as usize;
        writer = on_writer(writer, move |w| w.items(page)).await?;
        if !full {
            break;
        }
    }
    let (file, size) = tokio::task::spawn_blocking(move || writer.finish())
        .await
        .map_err(ExportError::from)??;
    let file = tokio::fs::File::from_std(file);
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024));
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"backup-set-{}.zip\"", set.id),
            ),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(policy_type: &str, id: &str, name: &str, payload: Value) -> ExportItem {
        ExportItem {
            id: format!("item-{id}"),
            policy_type: policy_type.into(),
            external_id: id.into(),
            display_name: name.into(),
            payload,
            payload_sha256: String::new(),
        }
    }

    fn paths(files: &[(String, Vec<u8>)]) -> Vec<&str> {
        files.iter().map(|(p, _)| p.as_str()).collect()
    }

    #[test]
    fn each_policy_gets_a_file_of_its_own_in_its_type_folder() {
        let mut l = Layout::default();
        let a = l
            .policy(item(
                "conditionalAccessPolicies",
                "0001",
                "CA: one",
                json!({"displayName": "CA: one"}),
            ))
            .unwrap();
        assert_eq!(paths(&a), ["ConditionalAccess/CA_ one.json"]);
        // The same name, in another case: a file of its own (case-insensitive disks).
        let b = l
            .policy(item(
                "conditionalAccessPolicies",
                "00aa",
                "ca: ONE",
                json!({"id": "00aa"}),
            ))
            .unwrap();
        assert_eq!(paths(&b), ["ConditionalAccess/ca_ ONE_00aa.json"]);
        // Another type: another folder, the same name is free.
        let c = l
            .policy(item("namedLocations", "0002", "CA: one", json!({"x": 1})))
            .unwrap();
        assert_eq!(paths(&c), ["NamedLocations/CA_ one.json"]);
        // The id travels in the file.
        let body: Value = serde_json::from_slice(&c[0].1).unwrap();
        assert_eq!(body, json!({"x": 1, "id": "0002"}));
    }

    #[test]
    fn a_template_and_a_policy_named_like_its_values_file_do_not_collide() {
        let mut l = Layout::default();
        let admx = |id: &str, name: &str| {
            item(
                "groupPolicyConfigurations",
                id,
                name,
                json!({"displayName": name, "definitionValues": []}),
            )
        };
        let edge = l.policy(admx("0001", "Edge")).unwrap();
        assert_eq!(
            paths(&edge),
            [
                "AdministrativeTemplates/Edge_Settings.json",
                "AdministrativeTemplates/Edge.json"
            ]
        );
        let settings = l.policy(admx("0002", "Edge_Settings")).unwrap();
        assert_eq!(
            paths(&settings),
            [
                "AdministrativeTemplates/Edge_Settings_0002_Settings.json",
                "AdministrativeTemplates/Edge_Settings_0002.json"
            ]
        );
        // In the other order: the template moves aside instead.
        let mut l = Layout::default();
        l.policy(admx("0002", "Edge_Settings")).unwrap();
        let edge = l.policy(admx("0001", "Edge")).unwrap();
        assert_eq!(
            paths(&edge),
            [
                "AdministrativeTemplates/Edge_0001_Settings.json",
                "AdministrativeTemplates/Edge_0001.json"
            ]
        );
    }

    #[test]
    fn a_payload_that_is_not_an_object_is_refused() {
        let mut l = Layout::default();
        assert!(matches!(
            l.policy(item("deviceConfigurations", "1", "x", json!([1]))),
            Err(ExportError::Corrupt(_))
        ));
    }

    #[test]
    fn queries_are_strict() {
        let code = |q: &str, keys: &[&str]| query_pairs(Some(q), keys).err().map(|e| e.code);
        assert_eq!(code("cursor=a", &["cursor"]), None);
        assert_eq!(
            code("cursor=a&cursor=b", &["cursor"]),
            Some("duplicate_query_param")
        );
        assert_eq!(code("limit=5", &["cursor"]), Some("invalid_query"));
        assert_eq!(code("x", &[]), Some("invalid_query"));
        assert_eq!(code("", &[]), None);
        assert_eq!(
            list_filter(Some("limit=501")).err().map(|e| e.code),
            Some("invalid_query")
        );
        assert_eq!(
            list_filter(Some("cursor=zz")).err().map(|e| e.code),
            Some("invalid_cursor")
        );
        assert_eq!(
            list_filter(Some("tenant_id=x")).err().map(|e| e.code),
            Some("invalid_query")
        );
        assert_eq!(list_filter(None).unwrap().limit, DEFAULT_SET_LIMIT);
    }
}

//! Reading an export folder into a model of the tenant: every file is read
//! or reported, nothing is silently dropped. Pure apart from the file
//! reads; one scan serves a provider until it writes.

use super::classify::{Kind, folder_kind, item_kind, odata_context_kind};
use super::decode::decode;
use crate::{Directory, DirectoryEntry, DirectoryKind, ItemFailure, NameDecision};
use opsledger_core::normalize::sha256_hex;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Files larger than this are reported, not read (no policy export is near it).
pub const MAX_FILE_BYTES: u64 = 32 * 1024 * 1024;
/// Folders deeper than this are not walked (a loop guard; symlinks are not followed).
pub const MAX_DEPTH: usize = 32;
/// A folder with more JSON files than this is refused as a whole.
pub const MAX_FILES: usize = 200_000;
/// A folder with more entries than this (files of any kind and folders) is
/// refused as a whole: an export is not a file system.
pub const MAX_ENTRIES: usize = 1_000_000;

/// One policy or group read from a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub kind: Kind,
    pub id: String,
    pub display_name: String,
    pub payload: Value,
    /// The file it came from, relative to the root, `/`-separated.
    pub path: String,
}

/// The tenant a folder holds.
#[derive(Debug, Default)]
pub struct Scan {
    /// Types with a type folder, an item or a failed file.
    pub exposed: BTreeSet<&'static str>,
    /// Readable policies per type, sorted by id.
    pub items: BTreeMap<&'static str, Vec<Item>>,
    /// Files of a type that could not be read.
    pub failures: BTreeMap<&'static str, Vec<ItemFailure>>,
    /// Files whose type could not be told, and unreadable directory files.
    pub unattributed: Vec<ItemFailure>,
    /// Files skipped because `MigrationTable.json` gives their id to another
    /// file's object (not failures: the export says which one is current).
    pub superseded: Vec<ItemFailure>,
    pub groups: Vec<Item>,
    pub directory: Directory,
}

/// Why the folder as a whole cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("folder `{0}` does not exist or is not a directory")]
    NotADirectory(String),
    #[error("folder `{path}` cannot be read: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("folder `{0}` holds more than {MAX_FILES} JSON files or {MAX_ENTRIES} entries")]
    TooManyFiles(String),
}

/// One entry of `MigrationTable.json` (IntuneManagement's id ↔ name map of
/// the source tenant's objects).
#[derive(Debug, Clone)]
struct Migration {
    id: String,
    display_name: String,
    kind: Option<DirectoryKind>,
}

/// What one file produced.
enum Parsed {
    Items(Vec<Item>),
    Failure(Option<&'static str>, ItemFailure),
}

pub fn scan(root: &Path) -> Result<Scan, ScanError> {
    if !root.is_dir() {
        return Err(ScanError::NotADirectory(root.display().to_string()));
    }
    std::fs::read_dir(root).map_err(|e| ScanError::Unreadable {
        path: root.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut s = Scan::default();
    let mut migrations: Vec<Migration> = Vec::new();
    let mut files: Vec<(PathBuf, String, Option<Kind>)> = Vec::new();
    let mut visited = 0usize;
    // One level past the limit is listed, so a folder not walked is named.
    let walker = walkdir::WalkDir::new(root)
        .follow_links(false)
        .max_depth(MAX_DEPTH + 1)
        .sort_by_file_name();
    for entry in walker {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let path = e.path().map(|p| rel(root, p)).unwrap_or_default();
                let failure = ItemFailure::new(path, "file_unreadable", format!("cannot be read: {e}"));
                // A folder that cannot be opened belongs to its own type
                // folder (or the one above): that type is not complete.
                match e.path().and_then(|p| folder_of(root, p, true)) {
                    Some(Kind::Policy(key)) => {
                        s.exposed.insert(key);
                        s.failures.entry(key).or_default().push(failure);
                    }
                    _ => s.unattributed.push(failure),
                }
                continue;
            }
        };
        visited += 1;
        if visited > MAX_ENTRIES {
            return Err(ScanError::TooManyFiles(root.display().to_string()));
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.depth() > 0 && name.starts_with('.') {
            // Hidden files and our own temporary files of an interrupted write.
            continue;
        }
        let folder = folder_of(root, entry.path(), entry.file_type().is_dir());
        // Not read, but named: a folder past the depth limit, a link (not
        // followed) to a JSON file or a folder. Its type is then not complete.
        let not_read = if entry.file_type().is_dir() && entry.depth() > MAX_DEPTH {
            Some(format!("is a folder more than {MAX_DEPTH} levels deep: not read"))
        } else if entry.file_type().is_symlink()
            && (name.to_ascii_lowercase().ends_with(".json")
                || std::fs::metadata(entry.path()).is_ok_and(|m| m.is_dir()))
        {
            Some("is a symbolic link: not followed, not read".to_owned())
        } else {
            None
        };
        if let Some(reason) = not_read {
            let failure = ItemFailure::new(rel(root, entry.path()), "file_unreadable", reason);
            match folder_of(root, entry.path(), false) {
                Some(Kind::Policy(key)) => {
                    s.exposed.insert(key);
                    s.failures.entry(key).or_default().push(failure);
                }
                _ => s.unattributed.push(failure),
            }
            continue;
        }
        if entry.file_type().is_dir() {
            if entry.depth() > 0
                && let Some(Kind::Policy(key)) = folder_kind(&name)
            {
                s.exposed.insert(key);
            }
            continue;
        }
        if !entry.file_type().is_file() || !name.to_ascii_lowercase().ends_with(".json") {
            continue;
        }
        if files.len() >= MAX_FILES {
            return Err(ScanError::TooManyFiles(root.display().to_string()));
        }
        let path = rel(root, entry.path());
        if name.eq_ignore_ascii_case("MigrationTable.json") {
            match read_json(entry.path()) {
                Ok(v) => migrations.extend(migration_entries(&v)),
                Err((code, msg)) => s.unattributed.push(ItemFailure::new(path, code, msg)),
            }
            continue;
        }
        files.push((entry.path().to_owned(), path, folder));
    }

    // Administrative Templates keep their settings beside the policy, in
    // `<name>_Settings.json`: merged into the policy, not read as a policy.
    let paths: BTreeSet<String> = files.iter().map(|f| f.1.clone()).collect();
    let companion_of = |path: &str| -> Option<String> {
        let lower = path.to_ascii_lowercase();
        let stem = lower.strip_suffix("_settings.json")?;
        let main = format!("{}.json", &path[..stem.len()]);
        paths.contains(&main).then_some(main)
    };
    let mut companions: BTreeMap<String, (PathBuf, String)> = BTreeMap::new();
    let mut parsed: Vec<Parsed> = Vec::new();
    for (abs, path, folder) in &files {
        if let Some(main) = companion_of(path) {
            companions.insert(main, (abs.clone(), path.clone()));
            continue;
        }
        parsed.extend(parse_file(abs, path, *folder));
    }
    let mut items: Vec<Item> = Vec::new();
    for p in parsed {
        match p {
            Parsed::Items(mut list) => items.append(&mut list),
            Parsed::Failure(Some(key), f) => {
                s.exposed.insert(key);
                s.failures.entry(key).or_default().push(f);
            }
            Parsed::Failure(None, f) => s.unattributed.push(f),
        }
    }
    for item in &mut items {
        let Some((abs, path)) = companions.remove(&item.path) else {
            continue;
        };
        if item.kind != Kind::Policy("groupPolicyConfigurations") {
            // Not a template's companion after all: read it as a file of its own.
            companions.insert(item.path.clone(), (abs, path));
            continue;
        }
        match read_json(&abs) {
            Ok(v) => {
                let values = match &v {
                    Value::Array(_) => Some(v.clone()),
                    Value::Object(o) => o.get("definitionValues").or_else(|| o.get("value")).cloned(),
                    _ => None,
                };
                match values {
                    Some(values) => {
                        item.payload["definitionValues"] = values;
                    }
                    None => {
                        s.failures
                            .entry("groupPolicyConfigurations")
                            .or_default()
                            .push(ItemFailure::new(
                                path,
                                "file_companion_malformed",
                                "holds no list of definition values",
                            ))
                    }
                }
            }
            Err((code, msg)) => s
                .failures
                .entry("groupPolicyConfigurations")
                .or_default()
                .push(ItemFailure::new(path, code, msg)),
        }
    }
    for (abs, path) in companions.into_values() {
        let folder = files.iter().find(|f| f.1 == path).and_then(|f| f.2);
        for p in parse_file(&abs, &path, folder) {
            match p {
                Parsed::Items(mut list) => items.append(&mut list),
                Parsed::Failure(Some(key), f) => {
                    s.exposed.insert(key);
                    s.failures.entry(key).or_default().push(f);
                }
                Parsed::Failure(None, f) => s.unattributed.push(f),
            }
        }
    }

    // Two files with one id in one type: the migration table may say which
    // owns it; otherwise none of them is trusted.
    let mut by_id: BTreeMap<(Kind, String), Vec<Item>> = BTreeMap::new();
    for item in items {
        by_id
            .entry((item.kind, item.id.to_ascii_lowercase()))
            .or_default()
            .push(item);
    }
    for ((kind, id), mut same) in by_id {
        let kept = if same.len() == 1 {
            same.pop()
        } else {
            let owner = migrations
                .iter()
                .filter(|m| m.id.eq_ignore_ascii_case(&id))
                .find_map(|m| {
                    let owners: Vec<usize> = same
                        .iter()
                        .enumerate()
                        .filter(|(_, i)| i.display_name.trim().eq_ignore_ascii_case(m.display_name.trim()))
                        .map(|(n, _)| n)
                        .collect();
                    (owners.len() == 1).then(|| owners[0])
                });
            let all_paths: Vec<String> = same.iter().map(|i| i.path.clone()).collect();
            let owner_item = owner.map(|n| same.remove(n));
            if let (Some(o), Some(kind)) = (&owner_item, directory_kind(kind)) {
                // The export named one id twice: the restore must say which
                // name its references are mapped by, and why.
                let mut passed_over: Vec<String> = same
                    .iter()
                    .map(|i| i.display_name.trim().to_owned())
                    .filter(|n| !n.eq_ignore_ascii_case(o.display_name.trim()))
                    .collect();
                passed_over.sort();
                passed_over.dedup();
                s.directory.name_decisions.push(NameDecision {
                    kind,
                    id: o.id.clone(),
                    chosen: o.display_name.trim().to_owned(),
                    passed_over,
                    decided_by: "MigrationTable.json".into(),
                });
            }
            for other in &same {
                let others: Vec<&str> = all_paths
                    .iter()
                    .filter(|p| **p != other.path)
                    .map(String::as_str)
                    .collect();
                let message = match &owner_item {
                    Some(o) => format!(
                        "has the id `{}` of {}, which MigrationTable.json gives to `{}`",
                        other.id, o.path, o.display_name
                    ),
                    None => format!(
                        "has the same id `{}` as {}; neither is read (no MigrationTable.json entry says which owns it)",
                        other.id,
                        others.join(", ")
                    ),
                };
                if owner_item.is_some() {
                    // Resolved by the table: the other file is a stale copy, skipped.
                    s.superseded.push(ItemFailure::new(
                        other.path.clone(),
                        "file_duplicate_superseded",
                        message,
                    ));
                    continue;
                }
                let failure = ItemFailure::new(other.path.clone(), "file_duplicate_id", message);
                match kind {
                    Kind::Policy(key) => s.failures.entry(key).or_default().push(failure),
                    Kind::Group => s.unattributed.push(failure),
                }
            }
            owner_item
        };
        let Some(item) = kept else { continue };
        match item.kind {
            Kind::Policy(key) => {
                s.exposed.insert(key);
                s.items.entry(key).or_default().push(item);
            }
            Kind::Group => s.groups.push(item),
        }
    }

    // The directory: groups (files first, then the migration table's names),
    // named locations and assignment filters (policies that also name things).
    for g in &s.groups {
        s.directory.insert(DirectoryEntry {
            kind: DirectoryKind::Group,
            id: g.id.clone(),
            display_name: g.display_name.clone(),
        });
    }
    for (key, kind) in [
        ("namedLocations", DirectoryKind::NamedLocation),
        ("assignmentFilters", DirectoryKind::AssignmentFilter),
    ] {
        for i in s.items.get(key).into_iter().flatten() {
            s.directory.insert(DirectoryEntry {
                kind,
                id: i.id.clone(),
                display_name: i.display_name.clone(),
            });
        }
    }
    for m in migrations {
        if let Some(kind) = m.kind {
            s.directory.insert(DirectoryEntry {
                kind,
                id: m.id,
                display_name: m.display_name,
            });
        }
    }
    Ok(s)
}

/// The directory kind of a scanned kind, if its objects are referred to by id.
fn directory_kind(kind: Kind) -> Option<DirectoryKind> {
    match kind {
        Kind::Group => Some(DirectoryKind::Group),
        Kind::Policy(key) => DirectoryKind::ALL
            .into_iter()
            .find(|k| k.policy_type() == Some(key)),
    }
}

/// The nearest type folder above `path` (or `path` itself for a directory), inside the root.
fn folder_of(root: &Path, path: &Path, is_dir: bool) -> Option<Kind> {
    let relative = path.strip_prefix(root).ok()?;
    let mut dirs: Vec<_> = relative.components().collect();
    if !is_dir {
        dirs.pop();
    }
    dirs.iter()
        .rev()
        .find_map(|c| folder_kind(&c.as_os_str().to_string_lossy()))
}

fn rel(root: &Path, path: &Path) -> String {
    let r = path.strip_prefix(root).unwrap_or(path);
    r.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// A file's JSON, or the failure code and reason.
pub fn read_json(path: &Path) -> Result<Value, (&'static str, String)> {
    let meta = std::fs::metadata(path).map_err(|e| ("file_unreadable", format!("cannot be read: {e}")))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err((
            "file_too_large",
            format!("is {} bytes, over the limit of {MAX_FILE_BYTES}", meta.len()),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| ("file_unreadable", format!("cannot be read: {e}")))?;
    let (text, _) = decode(&bytes).map_err(|e| ("file_encoding_invalid", e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| ("file_json_invalid", format!("is not valid JSON: {e}")))
}

/// What a file holds: its items, and a failure per element that cannot be
/// read (a collection's other elements are still read).
fn parse_file(abs: &Path, path: &str, folder: Option<Kind>) -> Vec<Parsed> {
    let folder_key = match folder {
        Some(Kind::Policy(k)) => Some(k),
        _ => None,
    };
    let v = match read_json(abs) {
        Ok(v) => v,
        Err((code, msg)) => return vec![Parsed::Failure(folder_key, ItemFailure::new(path, code, msg))],
    };
    let Value::Object(obj) = &v else {
        return vec![Parsed::Failure(
            folder_key,
            ItemFailure::new(path, "file_not_an_object", "holds JSON that is not an object"),
        )];
    };
    // A Graph collection answer saved whole: `{"@odata.context": "…#deviceManagement/x", "value": [...]}`.
    let collection = obj.get("value").and_then(Value::as_array).filter(|_| {
        !obj.contains_key("id")
            && obj
                .get("@odata.context")
                .and_then(Value::as_str)
                .and_then(odata_context_kind)
                .is_none_or(|(_, entity)| !entity)
    });
    let (elements, context_kind): (Vec<&Value>, Option<Kind>) = match collection {
        Some(list) => (
            list.iter().collect(),
            obj.get("@odata.context")
                .and_then(Value::as_str)
                .and_then(odata_context_kind)
                .map(|(k, _)| k),
        ),
        None => (vec![&v], None),
    };
    let mut items = Vec::new();
    let mut out = Vec::new();
    for (n, element) in elements.into_iter().enumerate() {
        let where_ = if collection.is_some() {
            format!("{path}#value[{n}]")
        } else {
            path.to_owned()
        };
        if !element.is_object() {
            out.push(Parsed::Failure(
                folder_key,
                ItemFailure::new(
                    where_,
                    "file_not_an_object",
                    "holds an element that is not an object",
                ),
            ));
            continue;
        }
        let Some(kind) = item_kind(folder.or(context_kind), element) else {
            out.push(Parsed::Failure(
                None,
                ItemFailure::new(
                    where_,
                    "file_type_unknown",
                    "its policy type cannot be told: no type folder, @odata.type, @odata.context or known shape",
                ),
            ));
            continue;
        };
        let stem = Path::new(path)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let display_name = element
            .get("displayName")
            .or_else(|| element.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or(stem);
        let id = match element
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
        {
            Some(id) => id.to_owned(),
            None if kind == Kind::Group => {
                out.push(Parsed::Failure(
                    None,
                    ItemFailure::new(
                        where_,
                        "file_missing_id",
                        "is a group without an id: it cannot map references",
                    ),
                ));
                continue;
            }
            None => derived_id(kind, &display_name),
        };
        items.push(Item {
            kind,
            id,
            display_name,
            payload: element.clone(),
            path: where_,
        });
    }
    out.push(Parsed::Items(items));
    out
}

/// A stable id for an item exported without one: from its type and name, so
/// every read of the folder gives the same id (two such items with one name
/// are duplicates, reported as such).
pub fn derived_id(kind: Kind, display_name: &str) -> String {
    let key = match kind {
        Kind::Policy(k) => k,
        Kind::Group => "group",
    };
    let h = sha256_hex(format!("{key}\n{}", display_name.trim().to_lowercase()).as_bytes());
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn migration_entries(v: &Value) -> Vec<Migration> {
    let list = v
        .get("Objects")
        .or_else(|| v.get("objects"))
        .and_then(Value::as_array)
        .cloned()
        .or_else(|| v.as_array().cloned())
        .unwrap_or_default();
    list.iter()
        .filter_map(|o| {
            let get = |a: &str, b: &str| o.get(a).or_else(|| o.get(b)).and_then(Value::as_str);
            let id = get("Id", "id")?;
            let name = get("DisplayName", "displayName")?;
            let kind = match get("Type", "type").map(str::to_ascii_lowercase).as_deref() {
                Some("group") => Some(DirectoryKind::Group),
                Some("namedlocation") => Some(DirectoryKind::NamedLocation),
                Some("assignmentfilter" | "filter") => Some(DirectoryKind::AssignmentFilter),
                _ => None,
            };
            Some(Migration {
                id: id.to_owned(),
                display_name: name.to_owned(),
                kind,
            })
        })
        .collect()
}

//! Writes of a folder tenant (a restore target), in the layout it reads: one
//! file per policy in its type's export folder, `<name>_Settings.json` for an
//! Administrative Template's definition values, groups in `Groups/`. Every
//! file is written whole under a hidden temporary name, flushed, then
//! renamed over the old one, so a reader (or a crash) never sees half a file.

use super::scan::Item;
use crate::{DirectoryEntry, DirectoryKind, Policy, ProviderError};
use opsledger_core::normalize::TIMESTAMPS;
use opsledger_core::policy_types::PolicyTypeInfo;
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};

const ADMX: &str = "groupPolicyConfigurations";

/// The folder a tenant's groups are written to (and read from).
pub const GROUPS_FOLDER: &str = "Groups";

fn io_error(path: &Path, e: std::io::Error) -> ProviderError {
    ProviderError::Unavailable(format!("cannot write `{}`: {e}", path.display()))
}

/// Writes `bytes` to `path` atomically (temporary file, flush, rename).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ProviderError> {
    use std::io::Write;
    let dir = path
        .parent()
        .ok_or_else(|| io_error(path, std::io::ErrorKind::InvalidInput.into()))?;
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", uuid::Uuid::now_v7()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error(path, e));
    }
    Ok(())
}

/// A display name as a file name: characters Windows or Unix refuse become
/// `_`, and it is kept short (at most 150 bytes, so that with `_Settings`,
/// a suffix and the temporary name's it stays under the usual 255-byte
/// limit in any script).
pub fn file_stem(display_name: &str) -> String {
    let cleaned: String = display_name
        .trim()
        .chars()
        .map(|c| {
            if c.is_control() || "/\\:*?\"<>|".contains(c) {
                '_'
            } else {
                c
            }
        })
        .scan(0usize, |bytes, c| {
            *bytes += c.len_utf8();
            (*bytes <= 150).then_some(c)
        })
        .collect();
    let cleaned = cleaned.trim_matches(|c| c == '.' || c == ' ').to_owned();
    if cleaned.is_empty() {
        "unnamed".to_owned()
    } else {
        cleaned
    }
}

/// The body as stored: without its own id, timestamps, the instance
/// annotations Graph adds (`@odata.context`, `@odata.id`, `@odata.editLink`
/// and `x@odata.type`-style member annotations), and its assignments
/// (written by `assign`). `@odata.type` stays: a Graph restore needs it.
fn stored_body(body: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(obj) = body.as_object() {
        for (k, v) in obj {
            let annotation = k != "@odata.type" && k.contains("@odata.");
            if k == "id" || k == "assignments" || TIMESTAMPS.contains(&k.as_str()) || annotation {
                continue;
            }
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

fn pretty(v: &Value) -> Vec<u8> {
    let mut s = serde_json::to_vec_pretty(v).expect("json");
    s.push(b'\n');
    s
}

/// The files a policy is written as, by name inside its type's export
/// folder: `<stem>.json` with the body and, for an Administrative
/// Template, its definition values in `<stem>_Settings.json` (companion
/// first). Pure: the one layout a folder write and a backup set's export
/// (`GET …/backup-sets/{id}/export`) share, and the one the scan reads.
pub fn policy_files(type_key: &str, stem: &str, mut body: Map<String, Value>) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::with_capacity(2);
    if type_key == ADMX
        && let Some(values) = body.remove("definitionValues")
    {
        files.push((format!("{stem}_Settings.json"), pretty(&values)));
    }
    files.push((format!("{stem}.json"), pretty(&Value::Object(body))));
    files
}

/// A group's file, as `Groups/<stem>.json` holds it (what the scan reads
/// back into the directory: its id and name).
pub fn group_file(id: &str, display_name: &str) -> Vec<u8> {
    pretty(&json!({
        "@odata.type": "#microsoft.graph.group",
        "id": id,
        "displayName": display_name,
        "securityEnabled": true,
        "mailEnabled": false,
    }))
}

/// A stem for an object with id `id` that is not `taken`: `stem`, else
/// `stem` and the random end of the id (a UUIDv7's first digits are a
/// timestamp, the same for objects created within a minute), else `stem`
/// and a new UUID.
pub fn free_stem(stem: &str, id: &str, taken: impl Fn(&str) -> bool) -> String {
    if !taken(stem) {
        return stem.to_owned();
    }
    let tail: String = id
        .chars()
        .rev()
        .filter(char::is_ascii_hexdigit)
        .take(12)
        .collect();
    let tail: String = tail.chars().rev().collect();
    let with_id = format!("{stem}_{tail}");
    if !taken(&with_id) {
        return with_id;
    }
    format!("{stem}_{}", uuid::Uuid::now_v7().simple())
}

fn display_name_of(body: &Map<String, Value>) -> String {
    body.get("displayName")
        .or_else(|| body.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("unnamed")
        .to_owned()
}

/// A free file name for a new object in `dir` ([`free_stem`] against the files there).
fn new_path(dir: &Path, stem: &str, id: &str) -> PathBuf {
    let stem = free_stem(stem, id, |s| dir.join(format!("{s}.json")).exists());
    dir.join(format!("{stem}.json"))
}

/// Writes a policy file (and an Administrative Template's companion), as [`policy_files`] lays them out.
fn write_policy_files(path: &Path, type_key: &str, body: Map<String, Value>) -> Result<(), ProviderError> {
    let dir = path
        .parent()
        .ok_or_else(|| io_error(path, std::io::ErrorKind::InvalidInput.into()))?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let main = format!("{stem}.json");
    for (name, bytes) in policy_files(type_key, &stem, body) {
        // The policy's own file keeps its exact name: a rewritten export
        // file may spell its extension `.JSON`.
        let target = if name == main {
            path.to_owned()
        } else {
            dir.join(name)
        };
        write_atomic(&target, &bytes)?;
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ProviderError> + Send + 'static,
) -> Result<T, ProviderError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ProviderError::Unavailable(format!("folder write interrupted: {e}")))?
}

pub async fn create_group(root: &Path, display_name: &str) -> Result<DirectoryEntry, ProviderError> {
    let id = uuid::Uuid::now_v7().to_string();
    let dir = root.join(GROUPS_FOLDER);
    let bytes = group_file(&id, display_name);
    let path = new_path(&dir, &file_stem(display_name), &id);
    blocking(move || write_atomic(&path, &bytes)).await?;
    Ok(DirectoryEntry {
        kind: DirectoryKind::Group,
        id,
        display_name: display_name.to_owned(),
    })
}

pub async fn create_policy(
    root: &Path,
    info: &PolicyTypeInfo,
    body: &Value,
) -> Result<Policy, ProviderError> {
    let id = uuid::Uuid::now_v7().to_string();
    let mut stored = stored_body(body);
    let display_name = display_name_of(&stored);
    stored.insert("id".into(), Value::String(id.clone()));
    let dir = root.join(info.export_folder);
    let path = new_path(&dir, &file_stem(&display_name), &id);
    let key = info.key;
    let payload = Value::Object(stored.clone());
    blocking(move || write_policy_files(&path, key, stored)).await?;
    Ok(Policy {
        id,
        display_name,
        payload,
    })
}

/// Rewrites the file (or the collection element) an item came from.
fn rewrite(root: &Path, item: &Item, type_key: &str, new: Map<String, Value>) -> Result<(), ProviderError> {
    match item.path.split_once("#value[") {
        None => write_policy_files(&root.join(&item.path), type_key, new),
        Some((file, index)) => {
            let n: usize = index
                .trim_end_matches(']')
                .parse()
                .map_err(|_| ProviderError::Malformed(format!("bad item path `{}`", item.path)))?;
            let path = root.join(file);
            let mut whole = super::scan::read_json(&path)
                .map_err(|(code, msg)| ProviderError::Malformed(format!("{file} {msg} ({code})")))?;
            let slot = whole
                .get_mut("value")
                .and_then(|v| v.get_mut(n))
                .ok_or_else(|| ProviderError::NotFound(item.path.clone()))?;
            *slot = Value::Object(new);
            write_atomic(&path, &pretty(&whole))
        }
    }
}

fn key_of(item: &Item) -> &'static str {
    match item.kind {
        super::classify::Kind::Policy(k) => k,
        super::classify::Kind::Group => "groups",
    }
}

pub async fn update_policy(root: &Path, existing: &Item, body: &Value) -> Result<Policy, ProviderError> {
    let mut stored = stored_body(body);
    stored.insert("id".into(), Value::String(existing.id.clone()));
    if let Some(a) = existing.payload.get("assignments") {
        stored.insert("assignments".into(), a.clone());
    }
    let display_name = display_name_of(&stored);
    let payload = Value::Object(stored.clone());
    let (root, item) = (root.to_owned(), existing.clone());
    blocking(move || rewrite(&root, &item, key_of(&item), stored)).await?;
    Ok(Policy {
        id: existing.id.clone(),
        display_name,
        payload,
    })
}

pub async fn assign(root: &Path, existing: &Item, assignments: &[Value]) -> Result<(), ProviderError> {
    let mut stored = existing.payload.as_object().cloned().unwrap_or_default();
    stored.insert("assignments".into(), Value::Array(assignments.to_vec()));
    let (root, item) = (root.to_owned(), existing.clone());
    blocking(move || rewrite(&root, &item, key_of(&item), stored)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_safe_on_every_system() {
        assert_eq!(
            file_stem("CA001: Block / legacy *auth*?"),
            "CA001_ Block _ legacy _auth__"
        );
        assert_eq!(file_stem("  ..  "), "unnamed");
        assert_eq!(file_stem(&"x".repeat(400)).len(), 150);
    }

    #[test]
    fn an_administrative_template_is_two_files_any_other_policy_one() {
        let body = |v: Value| v.as_object().cloned().unwrap();
        let admx = policy_files(
            "groupPolicyConfigurations",
            "Edge",
            body(json!({"displayName": "Edge", "definitionValues": [{"enabled": true}]})),
        );
        let names: Vec<&str> = admx.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Edge_Settings.json", "Edge.json"]);
        assert_eq!(
            serde_json::from_slice::<Value>(&admx[0].1).unwrap(),
            json!([{"enabled": true}])
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&admx[1].1).unwrap(),
            json!({"displayName": "Edge"})
        );
        let other = policy_files("deviceConfigurations", "X", body(json!({"definitionValues": []})));
        assert_eq!(other.len(), 1);
        assert_eq!(other[0].0, "X.json");
    }

    #[test]
    fn a_taken_stem_gets_the_end_of_the_id() {
        let id = "01930000-aaaa-7bbb-8ccc-0123456789ab";
        assert_eq!(free_stem("A", id, |_| false), "A");
        assert_eq!(free_stem("A", id, |s| s == "A"), "A_0123456789ab");
        let third = free_stem("A", id, |s| s == "A" || s == "A_0123456789ab");
        assert!(third.starts_with("A_") && third.len() == 34, "{third}");
    }

    #[test]
    fn stored_bodies_lose_identity_timestamps_annotations_and_assignments() {
        let body = json!({"@odata.context": "c", "@odata.type": "#microsoft.graph.x", "id": "1",
                          "createdDateTime": "t", "state@odata.type": "#s", "state": "on", "assignments": []});
        let stored = stored_body(&body);
        assert_eq!(
            Value::Object(stored),
            json!({"@odata.type": "#microsoft.graph.x", "state": "on"})
        );
    }
}

//! The normalizer: one pure function that turns a policy as a source answered
//! it into the form two reads of the same configuration share, so content
//! hashes (backup items, inventory items, "read back equal") and, later, the
//! baseline diff agree on what "the same" means.
//!
//! Rules, applied at every depth (the README lists them too):
//!
//! 1. every member named `id` or `version` is dropped — each object's own
//!    identity is not its content (settings and assignments carry ids too) —
//!    except in an object whose only content is its `id`: that is a
//!    reference (`authenticationStrength: {"id": …}`), not an identity;
//! 2. server-kept timestamps are dropped: [`TIMESTAMPS`];
//! 3. every OData annotation is dropped: members whose name starts with `@odata.`
//!    or contains `@odata.` (`settings@odata.context`, `state@odata.type`) —
//!    except bindings (`definition@odata.bind`): they say *which* object a
//!    value is for (an Administrative Template's setting), and are kept as
//!    the last segment of their URL (`groupPolicyDefinitions('…')`), the same
//!    from any host or API version; so is every advertised OData action or
//!    function (members named `#…`, e.g. `#microsoft.graph.restore`, whose
//!    target URL names the object's own id);
//! 4. members whose value is `null` are dropped: Graph omits and nulls
//!    "not configured" interchangeably; an integral number written as a
//!    float (`1.0`) is the integer (`1`): exporters write integral doubles
//!    either way; an empty `assignments` list is dropped too: a policy
//!    assigned to no one reads as `[]` from Graph and without the member
//!    from an export;
//! 5. a string equal (ASCII case-insensitive) to the id of an object of the
//!    tenant's directory becomes `"<kind>:<display name>"`, trimmed and in
//!    lower case (a restore maps names without case too) — a reference
//!    compares by what it points to, not by a tenant's own id; an id no
//!    directory knows stays as it is;
//! 6. arrays are order-insensitive: their elements are normalized, then
//!    sorted by their natural key — `settingDefinitionId` (of the element or
//!    its `settingInstance`) for settings, the `target` for assignments — and
//!    then by their canonical JSON;
//! 7. the canonical JSON ([`canonical_json`]) writes object members sorted by
//!    name, without whitespace; the content hash is its SHA-256, hex;
//! 8. an assignment filter has one form, settled in each object holding
//!    [`FILTER_ID`], [`FILTER_TYPE`] or [`FILTER_NAME`] (an assignment's
//!    `target`) before the rules above reach its members — so rule 6 sorts
//!    assignments by the settled `target`:
//!    - no filter — an id absent, `null`, empty or the all-zero GUID, no
//!      name, and a type absent or `none` (any case) — drops the three
//!      members: Graph answers type `none` with a `null` id, an export omits
//!      both;
//!    - a filter written by name ([`FILTER_NAME`], with no id or with an id
//!      no directory knows) becomes [`FILTER_ID`]
//!      `"assignment_filter:<name>"`, trimmed and in lower case: what rule 5
//!      makes of the id of the filter of that name ([`FILTER_KIND`] is the
//!      directory's kind for filters), so a filter by name and by id are one;
//!      with an id the directory knows, the id is kept (rule 5 resolves it);
//!      the name member is dropped either way;
//!    - the type is kept (`include` and `exclude` are content); an id no
//!      directory knows, without a name, stays an id (rule 5).

use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Server-kept timestamps (rule 2).
pub const TIMESTAMPS: &[&str] = &[
    "createdDateTime",
    "lastModifiedDateTime",
    "modifiedDateTime",
    "deletedDateTime",
    "renewedDateTime",
];

/// An assignment target's filter, by id (rule 8).
pub const FILTER_ID: &str = "deviceAndAppManagementAssignmentFilterId";
/// An assignment target's filter type: `include`, `exclude` or `none` (rule 8).
pub const FILTER_TYPE: &str = "deviceAndAppManagementAssignmentFilterType";
/// An assignment target's filter, by name, as some exports write it (rule 8).
pub const FILTER_NAME: &str = "deviceAndAppManagementAssignmentFilterName";
/// The kind a tenant's directory gives assignment filters in [`Names`]
/// (`opsledger_providers::DirectoryKind::AssignmentFilter.as_str()`): the
/// kind rule 8 writes a filter named by name as.
pub const FILTER_KIND: &str = "assignment_filter";
/// The id Graph writes for "no filter" beside a type `none` (rule 8).
const NO_FILTER_ID: &str = "00000000-0000-0000-0000-000000000000";

/// Directory ids and what they name, for rule 5.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// Lowercase id → `"<kind>:<display name>"`.
    by_id: BTreeMap<String, String>,
}

impl Names {
    pub fn insert(&mut self, id: &str, kind: &str, display_name: &str) {
        self.by_id
            .entry(id.to_ascii_lowercase())
            .or_insert_with(|| format!("{kind}:{}", display_name.trim()));
    }

    /// What a string becomes under rule 5.
    pub fn resolve(&self, s: &str) -> Option<&str> {
        if self.by_id.is_empty() {
            return None;
        }
        self.by_id.get(&s.to_ascii_lowercase()).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// Whether a member is dropped by rules 1–3 (`id` is decided by the caller: rule 1's exception).
fn dropped(name: &str) -> bool {
    name == "version"
        || (name.contains("@odata.") && !is_binding(name))
        || is_operation_advertisement(name)
        || TIMESTAMPS.contains(&name)
}

/// An OData action or function a service advertises on the object
/// (`"#microsoft.graph.restore": {"target": ".../namedLocations('<id>')/..."}`):
/// service metadata naming the object's own id, never its content.
pub fn is_operation_advertisement(name: &str) -> bool {
    name.starts_with('#')
}

fn is_binding(name: &str) -> bool {
    name.ends_with("@odata.bind")
}

/// A binding's URL as its last segment: `groupPolicyDefinitions('x')`.
fn binding_target(v: &Value) -> Value {
    match v {
        Value::String(url) => {
            let path = url.split('?').next().unwrap_or(url);
            Value::String(path.rsplit('/').next().unwrap_or(path).to_owned())
        }
        Value::Array(items) => Value::Array(items.iter().map(binding_target).collect()),
        other => other.clone(),
    }
}

/// Absent, `null`, or a string empty after trim.
fn blank(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.trim().is_empty(),
        Some(_) => false,
    }
}

/// Rule 8: an object's assignment filter in its one form, before its
/// members are normalized. `None` when the object holds no filter member.
fn unify_filter(map: &Map<String, Value>, names: &Names) -> Option<Map<String, Value>> {
    let (id, kind, name) = (map.get(FILTER_ID), map.get(FILTER_TYPE), map.get(FILTER_NAME));
    if id.is_none() && kind.is_none() && name.is_none() {
        return None;
    }
    let mut out = map.clone();
    if blank(name) {
        out.remove(FILTER_NAME);
        let no_id = blank(id)
            || id
                .and_then(Value::as_str)
                .is_some_and(|s| s.trim() == NO_FILTER_ID);
        let no_type = blank(kind)
            || kind
                .and_then(Value::as_str)
                .is_some_and(|s| s.trim().eq_ignore_ascii_case("none"));
        if no_id && no_type {
            out.remove(FILTER_ID);
            out.remove(FILTER_TYPE);
        }
        return Some(out);
    }
    // A name that is not a string is left as written.
    let Some(name) = name.and_then(Value::as_str) else {
        return Some(out);
    };
    let known = id
        .and_then(Value::as_str)
        .is_some_and(|s| names.resolve(s).is_some());
    if !known {
        let by_name = format!("{FILTER_KIND}:{}", name.trim()).to_lowercase();
        out.insert(FILTER_ID.to_owned(), Value::String(by_name));
    }
    out.remove(FILTER_NAME);
    Some(out)
}

/// The normalized form of `value` (rules 1–6 and 8).
pub fn normalize(value: &Value, names: &Names) -> Value {
    match value {
        Value::Object(map) => {
            let unified = unify_filter(map, names);
            let map = unified.as_ref().unwrap_or(map);
            let mut out = Map::new();
            for (k, v) in map {
                let unassigned = k == "assignments" && v.as_array().is_some_and(Vec::is_empty);
                if k == "id" || dropped(k) || v.is_null() || unassigned {
                    continue;
                }
                let v = if is_binding(k) {
                    binding_target(v)
                } else {
                    v.clone()
                };
                out.insert(k.clone(), normalize(&v, names));
            }
            // Rule 1's exception: `{"id": …}` alone is a reference to something.
            if out.is_empty()
                && let Some(id) = map.get("id").filter(|v| !v.is_null())
            {
                out.insert("id".into(), normalize(id, names));
            }
            Value::Object(out)
        }
        Value::Number(n) => match n.as_f64() {
            // Rule 4; within ±2^53 a double is an exact integer.
            Some(f)
                if !n.is_i64() && !n.is_u64() && f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 =>
            {
                Value::from(f as i64)
            }
            _ => value.clone(),
        },
        Value::Array(items) => {
            let mut keyed: Vec<(String, String, Value)> = items
                .iter()
                .map(|v| {
                    let n = normalize(v, names);
                    (natural_key(&n), canonical_json(&n), n)
                })
                .collect();
            keyed.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
            Value::Array(keyed.into_iter().map(|(_, _, v)| v).collect())
        }
        // Names compare without case, as a restore maps them.
        Value::String(s) => match names.resolve(s) {
            Some(name) => Value::String(name.to_lowercase()),
            None => value.clone(),
        },
        other => other.clone(),
    }
}

/// The references a value makes to directory objects: every string in it
/// that is a known id, with what it names (`"<kind>:<display name>"`). What
/// a backup item stores so a restore can map it by name.
pub fn references(value: &Value, names: &Names) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if !names.is_empty() {
        collect_references(value, names, &mut out);
    }
    out
}

fn collect_references(value: &Value, names: &Names, out: &mut BTreeMap<String, String>) {
    match value {
        Value::String(s) => {
            if let Some(name) = names.resolve(s) {
                out.insert(s.clone(), name.to_owned());
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_references(v, names, out)),
        Value::Object(map) => map.values().for_each(|v| collect_references(v, names, out)),
        _ => {}
    }
}

/// The natural key of a normalized array element (rule 6); empty when it has none.
pub fn natural_key(v: &Value) -> String {
    let Some(obj) = v.as_object() else {
        return String::new();
    };
    if let Some(Value::String(id)) = obj.get("settingDefinitionId") {
        return format!("setting:{id}");
    }
    if let Some(Value::String(id)) = obj
        .get("settingInstance")
        .and_then(|i| i.get("settingDefinitionId"))
    {
        return format!("setting:{id}");
    }
    if let Some(Value::String(id)) = obj
        .get("definition@odata.bind")
        .or_else(|| obj.get("definitionId"))
    {
        return format!("definition:{id}");
    }
    if let Some(target) = obj.get("target") {
        return format!("target:{}", canonical_json(target));
    }
    String::new()
}

/// JSON with object members sorted by name and no whitespace (rule 7).
/// Written here rather than relying on `serde_json`'s map order, which a
/// feature flag elsewhere in the build (`preserve_order`) would change.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The content hash of a policy: SHA-256 (hex) of the canonical JSON of its
/// normalized form. Equal for two reads of the same configuration, whatever
/// their ids, annotations, timestamps, array order or tenant.
pub fn content_hash(value: &Value, names: &Names) -> String {
    sha256_hex(canonical_json(&normalize(value, names)).as_bytes())
}

/// SHA-256 of bytes, hex. (The core stays dependency-light: `sha2` is the
/// one hashing crate of the workspace.)
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_operations_are_not_content() {
        let names = Names::default();
        let a = serde_json::json!({"displayName": "x", "#microsoft.graph.restore": {"target": "https://graph/x('1')/restore"}});
        let b = serde_json::json!({"displayName": "x"});
        assert_eq!(content_hash(&a, &names), content_hash(&b, &names));
    }

    #[test]
    fn no_assignments_and_an_empty_list_are_the_same() {
        let names = Names::default();
        let a = serde_json::json!({"displayName": "x", "assignments": []});
        let b = serde_json::json!({"displayName": "x"});
        assert_eq!(content_hash(&a, &names), content_hash(&b, &names));
        let c = serde_json::json!({"displayName": "x", "assignments": [{"target": {}}]});
        assert_ne!(content_hash(&a, &names), content_hash(&c, &names));
    }
    use proptest::prelude::*;
    use serde_json::json;

    fn names() -> Names {
        let mut n = Names::default();
        n.insert("11111111-aaaa-4000-8000-000000000001", "group", "All Staff ");
        n
    }

    #[test]
    fn identity_timestamps_annotations_and_nulls_are_not_content() {
        let a = json!({
            "@odata.context": "https://graph.microsoft.com/beta/$metadata#x",
            "id": "p1", "version": 3, "displayName": "Baseline",
            "createdDateTime": "2024-01-01T00:00:00Z", "lastModifiedDateTime": "2024-02-01T00:00:00Z",
            "state@odata.type": "#microsoft.graph.state", "state": "enabled",
            "description": null,
            "settings": [{"id": "0", "settingInstance": {"settingDefinitionId": "b", "value": 1}},
                         {"id": "1", "settingInstance": {"settingDefinitionId": "a", "value": 2}}]
        });
        let b = json!({
            "displayName": "Baseline", "state": "enabled", "id": "other-tenant-id",
            "settings": [{"settingInstance": {"value": 2, "settingDefinitionId": "a"}, "id": "7"},
                         {"settingInstance": {"settingDefinitionId": "b", "value": 1}}]
        });
        assert_eq!(normalize(&a, &Names::default()), normalize(&b, &Names::default()));
        assert_eq!(
            content_hash(&a, &Names::default()),
            content_hash(&b, &Names::default())
        );
        let n = normalize(&a, &Names::default());
        assert_eq!(n["settings"][0]["settingInstance"]["settingDefinitionId"], "a");
    }

    #[test]
    fn a_changed_value_changes_the_hash() {
        let a = json!({"displayName": "x", "settings": [{"settingDefinitionId": "a", "value": 1}]});
        let b = json!({"displayName": "x", "settings": [{"settingDefinitionId": "a", "value": 2}]});
        assert_ne!(
            content_hash(&a, &Names::default()),
            content_hash(&b, &Names::default())
        );
    }

    #[test]
    fn references_compare_by_the_name_they_point_to() {
        let source = json!({"assignments": [{"target": {"groupId": "11111111-AAAA-4000-8000-000000000001"}}],
                            "conditions": {"users": {"includeGroups": ["11111111-aaaa-4000-8000-000000000001", "All"]}}});
        let n = normalize(&source, &names());
        assert_eq!(n["assignments"][0]["target"]["groupId"], "group:all staff");
        assert_eq!(
            n["conditions"]["users"]["includeGroups"],
            json!(["All", "group:all staff"])
        );
        // The same policy in another tenant, whose group has another id but the same name.
        let mut other = Names::default();
        other.insert("22222222-bbbb-4000-8000-000000000002", "group", "All Staff");
        let target = json!({"assignments": [{"target": {"groupId": "22222222-bbbb-4000-8000-000000000002"}}],
                            "conditions": {"users": {"includeGroups": ["All", "22222222-bbbb-4000-8000-000000000002"]}}});
        assert_eq!(content_hash(&source, &names()), content_hash(&target, &other));
        // An id no directory knows stays an id.
        let unknown = normalize(&json!({"groupId": "33333333"}), &names());
        assert_eq!(unknown["groupId"], "33333333");
        let refs = references(&source, &names());
        assert_eq!(refs.len(), 2, "the id in two spellings: {refs:?}");
        assert!(refs.values().all(|n| n == "group:All Staff"));
    }

    fn filters() -> Names {
        let mut n = names();
        n.insert(
            "f1f1f1f1-0000-4000-8000-000000000001",
            FILTER_KIND,
            "Windows Only ",
        );
        n.insert("f2f2f2f2-0000-4000-8000-000000000002", FILTER_KIND, "Corporate");
        n
    }

    fn target(filter: Value) -> Value {
        let mut t = json!({"@odata.type": "#microsoft.graph.groupAssignmentTarget",
                           "groupId": "11111111-aaaa-4000-8000-000000000001"});
        for (k, v) in filter.as_object().expect("members") {
            t[k] = v.clone();
        }
        json!({"displayName": "p", "assignments": [{"id": "a", "target": t}]})
    }

    #[test]
    fn no_filter_is_one_form() {
        let n = filters();
        let omitted = target(json!({}));
        let expected = normalize(&omitted, &n);
        assert_eq!(
            expected["assignments"][0]["target"],
            json!({"groupId": "group:all staff"})
        );
        for none in [
            json!({FILTER_ID: null, FILTER_TYPE: "none"}),
            json!({FILTER_ID: "00000000-0000-0000-0000-000000000000", FILTER_TYPE: "None"}),
            json!({FILTER_ID: "", FILTER_TYPE: "NONE"}),
            json!({FILTER_TYPE: "none"}),
            json!({FILTER_ID: null}),
            json!({FILTER_ID: "00000000-0000-0000-0000-000000000000"}),
            json!({FILTER_ID: null, FILTER_TYPE: "none", FILTER_NAME: null}),
            json!({FILTER_TYPE: " none ", FILTER_NAME: ""}),
        ] {
            let v = target(none.clone());
            assert_eq!(normalize(&v, &n), expected, "{none}");
            assert_eq!(content_hash(&v, &n), content_hash(&omitted, &n), "{none}");
            assert_eq!(
                content_hash(&v, &Names::default()),
                content_hash(&omitted, &Names::default())
            );
        }
        // A type that is a filter's, without any filter, is left as written.
        let typed = normalize(&target(json!({FILTER_ID: null, FILTER_TYPE: "include"})), &n);
        assert_eq!(typed["assignments"][0]["target"][FILTER_TYPE], "include");
    }

    #[test]
    fn a_filter_by_name_and_by_its_id_are_one() {
        let n = filters();
        let by_id =
            target(json!({FILTER_ID: "F1F1F1F1-0000-4000-8000-000000000001", FILTER_TYPE: "include"}));
        let expected = normalize(&by_id, &n);
        assert_eq!(
            expected["assignments"][0]["target"],
            json!({"groupId": "group:all staff",
                   FILTER_ID: "assignment_filter:windows only", FILTER_TYPE: "include"})
        );
        for other in [
            json!({FILTER_NAME: "Windows Only", FILTER_TYPE: "include"}),
            json!({FILTER_NAME: " windows only ", FILTER_ID: null, FILTER_TYPE: "include"}),
            // An id no directory knows (another tenant's) beside the name.
            json!({FILTER_NAME: "Windows Only", FILTER_ID: "99999999-0000-4000-8000-000000000009", FILTER_TYPE: "include"}),
            json!({FILTER_NAME: "Windows Only", FILTER_ID: "00000000-0000-0000-0000-000000000000", FILTER_TYPE: "include"}),
            // An id the directory knows wins over the name written beside it.
            json!({FILTER_NAME: "Stale Name", FILTER_ID: "f1f1f1f1-0000-4000-8000-000000000001", FILTER_TYPE: "include"}),
        ] {
            let v = target(other.clone());
            assert_eq!(normalize(&v, &n), expected, "{other}");
            assert_eq!(content_hash(&v, &n), content_hash(&by_id, &n), "{other}");
        }
        // By name without any directory: the same as by id with the directory.
        let by_name = target(json!({FILTER_NAME: "Windows Only", FILTER_TYPE: "include"}));
        let mut other_tenant = Names::default();
        other_tenant.insert("11111111-aaaa-4000-8000-000000000001", "group", "All Staff");
        assert_eq!(content_hash(&by_name, &other_tenant), content_hash(&by_id, &n));
        // Stable: normalizing the normalized form changes nothing.
        assert_eq!(normalize(&expected, &n), expected);
        assert_eq!(normalize(&normalize(&by_name, &n), &n), expected);
    }

    #[test]
    fn filter_type_and_which_filter_are_content() {
        let n = filters();
        let hash = |filter: Value| content_hash(&target(filter), &n);
        let include =
            hash(json!({FILTER_ID: "f1f1f1f1-0000-4000-8000-000000000001", FILTER_TYPE: "include"}));
        let exclude =
            hash(json!({FILTER_ID: "f1f1f1f1-0000-4000-8000-000000000001", FILTER_TYPE: "exclude"}));
        let other = hash(json!({FILTER_ID: "f2f2f2f2-0000-4000-8000-000000000002", FILTER_TYPE: "include"}));
        let other_by_name = hash(json!({FILTER_NAME: "Corporate", FILTER_TYPE: "include"}));
        let exclude_by_name = hash(json!({FILTER_NAME: "Windows Only", FILTER_TYPE: "exclude"}));
        let none = hash(json!({FILTER_ID: null, FILTER_TYPE: "none"}));
        assert_ne!(include, exclude);
        assert_ne!(include, other);
        assert_eq!(other, other_by_name);
        assert_eq!(exclude, exclude_by_name);
        assert_ne!(include, none);
        assert_ne!(exclude, none);
    }

    #[test]
    fn an_unknown_filter_id_without_a_name_stays_an_id() {
        let n = filters();
        let v = target(json!({FILTER_ID: "33333333-0000-4000-8000-000000000003", FILTER_TYPE: "include"}));
        let t = &normalize(&v, &n)["assignments"][0]["target"];
        assert_eq!(t[FILTER_ID], "33333333-0000-4000-8000-000000000003");
        assert_eq!(t[FILTER_TYPE], "include");
        let named = target(json!({FILTER_NAME: "Windows Only", FILTER_TYPE: "include"}));
        assert_ne!(content_hash(&v, &n), content_hash(&named, &n));
    }

    #[test]
    fn assignments_sort_by_the_settled_filter() {
        let n = filters();
        let a = json!({"assignments": [
            {"target": {"groupId": "g", FILTER_NAME: "Windows Only", FILTER_TYPE: "include"}},
            {"target": {"groupId": "g", FILTER_ID: "f2f2f2f2-0000-4000-8000-000000000002", FILTER_TYPE: "include"}},
            {"target": {"groupId": "g", FILTER_ID: null, FILTER_TYPE: "none"}}]});
        let b = json!({"assignments": [
            {"target": {"groupId": "g"}},
            {"target": {"groupId": "g", FILTER_NAME: "corporate", FILTER_TYPE: "include"}},
            {"target": {"groupId": "g", FILTER_TYPE: "include", FILTER_ID: "F1F1F1F1-0000-4000-8000-000000000001"}}]});
        let (na, nb) = (normalize(&a, &n), normalize(&b, &n));
        assert_eq!(na, nb);
        let keys: Vec<String> = na["assignments"]
            .as_array()
            .expect("list")
            .iter()
            .map(natural_key)
            .collect();
        assert_eq!(
            keys,
            [
                r#"target:{"deviceAndAppManagementAssignmentFilterId":"assignment_filter:corporate","deviceAndAppManagementAssignmentFilterType":"include","groupId":"g"}"#,
                r#"target:{"deviceAndAppManagementAssignmentFilterId":"assignment_filter:windows only","deviceAndAppManagementAssignmentFilterType":"include","groupId":"g"}"#,
                r#"target:{"groupId":"g"}"#,
            ]
        );
    }

    #[test]
    fn canonical_json_sorts_members_and_escapes() {
        assert_eq!(
            canonical_json(&json!({"b": 1, "a": ["x\"y", {"d": null, "c": true}]})),
            r#"{"a":["x\"y",{"c":true,"d":null}],"b":1}"#
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-1000i64..1000).prop_map(|n| json!(n)),
            "[a-c]{0,3}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    "(id|version|name|value|@odata.type|x@odata.type|settingDefinitionId|target)",
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Reverses every array and re-inserts every object's members in reverse order.
    fn shuffled(v: &Value) -> Value {
        match v {
            Value::Array(a) => Value::Array(a.iter().rev().map(shuffled).collect()),
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, v) in m.iter().rev() {
                    out.insert(k.clone(), shuffled(v));
                }
                Value::Object(out)
            }
            other => other.clone(),
        }
    }

    proptest! {
        #[test]
        fn normalizing_is_idempotent(v in arb_json()) {
            let once = normalize(&v, &names());
            prop_assert_eq!(normalize(&once, &names()), once);
        }

        #[test]
        fn order_of_arrays_and_members_never_changes_the_hash(v in arb_json()) {
            prop_assert_eq!(content_hash(&v, &names()), content_hash(&shuffled(&v), &names()));
        }
    }
}
